/**
 * Outgoing webhook deliveries: fan an event out to the workspace's webhook subscriptions (connections of the
 * `webhook` connector), keep a delivery log, deliver in order per subscription with retries for over a day,
 * and disable a subscription that keeps failing or answers 410.
 *
 * Ordering: every subscription has at most one BullMQ "drain" job (jobId `drain-<subscription>`). It sends
 * the subscription's pending deliveries oldest first, one at a time; when the head fails, the job itself is
 * retried after the schedule's delay, so nothing behind the head overtakes it. Enqueuing commits the delivery
 * row first and then "kicks" the drain job, without waiting for Redis (kickSoon); no kick is needed while a
 * drain job of this process is still running, since it looks for the head again. A kick that lands while the
 * job is finishing is caught by the worker's completed hook, and a lost one by a periodic sweep, so no delivery
 * is stranded. BullMQ's own stalled-job check re-runs a drain whose process died.
 *
 * Idempotency: a delivery is keyed by (subscription, event id) in `webhook_delivery_keys`, written in one atomic
 * unit with the row (docs.writeAll), so a redelivered event, a plugin rewind or a backfill never sends the same
 * event to the same endpoint twice — and the `webhook-id` header is the event id, stable across retries, so
 * receivers can dedupe too.
 *
 * Retention: a delivery that has settled (succeeded or failed) records `settledAt`, and in the same write its
 * key records `at` with the same time; prune() deletes both once older than webhookDeliveryRetentionDays,
 * rows first, so a key always outlives its row. A pending delivery has neither, so it and its key are never
 * pruned, however long its subscription stays disabled. Removing a subscription (remove()) deletes its rows
 * and keys at once.
 *
 * Throughput: the plugin's consumer is ordered, so an event's handling time bounds the rate. Per event that is
 * one indexed read (the workspace's subscriptions), and per subscription one indexed read (its latest delivery
 * id) and one store commit (the key and the row together; every subscription's in the same group commit).
 * Redis is off that path. `npm run bench:webhooks` measures it.
 */
import { SpanKind, trace } from '@opentelemetry/api';
import type { Job } from 'bullmq';
import type { Actor, AnyEvent, EventEnvelope } from '../../core/events/catalog.js';
import { pruneRecords, type PruneRule } from '../../core/auth/prune.js';
import type { Hub } from '../../core/hub.js';
import { newId } from '../../core/ids.js';
import type { DocWrite } from '../../core/store/port.js';
import { contextFromRecord, failSpan } from '../../core/telemetry/nats.js';
import { currentTraceHeaders } from '../../core/telemetry/propagation.js';
import { withTimeout } from '../../core/timeout.js';
import { ConnectionService, CONNECTIONS } from '../../connectors/connections.js';
import type { BackfillTarget } from '../../connectors/backfill.js';
import type { Resolver } from '../../connectors/net.js';
import { ConnectorQueues } from '../../connectors/queues.js';
import type { ConnectionRecord } from '../../connectors/types.js';
import { deliverOnce, type AttemptResult, type DeliverOptions, type WebhookConfig } from '../../connectors/webhook/index.js';
import { PermanentError, RetryableError } from '../runtime/types.js';

export const DELIVERIES = 'webhook_deliveries';
export const DELIVERY_KEYS = 'webhook_delivery_keys';
const CONNECTOR = 'webhook';
const TEST_EVENT = 'webhook.test';
/** Rows per deleteBefore call of a prune, and per step of a removal's clean-up. */
const PRUNE_BATCH = 500;
const tracer = trace.getTracer('voxa-webhooks');

/** The plugin's own bookkeeping (one document per one-time migration). */
const WEBHOOK_META = 'webhook_meta';
const SETTLED_BACKFILL = 'settled-at-backfill';
const DAY_MS = 24 * 3600_000;

/**
 * What the delivery log's retention deletes: settled deliveries, then idempotency keys, older than `days`
 * (0: nothing). Rows go first so that a key never goes before its row; pending rows and their keys carry no
 * time, so they are never matched. Deletes are idempotent, so processes pruning at once only share the work.
 */
export function deliveryPruneRules(days: number): PruneRule[] {
  if (!days) return [];
  const retainMs = days * DAY_MS;
  return [
    { collection: DELIVERIES, field: 'settledAt', retainMs },
    { collection: DELIVERY_KEYS, field: 'at', retainMs },
  ];
}

/** An idempotency key: which delivery an event became; `at` is set when that delivery settles. */
export interface DeliveryKey {
  deliveryId: string;
  at?: string;
}

/**
 * Delay before retry n (after attempt n failed): 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h — the eighth attempt
 * comes about 27.6 h after the first, so an endpoint that is down for a whole day still gets everything.
 */
