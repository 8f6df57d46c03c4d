/**
 * Real servers for tests: a nats-server with JetStream and a redis-server, each on a free loopback port with
 * a temp data dir, started once per test file. They can be stopped and started again on the same port and
 * data dir (for outage and restart tests).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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

function managed(kind: string, port: number, dir: string, url: string, cmd: string, args: () => string[]): ManagedServer {
  let child: ChildProcess | null = null;
  const srv: ManagedServer = {
    url,
    port,
    dir,
    async start() {
      if (child) return;
      const c = spawn(cmd, args(), { stdio: ['ignore', 'ignore', 'pipe'] });
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

let counter = 0;
/** A unique NATS namespace (stream names and subjects) for one test. */
export function uniqueNamespace(prefix = 't'): string {
  return `${prefix}${process.pid}x${Date.now().toString(36)}x${counter++}`;
}
