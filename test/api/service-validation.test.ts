import test from 'ava';
import { newId } from '../../core/ids.js';
import { serversForFile } from '../helpers/hub.js';
import { bearer, openApiHub } from './support.js';

const servers = serversForFile();

test('VALIDATION_FAILED from the chat rules has the documented {fields, issues} shape, like schema errors', async (t) => {
  const api = await openApiHub(servers, { maxMessageLength: 10 });
  try {
    const [a, b] = [await api.register('A'), await api.register('B')];
    const conv = await api.http.post('/v1/conversations').set(...bearer(a)).send({ type: 'direct', members: [b.id] });
    const msgs = `/v1/conversations/${conv.body.conversation.id as string}/messages`;
    const sent = await api.http.post(msgs).set(...bearer(a)).send({ text: 'hi' });

    const cases: Array<[string, Promise<{ status: number; body: any }>, string]> = [ // eslint-disable-line @typescript-eslint/no-explicit-any
      ['blank text', api.http.post(msgs).set(...bearer(a)).send({ text: '  ' }), 'body.text'],
      ['too long', api.http.post(msgs).set(...bearer(a)).send({ text: 'x'.repeat(11) }), 'body.text'],
      ['blank edit', api.http.patch(`${msgs}/${sent.body.message.id as string}`).set(...bearer(a)).send({ text: ' ' }), 'body.text'],
      ['direct with yourself', api.http.post('/v1/conversations').set(...bearer(a)).send({ type: 'direct', members: [a.id] }), 'body.members'],
      ['attachment of nowhere', api.http.post(msgs).set(...bearer(a)).send({ text: 'x', attachments: [newId('fil')] }), 'body.attachments'],
    ];
    for (const [name, req, field] of cases) {
      const res = await req;
      t.is(res.status, 400, name);
      t.is(res.body.error.code, 'VALIDATION_FAILED', name);
      t.deepEqual(res.body.error.details.fields, [field], name);
      t.is(res.body.error.details.issues[0].path, field, name);
      t.is(typeof res.body.error.details.issues[0].message, 'string', name);
      t.false('field' in res.body.error.details, `${name}: no undocumented field key`);
    }
  } finally {
    await api.close();
  }
});
