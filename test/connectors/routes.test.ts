/**
 * The admin REST routes for connections and webhooks (mounted by the webhooks plugin) against a real hub:
 * admins only, strict validation, workspace scoping, secrets never returned (the signing secret once on
 * create), the delivery log and redelivery, and the change events they commit.
 */
import test from 'ava';
import { ConnectionService } from '../../connectors/connections.js';
import { generateSecret } from '../../connectors/webhook/signing.js';
import { createEvent, subjectOf, type AnyEvent } from '../../core/events/catalog.js';
import { createWebhooksPlugin } from '../../plugins/webhooks/index.js';
import { DELIVERIES, DELIVERY_KEYS } from '../../plugins/webhooks/service.js';
import { startServers } from '../helpers/hub.js';
import { assertInvalid, bearer, openPluginApi, type PluginApi, type Session } from '../notifications/support.js';
import { startReceiver, until, type Receiver } from './receiver.js';

let servers: Awaited<ReturnType<typeof startServers>>;
let api: PluginApi;
let rcv: Receiver;
let admin: Session;
let agent: Session;
const plugin = createWebhooksPlugin({ scheduleMs: [50], retryWindowMs: 3600_000, jitter: 0 });
test.before(async () => {
  servers = await startServers();
  api = await openPluginApi(servers, [plugin], { webhooksAllowPrivate: true });
  rcv = await startReceiver();
  admin = await api.register('Root', 'admin');
  agent = await api.register('Agent', 'agent');
});
test.after.always(async () => {
  await rcv?.close();
  await api?.close();
  await servers?.dispose();
});

test.serial('webhooks: create returns the secret once; list, test, deliveries, redeliver, delete; events committed', async (t) => {
  const created = await api.http.post('/v1/webhooks').set(...bearer(admin)).send({ url: rcv.url, events: ['message.created'], description: 'CRM' });
  t.is(created.status, 201, JSON.stringify(created.body));
  const { webhook, secret } = created.body as { webhook: { id: string; status: string; config: Record<string, unknown>; secretFields: string[] }; secret: string };
  t.regex(secret, /^whsec_/);
  t.is(webhook.status, 'active');
  t.deepEqual(webhook.secretFields, ['secret']);
  t.false(JSON.stringify(webhook).includes(secret.slice(6)), 'the webhook view holds no secret');
  rcv.secret = secret;

  for (const path of ['/v1/webhooks', `/v1/connections/${webhook.id}`, '/v1/connections']) {
    const r = await api.http.get(path).set(...bearer(admin));
    t.is(r.status, 200, path);
    t.false(JSON.stringify(r.body).includes(secret.slice(6)), `${path} never returns the secret`);
    t.false(JSON.stringify(r.body).includes('sealed'), `${path} has no sealed blob`);
  }
  t.deepEqual((await api.http.get('/v1/webhooks').set(...bearer(admin))).body.webhooks.map((w: { id: string }) => w.id), [webhook.id]);

  const tested = await api.http.post(`/v1/connections/${webhook.id}/test`).set(...bearer(admin));
  t.is(tested.status, 200);
  t.true(tested.body.ok, tested.body.detail);
  await until(() => rcv.received.some((r) => r.verified && r.json.type === 'webhook.test'), 10_000, 'signed test event');
  // The documented body shape, with the webhook-id header as its id.
  const testEvent = rcv.received.find((r) => r.json.type === 'webhook.test')!;
  t.deepEqual(Object.keys(testEvent.json).sort(), ['data', 'id', 'timestamp', 'type', 'workspaceId']);
  t.is((testEvent.json as { workspaceId?: string }).workspaceId, api.hub.config.defaultWorkspaceId);
  t.is(testEvent.headers['webhook-id'], testEvent.json.id);

  // A real event delivered by the plugin's own service (started by openPluginApi), then read back and redelivered.
  const ws = api.hub.config.defaultWorkspaceId;
  const conn = await new ConnectionService(api.hub).getRecord(webhook.id);
  const ev = createEvent('message.created', {
    workspaceId: ws,
    conversationId: 'cnv_1',
    actor: { type: 'user', id: 'usr_1' },
    data: { message: { id: 'msg_1', conversationId: 'cnv_1', seq: 1, senderId: 'usr_1', text: 'hello', clientId: null, createdAt: new Date().toISOString() } },
  });
  await plugin.service().enqueue(conn, ev);
  await until(() => rcv.received.some((r) => r.id === ev.id), 20_000, 'delivery');
  const log = await api.http.get(`/v1/webhooks/${webhook.id}/deliveries?limit=10`).set(...bearer(admin));
  t.is(log.status, 200);
  const delivered = (log.body.deliveries as Array<{ id: string; eventType: string; status: string; body?: string }>).find((d) => d.eventType === 'message.created')!;
  t.is(delivered.status, 'succeeded');
  t.is(delivered.body, undefined, 'the log leaves the body out');
  const before = rcv.received.length;
  const again = await api.http.post(`/v1/webhooks/deliveries/${delivered.id}/redeliver`).set(...bearer(admin));
  t.is(again.status, 200);
  t.is(again.body.delivery.log.at(-1).manual, true);
  t.is(rcv.received.length, before + 1);
  t.is(rcv.received.at(-1)!.id, ev.id, 'same webhook-id');

  const removed = await api.http.delete(`/v1/webhooks/${webhook.id}`).set(...bearer(admin));
  t.is(removed.status, 204);
  t.is((await api.http.get(`/v1/connections/${webhook.id}`).set(...bearer(admin))).status, 404);

  // Every change above committed a webhook.changed event naming the admin.
  const subject = subjectOf({ type: 'webhook.changed', workspaceId: ws }, api.hub.bus.namespace);
  await until(async () => {
    const m = await api.hub.bus.jsm.streams.getMessage(api.hub.bus.streams.events, { last_by_subj: subject }).catch(() => null);
    const e = m?.json<AnyEvent>();
    return (e?.data as { action?: string } | undefined)?.action === 'removed' && e?.actor.id === admin.id;
  }, 20_000, 'webhook.changed removed by the admin');
  t.pass();
});

