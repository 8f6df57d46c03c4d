/**
 * The edge reads chat events from a plain NATS subscription, so anything published on a chat subject reaches
 * it: a hand-made `nats pub`, a buggy external producer. An event whose `data` does not match the catalog must
 * not reach a client or move a feed's position; the real events around it still arrive, in order.
 */
import test from 'ava';
import { createEvent, subjectOf, type AnyEvent } from '../../core/events/catalog.js';
import { newId } from '../../core/ids.js';
import { serversForFile } from '../helpers/hub.js';
import { eventually, group, makeUser, openEdgeHub, seqsOf, sioClient, wsClient, type EdgeHub } from './support.js';

const servers = serversForFile();

/** Publishes a hand-made event straight on NATS (by default on its own subject), as `nats pub` would. */
async function publishRaw(e: EdgeHub, ev: object, subject = subjectOf(ev as AnyEvent, e.hub.bus.namespace)): Promise<void> {
  e.hub.bus.nc.publish(subject, JSON.stringify(ev));
  await e.hub.bus.nc.flush();
}

test('an event with malformed data is dropped by the edge: no frame, and the real message with that seq still arrives', async (t) => {
  const e = await openEdgeHub(servers);
  try {
    const [alice, bob] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob')]);
    const conv = await group(e.hub, alice, [bob]);
    const ws = await wsClient(e.url, bob.token, { cursors: { [conv.id]: 0 } });
    const sio = await sioClient(e.url, bob.token, { cursors: { [conv.id]: 0 } });
    const actor = { type: 'user' as const, id: alice.user.id };
    const fake = (type: 'message.created' | 'message.updated', data: unknown) =>
      publishRaw(e, createEvent(type, { workspaceId: conv.workspaceId, conversationId: conv.id, actor, data: data as never }));
    // Claims seq 1 with the wrong shape: taken as seq 1, it would be written to clients and the real seq 1
    // dropped as a duplicate afterwards.
    await fake('message.created', { message: { seq: 1, conversationId: conv.id, text: 42 } });
    // A seq that is not a number, and data that is not there at all.
    await fake('message.created', { message: { id: newId('msg'), conversationId: conv.id, seq: 'x', senderId: alice.user.id, text: 'x', clientId: null, createdAt: new Date().toISOString() } });
    await fake('message.updated', {});
    await fake('message.created', null);

    const { message } = await e.hub.chat.sendMessage(alice.user, conv.id, { text: 'the real one' });
    t.is(message.seq, 1);
    const { message: second } = await e.hub.chat.sendMessage(alice.user, conv.id, { text: 'and the next' });
    for (const c of [ws, sio]) {
      await eventually(() => seqsOf(c, conv.id).includes(second.seq), 10_000, 'the real messages');
      t.deepEqual(seqsOf(c, conv.id), [1, 2]);
      t.deepEqual(
        c.of('receive-message').map((m) => m.text),
        ['the real one', 'and the next'],
      );
      t.deepEqual(c.of('message-updated'), []);
    }

    // Typing goes through the ephemeral subjects: a malformed one shows nothing, a real one still shows.
    await publishRaw(e, createEvent('typing.started', { workspaceId: conv.workspaceId, conversationId: conv.id, actor, data: { conversationId: conv.id, userId: 5 } as never }));
    const a = await wsClient(e.url, alice.token, { cursors: {} });
    t.true((await a.request('typing', { conversationId: conv.id })).ok);
    for (const c of [ws, sio]) {
      await eventually(() => c.of('typing').length > 0, 10_000, 'the real typing frame');
      t.deepEqual(c.of('typing'), [{ conversationId: conv.id, userId: alice.user.id }]);
    }
    a.close();
    ws.close();
    sio.close();
  } finally {
    await e.close();
  }
});

test('an event claiming a seq the store never reaches is given up on once: the feed goes back to work and later messages flow', async (t) => {
  const e = await openEdgeHub(servers);
  try {
    const [alice, bob] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob')]);
    const conv = await group(e.hub, alice, [bob]);
    const ws = await wsClient(e.url, bob.token, { cursors: { [conv.id]: 0 } });
    await e.hub.chat.sendMessage(alice.user, conv.id, { text: 'one' });
    await eventually(() => seqsOf(ws, conv.id).includes(1), 10_000, 'the first message');
    // Well-formed, so the catalog check lets it through, but its seq is far ahead of anything stored (a
    // hand-made event, or a store restored behind JetStream). The feed reads the store for the gap, finds
    // nothing, and must then drop the claim rather than try again for ever.
    const ev = createEvent('message.created', {
      workspaceId: conv.workspaceId,
      conversationId: conv.id,
      actor: { type: 'user', id: alice.user.id },
      data: { message: { id: newId('msg'), conversationId: conv.id, seq: 99_999, senderId: alice.user.id, text: 'phantom', clientId: null, createdAt: new Date().toISOString() } },
    });
    await publishRaw(e, ev);
    type FeedInternals = { busy: boolean; pending: unknown[]; last: number };
    const feed = () => (e.edge.edge as unknown as { feeds: Map<string, FeedInternals> }).feeds.get(conv.id)!;
    await eventually(() => feed().busy, 5000, 'the gap fill to start');
    await eventually(() => !feed().busy && feed().pending.length === 0, 15_000, 'the feed to give up on the phantom and go idle');
    t.is(feed().last, 1);
    const { message } = await e.hub.chat.sendMessage(alice.user, conv.id, { text: 'two' });
    await eventually(() => seqsOf(ws, conv.id).includes(message.seq), 10_000, 'the next real message');
    t.deepEqual(seqsOf(ws, conv.id), [1, 2]);
    t.false(ws.of('receive-message').some((m) => m.text === 'phantom'));
    t.false(feed().busy, 'no fill started again');
    ws.close();
  } finally {
    await e.close();
  }
});

test('an event of a type the edge does not use, or of no known type, on a chat subject is skipped: the edge keeps delivering', async (t) => {
  const e = await openEdgeHub(servers);
  try {
    const [alice, bob] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob')]);
    const conv = await group(e.hub, alice, [bob]);
    const ws = await wsClient(e.url, bob.token, { cursors: { [conv.id]: 0 } });
    // Its subject and its `type` agree, but the catalog has no such type (a newer producer, a hand-made `nats pub`).
    const base = createEvent('message.created', {
      workspaceId: conv.workspaceId,
      conversationId: conv.id,
      actor: { type: 'user', id: alice.user.id },
      data: { message: { id: newId('msg'), conversationId: conv.id, seq: 1, senderId: alice.user.id, text: 'x', clientId: null, createdAt: new Date().toISOString() } },
    });
    await publishRaw(e, { ...base, type: 'message.pinned' }, subjectOf(base, e.hub.bus.namespace).replace(/message\.created$/, 'message.pinned'));
    // A catalog type on a chat subject that no feed uses.
    await publishRaw(
      e,
      createEvent('file.uploaded', {
        workspaceId: conv.workspaceId,
        conversationId: conv.id,
        actor: { type: 'user', id: alice.user.id },
        data: { file: { id: 'f1', name: 'a.txt', size: 1, contentType: 'text/plain', conversationId: conv.id } },
      }),
    );

    const { message } = await e.hub.chat.sendMessage(alice.user, conv.id, { text: 'after them' });
    await eventually(() => seqsOf(ws, conv.id).includes(message.seq), 10_000, 'the real message');
    t.deepEqual(seqsOf(ws, conv.id), [1]);
    t.deepEqual(
      ws.received.map((r) => r.type),
      ['receive-message'],
    );
    ws.close();
  } finally {
    await e.close();
  }
});
