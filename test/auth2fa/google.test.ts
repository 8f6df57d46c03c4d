/**
 * Sign in with Google against a local stand-in of the provider (discovery document, JWKS, token endpoint).
 * The stand-in checks PKCE and the client credentials like Google does, and hands out ID tokens whose
 * claims and signing key each test chooses.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type KeyLike } from 'jose';
import { startServers } from '../helpers/hub.js';
import { bearer, openApiHub, type ApiHub } from '../api/support.js';

interface Grant {
  claims: Record<string, unknown>;
  /** Sign with the other key (same kid): a bad signature. */
  forge?: boolean;
}

interface Provider {
  url: string;
  grants: Map<string, Grant>;
  /** Codes handed in, with what came along. */
  exchanges: Array<Record<string, string>>;
  close(): Promise<void>;
}

const CLIENT_ID = 'voxa-test-client.apps.example';
const CLIENT_SECRET = 'stand-in-client-secret';

async function startProvider(): Promise<Provider> {
  const good = await generateKeyPair('RS256');
  const evil = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(good.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
  const grants = new Map<string, Grant>();
  const exchanges: Array<Record<string, string>> = [];
  const challenges = new Map<string, string>(); // code → expected code_challenge
  let url = '';
  const server: Server = createServer(async (req, res) => {
    const u = new URL(req.url!, url);
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (u.pathname === '/.well-known/openid-configuration') {
      return json(200, { issuer: url, authorization_endpoint: `${url}/auth`, token_endpoint: `${url}/token`, jwks_uri: `${url}/jwks` });
    }
    if (u.pathname === '/jwks') return json(200, { keys: [jwk] });
    if (u.pathname === '/token' && req.method === 'POST') {
      let raw = '';
      for await (const c of req) raw += String(c);
      const form = Object.fromEntries(new URLSearchParams(raw));
      exchanges.push(form);
      const grant = grants.get(form.code ?? '');
      if (!grant || form.client_id !== CLIENT_ID || form.client_secret !== CLIENT_SECRET || form.grant_type !== 'authorization_code') return json(400, { error: 'invalid_grant' });
      const expected = challenges.get(form.code!);
      const got = createHash('sha256').update(form.code_verifier ?? '').digest('base64url');
      if (expected && expected !== got) return json(400, { error: 'invalid_grant', error_description: 'PKCE' });
      grants.delete(form.code!); // codes are single-use
      const now = Math.floor(Date.now() / 1000);
      const claims = { iss: url, aud: CLIENT_ID, sub: 'google-sub-1', iat: now, exp: now + 300, ...grant.claims };
      const key: KeyLike = grant.forge ? evil.privateKey : good.privateKey;
      const idToken = await new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).sign(key);
      return json(200, { access_token: 'at', token_type: 'Bearer', expires_in: 300, id_token: idToken });
    }
    json(404, { error: 'not_found' });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    grants: Object.assign(grants, {
      // Record the challenge the hub sent along with each grant the test creates.
      setWithChallenge: (code: string, grant: Grant, challenge: string) => {
        challenges.set(code, challenge);
        grants.set(code, grant);
      },
    }),
    exchanges,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

let servers: Awaited<ReturnType<typeof startServers>>;
let provider: Provider;
test.before(async () => {
  servers = await startServers();
  provider = await startProvider();
});
test.after.always(async () => {
  await provider?.close();
  await servers?.dispose();
});

let n = 0;

/** Runs /start, lets the "user" approve at the provider with `grant`, then calls back with the cookie. */
async function signIn(api: ApiHub, claims: (nonce: string) => Record<string, unknown>, opts: { forge?: boolean; state?: (s: string) => string; cookie?: (c: string) => string | null } = {}) {
  const start = await api.http.get('/v1/auth/google/start');
  if (start.status !== 302) throw new Error(`start: ${start.status} ${JSON.stringify(start.body)}`);
  const loc = new URL(start.headers.location!);
  const setCookie = (start.headers['set-cookie'] as unknown as string[])[0]!;
  const cookie = setCookie.split(';')[0]!;
  const code = `code-${n++}`;
  (provider.grants as unknown as { setWithChallenge(c: string, g: Grant, ch: string): void }).setWithChallenge(
    code,
    { claims: claims(loc.searchParams.get('nonce')!), ...(opts.forge ? { forge: true } : {}) },
    loc.searchParams.get('code_challenge')!,
  );
  const state = opts.state ? opts.state(loc.searchParams.get('state')!) : loc.searchParams.get('state')!;
  const sentCookie = opts.cookie ? opts.cookie(cookie) : cookie;
  const req = api.http.get('/v1/auth/google/callback').query({ code, state, scope: 'openid email' });
  if (sentCookie) req.set('Cookie', sentCookie);
  return { start, loc, setCookie, cookie, res: await req };
}

const verified = (email: string, extra: Record<string, unknown> = {}) => (nonce: string) => ({ nonce, email, email_verified: true, name: 'Gia Google', ...extra });

test('off when not configured: 404', async (t) => {
  const api = await openApiHub(servers);
  try {
    const r = await api.http.get('/v1/auth/google/start');
    t.is(r.status, 404);
    t.is(r.body.error.code, 'NOT_FOUND');
    t.is((await api.http.get('/v1/auth/google/callback?code=x&state=y')).status, 404);
  } finally {
    await api.close();
  }
});

test('the happy path: PKCE S256, HttpOnly SameSite=Lax cookie, new account, then the same account again by sub', async (t) => {
  const api = await openApiHub(servers, { googleIssuer: provider.url, googleClientId: CLIENT_ID, googleClientSecret: CLIENT_SECRET, authRateLimitPerMinute: 1000 });
  try {
    const first = await signIn(api, verified('gia@example.test'));
    t.is(first.loc.origin + first.loc.pathname, `${provider.url}/auth`);
    t.like(Object.fromEntries(first.loc.searchParams), { response_type: 'code', client_id: CLIENT_ID, code_challenge_method: 'S256', scope: 'openid email profile' });
    t.regex(first.loc.searchParams.get('redirect_uri')!, /\/v1\/auth\/google\/callback$/);
    t.true(first.loc.searchParams.get('state')!.length >= 40);
    t.regex(first.setCookie, /HttpOnly/i);
    t.regex(first.setCookie, /SameSite=Lax/i);
    t.regex(first.setCookie, /path=\/v1\/auth\/google/i);
    t.false(first.setCookie.includes(first.loc.searchParams.get('state')!), 'the cookie is sealed, not the state in clear');

    t.is(first.res.status, 200, JSON.stringify(first.res.body));
    t.like(first.res.body.user, { email: 'gia@example.test', name: 'Gia Google', role: 'customer' });
    const me = await api.http.get('/v1/me').set(...bearer({ accessToken: first.res.body.accessToken } as never));
    t.is(me.body.user.id, first.res.body.user.id);
    // The hub sent the verifier matching the challenge, and its client secret (checked by the stand-in).
    // (Other tests of this file exchange codes concurrently, so look for this flow's exchange, not the last one.)
    const challenge = first.loc.searchParams.get('code_challenge') ?? '';
    const ex = provider.exchanges.find((e) => e.code_verifier && createHash('sha256').update(e.code_verifier).digest('base64url') === challenge);
    t.truthy(ex, 'a token request carried the verifier matching this flow’s challenge');
    // The new account has no usable password.
    t.is((await api.http.post('/v1/auth/login').send({ email: 'gia@example.test', password: '!external' })).body.error.code, 'INVALID_CREDENTIALS');
    // So two-factor sign-in (which guards password sign-in, and asks for the password to turn on) is refused up
    // front instead of an enrolment that could never be confirmed.
    const enroll = await api.http.post('/v1/me/2fa/enroll').set(...bearer({ accessToken: first.res.body.accessToken } as never));
    t.is(enroll.status, 409);
    t.regex(enroll.body.error.message, /no password/);

    // Same Google account (sub) later, even with a changed email: the same hub user.
    const again = await signIn(api, verified('gia.new@example.test'));
    t.is(again.res.status, 200);
    t.is(again.res.body.user.id, first.res.body.user.id);

    // Replaying the callback URL with the same cookie: the state is used up.
    const replay = await api.http.get('/v1/auth/google/callback').query({ code: 'code-x', state: again.loc.searchParams.get('state')! }).set('Cookie', again.cookie);
    t.is(replay.status, 401);
    t.is(replay.body.error.details.reason, 'state_used');
  } finally {
    await api.close();
  }
});

test('links an existing account only by a verified email', async (t) => {
  const api = await openApiHub(servers, { googleIssuer: provider.url, googleClientId: CLIENT_ID, googleClientSecret: CLIENT_SECRET, authRateLimitPerMinute: 1000 });
  try {
    const ana = await api.register('Ana');
    const unverified = await signIn(api, (nonce) => ({ nonce, sub: 'sub-ana', email: ana.email, email_verified: false }));
    t.is(unverified.res.status, 401);
    t.like(unverified.res.body.error, { code: 'SIGN_IN_FAILED', details: { reason: 'email_not_verified' } });
    const missing = await signIn(api, (nonce) => ({ nonce, sub: 'sub-ana', email: ana.email }));
    t.is(missing.res.body.error.details.reason, 'email_not_verified');
    t.is(await api.hub.store.docs.count('identities'), 0, 'nothing was linked');

    const ok = await signIn(api, (nonce) => ({ nonce, sub: 'sub-ana', email: ana.email.toUpperCase(), email_verified: true }));
    t.is(ok.res.status, 200);
    t.is(ok.res.body.user.id, ana.id);
    // Her password still works.
    t.is((await api.http.post('/v1/auth/login').send({ email: ana.email, password: 'correct horse battery' })).status, 200);
  } finally {
    await api.close();
  }
});

test('failures: forged state, missing cookie, wrong aud, wrong iss, expired token, bad signature, wrong nonce, closed registration', async (t) => {
  const api = await openApiHub(servers, { googleIssuer: provider.url, googleClientId: CLIENT_ID, googleClientSecret: CLIENT_SECRET, authRateLimitPerMinute: 1000 });
  try {
    const cases: Array<[string, Awaited<ReturnType<typeof signIn>>]> = [
      ['state_mismatch', await signIn(api, verified('x1@example.test', { sub: 's1' }), { state: (s) => `${s.slice(0, -2)}xx` })],
      ['no_flow_cookie', await signIn(api, verified('x2@example.test', { sub: 's2' }), { cookie: () => null })],
      ['bad_flow_cookie', await signIn(api, verified('x3@example.test', { sub: 's3' }), { cookie: (c) => `${c.slice(0, -4)}AAAA` })],
      ['claim_aud', await signIn(api, verified('x4@example.test', { sub: 's4', aud: 'someone-else' }))],
      ['claim_iss', await signIn(api, verified('x5@example.test', { sub: 's5', iss: 'https://evil.example' }))],
      ['token_expired', await signIn(api, verified('x6@example.test', { sub: 's6', iat: Math.floor(Date.now() / 1000) - 7200, exp: Math.floor(Date.now() / 1000) - 3600 }))],
      ['bad_signature', await signIn(api, verified('x7@example.test', { sub: 's7' }), { forge: true })],
      ['nonce_mismatch', await signIn(api, () => ({ nonce: 'not-the-nonce', sub: 's8', email: 'x8@example.test', email_verified: true }))],
    ];
    for (const [reason, { res }] of cases) {
      t.is(res.status, 401, reason);
      t.is(res.body.error.code, 'SIGN_IN_FAILED', reason);
      t.is(res.body.error.details.reason, reason);
    }
    // A state forged with someone else's cookie: a cookie from one flow with the state of another.
    const a = await api.http.get('/v1/auth/google/start');
    const b = await api.http.get('/v1/auth/google/start');
    const cross = await api.http
      .get('/v1/auth/google/callback')
      .query({ code: 'whatever', state: new URL(b.headers.location!).searchParams.get('state')! })
      .set('Cookie', (a.headers['set-cookie'] as unknown as string[])[0]!.split(';')[0]!);
    t.is(cross.body.error.details.reason, 'state_mismatch');
    t.is((await api.http.get('/v1/auth/google/callback').query({ error: 'access_denied', state: 'x' })).body.error.code, 'SIGN_IN_FAILED');
    t.is(await api.hub.store.getUserByEmail('x4@example.test'), null, 'no account from a rejected token');

    await api.hub.store.updateWorkspaceSettings(api.hub.config.defaultWorkspaceId, { registration: 'closed' }, () => []);
    const closed = await signIn(api, verified('newcomer@example.test', { sub: 's9' }));
    t.is(closed.res.status, 403);
    t.is(closed.res.body.error.code, 'REGISTRATION_CLOSED');
  } finally {
    await api.close();
  }
});
