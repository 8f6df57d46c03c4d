/** The `voxa` CLI as a subprocess for tests, with pipes (no terminal); test/connectors/cli-proc.ts adds a pty. */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** node arguments that run the CLI from source, wherever the test's working directory is. */
export const CLI_ARGS = ['--import', 'tsx', fileURLToPath(new URL('../../cli/index.ts', import.meta.url))];

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `voxa …` with pipes; a hung command is killed after a minute (its code is then -1). */
export function runCli(env: NodeJS.ProcessEnv, args: string[]): Promise<CliResult> {
  return collectCli(spawn(process.execPath, [...CLI_ARGS, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] }), true);
}

/** Collects a CLI child's output until it exits. */
export function collectCli(child: ChildProcessWithoutNullStreams, closeStdin: boolean, onOut?: (s: string) => void, onErr?: (s: string) => void): Promise<CliResult> {
  if (closeStdin) child.stdin.end();
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    onOut?.(d.toString());
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    onErr?.(d.toString());
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise((resolve) => {
    child.on('close', (code) => {
      clearTimeout(killer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}
