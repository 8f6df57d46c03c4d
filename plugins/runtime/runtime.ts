/**
 * The plugin runtime: the one place that owns JetStream consumers for plugins.
 *
 * Shared mode (default): one durable pull consumer per plugin (and generation), shared by every process
 * that runs the plugin. Each process pulls only as many events as it has free handler slots, so work
 * spreads over processes by who is free, and a dead process's unacked events go to the others after
 * ack_wait. Outcomes: success → ack; RetryableError (or any unknown error) → nak with the backoff delay;
 * PermanentError, or a failure on the last allowed delivery → dead letter, then term. A payload that is not a
 * catalog event (its envelope, or its `data` for the event's type) → dead letter at once, the handler never
 * called; extra fields in `data` are not an error and reach the handler as published.
 *
 * Broadcast mode: every process sees every event, through an ordered (ephemeral, flow-controlled) consumer
 * starting at new messages. Why not a plain core subscription: the ordered consumer is deduplicated by the
 * stream (an outbox republish is not seen twice), survives a NATS reconnect without a gap (it resumes from
 * the last stream sequence it saw) and delivers in stream order; its cost is one server-side consumer per
 * process, which the server removes by itself when the process disappears. No retries, no dead letters: a
 * malformed event is logged and skipped.
 *
 * Control: a KV bucket holds per-plugin {paused, generation}; the runtime watches it (see control.ts).
 */
import type { Server as HttpServer } from 'node:http';
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { DeliverPolicy, type ConsumerMessages, type JsMsg, type KV, type QueuedIterator, type KvEntry } from 'nats';
import type { Logger } from 'pino';
import { EnvelopeSchema, checkEventData, filterSubjectOf, isDurable, type AnyEvent, type EventType } from '../../core/events/catalog.js';
import type { Hub } from '../../core/hub.js';
import { initPluginSeries, metrics } from '../../core/telemetry/metrics.js';
import { consumerSpanAttributes } from '../../core/telemetry/nats.js';
import { contextFromHeaders } from '../../core/telemetry/propagation.js';
import {
  HDR,
  backoffFor,
  consumerName,
  decodeState,
  deleteOlderGenerations,
  durableConfig,
  ensureDurable,
  ensureRuntimeStreams,
  singleFilterFor,
  openControl,
  readState,
  resolvePolicy,
  retryConsumerName,
  retrySubject,
  runtimeNames,
  serverAtLeast,
  DEFAULT_STATE,
  type PluginState,
  type ResolvedPolicy,
  type RuntimeNames,
} from './control.js';
import { malformedReason, publishDeadLetter } from './dlq.js';
import { dedupeKey } from './idempotency.js';
import { PermanentError, RetryableError, type DeliveryInfo, type Plugin, type PluginContext, type PluginRoutes, type PublicPluginRoutes } from './types.js';

export interface PluginRuntimeOptions {
  /** The API's HTTP server; handed to every plugin's start() as ctx.httpServer (the edge attaches to it). */
  httpServer?: HttpServer;
  /**
   * Longest wait of one pull request (min 1000 ms, default 2000). Also bounds how long a pause or a stop
   * waits for the pull in progress.
   */
  fetchExpiresMs?: number;
  /** How often consumer info refreshes the pending/ack-pending gauges (default 10 s). */
  metricsIntervalMs?: number;
  /** Default deadline for stop() to drain in-flight handlers (default 15 s). */
  drainTimeoutMs?: number;
  /** Longest a handler may run: after it heartbeats stop and info.signal aborts (default 15 min). */
  maxRunMs?: number;
}

/** What `status()` reports per plugin. */
export interface PluginStatus {
  name: string;
  mode: 'shared' | 'broadcast';
  /** 'running' pulls events; 'paused' finished its in-flight work and pulls nothing. */
  state: 'starting' | 'running' | 'paused' | 'stopped';
  generation: number;
  inFlight: number;
  consumer: string | null;
}

/** A plugin's REST routes with the context to call them with (core/http mounts them). */
export interface PluginRouteMount {
  name: string;
  routes: PluginRoutes;
  /** Routes mounted without authentication (Plugin.publicRoutes). */
  publicRoutes?: PublicPluginRoutes;
  context: PluginContext;
}

