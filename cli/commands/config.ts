/** `voxa config defaults|check`: every setting with its default, env var and meaning; validate a config. */
import type { Command } from 'commander';
import { ConfigError, describeConfig, loadConfig, redactConfig } from '../../core/config.js';
import { CliError, EXIT, output } from '../util.js';

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
    .description('Validate the configuration from the environment and VOXA_CONFIG; exit 2 naming the bad field.')
    .option('--json', 'machine-readable JSON output')
    .addHelpText('after', '\nExamples:\n  $ VOXA_CONFIG=./voxa.json voxa config check\n  $ PORT=abc voxa config check   # exits 2: invalid config field "port"\n  $ voxa config check --json   # secrets as [set], URLs without credentials')
    .action((_opts, cmd: Command) => {
      try {
        output(cmd, { ok: true, config: redactConfig(loadConfig()) }, () => 'config OK');
      } catch (err) {
        if (err instanceof ConfigError) throw new CliError(err.message, EXIT.USAGE, 'INVALID_CONFIG');
        throw err;
      }
    });
}
