/**
 * The `voxa` CLI for the connector tests: its environment for a test hub, and runs on a pseudo-terminal through
 * pty-run.py (python3's pty module; no native npm modules), with a small expect-style driver for prompts.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Hub } from '../../core/hub.js';
import type { TestServers } from '../helpers/hub.js';
import { CLI_ARGS, collectCli, type CliResult } from '../helpers/cli.js';

const PTY_RUN = fileURLToPath(new URL('./pty-run.py', import.meta.url));

/** The environment a marketer's shell would have for this hub: same servers, namespace, data dir and keys. */
export function cliEnv(servers: TestServers, hub: Hub, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    NATS_URL: servers.nats.url,
    REDIS_URL: servers.redis.url,
    VOXA_DATA_DIR: hub.config.dataDir,
    VOXA_NATS_NAMESPACE: hub.config.natsNamespace,
    VOXA_SECRET_KEY: hub.secrets.encryptionKey.toString('base64'),
    VOXA_JWT_SECRET: hub.secrets.jwtSecret,
    LOG_LEVEL: 'warn',
    ...extra,
  };
}

/** A running `voxa …` (pipes) whose stderr can be waited on, e.g. for the consent URL it prints. */
export interface CliRun {
  readonly stderr: () => string;
  /** Resolves with the first match of `pattern` in stderr. */
  waitStderr(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  done: Promise<CliResult>;
}

export function startCli(env: NodeJS.ProcessEnv, args: string[]): CliRun {
  const child = spawn(process.execPath, [...CLI_ARGS, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  let exited = false;
  const waiters = new Set<() => void>();
  const done = collectCli(child, true, undefined, (s) => {
    err += s;
    waiters.forEach((w) => w());
  });
  void done.then(() => {
    exited = true;
    waiters.forEach((w) => w());
  });
  return {
    stderr: () => err,
    done,
    waitStderr: (pattern, timeoutMs = 30_000) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          const m = pattern.exec(err);
          if (m || exited) {
            clearTimeout(timer);
            waiters.delete(check);
            if (m) resolve(m);
            else reject(new Error(`CLI exited before printing ${pattern}; stderr:\n${err}`));
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${pattern}; stderr:\n${err}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
  };
}

// CSI sequences (cursor moves, colours, erase) and OSC titles, so prompts can be matched as plain text.
// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;?]*[ -/]*[@-~]|\u001b\][^\u0007]*\u0007|\u001b[()][0-9A-Za-z]/g;
export const stripAnsi = (s: string): string => s.replace(ANSI, '');

export interface TtySession {
  /** Everything the CLI wrote to the terminal so far (raw, escape sequences included). */
  readonly screen: () => string;
  readonly stderr: () => string;
  /** Waits until the terminal output written after the last `expect` matches, then moves past it. */
  expect(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Types into the terminal (a key: '\r' Enter, ' ' Space, '\u001b[B' Down). */
  type(text: string): void;
  done: Promise<CliResult>;
}

/**
 * Runs `voxa …` with its stdin and stdout on a pseudo-terminal (stdin a pipe with `stdinPipe`), so
 * `process.stdin.isTTY` and raw mode are real.
 */
export function runCliOnTty(env: NodeJS.ProcessEnv, args: string[], opts: { stdinPipe?: boolean } = {}): TtySession {
  const child = spawn('python3', [PTY_RUN, ...(opts.stdinPipe ? ['--stdin-pipe'] : []), '--', process.execPath, ...CLI_ARGS, ...args], {
    env: { ...env, TERM: 'xterm-256color' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let raw = '';
  let err = '';
  let mark = 0;
  const waiters = new Set<() => void>();
  const wake = (): void => waiters.forEach((w) => w());
  const done = collectCli(
    child,
    false,
    (s) => {
      raw += s;
      wake();
    },
    (s) => {
      err += s;
      wake();
    },
  );
  let exited = false;
  void done.then(() => {
    exited = true;
    wake();
  });
  return {
    screen: () => raw,
    stderr: () => err,
    type: (text) => void child.stdin.write(text),
    done,
    expect(pattern, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const seen = stripAnsi(raw.slice(mark));
          const m = pattern.exec(seen);
          if (m) {
            cleanup();
            // Move the mark past the match in the raw text (the match ends no later than the raw tail).
            mark = raw.length;
            resolve(seen);
          } else if (exited) {
            cleanup();
            reject(new Error(`CLI exited before ${pattern}; terminal:\n${stripAnsi(raw)}\nstderr:\n${err}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out waiting for ${pattern}; terminal:\n${stripAnsi(raw)}\nstderr:\n${err}`));
        }, timeoutMs);
        const cleanup = (): void => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
  };
}
