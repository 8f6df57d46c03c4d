import test from 'ava';
import { startServers, serversForFile } from '../helpers/hub.js';
import { bearer, eventually, openApiHub } from './support.js';

// Serial: the metrics registry is per process, and these tests flip the same dependency gauges.
const servers = serversForFile();

test.serial('healthz, metrics by route pattern, openapi lists every route', async (t) => {
  const api = await openApiHub(servers);
  try {
    t.deepEqual((await api.http.get('/healthz')).body, { status: 'ok' });
    const ready = await api.http.get('/readyz');
    t.is(ready.status, 200);
    t.deepEqual(ready.body.failing, []);
    t.true(ready.body.checks.store.ok && ready.body.checks.nats.ok && ready.body.checks.redis.ok);

    const a = await api.register('Mia');
    const b = await api.register('Max');
    const conv = await api.http.post('/v1/conversations').set(...bearer(a)).send({ type: 'direct', members: [b.id] });
    const id = conv.body.conversation.id as string;
    await api.http.get(`/v1/conversations/${id}/messages`).set(...bearer(a));

    const m = await api.http.get('/metrics');
    t.is(m.status, 200);
    t.regex(String(m.headers['content-type']), /text\/plain/);
    t.regex(m.text, /voxa_http_requests_total\{route="\/v1\/conversations\/:id\/messages",method="GET",status="200"\} 1/);
    t.regex(m.text, /voxa_http_request_duration_seconds_bucket\{le="[^"]+",route="\/v1\/auth\/register",method="POST"\}/);
    t.false(m.text.includes(id), 'raw URLs (ids) never become labels');
    // Probes and the scrape are not API traffic: a slow 503 from /readyz in an outage must not fire the API alerts.
    t.false(/voxa_http_request[^\n]*route="\/(healthz|readyz|metrics)"/.test(m.text), 'operational endpoints are not counted');
    t.regex(m.text, /voxa_dependency_up\{dependency="redis"\} 1/);
    t.regex(m.text, /voxa_process_/);

    const doc = (await api.http.get('/v1/openapi.json')).body;
    t.is(doc.openapi, '3.1.0');
    const expected: Array<[string, string]> = [
      ['/v1/auth/register', 'post'],
      ['/v1/auth/login', 'post'],
      ['/v1/auth/refresh', 'post'],
      ['/v1/auth/logout', 'post'],
      ['/v1/me', 'get'],
      ['/v1/users', 'get'],
      ['/v1/conversations', 'post'],
      ['/v1/conversations', 'get'],
      ['/v1/conversations/{id}', 'get'],
      ['/v1/conversations/{id}', 'patch'],
      ['/v1/conversations/{id}/messages', 'post'],
      ['/v1/conversations/{id}/messages', 'get'],
      ['/v1/conversations/{id}/messages/{messageId}', 'patch'],
      ['/v1/conversations/{id}/messages/{messageId}', 'delete'],
      ['/v1/conversations/{id}/read', 'post'],
      ['/healthz', 'get'],
      ['/readyz', 'get'],
      ['/metrics', 'get'],
      ['/v1/openapi.json', 'get'],
    ];
    for (const [path, method] of expected) t.truthy(doc.paths[path]?.[method], `${method} ${path}`);
    const send = doc.paths['/v1/conversations/{id}/messages'].post;
    t.deepEqual(send.requestBody.content['application/json'].schema.required, ['text']);
    t.false(send.requestBody.content['application/json'].schema.additionalProperties);
    t.truthy(send.responses['201'].content['application/json'].schema.properties.message);
    t.is(send.responses['400'].content['application/json'].schema.$ref, '#/components/schemas/Error');
    t.truthy(doc.components.schemas.Error.properties.error);
    const history = doc.paths['/v1/conversations/{id}/messages'].get;
    t.deepEqual(history.parameters.map((p: { name: string }) => p.name).sort(), ['after', 'before', 'id', 'limit']);
  } finally {
    await api.close();
  }
});

test.serial('openapi.json says what the server enforces: optional bodies, the configured text limit, integer query params, the multipart upload', async (t) => {
  const api = await openApiHub(servers, { maxMessageLength: 500 });
  try {
    const doc = (await api.http.get('/v1/openapi.json')).body;
    const a = await api.register('Ada');
    const b = await api.register('Bob');

    // Logout takes an optional body (204 without one); register needs its body.
    t.false(doc.paths['/v1/auth/logout'].post.requestBody.required);
    t.true(doc.paths['/v1/auth/register'].post.requestBody.required);
    t.is((await api.http.post('/v1/auth/logout').set(...bearer(a))).status, 204);

    // Message text: the limit of this server's config, on sends and edits alike.
    const textOf = (op: { requestBody: { content: Record<string, { schema: { properties: { text: { maxLength?: number } } } }> } }) =>
      op.requestBody.content['application/json']!.schema.properties.text;
    t.is(textOf(doc.paths['/v1/conversations/{id}/messages'].post).maxLength, 500);
    t.is(textOf(doc.paths['/v1/conversations/{id}/messages/{messageId}'].patch).maxLength, 500);
    const conv = await api.http.post('/v1/conversations').set(...bearer(b)).send({ type: 'direct', members: [a.id] });
    const msgs = `/v1/conversations/${conv.body.conversation.id as string}/messages`;
    t.is((await api.http.post(msgs).set(...bearer(b)).send({ text: 'x'.repeat(500) })).status, 201);
    t.is((await api.http.post(msgs).set(...bearer(b)).send({ text: 'x'.repeat(501) })).status, 400);
    // Characters are code points, as maxLength counts them: 500 emoji (1000 UTF-16 units) fit, 501 do not.
    t.is((await api.http.post(msgs).set(...bearer(b)).send({ text: '😀'.repeat(500) })).status, 201);
    const over = await api.http.post(msgs).set(...bearer(b)).send({ text: `${'😀'.repeat(500)}x` });
    t.is(over.status, 400);
    t.is(over.body.error.message, 'body.text: Text is longer than 500 characters.');

    // Bodies of optional fields that need at least one say so (minProperties); the server refuses {}.
    const bodyOf = (path: string, method: string) => doc.paths[path][method].requestBody.content['application/json'].schema;
    t.is(bodyOf('/v1/users/{id}', 'patch').minProperties, 1);
    t.is(bodyOf('/v1/conversations/{id}', 'patch').minProperties, 1);

    // Integer query parameters are integers with their range and default, not only a pattern.
    const param = (path: string, name: string) =>
      (doc.paths[path].get.parameters as Array<{ name: string; in: string; required: boolean; schema: Record<string, unknown> }>).find((p) => p.name === name && p.in === 'query');
    for (const path of ['/v1/conversations/{id}/messages', '/v1/conversations', '/v1/users', '/v1/search']) {
      const limit = param(path, 'limit');
      t.like(limit, { required: false, schema: { type: 'integer', minimum: 1, maximum: 200, default: 50 } }, path);
    }
    for (const name of ['before', 'after']) {
      const p = param('/v1/conversations/{id}/messages', name);
      t.like(p, { required: false, schema: { type: 'integer', minimum: 1 } }, name);
      t.is(p?.schema.default, undefined, `${name} has no default`);
    }

    // The upload: multipart/form-data with one part named file.
    const upload = doc.paths['/v1/conversations/{id}/files'].post.requestBody;
    t.true(upload?.required);
    t.deepEqual(Object.keys(upload?.content ?? {}), ['multipart/form-data']);
    const form = upload.content['multipart/form-data'].schema;
    t.deepEqual(Object.keys(form.properties), ['file']);
    t.deepEqual(form.required, ['file']);
    t.is(form.properties.file.type, 'string');
  } finally {
    await api.close();
  }
});

test.serial('readyz answers 503 naming redis when Redis is down, and recovers', async (t) => {
  const own = await startServers(); // this test stops Redis, so it gets its own servers
  const api = await openApiHub(own);
  try {
    await own.redis.stop();
    const down = await eventually(async () => {
      const r = await api.http.get('/readyz');
      return r.status === 503 ? r : null;
    });
    t.deepEqual(down.body.failing, ['redis']);
    t.is(down.body.status, 'unavailable');
    t.false(down.body.checks.redis.ok);
    t.true(down.body.checks.nats.ok);
    t.regex((await api.http.get('/metrics')).text, /voxa_dependency_up\{dependency="redis"\} 0/);
    // What a load balancer asks (docs/scale-out.md): every hub shares this Redis and serves chat without it.
    const lb = await api.http.get('/readyz?exclude=redis');
    t.is(lb.status, 200);
    t.is(lb.body.status, 'ok');
    t.deepEqual(lb.body.failing, []);
    t.deepEqual(lb.body.excluded, ['redis']);
    t.false(lb.body.checks.redis.ok, 'still checked and shown');
    t.is((await api.http.get('/readyz?exclude=nats')).status, 503, 'excluding another dependency does not hide this one');
    t.is((await api.http.get('/readyz?exclude=nats,redis,store')).status, 200);
    for (const bad of ['mongo', 'redis,', 'REDIS', '']) {
      const r = await api.http.get(`/readyz?exclude=${bad}`);
      t.is(r.status, 400, bad);
      t.deepEqual(r.body.error.details.fields, ['query.exclude'], bad);
    }
    await own.redis.start();
    await eventually(async () => (await api.http.get('/readyz')).status === 200);
    t.pass();
  } finally {
    await api.close();
    await own.dispose();
  }
});

test.serial('a Redis that stops answering: register, login and sends still answer (rate limits count in this process), readyz names redis', async (t) => {
  const own = await startServers(); // this test freezes Redis, so it gets its own servers
  const api = await openApiHub(own);
  t.teardown(() => own.redis.thaw());
  try {
    const ann = await api.register('Ann');
    const bob = await api.register('Bob');
    const conv = await api.http.post('/v1/conversations').set(...bearer(ann)).send({ type: 'direct', members: [bob.id] });
    t.is(conv.status, 201);
    // The connection stays up, so the client still looks ready; only the answers stop.
    own.redis.freeze();
    const sends = await Promise.all(
      [1, 2, 3].map((i) => api.http.post(`/v1/conversations/${conv.body.conversation.id}/messages`).set(...bearer(ann)).send({ text: `during the stall ${i}` }).timeout(30_000)),
    );
    t.deepEqual(sends.map((r) => r.status), [201, 201, 201]);
    const login = await api.http.post('/v1/auth/login').send({ email: bob.email, password: 'correct horse battery' }).timeout(30_000);
    t.is(login.status, 200);
    const carol = await api.http.post('/v1/auth/register').send({ email: 'carol-stall@example.test', password: 'correct horse battery', name: 'Carol' }).timeout(30_000);
    t.is(carol.status, 201);
    // The login limit (20 a minute per account) still holds while Redis is away: counted in this process.
    const guesses: number[] = [];
    for (let i = 0; i < 21; i++) {
      guesses.push((await api.http.post('/v1/auth/login').send({ email: bob.email, password: `wrong guess ${i}` }).timeout(30_000)).status);
    }
    t.deepEqual([...new Set(guesses.slice(0, 19))], [401], 'under the limit: wrong password');
    t.is(guesses[20], 429, 'past the limit: refused without Redis');
    const ready = await api.http.get('/readyz').timeout(30_000);
    t.is(ready.status, 503);
    t.deepEqual(ready.body.failing, ['redis']);
    own.redis.thaw();
    await eventually(async () => (await api.http.get('/readyz')).status === 200);
    const after = await api.http.post(`/v1/conversations/${conv.body.conversation.id}/messages`).set(...bearer(ann)).send({ text: 'after the stall' });
    t.is(after.status, 201);
    t.is(after.body.message.seq, 4);
  } finally {
    await api.close();
    await own.dispose();
  }
});

test.serial('readyz names nats when the NATS server is down', async (t) => {
  const own = await startServers();
  const api = await openApiHub(own);
  try {
    await own.nats.stop();
    const down = await eventually(async () => {
      const r = await api.http.get('/readyz');
      return r.status === 503 ? r : null;
    });
    t.true(down.body.failing.includes('nats'));
    t.false(down.body.failing.includes('store'));
    await own.nats.start();
    await eventually(async () => (await api.http.get('/readyz')).status === 200, 30_000);
    t.pass();
  } finally {
    await api.close();
    await own.dispose();
  }
});
