/**
 * Two-factor sign-in with time-based one-time codes (TOTP, RFC 6238 on top of HOTP, RFC 4226), written on
 * node:crypto so there is no third-party code in the login path.
 *
 * Lifecycle of `UserRecord.totp`:
 *   enroll  → { secretEnc, enabled: false }           (a fresh secret; replaces an unconfirmed one)
 *   confirm → { …, enabled: true, lastStep, recoveryHashes }  (first valid code proves the app has it)
 *   disable → null                                     (needs the password and a code)
 *
 * The secret is sealed with AES-256-GCM under the hub's secret key (connectors/crypto.ts Keyring), bound to
 * the user id as associated data so a sealed secret copied onto another account does not open. Recovery
 * codes are random (50 bits each) and kept only as SHA-256 hashes: their entropy makes a slow hash
 * unnecessary.
 *
 * Replay: a code is accepted only for a time step later than the last one used (RFC 6238 §5.2). Two
 * concurrent requests with the same code are settled by an insert-if-absent document keyed by user and step,
 * which both store adapters make atomic; the same trick guards recovery codes.
 */
import { createHash, createHmac, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import QRCode from 'qrcode';
import { Keyring } from '../../connectors/crypto.js';
import { publicUser, type UserRecord } from '../domain.js';
import { VoxaError } from '../errors.js';
import { createEvent } from '../events/catalog.js';
import type { Hub } from '../hub.js';
import type { OutboxEntry } from '../store/port.js';
import { recordOutbox } from '../events/outbox-entry.js';
import { hasUsablePassword, verifyPassword } from './passwords.js';
import { RECOVERY_USED_COLLECTION, TOTP_STEPS_COLLECTION } from './prune.js';
import { encodeBase32 } from '../base32.js';

export type TotpAlgorithm = 'sha1' | 'sha256' | 'sha512';

/** Seconds per time step and digits per code: the values every authenticator app assumes by default. */
export const TOTP_PERIOD = 30;
export const TOTP_DIGITS = 6;
/** Steps either side of now that still count, to forgive a phone clock that is a little off. */
export const TOTP_DRIFT_STEPS = 1;
/** Code attempts (right or wrong) per account per window before RATE_LIMITED. */
export const OTP_ATTEMPTS = 5;
export const OTP_WINDOW_MS = 5 * 60_000;
export const RECOVERY_CODE_COUNT = 10;

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32 without padding (what otpauth:// URIs carry). */
export function base32Encode(buf: Buffer): string {
  return encodeBase32(buf, B32);
}

/** Decodes base32, ignoring case, spaces and padding. Throws on any other character. */
export function base32Decode(text: string): Buffer {
  const clean = text.replace(/[\s=]/g, '').toUpperCase();
  const out: number[] = [];
  let bits = 0;
  let acc = 0;
  for (const ch of clean) {
    const v = B32.indexOf(ch);
    if (v < 0) throw new Error('not base32');
    acc = (acc << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >>> bits) & 0xff);
    }
    acc &= (1 << bits) - 1;
  }
  return Buffer.from(out);
}

/** HOTP (RFC 4226 §5.3): HMAC of the 8-byte big-endian counter, dynamically truncated to `digits` digits. */
export function hotp(key: Buffer, counter: number, digits = TOTP_DIGITS, algorithm: TotpAlgorithm = 'sha1'): string {
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac(algorithm, key).update(msg).digest();
  const offset = mac[mac.length - 1]! & 0x0f;
  const bin = ((mac[offset]! & 0x7f) << 24) | (mac[offset + 1]! << 16) | (mac[offset + 2]! << 8) | mac[offset + 3]!;
  return String(bin % 10 ** digits).padStart(digits, '0');
}

/** The time step a moment falls in (RFC 6238 §4.2, T0 = 0). */
export function timeStep(unixSeconds: number, period = TOTP_PERIOD): number {
  return Math.floor(unixSeconds / period);
}

/** TOTP (RFC 6238): HOTP over the time step. */
export function totp(key: Buffer, unixSeconds: number, opts: { digits?: number; algorithm?: TotpAlgorithm; period?: number } = {}): string {
  return hotp(key, timeStep(unixSeconds, opts.period), opts.digits ?? TOTP_DIGITS, opts.algorithm ?? 'sha1');
}

