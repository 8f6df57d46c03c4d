import test from 'ava';
import { createAuditPlugin } from '../../plugins/audit/index.js';
import { verifyChain } from '../../plugins/audit/chain.js';
import { PluginRuntime } from '../../plugins/runtime/runtime.js';
import { serversForFile } from '../helpers/hub.js';
import { assertInvalid, bearer, eventually, openPluginApi } from '../notifications/support.js';

const servers = serversForFile();

test('through the runtime: sign-ups and sign-ins land in the chain; GET /v1/audit is for admins only', async (t) => {
  const plugin = createAuditPlugin();
  const api = await openPluginApi(servers, [plugin]);
  // The test helper already called start(); the runtime calls it again, which only re-reads the store.
  const runtime = new PluginRuntime(api.hub, [plugin], { fetchExpiresMs: 1000 });
  await runtime.start();
  try {
    const admin = await api.register('Root', 'admin');
    const user = await api.register('Eve');
    const failed = await api.http.post('/v1/auth/login').send({ email: user.email, password: 'wrong password!!' });
    t.is(failed.status, 401);

    const res = await eventually(async () => {
      const r = await api.http.get('/v1/audit').set(...bearer(admin));
      const types = (r.body.entries ?? []).map((e: { type: string }) => e.type);
      return types.includes('user.login_failed') && types.filter((x: string) => x === 'user.registered').length === 2 ? r : null;
    });
    t.is(res.status, 200);
    const failedEntry = res.body.entries.find((e: { type: string }) => e.type === 'user.login_failed');
    t.is(failedEntry.subject, user.id);
    t.false(JSON.stringify(res.body).includes('wrong password'));
    t.true((await verifyChain(api.hub.store.docs)).ok);

    const seqs = res.body.entries.map((e: { seq: number }) => e.seq);
    const paged = await api.http.get(`/v1/audit?limit=1&after=${seqs[0]}`).set(...bearer(admin));
    t.is(paged.body.entries[0].seq, seqs[1]);
    const future = await api.http.get('/v1/audit?since=2999-01-01').set(...bearer(admin));
    t.deepEqual(future.body.entries, []);

    t.is((await api.http.get('/v1/audit').set(...bearer(user))).status, 403);
    t.is((await api.http.get('/v1/audit')).status, 401);
    for (const q of ['since=yesterday', 'limit=0', 'limit=501', 'after=-1', 'x=1']) {
      const bad = await api.http.get(`/v1/audit?${q}`).set(...bearer(admin));
      t.is(bad.status, 400, q);
      t.is(bad.body.error.code, 'VALIDATION_FAILED', q);
    }
  } finally {
    await runtime.stop();
    await api.close();
  }
});

test('GET /v1/audit takes query numbers only in canonical form and in range, and no body', async (t) => {
  const api = await openPluginApi(servers, [createAuditPlugin()]);
  try {
    const admin = await api.register('Root', 'admin');
    // Read as 10, 5 and 1 by a coercing parser; each is a 400 naming the parameter.
    for (const q of ['limit=1e1', 'limit=0x5', 'limit=%201', 'limit=1%20', 'limit=05', 'limit=1.5', 'limit=-1', 'limit=1&limit=2', 'after=1e0', 'after=0x1', 'after=1&after=2']) {
      assertInvalid(t, await api.http.get(`/v1/audit?${q}`).set(...bearer(admin)), `query.${q.slice(0, q.indexOf('='))}`, q);
    }
    assertInvalid(t, await api.http.get('/v1/audit').set(...bearer(admin)).send({ a: 1 }), 'body.a', 'a body on GET');
    for (const q of ['limit=500', 'limit=1', 'after=0', 'after=7', 'since=2020-01-01']) {
      const r = await api.http.get(`/v1/audit?${q}`).set(...bearer(admin));
      t.is(r.status, 200, q);
      t.true(Array.isArray(r.body.entries), q);
    }
    t.is((await api.http.get('/v1/audit').set(...bearer(admin)).send({})).status, 200, 'an empty body is fine');
    // The OpenAPI document describes the route from the same declaration.
    const route = (await api.http.get('/v1/openapi.json')).body.paths['/v1/audit']?.get;
    t.deepEqual(route?.tags, ['plugin:audit']);
    t.deepEqual(route?.parameters.map((p: { name: string }) => p.name), ['since', 'limit', 'after']);
    t.like(route?.parameters[1].schema, { type: 'integer', minimum: 1, maximum: 500, default: 100 });
  } finally {
    await api.close();
  }
});
