import test from 'ava';
import { serversForFile } from '../helpers/hub.js';
import { bearer, openApiHub } from './support.js';

const servers = serversForFile();

test('strings with lone UTF-16 surrogates are refused in bodies and query strings, naming the field; valid escapes pass intact', async (t) => {
  const api = await openApiHub(servers);
  try {
    const [a, b] = [await api.register('A'), await api.register('B')];
    const conv = await api.http.post('/v1/conversations').set(...bearer(a)).send({ type: 'direct', members: [b.id] });
    const msgs = `/v1/conversations/${conv.body.conversation.id as string}/messages`;
    // Raw JSON text: the escapes must reach the server as escapes.
    const post = (raw: string) => api.http.post(msgs).set(...bearer(a)).set('Content-Type', 'application/json').send(raw);

    const cases: Array<[string, string]> = [
      ['{"text":"\\ud800 x"}', 'body.text'],
      ['{"text":"x \\udfff"}', 'body.text'],
      ['{"text":"ok","clientId":"c-\\ud83d"}', 'body.clientId'],
      ['{"text":"ok","attachments":["\\udc00"]}', 'body.attachments.0'],
    ];
    for (const [raw, field] of cases) {
      const res = await post(raw);
      t.is(res.status, 400, raw);
      t.is(res.body.error.code, 'VALIDATION_FAILED', raw);
      t.deepEqual(res.body.error.details.fields, [field], raw);
    }
    // A lone surrogate in a key is refused too (and not echoed back as is).
    const keyOnPost = await post('{"text":"ok","\\ud800":1}');
    t.is(keyOnPost.status, 400);
    t.is(keyOnPost.body.error.code, 'VALIDATION_FAILED');

    t.is((await api.http.get(msgs).set(...bearer(a))).body.messages.length, 0, 'nothing was stored');

    // A surrogate pair and other escapes are ordinary text and come back exactly as sent.
    const good = await post('{"text":"\\ud83d\\ude00 \\u00e9\\n","clientId":"\\u0063-1"}');
    t.is(good.status, 201);
    t.is(good.body.message.text, '\u{1F600} é\n');
    const history = await api.http.get(msgs).set(...bearer(a));
    t.is(history.body.messages[0].text, '\u{1F600} é\n');
    t.is(history.body.messages[0].clientId, 'c-1');

    // Query strings: an encoded surrogate (not UTF-8) would silently become U+FFFD.
    const q = await api.http.get('/v1/users?q=%ED%A0%80').set(...bearer(a));
    t.is(q.status, 400);
    t.is(q.body.error.code, 'VALIDATION_FAILED');
    t.deepEqual(q.body.error.details.fields, ['query.q']);
    t.is((await api.http.get('/v1/users?q=%C3%A9').set(...bearer(a))).status, 200, 'percent-encoded UTF-8 is fine');
  } finally {
    await api.close();
  }
});

test('a % in a query string that does not start an escape (two hex digits) is the character itself', async (t) => {
  const api = await openApiHub(servers);
  try {
    const a = await api.register('A');
    const sale = await api.register('Sale 50%off');
    const promo = await api.register('Promo %zzé');
    const names = async (rawQuery: string) => {
      const res = await api.http.get(`/v1/users?${rawQuery}`).set(...bearer(a));
      t.is(res.status, 200, rawQuery);
      return (res.body.users as Array<{ id: string }>).map((u) => u.id);
    };
    t.deepEqual(await names('q=50%'), [sale.id], 'a trailing %');
    t.deepEqual(await names('q=50%25'), [sale.id], '%25 is the escape of %');
    t.deepEqual(await names('q=0%of'), [sale.id], 'a % followed by a non-hex character');
    t.deepEqual(await names('q=%zz%C3%A9'), [promo.id], 'the escapes beside a stray % are still decoded');
    t.deepEqual(await names('q=%4'), [], '%4 at the end is the text "%4", which nobody has');
    // Real escapes that are not UTF-8 are still refused.
    const cut = await api.http.get('/v1/users?q=%E2%82').set(...bearer(a));
    t.is(cut.status, 400);
    t.deepEqual(cut.body.error.details.fields, ['query.q']);
  } finally {
    await api.close();
  }
});
