/**
 * The `webhooks` plugin: turns hub events into signed HTTP deliveries for every matching webhook subscription
 * (connections of the `webhook` connector). The handler only writes delivery rows and kicks the per-subscription
 * drain job; the sending, ordering and retry schedule live in the connector's BullMQ queue (service.ts). It also
 * mounts the admin REST routes for connections and webhooks (routes.ts), and prunes settled deliveries past
 * their retention (webhookDeliveryRetentionDays) on a timer.
 */
import { ConnectorQueues } from '../../connectors/queues.js';
import { definePlugin, RetryableError, type Plugin } from '../runtime/types.js';
import { WEBHOOK_EVENT_TYPES } from './events.js';
import { connectionRoutes } from './routes.js';
import { deliveryPruneRules, WebhookService, type WebhookOptions } from './service.js';
import { startPruner, type Pruner } from '../../core/auth/prune.js';

/** How long stop() waits for kicks in flight (a Redis that does not answer must not hold the stop). */
const KICK_SETTLE_MS = 2000;
/**
 * How often the delivery log is pruned (the shared pruner runs first within a minute of start-up, so a process
 * restarted more often than hourly still prunes). Every process running the plugin prunes; deletes are idempotent.
 */
const PRUNE_EVERY_MS = 3600_000;

export function createWebhooksPlugin(opts: WebhookOptions = {}): Plugin & { service(): WebhookService } {
  let service: WebhookService | null = null;
  let queues: ConnectorQueues | null = null;
  let sweeper: NodeJS.Timeout | null = null;
  let pruner: Pruner | null = null;
  // The REST routes' own queue handle (kicks after a re-enable), made on first use.
  let routeQueues: ConnectorQueues | null = null;
  const plugin = definePlugin({
    manifest: {
      name: 'webhooks',
      description: 'Delivers events to webhook subscriptions (Standard Webhooks signatures, ordered, retried for over 24 h).',
      events: WEBHOOK_EVENT_TYPES,
      // Each subscription sends in delivery-row order, so rows must be created in stream order. `concurrency: 1`
      // only held within one process: a second worker, or a redelivery after a NATS stall, created rows out of
      // order. An ordered consumer (max_ack_pending 1) makes JetStream itself hand out one event at a time across
      // all processes, redeliveries first. Cheap enough here: the handler only writes rows, BullMQ does the sending.
      ordered: true,
      connectors: ['webhook'],
    },
    async start(ctx) {
      queues = new ConnectorQueues(ctx.hub);
      service = new WebhookService(ctx.hub, queues, opts);
      await service.init();
      // Once per store, in the background: a large old log must not hold up the start.
      const svc = service;
      void svc
        .backfillSettledAt()
        .then((n) => n && ctx.log.info({ deliveries: n }, 'webhook deliveries settled before retention existed now age from their last attempt'))
        .catch((err: unknown) => ctx.log.warn({ err }, 'dating old webhook deliveries failed; the next start tries again'));
      service.startWorker();
      // Safety net for a kick lost to a Redis blip between writing a delivery and adding its drain job.
      sweeper = setInterval(() => void service?.sweep().catch(() => undefined), 30_000);
      sweeper.unref();
      pruner = startPruner(ctx.hub.store.docs, PRUNE_EVERY_MS, ctx.log, {
        rules: deliveryPruneRules(ctx.hub.config.webhookDeliveryRetentionDays),
        what: 'webhook deliveries past their retention',
      });
    },
    async handle(event) {
      if (!service) throw new RetryableError('webhooks plugin not started');
      await service.handleEvent(event);
    },
    routes(router, ctx) {
      connectionRoutes(router, ctx, () => (routeQueues ??= new ConnectorQueues(ctx.hub)), opts);
    },
    async stop() {
      if (sweeper) clearInterval(sweeper);
      // Waits for a prune in progress: the store closes after the plugins stop.
      await pruner?.stop();
      pruner = null;
      // Kicks for rows already written go out before the queues close, unless Redis keeps them waiting.
      await service?.settleKicks(KICK_SETTLE_MS);
      // Together: each close may wait out its grace on a Redis that does not answer.
      await Promise.all([queues?.close(), routeQueues?.close()]);
      routeQueues = null;
      service = null;
    },
  });
  return Object.assign(plugin, {
    service(): WebhookService {
      if (!service) throw new Error('webhooks plugin not started');
      return service;
    },
  });
}

export default createWebhooksPlugin;
