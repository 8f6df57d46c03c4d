/**
 * The outbox relay: publishes committed events, deletes their outbox rows once JetStream acked them, and sweeps
 * for rows that were committed but never confirmed (the process died, NATS was down, an ack timed out).
 * `Nats-Msg-Id` = event id makes republishing within the stream's duplicate window invisible; consumers are
 * idempotent by event id beyond it.
 *
 * Order: events reach the stream in the order they were committed. Once a stored event could not be confirmed
 * (NATS went away, an ack timed out), the relay is "behind": newer events are not published past it, they stay
 * in the outbox, and the relay drains the outbox oldest first — at once, not after the sweeper's grace — until
 * it is empty; then direct publishing resumes. (Before, an event that failed waited for the grace while newer
 * ones went straight out, so consumers that keep stream order, such as webhooks, saw seq 29 before seq 22.) A
 * process also starts behind, so events an earlier run left in the outbox go out before its own.
 */
import type { Logger } from 'pino';
import type { OutboxEntry, Store } from '../store/port.js';
import type { JetStreamPublisher, PublishAck } from './nats.js';
import { metrics } from '../telemetry/metrics.js';
import { contextFromRecord, publishSpan } from '../telemetry/nats.js';
import { tracingActive } from '../telemetry/store.js';

export interface OutboxOptions {
  sweepMs: number;
  graceMs: number;
  batch?: number;
}

/** How late a row may be and still be drained: every row there is, whatever its age. */
const ANY_AGE = '9999-12-31T23:59:59.999Z';

/** A promise and its settlers, for callers waiting on the drain. */
interface Waiting {
  promise: Promise<void>;
  resolve: () => void;
  reject: (err: Error) => void;
}

