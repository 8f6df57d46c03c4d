import test from 'ava';
import jwt from 'jsonwebtoken';
import { io as sioConnect } from 'socket.io-client';
import { WebSocket } from 'ws';
import { metrics } from '../../core/telemetry/metrics.js';
import { serversForFile } from '../helpers/hub.js';
import { eventually, group, makeUser, openEdgeHub, seqsOf, sioClient, sleep, wsClient } from './support.js';

const servers = serversForFile();

test('handshakes: bad or expired token and foreign origin are refused; the token is never taken from the URL', async (t) => {
  const h = await openEdgeHub(servers, { corsOrigins: ['https://app.example.test'] });
  try {
    const alice = await makeUser(h.hub, 'Alice');
    // Socket.IO: bad token.
    const bad = sioConnect(h.url, { transports: ['websocket'], auth: { token: 'nope' }, reconnection: false, forceNew: true });
    const err = await new Promise<Error & { data?: { code: string } }>((r) => bad.once('connect_error', r));
    t.is(err.data?.code, 'UNAUTHENTICATED');
    bad.close();
    // Expired token (signed with the right key).
    const expired = jwt.sign({}, h.hub.secrets.jwtSecret, { algorithm: 'HS256', subject: alice.user.id, issuer: h.hub.config.jwtIssuer, audience: h.hub.config.jwtAudience, expiresIn: -10 });
    await t.throwsAsync(wsClient(h.url, expired), { message: /4001/ });
    // Token in the query string only: not accepted.
    const q = sioConnect(h.url, { transports: ['websocket'], query: { token: alice.token }, reconnection: false, forceNew: true });
    const qe = await new Promise<Error & { data?: { code: string } }>((r) => q.once('connect_error', r));
    t.is(qe.data?.code, 'UNAUTHENTICATED');
    q.close();
    // Cross-site origin: refused at the HTTP upgrade for ws, at allowRequest for Socket.IO.
    const evil = new WebSocket(h.url.replace('http', 'ws') + '/ws', { origin: 'https://evil.example.test' });
    const status = await new Promise<number>((r) => evil.once('unexpected-response', (_req, res) => r(res.statusCode ?? 0)));
    t.is(status, 403);
    const evilSio = sioConnect(h.url, { transports: ['websocket'], auth: { token: alice.token }, extraHeaders: { origin: 'https://evil.example.test' }, reconnection: false, forceNew: true });
    await new Promise((r) => evilSio.once('connect_error', r));
    t.false(evilSio.connected);
    evilSio.close();
    // Allowed origin and same host work.
    const ok = await wsClient(h.url, alice.token, { origin: 'https://app.example.test' });
    const same = await wsClient(h.url, alice.token, { origin: h.url });
    ok.close();
    same.close();
    // A ws client that never authenticates is cut; a non-auth first frame too.
    const raw = new WebSocket(h.url.replace('http', 'ws') + '/ws');
    await new Promise((r) => raw.once('open', r));
    raw.send(JSON.stringify({ type: 'send-message', data: {} }));
    const code = await new Promise<number>((r) => raw.once('close', (c: number) => r(c)));
    t.is(code, 4001);
  } finally {
    await h.close();
  }
});

