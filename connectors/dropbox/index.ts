/**
 * Dropbox through the official `dropbox` SDK (10.34, the last line that runs on Node 20). OAuth2 with PKCE
 * (no client secret needed) and offline access for a refresh token. The SDK always builds https URLs on
 * dropboxapi.com; `apiBaseUrl` swaps them through the SDK's `fetch` option, which is how tests aim the real
 * SDK at a local stand-in (`/api/2/…`, `/content/2/…`).
 */
import { Dropbox, DropboxResponseError } from 'dropbox';
import { z } from 'zod';
import { RateLimitedError } from '../queues.js';
import { withAccessToken, type OAuthFields } from '../oauth2.js';
import { defineStorageConnector, type AccountStorageClient, type PutFile } from '../storage.js';
import { errorForStatus, retryAfterMs, type ConnectorContext, type ResolvedConnection } from '../types.js';

const AUTHORIZE_URL = 'https://www.dropbox.com/oauth2/authorize';
const TOKEN_URL = 'https://api.dropboxapi.com/oauth2/token';

export const DropboxConfigSchema = z.object({
  clientId: z.string().min(1).describe('App key of your Dropbox app.'),
  clientSecret: z.string().optional().describe('App secret (not needed with PKCE).'),
  folderPath: z
    .string()
    .regex(/^\/[^\\]*$/, 'an absolute Dropbox path such as /Voxa Hub')
    .default('/Voxa Hub')
    .describe('Folder transcripts go into.'),
  apiBaseUrl: z.string().url().optional().describe('Base URL override for api/content hosts (for tests and proxies; operator only: CLI, not REST).'),
  authorizeUrl: z.string().url().optional().describe('OAuth authorize endpoint override (operator only).'),
  tokenUrl: z.string().url().optional().describe('OAuth token endpoint override (operator only).'),
  accessToken: z.string().optional(),
  refreshToken: z.string().optional(),
  expiresAt: z.string().optional(),
});
export type DropboxConfig = z.infer<typeof DropboxConfigSchema> & OAuthFields;

export function mapDropboxError(err: unknown, what: string): Error {
  if (err instanceof DropboxResponseError) {
    const headers = err.headers as unknown as Headers | undefined;
    const ra = typeof headers?.get === 'function' ? headers.get('retry-after') : null;
    const body = err.error as { error?: { retry_after?: number } } | undefined;
    if (err.status === 429) {
      return new RateLimitedError(`${what}: rate limited`, retryAfterMs(ra) ?? (body?.error?.retry_after ?? 30) * 1000);
    }
    return errorForStatus(err.status, what, ra);
  }
  return errorForStatus(503, `${what}: ${(err as Error).message}`);
}

export class DropboxClient implements AccountStorageClient {
  constructor(
    private readonly conn: ResolvedConnection<DropboxConfig>,
    private readonly ctx: ConnectorContext,
  ) {}

  private sdk(token: string): Dropbox {
    const base = this.conn.config.apiBaseUrl?.replace(/\/$/, '');
    const timed = (url: string, init?: RequestInit): Promise<Response> => {
      let target = url;
      if (base) {
        const u = new URL(url);
        target = `${base}/${u.hostname.split('.')[0]}${u.pathname}${u.search}`;
      }
      return fetch(target, { ...init, signal: AbortSignal.timeout(30_000) });
    };
    return new Dropbox({ accessToken: token, fetch: timed as unknown as typeof fetch });
  }

  private call<T>(what: string, fn: (dbx: Dropbox) => Promise<T>): Promise<T> {
    const opts = { tokenUrl: this.conn.config.tokenUrl ?? TOKEN_URL, provider: 'Dropbox', mapError: (err: unknown) => mapDropboxError(err, what) };
    return withAccessToken(this.conn, this.ctx, opts, (token) => fn(this.sdk(token)));
  }

  async whoAmI(): Promise<string> {
    const r = await this.call('dropbox account', (d) => d.usersGetCurrentAccount());
    return r.result.email;
  }

  async put(file: PutFile): Promise<{ remoteId: string }> {
    // Dropbox addresses files by path; overwrite mode makes a re-put replace the file in place.
    const path = file.remoteId ?? `${this.conn.config.folderPath.replace(/\/$/, '')}/${file.name}`;
    await this.call('dropbox upload', (d) => d.filesUpload({ path, contents: file.content, mode: { '.tag': 'overwrite' }, mute: true }));
    return { remoteId: path };
  }
}

export const dropboxConnector = defineStorageConnector(
  {
    id: 'dropbox',
    displayName: 'Dropbox',
    description: 'Keeps a transcript file per conversation (and its attachments) in a Dropbox folder; nightly backup.',
    configSchema: DropboxConfigSchema,
    apiUrlField: 'apiBaseUrl',
    oauth: {
      authorizeUrl: AUTHORIZE_URL,
      tokenUrl: TOKEN_URL,
      scopes: ['files.content.write', 'files.content.read', 'account_info.read'],
      extraAuthorizeParams: { token_access_type: 'offline' },
    },
    rateLimit: { max: 5, durationMs: 1000 },
  },
  DropboxClient,
);
