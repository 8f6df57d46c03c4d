/**
 * Prometheus metrics. One registry per process (`/metrics`), names `voxa_<subsystem>_<name>_<unit>`, counters
 * end in `_total`, durations are histograms in seconds. Every metric is declared here, so dashboards, alerts
 * and the code agree on one list (test/telemetry checks the dashboards only name metrics that exist).
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'voxa_process_' });

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export const metrics = {
  httpRequests: new Counter({
    name: 'voxa_http_requests_total',
    help: 'HTTP requests by route, method and status.',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [registry],
  }),
  httpDuration: new Histogram({
    name: 'voxa_http_request_duration_seconds',
    help: 'HTTP request duration by route and method.',
    labelNames: ['route', 'method'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  }),
  messagesSent: new Counter({
    name: 'voxa_chat_messages_sent_total',
    help: 'Messages stored (first send; idempotent repeats are not counted), by transport.',
    labelNames: ['transport'] as const,
    registers: [registry],
  }),
  outboxBacklog: new Gauge({
    name: 'voxa_outbox_backlog_events',
    help: 'Committed events not yet confirmed published to JetStream.',
    registers: [registry],
  }),
  outboxRepublished: new Counter({
    name: 'voxa_outbox_republished_total',
    help: 'Events the outbox sweeper had to republish.',
    registers: [registry],
  }),
  dependencyUp: new Gauge({
    name: 'voxa_dependency_up',
    help: '1 when the dependency (nats, redis, store) is reachable, else 0.',
    labelNames: ['dependency'] as const,
    registers: [registry],
  }),
};
