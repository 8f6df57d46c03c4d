/**
 * Pieces of plugin route schemas, built from core's (core/routes/schemas.ts) so that a plugin's ids and query
 * numbers follow the same rules as core's: ids are `[A-Za-z0-9_-]{1,64}`, and a number in a query string is
 * canonical decimal text (no sign, exponent, hex, space or leading zero) in range, so `1e2`, `0x5`, `%201` or
 * a repeated parameter are a 400 instead of being read as some other number.
 */
import { z } from 'zod';
import { ConversationParams, HistoryQuery, Id } from '../../core/routes/schemas.js';

export { ConversationParams, Id };

/** Core's positive-integer query text: `before` of the history query is exactly that piece, made optional. */
const PositiveIntText = HistoryQuery.shape.before.unwrap();

/** `limit` from 1 to `max`, `fallback` when absent (core's Limit has its own bounds, 1..200 and 50). */
export function limitParam(max: number, fallback: number) {
  return PositiveIntText.pipe(z.number().int().min(1).max(max)).optional().default(fallback);
}

/** A sequence cursor (`after=<seq>`): 0, meaning from the start, or a positive integer. */
export const SeqCursor = z.union([z.literal('0').transform(() => 0), PositiveIntText], { error: 'must be a non-negative integer' });
