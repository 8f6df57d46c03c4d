/**
 * Handshake cursors that cannot be applied are named in `ready.skipped`, as a resume names them in its ack: a
 * client that resumes through the handshake can tell "nothing new" from "you were removed while away".
 */
import test from 'ava';
import { serversForFile } from '../helpers/hub.js';
import { group, makeUser, openEdgeHub, seqsOf, sioClient, wsClient, eventually } from './support.js';

const servers = serversForFile();

test('ready.skipped names handshake cursors of conversations the user is not in, on both transports', async (t) => {
  const e = await openEdgeHub(servers);
  t.teardown(() => e.close());
  const [alice, bob, carol] = await Promise.all([makeUser(e.hub, 'Alice'), makeUser(e.hub, 'Bob'), makeUser(e.hub, 'Carol')]);
  const left = await group(e.hub, alice, [bob, carol], 'left');
  const kept = await group(e.hub, alice, [carol], 'kept');
  await e.hub.chat.sendMessage(alice.user, kept.id, { text: 'for carol' });
  await e.hub.chat.updateGroup(alice.user, left.id, { remove: [carol.user.id] });

  for (const open of [wsClient, sioClient]) {
    const c = await open(e.url, carol.token, { cursors: { [left.id]: 0, [kept.id]: 0, cnv_nope: 3 } });
    t.deepEqual(
      [...c.ready.skipped].sort((a: { code: string }, b: { code: string }) => a.code.localeCompare(b.code)),
      [
        { conversationId: 'cnv_nope', code: 'CONVERSATION_NOT_FOUND' },
        { conversationId: left.id, code: 'NOT_A_MEMBER' },
      ],
    );
    // The cursor that could be applied was: its backlog arrives.
    await eventually(() => seqsOf(c, kept.id).length === 1, 10_000, 'the backlog of the kept conversation');
    c.close();
  }
  // Without cursors, or with only applicable ones, ready has no skipped.
  const plain = await wsClient(e.url, carol.token, { cursors: { [kept.id]: 1 } });
  t.false('skipped' in plain.ready);
  plain.close();
});
