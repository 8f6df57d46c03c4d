/**
 * openHub waits for Redis's first connection (its client queues nothing while connecting, so a command right
 * after start failed with "Stream isn't writeable"), but does not need Redis to start.
 */
import test from 'ava';
import { closeHub, openHub } from '../../core/hub.js';
import { freePort } from '../helpers/servers.js';
import { testConfig, serversForFile } from '../helpers/hub.js';

const servers = serversForFile();

test('a command right after openHub reaches Redis', async (t) => {
  for (let i = 0; i < 3; i++) {
    const hub = await openHub(testConfig(servers), { name: 'open-test' });
    try {
      t.is(hub.redis!.status, 'ready');
      t.is(await hub.redis!.set(`open-test:${i}`, 'x'), 'OK');
    } finally {
      await closeHub(hub);
    }
  }
});

test('with Redis unreachable, openHub still starts (degraded) after a short wait', async (t) => {
  const config = testConfig(servers, { redisUrl: `redis://127.0.0.1:${await freePort()}` });
  const hub = await openHub(config, { name: 'open-test-no-redis' });
  t.teardown(() => closeHub(hub));
  t.not(hub.redis!.status, 'ready');
  // The rest of the hub works: the store and NATS are there.
  t.truthy(await hub.store.getWorkspace(config.defaultWorkspaceId));
  t.false(hub.bus.nc.isClosed());
});
