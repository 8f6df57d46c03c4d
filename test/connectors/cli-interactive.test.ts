/**
 * The interactive half of the marketer's CLI as a subprocess against a live hub: `voxa connections add` answering
 * prompts on a real pseudo-terminal (secret masked, never echoed), refusing to prompt without one, and the
 * browser half of the OAuth2 flow (PKCE, loopback redirect, state check) with the test acting as the browser.
 */
import test from 'ava';
import { ConnectionService } from '../../connectors/connections.js';
import type { Hub } from '../../core/hub.js';
import { openTestHub, startServers, type TestServers } from '../helpers/hub.js';
import { cliEnv, runCli, runCliOnTty, stripAnsi } from './cli-proc.js';

let servers: TestServers & { dispose(): Promise<void> };
let hub: Hub & { close(): Promise<void> };

test.before(async () => {
  servers = await startServers();
  hub = await openTestHub(servers);
});
test.after.always(async () => {
  await hub?.close();
  await servers?.dispose();
});

interface Listed {
  id: string;
  name: string;
  connector: string;
  status: string;
  config: Record<string, unknown>;
  secretFields: string[];
}

async function listConnections(env: NodeJS.ProcessEnv): Promise<{ rows: Listed[]; raw: string }> {
  const r = await runCli(env, ['connections', 'list', '--json']);
  if (r.code !== 0) throw new Error(`connections list failed: ${r.stderr}`);
  return { rows: (JSON.parse(r.stdout) as { connections: Listed[] }).connections, raw: r.stdout + r.stderr };
}

test.serial('connections add on a terminal prompts from the schema, masks the secret and stores the connection', async (t) => {
  const env = cliEnv(servers, hub);
  const secretB64 = Buffer.alloc(32, 9).toString('base64');
  const secret = `whsec_${secretB64}`;
  const tty = runCliOnTty(env, ['connections', 'add', 'webhook', '--name', 'typed on a terminal']);

  await tty.expect(/url — HTTPS endpoint/);
  tty.type('https://hooks.example.com/voxa\r');
  await tty.expect(/events — Event types/);
  // The checkbox starts on the first type (message.created); Down, Space picks message.updated too.
  tty.type(' ');
  tty.type('\u001b[B');
  tty.type(' ');
  tty.type('\r');
  const before = tty.screen().length;
  await tty.expect(/secret — Signing secret/);
  tty.type(secret + '\r');
  await tty.expect(/description — .*\(optional\)/);
  const secretEcho = stripAnsi(tty.screen().slice(before));
  tty.type('\r'); // optional: left empty
  const done = await tty.done;

  const screen = stripAnsi(tty.screen());
  t.is(done.code, 0, `terminal:\n${screen}\nstderr:\n${done.stderr}`);
  t.regex(screen, /added con_\S+\s+webhook\s+active\s+typed on a terminal\s+secrets: secret=\[set\]/);
  t.true(secretEcho.includes('*'.repeat(secret.length)), 'the secret prompt shows one mask character per typed character');
  for (const part of [secret, secretB64, secretB64.slice(0, 12)]) {
    t.false(tty.screen().includes(part), 'the secret is never echoed to the terminal');
    t.false(done.stderr.includes(part));
  }

  const { rows, raw } = await listConnections(env);
  const mine = rows.find((r) => r.name === 'typed on a terminal');
  t.truthy(mine, 'the connection exists');
  t.is(mine!.connector, 'webhook');
  t.is(mine!.status, 'active');
  t.deepEqual(mine!.config, { url: 'https://hooks.example.com/voxa', events: ['message.created', 'message.updated'] });
  t.deepEqual(mine!.secretFields, ['secret']);
  t.false(raw.includes(secretB64), 'listing never shows the secret');
  // What was typed is what got sealed: the hub opens it to the same value.
  const resolved = await new ConnectionService(hub).resolve(mine!.id);
  t.is(resolved.config.secret, secret);
  t.false('description' in resolved.config, 'an optional field left empty is not stored');
});

test.serial('connections add refuses to prompt without a terminal, with a clear error and exit code 2', async (t) => {
  const env = cliEnv(servers, hub);
  const before = (await listConnections(env)).rows.length;

  // No terminal at all (pipes).
  const piped = await runCli(env, ['connections', 'add', 'webhook', '--set', 'url=https://hooks.example.com/x']);
  t.is(piped.code, 2);
  t.regex(piped.stderr, /voxa: missing events, secret; not prompting without a terminal — pass --config file\.json or --set key=value/);

  // Output on a terminal but input from a pipe (`echo … | voxa connections add`): still no prompting.
  const halfTty = runCliOnTty(env, ['connections', 'add', 'webhook'], { stdinPipe: true });
  const half = await halfTty.done;
  t.is(half.code, 2);
  t.regex(half.stderr, /missing url, events, secret; not prompting without a terminal/);
  t.notRegex(stripAnsi(halfTty.screen()), /url — /, 'no prompt was drawn');

  // On a terminal with --json, the machine-readable mode never prompts either and says why in JSON.
  const jsonTty = runCliOnTty(env, ['connections', 'add', 'webhook', '--json']);
  const json = await jsonTty.done;
  t.is(json.code, 2);
  t.is((JSON.parse(json.stderr) as { error: { code: string } }).error.code, 'INPUT_REQUIRED');

  t.is((await listConnections(env)).rows.length, before, 'nothing was added');
});
