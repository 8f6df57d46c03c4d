/**
 * Samplers for gauges that describe state held elsewhere: the outbox backlog (in the store) and whether NATS,
 * Redis and the store answer (voxa_dependency_up, through the same probes as /readyz: a server that hangs with
 * its connection open reads 0 for as long as it does not answer). Every process that opens a hub runs these,
 * the API-less `voxa worker` included. (Plugin consumer lag is sampled by the plugin runtime, which knows its
 * consumer names.)
 * They run on a timer rather than at scrape time, so a slow dependency can never make /metrics slow.
 */
import type { Hub } from '../hub.js';
import { metrics } from './metrics.js';
import { PROBE_TIMEOUT_MS, probeDependencies } from './probes.js';
import { withTimeout } from '../timeout.js';

/** Longest the outbox count may take; past it the gauge keeps its last value. */
const OUTBOX_COUNT_TIMEOUT_MS = 2000;

export interface CollectorOptions {
  /** How often to sample (default 5 s; Prometheus usually scrapes every 15 s). */
  intervalMs?: number;
  /** Longest a dependency probe may take before the dependency counts as down (default PROBE_TIMEOUT_MS, as /readyz). */
  probeTimeoutMs?: number;
}

/** Stops the collectors; `sample()` runs one pass now (tests, and the first value at boot). */
export interface Collectors {
  (): void;
  sample(): Promise<void>;
}

/** Starts sampling the hub's state into the gauges. Call once per process after openHub; call the result to stop. */
export function startHubCollectors(hub: Hub, opts: CollectorOptions = {}): Collectors {
  const timeout = opts.probeTimeoutMs ?? PROBE_TIMEOUT_MS;
  let running: Promise<void> | null = null;

  const pass = async (): Promise<void> => {
    // Asked, not read from connection state: a frozen server leaves its client looking connected.
    const probes = probeDependencies(hub, timeout);
    const backlog = withTimeout(hub.store.outboxCount(), OUTBOX_COUNT_TIMEOUT_MS, 'outbox count').then(
      (n) => metrics.outboxBacklog.set(n),
      // Keep the last value: an unknown backlog is not an empty one, and voxa_dependency_up says why.
      () => undefined,
    );
    await Promise.all([probes, backlog]);
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
