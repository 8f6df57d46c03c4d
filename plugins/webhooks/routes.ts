/**
 * Admin REST routes for connections and webhook subscriptions, declared under /v1 by the webhooks plugin
 * (plugins/runtime/types.ts PluginRouter, so they are checked like core routes and listed in
 * /v1/openapi.json). Admins of the caller's workspace only; another workspace's connection looks exactly like
 * a missing one (404). Secrets are never returned: a listing names the secret fields that are set; the webhook
 * signing secret is in the answer to its creation, once.
 *
 * Changes go through ConnectionService with the caller as the actor, so each one commits its
 * connection.changed / webhook.changed event (and lands in the audit log).
 */
import { z } from 'zod';
import type { UserRecord } from '../../core/domain.js';
import { VoxaError } from '../../core/errors.js';
import { ConnectionError, ConnectionService, type ConnectionView } from '../../connectors/connections.js';
import { webhookTargetProblem } from '../../connectors/net.js';
import { fieldError } from '../../core/http/validate.js';
import type { ConnectorQueues } from '../../connectors/queues.js';
import { CONNECTORS, getConnector } from '../../connectors/registry.js';
import { generateSecret } from '../../connectors/webhook/signing.js';
import { Id, limitParam } from '../runtime/route-schemas.js';
import type { PluginContext, PluginRouteDef, PluginRouter } from '../runtime/types.js';
import { WEBHOOK_EVENT_TYPES, WebhookEventType } from './events.js';
import { deliveryView, WebhookService, type WebhookOptions } from './service.js';

const IdParam = z.strictObject({ id: Id });
const ConnectorId = z.string().regex(/^[a-z0-9-]{1,40}$/);
/** A listing filter names a connector that exists: a typo (`webhooks` for `webhook`) is an error, not an empty list. */
const KnownConnector = z.enum(CONNECTORS.map((c) => c.id) as [string, ...string[]], {
  error: (iss) => `unknown connector ${JSON.stringify(iss.input)}; one of ${CONNECTORS.map((c) => c.id).join(', ')}`,
});
const ListQuery = z.strictObject({ connector: KnownConnector.optional() });
const ConfigBody = z.record(z.string().max(100), z.unknown());
const CreateConnection = z.strictObject({ connector: ConnectorId, name: z.string().min(1).max(200).optional(), config: ConfigBody });
const PatchConnection = z
  .strictObject({ name: z.string().min(1).max(200).optional(), config: ConfigBody.optional(), status: z.enum(['active', 'disabled']).optional() })
  .refine((b) => b.name !== undefined || b.config !== undefined || b.status !== undefined, 'nothing to change');
const CreateWebhook = z.strictObject({
  url: z.string().url().max(2000),
  events: z.array(WebhookEventType).min(1).max(WEBHOOK_EVENT_TYPES.length),
  description: z.string().max(200).optional(),
});
const DeliveriesQuery = z.strictObject({ limit: limitParam(1000, 50) });

