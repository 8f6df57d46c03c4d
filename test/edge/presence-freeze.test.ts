/**
 * Presence's log during a Redis that stops answering (SIGSTOP): the connection stays 'ready' while every
 * command times out. One warning when it degrades, and "answers again" only once a command did, after the thaw;
 * it used to announce a recovery on every heartbeat of the freeze.
 */
import test from 'ava';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Presence } from '../../plugins/edge/presence.js';
import { serversForFile } from '../helpers/hub.js';
import { eventually, sleep } from './support.js';

const servers = serversForFile();

test('a frozen Redis: one "degraded" warning, no recovery line until a command answers after the thaw', async (t) => {
  const redis = new Redis(servers.redis.url, { commandTimeout: 150, maxRetriesPerRequest: 1 });
  t.teardown(() => redis.disconnect());
  await eventually(() => redis.status === 'ready', 5000, 'redis ready');
  const lines: Array<[string, string]> = [];
  const log = { info: (msg: string) => void lines.push(['info', msg]), warn: (_o: unknown, msg: string) => void lines.push(['warn', msg]) } as unknown as Logger;
  const presence = new Presence(redis, 'test:presence:', { ttlMs: 5000, heartbeatMs: 100 }, () => undefined, log);
  await presence.connect({ workspaceId: 'w1', userId: 'u1', deviceId: 'd1' });
  t.deepEqual(lines, [], 'all well');

  servers.redis.freeze();
  t.teardown(() => servers.redis.thaw());
  for (let i = 0; i < 5; i++) {
    await presence.tick();
    await sleep(50);
  }
  t.is(redis.status, 'ready', 'the connection itself still looks fine');
  t.deepEqual(lines.map(([level]) => level), ['warn'], 'one warning for the whole freeze, no recovery claimed');

  servers.redis.thaw();
  await eventually(async () => {
    await presence.tick();
    return lines.length === 2;
  }, 10_000, 'a command answers after the thaw');
  t.deepEqual(lines[1], ['info', 'presence: redis answers again']);
  await presence.close();
});
