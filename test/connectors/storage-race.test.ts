/**
 * A backfill (or a second process's worker) and the live storage-sync worker handling the same conversation or
 * attachment at the same moment: the far end gets one file, never two with the same name, and the newest
 * content ends up in it. The stand-in parks the live job's request at the far end to hold the race open; the
 * test lets it go once the other writer has either sent its own request (the race is on) or is waiting its
 * turn for the target (seen on a real Redis through MONITOR: a second `SET … NX` on the target's lease key).
 * On the code before the write leases every race test here failed: two Drive files, or the older render left.
 */
import test, { type ExecutionContext } from 'ava';
import type { Job } from 'bullmq';
import { Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { createEvent, subjectOf, type AnyEvent } from '../../core/events/catalog.js';
import type { Hub } from '../../core/hub.js';
import { newId } from '../../core/ids.js';
import { runBackfill, type BackfillSummary } from '../../connectors/backfill.js';
import { ConnectorQueues } from '../../connectors/queues.js';
import { RetryableError, type ConnectionRecord } from '../../connectors/types.js';
import { LeaseLostError, Leases } from '../../plugins/storage-sync/lease.js';
import { StorageSync, type StorageConnectorId } from '../../plugins/storage-sync/service.js';
import { runCli } from '../helpers/cli.js';
import { openTestHub, serversForFile } from '../helpers/hub.js';
import { cliEnv } from './cli-proc.js';
import { until } from './receiver.js';
import { startStandIn, type StandIn } from './standins.js';

const servers = serversForFile();

interface World {
  hub: Hub & { close(): Promise<void> };
  api: StandIn;
  convId: string;
  userIds: string[];
  conn: ConnectionRecord;
  /** Keys of every `SET … NX` Redis has seen since the world was made. */
  claims: string[];
}

async function publish(w: Pick<World, 'hub'>, e: AnyEvent): Promise<void> {
  await w.hub.bus.publisher.publish(subjectOf(e, w.hub.bus.namespace), Buffer.from(JSON.stringify(e)), {}, e.id);
}

/** A message appended as chat would, with its message.created on the events stream. Returns the event. */
async function say(w: World, who: number, text: string): Promise<AnyEvent> {
  const ws = w.hub.config.defaultWorkspaceId;
  const { message } = await w.hub.store.appendMessage({ id: newId('msg'), conversationId: w.convId, senderId: w.userIds[who]!, text, clientId: null, createdAt: new Date().toISOString() }, () => []);
  const e = createEvent('message.created', { workspaceId: ws, conversationId: w.convId, actor: { type: 'user', id: message.senderId }, data: { message } });
  await publish(w, e);
  return e;
}

/**
 * Reports the key of every `SET … NX` Redis runs, through MONITOR on a plain socket (ioredis' monitor mode can
 * trip over replies that arrive together with its MONITOR answer). Resolves once monitoring has begun.
 */
async function monitorClaims(url: string, onClaim: (key: string) => void): Promise<Socket> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  socket.on('error', () => undefined);
  let buffered = '';
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let nl: number;
      while ((nl = buffered.indexOf('\r\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 2);
        if (line === '+OK') resolve();
        const args = [...line.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!);
        if (args[0]?.toLowerCase() === 'set' && args.some((a) => a.toUpperCase() === 'NX')) onClaim(args[1]!);
      }
    });
    socket.write('MONITOR\r\n');
  });
  return socket;
}

async function world(t: ExecutionContext, connector: StorageConnectorId): Promise<World> {
  const hub = await openTestHub(servers);
  const api = await startStandIn();
  const claims: string[] = [];
  const monitor = await monitorClaims(servers.redis.url, (key) => claims.push(key));
  t.teardown(async () => {
    monitor.destroy();
    await api.close();
    await hub.close();
  });
  const ws = hub.config.defaultWorkspaceId;
  const now = new Date().toISOString();
  const users = ['Ada', 'Bo'].map((name) => ({ id: newId('usr'), workspaceId: ws, email: `${name.toLowerCase()}@example.com`, name, role: 'agent' as const, createdAt: now, passwordHash: 'x', disabled: false }));
  for (const u of users) await hub.store.createUser(u, () => []);
  const { conversation } = await hub.store.createConversation(
    { id: newId('cnv'), workspaceId: ws, type: 'group', title: 'Launch plan', members: users.map((u) => u.id), createdBy: users[0]!.id, createdAt: now, updatedAt: now, lastSeq: 0 },
    () => [],
  );
  const tokens = { tokenUrl: `${api.url}/token`, accessToken: 'tok1', refreshToken: 'refresh1', expiresAt: new Date(Date.now() + 3600_000).toISOString() };
  const config =
    connector === 'google-drive'
      ? { clientId: 'cid', clientSecret: 'csecret', folderId: 'folder1', rootUrl: `${api.url}/`, ...tokens }
      : { clientId: 'appkey', folderPath: '/Voxa Hub', apiBaseUrl: api.url, ...tokens };
  const conn = await new StorageSync(hub, null, connector).connections.create(ws, connector, config);
  const w: World = { hub, api, convId: conversation.id, userIds: users.map((u) => u.id), conn: (await hub.store.docs.get<ConnectionRecord>('connections', conn.id))!, claims };
  await say(w, 0, 'first idea');
  await say(w, 1, 'second idea');
  return w;
}

