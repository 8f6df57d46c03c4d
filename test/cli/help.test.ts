/** Every command's help shows examples, every command that prints a result lists --json, and tables line up. */
import test from 'ava';
import { Command } from 'commander';
import { COMMANDS } from '../../cli/commands/index.js';
import { describeConfig } from '../../core/config.js';
import { runCli } from '../helpers/cli.js';

// Long-running or script-printing commands: nothing to print as JSON.
const NO_JSON = new Set(['start', 'worker', 'completion']);

function tree(): Array<{ path: string; cmd: Command; help: string }> {
  const program = new Command().name('voxa').option('--json', 'machine-readable JSON output');
  for (const register of COMMANDS) register(program);
  const walk = (c: Command): Command[] => [c, ...c.commands.flatMap(walk)];
  return walk(program)
    .slice(1)
    .map((cmd) => {
      let help = '';
      cmd.configureOutput({ writeOut: (s) => (help += s) });
      cmd.outputHelp();
      const names: string[] = [];
      for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
      return { path: names.join(' '), cmd, help };
    });
}

test('every command and command group prints examples in its help', (t) => {
  const missing = tree().filter((c) => !/\nExamples:\n {2}\$ .*voxa /.test(c.help)).map((c) => c.path);
  t.deepEqual(missing, []);
});

test('every command that prints a result lists --json among its options', (t) => {
  const missing = tree()
    .filter((c) => c.cmd.commands.length === 0 && !NO_JSON.has(c.path))
    .filter((c) => !/^Options:\n(?: .*\n)*? {2}--json /m.test(c.help))
    .map((c) => c.path);
  t.deepEqual(missing, []);
});

test('config defaults lines its columns up, whatever the longest env name', async (t) => {
  const r = await runCli({ PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '' }, ['config', 'defaults']);
  t.is(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  const rows = describeConfig();
  t.is(lines.length, rows.length);
  const docAt = new Set(rows.map((row, i) => lines[i]!.indexOf(row.doc)));
  const defaultAt = new Set(rows.map((row, i) => lines[i]!.indexOf(JSON.stringify(row.default ?? null), row.env.length)));
  t.is(docAt.size, 1, 'the doc column starts at one offset');
  t.is(defaultAt.size, 1, 'the default column starts at one offset');
});
