/**
 * Fixed-window rate limits in Redis, shared by every process. When Redis is unreachable (or stops answering)
 * the limiter falls back to counting in this process: chat and logins go on, and every limit still holds per
 * process (so a brute-force attempt on a login or a two-factor code stays limited during a Redis outage); only
 * the sharing across processes is lost until Redis is back. A warning is logged once per minute.
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

/** After a failed Redis call, how long hits are counted in this process without asking Redis (see RateLimiter.available). */
const FAIL_OPEN_PAUSE_MS = 5000;

/**
 * KEYS[1] the counter, ARGV[1] hits wanted, ARGV[2] the limit, ARGV[3] window (ms). Grants as many of the
 * wanted hits as the window still allows (never past the limit) and returns {granted, ttl ms}. Unlike SCRIPT,
 * refused hits are not counted: a lease that cannot be filled takes nothing.
 */
const LEASE_SCRIPT = `
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local grant = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - cur)
if grant < 0 then grant = 0 end
if grant > 0 then redis.call('INCRBY', KEYS[1], grant) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  if grant > 0 or cur > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
  ttl = tonumber(ARGV[3])
end
return {grant, ttl}
`;

const LEASE_COMMAND = 'voxaRateLease';

type RateLeaseCommand = (key: string, want: number, limit: number, windowMs: number) => Promise<[number, number]>;

/** The RATE_LIMITED error for a window that ends in `ttlMs`, with its Retry-After. */
function limited(ttlMs: number): VoxaError {
  const retryAfter = Math.max(1, Math.ceil(ttlMs / 1000));
  return new VoxaError('RATE_LIMITED', `Too many requests; retry in ${retryAfter}s.`, { retryAfter }, { 'Retry-After': String(retryAfter) });
}

/** Largest share of a window's allowance one process takes ahead: a sixteenth of the limit, at most 64. */
export function leaseCap(limit: number): number {
  return Math.max(1, Math.min(64, Math.floor(limit / 16)));
}

/**
 * One process's share of a key's allowance in the current window. `tokens` hits may pass without asking Redis
 * until `expiresAt`; `size` is how many to take ahead next time (doubles while the key stays busy).
 */
interface Lease {
  tokens: number;
  expiresAt: number;
  size: number;
  inflight: boolean;
  /** Hits waiting for the request in flight; each learns true (pass), false (limited) or null (Redis failed: count locally). */
  waiters: Array<(res: { ok: boolean | null; ttl: number }) => void>;
  limit: number;
  windowMs: number;
}

type RateHitCommand = (key: string, hits: number, windowMs: number) => Promise<[number, number]>;

/** Hits on one key waiting for the next flush; each waiter learns [its own count, ttl], or null (Redis failed: count locally). */
interface Batch {
  key: string;
  windowMs: number;
  waiters: Array<(res: [number, number] | null) => void>;
}

/** A key's count in this process's own fixed window, used while Redis is unavailable. */
interface LocalWindow {
  count: number;
  resetAt: number;
  /** A key has one window, as it has one counter in Redis: another window length starts a fresh count. */
  windowMs: number;
}

/** Most keys counted locally at once; the oldest window is forgotten first beyond it. */
const MAX_LOCAL_KEYS = 10_000;

export class RateLimiter {
  private lastWarn = 0;
  /** Counts while Redis is unavailable, by key. */
  private local = new Map<string, LocalWindow>();
  /** Until when hits pass without asking Redis, after a failed call (epoch ms). */
  private pausedUntil = 0;
  private batches = new Map<string, Batch>();
  private flushScheduled = false;
  /** Each key's lease (a key has one counter in Redis, whatever its window). */
  private leases = new Map<string, Lease>();

  constructor(
    private readonly redis: Redis | null,
    private readonly prefix: string,
    private readonly log?: Logger,
  ) {
    if (redis && typeof (redis as unknown as Record<string, unknown>)[COMMAND] !== 'function') {
      // ioredis sends EVALSHA and falls back to EVAL once when the server does not know the script yet.
      redis.defineCommand(COMMAND, { numberOfKeys: 1, lua: SCRIPT });
    }
    if (redis && typeof (redis as unknown as Record<string, unknown>)[LEASE_COMMAND] !== 'function') {
      redis.defineCommand(LEASE_COMMAND, { numberOfKeys: 1, lua: LEASE_SCRIPT });
    }
  }

