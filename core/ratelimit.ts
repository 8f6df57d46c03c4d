/**
 * Fixed-window rate limits in Redis, shared by every process. When Redis is unreachable the limiter fails
 * open: chat goes on, only the limit is not enforced (and a warning is logged once per minute).
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { VoxaError } from './errors.js';

const SCRIPT = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
`;

export class RateLimiter {
  private lastWarn = 0;
  constructor(
    private readonly redis: Redis | null,
    private readonly prefix: string,
    private readonly log?: Logger,
  ) {}

  /**
   * Counts one hit on `key`; throws RATE_LIMITED (with Retry-After) once more than `limit` hits fall in the
   * current window.
   */
  async hit(key: string, limit: number, windowMs = 60_000): Promise<void> {
    if (!this.redis || this.redis.status !== 'ready') return this.warn('redis not ready');
    let res: [number, number];
    try {
      res = (await this.redis.eval(SCRIPT, 1, `${this.prefix}rl:${key}`, String(windowMs))) as [number, number];
    } catch (err) {
      return this.warn((err as Error).message);
    }
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

  private warn(reason: string): void {
    if (Date.now() - this.lastWarn > 60_000) {
      this.lastWarn = Date.now();
      this.log?.warn({ reason }, 'rate limiter unavailable; failing open');
    }
  }
}
