/**
 * JSON logs through pino. Every line carries trace_id/span_id when a span is active, and known secret fields
 * are redacted wherever they appear.
 */
import { trace } from '@opentelemetry/api';
import { pino, type Logger } from 'pino';

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
  'jwtSecret',
  'secretKey',
  '*.jwtSecret',
  '*.secretKey',
  'smtpUrl',
  '*.smtpUrl',
  'fcmCredentials',
  '*.fcmCredentials',
  'previousSecretKeys',
  '*.previousSecretKeys',
  's3SecretAccessKey',
  '*.s3SecretAccessKey',
  'googleClientSecret',
  '*.googleClientSecret',
];

export function createLogger(level: string, name: string): Logger {
  return pino({
    name,
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    mixin() {
      const span = trace.getActiveSpan();
      if (!span) return {};
      const ctx = span.spanContext();
      return { trace_id: ctx.traceId, span_id: ctx.spanId };
    },
  });
}
