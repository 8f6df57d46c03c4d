/**
 * Real servers for tests: a nats-server with JetStream and a redis-server, each on a free loopback port with
 * a temp data dir, started once per test file. They can be stopped and started again on the same port and
 * data dir (for outage and restart tests).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Whether a listener could take `port` on loopback right now (0: any port; resolves with the port or null). */
function tryListen(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(null));
    srv.listen(port, '127.0.0.1', () => {
      const got = (srv.address() as { port: number }).port;
      srv.close(() => resolve(got));
    });
  });
}

// Ports for test servers come from 20000–31999, below Linux's ephemeral range (32768+): there, the local end of
// any outgoing connection, or a port the kernel hands another test process for port 0, could take a port
// between the moment it was found free and the moment the server binds it. Each process starts at a random
// point and never hands out a port twice, so parallel tests in one file cannot collide, and separate files
// (separate processes) rarely overlap.
const PORT_LOW = 20_000;
const PORT_HIGH = 32_000;
let nextPort = PORT_LOW + Math.floor(Math.random() * (PORT_HIGH - PORT_LOW));
const handedOut = new Set<number>();

export async function freePort(): Promise<number> {
  for (let tries = 0; tries < 500; tries++) {
    const port = nextPort;
    nextPort = nextPort + 1 >= PORT_HIGH ? PORT_LOW : nextPort + 1;
    if (handedOut.has(port)) continue;
    if ((await tryListen(port)) !== null) {
      handedOut.add(port);
      return port;
    }
  }
  const port = await tryListen(0); // the range is crowded: let the kernel choose
  if (port === null) throw new Error('no free port');
  handedOut.add(port);
  return port;
}

async function waitForPort(port: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = netConnect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`port ${port} did not open in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface ManagedServer {
  url: string;
  port: number;
  dir: string;
  start(): Promise<void>;
  /** SIGTERM (or SIGKILL with hard=true) and wait for exit. */
  stop(hard?: boolean): Promise<void>;
  /** SIGSTOP: the process keeps its connections open but answers nothing (a hung server); thaw() undoes it. */
  freeze(): void;
  thaw(): void;
  /** Stop and delete the data dir. */
  dispose(): Promise<void>;
}

function managed(kind: string, port: number, dir: string, url: string, cmd: string, args: () => string[], env?: NodeJS.ProcessEnv): ManagedServer {
  let child: ChildProcess | null = null;
  const srv: ManagedServer = {
    url,
    port,
    dir,
    async start() {
      if (child) return;
      const c = spawn(cmd, args(), { stdio: ['ignore', 'ignore', 'pipe'], ...(env ? { env: { ...process.env, ...env } } : {}) });
      let stderr = '';
      c.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
      c.once('exit', () => {
        if (child === c) child = null;
      });
      child = c;
      try {
        await waitForPort(port);
      } catch (err) {
        throw new Error(`${kind} did not start: ${(err as Error).message}\n${stderr}`);
      }
    },
    async stop(hard = false) {
      const c = child;
      if (!c) return;
      child = null;
      await new Promise<void>((resolve) => {
        c.once('exit', () => resolve());
        c.kill(hard ? 'SIGKILL' : 'SIGTERM');
      });
    },
    freeze() {
      child?.kill('SIGSTOP');
    },
    thaw() {
      child?.kill('SIGCONT');
    },
    async dispose() {
      srv.thaw(); // a frozen process would never act on the SIGTERM
      await srv.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return srv;
}

/** nats-server with JetStream on a free port; data in a temp dir. */
export async function startNats(): Promise<ManagedServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'voxa-nats-'));
  const conf = join(dir, 'nats.conf');
  writeFileSync(
    conf,
    `listen: 127.0.0.1:${port}\nserver_name: test_${port}\njetstream {\n  store_dir: "${join(dir, 'js')}"\n  max_memory_store: 256MB\n  max_file_store: 2GB\n}\n`,
  );
  const srv = managed('nats-server', port, dir, `nats://127.0.0.1:${port}`, 'nats-server', () => ['-c', conf]);
  await srv.start();
  return srv;
}

export interface NatsCluster {
  /** Every node's client URL, comma-separated: what NATS_URL takes. */
  url: string;
  nodes: Array<ManagedServer & { name: string }>;
  dispose(): Promise<void>;
}

/**
 * A NATS cluster with JetStream on loopback, `size` nodes, each started from the shipped
 * deploy/nats-cluster/node.conf (so that file is what the cluster tests run) with its own ports and data dir.
 * Resolves once the cluster has a JetStream meta leader, i.e. streams can be declared.
 */
