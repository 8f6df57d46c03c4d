/**
 * The delivery log's retention: settled deliveries record settledAt and their keys `at` (the same time, in the
 * same write); prune() deletes both once older than webhookDeliveryRetentionDays and never touches a pending
 * delivery; 0 keeps everything; remove() deletes a subscription's rows and keys and no other's. The prune is
 * driven with a `now` in the future instead of waiting.
 */
import test from 'ava';
import { ConnectorQueues } from '../../connectors/queues.js';
import type { ConnectionRecord } from '../../connectors/types.js';
import { generateSecret } from '../../connectors/webhook/signing.js';
import type { Hub } from '../../core/hub.js';
import { DELIVERIES, DELIVERY_KEYS, WebhookService, type Delivery, type DeliveryKey } from '../../plugins/webhooks/service.js';
import { startReceiver, until, type Receiver } from '../connectors/receiver.js';
import { openTestHub, serversForFile } from '../helpers/hub.js';
import { event } from './support.js';

const DAY = 24 * 3600_000;

const servers = serversForFile();

interface Ctx {
  hub: Hub & { close(): Promise<void> };
  queues: ConnectorQueues;
  svc: WebhookService;
  rcv: Receiver;
  sub: ConnectionRecord;
  /** Other receivers, closed with the rest. */
  more: Receiver[];
}

async function setup(retentionDays?: number): Promise<Ctx> {
  const hub = await openTestHub(servers, { webhooksAllowPrivate: true, ...(retentionDays !== undefined ? { webhookDeliveryRetentionDays: retentionDays } : {}) });
  const queues = new ConnectorQueues(hub);
  // One retry, then give up: a delivery that fails twice settles as failed.
  const svc = new WebhookService(hub, queues, { scheduleMs: [50], retryWindowMs: 0, jitter: 0 });
  svc.startWorker();
  const rcv = await startReceiver();
  const sub = await newSub(hub, svc, rcv.url);
  return { hub, queues, svc, rcv, sub, more: [] };
}

async function newSub(hub: Hub, svc: WebhookService, url: string, status: 'active' | 'disabled' = 'active'): Promise<ConnectionRecord> {
  const view = await svc.connections.create(hub.config.defaultWorkspaceId, 'webhook', { url, events: ['message.created'], secret: generateSecret() });
  if (status === 'disabled') await svc.connections.setStatus(view.id, 'disabled', 'test');
  return svc.connections.getRecord(view.id);
}

async function teardown(c: Ctx): Promise<void> {
  await c.queues.close();
  await Promise.all([c.rcv, ...c.more].map((r) => r.close()));
  await c.hub.close();
}

const keyOf = (c: Ctx, d: Pick<Delivery, 'subscriptionId' | 'eventId'>) => c.hub.store.docs.get<DeliveryKey>(DELIVERY_KEYS, `${d.subscriptionId}:${d.eventId}`);
const row = (c: Ctx, id: string) => c.hub.store.docs.get<Delivery>(DELIVERIES, id);
const settled = async (c: Ctx, id: string) => {
  await until(async () => (await row(c, id))?.status !== 'pending', 20_000, `delivery ${id} settled`);
  return (await row(c, id))!;
};

/** One succeeded, one failed (its subscription then auto-disabled), one pending (disabled subscription), one test send. */
async function mixedLog(c: Ctx) {
  const ok = await c.svc.enqueue(c.sub, event(c.hub));
  const failing = await startReceiver();
  failing.script = [500, 500];
  const failSub = await newSub(c.hub, c.svc, failing.url);
  const bad = await c.svc.enqueue(failSub, event(c.hub));
  const held = await newSub(c.hub, c.svc, c.rcv.url, 'disabled');
  const pending = await c.svc.enqueue(held, event(c.hub));
  const succeeded = await settled(c, ok.deliveryId);
  const failed = await settled(c, bad.deliveryId);
  c.more.push(failing);
  const test = await c.svc.sendTest(c.sub.id);
  return { succeeded, failed, pending: (await row(c, pending.deliveryId))!, test };
}