/** A wake-up channel: waiters re-check their condition after every notify (or after a timeout). */
class Signal {
  private waiters: Array<() => void> = [];
  wait(ms?: number): Promise<void> {
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      this.waiters.push(done);
      if (ms !== undefined) timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve();
      }, ms);
    });
  }
  notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

interface InFlight {
  abort: AbortController;
  done: Promise<void>;
}

interface Slot {
  plugin: Plugin;
  name: string;
  mode: 'shared' | 'broadcast';
  types: Set<EventType>;
  policy: ResolvedPolicy;
  concurrency: number;
  control: PluginState;
  status: PluginStatus['state'];
  active: number;
  inflight: Set<InFlight>;
  wake: Signal;
  ctx: PluginContext;
  log: Logger;
  driver?: Promise<void>;
  /** Open broadcast iterators, stopped on pause and stop. */
  iters: ConsumerMessages[];
}

/** What a message holds for a slot: its event, an event of a type the plugin does not take, or why it is no valid event. */
type Decoded = { event: AnyEvent } | { foreign: true } | { malformed: string; ids?: { eventId: string; eventType: EventType } };

const tracer = trace.getTracer('voxa-plugin-runtime');
const decoder = new TextDecoder();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Runs plugins against the hub's streams. One instance per process. */
export class PluginRuntime {
  private readonly slots = new Map<string, Slot>();
  private readonly names: RuntimeNames;
  private readonly log: Logger;
  private readonly fetchExpiresMs: number;
  private kv?: KV;
  private watcher?: QueuedIterator<KvEntry>;
  private metricsTimer?: NodeJS.Timeout;
  private started = false;
  private stopping = false;
  private finished = false;

  constructor(
    private readonly hub: Hub,
    plugins: Plugin[],
    private readonly opts: PluginRuntimeOptions = {},
  ) {
    this.names = runtimeNames(hub.bus.namespace);
    this.log = hub.log.child({ component: 'plugin-runtime' });
    this.fetchExpiresMs = Math.max(1000, opts.fetchExpiresMs ?? 2000);
    for (const plugin of plugins) {
      const m = plugin.manifest;
      if (this.slots.has(m.name)) throw new Error(`plugin ${m.name} is listed twice`);
      if (!m.events.length) throw new Error(`plugin ${m.name} subscribes to no events`);
      const mode = m.mode ?? 'shared';
      const ephemeral = m.events.filter((t) => !isDurable(t));
      if (mode === 'broadcast' && m.ordered) throw new Error(`plugin ${m.name}: 'ordered' needs shared mode`);
      if (mode === 'shared' && ephemeral.length) {
        throw new Error(`plugin ${m.name}: ${ephemeral.join(', ')} are ephemeral events, only broadcast-mode plugins can subscribe to them`);
      }
      const log = hub.log.child({ plugin: m.name });
      this.slots.set(m.name, {
        plugin,
        name: m.name,
        mode,
        types: new Set(m.events),
        policy: resolvePolicy(m.retry),
        // More than one slot is pointless when the server hands out one event at a time.
        concurrency: m.ordered ? 1 : Math.max(1, m.concurrency ?? 8),
        control: { ...DEFAULT_STATE },
        status: 'starting',
        active: 0,
        inflight: new Set(),
        wake: new Signal(),
        ctx: { hub, log, ...(opts.httpServer ? { httpServer: opts.httpServer } : {}) },
        log,
        iters: [],
      });
    }
  }

