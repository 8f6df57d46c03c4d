/**
 * `voxa start` as a user runs it: a real process that spawns its own nats-server and redis-server, serves the
 * API, stops cleanly on SIGTERM (children included) and finds everything again on the next start.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { freePort } from '../helpers/servers.js';
import { hubEnv } from '../helpers/start-env.js';

const root = join(import.meta.dirname, '..', '..');

interface Started {
  child: ChildProcess;
  base: string;
  output: () => string;
}

/** `detached` makes the hub a process-group leader, so a test can signal its whole group like a terminal's Ctrl-C. */
async function startHub(env: Record<string, string>, opts: { detached?: boolean } = {}): Promise<Started> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'cli', 'index.ts'), 'start'], {
    cwd: root,
    env: { ...process.env, NATS_URL: '', REDIS_URL: '', MONGO_URL: '', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: opts.detached ?? false,
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const deadline = Date.now() + 60_000;
  while (!/Voxa Hub listening/.test(out)) {
    if (child.exitCode !== null) throw new Error(`voxa start exited: ${out}`);
    if (Date.now() > deadline) throw new Error(`voxa start did not come up: ${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, base: `http://127.0.0.1:${env.PORT}`, output: () => out };
}

async function stopHub(s: Started): Promise<number | null> {
  return new Promise((resolve) => {
    s.child.once('exit', (code) => resolve(code));
    s.child.kill('SIGTERM');
  });
}

const portOpen = (port: number) =>
  new Promise<boolean>((resolve) => {
    const sock = connect(port, '127.0.0.1');
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });

async function json(res: Response): Promise<Record<string, unknown>> {
  return (await res.json()) as Record<string, unknown>;
}

test('voxa start runs the hub with embedded NATS and Redis, stops cleanly and keeps its data', async (t) => {
  const env = await hubEnv(t, 'voxa-start-');

  let hub = await startHub(env);
  const ready = await fetch(`${hub.base}/readyz`);
  t.is(ready.status, 200);
  const reg = await json(
    await fetch(`${hub.base}/v1/auth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'start@example.com', password: 'a long password', name: 'Start' }),
    }),
  );
  const other = await json(
    await fetch(`${hub.base}/v1/auth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'other@example.com', password: 'a long password', name: 'Other' }),
    }),
  );
  const auth = { authorization: `Bearer ${reg.accessToken as string}`, 'content-type': 'application/json' };
  const conv = await json(
    await fetch(`${hub.base}/v1/conversations`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ type: 'direct', members: [(other.user as { id: string }).id] }),
    }),
  );
  const convId = (conv.conversation as { id: string }).id;
  const sent = await fetch(`${hub.base}/v1/conversations/${convId}/messages`, { method: 'POST', headers: auth, body: JSON.stringify({ text: 'kept', clientId: 'k1' }) });
  t.is(sent.status, 201);

  t.is(await stopHub(hub), 0, 'SIGTERM exits 0');
  t.false(await portOpen(Number(env.VOXA_EMBEDDED_NATS_PORT)), 'embedded nats-server stopped');
  t.false(await portOpen(Number(env.VOXA_EMBEDDED_REDIS_PORT)), 'embedded redis-server stopped');

  hub = await startHub(env);
  const login = await json(
    await fetch(`${hub.base}/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'start@example.com', password: 'a long password' }),
    }),
  );
  t.truthy(login.accessToken, 'the account is still there');
  const history = await json(
    await fetch(`${hub.base}/v1/conversations/${convId}/messages`, { headers: { authorization: `Bearer ${login.accessToken as string}` } }),
  );
  t.deepEqual(
    (history.messages as Array<{ text: string; seq: number }>).map((m) => [m.seq, m.text]),
    [[1, 'kept']],
  );
  t.false(hub.output().includes('a long password'), 'passwords never reach the logs');
  t.is(await stopHub(hub), 0);
});

test('with tracing on and no collector listening, a stop still ends cleanly with exit code 0', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'voxa-start-otel-'));
  const env = {
    VOXA_DATA_DIR: dataDir,
    PORT: String(await freePort()),
    VOXA_EMBEDDED_NATS_PORT: String(await freePort()),
    VOXA_EMBEDDED_REDIS_PORT: String(await freePort()),
    VOXA_EMBEDDED_NATS_MONITOR_PORT: String(await freePort()),
    VOXA_TRACING: '1',
    // A free port: nothing answers there, so the last spans cannot be flushed.
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${await freePort()}`,
  };
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const hub = await startHub(env);
  // Spans still waiting in the batch processor when the stop comes.
  const res = await fetch(`${hub.base}/v1/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'otel@example.com', password: 'a long password', name: 'Otel' }),
  });
  t.is(res.status, 201);
  t.is(await stopHub(hub), 0, hub.output());
  t.regex(hub.output(), /"msg":"stopped"/);
});

test('a wrong config value stops start-up with a message naming the field', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'cli', 'index.ts'), 'start'], {
    cwd: root,
    env: { ...process.env, PORT: 'not-a-port' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  t.is(code, 2);
  t.regex(err, /invalid config field "port" \(env PORT\)/);
});

test('after the hub is killed with SIGKILL, the next start stops the orphaned NATS and Redis and keeps the data', async (t) => {
  const env = await hubEnv(t, 'voxa-start-kill-');

  let hub = await startHub(env);
  const reg = await json(
    await fetch(`${hub.base}/v1/auth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'killed@example.com', password: 'a long password', name: 'Killed' }),
    }),
  );
  t.truthy(reg.accessToken);
  const exited = new Promise((resolve) => hub.child.once('exit', resolve));
  hub.child.kill('SIGKILL');
  await exited;
  // The children outlive a SIGKILLed parent: that is the situation the next start has to handle.
  t.true(await portOpen(Number(env.VOXA_EMBEDDED_NATS_PORT)), 'the orphaned nats-server still holds its port');
  t.true(await portOpen(Number(env.VOXA_EMBEDDED_REDIS_PORT)), 'the orphaned redis-server still holds its port');

  hub = await startHub(env);
  t.regex(hub.output(), /previous run left behind/);
  const login = await fetch(`${hub.base}/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'killed@example.com', password: 'a long password' }),
  });
  t.is(login.status, 200, 'the account registered before the kill is still there');
  t.is(await stopHub(hub), 0);
  t.false(await portOpen(Number(env.VOXA_EMBEDDED_NATS_PORT)));
  t.false(await portOpen(Number(env.VOXA_EMBEDDED_REDIS_PORT)));
});

test('a foreign process on the embedded port is left alone and named in the error', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'voxa-start-busy-'));
  const busyPort = await freePort();
  const server = createServer(() => undefined);
  await new Promise<void>((resolve) => server.listen(busyPort, '127.0.0.1', resolve));
  t.teardown(() => {
    server.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
  // A pid file that points at this test process: alive, but not a nats-server, so it must not be touched.
  writeFileSync(join(dataDir, 'nats-server.pid'), JSON.stringify({ pid: process.pid }));
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'cli', 'index.ts'), 'start'], {
    cwd: root,
    env: {
      ...process.env,
      NATS_URL: '',
      REDIS_URL: '',
      VOXA_DATA_DIR: dataDir,
      PORT: String(await freePort()),
      VOXA_EMBEDDED_NATS_PORT: String(busyPort),
      VOXA_EMBEDDED_REDIS_PORT: String(await freePort()),
      VOXA_EMBEDDED_NATS_MONITOR_PORT: String(await freePort()),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  t.not(code, 0);
  t.regex(out, new RegExp(`port ${busyPort} is already in use`));
  t.true(server.listening, 'the process on the port was not touched');
});

/**
 * Teardown for a hub a test may leave running when it fails: SIGKILL the hub, then its children through the pid
 * files the hub keeps in its data dir (a SIGKILLed hub cannot stop them itself).
 */
function killHub(hub: Started, env: Record<string, string>): void {
  hub.child.kill('SIGKILL');
  for (const name of ['nats-server', 'redis-server']) {
    try {
      process.kill((JSON.parse(readFileSync(join(env.VOXA_DATA_DIR!, `${name}.pid`), 'utf8')) as { pid: number }).pid, 'SIGKILL');
    } catch {
      /* stopped already, or never started */
    }
  }
}

/** Runs `voxa start` to its exit (for starts that must fail); returns the exit code and the output. */
async function runToExit(env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'cli', 'index.ts'), 'start'], {
    cwd: root,
    env: { ...process.env, NATS_URL: '', REDIS_URL: '', MONGO_URL: '', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { code, out };
}

async function register(base: string, email: string): Promise<string> {
  const res = await json(
    await fetch(`${base}/v1/auth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password: 'a long password', name: email.split('@')[0] }),
    }),
  );
  return res.accessToken as string;
}

