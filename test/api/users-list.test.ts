import test from 'ava';
import { newId } from '../../core/ids.js';
import { serversForFile } from '../helpers/hub.js';
import { bearer, openApiHub } from './support.js';

const servers = serversForFile();

test('GET /v1/users: limit counts only listed users (invited and disabled accounts are left out before it)', async (t) => {
  const api = await openApiHub(servers);
  try {
    const me = await api.register('Zed');
    const ws = api.hub.config.defaultWorkspaceId;
    const base = { workspaceId: ws, role: 'customer' as const, createdAt: new Date().toISOString(), disabled: false };
    // First by name: an invited account (no password yet) and a disabled one.
    await api.hub.store.createUser({ ...base, id: newId('usr'), email: 'invited@example.test', name: 'Aaa invited', passwordHash: null }, () => []);
    await api.hub.store.createUser({ ...base, id: newId('usr'), email: 'off@example.test', name: 'Aab disabled', passwordHash: 'x', disabled: true }, () => []);
    const active = await api.register('Aac');

    const one = await api.http.get('/v1/users?limit=1').set(...bearer(me));
    t.is(one.status, 200);
    t.deepEqual(one.body.users.map((u: { id: string }) => u.id), [active.id]);
    const all = await api.http.get('/v1/users').set(...bearer(me));
    t.deepEqual(all.body.users.map((u: { id: string }) => u.id), [active.id, me.id]);
  } finally {
    await api.close();
  }
});

test('GET /v1/users: q with control characters is refused (a NUL used to match everyone)', async (t) => {
  const api = await openApiHub(servers);
  try {
    const me = await api.register('Yves');
    await api.register('Other');
    for (const q of ['%00', 'a%00', '%0A', '%7F', '%C2%85']) {
      const res = await api.http.get(`/v1/users?q=${q}`).set(...bearer(me));
      t.is(res.status, 400, q);
      t.is(res.body.error.code, 'VALIDATION_FAILED', q);
      t.deepEqual(res.body.error.details.fields, ['query.q'], q);
    }
    const literal = await api.http.get('/v1/users?q=%25').set(...bearer(me));
    t.is(literal.status, 200);
    t.deepEqual(literal.body.users, [], '% is literal text');
  } finally {
    await api.close();
  }
});

test('GET /v1/users: where customers talk only to agents, a customer lists only agents and admins; staff list everyone', async (t) => {
  const api = await openApiHub(servers);
  try {
    const [cust, other, agent, admin] = [await api.register('Cust'), await api.register('Other customer'), await api.register('Agent', { role: 'agent' }), await api.register('Admin', { role: 'admin' })];
    const ids = async (who: typeof cust) => ((await api.http.get('/v1/users').set(...bearer(who))).body.users as Array<{ id: string }>).map((u) => u.id).sort();
    t.deepEqual(await ids(cust), [cust.id, other.id, agent.id, admin.id].sort(), 'the default: everyone');
    await api.hub.store.updateWorkspaceSettings(api.hub.config.defaultWorkspaceId, { customersTalkToAgentsOnly: true }, () => []);
    t.deepEqual(await ids(cust), [agent.id, admin.id].sort(), "other customers' names and emails are not listed");
    t.deepEqual(await ids(agent), [cust.id, other.id, agent.id, admin.id].sort());
    t.deepEqual(await ids(admin), [cust.id, other.id, agent.id, admin.id].sort());
  } finally {
    await api.close();
  }
});
