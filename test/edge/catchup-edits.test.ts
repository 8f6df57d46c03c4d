/**
 * Edits that reach the edge while a connection is catching up: they must neither put a message back to an
 * older text nor get lost when the connection's queue of live events overflows.
 * Both races are staged through the edge's internals and a gated store read, so they happen every run.
 */
import test from 'ava';
import type { Message } from '../../core/domain.js';
import type { Store } from '../../core/store/port.js';
import { newId } from '../../core/ids.js';
import { serversForFile } from '../helpers/hub.js';
import { eventually, group, makeUser, openEdgeHub, seqsOf, wsClient, type EdgeHub } from './support.js';

const servers = serversForFile();

type Out = { kind: string; seq?: number };
interface State {
  queue: Out[] | null;
  overflow: boolean;
}
interface EdgeInternals {
  sessions: Set<{ user: { id: string }; convs: { get(id: string): State | undefined } }>;
  feeds: Map<string, unknown>;
  emitMessage(feed: unknown, m: Message): void;
}

/** The catch-up state of `userId`'s connection in one conversation. */
function stateOf(e: EdgeHub, userId: string, conversationId: string): State | undefined {
  const edge = e.edge.edge as unknown as EdgeInternals;
  for (const s of edge.sessions) if (s.user.id === userId) return s.convs.get(conversationId);
  return undefined;
}

/**
 * Runs `before` once, when the edge checks `conversationId`'s membership: the last step of a catch-up before
 * it reads the backlog, so what `before` does lands before that read, as live events that came just before it.
 */
function beforeBacklogRead(e: EdgeHub, conversationId: string, before: () => Promise<void>): { ran: () => boolean } {
  // The hub's store is a tracing proxy that keeps the methods it has handed out, so the call is intercepted
  // by putting another proxy in its place on the hub, which the edge reads the store from.
  const hub = e.hub as { store: Store };
  const store = hub.store;
  let done = false;
  const getConversation = async (id: string) => {
    if (!done && id === conversationId) {
      done = true;
      await before();
    }
    return store.getConversation(id);
  };
  hub.store = new Proxy(store, { get: (target, prop) => (prop === 'getConversation' ? getConversation : Reflect.get(target, prop)) });
  return { ran: () => done };
}

test('an edit queued during a catch-up is not written after the newer state the backlog read sent', async (t) => {
  const e = await openEdgeHub(servers);
  try {
    const [alice, bob] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob')]);
    const conv = await group(e.hub, alice, [bob], 'edits');
    const sent: Message[] = [];
    for (let i = 1; i <= 3; i++) sent.push((await e.hub.chat.sendMessage(alice.user, conv.id, { text: `m${i}` })).message);
    const m2 = sent[1]!;
    const staged = beforeBacklogRead(e, conv.id, async () => {
      // Edit one arrives as a live event and queues behind the catch-up (the message is not sent yet) …
      await e.hub.chat.editMessage(alice.user, conv.id, m2.id, 'v1');
      await eventually(() => stateOf(e, bob.user.id, conv.id)?.queue?.some((o) => o.kind === 'edit' && o.seq === m2.seq), 10_000, 'the edit queued');
      // … and edit two is committed but its event has not come yet (it never does here), so the read sees v2.
      await e.hub.store.editMessage(conv.id, m2.id, 'v2', new Date().toISOString(), () => []);
    });
    const b = await wsClient(e.url, bob.token, { cursors: { [conv.id]: 0 } });
    await e.hub.chat.sendMessage(alice.user, conv.id, { text: 'after' });
    await eventually(() => seqsOf(b, conv.id).includes(4), 10_000, 'the live message after the catch-up');
    t.true(staged.ran(), 'the race was staged');
    t.deepEqual(seqsOf(b, conv.id), [1, 2, 3, 4]);
    t.is(b.of('receive-message').find((m) => m.seq === 2)?.text, 'v2');
    // Nothing after it puts the message back to v1.
    t.deepEqual(
      b.of('message-updated').map((m) => m.text),
      [],
    );
    b.close();
  } finally {
    await e.close();
  }
});

test('an edit of a message the connection has is not lost when its catch-up queue overflows', async (t) => {
  const e = await openEdgeHub(servers);
  try {
    const [alice, bob] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob')]);
    const conv = await group(e.hub, alice, [bob], 'overflow');
    const sent: Message[] = [];
    for (let i = 1; i <= 4; i++) sent.push((await e.hub.chat.sendMessage(alice.user, conv.id, { text: `m${i}` })).message);
    const edge = e.edge.edge as unknown as EdgeInternals;
    const flood = 1100;
    const staged = beforeBacklogRead(e, conv.id, async () => {
      // Bob has 1..3 and is reading 4 from the store. Meanwhile message 2 is edited (its event queues) …
      await e.hub.chat.editMessage(alice.user, conv.id, sent[1]!.id, 'edited while catching up');
      await eventually(() => stateOf(e, bob.user.id, conv.id)?.queue?.some((o) => o.kind === 'edit'), 10_000, 'the edit queued');
      // … and then more live messages than the queue holds arrive, so the queue (the edit with it) is dropped.
      const results = await Promise.all(
        Array.from({ length: flood }, (_, i) =>
          e.hub.store.appendMessage(
            { id: newId('msg'), conversationId: conv.id, senderId: alice.user.id, text: `flood ${i}`, clientId: null, createdAt: new Date().toISOString() },
            () => [],
          ),
        ),
      );
      const feed = edge.feeds.get(conv.id);
      for (const r of results.map((x) => x.message).sort((x, y) => x.seq - y.seq)) edge.emitMessage(feed, r);
      t.true(stateOf(e, bob.user.id, conv.id)?.overflow, 'the queue overflowed');
    });
    const b = await wsClient(e.url, bob.token, { cursors: { [conv.id]: 3 } });
    const last = 4 + flood;
    await eventually(() => seqsOf(b, conv.id).includes(last), 20_000, 'the whole backlog');
    t.true(staged.ran(), 'the race was staged');
    t.deepEqual(seqsOf(b, conv.id), Array.from({ length: flood + 1 }, (_, i) => 4 + i));
    const edit = await eventually(() => b.of('message-updated').find((m) => m.seq === 2), 10_000, 'the edit of message 2');
    t.is(edit.text, 'edited while catching up');
    b.close();
  } finally {
    await e.close();
  }
});
