#!/usr/bin/env node
// Runs the TypeScript CLI through tsx, so `npx voxa …` and `npm run voxa -- …` work without a build step.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const r = spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), join(root, 'cli', 'index.ts'), ...process.argv.slice(2)], { stdio: 'inherit' });
process.exit(r.status ?? 1);
