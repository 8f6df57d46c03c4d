/**
 * What the CLI (or any short-lived tool) needs to work on connections without running the hub: the store,
 * the secrets, and — only when a command needs them — Redis (queues) and NATS (backfill). Unlike openHub it
 * fails fast with a clear message when a dependency is down instead of waiting for it.
 */
import type { Redis } from 'ioredis';
import { connect, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import { destination, pino } from 'pino';
import { maskUrl, type Config } from '../core/config.js';
import type { Actor } from '../core/events/catalog.js';
import type { Hub } from '../core/hub.js';
import { REDACT } from '../core/log.js';
import { ensureSecrets } from '../core/secrets.js';
import { createStore } from '../core/store/index.js';
import { flushToolOutbox, trackToolOutbox } from './events.js';
import { createRedis } from '../core/redis-url.js';

/** Where `voxa start` runs its embedded servers when NATS_URL / REDIS_URL are unset (core/supervisor.ts). */
export function embeddedNatsUrl(config: Pick<Config, 'embeddedNatsPort'>): string {
  return `nats://127.0.0.1:${config.embeddedNatsPort}`;
}
/** The NATS a tool process talks to: NATS_URL, else the embedded server of `voxa start`. */
export function toolNatsUrl(config: Pick<Config, 'natsUrl' | 'embeddedNatsPort'>): string {
  return config.natsUrl ?? embeddedNatsUrl(config);
}

/** Who events written by the CLI name as their actor (`system:voxa-cli`, see docs/connectors.md). */
export const CLI_ACTOR = { type: 'system', id: 'voxa-cli' } as const satisfies Actor;

export function embeddedRedisUrl(config: Pick<Config, 'embeddedRedisPort'>): string {
  return `redis://127.0.0.1:${config.embeddedRedisPort}`;
}
/** The Redis a tool process talks to: REDIS_URL, else the embedded server of `voxa start`. */
export function toolRedisUrl(config: Pick<Config, 'redisUrl' | 'embeddedRedisPort'>): string {
  return config.redisUrl ?? embeddedRedisUrl(config);
}

export class DependencyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DependencyError';
  }
}

export interface ToolContext {
  /** A partial hub: config, log, store, secrets, and redis when asked for. Enough for connections and queues. */
  hub: Hub;
  nats?: { nc: NatsConnection; js: JetStreamClient; jsm: JetStreamManager; namespace: string };
  close(): Promise<void>;
}

export async function openToolContext(config: Config, need: { redis?: boolean; nats?: boolean } = {}): Promise<ToolContext> {
  // Logs go to stderr so --json output on stdout stays parseable.
  const log = pino({ name: 'voxa-cli', level: config.logLevel === 'info' ? 'warn' : config.logLevel, redact: REDACT }, destination(2));
  const secrets = await ensureSecrets(config);
  const store = await createStore(config);
  await store.init();
  let redis: Redis | null = null;
  let nats: ToolContext['nats'];
  const opened: { hub?: Hub } = {};
  const close = async (): Promise<void> => {
    redis?.disconnect();
    if (nats && !nats.nc.isClosed()) await nats.nc.close();
    // Events this command committed (connection.changed, webhook.changed): published now if NATS answers,
    // else left in the outbox for the running hub's sweeper.
    if (opened.hub) await flushToolOutbox(opened.hub, toolNatsUrl(config)).catch(() => 0);
    await store.close();
  };
  try {
    if (need.redis) {
      const url = toolRedisUrl(config);
      redis = createRedis(url, { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: false, retryStrategy: (n) => Math.min(n * 200, 2000) });
      redis.on('error', () => undefined);
      await Promise.race([
        redis.connect(),
        new Promise((_, rej) => setTimeout(() => rej(new Error('timeout')), 5000)),
      ]).catch((err: Error) => {
        throw new DependencyError(`Redis at ${maskUrl(url)} is unreachable (${err.message}); is the hub running? set REDIS_URL`);
      });
    }
    if (need.nats) {
      const url = toolNatsUrl(config);
      try {
        // Fail the first connect fast (a CLI must not hang), then reconnect forever like every NATS connection.
        const nc = await connect({ servers: url.split(','), name: 'voxa-cli', timeout: 5000, maxReconnectAttempts: -1 });
        nats = { nc, js: nc.jetstream(), jsm: await nc.jetstreamManager(), namespace: config.natsNamespace };
      } catch (err) {
        throw new DependencyError(`NATS at ${maskUrl(url)} is unreachable (${(err as Error).message}); is the hub running? set NATS_URL`);
      }
    }
  } catch (err) {
    await close();
    throw err;
  }
  // hub.name is the actor id ConnectionService (and WebhookService's) puts on events.
  const hub = { config, log, store, secrets, redis, name: CLI_ACTOR.id } as unknown as Hub;
  trackToolOutbox(hub);
  opened.hub = hub;
  return { hub, ...(nats ? { nats } : {}), close };
}
