/**
 * The `drive-sync` and `dropbox-sync` plugins: the same transcript sync (service.ts) against two connectors.
 * Handlers only enqueue jobs on the connector's BullMQ queue; the queue applies the provider's rate limit,
 * pauses on 429 for the Retry-After time, retries with backoff and runs the nightly backup schedule.
 */
import { ConnectorQueues } from '../../connectors/queues.js';
import { googleDriveConnector } from '../../connectors/google-drive/index.js';
import { dropboxConnector } from '../../connectors/dropbox/index.js';
import { definePlugin, RetryableError, type Plugin } from '../runtime/types.js';
import { StorageSync, type StorageConnectorId } from './service.js';

function createStoragePlugin(name: string, connector: StorageConnectorId, limit: { max: number; durationMs: number }): Plugin & { sync(): StorageSync } {
  let sync: StorageSync | null = null;
  let queues: ConnectorQueues | null = null;
  const plugin = definePlugin({
    manifest: {
      name,
      description: `Keeps conversation transcripts and attachments in ${connector === 'dropbox' ? 'Dropbox' : 'Google Drive'}.`,
      events: ['message.created', 'message.updated', 'message.deleted', 'conversation.created', 'conversation.updated', 'file.uploaded'],
      concurrency: 4,
      connectors: [connector],
    },
    async start(ctx) {
      queues = new ConnectorQueues(ctx.hub);
      sync = new StorageSync(ctx.hub, queues, connector);
      const s = sync;
      // One job at a time per connector in this process. What keeps two writers of one file apart — this worker,
      // another process's, a backfill — is the per-target write lease in StorageSync, not this setting.
      queues.work(connector, (job) => s.process(job), { concurrency: 1, limiter: limit });
      await sync.scheduleBackups().catch((err: Error) => ctx.log.warn({ err: err.message }, 'could not schedule backups'));
    },
    async handle(event) {
      if (!sync) throw new RetryableError(`${name} plugin not started`);
      await sync.handleEvent(event);
    },
    async stop() {
      await queues?.close();
      sync = null;
    },
  });
  return Object.assign(plugin, {
    sync(): StorageSync {
      if (!sync) throw new Error(`${name} not started`);
      return sync;
    },
  });
}

export const createDriveSyncPlugin = (): Plugin & { sync(): StorageSync } => createStoragePlugin('drive-sync', 'google-drive', googleDriveConnector.rateLimit!);
export const createDropboxSyncPlugin = (): Plugin & { sync(): StorageSync } => createStoragePlugin('dropbox-sync', 'dropbox', dropboxConnector.rateLimit!);
