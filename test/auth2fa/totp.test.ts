import test from 'ava';
import { base32Decode, base32Encode, hashRecoveryCode, hotp, matchStep, otpauthUri, totp, type TotpAlgorithm } from '../../core/auth/totp.js';
import { serversForFile } from '../helpers/hub.js';
import { bearer, eventually, openApiHub, streamEvents } from '../api/support.js';

// RFC 6238 Appendix B: the seeds are ASCII strings of the hash's block-ish length, codes have 8 digits.
const SEEDS: Record<TotpAlgorithm, Buffer> = {
  sha1: Buffer.from('12345678901234567890'),
  sha256: Buffer.from('12345678901234567890123456789012'),
  sha512: Buffer.from('1234567890123456789012345678901234567890123456789012345678901234'),
};
const VECTORS: Array<[number, string, string, string]> = [
  [59, '94287082', '46119246', '90693936'],
  [1111111109, '07081804', '68084774', '25091201'],
  [1111111111, '14050471', '67062674', '99943326'],
  [1234567890, '89005924', '91819424', '93441116'],
  [2000000000, '69279037', '90698825', '38618901'],
  [20000000000, '65353130', '77737706', '47863826'],
];

test('TOTP matches the RFC 6238 Appendix B vectors (SHA1, SHA256, SHA512)', (t) => {
  for (const [time, sha1, sha256, sha512] of VECTORS) {
    t.is(totp(SEEDS.sha1, time, { digits: 8, algorithm: 'sha1' }), sha1, `sha1 @${time}`);
    t.is(totp(SEEDS.sha256, time, { digits: 8, algorithm: 'sha256' }), sha256, `sha256 @${time}`);
    t.is(totp(SEEDS.sha512, time, { digits: 8, algorithm: 'sha512' }), sha512, `sha512 @${time}`);
  }
});

test('HOTP matches the RFC 4226 Appendix D values', (t) => {
  const expected = ['755224', '287082', '359152', '969429', '338314', '254676', '287922', '162583', '399871', '520489'];
  expected.forEach((code, counter) => t.is(hotp(SEEDS.sha1, counter), code));
});

