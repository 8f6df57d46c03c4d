/**
 * GET/PATCH /v1/workspace: the workspace settings the docs describe (registration, customers talking only to
 * agents, private pushes, a lower upload limit) can be read by members and changed by admins, through the API,
 * with a workspace.updated event; before, nothing but a database edit could change them.
 */
import test from 'ava';
import { FileService } from '../../core/files/service.js';
import { serversForFile } from '../helpers/hub.js';
import { bearer, eventually, openApiHub, streamEvents } from './support.js';

const servers = serversForFile();

test('members read the workspace; admins change its settings (validated), which take effect, with an event', async (t) => {
  const api = await openApiHub(servers, { uploadMaxBytes: 100_000 });
  try {
    const admin = await api.register('Root', { role: 'admin' });
    const agent = await api.register('Agent', { role: 'agent' });
    const cust = await api.register('Cust');
    const other = await api.register('Other');
    const got = await api.http.get('/v1/workspace').set(...bearer(cust));
    t.is(got.status, 200);
    t.like(got.body.workspace, { id: api.hub.config.defaultWorkspaceId, settings: { registration: 'open', customersTalkToAgentsOnly: false, privatePush: false }, uploadMaxBytes: 100_000 });

    t.is((await api.http.patch('/v1/workspace').set(...bearer(agent)).send({ privatePush: true })).status, 403, 'admins only');
    for (const [body, field] of [
      [{}, undefined],
      [{ registration: 'everyone' }, 'body.registration'],
      [{ privatePush: 'yes' }, 'body.privatePush'],
      [{ uploadMaxBytes: 200_000 }, 'body.uploadMaxBytes'],
      [{ uploadMaxBytes: 0 }, 'body.uploadMaxBytes'],
      [{ name: 'x' }, 'body.name'],
      [{ privatePush: { $ne: null } }, 'body.privatePush'],
    ] as const) {
      const r = await api.http.patch('/v1/workspace').set(...bearer(admin)).send(body);
      t.is(r.status, 400, JSON.stringify(body));
      if (field) t.true((r.body.error.details.fields as string[]).includes(field), `${JSON.stringify(body)}: ${JSON.stringify(r.body.error.details)}`);
    }
    t.like((await api.http.get('/v1/workspace').set(...bearer(admin))).body.workspace.settings, { customersTalkToAgentsOnly: false, privatePush: false }, 'a refused change changed nothing');

    const changed = await api.http.patch('/v1/workspace').set(...bearer(admin)).send({ customersTalkToAgentsOnly: true, privatePush: true, uploadMaxBytes: 5000 });
    t.is(changed.status, 200, JSON.stringify(changed.body));
    t.like(changed.body.workspace, { settings: { registration: 'open', customersTalkToAgentsOnly: true, privatePush: true }, uploadMaxBytes: 5000 });
    // In effect: a customer can no longer open a conversation with another customer; the upload limit is lower.
    const direct = await api.http.post('/v1/conversations').set(...bearer(cust)).send({ type: 'direct', members: [other.id] });
    t.is(direct.status, 403);
    t.is(await new FileService(api.hub).limitFor(api.hub.config.defaultWorkspaceId), 5000);
    const ev = await eventually(async () => (await streamEvents(api.hub)).find((e) => e.event.type === 'workspace.updated'));
    t.deepEqual(ev.event.data, { settings: { customersTalkToAgentsOnly: true, privatePush: true, uploadMaxBytes: 5000 } });
    t.deepEqual(ev.event.actor, { type: 'user', id: admin.id });

    const back = await api.http.patch('/v1/workspace').set(...bearer(admin)).send({ uploadMaxBytes: null });
    t.is(back.body.workspace.uploadMaxBytes, 100_000, "null goes back to the hub's limit");
  } finally {
    await api.close();
  }
});