test('settled deliveries record settledAt and their keys the same `at`; a pending one and its key have neither', async (t) => {
  const c = await setup();
  t.is(c.hub.config.webhookDeliveryRetentionDays, 30, 'the default retention');
  const before = new Date().toISOString();
  const { succeeded, failed, pending, test: sent } = await mixedLog(c);
  t.is(succeeded.status, 'succeeded');
  t.is(failed.status, 'failed');
  for (const d of [succeeded, failed]) {
    t.true(typeof d.settledAt === 'string' && d.settledAt >= before, `${d.status} has settledAt`);
    t.deepEqual(await keyOf(c, d), { deliveryId: d.id, at: d.settledAt }, `the key of the ${d.status} delivery ages with it`);
  }
  t.is(pending.status, 'pending');
  t.is(pending.settledAt, undefined);
  t.deepEqual(await keyOf(c, pending), { deliveryId: pending.id }, 'no `at` on the key of a pending delivery');
  t.is(sent.status, 'succeeded');
  t.true(typeof sent.settledAt === 'string');
  t.is((await row(c, sent.id))?.settledAt, sent.settledAt);
  t.is(await keyOf(c, sent), null, 'a test send has no key');

  // A manual redelivery of the failed one succeeds (its receiver answers 200 now): settledAt (and its key's `at`) move to that attempt.
  const again = await c.svc.redeliver(failed.id);
  t.is(again.status, 'succeeded');
  t.true(again.settledAt! > failed.settledAt!);
  t.is((await keyOf(c, again))?.at, again.settledAt);
  await teardown(c);
});

test('prune deletes settled deliveries and keys past the retention; pending and recent ones stay', async (t) => {
  const c = await setup(7);
  const { succeeded, failed, pending, test: sent } = await mixedLog(c);
  t.deepEqual(await c.svc.prune(), { deliveries: 0, keys: 0 }, 'nothing is old yet');
  t.deepEqual(await c.svc.prune(Date.now() + 6 * DAY), { deliveries: 0, keys: 0 }, 'six days on, still within seven');
  // A delivery settled just now stays recent after the prune below.
  const recent = await settled(c, (await c.svc.enqueue(c.sub, event(c.hub))).deliveryId);

  const n = await c.svc.prune(Date.parse(recent.settledAt!) + 7 * DAY - 1);
  t.deepEqual(n, { deliveries: 3, keys: 2 }, 'succeeded, failed and the test send; two keys (a test send has none)');
  for (const d of [succeeded, failed, sent]) t.is(await row(c, d.id), null, `${d.status} ${d.eventType} delivery pruned`);
  t.is(await keyOf(c, succeeded), null);
  t.is(await keyOf(c, failed), null);
  t.is((await row(c, pending.id))?.status, 'pending', 'a pending delivery is never pruned');
  t.truthy(await keyOf(c, pending), 'nor its key');
  t.truthy(await row(c, recent.id), 'a delivery settled within the retention stays');
  t.truthy(await keyOf(c, recent));

  // Years later the pending one is still there; the recent one has gone.
  t.deepEqual(await c.svc.prune(Date.now() + 3650 * DAY), { deliveries: 1, keys: 1 });
  t.truthy(await row(c, pending.id));
  t.truthy(await keyOf(c, pending));
  await teardown(c);
});

test('retention 0 keeps every delivery', async (t) => {
  const c = await setup(0);
  const d = await settled(c, (await c.svc.enqueue(c.sub, event(c.hub))).deliveryId);
  t.is(d.status, 'succeeded');
  t.deepEqual(await c.svc.prune(Date.now() + 3650 * DAY), { deliveries: 0, keys: 0 });
  t.truthy(await row(c, d.id));
  t.truthy(await keyOf(c, d));
  await teardown(c);
});

