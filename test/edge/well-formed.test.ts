import { once } from 'node:events';
import test, { type ExecutionContext } from 'ava';
import { WebSocket } from 'ws';
import { serversForFile } from '../helpers/hub.js';
import { eventually, group, makeUser, openEdgeHub, sioClient, wsClient } from './support.js';

const servers = serversForFile();

/** Alice on /ws and Bob on Socket.IO in a group; all closed after the test. */
async function twoOnline(t: ExecutionContext) {
  const e = await openEdgeHub(servers);
  t.teardown(() => e.close());
  const [alice, bob] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob')]);
  const conv = await group(e.hub, alice, [bob]);
  const ws = await wsClient(e.url, alice.token, { cursors: {} });
  const sio = await sioClient(e.url, bob.token, { cursors: {} });
  // Teardowns run last-registered first: the clients close before the hub.
  t.teardown(() => {
    ws.close();
    sio.close();
  });
  return { e, alice, bob, conv, ws, sio };
}

test('frames with lone UTF-16 surrogates are refused with VALIDATION_FAILED naming the field, on both transports', async (t) => {
  const { e, alice, conv, ws, sio } = await twoOnline(t);
  // JSON.stringify writes a lone surrogate as a \u escape, so the frames carry exactly what a client could send.
  for (const [client, name] of [[ws, 'ws'], [sio, 'socket.io']] as const) {
    const text = await client.request('send-message', { conversationId: conv.id, text: '\ud800 x' });
    t.false(text.ok, name);
    t.is(text.error.code, 'VALIDATION_FAILED', name);
    t.deepEqual(text.error.details.fields, ['data.text'], name);
    const cid = await client.request('send-message', { conversationId: conv.id, text: 'ok', clientId: 'c\udfff' });
    t.deepEqual(cid.error?.details?.fields, ['data.clientId'], name);
  }
  t.is((await e.hub.store.listMessages(conv.id, { limit: 10 })).messages.length, 0, 'nothing was stored');

  // A surrogate pair is ordinary text.
  const ok = await ws.request('send-message', { conversationId: conv.id, text: '\u{1F600}', clientId: 'c-1' });
  t.true(ok.ok);
  t.is((await e.hub.store.listMessages(conv.id, { limit: 10 })).messages[0]!.text, '\u{1F600}');

  // In the auth frame: refused like any bad handshake (error frame, then close 4002).
  const raw = new WebSocket(e.url.replace(/^http/, 'ws') + '/ws');
  await once(raw, 'open');
  const frames: Array<{ type: string; data: { code: string; details?: { fields: string[] } } }> = [];
  raw.on('message', (m) => frames.push(JSON.parse(m.toString())));
  const closed = once(raw, 'close');
  raw.send(JSON.stringify({ type: 'auth', data: { token: alice.token, cursors: { ['\ud800']: 1 } } }));
  const [code] = (await closed) as [number];
  t.is(code, 4002);
  t.is(frames[0]?.data.code, 'VALIDATION_FAILED');
});

test('the chat rules name fields under data on the edge, in the same {fields, issues} shape', async (t) => {
  const e = await openEdgeHub(servers, { maxMessageLength: 10 });
  try {
    const [alice, bob] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob')]);
    const conv = await group(e.hub, alice, [bob]);
    const ws = await wsClient(e.url, alice.token, { cursors: {} });
    try {
      for (const [text, name] of [['   ', 'blank'], ['x'.repeat(11), 'too long']]) {
        const res = await ws.request('send-message', { conversationId: conv.id, text });
        t.is(res.error?.code, 'VALIDATION_FAILED', name);
        t.deepEqual(res.error.details.fields, ['data.text'], name);
        t.is(res.error.details.issues[0].path, 'data.text', name);
      }
    } finally {
      ws.close();
    }
  } finally {
    await e.close();
  }
});

