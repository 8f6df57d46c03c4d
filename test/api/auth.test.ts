import test from 'ava';
import jwt from 'jsonwebtoken';
import { serversForFile } from '../helpers/hub.js';
import { claimInvite, INVITES_COLLECTION, inviteMatches, issueInvite } from '../../core/auth/invites.js';
import { pruneRecords } from '../../core/auth/prune.js';
import { preRegisterUser } from '../../core/auth/service.js';
import { verifyAccessToken } from '../../core/auth/tokens.js';
import { isVoxaError } from '../../core/errors.js';
import { bearer, eventually, openApiHub, streamEvents } from './support.js';

const servers = serversForFile();

test('register, me, login, refresh rotation, reuse revokes the family, logout', async (t) => {
  // No grace window: the reuse below comes right after the rotation (the window has its own test).
  const api = await openApiHub(servers, { refreshReuseGraceSeconds: 0 });
  try {
    const reg = await api.http.post('/v1/auth/register').send({ email: 'Ana@Example.test', password: 'correct horse battery', name: 'Ana' });
    t.is(reg.status, 201);
    t.like(reg.body.user, { email: 'ana@example.test', name: 'Ana', role: 'customer', workspaceId: 'default' });
    t.false('passwordHash' in reg.body.user);
    t.is(typeof reg.body.accessToken, 'string');
    t.regex(reg.body.refreshToken, /^rt_/);
    const userId = reg.body.user.id as string;

    // The access token is HS256 with the configured iss/aud and a short expiry.
    const decoded = jwt.decode(reg.body.accessToken, { complete: true }) as { header: { alg: string }; payload: Record<string, unknown> };
    t.is(decoded.header.alg, 'HS256');
    t.is(decoded.payload.iss, api.hub.config.jwtIssuer);
    t.is(decoded.payload.aud, api.hub.config.jwtAudience);
    t.is((decoded.payload.exp as number) - (decoded.payload.iat as number), api.hub.config.accessTokenTtlSeconds);

    // The password is stored as a scrypt hash, the refresh token only as its SHA-256.
    const stored = await api.hub.store.getUser(userId);
    t.regex(stored!.passwordHash!, /^scrypt\$/);
    t.falsy(await api.hub.store.getRefreshTokenByHash(reg.body.refreshToken));

    const me = await api.http.get('/v1/me').set('Authorization', `Bearer ${reg.body.accessToken}`);
    t.is(me.status, 200);
    t.is(me.body.user.id, userId);

    t.is((await api.http.post('/v1/auth/register').send({ email: 'ana@example.test', password: 'another password', name: 'Ana 2' })).body.error.code, 'EMAIL_TAKEN');

    const bad = await api.http.post('/v1/auth/login').send({ email: 'ana@example.test', password: 'wrong password' });
    t.is(bad.status, 401);
    t.is(bad.body.error.code, 'INVALID_CREDENTIALS');
    const unknown = await api.http.post('/v1/auth/login').send({ email: 'nobody@example.test', password: 'wrong password' });
    t.is(unknown.status, 401);
    t.is(unknown.body.error.code, 'INVALID_CREDENTIALS');

    const login = await api.http.post('/v1/auth/login').send({ email: 'ANA@example.test', password: 'correct horse battery', otp: '123456' });
    t.is(login.status, 200);
    t.is(login.body.user.id, userId);

    // Rotation: the first refresh works and returns a different token.
    const r1 = await api.http.post('/v1/auth/refresh').send({ refreshToken: login.body.refreshToken });
    t.is(r1.status, 200);
    t.not(r1.body.refreshToken, login.body.refreshToken);
    t.is((await api.http.get('/v1/me').set('Authorization', `Bearer ${r1.body.accessToken}`)).status, 200);

    // Reuse of the old token: 401 REFRESH_TOKEN_REUSED, and the newer token of the same family is dead too.
    const reuse = await api.http.post('/v1/auth/refresh').send({ refreshToken: login.body.refreshToken });
    t.is(reuse.status, 401);
    t.is(reuse.body.error.code, 'REFRESH_TOKEN_REUSED');
    const after = await api.http.post('/v1/auth/refresh').send({ refreshToken: r1.body.refreshToken });
    t.is(after.status, 401);
    t.is(after.body.error.code, 'INVALID_REFRESH_TOKEN');
    // The registration session is another family and still works.
    const other = await api.http.post('/v1/auth/refresh').send({ refreshToken: reg.body.refreshToken });
    t.is(other.status, 200);

    // Logout (current session via the access token) revokes that family: its refresh token stops working.
    const out = await api.http.post('/v1/auth/logout').set('Authorization', `Bearer ${other.body.accessToken}`);
    t.is(out.status, 204);
    t.is((await api.http.post('/v1/auth/refresh').send({ refreshToken: other.body.refreshToken })).body.error.code, 'INVALID_REFRESH_TOKEN');
    t.is((await api.http.post('/v1/auth/refresh').send({ refreshToken: 'rt_unknown' })).body.error.code, 'INVALID_REFRESH_TOKEN');

    // Events: registration through the outbox, audit events published directly, all on the stream.
    const events = await eventually(async () => {
      const evs = await streamEvents(api.hub);
      const types = evs.map((e) => e.event.type);
      return ['user.registered', 'user.login', 'user.login_failed', 'user.token_reuse', 'user.logout'].every((x) => types.includes(x as never)) ? evs : null;
    });
    for (const e of events) t.is(e.msgId, e.event.id);
    // Tracing is off in this test process: every event still carries a W3C traceparent of its own (not sampled).
    for (const e of events) t.regex(e.headers.traceparent ?? '', /^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-00$/, e.event.type);
    t.is(new Set(events.map((e) => e.headers.traceparent)).size, events.length);
    const failed = events.filter((e) => e.event.type === 'user.login_failed');
    t.is(failed.length, 1, 'no login_failed event for an unknown email');
    t.is(failed[0]!.event.userId, userId);
    t.false(JSON.stringify(events).includes('correct horse battery'));
  } finally {
    await api.close();
  }
});

