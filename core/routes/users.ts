/** GET /v1/users: people in the caller's workspace (never another workspace's). */
import { publicUser } from '../domain.js';
import type { Hub } from '../hub.js';
import type { ApiRouter } from '../http/api-router.js';
import { UsersQuery, UsersResponse } from './schemas.js';

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
      const found = await hub.store.searchUsers(me.workspaceId, query.q, query.limit, { activeOnly: true });
      ctx.body = { users: found.map(publicUser) };
    },
  });
}
