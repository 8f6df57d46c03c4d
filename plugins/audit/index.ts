/**
 * The `audit` plugin: appends every security- and admin-relevant event to the tamper-evident chain
 * (chain.ts) and serves `GET /v1/audit` to admins of the workspace.
 */
import { z } from 'zod';
import type { UserRecord } from '../../core/domain.js';
import { EnvelopeSchema } from '../../core/events/catalog.js';
import { limitParam, SeqCursor } from '../runtime/route-schemas.js';
import { definePlugin, type Plugin } from '../runtime/types.js';
import type { DocumentStore } from '../../core/store/port.js';
import { appendEntry, ensureAuditIndexes, listEntries } from './chain.js';
import { AUDITED_EVENTS, describeEvent } from './describe.js';

/** Accepts a full ISO timestamp or a plain UTC date (YYYY-MM-DD, meaning its midnight). */
export const SinceSchema = z
  .string()
  .refine((s) => /^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2}))?$/.test(s) && !Number.isNaN(Date.parse(s)), 'an ISO date or timestamp')
  .transform((s) => new Date(s).toISOString());

const ListQuery = z.strictObject({
  since: SinceSchema.optional(),
  limit: limitParam(500, 100),
  after: SeqCursor.optional(),
});

/** An entry as listed (chain.ts AuditEntry); for the OpenAPI document. */
const EntrySchema = z.object({
  id: z.string(),
  seq: z.number().int(),
  time: z.string(),
  eventId: z.string(),
  eventTime: z.string(),
  type: z.string(),
  actor: EnvelopeSchema.shape.actor,
  workspaceId: z.string(),
  subject: z.string().optional(),
  summary: z.string(),
  details: z.record(z.string(), z.unknown()).optional(),
  prevHash: z.string(),
  hash: z.string(),
});
const ListResponse = z.object({ entries: z.array(EntrySchema), nextAfter: z.number().int().nullable() });

/** Builds the plugin. One instance per process; the store comes from the hub at start. */
export function createAuditPlugin(): Plugin {
  let docs: DocumentStore | null = null;
  return definePlugin({
    manifest: {
      name: 'audit',
      description: 'Appends security- and admin-relevant events to a hash-chained, tamper-evident audit log.',
      events: AUDITED_EVENTS,
      // One append at a time keeps the seq race (see chain.ts) to the rare multi-process case.
      concurrency: 1,
      startAt: 'all',
    },
    async start(ctx) {
      docs = ctx.hub.store.docs;
      await ensureAuditIndexes(docs);
    },
    async handle(event) {
      if (!docs) throw new Error('audit plugin not started');
      const input = describeEvent(event);
      if (input) await appendEntry(docs, input);
    },
    routes(router, ctx) {
      router.add({
        method: 'get',
        path: '/audit',
        summary: "The audit log of the caller's workspace, oldest first; page on with after=nextAfter.",
        roles: ['admin'],
        query: ListQuery,
        responses: { 200: { description: 'A page of entries.', schema: ListResponse } },
        async handler(kctx, { query: q }) {
          const user = kctx.state.user as UserRecord;
          const page = await listEntries(ctx.hub.store.docs, {
            workspaceId: user.workspaceId,
            limit: q.limit,
            ...(q.since ? { since: q.since } : {}),
            ...(q.after !== undefined ? { afterSeq: q.after } : {}),
          });
          kctx.body = { entries: page.entries, nextAfter: page.nextAfterSeq };
        },
      });
    },
  });
}

export default createAuditPlugin;
