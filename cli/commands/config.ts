/** `voxa config defaults|check`: every setting with its default, env var and meaning; validate a config. */
import type { Command } from 'commander';
import { describeConfig, redactConfig } from '../../core/config.js';
import { loadRunConfig } from '../run-config.js';
import { output } from '../util.js';

export function register(program: Command): void {
  const config = program
    .command('config')
    .description('Show and check the hub configuration.')
    .addHelpText('after', '\nExamples:\n  $ voxa config defaults\n  $ voxa config check --json');
  config
    .command('defaults')
    .description('Print every setting with its environment variable, default and description.')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ voxa config defaults\n  $ voxa config defaults --json | jq \'.[] | select(.env == "PORT")\'')
    .action((_opts, cmd: Command) => {
      output(cmd, describeConfig(), (rows: ReturnType<typeof describeConfig>) => {
        // Column widths from the rows, so a long env name cannot push its row out of line.
        const cells = rows.map((r) => [r.env, JSON.stringify(r.default ?? null), r.doc] as const);
        const envWidth = Math.max(...cells.map((c) => c[0].length));
        const defWidth = Math.max(...cells.map((c) => c[1].length));
        return cells.map(([env, def, doc]) => `${env.padEnd(envWidth)}  ${def.padEnd(defWidth)}  ${doc}`).join('\n');
      });
    });
  config
    .command('check')
    .description('Validate the configuration from the environment and VOXA_CONFIG as `voxa start` does (values, plugin names, MongoDB URL) without connecting to anything; exit 2 naming the bad field.')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ VOXA_CONFIG=./voxa.json voxa config check\n  $ PORT=abc voxa config check   # exits 2: invalid config field "port"\n  $ voxa config check --json   # secrets as [set], URLs without credentials')
    .action(async (_opts, cmd: Command) => {
      // The checks `voxa start` runs before it starts anything (schema, plugin names, MongoDB URL), no copy of them.
      const config = await loadRunConfig({}, { api: true });
      output(cmd, { ok: true, config: redactConfig(config) }, () => 'config OK');
    });
}
