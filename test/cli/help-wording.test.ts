/** Help texts that say what the commands really do (each was once read the wrong way; see docs/connectors.md). */
import test from 'ava';
import { Command } from 'commander';
import { COMMANDS } from '../../cli/commands/index.js';

function helpOf(...path: string[]): string {
  const program = new Command().name('voxa').option('--json', 'machine-readable JSON output');
  for (const register of COMMANDS) register(program);
  let cmd = program;
  for (const name of path) cmd = cmd.commands.find((c) => c.name() === name)!;
  let help = '';
  cmd.configureOutput({ writeOut: (s) => (help += s) });
  cmd.outputHelp();
  return help.replace(/\s+/g, ' ');
}

test('connections disable says events that arrive meanwhile are not queued, and that backfill sends them', (t) => {
  const help = helpOf('connections', 'disable');
  t.regex(help, /not queued for it/);
  t.regex(help, /voxa connections backfill/);
  t.notRegex(help, /until it is enabled/);
});

test('webhooks remove does not promise a readable delivery log', (t) => {
  const help = helpOf('webhooks', 'remove');
  t.notRegex(help, /stays readable/);
  t.regex(help, /deliveries <id>` exits 3/);
});

test('the connections group shows examples beyond add and list, including a backfill', (t) => {
  const help = helpOf('connections');
  t.regex(help, /Examples: \$ voxa connections /);
  t.regex(help, /\$ voxa connections disable /);
  t.regex(help, /voxa connections backfill /);
});
