/**
 * Write leases for storage sync: one writer at a time per sync target (a conversation's transcript, an
 * attachment, a day's backup of one connection), across every process that syncs: the hub's plugin, a
 * `voxa worker`, a `voxa connections backfill`. A lease is a Redis key (`SET NX PX` with a random token) under
 * the hub's prefix, kept alive while its holder works and deleted by that holder only (compare and delete).
 *
 * A key with a TTL can run out under a holder that stalls (a long GC or a frozen VM) while another process
 * takes the target over. So the holder checks, right before each side effect (the upload, then the sync
 * record), that the key is still its own, and stops with LeaseLostError when it is not. That leaves the gap
 * between a check and the write it guards. What lands in that gap is never a second file (a Drive create
 * reuses the reserved id recorded in the store; a Dropbox path is the same path), and the writer's next check
 * fails, so it redoes its work under a new lease and the current content is written last (StorageSync.exclusive).
 * Only a writer that stalls past the TTL inside that gap and then dies before its next check can leave an
 * older render behind, until the conversation's next change.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { RetryableError } from '../runtime/types.js';

/** KEYS[1] the lease, ARGV[1] the holder's token, ARGV[2] the TTL (ms): extends it only for its holder. */
const EXTEND = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`;
/** KEYS[1] the lease, ARGV[1] the holder's token: deletes it only for its holder. */
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;

export interface LeaseOptions {
  /** How long a lease lasts without being renewed; renewed every third of it while held. */
  ttlMs: number;
  /** How long acquire() waits for another holder to finish before giving up (RetryableError). */
  waitMs: number;
  /**
   * Renewals stop after this long, so a holder wedged on a call that never returns cannot keep the target
   * from everyone for ever (every provider call times out after 30 s, so a real write never gets near it).
   */
  maxHoldMs: number;
}

export const LEASE_DEFAULTS: LeaseOptions = { ttlMs: 30_000, waitMs: 120_000, maxHoldMs: 5 * 60_000 };

/** The lease was gone (expired, taken over) at a check: whatever the holder did since may be stale. */
export class LeaseLostError extends Error {
  constructor(readonly target: string) {
    super(`lost the write lease on ${target}`);
    this.name = 'LeaseLostError';
  }
}

export class Lease {
  private lost = false;
  private readonly timer: NodeJS.Timeout;
  private readonly until: number;

  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    readonly target: string,
    private readonly token: string,
    private readonly opts: LeaseOptions,
  ) {
    this.until = Date.now() + opts.maxHoldMs;
    // A failed renewal (Redis briefly away) is not a loss by itself: the next check asks Redis again.
    this.timer = setInterval(() => void this.extend().catch(() => undefined), Math.max(1, Math.floor(opts.ttlMs / 3)));
    this.timer.unref();
  }

  private async extend(): Promise<boolean> {
    if (this.lost) return false;
    const held =
      Date.now() <= this.until
        ? (await this.redis.eval(EXTEND, 1, this.key, this.token, String(this.opts.ttlMs))) === 1
        : // Past maxHoldMs: no more renewals, the key runs out by itself; until then it is still ours.
          (await this.redis.get(this.key)) === this.token;
    if (!held) {
      this.lost = true;
      clearInterval(this.timer);
    }
    return held;
  }

  /**
   * The fencing check, right before a side effect: throws LeaseLostError when the lease is no longer ours, and
   * RetryableError when Redis cannot say (nothing is written without knowing).
   */
  async check(): Promise<void> {
    let held: boolean;
    try {
      held = await this.extend();
    } catch (err) {
      throw new RetryableError(`could not confirm the write lease on ${this.target}: ${(err as Error).message}`);
    }
    if (!held) throw new LeaseLostError(this.target);
  }

  /** Ends the lease (only if still ours). Never throws: an undeleted key expires by itself. */
  async release(): Promise<void> {
    clearInterval(this.timer);
    if (this.lost) return;
    this.lost = true;
    await this.redis.eval(RELEASE, 1, this.key, this.token).catch(() => undefined);
  }
}

export class Leases {
  private readonly opts: LeaseOptions;

  /** `prefix` is the hub's Redis prefix (`voxa:<namespace>`), so hubs sharing a Redis do not meet. */
  constructor(
    private readonly redis: Redis | null,
    private readonly prefix: string,
    opts: Partial<LeaseOptions> = {},
  ) {
    this.opts = { ...LEASE_DEFAULTS, ...opts };
  }

  /** Takes the lease on `target`, waiting (polling with growing pauses) while another holder has it. */
  async acquire(target: string): Promise<Lease> {
    if (!this.redis) throw new Error('storage sync needs Redis (REDIS_URL) for its write leases');
    const key = `${this.prefix}:storage-lease:${target}`;
    const token = randomUUID();
    const deadline = Date.now() + this.opts.waitMs;
    for (let pause = 20; ; pause = Math.min(pause * 2, 500)) {
      if ((await this.redis.set(key, token, 'PX', this.opts.ttlMs, 'NX')) === 'OK') return new Lease(this.redis, key, target, token, this.opts);
      if (Date.now() >= deadline) throw new RetryableError(`${target} is still being written by another sync after ${Math.round(this.opts.waitMs / 1000)} s`, 5000);
      await sleep(pause / 2 + Math.random() * (pause / 2));
    }
  }
}
