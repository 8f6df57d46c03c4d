/**
 * `voxa webhooks …`: outgoing webhook subscriptions (connections of the `webhook` connector). `add` prints the
 * signing secret once; afterwards it only exists sealed in the store.
 */
import type { Command } from 'commander';
import { ConnectionService, type ConnectionView } from '../../connectors/connections.js';
import { ConnectorQueues } from '../../connectors/queues.js';
import { generateSecret } from '../../connectors/webhook/signing.js';
import { WEBHOOK_EVENT_TYPES, webhookEventsError } from '../../plugins/webhooks/events.js';
import { deliveryView, WebhookService, type Delivery } from '../../plugins/webhooks/service.js';
import { CliError, EXIT, isJson, output } from '../util.js';
import { checkWebhookUrl, toCliError, withContext, workspaceOf } from './connections.js';

const common = (c: Command): Command => c.option('--workspace <id>', 'workspace (default: the configured default workspace)').option('--json', 'machine-readable JSON output');

function renderSub(c: ConnectionView): string {
  const cfg = c.config as { url: string; events: string[]; description?: string };
  return `${c.id}  ${c.status}${c.statusReason ? ` (${c.statusReason})` : ''}  ${cfg.url}  [${cfg.events.join(',')}]${cfg.description ? `  ${cfg.description}` : ''}`;
}


function renderDelivery(d: Omit<Delivery, 'body'>): string {
  return `${d.id}  ${d.status.padEnd(9)} ${d.eventType.padEnd(18)} attempts=${d.attempts} last=${d.lastStatusCode ?? '-'}${d.lastError && d.status !== 'succeeded' ? ` (${d.lastError})` : ''}  ${d.lastAttemptAt ?? ''}`;
}

async function asWebhook(svc: ConnectionService, id: string, ws: string): Promise<ConnectionView> {
  const v = await svc.get(id, ws);
  if (v.connector !== 'webhook') throw new CliError(`${id} is a ${v.connector} connection, not a webhook`, EXIT.NOT_FOUND, 'NOT_FOUND');
  return v;
}

