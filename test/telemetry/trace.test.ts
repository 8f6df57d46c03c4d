/**
 * One message sent over REST yields ONE trace: the HTTP server span, the store write, the NATS producer span
 * and every plugin's consumer span, all connected by parent links. Spans go to an in-memory exporter, which
 * the tests share and reset: they run one at a time.
 */
import test, { type ExecutionContext } from 'ava';
import { SpanKind } from '@opentelemetry/api';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { shutdownTelemetry, startTelemetry } from '../../core/telemetry/tracing.js';

const exporter = new InMemorySpanExporter();
// Before anything imports koa or ioredis: the instrumentations patch modules as they load.
await startTelemetry({ serviceName: 'voxa-test', exporter, enabled: true });
const { startServers, testConfig } = await import('../helpers/hub.js');
const { runHub } = await import('../../core/server.js');
const { loadPlugins, pluginNames } = await import('../../plugins/index.js');
const { wsClient } = await import('../edge/support.js');
const { startReceiver } = await import('../connectors/receiver.js');
const { ConnectionService } = await import('../../connectors/connections.js');
const { generateSecret } = await import('../../connectors/webhook/signing.js');
const plugins = await loadPlugins(pluginNames('all', { api: true }));

let servers: Awaited<ReturnType<typeof startServers>>;
test.before(async () => {
  servers = await startServers();
});
test.after.always(async () => {
  await servers?.dispose();
  await shutdownTelemetry();
});

const parentOf = (s: ReadableSpan): string | undefined => s.parentSpanContext?.spanId;

