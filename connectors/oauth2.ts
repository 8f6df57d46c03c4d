/**
 * OAuth2 for connectors: authorization code with PKCE (S256) and a loopback redirect, so `voxa connections add`
 * can connect an account from a terminal (RFC 8252: the redirect goes to http://127.0.0.1:<random port>/callback
 * on the user's own machine), and token refresh that persists the new tokens and marks the connection broken
 * when the grant was revoked (invalid_grant).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { AuthExpiredError, RetryableError, retryAfterMs, type ConnectorContext, type ResolvedConnection } from './types.js';

export interface OAuthClient {
  authorizeUrl: string;
  tokenUrl: string;
  clientId: string;
  /** Google requires it even for installed apps; Dropbox PKCE apps have none. */
  clientSecret?: string;
  scopes: string[];
  extraAuthorizeParams?: Record<string, string>;
}

export interface TokenSet {
  accessToken: string;
  refreshToken?: string;
  /** ISO time the access token expires. */
  expiresAt: string;
}

export function pkcePair(): { verifier: string; challenge: string } {
  const verifier = randomBytes(48).toString('base64url'); // 64 chars, within RFC 7636's 43–128
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  return { verifier, challenge };
}

async function tokenRequest(tokenUrl: string, form: Record<string, string>): Promise<TokenSet> {
  let res: Response;
  try {
    res = await fetch(tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams(form).toString(),
      signal: AbortSignal.timeout(15_000),
    });
  } catch (err) {
    throw new RetryableError(`token endpoint unreachable: ${(err as Error).message}`);
  }
  const body = (await res.json().catch(() => ({}))) as { access_token?: string; refresh_token?: string; expires_in?: number; error?: string; error_description?: string };
  if (!res.ok || !body.access_token) {
    // invalid_grant: the refresh token (or code) was revoked, expired or already used — only the user can fix it.
    if (body.error === 'invalid_grant' || body.error === 'invalid_client' || res.status === 401) {
      throw new AuthExpiredError(`grant revoked: ${body.error ?? `HTTP ${res.status}`}${body.error_description ? ` (${body.error_description})` : ''}`);
    }
    if (res.status === 429 || res.status >= 500) throw new RetryableError(`token endpoint: HTTP ${res.status}`, retryAfterMs(res.headers.get('retry-after')));
    throw new AuthExpiredError(`token request refused: ${body.error ?? `HTTP ${res.status}`}`);
  }
  return {
    accessToken: body.access_token,
    ...(body.refresh_token ? { refreshToken: body.refresh_token } : {}),
    expiresAt: new Date(Date.now() + (body.expires_in ?? 3600) * 1000).toISOString(),
  };
}

/**
 * Runs the consent flow: listens on 127.0.0.1:<random>/callback, hands the consent URL to `onUrl` (print it,
 * open a browser), waits for the redirect, checks `state`, and exchanges the code with the PKCE verifier.
 */
export async function loopbackAuthorize(client: OAuthClient, onUrl: (url: string) => void, timeoutMs = 5 * 60_000): Promise<TokenSet> {
  const { verifier, challenge } = pkcePair();
  const state = randomBytes(16).toString('base64url');
  return new Promise<TokenSet>((resolve, reject) => {
    let redirectUri = '';
    const server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      if (url.pathname !== '/callback') {
        res.writeHead(404).end();
        return;
      }
      const finish = (ok: boolean, text: string): void => {
        res.writeHead(ok ? 200 : 400, { 'content-type': 'text/plain; charset=utf-8' }).end(text);
        clearTimeout(timer);
        server.close();
      };
      if (url.searchParams.get('state') !== state) {
        // Not our flow (or a forged redirect): refuse without ending the wait.
        res.writeHead(400, { 'content-type': 'text/plain' }).end('state mismatch');
        return;
      }
      const error = url.searchParams.get('error');
      const code = url.searchParams.get('code');
      if (error || !code) {
        finish(false, `Authorization failed: ${error ?? 'no code'}. You can close this window.`);
        reject(new AuthExpiredError(`authorization refused: ${error ?? 'no code'}`));
        return;
      }
      tokenRequest(client.tokenUrl, {
        grant_type: 'authorization_code',
        code,
        redirect_uri: redirectUri,
        client_id: client.clientId,
        code_verifier: verifier,
        ...(client.clientSecret ? { client_secret: client.clientSecret } : {}),
      }).then(
        (tokens) => {
          finish(true, 'Connected to Voxa Hub. You can close this window.');
          resolve(tokens);
        },
        (err: Error) => {
          finish(false, `Token exchange failed: ${err.message}`);
          reject(err);
        },
      );
    });
    const timer = setTimeout(() => {
      server.close();
      reject(new Error(`no authorization within ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
    server.listen(0, '127.0.0.1', () => {
      redirectUri = `http://127.0.0.1:${(server.address() as { port: number }).port}/callback`;
      const u = new URL(client.authorizeUrl);
      const params: Record<string, string> = {
        response_type: 'code',
        client_id: client.clientId,
        redirect_uri: redirectUri,
        state,
        code_challenge: challenge,
        code_challenge_method: 'S256',
        ...(client.scopes.length ? { scope: client.scopes.join(' ') } : {}),
        ...client.extraAuthorizeParams,
      };
      for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
      onUrl(u.toString());
    });
  });
}

