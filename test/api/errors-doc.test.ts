import test from 'ava';
import { readFileSync } from 'node:fs';
import { ERROR_CODES } from '../../core/errors.js';

const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
const rows = new Map<string, number>();
for (const m of doc.matchAll(/^\| `([A-Z_]+)` \| (\d{3}) \|/gm)) rows.set(m[1]!, Number(m[2]));

test('every error code is documented in docs/errors.md with its status', (t) => {
  for (const [code, def] of Object.entries(ERROR_CODES)) {
    t.true(rows.has(code), `${code} is missing from docs/errors.md`);
    t.is(rows.get(code), def.status, `${code}: documented status differs`);
  }
});

test('docs/errors.md documents no code that does not exist, and each only once', (t) => {
  const documented = [...doc.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]!);
  t.is(new Set(documented).size, documented.length);
  for (const code of documented) t.true(code in ERROR_CODES, `${code} is documented but not defined`);
});

test('error codes are unique, upper snake case, with a status and a message', (t) => {
  const codes = Object.keys(ERROR_CODES);
  t.is(new Set(codes.map((c) => c.toLowerCase())).size, codes.length);
  for (const [code, def] of Object.entries(ERROR_CODES)) {
    t.regex(code, /^[A-Z][A-Z0-9_]*$/);
    t.true(def.status >= 400 && def.status < 600, code);
    t.true(def.message.length > 0, code);
  }
});
