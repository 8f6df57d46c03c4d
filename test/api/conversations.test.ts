import test from 'ava';
import { serversForFile } from '../helpers/hub.js';
import { bearer, eventually, openApiHub, streamEvents, type ApiHub, type Session } from './support.js';

const servers = serversForFile();

async function direct(api: ApiHub, a: Session, b: Session): Promise<string> {
  const res = await api.http.post('/v1/conversations').set(...bearer(a)).send({ type: 'direct', members: [b.id] });
  if (res.status !== 201 && res.status !== 200) throw new Error(JSON.stringify(res.body));
  return res.body.conversation.id;
}

test('direct conversations are one per pair, also under concurrent opens', async (t) => {
  const api = await openApiHub(servers);
  try {
    const [a, b, c] = [await api.register('A'), await api.register('B'), await api.register('C')];
    const first = await api.http.post('/v1/conversations').set(...bearer(a)).send({ type: 'direct', members: [b.id] });
    t.is(first.status, 201);
    t.like(first.body.conversation, { type: 'direct', title: null, workspaceId: 'default', createdBy: a.id, lastSeq: 0 });
    t.deepEqual([...first.body.conversation.members].sort(), [a.id, b.id].sort());
    t.false('directKey' in first.body.conversation);
    // From the other side: the same conversation, 200.
    const back = await api.http.post('/v1/conversations').set(...bearer(b)).send({ type: 'direct', members: [a.id] });
    t.is(back.status, 200);
    t.is(back.body.conversation.id, first.body.conversation.id);

    const racing = await Promise.all(
      Array.from({ length: 6 }, (_, i) => api.http.post('/v1/conversations').set(...bearer(i % 2 ? a : c)).send({ type: 'direct', members: [i % 2 ? c.id : a.id] })),
    );
    t.is(new Set(racing.map((r) => r.body.conversation.id)).size, 1);
    t.is(racing.filter((r) => r.status === 201).length, 1);

    const self = await api.http.post('/v1/conversations').set(...bearer(a)).send({ type: 'direct', members: [a.id] });
    t.is(self.status, 400);
    const ghost = await api.http.post('/v1/conversations').set(...bearer(a)).send({ type: 'direct', members: ['usr_ghost'] });
    t.is(ghost.status, 404);
    t.is(ghost.body.error.code, 'USER_NOT_FOUND');

    const list = await api.http.get('/v1/conversations').set(...bearer(a));
    t.is(list.body.conversations.length, 2);
  } finally {
    await api.close();
  }
});

