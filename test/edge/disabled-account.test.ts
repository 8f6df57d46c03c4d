/**
 * A disabled account is locked out of the edge as it is out of REST: its open connections are closed when the
 * change is announced (`user.updated`, from any process), and a frame on a connection the news has not reached
 * yet is refused by the per-frame account check, which reads the account as REST does.
 */
import test, { type ExecutionContext } from 'ava';
import { publicUser, type UserRecord } from '../../core/domain.js';
import { createEvent } from '../../core/events/catalog.js';
import { recordOutbox, toOutbox } from '../../core/events/outbox-entry.js';
import { serversForFile } from '../helpers/hub.js';
import { eventually, group, makeUser, openEdgeHub, sioClient, wsClient, type EdgeHub } from './support.js';

const servers = serversForFile();

/** Disables the account in the store; with `announce`, publishes its `user.updated` as the CLI would. */
async function disable(e: EdgeHub, user: UserRecord, announce: boolean): Promise<void> {
  const events = recordOutbox((u: UserRecord) =>
    announce
      ? [
          toOutbox(
            createEvent('user.updated', { workspaceId: u.workspaceId, userId: u.id, actor: { type: 'system', id: 'test' }, data: { user: publicUser(u), changes: ['disabled'] } }),
            e.hub.bus.namespace,
          ),
        ]
      : [],
  );
  await e.hub.store.updateUser(user.id, { disabled: true }, events);
  if (announce) await e.hub.outbox.dispatch(events.entries);
}

/** Alice and Bob in a group, Bob connected on both transports. */
async function bobOnline(t: ExecutionContext) {
  const e = await openEdgeHub(servers);
  t.teardown(() => e.close());
  const [alice, bob] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob')]);
  const conv = await group(e.hub, alice, [bob]);
  const ws = await wsClient(e.url, bob.token, { cursors: { [conv.id]: 0 } });
  const sio = await sioClient(e.url, bob.token, { cursors: { [conv.id]: 0 } });
  return { e, alice, bob, conv, ws, sio };
}

test('disabling an account closes its open connections on both transports', async (t) => {
  const { e, alice, bob, conv, ws, sio } = await bobOnline(t);
  const other = await wsClient(e.url, alice.token, { cursors: { [conv.id]: 0 } });

  await disable(e, bob.user, true);
  // No frame from Bob's clients: the event alone closes them.
  t.is((await ws.closed).code, 4001);
  await sio.closed;
  for (const c of [ws, sio]) {
    const err = c.of('error').at(-1);
    t.is(err?.code, 'UNAUTHENTICATED');
    t.regex(err?.message ?? '', /disabled/);
  }
  // Alice's connection is untouched and still receives.
  await e.hub.chat.sendMessage(alice.user, conv.id, { text: 'still here' });
  await eventually(() => other.of('receive-message').length === 1, 10_000, "Alice's own message");
  t.is(e.edge.edge.connectionCount, 1);
  other.close();
});

test('a frame from a disabled account is refused and closes the connection, even before any event', async (t) => {
  const { e, bob, conv, ws, sio } = await bobOnline(t);

  await disable(e, bob.user, false);
  for (const c of [ws, sio]) {
    const ack = await c.request('send-message', { conversationId: conv.id, text: 'from a disabled account' });
    t.false(ack.ok);
    t.is(ack.error.code, 'UNAUTHENTICATED');
    await c.closed;
  }
  const { messages } = await e.hub.store.listMessages(conv.id, { limit: 10 });
  t.deepEqual(messages, [], 'nothing was stored');
});