  /**
   * Declares the runtime's stream and control bucket, starts every plugin (plugin.start), binds the consumers
   * and begins consuming. Resolves once every consumer exists, so events published afterwards are seen.
   * `httpServer` here (or in the constructor options) reaches plugins as ctx.httpServer.
   */
  async start(opts: { httpServer?: HttpServer | undefined } = {}): Promise<void> {
    if (this.started) throw new Error('runtime already started');
    this.started = true;
    // The API process creates its HTTP server after asking for routes(), so it may hand it over only now.
    if (opts.httpServer) for (const s of this.slots.values()) s.ctx.httpServer = opts.httpServer;
    const { jsm, js } = this.hub.bus;
    await ensureRuntimeStreams(jsm, this.hub.bus.namespace, this.hub.bus.replicas);
    this.kv = await openControl(js, this.hub.bus.namespace, this.hub.bus.replicas);
    initPluginSeries(this.slots.keys());
    for (const s of this.slots.values()) {
      s.control = await readState(this.kv, s.name);
      await s.plugin.start?.(s.ctx);
    }
    this.watcher = await this.kv.watch({ key: '>' });
    void this.watch(this.watcher);
    for (const s of this.slots.values()) {
      if (s.mode === 'shared') {
        await this.bind(s, s.control.generation);
        s.driver = this.driveShared(s);
      } else {
        if (!s.control.paused) await this.openBroadcast(s);
        s.driver = this.driveBroadcast(s);
      }
    }
    const every = this.opts.metricsIntervalMs ?? 10_000;
    this.metricsTimer = setInterval(() => void this.refreshGauges(), every);
    this.metricsTimer.unref();
    void this.refreshGauges();
    this.log.info({ plugins: [...this.slots.keys()] }, 'plugin runtime started');
  }