export const DEFAULT_SCHEDULE_MS = [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000];

export type DeliveryStatus = 'pending' | 'succeeded' | 'failed';

export interface AttemptLog {
  attempt: number;
  at: string;
  statusCode: number | null;
  durationMs: number;
  error: string | null;
  manual?: boolean;
}

export interface Delivery {
  id: string;
  subscriptionId: string;
  workspaceId: string;
  eventId: string;
  eventType: string;
  /** The exact body sent on every attempt (the signature covers it and the attempt's timestamp). */
  body: string;
  status: DeliveryStatus;
  attempts: number;
  firstAttemptAt: string | null;
  lastAttemptAt: string | null;
  nextAttemptAt: string | null;
  lastStatusCode: number | null;
  lastError: string | null;
  /** The most recent attempts (capped), newest last. */
  log: AttemptLog[];
  createdAt: string;
  /**
   * When the delivery last became (or, after a manual attempt, was again) succeeded or failed; absent while
   * pending, and on rows settled before retention existed. Retention counts from here.
   */
  settledAt?: string;
  /**
   * The trace context of the event's processing when the row was written (traceparent, tracestate), so the
   * drain job's attempts join the message's trace and the receiver's `traceparent` leads back to it. Absent
   * while tracing is off.
   */
  trace?: Record<string, string>;
}

/** A delivery as the API and the CLI show it: without its body (large, not needed to read the log) and trace context. */
export function deliveryView(d: Delivery): Omit<Delivery, 'body' | 'trace'> {
  const { body: _body, trace: _trace, ...rest } = d;
  return rest;
}

export interface WebhookOptions {
  /** Retry delays (the last one repeats until `retryWindowMs` has passed). */
  scheduleMs?: number[];
  /** A delivery is given up (and its subscription disabled) only after failing for at least this long. */
  retryWindowMs?: number;
  /** Per-attempt timeout. */
  timeoutMs?: number;
  /** DNS resolver for the SSRF guard (tests serve hostile answers). */
  resolver?: Resolver;
  /** Random jitter fraction added to each delay (default 0.1). */
  jitter?: number;
}

/** A drain job running in this process: kickSoon tells it about a new row instead of asking Redis. */
interface LocalDrain {
  /** A row was committed since the drain's last look-up for the head began. */
  poked: boolean;
}

const ULID_DIGITS = '0123456789abcdefghjkmnpqrstvwxyz';

/**
 * The next id after `id` (its ulid plus one, in base32). Not ulid(time): that would move this process's id
 * clock to the other host's time for every kind of id.
 */
function successorOf(id: string): string {
  const chars = id.split('');
  for (let i = chars.length - 1; i >= 0; i--) {
    const d = ULID_DIGITS.indexOf(chars[i]!);
    if (d < 0) break; // reached the prefix: the ulid was all z, which no clock reaches
    if (d < 31) {
      chars[i] = ULID_DIGITS[d + 1]!;
      return chars.join('');
    }
    chars[i] = '0';
  }
  throw new Error(`no id after ${id}`);
}

export class WebhookService {
  readonly connections: ConnectionService;
  private readonly schedule: number[];
  private readonly retryWindowMs: number;
  /** kickSoon's kicks in flight, per subscription; `again` asks for one more once this one is done. */
  private readonly kicks = new Map<string, { again: boolean; done: Promise<void> }>();
  /** The drain jobs running in this process, by subscription, until they have decided to complete. */
  private readonly draining = new Map<string, LocalDrain>();

  constructor(
    private readonly hub: Hub,
    readonly queues: ConnectorQueues,
    private readonly opts: WebhookOptions = {},
  ) {
    this.connections = new ConnectionService(hub);
    this.schedule = opts.scheduleMs ?? DEFAULT_SCHEDULE_MS;
    this.retryWindowMs = opts.retryWindowMs ?? 24 * 3600_000;
  }

  private get allowPrivate(): boolean {
    return this.hub.config.webhooksAllowPrivate;
  }

  /** The wire body for an event (Standard Webhooks payload: type, timestamp, data). */
  static bodyOf(event: EventEnvelope): string {
    return JSON.stringify({
      id: event.id,
      type: event.type,
      timestamp: event.time,
      workspaceId: event.workspaceId,
      ...(event.conversationId ? { conversationId: event.conversationId } : {}),
      data: event.data,
    });
  }

  /** Subscriptions in the event's workspace that are active and want this event type. */
  async subscribersOf(event: Pick<AnyEvent, 'workspaceId' | 'type'>): Promise<ConnectionRecord[]> {
    const subs = await this.hub.store.docs.find<ConnectionRecord>(CONNECTIONS, { connector: CONNECTOR, workspaceId: event.workspaceId });
    return subs.filter((s) => s.status === 'active' && (s.config.events as string[]).includes(event.type));
  }

