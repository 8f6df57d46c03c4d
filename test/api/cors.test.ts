import test from 'ava';
import { serversForFile } from '../helpers/hub.js';
import { bearer, openApiHub } from './support.js';

const servers = serversForFile();
const APP = 'https://app.example.test';

test('a listed origin gets CORS headers on answers and errors, and its preflight is answered', async (t) => {
  const api = await openApiHub(servers, { corsOrigins: [APP] });
  try {
    const a = await api.register('Cora');
    const pre = await api.http
      .options('/v1/conversations')
      .set('Origin', APP)
      .set('Access-Control-Request-Method', 'POST')
      .set('Access-Control-Request-Headers', 'authorization, content-type');
    t.is(pre.status, 204);
    t.is(pre.headers['access-control-allow-origin'], APP);
    t.regex(pre.headers['access-control-allow-methods'] as string, /\bPOST\b/);
    t.regex(pre.headers['access-control-allow-headers'] as string, /Authorization/);
    t.regex(pre.headers['access-control-allow-headers'] as string, /Content-Type/);
    t.truthy(pre.headers['access-control-max-age']);
    t.regex(String(pre.headers.vary), /Origin/);
    t.is(pre.headers['access-control-allow-credentials'], undefined, 'bearer tokens only: no cookies cross-origin');

    const me = await api.http.get('/v1/me').set(...bearer(a)).set('Origin', APP);
    t.is(me.status, 200);
    t.is(me.headers['access-control-allow-origin'], APP);
    t.regex(me.headers['access-control-expose-headers'] as string, /X-Request-Id/);

    // A page must be able to read the error too, or it only sees "CORS failed".
    const bad = await api.http.post('/v1/conversations').set(...bearer(a)).set('Origin', APP).send({ type: 'nope' });
    t.is(bad.status, 400);
    t.is(bad.body.error.code, 'VALIDATION_FAILED');
    t.is(bad.headers['access-control-allow-origin'], APP);
    const unauth = await api.http.get('/v1/me').set('Origin', APP);
    t.is(unauth.status, 401);
    t.is(unauth.headers['access-control-allow-origin'], APP);
  } finally {
    await api.close();
  }
});

test('an unlisted origin gets no CORS headers and its preflight is a 403 in the error shape', async (t) => {
  const api = await openApiHub(servers, { corsOrigins: [APP] });
  try {
    const a = await api.register('Otto');
    const pre = await api.http.options('/v1/me').set('Origin', 'https://evil.example.test').set('Access-Control-Request-Method', 'GET');
    t.is(pre.status, 403);
    t.is(pre.body.error.code, 'FORBIDDEN');
    t.is(pre.headers['access-control-allow-origin'], undefined);

    const r = await api.http.get('/v1/me').set(...bearer(a)).set('Origin', 'https://evil.example.test');
    t.is(r.status, 200, 'the request itself is the token holder’s; the browser just may not hand the answer to that page');
    t.is(r.headers['access-control-allow-origin'], undefined);

    // No Origin (curl, servers): untouched. A plain OPTIONS still lists the methods.
    const plain = await api.http.get('/v1/me').set(...bearer(a));
    t.is(plain.headers['access-control-allow-origin'], undefined);
    const opts = await api.http.options('/v1/me');
    t.is(opts.status, 204);
    t.regex(opts.headers.allow as string, /GET/);
  } finally {
    await api.close();
  }
});

test('"*" admits any origin, still without credentials', async (t) => {
  const api = await openApiHub(servers, { corsOrigins: ['*'] });
  try {
    const pre = await api.http.options('/v1/auth/login').set('Origin', 'https://anywhere.example.test').set('Access-Control-Request-Method', 'POST');
    t.is(pre.status, 204);
    t.is(pre.headers['access-control-allow-origin'], 'https://anywhere.example.test');
    t.is(pre.headers['access-control-allow-credentials'], undefined);
  } finally {
    await api.close();
  }
});
