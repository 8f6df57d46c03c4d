/**
 * Fixed-window rate limits in Redis, shared by every process. When Redis is unreachable the limiter fails
 * open: chat goes on, only the limit is not enforced (and a warning is logged once per minute).
 *
 * Hits on the same key that arrive in the same turn of the event loop are counted with ONE script call
 * (INCRBY n), and each hit then gets the count it would have seen had it done its own INCR, in arrival
 * order: the decisions are the same as one round trip per hit, for a fraction of the Redis traffic. Every
 * hit still waits for Redis, so the limit holds across processes exactly as before. The script is sent by
 * SHA (EVALSHA), not as text on every call.
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { VoxaError } from './errors.js';

/**
 * KEYS[1] the counter, ARGV[1] hits to add, ARGV[2] window (ms). Returns {count, ttl ms}. A counter that has
 * no expiry (fresh, or one that somehow lost it) gets the window, so no key can block forever.
 */
const SCRIPT = `
local n = redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {n, ttl}
`;

const COMMAND = 'voxaRateHit';

type RateHitCommand = (key: string, hits: number, windowMs: number) => Promise<[number, number]>;

/** Hits on one key waiting for the next flush; each waiter learns [its own count, ttl], or null (fail open). */
interface Batch {
  key: string;
  windowMs: number;
  waiters: Array<(res: [number, number] | null) => void>;
}

export class RateLimiter {
  private lastWarn = 0;
  private batches = new Map<string, Batch>();
  private flushScheduled = false;

  constructor(
    private readonly redis: Redis | null,
    private readonly prefix: string,
    private readonly log?: Logger,
  ) {
    if (redis && typeof (redis as unknown as Record<string, unknown>)[COMMAND] !== 'function') {
      // ioredis sends EVALSHA and falls back to EVAL once when the server does not know the script yet.
      redis.defineCommand(COMMAND, { numberOfKeys: 1, lua: SCRIPT });
    }
  }

  /**
   * Counts one hit on `key`; throws RATE_LIMITED (with Retry-After) once more than `limit` hits fall in the
   * current window.
   */
  async hit(key: string, limit: number, windowMs = 60_000): Promise<void> {
    if (!this.redis || this.redis.status !== 'ready') return this.warn('redis not ready');
    const res = await this.count(`${this.prefix}rl:${key}`, windowMs);
    if (!res) return;
    const [count, ttl] = res;
    if (count > limit) {
      const retryAfter = Math.max(1, Math.ceil(ttl / 1000));
      throw new VoxaError('RATE_LIMITED', `Too many requests; retry in ${retryAfter}s.`, { retryAfter }, { 'Retry-After': String(retryAfter) });
    }
  }

  /** Forgets the counter (e.g. after a successful login). */
  async reset(key: string): Promise<void> {
    if (!this.redis || this.redis.status !== 'ready') return;
    await this.redis.del(`${this.prefix}rl:${key}`).catch(() => undefined);
  }

  /** Joins this turn's batch for the key; resolves with the count this hit made, or null when Redis failed. */
  private count(key: string, windowMs: number): Promise<[number, number] | null> {
    const id = `${windowMs}:${key}`;
    let batch = this.batches.get(id);
    if (!batch) {
      batch = { key, windowMs, waiters: [] };
      this.batches.set(id, batch);
    }
    const waiters = batch.waiters;
    const p = new Promise<[number, number] | null>((resolve) => waiters.push(resolve));
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // After the I/O callbacks of this turn, so every request that arrived together shares the call.
      setImmediate(() => this.flush());
    }
    return p;
  }

  private flush(): void {
    this.flushScheduled = false;
    const batches = this.batches;
    this.batches = new Map();
    const run = (this.redis as unknown as Record<string, RateHitCommand>)[COMMAND]!;
    for (const b of batches.values()) {
      const n = b.waiters.length;
      run.call(this.redis, b.key, n, b.windowMs).then(
        ([total, ttl]) => {
          // Hit i (0-based, arrival order) is the one that took the counter to total - n + 1 + i.
          const first = Number(total) - n + 1;
          b.waiters.forEach((resolve, i) => resolve([first + i, Number(ttl)]));
        },
        (err: unknown) => {
          this.warn((err as Error).message);
          for (const resolve of b.waiters) resolve(null);
        },
      );
    }
  }

  private warn(reason: string): void {
    if (Date.now() - this.lastWarn > 60_000) {
      this.lastWarn = Date.now();
      this.log?.warn({ reason }, 'rate limiter unavailable; failing open');
    }
  }
}
