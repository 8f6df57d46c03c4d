/**
 * The `webhook` connector: an HTTP endpoint that receives hub events signed per Standard Webhooks. A webhook
 * subscription is a connection of this connector (so it is listed, enabled, disabled, backfilled and has its
 * secret sealed like any other); plugins/webhooks delivers to it.
 */
import { z } from 'zod';
import { WebhookEventType } from '../../plugins/webhooks/events.js';
import { safeRequest, SsrfError, type Resolver } from '../net.js';
import { defineConnector } from '../types.js';
import { isValidSecret, signedHeaders } from './signing.js';

export const WebhookConfigSchema = z.object({
  url: z.string().url().describe('HTTPS endpoint that receives the events.'),
  events: z
    .array(WebhookEventType)
    .min(1)
    // A type named twice is the same subscription: stored (and listed) once.
    .transform((types) => [...new Set(types)])
    .describe('Event types to send, e.g. message.created, message.updated.'),
  secret: z.string().refine(isValidSecret, 'must be whsec_ followed by 24–64 base64 bytes').describe('Signing secret (whsec_…).'),
  description: z.string().max(200).optional().describe('A note for people reading `voxa webhooks list`.'),
});
export type WebhookConfig = z.infer<typeof WebhookConfigSchema>;

/** How one attempt went, as the delivery log records it. */
export interface AttemptResult {
  ok: boolean;
  statusCode: number | null;
  durationMs: number;
  error: string | null;
  /** Milliseconds the receiver asked us to wait (Retry-After on 429/503). */
  retryAfterMs?: number;
  /** The answer means "stop sending" (410 Gone), or the target is refused outright (SSRF). */
  fatal?: boolean;
  responseSnippet?: string;
}

export interface DeliverOptions {
  allowPrivate: boolean;
  timeoutMs?: number;
  resolver?: Resolver;
}

/** Posts one signed body. Never throws: the outcome (including network errors) is in the result. */
export async function deliverOnce(cfg: Pick<WebhookConfig, 'url' | 'secret'>, id: string, body: string, opts: DeliverOptions): Promise<AttemptResult> {
  const started = Date.now();
  try {
    const res = await safeRequest({
      url: cfg.url,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'user-agent': 'VoxaHub-Webhooks/1', ...signedHeaders(cfg.secret, id, body) },
      body,
      allowPrivate: opts.allowPrivate,
      timeoutMs: opts.timeoutMs ?? 10_000,
      ...(opts.resolver ? { resolver: opts.resolver } : {}),
      maxBodyBytes: 1024,
    });
    const durationMs = Date.now() - started;
    const ok = res.status >= 200 && res.status < 300;
    const ra = res.headers['retry-after'];
    const retryAfterMs = typeof ra === 'string' && /^\d+$/.test(ra) ? Number(ra) * 1000 : undefined;
    return {
      ok,
      statusCode: res.status,
      durationMs,
      error: ok ? null : `HTTP ${res.status}`,
      ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
      ...(res.status === 410 ? { fatal: true } : {}),
      responseSnippet: res.body.slice(0, 200),
    };
  } catch (err) {
    const e = err as Error;
    return { ok: false, statusCode: null, durationMs: Date.now() - started, error: e.message, ...(e instanceof SsrfError ? { fatal: true } : {}) };
  }
}

export const webhookConnector = defineConnector({
  id: 'webhook',
  displayName: 'Outgoing webhook',
  description: 'POSTs hub events to an HTTPS endpoint, signed per Standard Webhooks, in order, retried for over 24 hours.',
  authKind: 'secret',
  configSchema: WebhookConfigSchema,
  secretFields: ['secret'],
  // Per endpoint the plugin sends one at a time; this caps the whole hub's outgoing webhook rate.
  rateLimit: { max: 100, durationMs: 1000 },
  async test(conn, ctx) {
    // The documented body shape (id, type, timestamp, workspaceId, data), as every delivery has; the id is also the
    // webhook-id header.
    const id = `test_${Date.now().toString(36)}`;
    const body = JSON.stringify({ id, type: 'webhook.test', timestamp: new Date().toISOString(), workspaceId: conn.record.workspaceId, data: { connectionId: conn.record.id } });
    const r = await deliverOnce(conn.config, id, body, { allowPrivate: ctx.hub.config.webhooksAllowPrivate });
    return { ok: r.ok, detail: r.ok ? `endpoint answered ${r.statusCode} in ${r.durationMs} ms` : `delivery failed: ${r.error}` };
  },
});