test("remove deletes the subscription's deliveries and keys in batches, and leaves another subscription's", async (t) => {
  const c = await setup();
  // More rows than one clean-up batch (500), on a disabled subscription so nothing sends them.
  const gone = await newSub(c.hub, c.svc, c.rcv.url, 'disabled');
  const events = Array.from({ length: 620 }, () => event(c.hub));
  const rows = events.map((e, i) => WebhookService.deliveryOf(`dlv_${String(i).padStart(6, '0')}`, gone, e));
  for (let i = 0; i < rows.length; i += 400) {
    await c.hub.store.docs.writeAll(
      rows.slice(i, i + 400).flatMap((d) => [
        { op: 'insert' as const, collection: DELIVERY_KEYS, id: `${gone.id}:${d.eventId}`, doc: { deliveryId: d.id } },
        { op: 'insert' as const, collection: DELIVERIES, id: d.id, doc: d },
      ]),
    );
  }
  const kept = await Promise.all(events.slice(0, 3).map((e) => c.svc.enqueue(c.sub, e)));
  t.is(await c.hub.store.docs.count(DELIVERIES, { subscriptionId: gone.id }), 620);

  t.deepEqual(await c.svc.remove(gone.id, c.hub.config.defaultWorkspaceId), { deliveries: 620 });
  await t.throwsAsync(c.svc.connections.getRecord(gone.id), { message: /no connection|not found/i });
  t.is(await c.hub.store.docs.count(DELIVERIES, { subscriptionId: gone.id }), 0, 'every row of the removed subscription is gone');
  t.is((await Promise.all(rows.map((d) => keyOf(c, d)))).filter(Boolean).length, 0, 'and every key');
  t.is(await c.hub.store.docs.count(DELIVERIES, { subscriptionId: c.sub.id }), 3, "the other subscription's rows stay");
  for (const [i, k] of kept.entries()) t.deepEqual((await keyOf(c, { subscriptionId: c.sub.id, eventId: events[i]!.id }))?.deliveryId, k.deliveryId);
  await teardown(c);
});

test('rows settled before retention existed (no settledAt, keys without `at`) get their last attempt time at start, once, and then age out', async (t) => {
  const c = await setup(7);
  t.teardown(() => teardown(c));
  const old = new Date(Date.now() - 40 * DAY).toISOString();
  const legacy = (i: number, status: Delivery['status'], lastAttemptAt: string | null): Delivery => ({
    ...WebhookService.deliveryOf(`dlv_legacy_${i}`, c.sub, event(c.hub)),
    status,
    lastAttemptAt,
    createdAt: old,
  });
  const rows = [legacy(1, 'succeeded', old), legacy(2, 'failed', null), legacy(3, 'pending', null)];
  for (const d of rows) {
    await c.hub.store.docs.writeAll([
      { op: 'insert', collection: DELIVERY_KEYS, id: `${d.subscriptionId}:${d.eventId}`, doc: { deliveryId: d.id } },
      { op: 'insert', collection: DELIVERIES, id: d.id, doc: d },
    ]);
  }
  t.deepEqual(await c.svc.prune(), { deliveries: 0, keys: 0 }, 'before: nothing to prune them by');

  await c.svc.backfillSettledAt(); // what the plugin's start runs in the background
  for (const d of rows.slice(0, 2)) {
    t.is((await row(c, d.id))?.settledAt, old, `the ${d.status} row ages from its last attempt (or its creation)`);
    t.deepEqual(await keyOf(c, d), { deliveryId: d.id, at: old });
  }
  t.is((await row(c, rows[2]!.id))?.settledAt, undefined, 'a pending row is left alone');
  // Done once: a marker stops a later start from reading the log again (this late row is left as it is).
  const late = legacy(4, 'succeeded', old);
  await c.hub.store.docs.put(DELIVERIES, late.id, late);
  t.is(await c.svc.backfillSettledAt(), 0);
  t.is((await row(c, late.id))?.settledAt, undefined);
  await c.hub.store.docs.delete(DELIVERIES, late.id);

  t.deepEqual(await c.svc.prune(), { deliveries: 2, keys: 2 }, 'both are past the seven days');
  t.truthy(await row(c, rows[2]!.id));
  t.truthy(await keyOf(c, rows[2]!));
});

test('on SQLite the prune reads through an index on settledAt and at, not a scan of every row', async (t) => {
  const c = await setup(7);
  t.teardown(() => teardown(c));
  await c.svc.init(); // what the plugin's start does: the indexes
  type Explainable = { explainDeleteBefore(collection: string, field: string): string[] };
  const docs = c.hub.store.docs as unknown as Explainable;
  t.is(c.hub.store.kind, 'sqlite');
  for (const [collection, field] of [
    [DELIVERIES, 'settledAt'],
    [DELIVERY_KEYS, 'at'],
  ] as const) {
    const plan = docs.explainDeleteBefore(collection, field);
    t.true(
      plan.some((d) => /USING INDEX docs_ix_/.test(d)),
      `${collection}.${field}: ${plan.join(' | ')}`,
    );
  }
});