/** A live storage-sync worker as the plugin runs it (its own queue connections, one job at a time). */
function liveWorker(t: ExecutionContext, w: World, connector: StorageConnectorId): ConnectorQueues {
  const queues = new ConnectorQueues(w.hub);
  const live = new StorageSync(w.hub, queues, connector);
  queues.work(connector, (job) => live.process(job), { concurrency: 1, backoff: () => 100 });
  t.teardown(() => queues.close());
  return queues;
}

/** The backfill as `voxa connections backfill` runs it: its own StorageSync, no queue. */
async function backfill(w: World): ReturnType<typeof runBackfill> {
  const nats = { js: w.hub.bus.js, jsm: w.hub.bus.jsm, namespace: w.hub.bus.namespace };
  return runBackfill(nats, w.conn, await StorageSync.backfillTarget(w.hub, w.conn), { seq: 1 });
}

/** Times Redis was asked to claim this sync target's lease (two or more: someone is waiting for it). */
function claimsOf(w: World, target: string): number {
  return w.claims.filter((k) => k.endsWith(`:${target}`)).length;
}

const transcripts = (w: World): Array<{ name: string; content: string }> => [...w.api.files.values()].filter((f) => /Launch plan \(cnv_.+\)\.md$/.test(f.name));
/** Requests of this kind the stand-in has taken (a parked one counts only once it is let go). */
const requestsTo = (w: World, re: RegExp): number => w.api.requests.filter((r) => re.test(`${r.method} ${r.path}`)).length;

const DRIVE_CREATE = /^POST \/upload\/drive\/v3\/files\?/;
const DRIVE_RESERVE = /^GET \/drive\/v3\/files\/generateIds/;

/**
 * The race most tests here set up: the live worker takes a `name` job on the conversation and the stand-in holds
 * its request matching `park`; then `rival` (the other writer) starts, and the held request goes once the rival
 * has sent one like it (the race is on) or is waiting for the `target` lease (by default the conversation's
 * transcript). Resolves with what the rival returned, once the live job has completed too.
 */
async function raceLiveJob<T>(
  w: World,
  queues: ConnectorQueues,
  live: { name: 'transcript' | 'attachment'; data?: Record<string, unknown>; park: RegExp; target?: string },
  rival: () => Promise<T>,
  what: string,
  waitMs = 30_000,
): Promise<{ rival: T; job: Job }> {
  const held = w.api.park(live.park);
  const data = { connectionId: w.conn.id, conversationId: w.convId, ...live.data };
  const job = await queues.add(w.conn.connector, live.name, data, { jobId: `${live.name[0]}-${w.conn.id}-${newId('evt')}` });
  await held.arrived; // the live job has rendered (or read) what it writes and is at the far end
  const running = rival();
  const target = live.target ?? `${w.conn.id}:${w.convId}`;
  await until(() => requestsTo(w, live.park) >= 1 || claimsOf(w, target) >= 2, waitMs, what);
  held.release();
  const result = await running;
  await until(async () => (await job.getState()) === 'completed', 30_000, 'the live job');
  return { rival: result, job };
}

for (const [where, park] of [
  ['while it reserves the file id', DRIVE_RESERVE],
  ['while its create is in flight', DRIVE_CREATE],
] as const) {
  test(`drive: a backfill racing the live worker on one conversation (${where}) leaves one transcript file, with the newest content`, async (t) => {
    const w = await world(t, 'google-drive');
    const queues = liveWorker(t, w, 'google-drive');
    const { rival: summary } = await raceLiveJob(w, queues, { name: 'transcript', park }, async () => {
      await say(w, 0, 'third idea, after the live render');
      return backfill(w);
    }, 'the backfill to reach the conversation');

    const files = transcripts(w);
    t.is(files.length, 1, 'one transcript file in the folder, not one per writer');
    t.regex(files[0]!.content, /third idea/, 'the newer render is what Drive keeps');
    t.like(summary, { written: 1, skipped: 0, failed: 0 }, 'the backfill wrote the newer content after the live job');
    t.true(claimsOf(w, `${w.conn.id}:${w.convId}`) >= 2, 'the backfill waited for the live job\'s lease');
  });
}