test('a second start on the same data dir and ports fails clearly and leaves the running hub and its children alone', async (t) => {
  const env = await hubEnv(t, 'voxa-start-twice-');
  const first = await startHub(env);
  t.teardown(() => killHub(first, env));
  const second = await runToExit(env);
  t.not(second.code, 0);
  t.regex(second.out, /another Voxa Hub \(pid \d+\) is running with this data dir/);
  t.notRegex(second.out, /previous run left behind/, 'the first hub\'s children were not taken for orphans');
  t.notRegex(first.output(), /embedded service exited/, 'the first hub kept its children');
  t.is((await fetch(`${first.base}/readyz`)).status, 200);
  t.truthy(await register(first.base, 'still@example.com'));
  t.is(await stopHub(first), 0);
});

test('a start whose API port is taken stops the children it had spawned', async (t) => {
  const busy = await hubEnv(t, 'voxa-start-busy-api-');
  const first = await startHub(busy);
  t.teardown(() => killHub(first, busy));
  // Its own data dir and embedded ports, but the API port of the hub above.
  const env: Record<string, string> = { ...(await hubEnv(t, 'voxa-start-busy-api2-')), PORT: busy.PORT! };
  const second = await runToExit(env);
  t.not(second.code, 0);
  t.regex(second.out, /EADDRINUSE/);
  t.false(await portOpen(Number(env.VOXA_EMBEDDED_NATS_PORT)), 'its nats-server was stopped');
  t.false(await portOpen(Number(env.VOXA_EMBEDDED_REDIS_PORT)), 'its redis-server was stopped');
  t.is((await fetch(`${first.base}/readyz`)).status, 200);
  t.is(await stopHub(first), 0);
});

