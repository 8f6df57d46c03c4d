/**
 * Google Drive and Dropbox sync with the real SDKs against local stand-ins: request shapes, idempotent
 * transcripts, token refresh, revoked grants, 429 with Retry-After through the connector queue, 5xx mapping,
 * OAuth2 PKCE with a loopback redirect, and backfill idempotency.
 */
import test from 'ava';
import { createEvent, subjectOf } from '../../core/events/catalog.js';
import type { Hub } from '../../core/hub.js';
import { newId } from '../../core/ids.js';
import { CONNECTIONS } from '../../connectors/connections.js';
import { runBackfill } from '../../connectors/backfill.js';
import { loopbackAuthorize } from '../../connectors/oauth2.js';
import { ConnectorQueues, RateLimitedError } from '../../connectors/queues.js';
import { mapDriveError } from '../../connectors/google-drive/index.js';
import { AuthExpiredError, RetryableError } from '../../connectors/types.js';
import { metrics } from '../../core/telemetry/metrics.js';
import { StorageSync } from '../../plugins/storage-sync/service.js';
import { openTestHub, serversForFile } from '../helpers/hub.js';
import { until } from './receiver.js';
import { startStandIn, type StandIn } from './standins.js';

const servers = serversForFile();

interface World {
  hub: Hub & { close(): Promise<void> };
  api: StandIn;
  convId: string;
  msgIds: string[];
}

async function world(): Promise<World> {
  const hub = await openTestHub(servers);
  const api = await startStandIn();
  const ws = hub.config.defaultWorkspaceId;
  const now = new Date().toISOString();
  const users = ['Ada', 'Bo'].map((name) => ({ id: newId('usr'), workspaceId: ws, email: `${name.toLowerCase()}@example.com`, name, role: 'agent' as const, createdAt: now, passwordHash: 'x', disabled: false }));
  for (const u of users) await hub.store.createUser(u, () => []);
  const { conversation } = await hub.store.createConversation(
    { id: newId('cnv'), workspaceId: ws, type: 'group', title: 'Launch plan', members: users.map((u) => u.id), createdBy: users[0]!.id, createdAt: now, updatedAt: now, lastSeq: 0 },
    () => [],
  );
  const msgIds: string[] = [];
  for (const [i, text] of ['first idea', 'second idea'].entries()) {
    const { message } = await hub.store.appendMessage({ id: newId('msg'), conversationId: conversation.id, senderId: users[i]!.id, text, clientId: null, createdAt: now }, () => []);
    msgIds.push(message.id);
  }
  return { hub, api, convId: conversation.id, msgIds };
}

async function driveConnection(w: World, extra: Record<string, unknown> = {}): Promise<StorageSync> {
  const sync = new StorageSync(w.hub, null, 'google-drive');
  await sync.connections.create(w.hub.config.defaultWorkspaceId, 'google-drive', {
    clientId: 'cid',
    clientSecret: 'csecret',
    folderId: 'folder1',
    rootUrl: `${w.api.url}/`,
    tokenUrl: `${w.api.url}/token`,
    accessToken: 'tok1',
    refreshToken: 'refresh1',
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
    ...extra,
  });
  return sync;
}

async function close(w: World): Promise<void> {
  await w.api.close();
  await w.hub.close();
}

test('drive: transcript created in the folder, unchanged re-render writes nothing, an edit updates the same file', async (t) => {
  const w = await world();
  const sync = await driveConnection(w);
  const [conn] = await sync.connections.allOf('google-drive');
  t.is(await sync.syncTranscript(conn!, w.convId), 'written');
  const create = w.api.requests.find((r) => r.method === 'POST' && r.path.startsWith('/upload/drive/v3/files'))!;
  t.is(create.auth, 'Bearer tok1');
  t.regex(create.path, /uploadType=multipart/);
  const [file] = [...w.api.files.values()];
  t.deepEqual(file!.parents, ['folder1']);
  t.regex(file!.name, /^Launch plan \(cnv_.+\)\.md$/);
  t.regex(file!.content, /\*\*Ada\*\*.*first idea/);
  t.regex(file!.content, /\*\*Bo\*\*.*second idea/);

  const before = w.api.requests.length;
  t.is(await sync.syncTranscript(conn!, w.convId), 'skipped');
  t.is(w.api.requests.length, before, 'no request when the content hash is unchanged');

  await w.hub.store.editMessage(w.convId, w.msgIds[0]!, 'first idea, revised', new Date().toISOString(), () => []);
  await w.hub.store.deleteMessage(w.convId, w.msgIds[1]!, new Date().toISOString(), () => []);
  t.is(await sync.syncTranscript(conn!, w.convId), 'written');
  const patch = w.api.requests.at(-1)!;
  t.is(patch.method, 'PATCH');
  t.regex(patch.path, /^\/upload\/drive\/v3\/files\/gen\d+\?.*uploadType=media/, 'the file was created under an id from files.generateIds');
  t.is(w.api.files.size, 1, 'the same file was updated, not a second one created');
  const content = [...w.api.files.values()][0]!.content;
  t.regex(content, /\(edited [^)]+\): first idea, revised/);
  t.regex(content, /_message deleted_/);
  t.notRegex(content, /second idea/);
  await close(w);
});