test('drive: `voxa connections backfill` in another process waits for the live worker\'s write, then leaves one file with the newest content', async (t) => {
  const w = await world(t, 'google-drive');
  const queues = liveWorker(t, w, 'google-drive');
  const { rival: out } = await raceLiveJob(w, queues, { name: 'transcript', park: DRIVE_RESERVE }, async () => {
    await say(w, 0, 'third idea, after the live render');
    return runCli(cliEnv(servers, w.hub), ['connections', 'backfill', w.conn.id, '--since', '1', '--json']);
  }, 'the CLI to reach the conversation', 60_000);
  t.is(out.code, 0, out.stderr);

  const files = transcripts(w);
  t.is(files.length, 1, 'one transcript file in the folder, not one per process');
  t.regex(files[0]!.content, /third idea/);
  t.like(JSON.parse(out.stdout) as BackfillSummary, { written: 1, skipped: 0, failed: 0 });
  t.true(claimsOf(w, `${w.conn.id}:${w.convId}`) >= 2, 'the CLI waited for the live job\'s lease');
});

test('drive: a backfill racing the live worker on one attachment uploads it once', async (t) => {
  const w = await world(t, 'google-drive');
  const file = await storedFile(w, Buffer.from('%PDF-1.4 race'));
  await publish(w, createEvent('file.uploaded', { workspaceId: w.hub.config.defaultWorkspaceId, conversationId: w.convId, actor: { type: 'user', id: w.userIds[0]! }, data: { file: { ...file, size: 13, conversationId: w.convId } } }));
  const queues = liveWorker(t, w, 'google-drive');
  const { rival: summary, job } = await raceLiveJob(
    w, queues, { name: 'attachment', data: { file }, park: DRIVE_RESERVE, target: `${w.conn.id}:file:${file.id}` },
    () => backfill(w), 'the backfill to reach the attachment',
  );

  const copies = [...w.api.files.values()].filter((f) => f.content === '%PDF-1.4 race');
  t.is(copies.length, 1, 'one copy of the attachment in Drive');
  t.deepEqual((await queues.queue('google-drive').getJob(job.id!))?.returnvalue, { result: 'written' }, 'the live job uploaded it');
  // The transcript (two messages) is the backfill's one write; the attachment was already there when its turn came.
  t.like(summary, { written: 1, skipped: 1, failed: 0 });
});

test('dropbox: a backfill racing the live worker does not leave the older transcript in place', async (t) => {
  const w = await world(t, 'dropbox');
  const queues = liveWorker(t, w, 'dropbox');
  const { rival: summary } = await raceLiveJob(w, queues, { name: 'transcript', park: /^POST \/content\/2\/files\/upload/ }, async () => {
    await say(w, 0, 'third idea, after the live render');
    return backfill(w);
  }, 'the backfill to reach the conversation');

  const files = transcripts(w);
  t.is(files.length, 1, 'Dropbox paths are per conversation: one file either way');
  t.regex(files[0]!.content, /third idea/, 'the newer render is the one left in Dropbox');
  t.like(summary, { written: 1, failed: 0 });
});

test('drive: two processes\' workers on the same conversation at once make one transcript file', async (t) => {
  const w = await world(t, 'google-drive');
  // Two plugin instances with their own queue connections, as two hub processes would run them.
  const a = liveWorker(t, w, 'google-drive');
  liveWorker(t, w, 'google-drive');
  // While one worker is busy with the first job, the next one goes to the other.
  const { rival: second } = await raceLiveJob(w, a, { name: 'transcript', park: DRIVE_RESERVE }, async () => {
    await say(w, 1, 'third idea, after the first render');
    return a.add('google-drive', 'transcript', { connectionId: w.conn.id, conversationId: w.convId }, { jobId: `t-${w.conn.id}-${newId('evt')}` });
  }, 'the second worker to reach the conversation');
  await until(async () => (await second.getState()) === 'completed', 30_000, 'the second job');

  const files = transcripts(w);
  t.is(files.length, 1);
  t.regex(files[0]!.content, /third idea/);
});

