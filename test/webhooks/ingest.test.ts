/**
 * How the webhooks plugin writes deliveries and starts their drain jobs: the idempotency key and the row in one
 * atomic write (docs.writeAll), kicks that are not awaited (kickSoon) and are skipped while a drain job of this
 * process is still running, and the safety nets that keep any delivery from being stranded.
 */
import test from 'ava';
import Database from 'better-sqlite3';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Job } from 'bullmq';
import type { Hub } from '../../core/hub.js';
import { newId } from '../../core/ids.js';
import type { DocValue } from '../../core/store/port.js';
import { CONNECTIONS } from '../../connectors/connections.js';
import { ConnectorQueues } from '../../connectors/queues.js';
import { generateSecret } from '../../connectors/webhook/signing.js';
import { DELIVERIES, DELIVERY_KEYS, WebhookService, type Delivery } from '../../plugins/webhooks/service.js';
import { openTestHub, serversForFile } from '../helpers/hub.js';
import { startReceiver, until, type Receiver } from '../connectors/receiver.js';
import { event } from './support.js';

const servers = serversForFile();

interface Ctx {
  hub: Hub & { close(): Promise<void> };
  queues: ConnectorQueues;
  rcv: Receiver;
  secret: string;
  subId: string;
}

/** A hub, a receiver and one subscription to message.created; `make` builds the services on the hub's queues. */
async function setup(): Promise<Ctx> {
  const hub = await openTestHub(servers, { webhooksAllowPrivate: true });
  const queues = new ConnectorQueues(hub);
  const secret = generateSecret();
  const rcv = await startReceiver(secret);
  const sub = await new WebhookService(hub, queues).connections.create(hub.config.defaultWorkspaceId, 'webhook', { url: rcv.url, events: ['message.created'], secret });
  return { hub, queues, rcv, secret, subId: sub.id };
}

async function teardown(c: Ctx, ...services: WebhookService[]): Promise<void> {
  for (const s of services) await s.settleKicks(10_000);
  await c.queues.close();
  await c.rcv.close();
  await c.hub.close();
}

/** A service that counts its Redis kicks and can make the next ones fail (as when Redis is unreachable). */
class CountingService extends WebhookService {
  redisKicks = 0;
  failKicks = 0;
  override async kick(subscriptionId: string): Promise<void> {
    this.redisKicks++;
    if (this.failKicks > 0) {
      this.failKicks--;
      throw new Error('Connection is closed.');
    }
    return super.kick(subscriptionId);
  }
}

const received = (c: Ctx) => c.rcv.received.map((r) => r.id);

test('the key and the row are one write: a failure writing the row leaves no key behind, and the retry delivers once', async (t) => {
  const c = await setup();
  const svc = new WebhookService(c.hub, c.queues);
  svc.startWorker();
  // A second connection to the hub's SQLite file makes every delivery-row insert fail, like a full disk would.
  const db = new Database(join(c.hub.config.dataDir, 'voxa.db'));
  t.teardown(() => db.close());
  db.exec(`CREATE TRIGGER fail_rows BEFORE INSERT ON docs WHEN new.collection = '${DELIVERIES}' BEGIN SELECT RAISE(ABORT, 'injected failure'); END`);
  const e = event(c.hub);
  await t.throwsAsync(svc.handleEvent(e), { any: true, message: /injected failure/ });
  t.is(await c.hub.store.docs.count(DELIVERY_KEYS), 0, 'no idempotency key without its delivery row');
  t.is(await c.hub.store.docs.count(DELIVERIES), 0);

  db.exec('DROP TRIGGER fail_rows');
  t.is(await svc.handleEvent(e), 1, 'the redelivered event is enqueued now');
  t.is(await svc.handleEvent(e), 0, 'and only once');
  await until(() => c.rcv.received.length >= 1, 10_000, 'the delivery');
  t.deepEqual(received(c), [e.id]);
  t.is(await c.hub.store.docs.count(DELIVERIES, { subscriptionId: c.subId }), 1);
  await teardown(c, svc);
});

