/** `voxa analytics --from … --to …`: the day figures of one workspace, read straight from the store. */
import type { Command } from 'commander';
import { loadConfig } from '../../core/config.js';
import { isVoxaError } from '../../core/errors.js';
import { parseRange } from '../../plugins/analytics/index.js';
import { buildReport, type AnalyticsReport } from '../../plugins/analytics/report.js';
import { CliError, EXIT, output } from '../util.js';
import { openConfiguredStore } from './audit.js';

const secs = (ms: number | null): string => (ms === null ? '-' : `${(ms / 1000).toFixed(1)}s`);

function render(r: AnalyticsReport): string {
  const head = 'day         messages  active  opened  replies  median  p90     deliveries           push  email';
  const row = (day: string, d: Omit<AnalyticsReport['days'][number], 'day'>) =>
    [
      day.padEnd(10),
      String(d.messages).padStart(9),
      String(d.activeUsers).padStart(7),
      String(d.conversationsOpened).padStart(7),
      String(d.firstResponse.count).padStart(8),
      secs(d.firstResponse.medianMs).padStart(7),
      secs(d.firstResponse.p90Ms).padStart(7),
      ('  ' + (Object.entries(d.deliveries).map(([k, v]) => `${k}:${v}`).join(',') || '-')).padEnd(21),
      String(d.pushesSent).padStart(5),
      String(d.emailsSent).padStart(6),
    ].join(' ');
  return [`workspace ${r.workspaceId}, ${r.from} to ${r.to}`, head, ...r.days.map((d) => row(d.day, d)), row('total', r.totals)].join('\n');
}

export function register(program: Command): void {
  program
    .command('analytics')
    .description('Messages, active users, opened conversations, first-response times, deliveries, pushes and emails per UTC day.')
    .option('--from <date>', 'first UTC day (YYYY-MM-DD); default 29 days before --to')
    .option('--to <date>', 'last UTC day (YYYY-MM-DD); default today')
    .option('--workspace <id>', 'workspace id (default: the configured default workspace)')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa analytics\n  $ voxa analytics --from 2025-01-01 --to 2025-01-31 --workspace default --json')
    .action(async (opts: { from?: string; to?: string; workspace?: string }, cmd: Command) => {
      let range;
      try {
        range = parseRange(opts);
      } catch (err) {
        if (isVoxaError(err)) throw new CliError(err.message, EXIT.USAGE, err.code);
        throw err;
      }
      const workspaceId = opts.workspace ?? loadConfig().defaultWorkspaceId;
      const store = await openConfiguredStore();
      try {
        output(cmd, await buildReport(store.docs, workspaceId, range.from, range.to), render);
      } finally {
        await store.close();
      }
    });
}
