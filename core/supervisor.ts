/**
 * Embedded services for `voxa start`: when NATS_URL / REDIS_URL are not set, nats-server (with the project's
 * nats.conf) and redis-server run as children of the hub, with their data under dataDir. A child that dies is
 * restarted with backoff; the hub's connections reconnect by themselves. stop() ends them cleanly.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { withTimeout } from './timeout.js';

export interface ChildSpec {
  name: string;
  cmd: string;
  args: string[];
  cwd?: string;
  port: number;
  /**
   * Where the child's pid is recorded while it runs. If the hub itself dies without stopping it (kill -9, OOM
   * killer), the child lives on and holds its port; the next start finds it through this file and stops it
   * instead of failing with "port in use".
   */
  pidFile?: string;
  /** A string the command line of a recorded pid must contain to count as ours (e.g. our data dir). */
  ownerMark?: string;
}

function portOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((res) => {
    const s = netConnect(port, host);
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** The parent pid of a process (Linux /proc), or null. The command name in field 2 may hold spaces and parens. */
function parentOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isInteger(ppid) ? ppid : null;
  } catch {
    return null;
  }
}

/**
 * What the pid in `spec.pidFile` is now:
 * - `orphan`: it runs, it is ours (its command line names the same program and carries the owner mark), and
 *   the hub that started it is gone: safe to stop.
 * - `owned`: the same, but the hub that started it still runs and is still its parent: another hub on this data
 *   dir, which must be left alone.
 * - null: anything else (no file, a stale pid, a reused pid, another program, no /proc); nothing is touched.
 */
function recordedChild(spec: ChildSpec): { pid: number; state: 'orphan' | 'owned'; hub: number | null } | null {
  if (!spec.pidFile) return null;
  let pid: number;
  let hub: number | null;
  try {
    const rec = JSON.parse(readFileSync(spec.pidFile, 'utf8')) as { pid?: unknown; hub?: unknown };
    pid = Number(rec.pid);
    hub = Number.isInteger(rec.hub) ? (rec.hub as number) : null;
  } catch {
    return null;
  }
  if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid || !isAlive(pid)) return null;
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return null;
  }
  if (!cmdline.includes(spec.cmd) || (spec.ownerMark && !cmdline.includes(spec.ownerMark))) return null;
  const parent = parentOf(pid);
  // Files written before the hub's pid was recorded: a child whose parent is still alive (and not init) is owned.
  const owner = hub ?? (parent !== null && parent > 1 ? parent : null);
  const owned = owner !== null && owner !== process.pid && parent === owner && isAlive(owner);
  return { pid, state: owned ? 'owned' : 'orphan', hub: owned ? owner : null };
}

async function waitExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

