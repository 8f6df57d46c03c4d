/**
 * Preload entry: `node --import tsx --import ./core/telemetry/preload.ts <entry>` starts tracing from the
 * environment before the entry's static imports load koa, ioredis or mongodb (so they get instrumented).
 * Service name from `OTEL_SERVICE_NAME`, else derived from the CLI command; on/off as described in tracing.ts.
 */
import { startTelemetry } from './tracing.js';

/** `voxa start` → voxa-hub, `voxa worker` → voxa-worker, any other CLI command → voxa-cli. */
function defaultServiceName(argv: string[]): string {
  const command = argv.slice(2).find((a) => !a.startsWith('-'));
  if (command === 'start') return 'voxa-hub';
  if (command === 'worker') return 'voxa-worker';
  return 'voxa-cli';
}

await startTelemetry({ serviceName: process.env.OTEL_SERVICE_NAME || defaultServiceName(process.argv) });
