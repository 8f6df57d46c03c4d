/**
 * OpenTelemetry tracing for every Voxa process.
 *
 * Call `await startTelemetry({ serviceName })` before the modules it instruments (koa, ioredis, mongodb) are
 * imported: instrumentations patch a module when it is loaded. Our code is ESM (run through tsx), and an ESM
 * `import` of a CommonJS package such as ioredis, or koa's `.mjs` wrapper, does not pass through the
 * `require` hook (require-in-the-middle) the instrumentations install, so on its own only `node:http` gets
 * patched. We therefore also register import-in-the-middle's loader hook (`module.register`), limited through
 * a message channel to exactly the modules the instrumentations ask for, and wait until the loader thread has
 * acknowledged them before returning. Verified on Node 20.20 with tsx 4: without the hook only the HTTP
 * server span appears; with it the Koa router span and the ioredis command spans appear under it.
 *
 * Two ways to get the order right:
 *  - the entry file does `await startTelemetry(...)` first and loads the rest with `await import(...)`;
 *  - or the process is started with `node --import tsx --import ./core/telemetry/preload.ts …`, which starts
 *    telemetry from the environment (`OTEL_SERVICE_NAME`, `VOXA_TRACING`) before the entry is loaded.
 *
 * Export goes over OTLP/HTTP, configured by the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_TRACES_SAMPLER`, …).
 */
import { register } from 'node:module';
import { diag, DiagConsoleLogger, DiagLogLevel } from '@opentelemetry/api';
import { core, NodeSDK } from '@opentelemetry/sdk-node';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { IORedisInstrumentation } from '@opentelemetry/instrumentation-ioredis';
import { KoaInstrumentation } from '@opentelemetry/instrumentation-koa';
import { MongoDBInstrumentation } from '@opentelemetry/instrumentation-mongodb';
import { BatchSpanProcessor, SimpleSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base';

export interface TelemetryOptions {
  /** `service.name` of this process, e.g. `voxa-api`, `voxa-worker`, `voxa-cli`. `OTEL_SERVICE_NAME` wins. */
  serviceName: string;
  /**
   * Force tracing on or off. When omitted: off if `OTEL_SDK_DISABLED=true` or `VOXA_TRACING` is false; on if
   * `VOXA_TRACING` is true or an OTLP endpoint is configured; otherwise off (nothing to export to).
   */
  enabled?: boolean;
  /**
   * Export here instead of OTLP (tests pass an `InMemorySpanExporter`). Spans are handed over one by one
   * (SimpleSpanProcessor) so a test sees them as soon as they end.
   */
  exporter?: SpanExporter;
  /** Patch modules loaded through ESM `import` too (default true; see the file comment). */
  esmHooks?: boolean;
  env?: NodeJS.ProcessEnv;
}

export interface TelemetryHandle {
  /** False when tracing is off: no SDK was started and spans are no-ops. */
  readonly enabled: boolean;
  readonly serviceName: string;
}

let sdk: NodeSDK | null = null;
let handle: TelemetryHandle | null = null;
let esmHooked = false;

const truthy = (v: string | undefined): boolean | undefined => {
  if (v === undefined || v === '') return undefined;
  return ['1', 'true', 'yes', 'on'].includes(v.toLowerCase());
};

/** Whether tracing should run, given the options and the environment (exported for tests and `voxa doctor`). */
export function tracingEnabled(opts: Pick<TelemetryOptions, 'enabled' | 'exporter' | 'env'>): boolean {
  const env = opts.env ?? process.env;
  // The standard kill switch wins over everything, so an operator can always turn tracing off.
  if (truthy(env.OTEL_SDK_DISABLED)) return false;
  if (opts.enabled !== undefined) return opts.enabled;
  const voxa = truthy(env.VOXA_TRACING);
  if (voxa !== undefined) return voxa;
  if (opts.exporter) return true;
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

/**
 * Starts the OpenTelemetry SDK once per process (later calls return the first handle). Resolves when the
 * instrumentations are in place, so anything imported afterwards is traced.
 */
export async function startTelemetry(opts: TelemetryOptions): Promise<TelemetryHandle> {
  if (handle) return handle;
  const env = opts.env ?? process.env;
  const serviceName = env.OTEL_SERVICE_NAME || opts.serviceName;
  if (!tracingEnabled(opts)) {
    handle = { enabled: false, serviceName };
    return handle;
  }
  if (env.OTEL_LOG_LEVEL) {
    const level = DiagLogLevel[env.OTEL_LOG_LEVEL.toUpperCase() as keyof typeof DiagLogLevel];
    if (level !== undefined) diag.setLogger(new DiagConsoleLogger(), level);
  }

  let waitForHooks: (() => Promise<void>) | null = null;
  if (opts.esmHooks !== false && !esmHooked) {
    const { createAddHookMessageChannel } = await import('import-in-the-middle');
    const channel = createAddHookMessageChannel();
    register('import-in-the-middle/hook.mjs', import.meta.url, channel.registerOptions);
    esmHooked = true;
    waitForHooks = channel.waitForAllMessagesAcknowledged;
  }

  const processor = opts.exporter ? new SimpleSpanProcessor(opts.exporter) : new BatchSpanProcessor(new OTLPTraceExporter());
  sdk = new NodeSDK({
    serviceName,
    spanProcessors: [processor],
    textMapPropagator: new core.CompositePropagator({
      propagators: [new core.W3CTraceContextPropagator(), new core.W3CBaggagePropagator()],
    }),
    instrumentations: [
      new HttpInstrumentation({
        // Scrapes and probes would otherwise be most of the traces.
        ignoreIncomingRequestHook: (req) => /^\/(metrics|healthz|readyz)(\?|$)/.test(req.url ?? ''),
      }),
      new KoaInstrumentation(),
      new IORedisInstrumentation(),
      new MongoDBInstrumentation(),
    ],
  });
  sdk.start();
  if (waitForHooks) await waitForHooks();
  handle = { enabled: true, serviceName };
  return handle;
}

/** Flushes pending spans and stops the SDK. Safe to call when tracing is off or was never started. */
export async function shutdownTelemetry(): Promise<void> {
  const s = sdk;
  sdk = null;
  handle = null;
  if (s) await s.shutdown();
}

/** The current handle, or null before startTelemetry. */
export function telemetryState(): TelemetryHandle | null {
  return handle;
}
