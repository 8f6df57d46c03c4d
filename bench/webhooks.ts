/**
 * `npm run bench:webhooks`: how fast the webhooks plugin ingests hub events (turns them into delivery rows) and
 * how fast those reach a receiver, on the real path.
 *
 * Per scenario: a fresh hub (SQLite store, its own NATS namespace) running only the webhooks plugin in-process,
 * `S` active webhook subscriptions to message.created pointing at a local HTTP receiver, then N messages sent
 * over the API (`POST /v1/conversations/:id/messages`, BENCH_CONCURRENCY in flight). Every send is an event on
 * JetStream; the plugin's ordered consumer takes them one at a time and writes one delivery row per subscription.
 *
 * Reported per scenario:
 *   sends/s       the API accepting the N messages (the load that competes with the plugin, as in `voxa start`)
 *   ingest ev/s   events turned into delivery rows: N / (time from the first send to the last row written),
 *                 and the same for the backlog left once the sends were over (the plugin alone)
 *   delivered/s   deliveries the receiver got: N × S / (time from the first send to the last delivery)
 *   handler ms    the plugin handler's mean time per event (the runtime's processing-duration histogram): with
 *                 one event in flight, the rest of the time per event is the runtime's ack and next fetch
 *   CPU µs/event  the hub's main thread (HTTP, Koa, SQLite, runtime, NATS and Redis clients) per event
 *   order         each subscription received every message once, in send (seq) order
 *
 * It starts its own nats-server and redis-server, uses temp data dirs, and exits by itself.
 * Options (env): BENCH_EVENTS (default 3000), BENCH_SUBSCRIPTIONS (default "1,4": one scenario per count),
 * BENCH_CONCURRENCY (default 64), BENCH_ROUNDS (default 1: each scenario that many times, the median reported),
 * BENCH_TIMEOUT_SECONDS (default 300: give up waiting for a scenario's rows and deliveries after this long),
 * BENCH_OTHER_CONNECTIONS (default 0: webhooks of other workspaces in the store, which every event's look-up of
 * its subscriptions must not have to scan).
 * The machine's other load moves the figures by ±20% or more: compare runs made back to back.
 */
import { Agent, request as httpRequest } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { cpuUsOf, MAIN_THREAD_STAT } from './cpu.js';

interface Scenario {
  subscriptions: number;
  events: number;
  sendsPerSec: number;
  /** Events per second from the first send until every delivery row existed. */
  ingestPerSec: number;
  /** Events per second over what was left to ingest when the sends were over. */
  backlogIngestPerSec: number;
  /** Rows still to write when the sends were over (in events). */
  backlogEvents: number;
  deliveredPerSec: number;
  /** CPU of the hub's main thread (its event loop, SQLite included) per event, µs, from the first send to the last row. */
  cpuUsPerEvent: number;
  /** The plugin handler's mean duration per event, ms (the runtime's own histogram). */
  handlerMs: number;
  ordered: boolean;
  problems: string[];
}

/** A receiver that answers 200 at once and records, per subscription (path /hook/<i>), the message seqs received. */
interface Sink {
  port: number;
  /** Deliveries received so far. */
  total(): number;
  /** When the last delivery arrived (ms, on the clock of `now()`). */
  lastAt(): number;
  /** Per request path (one per subscription): how many arrived, and whether their seqs ran 1, 2, 3… */
  report(): Promise<Array<{ path: string; count: number; inOrder: boolean }>>;
  close(): Promise<void>;
}

/** Milliseconds on a clock every thread shares (each thread's performance.now() has its own origin). */
const now = () => performance.timeOrigin + performance.now();

/**
 * The receiver: answers 200 at once and checks each subscription's (path /hook/<i>) message seqs. It runs in a
 * worker thread, like a remote endpoint would elsewhere: on the hub's event loop its own work (a TCP accept and
 * an HTTP parse per delivery, since the hub opens a connection per delivery) would be counted against the hub.
 */