export async function startNatsCluster(size = 3): Promise<NatsCluster> {
  const conf = fileURLToPath(new URL('../../deploy/nats-cluster/node.conf', import.meta.url));
  const specs = [];
  for (let i = 1; i <= size; i++) specs.push({ name: `n${i}`, port: await freePort(), monitor: await freePort(), route: await freePort() });
  const routes = Object.fromEntries(specs.map((s, i) => [`VOXA_NATS_ROUTE_${i + 1}`, `nats-route://127.0.0.1:${s.route}`]));
  const nodes = specs.map((s) => {
    const dir = mkdtempSync(join(tmpdir(), `voxa-nats-${s.name}-`));
    const env = {
      VOXA_NATS_NAME: s.name,
      VOXA_NATS_LISTEN: `127.0.0.1:${s.port}`,
      VOXA_NATS_MONITOR: `127.0.0.1:${s.monitor}`,
      VOXA_NATS_STORE_DIR: join(dir, 'js'),
      VOXA_NATS_CLUSTER_LISTEN: `127.0.0.1:${s.route}`,
      ...routes,
    };
    return Object.assign(managed(`nats-server ${s.name}`, s.port, dir, `nats://127.0.0.1:${s.port}`, 'nats-server', () => ['-c', conf], env), { name: s.name });
  });
  const cluster: NatsCluster = {
    url: nodes.map((n) => n.url).join(','),
    nodes,
    async dispose() {
      await Promise.all(nodes.map((n) => n.dispose()));
    },
  };
  try {
    await Promise.all(nodes.map((n) => n.start()));
    // JetStream answers "temporarily unavailable" until the nodes have elected a meta leader.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const up = await Promise.all(specs.map((s) => metaLeader(s.monitor)));
      if (up.every((l) => l !== null)) break;
      if (Date.now() > deadline) throw new Error('the NATS cluster elected no JetStream meta leader in 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (err) {
    await cluster.dispose();
    throw err;
  }
  return cluster;
}

/** The JetStream meta leader a node's monitoring endpoint names, or null (none yet, or no answer). */
async function metaLeader(monitorPort: number): Promise<string | null> {
  try {
    const res = await fetch(`http://127.0.0.1:${monitorPort}/jsz`, { signal: AbortSignal.timeout(1000) });
    const body = (await res.json()) as { meta_cluster?: { leader?: string } };
    return body.meta_cluster?.leader || null;
  } catch {
    return null;
  }
}

/** redis-server on a free port, no persistence, data in a temp dir. */
export async function startRedis(): Promise<ManagedServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'voxa-redis-'));
  const srv = managed('redis-server', port, dir, `redis://127.0.0.1:${port}`, 'redis-server', () => [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    'no',
    '--protected-mode',
    'no',
  ]);
  await srv.start();
  return srv;
}

export interface RedisSentinelSet {
  /** REDIS_URL for the set: redis-sentinel://127.0.0.1:<sentinel>/<master>. */
  url: string;
  master: string;
  primary: ManagedServer;
  replica: ManagedServer;
  sentinel: ManagedServer;
  dispose(): Promise<void>;
}

/**
 * A Redis primary, one replica and one sentinel watching them (quorum 1, a primary counts as down after one
 * second), on loopback: enough to see a client follow a failover. The sentinel is started from the shipped
 * deploy/redis-sentinel/sentinel.conf (copied, since a sentinel rewrites its file), with the ports filled in.
 */
export async function startRedisSentinel(master = 'voxa'): Promise<RedisSentinelSet> {
  const primary = await startRedis();
  const replica = await startRedis();
  const sentinelPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'voxa-sentinel-'));
  const conf = join(dir, 'sentinel.conf');
  const shipped = readFileSync(fileURLToPath(new URL('../../deploy/redis-sentinel/sentinel.conf', import.meta.url)), 'utf8');
  writeFileSync(
    conf,
    shipped
      .replace(/^port .*$/m, `port ${sentinelPort}`)
      .replace(/^bind .*$/m, 'bind 127.0.0.1')
      .replace(/^sentinel monitor .*$/m, `sentinel monitor ${master} 127.0.0.1 ${primary.port} 1`)
      .replaceAll(' voxa ', ` ${master} `)
      .replace(/^(sentinel down-after-milliseconds \S+) .*$/m, '$1 1000')
      .replace(/^(sentinel failover-timeout \S+) .*$/m, '$1 5000') + `\ndir ${dir}\n`,
  );
  const sentinel = managed('redis sentinel', sentinelPort, dir, `redis://127.0.0.1:${sentinelPort}`, 'redis-server', () => [conf, '--sentinel']);
  const set: RedisSentinelSet = {
    url: `redis-sentinel://127.0.0.1:${sentinelPort}/${master}`,
    master,
    primary,
    replica,
    sentinel,
    async dispose() {
      await Promise.all([sentinel.dispose(), primary.dispose(), replica.dispose()]);
    },
  };
  try {
    // The replica follows the primary before the sentinel starts, so the sentinel's first look finds both.
    await redisCommand(replica.port, ['REPLICAOF', '127.0.0.1', String(primary.port)]);
    const deadline = Date.now() + 15_000;
    while (!/master_link_status:up/.test(await redisCommand(replica.port, ['INFO', 'replication']))) {
      if (Date.now() > deadline) throw new Error('the replica did not sync with the primary in 15 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    await sentinel.start();
  } catch (err) {
    await set.dispose();
    throw err;
  }
  return set;
}

/** One command to a Redis server over a plain socket (RESP), its reply as text. */
export function redisCommand(port: number, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = netConnect(port, '127.0.0.1');
    let out = '';
    sock.setTimeout(3000, () => sock.destroy(new Error('redis command timed out')));
    sock.on('data', (d) => {
      out += d.toString('utf8');
      // A simple reply ends at its CRLF; a bulk reply ($<n>) once its n bytes and CRLF are in.
      const bulk = /^\$(\d+)\r\n/.exec(out);
      if (bulk ? Buffer.byteLength(out) >= bulk[0].length + Number(bulk[1]) + 2 : /\r\n$/.test(out)) sock.end();
    });
    sock.on('end', () => resolve(out));
    sock.on('close', () => resolve(out));
    sock.on('error', reject);
    sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
  });
}

let counter = 0;
/** A unique NATS namespace (stream names and subjects) for one test. */
export function uniqueNamespace(prefix = 't'): string {
  return `${prefix}${process.pid}x${Date.now().toString(36)}x${counter++}`;
}
