/**
 * Names, streams, consumers and the control plane shared by the plugin runtime and the `voxa` CLI.
 *
 * - Each shared-mode plugin has one durable consumer `<plugin>-g<generation>` on the events stream. A rewind
 *   creates the next generation (starting at a time or sequence) and deletes the old one; a fresh name per
 *   generation means an ack still in flight for the old consumer can never land on the new one.
 * - A retry stream (work-queue retention, subjects `<ns>.retry.<plugin>.<type>`) takes events that
 *   `voxa dlq retry` puts back for ONE plugin; each plugin has a durable `<plugin>-retry` consumer on it.
 * - A JetStream KV bucket `<NS>_VOXA_PLUGINS` holds per-plugin state `{paused, generation}`; every runtime
 *   watches it, so the CLI steers running processes without talking to them.
 */
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type ConsumerInfo,
  type JetStreamClient,
  type JetStreamManager,
  type KV,
  type NatsConnection,
} from 'nats';
import { ensureStream, nanos, streamNames, type StreamNames } from '../../core/bus/nats.js';
import { EVENTS, filterSubjectOf, withNamespace, type EventType } from '../../core/events/catalog.js';

/** Header names the dead-letter and retry paths use. */
export const HDR = {
  originalSubject: 'Voxa-Original-Subject',
  streamSeq: 'Voxa-Stream-Seq',
  plugin: 'Voxa-Plugin',
  reason: 'Voxa-Reason',
  attempts: 'Voxa-Attempts',
  eventId: 'Voxa-Event-Id',
  eventType: 'Voxa-Event-Type',
  deadAt: 'Voxa-Dead-At',
  retryOf: 'Voxa-Retry-Of',
} as const;

export interface RuntimeNames extends StreamNames {
  /** Work-queue stream for per-plugin retries out of the dead-letter stream. */
  retry: string;
  /** KV bucket with per-plugin control state. */
  controlBucket: string;
}

export function runtimeNames(ns: string): RuntimeNames {
  const s = streamNames(ns);
  const prefix = s.events.slice(0, -'VOXA_EVENTS'.length);
  return { ...s, retry: `${prefix}VOXA_RETRY`, controlBucket: `${prefix}VOXA_PLUGINS` };
}

/** Durable consumer name of a plugin's generation on the events stream. */
export function consumerName(plugin: string, generation: number): string {
  return `${plugin}-g${generation}`;
}

export function retryConsumerName(plugin: string): string {
  return `${plugin}-retry`;
}

/** Inverse of consumerName; null for consumers that are not plugin consumers. */
export function parseConsumerName(name: string): { plugin: string; generation: number } | null {
  const m = /^([a-z0-9-]+)-g(\d+)$/.exec(name);
  return m ? { plugin: m[1]!, generation: Number(m[2]) } : null;
}

export function dlqSubject(ns: string, plugin: string, type = '>'): string {
  return withNamespace(ns, `dlq.${plugin}.${type}`);
}

export function retrySubject(ns: string, plugin: string, type = '>'): string {
  return withNamespace(ns, `retry.${plugin}.${type}`);
}

/** Declares the retry stream (idempotent, through core/bus/nats.ts ensureStream). */
export async function ensureRuntimeStreams(jsm: JetStreamManager, ns: string, replicas = 1): Promise<RuntimeNames> {
  const names = runtimeNames(ns);
  const cfg = {
    name: names.retry,
    description: 'Dead-lettered events put back for one plugin by `voxa dlq retry`; removed once that plugin acks.',
    subjects: [withNamespace(ns, 'retry.>')],
    storage: StorageType.File,
    // Work queue: a message disappears once acked, and per-plugin filters never overlap.
    retention: RetentionPolicy.Workqueue,
    discard: DiscardPolicy.Old,
    max_age: nanos(30 * 24 * 3600 * 1000),
    duplicate_window: nanos(2 * 60 * 1000),
    num_replicas: replicas,
  };
  await ensureStream(jsm, cfg, { update: false });
  return names;
}

/** The control KV bucket (created on first use, with `replicas` copies in a NATS cluster). */
export async function openControl(js: JetStreamClient, ns: string, replicas = 1): Promise<KV> {
  return js.views.kv(runtimeNames(ns).controlBucket, { history: 1, replicas });
}

