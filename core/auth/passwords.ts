/**
 * Password hashing with scrypt from node:crypto (no native add-on to build).
 *
 * A stored hash is self-describing: `scrypt$<N>$<r>$<p>$<salt b64url>$<hash b64url>`, so the cost can be raised
 * later without breaking old hashes; `needsRehash` tells the login path to re-hash with the current cost
 * once the user has proven the password.
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

/**
 * One of the OWASP-listed scrypt settings (N=2^15, r=8, p=3): about 32 MiB and ~0.2 s per hash on a small
 * machine. Memory per hash is 128·N·r bytes, so N stays moderate and p carries the extra work, which keeps
 * concurrent logins from exhausting memory.
 */
export const PASSWORD_PARAMS = { N: 2 ** 15, r: 8, p: 3, keyLen: 32, saltLen: 16 } as const;

const MAX_MEM = 256 * 1024 * 1024;

function scryptAsync(password: string, salt: Buffer, keyLen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFKC'), salt, keyLen, opts, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** Hashes a password with a fresh random salt and the current parameters. */
export async function hashPassword(password: string): Promise<string> {
  const { N, r, p, keyLen, saltLen } = PASSWORD_PARAMS;
  const salt = randomBytes(saltLen);
  const key = await scryptAsync(password, salt, keyLen, { N, r, p, maxmem: MAX_MEM });
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

interface Parsed {
  N: number;
  r: number;
  p: number;
  salt: Buffer;
  key: Buffer;
}

function parse(stored: string): Parsed | null {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return null;
  const [N, r, p] = [Number(parts[1]), Number(parts[2]), Number(parts[3])];
  // Refuse absurd parameters from a tampered row instead of burning CPU or memory on them.
  if (!Number.isInteger(N) || N < 2 || N > 2 ** 20 || (N & (N - 1)) !== 0) return null;
  if (!Number.isInteger(r) || r < 1 || r > 32 || !Number.isInteger(p) || p < 1 || p > 16) return null;
  const salt = Buffer.from(parts[4]!, 'base64url');
  const key = Buffer.from(parts[5]!, 'base64url');
  if (salt.length < 8 || key.length < 16 || key.length > 128) return null;
  return { N, r, p, salt, key };
}

/** True when `password` matches `stored`. Constant-time comparison; a malformed hash never matches. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const h = parse(stored);
  if (!h) return false;
  const key = await scryptAsync(password, h.salt, h.key.length, { N: h.N, r: h.r, p: h.p, maxmem: MAX_MEM });
  return timingSafeEqual(key, h.key);
}

/** True when the stored hash uses weaker parameters than the current ones (re-hash after a good login). */
export function needsRehash(stored: string): boolean {
  const h = parse(stored);
  if (!h) return true;
  const cur = PASSWORD_PARAMS;
  return h.N < cur.N || h.r < cur.r || h.p < cur.p || h.key.length < cur.keyLen || h.salt.length < cur.saltLen;
}

let dummy: Promise<string> | null = null;

/**
 * Spends the same time as a real check, for unknown emails and invited accounts without a password, so the
 * login's response time does not tell whether an account exists.
 */
export async function dummyVerify(password: string): Promise<false> {
  dummy ??= hashPassword('voxa-dummy-password-never-matches');
  await verifyPassword(password, await dummy);
  return false;
}

/**
 * Whether an account has a password to sign in with: invited accounts have none yet (null), and accounts made
 * by Google sign-in hold a marker that starts with "!" (oidc.ts NO_PASSWORD), which no hash ever does.
 */
export function hasUsablePassword(passwordHash: string | null): boolean {
  return typeof passwordHash === 'string' && !passwordHash.startsWith('!');
}
