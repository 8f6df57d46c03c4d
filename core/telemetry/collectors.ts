/**
 * Samplers for gauges that describe state held elsewhere: the outbox backlog (in the store) and whether NATS,
 * Redis and the store are reachable. (Plugin consumer lag is sampled by the plugin runtime, which knows its
 * consumer names.)
 * They run on a timer rather than at scrape time, so a slow dependency can never make /metrics slow.
 */
import type { Hub } from '../hub.js';
import { metrics } from './metrics.js';
import { withTimeout } from '../timeout.js';

export interface CollectorOptions {
  /** How often to sample (default 5 s; Prometheus usually scrapes every 15 s). */
  intervalMs?: number;
  /** Longest a single probe may take before the dependency counts as down (default 2 s). */
  probeTimeoutMs?: number;
}

/** Stops the collectors; `sample()` runs one pass now (tests, and the first value at boot). */
export interface Collectors {
  (): void;
  sample(): Promise<void>;
}

/** Starts sampling the hub's state into the gauges. Call once per process after openHub; call the result to stop. */
export function startHubCollectors(hub: Hub, opts: CollectorOptions = {}): Collectors {
  const timeout = opts.probeTimeoutMs ?? 2000;
  let running: Promise<void> | null = null;

  const pass = async (): Promise<void> => {
    const natsUp = !hub.bus.nc.isClosed() && hub.bus.publisher.isConnected;
    metrics.dependencyUp.set({ dependency: 'nats' }, natsUp ? 1 : 0);
    if (hub.redis) metrics.dependencyUp.set({ dependency: 'redis' }, hub.redis.status === 'ready' ? 1 : 0);

    const storeProbe = withTimeout(hub.store.ping(), timeout, 'store ping').then(
      () => metrics.dependencyUp.set({ dependency: 'store' }, 1),
      () => metrics.dependencyUp.set({ dependency: 'store' }, 0),
    );
    const backlog = withTimeout(hub.store.outboxCount(), timeout, 'outbox count').then(
      (n) => metrics.outboxBacklog.set(n),
      // Keep the last value: an unknown backlog is not an empty one, and voxa_dependency_up says why.
      () => undefined,
    );
    await Promise.all([storeProbe, backlog]);
  };

  const sample = (): Promise<void> => {
    running ??= pass()
      .catch((err: unknown) => hub.log.debug({ err }, 'metrics collector pass failed'))
      .finally(() => {
        running = null;
      });
    return running;
  };

  void sample();
  const timer = setInterval(() => void sample(), opts.intervalMs ?? 5000);
  timer.unref();
  const stop = (() => clearInterval(timer)) as Collectors;
  stop.sample = sample;
  return stop;
}
