/**
 * Resume with `changesSince`: edits and deletes made while a client was offline, to messages it already has
 * (seq ≤ its cursor), reach it as `message-updated` / `message-deleted` before the ack, in seq order.
 */
import test from 'ava';
import { WebSocket } from 'ws';
import { io as sioConnect } from 'socket.io-client';
import { once } from 'node:events';
import { serversForFile } from '../helpers/hub.js';
import { eventually, group, makeUser, openEdgeHub, seqsOf, sioClient, wsClient, type EdgeHub, type Received, type TestUser } from './support.js';

const servers = serversForFile();

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/** The change frames (updated/deleted) of one conversation, as [type, seq, text]. */
const changesOf = (received: Received[], convId: string) =>
  received
    .filter((r) => (r.type === 'message-updated' || r.type === 'message-deleted') && r.data.conversationId === convId)
    .map((r) => [r.type, r.data.seq, r.data.text]);

async function offlineChanges(e: EdgeHub) {
  const [alice, bob] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob')]);
  const conv = await group(e.hub, alice, [bob]);
  const sent = [];
  for (const text of ['one', 'two', 'three', 'four']) sent.push((await e.hub.chat.sendMessage(alice.user, conv.id, { text, clientId: null })).message);
  return { alice, bob, conv, sent };
}

/** Bob's first connection: it receives the four messages, then goes away. Its `ready` has the serverTime to pass back. */
async function firstVisit(connect: typeof wsClient | typeof sioClient, e: EdgeHub, bob: TestUser, convId: string) {
  const first = await connect(e.url, bob.token, { cursors: { [convId]: 0 } });
  await eventually(() => seqsOf(first, convId).length === 4, 10_000, 'backlog');
  first.close();
  await first.closed;
  return first.ready as { serverTime: string };
}

test('/ws: resume with changesSince sends edits and deletes made offline to messages up to the cursor, before the ack', async (t) => {
  const e = await openEdgeHub(servers);
  try {
    const { alice, bob, conv, sent } = await offlineChanges(e);
    const { serverTime } = await firstVisit(wsClient, e, bob, conv.id);
    t.regex(serverTime, ISO);

    // Offline: message 1 edited, 2 deleted (both at or before the cursor 3), 4 edited (after it), 5 new.
    await e.hub.chat.editMessage(alice.user, conv.id, sent[0]!.id, 'one, edited');
    await e.hub.chat.deleteMessage(alice.user, conv.id, sent[1]!.id);
    await e.hub.chat.editMessage(alice.user, conv.id, sent[3]!.id, 'four, edited');
    await e.hub.chat.sendMessage(alice.user, conv.id, { text: 'five', clientId: null });

    const again = await wsClient(e.url, bob.token, { cursors: {} });
    const ack = await again.request('resume', { cursors: { [conv.id]: 3 }, changesSince: serverTime });
    t.true(ack.ok);
    t.regex(ack.serverTime, ISO);
    t.true(ack.serverTime >= serverTime);
    // Everything was written before the ack: no waiting needed.
    t.deepEqual(changesOf(again.received, conv.id), [
      ['message-updated', 1, 'one, edited'],
      ['message-deleted', 2, ''],
    ]);
    t.true(again.received.find((r) => r.type === 'message-deleted')!.data.deleted);
    // After the cursor: the backlog, in its current state, once.
    t.deepEqual(
      again.of('receive-message').map((m) => [m.seq, m.text]),
      [
        [4, 'four, edited'],
        [5, 'five'],
      ],
    );
    // The changes come before the backlog, and in seq order.
    t.deepEqual(
      again.received.filter((r) => r.data?.conversationId === conv.id).map((r) => r.data.seq),
      [1, 2, 4, 5],
    );

    // A client that passes no changesSince gets what it always got: only what follows its cursor.
    const old = await wsClient(e.url, bob.token, { cursors: {} });
    const oldAck = await old.request('resume', { cursors: { [conv.id]: 3 } });
    t.true(oldAck.ok);
    t.deepEqual(changesOf(old.received, conv.id), []);
    t.deepEqual(seqsOf(old, conv.id), [4, 5]);
    again.close();
    old.close();
  } finally {
    await e.close();
  }
});

test('Socket.IO: changesSince in the handshake sends the offline changes before the backlog', async (t) => {
  const e = await openEdgeHub(servers);
  try {
    const { alice, bob, conv, sent } = await offlineChanges(e);
    const { serverTime } = await firstVisit(sioClient, e, bob, conv.id);
    t.regex(serverTime, ISO);

    await e.hub.chat.deleteMessage(alice.user, conv.id, sent[2]!.id);
    await e.hub.chat.editMessage(alice.user, conv.id, sent[0]!.id, 'one, edited');
    await e.hub.chat.sendMessage(alice.user, conv.id, { text: 'five', clientId: null });

    const again = await sioClient(e.url, bob.token, { cursors: { [conv.id]: 4 }, changesSince: serverTime });
    await eventually(() => seqsOf(again, conv.id).length === 1, 10_000, 'backlog after the changes');
    t.deepEqual(changesOf(again.received, conv.id), [
      ['message-updated', 1, 'one, edited'],
      ['message-deleted', 3, ''],
    ]);
    t.deepEqual(
      again.received.filter((r) => r.data?.conversationId === conv.id).map((r) => r.data.seq),
      [1, 3, 5],
    );
    again.close();
  } finally {
    await e.close();
  }
});

