/**
 * JSON logs through pino. Every line carries trace_id/span_id when a span is active, and known secret fields
 * are redacted wherever they appear.
 */
import { trace } from '@opentelemetry/api';
import { pino, type Logger } from 'pino';
import { maskUrl, SENSITIVE_FIELDS } from './config.js';

export const REDACT_PATHS = [
  'password',
  '*.password',
  'token',
  '*.token',
  'accessToken',
  '*.accessToken',
  'refreshToken',
  '*.refreshToken',
  'secret',
  '*.secret',
  'authorization',
  '*.authorization',
  'req.headers.authorization',
  'req.headers.cookie',
  // Config fields marked sensitive in core/config.ts, wherever a config object is logged.
  ...[...SENSITIVE_FIELDS.secret, ...SENSITIVE_FIELDS.url].flatMap((f) => [f, `*.${f}`]),
];

const URL_FIELDS = new Set(SENSITIVE_FIELDS.url);

/** pino's `redact` for every logger: URL config fields keep their address and lose their credentials. */
export const REDACT = {
  paths: REDACT_PATHS,
  censor: (value: unknown, path: string[]): unknown => (URL_FIELDS.has(path.at(-1) ?? '') && typeof value === 'string' ? maskUrl(value) : '[redacted]'),
};

export function createLogger(level: string, name: string): Logger {
  return pino({
    name,
    level,
    redact: REDACT,
    mixin() {
      const span = trace.getActiveSpan();
      if (!span) return {};
      const ctx = span.spanContext();
      return { trace_id: ctx.traceId, span_id: ctx.spanId };
    },
  });
}
