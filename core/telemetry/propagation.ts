/**
 * Trace context in NATS headers. NATS has no OpenTelemetry instrumentation package, so the shared publish and
 * consume code carries `traceparent`/`tracestate` itself, through the globally registered propagator.
 */
import { context, propagation, type Context } from '@opentelemetry/api';
import type { MsgHdrs } from 'nats';

/** The active trace context as plain headers (empty when tracing is off). */
export function currentTraceHeaders(ctx: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
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
