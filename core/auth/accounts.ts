/**
 * An admin's changes to an account: its role, and whether it may sign in at all. One function for the REST
 * route (PATCH /v1/users/:id) and the CLI (`voxa users set-role | disable | enable`), so both write the same
 * events: `user.role_changed` for a new role, `user.updated` with `changes: ["disabled"]` (or "enabled") for the
 * other. Those events are what other processes act on: the read caches drop the account, and the edge closes
 * a disabled account's open connections.
 *
 * Disabling also revokes every refresh token of the account, so enabling it again does not bring old sessions
 * back: the user signs in anew.
 */
import { publicUser, type Role, type UserRecord } from '../domain.js';
import { createEvent, type Actor } from '../events/catalog.js';
import { recordOutbox, toOutbox } from '../events/outbox-entry.js';
import type { OutboxEntry, Store } from '../store/port.js';

export interface AccountChange {
  role?: Role;
  disabled?: boolean;
}

export interface AccountChangeResult {
  user: UserRecord;
  /** False when the account already was as asked (nothing written, no events). */
  changed: boolean;
  /** The committed events, to publish now (they are in the store's outbox either way). */
  entries: OutboxEntry[];
}

export async function changeAccount(store: Store, namespace: string, user: UserRecord, change: AccountChange, actor: Actor): Promise<AccountChangeResult> {
  const patch: AccountChange = {};
  if (change.role !== undefined && change.role !== user.role) patch.role = change.role;
  if (change.disabled !== undefined && change.disabled !== user.disabled) patch.disabled = change.disabled;
  if (patch.role === undefined && patch.disabled === undefined) return { user, changed: false, entries: [] };
  const events = recordOutbox((u: UserRecord) => {
    const base = { workspaceId: u.workspaceId, userId: u.id, actor };
    const out = [];
    if (patch.role !== undefined) out.push(createEvent('user.role_changed', { ...base, data: { user: publicUser(u), from: user.role, to: patch.role } }));
    if (patch.disabled !== undefined) out.push(createEvent('user.updated', { ...base, data: { user: publicUser(u), changes: [patch.disabled ? 'disabled' : 'enabled'] } }));
    return out.map((e) => toOutbox(e, namespace));
  });
  // Disabling also ends the access tokens the account has: enabled again, it signs in anew.
  const write = patch.disabled ? { ...patch, tokensValidAfter: new Date().toISOString() } : patch;
  const updated = await store.updateUser(user.id, write, events);
  if (!updated) return { user, changed: false, entries: [] };
  if (patch.disabled) await store.revokeUserTokens(user.id, new Date().toISOString());
  return { user: updated, changed: true, entries: events.entries };
}
