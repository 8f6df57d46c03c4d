import { Writable } from 'node:stream';
import test from 'ava';
import { pino } from 'pino';
import { z } from 'zod';
import { serversForFile } from '../helpers/hub.js';
import { bearer, openApiHub } from './support.js';

const servers = serversForFile();

test('every answer carries an X-Request-Id; ours are unique, a well-formed one from the caller is kept', async (t) => {
  const api = await openApiHub(servers);
  try {
    const a = await api.register('Rae');
    const answers = [
      await api.http.get('/v1/me').set(...bearer(a)),
      await api.http.get('/v1/me').set(...bearer(a)),
      await api.http.get('/v1/no-such-route'),
      await api.http.post('/v1/conversations').set(...bearer(a)).send({ type: { $ne: null } }),
      await api.http.get('/v1/me'),
    ];
    t.deepEqual(
      answers.map((r) => r.status),
      [200, 200, 404, 400, 401],
    );
    const ids = answers.map((r) => r.headers['x-request-id'] as string | undefined);
    for (const id of ids) t.regex(id ?? '', /^req_[A-Za-z0-9_-]+$/);
    t.is(new Set(ids).size, ids.length, 'no two requests share an id');

    const kept = await api.http.get('/v1/me').set(...bearer(a)).set('X-Request-Id', 'lb-7f3a:91/2');
    t.is(kept.headers['x-request-id'], 'lb-7f3a:91/2');
    // Too long, or characters that could split a log line or a header: replaced, not echoed.
    for (const bad of ['x'.repeat(129), 'a b', 'a"b', 'ä']) {
      const r = await api.http.get('/v1/me').set(...bearer(a)).set('X-Request-Id', bad);
      t.is(r.status, 200);
      t.regex(r.headers['x-request-id'] as string, /^req_/, `replaced: ${JSON.stringify(bad).slice(0, 20)}`);
    }
  } finally {
    await api.close();
  }
});

test('an unexpected error is logged with the id the client was given', async (t) => {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  const api = await openApiHub(servers, {}, async (hub) => {
    (hub as { log: unknown }).log = pino({ level: 'error' }, sink);
    return {
      pluginRoutes: [
        {
          name: 'boom',
          routes: (router) => {
            router.add({
              method: 'get',
              path: '/boom',
              summary: 'fails',
              query: z.object({}).strict(),
              responses: { 200: { description: 'never' } },
              handler() {
                throw new Error('kaboom');
              },
            });
          },
        },
      ],
    };
  });
  try {
    const a = await api.register('Ike');
    const r = await api.http.get('/v1/boom').set(...bearer(a)).set('X-Request-Id', 'support-ticket-42');
    t.is(r.status, 500);
    t.is(r.body.error.code, 'INTERNAL');
    t.is(r.headers['x-request-id'], 'support-ticket-42');
    const logged = lines.find((l) => l.msg === 'unhandled error in request');
    t.truthy(logged);
    t.is(logged?.requestId, 'support-ticket-42');
  } finally {
    await api.close();
  }
});
