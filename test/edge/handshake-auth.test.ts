/**
 * A Socket.IO handshake whose `auth` is not an object with a token string — a string, a number, an array,
 * null, malformed JSON, `{token: 5}`, a token far past the length limit — is refused with a `connect_error`
 * carrying the hub's `{code, message}`, like a bad token, rather than a dropped connection (which the client
 * takes for a network failure and retries forever) or nothing at all.
 */
import test from 'ava';
import { io as sioConnect, type Socket as SioSocket } from 'socket.io-client';
import { WebSocket } from 'ws';
import { startServers } from '../helpers/hub.js';
import { makeUser, openEdgeHub, type EdgeHub } from './support.js';

// One before/after pair for the servers and the hub, so the hub is closed before its servers stop.
let servers: Awaited<ReturnType<typeof startServers>>;
let e: EdgeHub;
test.before(async () => {
  servers = await startServers();
  e = await openEdgeHub(servers);
});
test.after.always(async () => {
  await e?.close();
  await servers?.dispose();
});

/** How long to wait for an answer; the bugs guarded against here give none (or a disconnect). */
const ANSWER_WITHIN_MS = 10_000;

type Outcome = { kind: 'connect_error'; message: string; data: { code?: string; message?: string; details?: unknown } | undefined } | { kind: 'connect' } | { kind: 'disconnect'; reason: string } | { kind: 'none' };

/** What the official client sees first after handshaking with `auth`. */
async function handshakeWith(auth: unknown): Promise<Outcome> {
  const socket: SioSocket = sioConnect(e.url, { transports: ['websocket'], auth: auth as Record<string, unknown>, reconnection: false, forceNew: true });
  try {
    return await new Promise<Outcome>((resolve) => {
      const timer = setTimeout(() => resolve({ kind: 'none' }), ANSWER_WITHIN_MS);
      const done = (o: Outcome) => {
        clearTimeout(timer);
        resolve(o);
      };
      socket.once('connect_error', (err: Error & { data?: { code?: string } }) => done({ kind: 'connect_error', message: err.message, data: err.data }));
      socket.once('connect', () => done({ kind: 'connect' }));
      socket.once('disconnect', (reason) => done({ kind: 'disconnect', reason }));
    });
  } finally {
    socket.close();
  }
}

/** A raw engine.io WebSocket connection to Socket.IO, past the engine.io open packet. */
async function rawEngine(): Promise<{ send(packet: string): void; next(): Promise<string | null>; close(): void }> {
  const ws = new WebSocket(`${e.url.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`);
  const queue: string[] = [];
  let wake: (() => void) | null = null;
  let closed = false;
  ws.on('message', (d) => {
    const text = d.toString();
    // Answer engine.io pings so a slow run is not cut for that reason.
    if (text === '2') return ws.send('3');
    queue.push(text);
    wake?.();
  });
  ws.on('close', () => {
    closed = true;
    wake?.();
  });
  const next = async (): Promise<string | null> => {
    const deadline = Date.now() + ANSWER_WITHIN_MS;
    while (queue.length === 0 && !closed && Date.now() < deadline) {
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 100);
      });
      wake = null;
    }
    return queue.shift() ?? null;
  };
  const open = await next();
  if (!open?.startsWith('0{')) throw new Error(`no engine.io open packet: ${open}`);
  return { send: (p) => ws.send(`4${p}`), next, close: () => ws.terminate() };
}

/** The `{message, data}` of a Socket.IO CONNECT_ERROR for the main namespace (engine message `44…`). */
function connectError(text: string | null): { message?: string; data?: { code?: string; message?: string } } | null {
  if (!text?.startsWith('44')) return null;
  return JSON.parse(text.slice(2)) as { message?: string; data?: { code?: string } };
}

const officialCases: Array<[string, unknown, string]> = [
  ['a string', 'just-a-token', 'UNAUTHENTICATED'],
  ['an array', ['token'], 'UNAUTHENTICATED'],
  ['a number', 5, 'UNAUTHENTICATED'],
  ['null', null, 'UNAUTHENTICATED'],
  ['a number as the token', { token: 5 }, 'UNAUTHENTICATED'],
  ['an object as the token', { token: { $ne: null } }, 'UNAUTHENTICATED'],
  ['a token of 50 000 characters', { token: 'x'.repeat(50_000) }, 'VALIDATION_FAILED'],
];

for (const [what, auth, code] of officialCases) {
  test(`socket.io-client: auth that is ${what} gets connect_error ${code}`, async (t) => {
    const o = await handshakeWith(auth);
    t.is(o.kind, 'connect_error', JSON.stringify(o));
    if (o.kind !== 'connect_error') return;
    t.is(o.data?.code, code);
    t.is(typeof o.data?.message, 'string');
    t.is(o.message, o.data?.message ?? '');
  });
}

const rawCases: Array<[string, string]> = [
  ['malformed JSON', '0{"x":'],
  ['a JSON string', '0"str"'],
  ['a JSON array', '0[1]'],
  ['JSON null', '0null'],
  ['JSON true', '0true'],
  ['a JSON number after a space', '0 7'],
];

for (const [what, packet] of rawCases) {
  test(`raw CONNECT packet whose auth is ${what}: CONNECT_ERROR with code UNAUTHENTICATED, and the connection can still sign in`, async (t) => {
    const alice = await makeUser(e.hub, 'Alice');
    const c = await rawEngine();
    t.teardown(() => c.close());
    c.send(packet);
    const answer = await c.next();
    const err = connectError(answer);
    t.truthy(err, `expected a CONNECT_ERROR, got ${JSON.stringify(answer)}`);
    t.is(err?.data?.code, 'UNAUTHENTICATED');
    t.regex(err?.message ?? '', /auth/);
    // The refusal is a Socket.IO answer, not a broken connection: a correct CONNECT on it is accepted.
    c.send(`0${JSON.stringify({ token: alice.token })}`);
    const ok = await c.next();
    t.true(ok?.startsWith('40{') ?? false, `expected a CONNECT answer, got ${JSON.stringify(ok)}`);
    t.regex(ok ?? '', /"sid"/);
  });
}

test('raw CONNECT to another namespace with unreadable auth: refused as an unknown namespace, as socket.io does', async (t) => {
  const c = await rawEngine();
  t.teardown(() => c.close());
  c.send('0/admin,"str"');
  const answer = await c.next();
  t.true(answer?.startsWith('44/admin,') ?? false, JSON.stringify(answer));
});

test('raw CONNECT with a good token still connects (the check does not get in the way)', async (t) => {
  const alice = await makeUser(e.hub, 'Alice');
  const c = await rawEngine();
  t.teardown(() => c.close());
  c.send(`0${JSON.stringify({ token: alice.token })}`);
  const ok = await c.next();
  t.true(ok?.startsWith('40{') ?? false, JSON.stringify(ok));
  // Then `ready`, the first event of every session.
  const ready = await c.next();
  t.true(ready?.startsWith('42["ready"') ?? false, JSON.stringify(ready));
});
