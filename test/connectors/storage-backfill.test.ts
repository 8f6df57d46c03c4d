/**
 * `voxa connections backfill` into a Dropbox connection (the CLI as a subprocess, the Dropbox stand-in as the far
 * end): attachments are uploaded as live sync would, once per file; a file whose blob is gone is reported as
 * failed with its reason and the command exits 1, also with --json; a repeat writes nothing twice.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { createEvent, subjectOf, type AnyEvent } from '../../core/events/catalog.js';
import { createBlobStore } from '../../core/files/service.js';
import { newId } from '../../core/ids.js';
import { ConnectionService } from '../../connectors/connections.js';
import { runCli } from '../helpers/cli.js';
import { hubForFile } from '../helpers/hub.js';
import { cliEnv } from './cli-proc.js';
import { standInForFile } from './standins.js';
import type { BackfillSummary } from '../../connectors/backfill.js';

const shared = hubForFile();

const fake = standInForFile();

async function publish(e: AnyEvent): Promise<void> {
  await shared.hub.bus.publisher.publish(subjectOf(e, shared.hub.bus.namespace), Buffer.from(JSON.stringify(e)), {}, e.id);
}

/** A file as core/files keeps it (document + blob), and the file.uploaded event it would have published. */
async function upload(convId: string, userId: string, name: string, bytes: Buffer): Promise<{ id: string; blobKey: string; path: string }> {
  const ws = shared.hub.config.defaultWorkspaceId;
  const id = newId('fil');
  const blobKey = `${ws}/${id}/main`;
  const path = join(mkdtempSync(join(tmpdir(), 'voxa-blob-')), 'f');
  writeFileSync(path, bytes);
  await createBlobStore(shared.hub).putFile(blobKey, path, { size: bytes.length, contentType: 'text/plain' });
  const file = { id, workspaceId: ws, conversationId: convId, uploaderId: userId, name, contentType: 'text/plain', size: bytes.length, sha256: '', disposition: 'attachment', blobKey, createdAt: new Date().toISOString() };
  await shared.hub.store.docs.put('files', id, file);
  await publish(createEvent('file.uploaded', { workspaceId: ws, conversationId: convId, actor: { type: 'user', id: userId }, data: { file: { id, name, size: bytes.length, contentType: 'text/plain', conversationId: convId } } }));
  return { id, blobKey, path };
}

test('backfill into a new Dropbox connection uploads the attachments once; a missing blob fails with its reason and exit 1', async (t) => {
  const ws = shared.hub.config.defaultWorkspaceId;
  const now = new Date().toISOString();
  const user = { id: newId('usr'), workspaceId: ws, email: 'ada@example.com', name: 'Ada', role: 'agent' as const, createdAt: now, passwordHash: 'x', disabled: false };
  await shared.hub.store.createUser(user, () => []);
  const { conversation } = await shared.hub.store.createConversation(
    { id: newId('cnv'), workspaceId: ws, type: 'group', title: 'Launch', members: [user.id], createdBy: user.id, createdAt: now, updatedAt: now, lastSeq: 0 },
    () => [],
  );
  for (const text of ['hello', 'see the files']) {
    const { message } = await shared.hub.store.appendMessage({ id: newId('msg'), conversationId: conversation.id, senderId: user.id, text, clientId: null, createdAt: now }, () => []);
    await publish(createEvent('message.created', { workspaceId: ws, conversationId: conversation.id, actor: { type: 'user', id: user.id }, data: { message } }));
  }
  const files: Array<{ id: string; blobKey: string; path: string }> = [];
  for (const n of [1, 2, 3, 4]) files.push(await upload(conversation.id, user.id, `notes-${n}.txt`, Buffer.from(`attachment number ${n}`)));
  // The fourth file's bytes are gone from the blob store (its document is still there).
  await createBlobStore(shared.hub).delete(files[3]!.blobKey);

  const conn = await new ConnectionService(shared.hub).create(ws, 'dropbox', {
    clientId: 'appkey', folderPath: '/Second', apiBaseUrl: fake.api.url, tokenUrl: `${fake.api.url}/token`,
    accessToken: 'tok1', refreshToken: 'refresh1', expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  }, 'box2');
  const env = cliEnv(shared.servers, shared.hub);

  const first = await runCli(env, ['connections', 'backfill', conn.id, '--since', '1', '--json']);
  t.is(first.code, 1, 'something failed, so exit 1 — with --json too');
  const s1 = JSON.parse(first.stdout) as BackfillSummary;
  t.is(s1.written, 4, 'three attachments and one transcript');
  t.is(s1.deferred, 2, 'the two messages fed the transcript; they are not "not relevant"');
  t.is(s1.failed, 1);
  t.truthy(s1.failures[0]!.eventId, 'the failure names its event');
  t.regex(s1.failures[0]!.reason, new RegExp(`${files[3]!.id}.*missing from the blob store`));
  const inSecond = [...fake.api.files.values()].filter((f) => f.name.startsWith('/Second/'));
  for (const f of files.slice(0, 3)) {
    const copy = inSecond.find((x) => x.name.includes(f.id));
    t.truthy(copy, `${f.id} reached /Second`);
  }
  t.regex(inSecond.find((x) => x.name.includes(files[0]!.id))!.content, /attachment number 1/);
  t.truthy(inSecond.find((x) => x.name.endsWith('.md')), 'the transcript too');
  t.is(inSecond.length, 4);

  // Again, as text: nothing uploaded twice, the failure named with its reason, still exit 1.
  const uploads = fake.api.requests.filter((r) => r.path === '/content/2/files/upload').length;
  const second = await runCli(env, ['connections', 'backfill', conn.id, '--since', '1']);
  t.is(second.code, 1);
  t.regex(second.stdout, /0 written, 4 already done, 1 failed/);
  t.regex(second.stdout, new RegExp(`failed .*: attachment ${files[3]!.id}: its content is missing from the blob store`));
  t.is(fake.api.requests.filter((r) => r.path === '/content/2/files/upload').length, uploads, 'nothing uploaded again');

  // With the blob back, the rest goes through and the command succeeds.
  await createBlobStore(shared.hub).putFile(files[3]!.blobKey, files[3]!.path, { size: 20, contentType: 'text/plain' });
  const third = await runCli(env, ['connections', 'backfill', conn.id, '--since', '1', '--json']);
  t.is(third.code, 0, third.stderr);
  t.like(JSON.parse(third.stdout) as BackfillSummary, { written: 1, skipped: 4, failed: 0, failures: [] });
});
