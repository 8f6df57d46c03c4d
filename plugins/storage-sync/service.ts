/**
 * Transcript sync into file storage (Google Drive, Dropbox): one transcript file per conversation, re-rendered
 * from the store whenever its messages change, and attachments beside it.
 *
 * Idempotent by construction: the transcript is rendered from the store (not patched from the event), and a
 * write happens only when the rendered content's SHA-256 differs from the last one written. The remote file id
 * and the hash live in `storage_sync_state`, so a redelivered event, a rewind or a backfill over synced history
 * writes nothing.
 *
 * That check-then-write is made safe against concurrent writers of the same target — the live worker, the
 * worker of another hub process, a backfill (which calls the sync methods directly, not through the queue) —
 * by a write lease per target in Redis (lease.ts), held from the render to the saved record. Whoever comes
 * second waits, then renders again and finds the first one's record: it updates that file (or skips) instead
 * of creating another, and since it rendered later, the newer content is the one left at the far end.
 *
 * Why a lease and not the alternatives: routing backfills through the queue (BullMQ dedupes by job id) would
 * not keep two jobs of one conversation apart — live job ids are per event, and two processes' workers run
 * jobs side by side — and would make `voxa connections backfill` depend on a running worker. Making only the
 * create idempotent at the far end (reserved ids, below) rules out a second file but not a lost update: an
 * older render uploaded after a newer one. The reserved-id claim is kept as the second line, for a writer
 * whose lease ran out under it (see exclusive) and for processes that predate the lease.
 */
import { createHash } from 'node:crypto';
import type { Job } from 'bullmq';
import type { Message } from '../../core/domain.js';
import type { AnyEvent } from '../../core/events/catalog.js';
import type { Readable } from 'node:stream';
import type { BlobStore } from '../../core/files/blob.js';
import type { FileRecord } from '../../core/files/service.js';
import type { Hub } from '../../core/hub.js';
import { redisPrefix } from '../../core/redis-keys.js';
import type { BackfillFailure, BackfillTarget } from '../../connectors/backfill.js';
import { ConnectionService } from '../../connectors/connections.js';
import { dropboxConnector } from '../../connectors/dropbox/index.js';
import { googleDriveConnector } from '../../connectors/google-drive/index.js';
import type { ConnectorQueues } from '../../connectors/queues.js';
import type { PutFile, StorageClient } from '../../connectors/storage.js';
import { AuthExpiredError, type ConnectionRecord } from '../../connectors/types.js';
import { PermanentError, RetryableError } from '../runtime/types.js';
import { Leases, LeaseLostError, type Lease } from './lease.js';
import { renderTranscript, transcriptName } from './render.js';

export const SYNC_STATE = 'storage_sync_state';
export type StorageConnectorId = 'google-drive' | 'dropbox';

const FACTORIES = { 'google-drive': googleDriveConnector.client, dropbox: dropboxConnector.client };

export interface SyncState {
  connectionId: string;
  /** Empty for a backup. */
  conversationId: string;
  kind: 'transcript' | 'attachment' | 'backup';
  remoteId: string;
  /** SHA-256 of the content written; empty while pending. */
  hash: string;
  syncedAt: string;
  /**
   * `remoteId` is an id reserved for a create that may or may not have landed: the next attempt creates under
   * it (the far end recognises a repeat) rather than making a new file.
   */
  pending?: boolean;
}

/** How many times work that lost its lease is run (the first run included) before the job is left to retry. */
const MAX_RUNS = 3;

/** The `files` collection of core/files (FileRecord documents). */
const FILES = 'files';

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

export class StorageSync {
  readonly connections: ConnectionService;
  private blobStore: BlobStore | null;
  private readonly leases: Leases;

  constructor(
    private readonly hub: Hub,
    private readonly queues: ConnectorQueues | null,
    readonly connector: StorageConnectorId,
    blobs?: BlobStore,
  ) {
    this.connections = new ConnectionService(hub, { type: 'plugin', id: connector === 'dropbox' ? 'dropbox-sync' : 'drive-sync' });
    this.blobStore = blobs ?? null;
    // The prefix the connector queues use, so every process of this hub (and only those) shares the leases.
    this.leases = new Leases(hub.redis, redisPrefix(hub.config.natsNamespace));
  }

  /** The hub's blob store, made on first use (only attachments need it; the files module loads sharp). */
  private async blobs(): Promise<BlobStore> {
    this.blobStore ??= (await import('../../core/files/service.js')).createBlobStore(this.hub);
    return this.blobStore;
  }

