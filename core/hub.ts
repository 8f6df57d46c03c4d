/**
 * The hub's dependencies, built once per process and injected everywhere (no singletons): config, logger,
 * store, NATS bus, Redis, outbox relay and the services on top.
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { ChatService } from './chat/service.js';
import type { Config } from './config.js';
import { closeBus, openBus, type Bus } from './bus/nats.js';
import { OutboxRelay } from './bus/outbox.js';
import { createLogger } from './log.js';
import { createRedis } from './redis-url.js';
import { RateLimiter } from './ratelimit.js';
import { redisPrefix } from './redis-keys.js';
import { createStore } from './store/index.js';
import type { Store } from './store/port.js';
import { traceStore } from './telemetry/store.js';
import { ensureSecrets, type Secrets } from './secrets.js';
import { createReadCaches, invalidatingStore, watchInvalidations, type ReadCaches } from './auth/read-cache.js';
import { startPruner, type Pruner } from './auth/prune.js';

/** What the services need (and what tests can assemble by hand). */
export interface HubCore {
  config: Config;
  log: Logger;
  store: Store;
  bus: Bus;
  redis: Redis | null;
  outbox: OutboxRelay;
  rateLimiter: RateLimiter;
  secrets: Secrets;
  /**
   * Short-lived caches of the caller and the conversation for the send path (core/auth/read-cache.ts).
   * Optional: a hub assembled without them reads the store every time.
   */
  caches?: ReadCaches;
}

export interface Hub extends HubCore {
  chat: ChatService;
  /** Process name, used for NATS connection names and metrics labels. */
  name: string;
  /** Deletes expired one-time sign-in records on a timer (core/auth/prune.ts); stopped by closeHub. */
  pruner?: Pruner;
}

export interface OpenHubOptions {
  name?: string;
  logger?: Logger;
  /** Lifetime of the send path's read caches (default 5 s; 0 turns them off). For tests and benchmarks. */
  readCacheTtlMs?: number;
  /** Told when start-up begins and stops waiting for a dependency's first connection (the API answers 503 meanwhile). */
  onWait?: (dependency: 'nats' | 'redis', waiting: boolean) => void;
  /** Calls off the wait for NATS's first connection (openHub then rejects, having closed what it opened). */
  signal?: AbortSignal;
}

/** How long the hub's Redis client waits for an answer before a command fails (and rate limits count in this process instead). */
export const REDIS_COMMAND_TIMEOUT_MS = 1500;

/** How long openHub waits for Redis's first connection before going on without it. */
const REDIS_READY_WAIT_MS = 5000;

/** Resolves true once the client is ready, false if it is not within `ms`. */
function redisReady(redis: Redis, ms: number): Promise<boolean> {
  if (redis.status === 'ready') return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ready: boolean) => {
      clearTimeout(timer);
      redis.off('ready', onReady);
      resolve(ready);
    };
    const onReady = () => done(true);
    const timer = setTimeout(() => done(false), ms);
    redis.on('ready', onReady);
  });
}

/** Connects to everything the config names. Throws (with the dependency named) when one cannot be reached. */
export async function openHub(config: Config, opts: OpenHubOptions = {}): Promise<Hub> {
  const name = opts.name ?? 'voxa-core';
  const log = opts.logger ?? createLogger(config.logLevel, name);
  if (!config.natsUrl) throw new Error('natsUrl is not set (voxa start spawns nats-server and sets it)');
  if (!config.redisUrl) throw new Error('redisUrl is not set (voxa start spawns redis-server and sets it)');
  const secrets = await ensureSecrets(config);
  const caches = createReadCaches(opts.readCacheTtlMs);
  const store = invalidatingStore(traceStore(await createStore(config)), caches);
  await store.init();
  let bus: Bus;
  try {
    bus = await openBus(config.natsUrl, name, config.natsNamespace, { log, replicas: config.natsReplicas, onWait: (w) => opts.onWait?.('nats', w), ...(opts.signal ? { signal: opts.signal } : {}) });
  } catch (err) {
    await store.close();
    throw err;
  }
  watchInvalidations(bus.nc, config.natsNamespace, caches);
  const redis = createRedis(config.redisUrl, {
    lazyConnect: false,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    // A Redis that stops answering without closing the connection (stopped, swapping, a dead network path)
    // leaves the client 'ready'; without a timeout every rate-limited request would wait for it forever.
    // This client serves only quick commands (rate limits, presence, health); BullMQ has its own connections.
    commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
    retryStrategy: (times) => Math.min(times * 200, 2000), // reconnect forever
  });
  redis.on('error', () => undefined); // state is reported by /readyz; ioredis keeps retrying
  // This client queues nothing while it connects, so a command in the first moments after start would fail
  // ("Stream isn't writeable"): wait for the first connection, briefly. A Redis that is down at start is not
  // fatal; the hub runs degraded (rate limits count in-process, presence is off) and the client keeps trying.
  opts.onWait?.('redis', true);
  const redisUp = await redisReady(redis, REDIS_READY_WAIT_MS);
  opts.onWait?.('redis', false);
  if (!redisUp) log.warn({ waitedMs: REDIS_READY_WAIT_MS }, 'Redis is not reachable yet; starting without it');
  const outbox = new OutboxRelay(store, bus.publisher, { sweepMs: config.outboxSweepMs, graceMs: config.outboxGraceMs }, log);
  const rateLimiter = new RateLimiter(redis, `${redisPrefix(config.natsNamespace)}:`, log);
  const core: HubCore = { config, log, store, bus, redis, outbox, rateLimiter, secrets, caches };
  const hub: Hub = { ...core, chat: new ChatService(core), name };
  await store.ensureWorkspace({
    id: config.defaultWorkspaceId,
    name: 'Default workspace',
    settings: { registration: config.registration, customersTalkToAgentsOnly: false, privatePush: false },
    createdAt: new Date().toISOString(),
  });
  outbox.start();
  hub.pruner = startPruner(store.docs, config.pruneIntervalMs, log);
  return hub;
}

export async function closeHub(hub: Hub): Promise<void> {
  await hub.outbox.stop();
  await hub.pruner?.stop();
  await closeBus(hub.bus);
  hub.redis?.disconnect();
  await hub.store.close();
}
