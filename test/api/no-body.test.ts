import { request } from 'node:http';
import test from 'ava';
import { startServers } from '../helpers/hub.js';
import { bearer, openApiHub } from './support.js';

let servers: Awaited<ReturnType<typeof startServers>>;
test.before(async () => {
  servers = await startServers();
});
test.after.always(async () => {
  await servers?.dispose();
});

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
