import test from 'ava';
import { createServer } from 'node:http';
import request from 'supertest';
import { z } from 'zod';
import { buildApp } from '../../core/http/app.js';
import { serversForFile } from '../helpers/hub.js';
import { bearer, openApiHub } from './support.js';

const servers = serversForFile();

test('plugin routes are declared under /v1 behind authentication, checked like core routes and listed in the OpenAPI document', async (t) => {
  const api = await openApiHub(servers);
  let echoed = 0;
  const app = buildApp(api.hub, {
    pluginRoutes: [
      {
        name: 'demo',
        routes: (router) => {
          router
            .add({
              method: 'post',
              path: '/demo/echo',
              summary: 'Echoes n.',
              body: z.strictObject({ n: z.number().int() }),
              responses: { 200: { description: 'n and the caller.', schema: z.object({ n: z.number(), user: z.string() }) } },
              handler(ctx, { body }) {
                echoed++;
                ctx.body = { n: body.n, user: ctx.state.user!.id };
              },
            })
            .add({
              method: 'get',
              path: '/demo/admin',
              summary: 'Admins only.',
              roles: ['admin'],
              responses: { 200: { description: 'ok' } },
              handler(ctx) {
                ctx.body = { ok: true };
              },
            });
        },
        publicRoutes: (router) => {
          router.add({
            method: 'get',
            path: '/demo/public',
            summary: 'No token needed.',
            query: z.strictObject({ k: z.string().max(8).optional() }),
            responses: { 200: { description: 'open' } },
            handler(ctx) {
              ctx.body = { open: true };
            },
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
    t.deepEqual((await http.post('/v1/demo/echo?x=1').set(...bearer(a)).send({ n: 3 })).body.error.details.fields, ['query.x'], 'no query declared: none taken');
    t.is((await http.post('/v1/demo/echo').set(...bearer(a)).set('Content-Type', 'application/json').send('{"n":')).body.error.code, 'MALFORMED_JSON');
    t.is(echoed, 1, 'the handler ran only for the valid request');
    t.deepEqual((await http.get('/v1/demo/public').send({ a: 1 })).body.error.details.fields, ['body.a'], 'a body on a route that takes none');
    t.deepEqual((await http.get('/v1/demo/public?k=1&k=2')).body.error.details.fields, ['query.k'], 'a repeated parameter');
    t.is((await http.get('/v1/demo/admin').set(...bearer(a))).body.error.code, 'FORBIDDEN');
    await api.hub.store.updateUser(a.id, { role: 'admin' }, () => []);
    t.is((await http.get('/v1/demo/admin').set(...bearer(a))).status, 200, 'the role is read from the store on each request');
    t.is((await http.delete('/v1/demo/echo').set(...bearer(a))).status, 405);
    const doc = (await http.get('/v1/openapi.json')).body;
    const echo = doc.paths['/v1/demo/echo']?.post;
    t.deepEqual(echo?.security, [{ bearer: [] }]);
    t.deepEqual(echo?.tags, ['plugin:demo']);
    t.deepEqual(echo?.requestBody.content['application/json'].schema.required, ['n'], 'the body schema is in the document');
    t.false(echo?.requestBody.content['application/json'].schema.additionalProperties);
    t.truthy(doc.paths['/v1/demo/admin']?.get?.responses['403'], 'a role check answers 403');
    t.deepEqual((await http.get('/v1/demo/public')).body, { open: true }, 'public plugin routes need no token');
    const pub = doc.paths['/v1/demo/public']?.get;
    t.falsy(pub?.security, 'and the OpenAPI document asks for none');
    t.deepEqual(pub?.parameters.map((p: { name: string }) => p.name), ['k']);
    t.regex((await http.get('/metrics')).text, /voxa_http_requests_total\{route="\/v1\/demo\/echo",method="POST",status="200"\}/);
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
    await api.close();
  }
});

test('a plugin route path must be relative to /v1', async (t) => {
  const api = await openApiHub(servers);
  try {
    const route = (path: string) => ({ method: 'get' as const, path, summary: 'x', responses: { 200: { description: 'x' } }, handler() {} });
    for (const path of ['demo', '/v1/demo']) {
      t.throws(() => buildApp(api.hub, { pluginRoutes: [{ name: 'demo', routes: (router) => void router.add(route(path)) }] }), { message: /relative to \/v1/ }, path);
    }
  } finally {
    await api.close();
  }
});
