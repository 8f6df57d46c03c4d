/**
 * Admin REST routes for connections and webhook subscriptions, mounted under /v1 by the webhooks plugin
 * (plugins/runtime/types.ts PluginRoutes). Admins of the caller's workspace only; another workspace's
 * connection looks exactly like a missing one (404). Secrets are never returned: a listing names the secret
 * fields that are set; the webhook signing secret is in the answer to its creation, once.
 *
 * Changes go through ConnectionService with the caller as the actor, so each one commits its
 * connection.changed / webhook.changed event (and lands in the audit log).
 */
import type Router from '@koa/router';
import { z } from 'zod';
import type { UserRecord } from '../../core/domain.js';
import { VoxaError } from '../../core/errors.js';
import { requireRole, validate } from '../../core/http/validate.js';
import { ConnectionError, ConnectionService, type ConnectionView } from '../../connectors/connections.js';
import { webhookTargetProblem } from '../../connectors/net.js';
import type { ConnectorQueues } from '../../connectors/queues.js';
import { getConnector } from '../../connectors/registry.js';
import { generateSecret } from '../../connectors/webhook/signing.js';
import type { PluginContext } from '../runtime/types.js';
import { WEBHOOK_EVENT_TYPES, WebhookEventType } from './events.js';
import { WebhookService, type Delivery, type WebhookOptions } from './service.js';

const Id = z.string().min(1).max(100).regex(/^[A-Za-z0-9_-]+$/, 'an id');
const IdParam = z.object({ id: Id }).strict();
const ListQuery = z.object({ connector: z.string().regex(/^[a-z0-9-]{1,40}$/).optional() }).strict();
const ConfigBody = z.record(z.string().max(100), z.unknown());
const CreateConnection = z.object({ connector: z.string().regex(/^[a-z0-9-]{1,40}$/), name: z.string().min(1).max(200).optional(), config: ConfigBody }).strict();
const PatchConnection = z
  .object({ name: z.string().min(1).max(200).optional(), config: ConfigBody.optional(), status: z.enum(['active', 'disabled']).optional() })
  .strict()
  .refine((b) => b.name !== undefined || b.config !== undefined || b.status !== undefined, 'nothing to change');
const CreateWebhook = z
  .object({
    url: z.string().url().max(2000),
    events: z.array(WebhookEventType).min(1).max(WEBHOOK_EVENT_TYPES.length),
    description: z.string().max(200).optional(),
  })
  .strict();
const DeliveriesQuery = z.object({ limit: z.coerce.number().int().min(1).max(1000).default(50) }).strict();

/** A delivery without its body (large, and not needed to read the log). */
function deliveryView(d: Delivery): Omit<Delivery, 'body'> {
  const { body: _body, ...rest } = d;
  return rest;
}

/** Framework errors as API errors: field names in the details, never a value. */
function apiError(err: unknown): unknown {
  if (err instanceof ConnectionError) {
    if (err.code === 'NOT_FOUND') return new VoxaError('NOT_FOUND', 'No such connection.');
    if (err.code === 'VALIDATION_FAILED') {
      const issues = (err.details as Array<{ field: string; message: string }> | undefined) ?? [];
      return new VoxaError('VALIDATION_FAILED', err.message, {
        fields: issues.map((i) => `body.config.${i.field}`),
        issues: issues.map((i) => ({ path: `body.config.${i.field}`, code: 'invalid_config', message: i.message })),
      });
    }
    return new VoxaError('CONFLICT', err.message);
  }
  return err;
}

/** Unknown config fields are refused rather than silently dropped (connector schemas strip them). */
function refuseUnknownFields(connectorId: string, config: Record<string, unknown>): void {
  const connector = getConnector(connectorId);
  if (!connector) throw new VoxaError('VALIDATION_FAILED', `body.connector: unknown connector "${connectorId}"`, { fields: ['body.connector'], issues: [{ path: 'body.connector', code: 'unknown_connector', message: 'Unknown connector.' }] });
  const unknown = Object.keys(config).filter((k) => !(k in connector.configSchema.shape));
  if (unknown.length) {
    const issues = unknown.map((k) => ({ path: `body.config.${k}`, code: 'unknown_field', message: 'Unknown field.' }));
    throw new VoxaError('VALIDATION_FAILED', `${issues[0]!.path}: Unknown field.`, { fields: issues.map((i) => i.path), issues });
  }
}

/**
 * Mounts the routes. `queues` is asked for only when a change has to (re)start a webhook's deliveries; the
 * plugin creates it lazily and closes it when it stops.
 */
