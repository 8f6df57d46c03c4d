/**
 * `npm run bench:ingest`: durable sends per second over REST, side by side with two references, in one run.
 *
 *   A  POST /v1/conversations/:id/messages — authenticated, validated, stored (SQLite), published to
 *      JetStream and acknowledged (the real path, including the per-user send rate limit in Redis).
 *   B  a no-op Koa route on the same server (the ceiling of HTTP + Koa on this machine).
 *   C  a naive handler: authenticate, then `await js.publish()` once per request (nats.js JetStreamClient).
 *   D  (a reference, no goal) the authenticated, body-parsing route with nothing behind it: what A and C share.
 *
 * CPU is reported twice: the server's main thread (the event loop everything but SQLite message writes runs
 * on), and the whole server process (every thread, the SQLite writer thread, GC and libuv's pool included,
 * minus the load generator's own thread).
 *
 * Goals: A ≥ 0.4 × B and A ≥ 1.5 × C. The load runs in a worker thread (its own event loop, so the client
 * does not steal the server's), with keep-alive connections and a fixed number of requests in flight.
 * It starts its own nats-server and redis-server, uses a temp data dir, and exits by itself.
 *
 * Options (env): BENCH_SECONDS (default 5), BENCH_CONCURRENCY (default 64), BENCH_WARMUP_SECONDS (default 1),
 * BENCH_CASES (default "BDCA": which cases to run, in that order; e.g. BENCH_CASES=A to profile the real path alone),
 * BENCH_ROUNDS (default 1): run the cases that many times, interleaved (B D C A B D C A …), and report each case's
 * median round, its range, and the ratios of each round. On a noisy machine one run can move ±25%; rounds that
 * interleave the cases see the same noise, so their ratios are steadier than their absolute figures.
 */
import { Agent, createServer, request as httpRequest, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { z } from 'zod';
import { cpuUsOf, MAIN_THREAD_STAT } from './cpu.js';

interface LoadSpec {
  name: string;
  port: number;
  path: string;
  method: 'GET' | 'POST';
  token?: string;
  body?: string;
  seconds: number;
  warmupSeconds: number;
  concurrency: number;
}

interface LoadResult {
  name: string;
  requests: number;
  errors: number;
  seconds: number;
  rps: number;
  p50: number;
  p99: number;
  /** Answered requests including the warm-up (what the server's CPU time is divided by). */
  allRequests: number;
  /** CPU time of the server's main thread per answered request, µs (Linux; NaN elsewhere). */
  cpuUsPerRequest: number;
  /** CPU time of the whole server process per answered request — every thread (SQLite writer, GC, libuv pool) but the load generator's. */
  processCpuUsPerRequest: number;
  /** CPU time the load generator's own thread used, µs (Linux; NaN elsewhere). */
  loadCpuUs: number;
  firstError?: string;
}

/** Runs one load phase: `concurrency` loops, each sending its next request as soon as the last answered. */
async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  // This thread's own CPU time (read on this thread), so the server's can be told apart from it.
  const cpuStart = cpuUsOf('/proc/thread-self/stat');
  const agent = new Agent({ keepAlive: true, maxSockets: spec.concurrency });
  const headers: Record<string, string> = { accept: 'application/json' };
  if (spec.token) headers.authorization = `Bearer ${spec.token}`;
  if (spec.body) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(spec.body));
  }
  const one = () =>
    new Promise<number>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port: spec.port, path: spec.path, method: spec.method, headers, agent }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => (res.statusCode! < 300 ? resolve(res.statusCode!) : reject(new Error(`${res.statusCode} ${body.slice(0, 200)}`))));
      });
      req.on('error', reject);
      if (spec.body) req.end(spec.body);
      else req.end();
    });

  const phase = async (seconds: number, record: boolean) => {
    const latencies: number[] = [];
    let answered = 0;
    let errors = 0;
    let firstError: string | undefined;
    const started = performance.now();
    const until = started + seconds * 1000;
    await Promise.all(
      Array.from({ length: spec.concurrency }, async () => {
        while (performance.now() < until) {
          const t0 = performance.now();
          try {
            await one();
            answered++;
            if (record) latencies.push(performance.now() - t0);
          } catch (err) {
            errors++;
            firstError ??= (err as Error).message;
          }
        }
      }),
    );
    return { latencies, answered, errors, firstError, elapsed: (performance.now() - started) / 1000 };
  };

  const warm = spec.warmupSeconds > 0 ? (await phase(spec.warmupSeconds, false)).answered : 0;
  const { latencies, answered, errors, firstError, elapsed } = await phase(spec.seconds, true);
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]! : NaN);
  return {
    name: spec.name,
    requests: latencies.length,
    errors,
    seconds: elapsed,
    rps: latencies.length / elapsed,
    p50: pct(50),
    p99: pct(99),
    allRequests: warm + answered,
    cpuUsPerRequest: NaN,
    processCpuUsPerRequest: NaN,
    loadCpuUs: cpuUsOf('/proc/thread-self/stat') - cpuStart,
    ...(firstError ? { firstError } : {}),
  };
}