  /**
   * Plugin entry: one delivery per interested subscription. The subscriptions' writes are independent (each its
   * own key and row), so they go together and share one group commit; each subscription still gets its rows in
   * stream order, since the plugin hands out one event at a time. Every write has finished before an error
   * goes up (the event is then retried, and the keys already written make the retry skip those).
   */
  async handleEvent(event: AnyEvent): Promise<number> {
    const results = await Promise.allSettled((await this.subscribersOf(event)).map((sub) => this.enqueue(sub, event, { waitForKick: false })));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    return results.filter((r) => r.status === 'fulfilled' && r.value.created).length;
  }

  /**
   * Indexes for the look-ups of every event (a workspace's webhook subscriptions) and of every enqueue and drain
   * step (a subscription's deliveries); call once at start-up. Without the first, each event scanned every
   * connection of the hub: about 0.6 ms per event with 1000 of them, a quarter of an event's handling.
   */
  async init(): Promise<void> {
    await this.hub.store.docs.ensureIndex(CONNECTIONS, ['workspaceId', 'connector']);
    await this.hub.store.docs.ensureIndex(DELIVERIES, ['subscriptionId']);
    await this.hub.store.docs.ensureIndex(DELIVERIES, ['subscriptionId', 'status']);
    // The hourly prune reads through these: it deletes what has aged out instead of scanning every row.
    await this.hub.store.docs.ensureIndex(DELIVERIES, ['settledAt']);
    await this.hub.store.docs.ensureIndex(DELIVERY_KEYS, ['at']);
  }

  /**
   * Rows that settled before retention existed have no settledAt (nor their keys `at`), so no prune would ever
   * take them. Gives each its last attempt's time (its creation's if it has none), then its key `at`, once per
   * store: a marker document says it is done, so later starts read nothing. The plugin runs it in the background
   * after start. A row changes by compare-and-set, so a manual attempt writing it meanwhile is not undone (its
   * own settledAt wins), and so does its key (see dateLegacyKey). Two processes starting together may both run
   * it; each write is the same. Returns how many rows it changed.
   */
  async backfillSettledAt(): Promise<number> {
    const docs = this.hub.store.docs;
    if (await docs.get(WEBHOOK_META, SETTLED_BACKFILL)) return 0;
    let changed = 0;
    const dated = (cur: Delivery): Delivery | null => (cur.settledAt || cur.status === 'pending' ? null : { ...cur, settledAt: cur.lastAttemptAt ?? cur.createdAt });
    for (const status of ['succeeded', 'failed'] as const) {
      for (let afterId: string | undefined; ; ) {
        const rows = await docs.find<Delivery>(DELIVERIES, { status }, { limit: PRUNE_BATCH, ...(afterId ? { afterId } : {}) });
        const legacy = rows.filter((d) => !d.settledAt);
        const done = await Promise.all(legacy.map((d) => this.hub.store.updateDoc<Delivery>(DELIVERIES, d.id, dated, () => [])));
        for (const d of done) {
          if (!d) continue; // settled meanwhile by a manual attempt, which dated it and its key itself
          changed++;
          await this.dateLegacyKey(d);
        }
        if (rows.length < PRUNE_BATCH) break;
        afterId = rows.at(-1)!.id;
      }
    }
    await docs.put(WEBHOOK_META, SETTLED_BACKFILL, { at: new Date().toISOString(), deliveries: changed });
    return changed;
  }

  /**
   * The backfill's second step for a row it dated: the row's key gets `at` = that settledAt, by compare-and-set,
   * only while the key has no `at` and still names this row. Between the row's write and this one a delivery
   * attempt may have settled the row again and written its key with its own, later time in the same unit:
   * putting the backfilled (older) time over it would let prune() take the key before its row, and a replayed
   * event would then be sent again. A missing key is written unless one appears meanwhile. A test send has no key.
   */
  private async dateLegacyKey(d: Delivery): Promise<void> {
    const key = WebhookService.settledKeyWrite(d);
    if (!key) return;
    const at = d.settledAt!;
    const dated = await this.hub.store.updateDoc<DeliveryKey>(DELIVERY_KEYS, key.id, (cur) => (cur.at || cur.deliveryId !== d.id ? null : { ...cur, at }), () => []);
    if (dated || (await this.hub.store.docs.get(DELIVERY_KEYS, key.id))) return;
    // An insert: a key written meanwhile by an attempt is theirs (the batch then writes nothing).
    await this.hub.store.docs.writeAll([{ ...key, op: 'insert' }]);
  }