test('drive: a 401 refreshes the token once, persists it sealed, and the call succeeds', async (t) => {
  const w = await world();
  const sync = await driveConnection(w);
  w.api.validToken = 'tok-other'; // the stored tok1 is now rejected
  w.api.nextAccessToken = 'tok-fresh';
  const [conn] = await sync.connections.allOf('google-drive');
  t.is(await sync.syncTranscript(conn!, w.convId), 'written');
  t.true(w.api.requests.some((r) => r.path === '/token' && /grant_type=refresh_token/.test(r.body)));
  t.is(w.api.requests.filter((r) => r.path.startsWith('/upload')).at(-1)!.auth, 'Bearer tok-fresh');
  const resolved = await sync.connections.resolve<{ accessToken: string }>(conn!.id);
  t.is(resolved.config.accessToken, 'tok-fresh');
  const raw = JSON.stringify(await w.hub.store.docs.get(CONNECTIONS, conn!.id));
  t.false(raw.includes('tok-fresh'), 'the refreshed token is sealed at rest');
  t.false(raw.includes('refresh1'));
  t.false(raw.includes('csecret'));
  await close(w);
});

test('drive: a revoked grant (invalid_grant) marks the connection broken with the reason', async (t) => {
  const w = await world();
  const sync = await driveConnection(w, { expiresAt: new Date(Date.now() - 1000).toISOString() });
  w.api.refreshTokens.clear();
  const [conn] = await sync.connections.allOf('google-drive');
  await t.throwsAsync(sync.syncTranscript(conn!, w.convId), { instanceOf: AuthExpiredError, message: /invalid_grant/ });
  const view = await sync.connections.get(conn!.id);
  t.is(view.status, 'broken');
  t.regex(view.statusReason ?? '', /invalid_grant/);
  // A broken connection's jobs do nothing.
  t.deepEqual(await sync.process({ name: 'transcript', data: { connectionId: conn!.id, conversationId: w.convId } }), { skipped: 'connection not active' });
  await close(w);
});

test('drive: errors map to retryable, rate-limited and permanent', (t) => {
  const resp = (status: number, headers: Record<string, string> = {}, reason?: string): unknown => ({
    response: { status, headers, data: reason ? { error: { errors: [{ reason }] } } : {} },
  });
  const r503 = mapDriveError(resp(503, { 'retry-after': '7' }), 'x');
  t.true(r503 instanceof RetryableError);
  t.is((r503 as RetryableError).delayMs, 7000);
  const r429 = mapDriveError(resp(429, { 'retry-after': '2' }), 'x');
  t.true(r429 instanceof RateLimitedError);
  t.is((r429 as RateLimitedError).delayMs, 2000);
  t.true(mapDriveError(resp(403, {}, 'userRateLimitExceeded'), 'x') instanceof RateLimitedError);
  t.false(mapDriveError(resp(400), 'x') instanceof RetryableError);
  t.true(mapDriveError(new Error('socket hang up'), 'x') instanceof RetryableError);
});

