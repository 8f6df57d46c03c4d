/** Commander's usage errors exit 2 (bad input) and, with --json, print the CLI's JSON error; help and version exit 0. */
import { readFileSync } from 'node:fs';
import test from 'ava';
import { runCli } from '../helpers/cli.js';

const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'silent' };

const cases: Array<[string[], RegExp]> = [
  [['users', 'add', '--role', 'admin'], /required option '--email <email>' not specified/],
  [['plugins', 'rewind', 'analytics'], /required option '--since <time\|seq>' not specified/],
  [['plugins', 'rewind', '--since', '1'], /missing required argument 'plugin'/],
  [['users', 'frobnicate'], /unknown command 'frobnicate'/],
  [['bogus'], /unknown command 'bogus'/],
  [['users', 'list', '--bogus'], /unknown option '--bogus'/],
  [['users'], /voxa users needs a subcommand; see voxa users --help/],
];

for (const [args, message] of cases) {
  test(`voxa ${args.join(' ')} --json: exit 2 with a JSON error`, async (t) => {
    const r = await runCli(env, [...args, '--json']);
    t.is(r.code, 2, r.stderr);
    t.is(r.stdout, '');
    const { error } = JSON.parse(r.stderr) as { error: { code: string; message: string } };
    t.is(error.code, 'USAGE');
    t.regex(error.message, message);
  });
}

test('without --json a usage error is commander text once, with the help, and exit 2', async (t) => {
  const r = await runCli(env, ['users', 'add', '--role', 'admin']);
  t.is(r.code, 2);
  t.is(r.stderr.match(/required option '--email <email>' not specified/g)?.length, 1);
  t.regex(r.stderr, /Usage: voxa users add/);
});

test('--help and --version exit 0', async (t) => {
  for (const args of [['--help'], ['users', 'add', '--help'], ['help', 'users'], ['--help', '--json']]) {
    const r = await runCli(env, args);
    t.is(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stdout, /Usage: voxa/);
  }
  const v = await runCli(env, ['--version']);
  t.is(v.code, 0, v.stderr);
  t.is(v.stdout.trim(), (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version);
});