test('prototype keys in resume cursors are refused, as REST refuses them in a body (handshake and resume, both transports)', async (t) => {
  const { e, bob, conv, ws, sio } = await twoOnline(t);
  for (const [client, name] of [[ws, 'ws'], [sio, 'socket.io']] as const) {
    for (const key of ['__proto__', 'constructor']) {
      // An own key, as JSON.parse makes it from a client's frame.
      const cursors = JSON.parse(`{"${key}": 1, "${conv.id}": 0}`) as Record<string, number>;
      const res = await client.request('resume', { cursors });
      t.false(res.ok, `${name} ${key}`);
      t.is(res.error.code, 'VALIDATION_FAILED', `${name} ${key}`);
      t.deepEqual(res.error.details.fields, [`data.cursors.${key}`], `${name} ${key}`);
    }
  }
  const refused = await t.throwsAsync(sioClient(e.url, bob.token, { cursors: JSON.parse('{"__proto__": 1}') as Record<string, number> }));
  t.is((refused as Error & { data?: { code?: string } }).data?.code, 'VALIDATION_FAILED');
});

test('a frame over 64 KiB closes the connection: 1009 on /ws, a transport close on Socket.IO (as websocket.md says); nothing is stored', async (t) => {
  const { e, conv, ws, sio } = await twoOnline(t);
  const big = { conversationId: conv.id, text: 'x'.repeat(70 * 1024), clientId: 'too-big' };
  sio.emit('send-message', big);
  t.deepEqual(await sio.closed, { reason: 'transport close' });
  ws.emit('send-message', big);
  t.is((await ws.closed).code, 1009);
  t.is((await e.hub.store.listMessages(conv.id, { limit: 10 })).messages.length, 0);
});

test('a Socket.IO event whose name is not a string (42[1,{}]) is refused, and the hub keeps serving', async (t) => {
  const { conv, sio } = await twoOnline(t);
  const errors: unknown[] = [];
  sio.socket.on('error', (e: unknown) => void errors.push(e));
  // The official client sends whatever it is given as the name.
  (sio.socket.emit as (ev: unknown, ...args: unknown[]) => void)(1, {});
  const acked = await (sio.socket.timeout(5000).emitWithAck as (ev: unknown, ...args: unknown[]) => Promise<{ ok: boolean; error: { code: string } }>)(2, {});
  t.false(acked.ok);
  t.is(acked.error.code, 'VALIDATION_FAILED');
  const sent = await sio.request('send-message', { conversationId: conv.id, text: 'still here', clientId: 'after-numeric' });
  t.true(sent.ok, 'the connection and the hub still work');
  t.like(errors[0], { code: 'VALIDATION_FAILED' });
});

test('a /ws frame with a bad envelope is answered with details naming the field and a ref to match it; unknown types name the field too', async (t) => {
  const { conv, ws, sio } = await twoOnline(t);
  const errors = () => ws.received.filter((f) => f.type === 'error').map((f) => f.data as { code: string; details?: { fields?: string[] }; ref?: unknown });
  ws.ws.send(JSON.stringify({ type: 'typing', data: { conversationId: conv.id }, ackId: -1 }));
  ws.ws.send(JSON.stringify({ type: 'typing', data: { conversationId: conv.id }, ackId: 'x', extra: 1 }));
  ws.ws.send(JSON.stringify({ type: 7, data: {} }));
  await eventually(() => errors().length === 3, 5000, 'three error frames');
  const [negative, extra, numeric] = errors();
  t.like(negative, { code: 'VALIDATION_FAILED', ref: -1 });
  t.deepEqual(negative!.details?.fields, ['ackId']);
  t.like(extra, { code: 'VALIDATION_FAILED', ref: 'x' });
  t.true(extra!.details?.fields?.some((f) => f.includes('extra')), JSON.stringify(extra));
  t.deepEqual(numeric!.details?.fields, ['type']);
  for (const client of [ws, sio]) {
    const unknown = await client.request('nope', {});
    t.false(unknown.ok);
    t.deepEqual(unknown.error.details.fields, ['type']);
  }
});
