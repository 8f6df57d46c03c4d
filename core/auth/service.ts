/**
 * Accounts: registration (open / invite / closed), login, refresh-token rotation with reuse detection, logout.
 *
 * Account changes (a new user, an invited user completing registration) are committed with their events in
 * the store's outbox. Sign-in audit events (user.login, user.login_failed, user.token_reuse, user.logout) are
 * not state changes: they are published straight to JetStream, best effort. Writing a row per failed login
 * would let anyone turn password guessing into store writes, and losing an audit line while NATS is down is
 * an acceptable price for that.
 */
import { publicUser, type Role, type User, type UserRecord } from '../domain.js';
import { VoxaError } from '../errors.js';
import { createEvent, type Actor, type EventData, type EventType } from '../events/catalog.js';
import type { Hub } from '../hub.js';
import { newId } from '../ids.js';
import type { OutboxEntry, RefreshTokenRecord, Store } from '../store/port.js';
import { recordOutbox, toOutbox } from '../events/outbox-entry.js';
import { inviteMatches, issueInvite, registerWithInvite } from './invites.js';
import { dummyVerify, hashPassword, needsRehash, verifyPassword } from './passwords.js';
import { hashRefreshToken, newRefreshToken, signAccessToken } from './tokens.js';
import { TotpService } from './totp.js';

export interface Session {
  user: User;
  accessToken: string;
  refreshToken: string;
}

export type RegistrationMode = 'open' | 'invite' | 'closed';
const STRICTNESS: Record<RegistrationMode, number> = { open: 0, invite: 1, closed: 2 };

/** Lower-cases and trims an email: the store keeps emails lower-cased and unique. */
export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

/**
 * Builds a pre-registered (invited) user and its user.registered outbox entry: no password until the person
 * registers with this email and the invite code returned here (core/auth/invites.ts), which then keeps the
 * assigned role. Used by `voxa users add`, which may run without NATS: the entry sits in the outbox until the
 * hub's sweeper publishes it. `actor` is who added them. The user is written first: a crash before the code is
 * stored leaves an invited account with no code, which `voxa users invite` gives one.
 */
export async function preRegisterUser(
  store: Store,
  namespace: string,
  input: { email: string; role: Role; name?: string | undefined; workspaceId: string; inviteDays?: number | undefined },
  actor: Actor,
): Promise<{ user: UserRecord; entries: OutboxEntry[]; invite: { code: string; expiresAt: string } }> {
  const email = normalizeEmail(input.email);
  const user: UserRecord = {
    id: newId('usr'),
    workspaceId: input.workspaceId,
    email,
    name: input.name ?? email.split('@')[0]!,
    role: input.role,
    createdAt: new Date().toISOString(),
    passwordHash: null,
    disabled: false,
  };
  const events = recordOutbox((u: UserRecord) => [
    toOutbox(createEvent('user.registered', { workspaceId: u.workspaceId, userId: u.id, actor, data: { user: publicUser(u) } }), namespace),
  ]);
  const created = await store.createUser(user, events);
  const invite = await issueInvite(store.docs, created.id, input.inviteDays);
  return { user: created, entries: events.entries, invite };
}

export class AuthService {
  constructor(private readonly hub: Hub) {}

  /**
   * The registration mode in force: the stricter of the hub config (the operator's ceiling) and the default
   * workspace's setting (which an admin may tighten).
   */
  async registrationMode(): Promise<RegistrationMode> {
    const ws = await this.hub.store.getWorkspace(this.hub.config.defaultWorkspaceId);
    const fromWs = ws?.settings.registration ?? 'open';
    const fromCfg = this.hub.config.registration;
    return STRICTNESS[fromWs] > STRICTNESS[fromCfg] ? fromWs : fromCfg;
  }

  private async limit(kind: 'login' | 'register', ip: string, email: string): Promise<void> {
    const max = this.hub.config.authRateLimitPerMinute;
    await this.hub.rateLimiter.hit(`${kind}:ip:${ip}`, max);
    await this.hub.rateLimiter.hit(`${kind}:acct:${email}`, max);
  }

  /** Starts a session: a new refresh-token family and an access token bound to it. */
  async issueSession(user: UserRecord, familyId?: string): Promise<Session> {
    const { token, record } = newRefreshToken(this.hub, user.id, familyId);
    await this.hub.store.insertRefreshToken(record);
    return { user: publicUser(user), accessToken: signAccessToken(this.hub, user, record.familyId), refreshToken: token };
  }

