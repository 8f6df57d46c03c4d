/**
 * `voxa workspace show | set`: read and change a workspace's settings from a terminal, straight against the
 * configured store. `set` goes through the same rules and writes the same `workspace.updated` event as
 * `PATCH /v1/workspace` (core/routes/workspace-settings.ts); the event names the CLI as its actor and is
 * published as cli/store.ts describes.
 */
import type { Command } from 'commander';
import { CLI_ACTOR } from '../../connectors/context.js';
import { changeWorkspace, getWorkspaceView, WorkspaceChangeSchema, type WorkspaceField, type WorkspaceView } from '../../core/routes/workspace-settings.js';
import { publishNow, withStore } from '../store.js';
import { CliError, EXIT, output } from '../util.js';

/** Each setting's option, so an error names what the user typed. */
const OPTION: Record<WorkspaceField, string> = {
  registration: '--registration',
  customersTalkToAgentsOnly: '--customers-talk-to-agents-only',
  privatePush: '--private-push',
  uploadMaxBytes: '--upload-max-bytes',
};

interface SetOptions {
  workspace?: string;
  registration?: string;
  customersTalkToAgentsOnly?: string;
  privatePush?: string;
  uploadMaxBytes?: string;
}

function invalid(message: string): CliError {
  return new CliError(message, EXIT.USAGE, 'VALIDATION_FAILED');
}

function parseBool(field: WorkspaceField, value: string | undefined): boolean | undefined {
  if (value === undefined) return undefined;
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw invalid(`${OPTION[field]} must be true or false (got "${value}")`);
}

/** A whole number of bytes, or `none` for no limit of the workspace's own (the hub's applies). */
function parseLimit(value: string | undefined): number | null | undefined {
  if (value === undefined) return undefined;
  if (value === 'none') return null;
  if (!/^\d+$/.test(value)) throw invalid(`${OPTION.uploadMaxBytes} must be a whole number of bytes, or none (got "${value}")`);
  return Number(value);
}

/** The options as a change, checked by the same schema as the PATCH body. */
export function parseSetOptions(opts: SetOptions) {
  const raw = {
    registration: opts.registration,
    customersTalkToAgentsOnly: parseBool('customersTalkToAgentsOnly', opts.customersTalkToAgentsOnly),
    privatePush: parseBool('privatePush', opts.privatePush),
    uploadMaxBytes: parseLimit(opts.uploadMaxBytes),
  };
  const r = WorkspaceChangeSchema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path[0] as WorkspaceField | undefined;
  if (field === undefined || !(field in OPTION)) throw invalid(`name at least one setting to change: ${Object.values(OPTION).join(', ')}`);
  const given = field === 'registration' ? opts.registration : opts[field];
  const detail = field === 'registration' ? `must be one of ${WorkspaceChangeSchema.shape.registration.unwrap().options.join(', ')}` : issue.message;
  throw invalid(`${OPTION[field]}${field === 'registration' ? '' : ':'} ${detail} (got "${String(given)}")`);
}

function renderWorkspace(ws: WorkspaceView): string {
  const rows: Array<[string, unknown]> = [
    ['registration', ws.settings.registration],
    ['customersTalkToAgentsOnly', ws.settings.customersTalkToAgentsOnly],
    ['privatePush', ws.settings.privatePush],
    ['uploadMaxBytes', ws.uploadMaxBytes],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return [`${ws.id}  ${ws.name}`, ...rows.map(([k, v]) => `  ${k.padEnd(width)}  ${String(v)}`)].join('\n');
}

export function register(program: Command): void {
  const workspace = program
    .command('workspace')
    .description('Show and change workspace settings: who may register, whether customers talk only to agents, private pushes, the upload limit.')
    .addHelpText('after', '\nExamples:\n  $ voxa workspace show\n  $ voxa workspace set --registration invite --private-push true\n  $ voxa workspace set --upload-max-bytes none --workspace support --json');

  workspace
    .command('show')
    .description('Print a workspace and its settings, with the upload limit in force there (as GET /v1/workspace).')
    .option('--workspace <id>', 'workspace id (default: the default workspace)')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa workspace show\n  $ voxa workspace show --workspace support --json')
    .action(async (opts: { workspace?: string }, cmd: Command) => {
      const view = await withStore(async (store, config) => {
        // An unknown workspace is the service's NOT_FOUND, which withStore turns into exit 3.
        return getWorkspaceView({ store, config }, opts.workspace ?? config.defaultWorkspaceId);
      });
      output(cmd, { workspace: view }, (r: { workspace: WorkspaceView }) => renderWorkspace(r.workspace));
    });

  workspace
    .command('set')
    .description(
      "Change a workspace's settings (as PATCH /v1/workspace, with the same workspace.updated event). Name at least one. Registration is capped by the hub's own registration setting (the stricter wins); the upload limit can only lower the hub's.",
    )
    .option('--registration <mode>', 'who may register: open, invite or closed')
    .option('--customers-talk-to-agents-only <bool>', 'true: a customer may only open conversations that include an agent or admin')
    .option('--private-push <bool>', 'true: pushes carry no message text')
    .option('--upload-max-bytes <n>', "the workspace's upload limit in bytes, below the hub's; none goes back to the hub's")
    .option('--workspace <id>', 'workspace id (default: the default workspace)')
    .option('--json', 'machine-readable JSON output')
    .addHelpText(
      'after',
      '\nExamples:\n  $ voxa workspace set --registration invite\n  $ voxa workspace set --customers-talk-to-agents-only true --private-push true\n  $ voxa workspace set --upload-max-bytes 10485760 --workspace support --json',
    )
    .action(async (opts: SetOptions, cmd: Command) => {
      const change = parseSetOptions(opts);
      const result = await withStore(async (store, config) => {
        const workspaceId = opts.workspace ?? config.defaultWorkspaceId;
        const { workspace: ws, entries } = await changeWorkspace({ store, config }, workspaceId, change, CLI_ACTOR, { fieldName: (f) => OPTION[f] });
        return { workspace: ws, changed: change, eventPublished: await publishNow(store, config, entries) };
      });
      output(cmd, result, (r: typeof result) => `${renderWorkspace(r.workspace)}\n${r.eventPublished ? 'event published' : 'event queued in the outbox (the running hub publishes it)'}`);
    });
}
