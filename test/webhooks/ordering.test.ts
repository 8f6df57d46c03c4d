/**
 * Webhook order across processes: the plugin running in the hub and in a worker (one shared consumer, one
 * store, one Redis) still sends each subscription's events in stream order.
 */
import test from 'ava';
import { closeHub, openHub } from '../../core/hub.js';
import { ConnectorQueues } from '../../connectors/queues.js';
import { generateSecret } from '../../connectors/webhook/signing.js';
import { PluginRuntime } from '../../plugins/runtime/runtime.js';
import { createWebhooksPlugin } from '../../plugins/webhooks/index.js';
import { DELIVERIES, WebhookService, type Delivery } from '../../plugins/webhooks/service.js';
import { openTestHub, testConfig, serversForFile } from '../helpers/hub.js';
import { FAST, messageEvent, publishEvents, waitFor } from '../plugins/helpers.js';
import { startReceiver } from '../connectors/receiver.js';

const servers = serversForFile();

test('hub and worker both running the webhooks plugin deliver in stream order', async (t) => {
  const hub = await openTestHub(servers, { webhooksAllowPrivate: true });
  // A second process of the same hub: same namespace, same store file, same Redis.
  const worker = await openHub(testConfig(servers, { natsNamespace: hub.bus.namespace, dataDir: hub.config.dataDir, webhooksAllowPrivate: true }), { name: 'worker' });
  const secret = generateSecret();
  const rcv = await startReceiver(secret);
  const a = new PluginRuntime(hub, [createWebhooksPlugin()], FAST);
  const b = new PluginRuntime(worker, [createWebhooksPlugin()], FAST);
  await a.start();
  await b.start();
  const admin = new WebhookService(hub, new ConnectorQueues(hub));
  await admin.connections.create(hub.config.defaultWorkspaceId, 'webhook', { url: rcv.url, events: ['message.created'], secret });

  const events = Array.from({ length: 200 }, () => messageEvent('c1', hub.config.defaultWorkspaceId));
  const seqs = await publishEvents(hub, events);
  const bySeq = events.map((e, i) => ({ id: e.id, seq: seqs[i]! })).sort((x, y) => x.seq - y.seq);
  await waitFor(() => rcv.received.length >= events.length, 'every delivery', 60_000);
  t.deepEqual(
    rcv.received.map((r) => r.id),
    bySeq.map((e) => e.id),
    'the receiver got the events in stream order',
  );
  await b.stop();
  await a.stop();
  await admin.queues.close();
  await rcv.close();
  await closeHub(worker);
  await hub.close();
});

test('a new delivery sorts after the subscription’s latest one even when that one has a later clock', async (t) => {
  const hub = await openTestHub(servers, { webhooksAllowPrivate: true });
  const queues = new ConnectorQueues(hub);
  const svc = new WebhookService(hub, queues);
  await svc.init();
  const sub = await svc.connections.create(hub.config.defaultWorkspaceId, 'webhook', { url: 'http://127.0.0.1:9/hook', events: ['message.created'], secret: generateSecret() });
  await svc.connections.setStatus(sub.id, 'disabled', 'not sending in this test');
  const record = await svc.connections.getRecord(sub.id);
  // As if another process, whose clock runs ahead (here: to 2043), had written the previous row.
  const ahead = `dlv_2222222222zzzzzzzzzzzzzzzz`;
  await hub.store.docs.put<Partial<Delivery>>(DELIVERIES, ahead, { id: ahead, subscriptionId: sub.id, status: 'succeeded' });
  const { deliveryId } = await svc.enqueue(record, messageEvent('c1', hub.config.defaultWorkspaceId));
  t.true(deliveryId > ahead, `${deliveryId} sorts after ${ahead}`);
  const [newest] = await svc.listDeliveries(sub.id, 1);
  t.is(newest!.id, deliveryId);
  await queues.close();
  await hub.close();
});