export function register(program: Command): void {
  const webhooks = program
    .command('webhooks')
    .description('Outgoing webhooks: add endpoints, send test events, read the delivery log, redeliver.')
    .addHelpText('after', '\nExamples:\n  $ voxa webhooks add --url https://example.com/hooks --events message.created\n  $ voxa webhooks deliveries con_01j…');

  common(
    webhooks
      .command('add')
      .description('Subscribe an endpoint to events. Prints the id and the signing secret — once.')
      .requiredOption('--url <url>', 'the endpoint (https)')
      .requiredOption('--events <types>', `comma-separated event types: ${WEBHOOK_EVENT_TYPES.slice(0, 4).join(', ')}, …`)
      .option('--description <text>', 'a note shown in listings'),
  )
    .addHelpText('after', '\nExamples:\n  $ voxa webhooks add --url https://example.com/hooks --events message.created,message.updated\n  $ voxa webhooks add --url https://crm.example.com/in --events message.created --json')
    .action(async (opts: { url: string; events: string; description?: string }, cmd: Command) => {
      const events = opts.events.split(',').map((s) => s.trim()).filter(Boolean);
      const problem = webhookEventsError(events);
      if (problem) throw new CliError(`--events: ${problem}`, EXIT.USAGE, 'VALIDATION_FAILED');
      const secret = generateSecret();
      await withContext({}, async (ctx) => {
        checkWebhookUrl(opts.url, ctx.hub.config.webhooksAllowPrivate);
        const svc = new ConnectionService(ctx.hub);
        const view = await svc.create(workspaceOf(cmd), 'webhook', { url: opts.url, events, secret, ...(opts.description ? { description: opts.description } : {}) }, opts.description ?? opts.url);
        output(cmd, { id: view.id, secret, url: opts.url, events, status: view.status }, (r: { id: string; secret: string }) =>
          `created webhook ${r.id}\nsigning secret (shown only now; store it with the receiver): ${r.secret}`,
        );
      });
    });

  common(webhooks.command('list').description('List webhook subscriptions; a disabled one says why.'))
    .addHelpText('after', '\nExamples:\n  $ voxa webhooks list\n  $ voxa webhooks list --json')
    .action(async (_opts: unknown, cmd: Command) => {
      await withContext({}, async (ctx) => {
        const rows = await new ConnectionService(ctx.hub).list(workspaceOf(cmd), 'webhook');
        output(cmd, isJson(cmd) ? { webhooks: rows } : rows, (r: ConnectionView[]) => (r.length ? r.map(renderSub).join('\n') : 'no webhooks'));
      });
    });

  common(webhooks.command('test <id>').description('Send a signed webhook.test event now; exits 1 when the endpoint does not answer 2xx.'))
    .addHelpText('after', '\nExamples:\n  $ voxa webhooks test con_01j…')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      await withContext({}, async (ctx) => {
        const ws = workspaceOf(cmd);
        const w = new WebhookService(ctx.hub, new ConnectorQueues(ctx.hub));
        await asWebhook(w.connections, id, ws);
        const d = await w.sendTest(id, ws);
        output(cmd, { delivery: deliveryView(d) }, (r: { delivery: Omit<Delivery, 'body'> }) => renderDelivery(r.delivery));
        if (d.status !== 'succeeded') process.exitCode = EXIT.FAIL;
      });
    });

  common(webhooks.command('deliveries <id>').description('The delivery log of a webhook, newest first.').option('--limit <n>', 'at most this many', '50'))
    .addHelpText('after', '\nExamples:\n  $ voxa webhooks deliveries con_01j…\n  $ voxa webhooks deliveries con_01j… --limit 200 --json')
    .action(async (id: string, opts: { limit: string }, cmd: Command) => {
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new CliError('--limit must be an integer from 1 to 1000', EXIT.USAGE, 'VALIDATION_FAILED');
      await withContext({}, async (ctx) => {
        const w = new WebhookService(ctx.hub, new ConnectorQueues(ctx.hub));
        await asWebhook(w.connections, id, workspaceOf(cmd));
        const rows = (await w.listDeliveries(id, limit)).map(deliveryView);
        output(cmd, isJson(cmd) ? { deliveries: rows } : rows, (r: Array<Omit<Delivery, 'body'>>) => (r.length ? r.map(renderDelivery).join('\n') : 'no deliveries'));
      });
    });

  common(webhooks.command('redeliver <delivery>').description('Send a logged delivery again now (same webhook-id and body); exits 1 when it fails.'))
    .addHelpText('after', '\nExamples:\n  $ voxa webhooks redeliver dlv_01j…')
    .action(async (deliveryId: string, _opts: unknown, cmd: Command) => {
      // Redis: a redelivered head restarts its subscription's held drain job at once.
      await withContext({ redis: true }, async (ctx) => {
        const w = new WebhookService(ctx.hub, new ConnectorQueues(ctx.hub));
        const existing = await w.getDelivery(deliveryId);
        if (!existing || existing.workspaceId !== workspaceOf(cmd)) throw new CliError(`no delivery ${deliveryId}`, EXIT.NOT_FOUND, 'NOT_FOUND');
        const d = await w
          .redeliver(deliveryId)
          .catch((err: unknown) => {
            throw toCliError(err);
          })
          .finally(() => w.queues.close());
        output(cmd, { delivery: deliveryView(d) }, (r: { delivery: Omit<Delivery, 'body'> }) => renderDelivery(r.delivery));
        if (d.log.at(-1)?.statusCode === null || (d.log.at(-1)?.statusCode ?? 0) >= 300) process.exitCode = EXIT.FAIL;
      });
    });

  common(webhooks.command('remove <id>').description('Remove a webhook subscription. Its delivery log is deleted with it: `voxa webhooks deliveries <id>` exits 3 afterwards, so save it first (--json) if you need it.'))
    .addHelpText('after', '\nExamples:\n  $ voxa webhooks deliveries con_01j… --limit 1000 --json > deliveries.json   # keep the log\n  $ voxa webhooks remove con_01j…')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      await withContext({}, async (ctx) => {
        const w = new WebhookService(ctx.hub, new ConnectorQueues(ctx.hub));
        await asWebhook(w.connections, id, workspaceOf(cmd));
        // Through the webhook service, which deletes the delivery log too (as the REST route does).
        const { deliveries } = await w.remove(id, workspaceOf(cmd));
        output(cmd, { removed: id, deliveries }, (r: { deliveries: number }) => `removed ${id} and its ${r.deliveries} deliveries`);
      });
    });
}
