import test from 'ava';
import { createEvent, subjectOf, type AnyEvent } from '../../core/events/catalog.js';
import { CONNECTIONS, ConnectionService } from '../../connectors/connections.js';
import { ConnectorQueues } from '../../connectors/queues.js';
import { generateSecret, sign } from '../../connectors/webhook/signing.js';
import type { Hub } from '../../core/hub.js';
import { DELIVERIES, WebhookService, type Delivery } from '../../plugins/webhooks/service.js';
import { openTestHub, serversForFile } from '../helpers/hub.js';
import { startReceiver, until, type Receiver } from './receiver.js';

const servers = serversForFile();

interface Ctx {
  hub: Hub & { close(): Promise<void> };
  queues: ConnectorQueues;
  svc: WebhookService;
  rcv: Receiver;
  subId: string;
  secret: string;
}

async function setup(opts: { scheduleMs?: number[]; retryWindowMs?: number; events?: string[] } = {}): Promise<Ctx> {
  const hub = await openTestHub(servers, { webhooksAllowPrivate: true });
  const queues = new ConnectorQueues(hub);
  const svc = new WebhookService(hub, queues, { scheduleMs: opts.scheduleMs ?? [50, 100, 150], retryWindowMs: opts.retryWindowMs ?? 0, jitter: 0 });
  svc.startWorker();
  const secret = generateSecret();
  const rcv = await startReceiver(secret);
  const sub = await svc.connections.create(hub.config.defaultWorkspaceId, 'webhook', {
    url: rcv.url,
    events: opts.events ?? ['message.created', 'message.updated'],
    secret,
  });
  return { hub, queues, svc, rcv, subId: sub.id, secret };
}

async function teardown(c: Ctx): Promise<void> {
  await c.queues.close();
  await c.rcv.close();
  await c.hub.close();
}

function messageEvent(hub: Hub, n: number, type: 'message.created' | 'message.updated' = 'message.created'): AnyEvent {
  return createEvent(type, {
    workspaceId: hub.config.defaultWorkspaceId,
    conversationId: 'cnv_1',
    actor: { type: 'user', id: 'usr_1' },
    data: {
      message: { id: `msg_${n}`, conversationId: 'cnv_1', seq: n, senderId: 'usr_1', text: `hello ${n}`, clientId: null, createdAt: new Date().toISOString() },
    },
  }) as AnyEvent;
}

test('signatures match the Standard Webhooks reference vector', (t) => {
  // The example from the Standard Webhooks specification's reference libraries.
  const sig = sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}');
  t.is(sig, 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
});

test('events are delivered signed, in order, with the event id as webhook-id; other types are not sent', async (t) => {
  const c = await setup();
  const events = Array.from({ length: 6 }, (_, i) => messageEvent(c.hub, i + 1));
  const other = createEvent('message.deleted', { ...events[0]!, data: events[0]!.data as never, conversationId: 'cnv_1' });
  for (const e of events) await c.svc.handleEvent(e);
  await c.svc.handleEvent(other as AnyEvent);
  await until(() => c.rcv.received.length >= 6, 30_000, 'six deliveries');
  t.deepEqual(
    c.rcv.received.map((r) => r.id),
    events.map((e) => e.id),
  );
  t.true(c.rcv.received.every((r) => r.verified), 'every signature verifies with the subscription secret');
  t.is(c.rcv.received[0]!.json.type, 'message.created');
  t.true(Math.abs(c.rcv.received[0]!.timestamp - Date.now() / 1000) < 60);
  const log = await c.svc.listDeliveries(c.subId);
  t.is(log.length, 6, 'no delivery for message.deleted, which the subscription did not ask for');
  t.true(log.every((d) => d.status === 'succeeded' && d.attempts === 1 && d.lastStatusCode === 200));
  await teardown(c);
});

test('the same event handled twice is delivered once', async (t) => {
  const c = await setup();
  const e = messageEvent(c.hub, 1);
  await c.svc.handleEvent(e);
  await c.svc.handleEvent(e);
  await until(() => c.rcv.received.length >= 1);
  await c.svc.handleEvent(e); // and again after it was delivered
  await new Promise((r) => setTimeout(r, 500));
  t.is(c.rcv.received.length, 1);
  t.is(await c.hub.store.docs.count(DELIVERIES, { subscriptionId: c.subId }), 1);
  await teardown(c);
});

