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

/** The claim a registration holds: what it wrote, so that only this very claim can be handed back. */
interface Claim {
  hash: string;
  usedAt: string;
}

async function claim(store: Pick<Store, 'updateDoc'>, userId: string, code: string | undefined, now: number): Promise<Claim | null> {
  if (!code) return null;
  const got = digest(code);
  const claimed = await store.updateDoc<InviteRecord>(INVITES_COLLECTION, userId, (cur) => (matches(cur, got, now) ? { ...cur, usedAt: new Date(now).toISOString() } : null), () => []);
  return claimed ? { hash: claimed.hash, usedAt: claimed.usedAt! } : null;
}

/**
 * Uses the code, once: a compare-and-set on the invite record marks it used only if it still holds this very
 * code, unused and unexpired. Of two registrations racing with one code, one wins; a code replaced meanwhile
 * (`voxa users invite`) no longer matches, and the new one stays. The record ages out with its expiresAt.
 */
export async function claimInvite(store: Pick<Store, 'updateDoc'>, userId: string, code: string | undefined, now = Date.now()): Promise<boolean> {
  return (await claim(store, userId, code, now)) !== null;
}

/**
 * Makes a used code unused again, but only the use `held` recorded: a code replaced meanwhile, or claimed
 * anew after another hand-back, is left alone. Compare-and-set like the claim.
 */
async function release(store: Pick<Store, 'updateDoc'>, userId: string, held: Claim): Promise<void> {
  await store.updateDoc<InviteRecord>(
    INVITES_COLLECTION,
    userId,
    (cur) => {
      if (cur.hash !== held.hash || cur.usedAt !== held.usedAt) return null;
      const { usedAt: _used, ...unused } = cur;
      return unused;
    },
    () => [],
  );
}

/**
 * Registration with an invite code: claims the code (claimInvite), then runs `complete`, the write that gives
 * the account its password. The two cannot be one atomic unit of the store (the invite is a document, the
 * account a user row, and the port commits those separately), so the claim is taken first, which is what
 * decides a race between two registrations, and handed back if `complete` throws: a write that failed (a
 * store error, the account gone or changed meanwhile) must not spend the code and lock the invited person out.
 *
 * `{ claimed: false }` when the code was not (or no longer) the user's valid one; nothing ran then. A write
 * whose outcome is unknown (it failed after the store may have committed it) also hands the code back; that
 * is harmless, since a registered account (one with a password) refuses registration before any code is
 * looked at. Only a crash between the claim and the write's end can still leave a code used with the
 * account not registered: `voxa users invite` issues a new one. If handing back fails too, `onReleaseFailed`
 * hears of it (the write's own error is what is thrown).
 */
export async function registerWithInvite<T>(
  store: Pick<Store, 'updateDoc'>,
  userId: string,
  code: string | undefined,
  complete: () => Promise<T>,
  opts: { now?: number; onReleaseFailed?: (err: unknown) => void } = {},
): Promise<{ claimed: false } | { claimed: true; value: T }> {
  const held = await claim(store, userId, code, opts.now ?? Date.now());
  if (!held) return { claimed: false };
  try {
    return { claimed: true, value: await complete() };
  } catch (err) {
    await release(store, userId, held).catch((releaseErr: unknown) => opts.onReleaseFailed?.(releaseErr));
    throw err;
  }
}

/** Removes a user's invite (the account was completed another way: Google sign-in); false when there was none. */
export async function dropInvite(docs: DocumentStore, userId: string): Promise<boolean> {
  return docs.delete(INVITES_COLLECTION, userId);
}