/** What the control plane says about one plugin. */
export interface PluginState {
  paused: boolean;
  /** Consumer generation; bumped by each rewind. */
  generation: number;
  updatedAt?: string;
  /** The last rewind target, for `voxa plugins list`. */
  rewoundTo?: { since: string | number; at: string };
}

export const DEFAULT_STATE: PluginState = { paused: false, generation: 0 };

export function decodeState(value: Uint8Array | undefined): PluginState {
  if (!value || value.length === 0) return { ...DEFAULT_STATE };
  try {
    const v = JSON.parse(new TextDecoder().decode(value)) as Partial<PluginState>;
    return { ...DEFAULT_STATE, ...v, paused: Boolean(v.paused), generation: Number(v.generation) || 0 };
  } catch {
    return { ...DEFAULT_STATE };
  }
}

export async function readState(kv: KV, plugin: string): Promise<PluginState> {
  const e = await kv.get(plugin);
  if (!e || e.operation !== 'PUT') return { ...DEFAULT_STATE };
  return decodeState(e.value);
}

/** Read-modify-write with the KV revision as a compare-and-set, retried on conflicts. */
export async function updateState(kv: KV, plugin: string, change: (s: PluginState) => PluginState): Promise<PluginState> {
  for (let i = 0; ; i++) {
    const e = await kv.get(plugin);
    const live = e && e.operation === 'PUT';
    const next = { ...change(live ? decodeState(e.value) : { ...DEFAULT_STATE }), updatedAt: new Date().toISOString() };
    const bytes = new TextEncoder().encode(JSON.stringify(next));
    try {
      if (live) await kv.update(plugin, bytes, e.revision);
      else await kv.create(plugin, bytes);
      return next;
    } catch (err) {
      if (i >= 10 || !/wrong last sequence|key exists/i.test(String((err as Error).message))) throw err;
    }
  }
}

/**
 * The narrowest single subject filter covering all `subjects` (NATS 2.9 consumers take one filter):
 * identical token counts merge position-wise with `*`; otherwise the common prefix plus `>`.
 * Undefined means "the whole stream".
 */
export function narrowestFilter(subjects: string[]): string | undefined {
  const uniq = [...new Set(subjects)];
  if (uniq.length === 0) return undefined;
  if (uniq.length === 1) return uniq[0];
  const split = uniq.map((s) => s.split('.'));
  const len = split[0]!.length;
  if (split.every((t) => t.length === len && !t.includes('>'))) {
    return split[0]!.map((tok, i) => (split.every((t) => t[i] === tok) ? tok : '*')).join('.');
  }
  const prefix: string[] = [];
  for (let i = 0; ; i++) {
    const tok = split[0]![i];
    if (tok === undefined || tok === '>' || !split.every((t) => t[i] === tok && i < t.length - 1)) break;
    prefix.push(tok);
  }
  return prefix.length ? `${prefix.join('.')}.>` : undefined;
}

/**
 * The single filter subject for a set of event types on NATS 2.9, which only accepts a filter that lies
 * inside one of the stream's subjects (`<ns>.chat.*.*.message.*` is fine, `<ns>.*.*.*.*.*` is refused).
 * Types of one scope get the narrowest merged filter; mixed scopes read the whole stream (undefined).
 */
export function singleFilterFor(types: EventType[], ns: string): string | undefined {
  if (new Set(types.map((t) => EVENTS[t].scope)).size > 1) return undefined;
  return narrowestFilter(types.map((t) => filterSubjectOf(t, ns)));
}

/** True when the connected server is at least `major.minor` (2.10 brings multi-filter consumers). */
export function serverAtLeast(nc: NatsConnection, major: number, minor: number): boolean {
  const v = (nc.info?.version ?? '0.0.0').split('.').map((x) => parseInt(x, 10) || 0);
  return v[0]! > major || (v[0] === major && v[1]! >= minor);
}

export function isNotFound(err: unknown): boolean {
  const e = err as { api_error?: { err_code?: number; code?: number }; code?: string; message?: string };
  return e?.api_error?.code === 404 || e?.code === '404' || /not found/i.test(String(e?.message));
}

function isAlreadyExists(err: unknown): boolean {
  return /already (in use|exists)/i.test(String((err as Error)?.message));
}

