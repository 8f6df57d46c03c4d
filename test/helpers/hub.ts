/**
 * A whole hub for tests: real nats-server and redis-server (one each per test file, shared by its tests), and
 * per test a fresh SQLite store in a temp dir and a unique NATS namespace.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type Config, type ConfigInput } from '../../core/config.js';
import { closeHub, openHub, type Hub } from '../../core/hub.js';
import { startNats, startRedis, uniqueNamespace, type ManagedServer } from './servers.js';

export interface TestServers {
  nats: ManagedServer;
  redis: ManagedServer;
}

/** Starts the servers for one test file; call from test.before and dispose in test.after.always. */
export async function startServers(): Promise<TestServers & { dispose(): Promise<void> }> {
  const [nats, redis] = await Promise.all([startNats(), startRedis()]);
  return {
    nats,
    redis,
    async dispose() {
      await Promise.all([nats.dispose(), redis.dispose()]);
    },
  };
}

/** A config for tests: temp data dir, unique namespace, quiet logs, fast outbox sweeps. */
export function testConfig(servers: TestServers, overrides: ConfigInput = {}): Config {
  return loadConfig(
    {
      natsUrl: servers.nats.url,
      redisUrl: servers.redis.url,
      dataDir: mkdtempSync(join(tmpdir(), 'voxa-data-')),
      natsNamespace: uniqueNamespace(),
      logLevel: 'silent',
      jwtSecret: 'test-secret-test-secret-test-secret-0123',
      secretKey: Buffer.alloc(32, 7).toString('base64'),
      outboxSweepMs: 100,
      outboxGraceMs: 200,
      port: 0,
      ...overrides,
    },
    {}, // ignore the developer's environment
  );
}

/** Opens a hub on the test servers; `close()` also deletes its data dir. */
export async function openTestHub(servers: TestServers, overrides: ConfigInput = {}): Promise<Hub & { close(): Promise<void> }> {
  const config = testConfig(servers, overrides);
  const hub = await openHub(config, { name: 'test' });
  return Object.assign(hub, {
    async close() {
      await closeHub(hub);
      rmSync(config.dataDir, { recursive: true, force: true });
    },
  });
}

/**
 * The servers of one test file: registers its before/after hooks (call it at the top level of the test file)
 * and returns a handle to pass wherever TestServers go. Its fields are readable inside tests, once `before` ran.
 * A file with its own after hooks should not use it: ava runs after hooks side by side, so the servers could
 * stop while a hub still closes; use startServers in the file's one before/after pair, or hubForFile.
 */
export function serversForFile(): TestServers {
  let servers: (TestServers & { dispose(): Promise<void> }) | undefined;
  // Serial: the file's own before hooks, declared after this call, start only once the servers are up.
  test.serial.before(async () => {
    servers = await startServers();
  });
  test.after.always(async () => {
    await servers?.dispose();
  });
  const started = () => {
    if (!servers) throw new Error('serversForFile: the servers exist only once the before hook ran');
    return servers;
  };
  return {
    get nats() {
      return started().nats;
    },
    get redis() {
      return started().redis;
    },
  };
}

/**
 * Servers and one hub shared by every test of a file: registers the file's before/after hooks (call it at the
 * top level of the test file). Read `.hub` and `.servers` inside tests, where `before` has run.
 */
export function hubForFile(overrides: ConfigInput = {}): { readonly servers: TestServers & { dispose(): Promise<void> }; readonly hub: Hub & { close(): Promise<void> } } {
  let servers: (TestServers & { dispose(): Promise<void> }) | undefined;
  let hub: (Hub & { close(): Promise<void> }) | undefined;
  test.before(async () => {
    servers = await startServers();
    hub = await openTestHub(servers, overrides);
  });
  test.after.always(async () => {
    await hub?.close();
    await servers?.dispose();
  });
  return {
    get servers() {
      if (!servers) throw new Error('hubForFile: the servers exist only once the before hook ran');
      return servers;
    },
    get hub() {
      if (!hub) throw new Error('hubForFile: the hub exists only once the before hook ran');
      return hub;
    },
  };
}
