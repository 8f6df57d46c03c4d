/** Shared CLI plumbing: output in text or JSON, errors with exit codes. */
import type { Command } from 'commander';

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

export async function runMain(program: Command): Promise<void> {
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    const e = err as CliError & { code?: string };
    const json = process.argv.includes('--json');
    if (json) process.stderr.write(JSON.stringify({ error: { code: e.code ?? 'CLI_ERROR', message: e.message } }) + '\n');
    else process.stderr.write(`voxa: ${e.message}\n`);
    process.exit(e.exitCode ?? EXIT.FAIL);
  }
}
