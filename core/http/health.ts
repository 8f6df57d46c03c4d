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
import { registry } from '../telemetry/metrics.js';
import { PROBE_TIMEOUT_MS, probeDependencies } from '../telemetry/probes.js';
import { z } from 'zod';

export const READY_TIMEOUT_MS = PROBE_TIMEOUT_MS;

export interface ReadyReport {
  status: 'ok' | 'unavailable';
  failing: string[];
  checks: Record<string, { ok: boolean; ms: number; error?: string }>;
}

/** Checks store, NATS and Redis concurrently (the probes the metrics collectors use) and records voxa_dependency_up. */
export async function readiness(hub: Hub, timeoutMs = READY_TIMEOUT_MS): Promise<ReadyReport> {
  const checks: ReadyReport['checks'] = await probeDependencies(hub, timeoutMs);
  const failing = Object.keys(checks).filter((k) => !checks[k]!.ok).sort();
  return { status: failing.length ? 'unavailable' : 'ok', failing, checks };
}

const Check = z.object({ ok: z.boolean(), ms: z.number(), error: z.string().optional() });
const ReadySchema = z.object({ status: z.enum(['ok', 'unavailable']), failing: z.array(z.string()), checks: z.record(z.string(), Check) });

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
    responses: {
      200: { description: 'Ready.', schema: ReadySchema },
      503: { description: 'Not ready; `failing` names the dependencies.', schema: ReadySchema },
    },
    async handler(ctx) {
      const report = await readiness(hub);
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