  /**
   * A delivery id that sorts after every earlier delivery of the subscription: the drain sends in id order, and
   * ids are time-ordered only within one process. The plugin creates rows one at a time across processes (its
   * consumer is ordered), but the previous row may come from another process in the same millisecond, or from a
   * host whose clock runs ahead.
   */
  private async nextDeliveryId(subscriptionId: string): Promise<string> {
    const id = newId('dlv');
    const [last] = await this.hub.store.docs.find<Delivery>(DELIVERIES, { subscriptionId }, { limit: 1, desc: true });
    return !last || last.id < id ? id : successorOf(last.id);
  }

  /**
   * Writes the delivery (unless this (subscription, event) was already enqueued) and kicks the drain job. The
   * key and the row are one atomic write (docs.writeAll): one commit instead of two, and no key without its row.
   * With `waitForKick: false` (the plugin's handler) the kick is left to kickSoon; other callers, such as a
   * backfill from the CLI, which closes its Redis connections when it is done, get it done before this returns.
   */
  async enqueue(sub: ConnectionRecord, event: EventEnvelope, opts: { waitForKick?: boolean } = {}): Promise<{ created: boolean; deliveryId: string }> {
    const key = `${sub.id}:${event.id}`;
    for (let attempt = 1; ; attempt++) {
      const id = await this.nextDeliveryId(sub.id);
      const r = await this.hub.store.docs.writeAll([
        // No `at` yet: the key must not age while its delivery is pending (see settleWrites).
        { op: 'insert', collection: DELIVERY_KEYS, id: key, doc: { deliveryId: id } satisfies DeliveryKey },
        { op: 'insert', collection: DELIVERIES, id, doc: WebhookService.deliveryOf(id, sub, event) },
      ]);
      if (r.written) {
        if (opts.waitForKick === false) this.kickSoon(sub.id);
        else await this.kick(sub.id);
        return { created: true, deliveryId: id };
      }
      if (r.conflict.collection === DELIVERY_KEYS) return this.alreadyEnqueued(sub, event, key);
      // Another writer took this id between our look-up and our write (a backfill next to the plugin, in the
      // same millisecond or behind a clock that runs ahead): the next look-up sees its row and goes past it.
      if (attempt >= 5) throw new RetryableError(`delivery id ${id} of subscription ${sub.id} kept being taken`);
    }
  }

  /**
   * The (subscription, event) key exists. A key without its row cannot come from writeAll, but it can from data
   * written before it (the key and the row were two commits then) or from a crash part-way through a batch on a
   * standalone MongoDB: then write the row now.
   */
  private async alreadyEnqueued(sub: ConnectionRecord, event: EventEnvelope, key: string): Promise<{ created: boolean; deliveryId: string }> {
    const existing = await this.hub.store.docs.get<{ deliveryId: string }>(DELIVERY_KEYS, key);
    if (existing && !(await this.hub.store.docs.get(DELIVERIES, existing.deliveryId))) {
      await this.hub.store.docs.put(DELIVERIES, existing.deliveryId, WebhookService.deliveryOf(existing.deliveryId, sub, event));
      await this.kick(sub.id);
      // Its id is older than rows written since, so it can sort before a held head: then it is due now.
      await this.retryNowIfHeadDue(sub.id);
    }
    return { created: false, deliveryId: existing?.deliveryId ?? '' };
  }

  /** A new, pending delivery of an event to a subscription. */
  static deliveryOf(id: string, sub: ConnectionRecord, event: EventEnvelope): Delivery {
    const traceHeaders = currentTraceHeaders();
    return {
      id,
      subscriptionId: sub.id,
      workspaceId: sub.workspaceId,
      eventId: event.id,
      eventType: event.type,
      body: WebhookService.bodyOf(event),
      status: 'pending',
      attempts: 0,
      firstAttemptAt: null,
      lastAttemptAt: null,
      nextAttemptAt: new Date().toISOString(),
      lastStatusCode: null,
      lastError: null,
      log: [],
      createdAt: new Date().toISOString(),
      ...(traceHeaders.traceparent ? { trace: traceHeaders } : {}),
    };
  }

  /**
   * Makes sure a drain job exists for the subscription (no-op when one is waiting, delayed or running). A delayed
   * job is left to its retry time: a new delivery sits behind the head it waits for. The head becomes due early
   * only through a manual redeliver (or a row repaired by enqueue); those promote the job with retryNow().
   */
  async kick(subscriptionId: string): Promise<void> {
    const q = this.queues.queue(CONNECTOR);
    const jobId = `drain-${subscriptionId}`;
    const job = await q.getJob(jobId);
    if (job) {
      const state = await job.getState();
      if (state !== 'completed' && state !== 'failed' && state !== 'unknown') return;
      await job.remove().catch(() => undefined);
    }
    await q.add('drain', { subscriptionId }, { jobId, attempts: 1_000_000, removeOnComplete: true, removeOnFail: { count: 5000 } });
  }

