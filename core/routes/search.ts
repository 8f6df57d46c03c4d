/** GET /v1/search: full-text search over the messages of the caller's conversations. */
import { z } from 'zod';
import { MessageSchema } from '../domain.js';
import type { ApiRouter } from '../http/api-router.js';
import type { Hub } from '../hub.js';
import { Id, Limit, SearchText } from './schemas.js';

const SearchQuery = z.strictObject({
  /** Plain text; words are matched, punctuation and operator syntax are ignored. */
  q: SearchText(500).trim().min(1),
  conversationId: Id.optional(),
  limit: Limit,
  cursor: z.string().min(1).max(200).optional(),
});

const SearchResponse = z.object({
  results: z.array(
    z.object({
      message: MessageSchema,
      /** Plain text around the match (never HTML). */
      snippet: z.string(),
      /** [start, end) ranges of matched words within `snippet`, in UTF-16 code units. */
      highlights: z.array(z.tuple([z.number().int(), z.number().int()])),
      score: z.number(),
    }),
  ),
  nextCursor: z.string().nullable(),
});

export function searchRoutes(api: ApiRouter, hub: Hub): void {
  api.add({
    method: 'get',
    path: '/v1/search',
    tag: 'search',
    summary: "Search the messages of the caller's conversations, best match first, with highlighted snippets.",
    auth: true,
    query: SearchQuery,
    responses: { 200: { description: 'One page of results.', schema: SearchResponse } },
    errors: ['CONVERSATION_NOT_FOUND', 'NOT_A_MEMBER', 'RATE_LIMITED'],
    async handler(ctx, { query }) {
      const user = ctx.state.user!;
      // A named conversation must exist for the caller (same answers as reading its history).
      if (query.conversationId) await hub.chat.getConversationFor(user, query.conversationId);
      await hub.rateLimiter.hit(`search:${user.id}`, 120);
      const res = await hub.store.searchMessages(user.id, query.q, {
        limit: query.limit,
        ...(query.conversationId ? { conversationId: query.conversationId } : {}),
        ...(query.cursor ? { cursor: query.cursor } : {}),
      });
      ctx.body = { results: res.hits, nextCursor: res.nextCursor };
    },
  });
}