export async function refreshTokens(client: Pick<OAuthClient, 'tokenUrl' | 'clientId' | 'clientSecret'>, refreshToken: string): Promise<TokenSet> {
  const t = await tokenRequest(client.tokenUrl, {
    grant_type: 'refresh_token',
    refresh_token: refreshToken,
    client_id: client.clientId,
    ...(client.clientSecret ? { client_secret: client.clientSecret } : {}),
  });
  // Providers that do not rotate refresh tokens omit it: keep the one we have.
  return { ...t, refreshToken: t.refreshToken ?? refreshToken };
}

/** Config fields every OAuth2 connection carries. */
export interface OAuthFields {
  clientId: string;
  clientSecret?: string;
  accessToken?: string;
  refreshToken?: string;
  expiresAt?: string;
}

const inflight = new Map<string, Promise<string>>();

/**
 * A valid access token for the connection: the stored one while it has more than a minute left, else a
 * refreshed one (persisted sealed). One refresh per connection at a time in a process. A revoked grant marks
 * the connection broken and throws AuthExpiredError.
 */
export async function accessTokenFor(conn: ResolvedConnection<OAuthFields>, ctx: ConnectorContext, tokenUrl: string, force = false): Promise<string> {
  const c = conn.config;
  if (!force && c.accessToken && c.expiresAt && Date.parse(c.expiresAt) - Date.now() > 60_000) return c.accessToken;
  if (!c.refreshToken) {
    await ctx.markBroken('no refresh token; reconnect the account');
    throw new AuthExpiredError('access token expired and there is no refresh token');
  }
  const key = conn.record.id;
  let p = inflight.get(key);
  if (!p) {
    p = (async () => {
      try {
        const t = await refreshTokens({ tokenUrl, clientId: c.clientId, ...(c.clientSecret ? { clientSecret: c.clientSecret } : {}) }, c.refreshToken!);
        await ctx.saveSecrets({ accessToken: t.accessToken, refreshToken: t.refreshToken, expiresAt: t.expiresAt });
        c.accessToken = t.accessToken;
        c.refreshToken = t.refreshToken;
        c.expiresAt = t.expiresAt;
        return t.accessToken;
      } catch (err) {
        if (err instanceof AuthExpiredError) await ctx.markBroken(err.message);
        throw err;
      } finally {
        inflight.delete(key);
      }
    })();
    inflight.set(key, p);
  }
  return p;
}

/**
 * Runs a provider call with a valid access token. When the provider answers 401 (mapped to AuthExpiredError),
 * refreshes once and tries again; a second refusal marks the connection broken. `mapError` turns the SDK's
 * error into our retryable / permanent / auth-expired errors.
 */
export async function withAccessToken<T>(
  conn: ResolvedConnection<OAuthFields>,
  ctx: ConnectorContext,
  opts: { tokenUrl: string; provider: string; mapError: (err: unknown) => Error },
  fn: (token: string) => Promise<T>,
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    const token = await accessTokenFor(conn, ctx, opts.tokenUrl, attempt > 0);
    try {
      return await fn(token);
    } catch (err) {
      const mapped = opts.mapError(err);
      if (mapped instanceof AuthExpiredError && attempt === 0) continue;
      if (mapped instanceof AuthExpiredError) await ctx.markBroken(`${opts.provider} refused the refreshed token: ${mapped.message}`);
      throw mapped;
    }
  }
}
