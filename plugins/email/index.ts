/**
 * The `email` plugin: unread-message digests over SMTP.
 *
 * On message.created every recipient with email on gets a delayed BullMQ job with the id `digest-<userId>`:
 * BullMQ refuses a second job under an existing id, so a user has at most one digest pending however many
 * messages arrive. When the job runs it re-reads the store: if the user has read everything by then (outside
 * muted conversations) nothing is sent; otherwise one email lists the unread conversations. A message.seen
 * that shows the user caught up removes the pending job at once.
 *
 * Routes: `GET/PUT /v1/me/notifications` (email on/off and delay), and the public one-click unsubscribe
 * `GET/POST /v1/notifications/unsubscribe?u=&t=` that the List-Unsubscribe header points at.
 */
import { Queue, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import nodemailer, { type Transporter } from 'nodemailer';
import type { Logger } from 'pino';
import { z } from 'zod';
import { closeBullmq } from '../../connectors/queues.js';
import type { UserRecord } from '../../core/domain.js';
import { VoxaError } from '../../core/errors.js';
import type { Hub } from '../../core/hub.js';
import { initNotificationSeries, metrics } from '../../core/telemetry/metrics.js';
import { recordSent } from '../analytics/facts.js';
import { definePlugin, type Plugin } from '../runtime/types.js';
import { buildDigest, escapeHtml, unreadConversations, unsubscribeUrl, verifyUnsubscribeToken } from './digest.js';
import { getEmailPrefs, updateEmailPrefs } from './prefs.js';
import { mutedConversations } from '../push/mutes.js';
import { createRedis } from '../../core/redis-url.js';

export interface EmailPluginOptions {
  /** Replaces the transport built from config.smtpUrl (tests may pass their own options). */
  transport?: Transporter;
  /** How long stop() waits for digests in flight and for Redis before it returns anyway (default 10 s, as connector queues). */
  closeGraceMs?: number;
  /** Attempts per digest and the first retry delay, doubling (default 5 and 30 s; tests shorten them). */
  retry?: { attempts: number; backoffMs: number };
}

interface DigestJob {
  userId: string;
}

/** BullMQ job id of a user's pending digest (BullMQ job ids may not contain ':'). */
export const digestJobId = (userId: string): string => `digest-${userId}`;

const PrefsBody = z.strictObject({
  email: z.strictObject({
    enabled: z.boolean().optional(),
    delaySeconds: z.number().int().min(0).max(7 * 86400).optional(),
  }),
});
const PrefsResponse = z.object({ email: z.object({ enabled: z.boolean(), delaySeconds: z.number().int() }) });

const UnsubscribeQuery = z.strictObject({ u: z.string().min(1).max(64), t: z.string().min(1).max(128) });

/** Base URL of the hub's own links in emails (the unsubscribe link): the configured public URL, else the local listener. */
function baseUrlOf(hub: Hub): string {
  return (hub.config.publicUrl ?? `http://localhost:${hub.config.port}`).replace(/\/+$/, '');
}

export function createEmailPlugin(opts: EmailPluginOptions = {}): Plugin {
  let hub: Hub | null = null;
  let log: Logger | null = null;
  let queue: Queue<DigestJob> | null = null;
  let worker: Worker<DigestJob> | null = null;
  let transport: Transporter | null = null;
  const connections: Redis[] = [];

  /** One digest run: send or drop. Returns what happened (for logs and tests). */
  async function runDigest(job: Job<DigestJob>): Promise<'sent' | 'dropped' | 'disabled'> {
    const h = hub!;
    const user = await h.store.getUser(job.data.userId);
    if (!user || user.disabled || !user.email) return 'dropped';
    const prefs = await getEmailPrefs(h.store.docs, user.id, h.config.emailDigestDelaySeconds);
    if (!prefs.enabled) return 'disabled';
    const base = baseUrlOf(h);
    const unsubscribe = unsubscribeUrl(base, h.secrets.jwtSecret, user.id);
    const digest = await buildDigest(h.store, user, { unsubscribe, conversationTemplate: h.config.appConversationUrl });
    if (!digest) return 'dropped';
    try {
      await transport!.sendMail({
        from: h.config.emailFrom,
        to: { name: user.name, address: user.email },
        subject: digest.subject,
        text: digest.text,
        html: digest.html,
        // The same run retried after an SMTP failure keeps its Message-ID, so a receiving system can dedupe it.
        messageId: `<digest-${user.id}-${job.timestamp}@voxa.invalid>`,
        list: { unsubscribe: { url: unsubscribe, comment: 'Stop unread-message emails' } },
        headers: { 'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click', 'Auto-Submitted': 'auto-generated' },
      });
    } catch (err) {
      // Every attempt the SMTP server refused or could not be reached for; the job's retries may still send it.
      metrics.notificationsSent.inc({ channel: 'email', outcome: 'failed' });
      throw err;
    }
    metrics.notificationsSent.inc({ channel: 'email', outcome: 'sent' });
    await recordSent(h.store.docs, 'email', { workspaceId: user.workspaceId, key: `digest-${user.id}-${job.timestamp}` });
    return 'sent';
  }

  /** True when the user has nothing unread left anywhere. */
  async function caughtUp(userId: string): Promise<boolean> {
    return (await unreadConversations(hub!.store, userId)).length === 0;
  }

  const plugin = definePlugin({
    manifest: {
      name: 'email',
      description: 'Emails a digest of unread messages to users who have not read them after a delay.',
      events: ['message.created', 'message.seen'],
      retry: { maxDeliveries: 10 },
    },
    async start(ctx) {
      hub = ctx.hub;
      log = ctx.log;
      initNotificationSeries('email');
      if (!opts.transport && !hub.config.smtpUrl) {
        log.info('email plugin: no SMTP server configured (VOXA_SMTP_URL), digests are off');
        return;
      }
      if (!hub.config.redisUrl) throw new Error('email plugin needs Redis for its delayed jobs');
      transport = opts.transport ?? nodemailer.createTransport(hub.config.smtpUrl!);
      const prefix = `voxa-${hub.config.natsNamespace || 'default'}`;
      // BullMQ's worker blocks on Redis, so it needs its own connections and no per-request retry limit.
      const conn = () => {
        const r = createRedis(hub!.config.redisUrl!, { maxRetriesPerRequest: null, retryStrategy: (n) => Math.min(n * 200, 2000) });
        r.on('error', () => undefined); // ioredis reconnects by itself; readiness is reported elsewhere
        connections.push(r);
        return r;
      };
      queue = new Queue<DigestJob>('email-digest', { connection: conn(), prefix });
      worker = new Worker<DigestJob>(
        'email-digest',
        async (job) => {
          const outcome = await runDigest(job);
          log!.debug({ userId: job.data.userId, outcome }, 'email digest');
          return outcome;
        },
        { connection: conn(), prefix, concurrency: 4 },
      );
      worker.on('failed', (job, err) => log!.warn({ userId: job?.data.userId, err: err.message }, 'email digest failed'));
      worker.on('error', (err) => log!.warn({ err: err.message }, 'email worker error'));
      await Promise.all([queue.waitUntilReady(), worker.waitUntilReady()]);
    },
    async handle(event) {
      if (!queue || !hub) return; // email is off
      if (event.type === 'message.created') {
        const conv = await hub.store.getConversation(event.data.message.conversationId);
        if (!conv) return;
        for (const userId of conv.members) {
          if (userId === event.data.message.senderId) continue;
          const user = await hub.store.getUser(userId);
          // Invited-but-unregistered and disabled accounts get no mail.
          if (!user || user.disabled || user.passwordHash === null || !user.email) continue;
          const prefs = await getEmailPrefs(hub.store.docs, userId, hub.config.emailDigestDelaySeconds);
          if (!prefs.enabled) continue;
          // A muted conversation's messages never make a digest: they would only send the same other unread again.
          if ((await mutedConversations(hub.store.docs, userId)).has(conv.id)) continue;
          // An existing job under this id makes add() a no-op: one pending digest per user, and a redelivered
          // event cannot schedule a second one. So a job that failed for good is removed, not kept: kept, it
          // held the id and silently swallowed every later digest of that user (the failure is in the log).
          await queue.add(
            'digest',
            { userId },
            {
              jobId: digestJobId(userId),
              delay: prefs.delaySeconds * 1000,
              removeOnComplete: true,
              removeOnFail: true,
              attempts: opts.retry?.attempts ?? 5,
              backoff: { type: 'exponential', delay: opts.retry?.backoffMs ?? 30_000 },
            },
          );
        }
      } else if (event.type === 'message.seen') {
        const job = await queue.getJob(digestJobId(event.data.userId));
        if (!job || !(await job.isDelayed())) return;
        if (await caughtUp(event.data.userId)) {
          // A job that just started running is locked and cannot be removed; it re-checks unread itself.
          await job.remove().catch(() => undefined);
        }
      }
    },
    routes(router, ctx) {
      router.add({
        method: 'get',
        path: '/me/notifications',
        summary: "The caller's email digest preferences.",
        responses: { 200: { description: 'The preferences.', schema: PrefsResponse } },
        async handler(kctx) {
          const user = kctx.state.user as UserRecord;
          kctx.body = { email: await getEmailPrefs(ctx.hub.store.docs, user.id, ctx.hub.config.emailDigestDelaySeconds) };
        },
      });
      router.add({
        method: 'put',
        path: '/me/notifications',
        summary: "Changes the caller's email digest preferences (fields left out stay as they are).",
        body: PrefsBody,
        responses: { 200: { description: 'The preferences now.', schema: PrefsResponse } },
        async handler(kctx, { body }) {
          const user = kctx.state.user as UserRecord;
          const email = await updateEmailPrefs(ctx.hub.store.docs, user.id, body.email, ctx.hub.config.emailDigestDelaySeconds);
          if (!email.enabled) await queue?.remove(digestJobId(user.id)).catch(() => undefined);
          kctx.body = { email };
        },
      });
    },
    publicRoutes(router, ctx) {
      const check = (q: z.output<typeof UnsubscribeQuery>): string => {
        if (!verifyUnsubscribeToken(ctx.hub.secrets.jwtSecret, q.u, q.t)) throw new VoxaError('FORBIDDEN', 'This unsubscribe link is not valid.');
        return q.u;
      };
      // GET only shows a confirmation button: link scanners in mail systems follow GET links on their own.
      router.add({
        method: 'get',
        path: '/notifications/unsubscribe',
        summary: 'The page behind the unsubscribe link in a digest: a button that confirms (signed link, no token).',
        query: UnsubscribeQuery,
        responses: { 200: { description: 'An HTML page with the confirmation button.' } },
        errors: ['FORBIDDEN'],
        handler(kctx, { query }) {
          check(query);
          kctx.type = 'html';
          kctx.body = `<!doctype html><html><body><form method="post" action="${escapeHtml(kctx.originalUrl)}"><p>Stop unread-message emails from Voxa?</p><button type="submit">Unsubscribe</button></form></body></html>`;
        },
      });
      // RFC 8058 one-click: the mail client POSTs the form "List-Unsubscribe=One-Click" to the URL. The signed
      // query is the credential; the form says nothing more, so it is not read (ownBody) rather than refused.
      router.add({
        method: 'post',
        path: '/notifications/unsubscribe',
        summary: 'Turns the digest off for the user the signed link names (RFC 8058 one-click; no token).',
        query: UnsubscribeQuery,
        ownBody: true,
        responses: { 200: { description: 'An HTML page saying the digest is off.' } },
        errors: ['FORBIDDEN'],
        async handler(kctx, { query }) {
          const userId = check(query);
          await updateEmailPrefs(ctx.hub.store.docs, userId, { enabled: false }, ctx.hub.config.emailDigestDelaySeconds);
          await queue?.remove(digestJobId(userId)).catch(() => undefined);
          kctx.type = 'html';
          kctx.body = '<!doctype html><html><body><p>You will no longer get unread-message emails.</p></body></html>';
        },
      });
    },
    async stop() {
      // Bounded like the connector queues: a Redis that stopped answering must not hold the hub's stop.
      const parts = { workers: worker ? [worker] : [], queues: queue ? [queue] : [], connections: [...connections] };
      worker = null;
      queue = null;
      connections.length = 0;
      await closeBullmq(parts, { graceMs: opts.closeGraceMs, log: log ?? { warn: () => undefined }, what: 'email plugin' });
      transport?.close();
    },
  });
  return plugin;
}

export default createEmailPlugin;