  static async backfillTarget(hub: Hub, rec: ConnectionRecord): Promise<BackfillTarget> {
    return new StorageSync(hub, null, rec.connector as StorageConnectorId).backfillTarget(rec);
  }

  private async client(rec: ConnectionRecord): Promise<StorageClient> {
    return FACTORIES[this.connector](await this.connections.resolve(rec), this.connections.contextFor(rec.id));
  }

  /** Plugin entry: a transcript job per interested connection (jobId dedupes a redelivered event). */
  async handleEvent(event: AnyEvent): Promise<number> {
    const conversationId = conversationOf(event);
    if (!conversationId || !this.queues) return 0;
    const conns = (await this.hub.store.docs.find<ConnectionRecord>('connections', { connector: this.connector, workspaceId: event.workspaceId })).filter(
      (c) => c.status === 'active',
    );
    for (const c of conns) {
      if (event.type === 'file.uploaded') {
        const f = (event.data as { file: { id: string; name: string; contentType: string } }).file;
        await this.queues.add(this.connector, 'attachment', { connectionId: c.id, conversationId, file: f }, { jobId: `a-${c.id}-${event.id}` });
      } else {
        await this.queues.add(this.connector, 'transcript', { connectionId: c.id, conversationId }, { jobId: `t-${c.id}-${event.id}` });
      }
    }
    return conns.length;
  }

  /** The connector queue's processor. */
  async process(job: Pick<Job, 'name' | 'data'>): Promise<unknown> {
    const data = job.data as { connectionId: string; conversationId?: string; file?: { id: string; name: string; contentType: string } };
    const rec = await this.hub.store.docs.get<ConnectionRecord>('connections', data.connectionId);
    if (!rec || rec.status !== 'active') return { skipped: 'connection not active' };
    try {
      if (job.name === 'transcript') return { result: await this.syncTranscript(rec, data.conversationId!) };
      if (job.name === 'attachment') {
        const outcome = await this.uploadAttachment(rec, data.conversationId!, data.file!);
        return { result: outcome === 'gone' ? 'skipped' : outcome };
      }
      if (job.name === 'backup') return await this.backup(rec);
    } catch (err) {
      // Usually already marked by the token code; markBroken is a no-op then, so still one event.
      if (err instanceof AuthExpiredError) await this.connections.markBroken(rec.id, err.message).catch(() => undefined);
      throw err;
    }
    throw new PermanentError(`unknown job ${job.name}`);
  }

  private async render(conversationId: string): Promise<{ name: string; content: string } | null> {
    const conv = await this.hub.store.getConversation(conversationId);
    if (!conv) return null;
    const messages: Message[] = [];
    let after = 0;
    for (;;) {
      const page = await this.hub.store.listMessages(conversationId, { after, limit: 500 });
      messages.push(...page.messages);
      if (!page.hasMore || page.messages.length === 0) break;
      after = page.messages[page.messages.length - 1]!.seq;
    }
    const names = new Map<string, string>();
    for (const id of new Set([...conv.members, ...messages.map((m) => m.senderId)])) {
      const u = await this.hub.store.getUser(id);
      if (u) names.set(id, u.name);
    }
    return { name: transcriptName(conv), content: renderTranscript(conv, messages, names) };
  }

  /**
   * Runs `work` holding the write lease on one sync target (its `storage_sync_state` key). When a check finds
   * the lease gone, the work may already have uploaded — possibly over a newer writer's upload — so it runs
   * again under a new lease with `again` set: a transcript is then written even if its record says it is
   * current, and the content left at the far end is the current one.
   */
  private async exclusive<T>(target: string, work: (lease: Lease, again: boolean) => Promise<T>): Promise<T> {
    for (let run = 1; ; run++) {
      const lease = await this.leases.acquire(target);
      try {
        return await work(lease, run > 1);
      } catch (err) {
        if (!(err instanceof LeaseLostError)) throw err;
        if (run >= MAX_RUNS) throw new RetryableError(err.message);
        this.hub.log.warn({ target, run }, 'storage sync lost its write lease during a write; writing again under a new one');
      } finally {
        await lease.release();
      }
    }
  }

  /** Re-renders and writes the transcript if it changed. */
  async syncTranscript(rec: ConnectionRecord, conversationId: string): Promise<'written' | 'skipped'> {
    return (await this.transcript(rec, conversationId)).outcome;
  }

