/**
 * The interactive half of the marketer's CLI as a subprocess against a live hub: `voxa connections add` answering
 * prompts on a real pseudo-terminal (secret masked, never echoed), refusing to prompt without one, and the
 * browser half of the OAuth2 flow (PKCE, loopback redirect, state check) with the test acting as the browser.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { ConnectionService } from '../../connectors/connections.js';
import { hubForFile } from '../helpers/hub.js';
import { runCli } from '../helpers/cli.js';
import { cliEnv, runCliOnTty, startCli, stripAnsi } from './cli-proc.js';
import { until } from './receiver.js';
import { startStandIn, type StandIn } from './standins.js';

const shared = hubForFile();



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
  const env = cliEnv(shared.servers, shared.hub);
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
  const resolved = await new ConnectionService(shared.hub).resolve(mine!.id);
  t.is(resolved.config.secret, secret);
  t.false('description' in resolved.config, 'an optional field left empty is not stored');
});

test.serial('connections add refuses to prompt without a terminal, with a clear error and exit code 2', async (t) => {
  const env = cliEnv(shared.servers, shared.hub);
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

/** The stand-in's record of the consent request and of the code exchange that followed it. */
function pkceRecord(api: StandIn): { authorize: URLSearchParams; exchange: URLSearchParams } {
  const a = api.requests.find((r) => r.path.startsWith('/authorize'));
  const x = api.requests.find((r) => r.path === '/token' && new URLSearchParams(r.body).get('grant_type') === 'authorization_code');
  if (!a || !x) throw new Error('no consent request or code exchange reached the stand-in');
  return { authorize: new URL(a.path, api.url).searchParams, exchange: new URLSearchParams(x.body) };
}

test.serial('google drive: the CLI prints the consent URL, refuses a forged redirect, exchanges the code with the PKCE verifier and stores the tokens sealed', async (t) => {
  const api = await startStandIn();
  t.teardown(() => api.close());
  api.nextAccessToken = 'tok-from-code-drive';
  const env = cliEnv(shared.servers, shared.hub);
  const run = startCli(env, [
    'connections', 'add', 'google-drive', '--no-browser', '--name', 'Marketing Drive', '--test', '--json',
    '--set', 'clientId=cid.apps.example', '--set', 'clientSecret=drive-client-secret',
    '--set', 'folderId=folder1', '--set', `rootUrl=${api.url}/`,
    '--set', `authorizeUrl=${api.url}/authorize`, '--set', `tokenUrl=${api.url}/token`,
  ]);
  const [consentUrl] = await run.waitStderr(/http:\/\/127\.0\.0\.1:\d+\/authorize\?\S+/);
  const consent = new URL(consentUrl);
  t.is(consent.searchParams.get('response_type'), 'code');
  t.is(consent.searchParams.get('client_id'), 'cid.apps.example');
  t.is(consent.searchParams.get('code_challenge_method'), 'S256');
  t.is(consent.searchParams.get('scope'), 'https://www.googleapis.com/auth/drive.file');
  t.is(consent.searchParams.get('access_type'), 'offline', 'Google returns a refresh token only for offline access');
  const state = consent.searchParams.get('state')!;
  t.true(state.length >= 16);
  const redirectUri = consent.searchParams.get('redirect_uri')!;
  t.regex(redirectUri, /^http:\/\/127\.0\.0\.1:\d+\/callback$/);

  // A redirect that does not carry this flow's state (another tab, a forged link) is refused, and the CLI keeps waiting.
  const forged = await fetch(`${redirectUri}?code=stolen-code&state=not-the-state`);
  t.is(forged.status, 400);
  t.regex(await forged.text(), /state mismatch/);
  t.false(api.requests.some((r) => r.path === '/token'), 'a refused redirect exchanges nothing');

  // The test is the browser: load the consent page, which redirects to the loopback with code and state.
  const page = await fetch(consentUrl, { redirect: 'follow' });
  t.is(page.status, 200);
  t.regex(await page.text(), /Connected to Voxa Hub/);
  t.true(page.url.startsWith(redirectUri), 'the browser ended on the CLI\'s loopback callback');

  const done = await run.done;
  t.is(done.code, 0, done.stderr);
  const out = JSON.parse(done.stdout) as { connection: Listed; test: { ok: boolean; detail: string } };
  t.deepEqual(out.test, { ok: true, detail: 'signed in to Google Drive as marketer@example.com' }, 'the stored token works against the API');
  t.deepEqual([...out.connection.secretFields].sort(), ['accessToken', 'clientSecret', 'refreshToken']);

  const { authorize, exchange } = pkceRecord(api);
  const verifier = exchange.get('code_verifier')!;
  t.regex(verifier, /^[A-Za-z0-9_-]{43,128}$/);
  t.is(createHash('sha256').update(verifier).digest('base64url'), authorize.get('code_challenge') ?? 'no challenge sent', 'the verifier matches the challenge');
  t.is(exchange.get('redirect_uri'), redirectUri);
  t.is(exchange.get('client_secret'), 'drive-client-secret');
  t.is(exchange.get('state'), null, 'state stays between the CLI and the browser');

  const { rows, raw } = await listConnections(env);
  const mine = rows.find((r) => r.id === out.connection.id)!;
  t.is(mine.status, 'active');
  t.is(mine.config.folderId, 'folder1');
  const resolved = await new ConnectionService(shared.hub).resolve(mine.id);
  t.is(resolved.config.accessToken, 'tok-from-code-drive');
  t.is(resolved.config.refreshToken, 'refresh1');
  for (const s of ['tok-from-code-drive', 'refresh1', 'drive-client-secret', verifier]) {
    t.false(done.stdout.includes(s) || done.stderr.includes(s) || raw.includes(s), 'no token or secret in any CLI output');
  }
});