test('drive: 429 with Retry-After pauses the connector queue, then the job completes; 5xx is retried', async (t) => {
  const w = await world();
  const sync = await driveConnection(w);
  const queues = new ConnectorQueues(w.hub);
  const live = new StorageSync(w.hub, queues, 'google-drive');
  queues.work('google-drive', (job) => live.process(job), { concurrency: 1, backoff: () => 100 });
  const [conn] = await sync.connections.allOf('google-drive');
  const limitedBefore = (await metrics.connectorRateLimited.get()).values.find((v) => v.labels.connector === 'google-drive')?.value ?? 0;
  const upload = /^POST \/upload\//;
  w.api.failNext.push({ status: 429, headers: { 'retry-after': '1' }, match: upload }, { status: 502, match: upload });
  const started = Date.now();
  const job = await queues.add('google-drive', 'transcript', { connectionId: conn!.id, conversationId: w.convId });
  await until(async () => (await job.getState()) === 'completed', 60_000, 'job completed');
  t.true(Date.now() - started >= 900, 'waited for Retry-After');
  t.is(w.api.files.size, 1);
  const limitedAfter = (await metrics.connectorRateLimited.get()).values.find((v) => v.labels.connector === 'google-drive')!.value;
  t.is(limitedAfter, limitedBefore + 1);
  const uploads = w.api.requests.filter((r) => r.path.startsWith('/upload'));
  t.is(uploads.length, 3, '429, 502, then success');
  await queues.close();
  await close(w);
});

test('drive: backfill over synced history writes nothing twice', async (t) => {
  const w = await world();
  const sync = await driveConnection(w);
  const [conn] = await sync.connections.allOf('google-drive');
  const ws = w.hub.config.defaultWorkspaceId;
  const msgs = await w.hub.store.listMessages(w.convId, { after: 0, limit: 10 });
  for (const m of msgs.messages) {
    const e = createEvent('message.created', { workspaceId: ws, conversationId: w.convId, actor: { type: 'user', id: m.senderId }, data: { message: m } });
    await w.hub.bus.publisher.publish(subjectOf(e, w.hub.bus.namespace), Buffer.from(JSON.stringify(e)), {}, e.id);
  }
  const nats = { js: w.hub.bus.js, jsm: w.hub.bus.jsm, namespace: w.hub.bus.namespace };
  const seen: number[] = [];
  const first = await runBackfill(nats, conn!, sync.backfillTarget(conn!), { seq: 1 }, (d) => seen.push(d));
  // Two messages, and the connection's own connection.changed (published before them, so always in range).
  t.is(first.events, 3);
  t.is(first.written, 1, 'one transcript for the conversation');
  t.true(seen.length > 0);
  const uploads = w.api.requests.filter((r) => r.path.startsWith('/upload')).length;
  const second = await runBackfill(nats, conn!, sync.backfillTarget(conn!), { time: '2020-01-01T00:00:00Z' });
  t.is(second.written, 0);
  t.is(second.skipped, 1);
  t.is(w.api.requests.filter((r) => r.path.startsWith('/upload')).length, uploads, 'no second upload');
  await close(w);
});

test('drive: the nightly backup re-syncs each synced transcript and writes one dated snapshot of them, replaced on a repeat', async (t) => {
  // Both backups must fall on one UTC day (the snapshot is named by it): a run in a day's last seconds waits.
  const toMidnight = 86_400_000 - (Date.now() % 86_400_000);
  if (toMidnight < 20_000) await new Promise((r) => setTimeout(r, toMidnight + 100));
  const w = await world();
  const sync = await driveConnection(w);
  const [conn] = await sync.connections.allOf('google-drive');
  t.is(await sync.syncTranscript(conn!, w.convId), 'written');
  const job = { name: 'backup', data: { connectionId: conn!.id } };
  t.deepEqual(await sync.process(job), { conversations: 1, written: 0 }, 'the transcript was current');
  const snapshot = () => [...w.api.files.values()].filter((f) => /^backup-\d{4}-\d{2}-\d{2}\.md$/.test(f.name));
  t.is(snapshot().length, 1);
  t.regex(snapshot()[0]!.content, /\*\*Ada\*\*.*first idea/);

  await w.hub.store.editMessage(w.convId, w.msgIds[0]!, 'first idea, revised', new Date().toISOString(), () => []);
  t.deepEqual(await sync.process(job), { conversations: 1, written: 1 }, 'the backup repaired the stale transcript');
  t.is(snapshot().length, 1, 'the day\'s snapshot was replaced, not added to');
  t.regex(snapshot()[0]!.content, /first idea, revised/);
  const transcript = [...w.api.files.values()].find((f) => f.name.startsWith('Launch plan'))!;
  t.is(snapshot()[0]!.content, transcript.content, 'the snapshot holds the transcript as written');
  t.is(w.api.files.size, 2);
  await close(w);
});