test('groups: membership rules, title, add/remove, non-members and other workspaces', async (t) => {
  const api = await openApiHub(servers);
  try {
    const [owner, m1, m2, outsider] = [await api.register('Owner'), await api.register('M1'), await api.register('M2'), await api.register('Out')];
    const g = await api.http.post('/v1/conversations').set(...bearer(owner)).send({ type: 'group', title: 'Team', members: [m1.id] });
    t.is(g.status, 201);
    const id = g.body.conversation.id as string;

    t.is((await api.http.get(`/v1/conversations/${id}`).set(...bearer(m1))).status, 200);
    const notMember = await api.http.get(`/v1/conversations/${id}`).set(...bearer(outsider));
    t.is(notMember.status, 403);
    t.is(notMember.body.error.code, 'NOT_A_MEMBER');
    t.is((await api.http.post(`/v1/conversations/${id}/messages`).set(...bearer(outsider)).send({ text: 'hi' })).status, 403);
    t.is((await api.http.get(`/v1/conversations/${id}/messages`).set(...bearer(outsider))).status, 403);
    t.is((await api.http.get('/v1/conversations/cnv_nope').set(...bearer(owner))).body.error.code, 'CONVERSATION_NOT_FOUND');

    // A member adds someone; only the creator (or an admin) removes others.
    const add = await api.http.patch(`/v1/conversations/${id}`).set(...bearer(m1)).send({ addMembers: [m2.id], title: 'Team 2' });
    t.is(add.status, 200);
    t.is(add.body.conversation.title, 'Team 2');
    t.true(add.body.conversation.members.includes(m2.id));
    const kick = await api.http.patch(`/v1/conversations/${id}`).set(...bearer(m1)).send({ removeMembers: [m2.id] });
    t.is(kick.status, 403);
    t.is(kick.body.error.code, 'FORBIDDEN');
    const leave = await api.http.patch(`/v1/conversations/${id}`).set(...bearer(m2)).send({ removeMembers: [m2.id] });
    t.is(leave.status, 200);
    t.false(leave.body.conversation.members.includes(m2.id));
    t.is((await api.http.get(`/v1/conversations/${id}`).set(...bearer(m2))).status, 403);
    t.is((await api.http.patch(`/v1/conversations/${id}`).set(...bearer(owner)).send({})).status, 400);

    // Direct conversations cannot change members.
    const d = await direct(api, owner, m1);
    const conflict = await api.http.patch(`/v1/conversations/${d}`).set(...bearer(owner)).send({ addMembers: [m2.id] });
    t.is(conflict.status, 409);

    // Another workspace's conversation does not exist for the caller.
    await api.hub.store.ensureWorkspace({ id: 'ws2', name: 'Two', settings: { registration: 'open', customersTalkToAgentsOnly: false, privatePush: false }, createdAt: new Date().toISOString() });
    const now = new Date().toISOString();
    await api.hub.store.createUser({ id: 'usr_ws2', workspaceId: 'ws2', email: 'ws2@example.test', name: 'W', role: 'admin', createdAt: now, passwordHash: 'x', disabled: false }, () => []);
    await api.hub.store.createConversation({ id: 'cnv_ws2', workspaceId: 'ws2', type: 'group', title: 'Other', members: ['usr_ws2', owner.id], createdBy: 'usr_ws2', createdAt: now, updatedAt: now, lastSeq: 0 }, () => []);
    const foreign = await api.http.get('/v1/conversations/cnv_ws2').set(...bearer(owner));
    t.is(foreign.status, 404);
    t.is((await api.http.post('/v1/conversations/cnv_ws2/messages').set(...bearer(owner)).send({ text: 'x' })).status, 404);
    const cross = await api.http.post('/v1/conversations').set(...bearer(owner)).send({ type: 'direct', members: ['usr_ws2'] });
    t.is(cross.status, 404);
  } finally {
    await api.close();
  }
});

test('customersTalkToAgentsOnly: customers may only open conversations with agents', async (t) => {
  const api = await openApiHub(servers);
  try {
    const [cust, cust2, agent] = [await api.register('Cu'), await api.register('Cu2'), await api.register('Ag', { role: 'agent' })];
    await api.hub.store.updateWorkspaceSettings('default', { customersTalkToAgentsOnly: true }, () => []);
    const denied = await api.http.post('/v1/conversations').set(...bearer(cust)).send({ type: 'direct', members: [cust2.id] });
    t.is(denied.status, 403);
    t.is(denied.body.error.code, 'FORBIDDEN');
    t.is((await api.http.post('/v1/conversations').set(...bearer(cust)).send({ type: 'direct', members: [agent.id] })).status, 201);
    const g = await api.http.post('/v1/conversations').set(...bearer(cust)).send({ type: 'group', title: 'Help', members: [agent.id] });
    t.is(g.status, 201);
    const sneak = await api.http.patch(`/v1/conversations/${g.body.conversation.id}`).set(...bearer(cust)).send({ addMembers: [cust2.id] });
    t.is(sneak.status, 403);
    // Agents are not restricted.
    t.is((await api.http.post('/v1/conversations').set(...bearer(agent)).send({ type: 'direct', members: [cust2.id] })).status, 201);
  } finally {
    await api.close();
  }
});

