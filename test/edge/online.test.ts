import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import test from 'ava';
import { WebSocket } from 'ws';
import { serversForFile } from '../helpers/hub.js';
import { eventually, group, makeUser, openEdgeHub, sioClient, wsClient, type TestClient, type TestUser } from './support.js';

const servers = serversForFile();

test('ready lists the peers online right now, on both transports: only users sharing a conversation, never yourself', async (t) => {
  const h = await openEdgeHub(servers);
  try {
    const [alice, bob, carol, dave, eve] = (await Promise.all(['Alice', 'Bob', 'Carol', 'Dave', 'Eve'].map((n) => makeUser(h.hub, n)))) as [TestUser, TestUser, TestUser, TestUser, TestUser];
    await group(h.hub, alice, [bob, dave]);
    await group(h.hub, alice, [carol], 'second');
    await group(h.hub, eve, [bob], 'without alice');
    // Bob (in a conversation with Alice) and Eve (who shares nothing with Alice) are online; Dave and Carol are not.
    const b = await wsClient(h.url, bob.token, { cursors: {} });
    const e = await sioClient(h.url, eve.token, { cursors: {} });
    t.deepEqual(b.ready.online, [], 'nobody Bob shares a conversation with was online yet');
    t.deepEqual(e.ready.online, [bob.user.id]);
    // Alice's own other device does not make her her own peer.
    const a0 = await wsClient(h.url, alice.token, { cursors: {} });

    const a1 = await sioClient(h.url, alice.token, { cursors: {} });
    t.deepEqual(a1.ready.online, [bob.user.id]);
    t.is(a1.ready.userId, alice.user.id);
    t.true(typeof a1.ready.deviceId === 'string');
    const a2 = await wsClient(h.url, alice.token, { cursors: {} });
    t.deepEqual(a2.ready.online, [bob.user.id]);

    // Carol comes online (a peer through the second conversation): the next device of Alice sees both, and the
    // ones already connected hear it as a change.
    const c = await sioClient(h.url, carol.token, { cursors: {} });
    t.deepEqual([...c.ready.online].sort(), [alice.user.id]);
    const a3 = await sioClient(h.url, alice.token, { cursors: {} });
    t.deepEqual([...a3.ready.online].sort(), [bob.user.id, carol.user.id].sort());
    await eventually(() => a1.of('user-online').some((d) => d.userId === carol.user.id), 10_000, 'carol online at alice');

    // Bob leaves: gone from the list of the next connection.
    b.close();
    await eventually(() => a2.of('user-offline').some((d) => d.userId === bob.user.id), 10_000, 'bob offline at alice');
    const a4 = await wsClient(h.url, alice.token, { cursors: {} });
    t.deepEqual(a4.ready.online, [carol.user.id]);
    for (const x of [a0, a1, a2, a3, a4, c, e]) x.close();
  } finally {
    await h.close();
  }
});

test('nothing reaches a device before ready: a peer coming online during the connect arrives after it', async (t) => {
  const h = await openEdgeHub(servers);
  try {
    const [alice, bob] = await Promise.all([makeUser(h.hub, 'Alice'), makeUser(h.hub, 'Bob')]);
    await group(h.hub, alice, [bob]);
    // Connect both at once, several times: whichever order presence and ready happen in, Alice's first frame is
    // ready, and her view is complete — Bob is in her ready list or a user-online follows it.
    for (let i = 0; i < 5; i++) {
      const raw = new WebSocket(h.url.replace(/^http/, 'ws') + '/ws');
      const frames: Array<{ type: string; data: { userId?: string; online?: string[] } }> = [];
      raw.on('message', (d) => frames.push(JSON.parse(d.toString())));
      await once(raw, 'open');
      raw.send(JSON.stringify({ type: 'auth', data: { token: alice.token, cursors: {} } }));
      const b = await wsClient(h.url, bob.token, { cursors: {} });
      await eventually(
        () => frames[0]?.data.online?.includes(bob.user.id) || frames.some((f) => f.type === 'user-online' && f.data.userId === bob.user.id),
        10_000,
        'alice learns bob is online',
      );
      t.is(frames[0]!.type, 'ready');
      raw.terminate();
      b.close();
      await eventually(async () => (await h.edge.edge.presence.devicesOf(bob.user.id)) === 0 && (await h.edge.edge.presence.devicesOf(alice.user.id)) === 0, 10_000, 'both gone');
    }
  } finally {
    await h.close();
  }
});

