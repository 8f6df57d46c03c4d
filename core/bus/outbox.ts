/**
 * The outbox relay: publishes committed events, deletes their outbox rows once JetStream acked them, and sweeps
 * for rows that were committed but never confirmed (the process died, NATS was down, an ack timed out).
 * `Nats-Msg-Id` = event id makes republishing within the stream's duplicate window invisible; consumers are
 * idempotent by event id beyond it.
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

export class OutboxRelay {
  private toDelete: string[] = [];
  private flushTimer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private sweeping = false;
  private flushing: Promise<void> = Promise.resolve();
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
   * Publishes freshly committed entries. Resolves when all were acked, or rejects with the first failure; in
   * both cases nothing is lost: an unacked entry stays in the outbox for the sweeper. With `stored: false` the
   * entries were never written to the outbox (best-effort events: receipts, login audit), so there is no row
   * to delete afterwards and a failure is simply the caller's to ignore.
   */
  async dispatch(entries: OutboxEntry[], opts: { stored?: boolean } = {}): Promise<PublishAck[]> {
    if (!this.publisher.isConnected) throw new Error('NATS is not connected; a stored entry is left to the outbox sweeper');
    const stored = opts.stored ?? true;
    return Promise.all(entries.map((e) => this.publishOne(e, stored)));
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

  /** One pass over unconfirmed entries older than the grace period. Returns how many were republished. */
  async sweep(): Promise<number> {
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
    if (count > 0) this.log?.info({ count }, 'outbox republished events');
    return count;
  }

  async stop(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    await this.flush();
  }
}