test('send over both transports: ack with seq, delivery to the other member, idempotent clientId, bad frames answered', async (t) => {
  const h = await openEdgeHub(servers);
  try {
    const [alice, bob, carol] = await Promise.all([makeUser(h.hub, 'Alice'), makeUser(h.hub, 'Bob'), makeUser(h.hub, 'Carol')]);
    const conv = await group(h.hub, alice, [bob]);
    const a = await sioClient(h.url, alice.token);
    const b = await wsClient(h.url, bob.token);
    const c = await wsClient(h.url, carol.token); // not a member
    await sleep(800); // past the resume hold
    const ack = await a.request('send-message', { conversationId: conv.id, text: 'hi bob', clientId: 'c1' });
    t.true(ack.ok);
    t.is(ack.message.seq, 1);
    const again = await a.request('send-message', { conversationId: conv.id, text: 'hi bob', clientId: 'c1' });
    t.is(again.message.id, ack.message.id);
    t.false(again.created);
    const back = await b.request('send-message', { conversationId: conv.id, text: 'hi alice' });
    t.is(back.message.seq, 2);
    await eventually(() => seqsOf(b, conv.id).length === 2 && seqsOf(a, conv.id).length === 2, 10_000, 'deliveries');
    t.deepEqual(seqsOf(b, conv.id), [1, 2]);
    t.deepEqual(seqsOf(a, conv.id), [1, 2]);
    t.is(b.of('receive-message')[0].text, 'hi bob');
    // Not a member: the REST error codes, and nothing delivered.
    const denied = await c.request('send-message', { conversationId: conv.id, text: 'let me in' });
    t.is(denied.error.code, 'NOT_A_MEMBER');
    t.is(seqsOf(c, conv.id).length, 0);
    // Validation: extra fields, wrong types, unknown events, malformed JSON.
    const extra = (await b.request('send-message', { conversationId: conv.id, text: 'x', admin: true })).error;
    t.is(extra.code, 'VALIDATION_FAILED');
    // The same details shape as a REST body error (docs/errors.md), paths under `data`.
    t.deepEqual(extra.details, { fields: ['data.admin'], issues: [{ path: 'data.admin', code: 'unknown_field', message: 'Unknown field.' }] });
    const operator = (await b.request('send-message', { conversationId: conv.id, text: { $gt: '' } })).error;
    t.is(operator.code, 'VALIDATION_FAILED');
    t.deepEqual(operator.details.fields, ['data.text']);
    t.is((await b.request('send-message', { conversationId: conv.id, text: '   ' })).error.code, 'VALIDATION_FAILED');
    t.is((await b.request('no-such-thing', {})).error.code, 'VALIDATION_FAILED');
    t.is((await a.request('send-message', { conversationId: conv.id, text: 'x'.repeat(h.hub.config.maxMessageLength + 1) })).error.code, 'VALIDATION_FAILED');
    b.ws.send('{not json');
    await eventually(() => b.of('error').some((e) => e.code === 'MALFORMED_JSON'), 5000, 'malformed json error');
    // A frame beyond the size limit closes the ws connection (1009) instead of being buffered.
    const big = await wsClient(h.url, carol.token);
    big.ws.send(JSON.stringify({ type: 'typing', data: { conversationId: 'x'.repeat(70 * 1024) } }));
    t.is((await big.closed).code, 1009);
    // The server is still fine.
    const ok = await b.request('send-message', { conversationId: conv.id, text: 'still here' });
    t.is(ok.message.seq, 3);
    a.close();
    b.close();
    c.close();
  } finally {
    await h.close();
  }
});

test('typing and presence reach conversation peers only; delivered and seen come back as status updates', async (t) => {
  const h = await openEdgeHub(servers, {}, { typingTtlMs: 600, typingThrottleMs: 100 });
  try {
    const [alice, bob, eve] = await Promise.all([makeUser(h.hub, 'Alice'), makeUser(h.hub, 'Bob'), makeUser(h.hub, 'Eve')]);
    const conv = await group(h.hub, alice, [bob]);
    const a = await wsClient(h.url, alice.token);
    const e = await wsClient(h.url, eve.token); // shares nothing with bob
    await sleep(800);
    const b = await sioClient(h.url, bob.token);
    await eventually(() => a.of('user-online').some((d) => d.userId === bob.user.id), 10_000, 'bob online at alice');
    await b.request('typing', { conversationId: conv.id });
    await eventually(() => a.of('typing').some((d) => d.userId === bob.user.id && d.conversationId === conv.id), 10_000, 'typing');
    // Expires by itself.
    await eventually(() => a.of('stop-typing').some((d) => d.userId === bob.user.id), 10_000, 'typing expiry');
    // Not to the typer, not to outsiders.
    t.is(b.of('typing').length, 0);
    t.is(e.of('typing').length + e.of('user-online').length, 0);
    // Throttle: a burst is forwarded once.
    const burst = await Promise.all([1, 2, 3].map(() => b.request('typing', { conversationId: conv.id })));
    t.true(burst.filter((r) => r.throttled).length >= 2);

    // Status: alice sends, bob's device receives (delivered), bob reads (seen).
    const sent = await a.request('send-message', { conversationId: conv.id, text: 'did you get this?' });
    await eventually(() => a.of('message-status-update').some((u) => u.status === 'delivered' && u.userId === bob.user.id && u.seq === sent.message.seq), 10_000, 'delivered');
    const seen = await b.request('message-seen', { conversationId: conv.id, seq: sent.message.seq });
    t.true(seen.ok);
    await eventually(() => a.of('message-status-update').some((u) => u.status === 'seen' && u.userId === bob.user.id), 10_000, 'seen');
    t.is(await h.hub.store.getReadMarker(conv.id, bob.user.id), sent.message.seq);

    // Offline when the last device leaves.
    b.close();
    await eventually(() => a.of('user-offline').some((d) => d.userId === bob.user.id), 10_000, 'bob offline');
    t.is(e.of('user-offline').length, 0);
    a.close();
    e.close();
  } finally {
    await h.close();
  }
});

