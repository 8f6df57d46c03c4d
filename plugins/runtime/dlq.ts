/**
 * The dead-letter stream and the per-plugin retry path.
 *
 * A dead letter is the original event payload on `<ns>.dlq.<plugin>.<type>`, with headers saying where it
 * came from (original subject, stream seq), which plugin gave up, why, after how many attempts, and the
 * original `traceparent` so the trace continues when it is retried.
 *
 * `voxa dlq retry` republishes a dead letter on `<ns>.retry.<plugin>.<type>` (captured by the work-queue
 * retry stream) and deletes it from the DLQ. Only that plugin's runtime consumes that subject, so a retry
 * never re-runs the other plugins that already handled the event.
 */
import { headers as natsHeaders, type JetStreamClient, type JetStreamManager, type MsgHdrs, type StoredMsg } from 'nats';
import { ZodError } from 'zod';
import { HDR, dlqSubject, retrySubject, runtimeNames } from './control.js';

/** The NATS handles the dead-letter helpers need (a Bus from core/bus/nats.ts fits). */
export interface NatsHandles {
  js: JetStreamClient;
  jsm: JetStreamManager;
  namespace: string;
}

export interface DeadLetterInput {
  plugin: string;
  subject: string;
  streamSeq: number;
  data: Uint8Array;
  eventId?: string;
  eventType?: string;
  reason: string;
  attempts: number;
  /** The received message's headers: traceparent/tracestate are carried over. */
  original?: MsgHdrs;
  /** Set when the failing delivery was itself a `dlq retry`. */
  retryOf?: string;
}

const TRACE_HEADERS = ['traceparent', 'tracestate'];

/** Publishes a dead letter and waits for JetStream to store it. */
export async function publishDeadLetter(h: NatsHandles, d: DeadLetterInput): Promise<number> {
  const hdrs = natsHeaders();
  for (const k of TRACE_HEADERS) {
    const v = d.original?.get(k);
    if (v) hdrs.set(k, v);
  }
  hdrs.set(HDR.originalSubject, d.subject);
  hdrs.set(HDR.streamSeq, String(d.streamSeq));
  hdrs.set(HDR.plugin, d.plugin);
  // Header values are single lines; keep reasons short and readable.
  hdrs.set(HDR.reason, d.reason.replace(/[\r\n]+/g, ' ').slice(0, 1000));
  hdrs.set(HDR.attempts, String(d.attempts));
  hdrs.set(HDR.deadAt, new Date().toISOString());
  if (d.eventId) hdrs.set(HDR.eventId, d.eventId);
  if (d.eventType) hdrs.set(HDR.eventType, d.eventType);
  if (d.retryOf) hdrs.set(HDR.retryOf, d.retryOf);
  // The same failure dead-lettered twice (the term was lost on a reconnect) is stored once.
  const msgID = `${d.plugin}:${d.eventId ?? `seq${d.streamSeq}`}:${d.retryOf ?? 'live'}`;
  const ack = await h.js.publish(dlqSubject(h.namespace, d.plugin, d.eventType ?? 'malformed'), d.data, { headers: hdrs, msgID });
  return ack.seq;
}

/** Issues named in a malformed-event reason; the rest are counted (the header holds one short line). */
const MAX_REASON_ISSUES = 8;

/**
 * The dead-letter reason for a payload that is not a valid event: one readable line rather than zod's JSON
 * dump, so `voxa dlq list` can show it in a column. Without `eventType` the envelope was wrong
 * (`malformed event: id: missing (expected string); v: expected 1`); with it the envelope was fine
 * and that type's `data` was not, its paths relative to `data`
 * (`malformed message.created data: message.seq: expected number, received string`).
 */
export function malformedReason(err: unknown, eventType?: string): string {
  const what = eventType ? `malformed ${eventType} data` : 'malformed event';
  if (!(err instanceof ZodError)) return `${what}: ${err instanceof SyntaxError ? 'not JSON' : 'unreadable'} (${err instanceof Error ? err.message : String(err)})`;
  const parts = err.issues.slice(0, MAX_REASON_ISSUES).map((i) => {
    // zod words an absent field as a wrong type ("expected string, received undefined"); say it is missing.
    const message =
      i.code === 'invalid_type' && / received undefined$/.test(i.message) ? (i.expected === 'nonoptional' ? 'missing' : `missing (expected ${i.expected})`) : i.message.replace(/^Invalid input: /, '');
    const path = i.path.map(String).join('.');
    // `data` itself of the wrong kind reads best without a path ("… data: expected object, received null").
    if (!path) return eventType ? message : `(root): ${message}`;
    return `${path}: ${message}`;
  });
  const more = err.issues.length - parts.length;
  return `${what}: ${parts.join('; ')}${more > 0 ? `; and ${more} more` : ''}`;
}

/** One dead letter as `voxa dlq list` shows it. */
export interface DeadLetter {
  /** Sequence in the dead-letter stream (what `voxa dlq retry` takes). */
  seq: number;
  plugin: string;
  eventId: string | null;
  type: string | null;
  reason: string;
  attempts: number;
  /** When it was dead-lettered. */
  time: string;
  originalSubject: string | null;
  streamSeq: number | null;
}