  async register(input: { email: string; password: string; name: string; invite?: string | undefined }, ip: string): Promise<Session> {
    const email = normalizeEmail(input.email);
    await this.limit('register', ip, email);
    const mode = await this.registrationMode();
    if (mode === 'closed') throw new VoxaError('REGISTRATION_CLOSED');
    const existing = await this.hub.store.getUserByEmail(email);
    if (existing && existing.passwordHash !== null) throw new VoxaError('EMAIL_TAKEN');
    // One answer for "not invited" (invite mode) and "invited, but no valid code": it does not say which.
    const inviteRequired = () => new VoxaError('INVITE_REQUIRED', 'Registration needs an invitation: register with the invite code you were given (ask for a new one if it expired).', { field: 'body.invite' });
    if (!existing && mode === 'invite') throw inviteRequired();
    // An invited (pre-registered) account is claimed only with its invite code, whatever the mode: the email
    // alone would hand its role to whoever registered first. (A cheap check first: no password hashing for a
    // wrong code.)
    if (existing && !(await inviteMatches(this.hub.store.docs, existing.id, input.invite))) throw inviteRequired();
    const passwordHash = await hashPassword(input.password);

    if (existing) {
      // The code is used once (compare-and-set): of two registrations racing with it one goes on, and a code
      // replaced in the meantime does not count. Should the account write then fail, the claim is handed back
      // (registerWithInvite), so the invited person can try again with the same code.
      const events = recordOutbox((u: UserRecord) => this.userEvents(u, 'user.updated', { user: publicUser(u), changes: ['password', 'name'] }));
      const done = await registerWithInvite(
        this.hub.store,
        existing.id,
        input.invite,
        async () => {
          // Registering sets the password and keeps the assigned role.
          const updated = await this.hub.store.updateUser(existing.id, { passwordHash, name: input.name }, events);
          if (!updated) throw new VoxaError('CONFLICT', 'The invitation changed; try again.');
          return updated;
        },
        { onReleaseFailed: (err) => this.hub.log.warn({ err: (err as Error).message, userId: existing.id }, 'registration failed and its invite code could not be handed back; `voxa users invite` issues a new one') },
      );
      if (!done.claimed) throw new VoxaError('CONFLICT', 'The invitation was just used or replaced; sign in, or ask for a new code.');
      await this.hub.chat.publish(events.entries);
      return this.issueSession(done.value);
    }

    const user: UserRecord = {
      id: newId('usr'),
      workspaceId: this.hub.config.defaultWorkspaceId,
      email,
      name: input.name,
      role: 'customer',
      createdAt: new Date().toISOString(),
      passwordHash,
      disabled: false,
    };
    const events = recordOutbox((u: UserRecord) => this.userEvents(u, 'user.registered', { user: publicUser(u) }));
    const created = await this.hub.store.createUser(user, events);
    await this.hub.chat.publish(events.entries);
    return this.issueSession(created);
  }

  async login(input: { email: string; password: string; otp?: string | undefined }, ip: string): Promise<Session> {
    const email = normalizeEmail(input.email);
    await this.limit('login', ip, email);
    const user = await this.hub.store.getUserByEmail(email);
    if (!user || user.passwordHash === null) {
      await dummyVerify(input.password);
      throw new VoxaError('INVALID_CREDENTIALS');
    }
    const ok = await verifyPassword(input.password, user.passwordHash);
    if (!ok) {
      this.audit(user, 'user.login_failed', { ip, reason: 'bad_password' });
      throw new VoxaError('INVALID_CREDENTIALS');
    }
    if (user.disabled) {
      this.audit(user, 'user.login_failed', { ip, reason: 'disabled' });
      throw new VoxaError('ACCOUNT_DISABLED');
    }
    // --- issue 7: second factor (core/auth/totp.ts) ---
    if (user.totp?.enabled) {
      try {
        await new TotpService(this.hub).verifyLogin(user, input.otp);
      } catch (err) {
        const code = (err as { code?: string }).code;
        this.audit(user, 'user.login_failed', { ip, reason: code === 'OTP_REQUIRED' ? 'otp_required' : code === 'RATE_LIMITED' ? 'otp_rate_limited' : 'bad_otp' });
        throw err;
      }
    }
    // --- end issue 7 ---
    let current = user;
    if (needsRehash(user.passwordHash)) {
      const passwordHash = await hashPassword(input.password);
      current = (await this.hub.store.updateUser(user.id, { passwordHash }, () => [])) ?? user;
    }
    await this.hub.rateLimiter.reset(`login:acct:${email}`);
    this.audit(current, 'user.login', { ip, method: 'password' });
    return this.issueSession(current);
  }

