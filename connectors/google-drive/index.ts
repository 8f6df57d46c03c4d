/**
 * Google Drive through the per-API `@googleapis/drive` package. OAuth2 (PKCE, loopback redirect) with the
 * `drive.file` scope: the hub only sees files it created. `rootUrl` (and the OAuth endpoints) can be pointed
 * elsewhere — tests aim the real SDK at a local stand-in; it is passed per call too, because the SDK builds
 * media-upload URLs from the per-call options only.
 */
import { Readable } from 'node:stream';
import { drive, type drive_v3 } from '@googleapis/drive';
import { z } from 'zod';
import { RateLimitedError } from '../queues.js';
import { withAccessToken, type OAuthFields } from '../oauth2.js';
import { defineStorageConnector, type AccountStorageClient, type PutFile } from '../storage.js';
import { errorForStatus, retryAfterMs, type ConnectorContext, type ResolvedConnection } from '../types.js';

const AUTHORIZE_URL = 'https://accounts.google.com/o/oauth2/v2/auth';
const TOKEN_URL = 'https://oauth2.googleapis.com/token';

export const DriveConfigSchema = z.object({
  clientId: z.string().min(1).describe('OAuth client id (Google Cloud console, "Desktop app" type).'),
  clientSecret: z.string().min(1).describe('OAuth client secret of that client.'),
  folderId: z.string().min(1).default('root').describe('Id of the Drive folder transcripts go into ("root" = My Drive).'),
  rootUrl: z.string().url().optional().describe('API base URL override (for tests and proxies; operator only: CLI, not REST).'),
  authorizeUrl: z.string().url().optional().describe('OAuth authorize endpoint override (operator only).'),
  tokenUrl: z.string().url().optional().describe('OAuth token endpoint override (operator only).'),
  accessToken: z.string().optional(),
  refreshToken: z.string().optional(),
  expiresAt: z.string().optional(),
});
export type DriveConfig = z.infer<typeof DriveConfigSchema> & OAuthFields;

const CALL_TIMEOUT_MS = 30_000;

function statusOf(err: unknown): { status: number | undefined; retryAfter: string | null; reason: string | undefined } {
  const e = err as { status?: number; code?: string | number; response?: { status?: number; headers?: Record<string, string> | Headers; data?: { error?: { errors?: Array<{ reason?: string }> } } } };
  const h = e.response?.headers;
  const retryAfter = h ? (typeof (h as Headers).get === 'function' ? (h as Headers).get('retry-after') : ((h as Record<string, string>)['retry-after'] ?? null)) : null;
  return { status: e.response?.status ?? (typeof e.status === 'number' ? e.status : undefined), retryAfter, reason: e.response?.data?.error?.errors?.[0]?.reason };
}

/** Maps a Drive API failure to the framework's errors. */
export function mapDriveError(err: unknown, what: string): Error {
  const { status, retryAfter, reason } = statusOf(err);
  if (status === undefined) return errorForStatus(503, `${what}: ${(err as Error).message}`); // network, timeout
  // Drive signals quota with 429, or 403 with a rate-limit reason.
  if (status === 429 || (status === 403 && /rateLimitExceeded|userRateLimitExceeded/.test(reason ?? ''))) {
    return new RateLimitedError(`${what}: rate limited (${status})`, retryAfterMs(retryAfter) ?? 30_000);
  }
  return errorForStatus(status, what, retryAfter);
}

export class DriveClient implements AccountStorageClient {
  private readonly api: drive_v3.Drive;
  private readonly rootUrl: string;

  constructor(
    private readonly conn: ResolvedConnection<DriveConfig>,
    private readonly ctx: ConnectorContext,
  ) {
    this.rootUrl = conn.config.rootUrl ?? 'https://www.googleapis.com/';
    this.api = drive({ version: 'v3', rootUrl: this.rootUrl });
  }

  /** Runs a call with a valid token; after a 401 refreshes once and tries again. */
  private call<T>(what: string, fn: (opts: { rootUrl: string; headers: Record<string, string>; retry: boolean; timeout: number }) => Promise<T>): Promise<T> {
    const opts = { tokenUrl: this.conn.config.tokenUrl ?? TOKEN_URL, provider: 'Drive', mapError: (err: unknown) => mapDriveError(err, what) };
    // Retries belong to the connector queue (backoff, Retry-After), not to the SDK.
    return withAccessToken(this.conn, this.ctx, opts, (token) =>
      fn({ rootUrl: this.rootUrl, headers: { Authorization: `Bearer ${token}` }, retry: false, timeout: CALL_TIMEOUT_MS }),
    );
  }

  async whoAmI(): Promise<string> {
    const r = await this.call('drive about', (o) => this.api.about.get({ fields: 'user(emailAddress,displayName)' }, o));
    return r.data.user?.emailAddress ?? r.data.user?.displayName ?? 'unknown user';
  }

  async reserveId(): Promise<string> {
    const r = await this.call('drive generateIds', (o) => this.api.files.generateIds({ count: 1, space: 'drive', type: 'files' }, o));
    const id = r.data.ids?.[0];
    if (!id) throw errorForStatus(502, 'drive generateIds returned no id');
    return id;
  }

  async put(file: PutFile): Promise<{ remoteId: string }> {
    // A fresh stream per attempt (a 401 retry sends the body again); a stream, not a string, so binary
    // attachments (PDFs, images) reach Drive byte for byte.
    const media = (): { mimeType: string; body: Readable } => ({ mimeType: file.mimeType, body: Readable.from([file.content]) });
    if (file.remoteId) {
      try {
        await this.call('drive update', (o) => this.api.files.update({ fileId: file.remoteId!, media: media(), fields: 'id' }, o));
        return { remoteId: file.remoteId };
      } catch (err) {
        // Someone deleted the file in Drive: write a new one rather than failing forever.
        if (!/HTTP 404/.test((err as Error).message)) throw err;
      }
    }
    const reserved = file.remoteId ? undefined : file.reservedId;
    let r;
    try {
      r = await this.call('drive create', (o) =>
        this.api.files.create(
          { requestBody: { ...(reserved ? { id: reserved } : {}), name: file.name, parents: [this.conn.config.folderId], mimeType: file.mimeType }, media: media(), fields: 'id' },
          o,
        ),
      );
    } catch (err) {
      // 409 on a create with a pre-generated id: an earlier attempt's create landed and only its answer (or our
      // record of it) was lost. Drive made no second file; bring the existing one up to date instead.
      if (!reserved || !/HTTP 409/.test((err as Error).message)) throw err;
      return this.put({ name: file.name, content: file.content, mimeType: file.mimeType, remoteId: reserved });
    }
    if (!r.data.id) throw errorForStatus(502, 'drive create returned no file id');
    return { remoteId: r.data.id };
  }
}

export const googleDriveConnector = defineStorageConnector(
  {
    id: 'google-drive',
    displayName: 'Google Drive',
    description: 'Keeps a transcript file per conversation (and its attachments) in a Drive folder; nightly backup.',
    configSchema: DriveConfigSchema,
    apiUrlField: 'rootUrl',
    oauth: {
      authorizeUrl: AUTHORIZE_URL,
      tokenUrl: TOKEN_URL,
      scopes: ['https://www.googleapis.com/auth/drive.file'],
      // offline + consent: Google returns a refresh token only then.
      extraAuthorizeParams: { access_type: 'offline', prompt: 'consent' },
    },
    // Drive's default per-user quota is generous but bursty writes to one file trip it; stay well below.
    rateLimit: { max: 10, durationMs: 1000 },
  },
  DriveClient,
);