  /**
   * kick() for a row just committed, without waiting for Redis: at most one kick per subscription is in flight,
   * and rows committed while it runs get one more after it (not one each). That is enough: a kick that starts
   * after a row's commit either finds a drain job that has not started (it will read the row), or one that is
   * running, whose completed hook kicks again if rows are pending (kickIfPending), or none, and adds one.
   * A kick that fails (Redis down) is logged and left to the sweep, as a kick lost to a crash is.
   */
  kickSoon(subscriptionId: string): void {
    // A drain job of this process that has not decided to complete yet will look for the head again: no kick.
    const local = this.draining.get(subscriptionId);
    if (local) {
      local.poked = true;
      return;
    }
    const inFlight = this.kicks.get(subscriptionId);
    if (inFlight) {
      inFlight.again = true;
      return;
    }
    const k = { again: false, done: Promise.resolve() };
    this.kicks.set(subscriptionId, k);
    k.done = (async () => {
      try {
        do {
          k.again = false;
          await this.kick(subscriptionId).catch((err: unknown) =>
            this.hub.log.warn({ subscriptionId, err: (err as Error).message }, 'webhook drain kick failed; the sweep will retry it'),
          );
        } while (k.again);
      } finally {
        this.kicks.delete(subscriptionId);
      }
    })();
  }

  /**
   * Waits for the kicks kickSoon started (before the queues close), for at most `timeoutMs`: a Redis that does
   * not answer must not hold a stop, and a kick given up on here is left to the sweep, as one lost to a crash
   * is. True when every kick finished.
   */
  async settleKicks(timeoutMs = Infinity): Promise<boolean> {
    const all = (async () => {
      while (this.kicks.size) await Promise.all([...this.kicks.values()].map((k) => k.done));
    })();
    if (!Number.isFinite(timeoutMs)) return all.then(() => true);
    return withTimeout(all, timeoutMs, 'webhook drain kicks').then(
      () => true,
      () => false,
    );
  }

  /** Starts the worker (in the plugin's process). */
  startWorker(concurrency = 16): void {
    const worker = this.queues.work(CONNECTOR, (job) => this.drain(job), {
      concurrency,
      // Delays come from the delivery's own attempt count (RetryableError.delayMs), not the job's.
      backoff: () => 0,
    });
    worker.on('completed', (job) => {
      const subscriptionId = (job.data as { subscriptionId: string }).subscriptionId;
      void this.kickIfPending(subscriptionId).catch(() => undefined);
    });
  }

  /** The subscription's oldest pending delivery: the one its drain job sends next. */
  private async pendingHead(subscriptionId: string): Promise<Delivery | undefined> {
    const [head] = await this.hub.store.docs.find<Delivery>(DELIVERIES, { subscriptionId, status: 'pending' }, { limit: 1 });
    return head;
  }

  /** retryNow() if the head is due already (its retry time has passed): the delayed job would wait for nothing. */
  private async retryNowIfHeadDue(subscriptionId: string): Promise<void> {
    const head = await this.pendingHead(subscriptionId);
    if (head && (!head.nextAttemptAt || Date.parse(head.nextAttemptAt) <= Date.now())) await this.retryNow(subscriptionId);
  }

  /**
   * Sends the subscription's held head delivery now instead of at its scheduled retry (`voxa connections
   * retry-failed`). Returns how many drain jobs that re-queued (0 or 1).
   */
  async retryNow(subscriptionId: string): Promise<number> {
    const job = await this.queues.queue(CONNECTOR).getJob(`drain-${subscriptionId}`);
    if (!job || (await job.getState()) !== 'delayed') return 0;
    return job.promote().then(
      () => 1,
      () => 0, // it started on its own meanwhile
    );
  }

  async kickIfPending(subscriptionId: string): Promise<void> {
    const sub = await this.hub.store.docs.get<ConnectionRecord>(CONNECTIONS, subscriptionId);
    if (!sub || sub.status !== 'active') return;
    if ((await this.hub.store.docs.count(DELIVERIES, { subscriptionId, status: 'pending' })) > 0) await this.kick(subscriptionId);
  }

  /** Kicks every active subscription that has pending deliveries (periodic safety net). */
  async sweep(): Promise<void> {
    for (const sub of await this.connections.allOf(CONNECTOR)) if (sub.status === 'active') await this.kickIfPending(sub.id);
  }

