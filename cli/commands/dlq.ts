/** `voxa dlq list | retry`: what plugins gave up on, and putting it back for the plugin that failed. */
import type { Command } from 'commander';
import { ensureRuntimeStreams } from '../../plugins/runtime/control.js';
import { DeadLetterNotFound, listDeadLetters, retryAllDeadLetters, retryDeadLetter, type DeadLetter } from '../../plugins/runtime/dlq.js';
import { CliError, EXIT, output } from '../util.js';
import { knownPlugin, withAdmin } from './plugins.js';

function positiveInt(name: string, value: string, max = 1_000_000): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > max) {
    throw new CliError(`${name} must be a whole number from 1 to ${max} (got "${value}")`, EXIT.USAGE, 'VALIDATION_FAILED');
  }
  return Number(value);
}

function pluginName(value: string | undefined): string | undefined {
  if (value !== undefined && !/^[a-z0-9-]{1,40}$/.test(value)) throw new CliError(`--plugin "${value}" is not a plugin name`, EXIT.USAGE, 'VALIDATION_FAILED');
  return value;
}

function table(rows: DeadLetter[], plugin?: string): string {
  if (!rows.length) return plugin ? `No dead letters for plugin ${plugin}.` : 'The dead-letter stream is empty.';
  const head = ['SEQ', 'PLUGIN', 'TYPE', 'EVENT', 'ATTEMPTS', 'TIME', 'REASON'];
  const body = rows.map((r) => [r.seq, r.plugin, r.type ?? '-', r.eventId ?? '-', r.attempts, r.time, r.reason].map(String));
  const widths = head.map((h, i) => (i === head.length - 1 ? 0 : Math.max(h.length, ...body.map((b) => b[i]!.length))));
  return [head, ...body].map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

export function register(program: Command): void {
  const dlq = program
    .command('dlq')
    .description('Dead letters: events a plugin gave up on (permanent error or deliveries exhausted).')
    .addHelpText('after', '\nExamples:\n  $ voxa dlq list --plugin webhooks\n  $ voxa dlq retry 42\n  $ voxa dlq retry --all --plugin email');

  dlq
    .command('list')
    .description('Dead letters, oldest first: sequence, plugin, event type and id, reason, attempts, time.')
    .option('--plugin <plugin>', 'only this plugin')
    .option('--limit <n>', 'at most n entries', '50')
    .option('--after <seq>', 'start after this dead-letter sequence (paging)')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa dlq list\n  $ voxa dlq list --plugin email --limit 10 --json')
    .action(async (opts: { plugin?: string; limit: string; after?: string }, cmd: Command) => {
      const limit = positiveInt('--limit', opts.limit, 10_000);
      const plugin = pluginName(opts.plugin);
      const after = opts.after === undefined ? 0 : positiveInt('--after', opts.after, Number.MAX_SAFE_INTEGER);
      const rows = await withAdmin(async (h) => {
        // An unknown name would otherwise filter everything out and read as "nothing failed".
        if (plugin) await knownPlugin(h, plugin);
        return listDeadLetters(h, { limit, after, ...(plugin ? { plugin } : {}) });
      });
      output(cmd, { deadLetters: rows }, (v: { deadLetters: DeadLetter[] }) => table(v.deadLetters, plugin));
    });

  dlq
    .command('retry [seq]')
    .description('Redeliver dead letters to the plugin that failed them (only that plugin), then remove them from the DLQ.')
    .option('--all', 'every dead letter present when the command starts (with --plugin: of that plugin); ones that fail again meanwhile stay in the DLQ')
    .option('--plugin <plugin>', 'only dead letters of this plugin')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa dlq retry 42\n  $ voxa dlq retry --all --plugin webhooks --json')
    .action(async (seqArg: string | undefined, opts: { all?: boolean; plugin?: string }, cmd: Command) => {
      const plugin = pluginName(opts.plugin);
      if (!seqArg && !opts.all) throw new CliError('give a dead-letter sequence or --all', EXIT.USAGE, 'VALIDATION_FAILED');
      if (seqArg && opts.all) throw new CliError('give either a sequence or --all, not both', EXIT.USAGE, 'VALIDATION_FAILED');
      const seq = seqArg ? positiveInt('seq', seqArg, Number.MAX_SAFE_INTEGER) : 0;
      const retried = await withAdmin(async (h) => {
        if (plugin) await knownPlugin(h, plugin);
        await ensureRuntimeStreams(h.jsm, h.namespace);
        const done: DeadLetter[] = [];
        try {
          if (seq) done.push(await retryDeadLetter(h, seq, plugin ? { plugin } : {}));
          else done.push(...(await retryAllDeadLetters(h, plugin ? { plugin } : {})));
        } catch (err) {
          if (err instanceof DeadLetterNotFound) throw new CliError(`${err.message}${plugin ? ` for plugin ${plugin}` : ''}`, EXIT.NOT_FOUND, 'DEAD_LETTER_NOT_FOUND');
          throw err;
        }
        return done;
      });
      output(
        cmd,
        { retried: retried.map((d) => ({ seq: d.seq, plugin: d.plugin, eventId: d.eventId, type: d.type })), count: retried.length },
        (v: { count: number }) => `Put ${v.count} dead letter${v.count === 1 ? '' : 's'} back for retry.`,
      );
    });
}