test('membership changes apply at once: an added member starts receiving, a removed one stops', async (t) => {
  const h = await openEdgeHub(servers);
  try {
    const [alice, bob, carol] = await Promise.all([makeUser(h.hub, 'Alice'), makeUser(h.hub, 'Bob'), makeUser(h.hub, 'Carol')]);
    const conv = await group(h.hub, alice, [bob]);
    const a = await wsClient(h.url, alice.token);
    const b = await wsClient(h.url, bob.token);
    const c = await sioClient(h.url, carol.token);
    await sleep(800);
    await a.request('send-message', { conversationId: conv.id, text: 'before carol' });
    await h.hub.chat.updateGroup(alice.user, conv.id, { add: [carol.user.id] });
    await eventually(() => c.of('conversation-updated').some((u) => u.conversationId === conv.id && u.membership === 'member'), 10_000, 'carol added');
    await a.request('send-message', { conversationId: conv.id, text: 'welcome carol' });
    await eventually(() => seqsOf(c, conv.id).includes(2), 10_000, 'carol receives');
    t.deepEqual(seqsOf(c, conv.id), [2]); // from the moment she joined
    // A brand-new conversation reaches its members' open sockets too.
    const dm = await h.hub.chat.openConversation(carol.user, { type: 'direct', members: [bob.user.id] });
    await eventually(() => b.of('conversation-updated').some((u) => u.conversationId === dm.conversation.id), 10_000, 'new conversation');
    await c.request('send-message', { conversationId: dm.conversation.id, text: 'psst' });
    await eventually(() => seqsOf(b, dm.conversation.id).length === 1, 10_000, 'dm delivered');

    await h.hub.chat.updateGroup(alice.user, conv.id, { remove: [bob.user.id] });
    await eventually(() => b.of('conversation-updated').some((u) => u.conversationId === conv.id && u.membership === 'removed'), 5000, 'bob removed');
    await a.request('send-message', { conversationId: conv.id, text: 'bob is gone' });
    await eventually(() => seqsOf(c, conv.id).includes(3), 10_000, 'carol gets 3');
    await sleep(300);
    t.false(seqsOf(b, conv.id).includes(3));
    t.is((await b.request('typing', { conversationId: conv.id })).error.code, 'NOT_A_MEMBER');
    a.close();
    b.close();
    c.close();
  } finally {
    await h.close();
  }
});

