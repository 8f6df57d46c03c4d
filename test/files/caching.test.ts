/**
 * Download caching: file bytes and thumbnails are `private, no-cache` with an ETag, so a browser revalidates
 * every time — a member gets a cheap 304, and someone removed from the conversation gets 404 rather than a
 * copy cached from when they were a member.
 */
import test from 'ava';
import { serversForFile } from '../helpers/hub.js';
import { bearer, openApiHub } from '../api/support.js';

const PNG_1x1 = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');

const servers = serversForFile();

test('downloads and thumbnails revalidate: 304 with the ETag for a member, 404 once removed', async (t) => {
  const api = await openApiHub(servers);
  try {
    const [ana, bo, cy] = [await api.register('Ana'), await api.register('Bo'), await api.register('Cy')];
    const grp = (await api.http.post('/v1/conversations').set(...bearer(ana)).send({ type: 'group', title: 'G', members: [bo.id, cy.id] })).body.conversation as { id: string };
    const up = await api.http.post(`/v1/conversations/${grp.id}/files`).set(...bearer(ana)).attach('file', PNG_1x1, { filename: 'dot.png', contentType: 'image/png' });
    t.is(up.status, 201);
    const id = (up.body.file as { id: string }).id;
    const doc = await api.http.post(`/v1/conversations/${grp.id}/files`).set(...bearer(ana)).attach('file', Buffer.from('plain notes\n'), { filename: 'notes.txt' });
    const docId = (doc.body.file as { id: string }).id;

    const etags: Record<string, string> = {};
    for (const path of [`/v1/files/${id}`, `/v1/files/${id}/thumbnail`, `/v1/files/${docId}`]) {
      const first = await api.http.get(path).set(...bearer(cy)).buffer(true);
      t.is(first.status, 200, path);
      t.is(first.headers['cache-control'], 'private, no-cache', `${path}: the browser must ask again before reusing its copy`);
      const etag = first.headers.etag as string;
      t.regex(etag, /^"[0-9a-f]{64}-(main|thumbnail)"$/, path);
      etags[path] = etag;

      const again = await api.http.get(path).set(...bearer(cy)).set('If-None-Match', etag);
      t.is(again.status, 304, `${path}: a member's revalidation is answered without the bytes`);
      t.is(again.headers.etag, etag);
      t.falsy(again.headers['content-length'] && Number(again.headers['content-length']) > 0);
    }
    t.not(etags[`/v1/files/${id}`], etags[`/v1/files/${id}/thumbnail`], 'the display copy and the thumbnail are different representations');
    // A stale tag gets the bytes again.
    t.is((await api.http.get(`/v1/files/${id}`).set(...bearer(cy)).set('If-None-Match', '"other"')).status, 200);

    t.is((await api.http.patch(`/v1/conversations/${grp.id}`).set(...bearer(ana)).send({ removeMembers: [cy.id] })).status, 200);
    for (const path of Object.keys(etags)) {
      const revalidate = await api.http.get(path).set(...bearer(cy)).set('If-None-Match', etags[path]!);
      t.is(revalidate.status, 404, `${path}: a removed member's revalidation is refused, not confirmed`);
      t.is(revalidate.body.error.code, 'FILE_NOT_FOUND');
      t.is(revalidate.headers.etag, undefined, 'a refusal carries no tag');
      t.is(revalidate.headers['cache-control'], 'no-store');
    }
    t.is((await api.http.get(`/v1/files/${id}`).set(...bearer(bo)).set('If-None-Match', etags[`/v1/files/${id}`]!)).status, 304, 'a current member still revalidates');
  } finally {
    await api.close();
  }
});