  /** syncTranscript, also returning the rendered content (null for a conversation that is gone) for the backup. */
  private async transcript(rec: ConnectionRecord, conversationId: string): Promise<{ outcome: 'written' | 'skipped'; content: string | null }> {
    const key = `${rec.id}:${conversationId}`;
    return this.exclusive(key, async (lease, again) => {
      // Rendered under the lease: a writer that comes after us also renders after us.
      const r = await this.render(conversationId);
      if (!r) return { outcome: 'skipped', content: null };
      const hash = createHash('sha256').update(r.content).digest('hex');
      const state = await this.hub.store.docs.get<SyncState>(SYNC_STATE, key);
      if (state?.hash === hash && !again) return { outcome: 'skipped', content: r.content };
      const file = { name: r.name, content: Buffer.from(r.content), mimeType: 'text/markdown' };
      await this.write(lease, rec, key, state, { connectionId: rec.id, conversationId, kind: 'transcript' }, file, hash);
      return { outcome: 'written', content: r.content };
    });
  }

  /**
   * Writes the file a sync record stands for and then the record; the caller holds the target's lease, checked
   * before each of the two. An existing record's file is replaced in place. A new file first gets its remote id
   * reserved and recorded as pending where the provider can do that (Drive, see claim), so an upload that landed
   * but whose answer or record save was lost is recognised on the retry (Drive refuses a second create with the
   * same id) and never stored twice. Dropbox needs no reservation: paths are deterministic and uploads
   * overwrite. `hash` is the content's, when the caller has it already.
   */
  private async write(
    lease: Lease,
    rec: ConnectionRecord,
    key: string,
    state: SyncState | null | undefined,
    base: Pick<SyncState, 'connectionId' | 'conversationId' | 'kind'>,
    file: Pick<PutFile, 'name' | 'content' | 'mimeType'>,
    hash = createHash('sha256').update(file.content).digest('hex'),
  ): Promise<void> {
    const client = await this.client(rec);
    let target: Pick<PutFile, 'remoteId' | 'reservedId'> = {};
    if (state && !state.pending) target = { remoteId: state.remoteId };
    else if (state?.pending) target = { reservedId: state.remoteId };
    else if (client.reserveId) target = await this.claim(client.reserveId.bind(client), key, base);
    await lease.check();
    const { remoteId } = await client.put({ ...file, ...target });
    // A writer whose lease ran out during the upload must not record it: exclusive() runs it again.
    await lease.check();
    await this.hub.store.docs.put<SyncState>(SYNC_STATE, key, { ...base, remoteId, hash, syncedAt: new Date().toISOString() });
  }

  /**
   * Reserves the id a new file is to be created under and records it as pending, with an insert: of two
   * writers that both found no record, only the first claim stands. Under the lease that takes a writer whose
   * lease ran out, or a process without leases (an older version during an upgrade). The other writer adopts
   * the standing claim's id (or file), so its create meets Drive's 409 and becomes an update of the one file.
   */
  private async claim(
    reserveId: () => Promise<string>,
    key: string,
    base: Pick<SyncState, 'connectionId' | 'conversationId' | 'kind'>,
  ): Promise<Pick<PutFile, 'remoteId' | 'reservedId'>> {
    const reservedId = await reserveId();
    const pending: SyncState = { ...base, remoteId: reservedId, hash: '', syncedAt: new Date().toISOString(), pending: true };
    if (await this.hub.store.docs.insert<SyncState>(SYNC_STATE, key, pending)) return { reservedId };
    const standing = await this.hub.store.docs.get<SyncState>(SYNC_STATE, key);
    if (standing) return standing.pending ? { reservedId: standing.remoteId } : { remoteId: standing.remoteId };
    // The standing record was removed again meanwhile: nothing else claims this id.
    await this.hub.store.docs.put<SyncState>(SYNC_STATE, key, pending);
    return { reservedId };
  }

