/**
 * What the file-storage connectors (Google Drive, Dropbox) offer the sync plugin: put a file in the
 * connection's folder, replacing an earlier version in place. Errors come out already mapped:
 * RateLimitedError (pause the connector queue), RetryableError (retry with backoff, Retry-After honoured),
 * AuthExpiredError (connection marked broken), PermanentError.
 */
import type { z } from 'zod';
import { defineConnector, type Connector, type ConnectorContext, type OAuthSpec, type ResolvedConnection } from './types.js';

export interface PutFile {
  name: string;
  content: Buffer;
  mimeType: string;
  /** The id (Drive) or path (Dropbox) a previous put returned: the file is replaced, not duplicated. */
  remoteId?: string;
  /**
   * For a new file: an id from `reserveId()`. The create uses it, so when an earlier attempt's create landed
   * but its answer (or the caller's record of it) was lost, the retry finds that file and replaces it instead
   * of creating a second copy. The same holds for a second writer given the id the first one recorded.
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

/** A storage client that can also name the account it is signed in as (what the connector's test reports). */
export interface AccountStorageClient extends StorageClient {
  whoAmI(): Promise<string>;
}

/**
 * A file-storage connector: OAuth2 (client secret and tokens sealed; the endpoints overridable through the
 * `authorizeUrl`/`tokenUrl` config fields), a test that signs in and names the account, and the `client`
 * factory the sync plugin uses.
 */
export function defineStorageConnector<S extends z.ZodObject, C>(
  def: Pick<Connector<S>, 'id' | 'displayName' | 'description' | 'configSchema' | 'rateLimit'> & {
    oauth: Omit<OAuthSpec, 'authorizeUrlField' | 'tokenUrlField'>;
    /** The config field that overrides the API's base URL (besides authorizeUrl and tokenUrl). */
    apiUrlField: string;
  },
  Client: new (conn: ResolvedConnection<C>, ctx: ConnectorContext) => AccountStorageClient,
): Connector<S> & { client: StorageClientFactory } {
  const client = (conn: ResolvedConnection<unknown>, ctx: ConnectorContext) => new Client(conn as ResolvedConnection<C>, ctx);
  const { apiUrlField, ...rest } = def;
  const connector = defineConnector<S>({
    ...rest,
    authKind: 'oauth2',
    endpointFields: [apiUrlField, 'authorizeUrl', 'tokenUrl'],
    secretFields: ['clientSecret', 'accessToken', 'refreshToken'],
    oauthFields: ['accessToken', 'refreshToken', 'expiresAt'],
    oauth: { ...def.oauth, authorizeUrlField: 'authorizeUrl', tokenUrlField: 'tokenUrl' },
    async test(conn, ctx) {
      try {
        return { ok: true, detail: `signed in to ${def.displayName} as ${await client(conn, ctx).whoAmI()}` };
      } catch (err) {
        return { ok: false, detail: (err as Error).message };
      }
    },
  });
  return Object.assign(connector, { client });
}
