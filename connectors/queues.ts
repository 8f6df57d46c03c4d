/**
 * One BullMQ queue per connector, for every external call that needs a rate limit, a retry schedule, a delay
 * or a repeatable schedule. Keys live under `voxa:<namespace>` (the BullMQ prefix), so hubs and tests sharing a
 * Redis do not see each other's jobs.
 *
 * Retries: a job's processor throws RetryableError (with a delay, e.g. from Retry-After), PermanentError
 * (no more attempts: BullMQ's UnrecoverableError) or anything else (retried with exponential backoff and
 * jitter). Failed jobs are kept (the newest 5000) so `retry` can re-run them. A provider 429 pauses the
 * whole connector queue for the Retry-After time (worker.rateLimit), which is what per-account quotas need.
 */
import { Queue, UnrecoverableError, Worker, type Job, type JobsOptions, type Processor } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Hub } from '../core/hub.js';
import { redisPrefix } from '../core/redis-keys.js';
import { CONNECTOR_JOB_STATES, initConnectorSeries, metrics } from '../core/telemetry/metrics.js';
import { PermanentError, RetryableError } from '../plugins/runtime/types.js';
import { backoffWithJitter } from './types.js';

/** Thrown by a processor when the provider said "slow down": pauses the queue for `delayMs`, no attempt used. */
export class RateLimitedError extends Error {
  constructor(
    message: string,
    readonly delayMs: number,
  ) {
    super(message);
    this.name = 'RateLimitedError';
  }
}

export interface WorkerOptions {
  concurrency?: number;
  /** Provider quota: at most `max` jobs per `durationMs` across all workers of this connector. */
  limiter?: { max: number; durationMs: number };
  /** Delay before retry n (1-based); default exponential from 1 s with jitter, capped at 15 min. */
  backoff?: (attempt: number, err: Error | undefined, job: Job | undefined) => number;
}

const DEFAULT_JOB: JobsOptions = {
  attempts: 10,
  backoff: { type: 'voxa' },
  removeOnComplete: { age: 3600, count: 1000 },
  removeOnFail: { count: 5000 },
};

export interface QueuesOptions {
  /**
   * How long close() waits for the jobs in flight and for Redis before it returns anyway (default 10 s), leaving
   * the rest of the close to finish in the background. A Redis that stops answering would otherwise hold
   * close(), and with it a hub's whole stop, for ever; a job in flight then counts as stalled and runs again.
   */
  closeGraceMs?: number;
}

export class ConnectorQueues {
  private readonly queues = new Map<string, Queue>();
  private readonly workers = new Map<string, Worker>();
  private readonly connections: Redis[] = [];
  private sampler: NodeJS.Timeout | null = null;
  private closing: Promise<void> | null = null;
  readonly prefix: string;

  constructor(
    private readonly hub: Pick<Hub, 'redis' | 'config' | 'log'>,
    private readonly opts: QueuesOptions = {},
  ) {
    this.prefix = redisPrefix(hub.config.natsNamespace);
  }

  private connection(): Redis {
    if (!this.hub.redis) throw new Error('connector queues need Redis (REDIS_URL)');
    // A queue opened after close() would hold a connection nobody closes.
    if (this.closing) throw new Error('connector queues are closed');
    // BullMQ needs maxRetriesPerRequest null and no command timeout (its blocking commands wait on purpose, and
    // must not be cut off) and an offline queue. Friendly stacks name the caller of a failed command.
    const c = this.hub.redis.duplicate({ maxRetriesPerRequest: null, enableOfflineQueue: true, showFriendlyErrorStack: true, commandTimeout: undefined });
    c.on('error', () => undefined); // reported by /readyz through the hub's own connection; ioredis retries
    this.connections.push(c);
    return c;
  }

  /** The queue name is the connector id; the namespace is in the key prefix. */
  queue(connector: string): Queue {
    let q = this.queues.get(connector);
    if (!q) {
      q = new Queue(connector, { connection: this.connection(), prefix: this.prefix, defaultJobOptions: DEFAULT_JOB });
      this.queues.set(connector, q);
      initConnectorSeries([connector]);
    }
    return q;
  }

  async add(connector: string, name: string, data: unknown, opts: JobsOptions = {}): Promise<Job> {
    return this.queue(connector).add(name, data, opts);
  }

  /** Starts the worker for a connector (once per process). */
  work(connector: string, processor: Processor, opts: WorkerOptions = {}): Worker {
    const existing = this.workers.get(connector);
    if (existing) return existing;
    this.queue(connector);
    const backoff = opts.backoff ?? ((n: number) => backoffWithJitter(n));
    const wrapped: Processor = async (job, token) => {
      const end = metrics.connectorJobDuration.startTimer({ connector });
      try {
        return await processor(job, token);
      } catch (err) {
        if (err instanceof RateLimitedError) {
          metrics.connectorRateLimited.inc({ connector });
          await worker.rateLimit(err.delayMs);
          throw Worker.RateLimitError();
        }
        if (err instanceof PermanentError) throw new UnrecoverableError(err.message);
        throw err;
      } finally {
        end();
      }
    };
    // `wrapped` refers to `worker` only when a job runs, after this assignment.
    const worker: Worker = new Worker(connector, wrapped, {
      connection: this.connection(),
      prefix: this.prefix,
      concurrency: opts.concurrency ?? 4,
      ...(opts.limiter ? { limiter: { max: opts.limiter.max, duration: opts.limiter.durationMs } } : {}),
      settings: {
        backoffStrategy: (attemptsMade: number, _type?: string, err?: Error, job?: unknown) => {
          const planned = backoff(attemptsMade, err, job as Job | undefined);
          // A retryable error may carry the far end's Retry-After; never retry sooner than that.
          const asked = err instanceof RetryableError && err.delayMs !== undefined ? err.delayMs : 0;
          return Math.max(planned, asked);
        },
      },
    });
    worker.on('completed', () => metrics.connectorJobs.inc({ connector, outcome: 'completed' }));
    worker.on('failed', (job, err) => {
      if (!job) return;
      const final = err instanceof UnrecoverableError || err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
      metrics.connectorJobs.inc({ connector, outcome: final ? 'failed' : 'retried' });
      this.hub.log.warn({ connector, jobId: job.id, job: job.name, attempt: job.attemptsMade, final, reason: err.message }, 'connector job failed');
    });
    worker.on('error', (err) => this.hub.log.error({ connector, err: err.message }, 'connector worker error'));
    this.workers.set(connector, worker);
    this.startSampler();
    return worker;
  }