test.serial("removing a webhook deletes its deliveries and idempotency keys (both DELETE routes); another webhook's stay", async (t) => {
  const ws = api.hub.config.defaultWorkspaceId;
  const make = async () => {
    const r = await api.http.post('/v1/webhooks').set(...bearer(admin)).send({ url: rcv.url, events: ['message.created'] });
    t.is(r.status, 201, JSON.stringify(r.body));
    return new ConnectionService(api.hub).getRecord(r.body.webhook.id as string);
  };
  const [a, b, kept] = [await make(), await make(), await make()];
  const eventIds: string[] = [];
  for (let n = 1; n <= 3; n++) {
    const ev = createEvent('message.created', {
      workspaceId: ws,
      conversationId: 'cnv_1',
      actor: { type: 'user', id: 'usr_1' },
      data: { message: { id: `msg_rm_${n}`, conversationId: 'cnv_1', seq: n, senderId: 'usr_1', text: 'hi', clientId: null, createdAt: new Date().toISOString() } },
    });
    eventIds.push(ev.id);
    for (const sub of [a, b, kept]) await plugin.service().enqueue(sub, ev);
  }
  const docs = api.hub.store.docs;
  const keysOf = async (subId: string) => (await Promise.all(eventIds.map((e) => docs.get(DELIVERY_KEYS, `${subId}:${e}`)))).filter(Boolean).length;
  for (const sub of [a, b, kept]) {
    t.is(await docs.count(DELIVERIES, { subscriptionId: sub.id }), 3);
    t.is(await keysOf(sub.id), 3);
  }

  t.is((await api.http.delete(`/v1/webhooks/${a.id}`).set(...bearer(admin))).status, 204);
  t.is((await api.http.delete(`/v1/connections/${b.id}`).set(...bearer(admin))).status, 204);
  for (const sub of [a, b]) {
    t.is(await docs.count(DELIVERIES, { subscriptionId: sub.id }), 0, `no delivery of removed ${sub.id} is left`);
    t.is(await keysOf(sub.id), 0, `no key of removed ${sub.id} is left`);
  }
  t.is(await docs.count(DELIVERIES, { subscriptionId: kept.id }), 3, 'the other webhook keeps its log');
  t.is(await keysOf(kept.id), 3);
});