test('concurrent refreshes with one token: exactly one wins and its pair stays valid; the others get 409', async (t) => {
  const api = await openApiHub(servers);
  try {
    const s = await api.register('Ben');
    const results = await Promise.all([0, 1, 2].map(() => api.http.post('/v1/auth/refresh').send({ refreshToken: s.refreshToken })));
    t.is(results.filter((r) => r.status === 200).length, 1);
    const losers = results.filter((r) => r.status !== 200);
    t.true(losers.every((r) => r.status === 409 && r.body.error.code === 'CONFLICT' && r.body.error.details.reason === 'refresh_race'), JSON.stringify(losers.map((r) => r.body)));
    // The winner's pair was not revoked by the losers.
    const winner = results.find((r) => r.status === 200)!;
    t.is((await api.http.get('/v1/me').set('Authorization', `Bearer ${winner.body.accessToken}`)).status, 200);
    const next = await api.http.post('/v1/auth/refresh').send({ refreshToken: winner.body.refreshToken });
    t.is(next.status, 200);
  } finally {
    await api.close();
  }
});

test('a used refresh token presented after the grace window revokes the family', async (t) => {
  const api = await openApiHub(servers, { refreshReuseGraceSeconds: 1 });
  try {
    const s = await api.register('Cleo');
    const r1 = await api.http.post('/v1/auth/refresh').send({ refreshToken: s.refreshToken });
    t.is(r1.status, 200);
    t.is((await api.http.post('/v1/auth/refresh').send({ refreshToken: s.refreshToken })).status, 409, 'inside the window: a lost race');
    await new Promise((r) => setTimeout(r, 1100));
    const reuse = await api.http.post('/v1/auth/refresh').send({ refreshToken: s.refreshToken });
    t.is(reuse.status, 401);
    t.is(reuse.body.error.code, 'REFRESH_TOKEN_REUSED');
    t.is((await api.http.post('/v1/auth/refresh').send({ refreshToken: r1.body.refreshToken })).body.error.code, 'INVALID_REFRESH_TOKEN');
  } finally {
    await api.close();
  }
});