  /**
   * Uploads an attachment beside the transcript, once per (connection, file): the bytes come from the hub's
   * blob store (core/files), found through the file's `files` document. A file that was removed meanwhile is
   * 'gone' (the job reports it as skipped, backfill as ignored); a document without its blob fails the job (kept,
   * retryable with `connections retry-failed`).
   */
  private async uploadAttachment(rec: ConnectionRecord, conversationId: string, file: { id: string }): Promise<'written' | 'skipped' | 'gone'> {
    const key = `${rec.id}:file:${file.id}`;
    // A second run after a lost lease finds the record of whichever upload finished: the bytes are the same.
    return this.exclusive(key, async (lease) => {
      const state = await this.hub.store.docs.get<SyncState>(SYNC_STATE, key);
      if (state && !state.pending) return 'skipped';
      const record = await this.hub.store.docs.get<FileRecord>(FILES, file.id);
      // Another workspace's file id never reaches this connection's folder.
      if (!record || record.workspaceId !== rec.workspaceId || record.conversationId !== conversationId) {
        this.hub.log.info({ connectionId: rec.id, fileId: file.id }, 'attachment no longer in the file store; skipped');
        return 'gone';
      }
      const blob = await (await this.blobs()).get(record.blobKey);
      if (!blob) throw new PermanentError(`attachment ${file.id}: its content is missing from the blob store`);
      const content = await readAll(blob.stream);
      // The file id keeps the name unique per attachment: two uploads named "report.pdf" stay two files, and a
      // retried Dropbox upload lands on the same path (overwrite) instead of beside it.
      const name = `${conversationId} - ${file.id} - ${record.name.replace(/[\\/:*?"<>|]/g, '_')}`;
      await this.write(lease, rec, key, state, { connectionId: rec.id, conversationId, kind: 'attachment' }, { name, content, mimeType: record.contentType });
      return 'written';
    });
  }

  /**
   * Nightly full backup: re-renders every conversation this connection has synced (repairing anything missed)
   * and writes a dated snapshot of all transcripts.
   */
  async backup(rec: ConnectionRecord): Promise<{ conversations: number; written: number }> {
    const states = (await this.hub.store.docs.find<SyncState>(SYNC_STATE, { connectionId: rec.id, kind: 'transcript' })) ?? [];
    let written = 0;
    const parts: string[] = [];
    for (const s of states) {
      // The render the sync just made (and wrote, or found current) is the snapshot's: no second render.
      const { outcome, content } = await this.transcript(rec, s.conversationId);
      if (outcome === 'written') written++;
      if (content !== null) parts.push(content);
    }
    const day = new Date().toISOString().slice(0, 10);
    // One snapshot per day: a retried or repeated backup replaces the day's file rather than adding another.
    const key = `${rec.id}:backup:${day}`;
    const file = { name: `backup-${day}.md`, content: Buffer.from(parts.join('\n---\n\n')), mimeType: 'text/markdown' };
    await this.exclusive(key, async (lease) => {
      const state = await this.hub.store.docs.get<SyncState>(SYNC_STATE, key);
      await this.write(lease, rec, key, state, { connectionId: rec.id, conversationId: '', kind: 'backup' }, file);
    });
    return { conversations: states.length, written };
  }

  /** Registers (idempotently) the nightly backup of every active connection as a repeatable job. */
  async scheduleBackups(pattern = '0 3 * * *'): Promise<number> {
    if (!this.queues) return 0;
    const conns = await this.connections.allOf(this.connector);
    const q = this.queues.queue(this.connector);
    for (const c of conns) {
      if (c.status === 'active') await q.upsertJobScheduler(`backup-${c.id}`, { pattern }, { name: 'backup', data: { connectionId: c.id } });
      else await q.removeJobScheduler(`backup-${c.id}`);
    }
    return conns.length;
  }

  /**
   * Backfill: attachments are uploaded as their events come (once per connection and file, like live sync);
   * message and conversation events only note their conversation, whose transcript is rendered once at the end.
   * The work is done here, not through the queue, under the same write leases as the live worker's: a target
   * the worker is writing at that moment waits for it, then counts as written or skipped by what it finds.
   */
  backfillTarget(rec: ConnectionRecord): BackfillTarget {
    const touched = new Set<string>();
    return {
      accept: async (event) => {
        const c = conversationOf(event);
        if (!c) return 'ignored';
        if (event.type === 'file.uploaded') {
          const outcome = await this.uploadAttachment(rec, c, (event.data as { file: { id: string } }).file);
          // A file no longer in the store (or not this workspace's) has nothing left to copy.
          return outcome === 'gone' ? 'ignored' : outcome;
        }
        touched.add(c);
        return 'deferred';
      },
      finish: async () => {
        let written = 0;
        let skipped = 0;
        const failures: BackfillFailure[] = [];
        for (const c of touched) {
          try {
            if ((await this.syncTranscript(rec, c)) === 'written') written++;
            else skipped++;
          } catch (err) {
            failures.push({ conversationId: c, reason: `transcript: ${(err as Error).message}` });
          }
        }
        return { written, skipped, failures };
      },
    };
  }
}

const TRANSCRIPT_EVENTS = new Set(['message.created', 'message.updated', 'message.deleted', 'conversation.created', 'conversation.updated', 'file.uploaded']);

function conversationOf(event: AnyEvent): string | undefined {
  return TRANSCRIPT_EVENTS.has(event.type) ? event.conversationId : undefined;
}
