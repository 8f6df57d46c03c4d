/**
 * Invite codes for pre-registered accounts (`voxa users add`). An invited account has no password until its
 * person registers; without a code, whoever registered first with the email would take the account and its
 * role (an admin's included). So an invitation comes with a one-time code, shown once to whoever added the
 * user, and registration of an invited email must present it.
 *
 * Only a SHA-256 of the code is stored (the code is 192 random bits, so a fast hash is enough: there is
 * nothing to guess from it). A code expires; an expired one is pruned with the other sign-in records, and
 * `voxa users invite` issues a new one (which replaces the old).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { DocumentStore, Store } from '../store/port.js';

export const INVITES_COLLECTION = 'user_invites';
export const DEFAULT_INVITE_DAYS = 7;
export const MAX_INVITE_DAYS = 90;

interface InviteRecord {
  /** SHA-256 of the code, hex. */
  hash: string;
  expiresAt: string;
  /** Set by the registration that used the code (claimInvite); a used code never matches again. */
  usedAt?: string;
}

const digest = (code: string) => createHash('sha256').update(code, 'utf8').digest();

/** Issues a new code for an invited user (replacing any earlier one); the code itself is returned, never stored. */
export async function issueInvite(docs: DocumentStore, userId: string, days = DEFAULT_INVITE_DAYS, now = Date.now()): Promise<{ code: string; expiresAt: string }> {
  const code = `vxi_${randomBytes(24).toString('base64url')}`;
  const expiresAt = new Date(now + days * 24 * 3600_000).toISOString();
  await docs.put<InviteRecord>(INVITES_COLLECTION, userId, { hash: digest(code).toString('hex'), expiresAt });
  return { code, expiresAt };
}

function matches(rec: InviteRecord | null, got: Buffer, now: number): boolean {
  if (!rec || typeof rec.hash !== 'string' || rec.usedAt || !(Date.parse(rec.expiresAt) > now)) return false;
  const want = Buffer.from(rec.hash, 'hex');
  return want.length === got.length && timingSafeEqual(want, got);
}

/** True when `code` is the user's current, unused, unexpired invite code (a cheap check before the real claim). */
export async function inviteMatches(docs: DocumentStore, userId: string, code: string | undefined, now = Date.now()): Promise<boolean> {
  return !!code && matches(await docs.get<InviteRecord>(INVITES_COLLECTION, userId), digest(code), now);
}

/**
 * Uses the code, once: a compare-and-set on the invite record marks it used only if it still holds this very
 * code, unused and unexpired. Of two registrations racing with one code, one wins; a code replaced meanwhile
 * (`voxa users invite`) no longer matches, and the new one stays. The record ages out with its expiresAt.
 */
export async function claimInvite(store: Pick<Store, 'updateDoc'>, userId: string, code: string | undefined, now = Date.now()): Promise<boolean> {
  if (!code) return false;
  const got = digest(code);
  const claimed = await store.updateDoc<InviteRecord>(INVITES_COLLECTION, userId, (cur) => (matches(cur, got, now) ? { ...cur, usedAt: new Date(now).toISOString() } : null), () => []);
  return claimed !== null;
}

/** Removes a user's invite (the account was completed another way: Google sign-in); false when there was none. */
export async function dropInvite(docs: DocumentStore, userId: string): Promise<boolean> {
  return docs.delete(INVITES_COLLECTION, userId);
}
