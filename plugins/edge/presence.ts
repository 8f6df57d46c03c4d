/**
 * Presence in Redis, per device with expiry.
 *
 * Keys (prefix `voxa:<namespace>:presence:`):
 *   user:<userId>  sorted set, member = deviceId, score = expiry time (ms)
 *   devices        sorted set, member = "<workspaceId>|<userId>|<deviceId>", score = expiry time (ms)
 *
 * A device joins with an expiry `ttlMs` ahead and every edge refreshes its own devices every `heartbeatMs`.
 * When an edge dies its devices stop being refreshed; any edge's sweeper finds them in `devices` once expired
 * and removes them. The scripts run atomically, so exactly one caller sees a user's device count go 0 → 1
 * (online) or 1 → 0 (offline), even with several edges sweeping at once.
 *
 * When Redis is down presence degrades (no online/offline events) and chat goes on; a warning is logged once
 * per outage.
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { redisPrefix } from '../../core/redis-keys.js';

/** The prefix of a hub's presence keys (what Presence is constructed with). */
export function presencePrefix(namespace: string): string {
  return `${redisPrefix(namespace)}:presence:`;
}

const USER_KEY = 'user:';

/** A user's device set: read by others too (push asks whether a user has a live socket). */
export function presenceUserKey(namespace: string, userId: string): string {
  return `${presencePrefix(namespace)}${USER_KEY}${userId}`;
}