test('access tokens: missing, malformed, wrong algorithm, wrong audience, expired, disabled user → 401', async (t) => {
  const api = await openApiHub(servers);
  try {
    const s = await api.register('Cid');
    const secret = api.hub.secrets.jwtSecret;
    const { jwtIssuer: iss, jwtAudience: aud } = api.hub.config;
    const tokens = {
      none: undefined,
      garbage: 'not.a.jwt',
      otherSecret: jwt.sign({ wid: 'default' }, 'x'.repeat(40), { subject: s.id, issuer: iss, audience: aud }),
      hs512: jwt.sign({ wid: 'default' }, secret, { algorithm: 'HS512', subject: s.id, issuer: iss, audience: aud }),
      algNone: jwt.sign({ wid: 'default', sub: s.id, iss, aud }, '', { algorithm: 'none' }),
      wrongAud: jwt.sign({ wid: 'default' }, secret, { subject: s.id, issuer: iss, audience: 'someone-else' }),
      wrongIss: jwt.sign({ wid: 'default' }, secret, { subject: s.id, issuer: 'evil', audience: aud }),
      expired: jwt.sign({ wid: 'default', exp: Math.floor(Date.now() / 1000) - 10 }, secret, { subject: s.id, issuer: iss, audience: aud }),
      unknownUser: jwt.sign({ wid: 'default' }, secret, { subject: 'usr_nobody', issuer: iss, audience: aud }),
    };
    for (const [name, token] of Object.entries(tokens)) {
      const req = api.http.get('/v1/me');
      if (token) req.set('Authorization', `Bearer ${token}`);
      const res = await req;
      t.is(res.status, 401, name);
      t.is(res.body.error.code, 'UNAUTHENTICATED', name);
      t.false(JSON.stringify(res.body).includes('jwt'), `${name}: no library message leaks`);
    }
    const basic = await api.http.get('/v1/me').set('Authorization', 'Basic abc');
    t.is(basic.status, 401);
    t.is(basic.body.error.code, 'UNAUTHENTICATED');

    // verifyAccessToken (the socket handshake path) agrees.
    const user = await verifyAccessToken(api.hub, s.accessToken);
    t.is(user.id, s.id);
    const err = await t.throwsAsync(verifyAccessToken(api.hub, tokens.expired));
    t.true(isVoxaError(err) && err.code === 'UNAUTHENTICATED');

    await api.hub.store.updateUser(s.id, { disabled: true }, () => []);
    t.is((await api.http.get('/v1/me').set(...bearer(s))).status, 401);
    await t.throwsAsync(verifyAccessToken(api.hub, s.accessToken));
    const login = await api.http.post('/v1/auth/login').send({ email: s.email, password: 'correct horse battery' });
    t.is(login.body.error.code, 'ACCOUNT_DISABLED');
  } finally {
    await api.close();
  }
});

test('registration modes: closed, invite (pre-registered keeps its role), open', async (t) => {
  const closed = await openApiHub(servers, { registration: 'closed' });
  try {
    const res = await closed.http.post('/v1/auth/register').send({ email: 'x@example.test', password: 'long enough pw', name: 'X' });
    t.is(res.status, 403);
    t.is(res.body.error.code, 'REGISTRATION_CLOSED');
    t.is(await closed.hub.store.getUserByEmail('x@example.test'), null);
  } finally {
    await closed.close();
  }

  const invite = await openApiHub(servers, { registration: 'invite' });
  try {
    const denied = await invite.http.post('/v1/auth/register').send({ email: 'stranger@example.test', password: 'long enough pw', name: 'S' });
    t.is(denied.status, 403);
    t.is(denied.body.error.code, 'INVITE_REQUIRED');

    const { user, entries, invite: code } = await preRegisterUser(
      invite.hub.store,
      invite.hub.config.natsNamespace,
      { email: 'Boss@Example.test', role: 'admin', workspaceId: invite.hub.config.defaultWorkspaceId },
      { type: 'system', id: 'voxa-cli' },
    );
    t.is(user.passwordHash, null);
    t.is(entries.length, 1);
    t.regex(code.code, /^vxi_[A-Za-z0-9_-]{32}$/);
    // An invited account cannot sign in before registering.
    const early = await invite.http.post('/v1/auth/login').send({ email: 'boss@example.test', password: 'anything at all' });
    t.is(early.body.error.code, 'INVALID_CREDENTIALS');

    // The email alone does not claim it (that handed an admin account to whoever registered first), nor a wrong code.
    let claimShape: Record<string, unknown> = {};
    for (const extra of [{}, { invite: 'vxi_wrong' }, { invite: `${code.code}x` }]) {
      const claim = await invite.http.post('/v1/auth/register').send({ email: 'boss@example.test', password: 'attacker pw 1', name: 'Mallory', ...extra });
      t.is(claim.status, 403, JSON.stringify(extra));
      t.is(claim.body.error.code, 'INVITE_REQUIRED');
      t.is(claim.body.error.details.field, 'body.invite');
      claimShape = claim.body.error;
    }
    t.is(denied.body.error.message, claimShape.message);
    t.is((await invite.hub.store.getUserByEmail('boss@example.test'))?.passwordHash, null, 'still unclaimed');

    const reg = await invite.http.post('/v1/auth/register').send({ email: 'boss@example.test', password: 'long enough pw', name: 'The Boss', invite: code.code });
    t.is(reg.status, 201);
    t.is(reg.body.user.id, user.id);
    t.is(reg.body.user.role, 'admin');
    t.is(reg.body.user.name, 'The Boss');
    t.truthy((await invite.hub.store.docs.get<{ usedAt?: string }>(INVITES_COLLECTION, user.id))?.usedAt, 'the code is marked used');
    t.false(await inviteMatches(invite.hub.store.docs, user.id, code.code), 'and matches no more');
    const again = await invite.http.post('/v1/auth/register').send({ email: 'boss@example.test', password: 'other password', name: 'Nope', invite: code.code });
    t.is(again.body.error.code, 'EMAIL_TAKEN');
    // A stranger in invite mode gets the same answer as an invited email without its code: it says nothing about which.
    t.deepEqual(denied.body.error, { ...claimShape, message: denied.body.error.message });
    // The outbox sweeper publishes the pre-registration event that nobody dispatched.
    await eventually(async () => (await streamEvents(invite.hub)).some((e) => e.event.type === 'user.registered' && e.event.userId === user.id));
    t.pass();
  } finally {
    await invite.close();
  }
});

