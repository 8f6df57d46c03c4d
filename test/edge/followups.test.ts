import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import jwt from 'jsonwebtoken';
import { io as sioConnect } from 'socket.io-client';
import { WebSocket } from 'ws';
import { jwtKey, jwtVerifyOptions } from '../../core/auth/tokens.js';
import { withNamespace } from '../../core/events/catalog.js';
import { newId } from '../../core/ids.js';
import { serversForFile } from '../helpers/hub.js';
import { uniqueNamespace } from '../helpers/servers.js';
import { eventually, group, makeUser, openEdgeHub, seqsOf, sioClient, sleep, spawnEdge, wsClient, type TestUser } from './support.js';

const servers = serversForFile();

test('send-message carries attachments exactly like REST: files of the conversation only, at most 10', async (t) => {
  const e = await openEdgeHub(servers);
  try {
    const [alice, bob] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob')]);
    const conv = await group(e.hub, alice, [bob]);
    const other = await group(e.hub, alice, [bob], 'other');
    // What an upload leaves behind as far as the attachment rule is concerned: a file document of a conversation.
    const fileId = newId('fil');
    const foreignId = newId('fil');
    await e.hub.store.docs.put('files', fileId, { conversationId: conv.id, workspaceId: conv.workspaceId });
    await e.hub.store.docs.put('files', foreignId, { conversationId: other.id, workspaceId: other.workspaceId });
    const a = await wsClient(e.url, alice.token, { cursors: {} });
    const b = await sioClient(e.url, bob.token, { cursors: {} });

    const ok = await a.request('send-message', { conversationId: conv.id, text: 'see file', attachments: [fileId] });
    t.true(ok.ok);
    t.deepEqual(ok.message.attachments, [fileId]);
    const got = await eventually(() => b.of('receive-message').find((m) => m.text === 'see file'), 10_000, 'delivery');
    t.deepEqual(got.attachments, [fileId]);
    // An attachment-only message is allowed, as over REST.
    const only = await b.request('send-message', { conversationId: conv.id, text: '', attachments: [fileId] });
    t.true(only.ok);

    const foreign = await a.request('send-message', { conversationId: conv.id, text: 'x', attachments: [foreignId] });
    t.is(foreign.ok, false);
    t.is(foreign.error.code, 'VALIDATION_FAILED');
    const tooMany = await a.request('send-message', { conversationId: conv.id, text: 'x', attachments: Array.from({ length: 11 }, () => newId('fil')) });
    t.is(tooMany.ok, false);
    t.is(tooMany.error.code, 'VALIDATION_FAILED');
    const notIds = await b.request('send-message', { conversationId: conv.id, text: 'x', attachments: ['../etc/passwd'] });
    t.is(notIds.ok, false);
    t.is(notIds.error.code, 'VALIDATION_FAILED');
    a.close();
    b.close();
  } finally {
    await e.close();
  }
});

test('message.delivered names the transport that delivered', async (t) => {
  const e = await openEdgeHub(servers, {}, { receiptFlushMs: 50 });
  try {
    const [alice, bob, carol] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob'), makeUser(e.hub, 'Carol')]);
    const conv = await group(e.hub, alice, [bob, carol]);
    const seen: Array<{ userId: string; transport?: string }> = [];
    const sub = e.hub.bus.nc.subscribe(withNamespace(e.hub.bus.namespace, `chat.${conv.workspaceId}.${conv.id}.message.delivered`), {
      callback: (_err, msg) => seen.push((JSON.parse(new TextDecoder().decode(msg.data)) as { data: { userId: string; transport?: string } }).data),
    });
    await e.hub.bus.nc.flush();
    const a = await wsClient(e.url, alice.token, { cursors: {} });
    const b = await wsClient(e.url, bob.token, { cursors: {} });
    const c = await sioClient(e.url, carol.token, { cursors: {} });
    await a.request('send-message', { conversationId: conv.id, text: 'hello' });
    await eventually(() => seen.length >= 2, 10_000, 'two delivered receipts');
    t.is(seen.find((d) => d.userId === bob.user.id)?.transport, 'ws');
    t.is(seen.find((d) => d.userId === carol.user.id)?.transport, 'socketio');
    t.false(seen.some((d) => d.userId === alice.user.id)); // not for one's own message
    sub.unsubscribe();
    for (const x of [a, b, c]) x.close();
  } finally {
    await e.close();
  }
});

/** An access token that expires in `seconds` (signed like the hub's own, with a short life). */
function shortToken(e: Awaited<ReturnType<typeof openEdgeHub>>, u: TestUser, seconds: number): string {
  const opts = jwtVerifyOptions(e.hub);
  return jwt.sign({ wid: u.user.workspaceId, fid: 'fam_test' }, jwtKey(e.hub), {
    algorithm: 'HS256',
    subject: u.user.id,
    issuer: opts.issuer,
    audience: opts.audience,
    expiresIn: seconds,
  });
}