test('Ctrl-C to the whole process group: the hub drains with NATS and Redis up and stops them itself, none restarted', async (t) => {
  const env = await hubEnv(t, 'voxa-start-group-');
  const hub = await startHub(env, { detached: true });
  t.teardown(() => killHub(hub, env));
  t.truthy(await register(hub.base, 'group@example.com'));
  const exited = new Promise<number | null>((resolve) => hub.child.once('exit', resolve));
  // What a terminal does on Ctrl-C: SIGINT to every process of the foreground group.
  process.kill(-hub.child.pid!, 'SIGINT');
  t.is(await exited, 0);
  t.notRegex(hub.output(), /embedded service exited/, 'the children got no signal of their own');
  t.regex(hub.output(), /"stopped"/);
  t.false(await portOpen(Number(env.VOXA_EMBEDDED_NATS_PORT)));
  t.false(await portOpen(Number(env.VOXA_EMBEDDED_REDIS_PORT)));
});

test('a stop with WebSocket clients connected tells them to go (1001) and finishes without waiting for them', async (t) => {
  const env = await hubEnv(t, 'voxa-start-ws-');
  const hub = await startHub(env);
  t.teardown(() => killHub(hub, env));
  const token = await register(hub.base, 'ws@example.com');
  const ws = new WebSocket(`ws://127.0.0.1:${env.PORT}/ws`);
  const frames: Array<{ type: string; data?: { code?: string } }> = [];
  ws.on('message', (d) => frames.push(JSON.parse(d.toString()) as { type: string; data?: { code?: string } }));
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  ws.send(JSON.stringify({ type: 'auth', data: { token } }));
  while (!frames.some((f) => f.type === 'ready')) await new Promise((r) => setTimeout(r, 50));
  // An idle HTTP keep-alive connection too: it must not hold the stop either.
  const idle = connect(Number(env.PORT), '127.0.0.1');
  await new Promise((r) => idle.once('connect', r));
  t.teardown(() => idle.destroy());

  const exited = new Promise<number | null>((resolve) => hub.child.once('exit', resolve));
  hub.child.kill('SIGTERM');
  t.is(await closed, 1001, 'the client is told to reconnect elsewhere');
  t.true(frames.some((f) => f.type === 'error' && f.data?.code === 'UNAVAILABLE'));
  // The client never closes on its own; without the edge stopping first, the hub would wait for it forever.
  t.is(await exited, 0);
  t.regex(hub.output(), /"stopped"/);
});

