/**
 * Message search, the parts both store adapters share: turning what a user typed into terms, those terms
 * into a query each engine reads as plain text only (no operator of FTS5 or of MongoDB's `$text` syntax can
 * get through), highlighted snippets, and opaque cursors.
 */
import { fieldError } from '../http/validate.js';

/** At most this many terms are searched; the rest of a long query is ignored. */
export const MAX_TERMS = 12;
/** Longest single term, in characters. */
export const MAX_TERM_LENGTH = 64;

/** Marks the adapters put around matched words inside a snippet before it is split into text + ranges. */
export const MARK_OPEN = '\u0002';
export const MARK_CLOSE = '\u0003';

/**
 * The words of a query: runs of letters, digits and marks (what FTS5's unicode61 tokenizer and MongoDB's text
 * index treat as word characters). Everything else — quotes, stars, minus signs, parentheses, `NEAR`,
 * colons — is a separator, so it cannot act as syntax. Lower-cased, de-duplicated, capped.
 */
export function searchTerms(q: string): string[] {
  const words = q.normalize('NFKC').toLowerCase().match(/[\p{L}\p{N}\p{M}]+/gu) ?? [];
  const out: string[] = [];
  for (const w of words) {
    const term = w.slice(0, MAX_TERM_LENGTH);
    if (!out.includes(term)) out.push(term);
    if (out.length === MAX_TERMS) break;
  }
  return out;
}

/**
 * An FTS5 MATCH expression in which every term is a quoted string (so `OR`, `NOT`, `NEAR`, `col:`, `*` and
 * `^` are just text) and all terms must match. The last term also matches as a prefix, for
 * search-as-you-type. Terms hold only word characters, so they cannot contain a quote, but quotes are
 * doubled anyway as FTS5 requires.
 */
export function ftsQuery(terms: string[]): string {
  return terms.map((t, i) => `"${t.replace(/"/g, '""')}"${i === terms.length - 1 ? '*' : ''}`).join(' ');
}

/**
 * A MongoDB `$text.$search` string: each term as a quoted phrase, which MongoDB requires all of (a bare word
 * list would mean "any"), and which keeps `-` (negation) from ever applying.
 */
export function mongoTextSearch(terms: string[]): string {
  return terms.map((t) => `"${t.replace(/["\\]/g, '')}"`).join(' ');
}

/** A snippet as the API returns it: plain text plus the [start, end) ranges of matched words in it. */
export interface Snippet {
  snippet: string;
  highlights: Array<[number, number]>;
}

/** Splits a snippet that carries MARK_OPEN/MARK_CLOSE into plain text and highlight ranges. */
export function parseMarked(marked: string): Snippet {
  let snippet = '';
  const highlights: Array<[number, number]> = [];
  let start = -1;
  for (const ch of marked) {
    if (ch === MARK_OPEN) start = snippet.length;
    else if (ch === MARK_CLOSE) {
      if (start >= 0 && snippet.length > start) highlights.push([start, snippet.length]);
      start = -1;
    } else snippet += ch;
  }
  return { snippet, highlights };
}

/**
 * A snippet computed in JavaScript (for the MongoDB adapter, whose text index gives no highlights): a window
 * of about `width` characters around the first matched word, with every word that starts with a term
 * highlighted.
 */
export function makeSnippet(text: string, terms: string[], width = 120): Snippet {
  // Strip our own marker characters from stored text so a message cannot fake highlights.
  const clean = text.split(MARK_OPEN).join('').split(MARK_CLOSE).join('');
  const words = [...clean.matchAll(/[\p{L}\p{N}\p{M}]+/gu)];
  const hits = words.filter((w) => terms.some((t) => w[0].toLowerCase().startsWith(t)));
  const first = hits[0]?.index ?? 0;
  let from = Math.max(0, first - Math.floor(width / 3));
  const to = Math.min(clean.length, from + width);
  from = Math.max(0, Math.min(from, to - width));
  const prefix = from > 0 ? '…' : '';
  const suffix = to < clean.length ? '…' : '';
  const highlights: Array<[number, number]> = [];
  for (const w of hits) {
    const s = w.index!;
    const e = s + w[0].length;
    if (s >= from && e <= to) highlights.push([s - from + prefix.length, e - from + prefix.length]);
  }
  return { snippet: prefix + clean.slice(from, to) + suffix, highlights };
}

/** Search results page through an offset into the ranked list, carried in an opaque cursor. */
export function encodeCursor(offset: number): string {
  return Buffer.from(JSON.stringify({ o: offset })).toString('base64url');
}

export function decodeCursor(cursor: string | undefined): number {
  if (cursor === undefined || cursor === '') return 0;
  try {
    const v = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as { o?: unknown };
    if (typeof v.o === 'number' && Number.isInteger(v.o) && v.o >= 0 && v.o <= 10_000) return v.o;
  } catch {
    // fall through
  }
  throw fieldError('query.cursor', 'not a cursor this API gave out');
}
