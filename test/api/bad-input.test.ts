import test from 'ava';
import { serversForFile } from '../helpers/hub.js';
import { bearer, openApiHub, streamEvents } from './support.js';

const servers = serversForFile();

test('bad input gets a 4xx with a code, never a 500, and writes nothing', async (t) => {
  const api = await openApiHub(servers, { bodyLimitBytes: 4096 });
  try {
    const [a, b] = [await api.register('A'), await api.register('B')];
    const conv = await api.http.post('/v1/conversations').set(...bearer(a)).send({ type: 'direct', members: [b.id] });
    const id = conv.body.conversation.id as string;
    await api.http.post(`/v1/conversations/${id}/messages`).set(...bearer(a)).send({ text: 'baseline' });

    // Let the outbox settle so the counts below measure only the bad requests.
    const settle = async () => {
      for (let i = 0; i < 200 && (await api.hub.store.outboxCount()) > 0; i++) await new Promise((r) => setTimeout(r, 50));
    };
    await settle();
    const snapshot = async () => ({
      outbox: await api.hub.store.outboxCount(),
      messages: (await api.hub.store.listMessages(id, { limit: 200 })).messages.length,
      convs: (await api.hub.store.listConversations(a.id)).length,
      stream: (await api.hub.bus.jsm.streams.info(api.hub.bus.streams.events)).state.messages,
      user: await api.hub.store.getUserByEmail('evil@example.test'),
    });
    const before = await snapshot();

    const msgs = `/v1/conversations/${id}/messages`;
    const deep = '['.repeat(40) + ']'.repeat(40);
    const veryDeep = '['.repeat(2000) + ']'.repeat(2000); // refused by the linear depth scan, never parsed
    const cases: Array<{ name: string; method: 'post' | 'patch' | 'get'; path: string; body?: string | object; type?: string; auth?: boolean; status: number; code: string; field?: string }> = [
      { name: 'wrong type', method: 'post', path: msgs, body: { text: 42 }, status: 400, code: 'VALIDATION_FAILED', field: 'body.text' },
      { name: 'unknown field', method: 'post', path: msgs, body: { text: 'x', admin: true }, status: 400, code: 'VALIDATION_FAILED', field: 'body.admin' },
      { name: 'operator object', method: 'post', path: msgs, body: { text: { $ne: null } }, status: 400, code: 'VALIDATION_FAILED', field: 'body.text' },
      { name: 'operator in login', method: 'post', path: '/v1/auth/login', body: { email: { $ne: null }, password: { $gt: '' } }, auth: false, status: 400, code: 'VALIDATION_FAILED', field: 'body.email' },
      { name: 'operator in members', method: 'post', path: '/v1/conversations', body: { type: 'direct', members: [{ $ne: null }] }, status: 400, code: 'VALIDATION_FAILED' },
      { name: 'array body', method: 'post', path: msgs, body: '[]', status: 400, code: 'VALIDATION_FAILED' },
      { name: 'null body', method: 'post', path: msgs, body: 'null', status: 400, code: 'VALIDATION_FAILED' },
      { name: 'empty text', method: 'post', path: msgs, body: { text: '   ' }, status: 400, code: 'VALIDATION_FAILED' },
      { name: 'missing body', method: 'post', path: msgs, status: 400, code: 'VALIDATION_FAILED' },
      { name: 'malformed JSON', method: 'post', path: msgs, body: '{"text": "x",', status: 400, code: 'MALFORMED_JSON' },
      { name: 'deep nesting', method: 'post', path: msgs, body: `{"text":${deep}}`, status: 400, code: 'JSON_TOO_DEEP' },
      { name: 'prototype key', method: 'post', path: msgs, body: '{"text":"x","__proto__":{"admin":true}}', status: 400, code: 'VALIDATION_FAILED', field: 'body.__proto__' },
      { name: 'constructor key', method: 'post', path: '/v1/auth/register', body: '{"email":"evil@example.test","password":"long enough pw","name":"E","constructor":{"prototype":{}}}', auth: false, status: 400, code: 'VALIDATION_FAILED', field: 'body.constructor' },
      // The same keys written with a \u escape are the same keys once parsed.
      { name: 'escaped prototype key', method: 'post', path: `/v1/conversations/${id}/read`, body: '{"seq":{"__proto\\u005f_":{"a":1}}}', status: 400, code: 'VALIDATION_FAILED', field: 'body.seq.__proto__' },
      { name: 'escaped constructor key', method: 'post', path: msgs, body: '{"text":"x","constructo\\u0072":1}', status: 400, code: 'VALIDATION_FAILED', field: 'body.constructor' },
      { name: 'too large', method: 'post', path: msgs, body: { text: 'x'.repeat(5000) }, status: 413, code: 'PAYLOAD_TOO_LARGE' },
      { name: 'wrong content type', method: 'post', path: msgs, body: 'text=hi', type: 'application/x-www-form-urlencoded', status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
      { name: 'text/plain JSON', method: 'post', path: msgs, body: '{"text":"hi"}', type: 'text/plain', status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
      { name: 'bad path id', method: 'post', path: '/v1/conversations/a.b$c/messages', body: { text: 'x' }, status: 400, code: 'VALIDATION_FAILED', field: 'params.id' },
      { name: 'bad percent-encoding', method: 'get', path: '/v1/conversations/%E0%A4%A/messages', status: 400, code: 'VALIDATION_FAILED' },
      { name: 'read seq string', method: 'post', path: `/v1/conversations/${id}/read`, body: { seq: '5' }, status: 400, code: 'VALIDATION_FAILED', field: 'body.seq' },
      { name: 'read seq negative', method: 'post', path: `/v1/conversations/${id}/read`, body: { seq: -1 }, status: 400, code: 'VALIDATION_FAILED' },
      { name: 'group without title', method: 'post', path: '/v1/conversations', body: { type: 'group', members: [b.id] }, status: 400, code: 'VALIDATION_FAILED' },
      { name: 'unknown type', method: 'post', path: '/v1/conversations', body: { type: 'channel', members: [b.id] }, status: 400, code: 'VALIDATION_FAILED' },
      { name: 'bad email', method: 'post', path: '/v1/auth/register', body: { email: 'evil', password: 'long enough pw', name: 'E' }, auth: false, status: 400, code: 'VALIDATION_FAILED', field: 'body.email' },
      { name: 'short password', method: 'post', path: '/v1/auth/register', body: { email: 'evil@example.test', password: 'short', name: 'E' }, auth: false, status: 400, code: 'VALIDATION_FAILED', field: 'body.password' },
      { name: 'no token', method: 'post', path: msgs, body: { text: 'x' }, auth: false, status: 401, code: 'UNAUTHENTICATED' },
      { name: 'unknown route', method: 'get', path: '/v1/nothing-here', status: 404, code: 'NOT_FOUND' },
      { name: 'wrong method', method: 'patch', path: '/v1/me', body: {}, status: 405, code: 'METHOD_NOT_ALLOWED' },
    ];
    for (const c of cases) {
      let req = api.http[c.method](c.path);
      if (c.auth !== false) req = req.set(...bearer(a));
      if (c.body !== undefined) {
        req = req.set('Content-Type', c.type ?? 'application/json');
        req = req.send(typeof c.body === 'string' ? c.body : JSON.stringify(c.body));
      }
      const res = await req;
      t.is(res.status, c.status, c.name);
      t.is(res.body?.error?.code, c.code, c.name);
      t.is(typeof res.body?.error?.message, 'string', c.name);
      t.false(JSON.stringify(res.body).includes('    at '), `${c.name}: no stack trace`);
      if (c.field) t.true((res.body.error.details?.fields as string[]).includes(c.field), `${c.name}: names ${c.field}, got ${JSON.stringify(res.body.error.details)}`);
    }
    const huge = await api.http.post('/v1/auth/login').set('Content-Type', 'application/json').send(veryDeep);
    t.is(huge.status, 400);
    t.is(huge.body.error.code, 'JSON_TOO_DEEP');

    const wrongMethod = await api.http.patch('/v1/me').set(...bearer(a)).send({});
    t.is(wrongMethod.headers.allow, 'GET, HEAD');

    t.deepEqual(await snapshot(), before);
    // And the prototype of plain objects was not touched.
    t.is(({} as Record<string, unknown>).admin, undefined);
    const events = await streamEvents(api.hub);
    t.false(events.some((e) => e.event.type === 'user.registered' && (e.event.data as { user: { email: string } }).user.email === 'evil@example.test'));
  } finally {
    await api.close();
  }
});

test('raw bodies: 413 from Content-Length before reading and while reading a chunked body; invalid UTF-8 is 400', async (t) => {
  const api = await openApiHub(servers, { bodyLimitBytes: 2048 });
  try {
    const { request: httpRequest } = await import('node:http');
    const { port } = api.server.address() as { port: number };
    const send = (headers: Record<string, string>, chunks: Array<string | number[]>) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/v1/auth/login', headers: { 'content-type': 'application/json', ...headers } }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode!, body }));
        });
        req.on('error', reject);
        for (const c of chunks) req.write(typeof c === 'string' ? c : Buffer.from(c));
        req.end();
      });
    // Claims 10 MB but sends little: refused on the header alone.
    const declared = await send({ 'content-length': String(10 * 1024 * 1024) }, []).catch(() => null);
    if (declared) {
      t.is(declared.status, 413);
      t.is(JSON.parse(declared.body).error.code, 'PAYLOAD_TOO_LARGE');
    } else t.pass('connection closed early after the 413');
    const chunked = await send({}, Array.from({ length: 10 }, () => 'x'.repeat(1000)));
    t.is(chunked.status, 413);
    t.is(JSON.parse(chunked.body).error.code, 'PAYLOAD_TOO_LARGE');
    // {"email":"\xff"} is not UTF-8: refused as malformed, not decoded with replacement characters.
    const latin = await send({}, [[0x7b, 0x22, 0x65, 0x6d, 0x61, 0x69, 0x6c, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]]);
    t.is(latin.status, 400);
    t.is(JSON.parse(latin.body).error.code, 'MALFORMED_JSON');
  } finally {
    await api.close();
  }
});

