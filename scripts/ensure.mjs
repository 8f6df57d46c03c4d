#!/usr/bin/env node
// Installs what `npm start` / `npm test` need on a fresh clone: npm packages when missing or stale, and the
// nats-server and redis-server binaries (plus prometheus for tests) from the OS package manager when absent.
// Uses only Node built-ins, because it runs before node_modules exists.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const forTests = process.env.npm_lifecycle_event === 'pretest' || process.argv.includes('--test');

function hashOf(files) {
  const h = createHash('sha256');
  for (const f of files) if (existsSync(join(root, f))) h.update(readFileSync(join(root, f)));
  return h.digest('hex');
}

/**
 * True when npm itself installed node_modules after package.json and the lock last changed (someone ran
 * `npm ci` or `npm install` by hand, so there is no stamp of ours), with the native SQLite module built.
 * npm rewrites node_modules/.package-lock.json on every install.
 */
function installedByNpm() {
  const hidden = join(root, 'node_modules', '.package-lock.json');
  if (!existsSync(hidden) || !existsSync(join(root, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node'))) return false;
  const changed = ['package.json', 'package-lock.json'].filter((f) => existsSync(join(root, f))).map((f) => statSync(join(root, f)).mtimeMs);
  return statSync(hidden).mtimeMs >= Math.max(...changed);
}

// 1. npm packages
const stamp = join(root, 'node_modules', '.voxa-install-stamp');
const want = hashOf(['package.json', 'package-lock.json']);
const stamped = existsSync(stamp) && readFileSync(stamp, 'utf8') === want;
if (!stamped && installedByNpm()) {
  writeFileSync(stamp, want); // up to date already: no second install of the same packages
} else if (!stamped) {
  console.error('[voxa] installing npm packages…');
  // `npm ci` installs exactly the lock file; when the lock is out of step with package.json (npm has known
  // quirks with optional platform packages), fall back to `npm install`. npm ci's own output is held back: its
  // refusal is a long usage dump that reads like a failure although the fallback then installs fine. It is
  // shown only when the fallback fails too.
  let r = existsSync(join(root, 'package-lock.json'))
    ? spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
    : { status: 1, stdout: '', stderr: '' };
  const ciOutput = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (r.status === 0) {
    process.stderr.write(r.stdout ?? '');
  } else {
    if (ciOutput) console.error('[voxa] npm ci did not accept the lock file; running npm install instead…');
    r = spawnSync('npm', ['install', '--no-audit', '--no-fund'], { cwd: root, stdio: 'inherit' });
    if (r.status !== 0 && ciOutput) console.error(`[voxa] npm ci said:\n${ciOutput.trim()}`);
  }
  if (r.status !== 0) {
    console.error('[voxa] npm install failed; fix the error above and run the command again.');
    process.exit(r.status ?? 1);
  }
  writeFileSync(stamp, hashOf(['package.json', 'package-lock.json'])); // npm install may have rewritten the lock
}

// 2. OS binaries
function has(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}
const needed = [];
const external = !forTests && process.env.NATS_URL && process.env.REDIS_URL;
if (!external) {
  if (!has('nats-server')) needed.push('nats-server');
  if (!has('redis-server')) needed.push('redis-server');
}
if (forTests && !has('promtool')) needed.push('prometheus');
if (needed.length) {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const sudo = isRoot ? [] : has('sudo') ? ['sudo', '-n'] : null;
  if (!has('apt-get') || sudo === null) {
    console.error(`[voxa] missing ${needed.join(', ')}: install them with your package manager (e.g. apt-get install ${needed.join(' ')}), or set NATS_URL and REDIS_URL.`);
    process.exit(1);
  }
  console.error(`[voxa] installing ${needed.join(', ')} with apt-get…`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    const run = (args) => execFileSync(sudo[0] ?? args[0], sudo.length ? [...sudo.slice(1), ...args] : args.slice(1), { stdio: 'inherit', env });
    run(['apt-get', 'update', '-qq']);
    run(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...needed]);
  } catch {
    console.error(`[voxa] could not install ${needed.join(', ')}; install them by hand (apt-get install ${needed.join(' ')}).`);
    process.exit(1);
  }
  // Debian starts a redis-server service on install; the hub runs its own, so leave that one alone but
  // make sure it does not hold the ports we use (it listens on 6379, we pick our own).
}
