/**
 * The one set of dependency probes: /readyz (core/http/health.ts) and the metrics collectors
 * (core/telemetry/collectors.ts) both ask through here, so voxa_dependency_up and /readyz cannot disagree.
 *
 * Each probe asks a real question that needs an answer within a deadline. Connection state is not enough: a
 * server that hangs (stopped, swapping, a dead network path) keeps its TCP connection open, and the clients
 * go on calling themselves connected until their own keep-alives give up, half a minute or more later.
 */
import type { Hub } from '../hub.js';
import { DEPENDENCIES, metrics } from './metrics.js';
import { withTimeout } from '../timeout.js';

/**
 * The deadline of each probe, for /readyz and the collectors alike: with two deadlines, a dependency that
 * answers between them would read up from one and down from the other, and the gauge (which both write)
 * would flip with every /readyz call.
 */
export const PROBE_TIMEOUT_MS = 1000;

/** The dependencies voxa_dependency_up reports (its label values). */
export type Dependency = (typeof DEPENDENCIES)[number];

type Probed = Pick<Hub, 'store' | 'bus' | 'redis'>;

/** The store answers a ping within `timeoutMs`, or this rejects. */
export async function probeStore(hub: Probed, timeoutMs: number): Promise<void> {
  await withTimeout(hub.store.ping(), timeoutMs, 'store');
}

/** NATS is connected and JetStream answers an API call within `timeoutMs`, or this rejects. */
export async function probeNats(hub: Probed, timeoutMs: number): Promise<void> {
  if (hub.bus.nc.isClosed()) throw new Error('connection closed');
  await withTimeout(hub.bus.jsm.getAccountInfo(), timeoutMs, 'nats');
}

/** Redis answers PING within `timeoutMs`, or this rejects. */
export async function probeRedis(hub: Probed, timeoutMs: number): Promise<void> {
  if (!hub.redis) throw new Error('not configured');
  await withTimeout(hub.redis.ping(), timeoutMs, 'redis');
}

const PROBES: Record<Dependency, (hub: Probed, timeoutMs: number) => Promise<void>> = {
  store: probeStore,
  nats: probeNats,
  redis: probeRedis,
};

export interface ProbeResult {
  ok: boolean;
  ms: number;
  error?: string;
}

/**
 * Probes every dependency concurrently, each with `timeoutMs`, and records each answer in
 * voxa_dependency_up (1 answered, 0 did not). Never rejects: a failure is a result.
 */
export async function probeDependencies(hub: Probed, timeoutMs: number): Promise<Record<Dependency, ProbeResult>> {
  const results = {} as Record<Dependency, ProbeResult>;
  await Promise.all(
    DEPENDENCIES.map(async (name) => {
      const started = performance.now();
      try {
        await PROBES[name](hub, timeoutMs);
        results[name] = { ok: true, ms: Math.round(performance.now() - started) };
      } catch (err) {
        // Only the message: it names the failure without leaking connection strings or stacks.
        results[name] = { ok: false, ms: Math.round(performance.now() - started), error: String((err as Error)?.message ?? err).slice(0, 200) };
      }
      metrics.dependencyUp.set({ dependency: name }, results[name].ok ? 1 : 0);
    }),
  );
  return results;
}
