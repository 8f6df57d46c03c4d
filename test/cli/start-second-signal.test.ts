/**
 * `voxa start` asked twice to stop while start-up is stuck: the second SIGINT/SIGTERM (a second or more after
 * the first) ends the embedded children and exits 130 at once.
 *
 * A first signal calls off the wait for NATS between connection attempts (test/core/start.test.ts covers
 * that: exit 0). To have start-up still busy when the second signal comes, NATS_URL points at a listener that
 * accepts the connection and never says a word: the client's connection attempt then lasts until its own
 * timeout (5 s), and the abort is only seen after it. Both signals are sent inside that attempt.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI_ARGS } from '../helpers/cli.js';
import { hubEnv } from '../helpers/start-env.js';

const root = join(import.meta.dirname, '..', '..');

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie still answers signal 0; it has exited all the same.
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};

async function until(what: string, check: () => boolean, out: () => string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen: ${out()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// Serial: each runs a whole `voxa start`, and the window for the second signal should not shrink under load.
for (const [first, second] of [['SIGINT', 'SIGINT'], ['SIGTERM', 'SIGTERM']] as const) {
  test.serial(`${first} then ${second} a second later while start-up waits for NATS: children ended, exit 130`, async (t) => {
    // A "NATS server" that accepts and then stays silent.
    const sockets = new Set<Socket>();
    let accepted = 0;
    const silent = createServer((s) => {
      accepted++;
      sockets.add(s);
      s.on('error', () => undefined);
      s.once('close', () => sockets.delete(s));
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    t.teardown(() => {
      for (const s of sockets) s.destroy();
      silent.close();
    });
    const natsPort = (silent.address() as { port: number }).port;

    const env: Record<string, string> = { ...(await hubEnv(t, 'voxa-second-signal-')), NATS_URL: `nats://127.0.0.1:${natsPort}` };
    const child = spawn(process.execPath, [...CLI_ARGS, 'start'], {
      cwd: root,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const pidFile = join(env.VOXA_DATA_DIR!, 'redis-server.pid');
    let redisPid = 0;
    t.teardown(() => {
      // Only if the test failed part-way: nothing of this test may outlive it.
      if (child.exitCode === null) child.kill('SIGKILL');
      if (redisPid && alive(redisPid)) process.kill(redisPid, 'SIGKILL');
    });

    // Start-up is in a connection attempt to the silent listener: the embedded redis-server runs by then.
    await until('a connection attempt to NATS', () => accepted > 0 || child.exitCode !== null, () => out);
    t.is(child.exitCode, null, out);
    t.true(existsSync(pidFile), 'the embedded redis-server was started and recorded');
    redisPid = (JSON.parse(readFileSync(pidFile, 'utf8')) as { pid: number }).pid;
    t.true(alive(redisPid), 'the embedded redis-server runs');

    child.kill(first);
    await until('the first signal to be handled', () => /stopping before start-up finished/.test(out) || child.exitCode !== null, () => out);
    t.is(child.exitCode, null, `start-up was still busy after the first signal: ${out}`);
    // A repeat within a second counts as the same request (npm passes a Ctrl-C on too); this one is a new one.
    await new Promise((r) => setTimeout(r, 1200));
    child.kill(second);

    t.is(await exited, 130, out);
    t.regex(out, /second signal: exiting now/);
    t.notRegex(out, /"msg":"stopped"/, 'it did not wait for start-up to stop by itself');
    t.false(alive(redisPid), 'no redis-server left behind');
    t.false(existsSync(pidFile), 'its pid file went with it');
  });
}

test.serial('a second signal while an embedded service is still starting ends that one too', async (t) => {
  // A stand-in redis-server that records its pid and never opens its port: start-up waits for it.
  const env: Record<string, string> = await hubEnv(t, 'voxa-second-signal-starting-');
  const bin = mkdtempSync(join(tmpdir(), 'voxa-fake-redis-'));
  t.teardown(() => rmSync(bin, { recursive: true, force: true }));
  const fakePidFile = join(bin, 'pid');
  writeFileSync(join(bin, 'redis-server'), `#!/bin/sh\necho $$ > ${JSON.stringify(fakePidFile)}\nexec sleep 120\n`, { mode: 0o755 });
  const child = spawn(process.execPath, [...CLI_ARGS, 'start'], {
    cwd: root,
    env: { PATH: `${bin}:${process.env.PATH ?? ''}`, HOME: process.env.HOME ?? '', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const natsPidFile = join(env.VOXA_DATA_DIR!, 'nats-server.pid');
  let fakePid = 0;
  let natsPid = 0;
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
    for (const pid of [fakePid, natsPid]) if (pid && alive(pid)) process.kill(pid, 'SIGKILL');
  });

  await until('the stand-in redis-server to be spawned', () => existsSync(fakePidFile) || child.exitCode !== null, () => out);
  t.is(child.exitCode, null, out);
  fakePid = Number(readFileSync(fakePidFile, 'utf8').trim());
  natsPid = (JSON.parse(readFileSync(natsPidFile, 'utf8')) as { pid: number }).pid;
  t.true(alive(fakePid) && alive(natsPid), 'nats-server is up and redis-server is starting');

  child.kill('SIGINT');
  await until('the first signal to be handled', () => /stopping before start-up finished/.test(out) || child.exitCode !== null, () => out);
  await new Promise((r) => setTimeout(r, 1200));
  child.kill('SIGINT');

  t.is(await exited, 130, out);
  t.false(alive(natsPid), 'the started nats-server was ended');
  t.false(alive(fakePid), 'the redis-server that was still starting was ended too');
});
