/**
 * Liveness, readiness and metrics endpoints (outside /v1, no authentication).
 *
 * /readyz asks each dependency a real question with a deadline (core/telemetry/probes.ts, the same probes that
 * feed voxa_dependency_up): the store pings, NATS must be connected and answer a JetStream API call, Redis must
 * answer PING. A load balancer takes a process whose answer is 503 out of rotation; the body names what is
 * failing.
 */
import type { Hub } from '../hub.js';
import type { ApiRouter } from './api-router.js';
import { DEPENDENCIES, registry } from '../telemetry/metrics.js';
import { PROBE_TIMEOUT_MS, probeDependencies } from '../telemetry/probes.js';
import { z } from 'zod';

export const READY_TIMEOUT_MS = PROBE_TIMEOUT_MS;

export interface ReadyReport {
  status: 'ok' | 'unavailable';
  /** The checked dependencies that failed and were not excluded: what the status was decided on. */
  failing: string[];
  /** Dependencies checked and reported but left out of the status (`?exclude=`), when any. */
  excluded?: string[];
  checks: Record<string, { ok: boolean; ms: number; error?: string }>;
}

/**
 * Checks store, NATS and Redis concurrently (the probes the metrics collectors use) and records voxa_dependency_up.
 * `exclude` names dependencies whose failure does not make the process unready (they are still checked and shown).
 */
export async function readiness(hub: Hub, timeoutMs = READY_TIMEOUT_MS, exclude: readonly string[] = []): Promise<ReadyReport> {
  const checks: ReadyReport['checks'] = await probeDependencies(hub, timeoutMs);
  const failing = Object.keys(checks)
    .filter((k) => !checks[k]!.ok && !exclude.includes(k))
    .sort();
  return { status: failing.length ? 'unavailable' : 'ok', failing, ...(exclude.length ? { excluded: [...exclude].sort() } : {}), checks };
}

const Check = z.object({ ok: z.boolean(), ms: z.number(), error: z.string().optional() });
const ReadySchema = z.object({
  status: z.enum(['ok', 'unavailable']),
  failing: z.array(z.string()),
  excluded: z.array(z.string()).optional(),
  checks: z.record(z.string(), Check),
});
const EXCLUDE = new RegExp(`^(${DEPENDENCIES.join('|')})(,(${DEPENDENCIES.join('|')}))*$`);

export function healthRoutes(api: ApiRouter, hub: Hub): void {
  api.add({
    method: 'get',
    path: '/healthz',
    tag: 'operations',
    summary: 'Liveness: the process is up and serving HTTP.',
    auth: false,
    responses: { 200: { description: 'Alive.', schema: z.object({ status: z.literal('ok') }) } },
    handler(ctx) {
      ctx.body = { status: 'ok' };
    },
  });

  api.add({
    method: 'get',
    path: '/readyz',
    tag: 'operations',
    summary: 'Readiness: store, NATS (JetStream) and Redis reachable; 503 names what is not.',
    auth: false,
    query: z
      .object({
        exclude: z
          .string()
          .regex(EXCLUDE, `a comma-separated list of ${DEPENDENCIES.join(', ')}`)
          .optional()
          .describe(
            'Dependencies still checked and shown but left out of the status, e.g. `redis` for a load balancer: every hub shares one Redis, and a hub serves chat without it (degraded), so failing on it would take every hub out of rotation at once.',
          ),
      })
      .strict(),
    responses: {
      200: { description: 'Ready.', schema: ReadySchema },
      503: { description: 'Not ready; `failing` names the dependencies.', schema: ReadySchema },
    },
    async handler(ctx, { query }) {
      const exclude = query.exclude ? [...new Set(query.exclude.split(','))] : [];
      const report = await readiness(hub, READY_TIMEOUT_MS, exclude);
      ctx.status = report.status === 'ok' ? 200 : 503;
      ctx.set('Cache-Control', 'no-store');
      ctx.body = report;
    },
  });

  api.add({
    method: 'get',
    path: '/metrics',
    tag: 'operations',
    summary: 'Prometheus metrics (text exposition format).',
    auth: false,
    responses: { 200: { description: 'Metrics in the Prometheus text format.' } },
    async handler(ctx) {
      ctx.set('Content-Type', registry.contentType);
      ctx.body = await registry.metrics();
    },
  });
}
