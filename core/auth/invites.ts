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
import type { DocumentStore } from '../store/port.js';

export const INVITES_COLLECTION = 'user_invites';
export const DEFAULT_INVITE_DAYS = 7;
export const MAX_INVITE_DAYS = 90;

interface InviteRecord {
  /** SHA-256 of the code, hex. */
  hash: string;
  expiresAt: string;
}

const digest = (code: string) => createHash('sha256').update(code, 'utf8').digest();

/** Issues a new code for an invited user (replacing any earlier one); the code itself is returned, never stored. */
export async function issueInvite(docs: DocumentStore, userId: string, days = DEFAULT_INVITE_DAYS, now = Date.now()): Promise<{ code: string; expiresAt: string }> {
  const code = `vxi_${randomBytes(24).toString('base64url')}`;
  const expiresAt = new Date(now + days * 24 * 3600_000).toISOString();
  await docs.put<InviteRecord>(INVITES_COLLECTION, userId, { hash: digest(code).toString('hex'), expiresAt });
  return { code, expiresAt };
}

/** True when `code` is the user's current, unexpired invite code. */
export async function inviteMatches(docs: DocumentStore, userId: string, code: string | undefined, now = Date.now()): Promise<boolean> {
  if (!code) return false;
  const rec = await docs.get<InviteRecord>(INVITES_COLLECTION, userId);
  if (!rec || typeof rec.hash !== 'string' || !(Date.parse(rec.expiresAt) > now)) return false;
  const want = Buffer.from(rec.hash, 'hex');
  const got = digest(code);
  return want.length === got.length && timingSafeEqual(want, got);
}

/** Removes a user's invite (used, or the account was completed another way); false when there was none. */
export async function dropInvite(docs: DocumentStore, userId: string): Promise<boolean> {
  return docs.delete(INVITES_COLLECTION, userId);
}
