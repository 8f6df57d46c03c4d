/**
 * `voxa workspace show | set`: the settings PATCH /v1/workspace changes, from a terminal, through the same rules
 * and with the same workspace.updated event. The change shows through GET /v1/workspace of a running hub on the
 * same store, and the event reaches JetStream, at once with NATS reachable, else through the hub's sweeper.
 */
import test from 'ava';
import { runCli, type CliResult } from '../helpers/cli.js';
import { serversForFile } from '../helpers/hub.js';
import { bearer, eventually, openApiHub, streamEvents, type ApiHub } from '../api/support.js';

const servers = serversForFile();

function voxa(env: Record<string, string>, ...args: string[]): Promise<CliResult> {
  return runCli({ PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'silent', ...env }, args);
}

function envOf(api: ApiHub, extra: Record<string, string> = {}): Record<string, string> {
  return { VOXA_DATA_DIR: api.hub.config.dataDir, VOXA_NATS_NAMESPACE: api.hub.config.natsNamespace, VOXA_UPLOAD_MAX_BYTES: String(api.hub.config.uploadMaxBytes), ...extra };
}

async function workspaceUpdates(api: ApiHub) {
  return (await streamEvents(api.hub)).filter((e) => e.event.type === 'workspace.updated');
}

test('voxa workspace set changes what GET /v1/workspace shows and publishes workspace.updated; show prints it', async (t) => {
  const api = await openApiHub(servers, { uploadMaxBytes: 100_000 });
  t.teardown(() => api.close());
  const admin = await api.register('Root', { role: 'admin' });
  const env = envOf(api, { NATS_URL: servers.nats.url });

  const set = await voxa(env, 'workspace', 'set', '--registration', 'invite', '--customers-talk-to-agents-only', 'true', '--private-push', 'true', '--upload-max-bytes', '5000', '--json');
  t.is(set.code, 0, set.stderr);
  const out = JSON.parse(set.stdout);
  t.true(out.eventPublished);
  t.like(out.workspace, { id: api.hub.config.defaultWorkspaceId, settings: { registration: 'invite', customersTalkToAgentsOnly: true, privatePush: true }, uploadMaxBytes: 5000 });

  const got = await api.http.get('/v1/workspace').set(...bearer(admin));
  t.is(got.status, 200);
  t.like(got.body.workspace, { settings: { registration: 'invite', customersTalkToAgentsOnly: true, privatePush: true }, uploadMaxBytes: 5000 });

  const [ev, ...more] = await workspaceUpdates(api);
  t.is(more.length, 0);
  t.deepEqual(ev!.event.data, { settings: { registration: 'invite', customersTalkToAgentsOnly: true, privatePush: true, uploadMaxBytes: 5000 } });
  t.deepEqual(ev!.event.actor, { type: 'system', id: 'voxa-cli' });
  t.is(ev!.event.workspaceId, api.hub.config.defaultWorkspaceId);
  t.is(ev!.msgId, ev!.event.id);

  // show prints the same view as the API, in JSON and as text.
  const shown = await voxa(env, 'workspace', 'show', '--json');
  t.is(shown.code, 0, shown.stderr);
  t.deepEqual(JSON.parse(shown.stdout), got.body);
  const text = await voxa(env, 'workspace', 'show');
  t.is(text.code, 0, text.stderr);
  t.regex(text.stdout, /^ {2}registration +invite$/m);
  t.regex(text.stdout, /^ {2}uploadMaxBytes +5000$/m);

  // `none` removes the workspace's own limit: the hub's applies again.
  const back = await voxa(env, 'workspace', 'set', '--upload-max-bytes', 'none', '--json');
  t.is(back.code, 0, back.stderr);
  t.is((await api.http.get('/v1/workspace').set(...bearer(admin))).body.workspace.uploadMaxBytes, 100_000);
  const last = await eventually(async () => (await workspaceUpdates(api))[1]);
  t.deepEqual(last.event.data, { settings: { uploadMaxBytes: null } });
});

test('voxa workspace set refuses bad values with exit 2 and a message naming the option, changing nothing', async (t) => {
  const api = await openApiHub(servers, { uploadMaxBytes: 100_000 });
  t.teardown(() => api.close());
  const admin = await api.register('Root', { role: 'admin' });
  const env = envOf(api, { NATS_URL: servers.nats.url });

  const cases: Array<[string[], string]> = [
    [['--registration', 'everyone'], '--registration'],
    [['--private-push', 'yes'], '--private-push'],
    [['--customers-talk-to-agents-only', '1'], '--customers-talk-to-agents-only'],
    [['--upload-max-bytes', '0'], '--upload-max-bytes'],
    [['--upload-max-bytes', '1e3'], '--upload-max-bytes'],
    [['--upload-max-bytes', '-5'], '--upload-max-bytes'],
    // Above the hub's limit: refused by the same rule as PATCH /v1/workspace.
    [['--upload-max-bytes', '200000'], '--upload-max-bytes'],
    [[], '--registration'],
  ];
  for (const [args, option] of cases) {
    const r = await voxa(env, 'workspace', 'set', ...args, '--json');
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    const err = JSON.parse(r.stderr).error as { code: string; message: string };
    t.is(err.code, 'VALIDATION_FAILED', args.join(' '));
    t.true(err.message.includes(option), `${args.join(' ')}: ${err.message}`);
  }
  const plain = await voxa(env, 'workspace', 'set', '--upload-max-bytes', '200000');
  t.is(plain.code, 2);
  t.regex(plain.stderr, /^voxa: --upload-max-bytes: can only lower the hub's limit \(100000 bytes\)/);

  const missing = await voxa(env, 'workspace', 'set', '--private-push', 'true', '--workspace', 'nope', '--json');
  t.is(missing.code, 3, missing.stderr);
  t.is(JSON.parse(missing.stderr).error.code, 'NOT_FOUND');
  t.is((await voxa(env, 'workspace', 'show', '--workspace', 'nope')).code, 3);

  const ws = (await api.http.get('/v1/workspace').set(...bearer(admin))).body.workspace;
  t.like(ws, { settings: { registration: 'open', customersTalkToAgentsOnly: false, privatePush: false }, uploadMaxBytes: 100_000 }, 'nothing changed');
  t.deepEqual(await workspaceUpdates(api), [], 'no event for a refused change');
});

test('voxa workspace set without NATS queues the event; the running hub publishes it', async (t) => {
  const api = await openApiHub(servers);
  t.teardown(() => api.close());
  const admin = await api.register('Root', { role: 'admin' });
  // No NATS_URL and nothing on the embedded port (1): the event can only wait in the outbox.
  const r = await voxa(envOf(api, { VOXA_EMBEDDED_NATS_PORT: '1' }), 'workspace', 'set', '--private-push', 'true', '--json');
  t.is(r.code, 0, r.stderr);
  t.false(JSON.parse(r.stdout).eventPublished);
  t.true((await api.http.get('/v1/workspace').set(...bearer(admin))).body.workspace.settings.privatePush);
  const ev = await eventually(async () => (await workspaceUpdates(api))[0]);
  t.deepEqual(ev.event.data, { settings: { privatePush: true } });
});
