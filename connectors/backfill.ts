/**
 * Backfill / rewind for ONE connection: replays the workspace's events from the JetStream events stream (from a
 * time or a stream sequence) into that connection alone — not through the plugin's consumer, so other
 * connections and other plugins see nothing. Effects are idempotent per connector: webhook deliveries are
 * keyed by (subscription, event id); storage transcripts are re-rendered from the store and written only when
 * their content hash changed; attachments are uploaded once per (connection, file). A backfill over already-synced
 * history therefore writes nothing twice.
 */
import { AckPolicy, DeliverPolicy, type JetStreamClient, type JetStreamManager } from 'nats';
import { EnvelopeSchema, checkEventData, withNamespace, type AnyEvent } from '../core/events/catalog.js';
import { nanos, streamNames } from '../core/bus/nats.js';
import { malformedReason } from '../plugins/runtime/dlq.js';
import type { ConnectionRecord } from './types.js';

export interface BackfillSince {
  /** ISO time: events published at or after it. */
  time?: string;
  /** Stream sequence: events from it on. */
  seq?: number;
}

/** Why one event (or one piece of deferred work) failed. */
export interface BackfillFailure {
  eventId?: string;
  conversationId?: string;
  reason: string;
}

/** What one connector does with a replayed event. */
export interface BackfillTarget {
  /**
   * 'written' when it produced an effect, 'skipped' when the effect already existed, 'ignored' when not
   * relevant, 'deferred' when the event feeds work done once at the end (finish). Throwing counts as failed,
   * with the error's message as the reason.
   */
  accept(event: AnyEvent): Promise<'written' | 'skipped' | 'ignored' | 'deferred'>;
  /** Work deferred to the end (e.g. one transcript render per conversation), with its own counts and failures. */
  finish?(): Promise<{ written: number; skipped: number; failures: BackfillFailure[] }>;
}

/** At most this many failure reasons are kept in a summary (`failed` still counts them all). */
const MAX_FAILURES = 50;

export interface BackfillSummary {
  connectionId: string;
  connector: string;
  events: number;
  written: number;
  skipped: number;
  ignored: number;
  /** Events whose effect is deferred work (a transcript render per conversation), counted there. */
  deferred: number;
  failed: number;
  /** Why things failed, the first MAX_FAILURES of them. */
  failures: BackfillFailure[];
  fromSeq: number | null;
  toSeq: number | null;
}

export type Progress = (done: number, total: number) => void;

/** Parses `--since`: a plain integer is a stream sequence, anything else a date or timestamp. */
export function parseSinceArg(value: string): BackfillSince {
  if (/^\d+$/.test(value)) return { seq: Number(value) };
  const t = Date.parse(value);
  if (Number.isNaN(t) || !/^\d{4}-\d{2}-\d{2}/.test(value)) throw new Error(`--since must be a date (2026-10-01), a timestamp or a stream sequence, not "${value}"`);
  return { time: new Date(t).toISOString() };
}

export async function runBackfill(
  nats: { js: JetStreamClient; jsm: JetStreamManager; namespace: string },
  conn: ConnectionRecord,
  target: BackfillTarget,
  since: BackfillSince,
  progress: Progress = () => undefined,
): Promise<BackfillSummary> {
  const stream = streamNames(nats.namespace).events;
  // The connection's workspace is the second subject token (chat.<ws>.…, user.<ws>.…, admin.<ws>.…). One
  // consumer filter cannot say that on NATS 2.9 (no multi-filter consumers, and `*.<ws>.>` is not a subset of
  // the stream's subjects), so the consumer reads the stream and other workspaces are skipped here.
  const prefix = withNamespace(nats.namespace, '');
  const inWorkspace = (subject: string): boolean => subject.slice(nats.namespace ? prefix.length : 0).split('.')[1] === conn.workspaceId;
  // An ephemeral, unacknowledged pull consumer that goes away by itself shortly after we stop reading. Its
  // creation answer says how many events match, which sizes the progress bar.
  const info = await nats.jsm.consumers.add(stream, {
    ack_policy: AckPolicy.None,
    inactive_threshold: nanos(60_000),
    ...(since.seq !== undefined
      ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: Math.max(1, since.seq) }
      : since.time
        ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: since.time }
        : { deliver_policy: DeliverPolicy.All }),
  });
  const consumer = await nats.js.consumers.get(stream, info.name);
  const total = info.num_pending;
  const summary: BackfillSummary = {
    connectionId: conn.id,
    connector: conn.connector,
    events: 0,
    written: 0,
    skipped: 0,
    ignored: 0,
    deferred: 0,
    failed: 0,
    failures: [],
    fromSeq: null,
    toSeq: null,
  };
  const fail = (f: BackfillFailure): void => {
    summary.failed++;
    if (summary.failures.length < MAX_FAILURES) summary.failures.push(f);
  };
  progress(0, total);
  let read = 0;
  while (read < total) {
    const batch = await consumer.fetch({ max_messages: Math.min(256, total - read), expires: 5000 });
    let got = 0;
    for await (const m of batch) {
      got++;
      read++;
      progress(read, total);
      if (!inWorkspace(m.subject)) continue;
      summary.events++;
      summary.fromSeq ??= m.seq;
      summary.toSeq = m.seq;
      // The plugin runtime's rule: envelope and data must match the catalog, and a bad one is a failure, not a crash.
      let event: AnyEvent;
      try {
        event = EnvelopeSchema.parse(JSON.parse(m.string())) as AnyEvent;
      } catch (err) {
        fail({ reason: `stream seq ${m.seq}: ${malformedReason(err)}` });
        continue;
      }
      const invalid = checkEventData(event);
      if (invalid) {
        fail({ eventId: event.id, ...(event.conversationId ? { conversationId: event.conversationId } : {}), reason: malformedReason(invalid, event.type) });
        continue;
      }
      try {
        summary[await target.accept(event)]++;
      } catch (err) {
        fail({ eventId: event.id, ...(event.conversationId ? { conversationId: event.conversationId } : {}), reason: (err as Error).message });
      }
    }
    if (got === 0) break; // the stream lost messages (age limit) while we read: stop instead of waiting forever
  }
  if (target.finish) {
    const f = await target.finish();
    summary.written += f.written;
    summary.skipped += f.skipped;
    for (const failure of f.failures) fail(failure);
  }
  progress(read, total);
  await nats.jsm.consumers.delete(stream, info.name).catch(() => undefined);
  return summary;
}