test('messages: send, idempotent clientId (sequential and concurrent), seq order, paging, edit, delete, read, unread, events', async (t) => {
  const api = await openApiHub(servers);
  try {
    const [a, b] = [await api.register('Ann'), await api.register('Bo')];
    const id = await direct(api, a, b);

    const sent = await api.http.post(`/v1/conversations/${id}/messages`).set(...bearer(a)).send({ text: 'hello', clientId: 'c-1' });
    t.is(sent.status, 201);
    t.deepEqual(Object.keys(sent.body), ['message']);
    t.deepEqual(Object.keys(sent.body.message).sort(), ['clientId', 'conversationId', 'createdAt', 'id', 'senderId', 'seq', 'text']);
    t.like(sent.body.message, { conversationId: id, seq: 1, senderId: a.id, text: 'hello', clientId: 'c-1' });

    const repeat = await api.http.post(`/v1/conversations/${id}/messages`).set(...bearer(a)).send({ text: 'hello', clientId: 'c-1' });
    t.is(repeat.status, 200);
    t.deepEqual(repeat.body.message, sent.body.message);

    const racing = await Promise.all(
      Array.from({ length: 8 }, () => api.http.post(`/v1/conversations/${id}/messages`).set(...bearer(b)).send({ text: 'once', clientId: 'dup' })),
    );
    t.is(new Set(racing.map((r) => r.body.message.id)).size, 1);
    t.is(racing.filter((r) => r.status === 201).length, 1);

    for (let i = 0; i < 10; i++) {
      await api.http.post(`/v1/conversations/${id}/messages`).set(...bearer(i % 2 ? a : b)).send({ text: `m${i}` });
    }
    // 12 messages: seq 1..12 with no gaps.
    const all = await api.http.get(`/v1/conversations/${id}/messages?limit=200`).set(...bearer(b));
    t.is(all.status, 200);
    t.deepEqual(all.body.messages.map((m: { seq: number }) => m.seq), Array.from({ length: 12 }, (_, i) => i + 1));
    t.false(all.body.hasMore);

    const newest = await api.http.get(`/v1/conversations/${id}/messages?limit=5`).set(...bearer(b));
    t.deepEqual(newest.body.messages.map((m: { seq: number }) => m.seq), [8, 9, 10, 11, 12]);
    t.true(newest.body.hasMore);
    const older = await api.http.get(`/v1/conversations/${id}/messages?before=8&limit=5`).set(...bearer(b));
    t.deepEqual(older.body.messages.map((m: { seq: number }) => m.seq), [3, 4, 5, 6, 7]);
    t.true(older.body.hasMore);
    const oldest = await api.http.get(`/v1/conversations/${id}/messages?before=3&limit=5`).set(...bearer(b));
    t.deepEqual(oldest.body.messages.map((m: { seq: number }) => m.seq), [1, 2]);
    t.false(oldest.body.hasMore);
    const after = await api.http.get(`/v1/conversations/${id}/messages?after=9&limit=2`).set(...bearer(b));
    t.deepEqual(after.body.messages.map((m: { seq: number }) => m.seq), [10, 11]);
    t.true(after.body.hasMore);
    // Both: the oldest `limit` strictly between them, ascending; hasMore says whether more lie below `before`.
    const between = await api.http.get(`/v1/conversations/${id}/messages?after=3&before=8&limit=3`).set(...bearer(b));
    t.deepEqual(between.body.messages.map((m: { seq: number }) => m.seq), [4, 5, 6]);
    t.true(between.body.hasMore);
    const allBetween = await api.http.get(`/v1/conversations/${id}/messages?before=8&after=3`).set(...bearer(b));
    t.deepEqual(allBetween.body.messages.map((m: { seq: number }) => m.seq), [4, 5, 6, 7]);
    t.false(allBetween.body.hasMore);
    for (const q of ['limit=0', 'limit=201', 'limit=abc', 'before=0', 'after=-1', 'before=1.5', 'after=1e3', 'limit=5&limit=6', 'foo=1']) {
      const res = await api.http.get(`/v1/conversations/${id}/messages?${q}`).set(...bearer(b));
      t.is(res.status, 400, q);
      t.is(res.body.error.code, 'VALIDATION_FAILED', q);
    }

    // Edit: author only.
    const msgId = sent.body.message.id as string;
    const notAuthor = await api.http.patch(`/v1/conversations/${id}/messages/${msgId}`).set(...bearer(b)).send({ text: 'hacked' });
    t.is(notAuthor.status, 403);
    const edited = await api.http.patch(`/v1/conversations/${id}/messages/${msgId}`).set(...bearer(a)).send({ text: 'hello, edited' });
    t.is(edited.status, 200);
    t.is(edited.body.message.text, 'hello, edited');
    t.truthy(edited.body.message.editedAt);
    t.is((await api.http.patch(`/v1/conversations/${id}/messages/msg_nope`).set(...bearer(a)).send({ text: 'x' })).body.error.code, 'MESSAGE_NOT_FOUND');

    // Delete: tombstone, text gone, shown as deleted in history; editing it afterwards is refused.
    t.is((await api.http.delete(`/v1/conversations/${id}/messages/${msgId}`).set(...bearer(b))).status, 403);
    const del = await api.http.delete(`/v1/conversations/${id}/messages/${msgId}`).set(...bearer(a));
    t.is(del.status, 200);
    t.like(del.body.message, { id: msgId, text: '', deleted: true });
    const hist = await api.http.get(`/v1/conversations/${id}/messages?before=2`).set(...bearer(b));
    t.like(hist.body.messages[0], { id: msgId, seq: 1, text: '', deleted: true });
    t.is((await api.http.patch(`/v1/conversations/${id}/messages/${msgId}`).set(...bearer(a)).send({ text: 'back' })).body.error.code, 'MESSAGE_DELETED');
    t.is((await api.http.delete(`/v1/conversations/${id}/messages/${msgId}`).set(...bearer(a))).status, 200, 'deleting twice is a no-op');

    // Read markers and unread counts in the list, with the last message.
    const listB = await api.http.get('/v1/conversations').set(...bearer(b));
    const convB = listB.body.conversations.find((c: { id: string }) => c.id === id);
    t.is(convB.lastMessage.seq, 12);
    t.is(convB.readSeq, 0);
    const unreadBefore = convB.unreadCount as number;
    t.true(unreadBefore > 0);
    const read = await api.http.post(`/v1/conversations/${id}/read`).set(...bearer(b)).send({ seq: 10 });
    t.is(read.status, 200);
    t.is(read.body.seq, 10);
    const back = await api.http.post(`/v1/conversations/${id}/read`).set(...bearer(b)).send({ seq: 3 });
    t.is(back.body.seq, 10, 'never moves back');
    const capped = await api.http.post(`/v1/conversations/${id}/read`).set(...bearer(b)).send({ seq: 999 });
    t.is(capped.body.seq, 12, 'capped at the last message');
    const listAfter = await api.http.get('/v1/conversations').set(...bearer(b));
    const c2 = listAfter.body.conversations.find((c: { id: string }) => c.id === id);
    t.is(c2.unreadCount, 0);
    t.is(c2.readSeq, 12);

    // Every committed change is on JetStream, once, with Nats-Msg-Id = event id.
    const events = await eventually(async () => {
      const evs = (await streamEvents(api.hub)).filter((e) => e.event.conversationId === id);
      const types = evs.map((e) => e.event.type);
      const created = types.filter((x) => x === 'message.created').length;
      return created === 12 && types.includes('message.updated') && types.includes('message.deleted') && types.includes('message.seen') && types.includes('conversation.created') ? evs : null;
    });
    for (const e of events) {
      t.is(e.msgId, e.event.id);
      t.is(e.subject, `${api.hub.bus.namespace}.chat.default.${id}.${e.event.type}`);
    }
    t.is(events.filter((e) => e.event.type === 'message.deleted').length, 1);
    const createdSeqs = events.filter((e) => e.event.type === 'message.created').map((e) => (e.event.data as { message: { seq: number } }).message.seq);
    t.deepEqual([...createdSeqs].sort((x, y) => x - y), Array.from({ length: 12 }, (_, i) => i + 1));
    const deletedEv = events.find((e) => e.event.type === 'message.deleted')!;
    t.is((deletedEv.event.data as { message: { text: string } }).message.text, '', 'the tombstone event carries no text');

    // The REST send counter moved.
    const metrics = await api.http.get('/metrics');
    t.regex(metrics.text, /voxa_chat_messages_sent_total\{transport="rest"\} [1-9]/);
  } finally {
    await api.close();
  }
});

