/** Shared CLI plumbing: output in text or JSON, errors with exit codes. */
import { CommanderError, type Command } from 'commander';

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
    readonly code = 'CLI_ERROR',
  ) {
    super(message);
  }
}

/** Exit codes: 0 ok, 1 failure, 2 bad usage or input, 3 not found, 4 a dependency is unavailable. */
export const EXIT = { OK: 0, FAIL: 1, USAGE: 2, NOT_FOUND: 3, UNAVAILABLE: 4 } as const;

export function isJson(cmd: Command): boolean {
  return Boolean(cmd.optsWithGlobals().json);
}

/** Prints a result: JSON when --json, else the text rendering. */
export function output(cmd: Command, value: unknown, text?: (v: never) => string): void {
  if (isJson(cmd) || !text) process.stdout.write(JSON.stringify(value, null, 2) + '\n');
  else process.stdout.write(text(value as never) + '\n');
}

/** Every command of the tree, the root first. */
function allCommands(cmd: Command): Command[] {
  return [cmd, ...cmd.commands.flatMap(allCommands)];
}

/**
 * Commander's own errors (a missing option or argument, an unknown command) become CliErrors with exit 2 and
 * the usual error shape, instead of commander's plain text and exit 1. Help and --version still exit 0.
 */
function usageErrors(program: Command, json: boolean): void {
  for (const cmd of allCommands(program)) {
    cmd.exitOverride((err: CommanderError) => {
      if (err.exitCode === 0) throw err;
      // A group run without a subcommand: commander printed its help and names nothing.
      const message = err.code === 'commander.help' ? `${commandPath(cmd)} needs a subcommand; see ${commandPath(cmd)} --help` : err.message.replace(/^error: /, '');
      // Without --json commander has already printed its message (and the help); runMain adds nothing.
      throw Object.assign(new CliError(message, EXIT.USAGE, 'USAGE'), { shown: !json && err.code !== 'commander.help' });
    });
    // With --json, stderr carries only the JSON error (runMain writes it), not commander's text and help.
    if (json) cmd.configureOutput({ writeErr: () => undefined, outputError: () => undefined });
  }
}

function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

export async function runMain(program: Command): Promise<void> {
  const json = process.argv.includes('--json');
  usageErrors(program, json);
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError && err.exitCode === 0) process.exit(0);
    const e = err as CliError & { code?: string; shown?: boolean };
    if (e.shown) process.exit(e.exitCode);
    if (json) process.stderr.write(JSON.stringify({ error: { code: e.code ?? 'CLI_ERROR', message: e.message } }) + '\n');
    else process.stderr.write(`voxa: ${e.message}\n`);
    process.exit(e.exitCode ?? EXIT.FAIL);
  }
}