test('a connection is closed with UNAUTHENTICATED when its access token expires; a fresh token reconnects and resumes', async (t) => {
  const e = await openEdgeHub(servers, {}, { expiryCheckMs: 100 });
  try {
    const [alice, bob] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob')]);
    const conv = await group(e.hub, alice, [bob]);
    const a = await wsClient(e.url, shortToken(e, alice, 2), { cursors: {} });
    const b = await sioClient(e.url, shortToken(e, bob, 2), { cursors: {} });
    const keep = await wsClient(e.url, alice.token, { cursors: {} }); // a long-lived token stays connected
    const sent = await keep.request('send-message', { conversationId: conv.id, text: 'before expiry' });
    t.true(sent.ok);

    const wsClosed = await a.closed;
    t.is(wsClosed.code, 4001);
    t.is(a.of('error').at(-1)?.code, 'UNAUTHENTICATED');
    await b.closed;
    t.is(b.of('error').at(-1)?.code, 'UNAUTHENTICATED');
    t.is(e.edge.edge.connectionCount, 1);

    // Missed while disconnected, then recovered by resuming with a fresh token.
    await keep.request('send-message', { conversationId: conv.id, text: 'after expiry' });
    const b2 = await sioClient(e.url, bob.token, { cursors: { [conv.id]: sent.message.seq } });
    const got = await eventually(() => b2.of('receive-message').find((m) => m.text === 'after expiry'), 10_000, 'resumed');
    t.is(got.seq, sent.message.seq + 1);
    t.true(keep.ws.readyState === keep.ws.OPEN);
    keep.close();
    b2.close();
  } finally {
    await e.close();
  }
});

