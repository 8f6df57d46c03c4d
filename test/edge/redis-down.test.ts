import test from 'ava';
import { serversForFile } from '../helpers/hub.js';
import { eventually, group, makeUser, openEdgeHub, seqsOf, sioClient, sleep, wsClient } from './support.js';

// Its own servers: this file stops Redis.
const servers = serversForFile();

test('with Redis down, chat over sockets goes on and presence degrades without errors', async (t) => {
  const h = await openEdgeHub(servers);
  try {
    const [alice, bob] = await Promise.all([makeUser(h.hub, 'Alice'), makeUser(h.hub, 'Bob')]);
    const conv = await group(h.hub, alice, [bob]);
    await servers.redis.stop();
    await eventually(() => h.hub.redis!.status !== 'ready', 10_000, 'redis seen down');
    const a = await wsClient(h.url, alice.token);
    const b = await wsClient(h.url, bob.token);
    const bs = await sioClient(h.url, bob.token);
    // Who is online cannot be known: `online` is absent from ready (not an empty list that would say "nobody").
    for (const c of [a, b, bs]) {
      t.true(c.ready.ok);
      t.false('online' in c.ready);
    }
    await sleep(800);
    const ack = await a.request('send-message', { conversationId: conv.id, text: 'no redis, no problem' });
    t.true(ack.ok);
    await eventually(() => seqsOf(b, conv.id).length === 1 && seqsOf(bs, conv.id).length === 1, 10_000, 'delivered without redis');
    const back = await bs.request('send-message', { conversationId: conv.id, text: 'over socket.io too' });
    t.true(back.ok);
    await eventually(() => seqsOf(a, conv.id).length === 2, 10_000, 'socket.io send delivered');
    // A group with a new peer while Redis is down: the membership frame arrives, the presence read for the new
    // peers finds nothing to say, and nothing breaks.
    const carol = await makeUser(h.hub, 'Carol');
    const c = await sioClient(h.url, carol.token);
    const conv2 = await group(h.hub, alice, [carol], 'while down');
    await eventually(() => [a, c].every((x) => x.of('conversation-updated').some((u) => u.conversationId === conv2.id)), 10_000, 'membership while down');
    const ack2 = await c.request('send-message', { conversationId: conv2.id, text: 'still chatting' });
    t.true(ack2.ok);
    await eventually(() => seqsOf(a, conv2.id).length === 1, 10_000, 'new group delivered without redis');
    t.is(a.of('user-online').length, 0); // presence is what degrades
    t.is(c.of('user-online').length, 0);
    c.close();
    // Back up: presence works again for new devices.
    await servers.redis.start();
    await eventually(() => h.hub.redis!.status === 'ready', 15_000, 'redis back');
    await h.edge.edge.presence.tick();
    const b2 = await wsClient(h.url, bob.token);
    t.true((await h.edge.edge.presence.devicesOf(bob.user.id)) >= 1);
    // The list is back too (Alice's device was re-registered by the heartbeat above).
    t.deepEqual(b2.ready.online, [alice.user.id]);
    a.close();
    b.close();
    bs.close();
    b2.close();
  } finally {
    await h.close();
  }
});