test('a Socket.IO connection keeps neither the upgrade request nor its close forwarder (engine.io internals checked)', async (t) => {
  const h = await openEdgeHub(servers);
  try {
    const alice = await makeUser(h.hub, 'Alice');
    const upgraded: Duplex[] = [];
    h.server.prependListener('upgrade', (_req, socket: Duplex) => upgraded.push(socket));
    const a = await sioClient(h.url, alice.token, { cursors: {} });
    t.is(upgraded.length, 1);
    // engine.io's WebSocketResponse forwards the TCP socket's close with this listener and thereby keeps the
    // upgrade request alive; the edge removes it. If engine.io changes it, this test says so.
    const forwarders = upgraded[0]!.rawListeners('close').filter((w) => String((w as { listener?: unknown }).listener ?? w) === '() => this.emit("close")');
    t.is(forwarders.length, 0);
    // The connection still works and still closes cleanly.
    t.true(a.socket.connected);
    a.close();
    await eventually(async () => (await h.edge.edge.presence.devicesOf(alice.user.id)) === 0, 10_000, 'device gone');
  } finally {
    await h.close();
  }
});

test('members added later learn who of their new peers is online (after the membership frame), without duplicates for peers shared already', async (t) => {
  const h = await openEdgeHub(servers);
  try {
    const [alice, bob, carol, dave, eve] = (await Promise.all(['Alice', 'Bob', 'Carol', 'Dave', 'Eve'].map((n) => makeUser(h.hub, n)))) as [TestUser, TestUser, TestUser, TestUser, TestUser];
    await group(h.hub, alice, [carol], 'old');
    // Carol shares "old" with Alice; Bob and Dave share nothing with anyone; Eve stays offline.
    const c = await sioClient(h.url, carol.token, { cursors: {} });
    const b = await sioClient(h.url, bob.token, { cursors: {} });
    const d = await wsClient(h.url, dave.token, { cursors: {} });
    const a = await wsClient(h.url, alice.token, { cursors: {} });
    t.deepEqual(a.ready.online, [carol.user.id]);
    t.deepEqual(b.ready.online, []);
    await eventually(() => c.of('user-online').some((x) => x.userId === alice.user.id), 10_000, 'carol hears alice come online');
    const onlineAt = (x: { received: Array<{ type: string; data: { userId?: string } }> }) =>
      x.received.filter((r) => r.type === 'user-online').map((r) => r.data.userId!);
    const before = { a: onlineAt(a).length, b: onlineAt(b).length, c: onlineAt(c).length };
    t.deepEqual(onlineAt(b), []);

    // Alice creates a group with Bob and Carol.
    const conv = await group(h.hub, alice, [bob, carol], 'new');
    const afterUpdate = (x: TestClient, userId: string) => {
      const i = x.received.findIndex((r) => r.type === 'conversation-updated' && r.data.conversationId === conv.id);
      const j = x.received.findIndex((r) => r.type === 'user-online' && r.data.userId === userId);
      return i >= 0 && j > i;
    };
    await eventually(() => afterUpdate(a, bob.user.id), 10_000, 'alice: conversation-updated, then bob online');
    await eventually(() => afterUpdate(b, alice.user.id) && afterUpdate(b, carol.user.id), 10_000, 'bob: alice and carol online');
    await eventually(() => afterUpdate(c, bob.user.id), 10_000, 'carol: bob online');
    // Alice and Carol already shared "old": neither hears about the other again (same batch as the ones above).
    t.deepEqual(onlineAt(a).slice(before.a), [bob.user.id]);
    t.deepEqual(onlineAt(c).slice(before.c), [bob.user.id]);
    t.deepEqual(onlineAt(b).slice(before.b).sort(), [alice.user.id, carol.user.id].sort());

    // Dave (online) and Eve (offline) are added to the group: Dave learns the three are online, they learn
    // Dave is; nobody hears about Eve.
    await h.hub.chat.updateGroup(alice.user, conv.id, { add: [dave.user.id, eve.user.id] });
    await eventually(() => [alice, bob, carol].every((u) => afterUpdate(d, u.user.id)), 10_000, 'dave: the three online');
    for (const [x, name] of [[a, 'alice'], [b, 'bob'], [c, 'carol']] as const) {
      await eventually(() => onlineAt(x).includes(dave.user.id), 10_000, `${name}: dave online`);
    }
    t.deepEqual(onlineAt(d).sort(), [alice.user.id, bob.user.id, carol.user.id].sort());
    for (const x of [a, b, c, d]) t.false(onlineAt(x).includes(eve.user.id));
    t.deepEqual(onlineAt(a).slice(before.a), [bob.user.id, dave.user.id]);
    for (const x of [a, b, c, d]) x.close();
  } finally {
    await h.close();
  }
});
