/**
 * `voxa users add | invite | list | set-role | disable | enable`: manage accounts from a terminal, straight
 * against the configured store. `add` and `invite` print an invite code, once: an invited email registers with
 * it (core/auth/invites.ts).
 *
 * Changes are written with their events and published as cli/store.ts describes: at once when NATS answers,
 * else by the running hub's outbox sweeper, so these commands work before the hub's first start and while it is down.
 */
import type { Command } from 'commander';
import { changeAccount, type AccountChange } from '../../core/auth/accounts.js';
import { DEFAULT_INVITE_DAYS, issueInvite, MAX_INVITE_DAYS } from '../../core/auth/invites.js';
import { preRegisterUser, normalizeEmail } from '../../core/auth/service.js';
import { RoleSchema, publicUser, type Role, type UserRecord } from '../../core/domain.js';
import { CLI_ACTOR } from '../../connectors/context.js';
import { Email } from '../../core/routes/schemas.js';
import { publishNow, withStore } from '../store.js';
import { CliError, EXIT, output } from '../util.js';

function parseRole(value: string): Role {
  const r = RoleSchema.safeParse(value);
  if (!r.success) throw new CliError(`--role must be one of ${RoleSchema.options.join(', ')} (got "${value}")`, EXIT.USAGE, 'VALIDATION_FAILED');
  return r.data;
}

function parseInviteDays(value: string | undefined): number {
  if (value === undefined) return DEFAULT_INVITE_DAYS;
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= MAX_INVITE_DAYS)) throw new CliError(`--invite-days must be a whole number from 1 to ${MAX_INVITE_DAYS} (got "${value}")`, EXIT.USAGE, 'VALIDATION_FAILED');
  return n;
}

/** The lines that hand an invite code over: it is shown this once. */
function renderInvite(invite: { code: string; expiresAt: string }, email: string): string {
  return `invite code: ${invite.code}  (expires ${invite.expiresAt}; shown only now)
they register with ${email}, a password of their own and this code (POST /v1/auth/register {"invite": …})`;
}

function parseEmail(value: string): string {
  const email = normalizeEmail(value);
  if (!Email.safeParse(email).success) throw new CliError(`--email is not a valid email address (got "${value}")`, EXIT.USAGE, 'VALIDATION_FAILED');
  return email;
}

function renderUser(u: ReturnType<typeof publicUser> & { invited?: boolean; disabled?: boolean }): string {
  const flags = [u.invited ? 'invited' : '', u.disabled ? 'disabled' : ''].filter(Boolean).join(',');
  return `${u.id}  ${u.email}  ${u.role}  ${u.workspaceId}  ${u.name}${flags ? `  (${flags})` : ''}`;
}

function listed(u: UserRecord) {
  return { ...publicUser(u), invited: u.passwordHash === null, disabled: u.disabled };
}

