/**
 * `npm run bench:edge`: fan-out through the hub's WebSocket edge, side by side with two references, in one run.
 *
 *   relay/ws    a minimal `ws` relay: a frame from one socket is written to every socket.
 *   hub/ws      N members of one group on the plain WebSocket path (`/ws`): one member sends with `send-message`
 *               (the hub's own send path: validation, store commit, JetStream publish), every member's socket
 *               receives through the edge fan-out.
 *   plain/sio   a plain Socket.IO server: `io.to(room).emit()` per received event.
 *   hub/sio     the same room on the hub's Socket.IO path.
 *
 * Each server runs as a child process, so `process.cpuUsage()` of the server counts server work only (the
 * bench's clients, nats-server and redis-server are other processes and not counted).
 *
 * How each case runs, identically for all four:
 *   1. The sender connects alone; one warm-up message; then MESSAGES messages every INTERVAL_MS, each delivered
 *      once (to the sender itself). Server CPU over these is the *per-message* cost: for the hub that is the
 *      whole send path (validation, SQLite, outbox, JetStream publish and its ack), for the references the
 *      parse and one write. It does not grow with the room.
 *   2. The other N−1 members connect, in two halves. Before, between and after, once server and clients are idle
 *      (see settle()) and after a forced GC (`--expose-gc`), the server's memory is read: idle memory per
 *      connection = growth over the second half / its connections (the slope: one-time costs such as compiling
 *      the connect path or growing shared tables fall in the first half, for every case alike), as V8 heap +
 *      external memory (what the connections hold); the growth over all N−1 and RSS are printed alongside.
 *   3. One warm-up message, then MESSAGES messages at the same pace, each delivered N times.
 * Columns:
 *   p50/p99        send→receive latency over the N × MESSAGES deliveries of step 3.
 *   deliveries/s   step-3 deliveries over the time from the first send to the last delivery.
 *   CPU µs/deliv   step-3 server CPU / step-3 deliveries (everything, send path included).
 *   fan-out µs/deliv  (step-3 CPU − step-1 CPU) / (step-3 deliveries − step-1 deliveries): the marginal cost of
 *                  one more delivery, the fixed per-message cost removed. This is the column the goals are about
 *                  ("CPU per delivery" of the fan-out), computed the same way for every case.
 *   idle KiB/conn  heap+external growth per idle connection over the second half (in parentheses: over all N−1,
 *                  and the RSS slope — noisier: the allocator keeps pages).
 *
 * Goals on the plain-WebSocket path: fan-out CPU/delivery ≤ 1.2× relay/ws, p99 ≤ 1.5× relay/ws in the
 * 1,000-member room, idle memory ≤ 10 KiB per connection; Socket.IO path no worse than plain/sio.
 *
 * Env: BENCH_MEMBERS (default 1000), BENCH_MESSAGES (default 100), BENCH_INTERVAL_MS (default 100),
 * BENCH_CASES (comma-separated case names, default all), BENCH_PROFILE=<dir> (each server writes a CPU profile of
 * step 3 alone — the room's fan-out window — to <dir>/edge-<mode>-<pid>.cpuprofile, for DevTools or speedscope),
 * BENCH_HEAPSNAP=<dir> (each server writes a heap snapshot after each half of step 2, to diff what an idle
 * connection holds by type; the snapshots are taken outside the measured CPU and memory readings).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { UserRecord } from '../core/domain.js';

const MEMBERS = Number(process.env.BENCH_MEMBERS ?? 1000);
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 100);
const INTERVAL_MS = Number(process.env.BENCH_INTERVAL_MS ?? 100);

type Mode = 'hub' | 'relay' | 'plainsio';
interface Stats {
  cpuUs: number;
  rss: number;
  /** V8 heap used + external (Buffers and other memory held by JS objects). */
  mem: number;
}

// -------------------------------------------------------------------------------------------------------------
// Server side (child processes)