test('a route that takes no body refuses JSON fields sent to it, accepts none or {}', async (t) => {
  const api = await openApiHub(servers);
  try {
    const [a, b] = [await api.register('A'), await api.register('B')];
    const conv = await api.http.post('/v1/conversations').set(...bearer(a)).send({ type: 'direct', members: [b.id] });
    const id = conv.body.conversation.id as string;
    const sent = await api.http.post(`/v1/conversations/${id}/messages`).set(...bearer(a)).send({ text: 'keep me' });
    const msg = `/v1/conversations/${id}/messages/${sent.body.message.id as string}`;

    const extra = await api.http.delete(msg).set(...bearer(a)).send({ hard: true });
    t.is(extra.status, 400);
    t.is(extra.body.error.code, 'VALIDATION_FAILED');
    t.deepEqual(extra.body.error.details.fields, ['body.hard']);
    const injected = await api.http.delete(msg).set(...bearer(a)).send({ $ne: null });
    t.is(injected.status, 400);
    t.is((await api.hub.store.getMessage(id, sent.body.message.id))?.text, 'keep me', 'nothing was deleted');

    const empty = await api.http.delete(msg).set(...bearer(a)).send({});
    t.is(empty.status, 200);
    t.true(empty.body.message.deleted);
  } finally {
    await api.close();
  }
});