test('presence: the sweeper expires the devices of a dead edge and its users go offline', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'voxa-edge-'));
  const cfg = { dataDir, natsNamespace: uniqueNamespace('p') };
  const presence = { presenceHeartbeatMs: 300, presenceTtlMs: 1200 };
  const survivor = await openEdgeHub(servers, cfg, presence);
  let child: ChildProcess | null = null;
  try {
    const [watcher, doomed] = await Promise.all([makeUser(survivor.hub, 'Watcher'), makeUser(survivor.hub, 'Doomed')]);
    await group(survivor.hub, watcher, [doomed]);
    const w = await wsClient(survivor.url, watcher.token, { cursors: {} });

    const spawned = await spawnEdge(servers, survivor.hub, cfg, presence);
    child = spawned.child;
    const d = await wsClient(spawned.url, doomed.token, { cursors: {} });
    await eventually(() => w.of('user-online').some((x) => x.userId === doomed.user.id), 10_000, 'online');
    t.is(await survivor.edge.edge.presence.devicesOf(doomed.user.id), 1);

    // kill -9: no leave, no more heartbeats. The survivor's sweeper must notice.
    spawned.child.kill('SIGKILL');
    await d.closed;
    await eventually(() => w.of('user-offline').some((x) => x.userId === doomed.user.id), 15_000, 'offline after expiry');
    t.is(await survivor.edge.edge.presence.devicesOf(doomed.user.id), 0);
    // The watcher's own device, refreshed by its live edge, did not expire meanwhile.
    t.is(await survivor.edge.edge.presence.devicesOf(watcher.user.id), 1);
    w.close();
  } finally {
    child?.kill('SIGKILL');
    await survivor.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('the resume hold ends at once for clients that say they have nothing to resume', async (t) => {
  // A hold far longer than the test: any delivery below proves the hold was ended, not waited out.
  const e = await openEdgeHub(servers, {}, { resumeHoldMs: 120_000 });
  try {
    const [alice, bob, carol, dave] = await Promise.all(['Alice', 'Bob', 'Carol', 'Dave'].map((n) => makeUser(e.hub, n)));
    const conv = await group(e.hub, alice!, [bob!, carol!, dave!]);
    const a = await wsClient(e.url, alice!.token, { cursors: {} }); // handshake flag: cursors {}
    const b = await sioClient(e.url, bob!.token, { cursors: {} });
    const c = await wsClient(e.url, carol!.token); // says nothing yet
    const d = await sioClient(e.url, dave!.token);
    await d.request('resume', { cursors: {} }); // an empty resume
    await c.request('send-message', { conversationId: conv.id, text: 'one' });
    for (const x of [a, b, d]) await eventually(() => x.of('receive-message').some((m) => m.text === 'one'), 10_000, 'live without waiting');
    t.false(c.of('receive-message').some((m) => m.text === 'one')); // still held
    const r = await c.request('resume', { cursors: {} });
    t.true(r.ok);
    await eventually(() => c.of('receive-message').some((m) => m.text === 'one'), 10_000, 'released by resume');
    for (const x of [a, b, c, d]) x.close();
  } finally {
    await e.close();
  }
});

test('resume: a cursor past the last message is clamped, a repeated resume sends nothing twice, one from further back sends the older ones', async (t) => {
  const e = await openEdgeHub(servers);
  try {
    const [alice, bob] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob')]);
    const conv = await group(e.hub, alice, [bob]);
    for (let i = 1; i <= 10; i++) await e.hub.chat.sendMessage(alice.user, conv.id, { text: `m${i}` });
    const b = await wsClient(e.url, bob.token);
    // A cursor from the future must not hide the messages that will take seqs 11–15.
    const ahead = await b.request('resume', { cursors: { [conv.id]: 15 } });
    t.is(ahead.cursors[conv.id], 10, 'the ack names the real position, not the claimed one');
    for (let i = 11; i <= 13; i++) await e.hub.chat.sendMessage(alice.user, conv.id, { text: `m${i}` });
    await eventually(() => seqsOf(b, conv.id).length === 3, 10_000, 'live messages after a future cursor');
    t.deepEqual(seqsOf(b, conv.id), [11, 12, 13]);
    // The same resume again (a client retrying): everything after 11 already went out on this connection.
    const again = await b.request('resume', { cursors: { [conv.id]: 11 } });
    t.is(again.cursors[conv.id], 13);
    await sleep(100);
    t.deepEqual(seqsOf(b, conv.id), [11, 12, 13], 'nothing sent twice');
    // From before anything this connection sent: the older ones come, in order.
    const back = await b.request('resume', { cursors: { [conv.id]: 3 } });
    t.is(back.cursors[conv.id], 13);
    t.deepEqual(seqsOf(b, conv.id), [11, 12, 13, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    // Socket.IO, cursor in the handshake past the end: the next message still arrives.
    const s = await sioClient(e.url, bob.token, { cursors: { [conv.id]: 50 } });
    await e.hub.chat.sendMessage(alice.user, conv.id, { text: 'm14' });
    await eventually(() => seqsOf(s, conv.id).includes(14), 10_000, 'live message after a future handshake cursor');
    t.deepEqual(seqsOf(s, conv.id), [14]);
    b.close();
    s.close();
  } finally {
    await e.close();
  }
});

test('handshakes with a token but bad cursors or unknown keys get VALIDATION_FAILED naming the field; unknown upgrade paths get a 404', async (t) => {
  const e = await openEdgeHub(servers);
  try {
    const alice = await makeUser(e.hub, 'Alice');
    for (const auth of [{ token: alice.token, cursors: { cnv_x: 'x' } }, { token: alice.token, extra: 1 }]) {
      const sock = sioConnect(e.url, { transports: ['websocket'], auth, reconnection: false, forceNew: true });
      const err = await new Promise<Error & { data?: { code: string; details?: { fields: string[] } } }>((r) => sock.once('connect_error', r));
      sock.close();
      t.is(err.data?.code, 'VALIDATION_FAILED');
      t.regex(err.message, /Invalid handshake: auth/);
    }
    // No token at all is still a missing credential.
    const none = sioConnect(e.url, { transports: ['websocket'], auth: { cursors: {} }, reconnection: false, forceNew: true });
    const noneErr = await new Promise<Error & { data?: { code: string } }>((r) => none.once('connect_error', r));
    none.close();
    t.is(noneErr.data?.code, 'UNAUTHENTICATED');
    // The plain WebSocket auth frame: an error frame naming the field, then close 4002.
    const raw = new WebSocket(e.url.replace('http', 'ws') + '/ws');
    const frames: Array<{ type: string; data: { code: string; details?: { fields: string[] } } }> = [];
    raw.on('message', (d) => frames.push(JSON.parse(d.toString()) as (typeof frames)[number]));
    await new Promise((r) => raw.once('open', r));
    raw.send(JSON.stringify({ type: 'auth', data: { token: alice.token, cursors: 'all' } }));
    const code = await new Promise<number>((r) => raw.once('close', (c: number) => r(c)));
    t.is(code, 4002);
    t.is(frames[0]?.data.code, 'VALIDATION_FAILED');
    t.deepEqual(frames[0]?.data.details?.fields, ['auth.cursors']);
    // An upgrade to a path nobody serves is answered, not left to hang.
    const lost = new WebSocket(e.url.replace('http', 'ws') + '/wsx');
    const status = await new Promise<number>((r, reject) => {
      lost.once('unexpected-response', (_req, res) => r(res.statusCode ?? 0));
      lost.once('error', reject);
    });
    t.is(status, 404);
  } finally {
    await e.close();
  }
});