async function serve(mode: Mode): Promise<void> {
  let server;
  if (mode === 'hub') {
    const { loadConfig } = await import('../core/config.js');
    const { openHub } = await import('../core/hub.js');
    const { buildApp } = await import('../core/http/app.js');
    const { startEdge } = await import('../plugins/edge/index.js');
    const hub = await openHub(loadConfig(JSON.parse(process.env.BENCH_CONFIG!), {}), { name: 'bench-edge' });
    server = createServer(buildApp(hub).callback());
    // Default resume hold: the bench's clients say they have nothing to resume (`cursors: {}`), which ends it.
    startEdge(hub, server, { sendPerSecond: 10_000, sendBurst: 10_000, framesPerSecond: 10_000, framesBurst: 10_000 });
  } else if (mode === 'relay') {
    const { WebSocketServer } = await import('ws');
    server = createServer();
    const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false });
    wss.on('connection', (ws) => {
      ws.on('message', (data, isBinary) => {
        for (const c of wss.clients) if (c.readyState === 1) c.send(data, { binary: isBinary });
      });
    });
  } else {
    const { Server } = await import('socket.io');
    server = createServer();
    const io = new Server(server, { perMessageDeflate: false, serveClient: false });
    io.on('connection', (socket) => {
      void socket.join('room');
      socket.on('send-message', (data: unknown, ack?: (r: unknown) => void) => {
        io.to('room').emit('receive-message', data);
        ack?.({ ok: true });
      });
    });
  }
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as { port: number }).port }));
  let profiler: import('node:inspector').Session | null = null;
  process.on('message', async (m: { cmd: string }) => {
    if (m.cmd === 'prof-start' && process.env.BENCH_PROFILE) {
      const { Session } = await import('node:inspector');
      profiler = new Session();
      profiler.connect();
      profiler.post('Profiler.enable', () => profiler!.post('Profiler.start', () => process.send!({ profiling: true })));
    } else if (m.cmd === 'prof-stop' && profiler) {
      profiler.post('Profiler.stop', (err, res) => {
        if (!err) writeFileSync(join(process.env.BENCH_PROFILE!, `edge-${mode}-${process.pid}.cpuprofile`), JSON.stringify(res.profile));
        profiler!.disconnect();
        profiler = null;
        process.send!({ profiling: false });
      });
    } else if (m.cmd === 'prof-start' || m.cmd === 'prof-stop') {
      process.send!({ profiling: false });
    } else if (m.cmd === 'stats') {
      // CPU first: the forced GC below is measurement work, not server work.
      const c = process.cpuUsage();
      // Twice: external memory (Buffers, external strings) is given back by finalizers that the first
      // collection only schedules.
      (globalThis as { gc?: () => void }).gc?.();
      (globalThis as { gc?: () => void }).gc?.();
      const mu = process.memoryUsage();
      process.send!({ stats: { cpuUs: c.user + c.system, rss: mu.rss, mem: mu.heapUsed + mu.external } satisfies Stats });
    } else if (m.cmd === 'cpu') {
      const c = process.cpuUsage();
      process.send!({ cpuUs: c.user + c.system });
    } else if (m.cmd === 'heapsnap') {
      // Idle-memory diagnosis (BENCH_HEAPSNAP): snapshots between and after the halves of step 2, to diff by type.
      const { writeHeapSnapshot } = await import('node:v8');
      (globalThis as { gc?: () => void }).gc?.();
      const file = writeHeapSnapshot(join(process.env.BENCH_HEAPSNAP!, `edge-${mode}-${process.pid}-${Date.now()}.heapsnapshot`));
      process.send!({ heapsnap: file });
    } else if (m.cmd === 'exit') {
      // A clean exit, so --cpu-prof writes its profile.
      process.exit(0);
    }
  });
}

// -------------------------------------------------------------------------------------------------------------
// Bench side

interface Child {
  proc: ChildProcess;
  port: number;
  stats(): Promise<Stats>;
  /** Server CPU so far (µs), without the forced GC of stats(). */
  cpu(): Promise<number>;
  /** Writes a heap snapshot into BENCH_HEAPSNAP (no-op without it). */
  heapsnap(): Promise<void>;
  /** Starts/stops the server's CPU profiler (BENCH_PROFILE only). */
  profile(cmd: 'prof-start' | 'prof-stop'): Promise<void>;
  kill(): Promise<void>;
}

