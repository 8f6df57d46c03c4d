/**
 * GET /v1/workspace: the caller's workspace and its settings. PATCH /v1/workspace (admins): change them —
 * who may register, whether customers may talk only with agents, whether pushes carry message text, and a
 * workspace upload limit below the hub's. Each change commits a `workspace.updated` event (the audit log
 * records it) with the fields that changed.
 */
import { z } from 'zod';
import { WorkspaceSettingsSchema, type Workspace } from '../domain.js';
import { createEvent } from '../events/catalog.js';
import { VoxaError } from '../errors.js';
import type { Hub } from '../hub.js';
import type { ApiRouter } from '../http/api-router.js';
import { FILE_LIMITS, uploadLimitFor } from '../files/service.js';


const WorkspaceOut = z.object({
  id: z.string(),
  name: z.string(),
  settings: WorkspaceSettingsSchema,
  /** The upload limit in force here: the workspace's own if it set a lower one, else the hub's. */
  uploadMaxBytes: z.number().int(),
  createdAt: z.string(),
});
const WorkspaceResponse = z.object({ workspace: WorkspaceOut });

const WorkspacePatch = z
  .strictObject({
    registration: WorkspaceSettingsSchema.shape.registration.optional(),
    customersTalkToAgentsOnly: z.boolean().optional(),
    privatePush: z.boolean().optional(),
    /** A limit below the hub's uploadMaxBytes; null goes back to the hub's. */
    uploadMaxBytes: z.number().int().min(1).nullable().optional(),
  })
  .refine((b) => Object.values(b).some((v) => v !== undefined), 'name at least one setting')
  .meta({ minProperties: 1 });

export function workspaceRoutes(api: ApiRouter, hub: Hub): void {
  const view = async (ws: Workspace) => ({ id: ws.id, name: ws.name, settings: ws.settings, uploadMaxBytes: await uploadLimitFor(hub, ws.id), createdAt: ws.createdAt });

  api.add({
    method: 'get',
    path: '/v1/workspace',
    tag: 'workspace',
    summary: "The caller's workspace and its settings.",
    auth: true,
    responses: { 200: { description: 'The workspace.', schema: WorkspaceResponse } },
    async handler(ctx) {
      const ws = await hub.store.getWorkspace(ctx.state.user!.workspaceId);
      if (!ws) throw new VoxaError('NOT_FOUND', 'No such workspace.');
      ctx.body = { workspace: await view(ws) };
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
    body: WorkspacePatch,
    responses: { 200: { description: 'The workspace as it is now.', schema: WorkspaceResponse } },
    errors: ['FORBIDDEN', 'VALIDATION_FAILED'],
    async handler(ctx, { body }) {
      const me = ctx.state.user!;
      const { uploadMaxBytes, ...settings } = body;
      if (typeof uploadMaxBytes === 'number' && uploadMaxBytes > hub.config.uploadMaxBytes) {
        const message = `can only lower the hub's limit (${hub.config.uploadMaxBytes} bytes)`;
        throw new VoxaError('VALIDATION_FAILED', `body.uploadMaxBytes: ${message}`, { fields: ['body.uploadMaxBytes'], issues: [{ path: 'body.uploadMaxBytes', code: 'too_big', message }] });
      }
      // The event says what changed, the upload limit included; the settings write carries it in its outbox.
      const changed: Record<string, unknown> = { ...settings, ...(uploadMaxBytes !== undefined ? { uploadMaxBytes } : {}) };
      if (uploadMaxBytes === null) await hub.store.docs.delete(FILE_LIMITS, me.workspaceId);
      else if (uploadMaxBytes !== undefined) await hub.store.docs.put(FILE_LIMITS, me.workspaceId, { maxBytes: uploadMaxBytes });
      const events = hub.chat.eventsFor((ws: Workspace) => [
        createEvent('workspace.updated', { workspaceId: ws.id, actor: { type: 'user', id: me.id }, data: { settings: changed } }),
      ]);
      const ws = await hub.store.updateWorkspaceSettings(me.workspaceId, settings, events);
      await hub.chat.publish(events.entries);
      ctx.body = { workspace: await view(ws) };
    },
  });
}