async function until<T>(fn: () => T | undefined, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A hub with the API (and `plugins`), two registered users and a direct conversation between them. */
async function hubWithConversation(t: ExecutionContext, name: string, plugins: string, who: [string, string], overrides: Record<string, unknown> = {}) {
  const config = testConfig(servers, { host: '127.0.0.1', port: 0, plugins, ...overrides });
  const running = await runHub(config, { api: true, embedded: false, plugins, name });
  t.teardown(() => running.stop());
  const base = `http://127.0.0.1:${running.port}`;
  const post = async (path: string, body: unknown, token?: string) => {
    const res = await fetch(base + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
  const a = await post('/v1/auth/register', { email: `${who[0].toLowerCase()}.trace@example.test`, password: 'correct horse battery', name: who[0] });
  const b = await post('/v1/auth/register', { email: `${who[1].toLowerCase()}.trace@example.test`, password: 'correct horse battery', name: who[1] });
  const conv = await post('/v1/conversations', { type: 'direct', members: [b.body.user.id] }, a.body.accessToken);
  t.is(conv.status, 201);
  return { base, post, a, b, conv, hub: running.hub };
}

test.serial('a message sent over REST is one trace: HTTP → store write → publish → each plugin', async (t) => {
  const { base, post, a, b, conv } = await hubWithConversation(t, 'voxa-trace-test', 'all', ['Ana', 'Ben']);

  // Ben is online on a plain WebSocket, so the edge has a delivery to make.
  const ben = await wsClient(base, b.body.accessToken);
  t.teardown(() => ben.close());

  exporter.reset();
  const sent = await post(`/v1/conversations/${conv.body.conversation.id}/messages`, { text: 'trace me', clientId: 'c1' }, a.body.accessToken);
  t.is(sent.status, 201);
  await until(() => ben.of('receive-message').find((m) => m.text === 'trace me'), 'delivery on the socket');

  const server = await until(
    () =>
      exporter
        .getFinishedSpans()
        .find((s) => s.kind === SpanKind.SERVER && s.attributes['http.route'] === '/v1/conversations/:id/messages' && (s.attributes['http.request.method'] ?? s.attributes['http.method']) === 'POST'),
    'the HTTP server span',
  );
  const traceId = server.spanContext().traceId;
  const inTrace = () => exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);

  // Every plugin that subscribes to message.created processes it in its own consumer span, and the edge's
  // fan-out to sockets (its own NATS subscription) has one too.
  const expected = new Set(['edge', ...plugins.filter((p) => p.manifest.events.includes('message.created')).map((p) => p.manifest.name)]);
  t.true(expected.size >= 3, `plugins handling message.created: ${[...expected].join(', ')}`);
  let seen = new Set<unknown>();
  const consumers = await until(() => {
    const c = inTrace().filter((s) => s.kind === SpanKind.CONSUMER && s.attributes['voxa.event.type'] === 'message.created');
    seen = new Set(c.map((s) => s.attributes['voxa.plugin']));
    return [...expected].every((p) => seen.has(p)) ? c : undefined;
  }, `consumer spans of ${[...expected].join(', ')}`).catch((err: Error) => {
    throw new Error(`${err.message}; saw ${[...seen].join(', ')}`);
  });

  const spans = inTrace();
  t.is(server.parentSpanContext, undefined, 'the HTTP request is the root of the trace');
  const store = spans.find((s) => s.name === 'store.appendMessage');
  t.truthy(store, 'the store write is traced');
  const producers = spans.filter((s) => s.kind === SpanKind.PRODUCER && s.attributes['voxa.event.type'] === 'message.created');
  t.is(producers.length, 1, 'one publish of message.created');
  const producer = producers[0]!;
  t.is(producer.attributes['messaging.system'], 'nats');
  t.regex(String(producer.attributes['messaging.destination.name']), /\.chat\..+\.message\.created$/);
  t.regex(String(producer.attributes['messaging.message.id']), /^evt_/);
  t.is(parentOf(producer), store!.spanContext().spanId, 'the publish is a child of the store write');
  for (const c of consumers) {
    const plugin = String(c.attributes['voxa.plugin']);
    t.is(parentOf(c), producer.spanContext().spanId, `${plugin} consumes as a child of the publish`);
    // The messaging conventions, the same on the runtime's spans as on the edge's.
    t.like(c.attributes, { 'messaging.operation.type': 'process', 'messaging.consumer.group.name': plugin, 'messaging.message.id': producer.attributes['messaging.message.id'] }, plugin);
  }

  // Every span of the trace hangs off the HTTP span (no orphans, no second root).
  const byId = new Map(spans.map((s) => [s.spanContext().spanId, s]));
  for (const s of spans) {
    let cur: ReadableSpan | undefined = s;
    const seen = new Set<string>();
    while (cur && parentOf(cur) && !seen.has(cur.spanContext().spanId)) {
      seen.add(cur.spanContext().spanId);
      cur = byId.get(parentOf(cur)!);
    }
    t.is(cur, server, `${s.name} reaches the HTTP span`);
  }
  // The Koa router span and the Redis rate-limit call are there too (ESM instrumentation works).
  t.true(spans.some((s) => s.instrumentationScope.name.includes('instrumentation-koa')), 'koa span');
  t.true(spans.some((s) => s.instrumentationScope.name.includes('instrumentation-ioredis')), 'ioredis span');
});

test.serial('concurrent sends, committed together in one group, each publish under its own request’s trace', async (t) => {
  const { post, a, conv } = await hubWithConversation(t, 'voxa-trace-group-test', '', ['Cy', 'Di']);

  exporter.reset();
  const n = 8;
  const sent = await Promise.all(
    Array.from({ length: n }, (_, i) => post(`/v1/conversations/${conv.body.conversation.id}/messages`, { text: `group ${i}` }, a.body.accessToken)),
  );
  t.deepEqual(
    sent.map((s) => s.status),
    Array(n).fill(201),
  );
  const producers = await until(() => {
    const p = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.PRODUCER && s.attributes['voxa.event.type'] === 'message.created');
    return p.length >= n ? p : undefined;
  }, 'the publishes');
  const stores = exporter.getFinishedSpans().filter((s) => s.name === 'store.appendMessage');
  t.is(stores.length, n);
  // Each store write has exactly one publish as its child, in the store write's own trace.
  const storeById = new Map(stores.map((s) => [s.spanContext().spanId, s]));
  const parents = producers.map((p) => storeById.get(parentOf(p) ?? ''));
  t.true(
    parents.every((s) => s !== undefined),
    'every publish is a child of a store write',
  );
  t.is(new Set(parents.map((s) => s!.spanContext().spanId)).size, n, 'no two publishes share a store write');
  for (const [i, p] of producers.entries()) t.is(p.spanContext().traceId, parents[i]!.spanContext().traceId);
  t.is(new Set(producers.map((p) => p.spanContext().traceId)).size, n, 'one trace per request');
});

test.serial('an idle hub exports no store spans of its own: the sweeper, collectors and pruners run outside any trace', async (t) => {
  // outboxSweepMs is 100 in tests: in two seconds the sweeper polls about twenty times.
  await hubWithConversation(t, 'voxa-trace-idle-test', 'all', ['Eve', 'Fay']);
  exporter.reset();
  await new Promise((r) => setTimeout(r, 2000));
  const roots = exporter.getFinishedSpans().filter((s) => s.name.startsWith('store.') && !parentOf(s));
  t.deepEqual([...new Set(roots.map((s) => s.name))], [], 'no root store spans');
});

test.serial("a webhook's delivery, made later by its drain job, is in the message's trace: the receiver's traceparent leads back to it", async (t) => {
  const { post, a, conv, hub } = await hubWithConversation(t, 'voxa-trace-webhook-test', 'webhooks', ['Gus', 'Hal'], { webhooksAllowPrivate: true });
  const rcv = await startReceiver();
  t.teardown(() => rcv.close());
  await new ConnectionService(hub).create(hub.config.defaultWorkspaceId, 'webhook', { url: rcv.url, events: ['message.created'], secret: generateSecret() });

  exporter.reset();
  const sent = await post(`/v1/conversations/${conv.body.conversation.id}/messages`, { text: 'to the webhook' }, a.body.accessToken);
  t.is(sent.status, 201);
  const got = await until(() => rcv.received.find((r) => r.json.type === 'message.created'), 'the delivery');
  const traceparent = String(got.headers.traceparent);
  const server = exporter.getFinishedSpans().find((s) => s.kind === SpanKind.SERVER && s.spanContext().traceId === traceparent.split('-')[1]);
  t.truthy(server, `the receiver's traceparent (${traceparent}) is in the trace of the HTTP send`);
  const deliver = await until(() => exporter.getFinishedSpans().find((s) => s.name === 'webhooks deliver message.created'), 'the deliver span');
  t.is(deliver.spanContext().traceId, server!.spanContext().traceId);
  t.is(deliver.attributes['messaging.message.id'], got.id, 'the span names the event the receiver got (webhook-id)');
});