test('drive: a writer whose lease ran out while its create was in flight neither duplicates the file nor leaves its older content', async (t) => {
  const w = await world(t, 'google-drive');
  const queues = liveWorker(t, w, 'google-drive');
  const held = w.api.park(DRIVE_CREATE);
  const job = await queues.add('google-drive', 'transcript', { connectionId: w.conn.id, conversationId: w.convId }, { jobId: `t-${w.conn.id}-${newId('evt')}` });
  await held.arrived;
  // The live job stalls past its lease (here: the key is gone, as when it expired); a backfill gets the target.
  const redis = new Redis(servers.redis.url);
  t.teardown(() => redis.disconnect());
  const leases = new Set(w.claims.filter((k) => k.endsWith(`:${w.conn.id}:${w.convId}`)));
  let deleted = 0;
  for (const key of leases) deleted += await redis.del(key);
  await say(w, 0, 'third idea, after the live render');
  const summary = await backfill(w);
  t.like(summary, { written: 1, failed: 0 });
  t.regex(transcripts(w)[0]?.content ?? '', /third idea/);
  // Now the stalled create lands, with the older render.
  held.release();
  await until(async () => (await job.getState()) === 'completed', 30_000, 'the live job');

  const files = transcripts(w);
  t.is(files.length, 1, 'the create reused the id the first writer reserved: no second file');
  t.regex(files[0]!.content, /third idea/, 'the stale writer noticed its lease was gone and wrote the current render again');
  t.is(deleted, 1, 'the live job did hold the conversation\'s lease');
  t.deepEqual((await queues.queue('google-drive').getJob(job.id!))?.returnvalue, { result: 'written' }, 'and counts that as its write');
});

test('leases: one holder per target across Redis clients, released or checked only by its holder, given up after waitMs', async (t) => {
  // Two clients stand for two processes; a prefix of this test's own.
  const [ra, rb] = [new Redis(servers.redis.url), new Redis(servers.redis.url)];
  t.teardown(() => {
    ra.disconnect();
    rb.disconnect();
  });
  const prefix = `voxa:lease-test-${randomUUID()}`;
  const a = new Leases(ra, prefix);
  const b = new Leases(rb, prefix, { waitMs: 300 });

  const held = await a.acquire('con_1:cnv_1');
  await t.throwsAsync(b.acquire('con_1:cnv_1'), { instanceOf: RetryableError, message: /still being written by another sync/ });
  const other = await b.acquire('con_1:cnv_2');
  await other.release();
  await held.check();
  await held.release();
  const next = await b.acquire('con_1:cnv_1');
  t.true((await rb.pttl(`${prefix}:storage-lease:con_1:cnv_1`)) > 0, 'a lease always has a TTL');

  // Taken over (as after an expiry): the old holder's check fails, and its release leaves the new lease alone.
  await ra.del(`${prefix}:storage-lease:con_1:cnv_1`);
  const taker = await a.acquire('con_1:cnv_1');
  await t.throwsAsync(next.check(), { instanceOf: LeaseLostError });
  await next.release();
  await taker.check();
  await taker.release();
  t.is(await ra.exists(`${prefix}:storage-lease:con_1:cnv_1`), 0);

  // A holder past maxHoldMs is no longer renewed: the key runs out and its next check fails.
  const wedged = await new Leases(ra, prefix, { ttlMs: 300, maxHoldMs: 0 }).acquire('con_1:cnv_3');
  await until(async () => (await ra.exists(`${prefix}:storage-lease:con_1:cnv_3`)) === 0, 10_000, 'the lease to run out');
  await t.throwsAsync(wedged.check(), { instanceOf: LeaseLostError });
  await wedged.release();
});

/** A stored file as core/files keeps it: the `files` document and its bytes in the hub's local blob store. */
async function storedFile(w: World, bytes: Buffer): Promise<{ id: string; name: string; contentType: string }> {
  const { writeFileSync, mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { createBlobStore } = await import('../../core/files/service.js');
  const id = newId('fil');
  const ws = w.hub.config.defaultWorkspaceId;
  const blobKey = `${ws}/${id}/main`;
  const tmp = join(mkdtempSync(join(tmpdir(), 'voxa-blob-')), 'f');
  writeFileSync(tmp, bytes);
  await createBlobStore(w.hub).putFile(blobKey, tmp, { size: bytes.length, contentType: 'application/pdf' });
  await w.hub.store.docs.put('files', id, {
    id, workspaceId: ws, conversationId: w.convId, uploaderId: w.userIds[0], name: 'deck.pdf', contentType: 'application/pdf', size: bytes.length,
    sha256: '', disposition: 'attachment', blobKey, createdAt: new Date().toISOString(),
  });
  return { id, name: 'deck.pdf', contentType: 'application/pdf' };
}
