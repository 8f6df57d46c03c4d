/**
 * Sign in with Google: the OAuth 2.0 authorization-code flow with PKCE and OpenID Connect ID tokens.
 *
 * start    → a random state, nonce and PKCE verifier, sealed (AES-256-GCM, connectors/crypto.ts) into an
 *            HttpOnly SameSite=Lax cookie, so only the browser that started the flow can finish it; then a
 *            redirect to the provider with state, nonce and the S256 code challenge.
 * callback → the state in the URL must equal the one in the cookie (and not have been used before); the
 *            code is exchanged with the verifier and the client secret; the ID token's signature is checked
 *            against the provider's JWKS and its iss, aud, exp and nonce against what we expect.
 *
 * Accounts: a Google account is linked to a hub user by its `sub` (an `identities` document). The first
 * time, it links to an existing account only when Google says the email is verified; otherwise a new
 * customer account is created if registration is open. Accounts made this way have no usable password.
 *
 * The provider is configurable (googleIssuer), which is also how the tests point it at a local stand-in.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import { Keyring } from '../../connectors/crypto.js';
import { publicUser, type UserRecord } from '../domain.js';
import { VoxaError } from '../errors.js';
import { createEvent } from '../events/catalog.js';
import type { Hub } from '../hub.js';
import { newId } from '../ids.js';
import { OIDC_FLOW_TTL_MS, OIDC_USED_STATES_COLLECTION } from './prune.js';
import type { AuthService, Session } from './service.js';
import { dropInvite } from './invites.js';

export const OIDC_COOKIE = 'voxa_oidc';
/** How long a started sign-in may take before its cookie is no longer accepted. */
export const FLOW_TTL_MS = OIDC_FLOW_TTL_MS;
/** Marks an account that has no password (signs in through a provider only); never parses as a hash. */
export const NO_PASSWORD = '!external';

interface Discovery {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  jwks_uri: string;
}

interface FlowCookie {
  state: string;
  nonce: string;
  verifier: string;
  exp: number;
}

const b64url = (n: number) => randomBytes(n).toString('base64url');
const challengeOf = (verifier: string) => createHash('sha256').update(verifier).digest('base64url');

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function failed(reason: string, message = 'Signing in with Google failed; start again.'): VoxaError {
  return new VoxaError('SIGN_IN_FAILED', message, { reason });
}

export class GoogleSignIn {
  private readonly keyring: Keyring;
  private discovery: { doc: Discovery; at: number } | null = null;
  private jwks: ReturnType<typeof createRemoteJWKSet> | null = null;

  constructor(
    private readonly hub: Hub,
    private readonly auth: AuthService,
  ) {
    this.keyring = Keyring.from(hub.secrets.encryptionKey, hub.config.previousSecretKeys);
  }

  /** On only when a client id and secret are configured. */
  get enabled(): boolean {
    return Boolean(this.hub.config.googleClientId && this.hub.config.googleClientSecret);
  }

  private assertEnabled(): void {
    if (!this.enabled) throw new VoxaError('NOT_FOUND', 'Sign in with Google is not configured on this hub.');
  }