test('two enqueues that pick the same delivery id (a backfill racing the plugin) both keep their own row', async (t) => {
  const c = await setup();
  const svc = new WebhookService(c.hub, c.queues);
  await svc.connections.setStatus(c.subId, 'disabled', 'not sending in this test');
  const rec = await svc.connections.getRecord(c.subId);
  // A previous row from a clock that runs ahead: both look-ups below pick its successor as their id.
  const ahead = 'dlv_2222222222zzzzzzzzzzzzzzzz';
  await c.hub.store.docs.put<Partial<Delivery>>(DELIVERIES, ahead, { id: ahead, subscriptionId: c.subId, status: 'succeeded' });
  const [e1, e2] = [event(c.hub), event(c.hub)];
  const [a, b] = await Promise.all([svc.enqueue(rec, e1), svc.enqueue(rec, e2)]);
  t.true(a!.created && b!.created);
  t.not(a!.deliveryId, b!.deliveryId);
  for (const [e, r] of [[e1, a!], [e2, b!]] as const) {
    const key = await c.hub.store.docs.get<{ deliveryId: string }>(DELIVERY_KEYS, `${c.subId}:${e.id}`);
    t.is(key?.deliveryId, r.deliveryId);
    t.is((await c.hub.store.docs.get<Delivery>(DELIVERIES, r.deliveryId))?.eventId, e.id, 'each key names a row of its own event');
  }
  await teardown(c, svc);
});

test('a key without its row, as data written before the atomic write can hold, is repaired and sent once', async (t) => {
  const c = await setup();
  const svc = new WebhookService(c.hub, c.queues);
  svc.startWorker();
  const e = event(c.hub);
  // The old two-commit enqueue, stopped by a crash between the key and the row.
  const deliveryId = newId('dlv');
  await c.hub.store.docs.put(DELIVERY_KEYS, `${c.subId}:${e.id}`, { deliveryId });
  t.is(await svc.handleEvent(e), 0, 'not a new delivery: the key was there');
  await until(() => c.rcv.received.length >= 1, 10_000, 'the repaired delivery');
  t.deepEqual(received(c), [e.id]);
  t.is((await c.hub.store.docs.get<Delivery>(DELIVERIES, deliveryId))?.eventId, e.id, 'the row has the id the key names');
  t.is(await svc.handleEvent(e), 0);
  t.is(await c.hub.store.docs.count(DELIVERIES), 1);
  await teardown(c, svc);
});

test('rows written while this process’s drain job is still running are sent without another kick', async (t) => {
  const c = await setup();
  const svc = new CountingService(c.hub, c.queues);
  svc.startWorker();
  // An endpoint that holds its answer to the first delivery until told to go on: the drain job is mid-send.
  const got: string[] = [];
  let firstArrived!: () => void;
  const arrived = new Promise<void>((r) => (firstArrived = r));
  let answerFirst!: () => void;
  const answer = new Promise<void>((r) => (answerFirst = r));
  const slow = createServer((req, res) => {
    got.push(String(req.headers['webhook-id']));
    req.resume();
    const reply = () => res.writeHead(200).end('ok');
    if (got.length === 1) {
      firstArrived();
      void answer.then(reply);
    } else req.on('end', reply);
  });
  await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => slow.close(() => r())));
  await svc.connections.update(c.subId, { url: `http://127.0.0.1:${(slow.address() as AddressInfo).port}/hook` });
  const events = [event(c.hub), event(c.hub), event(c.hub), event(c.hub)];
  await svc.handleEvent(events[0]!);
  await arrived;
  for (const e of events.slice(1)) t.is(await svc.handleEvent(e), 1);
  t.is(svc.redisKicks, 1, 'only the first row needed Redis; the others were left to the running drain job');
  answerFirst();
  await until(() => got.length >= events.length, 10_000, 'every delivery');
  t.deepEqual(got, events.map((e) => e.id), 'in order');
  await teardown(c, svc);
});