export function connectionRoutes(router: Router, ctx: PluginContext, queues: () => ConnectorQueues, opts: WebhookOptions = {}): void {
  const admin = requireRole('admin');
  const hub = ctx.hub;
  const service = (user: UserRecord) => new ConnectionService(hub, { type: 'user', id: user.id });
  const webhooks = () => new WebhookService(hub, queues(), opts);
  const run = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw apiError(err);
    }
  };
  const asWebhook = (v: ConnectionView): ConnectionView => {
    if (v.connector !== 'webhook') throw new VoxaError('NOT_FOUND', 'No such webhook.');
    return v;
  };

  // Connections

  router.get('/connections', admin, async (k) => {
    const user = k.state.user as UserRecord;
    const q = validate(ListQuery, k.query, 'query');
    k.body = { connections: await service(user).list(user.workspaceId, q.connector) };
  });

  router.post('/connections', admin, async (k) => {
    const user = k.state.user as UserRecord;
    const body = validate(CreateConnection, k.state.body, 'body');
    refuseUnknownFields(body.connector, body.config);
    const connection = await run(() => service(user).create(user.workspaceId, body.connector, body.config, body.name));
    k.status = 201;
    k.body = { connection };
  });

  router.get('/connections/:id', admin, async (k) => {
    const user = k.state.user as UserRecord;
    const { id } = validate(IdParam, k.params, 'params');
    k.body = { connection: await run(() => service(user).get(id, user.workspaceId)) };
  });

  router.patch('/connections/:id', admin, async (k) => {
    const user = k.state.user as UserRecord;
    const { id } = validate(IdParam, k.params, 'params');
    const body = validate(PatchConnection, k.state.body, 'body');
    const svc = service(user);
    const current = await run(() => svc.get(id, user.workspaceId));
    if (body.config) refuseUnknownFields(current.connector, body.config);
    let view = current;
    if (body.config !== undefined || body.name !== undefined) view = await run(() => svc.update(id, body.config ?? {}, user.workspaceId, body.name !== undefined ? { name: body.name } : {}));
    if (body.status !== undefined && body.status !== view.status) {
      view = await run(() => svc.setStatus(id, body.status!, body.status === 'disabled' ? 'disabled by a user' : null, user.workspaceId));
      // A re-enabled webhook resumes the deliveries that waited while it was off.
      if (body.status === 'active' && view.connector === 'webhook') await webhooks().kick(id);
    }
    k.body = { connection: view };
  });

  router.delete('/connections/:id', admin, async (k) => {
    const user = k.state.user as UserRecord;
    const { id } = validate(IdParam, k.params, 'params');
    await run(() => service(user).remove(id, user.workspaceId));
    k.status = 204;
  });

  router.post('/connections/:id/test', admin, async (k) => {
    const user = k.state.user as UserRecord;
    const { id } = validate(IdParam, k.params, 'params');
    const svc = service(user);
    const rec = await run(() => svc.getRecord(id, user.workspaceId));
    const connector = getConnector(rec.connector);
    if (!connector) throw new VoxaError('CONFLICT', `Connector ${rec.connector} is not installed.`);
    // A failed check is an answer, not an error: the far end said no, and the detail says why.
    const r = await connector.test(await svc.resolve(rec), svc.contextFor(id)).catch((err: Error) => ({ ok: false, detail: err.message }));
    k.body = { id, ok: r.ok, detail: r.detail };
  });

  // Webhooks (connections of the `webhook` connector)

  router.get('/webhooks', admin, async (k) => {
    const user = k.state.user as UserRecord;
    validate(z.object({}).strict(), k.query, 'query');
    k.body = { webhooks: await service(user).list(user.workspaceId, 'webhook') };
  });

  router.post('/webhooks', admin, async (k) => {
    const user = k.state.user as UserRecord;
    const body = validate(CreateWebhook, k.state.body, 'body');
    // Refuse obviously private targets now; names are checked again against their DNS answers on every send.
    const problem = webhookTargetProblem(body.url, hub.config.webhooksAllowPrivate);
    if (problem) throw new VoxaError('VALIDATION_FAILED', `body.url: ${problem}`, { fields: ['body.url'], issues: [{ path: 'body.url', code: 'refused_target', message: problem }] });
    const secret = generateSecret();
    const webhook = await run(() =>
      service(user).create(user.workspaceId, 'webhook', { url: body.url, events: body.events, secret, ...(body.description ? { description: body.description } : {}) }, body.description ?? body.url),
    );
    k.status = 201;
    // The only time the secret leaves the hub: the receiver needs it to verify signatures.
    k.body = { webhook, secret };
  });

  router.delete('/webhooks/:id', admin, async (k) => {
    const user = k.state.user as UserRecord;
    const { id } = validate(IdParam, k.params, 'params');
    const svc = service(user);
    asWebhook(await run(() => svc.get(id, user.workspaceId)));
    await run(() => svc.remove(id, user.workspaceId));
    k.status = 204;
  });

  router.get('/webhooks/:id/deliveries', admin, async (k) => {
    const user = k.state.user as UserRecord;
    const { id } = validate(IdParam, k.params, 'params');
    const q = validate(DeliveriesQuery, k.query, 'query');
    asWebhook(await run(() => service(user).get(id, user.workspaceId)));
    k.body = { deliveries: (await webhooks().listDeliveries(id, q.limit)).map(deliveryView) };
  });

  router.post('/webhooks/deliveries/:id/redeliver', admin, async (k) => {
    const user = k.state.user as UserRecord;
    const { id } = validate(IdParam, k.params, 'params');
    const w = webhooks();
    const existing = await w.getDelivery(id);
    if (!existing || existing.workspaceId !== user.workspaceId) throw new VoxaError('NOT_FOUND', 'No such delivery.');
    const d = await run(() => w.redeliver(id, user.workspaceId));
    k.body = { delivery: deliveryView(d) };
  });
}
