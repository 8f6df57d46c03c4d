/**
 * `voxa audit verify` and `voxa audit list`: read the audit chain straight from the store named by the
 * config (no NATS or Redis needed), so an operator can check the log even when the hub is down.
 */
import type { Command } from 'commander';
import { loadConfig } from '../../core/config.js';
import { createStore } from '../../core/store/index.js';
import type { Store } from '../../core/store/port.js';
import { listEntries, verifyChain, type AuditEntry, type VerifyResult } from '../../plugins/audit/chain.js';
import { CliError, EXIT, isJson, output } from '../util.js';

/** Opens the configured store for a read-only CLI command. */
export async function openConfiguredStore(): Promise<Store> {
  const store = await createStore(loadConfig());
  await store.init();
  return store;
}

/** `2025-01-31`, a full ISO timestamp, or a relative age such as `90m`, `24h`, `7d`. */
export function parseSince(value: string, now = Date.now()): string {
  const rel = /^(\d+)([mhd])$/.exec(value);
  if (rel) {
    const unit = { m: 60_000, h: 3_600_000, d: 86_400_000 }[rel[2] as 'm' | 'h' | 'd'];
    return new Date(now - Number(rel[1]) * unit).toISOString();
  }
  if (/^\d{4}-\d{2}-\d{2}(T.*)?$/.test(value) && !Number.isNaN(Date.parse(value))) return new Date(value).toISOString();
  throw new CliError(`--since must be a date, an ISO timestamp or an age like 24h or 7d (got "${value}")`, EXIT.USAGE, 'VALIDATION_FAILED');
}

function renderVerify(r: VerifyResult): string {
  if (r.ok) return `audit chain OK: ${r.checked} entries${r.head ? `, head seq ${r.head.seq} hash ${r.head.hash}` : ''}`;
  const b = r.firstBroken!;
  return `audit chain BROKEN at seq ${b.seq}${b.id ? ` (${b.id})` : ''}: ${b.reason}\n  ${b.message}\n  ${r.checked} entries before it check out`;
}

function renderList(entries: AuditEntry[]): string {
  if (entries.length === 0) return 'no audit entries';
  return entries.map((e) => `${String(e.seq).padStart(6)}  ${e.time}  ${e.workspaceId}  ${e.type.padEnd(20)} ${e.actor.type}:${e.actor.id}  ${e.summary}`).join('\n');
}

export function register(program: Command): void {
  const audit = program
    .command('audit')
    .description('Inspect and verify the tamper-evident audit log.')
    .addHelpText('after', '\nExamples:\n  $ voxa audit verify\n  $ voxa audit list --since 24h');

  audit
    .command('verify')
    .description('Check every entry of the audit chain; exits 1 and names the first broken entry when it was tampered with.')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa audit verify\n  $ voxa audit verify --json')
    .action(async (_opts: unknown, cmd: Command) => {
      const store = await openConfiguredStore();
      try {
        const result = await verifyChain(store.docs);
        output(cmd, result, renderVerify);
        if (!result.ok) process.exitCode = EXIT.FAIL;
      } finally {
        await store.close();
      }
    });

  audit
    .command('list')
    .description('List audit entries in chain order.')
    .option('--since <when>', 'only entries from this date, timestamp or age (24h, 7d)')
    .option('--workspace <id>', 'only entries of this workspace')
    .option('--limit <n>', 'at most this many entries', '100')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa audit list --since 7d\n  $ voxa audit list --workspace default --since 2025-01-31 --limit 500 --json')
    .action(async (opts: { since?: string; workspace?: string; limit: string }, cmd: Command) => {
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new CliError('--limit must be an integer from 1 to 10000', EXIT.USAGE, 'VALIDATION_FAILED');
      const since = opts.since ? parseSince(opts.since) : undefined;
      const store = await openConfiguredStore();
      try {
        const { entries } = await listEntries(store.docs, { limit, ...(since ? { since } : {}), ...(opts.workspace ? { workspaceId: opts.workspace } : {}) });
        output(cmd, isJson(cmd) ? { entries } : entries, renderList);
      } finally {
        await store.close();
      }
    });
}
