import test from 'ava';
import { serversForFile } from '../helpers/hub.js';
import { bearer, openApiHub } from '../api/support.js';

const servers = serversForFile();

test('GET /v1/search: only the caller\'s conversations, highlights, edits and deletes show at once, bad input is 4xx', async (t) => {
  const api = await openApiHub(servers);
  try {
    const [ana, bo, cy] = [await api.register('Ana'), await api.register('Bo'), await api.register('Cy')];
    const conv = (await api.http.post('/v1/conversations').set(...bearer(ana)).send({ type: 'direct', members: [bo.id] })).body.conversation;
    const other = (await api.http.post('/v1/conversations').set(...bearer(bo)).send({ type: 'direct', members: [cy.id] })).body.conversation;
    const send = async (who: typeof ana, convId: string, text: string) =>
      (await api.http.post(`/v1/conversations/${convId}/messages`).set(...bearer(who)).send({ text })).body.message;
    const m1 = await send(ana, conv.id, 'Lunch at the Café Müller tomorrow?');
    await send(bo, other.id, 'lunch plans stay between us');
    const search = (who: typeof ana, query: Record<string, string>) => api.http.get('/v1/search').query(query).set(...bearer(who));

    const res = await search(ana, { q: 'lunch' });
    t.is(res.status, 200);
    t.deepEqual(res.body.results.map((r: { message: { id: string } }) => r.message.id), [m1.id]);
    const hit = res.body.results[0];
    t.is(hit.snippet.slice(hit.highlights[0][0], hit.highlights[0][1]).toLowerCase(), 'lunch');
    // Diacritics fold: "cafe muller" finds "Café Müller".
    t.is((await search(ana, { q: 'cafe muller' })).body.results.length, 1);
    // Bo sees both conversations; Cy only the one with Bo.
    t.is((await search(bo, { q: 'lunch' })).body.results.length, 2);
    t.is((await search(cy, { q: 'lunch' })).body.results.length, 1);
    // Naming a conversation of someone else: the same answers as its history gives.
    const foreign = await search(cy, { q: 'lunch', conversationId: conv.id });
    t.is(foreign.status, 403);
    t.is(foreign.body.error.code, 'NOT_A_MEMBER');
    t.is((await search(ana, { q: 'lunch', conversationId: 'cnv_nope' })).body.error.code, 'CONVERSATION_NOT_FOUND');

    // Edit: old words vanish, new ones are found; delete: gone.
    t.is((await api.http.patch(`/v1/conversations/${conv.id}/messages/${m1.id}`).set(...bearer(ana)).send({ text: 'Dinner instead' })).status, 200);
    t.is((await search(bo, { q: 'cafe' })).body.results.length, 0);
    t.is((await search(bo, { q: 'dinner' })).body.results[0].message.id, m1.id);
    t.is((await api.http.delete(`/v1/conversations/${conv.id}/messages/${m1.id}`).set(...bearer(ana))).status, 200);
    t.is((await search(bo, { q: 'dinner' })).body.results.length, 0);

    // Bad input: 400 with a code, never a 500.
    for (const query of [{}, { q: '' }, { q: 'x', limit: '0' }, { q: 'x', limit: 'abc' }, { q: 'x', cursor: 'garbage' }, { q: 'x', extra: '1' }]) {
      const r = await search(ana, query as Record<string, string>);
      t.is(r.status, 400, JSON.stringify(query));
      t.is(r.body.error.code, 'VALIDATION_FAILED');
    }
    // Control characters are refused, as in GET /v1/users (the same rule for both searches).
    for (const raw of ['q=%01', 'q=lunch%00', 'q=a%0Ab', 'q=%7F']) {
      const r = await api.http.get(`/v1/search?${raw}`).set(...bearer(ana));
      t.is(r.status, 400, raw);
      t.is(r.body.error.code, 'VALIDATION_FAILED', raw);
      t.deepEqual(r.body.error.details.fields, ['query.q'], raw);
      t.is((await api.http.get(`/v1/users?${raw}`).set(...bearer(ana))).status, 400, `users ${raw}`);
    }
    // Operator-looking input is text.
    const weird = await search(ana, { q: 'lunch OR NOT "x" NEAR(a b) text:* -{$ne:1}' });
    t.is(weird.status, 200);
    t.is((await api.http.get('/v1/search?q=x')).status, 401);
  } finally {
    await api.close();
  }
});