test('sends are rate-limited per user: over the limit is 429 with Retry-After and nothing is stored', async (t) => {
  const api = await openApiHub(servers, { sendRateLimitPerMinute: 40 });
  try {
    const [a, b] = [await api.register('Fast'), await api.register('Peer')];
    const id = await direct(api, a, b);
    const sends = await Promise.all(
      Array.from({ length: 50 }, (_, i) => api.http.post(`/v1/conversations/${id}/messages`).set(...bearer(a)).send({ text: `m${i}`, clientId: `c${i}` })),
    );
    const created = sends.filter((r) => r.status === 201);
    const limited = sends.filter((r) => r.status === 429);
    t.is(created.length, 40, 'one process: exactly the limit passes');
    t.is(limited.length, 10);
    for (const r of limited) {
      t.is(r.body.error.code, 'RATE_LIMITED');
      t.true(Number(r.headers['retry-after']) >= 1);
    }
    const history = await api.http.get(`/v1/conversations/${id}/messages?limit=100`).set(...bearer(a));
    t.is(history.body.messages.length, 40, 'refused sends stored nothing');
    t.deepEqual(
      history.body.messages.map((m: { seq: number }) => m.seq),
      Array.from({ length: 40 }, (_, i) => i + 1),
      'no seq was consumed by a refused send',
    );
    // Another user has an allowance of their own.
    const other = await api.http.post(`/v1/conversations/${id}/messages`).set(...bearer(b)).send({ text: 'still fine' });
    t.is(other.status, 201);
  } finally {
    await api.close();
  }
});

