/**
 * Reading and changing a workspace's settings: one implementation for `GET`/`PATCH /v1/workspace`
 * (core/routes/workspace.ts) and `voxa workspace show | set` (cli/commands/workspace.ts), so both check the same
 * rules and commit the same `workspace.updated` event.
 *
 * The settings write and its event go into the store in one unit (the store's outbox); publishing is left to the
 * caller, since a hub process and a CLI process publish differently (the outbox relay vs a short NATS connection).
 */
import { z } from 'zod';
import { WorkspaceSettingsSchema, type Workspace } from '../domain.js';
import { VoxaError } from '../errors.js';
import { createEvent, type Actor } from '../events/catalog.js';
import { recordOutbox, toOutbox } from '../events/outbox-entry.js';
import { FILE_LIMITS, uploadLimitFor } from '../files/service.js';
import type { Config } from '../config.js';
import type { OutboxEntry, Store } from '../store/port.js';

/** What this module needs of a hub; a CLI process has these two and nothing else. */
export interface WorkspaceDeps {
  store: Store;
  config: Config;
}

export const WorkspaceOut = z.object({
  id: z.string(),
  name: z.string(),
  settings: WorkspaceSettingsSchema,
  /** The upload limit in force here: the workspace's own if it set a lower one, else the hub's. */
  uploadMaxBytes: z.number().int(),
  createdAt: z.string(),
});
export type WorkspaceView = z.infer<typeof WorkspaceOut>;

/** A change of settings: at least one of them, nothing else. */
export const WorkspaceChangeSchema = z
  .strictObject({
    registration: WorkspaceSettingsSchema.shape.registration.optional(),
    customersTalkToAgentsOnly: z.boolean().optional(),
    privatePush: z.boolean().optional(),
    /** A limit below the hub's uploadMaxBytes; null goes back to the hub's. */
    uploadMaxBytes: z.number().int().min(1).nullable().optional(),
  })
  .refine((b) => Object.values(b).some((v) => v !== undefined), 'name at least one setting')
  .meta({ minProperties: 1 });
export type WorkspaceChange = z.output<typeof WorkspaceChangeSchema>;
export type WorkspaceField = keyof WorkspaceChange;

export async function workspaceView(deps: WorkspaceDeps, ws: Workspace): Promise<WorkspaceView> {
  return { id: ws.id, name: ws.name, settings: ws.settings, uploadMaxBytes: await uploadLimitFor(deps, ws.id), createdAt: ws.createdAt };
}

async function existingWorkspace(store: Store, workspaceId: string): Promise<Workspace> {
  const ws = await store.getWorkspace(workspaceId);
  if (!ws) throw new VoxaError('NOT_FOUND', `No workspace "${workspaceId}".`);
  return ws;
}

export async function getWorkspaceView(deps: WorkspaceDeps, workspaceId: string): Promise<WorkspaceView> {
  return workspaceView(deps, await existingWorkspace(deps.store, workspaceId));
}

export interface WorkspaceChangeOptions {
  /**
   * How a refused field is named in the error, the way the caller's user wrote it: `body.uploadMaxBytes` for the
   * API (the default), `--upload-max-bytes` for the CLI.
   */
  fieldName?: (field: WorkspaceField) => string;
}

export interface WorkspaceChangeResult {
  workspace: WorkspaceView;
  /** The committed workspace.updated event's outbox row, for the caller to publish (it is in the outbox either way). */
  entries: OutboxEntry[];
}

/**
 * Applies a validated change (WorkspaceChangeSchema) to a workspace, after the rules the schema cannot know: the
 * workspace exists, and an upload limit only lowers the hub's. The event names every field the change named.
 */
export async function changeWorkspace(deps: WorkspaceDeps, workspaceId: string, change: WorkspaceChange, actor: Actor, opts: WorkspaceChangeOptions = {}): Promise<WorkspaceChangeResult> {
  const { store, config } = deps;
  const { uploadMaxBytes, ...settings } = change;
  if (typeof uploadMaxBytes === 'number' && uploadMaxBytes > config.uploadMaxBytes) {
    const field = (opts.fieldName ?? ((f) => `body.${f}`))('uploadMaxBytes');
    const message = `can only lower the hub's limit (${config.uploadMaxBytes} bytes)`;
    throw new VoxaError('VALIDATION_FAILED', `${field}: ${message}`, { fields: [field], issues: [{ path: field, code: 'too_big', message }] });
  }
  // Checked before anything is written, so a missing workspace gets no upload limit document either.
  await existingWorkspace(store, workspaceId);
  if (uploadMaxBytes === null) await store.docs.delete(FILE_LIMITS, workspaceId);
  else if (uploadMaxBytes !== undefined) await store.docs.put(FILE_LIMITS, workspaceId, { maxBytes: uploadMaxBytes });
  // The event says what changed, the upload limit included; the settings write carries it in its outbox.
  const changed: Record<string, unknown> = { ...settings, ...(uploadMaxBytes !== undefined ? { uploadMaxBytes } : {}) };
  const events = recordOutbox((ws: Workspace) => [
    toOutbox(createEvent('workspace.updated', { workspaceId: ws.id, actor, data: { settings: changed } }), config.natsNamespace),
  ]);
  const ws = await store.updateWorkspaceSettings(workspaceId, settings, events);
  return { workspace: await workspaceView(deps, ws), entries: events.entries };
}
