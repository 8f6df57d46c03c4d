/**
 * Preload entry: `node --import tsx --import ./core/telemetry/preload.ts <entry>` starts tracing from the
 * environment before the entry's static imports load koa, ioredis or mongodb (so they get instrumented).
 * Service name from `OTEL_SERVICE_NAME` (default `voxa`); on/off as described in tracing.ts.
 */
import { startTelemetry } from './tracing.js';

await startTelemetry({ serviceName: process.env.OTEL_SERVICE_NAME || 'voxa' });
