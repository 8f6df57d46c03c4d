/**
 * Prometheus metrics. One registry per process (`/metrics`), names `voxa_<subsystem>_<name>_<unit>`, counters
 * end in `_total`, durations are histograms in seconds. Every metric is declared here, so dashboards, alerts
 * and the code agree on one list (test/telemetry checks the dashboards only name metrics that exist).
 *
 * Label values are always bounded sets: route *patterns* (never raw paths), plugin names, connector ids,
 * transports (`socketio` | `ws` | `rest`), dependency names. Never user, conversation or message ids.
 *
 * Default Node metrics (event-loop lag, heap, GC, CPU, file descriptors) carry the `voxa_` prefix, e.g.
 * `voxa_nodejs_eventloop_lag_seconds`, `voxa_process_resident_memory_bytes`, `voxa_nodejs_gc_duration_seconds`.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'voxa_', eventLoopMonitoringPrecision: 10 });

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Background work (plugin handlers, connector jobs) runs longer than a request. */
const JOB_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/** Transports the edge speaks; used to initialise series so dashboards show zeros rather than "no data". */
export const EDGE_TRANSPORTS = ['socketio', 'ws'] as const;
/** Dependencies reported by voxa_dependency_up. */
export const DEPENDENCIES = ['nats', 'redis', 'store'] as const;
/**
 * Why a plugin delivery failed (voxa_plugin_events_failed_total{reason}): the handler threw RetryableError,
 * PermanentError or another error, or the payload was malformed (not a valid event envelope, or `data` that does not
 * match the catalog's schema for its type).
 */
export const PLUGIN_FAILURE_REASONS = ['retryable', 'permanent', 'error', 'malformed'] as const;

