/**
 * Lone UTF-16 surrogates in input. JSON may carry them (`"\ud800"`), JavaScript strings hold them, but they
 * are not Unicode text: SQLite (and any UTF-8 store) writes U+FFFD in their place, so what was accepted and
 * published would differ from what is read back. Every way input enters (REST bodies and query strings,
 * WebSocket frames) refuses them with VALIDATION_FAILED naming the field, using the walk below.
 */
import querystring from 'node:querystring';
import type { VoxaError } from '../errors.js';
import { fieldError } from './validate.js';

declare global {
  interface String {
    // ES2024; present in Node 20, missing from the ES2023 lib this project compiles against.
    isWellFormed(): boolean;
    toWellFormed(): string;
  }
}

/**
 * The dotted path of the first string (a value or an object key) in `value` that holds a lone surrogate,
 * or null when there is none. `where` prefixes the path (`body`, `data`). Iterative, so a deep value cannot
 * overflow the stack.
 */
export function illFormedPath(value: unknown, where?: string): string | null {
  const stack: Array<[unknown, string]> = [[value, where ?? '']];
  while (stack.length) {
    const [v, path] = stack.pop()!;
    if (typeof v === 'string') {
      if (!v.isWellFormed()) return path || '(root)';
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push([v[i], join(path, String(i))]);
      continue;
    }
    const keys = Object.keys(v);
    for (let i = keys.length - 1; i >= 0; i--) {
      const k = keys[i]!;
      // A bad key is named by a printable stand-in: echoing it would put the same bad string in the answer.
      if (!k.isWellFormed()) return join(path, k.toWellFormed());
      stack.push([(v as Record<string, unknown>)[k], join(path, k)]);
    }
  }
  return null;
}

function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

/** The error for a field holding a lone surrogate, in the documented `{fields, issues}` shape. */
export function illFormedError(path: string): VoxaError {
  return fieldError(path, 'must be valid Unicode text (no lone UTF-16 surrogates, no invalid UTF-8)', {}, 'invalid_string');
}

/**
 * illFormedPath for a value parsed from JSON `rawText`: the walk only runs when that text contains a `\u`
 * escape, since decoded UTF-8 never holds a lone surrogate (invalid UTF-8 is refused or replaced before
 * parsing), so an escape is the only way one can get in.
 */
export function illFormedPathOfJson(value: unknown, rawText: string, where?: string): string | null {
  return rawText.includes('\\u') ? illFormedPath(value, where) : null;
}

/** Throws VALIDATION_FAILED when a value parsed from JSON `rawText` holds a lone surrogate. */
export function assertWellFormed(value: unknown, rawText: string, where?: string): void {
  const path = illFormedPathOfJson(value, rawText, where);
  if (path !== null) throw illFormedError(path);
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
// Node's own percent-decoder (what ctx.query uses), exported at runtime but missing from @types/node.
const unescapeBuffer = (querystring as unknown as { unescapeBuffer(s: string): Buffer }).unescapeBuffer;

/**
 * Throws VALIDATION_FAILED (`query.<name>`) for a query string whose percent-escapes are not UTF-8, such as
 * an encoded surrogate (`%ED%A0%80`): Koa's parser (URLSearchParams) would silently turn them into U+FFFD.
 * Only strings with a `%` can hold such escapes, and the parsed values cannot hold a lone surrogate otherwise
 * (the raw query is one byte per character), so there is nothing left to walk.
 */
export function assertQueryWellFormed(rawQuery: string): void {
  if (rawQuery.includes('%')) {
    for (const part of rawQuery.split('&')) {
      const eq = part.indexOf('=');
      const key = eq < 0 ? part : part.slice(0, eq);
      for (const piece of eq < 0 ? [key] : [key, part.slice(eq + 1)]) {
        try {
          strictUtf8.decode(unescapeBuffer(piece.replace(/\+/g, ' ')));
        } catch {
          throw illFormedError(`query.${unescapeBuffer(key).toString().slice(0, 64)}`);
        }
      }
    }
  }
}
