import { request } from 'node:http';
import test from 'ava';
import { serversForFile } from '../helpers/hub.js';
import { bearer, openApiHub } from './support.js';

const servers = serversForFile();

test('routes that take no body (GET and HEAD too) accept none or {}, refuse a JSON field (400) and non-JSON bodies (415)', async (t) => {
  const api = await openApiHub(servers);
  try {
    const a = await api.register('A');
    const b = await api.register('B');
    const conv = await api.http.post('/v1/conversations').set(...bearer(a)).send({ type: 'direct', members: [b.id] });
    const msgs = `/v1/conversations/${conv.body.conversation.id as string}/messages`;
    const sent = await api.http.post(msgs).set(...bearer(a)).send({ text: 'hi' });
    const one = `${msgs}/${sent.body.message.id as string}`;

    for (const [method, path] of [['get', '/v1/me'], ['get', msgs], ['delete', one]] as const) {
      const name = `${method.toUpperCase()} ${path}`;
      const withField = await api.http[method](path).set(...bearer(a)).set('Content-Type', 'application/json').send('{"x":1}');
      t.is(withField.status, 400, `${name} with a field`);
      t.deepEqual(withField.body.error.details.fields, ['body.x'], name);
      const plain = await api.http[method](path).set(...bearer(a)).set('Content-Type', 'text/plain').send('{"x":1}');
      t.is(plain.status, 415, `${name} text/plain`);
      const empty = await api.http[method](path).set(...bearer(a)).set('Content-Type', 'application/json').send('{}');
      t.is(empty.status, 200, `${name} {}`);
      t.is((await api.http[method](path).set(...bearer(a))).status, 200, `${name} no body`);
    }

    // HEAD is answered by the GET route; superagent drops HEAD bodies, so these go out by hand.
    const { port } = api.server.address() as { port: number };
    const head = (type: string | null, body: string) =>
      new Promise<number>((resolve, reject) => {
        const headers: Record<string, string> = { Authorization: `Bearer ${a.accessToken}`, 'Content-Length': String(Buffer.byteLength(body)) };
        if (type) headers['Content-Type'] = type;
        const req = request({ host: '127.0.0.1', port, method: 'HEAD', path: '/v1/me', headers }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        });
        req.on('error', reject);
        req.end(body);
      });
    t.is(await head('application/json', '{"x":1}'), 400, 'HEAD with a field');
    t.is(await head('text/plain', '{"x":1}'), 415, 'HEAD text/plain');
    t.is(await head('application/json', '{}'), 200, 'HEAD {}');
    t.is(await head(null, ''), 200, 'HEAD no body');
  } finally {
    await api.close();
  }
});

test('routes that take no query parameters refuse any (400 naming them), never ignore them; an empty query string is fine', async (t) => {
  const api = await openApiHub(servers);
  try {
    const a = await api.register('A');
    const b = await api.register('B');
    const conv = await api.http.post('/v1/conversations').set(...bearer(a)).send({ type: 'direct', members: [b.id] });
    const id = conv.body.conversation.id as string;
    const msgs = `/v1/conversations/${id}/messages`;

    const refused = async (res: { status: number; body: { error: { code: string; details: { fields: string[] } } } }, fields: string[], name: string) => {
      t.is(res.status, 400, name);
      t.is(res.body.error.code, 'VALIDATION_FAILED', name);
      t.deepEqual(res.body.error.details.fields, fields, name);
    };
    await refused(await api.http.get('/v1/me?x=1').set(...bearer(a)), ['query.x'], 'GET /v1/me?x=1');
    await refused(await api.http.get('/v1/me?x').set(...bearer(a)), ['query.x'], 'a name without a value');
    await refused(await api.http.get(`/v1/conversations/${id}?foo=1`).set(...bearer(a)), ['query.foo'], 'GET conversation');
    await refused(await api.http.post(`${msgs}?foo=1&admin=true`).set(...bearer(a)).send({ text: 'hi' }), ['query.foo', 'query.admin'], 'POST message');
    t.is((await api.http.get(msgs).set(...bearer(a))).body.messages.length, 0, 'the refused send stored nothing');
    await refused(await api.http.get('/v1/openapi.json?v=2'), ['query.v'], 'a public route');

    const email = 'mallory@example.test';
    const register = (query: string) => api.http.post(`/v1/auth/register${query}`).send({ email, password: 'correct horse battery', name: 'Mallory' });
    await refused(await register('?role=admin'), ['query.role'], 'POST /v1/auth/register?role=admin');
    const plain = await register('');
    t.is(plain.status, 201, 'the refused registration created no account');
    t.is(plain.body.user.role, 'customer');

    // Nothing after the `?` is no parameter at all.
    t.is((await api.http.get('/v1/me?').set(...bearer(a))).status, 200);
    t.is((await api.http.get(`${msgs}?limit=5`).set(...bearer(a))).status, 200, 'declared parameters still pass');
    await refused(await api.http.get(`${msgs}?foo=1`).set(...bearer(a)), ['query.foo'], 'an undeclared one next to declared ones');
  } finally {
    await api.close();
  }
});
