/** `voxa config defaults|check`: every setting with its default, env var and meaning; validate a config. */
import type { Command } from 'commander';
import { ConfigError, describeConfig, loadConfig, redactConfig } from '../../core/config.js';
import { CliError, EXIT, output } from '../util.js';

export function register(program: Command): void {
  const config = program.command('config').description('Show and check the hub configuration.');
  config
    .command('defaults')
    .description('Print every setting with its environment variable, default and description.')
    .action((_opts, cmd: Command) => {
      output(cmd, describeConfig(), (rows: ReturnType<typeof describeConfig>) =>
        rows.map((r) => `${r.env.padEnd(28)} ${JSON.stringify(r.default ?? null).padEnd(14)} ${r.doc}`).join('\n'),
      );
    });
  config
    .command('check')
    .description('Validate the configuration from the environment and VOXA_CONFIG; exit 2 naming the bad field.')
    .addHelpText('after', '\nExamples:\n  $ VOXA_CONFIG=./voxa.json voxa config check\n  $ PORT=abc voxa config check   # exits 2: invalid config field "port"')
    .action((_opts, cmd: Command) => {
      try {
        output(cmd, { ok: true, config: redactConfig(loadConfig()) }, () => 'config OK');
      } catch (err) {
        if (err instanceof ConfigError) throw new CliError(err.message, EXIT.USAGE, 'INVALID_CONFIG');
        throw err;
      }
    });
}