test('a row written while the drain job is finishing, by a process whose kick finds the job still active, is not stranded', async (t) => {
  const c = await setup();
  let reachedEnd!: () => void;
  const atEnd = new Promise<void>((r) => (reachedEnd = r));
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let held = false;
  // The worker's process: its first drain job, once it has found nothing more to send, waits before it completes.
  class Finishing extends WebhookService {
    override async drain(job: Pick<Job, 'data'>): Promise<{ sent: number }> {
      const r = await super.drain(job);
      if (!held) {
        held = true;
        reachedEnd();
        await released;
      }
      return r;
    }
  }
  const worker = new Finishing(c.hub, c.queues);
  worker.startWorker();
  // The other process: it writes rows and kicks, but runs no drain jobs.
  const other = new CountingService(c.hub, c.queues);
  const [e1, e2] = [event(c.hub), event(c.hub)];
  await other.handleEvent(e1);
  await atEnd;
  await other.handleEvent(e2);
  await other.settleKicks();
  t.is(other.redisKicks, 2, 'the second row was kicked too');
  t.is(await (await c.queues.queue('webhook').getJob(`drain-${c.subId}`))?.getState(), 'active', 'and that kick found the finishing job, so it added none');
  release();
  // The worker's completed hook sees the pending row and starts a new drain job.
  await until(() => c.rcv.received.length >= 2, 10_000, 'the second delivery');
  t.deepEqual(received(c), [e1.id, e2.id]);
  await teardown(c, worker, other);
});

test('a kick lost to Redis does not fail the event; the sweep starts the drain job', async (t) => {
  const c = await setup();
  const svc = new CountingService(c.hub, c.queues);
  svc.startWorker();
  svc.failKicks = 1;
  const e = event(c.hub);
  t.is(await svc.handleEvent(e), 1, 'the row is written and the event handled');
  t.true(await svc.settleKicks(), 'the kick is over (it failed)');
  t.is(svc.redisKicks, 1);
  t.is(await c.queues.queue('webhook').getJob(`drain-${c.subId}`), undefined, 'no drain job: the kick was lost');
  await svc.sweep();
  await until(() => c.rcv.received.length >= 1, 10_000, 'the delivery after the sweep');
  t.deepEqual(received(c), [e.id]);
  await teardown(c, svc);
});

test('waiting for kicks in flight (the plugin stopping) is bounded when Redis does not answer', async (t) => {
  const c = await setup();
  class Unanswered extends WebhookService {
    override kick(): Promise<void> {
      return new Promise(() => undefined);
    }
  }
  const svc = new Unanswered(c.hub, c.queues);
  t.is(await svc.handleEvent(event(c.hub)), 1);
  const started = Date.now();
  t.false(await svc.settleKicks(200), 'gave up on the kick');
  t.true(Date.now() - started < 5000);
  await teardown(c);
});

test('several subscriptions each get every event once, in order', async (t) => {
  const c = await setup();
  const svc = new WebhookService(c.hub, c.queues);
  svc.startWorker();
  const more = await Promise.all([startReceiver(c.secret), startReceiver(c.secret)]);
  for (const r of more) await svc.connections.create(c.hub.config.defaultWorkspaceId, 'webhook', { url: r.url, events: ['message.created'], secret: c.secret });
  const events = Array.from({ length: 20 }, () => event(c.hub));
  for (const e of events) t.is(await svc.handleEvent(e), 3);
  for (const r of [c.rcv, ...more]) {
    await until(() => r.received.length >= events.length, 20_000, 'every delivery');
    t.deepEqual(
      r.received.map((x) => x.id),
      events.map((e) => e.id),
    );
    t.true(r.received.every((x) => x.verified));
  }
  await teardown(c, svc);
  for (const r of more) await r.close();
});

test('finding an event’s subscriptions uses an index, however many connections the hub has (SQLite query plan)', async (t) => {
  const c = await setup();
  const svc = new WebhookService(c.hub, c.queues);
  type Explainable = { explainFind(collection: string, filter?: Record<string, DocValue>): string[] };
  const plan = () => (c.hub.store.docs as unknown as Explainable).explainFind(CONNECTIONS, { connector: 'webhook', workspaceId: c.hub.config.defaultWorkspaceId });
  t.false(plan().some((d) => /docs_ix_/.test(d)), 'a scan before init');
  await svc.init();
  t.true(plan().some((d) => /USING INDEX docs_ix_/.test(d)), plan().join('; '));
  const subs = await svc.subscribersOf({ workspaceId: c.hub.config.defaultWorkspaceId, type: 'message.created' });
  t.deepEqual(subs.map((s) => s.id), [c.subId]);
  await teardown(c, svc);
});