async function measured(spec: LoadSpec): Promise<LoadResult> {
  const before = cpuUsOf(MAIN_THREAD_STAT);
  const processBefore = cpuUsOf('/proc/self/stat');
  const r = await inWorker(spec);
  const n = Math.max(1, r.allRequests);
  return {
    ...r,
    cpuUsPerRequest: (cpuUsOf(MAIN_THREAD_STAT) - before) / n,
    processCpuUsPerRequest: (cpuUsOf('/proc/self/stat') - processBefore - r.loadCpuUs) / n,
  };
}

function inWorker(spec: LoadSpec): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    // The worker runs runLoad's own (already transpiled) source: loader hooks such as tsx do not reach
    // worker threads on Node 20, so the worker cannot import this .ts file.
    const code = [
      "const { Agent, request: httpRequest } = require('node:http');",
      "const { readFileSync } = require('node:fs');",
      "const { parentPort, workerData } = require('node:worker_threads');",
      'const __name = (f) => f;',
      `const cpuUsOf = ${cpuUsOf.toString()};`,
      `const runLoad = ${runLoad.toString()};`,
      'runLoad(workerData).then((r) => parentPort.postMessage(r));',
    ].join('\n');
    const w = new Worker(code, { eval: true, workerData: spec });
    w.once('message', (r: LoadResult) => resolve(r));
    w.once('error', reject);
    w.once('exit', (code) => code !== 0 && reject(new Error(`load worker exited with ${code}`)));
  });
}

