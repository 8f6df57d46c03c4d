/**
 * The runnable clients in examples/ against a real hub, as the README tells a newcomer to run them: they log in
 * or take a token, send once, receive, and (01) ride out an access-token expiry by refreshing and resuming.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { serversForFile } from '../helpers/hub.js';
import { eventually, openEdgeHub } from './support.js';

const root = join(import.meta.dirname, '..', '..');

const servers = serversForFile();

interface Running {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function runExample(file: string, args: string[], env: Record<string, string>): Running {
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'examples', file), ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { child, output: () => out, exited };
}

async function post(url: string, body: unknown, token?: string): Promise<Record<string, any>> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  return (await res.json()) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
}

test('examples 01 (Socket.IO) and 02 (plain WebSocket): send once, receive, and 01 refreshes its token and resumes after expiry', async (t) => {
  // The shortest access-token lifetime the config allows, checked often, so the expiry comes within the test.
  const e = await openEdgeHub(servers, { accessTokenTtlSeconds: 30 }, { expiryCheckMs: 200 });
  const running: Running[] = [];
  t.teardown(() => running.forEach((r) => r.child.kill('SIGKILL')));
  try {
    const ann = await post(`${e.url}/v1/auth/register`, { email: 'ann@example.test', password: 'correct horse 1', name: 'Ann' });
    const bob = await post(`${e.url}/v1/auth/register`, { email: 'bob@example.test', password: 'correct horse 2', name: 'Bob' });
    const conv = (await post(`${e.url}/v1/conversations`, { type: 'direct', members: [ann.user.id] }, bob.accessToken)).conversation.id as string;
    const history = async () => {
      const res = await fetch(`${e.url}/v1/conversations/${conv}/messages?limit=100`, { headers: { authorization: `Bearer ${bob.accessToken}` } });
      return ((await res.json()) as { messages: Array<{ seq: number; text: string }> }).messages.map((m) => m.text);
    };

    // 02, twice with different texts: each run has its own clientId, so the second is not taken for a repeat.
    for (const text of ['first from 02', 'second from 02']) {
      const r = runExample('02-websocket-client.ts', [conv, text], { VOXA_URL: e.url, VOXA_TOKEN: ann.accessToken });
      running.push(r);
      await eventually(() => /sent seq \d+/.test(r.output()), 20_000, `02 sent "${text}"`);
      r.child.kill('SIGTERM');
      await r.exited;
    }
    t.deepEqual(await history(), ['first from 02', 'second from 02']);

    // 01 logs in, sends once, prints what Bob sends.
    const one = runExample('01-socketio-client.ts', [conv, 'hello from 01'], { VOXA_URL: e.url, VOXA_EMAIL: 'ann@example.test', VOXA_PASSWORD: 'correct horse 1' });
    running.push(one);
    await eventually(() => /sent seq 3/.test(one.output()), 20_000, '01 sent');
    await post(`${e.url}/v1/conversations/${conv}/messages`, { text: 'bob before expiry' }, bob.accessToken);
    await eventually(() => one.output().includes('bob before expiry'), 20_000, '01 received');

    // The access token expires: the hub disconnects 01, which refreshes and reconnects on its own.
    await eventually(() => (one.output().match(/connected as/g) ?? []).length >= 2, 60_000, '01 reconnected after expiry');
    t.regex(one.output(), /UNAUTHENTICATED/);
    // Bob's token has expired by now as well.
    const bobNow = await post(`${e.url}/v1/auth/refresh`, { refreshToken: bob.refreshToken });
    bob.accessToken = bobNow.accessToken;
    const after = await post(`${e.url}/v1/conversations/${conv}/messages`, { text: 'bob after expiry' }, bob.accessToken);
    t.is(after.message?.text, 'bob after expiry');
    await eventually(() => one.output().includes('bob after expiry'), 20_000, '01 received after the refresh');
    t.is(one.child.exitCode, null, '01 is still running');
    // Sent exactly once, though it connected twice.
    t.deepEqual(await history(), ['first from 02', 'second from 02', 'hello from 01', 'bob before expiry', 'bob after expiry']);
    t.false(one.output().includes('correct horse'), 'the example never prints the password');
  } finally {
    await e.close();
  }
});