test('oauth2: PKCE with a loopback redirect exchanges the code with the verifier', async (t) => {
  const api = await startStandIn();
  api.nextAccessToken = 'tok-from-code';
  let consentUrl = '';
  const tokens = await loopbackAuthorize(
    { authorizeUrl: `${api.url}/authorize`, tokenUrl: `${api.url}/token`, clientId: 'cid', scopes: ['files.content.write'], extraAuthorizeParams: { token_access_type: 'offline' } },
    (url) => {
      consentUrl = url;
      void fetch(url).catch(() => undefined); // the "browser": follows the redirect to 127.0.0.1/callback
    },
    30_000,
  );
  t.is(tokens.accessToken, 'tok-from-code');
  t.is(tokens.refreshToken, 'refresh1');
  const u = new URL(consentUrl);
  t.is(u.searchParams.get('code_challenge_method'), 'S256');
  t.regex(u.searchParams.get('redirect_uri') ?? '', /^http:\/\/127\.0\.0\.1:\d+\/callback$/);
  t.is(u.searchParams.get('token_access_type'), 'offline');
  const exchange = api.requests.find((r) => r.path === '/token')!;
  t.regex(exchange.body, /code_verifier=/);
  await api.close();
});

test('dropbox: upload with the real SDK through the fetch option, overwrite in place, 429 and 401 handling', async (t) => {
  const w = await world();
  const sync = new StorageSync(w.hub, null, 'dropbox');
  await sync.connections.create(w.hub.config.defaultWorkspaceId, 'dropbox', {
    clientId: 'appkey',
    folderPath: '/Voxa Hub',
    apiBaseUrl: w.api.url,
    tokenUrl: `${w.api.url}/token`,
    accessToken: 'tok1',
    refreshToken: 'refresh1',
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  const [conn] = await sync.connections.allOf('dropbox');
  t.is(await sync.syncTranscript(conn!, w.convId), 'written');
  const up = w.api.requests.find((r) => r.path === '/content/2/files/upload')!;
  const arg = JSON.parse(String(up.headers['dropbox-api-arg'])) as { path: string; mode: { '.tag': string } };
  t.regex(arg.path, /^\/Voxa Hub\/Launch plan \(cnv_.+\)\.md$/);
  t.is(arg.mode['.tag'], 'overwrite');
  t.regex(up.body, /first idea/);

  await w.hub.store.editMessage(w.convId, w.msgIds[0]!, 'edited idea', new Date().toISOString(), () => []);
  w.api.failNext.push({ status: 429, headers: { 'retry-after': '3' }, body: { error_summary: 'too_many_requests/', error: { reason: { '.tag': 'too_many_requests' }, retry_after: 3 } } });
  const err = await t.throwsAsync(sync.syncTranscript(conn!, w.convId));
  t.true(err instanceof RateLimitedError);
  t.is((err as RateLimitedError).delayMs, 3000);

  w.api.validToken = 'tok-x';
  w.api.nextAccessToken = 'tok-x';
  t.is(await sync.syncTranscript(conn!, w.convId), 'written', 'refreshed after 401 and retried');
  t.is(w.api.files.size, 1, 'same path overwritten');
  t.regex([...w.api.files.values()][0]!.content, /edited idea/);

  w.api.failNext.push({ status: 500 });
  await w.hub.store.editMessage(w.convId, w.msgIds[0]!, 'edited again', new Date().toISOString(), () => []);
  await t.throwsAsync(sync.syncTranscript(conn!, w.convId), { instanceOf: RetryableError });
  await close(w);
});

/** A stored file as core/files keeps it: the `files` document and its bytes in the hub's local blob store. */
async function storedFile(w: World, bytes: Buffer, fields: { workspaceId?: string; name?: string } = {}): Promise<{ id: string; name: string; contentType: string }> {
  const { writeFileSync, mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { createBlobStore } = await import('../../core/files/service.js');
  const id = newId('fil');
  const ws = fields.workspaceId ?? w.hub.config.defaultWorkspaceId;
  const blobKey = `${ws}/${id}/main`;
  const tmp = join(mkdtempSync(join(tmpdir(), 'voxa-blob-')), 'f');
  writeFileSync(tmp, bytes);
  await createBlobStore(w.hub).putFile(blobKey, tmp, { size: bytes.length, contentType: 'application/pdf' });
  const name = fields.name ?? 'report.pdf';
  await w.hub.store.docs.put('files', id, {
    id, workspaceId: ws, conversationId: w.convId, uploaderId: 'usr_x', name, contentType: 'application/pdf', size: bytes.length,
    sha256: '', disposition: 'attachment', blobKey, createdAt: new Date().toISOString(),
  });
  return { id, name, contentType: 'application/pdf' };
}

test('attachments: file.uploaded uploads the stored bytes beside the transcript, once (Drive and Dropbox)', async (t) => {
  const w = await world();
  const drive = await driveConnection(w);
  const dropbox = new StorageSync(w.hub, null, 'dropbox');
  await dropbox.connections.create(w.hub.config.defaultWorkspaceId, 'dropbox', {
    clientId: 'appkey', folderPath: '/Voxa Hub', apiBaseUrl: w.api.url, tokenUrl: `${w.api.url}/token`,
    accessToken: 'tok1', refreshToken: 'refresh1', expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  const bytes = Buffer.from('%PDF-1.4 quarterly numbers');
  const file = await storedFile(w, bytes);
  for (const sync of [drive, dropbox]) {
    const [conn] = await sync.connections.allOf(sync.connector);
    const job = { name: 'attachment', data: { connectionId: conn!.id, conversationId: w.convId, file } };
    t.deepEqual(await sync.process(job), { result: 'written' }, sync.connector);
    // A redelivered file.uploaded (or a rewind) uploads nothing again.
    t.deepEqual(await sync.process(job), { result: 'skipped' }, sync.connector);
  }
  const uploaded = [...w.api.files.values()].filter((f) => f.content === bytes.toString());
  t.is(uploaded.length, 2, 'one copy in Drive, one in Dropbox');
  const inDrive = uploaded.find((f) => f.parents)!;
  t.deepEqual(inDrive.parents, ['folder1'], 'in the transcript\'s folder');
  t.true(inDrive.name.endsWith('report.pdf'));
  t.truthy(uploaded.find((f) => f.name.startsWith('/Voxa Hub/') && f.name.endsWith('report.pdf')));

  // A file of another workspace, or one removed from the file store, is not uploaded.
  const [conn] = await drive.connections.allOf('google-drive');
  const foreign = await storedFile(w, Buffer.from('other team'), { workspaceId: 'other-ws' });
  t.deepEqual(await drive.process({ name: 'attachment', data: { connectionId: conn!.id, conversationId: w.convId, file: foreign } }), { result: 'skipped' });
  t.deepEqual(await drive.process({ name: 'attachment', data: { connectionId: conn!.id, conversationId: w.convId, file: { id: 'fil_gone', name: 'x.pdf', contentType: 'application/pdf' } } }), { result: 'skipped' });
  t.is([...w.api.files.values()].filter((f) => f.content === 'other team').length, 0);
  await close(w);
});

test('attachments: a Drive upload whose answer is lost, or whose sync record fails to save, is retried into the same file, never a second copy', async (t) => {
  const w = await world();
  const drive = await driveConnection(w);
  const [conn] = await drive.connections.allOf('google-drive');
  const job = (file: { id: string; name: string; contentType: string }): { name: string; data: unknown } => ({
    name: 'attachment',
    data: { connectionId: conn!.id, conversationId: w.convId, file },
  });
  const copiesOf = (bytes: Buffer): string[] => [...w.api.files.entries()].filter(([, f]) => f.content === bytes.toString()).map(([id]) => id);

  // 1. Drive stores the file but the answer never arrives (a 503 after the commit).
  const lost = Buffer.from('%PDF-1.4 lost answer');
  const a = await storedFile(w, lost, { name: 'deck.pdf' });
  w.api.failNext.push({ status: 503, after: true, match: /^POST \/upload\/drive\/v3\/files\?/ });
  await t.throwsAsync(drive.process(job(a)), { instanceOf: RetryableError });
  t.deepEqual(copiesOf(lost).length, 1, 'the first attempt did land');
  t.deepEqual(await drive.process(job(a)), { result: 'written' }, 'the retry succeeds');
  t.deepEqual(copiesOf(lost).length, 1, 'exactly one copy in Drive');
  const creates = w.api.requests.filter((r) => r.method === 'POST' && r.path.startsWith('/upload/drive/v3/files') && r.body.includes('deck.pdf'));
  t.is(creates.length, 2, 'the retry created again with the same reserved id');
  t.true(creates.every((r) => r.body.includes(`"id":"${copiesOf(lost)[0]}"`)));
  t.deepEqual(await drive.process(job(a)), { result: 'skipped' }, 'done once recorded');

  // 2. Drive answers, but saving the sync record fails once (store hiccup, process killed before the write).
  const unsaved = Buffer.from('%PDF-1.4 unsaved record');
  const b = await storedFile(w, unsaved, { name: 'deck.pdf' });
  const docs = w.hub.store.docs;
  const put = docs.put.bind(docs);
  let failed = 0;
  docs.put = (async (collection: string, id: string, doc: unknown) => {
    const d = doc as { kind?: string; pending?: boolean };
    if (collection === 'storage_sync_state' && d.kind === 'attachment' && !d.pending && failed === 0) {
      failed++;
      throw new Error('store unavailable');
    }
    return put(collection, id, doc as never);
  }) as typeof docs.put;
  t.teardown(() => {
    docs.put = put;
  });
  await t.throwsAsync(drive.process(job(b)), { message: 'store unavailable' });
  t.is(failed, 1);
  t.deepEqual(await drive.process(job(b)), { result: 'written' });
  t.deepEqual(copiesOf(unsaved).length, 1, 'exactly one copy in Drive');
  t.deepEqual(await drive.process(job(b)), { result: 'skipped' });
  // Same name, different attachments: two files, not one overwriting the other.
  t.not(copiesOf(lost)[0], copiesOf(unsaved)[0]);
  await close(w);
});

test('attachments: a retried Dropbox upload lands on the same path (overwrite), exactly one file', async (t) => {
  const w = await world();
  const sync = new StorageSync(w.hub, null, 'dropbox');
  const conn = await sync.connections.create(w.hub.config.defaultWorkspaceId, 'dropbox', {
    clientId: 'appkey', folderPath: '/Voxa Hub', apiBaseUrl: w.api.url, tokenUrl: `${w.api.url}/token`,
    accessToken: 'tok1', refreshToken: 'refresh1', expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  const bytes = Buffer.from('%PDF-1.4 dropbox retry');
  const file = await storedFile(w, bytes);
  const job = { name: 'attachment', data: { connectionId: conn.id, conversationId: w.convId, file } };
  w.api.failNext.push({ status: 503, after: true, match: /^POST \/content\/2\/files\/upload/ });
  await t.throwsAsync(sync.process(job), { instanceOf: RetryableError });
  t.deepEqual(await sync.process(job), { result: 'written' });
  const copies = [...w.api.files.values()].filter((f) => f.content === bytes.toString());
  t.is(copies.length, 1, 'one file at the far end');
  t.is(copies[0]!.name, `/Voxa Hub/${w.convId} - ${file.id} - report.pdf`);
  const uploads = w.api.requests.filter((r) => r.path === '/content/2/files/upload' && r.body === bytes.toString());
  t.is(uploads.length, 2);
  t.true(uploads.every((u) => (JSON.parse(String(u.headers['dropbox-api-arg'])) as { mode: { '.tag': string } }).mode['.tag'] === 'overwrite'));
  await close(w);
});

test('drive: a binary attachment reaches Drive byte for byte', async (t) => {
  const w = await world();
  const drive = await driveConnection(w);
  const [conn] = await drive.connections.allOf('google-drive');
  const bytes = Buffer.from([0x25, 0x50, 0x44, 0x46, 0x00, 0xff, 0xfe, 0x80, 0x0a, 0xc3]);
  const file = await storedFile(w, bytes);
  t.deepEqual(await drive.process({ name: 'attachment', data: { connectionId: conn!.id, conversationId: w.convId, file } }), { result: 'written' });
  const create = w.api.requests.find((r) => r.method === 'POST' && r.path.startsWith('/upload/drive/v3/files') && r.body.includes(file.id))!;
  t.truthy(create);
  // The stand-in keeps bodies as UTF-8 text; compare raw bytes of the request instead.
  t.true(Buffer.from(create.rawBody).includes(bytes), 'the multipart body carries the exact bytes');
  await close(w);
});
