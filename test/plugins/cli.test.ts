/** The `voxa plugins | dlq | events` commands as real subprocesses against a real NATS and a running runtime. */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import type { Hub } from '../../core/hub.js';
import { CLI_ARGS, runCli, type CliResult } from '../helpers/cli.js';
import { openTestHub, serversForFile } from '../helpers/hub.js';
import { listDeadLetters } from '../../plugins/runtime/dlq.js';
import { PluginRuntime } from '../../plugins/runtime/runtime.js';
import { definePlugin, PermanentError } from '../../plugins/runtime/types.js';
import { messageEvent, publishEvents, seenEvent, sleep, waitFor } from './helpers.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const servers = serversForFile();

function env(hub: Hub): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: process.env.HOME, NATS_URL: servers.nats.url, VOXA_NATS_NAMESPACE: hub.bus.namespace, LOG_LEVEL: 'silent' };
}

function voxa(hub: Hub, args: string[]): Promise<CliResult> {
  return runCli(env(hub), args);
}

function tail(hub: Hub, args: string[]) {
  const child = spawn(process.execPath, [...CLI_ARGS, 'events', 'tail', ...args], { cwd: root, env: env(hub) });
  const io = { out: '', err: '' };
  child.stdout.on('data', (d: Buffer) => (io.out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (io.err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const lines = () => io.out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { id: string; type: string; workspaceId: string });
  return { child, io, exited, lines };
}

test('voxa events tail --json prints live events, one JSON line each, filtered by type or workspace', async (t) => {
  const hub = await openTestHub(servers);
  const byType = tail(hub, ['--type', 'message.created', '--json']);
  const byWorkspace = tail(hub, ['--workspace', 'w2', '--json']);
  try {
    await waitFor(() => byType.io.err.includes('tailing') && byWorkspace.io.err.includes('tailing'), 'the tails to start', 40_000);
    const inW1 = messageEvent();
    const inW2 = messageEvent('c9', 'w2');
    await publishEvents(hub, [seenEvent(), inW1]);
    await publishEvents(hub, [inW2]);
    await waitFor(() => byType.lines().length >= 2 && byWorkspace.lines().length >= 1, 'printed events');
    await sleep(300);
    t.deepEqual(byType.lines().map((e) => e.id), [inW1.id, inW2.id]);
    t.deepEqual(byWorkspace.lines().map((e) => [e.id, e.workspaceId]), [[inW2.id, 'w2']]);
  } finally {
    byType.child.kill('SIGINT');
    byWorkspace.child.kill('SIGINT');
  }
  t.is(await byType.exited, 0);
  t.is(await byWorkspace.exited, 0);
  await hub.close();
});

test('without NATS_URL the CLI reaches the embedded nats-server on VOXA_EMBEDDED_NATS_PORT, not a fixed 4222', async (t) => {
  const hub = await openTestHub(servers);
  const port = new URL(servers.nats.url).port;
  const { NATS_URL: _unset, ...rest } = env(hub);
  const child = spawn(process.execPath, [...CLI_ARGS, 'events', 'tail', '--json'], { cwd: root, env: { ...rest, VOXA_EMBEDDED_NATS_PORT: port } });
  const io = { out: '', err: '' };
  child.stdout.on('data', (d: Buffer) => (io.out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (io.err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    await waitFor(() => io.err.includes('tailing') || io.err.includes('NATS_UNAVAILABLE'), 'the tail to start or fail', 40_000);
    t.false(io.err.includes('NATS_UNAVAILABLE'), io.err);
    const ev = messageEvent();
    await publishEvents(hub, [ev]);
    await waitFor(() => io.out.includes(ev.id), 'the event printed');
    t.true(io.out.includes(ev.id));
  } finally {
    child.kill('SIGINT');
  }
  t.is(await exited, 0);
  await hub.close();
});

test('voxa plugins and voxa dlq steer a running runtime', async (t) => {
  const hub = await openTestHub(servers);
  let fixed = false;
  const handled: string[] = [];
  const plugin = definePlugin({
    manifest: { name: 'cli-demo', description: 'CLI test plugin', events: ['message.created'], retry: { ackWaitMs: 1000, backoffMs: [100] } },
    async handle(e) {
      if (!fixed) throw new PermanentError('template missing');
      handled.push(e.id);
    },
  });
  const rt = new PluginRuntime(hub, [plugin], { fetchExpiresMs: 1000 });
  await rt.start();
  const evt = messageEvent();
  await publishEvents(hub, [evt]);

  // Wait in-process (cheap), then ask the CLI once.
  await waitFor(async () => (await listDeadLetters(hub.bus)).length === 1, 'the dead letter');
  const r = await voxa(hub, ['dlq', 'list', '--json']);
  t.is(r.code, 0, r.stderr);
  const dl = JSON.parse(r.stdout) as { deadLetters: Array<{ seq: number; plugin: string; eventId: string; reason: string; attempts: number }> };
  t.like(dl.deadLetters[0], { plugin: 'cli-demo', eventId: evt.id, reason: 'template missing', attempts: 1 });

  const list = await voxa(hub, ['plugins', 'list', '--json']);
  t.is(list.code, 0, list.stderr);
  const row = (JSON.parse(list.stdout) as { plugins: Array<Record<string, unknown>> }).plugins.find((p) => p.name === 'cli-demo');
  t.like(row, { state: 'running', deadLetters: 1, pending: 0, ackPending: 0 });
  const human = await voxa(hub, ['plugins', 'list']);
  t.is(human.code, 0, human.stderr);
  const [head, ...lines] = human.stdout.trim().split('\n');
  t.deepEqual(head!.split(/\s+/), ['PLUGIN', 'STATE', 'GEN', 'WAITING', 'PENDING', 'ACK-PENDING', 'REDELIVERED', 'RETRYING', 'DEAD-LETTERS']);
  const cells = lines.find((l) => l.startsWith('cli-demo'))?.split(/\s+/) ?? [];
  t.regex(cells[3] ?? '', /^\d+$/, 'WAITING shows how many processes are pulling (a count: the plugin has a consumer)');

  const paused = await voxa(hub, ['plugins', 'pause', 'cli-demo', '--json']);
  t.is(paused.code, 0, paused.stderr);
  t.like(JSON.parse(paused.stdout), { plugin: 'cli-demo', state: 'paused' });
  await waitFor(() => rt.status()[0]!.state === 'paused', 'the runtime to pause');
  const resumed = await voxa(hub, ['plugins', 'resume', 'cli-demo']);
  t.is(resumed.code, 0);
  t.is(resumed.stdout.trim(), 'cli-demo: running');
  await waitFor(() => rt.status()[0]!.state === 'running', 'the runtime to resume');

  fixed = true;
  const retry = await voxa(hub, ['dlq', 'retry', String(dl.deadLetters[0]!.seq), '--json']);
  t.is(retry.code, 0, retry.stderr);
  t.like(JSON.parse(retry.stdout), { count: 1 });
  await waitFor(() => handled.length === 1, 'the retried event');
  t.is(handled[0], evt.id);

  const missing = await voxa(hub, ['plugins', 'pause', 'no-such-plugin', '--json']);
  t.is(missing.code, 3);
  t.like(JSON.parse(missing.stderr), { error: { code: 'PLUGIN_NOT_FOUND' } });
  const badSince = await voxa(hub, ['plugins', 'rewind', 'cli-demo', '--since', 'yesterday']);
  t.is(badSince.code, 2);
  t.regex(badSince.stderr, /--since must be/);
  const noTarget = await voxa(hub, ['dlq', 'retry']);
  t.is(noTarget.code, 2);
  await rt.stop();
  await hub.close();
});

test('voxa worker runs only the chosen plugins and drains on SIGTERM with exit 0', async (t) => {
  const hub = await openTestHub(servers);
  const bad = await voxa(hub, ['worker', '--plugins', 'no-such-plugin']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /unknown plugin no-such-plugin; available: .*audit/);

  const dataDir = mkdtempSync(join(tmpdir(), 'voxa-worker-'));
  const child = spawn(process.execPath, [...CLI_ARGS, 'worker', '--plugins', 'audit'], {
    cwd: root,
    env: { ...env(hub), REDIS_URL: servers.redis.url, VOXA_DATA_DIR: dataDir, LOG_LEVEL: 'info' },
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    await waitFor(() => out.includes('Voxa worker running'), 'the worker to start', 40_000);
    const consumers: string[] = [];
    for await (const ci of hub.bus.jsm.consumers.list(hub.bus.streams.events)) consumers.push(ci.name);
    t.deepEqual(consumers, ['audit-g0'], 'only the chosen plugin has a consumer');
  } finally {
    child.kill('SIGTERM');
  }
  t.is(await exited, 0, out.slice(-2000));
  rmSync(dataDir, { recursive: true, force: true });
  await hub.close();
});