async function startSink(): Promise<Sink> {
  const shared = new SharedArrayBuffer(16);
  const counters = { total: new Int32Array(shared, 0, 1), lastAt: new Float64Array(shared, 8, 1) };
  // Plain JavaScript: loader hooks such as tsx do not reach worker threads on Node 20.
  const code = `
    const { createServer } = require('node:http');
    const { parentPort, workerData } = require('node:worker_threads');
    const total = new Int32Array(workerData, 0, 1);
    const lastAt = new Float64Array(workerData, 8, 1);
    const paths = new Map();
    const server = createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        let seq = NaN;
        try { seq = Number(JSON.parse(Buffer.concat(chunks).toString('utf8')).data.message.seq); } catch {}
        const p = paths.get(req.url) ?? { count: 0, last: 0, inOrder: true };
        if (seq !== p.last + 1) p.inOrder = false;
        p.last = seq;
        p.count++;
        paths.set(req.url, p);
        lastAt[0] = performance.timeOrigin + performance.now();
        Atomics.add(total, 0, 1);
        res.writeHead(200);
        res.end('ok');
      });
    });
    server.listen(0, '127.0.0.1', () => parentPort.postMessage({ port: server.address().port }));
    parentPort.on('message', (m) => {
      if (m === 'report') parentPort.postMessage({ report: [...paths].map(([path, p]) => ({ path, count: p.count, inOrder: p.inOrder })) });
      if (m === 'close') { server.closeAllConnections(); server.close(() => parentPort.postMessage({ closed: true })); }
    });
  `;
  const worker = new Worker(code, { eval: true, workerData: shared });
  const next = <T>(key: string) => new Promise<T>((resolve) => worker.once('message', (m: Record<string, T>) => resolve(m[key]!)));
  const port = await next<number>('port');
  return {
    port,
    total: () => Atomics.load(counters.total, 0),
    lastAt: () => counters.lastAt[0]!,
    report: () => {
      const answer = next<Array<{ path: string; count: number; inOrder: boolean }>>('report');
      worker.postMessage('report');
      return answer;
    },
    close: async () => {
      const closed = next<boolean>('closed');
      worker.postMessage('close');
      await closed;
      await worker.terminate();
    },
  };
}

function post(agent: Agent, port: number, path: string, body: unknown, token?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...(token ? { authorization: `Bearer ${token}` } : {}) },
      },
      (res) => {
        let b = '';
        res.on('data', (d) => (b += d));
        res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(b || '{}') as Record<string, unknown> }));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

/**
 * Sends `n` messages, `concurrency` at a time, from a worker thread (its own event loop, so the client's work
 * is not counted against the hub's). Resolves with how many were not answered 201.
 */
