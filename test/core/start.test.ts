/**
 * `voxa start` as a user runs it: a real process that spawns its own nats-server and redis-server, serves the
 * API, stops cleanly on SIGTERM (children included) and finds everything again on the next start.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../helpers/servers.js';

const root = join(import.meta.dirname, '..', '..');

interface Started {
  child: ChildProcess;
  base: string;
  output: () => string;
}

async function startHub(env: Record<string, string>): Promise<Started> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'cli', 'index.ts'), 'start'], {
    cwd: root,
    env: { ...process.env, NATS_URL: '', REDIS_URL: '', MONGO_URL: '', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
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

/** Fresh ports and a temp data dir (removed after the test) for one `voxa start`. */
async function hubEnv(t: ExecutionContext, prefix: string): Promise<Record<string, string>> {
  const dataDir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  return {
    VOXA_DATA_DIR: dataDir,
    PORT: String(await freePort()),
    VOXA_EMBEDDED_NATS_PORT: String(await freePort()),
    VOXA_EMBEDDED_REDIS_PORT: String(await freePort()),
    VOXA_EMBEDDED_NATS_MONITOR_PORT: String(await freePort()),
  };
}

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
