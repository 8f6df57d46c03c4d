/**
 * What the file-storage connectors (Google Drive, Dropbox) offer the sync plugin: put a file in the
 * connection's folder, replacing an earlier version in place. Errors come out already mapped:
 * RateLimitedError (pause the connector queue), RetryableError (retry with backoff, Retry-After honoured),
 * AuthExpiredError (connection marked broken), PermanentError.
 */
import type { ConnectorContext, ResolvedConnection } from './types.js';

export interface PutFile {
  name: string;
  content: Buffer;
  mimeType: string;
  /** The id (Drive) or path (Dropbox) a previous put returned: the file is replaced, not duplicated. */
  remoteId?: string;
  /**
   * For a new file: an id from `reserveId()`. The create uses it, so when an earlier attempt's create landed
   * but its answer (or the caller's record of it) was lost, the retry finds that file and replaces it instead
   * of creating a second copy.
   */
  reservedId?: string;
}

export interface StorageClient {
  put(file: PutFile): Promise<{ remoteId: string }>;
  /**
   * Reserves the remote id a new file will be created under (Drive: files.generateIds), for callers to record
   * before the upload. Absent where files are addressed by a deterministic path (Dropbox): there an upload
   * retried to the same path overwrites, which is already idempotent.
   */
  reserveId?(): Promise<string>;
}

export type StorageClientFactory = (conn: ResolvedConnection<Record<string, unknown>>, ctx: ConnectorContext) => StorageClient;