  /** The drain job: send pending deliveries oldest first; stop at the first failure (the job is retried). */
  async drain(job: Pick<Job, 'data'>): Promise<{ sent: number }> {
    const { subscriptionId } = job.data as { subscriptionId: string };
    const local: LocalDrain = { poked: false };
    this.draining.set(subscriptionId, local);
    // The job leaves the map in the very step that decides to return or throw (a finally of this function, not
    // of a caller's await), so a kickSoon is either seen by a look-up still to come or goes to Redis.
    try {
      let sent = 0;
      for (;;) {
        // Cleared before the look-up: a poke from here on may be for a row the look-up missed.
        local.poked = false;
        const sub = await this.hub.store.docs.get<ConnectionRecord>(CONNECTIONS, subscriptionId);
        if (!sub || sub.status !== 'active') return { sent };
        const head = await this.pendingHead(subscriptionId);
        if (!head) {
          if (local.poked) continue;
          return { sent };
        }
        const cfg = (await this.connections.resolve<WebhookConfig>(sub)).config;
        const r = await this.inTrace(head, () => deliverOnce(cfg, head.eventId, head.body, this.deliverOptions()));
        const d = await this.record(head, r);
        if (r.ok) {
          sent++;
          continue;
        }
        if (r.fatal) {
          await this.giveUp(d, sub, r.statusCode === 410 ? 'endpoint answered 410 Gone' : `target refused: ${r.error}`);
          throw new PermanentError(`delivery ${d.id} failed permanently: ${r.error}`);
        }
        const elapsed = Date.now() - Date.parse(d.firstAttemptAt!);
        if (d.attempts > this.schedule.length && elapsed >= this.retryWindowMs) {
          await this.giveUp(d, sub, `${d.attempts} attempts over ${Math.round(elapsed / 3600_000)} h failed; last: ${r.error}`);
          throw new PermanentError(`delivery ${d.id} gave up after ${d.attempts} attempts`);
        }
        const delay = this.delayFor(d.attempts, r.retryAfterMs);
        await this.hub.store.docs.put(DELIVERIES, d.id, { ...d, nextAttemptAt: new Date(Date.now() + delay).toISOString() });
        throw new RetryableError(`delivery ${d.id} attempt ${d.attempts} failed: ${r.error}`, delay);
      }
    } finally {
      if (this.draining.get(subscriptionId) === local) this.draining.delete(subscriptionId);
    }
  }

  /** Delay after `attempts` failed attempts, with jitter, never below the receiver's Retry-After. */
  delayFor(attempts: number, retryAfterMs?: number): number {
    const base = this.schedule[Math.min(attempts, this.schedule.length) - 1] ?? this.schedule[this.schedule.length - 1]!;
    const jittered = Math.round(base * (1 + Math.random() * (this.opts.jitter ?? 0.1)));
    return Math.max(jittered, retryAfterMs ?? 0);
  }

  private async record(d: Delivery, r: AttemptResult, manual = false): Promise<Delivery> {
    const at = new Date().toISOString();
    const attempt = d.attempts + 1;
    const status = r.ok ? 'succeeded' : d.status;
    const entry: AttemptLog = { attempt, at, statusCode: r.statusCode, durationMs: r.durationMs, error: r.error, ...(manual ? { manual } : {}) };
    const next: Delivery = {
      ...d,
      attempts: attempt,
      firstAttemptAt: d.firstAttemptAt ?? at,
      lastAttemptAt: at,
      lastStatusCode: r.statusCode,
      lastError: r.error,
      status,
      nextAttemptAt: r.ok ? null : d.nextAttemptAt,
      log: [...d.log, entry].slice(-25),
      // An attempt on a settled row (manual) restarts its retention: its log just grew.
      ...(status !== 'pending' ? { settledAt: at } : {}),
    };
    // A batch of one rather than docs.put: on SQLite a batch joins the group commit, so the drain's one write
    // per delivery shares its fsync with other writes and waits for it off the event loop, where a lone put
    // fsyncs on it (and holds up ingestion and the API meanwhile).
    await this.hub.store.docs.writeAll(WebhookService.settleWrites(next));
    return next;
  }

  /**
   * The writes that store a delivery row: for a settled one of a real event also its key, with `at` =
   * settledAt, in the same atomic write. The key then ages exactly as its row does, and prune() deletes rows
   * before keys, so no row is ever left without its key (a replayed event would be sent again). A test send
   * has no key.
   */
  private static settleWrites(d: Delivery): DocWrite[] {
    const key = WebhookService.settledKeyWrite(d);
    return [{ op: 'put', collection: DELIVERIES, id: d.id, doc: d }, ...(key ? [key] : [])];
  }