function sendAll(port: number, path: string, token: string, n: number, concurrency: number): Promise<number> {
  const code = `
    const { Agent, request } = require('node:http');
    const { parentPort, workerData: w } = require('node:worker_threads');
    const agent = new Agent({ keepAlive: true, maxSockets: w.concurrency });
    const body = JSON.stringify({ text: 'hello from the webhooks benchmark' });
    const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: 'Bearer ' + w.token };
    const one = () => new Promise((resolve) => {
      const req = request({ host: '127.0.0.1', port: w.port, path: w.path, method: 'POST', agent, headers }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode === 201));
      });
      req.on('error', () => resolve(false));
      req.end(body);
    });
    let next = 0;
    let failed = 0;
    Promise.all(Array.from({ length: w.concurrency }, async () => {
      while (next < w.n) {
        next++;
        if (!(await one())) failed++;
      }
    })).then(() => { agent.destroy(); parentPort.postMessage(failed); });
  `;
  return new Promise((resolve, reject) => {
    const worker = new Worker(code, { eval: true, workerData: { port, path, token, n, concurrency } });
    worker.once('message', (failed: number) => {
      resolve(failed);
      void worker.terminate();
    });
    worker.once('error', reject);
  });
}


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function scenario(
  servers: { nats: { url: string }; redis: { url: string } },
  subscriptions: number,
  events: number,
  concurrency: number,
  timeoutMs: number,
  otherConnections: number,
): Promise<Scenario> {
  const { loadConfig } = await import('../core/config.js');
  const { runHub } = await import('../core/server.js');
  const { uniqueNamespace } = await import('../test/helpers/servers.js');
  const { CONNECTIONS, ConnectionService } = await import('../connectors/connections.js');
  const { generateSecret } = await import('../connectors/webhook/signing.js');
  const { DELIVERIES } = await import('../plugins/webhooks/service.js');
  const { metrics } = await import('../core/telemetry/metrics.js');
  /** The webhooks handler's total time (s) and call count so far (the registry is shared by every scenario). */
  const handlerTotals = async () => {
    const values = (await metrics.pluginDuration.get()).values.filter((v) => v.labels.plugin === 'webhooks');
    const pick = (suffix: string) => values.find((v) => v.metricName === `voxa_plugin_processing_duration_seconds${suffix}`)?.value ?? 0;
    return { sum: pick('_sum'), count: pick('_count') };
  };
  /** Events the webhooks plugin has acknowledged so far (after their rows were committed). */
  const processed = async () => (await metrics.pluginProcessed.get()).values.find((v) => v.labels.plugin === 'webhooks')?.value ?? 0;

  const dataDir = mkdtempSync(join(tmpdir(), 'voxa-bench-webhooks-'));
  const config = loadConfig(
    {
      natsUrl: servers.nats.url,
      redisUrl: servers.redis.url,
      dataDir,
      natsNamespace: uniqueNamespace(),
      logLevel: 'silent',
      jwtSecret: 'bench-secret-bench-secret-bench-secret-0',
      secretKey: Buffer.alloc(32, 1).toString('base64'),
      sendRateLimitPerMinute: 10_000_000,
      webhooksAllowPrivate: true,
      port: 0,
      host: '127.0.0.1',
    },
    {},
  );
  const sink = await startSink();
  const running = await runHub(config, { api: true, plugins: 'webhooks', embedded: false, name: 'bench' });
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const problems: string[] = [];
  try {
    const { hub, port } = running;
    const alice = await post(agent, port, '/v1/auth/register', { email: 'alice@bench.test', password: 'bench password', name: 'Alice' });
    const bob = await post(agent, port, '/v1/auth/register', { email: 'bob@bench.test', password: 'bench password', name: 'Bob' });
    const token = alice.body.accessToken as string;
    const workspaceId = (alice.body.user as { workspaceId: string }).workspaceId;
    const conv = await post(agent, port, '/v1/conversations', { type: 'direct', members: [(bob.body.user as { id: string }).id] }, token);
    const convId = (conv.body.conversation as { id: string }).id;
    const connections = new ConnectionService(hub);
    for (let i = 0; i < subscriptions; i++) {
      await connections.create(workspaceId, 'webhook', { url: `http://127.0.0.1:${sink.port}/hook/${i}`, events: ['message.created'], secret: generateSecret() });
    }
    // Other workspaces' webhooks, written straight to the store (no events): each event's subscription look-up
    // has to pass them by. Never sent to: nothing happens in their workspaces.
    const now0 = new Date().toISOString();
    for (let i = 0; i < otherConnections; i++) {
      const id = `con_bench_${i}`;
      await hub.store.docs.put(CONNECTIONS, id, {
        id,
        workspaceId: `ws_bench_${i % 200}`,
        connector: 'webhook',
        name: 'other',
        config: { url: 'https://example.invalid/hook', events: ['message.created'] },
        secretFields: [],
        sealed: null,
        status: 'active',
        statusReason: null,
        createdAt: now0,
        updatedAt: now0,
      });
    }
    const rows = () => hub.store.docs.count(DELIVERIES);
    const wanted = events * subscriptions;

    const handled0 = await handlerTotals();
    const processed0 = await processed();
    const cpu0 = cpuUsOf(MAIN_THREAD_STAT);
    const t0 = now();
    const failed = await sendAll(port, `/v1/conversations/${convId}/messages`, token, events, concurrency);
    const tSent = now();
    if (failed) problems.push(`${failed} sends failed`);
    const rowsAtSent = await rows();

    // Progress comes from the runtime's processed-events counter, which costs the hub nothing to read (a count
    // of the delivery log is a scan that grows with it); the log is counted only once that says "nearly done".
    const deadline = Date.now() + timeoutMs;
    let tRows = NaN;
    let n = rowsAtSent;
    while (Date.now() < deadline) {
      const nearlyDone = (await processed()) - processed0 >= events;
      if (nearlyDone) n = await rows();
      if (n >= wanted) {
        tRows = now();
        break;
      }
      await sleep(nearlyDone ? 10 : 25);
    }
    const cpu = cpuUsOf(MAIN_THREAD_STAT) - cpu0;
    const handled = await handlerTotals();
    if (!(n >= wanted)) problems.push(`only ${n} of ${wanted} delivery rows after ${timeoutMs / 1000}s`);
    while (sink.total() < wanted && Date.now() < deadline) await sleep(50);
    if (sink.total() < wanted) problems.push(`only ${sink.total()} of ${wanted} deliveries received`);

    // Every subscription got seqs 1..N, once each, in order (the conversation's first message is seq 1).
    const report = await sink.report();
    let ordered = report.length === subscriptions;
    for (const p of report) {
      const ok = p.inOrder && p.count === events;
      if (!ok) problems.push(`${p.path}: ${p.count} deliveries${p.inOrder ? '' : ', out of order'}`);
      ordered &&= ok;
    }
    const backlog = Math.max(0, wanted - rowsAtSent) / subscriptions;
    return {
      subscriptions,
      events,
      sendsPerSec: events / ((tSent - t0) / 1000),
      ingestPerSec: events / ((tRows - t0) / 1000),
      backlogIngestPerSec: backlog / ((tRows - tSent) / 1000),
      backlogEvents: backlog,
      deliveredPerSec: wanted / ((sink.lastAt() - t0) / 1000),
      cpuUsPerEvent: cpu / events,
      handlerMs: ((handled.sum - handled0.sum) * 1000) / Math.max(1, handled.count - handled0.count),
      ordered,
      problems,
    };
  } finally {
    agent.destroy();
    await running.stop().catch(() => undefined);
    await sink.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const events = Math.max(1, Math.trunc(Number(process.env.BENCH_EVENTS ?? 3000)) || 3000);
  const concurrency = Math.max(1, Math.trunc(Number(process.env.BENCH_CONCURRENCY ?? 64)) || 64);
  const rounds = Math.max(1, Math.trunc(Number(process.env.BENCH_ROUNDS ?? 1)) || 1);
  const timeoutMs = Math.max(10, Number(process.env.BENCH_TIMEOUT_SECONDS ?? 300)) * 1000;
  const otherConnections = Math.max(0, Math.trunc(Number(process.env.BENCH_OTHER_CONNECTIONS ?? 0)) || 0);
  const subCounts = (process.env.BENCH_SUBSCRIPTIONS ?? '1,4')
    .split(',')
    .map((s) => Math.trunc(Number(s)))
    .filter((n) => n >= 1);

  const { startNats, startRedis } = await import('../test/helpers/servers.js');
  process.stdout.write('starting nats-server and redis-server…\n');
  const [nats, redis] = await Promise.all([startNats(), startRedis()]);
  const results: Scenario[] = [];
  try {
    for (const subs of subCounts) {
      const runs: Scenario[] = [];
      for (let r = 0; r < rounds; r++) {
        process.stdout.write(`${events} events, ${subs} subscription${subs > 1 ? 's' : ''}${rounds > 1 ? `, round ${r + 1} of ${rounds}` : ''}…\n`);
        runs.push(await scenario({ nats, redis }, subs, events, concurrency, timeoutMs, otherConnections));
      }
      // The median round by ingest rate (the lower middle for an even count).
      results.push([...runs].sort((a, b) => a.ingestPerSec - b.ingestPerSec)[Math.floor((runs.length - 1) / 2)]!);
    }
  } finally {
    await Promise.all([nats.dispose(), redis.dispose()]);
  }
  const fmt = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : '-');
  const lines = [
    '',
    '| subscriptions | events | sends/s | ingest events/s | backlog after sends (events) | backlog ingest events/s | delivered/s | handler ms/event | main thread CPU µs/event | order |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ...results.map(
      (r) =>
        `| ${r.subscriptions} | ${r.events} | ${fmt(r.sendsPerSec)} | ${fmt(r.ingestPerSec)} | ${fmt(r.backlogEvents)} | ${fmt(r.backlogIngestPerSec)} | ${fmt(r.deliveredPerSec)} | ${r.handlerMs.toFixed(2)} | ${fmt(r.cpuUsPerEvent)} | ${r.ordered ? 'ok' : 'BROKEN'} |`,
    ),
    '',
    `node ${process.version}, ${concurrency} sends in flight, ${rounds} round${rounds > 1 ? 's' : ''} (median by ingest), ${otherConnections} other workspaces' webhooks, SQLite store, nats-server + redis-server on loopback`,
  ];
  for (const r of results) for (const p of r.problems) lines.push(`problem (${r.subscriptions} subscriptions): ${p}`);
  process.stdout.write(lines.join('\n') + '\n');
  if (results.some((r) => r.problems.length)) process.exitCode = 1;
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (err) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
