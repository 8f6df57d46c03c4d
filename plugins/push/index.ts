/**
 * The `push` plugin: FCM notifications for new messages to members who have no socket connected.
 *
 * Once per (event, device): before sending, the plugin claims `<eventId>:<deviceId>` in the store with
 * docs.insert (atomic); after FCM accepted it marks the claim 'sent'. A redelivered event finds the claim
 * and skips the device; a failed send gives the claim back so the retry can send. Claiming before (rather
 * than marking after) also stops two processes that got the same event at once from both sending. The one
 * gap is a crash between FCM's accept and the 'sent' mark: a claim left 'sending' for longer than
 * STALE_CLAIM_MS is taken over and sent again, and that repeat is harmless because pushes collapse per
 * conversation (the device shows the same notification once).
 *
 * Never pushed at all: a message the recipient has already read (read marker ≥ its seq), and a message older
 * than MAX_PUSH_AGE_MS. Both matter most for a rewind, where the claims alone would let a device registered
 * after the message count as one that missed it.
 *
 * Routes: `POST /v1/devices`, `GET /v1/devices`, `DELETE /v1/devices/:token`,
 * `PUT|DELETE /v1/conversations/:id/mute`.
 */
import type { Duplex } from 'node:stream';
import type { RequestOptions } from 'node:https';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { UserRecord } from '../../core/domain.js';
import { VoxaError } from '../../core/errors.js';
import type { Hub } from '../../core/hub.js';
import { initNotificationSeries, metrics } from '../../core/telemetry/metrics.js';
import { presenceUserKey } from '../edge/presence.js';
import { recordSent } from '../analytics/facts.js';
import { ConversationParams } from '../runtime/route-schemas.js';
import { definePlugin, RetryableError, type Plugin, type PluginRouteDef } from '../runtime/types.js';
import { devicesOf, publicDevice, registerDevice, removeOwnDevice, DEVICES_COLLECTION, type Device } from './devices.js';
import { buildMessage, classifyFcmError, openFcm, readServiceAccount, truncate, type FcmClient } from './fcm.js';
import { isMuted, setMuted } from './mutes.js';

export const SENT_COLLECTION = 'push_sent';
/** A 'sending' claim older than this is assumed to belong to a crashed process. */
export const STALE_CLAIM_MS = 120_000;
/**
 * Messages older than this are never pushed: a notification an hour late is noise, and it keeps a rewind or a
 * late `dlq retry` from buzzing phones about history. Longer than the manifest's whole retry schedule (~20 min).
 */
export const MAX_PUSH_AGE_MS = 60 * 60_000;

export interface PushPluginOptions {
  /** Test hook: opens every TLS connection of the FCM client (FCM and Google's token endpoint) somewhere else. */
  connect?: (options: RequestOptions) => Duplex;
  /** First retry delay after quota or server errors when FCM gave no Retry-After (doubles per attempt). */
  baseBackoffMs?: number;
  /** Messages older than this are not pushed (default MAX_PUSH_AGE_MS). */
  maxAgeMs?: number;
}

interface SentDoc {
  state: 'sending' | 'sent' | 'dropped';
  at: string;
}

const TokenBody = z
  .object({
    // FCM registration tokens are long opaque strings of URL-safe characters and ':'.
    token: z.string().min(8).max(4096).regex(/^[A-Za-z0-9:_.-]+$/, 'an FCM registration token'),
    platform: z.enum(['ios', 'android', 'web']),
  })
  .strict();
const TokenParam = z.strictObject({ token: z.string().min(1).max(4096) });

/** A device as the API shows it (publicDevice: never the token). */
const DeviceOut = z.object({ id: z.string(), platform: TokenBody.shape.platform, createdAt: z.string(), updatedAt: z.string() });
const DeviceResponse = z.object({ device: DeviceOut });
const MuteResponse = z.object({ conversationId: z.string(), muted: z.boolean() });

/** True when the edge has a live device of the user (presence keys documented in plugins/edge/presence.ts). */
export async function hasConnectedSocket(redis: Redis | null, namespace: string, userId: string): Promise<boolean> {
  if (!redis) return false;
  try {
    const live = await redis.zcount(presenceUserKey(namespace, userId), String(Date.now()), '+inf');
    return live > 0;
  } catch {
    // Presence unknown (Redis down): a push the user may not need beats a message they never hear about.
    return false;
  }
}

/** @name or @userId in the text, as a whole word. */
export function mentions(text: string, user: Pick<UserRecord, 'id' | 'name'>): boolean {
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
  const names = [user.id, user.name, user.name.replace(/\s+/g, '')].filter((n) => n.length > 0);
  return names.some((n) => new RegExp(`(^|[^\\w@])@${esc(n)}(?![\\w])`, 'iu').test(text));
}