test('a resume with changesSince after the handshake backlog sends the changes up to the handshake cursor only, and a repeat sends nothing', async (t) => {
  const e = await openEdgeHub(servers);
  try {
    const { alice, bob, conv, sent } = await offlineChanges(e);
    const { serverTime } = await firstVisit(wsClient, e, bob, conv.id);

    await e.hub.chat.editMessage(alice.user, conv.id, sent[0]!.id, 'one, edited');
    await e.hub.chat.deleteMessage(alice.user, conv.id, sent[1]!.id);
    await e.hub.chat.editMessage(alice.user, conv.id, sent[3]!.id, 'four, edited');

    // What the examples do: cursors in the handshake (its backlog brings 4 in its edited state), then a resume
    // with the same cursors and changesSince.
    const again = await wsClient(e.url, bob.token, { cursors: { [conv.id]: 3 } });
    await eventually(() => seqsOf(again, conv.id).includes(4), 10_000, 'the handshake backlog');
    const ack = await again.request('resume', { cursors: { [conv.id]: 3 }, changesSince: serverTime });
    t.true(ack.ok);
    t.deepEqual(changesOf(again.received, conv.id), [
      ['message-updated', 1, 'one, edited'],
      ['message-deleted', 2, ''],
    ]);
    t.deepEqual(
      again.of('receive-message').map((m) => [m.seq, m.text]),
      [[4, 'four, edited']],
    );
    // The same resume again (a client retrying): nothing this connection already sent.
    const repeat = await again.request('resume', { cursors: { [conv.id]: 3 }, changesSince: serverTime });
    t.true(repeat.ok);
    t.is(changesOf(again.received, conv.id).length, 2);
    // One asking for changes from further back does get a changes read again.
    const earlier = new Date(Date.parse(serverTime) - 60_000).toISOString();
    t.true((await again.request('resume', { cursors: { [conv.id]: 3 }, changesSince: earlier })).ok);
    t.deepEqual(changesOf(again.received, conv.id).slice(2), [
      ['message-updated', 1, 'one, edited'],
      ['message-deleted', 2, ''],
    ]);
    again.close();
  } finally {
    await e.close();
  }
});

test('a bad changesSince is VALIDATION_FAILED naming the field, in a resume frame and in either handshake', async (t) => {
  const e = await openEdgeHub(servers);
  try {
    const bob = await makeUser(e.hub, 'Bob');
    const c = await wsClient(e.url, bob.token, { cursors: {} });
    for (const bad of ['yesterday', '2030-13-01T00:00:00Z', 12345, '2030-01-01T00:00:00.000Z'.repeat(3)]) {
      const ack = await c.request('resume', { cursors: {}, changesSince: bad });
      t.is(ack.ok, false, String(bad));
      t.is(ack.error.code, 'VALIDATION_FAILED');
      t.deepEqual(ack.error.details.fields, ['data.changesSince']);
    }
    // An offset is a valid ISO time.
    t.true((await c.request('resume', { cursors: {}, changesSince: '2030-01-01T01:00:00+01:00' })).ok);
    c.close();

    const ws = new WebSocket(e.url.replace(/^http/, 'ws') + '/ws');
    await once(ws, 'open');
    const frames: Array<{ type: string; data: { code: string; details?: { fields: string[] } } }> = [];
    ws.on('message', (raw) => frames.push(JSON.parse(raw.toString())));
    const closed = once(ws, 'close');
    ws.send(JSON.stringify({ type: 'auth', data: { token: bob.token, cursors: {}, changesSince: 'soon' } }));
    const [code] = await closed;
    t.is(code, 4002);
    t.is(frames[0]!.data.code, 'VALIDATION_FAILED');
    t.deepEqual(frames[0]!.data.details!.fields, ['auth.changesSince']);

    const socket = sioConnect(e.url, { transports: ['websocket'], auth: { token: bob.token, changesSince: 'soon' }, reconnection: false, forceNew: true });
    const err = await new Promise<{ data: { code: string; details: { fields: string[] } } }>((resolve) =>
      socket.once('connect_error', (e) => resolve(e as unknown as { data: { code: string; details: { fields: string[] } } })),
    );
    t.is(err.data.code, 'VALIDATION_FAILED');
    t.deepEqual(err.data.details.fields, ['auth.changesSince']);
    socket.close();
  } finally {
    await e.close();
  }
});