function sameCode(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * The time step in which `code` is valid, looking `drift` steps either side of now, or null. Only steps
 * after `afterStep` are considered, so a code already used (or an older one) never matches again.
 */
export function matchStep(key: Buffer, code: string, nowSeconds: number, afterStep = -1, drift = TOTP_DRIFT_STEPS): number | null {
  if (!/^\d{6}$/.test(code)) return null;
  const now = timeStep(nowSeconds);
  for (let s = now - drift; s <= now + drift; s++) {
    if (s <= afterStep) continue;
    if (sameCode(hotp(key, s), code)) return s;
  }
  return null;
}

/** `otpauth://totp/…` as authenticator apps read it (Google's Key Uri Format). */
export function otpauthUri(secretB32: string, account: string, issuer: string): string {
  const label = `${encodeURIComponent(issuer)}:${encodeURIComponent(account)}`;
  const q = new URLSearchParams({ secret: secretB32, issuer, algorithm: 'SHA1', digits: String(TOTP_DIGITS), period: String(TOTP_PERIOD) });
  return `otpauth://totp/${label}?${q.toString()}`;
}

/** A recovery code such as `k3m9x-7qh2c`: 10 characters of Crockford-like base32 (no 0/O/1/I/L confusion). */
function newRecoveryCode(): string {
  const alphabet = 'abcdefghjkmnpqrstuvwxyz23456789';
  let s = '';
  for (let i = 0; i < 10; i++) s += alphabet[randomInt(alphabet.length)];
  return `${s.slice(0, 5)}-${s.slice(5)}`;
}

/** Recovery codes are compared case-insensitively and with or without the dash. */
export function hashRecoveryCode(code: string): string {
  const norm = code.toLowerCase().replace(/[^a-z0-9]/g, '');
  return createHash('sha256').update(`voxa-recovery:${norm}`).digest('hex');
}

function looksLikeRecoveryCode(code: string): boolean {
  return /^[a-zA-Z0-9]{5}-?[a-zA-Z0-9]{5}$/.test(code);
}

export interface Enrollment {
  /** The base32 secret, for manual entry. Shown once. */
  secret: string;
  otpauthUri: string;
  /** The URI as a QR code, a `data:image/png;base64,…` URL. */
  qrCode: string;
}

/** Enrolment, confirmation, login checks and disabling of TOTP for one hub. */
export class TotpService {
  private readonly keyring: Keyring;
  constructor(private readonly hub: Hub) {
    this.keyring = Keyring.from(hub.secrets.encryptionKey, hub.config.previousSecretKeys);
  }

  private aad(userId: string): string {
    return `totp:${userId}`;
  }

  private secretOf(user: UserRecord): Buffer {
    if (!user.totp) throw new VoxaError('CONFLICT', 'Two-factor sign-in is not set up.');
    return base32Decode(this.keyring.open(user.totp.secretEnc, this.aad(user.id)));
  }

  /** Issuer name shown in authenticator apps. */
  private issuer(): string {
    return 'Voxa Hub';
  }

  /** A new (unconfirmed) secret. Refused while TOTP is on: disable first, so a stolen session cannot swap it. */
  async enroll(user: UserRecord): Promise<Enrollment> {
    if (user.totp?.enabled) throw new VoxaError('CONFLICT', 'Two-factor sign-in is already on; disable it first.');
    // The second factor guards password sign-in, and turning it on asks for the password: an account that signs
    // in with Google only (no usable password) could start enrolling and never finish.
    if (!hasUsablePassword(user.passwordHash)) throw new VoxaError('CONFLICT', 'This account has no password (it signs in with Google): two-factor sign-in protects password sign-in.');
    const secret = base32Encode(randomBytes(20));
    const secretEnc = this.keyring.seal(secret, this.aad(user.id));
    const updated = await this.hub.store.updateUser(user.id, { totp: { secretEnc, enabled: false } }, () => []);
    if (!updated) throw new VoxaError('USER_NOT_FOUND');
    const uri = otpauthUri(secret, user.email, this.issuer());
    const qrCode = await QRCode.toDataURL(uri, { errorCorrectionLevel: 'M', margin: 2 });
    return { secret, otpauthUri: uri, qrCode };
  }

  /**
   * Turns TOTP on with the account password and a first valid code; returns the recovery codes (the only time
   * they are shown). The password, as for disable: with an access token alone, whoever stole one could turn
   * 2FA on with their own authenticator and lock the owner out for good.
   */
  async confirm(user: UserRecord, password: string, code: string): Promise<{ recoveryCodes: string[] }> {
    if (!user.totp) throw new VoxaError('CONFLICT', 'Enroll first.');
    if (user.totp.enabled) throw new VoxaError('CONFLICT', 'Two-factor sign-in is already on.');
    await this.hub.rateLimiter.hit(`otp:pw:${user.id}`, OTP_ATTEMPTS, OTP_WINDOW_MS);
    if (!user.passwordHash || !(await verifyPassword(password, user.passwordHash))) throw new VoxaError('INVALID_CREDENTIALS');
    await this.hub.rateLimiter.hit(`otp:${user.id}`, OTP_ATTEMPTS, OTP_WINDOW_MS);
    const step = matchStep(this.secretOf(user), code, Date.now() / 1000);
    if (step === null || !(await this.claimStep(user.id, step))) throw new VoxaError('INVALID_OTP');
    const recoveryCodes = Array.from({ length: RECOVERY_CODE_COUNT }, newRecoveryCode);
    const events = recordOutbox((u: UserRecord) => this.changed(u, 'totp_enabled'));
    const updated = await this.hub.store.updateUser(
      user.id,
      { totp: { secretEnc: user.totp.secretEnc, enabled: true, lastStep: step, recoveryHashes: recoveryCodes.map(hashRecoveryCode) } },
      events,
    );
    if (!updated) throw new VoxaError('USER_NOT_FOUND');
    await this.hub.rateLimiter.reset(`otp:${user.id}`);
    await this.hub.rateLimiter.reset(`otp:pw:${user.id}`);
    await this.hub.chat.publish(events.entries);
    return { recoveryCodes };
  }

  /**
   * The second factor at login (call after the password checked out). A user without TOTP on passes.
   * Missing code → OTP_REQUIRED; wrong or replayed → INVALID_OTP; too many attempts → RATE_LIMITED.
   * `code` may be a current TOTP code or an unused recovery code (which is then used up).
   */
  async verifyLogin(user: UserRecord, code: string | undefined): Promise<void> {
    if (!user.totp?.enabled) return;
    if (code === undefined || code === '') throw new VoxaError('OTP_REQUIRED');
    await this.check(user, code);
  }

  private async check(user: UserRecord, rawCode: string): Promise<void> {
    const totpState = user.totp!;
    await this.hub.rateLimiter.hit(`otp:${user.id}`, OTP_ATTEMPTS, OTP_WINDOW_MS);
    const code = rawCode.trim().replace(/\s/g, '');
    if (/^\d{6}$/.test(code)) {
      const step = matchStep(this.secretOf(user), code, Date.now() / 1000, totpState.lastStep ?? -1);
      if (step === null || !(await this.claimStep(user.id, step))) throw new VoxaError('INVALID_OTP');
      // Remember the newest step used; a concurrent older step must not move it back.
      const fresh = await this.hub.store.getUser(user.id);
      if (fresh?.totp?.enabled && (fresh.totp.lastStep ?? -1) < step) {
        await this.hub.store.updateUser(user.id, { totp: { ...fresh.totp, lastStep: step } }, () => []);
      }
    } else if (looksLikeRecoveryCode(code)) {
      const hash = hashRecoveryCode(code);
      const hashes = totpState.recoveryHashes ?? [];
      const known = hashes.some((h) => sameCode(h, hash));
      const claimId = `${user.id}:${hash}`;
      const claim = { userId: user.id, at: new Date().toISOString() };
      if (!known || !(await this.hub.store.docs.insert(RECOVERY_USED_COLLECTION, claimId, claim))) {
        throw new VoxaError('INVALID_OTP');
      }
      const fresh = await this.hub.store.getUser(user.id);
      if (fresh?.totp) {
        const left = (fresh.totp.recoveryHashes ?? []).filter((h) => h !== hash);
        await this.hub.store.updateUser(user.id, { totp: { ...fresh.totp, recoveryHashes: left } }, () => []);
      }
      // Only now may the claim expire (core/auth/prune.ts): the hash is gone, so the code is refused without it.
      await this.hub.store.docs.put(RECOVERY_USED_COLLECTION, claimId, { ...claim, settledAt: new Date().toISOString() });
    } else {
      throw new VoxaError('INVALID_OTP');
    }
    await this.hub.rateLimiter.reset(`otp:${user.id}`);
  }

  /** Turns TOTP off. Needs the account password and a current code (or a recovery code). */
  async disable(user: UserRecord, password: string, code: string): Promise<void> {
    if (!user.totp?.enabled) throw new VoxaError('CONFLICT', 'Two-factor sign-in is not on.');
    await this.hub.rateLimiter.hit(`otp:pw:${user.id}`, OTP_ATTEMPTS, OTP_WINDOW_MS);
    if (!user.passwordHash || !(await verifyPassword(password, user.passwordHash))) throw new VoxaError('INVALID_CREDENTIALS');
    await this.check(user, code);
    const events = recordOutbox((u: UserRecord) => this.changed(u, 'totp_disabled'));
    await this.hub.store.updateUser(user.id, { totp: null }, events);
    await this.hub.rateLimiter.reset(`otp:pw:${user.id}`);
    await this.hub.chat.publish(events.entries);
  }

  /** What the account page shows. */
  status(user: UserRecord): { enabled: boolean; pending: boolean; recoveryCodesLeft: number } {
    return {
      enabled: Boolean(user.totp?.enabled),
      pending: Boolean(user.totp && !user.totp.enabled),
      recoveryCodesLeft: user.totp?.enabled ? (user.totp.recoveryHashes?.length ?? 0) : 0,
    };
  }

  /** Atomically claims (user, step): false when another request already used this step. */
  private claimStep(userId: string, step: number): Promise<boolean> {
    return this.hub.store.docs.insert(TOTP_STEPS_COLLECTION, `${userId}:${step}`, { userId, step, at: new Date().toISOString() });
  }

  private changed(u: UserRecord, change: string): OutboxEntry[] {
    return this.hub.chat.outboxOf([
      createEvent('user.updated', { workspaceId: u.workspaceId, userId: u.id, actor: { type: 'user', id: u.id }, data: { user: publicUser(u), changes: [change] } }),
    ]);
  }
}
