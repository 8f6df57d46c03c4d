/**
 * Spans around store calls. The SQLite adapter runs in-process (no driver instrumentation exists for it) and
 * the MongoDB driver's own spans do not say which hub operation they belong to, so the hub wraps its store:
 * every port method called inside a trace becomes a `store.<method>` span. Outbox entries built inside a write
 * capture that span's context, which makes the store write the parent of the NATS publish in the message's trace.
 *
 * When no tracer provider is registered (tracing off, the default) the wrapper calls the adapter directly:
 * a no-op span still costs a context switch and a few allocations per call, about a tenth of a send.
 */
import { ProxyTracerProvider, SpanKind, trace } from '@opentelemetry/api';
import type { Store } from '../store/port.js';
import { failSpan } from './nats.js';

const tracer = trace.getTracer('voxa-store');

/** The provider a ProxyTracerProvider delegates to while nothing is registered (a module singleton). */
const NOOP_PROVIDER = new ProxyTracerProvider().getDelegate();

/**
 * Whether spans would be recorded: true once any tracer provider is registered globally (startTelemetry, or
 * an SDK started some other way). Cheap enough to ask on every call, so starting or stopping tracing later
 * takes effect at once. An unfamiliar global provider counts as on.
 */
export function tracingActive(): boolean {
  const p = trace.getTracerProvider();
  return !(p instanceof ProxyTracerProvider) || p.getDelegate() !== NOOP_PROVIDER;
}

/**
 * Called by readiness probes and collectors every few seconds: not worth a span each. `q` is the SQLite
 * adapter's prepared-statement helper (the collectors read through it), not a port method.
 */
const UNTRACED = new Set<string | symbol>(['ping', 'outboxCount', 'constructor', 'q']);

/** The store with a span around each method call; the adapter itself is unchanged. */
export function traceStore<S extends Store>(store: S): S {
  const dbSystem = store.kind === 'mongo' ? 'mongodb' : 'sqlite';
  const wrapped = new Map<string | symbol, unknown>();
  return new Proxy(store, {
    get(target, prop) {
      // The target as receiver: adapters may read private fields in getters.
      const value: unknown = Reflect.get(target, prop);
      if (typeof value !== 'function' || UNTRACED.has(prop) || typeof prop === 'symbol') return value;
      let fn = wrapped.get(prop);
      if (!fn) {
        const method = value as (...args: unknown[]) => unknown;
        fn = function traced(...args: unknown[]): unknown {
          // A store call is traced as part of something: a request, a consumed event, a CLI command's span.
          // Outside any span (the outbox sweeper's poll, the pruners, the collectors) it would be a trace of
          // one span every few seconds, most of what an idle hub exports.
          if (!tracingActive() || !trace.getActiveSpan()) return method.apply(target, args);
          return tracer.startActiveSpan(
            `store.${prop}`,
            { kind: SpanKind.INTERNAL, attributes: { 'db.system.name': dbSystem, 'db.operation.name': prop } },
            (span) => {
              try {
                const out = method.apply(target, args);
                if (out && typeof (out as Promise<unknown>).then === 'function') {
                  return (out as Promise<unknown>).then(
                    (v) => {
                      span.end();
                      return v;
                    },
                    (err: unknown) => {
                      failSpan(span, err);
                      span.end();
                      throw err;
                    },
                  );
                }
                span.end();
                return out;
              } catch (err) {
                failSpan(span, err);
                span.end();
                throw err;
              }
            },
          );
        };
        wrapped.set(prop, fn);
      }
      return fn;
    },
  });
}