test('a stop that hangs (redis-server frozen) ends after VOXA_STOP_TIMEOUT_MS with its children, and the next start works', async (t) => {
  const env: Record<string, string> = { ...(await hubEnv(t, 'voxa-start-hang-')), VOXA_STOP_TIMEOUT_MS: '3000' };
  let hub = await startHub(env);
  t.teardown(() => killHub(hub, env));
  const redisPid = (JSON.parse(readFileSync(join(env.VOXA_DATA_DIR!, 'redis-server.pid'), 'utf8')) as { pid: number }).pid;
  // A frozen child answers nothing and ignores SIGTERM until it is continued: the worst case for a stop.
  process.kill(redisPid, 'SIGSTOP');
  t.teardown(() => {
    try {
      process.kill(redisPid, 'SIGCONT');
    } catch {
      /* gone, as it should be */
    }
  });
  const exited = new Promise<number | null>((resolve) => hub.child.once('exit', resolve));
  hub.child.kill('SIGTERM');
  await exited;
  const alive = (() => {
    try {
      process.kill(redisPid, 0);
      return true;
    } catch {
      return false;
    }
  })();
  t.false(alive, 'the frozen redis-server did not outlive the hub');
  t.false(await portOpen(Number(env.VOXA_EMBEDDED_REDIS_PORT)));
  t.false(await portOpen(Number(env.VOXA_EMBEDDED_NATS_PORT)));
  hub = await startHub(env);
  t.is((await fetch(`${hub.base}/readyz`)).status, 200);
  t.is(await stopHub(hub), 0);
});

test('one Ctrl-C delivered twice at once (terminal group + npm passing it on) is one clean stop, not "exit now"', async (t) => {
  const env = await hubEnv(t, 'voxa-start-twice-sig-');
  const hub = await startHub(env);
  t.teardown(() => killHub(hub, env));
  const exited = new Promise<number | null>((resolve) => hub.child.once('exit', resolve));
  hub.child.kill('SIGINT');
  // The second copy lands once the first is being handled (two pending SIGINTs would merge into one).
  while (!/"stopping"/.test(hub.output())) await new Promise((r) => setTimeout(r, 5));
  hub.child.kill('SIGINT');
  t.is(await exited, 0);
  t.notRegex(hub.output(), /second signal/);
  t.regex(hub.output(), /plugin runtime stopped/, 'the plugins drained');
  t.regex(hub.output(), /"stopped"/);
  t.false(await portOpen(Number(env.VOXA_EMBEDDED_NATS_PORT)));
  t.false(await portOpen(Number(env.VOXA_EMBEDDED_REDIS_PORT)));
});

test('SIGTERM while start-up waits for an external NATS: exit 0, and the embedded redis-server it spawned is stopped', async (t) => {
  const env: Record<string, string> = { ...(await hubEnv(t, 'voxa-start-wait-')), NATS_URL: `nats://127.0.0.1:${await freePort()}` };
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'cli', 'index.ts'), 'start'], {
    cwd: root,
    env: { ...process.env, REDIS_URL: '', MONGO_URL: '', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const deadline = Date.now() + 60_000;
  while (!out.includes('waiting for NATS')) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`no wait announced: ${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const redisPort = Number(env.VOXA_EMBEDDED_REDIS_PORT);
  t.true(await portOpen(redisPort), 'the embedded redis-server runs');
  t.is((await fetch(`http://127.0.0.1:${env.PORT}/readyz`)).status, 503);
  const code = await new Promise<number | null>((resolve) => {
    child.once('exit', (c) => resolve(c));
    child.kill('SIGTERM');
  });
  t.is(code, 0, out);
  t.regex(out, /stopping before start-up finished/);
  t.false(await portOpen(redisPort), 'no redis-server left behind');
});