export const metrics = {
  // --- HTTP API -------------------------------------------------------------------------------------------
  httpRequests: new Counter({
    name: 'voxa_http_requests_total',
    help: 'HTTP requests by route pattern, method and status.',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [registry],
  }),
  httpDuration: new Histogram({
    name: 'voxa_http_request_duration_seconds',
    help: 'HTTP request duration by route pattern and method.',
    labelNames: ['route', 'method'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  }),

  // --- Chat -----------------------------------------------------------------------------------------------
  messagesSent: new Counter({
    name: 'voxa_chat_messages_sent_total',
    help: 'Messages stored (first send; idempotent repeats are not counted), by transport (rest, socketio, ws).',
    labelNames: ['transport'] as const,
    registers: [registry],
  }),

  // --- Outbox ---------------------------------------------------------------------------------------------
  outboxBacklog: new Gauge({
    name: 'voxa_outbox_backlog_events',
    help: 'Committed events not yet confirmed published to JetStream (sampled from the store).',
    registers: [registry],
  }),
  outboxPublished: new Counter({
    name: 'voxa_outbox_published_total',
    help: 'Events published to JetStream and acked (first attempt or sweeper).',
    registers: [registry],
  }),
  outboxRepublished: new Counter({
    name: 'voxa_outbox_republished_total',
    help: 'Events the outbox sweeper had to republish.',
    registers: [registry],
  }),
  outboxPublishFailures: new Counter({
    name: 'voxa_outbox_publish_failures_total',
    help: 'Publish attempts that failed or timed out (the event stays in the outbox and is retried).',
    registers: [registry],
  }),

  // --- Dependencies ---------------------------------------------------------------------------------------
  dependencyUp: new Gauge({
    name: 'voxa_dependency_up',
    help: '1 when the dependency (nats, redis, store) is reachable, else 0.',
    labelNames: ['dependency'] as const,
    registers: [registry],
  }),

  // --- WebSocket edge -------------------------------------------------------------------------------------
  edgeConnections: new Gauge({
    name: 'voxa_edge_connections',
    help: 'Open authenticated client connections on this edge, by transport (socketio, ws).',
    labelNames: ['transport'] as const,
    registers: [registry],
  }),
  edgeConnectionsOpened: new Counter({
    name: 'voxa_edge_connections_opened_total',
    help: 'Client connections accepted (after authentication), by transport.',
    labelNames: ['transport'] as const,
    registers: [registry],
  }),
  edgeFramesIn: new Counter({
    name: 'voxa_edge_frames_received_total',
    help: 'Frames/events received from clients, by transport.',
    labelNames: ['transport'] as const,
    registers: [registry],
  }),
  edgeFramesOut: new Counter({
    name: 'voxa_edge_frames_sent_total',
    help: 'Frames/events sent to clients, by transport.',
    labelNames: ['transport'] as const,
    registers: [registry],
  }),
  edgeSlowClientDisconnects: new Counter({
    name: 'voxa_edge_slow_client_disconnects_total',
    help: 'Clients disconnected because their send buffer grew past the limit, by transport.',
    labelNames: ['transport'] as const,
    registers: [registry],
  }),
  edgeResumes: new Counter({
    name: 'voxa_edge_resumes_total',
    help: 'Resume requests served (a client catching up after a reconnect), by transport.',
    labelNames: ['transport'] as const,
    registers: [registry],
  }),
  edgeResumedMessages: new Counter({
    name: 'voxa_edge_resumed_messages_total',
    help: 'Missed messages replayed to clients during resumes, by transport.',
    labelNames: ['transport'] as const,
    registers: [registry],
  }),
  deliveryLatency: new Histogram({
    name: 'voxa_edge_delivery_latency_seconds',
    help: 'End-to-end latency from the store commit of a message to its write on a client socket, by transport.',
    labelNames: ['transport'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  }),

  // --- Plugin runtime -------------------------------------------------------------------------------------
  pluginProcessed: new Counter({
    name: 'voxa_plugin_events_processed_total',
    help: 'Events a plugin handled successfully (acked).',
    labelNames: ['plugin'] as const,
    registers: [registry],
  }),
  pluginFailed: new Counter({
    name: 'voxa_plugin_events_failed_total',
    help: 'Handler attempts that threw, or payloads that were not events, by plugin and reason (see PLUGIN_FAILURE_REASONS).',
    labelNames: ['plugin', 'reason'] as const,
    registers: [registry],
  }),
  pluginRetried: new Counter({
    name: 'voxa_plugin_events_retried_total',
    help: 'Events handed back for redelivery (nak with delay).',
    labelNames: ['plugin'] as const,
    registers: [registry],
  }),
  pluginDeadLettered: new Counter({
    name: 'voxa_plugin_events_dead_lettered_total',
    help: 'Events a plugin gave up on and moved to the dead-letter stream.',
    labelNames: ['plugin'] as const,
    registers: [registry],
  }),
  pluginDuration: new Histogram({
    name: 'voxa_plugin_processing_duration_seconds',
    help: 'Handler duration per attempt, by plugin.',
    labelNames: ['plugin'] as const,
    buckets: JOB_BUCKETS,
    registers: [registry],
  }),
  pluginConsumerPending: new Gauge({
    name: 'voxa_plugin_consumer_pending_events',
    help: 'Events in the stream not yet delivered to the plugin consumer (its lag), sampled from JetStream.',
    labelNames: ['plugin'] as const,
    registers: [registry],
  }),
  pluginConsumerAckPending: new Gauge({
    name: 'voxa_plugin_consumer_ack_pending_events',
    help: 'Events delivered to the plugin consumer and not yet acked, sampled from JetStream.',
    labelNames: ['plugin'] as const,
    registers: [registry],
  }),

  // --- Connectors (BullMQ queues) -------------------------------------------------------------------------
  connectorQueueJobs: new Gauge({
    name: 'voxa_connector_queue_jobs',
    help: 'Jobs in a connector queue by state (waiting, active, delayed, failed), sampled from BullMQ.',
    labelNames: ['connector', 'state'] as const,
    registers: [registry],
  }),
  connectorJobs: new Counter({
    name: 'voxa_connector_jobs_total',
    help: 'Connector jobs finished, by outcome (completed, failed, retried).',
    labelNames: ['connector', 'outcome'] as const,
    registers: [registry],
  }),
  connectorJobDuration: new Histogram({
    name: 'voxa_connector_job_duration_seconds',
    help: 'Connector job duration per attempt.',
    labelNames: ['connector'] as const,
    buckets: JOB_BUCKETS,
    registers: [registry],
  }),
  connectorRateLimited: new Counter({
    name: 'voxa_connector_rate_limited_total',
    help: 'Times a connector was throttled (by our limiter or a 429 from the far end).',
    labelNames: ['connector'] as const,
    registers: [registry],
  }),

  // --- Notifications --------------------------------------------------------------------------------------
  notificationsSent: new Counter({
    name: 'voxa_notifications_sent_total',
    help: 'Notifications handed to a provider, by channel (push, email) and outcome (sent, failed; every attempt counts).',
    labelNames: ['channel', 'outcome'] as const,
    registers: [registry],
  }),
};

export type ConnectorJobState = 'waiting' | 'active' | 'delayed' | 'failed';
export const CONNECTOR_JOB_STATES: readonly ConnectorJobState[] = ['waiting', 'active', 'delayed', 'failed'];
export const CONNECTOR_JOB_OUTCOMES = ['completed', 'failed', 'retried'] as const;

/**
 * Creates zero-valued series for the known label sets, so a fresh hub's dashboards show 0 (a true statement:
 * nothing happened yet) instead of "no data", and rate() has a starting point when the first event arrives.
 */
export function initEdgeSeries(): void {
  for (const transport of EDGE_TRANSPORTS) {
    metrics.edgeConnections.inc({ transport }, 0);
    metrics.edgeConnectionsOpened.inc({ transport }, 0);
    metrics.edgeFramesIn.inc({ transport }, 0);
    metrics.edgeFramesOut.inc({ transport }, 0);
    metrics.edgeSlowClientDisconnects.inc({ transport }, 0);
    metrics.edgeResumes.inc({ transport }, 0);
    metrics.edgeResumedMessages.inc({ transport }, 0);
    metrics.deliveryLatency.zero({ transport });
    metrics.messagesSent.inc({ transport }, 0);
  }
  metrics.messagesSent.inc({ transport: 'rest' }, 0);
}

/** Zero series for a notification channel whose plugin runs here (email, push), whether or not it is configured. */
export function initNotificationSeries(channel: 'email' | 'push'): void {
  for (const outcome of ['sent', 'failed']) metrics.notificationsSent.inc({ channel, outcome }, 0);
}

/** Zero series for each plugin the process runs (the runtime calls this with its plugin names). */
export function initPluginSeries(plugins: Iterable<string>): void {
  for (const plugin of plugins) {
    metrics.pluginProcessed.inc({ plugin }, 0);
    for (const reason of PLUGIN_FAILURE_REASONS) metrics.pluginFailed.inc({ plugin, reason }, 0);
    metrics.pluginRetried.inc({ plugin }, 0);
    metrics.pluginDeadLettered.inc({ plugin }, 0);
    metrics.pluginDuration.zero({ plugin });
  }
}

/** Zero series for each connector with a queue in this process. */
export function initConnectorSeries(connectors: Iterable<string>): void {
  for (const connector of connectors) {
    for (const state of CONNECTOR_JOB_STATES) metrics.connectorQueueJobs.set({ connector, state }, 0);
    for (const outcome of CONNECTOR_JOB_OUTCOMES) metrics.connectorJobs.inc({ connector, outcome }, 0);
    metrics.connectorJobDuration.zero({ connector });
    metrics.connectorRateLimited.inc({ connector }, 0);
  }
}