test('resume: backlog after the cursor in order, then live, with the overlap removed', async (t) => {
  const h = await openEdgeHub(servers);
  try {
    const [alice, bob] = await Promise.all([makeUser(h.hub, 'Alice'), makeUser(h.hub, 'Bob')]);
    const conv = await group(h.hub, alice, [bob]);
    for (let i = 0; i < 30; i++) await h.hub.chat.sendMessage(alice.user, conv.id, { text: `m${i}` });
    const edited = (await h.hub.store.listMessages(conv.id, { after: 11, limit: 1 })).messages[0]!;
    await h.hub.chat.deleteMessage(alice.user, conv.id, edited.id);
    // A stream of live sends while bob resumes from seq 10.
    let stop = false;
    const live = (async () => {
      let i = 0;
      while (!stop) {
        await h.hub.chat.sendMessage(alice.user, conv.id, { text: `live${i++}` });
        await sleep(5);
      }
    })();
    await sleep(50);
    const b = await wsClient(h.url, bob.token);
    const ack = await b.request('resume', { cursors: { [conv.id]: 10 } });
    t.true(ack.ok);
    const atAck = seqsOf(b, conv.id);
    t.true(atAck.length >= 20);
    t.is(atAck[0], 11);
    t.true(b.of('receive-message').find((m) => m.seq === 12).deleted); // the tombstone shows in the backlog
    await sleep(200);
    stop = true;
    await live;
    const last = (await h.hub.store.getConversation(conv.id))!.lastSeq;
    await eventually(() => seqsOf(b, conv.id).at(-1) === last, 10_000, 'live catches up');
    const seqs = seqsOf(b, conv.id);
    t.deepEqual(seqs, Array.from({ length: last - 10 }, (_, i) => i + 11)); // in order, once
    // Socket.IO with cursors in the handshake: the same guarantee.
    const s = await sioClient(h.url, bob.token, { cursors: { [conv.id]: last - 3 } });
    await eventually(() => seqsOf(s, conv.id).length === 3, 10_000, 'handshake resume');
    t.deepEqual(seqsOf(s, conv.id), [last - 2, last - 1, last]);
    b.close();
    s.close();
  } finally {
    await h.close();
  }
});

test('a slow client is cut with a reason, others are unaffected, and it resumes without loss', async (t) => {
  const h = await openEdgeHub(servers, { sendRateLimitPerMinute: 100_000 }, { maxBufferedBytes: 64 * 1024, sendBurst: 10_000, sendPerSecond: 10_000, framesBurst: 10_000, framesPerSecond: 10_000 });
  try {
    const [alice, bob, carol] = await Promise.all([makeUser(h.hub, 'Alice'), makeUser(h.hub, 'Bob'), makeUser(h.hub, 'Carol')]);
    const conv = await group(h.hub, alice, [bob, carol]);
    const slow = await wsClient(h.url, bob.token);
    const fast = await wsClient(h.url, carol.token);
    await sleep(800);
    slow.ws.pause(); // stops reading: the kernel buffers fill, then ours
    // Loopback socket buffers hold several MB, so keep sending until the edge gives up on the reader.
    const text = 'x'.repeat(9000);
    const slowCuts = async () => (await metrics.edgeSlowClientDisconnects.get()).values.find((v) => v.labels.transport === 'ws')?.value ?? 0;
    const cutsBefore = await slowCuts();
    let n = 0;
    while (h.edge.edge.connectionCount === 2 && n < 4000) {
      await Promise.all(Array.from({ length: 20 }, () => h.hub.chat.sendMessage(alice.user, conv.id, { text })));
      n += 20;
    }
    t.is(h.edge.edge.connectionCount, 1);
    t.is(await slowCuts(), cutsBefore + 1);
    // Reading again, the client finds what was on the wire, then the end of the connection (the close frame
    // with 4008 when it made it out before the edge gave up waiting for the reader).
    slow.ws.resume();
    const closed = await slow.closed;
    t.true(closed.code === 4008 || closed.code === 1006, String(closed.code));
    await eventually(() => seqsOf(fast, conv.id).length === n, 30_000, 'fast client got all');
    t.deepEqual(seqsOf(fast, conv.id), Array.from({ length: n }, (_, i) => i + 1));
    // What the slow client did read is a prefix; it resumes from there.
    const got = seqsOf(slow, conv.id);
    t.deepEqual(got, Array.from({ length: got.length }, (_, i) => i + 1));
    const again = await wsClient(h.url, bob.token, { cursors: { [conv.id]: got.length } });
    await eventually(() => seqsOf(again, conv.id).at(-1) === n, 30_000, 'resume after slow');
    t.deepEqual([...got, ...seqsOf(again, conv.id)], Array.from({ length: n }, (_, i) => i + 1));
    fast.close();
    again.close();
  } finally {
    await h.close();
  }
});