test('a failing delivery is retried with the same webhook-id and blocks later ones until it succeeds', async (t) => {
  const c = await setup({ scheduleMs: [100, 200, 300, 400], retryWindowMs: 3600_000 });
  c.rcv.script = [500, 503];
  const events = [messageEvent(c.hub, 1), messageEvent(c.hub, 2), messageEvent(c.hub, 3)];
  for (const e of events) await c.svc.handleEvent(e);
  await until(() => c.rcv.received.filter((r) => r.status === 200).length >= 3, 30_000, 'three successful deliveries');
  const ids = c.rcv.received.map((r) => r.id);
  t.deepEqual(ids, [events[0]!.id, events[0]!.id, events[0]!.id, events[1]!.id, events[2]!.id], 'head retried before the rest');
  t.true(c.rcv.received.every((r) => r.verified));
  const first = (await c.svc.listDeliveries(c.subId)).find((d) => d.eventId === events[0]!.id)!;
  t.is(first.attempts, 3);
  t.deepEqual(
    first.log.map((l) => l.statusCode),
    [500, 503, 200],
  );
  t.is(first.status, 'succeeded');
  // Exponential-ish schedule: the second retry waited at least the second delay.
  const times = c.rcv.received.slice(0, 3).map((r) => r.at);
  t.true(times[2]! - times[1]! >= 190);
  await teardown(c);
});

test('Retry-After from the receiver is respected', async (t) => {
  const c = await setup({ scheduleMs: [50], retryWindowMs: 3600_000 });
  c.rcv.script = [{ status: 429, headers: { 'retry-after': '1' } }];
  await c.svc.handleEvent(messageEvent(c.hub, 1));
  await until(() => c.rcv.received.length >= 2);
  t.true(c.rcv.received[1]!.at - c.rcv.received[0]!.at >= 950, 'waited the second the receiver asked for');
  await teardown(c);
});

test('410 Gone disables the subscription with a reason and stops deliveries', async (t) => {
  const c = await setup();
  c.rcv.script = [410];
  await c.svc.handleEvent(messageEvent(c.hub, 1));
  await until(async () => (await c.svc.connections.get(c.subId)).status === 'disabled', 30_000, 'disabled');
  const sub = await c.svc.connections.get(c.subId);
  t.regex(sub.statusReason ?? '', /410/);
  await c.svc.handleEvent(messageEvent(c.hub, 2));
  await new Promise((r) => setTimeout(r, 400));
  t.is(c.rcv.received.length, 1, 'nothing more is sent to a disabled subscription');
  const [d] = await c.svc.listDeliveries(c.subId);
  t.is(d!.status, 'failed');
  await teardown(c);
});

test('persistent failure disables after the schedule and window; manual redelivery and re-enable resume', async (t) => {
  const c = await setup({ scheduleMs: [50, 50], retryWindowMs: 0 });
  c.rcv.script = [500, 500, 500];
  const e1 = messageEvent(c.hub, 1);
  await c.svc.handleEvent(e1);
  await until(async () => (await c.svc.connections.get(c.subId)).status === 'disabled', 30_000, 'auto-disable');
  const sub = await c.svc.connections.get(c.subId);
  t.regex(sub.statusReason ?? '', /auto-disabled: 3 attempts/);
  // The auto-disable is an admin change: webhook.changed on JetStream, by the plugin.
  const subject = subjectOf({ type: 'webhook.changed', workspaceId: sub.workspaceId }, c.hub.bus.namespace);
  let last: AnyEvent | undefined;
  await until(async () => {
    const m = await c.hub.bus.jsm.streams.getMessage(c.hub.bus.streams.events, { last_by_subj: subject }).catch(() => null);
    last = m?.json<AnyEvent>();
    return (last?.data as { action?: string } | undefined)?.action === 'auto_disabled';
  }, 30_000, 'webhook.changed auto_disabled');
  t.deepEqual(last!.data, { webhookId: c.subId, action: 'auto_disabled' });
  t.deepEqual(last!.actor, { type: 'plugin', id: 'webhooks' });
  const [failed] = await c.svc.listDeliveries(c.subId);
  t.is(failed!.status, 'failed');
  t.is(failed!.attempts, 3);
  // A failed job is kept in BullMQ (retryable), not dropped.
  // (The subscription is disabled just before the job's failure is recorded, so wait for that.)
  await until(async () => (await c.queues.queue('webhook').getFailedCount()) >= 1, 30_000, 'failed job kept');

  const again = await c.svc.redeliver(failed!.id);
  t.is(again.status, 'succeeded');
  t.is(again.log.at(-1)!.manual, true);
  t.is(c.rcv.received.at(-1)!.id, e1.id, 'redelivery keeps the webhook-id');

  // Events arriving while disabled are not queued; after enabling, new ones flow again.
  await c.svc.enable(c.subId);
  const e2 = messageEvent(c.hub, 2);
  await c.svc.handleEvent(e2);
  await until(() => c.rcv.received.some((r) => r.id === e2.id));
  t.pass();
  await teardown(c);
});