export function register(program: Command): void {
  const users = program
    .command('users')
    .description('Manage accounts: pre-register users, list them, change roles, disable and enable them.')
    .addHelpText('after', '\nExamples:\n  $ voxa users add --email ada@example.com --role admin\n  $ voxa users list\n  $ voxa users set-role --email ada@example.com --role agent');

  users
    .command('add')
    .description('Pre-register (invite) a user with a role. Prints an invite code, once: they register with this email and the code, and set their password.')
    .requiredOption('--email <email>', 'the email the user will register with')
    .requiredOption('--role <role>', 'admin, agent or customer')
    .option('--name <name>', 'display name (default: the part of the email before @)')
    .option('--workspace <id>', 'workspace id (default: the default workspace)')
    .option('--invite-days <n>', `days the invite code stays valid, 1 to ${MAX_INVITE_DAYS}`, String(DEFAULT_INVITE_DAYS))
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa users add --email ada@example.com --role admin --name "Ada L."\n  $ voxa users add --email bob@example.com --role agent --workspace support --json')
    .action(async (opts: { email: string; role: string; name?: string; workspace?: string; inviteDays?: string }, cmd: Command) => {
      const email = parseEmail(opts.email);
      const role = parseRole(opts.role);
      const inviteDays = parseInviteDays(opts.inviteDays);
      if (opts.name !== undefined && (opts.name.trim().length === 0 || opts.name.length > 100)) {
        throw new CliError('--name must be 1 to 100 characters', EXIT.USAGE, 'VALIDATION_FAILED');
      }
      const result = await withStore(async (store, config) => {
        const workspaceId = opts.workspace ?? config.defaultWorkspaceId;
        if (!(await store.getWorkspace(workspaceId))) throw new CliError(`no workspace "${workspaceId}"`, EXIT.NOT_FOUND, 'NOT_FOUND');
        const { user, entries, invite } = await preRegisterUser(store, config.natsNamespace, { email, role, name: opts.name?.trim(), workspaceId, inviteDays }, CLI_ACTOR);
        const published = await publishNow(store, config, entries);
        return { user: listed(user), invite, eventPublished: published };
      });
      output(cmd, result, (r: typeof result) =>
        `added ${renderUser(r.user)}\n${renderInvite(r.invite, r.user.email)}\n${r.eventPublished ? 'event published' : 'event queued in the outbox (the running hub publishes it)'}`,
      );
    });

  users
    .command('invite')
    .description('Issue a new invite code for an invited user who has not registered yet (the old code stops working).')
    .requiredOption('--email <email>', 'the invited user')
    .option('--invite-days <n>', `days the invite code stays valid, 1 to ${MAX_INVITE_DAYS}`, String(DEFAULT_INVITE_DAYS))
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa users invite --email ada@example.com\n  $ voxa users invite --email ada@example.com --invite-days 2 --json')
    .action(async (opts: { email: string; inviteDays?: string }, cmd: Command) => {
      const email = parseEmail(opts.email);
      const inviteDays = parseInviteDays(opts.inviteDays);
      const result = await withStore(async (store) => {
        const user = await store.getUserByEmail(email);
        if (!user) throw new CliError(`no user with email ${email}`, EXIT.NOT_FOUND, 'USER_NOT_FOUND');
        if (user.passwordHash !== null) throw new CliError(`${email} has registered already; an invite is for an account that has not`, EXIT.USAGE, 'ALREADY_REGISTERED');
        return { user: listed(user), invite: await issueInvite(store.docs, user.id, inviteDays) };
      });
      output(cmd, result, (r: typeof result) => `${renderUser(r.user)}\n${renderInvite(r.invite, r.user.email)}`);
    });

  users
    .command('list')
    .description('List the users of a workspace.')
    .option('--workspace <id>', 'workspace id (default: the default workspace)')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa users list\n  $ voxa users list --workspace support --json')
    .action(async (opts: { workspace?: string }, cmd: Command) => {
      const list = await withStore(async (store, config) => {
        const workspaceId = opts.workspace ?? config.defaultWorkspaceId;
        if (!(await store.getWorkspace(workspaceId))) throw new CliError(`no workspace "${workspaceId}"`, EXIT.NOT_FOUND, 'NOT_FOUND');
        return (await store.searchUsers(workspaceId, '', 100_000)).map(listed);
      });
      output(cmd, { users: list }, (r: { users: typeof list }) => (r.users.length ? r.users.map(renderUser).join('\n') : 'no users'));
    });

  users
    .command('set-role')
    .description("Change a user's role (takes effect on their next request).")
    .requiredOption('--email <email>', 'the user')
    .requiredOption('--role <role>', 'admin, agent or customer')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa users set-role --email bob@example.com --role admin\n  $ voxa users set-role --email bob@example.com --role customer --json')
    .action(async (opts: { email: string; role: string }, cmd: Command) => {
      const result = await changeByEmail(parseEmail(opts.email), { role: parseRole(opts.role) });
      output(cmd, result, (r: typeof result) => (r.changed ? `role set: ${renderUser(r.user)}` : `unchanged: ${renderUser(r.user)}`));
    });

  for (const [name, disabled] of [
    ['disable', true],
    ['enable', false],
  ] as const) {
    users
      .command(name)
      .description(
        disabled
          ? 'Disable an account: sign-in, refresh and every request are refused at once, its refresh tokens are revoked and the running hub closes its open connections.'
          : 'Enable a disabled account again; the user signs in anew (old sessions stay revoked).',
      )
      .requiredOption('--email <email>', 'the user')
      .option('--json', 'machine-readable JSON output')
      .addHelpText('after', `\nExamples:\n  $ voxa users ${name} --email bob@example.com\n  $ voxa users ${name} --email bob@example.com --json`)
      .action(async (opts: { email: string }, cmd: Command) => {
        const result = await changeByEmail(parseEmail(opts.email), { disabled });
        output(cmd, result, (r: typeof result) => `${r.changed ? (disabled ? 'disabled' : 'enabled') : 'unchanged'}: ${renderUser(r.user)}`);
      });
  }
}

/** A role or disabled change through the same path as PATCH /v1/users/:id (core/auth/accounts.ts). */
async function changeByEmail(email: string, change: AccountChange) {
  return withStore(async (store, config) => {
    const user = await store.getUserByEmail(email);
    if (!user) throw new CliError(`no user with email ${email}`, EXIT.NOT_FOUND, 'USER_NOT_FOUND');
    const r = await changeAccount(store, config.natsNamespace, user, change, CLI_ACTOR);
    return { user: listed(r.user), changed: r.changed, eventPublished: r.changed && (await publishNow(store, config, r.entries)) };
  });
}
