/**
 * The `analytics` plugin: turns chat events into idempotent facts (facts.ts) and serves the day figures
 * (report.ts) at `GET /v1/analytics?from&to` to admins and agents.
 */
import { z } from 'zod';
import type { Role, UserRecord } from '../../core/domain.js';
import { VoxaError } from '../../core/errors.js';
import { validate } from '../../core/http/validate.js';
import type { Store } from '../../core/store/port.js';
import { definePlugin, type Plugin } from '../runtime/types.js';
import { ensureFactIndexes, messageFactId, recordFact, utcDay, type Side } from './facts.js';
import { buildReport } from './report.js';

/** Longest range one report may cover, so one request cannot make the store read years of facts. */
export const MAX_RANGE_DAYS = 366;

const Day = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, 'a UTC date as YYYY-MM-DD')
  .refine((s) => !Number.isNaN(Date.parse(`${s}T00:00:00Z`)) && new Date(`${s}T00:00:00Z`).toISOString().startsWith(s), 'a real calendar date');

/** The query of GET /v1/analytics (and parseRange's input); parseRange checks the range itself. */
const RangeQuery = z.strictObject({
  from: Day.optional().describe('The first day (UTC, YYYY-MM-DD). Default: 29 days before `to`.'),
  to: Day.optional().describe('The last day (UTC, YYYY-MM-DD), included. Default: today.'),
});

const Stats = z.object({
  messages: z.number().int(),
  activeUsers: z.number().int(),
  conversationsOpened: z.number().int(),
  firstResponse: z.object({ count: z.number().int(), medianMs: z.number().nullable(), p90Ms: z.number().nullable() }),
  deliveries: z.record(z.string(), z.number().int()),
  pushesSent: z.number().int(),
  emailsSent: z.number().int(),
});
/** report.ts AnalyticsReport, for the OpenAPI document. */
const ReportResponse = z.object({ workspaceId: z.string(), from: z.string(), to: z.string(), days: z.array(Stats.extend({ day: z.string() })), totals: Stats });

/** Validates a report range; `to` defaults to today and `from` to 29 days before `to`. */
export function parseRange(input: { from?: unknown; to?: unknown }, today = new Date()): { from: string; to: string } {
  const q = validate(RangeQuery, { from: input.from, to: input.to }, 'query');
  const to = q.to ?? today.toISOString().slice(0, 10);
  const from = q.from ?? new Date(Date.parse(`${to}T00:00:00Z`) - 29 * 86_400_000).toISOString().slice(0, 10);
  if (from > to) throw new VoxaError('VALIDATION_FAILED', 'query.from: must not be after to', { fields: ['query.from'], issues: [{ path: 'query.from', code: 'range', message: 'from is after to' }] });
  const span = (Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / 86_400_000 + 1;
  if (span > MAX_RANGE_DAYS) {
    throw new VoxaError('VALIDATION_FAILED', `query.to: the range may cover at most ${MAX_RANGE_DAYS} days`, { fields: ['query.to'], issues: [{ path: 'query.to', code: 'range', message: `at most ${MAX_RANGE_DAYS} days` }] });
  }
  return { from, to };
}

const SIDE_OF_ROLE: Record<Role, Side> = { admin: 'agent', agent: 'agent', customer: 'customer' };
const ROLE_CACHE_MS = 60_000;

/** Builds the plugin. */
export function createAnalyticsPlugin(): Plugin {
  let store: Store | null = null;
  // Roles change rarely and every message needs its sender's: a short cache saves a user read per message.
  const roles = new Map<string, { side: Side; until: number }>();
  async function sideOf(userId: string): Promise<Side> {
    const hit = roles.get(userId);
    if (hit && hit.until > Date.now()) return hit.side;
    const user = await store!.getUser(userId);
    const side = user ? SIDE_OF_ROLE[user.role] : 'other';
    if (roles.size > 10_000) roles.clear();
    roles.set(userId, { side, until: Date.now() + ROLE_CACHE_MS });
    return side;
  }

  return definePlugin({
    manifest: {
      name: 'analytics',
      description: 'Counts messages, active users, opened conversations, first-response times, deliveries, pushes and emails per workspace and day.',
      events: ['message.created', 'conversation.created', 'message.delivered'],
      // Facts are keyed by what they count, so a rewind re-reads everything and changes nothing that was
      // already right, while rebuilding whatever is missing.
      replay: 'reprocess',
      startAt: 'all',
    },
    async start(ctx) {
      store = ctx.hub.store;
      await ensureFactIndexes(store.docs);
    },
    async handle(event) {
      if (!store) throw new Error('analytics plugin not started');
      const docs = store.docs;
      switch (event.type) {
        case 'message.created': {
          const m = event.data.message;
          await recordFact(docs, messageFactId(m.conversationId, m.seq), {
            kind: 'message',
            workspaceId: event.workspaceId,
            day: utcDay(m.createdAt),
            at: m.createdAt,
            conversationId: m.conversationId,
            seq: m.seq,
            senderId: m.senderId,
            side: await sideOf(m.senderId),
          });
          return;
        }
        case 'conversation.created': {
          const c = event.data.conversation;
          await recordFact(docs, `c:${c.id}`, { kind: 'conversation', workspaceId: event.workspaceId, day: utcDay(c.createdAt), at: c.createdAt, conversationId: c.id });
          return;
        }
        case 'message.delivered': {
          // The edge may say which transport delivered; the catalog's payload does not require it.
          const transport = (event.data as { transport?: unknown }).transport;
          await recordFact(docs, `d:${event.id}`, {
            kind: 'delivery',
            workspaceId: event.workspaceId,
            day: utcDay(event.time),
            at: event.time,
            transport: typeof transport === 'string' && /^[a-z0-9._-]{1,32}$/i.test(transport) ? transport : 'unknown',
          });
          return;
        }
        default:
          return;
      }
    },
    routes(router, ctx) {
      router.add({
        method: 'get',
        path: '/analytics',
        summary: "Per-day figures of the caller's workspace from `from` to `to` (default: the last 30 days).",
        roles: ['admin', 'agent'],
        query: RangeQuery,
        responses: { 200: { description: 'The report.', schema: ReportResponse } },
        async handler(kctx, { query }) {
          const user = kctx.state.user as UserRecord;
          const { from, to } = parseRange(query);
          kctx.body = await buildReport(ctx.hub.store.docs, user.workspaceId, from, to);
        },
      });
    },
  });
}

export default createAnalyticsPlugin;
