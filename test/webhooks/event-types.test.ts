/**
 * Webhooks can only subscribe to the event types the plugin delivers (durable ones): ephemeral typing.* and
 * presence.* are refused by the one validation that REST, the CLI and config changes share.
 */
import test from 'ava';
import { ConnectionService } from '../../connectors/connections.js';
import { generateSecret } from '../../connectors/webhook/signing.js';
import type { Hub } from '../../core/hub.js';
import { EVENT_TYPES, isDurable } from '../../core/events/catalog.js';
import { WEBHOOK_EVENT_TYPES } from '../../plugins/webhooks/events.js';
import { createWebhooksPlugin } from '../../plugins/webhooks/index.js';
import { openTestHub, startServers } from '../helpers/hub.js';
import { bearer, openPluginApi, type PluginApi, type Session } from '../notifications/support.js';
import { runCli } from '../helpers/cli.js';
import { cliEnv } from '../connectors/cli-proc.js';

let servers: Awaited<ReturnType<typeof startServers>>;
let api: PluginApi;
let admin: Session;
test.before(async () => {
  servers = await startServers();
  api = await openPluginApi(servers, [createWebhooksPlugin()], { webhooksAllowPrivate: true });
  admin = await api.register('Root', 'admin');
});
test.after.always(async () => {
  await api?.close();
  await servers?.dispose();
});

test('the allowed types are exactly what the plugin consumes: every durable type, no ephemeral one', (t) => {
  t.deepEqual(WEBHOOK_EVENT_TYPES, EVENT_TYPES.filter(isDurable));
  t.deepEqual(createWebhooksPlugin().manifest.events, WEBHOOK_EVENT_TYPES);
  t.true(WEBHOOK_EVENT_TYPES.includes('message.created'));
  for (const ephemeral of ['typing.started', 'presence.online']) t.false((WEBHOOK_EVENT_TYPES as string[]).includes(ephemeral));
});

test('REST: subscribing to typing.started is a 400 that lists the allowed types', async (t) => {
  const r = await api.http.post('/v1/webhooks').set(...bearer(admin)).send({ url: 'http://127.0.0.1:9/hook', events: ['message.created', 'typing.started'] });
  t.is(r.status, 400, JSON.stringify(r.body));
  t.is(r.body.error.code, 'VALIDATION_FAILED');
  t.regex(r.body.error.message, /typing\.started/);
  t.regex(r.body.error.message, /allowed: .*message\.created/);
  t.notRegex(r.body.error.message, /presence\.online/, 'the list holds only allowed types');
  t.is((await api.http.get('/v1/webhooks').set(...bearer(admin))).body.webhooks.length, 0);
});

test('REST: a generic connection or a config change cannot add an ephemeral type either', async (t) => {
  const created = await api.http
    .post('/v1/connections')
    .set(...bearer(admin))
    .send({ connector: 'webhook', config: { url: 'http://127.0.0.1:9/hook', events: ['presence.online'], secret: generateSecret() } });
  t.is(created.status, 400, JSON.stringify(created.body));
  t.regex(created.body.error.message, /presence\.online.*allowed: /);
  const ok = await api.http.post('/v1/webhooks').set(...bearer(admin)).send({ url: 'http://127.0.0.1:9/hook', events: ['message.created'] });
  t.is(ok.status, 201);
  const patched = await api.http
    .patch(`/v1/connections/${ok.body.webhook.id}`)
    .set(...bearer(admin))
    .send({ config: { events: ['message.created', 'typing.stopped'] } });
  t.is(patched.status, 400, JSON.stringify(patched.body));
  t.regex(patched.body.error.message, /typing\.stopped/);
  await api.http.delete(`/v1/webhooks/${ok.body.webhook.id}`).set(...bearer(admin));
});

test('service and CLI: the same refusal (exit 2 from `voxa webhooks add`)', async (t) => {
  const hub: Hub & { close(): Promise<void> } = await openTestHub(servers, { webhooksAllowPrivate: true });
  const err = await t.throwsAsync(
    new ConnectionService(hub).create(hub.config.defaultWorkspaceId, 'webhook', { url: 'http://127.0.0.1:9/hook', events: ['typing.started'], secret: generateSecret() }),
  );
  t.regex(err!.message, /typing\.started.*allowed: .*message\.created/);
  const r = await runCli(cliEnv(servers, hub, { VOXA_WEBHOOKS_ALLOW_PRIVATE: '1' }), ['webhooks', 'add', '--url', 'http://127.0.0.1:9/hook', '--events', 'message.created,presence.online']);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /presence\.online/);
  t.regex(r.stderr, /allowed: .*message\.created/);
  t.is(await new ConnectionService(hub).list(hub.config.defaultWorkspaceId, 'webhook').then((l) => l.length), 0);
  await hub.close();
});

test.serial('REST: a type named twice is stored and listed once (serial: the count check above must not see it)', async (t) => {
  const r = await api.http
    .post('/v1/webhooks')
    .set(...bearer(admin))
    .send({ url: 'http://127.0.0.1:9/hook', events: ['message.created', 'message.updated', 'message.created'] });
  t.is(r.status, 201, JSON.stringify(r.body));
  t.deepEqual(r.body.webhook.config.events, ['message.created', 'message.updated']);
  const patched = await api.http
    .patch(`/v1/connections/${r.body.webhook.id}`)
    .set(...bearer(admin))
    .send({ config: { events: ['message.deleted', 'message.deleted'] } });
  t.is(patched.status, 200, JSON.stringify(patched.body));
  const listed = (await api.http.get('/v1/webhooks').set(...bearer(admin))).body.webhooks.find((w: { id: string }) => w.id === r.body.webhook.id);
  t.deepEqual(listed.config.events, ['message.deleted']);
  await api.http.delete(`/v1/webhooks/${r.body.webhook.id}`).set(...bearer(admin));
});