  /**
   * Graceful stop: no new pulls, in-flight handlers get until the deadline to finish (then their signal
   * aborts and JetStream redelivers their events elsewhere), then plugin.stop() runs. Does not close the hub.
   */
  async stop(opts: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.started || this.stopping) return;
    this.stopping = true;
    const deadline = Date.now() + (opts.timeoutMs ?? this.opts.drainTimeoutMs ?? 15_000);
    const left = (): number => Math.max(0, deadline - Date.now());
    for (const s of this.slots.values()) {
      for (const it of s.iters) it.stop();
      s.wake.notify();
    }
    const drivers = [...this.slots.values()].map((s) => s.driver).filter(Boolean);
    await Promise.race([Promise.allSettled(drivers), sleep(left())]);
    const inflight = [...this.slots.values()].flatMap((s) => [...s.inflight]);
    await Promise.race([Promise.allSettled(inflight.map((f) => f.done)), sleep(left())]);
    this.finished = true;
    const stuck = [...this.slots.values()].flatMap((s) => [...s.inflight]);
    if (stuck.length) {
      this.log.warn({ handlers: stuck.length }, 'drain deadline passed; abandoning handlers (JetStream will redeliver their events)');
      for (const f of stuck) f.abort.abort(new Error('plugin runtime stopped'));
    }
    clearInterval(this.metricsTimer);
    this.watcher?.stop();
    // Side by side: plugins do not depend on each other, and one whose stop waits (connector queues give a
    // Redis that stops answering a grace period) must not add its wait to every other's.
    await Promise.all(
      [...this.slots.values()].map(async (s) => {
        s.status = 'stopped';
        try {
          await s.plugin.stop?.();
        } catch (err) {
          s.log.warn({ err: errorMessage(err) }, 'plugin stop failed');
        }
      }),
    );
    // Push the last acks out before the caller closes the connection.
    if (!this.hub.bus.nc.isClosed()) await this.hub.bus.nc.flush().catch(() => undefined);
    this.log.info('plugin runtime stopped');
  }

  /** REST routes of the plugins that declare some, with the context to mount them with. */
  routes(): PluginRouteMount[] {
    return [...this.slots.values()]
      .filter((s) => s.plugin.routes || s.plugin.publicRoutes)
      .map((s) => ({
        name: s.name,
        routes: s.plugin.routes ?? (() => undefined),
        ...(s.plugin.publicRoutes ? { publicRoutes: s.plugin.publicRoutes } : {}),
        context: s.ctx,
      }));
  }

  /** What each plugin is doing in this process. */
  status(): PluginStatus[] {
    return [...this.slots.values()].map((s) => ({
      name: s.name,
      mode: s.mode,
      state: s.status,
      generation: s.control.generation,
      inFlight: s.active,
      consumer: s.mode === 'shared' ? consumerName(s.name, s.control.generation) : null,
    }));
  }

  // ---- control plane --------------------------------------------------------------------------------------

  private async watch(w: QueuedIterator<KvEntry>): Promise<void> {
    try {
      for await (const e of w) {
        const s = this.slots.get(e.key);
        if (!s) continue;
        const next = e.operation === 'PUT' ? decodeState(e.value) : { ...DEFAULT_STATE };
        if (next.paused !== s.control.paused || next.generation !== s.control.generation) {
          s.log.info({ paused: next.paused, generation: next.generation }, 'plugin control state changed');
        }
        s.control = next;
        if (next.paused) for (const it of s.iters.splice(0)) it.stop();
        s.wake.notify();
      }
    } catch (err) {
      if (!this.stopping) this.log.warn({ err: errorMessage(err) }, 'control watch ended');
    }
  }

  private pulling(s: Slot, generation: number): boolean {
    return !this.stopping && !s.control.paused && s.control.generation === generation && !this.hub.bus.nc.isClosed();
  }

  // ---- shared mode ----------------------------------------------------------------------------------------

  private filterFor(s: Slot): string | string[] | undefined {
    const subjects = [...s.types].map((t) => filterSubjectOf(t, this.hub.bus.namespace));
    if (subjects.length > 1 && serverAtLeast(this.hub.bus.nc, 2, 10)) return subjects;
    // NATS 2.9: one filter per consumer; events of other types it lets through are acked and skipped.
    return singleFilterFor([...s.types], this.hub.bus.namespace);
  }

  /** Ensures this generation's durable consumer and the retry consumer, and removes older generations. */
  private async bind(s: Slot, generation: number): Promise<void> {
    const { jsm } = this.hub.bus;
    const m = s.plugin.manifest;
    const ci = await ensureDurable(
      jsm,
      this.names.events,
      durableConfig({
        name: consumerName(s.name, generation),
        description: `plugin ${s.name}: ${m.description}`.slice(0, 200),
        policy: s.policy,
        concurrency: s.concurrency,
        filter: this.filterFor(s),
        startAt: m.startAt,
        ordered: m.ordered ?? false,
      }),
    );
    // ensureDurable tolerates a refused update; for an ordered plugin that would silently break its order.
    if (m.ordered && ci.config.max_ack_pending !== 1) {
      throw new Error(`consumer ${ci.name} kept max_ack_pending ${ci.config.max_ack_pending}; ordered delivery needs 1`);
    }
    await ensureDurable(
      jsm,
      this.names.retry,
      durableConfig({
        name: retryConsumerName(s.name),
        description: `plugin ${s.name}: events put back by voxa dlq retry`,
        policy: s.policy,
        concurrency: s.concurrency,
        filter: retrySubject(this.hub.bus.namespace, s.name),
        startAt: 'all',
      }),
    );
    if (generation > 0) await deleteOlderGenerations(jsm, this.names.events, s.name, generation);
  }

  private async driveShared(s: Slot): Promise<void> {
    let bound = s.control.generation;
    while (!this.stopping && !this.hub.bus.nc.isClosed()) {
      if (s.control.paused) {
        s.status = 'paused';
        await s.wake.wait();
        continue;
      }
      const generation = s.control.generation;
      try {
        if (generation !== bound) {
          await this.bind(s, generation);
          bound = generation;
        }
        s.status = 'running';
        await Promise.all([this.pull(s, generation, 'stream'), this.pull(s, generation, 'retry')]);
      } catch (err) {
        if (this.stopping || this.hub.bus.nc.isClosed()) break;
        s.log.warn({ err: errorMessage(err) }, 'consumer error; rebinding');
        await s.wake.wait(1000);
        // A rewind may have replaced our consumer before its KV update reached us: trust the bucket.
        if (this.kv) s.control = await readState(this.kv, s.name).catch(() => s.control);
        bound = -1;
      }
    }
    if (s.status !== 'stopped') s.status = s.control.paused ? 'paused' : 'stopped';
  }

  private async pull(s: Slot, generation: number, source: 'stream' | 'retry'): Promise<void> {
    const stream = source === 'stream' ? this.names.events : this.names.retry;
    const name = source === 'stream' ? consumerName(s.name, generation) : retryConsumerName(s.name);
    const consumer = await this.hub.bus.js.consumers.get(stream, name);
    while (this.pulling(s, generation)) {
      while (s.active >= s.concurrency && this.pulling(s, generation)) await s.wake.wait();
      if (!this.pulling(s, generation)) break;
      // Pull only what we can start now; the rest stays with the server for the other processes.
      const n = source === 'retry' ? 1 : s.concurrency - s.active;
      const batch = await consumer.fetch({ max_messages: n, expires: this.fetchExpiresMs });
      for await (const m of batch) {
        if (this.finished) {
          m.nak(); // arrived after stop() gave up waiting: let another process have it now
          continue;
        }
        // The other loop (live/retry) may have taken the free slot: wait, keeping the message ours.
        while (s.active >= s.concurrency) {
          m.working();
          await s.wake.wait(Math.max(50, s.policy.ackWaitMs / 3));
        }
        this.launch(s, (abort) => this.processShared(s, m, source, generation, abort));
      }
    }
  }

  private launch(s: Slot, run: (abort: AbortController) => Promise<void>): void {
    const abort = new AbortController();
    s.active++;
    const entry: InFlight = { abort, done: Promise.resolve() };
    entry.done = run(abort)
      .catch((err) => s.log.error({ err: errorMessage(err) }, 'plugin delivery failed unexpectedly'))
      .finally(() => {
        s.active--;
        s.inflight.delete(entry);
        s.wake.notify();
      });
    s.inflight.add(entry);
  }

  private async processShared(s: Slot, m: JsMsg, source: 'stream' | 'retry', generation: number, abort: AbortController): Promise<void> {
    const attempt = m.info.deliveryCount;
    const h = m.headers;
    const subject = (source === 'retry' && h?.get(HDR.originalSubject)) || m.subject;
    const streamSeq = source === 'retry' ? Number(h?.get(HDR.streamSeq)) || 0 : m.info.streamSequence;
    const retryOf = source === 'retry' ? h?.get(HDR.retryOf) || undefined : undefined;
    const base = { subject, streamSeq, retryOf, attempts: attempt };

    const read = this.decode(s, m);
    if ('foreign' in read) {
      m.ack(); // let through by a broad single-subject filter (NATS 2.9); not ours
      return;
    }
    // A malformed event can never become valid, so no retries.
    if ('malformed' in read) {
      await this.deadLetter(s, m, { ...base, ...read.ids, reason: read.malformed });
      return;
    }
    const event = read.event;
    const ids = { eventId: event.id, eventType: event.type };
    if (attempt > s.policy.maxDeliveries) {
      await this.deadLetter(s, m, {
        ...base,
        ...ids,
        attempts: s.policy.maxDeliveries,
        reason: `gave up after ${s.policy.maxDeliveries} deliveries; the last one did not finish (process stopped or ack wait expired)`,
      });
      return;
    }
    const info: DeliveryInfo = {
      attempt,
      streamSeq,
      subject,
      generation,
      source,
      dedupeKey: dedupeKey(s.plugin.manifest, event.id, generation),
      signal: abort.signal,
    };
    // Long handlers keep the delivery ours by telling JetStream they are still working.
    const started = Date.now();
    const maxRun = this.opts.maxRunMs ?? 15 * 60_000;
    const heartbeat = setInterval(() => {
      if (Date.now() - started < maxRun) m.working();
      else {
        clearInterval(heartbeat);
        abort.abort(new Error('handler exceeded its maximum run time'));
      }
    }, Math.max(50, s.policy.ackWaitMs / 3));

    await tracer.startActiveSpan(
      `${s.name} process ${event.type}`,
      {
        kind: SpanKind.CONSUMER,
        attributes: {
          ...consumerSpanAttributes(s.name, subject, event.id, event.type),
          'voxa.delivery.attempt': attempt,
          'voxa.delivery.source': source,
        },
      },
      contextFromHeaders(h),
      async (span) => {
        const t0 = process.hrtime.bigint();
        try {
          await s.plugin.handle(event, info);
          clearInterval(heartbeat);
          m.ack();
          metrics.pluginProcessed.inc({ plugin: s.name });
        } catch (err) {
          clearInterval(heartbeat);
          const reason = err instanceof PermanentError ? 'permanent' : err instanceof RetryableError ? 'retryable' : 'error';
          metrics.pluginFailed.inc({ plugin: s.name, reason });
          span.recordException(err instanceof Error ? err : new Error(String(err)));
          span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(err) });
          const permanent = err instanceof PermanentError;
          if (permanent || attempt >= s.policy.maxDeliveries) {
            const reason = permanent ? errorMessage(err) : `max deliveries (${s.policy.maxDeliveries}) exhausted: ${errorMessage(err)}`;
            await this.deadLetter(s, m, { ...base, ...ids, reason });
          } else {
            const delay = err instanceof RetryableError && err.delayMs !== undefined ? err.delayMs : backoffFor(s.policy, attempt);
            s.log.debug({ eventId: event.id, attempt, delay, err: errorMessage(err) }, 'handler failed; retrying later');
            m.nak(delay);
            metrics.pluginRetried.inc({ plugin: s.name });
          }
        } finally {
          metrics.pluginDuration.observe({ plugin: s.name }, Number(process.hrtime.bigint() - t0) / 1e9);
          span.end();
        }
      },
    );
  }

  /**
   * Reads a message for slot `s`, by one rule in both modes: the envelope must be a catalog event, and then, only
   * for the plugin's own types, its `data` must match that type — a hand-published or buggy event would otherwise
   * reach the handler and fail somewhere deep (or, worse, not fail). The handler still gets `data` as published,
   * extra fields included (checkEventData only checks). A malformed event is counted here; what becomes of it is
   * the mode's business.
   */
  private decode(s: Slot, m: JsMsg): Decoded {
    let event: AnyEvent;
    try {
      event = EnvelopeSchema.parse(JSON.parse(decoder.decode(m.data))) as AnyEvent;
    } catch (err) {
      metrics.pluginFailed.inc({ plugin: s.name, reason: 'malformed' });
      return { malformed: malformedReason(err) };
    }
    if (!s.types.has(event.type)) return { foreign: true };
    const invalid = checkEventData(event);
    if (invalid) {
      metrics.pluginFailed.inc({ plugin: s.name, reason: 'malformed' });
      return { malformed: malformedReason(invalid, event.type), ids: { eventId: event.id, eventType: event.type } };
    }
    return { event };
  }

  private async deadLetter(
    s: Slot,
    m: JsMsg,
    d: { subject: string; streamSeq: number; attempts: number; reason: string; eventId?: string; eventType?: string; retryOf?: string | undefined },
  ): Promise<void> {
    try {
      await publishDeadLetter(this.hub.bus, {
        plugin: s.name,
        data: m.data,
        original: m.headers,
        subject: d.subject,
        streamSeq: d.streamSeq,
        attempts: d.attempts,
        reason: d.reason,
        ...(d.eventId ? { eventId: d.eventId } : {}),
        ...(d.eventType ? { eventType: d.eventType } : {}),
        ...(d.retryOf ? { retryOf: d.retryOf } : {}),
      });
      m.term();
      metrics.pluginDeadLettered.inc({ plugin: s.name });
      s.log.warn({ eventId: d.eventId, type: d.eventType, reason: d.reason, attempts: d.attempts }, 'event dead-lettered');
    } catch (err) {
      // Keep the event: the delivery reserved for the hand-off (max_deliver = policy + 1) tries again.
      s.log.error({ eventId: d.eventId, err: errorMessage(err) }, 'dead-letter publish failed; will try again');
      m.nak(backoffFor(s.policy, 1));
    }
  }

  // ---- broadcast mode -------------------------------------------------------------------------------------

  private async openBroadcast(s: Slot): Promise<void> {
    const ns = this.hub.bus.namespace;
    const groups: Array<[string, EventType[]]> = [
      [this.names.events, [...s.types].filter(isDurable)],
      [this.names.ephemeral, [...s.types].filter((t) => !isDurable(t))],
    ];
    for (const [stream, types] of groups) {
      if (!types.length) continue;
      const filter = singleFilterFor(types, ns);
      const c = await this.hub.bus.js.consumers.get(stream, {
        deliver_policy: DeliverPolicy.New,
        ...(filter ? { filterSubjects: filter } : {}),
      });
      const it = await c.consume({ max_messages: Math.max(64, s.concurrency * 8) });
      s.iters.push(it);
      void this.readBroadcast(s, it);
    }
    s.status = 'running';
  }

  private async readBroadcast(s: Slot, it: ConsumerMessages): Promise<void> {
    try {
      for await (const m of it) {
        if (this.stopping) break;
        while (s.active >= s.concurrency && !this.stopping) await s.wake.wait();
        this.launch(s, () => this.processBroadcast(s, m));
      }
    } catch (err) {
      if (!this.stopping) s.log.warn({ err: errorMessage(err) }, 'broadcast consumer ended');
    }
  }

  private async driveBroadcast(s: Slot): Promise<void> {
    let open = !s.control.paused;
    while (!this.stopping && !this.hub.bus.nc.isClosed()) {
      if (s.control.paused && open) {
        for (const it of s.iters.splice(0)) it.stop();
        open = false;
        s.status = 'paused';
      } else if (!s.control.paused && !open) {
        try {
          await this.openBroadcast(s);
          open = true;
        } catch (err) {
          s.log.warn({ err: errorMessage(err) }, 'broadcast consumer could not start; retrying');
          await s.wake.wait(1000);
          continue;
        }
      }
      await s.wake.wait();
    }
  }

  private async processBroadcast(s: Slot, m: JsMsg): Promise<void> {
    const read = this.decode(s, m);
    if ('foreign' in read) return;
    // With no dead letters in this mode, the warning is the only trace of a malformed event.
    if ('malformed' in read) {
      s.log.warn({ subject: m.subject, ...(read.ids ? { eventId: read.ids.eventId } : {}), reason: read.malformed }, 'malformed event skipped');
      return;
    }
    const event = read.event;
    await tracer.startActiveSpan(
      `${s.name} process ${event.type}`,
      {
        kind: SpanKind.CONSUMER,
        attributes: { ...consumerSpanAttributes(s.name, m.subject, event.id, event.type), 'voxa.delivery.source': 'broadcast' },
      },
      contextFromHeaders(m.headers),
      async (span) => {
        const t0 = process.hrtime.bigint();
        try {
          await s.plugin.handle(event, { attempt: 1, streamSeq: m.seq, subject: m.subject, source: 'broadcast', dedupeKey: event.id });
          metrics.pluginProcessed.inc({ plugin: s.name });
        } catch (err) {
          metrics.pluginFailed.inc({ plugin: s.name, reason: err instanceof PermanentError ? 'permanent' : err instanceof RetryableError ? 'retryable' : 'error' });
          span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(err) });
          s.log.warn({ eventId: event.id, err: errorMessage(err) }, 'broadcast handler failed (no retries in broadcast mode)');
        } finally {
          metrics.pluginDuration.observe({ plugin: s.name }, Number(process.hrtime.bigint() - t0) / 1e9);
          span.end();
        }
      },
    );
  }

  // ---- metrics --------------------------------------------------------------------------------------------

  private async refreshGauges(): Promise<void> {
    if (this.stopping || this.hub.bus.nc.isClosed()) return;
    for (const s of this.slots.values()) {
      if (s.mode !== 'shared') continue;
      try {
        const ci = await this.hub.bus.jsm.consumers.info(this.names.events, consumerName(s.name, s.control.generation));
        metrics.pluginConsumerPending.set({ plugin: s.name }, ci.num_pending);
        metrics.pluginConsumerAckPending.set({ plugin: s.name }, ci.num_ack_pending);
      } catch {
        // Consumer being rebound (rewind); the next refresh catches up.
      }
    }
  }
}
