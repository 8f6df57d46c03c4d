/**
 * GET /v1/users: people in the caller's workspace (never another workspace's). PATCH /v1/users/:id: an admin
 * changes an account of the workspace (role, disabled) through core/auth/accounts.ts, as the CLI does.
 */
import { changeAccount } from '../auth/accounts.js';
import { publicUser } from '../domain.js';
import { VoxaError } from '../errors.js';
import type { Hub } from '../hub.js';
import type { ApiRouter } from '../http/api-router.js';
import { AccountChangeBody, AccountResponse, UserParams, UsersQuery, UsersResponse } from './schemas.js';

export function userRoutes(api: ApiRouter, hub: Hub): void {
  api.add({
    method: 'get',
    path: '/v1/users',
    tag: 'users',
    summary: "Search the caller's workspace by name or email (q is literal text; empty lists everyone).",
    auth: true,
    query: UsersQuery,
    responses: { 200: { description: 'Matching users, by name.', schema: UsersResponse } },
    async handler(ctx, { query }) {
      const me = ctx.state.user!;
      // Invited accounts that never registered and disabled ones cannot be talked to, so they are not listed;
      // the store leaves them out before the limit, which otherwise they could use up.
      // Where customers may talk only to agents, a customer sees only the people they can talk to: other
      // customers' names and emails are not theirs to browse.
      const ws = me.role === 'customer' ? await hub.store.getWorkspace(me.workspaceId) : null;
      const roles = ws?.settings.customersTalkToAgentsOnly ? (['agent', 'admin'] as const) : undefined;
      const found = await hub.store.searchUsers(me.workspaceId, query.q, query.limit, { activeOnly: true, ...(roles ? { roles: [...roles] } : {}) });
      ctx.body = { users: found.map(publicUser) };
    },
  });

  api.add({
    method: 'patch',
    path: '/v1/users/:id',
    tag: 'users',
    summary: "Change an account of the caller's workspace: its role, or disable it (admins). A disabled account is locked out at once: REST, sign-in, refresh, and its open connections are closed.",
    auth: true,
    roles: ['admin'],
    params: UserParams,
    body: AccountChangeBody,
    responses: { 200: { description: 'The account as it is now.', schema: AccountResponse } },
    errors: ['USER_NOT_FOUND', 'FORBIDDEN', 'CONFLICT'],
    async handler(ctx, { params, body }) {
      const me = ctx.state.user!;
      const user = await hub.store.getUser(params.id);
      // Another workspace's account looks exactly like a missing one.
      if (!user || user.workspaceId !== me.workspaceId) throw new VoxaError('USER_NOT_FOUND');
      if (user.id === me.id && (body.disabled === true || (body.role !== undefined && body.role !== 'admin'))) {
        throw new VoxaError('CONFLICT', 'An admin cannot disable or demote their own account; ask another admin.');
      }
      const result = await changeAccount(hub.store, hub.bus.namespace, user, body, { type: 'user', id: me.id });
      await hub.chat.publish(result.entries);
      ctx.body = { user: publicUser(result.user), disabled: result.user.disabled, changed: result.changed };
    },
  });
}
