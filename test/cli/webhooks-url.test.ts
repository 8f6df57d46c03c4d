/** `voxa webhooks add` / `voxa connections add webhook` refuse private and loopback targets as REST does. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { runCli } from '../helpers/cli.js';

const dirs: string[] = [];
test.after.always(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A fresh SQLite data dir; NATS on port 1, where nothing answers, so no event leaves the test. */
function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const dir = mkdtempSync(join(tmpdir(), 'voxa-cli-wh-'));
  dirs.push(dir);
  return { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'silent', VOXA_DATA_DIR: dir, VOXA_EMBEDDED_NATS_PORT: '1', ...extra };
}

const SECRET = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;

for (const url of ['http://10.0.0.1/h', 'http://0x7f000001/h', 'http://[::1]/h', 'http://localhost/h']) {
  test(`webhooks add refuses ${url} with exit 2`, async (t) => {
    const e = env();
    const r = await runCli(e, ['webhooks', 'add', '--url', url, '--events', 'message.created', '--json']);
    t.is(r.code, 2, r.stderr);
    const { error } = JSON.parse(r.stderr) as { error: { code: string; message: string } };
    t.is(error.code, 'VALIDATION_FAILED');
    t.regex(error.message, /^--url: .*(not public|is local).*VOXA_WEBHOOKS_ALLOW_PRIVATE/);
    const list = await runCli(e, ['webhooks', 'list', '--json']);
    t.deepEqual(JSON.parse(list.stdout), { webhooks: [] }, 'nothing was stored');
  });
}

test('connections add webhook refuses a loopback url too', async (t) => {
  const r = await runCli(env(), ['connections', 'add', 'webhook', '--set', 'url=http://127.0.0.1:9/h', '--set', 'events=["message.created"]', '--set', `secret=${SECRET}`, '--json']);
  t.is(r.code, 2, r.stderr);
  t.regex(JSON.parse(r.stderr).error.message, /^url: target address 127\.0\.0\.1 is not public/);
});

test('VOXA_WEBHOOKS_ALLOW_PRIVATE lets private targets through, as it does for REST', async (t) => {
  const e = env({ VOXA_WEBHOOKS_ALLOW_PRIVATE: '1' });
  const r = await runCli(e, ['webhooks', 'add', '--url', 'http://10.0.0.1/h', '--events', 'message.created', '--json']);
  t.is(r.code, 0, r.stderr);
  t.is(JSON.parse(r.stdout).url, 'http://10.0.0.1/h');
});

test('a non-http scheme is refused without the private-network hint', async (t) => {
  const r = await runCli(env({ VOXA_WEBHOOKS_ALLOW_PRIVATE: '1' }), ['webhooks', 'add', '--url', 'ftp://example.com/h', '--events', 'message.created', '--json']);
  t.is(r.code, 2, r.stderr);
  t.notRegex(JSON.parse(r.stderr).error.message, /ALLOW_PRIVATE/);
});