  /** The key of a settled delivery of a real event, dated with its settledAt; null for a pending one or a test send. */
  private static settledKeyWrite(d: Delivery): DocWrite | null {
    if (!d.settledAt || d.eventType === TEST_EVENT) return null;
    return { op: 'put', collection: DELIVERY_KEYS, id: `${d.subscriptionId}:${d.eventId}`, doc: { deliveryId: d.id, at: d.settledAt } satisfies DeliveryKey };
  }

  private async giveUp(d: Delivery, sub: ConnectionRecord, reason: string): Promise<void> {
    await this.hub.store.docs.writeAll(WebhookService.settleWrites({ ...d, status: 'failed', nextAttemptAt: null, settledAt: new Date().toISOString() }));
    await new ConnectionService(this.hub, { type: 'plugin', id: 'webhooks' }).setStatus(sub.id, 'disabled', `auto-disabled: ${reason}`, undefined, 'auto_disabled');
    this.hub.log.warn({ subscriptionId: sub.id, reason }, 'webhook subscription disabled');
  }

  async listDeliveries(subscriptionId: string, limit = 50): Promise<Delivery[]> {
    return this.hub.store.docs.find<Delivery>(DELIVERIES, { subscriptionId }, { limit, desc: true });
  }

  async getDelivery(id: string): Promise<Delivery | null> {
    return this.hub.store.docs.get<Delivery>(DELIVERIES, id);
  }

  /** How every attempt is made: the drain job's, a manual redelivery and a test send alike. */
  private deliverOptions(): DeliverOptions {
    return {
      allowPrivate: this.allowPrivate,
      ...(this.opts.timeoutMs ? { timeoutMs: this.opts.timeoutMs } : {}),
      ...(this.opts.resolver ? { resolver: this.opts.resolver } : {}),
    };
  }

  /**
   * Runs an attempt of the drain job in a span of the trace the delivery was written in (the drain runs in a
   * BullMQ job, outside it), so the HTTP request and its traceparent belong to the message's trace.
   */
  private inTrace<T>(d: Delivery, fn: () => Promise<T>): Promise<T> {
    if (!d.trace) return fn();
    return tracer.startActiveSpan(
      `webhooks deliver ${d.eventType}`,
      { kind: SpanKind.INTERNAL, attributes: { 'voxa.plugin': 'webhooks', 'voxa.event.type': d.eventType, 'messaging.message.id': d.eventId, 'voxa.delivery.attempt': d.attempts + 1 } },
      contextFromRecord(d.trace),
      async (span) => {
        try {
          return await fn();
        } catch (err) {
          failSpan(span, err);
          throw err;
        } finally {
          span.end();
        }
      },
    );
  }

  /** Manual redelivery (in its caller's trace): one attempt now, same webhook-id and body, recorded in the log. */
  async redeliver(deliveryId: string, workspaceId?: string): Promise<Delivery> {
    const d = await this.getDelivery(deliveryId);
    if (!d || (workspaceId !== undefined && d.workspaceId !== workspaceId)) throw new PermanentError(`no delivery ${deliveryId}`);
    const sub = await this.connections.getRecord(d.subscriptionId);
    const cfg = (await this.connections.resolve<WebhookConfig>(sub)).config;
    const r = await deliverOnce(cfg, d.eventId, d.body, this.deliverOptions());
    const next = await this.record(d, r, true);
    if (r.ok && next.status !== 'succeeded') await this.hub.store.docs.writeAll(WebhookService.settleWrites({ ...next, status: 'succeeded', settledAt: new Date().toISOString() }));
    // If that was the head holding the queue, the next delivery is due now, not at the head's retry time: make
    // sure a drain job exists, and run a delayed one now. The hub and `voxa webhooks redeliver` both have Redis
    // (the CLI fails without it).
    if (r.ok && d.status === 'pending' && this.hub.redis) {
      await this.kickIfPending(d.subscriptionId);
      await this.retryNowIfHeadDue(d.subscriptionId);
    }
    return (await this.getDelivery(deliveryId))!;
  }