async function waitPort(port: number, timeoutMs: number, exited: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await portOpen(port))) {
    if (exited()) throw new Error('exited during start-up');
    if (Date.now() > deadline) throw new Error(`did not open port ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * A stopped process (SIGSTOP: a hung host, a debugger, a test freezing it) keeps a SIGTERM pending until it is
 * continued, so a stop would always wait out its grace and end in SIGKILL, without the child's clean exit.
 * SIGCONT after SIGTERM lets it act on the SIGTERM at once; to a running process it means nothing.
 */
function continueIfFrozen(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, 'SIGCONT');
  } catch {
    // already gone
  }
}

/** One supervised child process. */
export class SupervisedChild {
  private child: ChildProcess | null = null;
  private stopping = false;
  private restarts = 0;
  private stderrTail = '';

  constructor(
    private readonly spec: ChildSpec,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    if (await portOpen(this.spec.port)) {
      const rec = recordedChild(this.spec);
      // Reclaim returns whether the port is free afterwards.
      if (rec?.state === 'orphan' && (await this.reclaimOrphan(rec.pid))) return this.firstSpawn();
      if (rec?.state === 'owned') {
        throw new Error(
          `another Voxa Hub (pid ${rec.hub}) is running with this data dir, and its ${this.spec.name} (pid ${rec.pid}) holds port ${this.spec.port}. Stop that hub first, or give this one its own ports and VOXA_DATA_DIR.`,
        );
      }
      throw new Error(
        `port ${this.spec.port} is already in use, so the embedded ${this.spec.name} cannot start. Stop whatever listens there, or point the hub at it with ${this.spec.name === 'nats-server' ? 'NATS_URL' : 'REDIS_URL'}.`,
      );
    }
    return this.firstSpawn();
  }

  private async firstSpawn(): Promise<void> {
    try {
      await this.spawnOnce();
    } catch (err) {
      this.stopping = true; // a failed first start is reported, not retried in the background
      throw err;
    }
  }

  /**
   * Stops a child left running by a previous hub that died without stopping it, so its port is free again.
   * SIGTERM first (nats-server and redis-server flush and exit cleanly on it), SIGKILL if it lingers.
   * `pid` is the orphan recordedChild found. True once the port is free; false when it stayed taken.
   */
  private async reclaimOrphan(pid: number): Promise<boolean> {
    this.log.warn({ child: this.spec.name, pid, port: this.spec.port }, 'stopping the embedded service a previous run left behind');
    process.kill(pid, 'SIGTERM');
    continueIfFrozen(pid);
    if (!(await waitExit(pid, 10_000))) {
      process.kill(pid, 'SIGKILL');
      await waitExit(pid, 5_000);
    }
    const deadline = Date.now() + 5_000;
    while (await portOpen(this.spec.port)) {
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 50));
    }
    return true;
  }

  private writePidFile(pid: number | undefined): void {
    if (!this.spec.pidFile || pid === undefined) return;
    try {
      writeFileSync(this.spec.pidFile, `${JSON.stringify({ pid, hub: process.pid, port: this.spec.port, cmd: this.spec.cmd })}\n`);
    } catch (err) {
      this.log.warn({ err, child: this.spec.name }, 'could not record the embedded service pid');
    }
  }

  private async spawnOnce(): Promise<void> {
    // detached: a process group of its own, so the terminal's Ctrl-C (sent to the whole foreground group) reaches
    // only the hub, which drains its plugins while NATS and Redis are still up and stops the children last.
    const c = spawn(this.spec.cmd, this.spec.args, { cwd: this.spec.cwd, stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    this.child = c;
    this.writePidFile(c.pid);
    let exited = false;
    c.stderr!.on('data', (d: Buffer) => (this.stderrTail = (this.stderrTail + d.toString()).slice(-2000)));
    c.once('error', (err) => {
      exited = true;
      this.stderrTail += `\n${err.message}`;
    });
    c.once('exit', (code, signal) => {
      exited = true;
      if (this.child === c) this.child = null;
      if (this.stopping) return;
      this.restarts++;
      const delay = Math.min(30_000, 500 * 2 ** Math.min(this.restarts, 6));
      this.log.error({ child: this.spec.name, code, signal, restartInMs: delay }, 'embedded service exited; restarting');
      setTimeout(() => {
        if (!this.stopping) this.spawnOnce().catch((err) => this.log.error({ err, child: this.spec.name }, 'restart failed'));
      }, delay).unref();
    });
    try {
      await waitPort(this.spec.port, 20_000, () => exited);
    } catch (err) {
      throw new Error(`${this.spec.name} failed to start: ${(err as Error).message}\n${this.stderrTail.trim()}`);
    }
    this.log.info({ child: this.spec.name, port: this.spec.port, pid: c.pid }, 'embedded service running');
  }

  /** SIGTERM (nats-server and redis-server flush and exit on it), SIGKILL after `timeoutMs`; waits for the exit. */
  stop(timeoutMs = 10_000): Promise<void> {
    return this.terminate(timeoutMs);
  }

  /**
   * For a hub that must exit soon (its stop hung, or a second signal came): the same, with a short grace and
   * at most a second after SIGKILL (a child that hangs may be why the stop hung).
   */
  stopNow(graceMs = 2000): Promise<void> {
    return this.terminate(graceMs, 1000);
  }

  /**
   * stopNow for a child whose start may still be under way: ends the process if one was spawned, and otherwise
   * only makes sure none will be (its pid file, if any, may belong to another hub, so it is left alone).
   */
  stopNowIfSpawned(): Promise<void> {
    if (this.child) return this.stopNow();
    this.stopping = true;
    return Promise.resolve();
  }

  /**
   * SIGTERM, SIGKILL when the child has not exited within `graceMs`, then waits up to `afterKillMs` more. The
   * pid file goes only with the child, so one that survives even that is found and stopped by the next start.
   */
  private async terminate(graceMs: number, afterKillMs = Infinity): Promise<void> {
    this.stopping = true;
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return this.removePidFile();
    const exited = new Promise<boolean>((resolve) => c.once('exit', () => resolve(true)));
    const within = (ms: number) => (ms === Infinity ? exited : withTimeout(exited, ms, this.spec.name).catch(() => false));
    c.kill('SIGTERM');
    continueIfFrozen(c.pid);
    if (!(await within(graceMs))) {
      c.kill('SIGKILL');
      if (!(await within(afterKillMs))) return;
    }
    this.removePidFile();
  }

  private removePidFile(): void {
    if (this.spec.pidFile) rmSync(this.spec.pidFile, { force: true });
  }
}

export interface EmbeddedServices {
  natsUrl?: string;
  redisUrl?: string;
  stop(): Promise<void>;
  /** Stops the children at once: SIGTERM, SIGKILL after a short grace (see SupervisedChild.stopNow). */
  stopNow(): Promise<void>;
}

/**
 * nats.conf keeps JetStream under ./data/nats (relative to the project root, where the server runs). When the
 * hub's dataDir is elsewhere, a copy of nats.conf with that store_dir is written into dataDir and used instead.
 */
function natsConfFor(projectRoot: string, dataDir: string): string {
  const conf = join(projectRoot, 'nats.conf');
  if (resolve(projectRoot, 'data') === dataDir) return conf;
  const text = readFileSync(conf, 'utf8').replace(/store_dir:.*$/m, `store_dir: ${JSON.stringify(join(dataDir, 'nats'))}`);
  const out = join(dataDir, 'nats.conf');
  writeFileSync(out, text);
  return out;
}

/** Starts whatever the config does not point elsewhere. `projectRoot` holds nats.conf. */
export async function startEmbedded(
  opts: { natsUrl?: string; redisUrl?: string; dataDir: string; projectRoot: string; redisPort?: number; natsPort?: number; natsMonitorPort?: number },
  log: Logger,
  /**
   * Given at once, before anything is spawned, a way to end every child at short notice, the one still starting
   * included: for a second signal that must exit while start-up is under way.
   */
  onChildren?: (stopNow: () => Promise<void>) => void,
): Promise<EmbeddedServices> {
  const children: SupervisedChild[] = [];
  let starting: SupervisedChild | null = null;
  onChildren?.(() => Promise.all([...children.map((c) => c.stopNow()), starting?.stopNowIfSpawned()]).then(() => undefined));
  const dataDir = resolve(opts.dataDir);
  const out: EmbeddedServices = {
    natsUrl: opts.natsUrl,
    redisUrl: opts.redisUrl,
    async stop() {
      await Promise.all(children.map((c) => c.stop()));
    },
    async stopNow() {
      await Promise.all(children.map((c) => c.stopNow()));
    },
  };
  try {
    if (!opts.natsUrl) {
      const port = opts.natsPort ?? 4222;
      mkdirSync(join(dataDir, 'nats'), { recursive: true });
      const natsConf = natsConfFor(opts.projectRoot, dataDir);
      const nats = new SupervisedChild(
        {
          name: 'nats-server',
          cmd: 'nats-server',
          // Flags win over nats.conf, so the ports follow the hub's config.
          args: ['-c', natsConf, '-p', String(port), '-m', String(opts.natsMonitorPort ?? 8222)],
          cwd: opts.projectRoot,
          port,
          pidFile: join(dataDir, 'nats-server.pid'),
          ownerMark: natsConf,
        },
        log,
      );
      starting = nats;
      await nats.start();
      starting = null;
      children.push(nats);
      out.natsUrl = `nats://127.0.0.1:${port}`;
    }
    if (!opts.redisUrl) {
      const port = opts.redisPort ?? 6390;
      mkdirSync(join(dataDir, 'redis'), { recursive: true });
      const redis = new SupervisedChild(
        {
          name: 'redis-server',
          cmd: 'redis-server',
          // Append-only file so queued jobs (webhook retries, delayed emails) survive restarts.
          args: ['--port', String(port), '--bind', '127.0.0.1', '--dir', join(dataDir, 'redis'), '--appendonly', 'yes', '--save', '', '--protected-mode', 'yes'],
          port,
          pidFile: join(dataDir, 'redis-server.pid'),
          // redis-server rewrites its argv to "redis-server 127.0.0.1:<port>"; the port is what /proc shows.
          ownerMark: `:${port}`,
        },
        log,
      );
      starting = redis;
      await redis.start();
      starting = null;
      children.push(redis);
      out.redisUrl = `redis://127.0.0.1:${port}`;
    }
  } catch (err) {
    await out.stop();
    throw err;
  }
  return out;
}