function newWaiting(): Waiting {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Rejection is routine (the event waits in the outbox): a waiter that stopped listening must not crash the process.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

export class OutboxRelay {
  private toDelete: string[] = [];
  private flushTimer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private sweeping = false;
  private flushing: Promise<void> = Promise.resolve();
  /** An unconfirmed stored event exists: new ones wait in the outbox and the drain publishes all in order. */
  private behind = true;
  /** Counts events left to the drain, so it knows whether one arrived while it read the outbox. */
  private deferred = 0;
  /** Another drain pass was asked for while one ran. */
  private drainAgain = false;
  /**
   * The last drain pass could not publish (NATS connected but not answering: frozen, partitioned). Until a
   * pass succeeds, a new event is answered at once instead of waiting on a pass that will time out too.
   */
  private failing = false;
  /**
   * Callers waiting for the drain to publish their events: one promise for all who came since the drain last
   * read the outbox. A drain pass settles it (never later than the pass), so nothing waits across an outage.
   */
  private waiting: Waiting | null = null;
  /**
   * An outage was logged (a drain pass could not publish) and not yet its end: one warning when events start
   * waiting, one line when the relay has caught up, not a line per pass.
   */
  private outage: { since: number; republished: number } | null = null;
  /** Published and acked count, for metrics and tests. */
  published = 0;
  republished = 0;

  constructor(
    private readonly store: Store,
    private readonly publisher: JetStreamPublisher,
    private readonly opts: OutboxOptions,
    private readonly log?: Logger,
  ) {}

  /**
   * Publishes freshly committed entries. Resolves when all were acked (or, while the relay is behind, when the
   * drain has published them after every older event), or rejects with the first failure (at once while NATS
   * is not connected; when the drain pass meant to publish them fails); in no case is anything lost: an
   * unacked entry stays in the outbox for the drain. With `stored: false` the entries were
   * never written to the outbox (best-effort events: receipts, login audit), so there is no row to delete
   * afterwards, no order to keep, and a failure is simply the caller's to ignore.
   */
  dispatch(entries: OutboxEntry[], opts: { stored?: boolean } = {}): Promise<void> {
    if (opts.stored === false) {
      if (!this.publisher.isConnected) return Promise.reject(new Error('NATS is not connected; a best-effort event is dropped'));
      return Promise.all(entries.map((e) => this.publishOne(e, false))).then(() => undefined);
    }
    // Newer events never overtake one that is still unconfirmed: these wait in the outbox for the drain.
    if (!this.publisher.isConnected) {
      // Nothing can be published until NATS is back: the caller is told now rather than kept waiting.
      this.fallBehind();
      return Promise.reject(new Error('NATS is not connected; the event waits in the outbox'));
    }
    if (this.behind && this.failing) {
      this.fallBehind();
      return Promise.reject(new Error('NATS is not answering; the event waits in the outbox'));
    }
    if (this.behind) {
      this.waiting ??= newWaiting();
      const published = this.waiting.promise;
      this.fallBehind();
      return published;
    }
    return Promise.all(
      entries.map((e) =>
        this.publishOne(e).catch((err: unknown) => {
          this.fallBehind();
          throw err;
        }),
      ),
    ).then(() => undefined);
  }

  /** True while the last drain pass could not publish (NATS connected but not answering). */
  get isFailing(): boolean {
    return this.failing;
  }

  /** True while newer events wait in the outbox behind an unconfirmed one (see the file comment). */
  get isBehind(): boolean {
    return this.behind;
  }

  /** Marks the relay behind (an event was left to the drain) and starts a drain. */
  private fallBehind(): void {
    this.behind = true;
    this.deferred++;
    void this.drain();
  }

  private async publishOne(e: OutboxEntry, stored = true): Promise<PublishAck> {
    let ack: PublishAck;
    try {
      ack = tracingActive()
        ? // A producer span per publish, parented by the trace context stored with the row, so a republish by
          // the sweeper still lands in the trace of the request that committed the event.
          await publishSpan(
            e.subject,
            e.eventId,
            e.headers,
            (headers) => this.publisher.publish(e.subject, Buffer.from(e.payload), headers, e.eventId),
            { parent: contextFromRecord(e.headers), eventType: e.headers['Voxa-Event-Type'], bodySize: Buffer.byteLength(e.payload) },
          )
        : // Tracing off: no span to make, the row's headers go out as stored.
          await this.publisher.publish(e.subject, Buffer.from(e.payload), e.headers, e.eventId);
    } catch (err) {
      metrics.outboxPublishFailures.inc();
      throw err;
    }
    metrics.outboxPublished.inc();
    this.published++;
    if (stored) this.scheduleDelete(e.eventId);
    return ack;
  }

  /** Deletes of acked rows are batched: one statement for many sends. */
  private scheduleDelete(id: string): void {
    this.toDelete.push(id);
    if (this.toDelete.length >= 500) void this.flush();
    else if (!this.flushTimer) this.flushTimer = setTimeout(() => void this.flush(), 20);
  }

  flush(): Promise<void> {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    const ids = this.toDelete;
    this.toDelete = [];
    if (ids.length === 0) return this.flushing;
    this.flushing = this.flushing
      .then(() => this.store.outboxDelete(ids))
      .catch((err) => {
        // Rows stay; the sweeper republishes them and JetStream dedupes by id.
        this.log?.warn({ err }, 'outbox delete failed');
      });
    return this.flushing;
  }

  start(): void {
    if (this.sweepTimer) return;
    this.sweepTimer = setInterval(() => void this.sweep(), this.opts.sweepMs);
    this.sweepTimer.unref();
  }

  /**
   * One pass over unconfirmed entries older than the grace period (while behind: a drain of every entry, in
   * order). Returns how many were republished.
   */
  async sweep(): Promise<number> {
    if (this.behind) return this.drain();
    if (this.sweeping || !this.publisher.isConnected) return 0;
    this.sweeping = true;
    let count = 0;
    try {
      for (;;) {
        const olderThan = new Date(Date.now() - this.opts.graceMs).toISOString();
        const batch = await this.store.outboxPending(this.opts.batch ?? 500, olderThan);
        if (batch.length === 0) break;
        const results = await Promise.allSettled(batch.map((e) => this.publishOne(e)));
        const ok = results.filter((r) => r.status === 'fulfilled').length;
        count += ok;
        this.republished += ok;
        metrics.outboxRepublished.inc(ok);
        await this.flush();
        if (ok < batch.length) break; // NATS trouble: try again next tick
        if (batch.length < (this.opts.batch ?? 500)) break;
      }
    } catch (err) {
      this.log?.warn({ err }, 'outbox sweep failed');
    } finally {
      this.sweeping = false;
    }
    if (this.behind && this.drainAgain) {
      this.drainAgain = false;
      void this.drain();
    }
    if (count > 0) this.log?.info({ count }, 'outbox republished events');
    return count;
  }

  /**
   * Publishes every outbox row, oldest first, a batch at a time (a batch is pipelined on one connection, so it
   * lands in order). Stops at the first batch with a failure (the timer tries again). A read that returned
   * fewer rows than a batch, all published, covers every event committed before it began: the callers waiting
   * since then are answered, and if no event was left to the drain since that read began, the relay is caught
   * up. A pass that fails rejects its waiting callers (their events stay in the outbox for the next pass).
   */
  private async drain(): Promise<number> {
    if (this.sweeping) {
      this.drainAgain = true;
      return 0;
    }
    if (!this.publisher.isConnected) {
      this.noteOutage('NATS is disconnected');
      this.giveUp([]);
      return 0;
    }
    this.sweeping = true;
    const limit = this.opts.batch ?? 500;
    let count = 0;
    /** Callers whose events were committed before the current read began. */
    let served: Waiting[] = [];
    let failed = false;
    try {
      for (;;) {
        const seen = this.deferred;
        if (this.waiting) served.push(this.waiting);
        this.waiting = null;
        // Rows already acked leave first, so they are not sent again.
        await this.flush();
        const batch = await this.store.outboxPending(limit, ANY_AGE);
        const results = await Promise.allSettled(batch.map((e) => this.publishOne(e)));
        const ok = results.filter((r) => r.status === 'fulfilled').length;
        count += ok;
        this.republished += ok;
        metrics.outboxRepublished.inc(ok);
        if (this.outage) this.outage.republished += ok;
        if (ok < batch.length) {
          failed = true; // NATS trouble: the next sweep tries again
          const first = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
          this.noteOutage((first?.reason as Error | undefined)?.message ?? 'a publish failed');
          break;
        }
        if (batch.length < limit) {
          for (const w of served) w.resolve();
          served = [];
          if (seen === this.deferred) {
            this.behind = false;
            break;
          }
        }
      }
    } catch (err) {
      failed = true;
      this.log?.warn({ err }, 'outbox drain failed');
    } finally {
      this.sweeping = false;
    }
    if (!this.behind && this.outage) {
      this.log?.info({ republished: this.outage.republished, waitedMs: Date.now() - this.outage.since }, 'outbox caught up: every waiting event is published, in commit order');
      this.outage = null;
    }
    this.failing = failed;
    if (failed) this.giveUp(served);
    if (this.behind && this.drainAgain) {
      this.drainAgain = false;
      void this.drain();
    }
    return count;
  }

  /** Logs the start of an outage once; the end is logged when a drain catches up. */
  private noteOutage(reason: string): void {
    if (this.outage) return;
    this.outage = { since: Date.now(), republished: 0 };
    this.log?.warn({ reason }, 'outbox: NATS is not taking events; they wait in the outbox and go out in commit order when it does (sends still succeed)');
  }

  /** Rejects callers whose events a drain pass could not publish; the events stay in the outbox. */
  private giveUp(served: Waiting[]): void {
    if (this.waiting) served.push(this.waiting);
    this.waiting = null;
    const err = new Error('the outbox could not publish yet; the event waits there for the next drain');
    for (const w of served) w.reject(err);
  }

  async stop(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    await this.flush();
  }
}