  /** Sends a signed `webhook.test` event now and logs it as a delivery of the subscription. */
  async sendTest(subscriptionId: string, workspaceId?: string): Promise<Delivery> {
    const sub = await this.connections.getRecord(subscriptionId, workspaceId);
    const eventId = newId('evt');
    const body = JSON.stringify({ id: eventId, type: TEST_EVENT, timestamp: new Date().toISOString(), workspaceId: sub.workspaceId, data: { subscriptionId } });
    const d: Delivery = {
      id: newId('dlv'),
      subscriptionId,
      workspaceId: sub.workspaceId,
      eventId,
      eventType: TEST_EVENT,
      body,
      // Never 'pending': the drain job must not pick a test up.
      status: 'failed',
      attempts: 0,
      firstAttemptAt: null,
      lastAttemptAt: null,
      nextAttemptAt: null,
      lastStatusCode: null,
      lastError: null,
      log: [],
      createdAt: new Date().toISOString(),
    };
    const cfg = (await this.connections.resolve<WebhookConfig>(sub)).config;
    const r = await deliverOnce(cfg, eventId, body, this.deliverOptions());
    // A test is one attempt: it is logged as succeeded or failed, never left pending for the drain job.
    const done = await this.record(d, r, true);
    const final: Delivery = { ...done, status: r.ok ? 'succeeded' : 'failed', settledAt: done.settledAt ?? new Date().toISOString() };
    await this.hub.store.docs.put(DELIVERIES, d.id, final);
    return final;
  }

  /** Backfill into one subscription: enqueue what it wants; (subscription, event id) keys make it idempotent. */
  backfillTarget(sub: ConnectionRecord): BackfillTarget {
    return {
      accept: async (event) => {
        if (!(sub.config.events as string[]).includes(event.type)) return 'ignored';
        return (await this.enqueue(sub, event)).created ? 'written' : 'skipped';
      },
    };
  }

  /**
   * Deletes settled deliveries, then idempotency keys, older than webhookDeliveryRetentionDays as of `now`
   * (0 keeps everything), through the shared pruner's rules (the plugin's timer runs the same rules).
   */
  async prune(now: number = Date.now()): Promise<{ deliveries: number; keys: number }> {
    const counts = await pruneRecords(this.hub.store.docs, new Date(now), deliveryPruneRules(this.hub.config.webhookDeliveryRetentionDays));
    return { deliveries: counts[DELIVERIES] ?? 0, keys: counts[DELIVERY_KEYS] ?? 0 };
  }

  /**
   * Removes any connection: a webhook through remove() below, so its delivery log goes with it; any other
   * connector through ConnectionService.remove alone. The one place that choice is made (the CLI's
   * `connections remove` and `DELETE /v1/connections/:id`). `webhooks` is called only for a webhook, so a
   * caller can open the job queues for it then.
   */
  static async removeConnection(
    hub: Hub,
    id: string,
    opts: { workspaceId?: string; actor?: Actor; webhooks: () => WebhookService },
  ): Promise<{ connector: string; deliveries?: number }> {
    const connections = new ConnectionService(hub, opts.actor);
    const { connector } = await connections.getRecord(id, opts.workspaceId);
    if (connector === 'webhook') return { connector, ...(await opts.webhooks().remove(id, opts.workspaceId, opts.actor)) };
    await connections.remove(id, opts.workspaceId);
    return { connector };
  }

  /**
   * Removes a webhook subscription (ConnectionService.remove, as `actor`: its webhook.changed event and
   * audit entry), then deletes its deliveries and their keys. The subscription goes first: from then on no
   * event enqueues for it and its drain job stops at its first look-up, so nothing adds rows behind the
   * clean-up. Both the CLI and the REST routes remove webhooks through here.
   */
  async remove(subscriptionId: string, workspaceId?: string, actor?: Actor): Promise<{ deliveries: number }> {
    await new ConnectionService(this.hub, actor).remove(subscriptionId, workspaceId);
    return { deliveries: await this.purge(subscriptionId) };
  }

  /**
   * Deletes a removed subscription's deliveries and keys, a batch at a time, each key before its row (the key
   * id comes from the row). A crash part-way leaves some rows and keys of a subscription that no longer
   * exists: nothing reads them (the drain and every enqueue start from the subscription), settled ones are
   * pruned with the rest, and calling this again finishes the job. Keys whose row was pruned already carry
   * `at`, so retention takes them.
   */
  async purge(subscriptionId: string): Promise<number> {
    const docs = this.hub.store.docs;
    let total = 0;
    for (;;) {
      const rows = await docs.find<Delivery>(DELIVERIES, { subscriptionId }, { limit: PRUNE_BATCH });
      // One batch's deletes together: on SQLite they share group commits instead of one fsync each.
      await Promise.all(rows.map((d) => docs.delete(DELIVERY_KEYS, `${subscriptionId}:${d.eventId}`)));
      await Promise.all(rows.map((d) => docs.delete(DELIVERIES, d.id)));
      total += rows.length;
      if (rows.length < PRUNE_BATCH) return total;
    }
  }

  /** Re-enables a subscription and resumes its pending deliveries. */
  async enable(subscriptionId: string, workspaceId?: string): Promise<void> {
    await this.connections.setStatus(subscriptionId, 'active', null, workspaceId);
    await this.kick(subscriptionId);
  }
}