  /** Counts per state, also exported as voxa_connector_queue_jobs. */
  async depth(connector: string): Promise<Record<string, number>> {
    const counts = await this.queue(connector).getJobCounts(...CONNECTOR_JOB_STATES);
    for (const state of CONNECTOR_JOB_STATES) metrics.connectorQueueJobs.set({ connector, state }, counts[state] ?? 0);
    return counts;
  }

  private startSampler(): void {
    if (this.sampler) return;
    this.sampler = setInterval(() => {
      for (const c of this.queues.keys()) this.depth(c).catch(() => undefined);
    }, 5000);
    this.sampler.unref();
  }

  /**
   * Re-queues a connector's failed jobs (all, or those whose name matches, and that `match` accepts, e.g. the
   * jobs of one connection). Returns how many.
   */
  async retryFailed(connector: string, name?: string, match?: (job: Job) => boolean): Promise<number> {
    const failed = await this.queue(connector).getFailed(0, 5000);
    let n = 0;
    for (const job of failed) {
      if (name && job.name !== name) continue;
      if (match && !match(job)) continue;
      await job.retry('failed');
      n++;
    }
    return n;
  }

  /**
   * Closes workers (waiting for the jobs they are running), then queues, then the Redis connections. Safe to
   * call more than once; after it, `queue()` and `work()` refuse instead of opening new connections.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    if (this.sampler) clearInterval(this.sampler);
    const parts = { workers: [...this.workers.values()], queues: [...this.queues.values()], connections: [...this.connections] };
    this.connections.length = 0;
    this.workers.clear();
    this.queues.clear();
    await closeBullmq(parts, { graceMs: this.opts.closeGraceMs ?? CLOSE_GRACE_MS, log: this.hub.log, what: 'connector queues' });
  }
}

/** BullMQ objects and the Redis connections they were given, for closeBullmq. */
export interface BullmqParts {
  workers?: Worker[];
  queues?: Queue[];
  /** Connections passed to the Queues and Workers as instances: BullMQ never closes those itself. */
  connections?: Redis[];
}

/**
 * Closes BullMQ workers (waiting for the jobs they are running), then queues, then their Redis connections, and
 * returns after `graceMs` at the latest, leaving the rest to finish in the background. Every owner of BullMQ
 * objects closes them through this, so no stop waits on a Redis that stopped answering. Resolves true when the
 * close finished within the grace.
 */
export async function closeBullmq(parts: BullmqParts, opts: { graceMs?: number; log: Pick<Logger, 'warn'>; what: string }): Promise<boolean> {
  const workers = [...(parts.workers ?? [])];
  const queues = [...(parts.queues ?? [])];
  const connections = [...(parts.connections ?? [])];
  const graceMs = opts.graceMs ?? CLOSE_GRACE_MS;
  // Every BullMQ connection starts with a Redis version check (INFO). Closing a Queue or Worker while that is
  // in flight rejects it with "Connection is closed" after close() has removed the connection's error
  // listeners, and BullMQ's own handler then rethrows it as an unhandled rejection. So let start-up finish
  // first. Bounded: with Redis unreachable it never finishes, and closing must not hang on that.
  await settledWithin([...workers, ...queues].map((x) => x.waitUntilReady()), READY_WAIT_MS);
  const orderly = (async () => {
    await Promise.all(workers.map((w) => w.close()));
    await Promise.all(queues.map((q) => q.close()));
    // QUIT lets replies to commands still in flight arrive, where a hard disconnect would reject them.
    await Promise.all(connections.map((c) => c.quit().catch(() => c.disconnect())));
  })();
  if (await settledWithin([orderly], graceMs)) return true;
  // Redis does not answer (or a job does not end). The close goes on in the background and finishes when
  // Redis answers again; a process that is stopping exits without it, and the job in flight counts as
  // stalled and runs again elsewhere. Cutting the connections instead would not end it: BullMQ retries a
  // job's completion without a pause while closing, so a closed connection turns the wait into a busy loop.
  opts.log.warn({ graceMs }, `${opts.what}: close did not finish in time (Redis not answering?); leaving it to finish in the background`);
  return false;
}

/** How long closeBullmq lets connections finish starting up. */
const READY_WAIT_MS = 5000;
/** How long closeBullmq waits for jobs in flight and Redis before returning anyway (QueuesOptions). */
const CLOSE_GRACE_MS = 10_000;

/** Waits until the promises have all settled, or `ms` has passed; true when they settled. */
async function settledWithin(promises: Array<Promise<unknown>>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
    timer.unref();
  });
  const settled = await Promise.race([Promise.allSettled(promises).then(() => true as const), timeout]);
  clearTimeout(timer);
  return settled;
}
