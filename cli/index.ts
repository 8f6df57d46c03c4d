#!/usr/bin/env node
/**
 * The `voxa` CLI. Each command group lives in cli/commands/<group>.ts and exports `register(program)`;
 * this file only lists them. Every command supports --json and exits non-zero with a clear message on error.
 */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { COMMANDS } from './commands/index.js';
import { runMain } from './util.js';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command();
program
  .name('voxa')
  .version(version, '-V, --version', 'print the version')
  .description('Voxa Hub: run the hub, its plugins and workers, and wire connectors.')
  .option('--json', 'machine-readable JSON output')
  .showHelpAfterError();

for (const register of COMMANDS) register(program);

await runMain(program);
