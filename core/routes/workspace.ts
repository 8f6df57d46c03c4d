/**
 * GET /v1/workspace: the caller's workspace and its settings. PATCH /v1/workspace (admins): change them —
 * who may register, whether customers may talk only with agents, whether pushes carry message text, and a
 * workspace upload limit below the hub's. Each change commits a `workspace.updated` event (the audit log
 * records it) with the fields that changed. The rules live in ./workspace-settings.ts, shared with
 * `voxa workspace show | set`.
 */
import { z } from 'zod';
import type { Hub } from '../hub.js';
import type { ApiRouter } from '../http/api-router.js';
import { changeWorkspace, getWorkspaceView, WorkspaceChangeSchema, WorkspaceOut } from './workspace-settings.js';

const WorkspaceResponse = z.object({ workspace: WorkspaceOut });

export function workspaceRoutes(api: ApiRouter, hub: Hub): void {
  api.add({
    method: 'get',
    path: '/v1/workspace',
    tag: 'workspace',
    summary: "The caller's workspace and its settings.",
    auth: true,
    responses: { 200: { description: 'The workspace.', schema: WorkspaceResponse } },
    async handler(ctx) {
      ctx.body = { workspace: await getWorkspaceView(hub, ctx.state.user!.workspaceId) };
    },
  });

  api.add({
    method: 'patch',
    path: '/v1/workspace',
    tag: 'workspace',
    summary:
      "Change the caller's workspace settings (admins). Registration here is capped by the hub's own setting (the stricter wins); uploadMaxBytes can only lower the hub's limit (null removes the workspace's own).",
    auth: true,
    roles: ['admin'],
    body: WorkspaceChangeSchema,
    responses: { 200: { description: 'The workspace as it is now.', schema: WorkspaceResponse } },
    errors: ['FORBIDDEN', 'VALIDATION_FAILED'],
    async handler(ctx, { body }) {
      const me = ctx.state.user!;
      const { workspace, entries } = await changeWorkspace(hub, me.workspaceId, body, { type: 'user', id: me.id });
      await hub.chat.publish(entries);
      ctx.body = { workspace };
    },
  });
}