async function startChild(mode: Mode, env: Record<string, string> = {}): Promise<Child> {
  if (process.env.BENCH_PROFILE) mkdirSync(process.env.BENCH_PROFILE, { recursive: true });
  const proc = fork(fileURLToPath(import.meta.url), ['server', mode], {
    execArgv: ['--import', 'tsx', '--expose-gc'],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    proc.once('message', (m: { port: number }) => resolve(m.port));
    proc.once('exit', (code) => reject(new Error(`${mode} server exited ${code}`)));
  });
  return {
    proc,
    port,
    stats: () =>
      new Promise((resolve) => {
        proc.once('message', (m: { stats: Stats }) => resolve(m.stats));
        proc.send({ cmd: 'stats' });
      }),
    cpu: () =>
      new Promise((resolve) => {
        proc.once('message', (m: { cpuUs: number }) => resolve(m.cpuUs));
        proc.send({ cmd: 'cpu' });
      }),
    heapsnap: () =>
      new Promise((resolve) => {
        if (!process.env.BENCH_HEAPSNAP) return resolve();
        mkdirSync(process.env.BENCH_HEAPSNAP, { recursive: true });
        proc.once('message', () => resolve());
        proc.send({ cmd: 'heapsnap' });
      }),
    profile: (cmd) =>
      new Promise((resolve) => {
        proc.once('message', () => resolve());
        proc.send({ cmd });
      }),
    kill: async () => {
      if (proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.send({ cmd: 'exit' });
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Waits (at least `minMs`, at most 20 s) until both the server and this process — the clients — have been idle
 * for two 250 ms windows in a row (under 3% of a core each). Memory read while frames are still in flight (the
 * tail of a connect storm: presence events, ready frames) counts buffers about to be freed, and a fixed pause
 * is long enough for one server and not for another; every case waits for the same condition.
 */
async function settle(child: Child, minMs: number): Promise<void> {
  await sleep(minMs);
  const deadline = Date.now() + 20_000;
  let quiet = 0;
  let server = await child.cpu();
  let self = process.cpuUsage();
  let at = performance.now();
  while (quiet < 2 && Date.now() < deadline) {
    await sleep(250);
    const [server2, self2, at2] = [await child.cpu(), process.cpuUsage(), performance.now()];
    const wallUs = (at2 - at) * 1000;
    const busiest = Math.max(server2 - server, self2.user + self2.system - (self.user + self.system)) / wallUs;
    quiet = busiest < 0.03 ? quiet + 1 : 0;
    [server, self, at] = [server2, self2, at2];
  }
}

interface Row {
  name: string;
  p50: number;
  p99: number;
  deliveriesPerSec: number;
  cpuUsPerDelivery: number;
  fanoutUsPerDelivery: number;
  sendUsPerMessage: number;
  /** Heap + external growth per connection over the second half of the room (the slope). */
  idleKiB: number;
  /** The same over all N−1 connections (one-time costs included). */
  idleAllKiB: number;
  idleRssKiB: number;
  delivered: number;
  expected: number;
}

function pct(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

type Connect = (i: number, onText: (sentAt: number) => void) => Promise<{ send(ts: number, i: number): void; close(): void }>;

/** The steps described at the top of this file. */
async function runCase(name: string, child: Child, connect: Connect): Promise<Row> {
  const latencies: number[] = [];
  let delivered = 0;
  let lastAt = 0;
  const onText = (sentAt: number) => {
    const now = performance.now();
    latencies.push(now - sentAt);
    delivered++;
    lastAt = now;
  };
  /** Sends MESSAGES messages at the pace and waits for `perMessage` deliveries each; returns the step's numbers. */
  const burst = async (sender: { send(ts: number, i: number): void }, perMessage: number, profile = false) => {
    sender.send(performance.now(), -1); // warm-up (JIT, first-time paths), not counted
    const warm = Date.now() + 30_000;
    while (delivered < perMessage && Date.now() < warm) await sleep(20);
    await sleep(500);
    latencies.length = 0;
    delivered = 0;
    if (profile) await child.profile('prof-start');
    const start = await child.stats();
    const t0 = performance.now();
    for (let i = 0; i < MESSAGES; i++) {
      sender.send(performance.now(), i);
      await sleep(INTERVAL_MS);
    }
    const expected = MESSAGES * perMessage;
    const deadline = Date.now() + 30_000;
    while (delivered < expected && Date.now() < deadline) await sleep(50);
    const end = await child.stats();
    if (profile) await child.profile('prof-stop');
    return { cpuUs: end.cpuUs - start.cpuUs, delivered, expected, seconds: (lastAt - t0) / 1000 };
  };

  await sleep(300);
  // Step 1: the sender alone.
  const sender = await connect(0, onText);
  const alone = await burst(sender, 1);
  // Step 2: everyone else, idle, in two halves.
  await settle(child, 300);
  const before = await child.stats();
  const clients = [sender];
  const connectRange = async (from: number, to: number) => {
    for (let i = from; i < to; i += 50) {
      clients.push(...(await Promise.all(Array.from({ length: Math.min(50, to - i) }, (_, k) => connect(i + k, onText)))));
    }
  };
  const half = 1 + Math.floor((MEMBERS - 1) / 2);
  await connectRange(1, half);
  await settle(child, 1500);
  const mid = await child.stats();
  await child.heapsnap();
  await connectRange(half, MEMBERS);
  await settle(child, 1500);
  const idle = await child.stats();
  await child.heapsnap();
  const others = Math.max(1, MEMBERS - 1);
  const secondHalf = Math.max(1, MEMBERS - half);
  // Step 3: the room.
  const room = await burst(sender, MEMBERS, true);
  for (const c of clients) c.close();
  latencies.sort((a, b) => a - b);
  return {
    name,
    p50: pct(latencies, 50),
    p99: pct(latencies, 99),
    deliveriesPerSec: room.delivered / room.seconds,
    cpuUsPerDelivery: room.cpuUs / Math.max(1, room.delivered),
    fanoutUsPerDelivery: (room.cpuUs - alone.cpuUs) / Math.max(1, room.delivered - alone.delivered),
    sendUsPerMessage: alone.cpuUs / Math.max(1, alone.delivered),
    idleKiB: (idle.mem - mid.mem) / secondHalf / 1024,
    idleAllKiB: (idle.mem - before.mem) / others / 1024,
    idleRssKiB: (idle.rss - mid.rss) / secondHalf / 1024,
    delivered: room.delivered,
    expected: room.expected,
  };
}

async function main(): Promise<void> {
  const { WebSocket } = await import('ws');
  const { io } = await import('socket.io-client');
  const { startNats, startRedis, uniqueNamespace } = await import('../test/helpers/servers.js');
  const { loadConfig } = await import('../core/config.js');
  const { openHub, closeHub } = await import('../core/hub.js');
  const { signAccessToken } = await import('../core/auth/tokens.js');
  const { newId } = await import('../core/ids.js');

  console.log(`bench:edge — ${MEMBERS} members in one room, ${MESSAGES} messages every ${INTERVAL_MS} ms (→ ${MEMBERS * MESSAGES} deliveries per case)\n`);
  const [nats, redis] = await Promise.all([startNats(), startRedis()]);
  const dataDir = mkdtempSync(join(tmpdir(), 'voxa-bench-edge-'));
  const configInput = {
    natsUrl: nats.url,
    redisUrl: redis.url,
    dataDir,
    natsNamespace: uniqueNamespace('bench'),
    logLevel: 'warn' as const,
    jwtSecret: 'bench-secret-bench-secret-bench-secret-0',
    secretKey: Buffer.alloc(32, 3).toString('base64'),
    sendRateLimitPerMinute: 1_000_000,
    publishAckWaitMs: 1000,
  };
  // Users and the room, created directly in the store (what registration would leave behind).
  const hub = await openHub(loadConfig(configInput, {}), { name: 'bench-setup' });
  const users: Array<{ user: UserRecord; token: string }> = [];
  for (let i = 0; i < MEMBERS; i++) {
    const user = {
      id: newId('usr'),
      workspaceId: hub.config.defaultWorkspaceId,
      email: `m${i}@bench.test`,
      name: `Member ${i}`,
      role: 'agent' as const,
      createdAt: new Date().toISOString(),
      passwordHash: 'x',
      disabled: false,
    };
    await hub.store.createUser(user, () => []);
    users.push({ user, token: signAccessToken(hub, user, 'fam_bench') });
  }
  const { conversation } = await hub.chat.openConversation(users[0]!.user, { type: 'group', title: 'bench', members: users.slice(1).map((u) => u.user.id) });
  await closeHub(hub);

  const rows: Row[] = [];
  const textOf = (ts: number, i: number) => `${ts} ${i}`;
  const parseTs = (text: string) => Number(text.slice(0, text.indexOf(' ')));
  // What the references relay: a payload shaped and sized like the hub's stored message.
  const lookalike = (text: string) => ({
    id: newId('msg'),
    conversationId: conversation.id,
    seq: 1,
    senderId: users[0]!.user.id,
    text,
    clientId: null,
    createdAt: new Date().toISOString(),
  });

  const cases: Array<[string, Mode, (c: Child) => (i: number, on: (ts: number) => void) => Promise<{ send(ts: number, i: number): void; close(): void }>]> = [
    [
      'relay/ws',
      'relay',
      (c) => async (_i, on) => {
        const ws = new WebSocket(`ws://127.0.0.1:${c.port}/ws`, { perMessageDeflate: false });
        // Same client work as on the hub path: a frame of the same shape and size, parsed as JSON.
        ws.on('message', (d) => on(parseTs((JSON.parse(d.toString()) as { data: { text: string } }).data.text)));
        await new Promise((r) => ws.once('open', r));
        return { send: (ts, i) => ws.send(JSON.stringify({ type: 'receive-message', data: lookalike(textOf(ts, i)) })), close: () => ws.terminate() };
      },
    ],
    [
      'hub/ws',
      'hub',
      (c) => async (i, on) => {
        const ws = new WebSocket(`ws://127.0.0.1:${c.port}/ws`, { perMessageDeflate: false });
        ws.on('message', (d) => {
          const f = JSON.parse(d.toString()) as { type: string; data: { text: string } };
          if (f.type === 'receive-message') on(parseTs(f.data.text));
        });
        await new Promise((r) => ws.once('open', r));
        const ready = new Promise<void>((r) => ws.once('message', () => r()));
        ws.send(JSON.stringify({ type: 'auth', data: { token: users[i]!.token, cursors: {} } }));
        await ready;
        return {
          send: (ts, n) => ws.send(JSON.stringify({ type: 'send-message', data: { conversationId: conversation.id, text: textOf(ts, n) } })),
          close: () => ws.terminate(),
        };
      },
    ],
    [
      'plain/sio',
      'plainsio',
      (c) => async (_i, on) => {
        const s = io(`http://127.0.0.1:${c.port}`, { transports: ['websocket'], forceNew: true, reconnection: false });
        s.on('receive-message', (d: { text: string }) => on(parseTs(d.text)));
        await new Promise<void>((r) => s.once('connect', () => r()));
        return { send: (ts, n) => s.emit('send-message', lookalike(textOf(ts, n))), close: () => s.disconnect() };
      },
    ],
    [
      'hub/sio',
      'hub',
      (c) => async (i, on) => {
        const s = io(`http://127.0.0.1:${c.port}`, { transports: ['websocket'], forceNew: true, reconnection: false, auth: { token: users[i]!.token, cursors: {} } });
        s.on('receive-message', (d: { text: string }) => on(parseTs(d.text)));
        await new Promise((r) => s.once('ready', r));
        return { send: (ts, n) => s.emit('send-message', { conversationId: conversation.id, text: textOf(ts, n) }), close: () => s.disconnect() };
      },
    ],
  ];
  try {
    const only = process.env.BENCH_CASES?.split(',').map((c) => c.trim());
    for (const [name, mode, make] of cases) {
      if (only && !only.includes(name)) continue;
      const child = await startChild(mode, mode === 'hub' ? { BENCH_CONFIG: JSON.stringify(configInput) } : {});
      try {
        const row = await runCase(name, child, make(child));
        rows.push(row);
        console.log(`  ${name.padEnd(10)} done (${row.delivered}/${row.expected} delivered)`);
      } finally {
        await child.kill();
      }
    }
  } finally {
    await Promise.all([nats.dispose(), redis.dispose()]);
    rmSync(dataDir, { recursive: true, force: true });
  }

  const f = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');
  console.log('\n| case | p50 ms | p99 ms | deliveries/s | CPU µs/delivery (all) | fan-out CPU µs/delivery | send CPU µs/message | idle KiB/conn heap+ext: slope (all-in; RSS) |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    console.log(
      `| ${r.name} | ${f(r.p50)} | ${f(r.p99)} | ${f(r.deliveriesPerSec, 0)} | ${f(r.cpuUsPerDelivery, 2)} | ${f(r.fanoutUsPerDelivery, 2)} | ${f(r.sendUsPerMessage, 0)} | ${f(r.idleKiB, 1)} (${f(r.idleAllKiB, 1)}; ${f(r.idleRssKiB, 1)}) |`,
    );
  }
  const get = (n: string) => rows.find((r) => r.name === n);
  const hubWs = get('hub/ws');
  const relay = get('relay/ws');
  const hubSio = get('hub/sio');
  const plainSio = get('plain/sio');
  if (hubWs && relay) {
    console.log(
      `\nplain WebSocket: fan-out CPU/delivery ${f(hubWs.fanoutUsPerDelivery / relay.fanoutUsPerDelivery, 2)}× relay (goal ≤ 1.2; all-in ${f(hubWs.cpuUsPerDelivery / relay.cpuUsPerDelivery, 2)}×), ` +
        `p99 ${f(hubWs.p99 / relay.p99, 2)}× relay (goal ≤ 1.5), idle ${f(hubWs.idleKiB)} KiB/conn (goal ≤ 10)`,
    );
  }
  if (hubSio && plainSio) {
    console.log(
      `Socket.IO: fan-out CPU/delivery ${f(hubSio.fanoutUsPerDelivery / plainSio.fanoutUsPerDelivery, 2)}× plain (all-in ${f(hubSio.cpuUsPerDelivery / plainSio.cpuUsPerDelivery, 2)}×), ` +
        `p99 ${f(hubSio.p99 / plainSio.p99, 2)}× plain, idle ${f(hubSio.idleKiB)} vs ${f(plainSio.idleKiB)} KiB/conn (goal: no worse)`,
    );
  }
}

if (process.argv[2] === 'server') await serve(process.argv[3] as Mode);
else await main();