test.serial('connections: create, patch (config, name, status), delete; secrets stay sealed', async (t) => {
  const body = { connector: 'webhook', name: 'hook', config: { url: rcv.url, events: ['message.updated'], secret: generateSecret() } };
  const created = await api.http.post('/v1/connections').set(...bearer(admin)).send(body);
  t.is(created.status, 201, JSON.stringify(created.body));
  const id = created.body.connection.id as string;
  t.false(JSON.stringify(created.body).includes(body.config.secret.slice(6)));

  const renamed = await api.http.patch(`/v1/connections/${id}`).set(...bearer(admin)).send({ name: 'renamed', config: { events: ['message.created', 'message.updated'] } });
  t.is(renamed.status, 200, JSON.stringify(renamed.body));
  t.is(renamed.body.connection.name, 'renamed');
  t.deepEqual(renamed.body.connection.config.events, ['message.created', 'message.updated']);
  // The secret survived the config patch (sealed again with the merged config).
  const resolved = await new ConnectionService(api.hub).resolve<{ secret: string }>(id);
  t.is(resolved.config.secret, body.config.secret);

  const disabled = await api.http.patch(`/v1/connections/${id}`).set(...bearer(admin)).send({ status: 'disabled' });
  t.is(disabled.body.connection.status, 'disabled');
  t.is(disabled.body.connection.statusReason, 'disabled by a user');
  const enabled = await api.http.patch(`/v1/connections/${id}`).set(...bearer(admin)).send({ status: 'active' });
  t.is(enabled.body.connection.status, 'active');
  t.is(enabled.body.connection.statusReason, null);

  t.is((await api.http.delete(`/v1/connections/${id}`).set(...bearer(admin))).status, 204);
  t.is((await api.http.delete(`/v1/connections/${id}`).set(...bearer(admin))).status, 404);
});

test.serial('admins only; strict validation; another workspace\'s connection is a 404', async (t) => {
  for (const [method, path] of [
    ['get', '/v1/connections'],
    ['post', '/v1/connections'],
    ['get', '/v1/webhooks'],
    ['post', '/v1/webhooks'],
    ['get', '/v1/webhooks/con_x/deliveries'],
    ['post', '/v1/webhooks/deliveries/dlv_x/redeliver'],
  ] as const) {
    t.is((await api.http[method](path).set(...bearer(agent)).send({})).status, 403, `${method} ${path} as agent`);
    t.is((await api.http[method](path).send({})).status, 401, `${method} ${path} signed out`);
  }

  const bad: Array<[string, string, Record<string, unknown>, string]> = [
    ['post', '/v1/webhooks', { url: 'not a url', events: ['message.created'] }, 'body.url'],
    ['post', '/v1/webhooks', { url: rcv.url, events: ['no.such.event'] }, 'body.events.0'],
    ['post', '/v1/webhooks', { url: rcv.url, events: ['message.created'], secret: 'mine' }, 'body.secret'],
    ['post', '/v1/connections', { connector: 'nope', config: {} }, 'body.connector'],
    ['post', '/v1/connections', { connector: 'webhook', config: { url: rcv.url, events: ['message.created'], secret: generateSecret(), extra: 1 } }, 'body.config.extra'],
    ['post', '/v1/connections', { connector: 'webhook', config: { url: rcv.url, events: ['message.created'], secret: 'whsec_short' } }, 'body.config.secret'],
  ];
  for (const [, path, body, field] of bad) {
    const r = await api.http.post(path).set(...bearer(admin)).send(body);
    t.is(r.status, 400, `${path} ${JSON.stringify(body)}`);
    t.is(r.body.error.code, 'VALIDATION_FAILED');
    t.true(r.body.error.details.fields.includes(field), `${field} in ${JSON.stringify(r.body.error.details.fields)}`);
    t.false(JSON.stringify(r.body).includes('whsec_short'), 'no value echoed');
  }
  t.is((await api.http.get('/v1/connections?x=1').set(...bearer(admin))).status, 400);
  t.is((await api.http.patch('/v1/connections/con_x').set(...bearer(admin)).send({})).status, 400);
  t.is((await api.http.get('/v1/webhooks/con_x/deliveries?limit=0').set(...bearer(admin))).status, 400);

  // A connection in another workspace: invisible to this workspace's admin.
  const foreign = await new ConnectionService(api.hub).create('other-ws', 'webhook', { url: rcv.url, events: ['message.created'], secret: generateSecret() });
  for (const [method, path] of [
    ['get', `/v1/connections/${foreign.id}`],
    ['patch', `/v1/connections/${foreign.id}`],
    ['delete', `/v1/connections/${foreign.id}`],
    ['post', `/v1/connections/${foreign.id}/test`],
    ['delete', `/v1/webhooks/${foreign.id}`],
    ['get', `/v1/webhooks/${foreign.id}/deliveries`],
  ] as const) {
    const r = await api.http[method](path).set(...bearer(admin)).send(method === 'patch' ? { name: 'x' } : {});
    t.is(r.status, 404, `${method} ${path}`);
    t.is(r.body.error.code, 'NOT_FOUND');
  }
  t.false((await api.http.get('/v1/connections').set(...bearer(admin))).body.connections.some((c: { id: string }) => c.id === foreign.id));
  t.is((await new ConnectionService(api.hub).get(foreign.id)).status, 'active', 'untouched');
});