  /**
   * Like hit(), for a hot key such as a user's sends: this process takes a small share of the window's
   * allowance from Redis ahead of use (see leaseCap) and lets hits pass from it without a round trip,
   * fetching the next share in the background before this one runs out. Redis still counts every hit that
   * passes, in every process, so no window ever lets more than `limit` through; the price is that a key used
   * from several processes at once may be refused up to one share early. Small limits (under 32) lease one
   * hit at a time, which is exactly hit()'s behaviour. Returns undefined when the hit passed synchronously.
   */
  take(key: string, limit: number, windowMs = 60_000): Promise<void> | undefined {
    if (!this.available()) {
      this.warn('redis not ready');
      try {
        return this.localHit(key, limit, windowMs);
      } catch (err) {
        return Promise.reject(err);
      }
    }
    let lease = this.leases.get(key);
    // A key has one counter in Redis; a different window for it starts a fresh lease (one in flight finishes
    // on the old object, serving the hits that wait on it).
    if (!lease || lease.windowMs !== windowMs) {
      lease = { tokens: 0, expiresAt: 0, size: 1, inflight: false, waiters: [], limit, windowMs };
      if (!this.leases.has(key) && this.leases.size >= 10_000) this.leases.delete(this.leases.keys().next().value!);
      this.leases.set(key, lease);
    }
    lease.limit = limit;
    if (Date.now() >= lease.expiresAt) lease.tokens = 0;
    if (lease.tokens > 0 && lease.waiters.length === 0) {
      lease.tokens--;
      // Half used: fetch the next share now, so the hits after this one do not wait for it.
      if (!lease.inflight && lease.tokens * 2 < lease.size) this.refill(`${this.prefix}rl:${key}`, lease, false);
      return undefined;
    }
    const l = lease;
    return new Promise<{ ok: boolean | null; ttl: number }>((resolve) => {
      l.waiters.push(resolve);
      if (!l.inflight) this.refill(`${this.prefix}rl:${key}`, l, true);
    }).then(({ ok, ttl }) => {
      if (ok === false) throw limited(ttl);
      // Redis failed while this hit waited: this process counts it.
      if (ok === null) return this.localHit(key, limit, windowMs);
    });
  }

  /** Asks Redis for the waiting hits plus the next share, then serves the waiters in arrival order. */
  private refill(redisKey: string, lease: Lease, grow: boolean): void {
    lease.size = Math.min(leaseCap(lease.limit), grow ? lease.size * 2 : lease.size);
    const want = lease.waiters.length + lease.size;
    lease.inflight = true;
    const run = (this.redis as unknown as Record<string, RateLeaseCommand>)[LEASE_COMMAND]!;
    run.call(this.redis, redisKey, want, lease.limit, lease.windowMs).then(
      ([grantedRaw, ttlRaw]) => {
        lease.inflight = false;
        const granted = Number(grantedRaw);
        const ttl = Number(ttlRaw);
        const now = Date.now();
        // Tokens of a window that has ended are void; the new share belongs to the window Redis reported.
        if (now >= lease.expiresAt) lease.tokens = 0;
        lease.tokens += granted;
        lease.expiresAt = now + ttl;
        while (lease.waiters.length && lease.tokens > 0) {
          lease.tokens--;
          lease.waiters.shift()!({ ok: true, ttl });
        }
        if (!lease.waiters.length) return;
        if (granted < want) {
          // The window is full: everyone still waiting is over the limit.
          for (const w of lease.waiters.splice(0)) w({ ok: false, ttl });
        } else {
          this.refill(redisKey, lease, false);
        }
      },
      (err: unknown) => {
        lease.inflight = false;
        this.failed(err);
        for (const w of lease.waiters.splice(0)) w({ ok: null, ttl: 0 });
      },
    );
  }

  /**
   * Counts one hit on `key`; throws RATE_LIMITED (with Retry-After) once more than `limit` hits fall in the
   * current window.
   */
  async hit(key: string, limit: number, windowMs = 60_000): Promise<void> {
    if (!this.available()) {
      this.warn('redis not ready');
      return this.localHit(key, limit, windowMs);
    }
    const res = await this.count(`${this.prefix}rl:${key}`, windowMs);
    if (!res) return this.localHit(key, limit, windowMs);
    const [count, ttl] = res;
    if (count > limit) {
      throw limited(ttl);
    }
  }

  /** Forgets the counter (e.g. after a successful login). */
  async reset(key: string): Promise<void> {
    this.leases.delete(key);
    this.local.delete(key);
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
          this.failed(err);
          for (const resolve of b.waiters) resolve(null);
        },
      );
    }
  }

  /**
   * Counts one hit in this process's own window for the key (Redis is unavailable): throws RATE_LIMITED past
   * `limit`, like the shared counter would. Returns undefined (passed) synchronously.
   */
  private localHit(key: string, limit: number, windowMs: number): undefined {
    const now = Date.now();
    let w = this.local.get(key);
    if (!w || now >= w.resetAt || w.windowMs !== windowMs) {
      if (w) this.local.delete(key); // re-inserted below: the map stays in order of window start
      else if (this.local.size >= MAX_LOCAL_KEYS) this.local.delete(this.local.keys().next().value!);
      w = { count: 0, resetAt: now + windowMs, windowMs };
      this.local.set(key, w);
    }
    w.count++;
    if (w.count > limit) throw limited(w.resetAt - now);
    return undefined;
  }

  /**
   * Redis connected and not known to be stalled. After a command fails (a timeout, typically: the connection
   * is up but nothing answers), every hit passes without asking for a few seconds, so requests do not each
   * wait out the timeout; then the next hit tries again.
   */
  private available(): boolean {
    return !!this.redis && this.redis.status === 'ready' && Date.now() >= this.pausedUntil;
  }

  private failed(err: unknown): void {
    this.pausedUntil = Date.now() + FAIL_OPEN_PAUSE_MS;
    this.warn((err as Error).message);
  }

  private warn(reason: string): void {
    if (Date.now() - this.lastWarn > 60_000) {
      this.lastWarn = Date.now();
      this.log?.warn({ reason }, 'rate limiter cannot reach Redis; counting in this process until it can');
    }
  }
}
