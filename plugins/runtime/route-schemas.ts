/**
 * Pieces of plugin route schemas, built from core's (core/routes/schemas.ts) so that a plugin's ids and query
 * numbers follow the same rules as core's: ids are `[A-Za-z0-9_-]{1,64}`, and a number in a query string is
 * canonical decimal text (no sign, exponent, hex, space or leading zero) in range, so `1e2`, `0x5`, `%201` or
 * a repeated parameter are a 400 instead of being read as some other number.
 */
import { z } from 'zod';
import { ConversationParams, Id, QuerySeq, queryLimit } from '../../core/routes/schemas.js';

/** `limitParam(max, fallback)`: `limit` from 1 to `max`, `fallback` when absent (core's Limit is 1..200 and 50). */
export { ConversationParams, Id, queryLimit as limitParam };

/** A sequence cursor (`after=<seq>`): 0, meaning from the start, or a positive integer. */
export const SeqCursor = z.union([z.literal('0').transform(() => 0), QuerySeq], { error: 'must be a non-negative integer' });
