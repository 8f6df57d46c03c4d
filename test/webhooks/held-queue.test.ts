/**
 * A subscription held by a failing head delivery: once the head is sent by hand (redeliver) or retried on
 * request (`connections retry-failed`), the deliveries behind it go out at once, not at the head's retry time.
 */
import test from 'ava';
import type { AnyEvent } from '../../core/events/catalog.js';
import type { Hub } from '../../core/hub.js';
import { ConnectorQueues } from '../../connectors/queues.js';
import { generateSecret } from '../../connectors/webhook/signing.js';
import { WebhookService } from '../../plugins/webhooks/service.js';
import { openTestHub, serversForFile } from '../helpers/hub.js';
import { startReceiver, until, type Receiver } from '../connectors/receiver.js';
import { event } from './support.js';

const servers = serversForFile();


/** A subscription whose first delivery failed once and now waits a minute for its retry, one more behind it. */
async function held(): Promise<{ hub: Hub & { close(): Promise<void> }; queues: ConnectorQueues; svc: WebhookService; rcv: Receiver; subId: string; events: AnyEvent[] }> {
  const hub = await openTestHub(servers, { webhooksAllowPrivate: true });
  const queues = new ConnectorQueues(hub);
  const svc = new WebhookService(hub, queues, { scheduleMs: [60_000], retryWindowMs: 3600_000, jitter: 0 });
  svc.startWorker();
  const secret = generateSecret();
  const rcv = await startReceiver(secret);
  rcv.script = [500];
  const sub = await svc.connections.create(hub.config.defaultWorkspaceId, 'webhook', { url: rcv.url, events: ['message.created'], secret });
  const events = [event(hub), event(hub)];
  for (const e of events) await svc.handleEvent(e);
  await until(async () => (await (await queues.queue('webhook').getJob(`drain-${sub.id}`))?.getState()) === 'delayed', 10_000, 'drain job waiting out the retry');
  return { hub, queues, svc, rcv, subId: sub.id, events };
}

test('a successful manual redeliver of the head releases the deliveries behind it at once', async (t) => {
  const c = await held();
  t.deepEqual(c.rcv.received.map((r) => r.id), [c.events[0]!.id]);
  const [, head] = await c.svc.listDeliveries(c.subId);
  t.is(head!.eventId, c.events[0]!.id);
  const d = await c.svc.redeliver(head!.id);
  t.is(d.status, 'succeeded');
  await until(() => c.rcv.received.some((r) => r.id === c.events[1]!.id), 5000, 'the next delivery');
  t.deepEqual(
    c.rcv.received.map((r) => r.id),
    [c.events[0]!.id, c.events[0]!.id, c.events[1]!.id],
    'the head is not sent a third time',
  );
  await c.queues.close();
  await c.rcv.close();
  await c.hub.close();
});

test('retryNow (connections retry-failed) sends the held head now, then the rest', async (t) => {
  const c = await held();
  t.is(await c.svc.retryNow(c.subId), 1);
  await until(() => c.rcv.received.some((r) => r.id === c.events[1]!.id), 5000, 'the next delivery');
  t.deepEqual(c.rcv.received.map((r) => r.id), [c.events[0]!.id, c.events[0]!.id, c.events[1]!.id]);
  t.is(await c.svc.retryNow(c.subId), 0, 'nothing held any more');
  await c.queues.close();
  await c.rcv.close();
  await c.hub.close();
});

test('a redeliver of a delivery that is not the head leaves the held head to its schedule', async (t) => {
  const c = await held();
  const [second] = await c.svc.listDeliveries(c.subId);
  t.is(second!.eventId, c.events[1]!.id);
  await c.svc.redeliver(second!.id);
  await new Promise((r) => setTimeout(r, 1000));
  t.deepEqual(c.rcv.received.map((r) => r.id), [c.events[0]!.id, c.events[1]!.id], 'the head is not retried early');
  await c.queues.close();
  await c.rcv.close();
  await c.hub.close();
});
