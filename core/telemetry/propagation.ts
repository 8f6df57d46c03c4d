/**
 * Trace context in NATS headers. NATS has no OpenTelemetry instrumentation package, so the shared publish and
 * consume code carries `traceparent`/`tracestate` itself, through the globally registered propagator.
 */
import { context, propagation, type Context } from '@opentelemetry/api';
import { randomFillSync } from 'node:crypto';
import type { MsgHdrs } from 'nats';

/** The active trace context as plain headers (empty when tracing is off). */
export function currentTraceHeaders(ctx: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier;
}

/** Random bytes for minted trace ids, refilled 64 ids at a time (16 bytes of trace id + 8 of span id each). */
const POOL = Buffer.alloc(24 * 64);
let poolAt = POOL.length;

/**
 * A W3C traceparent of its own, not sampled (flags 00): what an event carries when no trace is active (tracing
 * off). Consumers and anything downstream still get one id per change to correlate logs by, and a collector
 * added later sees valid, unsampled context rather than none.
 */
export function mintTraceparent(): string {
  for (;;) {
    if (poolAt === POOL.length) {
      randomFillSync(POOL);
      poolAt = 0;
    }
    const at = poolAt;
    poolAt += 24;
    const traceId = POOL.toString('hex', at, at + 16);
    const spanId = POOL.toString('hex', at + 16, at + 24);
    // All-zero ids are invalid in W3C trace context (one in 2^64 draws).
    if (!/^0+$/.test(traceId) && !/^0+$/.test(spanId)) return `00-${traceId}-${spanId}-00`;
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
