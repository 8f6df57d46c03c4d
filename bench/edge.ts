/**
 * `npm run bench:edge`: fan-out through the hub's WebSocket edge, side by side with two references, in one run.
 *
 *   hub/ws      N members of one group on the plain WebSocket path (`/ws`): one member sends, every member's
 *               socket receives (store commit, JetStream publish, edge fan-out — the real path).
 *   relay/ws    a minimal `ws` relay: a frame from one socket is written to every socket.
 *   hub/sio     the same room on the Socket.IO path.
 *   plain/sio   a plain Socket.IO server: `socket.to(room).emit()` per received event.
 *
 * Each server runs as a child process, so `process.cpuUsage()` of the server counts server work only (the
 * bench's own clients are not counted; nats-server and redis-server are separate processes and not counted
 * either). Printed per case: send→receive p50/p99 (ms), deliveries/s during the run, server CPU µs per
 * delivery, server RSS growth per idle connection (KiB, after GC).
 *
 * Goals on the plain-WebSocket path: CPU/delivery ≤ 1.2× relay/ws, p99 ≤ 1.5× relay/ws in the 1,000-member
 * room, idle memory ≤ 10 KiB per connection; Socket.IO path no worse than plain/sio.
 *
 * Env: BENCH_MEMBERS (default 1000), BENCH_MESSAGES (default 100), BENCH_INTERVAL_MS (default 100).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
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
    startEdge(hub, server, { sendPerSecond: 10_000, sendBurst: 10_000, framesPerSecond: 10_000, framesBurst: 10_000, resumeHoldMs: 100 });
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
  process.on('message', (m: { cmd: string }) => {
    if (m.cmd === 'stats') {
      (globalThis as { gc?: () => void }).gc?.();
      const c = process.cpuUsage();
      process.send!({ stats: { cpuUs: c.user + c.system, rss: process.memoryUsage().rss } satisfies Stats });
    }
  });
}

// -------------------------------------------------------------------------------------------------------------
// Bench side

interface Child {
  proc: ChildProcess;
  port: number;
  stats(): Promise<Stats>;
  kill(): Promise<void>;
}

async function startChild(mode: Mode, env: Record<string, string> = {}): Promise<Child> {
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
    kill: async () => {
      proc.kill('SIGKILL');
      if (proc.exitCode === null) await new Promise((r) => proc.once('exit', r));
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Row {
  name: string;
  p50: number;
  p99: number;
  deliveriesPerSec: number;
  cpuUsPerDelivery: number;
  idleKiB: number;
  delivered: number;
  expected: number;
}

function pct(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * Connects `n` receivers (one of them also sends), measures idle memory, sends MESSAGES messages carrying
 * their send time, and collects latencies as they arrive.
 */
async function runCase(
  name: string,
  child: Child,
  connect: (i: number, onText: (sentAt: number) => void) => Promise<{ send(ts: number, i: number): void; close(): void }>,
): Promise<Row> {
  const latencies: number[] = [];
  let delivered = 0;
  let lastAt = 0;
  const onText = (sentAt: number) => {
    const now = performance.now();
    latencies.push(now - sentAt);
    delivered++;
    lastAt = now;
  };
  await sleep(300);
  const before = await child.stats();
  const clients = [];
  for (let i = 0; i < MEMBERS; i += 50) {
    clients.push(...(await Promise.all(Array.from({ length: Math.min(50, MEMBERS - i) }, (_, k) => connect(i + k, onText)))));
  }
  await sleep(1500);
  const idle = await child.stats();
  const idleKiB = (idle.rss - before.rss) / MEMBERS / 1024;
  const sender = clients[0]!;
  // Warm-up message (JIT, first-time paths), not counted.
  sender.send(performance.now(), -1);
  await sleep(1000);
  latencies.length = 0;
  delivered = 0;
  const start = await child.stats();
  const t0 = performance.now();
  for (let i = 0; i < MESSAGES; i++) {
    sender.send(performance.now(), i);
    await sleep(INTERVAL_MS);
  }
  const expected = MESSAGES * MEMBERS;
  const deadline = Date.now() + 30_000;
  while (delivered < expected && Date.now() < deadline) await sleep(50);
  const end = await child.stats();
  for (const c of clients) c.close();
  latencies.sort((a, b) => a - b);
  return {
    name,
    p50: pct(latencies, 50),
    p99: pct(latencies, 99),
    deliveriesPerSec: delivered / ((lastAt - t0) / 1000),
    cpuUsPerDelivery: (end.cpuUs - start.cpuUs) / Math.max(1, delivered),
    idleKiB,
    delivered,
    expected,
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
        ws.send(JSON.stringify({ type: 'auth', data: { token: users[i]!.token } }));
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
        const s = io(`http://127.0.0.1:${c.port}`, { transports: ['websocket'], forceNew: true, reconnection: false, auth: { token: users[i]!.token } });
        s.on('receive-message', (d: { text: string }) => on(parseTs(d.text)));
        await new Promise((r) => s.once('ready', r));
        return { send: (ts, n) => s.emit('send-message', { conversationId: conversation.id, text: textOf(ts, n) }), close: () => s.disconnect() };
      },
    ],
  ];
  try {
    for (const [name, mode, make] of cases) {
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
  console.log('\n| case | p50 ms | p99 ms | deliveries/s | server CPU µs/delivery | idle KiB/conn |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const r of rows) console.log(`| ${r.name} | ${f(r.p50)} | ${f(r.p99)} | ${f(r.deliveriesPerSec, 0)} | ${f(r.cpuUsPerDelivery, 2)} | ${f(r.idleKiB, 1)} |`);
  const get = (n: string) => rows.find((r) => r.name === n);
  const hubWs = get('hub/ws');
  const relay = get('relay/ws');
  const hubSio = get('hub/sio');
  const plainSio = get('plain/sio');
  if (hubWs && relay) {
    console.log(`\nplain WebSocket: CPU/delivery ${f(hubWs.cpuUsPerDelivery / relay.cpuUsPerDelivery, 2)}× relay (goal ≤ 1.2), p99 ${f(hubWs.p99 / relay.p99, 2)}× relay (goal ≤ 1.5), idle ${f(hubWs.idleKiB)} KiB/conn (goal ≤ 10)`);
  }
  if (hubSio && plainSio) {
    console.log(`Socket.IO: CPU/delivery ${f(hubSio.cpuUsPerDelivery / plainSio.cpuUsPerDelivery, 2)}× plain, p99 ${f(hubSio.p99 / plainSio.p99, 2)}× plain, idle ${f(hubSio.idleKiB)} vs ${f(plainSio.idleKiB)} KiB/conn (goal: no worse)`);
  }
}

if (process.argv[2] === 'server') await serve(process.argv[3] as Mode);
else await main();