// Returns the number of live devices before the join (0 means the user just came online).
const JOIN = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local before = redis.call('ZCARD', KEYS[1])
local existed = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
if existed then return 1 end
return before
`;

// Returns the live devices left after the leave, or -1 when this device was already gone (someone else
// already accounted for it).
const LEAVE = `
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
if removed == 0 then return -1 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
return redis.call('ZCARD', KEYS[1])
`;

// Of the user keys given, the (1-based) positions of those with a live device (expiry after ARGV[1]).
const ONLINE = `
local out = {}
local live = '(' .. ARGV[1]
for i, key in ipairs(KEYS) do
  if redis.call('ZCOUNT', key, live, '+inf') > 0 then out[#out + 1] = i end
end
return out
`;

/** Users per ONLINE script call: bounds how long one call keeps Redis busy. */
const ONLINE_BATCH = 500;

export interface PresenceDevice {
  workspaceId: string;
  userId: string;
  deviceId: string;
}

export interface PresenceOptions {
  ttlMs: number;
  heartbeatMs: number;
}

export type PresenceChange = (change: 'online' | 'offline', device: PresenceDevice) => void;

export class Presence {
  private readonly local = new Map<string, PresenceDevice>();
  private timer: NodeJS.Timeout | null = null;
  private degraded = false;

  constructor(
    private readonly redis: Redis | null,
    private readonly prefix: string,
    private readonly opts: PresenceOptions,
    private readonly onChange: PresenceChange,
    private readonly log: Logger,
  ) {}

  private key(userId: string): string {
    return `${this.prefix}${USER_KEY}${userId}`;
  }
  private get devicesKey(): string {
    return `${this.prefix}devices`;
  }
  private static member(d: PresenceDevice): string {
    return `${d.workspaceId}|${d.userId}|${d.deviceId}`;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick(), this.opts.heartbeatMs);
    this.timer.unref();
  }

  /** Whether to try Redis at all: a connection that is up. Whether it answers is learnt from the commands. */
  private ready(): boolean {
    if (this.redis && this.redis.status === 'ready') return true;
    this.warn('redis not ready');
    return false;
  }

  /**
   * A command answered: presence works again. Only an answer says so: a frozen Redis keeps its connection
   * 'ready' while every command times out, so the connection state alone would announce a recovery every tick.
   */
  private answered(): void {
    if (!this.degraded) return;
    this.degraded = false;
    this.log.info('presence: redis answers again');
  }

  private warn(reason: string): void {
    if (this.degraded) return;
    this.degraded = true;
    this.log.warn({ reason }, 'presence degraded: redis unavailable; chat continues without online/offline events');
  }

  private async join(d: PresenceDevice): Promise<void> {
    if (!this.ready()) return;
    const now = Date.now();
    try {
      const before = (await this.redis!.eval(JOIN, 2, this.key(d.userId), this.devicesKey, d.deviceId, String(now + this.opts.ttlMs), String(now), Presence.member(d))) as number;
      this.answered();
      if (before === 0) this.onChange('online', d);
    } catch (err) {
      this.warn((err as Error).message);
    }
  }

  private async leave(d: PresenceDevice): Promise<void> {
    if (!this.ready()) return;
    try {
      const left = (await this.redis!.eval(LEAVE, 2, this.key(d.userId), this.devicesKey, d.deviceId, Presence.member(d), String(Date.now()))) as number;
      this.answered();
      if (left === 0) this.onChange('offline', d);
    } catch (err) {
      this.warn((err as Error).message);
    }
  }

  /** A device connected on this edge. */
  async connect(d: PresenceDevice): Promise<void> {
    this.local.set(d.deviceId, d);
    await this.join(d);
  }

  /** A device disconnected from this edge. */
  async disconnect(deviceId: string): Promise<void> {
    const d = this.local.get(deviceId);
    if (!d) return;
    this.local.delete(deviceId);
    await this.leave(d);
  }

  /** Refreshes this edge's devices, then removes expired devices of any edge (a dead one's). */
  async tick(): Promise<void> {
    if (!this.ready()) return;
    // Re-joining (rather than only bumping the score) also restores devices after a Redis restart.
    await Promise.all([...this.local.values()].map((d) => this.join(d)));
    await this.sweep();
  }

  /** Removes devices whose expiry passed; announces users whose last device that was. */
  async sweep(): Promise<number> {
    if (!this.ready()) return 0;
    let removed = 0;
    try {
      const expired = await this.redis!.zrangebyscore(this.devicesKey, '-inf', String(Date.now()), 'LIMIT', 0, 500);
      this.answered();
      for (const m of expired) {
        const [workspaceId, userId, deviceId] = m.split('|');
        if (!workspaceId || !userId || !deviceId) {
          await this.redis!.zrem(this.devicesKey, m);
          continue;
        }
        if (this.local.has(deviceId)) continue; // ours and alive: the next heartbeat refreshes it
        await this.leave({ workspaceId, userId, deviceId });
        removed++;
      }
    } catch (err) {
      this.warn((err as Error).message);
    }
    return removed;
  }

  /**
   * Which of these users have a live device right now, or null when that cannot be known (Redis down or not
   * answering within `timeoutMs`): callers tell "nobody is online" from "unknown".
   */
  async onlineAmong(userIds: readonly string[], timeoutMs = 2000): Promise<string[] | null> {
    if (!this.ready()) return null;
    if (userIds.length === 0) return [];
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), timeoutMs);
      timer.unref();
    });
    const read = async (): Promise<string[]> => {
      const now = String(Date.now());
      const online: string[] = [];
      for (let i = 0; i < userIds.length; i += ONLINE_BATCH) {
        const batch = userIds.slice(i, i + ONLINE_BATCH);
        const hits = (await this.redis!.eval(ONLINE, batch.length, ...batch.map((u) => this.key(u)), now)) as number[];
        for (const h of hits) online.push(batch[h - 1]!);
      }
      this.answered();
      return online;
    };
    try {
      return await Promise.race([read(), late]);
    } catch (err) {
      this.warn((err as Error).message);
      return null;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Live device count of a user (for tests and diagnostics). */
  async devicesOf(userId: string): Promise<number> {
    if (!this.ready()) return 0;
    return this.redis!.zcount(this.key(userId), String(Date.now()), '+inf');
  }

  /** Stops heartbeats and removes this edge's devices (announcing offline users). */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const devices = [...this.local.keys()];
    await Promise.all(devices.map((id) => this.disconnect(id)));
  }
}
