import test from 'ava';
import { runCli, type CliResult } from '../helpers/cli.js';
import { testConfig, serversForFile } from '../helpers/hub.js';
import { openApiHub, streamEvents, eventually } from './support.js';
import { makeUser, openEdgeHub, wsClient } from '../edge/support.js';

const servers = serversForFile();

function voxa(env: Record<string, string>, ...args: string[]): Promise<CliResult> {
  return runCli({ PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'silent', ...env }, args);
}

test('voxa users add (store only) queues the event; the hub publishes it; registering keeps the role', async (t) => {
  const cfg = testConfig(servers, { registration: 'invite' });
  // No NATS_URL and nothing on the embedded port (1): the event can only wait in the outbox.
  const env = { VOXA_DATA_DIR: cfg.dataDir, VOXA_NATS_NAMESPACE: cfg.natsNamespace, VOXA_REGISTRATION: 'invite', VOXA_EMBEDDED_NATS_PORT: '1' };

  const added = await voxa(env, 'users', 'add', '--email', 'Admin@Example.test', '--role', 'admin', '--name', 'Root', '--json');
  t.is(added.code, 0, added.stderr);
  const out = JSON.parse(added.stdout);
  t.like(out.user, { email: 'admin@example.test', role: 'admin', name: 'Root', invited: true });
  t.false(out.eventPublished);
  t.regex(out.invite.code, /^vxi_/);
  t.true(Date.parse(out.invite.expiresAt) > Date.now() + 6.9 * 24 * 3600_000, 'seven days by default');

  // A new code replaces the old one; a bad --invite-days is a usage error.
  const reissued = await voxa(env, 'users', 'invite', '--email', 'admin@example.test', '--invite-days', '2', '--json');
  t.is(reissued.code, 0, reissued.stderr);
  const code = JSON.parse(reissued.stdout).invite.code as string;
  t.not(code, out.invite.code);
  for (const days of ['0', '91', '1.5', 'x']) t.is((await voxa(env, 'users', 'invite', '--email', 'admin@example.test', '--invite-days', days)).code, 2, days);
  t.is((await voxa(env, 'users', 'invite', '--email', 'nobody@example.test')).code, 3);

  const dup = await voxa(env, 'users', 'add', '--email', 'admin@example.test', '--role', 'agent', '--json');
  t.is(dup.code, 2, 'a taken email is bad input, not a failure');
  t.like(JSON.parse(dup.stderr), { error: { code: 'EMAIL_TAKEN', message: 'An account with this email already exists.' } });
  t.is((await voxa(env, 'users', 'add', '--email', 'x@example.test', '--role', 'root')).code, 2);
  t.is((await voxa(env, 'users', 'set-role', '--email', 'nobody@example.test', '--role', 'agent')).code, 3);

  const list = await voxa(env, 'users', 'list', '--json');
  t.is(list.code, 0);
  t.deepEqual(JSON.parse(list.stdout).users.map((u: { email: string }) => u.email), ['admin@example.test']);

  // A hub on the same data dir: its sweeper publishes the queued user.registered event.
  const api = await openApiHub(servers, { dataDir: cfg.dataDir, natsNamespace: cfg.natsNamespace, registration: 'invite' });
  try {
    const ev = await eventually(async () => (await streamEvents(api.hub)).find((e) => e.event.type === 'user.registered'));
    t.is(ev.event.userId, out.user.id);
    const stale = await api.http.post('/v1/auth/register').send({ email: 'admin@example.test', password: 'long enough pw', name: 'Root Admin', invite: out.invite.code });
    t.is(stale.body.error.code, 'INVITE_REQUIRED', 'the replaced code no longer works');
    const reg = await api.http.post('/v1/auth/register').send({ email: 'admin@example.test', password: 'long enough pw', name: 'Root Admin', invite: code });
    t.is(reg.status, 201);
    t.is(reg.body.user.role, 'admin');
    t.is(reg.body.user.id, out.user.id);
    const done = await voxa(env, 'users', 'invite', '--email', 'admin@example.test', '--json');
    t.is(done.code, 2, 'a registered account gets no invite');
    t.is(JSON.parse(done.stderr).error.code, 'ALREADY_REGISTERED');
  } finally {
    await api.close();
  }
});

test('voxa users add/set-role with NATS_URL publish at once', async (t) => {
  const api = await openApiHub(servers);
  try {
    const env = { VOXA_DATA_DIR: api.hub.config.dataDir, VOXA_NATS_NAMESPACE: api.hub.config.natsNamespace, NATS_URL: servers.nats.url };
    const added = await voxa(env, 'users', 'add', '--email', 'agent@example.test', '--role', 'customer', '--json');
    t.is(added.code, 0, added.stderr);
    t.true(JSON.parse(added.stdout).eventPublished);
    const set = await voxa(env, 'users', 'set-role', '--email', 'agent@example.test', '--role', 'agent', '--json');
    t.is(set.code, 0, set.stderr);
    t.like(JSON.parse(set.stdout), { changed: true, eventPublished: true, user: { role: 'agent' } });
    const events = await streamEvents(api.hub);
    const types = events.map((e) => e.event.type);
    t.true(types.includes('user.registered'));
    const changed = events.find((e) => e.event.type === 'user.role_changed')!;
    t.like(changed.event.data, { from: 'customer', to: 'agent' });
    t.is(changed.msgId, changed.event.id);
  } finally {
    await api.close();
  }
});

test('voxa users disable closes the account\'s open connections in the running hub; enable lets it sign in again', async (t) => {
  const e = await openEdgeHub(servers);
  t.teardown(() => e.close());
  const ann = await makeUser(e.hub, 'Ann');
  const ws = await wsClient(e.url, ann.token, { cursors: {} });
  const env = { VOXA_DATA_DIR: e.hub.config.dataDir, VOXA_NATS_NAMESPACE: e.hub.config.natsNamespace, NATS_URL: servers.nats.url };

  const off = await voxa(env, 'users', 'disable', '--email', ann.user.email, '--json');
  t.is(off.code, 0, off.stderr);
  t.like(JSON.parse(off.stdout), { changed: true, eventPublished: true, user: { disabled: true } });
  // Another process made the change: its event reaches the hub's edge, which closes the connection.
  t.is((await ws.closed).code, 4001);
  t.is(ws.of('error').at(-1)?.code, 'UNAUTHENTICATED');
  const again = await voxa(env, 'users', 'disable', '--email', ann.user.email, '--json');
  t.like(JSON.parse(again.stdout), { changed: false });

  const on = await voxa(env, 'users', 'enable', '--email', ann.user.email);
  t.is(on.code, 0, on.stderr);
  t.regex(on.stdout, /^enabled: /);
  t.is((await voxa(env, 'users', 'disable', '--email', 'nobody@example.test')).code, 3);
  const events = (await streamEvents(e.hub)).filter((x) => x.event.userId === ann.user.id && x.event.type === 'user.updated');
  t.deepEqual(
    events.map((x) => (x.event.data as { changes: string[] }).changes),
    [['disabled'], ['enabled']],
  );
});
