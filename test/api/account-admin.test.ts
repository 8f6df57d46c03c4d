/**
 * PATCH /v1/users/:id: an admin disables, enables and re-roles accounts of the workspace. A disabled account
 * is locked out at once (REST, login, refresh); enabling it again does not revive its old refresh tokens. Each
 * change commits its event (user.updated / user.role_changed), which other processes act on.
 */
import test from 'ava';
import { newId } from '../../core/ids.js';
import { serversForFile } from '../helpers/hub.js';
import { bearer, eventually, openApiHub, streamEvents } from './support.js';

const servers = serversForFile();

test('disable locks the account out everywhere at once; enable lets it sign in anew; each change is an event', async (t) => {
  const api = await openApiHub(servers);
  t.teardown(() => api.close());
  const admin = await api.register('Root', { role: 'admin' });
  const cara = await api.register('Cara');

  const off = await api.http.patch(`/v1/users/${cara.id}`).set(...bearer(admin)).send({ disabled: true });
  t.is(off.status, 200, JSON.stringify(off.body));
  t.like(off.body, { disabled: true, changed: true, user: { id: cara.id } });
  t.is((await api.http.get('/v1/me').set(...bearer(cara))).status, 401, 'her access token no longer works');
  const login = await api.http.post('/v1/auth/login').send({ email: cara.email, password: 'correct horse battery' });
  t.is(login.status, 403);
  t.is(login.body.error.code, 'ACCOUNT_DISABLED');
  t.is((await api.http.post('/v1/auth/refresh').send({ refreshToken: cara.refreshToken })).status, 401);
  const again = await api.http.patch(`/v1/users/${cara.id}`).set(...bearer(admin)).send({ disabled: true });
  t.like(again.body, { disabled: true, changed: false }, 'asking twice changes nothing');

  const on = await api.http.patch(`/v1/users/${cara.id}`).set(...bearer(admin)).send({ disabled: false, role: 'agent' });
  t.is(on.status, 200, JSON.stringify(on.body));
  t.like(on.body, { disabled: false, changed: true, user: { role: 'agent' } });
  t.is((await api.http.post('/v1/auth/refresh').send({ refreshToken: cara.refreshToken })).status, 401, 'the old session stays revoked');
  t.is((await api.http.get('/v1/me').set(...bearer(cara))).status, 401, 'and so does the access token she had before the disable');
  const fresh = await api.http.post('/v1/auth/login').send({ email: cara.email, password: 'correct horse battery' });
  t.is(fresh.status, 200);
  t.is((await api.http.get('/v1/me').set('Authorization', `Bearer ${fresh.body.accessToken as string}`)).status, 200, 'a token from after the change works');

  const events = await eventually(async () => {
    const all = (await streamEvents(api.hub)).filter((e) => e.event.userId === cara.id && e.event.type !== 'user.registered' && !e.event.type.startsWith('user.login'));
    return all.length >= 3 ? all : null;
  });
  t.deepEqual(
    events.map((e) => [e.event.type, (e.event.data as { changes?: string[]; to?: string }).changes ?? (e.event.data as { to?: string }).to]),
    [
      ['user.updated', ['disabled']],
      ['user.role_changed', 'agent'],
      ['user.updated', ['enabled']],
    ],
  );
  t.true(events.every((e) => e.event.actor.id === admin.id));
});

test('only admins, only their own workspace, never their own lock-out; bad bodies are 400 and change nothing', async (t) => {
  const api = await openApiHub(servers);
  t.teardown(() => api.close());
  const admin = await api.register('Boss', { role: 'admin' });
  const dan = await api.register('Dan');
  const eve = await api.register('Eve');

  const asCustomer = await api.http.patch(`/v1/users/${eve.id}`).set(...bearer(dan)).send({ disabled: true });
  t.is(asCustomer.status, 403);
  const elsewhere = newId('usr');
  await api.hub.store.createUser(
    { id: elsewhere, workspaceId: 'other-ws', email: 'x@other.test', name: 'X', role: 'customer', createdAt: new Date().toISOString(), passwordHash: 'x', disabled: false },
    () => [],
  );
  t.is((await api.http.patch(`/v1/users/${elsewhere}`).set(...bearer(admin)).send({ disabled: true })).body.error?.code, 'USER_NOT_FOUND');
  t.is((await api.http.patch(`/v1/users/usr_missing`).set(...bearer(admin)).send({ disabled: true })).status, 404);
  for (const body of [{ disabled: true }, { role: 'agent' }]) {
    const self = await api.http.patch(`/v1/users/${admin.id}`).set(...bearer(admin)).send(body);
    t.is(self.status, 409, JSON.stringify(body));
  }
  for (const body of [{}, { disabled: 'yes' }, { disabled: { $ne: null } }, { role: 'root' }, { disabled: true, extra: 1 }]) {
    const bad = await api.http.patch(`/v1/users/${eve.id}`).set(...bearer(admin)).send(body);
    t.is(bad.status, 400, JSON.stringify(body));
    t.is(bad.body.error.code, 'VALIDATION_FAILED');
  }
  t.is((await api.http.get('/v1/me').set(...bearer(eve))).status, 200, 'Eve was never disabled');
  t.is((await api.http.get('/v1/me').set(...bearer(admin))).body.user.role, 'admin');
});