/** Fields JetStream lets us change on an existing consumer. */
const MUTABLE: Array<keyof ConsumerConfig> = ['ack_wait', 'max_deliver', 'max_ack_pending', 'description'];

/**
 * Creates a durable consumer, or updates the mutable settings of an existing one, tolerating another
 * process doing the same at the same moment. The start position of an existing consumer is never touched
 * (a rewound consumer keeps its start point).
 */
export async function ensureDurable(jsm: JetStreamManager, stream: string, cfg: Partial<ConsumerConfig> & { durable_name: string }): Promise<ConsumerInfo> {
  for (let i = 0; ; i++) {
    let info: ConsumerInfo | undefined;
    try {
      info = await jsm.consumers.info(stream, cfg.durable_name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    if (!info) {
      try {
        return await jsm.consumers.add(stream, cfg);
      } catch (err) {
        if (i < 3 && isAlreadyExists(err)) continue; // lost a creation race: read what the winner made
        throw err;
      }
    }
    const patch: Partial<ConsumerConfig> = {};
    for (const k of MUTABLE) {
      if (cfg[k] !== undefined && info.config[k] !== cfg[k]) (patch as Record<string, unknown>)[k] = cfg[k];
    }
    if (Object.keys(patch).length === 0) return info;
    try {
      return await jsm.consumers.update(stream, cfg.durable_name, patch);
    } catch {
      return info; // an older server refusing an edit is not a reason to stop consuming
    }
  }
}

/** Deletes the plugin's consumers of generations below `generation` (left by rewinds or start-up races). */
export async function deleteOlderGenerations(jsm: JetStreamManager, stream: string, plugin: string, generation: number): Promise<void> {
  const lister = jsm.consumers.list(stream);
  for await (const ci of lister) {
    const p = parseConsumerName(ci.name);
    if (p && p.plugin === plugin && p.generation < generation) await jsm.consumers.delete(stream, ci.name).catch(() => undefined);
  }
}

/** Settings derived from a plugin's retry policy. */
export interface ResolvedPolicy {
  maxDeliveries: number;
  backoffMs: number[];
  ackWaitMs: number;
}

export function resolvePolicy(p: { maxDeliveries?: number; backoffMs?: number[]; ackWaitMs?: number } = {}): ResolvedPolicy {
  return {
    maxDeliveries: Math.max(1, p.maxDeliveries ?? 5),
    backoffMs: p.backoffMs && p.backoffMs.length ? p.backoffMs : [1000, 5000, 30_000, 120_000],
    ackWaitMs: Math.max(100, p.ackWaitMs ?? 30_000),
  };
}

/** Delay before redelivery after `attempt` (1-based); the last value repeats. */
export function backoffFor(policy: ResolvedPolicy, attempt: number): number {
  const b = policy.backoffMs;
  return b[Math.min(Math.max(attempt, 1), b.length) - 1]!;
}

/**
 * The durable consumer config for a plugin. `max_deliver` is one more than the policy allows: that last
 * delivery is reserved for handing the event to the dead-letter stream when the previous attempt died
 * (process killed, ack wait expired) or the dead-letter publish itself failed.
 */
export function durableConfig(args: {
  name: string;
  description: string;
  policy: ResolvedPolicy;
  concurrency: number;
  filter?: string | string[];
  startAt?: 'new' | 'all';
  /** One unacked event at a time for the whole consumer (PluginManifest.ordered). */
  ordered?: boolean;
}): Partial<ConsumerConfig> & { durable_name: string } {
  const cfg: Partial<ConsumerConfig> & { durable_name: string } = {
    durable_name: args.name,
    description: args.description,
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(args.policy.ackWaitMs),
    max_deliver: args.policy.maxDeliveries + 1,
    // Shared by every process of the plugin; generous so several workers each keep `concurrency` busy. An ordered
    // plugin gets 1: the server then serialises delivery across processes and puts redeliveries first.
    max_ack_pending: args.ordered ? 1 : Math.max(1000, args.concurrency * 16),
    deliver_policy: args.startAt === 'all' ? DeliverPolicy.All : DeliverPolicy.New,
  };
  if (Array.isArray(args.filter)) {
    if (args.filter.length === 1) cfg.filter_subject = args.filter[0];
    else if (args.filter.length > 1) cfg.filter_subjects = args.filter;
  } else if (args.filter) cfg.filter_subject = args.filter;
  return cfg;
}
