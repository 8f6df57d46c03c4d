/**
 * A connection's own limits (messages and frames per second, with a burst) answer RATE_LIMITED with
 * `details.retryAfter` in whole seconds, as the shared per-user limits do, so a client knows when to go on.
 */
import test from 'ava';
import { serversForFile } from '../helpers/hub.js';
import { group, makeUser, openEdgeHub, sioClient, wsClient } from './support.js';

const servers = serversForFile();

test('over the per-connection message and frame limits: RATE_LIMITED with retryAfter', async (t) => {
  // Two messages at once, then one every 4 s; five frames at once, then one a second.
  const e = await openEdgeHub(servers, {}, { sendBurst: 2, sendPerSecond: 0.25, framesBurst: 5, framesPerSecond: 1 });
  t.teardown(() => e.close());
  const [alice, bob] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob')]);
  const conv = await group(e.hub, alice, [bob]);
  for (const open of [wsClient, sioClient]) {
    const c = await open(e.url, alice.token, { cursors: {} });
    const send = (text: string) => c.request('send-message', { conversationId: conv.id, text });
    t.true((await send('one')).ok);
    t.true((await send('two')).ok);
    const refused = await send('three');
    t.false(refused.ok);
    t.is(refused.error.code, 'RATE_LIMITED');
    t.regex(refused.error.message, /messages on this connection/);
    t.true(refused.error.details.retryAfter >= 1 && refused.error.details.retryAfter <= 4, JSON.stringify(refused.error));

    // Three frames were used above; two more pass, the next is over the frame limit.
    const frames = [];
    for (let i = 0; i < 3; i++) frames.push(await c.request('message-seen', { conversationId: conv.id, seq: 1 }));
    const over = frames.find((f) => !f.ok);
    t.is(over?.error.code, 'RATE_LIMITED', JSON.stringify(frames));
    t.regex(over?.error.message ?? '', /frames on this connection/);
    t.is(over?.error.details.retryAfter, 1);
    c.close();
  }
});

test('more frames waiting than the connection may queue: RATE_LIMITED with retryAfter', async (t) => {
  const e = await openEdgeHub(servers, { sendRateLimitPerMinute: 100_000 }, { maxPendingFrames: 4, framesBurst: 1000, framesPerSecond: 1000, sendBurst: 1000, sendPerSecond: 1000 });
  t.teardown(() => e.close());
  const [alice, bob] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob')]);
  const conv = await group(e.hub, alice, [bob]);
  const c = await wsClient(e.url, alice.token, { cursors: {} });
  // Sent at once: each waits for the one before it (a store write), so the queue fills.
  const acks = await Promise.all(Array.from({ length: 30 }, (_, i) => c.request('send-message', { conversationId: conv.id, text: `m${i}` })));
  const over = acks.filter((a) => !a.ok);
  t.true(over.length > 0, 'some were refused');
  for (const a of over) {
    t.is(a.error.code, 'RATE_LIMITED');
    t.regex(a.error.message, /waiting on this connection/);
    t.is(a.error.details.retryAfter, 1);
  }
  c.close();
});