test('a test event is signed and logged as a delivery', async (t) => {
  const c = await setup();
  const d = await c.svc.sendTest(c.subId);
  t.is(d.status, 'succeeded');
  t.is(c.rcv.received.length, 1);
  t.true(c.rcv.received[0]!.verified);
  t.is(c.rcv.received[0]!.json.type, 'webhook.test');
  t.is((await c.svc.listDeliveries(c.subId))[0]!.id, d.id);
  await teardown(c);
});

test('the signing secret is sealed at rest and never in listings', async (t) => {
  const c = await setup();
  const raw = await c.hub.store.docs.get<Record<string, unknown>>(CONNECTIONS, c.subId);
  t.false(JSON.stringify(raw).includes(c.secret.slice(6)), 'the raw document does not contain the secret');
  t.regex(String(raw!.sealed), /^v1\./);
  const listed = await c.svc.connections.list(c.hub.config.defaultWorkspaceId);
  t.false(JSON.stringify(listed).includes(c.secret.slice(6)));
  t.deepEqual(listed[0]!.secretFields, ['secret']);
  const resolved = await c.svc.connections.resolve<{ secret: string }>(c.subId);
  t.is(resolved.config.secret, c.secret);
  const d: Delivery = (await c.svc.sendTest(c.subId));
  t.false(JSON.stringify(d).includes(c.secret.slice(6)), 'delivery logs carry no secret');
  await teardown(c);
});

test('key rotation: old key still decrypts, rotate-keys re-seals under the new key', async (t) => {
  const c = await setup();
  const oldKey = c.hub.secrets.encryptionKey;
  const newKey = Buffer.alloc(32, 9);
  const withBoth = { ...c.hub, secrets: { ...c.hub.secrets, encryptionKey: newKey }, config: { ...c.hub.config, previousSecretKeys: [oldKey.toString('base64')] } } as Hub;
  const svc2 = new ConnectionService(withBoth);
  t.is((await svc2.resolve<{ secret: string }>(c.subId)).config.secret, c.secret);
  const r = await svc2.rotateKeys();
  t.is(r.rotated, 1);
  t.deepEqual(r.failed, []);
  const onlyNew = new ConnectionService({ ...withBoth, config: { ...c.hub.config, previousSecretKeys: [] } } as Hub);
  t.is((await onlyNew.resolve<{ secret: string }>(c.subId)).config.secret, c.secret);
  // And the old key alone no longer opens it.
  await t.throwsAsync(c.svc.connections.resolve(c.subId), { message: /no key with id/ });
  t.is((await svc2.rotateKeys()).rotated, 0, 'a second rotation has nothing to do');
  await teardown(c);
});

test('bad webhook config is refused with the field named and no value echoed', async (t) => {
  const c = await setup();
  const err = await t.throwsAsync(c.svc.connections.create('default', 'webhook', { url: 'not a url', events: [], secret: 'whsec_short' }));
  t.regex(err!.message, /url/);
  t.regex(err!.message, /events/);
  t.regex(err!.message, /secret/);
  t.false(err!.message.includes('whsec_short'));
  await teardown(c);
});
