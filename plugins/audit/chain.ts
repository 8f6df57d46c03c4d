/**
 * The tamper-evident audit chain. Entries live in the document store, one per sequence number, and each
 * carries the SHA-256 of its own canonical form, which includes the previous entry's hash. Changing,
 * removing or reordering any entry therefore breaks the chain at that point, and `verifyChain` names it.
 *
 * Appending needs "read the last entry, insert the next" to be serial, and the document store has no
 * transactions. Instead, the entry id is derived from its seq (`aud_000000000042`) and inserted with
 * `docs.insert`, which refuses an existing id: two writers racing for the same seq cannot both win, and
 * the loser re-reads the head and tries the next seq. The plugin also runs with concurrency 1, so races
 * only happen between processes.
 */
import { createHash } from 'node:crypto';
import type { Actor } from '../../core/events/catalog.js';
import type { DocumentStore } from '../../core/store/port.js';

export const AUDIT_COLLECTION = 'audit_log';
export const AUDIT_META_COLLECTION = 'audit_meta';
/** The prevHash of entry 1. */
export const GENESIS_HASH = '0'.repeat(64);

/** One audit entry as stored and as the API returns it. */
export interface AuditEntry {
  id: string;
  /** 1, 2, 3… without gaps. */
  seq: number;
  /** When the entry was appended (never earlier than the entry before it). */
  time: string;
  /** The event that caused the entry; an event appends at most one entry. */
  eventId: string;
  /** When the event itself happened. */
  eventTime: string;
  type: string;
  actor: Actor;
  workspaceId: string;
  /** The user, conversation, connection… the entry is about, when there is one. */
  subject?: string;
  /** One human-readable line. */
  summary: string;
  /** Small structured facts (ip, method, from/to role…); never secrets or message text. */
  details?: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

/** What the caller supplies; the chain adds id, seq, time, prevHash and hash. */
export type AuditInput = Omit<AuditEntry, 'id' | 'seq' | 'time' | 'prevHash' | 'hash'>;

/** Stored id of the entry with this seq; zero-padded so id order is seq order. */
export function auditId(seq: number): string {
  return `aud_${String(seq).padStart(12, '0')}`;
}

/**
 * Canonical JSON: object keys sorted at every level, `undefined` members dropped, no whitespace. The same
 * entry always serialises to the same bytes whichever store and whatever key order it came back in.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && !Number.isFinite(value)) throw new Error('non-finite number in audit entry');
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}

/** The hash an entry should carry: SHA-256 (hex) over every field except `hash` itself and the storage id. */
export function hashEntry(entry: Omit<AuditEntry, 'hash' | 'id'> & { hash?: string; id?: string }): string {
  const { hash: _hash, id: _id, ...rest } = entry;
  return createHash('sha256').update(canonicalJson(rest)).digest('hex');
}

interface Head {
  seq: number;
  hash: string;
  time: string;
}

/**
 * Indexes for the chain's equality look-ups: by event id (every append checks it first, so without the
 * index each append reads the whole log on SQLite) and by workspace (the admin listing). Idempotent.
 */
export async function ensureAuditIndexes(docs: DocumentStore): Promise<void> {
  await docs.ensureIndex(AUDIT_COLLECTION, ['eventId']);
  await docs.ensureIndex(AUDIT_COLLECTION, ['workspaceId']);
}

async function lastEntry(docs: DocumentStore): Promise<AuditEntry | null> {
  const [last] = await docs.find<AuditEntry>(AUDIT_COLLECTION, {}, { desc: true, limit: 1 });
  return last ?? null;
}

/** The entry an event produced, if any. */
export async function entryForEvent(docs: DocumentStore, eventId: string): Promise<AuditEntry | null> {
  const [hit] = await docs.find<AuditEntry>(AUDIT_COLLECTION, { eventId }, { limit: 1 });
  return hit ?? null;
}

/**
 * Appends an entry for `input.eventId` unless one exists already (a redelivered event appends nothing).
 * Returns the entry and whether this call appended it.
 */
export async function appendEntry(
  docs: DocumentStore,
  input: AuditInput,
  now: () => Date = () => new Date(),
): Promise<{ entry: AuditEntry; appended: boolean }> {
  for (let attempt = 0; attempt < 100; attempt++) {
    // Checked inside the loop: when two processes handle the same event at once, the loser of the seq
    // race finds the winner's entry here instead of appending a second one.
    const existing = await entryForEvent(docs, input.eventId);
    if (existing) return { entry: existing, appended: false };
    const last = await lastEntry(docs);
    const seq = (last?.seq ?? 0) + 1;
    const nowIso = now().toISOString();
    // Times never go backwards along the chain, so `since` can binary-search by seq.
    const time = last && last.time > nowIso ? last.time : nowIso;
    const body = { ...input, seq, time, prevHash: last?.hash ?? GENESIS_HASH };
    const entry: AuditEntry = { id: auditId(seq), ...body, hash: hashEntry(body) };
    if (await docs.insert(AUDIT_COLLECTION, entry.id, entry)) {
      await advanceHead(docs, { seq, hash: entry.hash, time });
      return { entry, appended: true };
    }
  }
  throw new Error('audit append kept losing the race for the next seq');
}

/**
 * The head record lets `verify` notice entries cut off the end, which the chain alone cannot show. It is
 * written after the entry, so it may lag one entry behind after a crash; verify tolerates a lagging head
 * but not one ahead of the chain.
 */
async function advanceHead(docs: DocumentStore, head: Head): Promise<void> {
  const current = await docs.get<Head>(AUDIT_META_COLLECTION, 'head');
  if (!current || current.seq < head.seq) await docs.put(AUDIT_META_COLLECTION, 'head', head);
}

export type BreakReason = 'edited' | 'missing' | 'out-of-order' | 'broken-link' | 'truncated';

export interface VerifyResult {
  ok: boolean;
  /** Entries checked. */
  checked: number;
  /** The last good entry: anchor `hash` somewhere else to make truncation of the tail detectable too. */
  head: { seq: number; hash: string } | null;
  firstBroken?: { seq: number; id?: string; eventId?: string; reason: BreakReason; message: string };
}

/** Walks the whole chain in seq order and stops at the first entry that does not check out. */
export async function verifyChain(docs: DocumentStore, pageSize = 500): Promise<VerifyResult> {
  let expectedSeq = 1;
  let prevHash = GENESIS_HASH;
  let checked = 0;
  let head: VerifyResult['head'] = null;
  let afterId: string | undefined;
  const broken = (b: NonNullable<VerifyResult['firstBroken']>): VerifyResult => ({ ok: false, checked, head, firstBroken: b });
  for (;;) {
    const page = await docs.find<AuditEntry>(AUDIT_COLLECTION, {}, { limit: pageSize, ...(afterId ? { afterId } : {}) });
    for (const e of page) {
      const where = { id: e.id, eventId: e.eventId };
      if (e.hash !== hashEntry(e)) {
        return broken({ seq: expectedSeq, ...where, reason: 'edited', message: `entry ${e.id} does not match its own hash: it was changed after it was written` });
      }
      if (e.seq !== expectedSeq) {
        // Storage order is seq order, so the expected entry is either elsewhere (reordered) or gone.
        const [elsewhere] = await docs.find<AuditEntry>(AUDIT_COLLECTION, { seq: expectedSeq }, { limit: 1 });
        if (elsewhere || e.seq < expectedSeq) {
          return broken({ seq: expectedSeq, ...where, reason: 'out-of-order', message: `seq ${e.seq} stands where seq ${expectedSeq} belongs: entries were reordered` });
        }
        return broken({ seq: expectedSeq, reason: 'missing', message: `entry seq ${expectedSeq} is missing (next present is ${e.seq}): entries were removed` });
      }
      if (e.prevHash !== prevHash) {
        return broken({ seq: e.seq, ...where, reason: 'broken-link', message: `entry ${e.id} does not follow the entry before it: an earlier entry was replaced, removed or reordered` });
      }
      prevHash = e.hash;
      head = { seq: e.seq, hash: e.hash };
      checked++;
      expectedSeq++;
    }
    if (page.length < pageSize) break;
    afterId = page[page.length - 1]!.id;
  }
  const recorded = await docs.get<Head>(AUDIT_META_COLLECTION, 'head');
  if (recorded && recorded.seq >= expectedSeq) {
    return broken({ seq: expectedSeq, reason: 'truncated', message: `the log ends at seq ${expectedSeq - 1} but seq ${recorded.seq} was written: entries were removed from the end` });
  }
  return { ok: true, checked, head };
}

export interface ListOptions {
  /** Only entries appended at or after this time. */
  since?: string;
  /** Only entries with seq greater than this (paging cursor). */
  afterSeq?: number;
  workspaceId?: string;
  limit: number;
}

/** The first seq whose time is at or after `since` (binary search; times are non-decreasing in seq). */
async function firstSeqSince(docs: DocumentStore, since: string): Promise<number> {
  const last = await lastEntry(docs);
  if (!last) return 1;
  let lo = 1;
  let hi = last.seq + 1;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const e = await docs.get<AuditEntry>(AUDIT_COLLECTION, auditId(mid));
    // A missing entry (tampering) is treated as older, so listing never skips what is there.
    if (e && e.time >= since) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** Entries in seq order, filtered by time, workspace and cursor. */
export async function listEntries(docs: DocumentStore, opts: ListOptions): Promise<{ entries: AuditEntry[]; nextAfterSeq: number | null }> {
  let from = (opts.afterSeq ?? 0) + 1;
  if (opts.since) from = Math.max(from, await firstSeqSince(docs, opts.since));
  const filter: Record<string, string> = opts.workspaceId ? { workspaceId: opts.workspaceId } : {};
  const page = await docs.find<AuditEntry>(AUDIT_COLLECTION, filter, { limit: opts.limit + 1, afterId: auditId(from - 1) });
  const entries = page.slice(0, opts.limit).filter((e) => !opts.since || e.time >= opts.since);
  return { entries, nextAfterSeq: page.length > opts.limit ? page[opts.limit - 1]!.seq : null };
}
