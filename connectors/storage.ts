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
}

export interface StorageClient {
  put(file: PutFile): Promise<{ remoteId: string }>;
}

export type StorageClientFactory = (conn: ResolvedConnection<Record<string, unknown>>, ctx: ConnectorContext) => StorageClient;
