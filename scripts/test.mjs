#!/usr/bin/env node
// `npm test`: type check, lint, then the ava suite with TAP output, ending with one line `N passed, N failed`.
import { spawn, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => join(root, 'node_modules', '.bin', name);
const extra = process.argv.slice(2);

if (!process.env.VOXA_SKIP_LINT && extra.length === 0) {
  for (const [label, cmd, args] of [
    ['typecheck', bin('tsc'), ['--noEmit', '-p', 'tsconfig.json']],
    ['lint', bin('eslint'), ['.']],
  ]) {
    console.log(`# ${label}`);
    const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
    if (r.status !== 0) {
      console.log(`# ${label} failed`);
      console.log('0 passed, 1 failed');
      process.exit(1);
    }
  }
}

let passed = 0;
let failed = 0;
let buf = '';
const child = spawn(bin('ava'), ['--tap', ...extra], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, VOXA_TRACING: process.env.VOXA_TRACING ?? '0' } });
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  buf += chunk.toString();
  let i;
  while ((i = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    if (/^not ok \d+/.test(line)) failed++;
    else if (/^ok \d+/.test(line) && !/# (SKIP|TODO)/i.test(line)) passed++;
  }
});
child.on('close', (code) => {
  if (code !== 0 && failed === 0) failed = 1; // a crash outside any test still fails the run
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(code === 0 && failed === 0 ? 0 : 1);
});
