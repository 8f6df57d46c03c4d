/**
 * Every attempt a WebhookService makes uses its options: a manual redelivery and a test send time out after
 * the configured per-attempt timeout, as the drain job's attempts do (they used the 10 s default).
 */
import { createServer, type Server } from 'node:http';
import test from 'ava';
import { ConnectorQueues } from '../../connectors/queues.js';
import { generateSecret } from '../../connectors/webhook/signing.js';
import { WebhookService } from '../../plugins/webhooks/service.js';
import { openTestHub, serversForFile } from '../helpers/hub.js';
import { event } from './support.js';

const servers = serversForFile();

/** An endpoint that answers 200, but only after `delayMs`. */
async function slowEndpoint(delayMs: number): Promise<{ url: string; hits: number; close(): Promise<void> }> {
  const timers = new Set<NodeJS.Timeout>();
  const ep = { url: '', hits: 0, close: async () => undefined as void };
  const server: Server = createServer((req, res) => {
    ep.hits++;
    req.resume();
    const timer = setTimeout(() => res.writeHead(200).end('ok'), delayMs);
    timers.add(timer);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  ep.url = `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`;
  ep.close = () => {
    for (const t of timers) clearTimeout(t);
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  };
  return ep;
}

test('redeliver and sendTest give up after the configured timeoutMs, not the 10 s default', async (t) => {
  const hub = await openTestHub(servers, { webhooksAllowPrivate: true });
  const queues = new ConnectorQueues(hub);
  // The endpoint answers after 4 s: a 300 ms timeout fails the attempt, the 10 s default would see the 200.
  const ep = await slowEndpoint(4000);
  t.teardown(async () => {
    await queues.close();
    await ep.close();
    await hub.close();
  });
  const svc = new WebhookService(hub, queues, { timeoutMs: 300, scheduleMs: [60_000], retryWindowMs: 3600_000, jitter: 0 });
  const sub = await svc.connections.create(hub.config.defaultWorkspaceId, 'webhook', { url: ep.url, events: ['message.created'], secret: generateSecret() });
  // No worker: the delivery stays pending until it is sent by hand.
  await svc.handleEvent(event(hub));
  const [pending] = await svc.listDeliveries(sub.id);
  t.is(pending!.status, 'pending');

  const redelivered = await svc.redeliver(pending!.id);
  t.is(redelivered.attempts, 1);
  t.is(redelivered.lastStatusCode, null);
  t.regex(redelivered.lastError ?? '', /timed out/);

  const tested = await svc.sendTest(sub.id);
  t.is(tested.status, 'failed');
  t.regex(tested.lastError ?? '', /timed out/);
  t.is(ep.hits, 2);
});
