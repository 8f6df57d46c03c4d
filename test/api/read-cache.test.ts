/**
 * The send path caches the caller and the conversation for a few seconds (core/auth/read-cache.ts). These
 * tests check that the cache never lets through what the store would refuse: changes made in the same
 * process take effect on the very next request, and changes made by another process (another hub on the same
 * store and NATS, as the CLI or a second API process would be) arrive through their events — with a TTL far
 * longer than the test waits, so only the invalidation can explain the outcome.
 */
import test from 'ava';
import { createServer, type Server } from 'node:http';
import request from 'supertest';
import { publicUser, type UserRecord } from '../../core/domain.js';
import { createEvent } from '../../core/events/catalog.js';
import { buildApp } from '../../core/http/app.js';
import { closeHub, openHub, type Hub } from '../../core/hub.js';
import { testConfig, serversForFile } from '../helpers/hub.js';
import { openApiHub, bearer, eventually, type Session } from './support.js';

const servers = serversForFile();

const send = (http: ReturnType<typeof request>, s: Session, convId: string, text: string) =>
  http.post(`/v1/conversations/${convId}/messages`).set(...bearer(s)).send({ text });

test('a member removed in this process cannot send on the very next request', async (t) => {
  const api = await openApiHub(servers);
  try {
    const [owner, bob, carol] = [await api.register('Owner'), await api.register('Bob'), await api.register('Carol')];
    const conv = await api.http.post('/v1/conversations').set(...bearer(owner)).send({ type: 'group', title: 'g', members: [bob.id, carol.id] });
    t.is(conv.status, 201);
    const id = conv.body.conversation.id as string;
    // Warm the caches with Bob's sends.
    t.is((await send(api.http, bob, id, 'one')).status, 201);
    t.is((await send(api.http, bob, id, 'two')).status, 201);
    t.true((api.hub.caches?.conversations.size ?? 0) > 0, 'the conversation is cached');
    const removed = await api.http.patch(`/v1/conversations/${id}`).set(...bearer(owner)).send({ removeMembers: [bob.id] });
    t.is(removed.status, 200);
    const after = await send(api.http, bob, id, 'three');
    t.is(after.status, 403);
    t.is(after.body.error.code, 'NOT_A_MEMBER');
    // Added back: let in at once too ("not a member" is never cached).
    t.is((await api.http.patch(`/v1/conversations/${id}`).set(...bearer(owner)).send({ addMembers: [bob.id] })).status, 200);
    t.is((await send(api.http, bob, id, 'four')).status, 201);
  } finally {
    await api.close();
  }
});

test('a role change and a disabled account take effect at once in this process', async (t) => {
  const api = await openApiHub(servers);
  try {
    const u = await api.register('Dana');
    t.is((await api.http.get('/v1/me').set(...bearer(u))).body.user.role, 'customer');
    t.is((await api.http.get('/v1/me').set(...bearer(u))).body.user.role, 'customer'); // now from the cache
    await api.hub.store.updateUser(u.id, { role: 'agent' }, () => []);
    t.is((await api.http.get('/v1/me').set(...bearer(u))).body.user.role, 'agent');
    await api.hub.store.updateUser(u.id, { disabled: true }, () => []);
    const locked = await api.http.get('/v1/me').set(...bearer(u));
    t.is(locked.status, 401);
    t.is(locked.body.error.code, 'UNAUTHENTICATED');
  } finally {
    await api.close();
  }
});

test('changes made by another process reach this one through their events', async (t) => {
  const config = testConfig(servers);
  // This process: caches that would hold for a minute on their own.
  const hub1: Hub = await openHub(config, { name: 'one', readCacheTtlMs: 60_000 });
  // The other process: same store file, same NATS namespace.
  const hub2: Hub = await openHub(config, { name: 'two' });
  let server: Server | undefined;
  try {
    server = createServer(buildApp(hub1).callback());
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const http = request(server);
    const reg = async (name: string): Promise<Session> => {
      const email = `${name.toLowerCase()}@x.test`;
      const res = await http.post('/v1/auth/register').send({ email, password: 'correct horse battery', name });
      t.is(res.status, 201);
      return { id: res.body.user.id, email, accessToken: res.body.accessToken, refreshToken: res.body.refreshToken };
    };
    const owner = await reg('Owner');
    const bob = await reg('Bob');
    const conv = await http.post('/v1/conversations').set(...bearer(owner)).send({ type: 'group', title: 'g', members: [bob.id] });
    const id = conv.body.conversation.id as string;
    t.is((await send(http, bob, id, 'hello')).status, 201);

    // hub2 removes Bob (and publishes conversation.updated, as every membership change does).
    const ownerRec = (await hub2.store.getUser(owner.id))!;
    await hub2.chat.updateGroup(ownerRec, id, { remove: [bob.id] });
    const refused = await eventually(async () => {
      const r = await send(http, bob, id, 'still here?');
      return r.status === 403 ? r : null;
    }, 10_000);
    t.is(refused.body.error.code, 'NOT_A_MEMBER');

    // hub2 changes Bob's role the way `voxa users role` does: the write and its event in one unit.
    t.is((await http.get('/v1/me').set(...bearer(bob))).body.user.role, 'customer');
    const events = hub2.chat.eventsFor((u: UserRecord) => [
      createEvent('user.role_changed', {
        workspaceId: u.workspaceId,
        userId: u.id,
        actor: { type: 'system', id: 'test' },
        data: { user: publicUser(u), from: 'customer', to: 'agent' },
      }),
    ]);
    await hub2.store.updateUser(bob.id, { role: 'agent' }, events);
    await hub2.chat.publish(events.entries);
    const me = await eventually(async () => {
      const r = await http.get('/v1/me').set(...bearer(bob));
      return r.body.user?.role === 'agent' ? r : null;
    }, 10_000);
    t.is(me.status, 200);
  } finally {
    if (server) await new Promise<void>((r) => server!.close(() => r()));
    await closeHub(hub2);
    await closeHub(hub1);
  }
});
