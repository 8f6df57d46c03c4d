import test from 'ava';
import { createServer } from 'node:http';
import request from 'supertest';
import { z } from 'zod';
import { buildApp } from '../../core/http/app.js';
import { requireRole, validate } from '../../core/http/validate.js';
import { startServers } from '../helpers/hub.js';
import { bearer, openApiHub } from './support.js';

let servers: Awaited<ReturnType<typeof startServers>>;
test.before(async () => {
  servers = await startServers();
});
test.after.always(async () => {
  await servers?.dispose();
});

test('plugin routes are mounted under /v1 behind authentication, with validate and requireRole', async (t) => {
  const api = await openApiHub(servers);
  const app = buildApp(api.hub, {
    pluginRoutes: [
      {
        name: 'demo',
        routes: (router) => {
          router.post('/demo/echo', (ctx) => {
            const body = validate(z.strictObject({ n: z.number().int() }), ctx.state.body, 'body');
            ctx.body = { n: body.n, user: (ctx.state.user as { id: string }).id };
          });
          router.get('/demo/admin', requireRole('admin'), (ctx) => {
            ctx.body = { ok: true };
          });
        },
        publicRoutes: (router) => {
          router.get('/demo/public', (ctx) => {
            ctx.body = { open: true };
          });
        },
      },
    ],
  });
  const server = createServer(app.callback());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const http = request(server);
  try {
    const a = await api.register('Plug');
    t.is((await http.post('/v1/demo/echo').send({ n: 1 })).status, 401);
    const ok = await http.post('/v1/demo/echo').set(...bearer(a)).send({ n: 2 });
    t.is(ok.status, 200);
    t.deepEqual(ok.body, { n: 2, user: a.id });
    const bad = await http.post('/v1/demo/echo').set(...bearer(a)).send({ n: 'x', extra: 1 });
    t.is(bad.status, 400);
    t.deepEqual(bad.body.error.details.fields.sort(), ['body.extra', 'body.n']);
    t.is((await http.post('/v1/demo/echo').set(...bearer(a)).set('Content-Type', 'application/json').send('{"n":')).body.error.code, 'MALFORMED_JSON');
    t.is((await http.get('/v1/demo/admin').set(...bearer(a))).body.error.code, 'FORBIDDEN');
    await api.hub.store.updateUser(a.id, { role: 'admin' }, () => []);
    t.is((await http.get('/v1/demo/admin').set(...bearer(a))).status, 200, 'the role is read from the store on each request');
    t.is((await http.delete('/v1/demo/echo').set(...bearer(a))).status, 405);
    const doc = (await http.get('/v1/openapi.json')).body;
    t.deepEqual(doc.paths['/v1/demo/echo']?.post?.security, [{ bearer: [] }]);
    t.deepEqual((await http.get('/v1/demo/public')).body, { open: true }, 'public plugin routes need no token');
    t.deepEqual(doc.paths['/v1/demo/public']?.get?.security, [], 'and the OpenAPI document says so');
    t.regex((await http.get('/metrics')).text, /voxa_http_requests_total\{route="\/v1\/demo\/echo",method="POST",status="200"\}/);
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
    await api.close();
  }
});