test('in open mode too, an invited email is claimed only with its code; an expired code is refused; prune drops it', async (t) => {
  const api = await openApiHub(servers);
  try {
    t.is(api.hub.config.registration, 'open');
    const ws = api.hub.config.defaultWorkspaceId;
    const cli = { type: 'system' as const, id: 'voxa-cli' };
    const { invite } = await preRegisterUser(api.hub.store, api.hub.config.natsNamespace, { email: 'agent@example.test', role: 'agent', workspaceId: ws }, cli);
    const claim = await api.http.post('/v1/auth/register').send({ email: 'agent@example.test', password: 'attacker pw 1', name: 'Mallory' });
    t.is(claim.status, 403);
    t.is(claim.body.error.code, 'INVITE_REQUIRED');
    // Strangers still register freely, as customers.
    t.is((await api.http.post('/v1/auth/register').send({ email: 'new@example.test', password: 'long enough pw', name: 'New' })).body.user.role, 'customer');
    const ok = await api.http.post('/v1/auth/register').send({ email: 'agent@example.test', password: 'long enough pw', name: 'Agent', invite: invite.code });
    t.is(ok.status, 201);
    t.is(ok.body.user.role, 'agent');

    // A code past its expiry is refused, and the pruner deletes its record.
    const late = await preRegisterUser(api.hub.store, api.hub.config.natsNamespace, { email: 'late@example.test', role: 'agent', workspaceId: ws }, cli);
    const expired = await issueInvite(api.hub.store.docs, late.user.id, 1, Date.now() - 2 * 24 * 3600_000);
    const r = await api.http.post('/v1/auth/register').send({ email: 'late@example.test', password: 'long enough pw', name: 'Late', invite: expired.code });
    t.is(r.body.error.code, 'INVITE_REQUIRED');
    t.is((await pruneRecords(api.hub.store.docs))[INVITES_COLLECTION], 1);
    t.is(await api.hub.store.docs.get(INVITES_COLLECTION, late.user.id), null);
  } finally {
    await api.close();
  }
});