test.serial('dropbox: the consent URL goes to the browser command in VOXA_BROWSER, whose redirect completes the sign-in', async (t) => {
  const api = await startStandIn();
  t.teardown(() => api.close());
  api.nextAccessToken = 'tok-from-code-dropbox';
  const log = join(mkdtempSync(join(tmpdir(), 'voxa-browser-')), 'visits.jsonl');
  const env = cliEnv(shared.servers, shared.hub, { VOXA_BROWSER: `${process.execPath} test/connectors/fake-browser.mjs`, FAKE_BROWSER_LOG: log });
  const done = await runCli(env, [
    'connections', 'add', 'dropbox', '--name', 'Team Dropbox', '--json',
    '--set', 'clientId=appkey', '--set', 'folderPath=/Voxa Hub', '--set', `apiBaseUrl=${api.url}`,
    '--set', `authorizeUrl=${api.url}/authorize`, '--set', `tokenUrl=${api.url}/token`,
  ]);
  t.is(done.code, 0, done.stderr);
  await until(() => existsSync(log) && readFileSync(log, 'utf8').endsWith('\n'), 30_000, 'the browser\'s visit log');
  const visit = JSON.parse(readFileSync(log, 'utf8').trim()) as { url: string; finalUrl: string; status: number; body: string };
  t.regex(done.stderr, new RegExp(`Open this URL in a browser to connect Dropbox:\\s+${visit.url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`), 'the URL opened is the one printed');
  t.is(visit.status, 200);
  t.regex(visit.body, /Connected to Voxa Hub/);
  t.regex(visit.finalUrl, /^http:\/\/127\.0\.0\.1:\d+\/callback\?code=/);

  const { authorize, exchange } = pkceRecord(api);
  t.is(authorize.get('token_access_type'), 'offline');
  t.is(createHash('sha256').update(exchange.get('code_verifier')!).digest('base64url'), authorize.get('code_challenge') ?? 'no challenge sent');
  t.is(exchange.get('client_secret'), null, 'a Dropbox PKCE app sends no secret');

  const connection = (JSON.parse(done.stdout) as { connection: Listed }).connection;
  const resolved = await new ConnectionService(shared.hub).resolve(connection.id);
  t.is(resolved.config.accessToken, 'tok-from-code-dropbox');
  t.false(done.stdout.includes('tok-from-code-dropbox') || done.stderr.includes('tok-from-code-dropbox'));
});

test.serial('a consent the user declines fails the command with AUTH_FAILED and stores nothing', async (t) => {
  const api = await startStandIn();
  t.teardown(() => api.close());
  const env = cliEnv(shared.servers, shared.hub);
  const before = (await listConnections(env)).rows.length;
  const run = startCli(env, [
    'connections', 'add', 'dropbox', '--no-browser', '--json',
    '--set', 'clientId=appkey', '--set', `authorizeUrl=${api.url}/authorize`, '--set', `tokenUrl=${api.url}/token`,
  ]);
  const [consentUrl] = await run.waitStderr(/http:\/\/127\.0\.0\.1:\d+\/authorize\?\S+/);
  const consent = new URL(consentUrl);
  // What the provider sends back when the user clicks "Cancel".
  const back = new URL(consent.searchParams.get('redirect_uri')!);
  back.searchParams.set('error', 'access_denied');
  back.searchParams.set('state', consent.searchParams.get('state')!);
  t.is((await fetch(back)).status, 400);
  const done = await run.done;
  t.is(done.code, 1);
  const err = JSON.parse(done.stderr.slice(done.stderr.lastIndexOf('{"error"'))) as { error: { code: string; message: string } };
  t.is(err.error.code, 'AUTH_FAILED');
  t.regex(err.error.message, /access_denied/);
  t.is((await listConnections(env)).rows.length, before);
});