test.serial('webhook routes name a webhook when one is missing; bodies, queries and params are strict on every route', async (t) => {
  for (const [method, path] of [
    ['get', '/v1/webhooks/wh_x/deliveries'],
    ['delete', '/v1/webhooks/wh_x'],
  ] as const) {
    const r = await api.http[method](path).set(...bearer(admin));
    t.is(r.status, 404, `${method} ${path}`);
    t.deepEqual(r.body.error, { code: 'NOT_FOUND', message: 'No such webhook.' }, `${method} ${path}`);
  }
  t.is((await api.http.get('/v1/connections/wh_x').set(...bearer(admin))).body.error.message, 'No such connection.');
  t.is((await api.http.delete('/v1/connections/wh_x').set(...bearer(admin))).body.error.message, 'No such connection.');

  const created = await api.http.post('/v1/webhooks').set(...bearer(admin)).send({ url: rcv.url, events: ['message.created'] });
  t.is(created.status, 201);
  const id = created.body.webhook.id as string;
  for (const q of ['limit=1e1', 'limit=0x5', 'limit=%201', 'limit=1001', 'limit=1&limit=2', 'limit=abc']) {
    assertInvalid(t, await api.http.get(`/v1/webhooks/${id}/deliveries?${q}`).set(...bearer(admin)), 'query.limit', q);
  }
  t.is((await api.http.get(`/v1/webhooks/${id}/deliveries?limit=1000`).set(...bearer(admin))).status, 200);
  assertInvalid(t, await api.http.get('/v1/webhooks').set(...bearer(admin)).send({ a: 1 }), 'body.a', 'GET webhooks {a:1}');
  assertInvalid(t, await api.http.get('/v1/webhooks?x=1').set(...bearer(admin)), 'query.x', 'GET webhooks ?x=1');
  assertInvalid(t, await api.http.get('/v1/connections?connector=webhook&connector=webhook').set(...bearer(admin)), 'query.connector', 'repeated connector');
  for (const unknown of ['webhooks', 'nope']) {
    const r = await api.http.get(`/v1/connections?connector=${unknown}`).set(...bearer(admin));
    assertInvalid(t, r, 'query.connector', `connector=${unknown}`);
    t.regex(r.body.error.message, /one of webhook, google-drive, dropbox/);
  }
  const listed = (await api.http.get('/v1/connections?connector=webhook').set(...bearer(admin))).body.connections as Array<{ id: string; connector: string }>;
  t.true(listed.some((c) => c.id === id) && listed.every((c) => c.connector === 'webhook'));
  assertInvalid(t, await api.http.post(`/v1/connections/${id}/test`).set(...bearer(admin)).send({ x: 1 }), 'body.x', 'POST test {x:1}');
  assertInvalid(t, await api.http.delete(`/v1/webhooks/${id}`).set(...bearer(admin)).send({ $ne: null }), 'body.$ne', 'DELETE webhook operator');
  assertInvalid(t, await api.http.delete(`/v1/connections/${id}?force=1`).set(...bearer(admin)), 'query.force', 'DELETE connection ?force=1');
  assertInvalid(t, await api.http.get(`/v1/connections/${'x'.repeat(65)}`).set(...bearer(admin)), 'params.id', 'a 65-character id');
  t.is((await api.http.get(`/v1/connections/${id}`).set(...bearer(admin))).body.connection.status, 'active', 'the refused requests changed nothing');
  t.is((await api.http.delete(`/v1/webhooks/${id}`).set(...bearer(admin))).status, 204);

  const doc = (await api.http.get('/v1/openapi.json')).body;
  const deliveries = doc.paths['/v1/webhooks/{id}/deliveries']?.get;
  t.deepEqual(deliveries?.parameters.map((p: { name: string }) => p.name), ['id', 'limit']);
  t.like(deliveries?.parameters[1].schema, { type: 'integer', maximum: 1000, default: 50 });
  t.truthy(deliveries?.responses['403'], 'admins only');
  t.deepEqual(doc.paths['/v1/connections']?.post?.requestBody.content['application/json'].schema.required, ['connector', 'config']);
});