test('an invite code is used once: two registrations racing with it, one wins; a replaced code no longer counts', async (t) => {
  const api = await openApiHub(servers);
  try {
    const ws = api.hub.config.defaultWorkspaceId;
    const cli = { type: 'system' as const, id: 'voxa-cli' };
    const { user, invite } = await preRegisterUser(api.hub.store, api.hub.config.natsNamespace, { email: 'race@example.test', role: 'agent', workspaceId: ws }, cli);
    const body = (name: string) => ({ email: 'race@example.test', password: `long enough pw ${name}`, name, invite: invite.code });
    const both = await Promise.all([api.http.post('/v1/auth/register').send(body('One')), api.http.post('/v1/auth/register').send(body('Two'))]);
    t.deepEqual(both.map((r) => r.status).sort(), [201, 409], JSON.stringify(both.map((r) => r.body)));
    const winner = both.find((r) => r.status === 201)!;
    t.is((await api.hub.store.getUser(user.id))?.name, winner.body.user.name, 'the account is the winner\'s');

    // Replaced: the old code is refused, even at the claim (the compare-and-set), and the new one stays usable.
    const second = await preRegisterUser(api.hub.store, api.hub.config.natsNamespace, { email: 'swap@example.test', role: 'agent', workspaceId: ws }, cli);
    t.true(await inviteMatches(api.hub.store.docs, second.user.id, second.invite.code));
    const fresh = await issueInvite(api.hub.store.docs, second.user.id);
    t.false(await claimInvite(api.hub.store, second.user.id, second.invite.code), 'the replaced code cannot be claimed');
    t.true(await inviteMatches(api.hub.store.docs, second.user.id, fresh.code), 'the new code still works');
    t.is((await api.http.post('/v1/auth/register').send({ email: 'swap@example.test', password: 'long enough pw', name: 'Swap', invite: fresh.code })).status, 201);
  } finally {
    await api.close();
  }
});

test('login and registration are rate limited per account and per IP (429 + Retry-After)', async (t) => {
  const api = await openApiHub(servers, { authRateLimitPerMinute: 3 });
  try {
    const s = await api.register('Dee');
    const statuses: number[] = [];
    let last;
    for (let i = 0; i < 4; i++) {
      last = await api.http.post('/v1/auth/login').send({ email: s.email, password: 'wrong password' });
      statuses.push(last.status);
    }
    t.deepEqual(statuses, [401, 401, 401, 429]);
    t.is(last!.body.error.code, 'RATE_LIMITED');
    t.regex(String(last!.headers['retry-after']), /^[1-9][0-9]*$/);
    // Even the right password is refused while limited.
    t.is((await api.http.post('/v1/auth/login').send({ email: s.email, password: 'correct horse battery' })).status, 429);

    // Per IP: registrations of different emails from one address (one was already used by register above).
    const regs: number[] = [];
    for (let i = 0; i < 3; i++) {
      regs.push((await api.http.post('/v1/auth/register').send({ email: `r${i}@example.test`, password: 'long enough pw', name: 'R' })).status);
    }
    t.deepEqual(regs, [201, 201, 429]);
  } finally {
    await api.close();
  }
});

test('GET /v1/users searches only the caller’s workspace', async (t) => {
  const api = await openApiHub(servers);
  try {
    const a = await api.register('Alice');
    await api.register('Alina');
    await api.register('Bob');
    // A user in another workspace with a matching name must never appear.
    await api.hub.store.ensureWorkspace({ id: 'other', name: 'Other', settings: { registration: 'open', customersTalkToAgentsOnly: false, privatePush: false }, createdAt: new Date().toISOString() });
    await api.hub.store.createUser(
      { id: 'usr_elsewhere', workspaceId: 'other', email: 'alien@example.test', name: 'Ali Elsewhere', role: 'customer', createdAt: new Date().toISOString(), passwordHash: 'x', disabled: false },
      () => [],
    );
    const res = await api.http.get('/v1/users').query({ q: 'ali' }).set(...bearer(a));
    t.is(res.status, 200);
    t.deepEqual(res.body.users.map((u: { name: string }) => u.name).sort(), ['Alice', 'Alina']);
    t.true(res.body.users.every((u: Record<string, unknown>) => u.workspaceId === 'default' && !('passwordHash' in u)));
    const limited = await api.http.get('/v1/users?limit=1').set(...bearer(a));
    t.is(limited.body.users.length, 1);
    const wild = await api.http.get('/v1/users').query({ q: '%' }).set(...bearer(a));
    t.is(wild.body.users.length, 0, 'q is literal text, not a pattern');
    t.is((await api.http.get('/v1/users?limit=0').set(...bearer(a))).status, 400);
    t.is((await api.http.get('/v1/users?limit=201').set(...bearer(a))).status, 400);
    t.is((await api.http.get('/v1/users').query({ q: 'a', extra: '1' }).set(...bearer(a))).body.error.code, 'VALIDATION_FAILED');
  } finally {
    await api.close();
  }
});