  /** The provider's discovery document, cached for 10 minutes; its issuer must be the configured one. */
  private async meta(): Promise<Discovery> {
    if (this.discovery && Date.now() - this.discovery.at < 10 * 60_000) return this.discovery.doc;
    const issuer = this.hub.config.googleIssuer.replace(/\/$/, '');
    let doc: Discovery;
    try {
      const res = await fetch(`${issuer}/.well-known/openid-configuration`, { signal: AbortSignal.timeout(10_000) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      doc = (await res.json()) as Discovery;
    } catch (err) {
      this.hub.log.warn({ err: (err as Error).message }, 'OIDC discovery failed');
      throw new VoxaError('UNAVAILABLE', 'The identity provider cannot be reached.');
    }
    if (doc.issuer !== issuer && doc.issuer !== this.hub.config.googleIssuer) throw new VoxaError('UNAVAILABLE', 'The identity provider names another issuer.');
    for (const k of ['authorization_endpoint', 'token_endpoint', 'jwks_uri'] as const) {
      if (typeof doc[k] !== 'string') throw new VoxaError('UNAVAILABLE', `The identity provider's discovery document lacks ${k}.`);
    }
    this.discovery = { doc, at: Date.now() };
    this.jwks = createRemoteJWKSet(new URL(doc.jwks_uri), { timeoutDuration: 10_000 });
    return doc;
  }

  /** Where the provider sends the browser back to. */
  redirectUri(origin: string): string {
    return `${(this.hub.config.publicUrl ?? origin).replace(/\/$/, '')}/v1/auth/google/callback`;
  }

  /** Begins a sign-in: the provider URL to redirect to and the sealed cookie that binds it to this browser. */
  async start(origin: string): Promise<{ url: string; cookie: string }> {
    this.assertEnabled();
    const doc = await this.meta();
    const flow: FlowCookie = { state: b64url(32), nonce: b64url(32), verifier: b64url(48), exp: Date.now() + FLOW_TTL_MS };
    const url = new URL(doc.authorization_endpoint);
    url.search = new URLSearchParams({
      response_type: 'code',
      client_id: this.hub.config.googleClientId!,
      redirect_uri: this.redirectUri(origin),
      scope: 'openid email profile',
      state: flow.state,
      nonce: flow.nonce,
      code_challenge: challengeOf(flow.verifier),
      code_challenge_method: 'S256',
    }).toString();
    return { url: url.toString(), cookie: this.keyring.seal(JSON.stringify(flow), 'oidc-flow') };
  }

  /** Finishes a sign-in from the provider's redirect. `cookie` is the sealed flow cookie (if the browser sent one). */
  async callback(query: { code?: string; state?: string; error?: string }, cookie: string | undefined, origin: string, ip: string): Promise<Session> {
    this.assertEnabled();
    if (query.error) throw failed('provider_error', 'The identity provider refused the sign-in.');
    if (!cookie) throw failed('no_flow_cookie', 'This sign-in was not started in this browser.');
    let flow: FlowCookie;
    try {
      flow = JSON.parse(this.keyring.open(cookie, 'oidc-flow')) as FlowCookie;
    } catch {
      throw failed('bad_flow_cookie');
    }
    if (!query.state || !same(query.state, flow.state)) throw failed('state_mismatch');
    if (Date.now() > flow.exp) throw failed('flow_expired');
    if (!query.code) throw failed('no_code');
    // One use per flow, also across processes: a replayed callback URL with the same cookie stops here.
    if (!(await this.hub.store.docs.insert(OIDC_USED_STATES_COLLECTION, createHash('sha256').update(flow.state).digest('hex'), { at: new Date().toISOString() }))) {
      throw failed('state_used');
    }
    const doc = await this.meta();
    const idToken = await this.exchange(doc, query.code, flow.verifier, origin);
    const claims = await this.verify(doc, idToken, flow.nonce);
    const user = await this.userFor(claims);
    if (user.disabled) throw new VoxaError('ACCOUNT_DISABLED');
    // Google's sign-in cannot carry our one-time code, and skipping it would make the provider a way around
    // the second factor: such accounts sign in with password and code.
    if (user.totp?.enabled) throw failed('two_factor_account', 'This account uses two-factor sign-in; sign in with your password and code.');
    void this.hub.outbox
      .dispatch(this.hub.chat.outboxOf([createEvent('user.login', { workspaceId: user.workspaceId, userId: user.id, actor: { type: 'user', id: user.id }, data: { ip, method: 'google' } })]), { stored: false })
      .catch(() => undefined);
    return this.auth.issueSession(user);
  }

  private async exchange(doc: Discovery, code: string, verifier: string, origin: string): Promise<string> {
    let res: Response;
    try {
      res = await fetch(doc.token_endpoint, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
        body: new URLSearchParams({
          grant_type: 'authorization_code',
          code,
          redirect_uri: this.redirectUri(origin),
          client_id: this.hub.config.googleClientId!,
          client_secret: this.hub.config.googleClientSecret!,
          code_verifier: verifier,
        }),
        signal: AbortSignal.timeout(10_000),
      });
    } catch {
      throw new VoxaError('UNAVAILABLE', 'The identity provider cannot be reached.');
    }
    const body = (await res.json().catch(() => ({}))) as { id_token?: unknown };
    if (!res.ok || typeof body.id_token !== 'string') throw failed('code_exchange_failed');
    return body.id_token;
  }

  private async verify(doc: Discovery, idToken: string, nonce: string): Promise<JWTPayload & { email?: string; email_verified?: boolean | string; name?: string }> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(idToken, this.jwks!, {
        issuer: doc.issuer,
        audience: this.hub.config.googleClientId!,
        algorithms: ['RS256', 'ES256', 'PS256'],
        requiredClaims: ['sub', 'exp', 'iat'],
        clockTolerance: 60,
      }));
    } catch (err) {
      const reason =
        err instanceof joseErrors.JWTExpired
          ? 'token_expired'
          : err instanceof joseErrors.JWTClaimValidationFailed
            ? `claim_${err.claim}`
            : err instanceof joseErrors.JWSSignatureVerificationFailed
              ? 'bad_signature'
              : 'bad_token';
      throw failed(reason);
    }
    if (typeof payload.nonce !== 'string' || !same(payload.nonce, nonce)) throw failed('nonce_mismatch');
    return payload as JWTPayload & { email?: string; email_verified?: boolean | string; name?: string };
  }

  /** The hub account for a verified ID token: linked before, linked now by verified email, or new. */
  private async userFor(claims: JWTPayload & { email?: string; email_verified?: boolean | string; name?: string }): Promise<UserRecord> {
    const linkId = `google:${createHash('sha256').update(String(claims.sub)).digest('hex')}`;
    const link = await this.hub.store.docs.get<{ userId: string }>('identities', linkId);
    if (link) {
      const u = await this.hub.store.getUser(link.userId);
      if (u) return u;
    }
    const verified = claims.email_verified === true || claims.email_verified === 'true';
    if (typeof claims.email !== 'string' || !verified) throw failed('email_not_verified', 'Google has not verified this email address.');
    const email = claims.email.trim().toLowerCase();
    let user = await this.hub.store.getUserByEmail(email);
    if (user) {
      // An invited account (no password yet) becomes usable; an existing one keeps its password.
      // Google has verified the address, which is what the invite code stands for: the code is spent too.
      if (user.passwordHash === null) {
        user = (await this.hub.store.updateUser(user.id, { passwordHash: NO_PASSWORD }, () => [])) ?? user;
        await dropInvite(this.hub.store.docs, user.id);
      }
    } else {
      const mode = await this.auth.registrationMode();
      if (mode === 'closed') throw new VoxaError('REGISTRATION_CLOSED');
      if (mode === 'invite') throw new VoxaError('INVITE_REQUIRED');
      const rec: UserRecord = {
        id: newId('usr'),
        workspaceId: this.hub.config.defaultWorkspaceId,
        email,
        name: (typeof claims.name === 'string' && claims.name.trim().slice(0, 100)) || email.split('@')[0]!,
        role: 'customer',
        createdAt: new Date().toISOString(),
        passwordHash: NO_PASSWORD,
        disabled: false,
      };
      const events = this.hub.chat.eventsFor((u: UserRecord) => [
        createEvent('user.registered', { workspaceId: u.workspaceId, userId: u.id, actor: { type: 'user', id: u.id }, data: { user: publicUser(u) } }),
      ]);
      user = await this.hub.store.createUser(rec, events);
      await this.hub.chat.publish(events.entries);
    }
    await this.hub.store.docs.put('identities', linkId, { userId: user.id, provider: 'google', linkedAt: new Date().toISOString() });
    return user;
  }
}