test('base32 round-trips and the otpauth URI names issuer, account and secret', (t) => {
  const buf = Buffer.from('12345678901234567890');
  t.is(base32Encode(buf), 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ');
  t.deepEqual(base32Decode('gezd gnbv gy3t qojq gezd gnbv gy3t qojq'), buf);
  t.throws(() => base32Decode('not-base32!'));
  const uri = new URL(otpauthUri('ABC', 'ana@example.test', 'Voxa Hub'));
  t.is(uri.protocol, 'otpauth:');
  t.is(uri.searchParams.get('secret'), 'ABC');
  t.is(uri.searchParams.get('issuer'), 'Voxa Hub');
  t.true(decodeURIComponent(uri.pathname).endsWith('Voxa Hub:ana@example.test'));
});

test('matchStep accepts one step of drift and never a step at or before the last used one', (t) => {
  const key = SEEDS.sha1;
  const now = 1_700_000_000;
  const step = Math.floor(now / 30);
  t.is(matchStep(key, totp(key, now), now), step);
  t.is(matchStep(key, totp(key, now - 30), now), step - 1);
  t.is(matchStep(key, totp(key, now + 30), now), step + 1);
  t.is(matchStep(key, totp(key, now - 60), now), null);
  t.is(matchStep(key, totp(key, now), now, step), null, 'the same step again is a replay');
  t.is(matchStep(key, totp(key, now - 30), now, step), null, 'an older step after a newer one is refused');
  t.is(matchStep(key, '12345', now), null);
  t.is(matchStep(key, 'abcdef', now), null);
  t.is(hashRecoveryCode('ABCDE-12345'), hashRecoveryCode('abcde12345'));
});

const servers = serversForFile();

/** Waits until the current 30 s step has at least 6 s left, so a test's codes stay in the drift window. */
async function awayFromStepEdge(): Promise<void> {
  while ((Date.now() / 1000) % 30 > 24) await new Promise((r) => setTimeout(r, 250));
}

const PASSWORD = 'correct horse battery';

test('enrol, confirm, login needs a code, replay refused (also concurrently), recovery codes single-use, disable', async (t) => {
  const api = await openApiHub(servers, { authRateLimitPerMinute: 1000 });
  try {
    const ana = await api.register('Ana');
    const login = (otp?: string) => api.http.post('/v1/auth/login').send({ email: ana.email, password: PASSWORD, ...(otp !== undefined ? { otp } : {}) });

    t.like((await api.http.get('/v1/me/2fa').set(...bearer(ana))).body, { enabled: false, pending: false });
    // Confirming before enrolling is a conflict, not a crash.
    t.is((await api.http.post('/v1/me/2fa/confirm').set(...bearer(ana)).send({ password: PASSWORD, code: '123456' })).body.error.code, 'CONFLICT');

    const enr = await api.http.post('/v1/me/2fa/enroll').set(...bearer(ana));
    t.is(enr.status, 200);
    t.regex(enr.body.secret, /^[A-Z2-7]{32}$/);
    t.true(enr.body.otpauthUri.startsWith('otpauth://totp/'));
    t.is(new URL(enr.body.otpauthUri).searchParams.get('secret'), enr.body.secret);
    t.regex(enr.body.qrCode, /^data:image\/png;base64,[A-Za-z0-9+/=]{100,}$/);
    const png = Buffer.from(enr.body.qrCode.split(',')[1], 'base64');
    t.deepEqual([...png.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
    const key = base32Decode(enr.body.secret);

    // Stored sealed, not in plain text; not active yet, so login still works without a code.
    const stored = await api.hub.store.getUser(ana.id);
    t.false(stored!.totp!.enabled);
    t.false(JSON.stringify(stored!.totp).includes(enr.body.secret));
    t.regex(stored!.totp!.secretEnc, /^v1\./);
    t.is((await login()).status, 200);

    await awayFromStepEdge();
    const base = Date.now() / 1000;
    t.is((await api.http.post('/v1/me/2fa/confirm').set(...bearer(ana)).send({ password: PASSWORD, code: totp(key, base - 90) })).body.error.code, 'INVALID_OTP');
    // The access token alone does not turn 2FA on (a stolen one would lock the owner out): the password is asked for.
    t.is((await api.http.post('/v1/me/2fa/confirm').set(...bearer(ana)).send({ code: totp(key, base - 30) })).status, 400);
    const wrongPw = await api.http.post('/v1/me/2fa/confirm').set(...bearer(ana)).send({ password: 'not the password', code: totp(key, base - 30) });
    t.is(wrongPw.body.error.code, 'INVALID_CREDENTIALS');
    t.false((await api.hub.store.getUser(ana.id))!.totp!.enabled, 'still off');
    const conf = await api.http.post('/v1/me/2fa/confirm').set(...bearer(ana)).send({ password: PASSWORD, code: totp(key, base - 30) });
    t.is(conf.status, 200);
    const recovery = conf.body.recoveryCodes as string[];
    t.is(recovery.length, 10);
    t.is(new Set(recovery).size, 10);
    const afterConfirm = await api.hub.store.getUser(ana.id);
    t.true(afterConfirm!.totp!.enabled);
    t.is(afterConfirm!.totp!.recoveryHashes!.length, 10);
    for (const c of recovery) t.false(JSON.stringify(afterConfirm!.totp).includes(c), 'recovery codes are stored hashed');
    t.like((await api.http.get('/v1/me/2fa').set(...bearer(ana))).body, { enabled: true, recoveryCodesLeft: 10 });
    // Enrolling again while on would let a stolen session swap the secret.
    t.is((await api.http.post('/v1/me/2fa/enroll').set(...bearer(ana))).body.error.code, 'CONFLICT');

    const none = await login();
    t.is(none.status, 401);
    t.is(none.body.error.code, 'OTP_REQUIRED');
    // The code that confirmed enrolment cannot sign in: its step is used.
    t.is((await login(totp(key, base - 30))).body.error.code, 'INVALID_OTP');
    t.is((await login('000000' === totp(key, base) ? '111111' : '000000')).body.error.code, 'INVALID_OTP');

    // The same fresh code twice at once: exactly one sign-in.
    const code = totp(key, base);
    const both = await Promise.all([login(code), login(code)]);
    t.deepEqual(both.map((r) => r.status).sort(), [200, 401]);
    t.is(both.find((r) => r.status === 401)!.body.error.code, 'INVALID_OTP');
    t.is((await login(code)).body.error.code, 'INVALID_OTP', 'and never again later');

    // A recovery code works once (any case, with or without the dash).
    const rc = recovery[0]!;
    const viaRecovery = await login(rc.toUpperCase().replace('-', ''));
    t.is(viaRecovery.status, 200);
    t.is((await login(rc)).body.error.code, 'INVALID_OTP');
    t.like((await api.http.get('/v1/me/2fa').set(...bearer(ana))).body, { recoveryCodesLeft: 9 });
    // The claim is settled (prunable) only once the hash left the user's record.
    const claim = await api.hub.store.docs.get<{ settledAt?: string }>('totp_recovery_used', `${ana.id}:${hashRecoveryCode(rc)}`);
    t.regex(claim?.settledAt ?? '', /^\d{4}-\d\d-\d\dT/);

    // Disabling needs the password and a code.
    const session = { ...ana, accessToken: viaRecovery.body.accessToken as string };
    const dis = (body: object) => api.http.post('/v1/me/2fa/disable').set(...bearer(session)).send(body);
    t.is((await dis({ password: 'wrong password', code: recovery[1] })).body.error.code, 'INVALID_CREDENTIALS');
    t.is((await dis({ password: PASSWORD, code: '999999' === totp(key, base) ? '888888' : '999999' })).body.error.code, 'INVALID_OTP');
    t.is((await dis({ password: PASSWORD })).body.error.code, 'VALIDATION_FAILED');
    t.is((await dis({ password: PASSWORD, code: recovery[1] })).status, 204);
    t.is((await api.hub.store.getUser(ana.id))!.totp ?? null, null);
    t.is((await login()).status, 200, 'password alone again');

    // Turning it on and off is announced as user.updated through the outbox.
    const changes = await eventually(async () => {
      const evs = (await streamEvents(api.hub)).filter((e) => e.event.type === 'user.updated' && e.event.userId === ana.id);
      const list = evs.flatMap((e) => (e.event.data as { changes: string[] }).changes);
      return list.includes('totp_enabled') && list.includes('totp_disabled') ? list : null;
    });
    t.truthy(changes);
  } finally {
    await api.close();
  }
});

test('wrong codes are rate-limited per account, even when a right code follows', async (t) => {
  const api = await openApiHub(servers, { authRateLimitPerMinute: 1000 });
  try {
    const bo = await api.register('Bo');
    const key = base32Decode((await api.http.post('/v1/me/2fa/enroll').set(...bearer(bo))).body.secret);
    await awayFromStepEdge();
    const base = Date.now() / 1000;
    t.is((await api.http.post('/v1/me/2fa/confirm').set(...bearer(bo)).send({ password: PASSWORD, code: totp(key, base - 30) })).status, 200);
    const wrong = totp(key, base) === '123456' ? '654321' : '123456';
    const statuses: number[] = [];
    for (let i = 0; i < 7; i++) {
      statuses.push((await api.http.post('/v1/auth/login').send({ email: bo.email, password: PASSWORD, otp: wrong })).status);
    }
    t.true(statuses.slice(0, 5).every((s) => s === 401), JSON.stringify(statuses));
    t.is(statuses[6], 429);
    const right = await api.http.post('/v1/auth/login').send({ email: bo.email, password: PASSWORD, otp: totp(key, base) });
    t.is(right.status, 429);
    t.is(right.body.error.code, 'RATE_LIMITED');
    t.truthy(right.headers['retry-after']);
  } finally {
    await api.close();
  }
});
