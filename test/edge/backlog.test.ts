/**
 * A long backlog on resume: a client that reads at a normal pace gets all of it, in order, once, and is not cut
 * as a slow consumer because the edge wrote pages faster than any socket drains.
 */
import test from 'ava';
import { newId } from '../../core/ids.js';
import { serversForFile } from '../helpers/hub.js';
import { eventually, group, makeUser, openEdgeHub, seqsOf, sioClient, wsClient, type TestClient } from './support.js';

const servers = serversForFile();

test('resuming thousands of messages in several conversations at once: all arrive, in order, once, no SLOW_CONSUMER', async (t) => {
  const e = await openEdgeHub(servers);
  try {
    const [alice, bob] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob')]);
    const convs = await Promise.all([1, 2, 3].map((i) => group(e.hub, alice, [bob], `backlog ${i}`)));
    const perConv = 3000;
    // Straight into the store, many in flight (group commits): the backlog is what matters, not how it came.
    // Long enough that one burst of pages is far more than the kernel's socket buffers take.
    const text = 'a backlog line that is long enough to fill buffers quickly: '.repeat(25);
    for (const conv of convs) {
      for (let done = 0; done < perConv; done += 500) {
        await Promise.all(
          Array.from({ length: 500 }, () =>
            e.hub.store.appendMessage({ id: newId('msg'), conversationId: conv.id, senderId: alice.user.id, text, clientId: null, createdAt: new Date().toISOString() }, () => []),
          ),
        );
      }
    }
    const cursors = Object.fromEntries(convs.map((c) => [c.id, 0]));
    const clients: TestClient[] = [await wsClient(e.url, bob.token, { cursors }), await sioClient(e.url, bob.token, { cursors })];
    for (const c of clients) {
      await eventually(() => convs.every((conv) => seqsOf(c, conv.id).length >= perConv) || c.of('error').length > 0, 60_000, 'the backlog');
      t.deepEqual(c.of('error'), [], 'not cut as a slow consumer');
      for (const conv of convs) t.deepEqual(seqsOf(c, conv.id), Array.from({ length: perConv }, (_, i) => i + 1));
      c.close();
    }
  } finally {
    await e.close();
  }
});

test('a live message that arrives while a catch-up is handing back its answer is delivered, not left queued', async (t) => {
  const e = await openEdgeHub(servers);
  try {
    const [alice, bob] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob')]);
    const conv = await group(e.hub, alice, [bob], 'race');
    for (let i = 1; i <= 3; i++) await e.hub.chat.sendMessage(alice.user, conv.id, { text: `m${i}` });
    // The race, made certain: right after the catch-up loop decides it is level, and before the caller gets that
    // answer, a live message for the conversation reaches the edge (the catch-up is still on, so it is queued).
    type Internals = { catchUpLoop(s: unknown, feed: { id: string }, st: unknown): Promise<boolean>; emitMessage(feed: unknown, m: unknown): void };
    const edge = e.edge.edge as unknown as Internals;
    const loop = edge.catchUpLoop.bind(edge);
    let inject = true;
    edge.catchUpLoop = async (s, feed, st) => {
      const level = await loop(s, feed, st);
      if (level && inject && feed.id === conv.id) {
        inject = false;
        const { message } = await e.hub.store.appendMessage(
          { id: newId('msg'), conversationId: conv.id, senderId: alice.user.id, text: 'during the hand-back', clientId: null, createdAt: new Date().toISOString() },
          () => [],
        );
        edge.emitMessage(feed, message);
      }
      return level;
    };
    const b = await wsClient(e.url, bob.token, { cursors: { [conv.id]: 0 } });
    await eventually(() => seqsOf(b, conv.id).length === 4, 10_000, 'the message that came during the hand-back');
    t.false(inject, 'the race was staged');
    t.deepEqual(seqsOf(b, conv.id), [1, 2, 3, 4]);
    b.close();
  } finally {
    await e.close();
  }
});