async function main(): Promise<void> {
  const seconds = Number(process.env.BENCH_SECONDS ?? 5);
  const warmupSeconds = Number(process.env.BENCH_WARMUP_SECONDS ?? 1);
  const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 64);

  const { startNats, startRedis } = await import('../test/helpers/servers.js');
  const { loadConfig } = await import('../core/config.js');
  const { openHub, closeHub } = await import('../core/hub.js');
  const { buildApp } = await import('../core/http/app.js');
  const { verifyAccessToken } = await import('../core/auth/tokens.js');

  process.stdout.write(`starting nats-server and redis-server…\n`);
  const [nats, redis] = await Promise.all([startNats(), startRedis()]);
  const dataDir = mkdtempSync(join(tmpdir(), 'voxa-bench-'));
  const config = loadConfig(
    {
      natsUrl: nats.url,
      redisUrl: redis.url,
      dataDir,
      natsNamespace: 'bench',
      logLevel: 'silent',
      jwtSecret: 'bench-secret-bench-secret-bench-secret-0',
      secretKey: Buffer.alloc(32, 1).toString('base64'),
      sendRateLimitPerMinute: 10_000_000,
    },
    {},
  );
  const hub = await openHub(config, { name: 'bench' });
  let server: Server | undefined;
  try {
    let naiveSeq = 0;
    const app = buildApp(hub, {
      pluginRoutes: [
        {
          name: 'bench',
          // C: the naive way. Authentication comes from the plugin mount (koa-jwt + user load), like A. Plugin
          // routes are declared routes; `z.unknown()` takes the parsed JSON body as it is, so no schema work.
          routes: (router) => {
            const route = { method: 'post' as const, summary: 'bench', body: z.unknown(), responses: { 201: { description: 'ok' } } };
            // D: the same authenticated, body-parsing route with nothing behind it: what A and C share.
            router.add({
              ...route,
              path: '/bench/auth/:id',
              handler(ctx) {
                ctx.status = 201;
                ctx.body = { ok: true };
              },
            });
            router.add({
              ...route,
              path: '/bench/naive/:id',
              async handler(ctx) {
                const id = `evt_naive_${++naiveSeq}`;
                await hub.bus.js.publish(`bench.chat.default.${ctx.params.id}.message.created`, Buffer.from(JSON.stringify({ id, body: ctx.state.body })), {
                  msgID: id,
                });
                ctx.status = 201;
                ctx.body = { ok: true };
              },
            });
          },
        },
      ],
    });
    // B: first in the middleware stack, so it measures HTTP + Koa alone on this server.
    app.middleware.unshift(async (ctx, next) => {
      if (ctx.path !== '/bench/noop') return next();
      ctx.body = { ok: true };
    });
    server = createServer(app.callback());
    server.keepAliveTimeout = 30_000;
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;

    // A user pair and a conversation, through the API itself.
    const post = (path: string, body: unknown, token?: string) =>
      new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
        const data = JSON.stringify(body);
        const req = httpRequest(
          { host: '127.0.0.1', port, path, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...(token ? { authorization: `Bearer ${token}` } : {}) } },
          (res) => {
            let b = '';
            res.on('data', (d) => (b += d));
            res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(b || '{}') }));
          },
        );
        req.on('error', reject);
        req.end(data);
      });
    const alice = await post('/v1/auth/register', { email: 'alice@bench.test', password: 'bench password', name: 'Alice' });
    const bob = await post('/v1/auth/register', { email: 'bob@bench.test', password: 'bench password', name: 'Bob' });
    const token = alice.body.accessToken as string;
    await verifyAccessToken(hub, token);
    const conv = await post('/v1/conversations', { type: 'direct', members: [(bob.body.user as { id: string }).id] }, token);
    const convId = (conv.body.conversation as { id: string }).id;
    const body = JSON.stringify({ text: 'hello from the ingest benchmark' });

    const base = { port, seconds, warmupSeconds, concurrency };
    process.stdout.write(`running ${seconds}s per case (+${warmupSeconds}s warm-up), ${concurrency} requests in flight…\n`);
    const specs: Record<string, LoadSpec> = {
      A: { ...base, name: 'A  POST /v1/conversations/:id/messages', path: `/v1/conversations/${convId}/messages`, method: 'POST', token, body },
      B: { ...base, name: 'B  no-op Koa route', path: '/bench/noop', method: 'GET' },
      D: { ...base, name: 'D  auth + body, nothing else', path: `/v1/bench/auth/${convId}`, method: 'POST', token, body },
      C: { ...base, name: 'C  naive: auth + await js.publish', path: `/v1/bench/naive/${convId}`, method: 'POST', token, body },
    };
    const rounds = Math.max(1, Math.trunc(Number(process.env.BENCH_ROUNDS ?? 1)) || 1);
    const order = [...new Set((process.env.BENCH_CASES ?? 'BDCA').toUpperCase())].filter((c) => specs[c]);
    const runs: Record<string, LoadResult[]> = {};
    for (let round = 0; round < rounds; round++) {
      if (rounds > 1) process.stdout.write(`round ${round + 1} of ${rounds}…\n`);
      for (const c of order) (runs[c] ??= []).push(await measured(specs[c]!));
    }
    // Each case's median round by requests/s (the lower middle for an even count).
    const results: Record<string, LoadResult> = {};
    for (const [c, rs] of Object.entries(runs)) results[c] = [...rs].sort((a, b) => a.rps - b.rps)[Math.floor((rs.length - 1) / 2)]!;
    const missing: LoadResult = {
      name: '',
      requests: 0,
      errors: 0,
      seconds: 0,
      rps: NaN,
      p50: NaN,
      p99: NaN,
      allRequests: 0,
      cpuUsPerRequest: NaN,
      processCpuUsPerRequest: NaN,
      loadCpuUs: NaN,
    };
    const real = results.A ?? { ...missing, name: specs.A!.name };
    const noop = results.B ?? { ...missing, name: specs.B!.name };
    const naive = results.C ?? { ...missing, name: specs.C!.name };

    // Durability check: everything A stored was acknowledged by JetStream (the outbox drains to zero).
    const deadline = Date.now() + 30_000;
    while ((await hub.store.outboxCount()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const backlog = await hub.store.outboxCount();
    const info = await hub.bus.jsm.streams.info(hub.bus.streams.events);

    const rows = [real, noop, results.D, naive].filter((r): r is LoadResult => !!r && (r.requests > 0 || r.errors > 0));
    const fmt = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : '-');
    /** The ratio of two cases' requests/s within each round (same noise), in round order. */
    const perRound = (a: LoadResult[], b: LoadResult[] | undefined) => (b ? a.map((x, i) => (x.rps / b[i]!.rps).toFixed(2)).join(', ') : '-');
    const lines = [
      '',
      `| case | requests/s${rounds > 1 ? ' (median) | range' : ''} | p50 ms | p99 ms | requests | errors | main thread CPU µs/request | whole server CPU µs/request |`,
      `| --- | ---: |${rounds > 1 ? ' ---: |' : ''} ---: | ---: | ---: | ---: | ---: | ---: |`,
      ...rows.map((r) => {
        const all = Object.values(runs).find((rs) => rs.includes(r))!.map((x) => x.rps);
        const range = rounds > 1 ? ` ${fmt(Math.min(...all))}–${fmt(Math.max(...all))} |` : '';
        return `| ${r.name} | ${fmt(r.rps)} |${range} ${fmt(r.p50, 2)} | ${fmt(r.p99, 2)} | ${r.requests} | ${r.errors} | ${fmt(r.cpuUsPerRequest)} | ${fmt(r.processCpuUsPerRequest)} |`;
      }),
      '',
      ...(rounds > 1 && runs.A
        ? [
            `per round, A / B: ${perRound(runs.A, runs.B)}; A / C: ${perRound(runs.A, runs.C)}`,
            '',
          ]
        : []),
      `A / B = ${(real.rps / noop.rps).toFixed(2)}×  (goal ≥ 0.40×)  ${real.rps / noop.rps >= 0.4 ? 'met' : 'NOT met'}`,
      `A / C = ${(real.rps / naive.rps).toFixed(2)}×  (goal ≥ 1.50×)  ${real.rps / naive.rps >= 1.5 ? 'met' : 'NOT met'}`,
      // Requests per server-CPU-second: what the ratios would be if each case had the server thread's core to itself.
      `the same ratios from main-thread CPU per request: A / B = ${(noop.cpuUsPerRequest / real.cpuUsPerRequest).toFixed(2)}×, A / C = ${(naive.cpuUsPerRequest / real.cpuUsPerRequest).toFixed(2)}×`,
      `outbox backlog after the run: ${backlog}; events in the stream: ${info.state.messages}`,
      `node ${process.version}, ${concurrency} in flight, ${seconds}s per case, ${rounds} round${rounds > 1 ? 's' : ''}, SQLite store, nats-server + redis-server on loopback`,
    ];
    for (const r of rows) if (r.firstError) lines.push(`first error in "${r.name}": ${r.firstError}`);
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    if (server) await new Promise<void>((r) => server!.close(() => r()));
    await closeHub(hub).catch(() => undefined);
    await Promise.all([nats.dispose(), redis.dispose()]);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
