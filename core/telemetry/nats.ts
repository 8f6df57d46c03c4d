/**
 * Spans for NATS, which has no OpenTelemetry instrumentation package. Attributes follow the OpenTelemetry
 * messaging semantic conventions: `messaging.system = nats`, `messaging.destination.name` = subject,
 * `messaging.operation.type` = `send` on publish (the current name of what older conventions called
 * `publish`) and `process` on consume, `messaging.operation.name` = the NATS verb, `messaging.message.id` =
 * the event id (which is also `Nats-Msg-Id`). The producer span's context travels in the `traceparent` header,
 * and each consumer span is its child, so one trace covers the request, the publish and every plugin.
 */
import { context, propagation, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span } from '@opentelemetry/api';
import type { MsgHdrs } from 'nats';
import { contextFromHeaders } from './propagation.js';

const tracer = trace.getTracer('voxa-nats');

/** The trace context carried by a plain header record (an outbox row's stored headers). */
export function contextFromRecord(headers: Record<string, string> | undefined, base: Context = context.active()): Context {
  if (!headers) return base;
  return propagation.extract(base, headers);
}

/** Records an error on a span the way every Voxa span does: exception event plus ERROR status. */
export function failSpan(span: Span, err: unknown): void {
  const e = err instanceof Error ? err : new Error(String(err));
  span.recordException(e);
  span.setStatus({ code: SpanStatusCode.ERROR, message: e.message });
}

export interface PublishSpanOptions {
  /** Parent context (default: the active one). The outbox passes the context stored with the event. */
  parent?: Context;
  /** Catalog event type, used in the span name because subjects carry ids (high cardinality). */
  eventType?: string;
  /** Payload size in bytes. */
  bodySize?: number;
}

/**
 * Runs `fn` inside a PRODUCER span for publishing `eventId` on `subject`. `fn` receives the headers to publish
 * with: the given ones plus `traceparent`/`tracestate` of the producer span.
 */
export async function publishSpan<T>(
  subject: string,
  eventId: string,
  headers: Record<string, string>,
  fn: (headers: Record<string, string>) => Promise<T>,
  opts: PublishSpanOptions = {},
): Promise<T> {
  const parent = opts.parent ?? context.active();
  const span = tracer.startSpan(
    `send ${opts.eventType ?? 'event'}`,
    {
      kind: SpanKind.PRODUCER,
      attributes: {
        'messaging.system': 'nats',
        'messaging.operation.type': 'send',
        'messaging.operation.name': 'publish',
        'messaging.destination.name': subject,
        'messaging.message.id': eventId,
        ...(opts.bodySize !== undefined ? { 'messaging.message.body.size': opts.bodySize } : {}),
        ...(opts.eventType ? { 'voxa.event.type': opts.eventType } : {}),
      },
    },
    parent,
  );
  const ctx = trace.setSpan(parent, span);
  // Replace whatever trace context the row carried with the producer span's own; with tracing off there is
  // none to inject, and the row's (a minted one) stays.
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (k !== 'traceparent' && k !== 'tracestate') out[k] = v;
  propagation.inject(ctx, out);
  if (!out.traceparent && headers.traceparent) {
    out.traceparent = headers.traceparent;
    if (headers.tracestate) out.tracestate = headers.tracestate;
  }
  try {
    return await context.with(ctx, () => fn(out));
  } catch (err) {
    failSpan(span, err);
    throw err;
  } finally {
    span.end();
  }
}

/** What the consumer span needs from a message: a JetStream JsMsg and a core NATS Msg both fit. */
export interface ConsumedMessage {
  subject: string;
  headers?: MsgHdrs | undefined;
  info?: { redeliveryCount?: number; streamSequence?: number };
}

/**
 * The attributes of a CONSUMER span of `pluginName` processing one event (OpenTelemetry messaging semantic
 * conventions: the consumer group is the plugin); withConsumerSpan and the plugin runtime both use them.
 */
export function consumerSpanAttributes(pluginName: string, subject: string, eventId?: string, eventType?: string): Attributes {
  return {
    'messaging.system': 'nats',
    'messaging.operation.type': 'process',
    'messaging.operation.name': 'process',
    'messaging.destination.name': subject,
    'messaging.consumer.group.name': pluginName,
    'voxa.plugin': pluginName,
    ...(eventId ? { 'messaging.message.id': eventId } : {}),
    ...(eventType ? { 'voxa.event.type': eventType } : {}),
  };
}

/**
 * Runs `fn` inside a CONSUMER span for `pluginName` processing `msg`, whose parent is the producer span named
 * in the message's `traceparent` header. Errors are recorded on the span and rethrown (the runtime decides
 * between retry and dead letter).
 */
export async function withConsumerSpan<T>(pluginName: string, msg: ConsumedMessage, fn: (span: Span) => Promise<T>): Promise<T> {
  const h: MsgHdrs | undefined = msg.headers;
  const parent = contextFromHeaders(h);
  const eventType = h?.get('Voxa-Event-Type') || undefined;
  const eventId = h?.get('Nats-Msg-Id') || undefined;
  const span = tracer.startSpan(
    `process ${eventType ?? msg.subject}`,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        ...consumerSpanAttributes(pluginName, msg.subject, eventId, eventType),
        ...(msg.info?.redeliveryCount !== undefined ? { 'messaging.nats.delivery_count': msg.info.redeliveryCount } : {}),
        ...(msg.info?.streamSequence !== undefined ? { 'messaging.nats.stream_sequence': msg.info.streamSequence } : {}),
      },
    },
    parent,
  );
  try {
    return await context.with(trace.setSpan(parent, span), () => fn(span));
  } catch (err) {
    failSpan(span, err);
    throw err;
  } finally {
    span.end();
  }
}