function toDeadLetter(seq: number, subject: string, h: MsgHdrs | undefined, ns: string, storedAt?: string): DeadLetter {
  const get = (k: string): string | null => {
    const v = h?.get(k);
    return v ? v : null;
  };
  const rest = subject.slice((ns ? ns.length + 1 : 0) + 'dlq.'.length);
  const plugin = get(HDR.plugin) ?? rest.split('.')[0] ?? '';
  return {
    seq,
    plugin,
    eventId: get(HDR.eventId),
    type: get(HDR.eventType),
    reason: get(HDR.reason) ?? '',
    attempts: Number(get(HDR.attempts) ?? 0),
    time: get(HDR.deadAt) ?? storedAt ?? '',
    originalSubject: get(HDR.originalSubject),
    streamSeq: get(HDR.streamSeq) === null ? null : Number(get(HDR.streamSeq)),
  };
}

/**
 * Stored dead letters on `filter`, oldest first, from DLQ sequence `from` on and, with `through`, ending at that
 * sequence. One "next message on this subject from seq" read each: no consumer to create or clean up.
 */
async function* walkDeadLetters(h: NatsHandles, filter: string, from: number, through?: number): AsyncGenerator<StoredMsg> {
  const names = runtimeNames(h.namespace);
  let cursor = from;
  for (;;) {
    let m: StoredMsg;
    try {
      // next_by_subj is part of the server's MSG.GET API (2.9+) but missing from nats.js's typing of it.
      const query = { seq: cursor, next_by_subj: filter } as unknown as { seq: number };
      m = await h.jsm.streams.getMessage(names.deadLetter, query);
    } catch (err) {
      if (/no message found|not found/i.test(String((err as Error).message))) return;
      throw err;
    }
    if (through !== undefined && m.seq > through) return;
    yield m;
    cursor = m.seq + 1;
  }
}

/** Dead letters, oldest first, optionally of one plugin, starting after DLQ sequence `after`. */
export async function listDeadLetters(h: NatsHandles, opts: { plugin?: string; limit?: number; after?: number } = {}): Promise<DeadLetter[]> {
  const limit = Math.max(1, opts.limit ?? 50);
  const out: DeadLetter[] = [];
  for await (const m of walkDeadLetters(h, dlqSubject(h.namespace, opts.plugin ?? '*', '>'), (opts.after ?? 0) + 1)) {
    out.push(toDeadLetter(m.seq, m.subject, m.header, h.namespace, m.time.toISOString()));
    if (out.length >= limit) break;
  }
  return out;
}

/** Number of dead letters per plugin. */
export async function countDeadLetters(h: NatsHandles): Promise<Record<string, number>> {
  const names = runtimeNames(h.namespace);
  const prefix = h.namespace ? `${h.namespace}.dlq.` : 'dlq.';
  const info = await h.jsm.streams.info(names.deadLetter, { subjects_filter: dlqSubject(h.namespace, '*', '>') });
  const counts: Record<string, number> = {};
  for (const [subject, n] of Object.entries(info.state.subjects ?? {})) {
    const plugin = subject.slice(prefix.length).split('.')[0] ?? '';
    counts[plugin] = (counts[plugin] ?? 0) + Number(n);
  }
  return counts;
}

export class DeadLetterNotFound extends Error {
  constructor(seq: number) {
    super(`no dead letter with sequence ${seq}`);
    this.name = 'DeadLetterNotFound';
  }
}

/** Republishes a stored dead letter for its plugin only, then removes it from the DLQ. */
async function putBack(h: NatsHandles, stored: StoredMsg): Promise<DeadLetter> {
  const names = runtimeNames(h.namespace);
  const dl = toDeadLetter(stored.seq, stored.subject, stored.header, h.namespace, stored.time.toISOString());
  const hdrs = natsHeaders();
  for (const k of [...TRACE_HEADERS, HDR.originalSubject, HDR.streamSeq, HDR.eventId, HDR.eventType]) {
    const v = stored.header?.get(k);
    if (v) hdrs.set(k, v);
  }
  hdrs.set(HDR.retryOf, String(stored.seq));
  // Msg id keyed by the DLQ seq: running the same retry twice within the dedupe window enqueues it once.
  await h.js.publish(retrySubject(h.namespace, dl.plugin, dl.type ?? 'malformed'), stored.data, {
    headers: hdrs,
    msgID: `retry:${names.deadLetter}:${stored.seq}`,
  });
  await h.jsm.streams.deleteMessage(names.deadLetter, stored.seq, false);
  return dl;
}

/**
 * Puts one dead letter back for its plugin only, then removes it from the DLQ. `plugin`, when given, must
 * match (a guard against retrying the wrong entry).
 */
export async function retryDeadLetter(h: NatsHandles, seq: number, opts: { plugin?: string } = {}): Promise<DeadLetter> {
  let stored;
  try {
    stored = await h.jsm.streams.getMessage(runtimeNames(h.namespace).deadLetter, { seq });
  } catch {
    throw new DeadLetterNotFound(seq);
  }
  if (opts.plugin && toDeadLetter(seq, stored.subject, stored.header, h.namespace).plugin !== opts.plugin) throw new DeadLetterNotFound(seq);
  return putBack(h, stored);
}

/**
 * Puts back every dead letter (of one plugin, with `plugin`) that is in the DLQ when the call starts, each
 * exactly once. An event that fails again while this runs is dead-lettered again under a later sequence; it is
 * left there rather than retried in a loop (its side effects repeated) until the plugin stops failing.
 */
export async function retryAllDeadLetters(h: NatsHandles, opts: { plugin?: string } = {}): Promise<DeadLetter[]> {
  const through = (await h.jsm.streams.info(runtimeNames(h.namespace).deadLetter)).state.last_seq;
  const done: DeadLetter[] = [];
  for await (const stored of walkDeadLetters(h, dlqSubject(h.namespace, opts.plugin ?? '*', '>'), 1, through)) done.push(await putBack(h, stored));
  return done;
}