  /**
   * Rotates a refresh token. A token presented again after it was used revokes its whole family
   * (REFRESH_TOKEN_REUSED), unless it comes within refreshReuseGraceSeconds of its own use (see usedAgain).
   */
  async refresh(refreshToken: string): Promise<Session> {
    const rec = await this.hub.store.getRefreshTokenByHash(hashRefreshToken(refreshToken));
    if (!rec) throw new VoxaError('INVALID_REFRESH_TOKEN');
    const now = new Date();
    if (rec.usedAt !== null) return this.usedAgain(rec, now);
    if (rec.revokedAt !== null || Date.parse(rec.expiresAt) <= now.getTime()) throw new VoxaError('INVALID_REFRESH_TOKEN');
    const user = await this.hub.store.getUser(rec.userId);
    if (!user || user.disabled || user.passwordHash === null) throw new VoxaError('INVALID_REFRESH_TOKEN');
    const next = newRefreshToken(this.hub, user.id, rec.familyId, now);
    // The store marks the old token used and inserts the next one atomically, only if the old one was still
    // fresh: of two concurrent refreshes with the same token exactly one wins.
    const rotated = await this.hub.store.rotateRefreshToken(rec.id, now.toISOString(), next.record);
    if (!rotated) {
      // Lost the compare-and-set: see what beat us (a concurrent refresh, or a revocation).
      const after = await this.hub.store.getRefreshTokenByHash(rec.tokenHash);
      if (!after || after.usedAt === null) throw new VoxaError('INVALID_REFRESH_TOKEN');
      return this.usedAgain(after, now);
    }
    return { user: publicUser(user), accessToken: signAccessToken(this.hub, user, rec.familyId), refreshToken: next.token };
  }

  /**
   * A used token presented again. Within the grace window after its own use, and with the family still valid,
   * it is the loser of two concurrent refreshes (two tabs, a retried request): revoking the family would log
   * out the winner too, so the answer is 409 CONFLICT and nothing changes. Later it can only be a copy, and
   * the family is revoked. The window is short because a thief racing the owner inside it goes unnoticed.
   */
  private usedAgain(rec: RefreshTokenRecord, now: Date): Promise<never> {
    const sinceUse = now.getTime() - Date.parse(rec.usedAt!);
    if (rec.revokedAt === null && sinceUse < this.hub.config.refreshReuseGraceSeconds * 1000) {
      throw new VoxaError('CONFLICT', 'A concurrent refresh used this token a moment ago; use the tokens it returned.', { reason: 'refresh_race' });
    }
    return this.reused(rec.userId, rec.familyId, now);
  }

  private async reused(userId: string, familyId: string, now: Date): Promise<never> {
    await this.hub.store.revokeTokenFamily(familyId, now.toISOString());
    const user = await this.hub.store.getUser(userId);
    if (user) this.audit(user, 'user.token_reuse', { familyId });
    throw new VoxaError('REFRESH_TOKEN_REUSED');
  }

  /**
   * Ends a session: revokes the family of the given refresh token (it must belong to the caller), or else the
   * family the caller's access token was issued with.
   */
  async logout(user: UserRecord, familyFromToken: string | undefined, refreshToken?: string): Promise<void> {
    let familyId = familyFromToken;
    if (refreshToken !== undefined) {
      const rec = await this.hub.store.getRefreshTokenByHash(hashRefreshToken(refreshToken));
      if (!rec || rec.userId !== user.id) throw new VoxaError('INVALID_REFRESH_TOKEN');
      familyId = rec.familyId;
    }
    if (!familyId) return;
    await this.hub.store.revokeTokenFamily(familyId, new Date().toISOString());
    this.audit(user, 'user.logout', {});
  }

  private userEvents<T extends EventType>(u: UserRecord, type: T, data: EventData<T>): OutboxEntry[] {
    return this.hub.chat.outboxOf([
      createEvent(type, { workspaceId: u.workspaceId, userId: u.id, actor: { type: 'user', id: u.id }, data }),
    ]);
  }

  /** Best-effort audit event, published without a store write and without delaying the response. */
  private audit<T extends EventType>(u: UserRecord, type: T, data: EventData<T>): void {
    void this.hub.outbox.dispatch(this.userEvents(u, type, data), { stored: false }).catch(() => undefined);
  }
}
