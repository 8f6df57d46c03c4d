#!/usr/bin/env node
// `voxa`: runs the TypeScript CLI through tsx with tracing preloaded (so koa, ioredis and mongodb get
// instrumented before they load). No build step. SIGINT/SIGTERM are passed on so `voxa start` stops cleanly.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const child = spawn(
  process.execPath,
  ['--import', import.meta.resolve('tsx'), '--import', pathToFileURL(join(root, 'core', 'telemetry', 'preload.ts')).href, join(root, 'cli', 'index.ts'), ...process.argv.slice(2)],
  { stdio: 'inherit' },
);
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 + 2 : 1)));
