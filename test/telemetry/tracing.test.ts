import test from 'ava';
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { tracingEnabled } from '../../core/telemetry/tracing.js';

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));

test('the off-switches: OTEL_SDK_DISABLED wins, VOXA_TRACING decides, an OTLP endpoint turns it on', (t) => {
  t.false(tracingEnabled({ enabled: true, env: { OTEL_SDK_DISABLED: 'true' } }));
  t.false(tracingEnabled({ env: { VOXA_TRACING: '0', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' } }));
  t.true(tracingEnabled({ env: { VOXA_TRACING: '1' } }));
  t.true(tracingEnabled({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' } }));
  t.false(tracingEnabled({ env: {} }), 'nothing configured: nothing to export to, so off');
  t.false(tracingEnabled({ enabled: false, env: { VOXA_TRACING: '1' } }), 'the explicit option (config.tracing) wins over the env');
});

test('log lines carry trace_id and span_id of the active span, and none outside a span', async (t) => {
  const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', join(here, 'fixtures', 'log-line.ts')], {
    cwd: join(here, '..', '..'),
    env: { ...process.env, OTEL_SDK_DISABLED: '', VOXA_TRACING: '' },
  });
  const span = JSON.parse(stderr.trim().split('\n').pop()!) as { traceId: string; spanId: string };
  const lines = stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const inside = lines.find((l) => l.msg === 'inside a span')!;
  const outside = lines.find((l) => l.msg === 'outside any span')!;
  t.regex(span.traceId, /^[0-9a-f]{32}$/);
  t.is(inside.trace_id, span.traceId);
  t.is(inside.span_id, span.spanId);
  t.false('trace_id' in outside);
});

test('a worker without the API still serves /metrics', async (t) => {
  const { startMetricsServer } = await import('../../core/telemetry/metrics-server.js');
  const srv = await startMetricsServer({ port: 0, host: '127.0.0.1' });
  t.teardown(() => srv.close());
  const ok = await fetch(`http://127.0.0.1:${srv.port}/metrics`);
  t.is(ok.status, 200);
  const text = await ok.text();
  t.regex(text, /^voxa_nodejs_eventloop_lag_seconds /m);
  t.regex(text, /# TYPE voxa_plugin_events_processed_total counter/);
  t.is((await fetch(`http://127.0.0.1:${srv.port}/other`)).status, 404);
});
