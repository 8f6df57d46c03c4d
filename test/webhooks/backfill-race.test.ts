/**
 * The settledAt backfill (rows settled before retention existed) against delivery attempts that settle the
 * same rows while it runs. Whatever an attempt wrote, row or key, the backfill must not put its own, older
 * time over it: a key dated before its row is pruned first, and the event would then be sent again.
 *
 * The interleaving is made exact, not left to timing: the backfill runs on a view of the hub whose store is the
 * real SQLite store with a pause point around updateDoc of chosen delivery rows. At that point the test makes a
 * real manual redelivery (HTTP to a local receiver, written through the same store) and only then lets the
 * backfill go on. Every read and write goes to the real store.
 */
import test from 'ava';
import { ConnectorQueues } from '../../connectors/queues.js';
import type { ConnectionRecord } from '../../connectors/types.js';
import { generateSecret } from '../../connectors/webhook/signing.js';
import type { Hub } from '../../core/hub.js';
import type { Store } from '../../core/store/port.js';
import { DELIVERIES, DELIVERY_KEYS, WebhookService, type Delivery, type DeliveryKey } from '../../plugins/webhooks/service.js';
import { startReceiver } from '../connectors/receiver.js';
import { openTestHub, serversForFile } from '../helpers/hub.js';
import { event } from './support.js';

const DAY = 24 * 3600_000;
const servers = serversForFile();

interface Pause {
  /** Runs after the backfill read the row and before its compare-and-set reads it again and writes. */
  before?: () => Promise<void>;
  /** Runs once the backfill's write of the row is committed, before it goes on to the row's key. */
  after?: () => Promise<void>;
}

/** The hub as the backfill sees it: the same store, with `pauses` run around updateDoc of those delivery rows (once each). */
function pausingHub(hub: Hub, pauses: Map<string, Pause>): Hub {
  const real = hub.store;
  const updateDoc: Store['updateDoc'] = async (collection, id, change, outbox) => {
    const pause = collection === DELIVERIES ? pauses.get(id) : undefined;
    pauses.delete(id);
    await pause?.before?.();
    const out = await real.updateDoc(collection, id, change, outbox);
    await pause?.after?.();
    return out;
  };
  const store = new Proxy(real, {
    get(target, prop) {
      if (prop === 'updateDoc') return updateDoc;
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  return Object.create(hub, { store: { value: store } }) as Hub;
}

test('a row or key that a delivery attempt settles while the backfill runs keeps the attempt\'s time', async (t) => {
  const hub = await openTestHub(servers, { webhooksAllowPrivate: true, webhookDeliveryRetentionDays: 7 });
  const queues = new ConnectorQueues(hub);
  const rcv = await startReceiver();
  t.teardown(async () => {
    await queues.close();
    await rcv.close();
    await hub.close();
  });
  const svc = new WebhookService(hub, queues);
  const newSub = async (): Promise<ConnectionRecord> =>
    svc.connections.getRecord((await svc.connections.create(hub.config.defaultWorkspaceId, 'webhook', { url: rcv.url, events: ['message.created'], secret: generateSecret() })).id);
  const sub = await newSub();
  const gone = await newSub();

  // Failed deliveries from before retention: no settledAt on the row, no `at` on the key.
  const old = new Date(Date.now() - 40 * DAY).toISOString();
  const legacy = async (name: string, s: ConnectionRecord): Promise<Delivery> => {
    const d: Delivery = { ...WebhookService.deliveryOf(`dlv_legacy_${name}`, s, event(hub)), status: 'failed', attempts: 3, lastAttemptAt: old, createdAt: old };
    const r = await hub.store.docs.writeAll([
      { op: 'insert', collection: DELIVERY_KEYS, id: `${d.subscriptionId}:${d.eventId}`, doc: { deliveryId: d.id } satisfies DeliveryKey },
      { op: 'insert', collection: DELIVERIES, id: d.id, doc: d },
    ]);
    t.true(r.written);
    return d;
  };
  const settledBefore = await legacy('a', sub); // settled by an attempt between the backfill's read and its write
  const settledBetween = await legacy('b', sub); // settled by an attempt after the backfill dated the row, before its key
  const untouched = await legacy('c', sub);
  const removed = await legacy('d', gone); // its subscription removed between the backfill's read and its write

  const row = (id: string) => hub.store.docs.get<Delivery>(DELIVERIES, id);
  const keyOf = (d: Delivery) => hub.store.docs.get<DeliveryKey>(DELIVERY_KEYS, `${d.subscriptionId}:${d.eventId}`);
  const redelivered = new Map<string, Delivery>();
  const redeliver = async (d: Delivery) => {
    redelivered.set(d.id, await svc.redeliver(d.id));
  };
  const pauses = new Map<string, Pause>([
    [settledBefore.id, { before: () => redeliver(settledBefore) }],
    [
      settledBetween.id,
      {
        after: async () => {
          t.is((await row(settledBetween.id))?.settledAt, old, 'the backfill dated the row first');
          await redeliver(settledBetween);
        },
      },
    ],
    [removed.id, { before: async () => void (await svc.remove(gone.id, hub.config.defaultWorkspaceId)) }],
  ]);

  const changed = await new WebhookService(pausingHub(hub, pauses), queues).backfillSettledAt();
  t.is(pauses.size, 0, 'every pause point was reached');
  t.is(rcv.received.length, 2, 'two real attempts were made');

  for (const d of [settledBefore, settledBetween]) {
    const attempt = redelivered.get(d.id)!;
    t.is(attempt.status, 'succeeded');
    t.truthy(attempt.settledAt);
    t.not(attempt.settledAt, old);
    const now = (await row(d.id))!;
    t.is(now.status, 'succeeded', d.id);
    t.is(now.settledAt, attempt.settledAt, `${d.id}: the row keeps the attempt's settledAt`);
    t.is(now.attempts, 4, `${d.id}: and its attempt`);
    t.deepEqual(await keyOf(d), { deliveryId: d.id, at: attempt.settledAt }, `${d.id}: the key keeps the attempt's time, not the backfill's`);
  }
  t.is((await row(untouched.id))?.settledAt, old, 'a row nobody touched is dated from its last attempt');
  t.deepEqual(await keyOf(untouched), { deliveryId: untouched.id, at: old });
  t.is(await row(removed.id), null, 'a removed row is not brought back');
  t.is(await keyOf(removed), null, 'nor its key');
  // The backfill counts the rows it dated itself: the one settled before its write was not.
  t.is(changed, 2);

  // What the times are for: retention takes the untouched row and its key, and leaves the freshly settled ones
  // with theirs.
  t.deepEqual(await svc.prune(), { deliveries: 1, keys: 1 });
  for (const d of [settledBefore, settledBetween]) {
    t.truthy(await row(d.id));
    t.truthy(await keyOf(d));
  }
});
