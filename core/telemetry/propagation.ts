/**
 * Trace context in NATS headers. NATS has no OpenTelemetry instrumentation package, so the shared publish and
 * consume code carries `traceparent`/`tracestate` itself, through the globally registered propagator.
 */
import { context, isValidSpanId, isValidTraceId, propagation, type Context } from '@opentelemetry/api';
import { randomView } from '../random.js';
import type { MsgHdrs } from 'nats';

/** The active trace context as plain headers (empty when tracing is off). */
export function currentTraceHeaders(ctx: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier;
}

/**
 * A W3C traceparent of its own, not sampled (flags 00): what an event carries when no trace is active (tracing
 * off). Consumers and anything downstream still get one id per change to correlate logs by, and a collector
 * added later sees valid, unsampled context rather than none.
 */
export function mintTraceparent(): string {
  for (;;) {
    const bytes = randomView(24);
    const traceId = bytes.toString('hex', 0, 16);
    const spanId = bytes.toString('hex', 16, 24);
    // All-zero ids are invalid in W3C trace context (one in 2^64 draws).
    if (isValidTraceId(traceId) && isValidSpanId(spanId)) return `00-${traceId}-${spanId}-00`;
  }
}

/** Trace headers for an event: the active trace's, or a minted unsampled traceparent when there is none. */
export function eventTraceHeaders(ctx: Context = context.active()): Record<string, string> {
  const carrier = currentTraceHeaders(ctx);
  if (!carrier.traceparent) carrier.traceparent = mintTraceparent();
  return carrier;
}

/** The trace context a received NATS message carries. */
export function contextFromHeaders(h: MsgHdrs | undefined): Context {
  if (!h) return context.active();
  return propagation.extract(context.active(), h, {
    keys: (carrier) => carrier.keys(),
    get: (carrier, key) => {
      const v = carrier.get(key);
      return v === '' ? undefined : v;
    },
  });
}