// Answers, for the OpenAPI document.
const ConnectionOut = z.object({
  id: z.string(),
  workspaceId: z.string(),
  connector: z.string(),
  name: z.string(),
  config: z.record(z.string(), z.unknown()),
  secretFields: z.array(z.string()),
  status: z.string(),
  statusReason: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
const ConnectionResponse = z.object({ connection: ConnectionOut });
const DeliveryOut = z.object({
  id: z.string(),
  subscriptionId: z.string(),
  workspaceId: z.string(),
  eventId: z.string(),
  eventType: z.string(),
  status: z.enum(['pending', 'succeeded', 'failed']),
  attempts: z.number().int(),
  firstAttemptAt: z.string().nullable(),
  lastAttemptAt: z.string().nullable(),
  nextAttemptAt: z.string().nullable(),
  lastStatusCode: z.number().int().nullable(),
  lastError: z.string().nullable(),
  log: z.array(z.object({ attempt: z.number().int(), at: z.string(), statusCode: z.number().int().nullable(), durationMs: z.number(), error: z.string().nullable(), manual: z.boolean().optional() })),
  createdAt: z.string(),
  settledAt: z.string().optional(),
});


/**
 * Framework errors as API errors: field names in the details, never a value. `noun` names what a missing id
 * was meant to be (a webhook on the /v1/webhooks routes).
 */
function apiError(err: unknown, noun: 'connection' | 'webhook'): unknown {
  if (err instanceof ConnectionError) {
    if (err.code === 'NOT_FOUND') return new VoxaError('NOT_FOUND', `No such ${noun}.`);
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

/**
 * What the API checks in a connection's config before the connector's schema does:
 * - unknown fields are refused rather than silently dropped (connector schemas strip them);
 * - endpoint overrides (Connector.endpointFields) are the operator's, set with the CLI: over REST they would let
 *   a workspace admin aim the hub at internal addresses, or send a stored refresh token to their own server;
 * - a webhook's url gets the same target check as POST /v1/webhooks.
 */
function checkApiConfig(connectorId: string, config: Record<string, unknown>, allowPrivate: boolean): void {
  const connector = getConnector(connectorId);
  if (!connector) throw new VoxaError('VALIDATION_FAILED', `body.connector: unknown connector "${connectorId}"`, { fields: ['body.connector'], issues: [{ path: 'body.connector', code: 'unknown_connector', message: 'Unknown connector.' }] });
  const issues = Object.keys(config).flatMap((k) => {
    const path = `body.config.${k}`;
    if (!(k in connector.configSchema.shape)) return [{ path, code: 'unknown_field', message: 'Unknown field.' }];
    if (connector.endpointFields?.includes(k)) {
      return [{ path, code: 'operator_only', message: 'Set by the hub operator only (voxa connections add), not over the API.' }];
    }
    return [];
  });
  if (connectorId === 'webhook' && typeof config.url === 'string') {
    const problem = webhookTargetProblem(config.url, allowPrivate);
    if (problem) issues.push({ path: 'body.config.url', code: 'refused_target', message: problem });
  }
  if (issues.length) throw new VoxaError('VALIDATION_FAILED', `${issues[0]!.path}: ${issues[0]!.message}`, { fields: issues.map((i) => i.path), issues });
}

/**
 * Declares the routes. `queues` is asked for only when a change has to (re)start a webhook's deliveries; the
 * plugin creates it lazily and closes it when it stops.
 */
export function connectionRoutes(router: PluginRouter, ctx: PluginContext, queues: () => ConnectorQueues, opts: WebhookOptions = {}): void {
  const hub = ctx.hub;
  const service = (user: UserRecord) => new ConnectionService(hub, { type: 'user', id: user.id });
  const webhooks = () => new WebhookService(hub, queues(), opts);
  const run = async <T>(fn: () => Promise<T>, noun: 'connection' | 'webhook' = 'connection'): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw apiError(err, noun);
    }
  };
  const asWebhook = (v: ConnectionView): ConnectionView => {
    if (v.connector !== 'webhook') throw new VoxaError('NOT_FOUND', 'No such webhook.');
    return v;
  };
  /** Every route here is for admins (the OpenAPI tag, plugin:webhooks, comes from the plugin router). */
  const admin = <P extends z.ZodType | undefined = undefined, Q extends z.ZodType | undefined = undefined, B extends z.ZodType | undefined = undefined>(def: PluginRouteDef<P, Q, B>) =>
    router.add({ ...def, roles: ['admin'] });

  // Connections

  admin({
    method: 'get',
    path: '/connections',
    summary: "The connections of the caller's workspace, optionally of one connector.",
    query: ListQuery,
    responses: { 200: { description: 'The connections.', schema: z.object({ connections: z.array(ConnectionOut) }) } },
    async handler(k, { query }) {
      const user = k.state.user as UserRecord;
      k.body = { connections: await service(user).list(user.workspaceId, query.connector) };
    },
  });

  admin({
    method: 'post',
    path: '/connections',
    summary: "Creates a connection; config is checked against the connector's schema.",
    body: CreateConnection,
    responses: { 201: { description: 'Created.', schema: ConnectionResponse } },
    errors: ['CONFLICT'],
    async handler(k, { body }) {
      const user = k.state.user as UserRecord;
      checkApiConfig(body.connector, body.config, hub.config.webhooksAllowPrivate);
      const connection = await run(() => service(user).create(user.workspaceId, body.connector, body.config, body.name));
      k.status = 201;
      k.body = { connection };
    },
  });

  admin({
    method: 'get',
    path: '/connections/:id',
    summary: 'One connection (secrets never returned).',
    params: IdParam,
    responses: { 200: { description: 'The connection.', schema: ConnectionResponse } },
    errors: ['NOT_FOUND'],
    async handler(k, { params: { id } }) {
      const user = k.state.user as UserRecord;
      k.body = { connection: await run(() => service(user).get(id, user.workspaceId)) };
    },
  });

  admin({
    method: 'patch',
    path: '/connections/:id',
    summary: 'Renames, reconfigures (merged, then re-validated), disables or re-enables a connection.',
    params: IdParam,
    body: PatchConnection,
    responses: { 200: { description: 'The connection now.', schema: ConnectionResponse } },
    errors: ['NOT_FOUND', 'CONFLICT'],
    async handler(k, { params: { id }, body }) {
      const user = k.state.user as UserRecord;
      const svc = service(user);
      const current = await run(() => svc.get(id, user.workspaceId));
      if (body.config) checkApiConfig(current.connector, body.config, hub.config.webhooksAllowPrivate);
      let view = current;
      if (body.config !== undefined || body.name !== undefined) view = await run(() => svc.update(id, body.config ?? {}, user.workspaceId, body.name !== undefined ? { name: body.name } : {}));
      if (body.status !== undefined && body.status !== view.status) {
        view = await run(() => svc.setStatus(id, body.status!, body.status === 'disabled' ? 'disabled by a user' : null, user.workspaceId));
        // A re-enabled webhook resumes the deliveries that waited while it was off.
        if (body.status === 'active' && view.connector === 'webhook') await webhooks().kick(id);
      }
      k.body = { connection: view };
    },
  });

  admin({
    method: 'delete',
    path: '/connections/:id',
    summary: "Removes a connection (a webhook's with its delivery log).",
    params: IdParam,
    responses: { 204: { description: 'Removed.' } },
    errors: ['NOT_FOUND'],
    async handler(k, { params: { id } }) {
      const user = k.state.user as UserRecord;
      await run(() => WebhookService.removeConnection(hub, id, { workspaceId: user.workspaceId, actor: { type: 'user', id: user.id }, webhooks }));
      k.status = 204;
    },
  });

  admin({
    method: 'post',
    path: '/connections/:id/test',
    summary: "Runs the connector's credential check (a webhook gets a signed webhook.test).",
    params: IdParam,
    responses: { 200: { description: 'The outcome; a failed check is an answer, not an error.', schema: z.object({ id: z.string(), ok: z.boolean(), detail: z.string().optional() }) } },
    errors: ['NOT_FOUND', 'CONFLICT'],
    async handler(k, { params: { id } }) {
      const user = k.state.user as UserRecord;
      const svc = service(user);
      const rec = await run(() => svc.getRecord(id, user.workspaceId));
      const connector = getConnector(rec.connector);
      if (!connector) throw new VoxaError('CONFLICT', `Connector ${rec.connector} is not installed.`);
      // A failed check is an answer, not an error: the far end said no, and the detail says why.
      const r = await connector.test(await svc.resolve(rec), svc.contextFor(id)).catch((err: Error) => ({ ok: false, detail: err.message }));
      k.body = { id, ok: r.ok, detail: r.detail };
    },
  });

  // Webhooks (connections of the `webhook` connector)

  admin({
    method: 'get',
    path: '/webhooks',
    summary: "The webhooks of the caller's workspace.",
    responses: { 200: { description: 'The webhooks.', schema: z.object({ webhooks: z.array(ConnectionOut) }) } },
    async handler(k) {
      const user = k.state.user as UserRecord;
      k.body = { webhooks: await service(user).list(user.workspaceId, 'webhook') };
    },
  });

  admin({
    method: 'post',
    path: '/webhooks',
    summary: 'Creates a webhook; the answer holds its signing secret, the only time it is shown.',
    body: CreateWebhook,
    responses: { 201: { description: 'Created.', schema: z.object({ webhook: ConnectionOut, secret: z.string() }) } },
    errors: ['CONFLICT'],
    async handler(k, { body }) {
      const user = k.state.user as UserRecord;
      // Refuse obviously private targets now; names are checked again against their DNS answers on every send.
      const problem = webhookTargetProblem(body.url, hub.config.webhooksAllowPrivate);
      if (problem) throw fieldError('body.url', problem, {}, 'refused_target');
      const secret = generateSecret();
      const webhook = await run(
        () => service(user).create(user.workspaceId, 'webhook', { url: body.url, events: body.events, secret, ...(body.description ? { description: body.description } : {}) }, body.description ?? body.url),
        'webhook',
      );
      k.status = 201;
      // The only time the secret leaves the hub: the receiver needs it to verify signatures.
      k.body = { webhook, secret };
    },
  });

  admin({
    method: 'delete',
    path: '/webhooks/:id',
    summary: 'Removes a webhook and its delivery log.',
    params: IdParam,
    responses: { 204: { description: 'Removed.' } },
    errors: ['NOT_FOUND'],
    async handler(k, { params: { id } }) {
      const user = k.state.user as UserRecord;
      asWebhook(await run(() => service(user).get(id, user.workspaceId), 'webhook'));
      await run(() => webhooks().remove(id, user.workspaceId, { type: 'user', id: user.id }), 'webhook');
      k.status = 204;
    },
  });

  admin({
    method: 'get',
    path: '/webhooks/:id/deliveries',
    summary: "A webhook's deliveries, newest first, without their bodies.",
    params: IdParam,
    query: DeliveriesQuery,
    responses: { 200: { description: 'The deliveries.', schema: z.object({ deliveries: z.array(DeliveryOut) }) } },
    errors: ['NOT_FOUND'],
    async handler(k, { params: { id }, query }) {
      const user = k.state.user as UserRecord;
      asWebhook(await run(() => service(user).get(id, user.workspaceId), 'webhook'));
      k.body = { deliveries: (await webhooks().listDeliveries(id, query.limit)).map(deliveryView) };
    },
  });

  admin({
    method: 'post',
    path: '/webhooks/deliveries/:id/redeliver',
    summary: 'Attempts a delivery once more now, with the same webhook-id and body.',
    params: IdParam,
    responses: { 200: { description: 'The delivery after the attempt.', schema: z.object({ delivery: DeliveryOut }) } },
    errors: ['NOT_FOUND', 'CONFLICT'],
    async handler(k, { params: { id } }) {
      const user = k.state.user as UserRecord;
      const w = webhooks();
      const existing = await w.getDelivery(id);
      if (!existing || existing.workspaceId !== user.workspaceId) throw new VoxaError('NOT_FOUND', 'No such delivery.');
      const d = await run(() => w.redeliver(id, user.workspaceId), 'webhook');
      k.body = { delivery: deliveryView(d) };
    },
  });
}