test('the conversation list pages with hasMore and nextCursor until every conversation was seen once, unread counts included', async (t) => {
  const api = await openApiHub(servers);
  try {
    const [a, b] = [await api.register('A'), await api.register('B')];
    // Created back to back, several share an updatedAt: the id breaks ties, so paging neither skips nor repeats.
    const ids: string[] = [];
    for (let i = 0; i < 13; i++) {
      const g = await api.http.post('/v1/conversations').set(...bearer(a)).send({ type: 'group', title: `g${i}`, members: [b.id] });
      ids.push(g.body.conversation.id as string);
    }
    // The oldest one gets a message from A: B has one unread there, and it moves to the top.
    await api.http.post(`/v1/conversations/${ids[0]!}/messages`).set(...bearer(a)).send({ text: 'hi' });

    const seen: Array<{ id: string; unreadCount: number }> = [];
    const pages: number[] = [];
    let cursor: string | null = null;
    do {
      const r = await api.http.get(`/v1/conversations?limit=5${cursor ? `&cursor=${cursor}` : ''}`).set(...bearer(b));
      t.is(r.status, 200, JSON.stringify(r.body));
      t.deepEqual(Object.keys(r.body).sort(), ['conversations', 'hasMore', 'nextCursor']);
      seen.push(...r.body.conversations);
      pages.push(r.body.conversations.length);
      t.is(r.body.hasMore, r.body.nextCursor !== null);
      cursor = r.body.nextCursor as string | null;
    } while (cursor);
    t.deepEqual(pages, [5, 5, 3]);
    t.deepEqual(seen.map((c) => c.id), [ids[0], ...ids.slice(1).reverse()], 'most recently active first, each once');
    t.is(seen[0]!.unreadCount, 1);

    const all = await api.http.get('/v1/conversations?limit=13').set(...bearer(b));
    t.is(all.body.conversations.length, 13);
    t.false(all.body.hasMore, 'a page that holds the rest says so');
    t.is(all.body.nextCursor, null);

    for (const bad of ['x', '!!', Buffer.from('[1,2]').toString('base64url'), Buffer.from('["not a time","c_1"]').toString('base64url'), 'a'.repeat(201)]) {
      const r = await api.http.get(`/v1/conversations?cursor=${bad}`).set(...bearer(b));
      t.is(r.status, 400, bad);
      t.deepEqual(r.body.error.details.fields, ['query.cursor'], bad);
    }
  } finally {
    await api.close();
  }
});