export function createPushPlugin(opts: PushPluginOptions = {}): Plugin {
  let hub: Hub | null = null;
  let log: Logger | null = null;
  let fcm: FcmClient | null = null;
  const baseBackoff = opts.baseBackoffMs ?? 10_000;
  const maxAge = opts.maxAgeMs ?? MAX_PUSH_AGE_MS;

  /** Claims (event, device); false when another delivery already sent it or is sending it right now. */
  async function claim(key: string): Promise<'claimed' | 'done' | 'busy'> {
    const docs = hub!.store.docs;
    const fresh: SentDoc = { state: 'sending', at: new Date().toISOString() };
    if (await docs.insert(SENT_COLLECTION, key, fresh)) return 'claimed';
    const prev = await docs.get<SentDoc>(SENT_COLLECTION, key);
    if (!prev) return (await docs.insert(SENT_COLLECTION, key, fresh)) ? 'claimed' : 'busy';
    if (prev.state !== 'sending') return 'done';
    if (Date.now() - Date.parse(prev.at) < STALE_CLAIM_MS) return 'busy';
    await docs.put(SENT_COLLECTION, key, fresh); // the claimer crashed: take over
    return 'claimed';
  }

  async function sendTo(
    device: Device,
    eventId: string,
    workspaceId: string,
    content: { conversationId: string; seq: number; high: boolean; content: { title: string; body: string } | null },
  ): Promise<'sent' | 'skipped' | 'removed' | 'retry' | 'busy'> {
    const docs = hub!.store.docs;
    const key = `${eventId}:${device.id}`;
    const c = await claim(key);
    if (c === 'done') return 'skipped';
    if (c === 'busy') return 'busy';
    try {
      await fcm!.messaging.send(buildMessage({ token: device.token, ...content }));
    } catch (err) {
      // One per refused or failed request, whatever follows (device removed, retried, given up).
      metrics.notificationsSent.inc({ channel: 'push', outcome: 'failed' });
      const outcome = classifyFcmError(err);
      const code = (err as { code?: string }).code;
      if (outcome === 'remove-device') {
        await docs.delete(DEVICES_COLLECTION, device.id);
        await docs.put<SentDoc>(SENT_COLLECTION, key, { state: 'dropped', at: new Date().toISOString() });
        log!.info({ deviceId: device.id, userId: device.userId, code }, 'push: FCM rejected the token, device removed');
        return 'removed';
      }
      await docs.delete(SENT_COLLECTION, key); // give the claim back for the retry
      if (outcome === 'retry') {
        log!.warn({ deviceId: device.id, code }, 'push: FCM failed, will retry');
        return 'retry';
      }
      log!.warn({ deviceId: device.id, code }, 'push: FCM refused the message, not retrying');
      return 'skipped';
    }
    metrics.notificationsSent.inc({ channel: 'push', outcome: 'sent' });
    await docs.put<SentDoc>(SENT_COLLECTION, key, { state: 'sent', at: new Date().toISOString() });
    await recordSent(docs, 'push', { workspaceId, key });
    return 'sent';
  }

  return definePlugin({
    manifest: {
      name: 'push',
      description: 'Sends FCM push notifications for new messages to members without a connected socket.',
      events: ['message.created'],
      retry: { maxDeliveries: 8, backoffMs: [10_000, 30_000, 60_000, 120_000, 300_000] },
    },
    async start(ctx) {
      hub = ctx.hub;
      log = ctx.log;
      initNotificationSeries('push');
      if (!hub.config.fcmCredentials) {
        log.info('push plugin: no FCM service account configured (VOXA_FCM_CREDENTIALS), pushes are off');
        return;
      }
      fcm = openFcm(readServiceAccount(hub.config.fcmCredentials), opts.connect);
      log.info({ projectId: fcm.projectId }, 'push plugin: FCM ready');
    },
    async handle(event, info) {
      if (!fcm || !hub || event.type !== 'message.created') return;
      const msg = event.data.message;
      if (msg.deleted) return;
      // Late (a rewind, a retry long after): nobody wants that notification any more.
      if (Date.now() - Date.parse(msg.createdAt) > maxAge) return;
      // FCM asked us to hold off (429 with Retry-After): do not spend a request before then.
      const wait = fcm.agent.notBefore - Date.now();
      if (wait > 0) throw new RetryableError('FCM asked to retry later', wait);

      const store = hub.store;
      const conv = await store.getConversation(msg.conversationId);
      if (!conv) return;
      const [ws, sender] = await Promise.all([store.getWorkspace(conv.workspaceId), store.getUser(msg.senderId)]);
      const privatePush = ws?.settings.privatePush ?? false;
      let retry = false;
      let busy = false;
      // Read markers of every member in one store read, made only once someone has a device to push to.
      let readMarkers: Record<string, number> | null = null;
      for (const userId of conv.members) {
        if (userId === msg.senderId) continue;
        if (await isMuted(store.docs, userId, conv.id)) continue;
        if (await hasConnectedSocket(hub.redis, hub.config.natsNamespace, userId)) continue;
        const devices = await devicesOf(store.docs, userId);
        if (devices.length === 0) continue;
        // Already read (on another device, or before a rewind brought the event back): nothing to notify.
        // The claim below is per device, so without this a device registered later would count as missed.
        readMarkers ??= await store.getReadMarkers(conv.id);
        if ((readMarkers[userId] ?? 0) >= msg.seq) continue;
        const recipient = await store.getUser(userId);
        if (!recipient || recipient.disabled) continue;
        const high = conv.type === 'direct' || mentions(msg.text, recipient);
        const content = privatePush
          ? null
          : { title: conv.type === 'group' ? (conv.title ?? 'Group') : (sender?.name ?? 'New message'), body: truncate(msg.text || 'Attachment') };
        for (const device of devices) {
          const r = await sendTo(device, event.id, conv.workspaceId, { conversationId: conv.id, seq: msg.seq, high, content });
          if (r === 'retry') retry = true;
          if (r === 'busy') busy = true;
        }
      }
      if (retry || busy) {
        const hinted = fcm.agent.notBefore - Date.now();
        const backoff = Math.min(baseBackoff * 2 ** Math.max(0, info.attempt - 1), 600_000);
        // busy: another delivery is sending right now; come back to confirm it finished.
        throw new RetryableError(retry ? 'some pushes failed and will be retried' : 'another delivery is sending', hinted > 0 ? hinted : backoff);
      }
    },
    routes(router, ctx) {
      router.add({
        method: 'post',
        path: '/devices',
        summary: "Registers the caller's device for pushes (idempotent per token; a token moves to its latest user).",
        body: TokenBody,
        responses: { 201: { description: 'Registered.', schema: DeviceResponse }, 200: { description: 'Already registered.', schema: DeviceResponse } },
        async handler(kctx, { body }) {
          const user = kctx.state.user as UserRecord;
          const { device, created } = await registerDevice(ctx.hub.store.docs, { ...body, userId: user.id, workspaceId: user.workspaceId });
          kctx.status = created ? 201 : 200;
          kctx.body = { device: publicDevice(device) };
        },
      });
      router.add({
        method: 'get',
        path: '/devices',
        summary: "The caller's devices (tokens are never echoed).",
        responses: { 200: { description: 'The devices.', schema: z.object({ devices: z.array(DeviceOut) }) } },
        async handler(kctx) {
          const user = kctx.state.user as UserRecord;
          kctx.body = { devices: (await devicesOf(ctx.hub.store.docs, user.id)).map(publicDevice) };
        },
      });
      router.add({
        method: 'delete',
        path: '/devices/:token',
        summary: 'Unregisters one of the caller\'s devices.',
        params: TokenParam,
        responses: { 204: { description: 'Removed.' } },
        errors: ['NOT_FOUND'],
        async handler(kctx, { params: { token } }) {
          const user = kctx.state.user as UserRecord;
          // Someone else's token looks exactly like an unknown one.
          if (!(await removeOwnDevice(ctx.hub.store.docs, user.id, token))) throw new VoxaError('NOT_FOUND', 'No such device.');
          kctx.status = 204;
        },
      });
      const mute = (method: 'put' | 'delete', muted: boolean): PluginRouteDef<typeof ConversationParams> => ({
        method,
        path: '/conversations/:id/mute',
        summary: muted ? 'Mutes pushes and digest mail of a conversation for the caller.' : 'Unmutes a conversation for the caller.',
        params: ConversationParams,
        responses: { 200: { description: 'The mute state now.', schema: MuteResponse } },
        errors: ['CONVERSATION_NOT_FOUND', 'NOT_A_MEMBER'],
        async handler(kctx, { params: { id } }) {
          const user = kctx.state.user as UserRecord;
          await ctx.hub.chat.getConversationFor(user, id); // 404 / 403 unless a member
          await setMuted(ctx.hub.store.docs, user.id, id, muted);
          kctx.body = { conversationId: id, muted };
        },
      });
      router.add(mute('put', true)).add(mute('delete', false));
    },
    async stop() {
      await fcm?.close();
      fcm = null;
    },
  });
}

export default createPushPlugin;
