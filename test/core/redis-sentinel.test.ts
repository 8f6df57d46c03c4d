/**
 * REDIS_URL=redis-sentinel://…: the hub finds the Redis primary through Sentinel and follows a failover, on a
 * real primary, replica and sentinel started from the shipped deploy/redis-sentinel/sentinel.conf.
 */
import test from 'ava';
import { loadConfig } from '../../core/config.js';
import { redisUrlProblem, sentinelOptions } from '../../core/redis-url.js';
import { startServers, type TestServers } from '../helpers/hub.js';
import { redisCommand, startRedisSentinel, type RedisSentinelSet } from '../helpers/servers.js';
import { openApiHub } from '../api/support.js';
import { eventually } from '../edge/support.js';

let servers: TestServers & { dispose(): Promise<void> };
let set: RedisSentinelSet;

test.before(async () => {
  [servers, set] = await Promise.all([startServers(), startRedisSentinel('voxa')]);
});
test.after.always(async () => {
  await Promise.all([servers?.dispose(), set?.dispose()]);
});

test('redis-sentinel URLs: sentinels, master name, credentials, database; mistakes are named', (t) => {
  t.like(sentinelOptions('redis-sentinel://s1:26379,s2,[::1]:26380/voxa'), {
    sentinels: [
      { host: 's1', port: 26379 },
      { host: 's2', port: 26379 },
      { host: '::1', port: 26380 },
    ],
    name: 'voxa',
  });
  t.like(sentinelOptions('redis-sentinel://app:p%40ss@s1:26379/main/3?sentinelPassword=sp'), { username: 'app', password: 'p@ss', name: 'main', db: 3, sentinelPassword: 'sp' });
  t.is(sentinelOptions('redis://127.0.0.1:6379'), undefined, 'plain URLs are left to ioredis');

  t.is(redisUrlProblem('redis://127.0.0.1:6379/0'), undefined);
  t.is(redisUrlProblem('redis-sentinel://s1:26379/voxa'), undefined);
  t.regex(redisUrlProblem('redis-sentinel://s1:26379') ?? '', /master name/);
  t.regex(redisUrlProblem('redis-sentinel://s1:26379/voxa/x') ?? '', /number/);
  t.regex(redisUrlProblem('redis-sentinel://s1:26379/voxa?foo=1') ?? '', /sentinelPassword/);
  t.regex(redisUrlProblem('http://s1:6379') ?? '', /redis-sentinel/);

  // A wrong REDIS_URL stops start-up naming the field.
  const err = t.throws(() => loadConfig({ redisUrl: 'redis-sentinel://s1:26379' }, {}));
  t.regex(err?.message ?? '', /redisUrl|REDIS_URL/);
});

test.serial('the hub reaches Redis through Sentinel and follows a failover to the promoted replica', async (t) => {
  const api = await openApiHub(servers, { redisUrl: set.url });
  try {
    const redis = api.hub.redis!;
    await redis.set('voxa-sentinel-probe', 'before');
    t.regex(await redisCommand(set.primary.port, ['GET', 'voxa-sentinel-probe']), /before/, 'written on the primary');
    const ready = await api.http.get('/readyz');
    t.is(ready.status, 200);
    t.true(ready.body.checks.redis.ok);

    await set.primary.stop(true); // kill -9: the sentinel promotes the replica after a second or so
    await eventually(
      async () => {
        try {
          await redis.set('voxa-sentinel-probe', 'after');
          return true;
        } catch {
          return false;
        }
      },
      60_000,
      'a write accepted after the failover',
    );
    t.regex(await redisCommand(set.replica.port, ['INFO', 'replication']), /role:master/, 'the replica was promoted');
    t.regex(await redisCommand(set.replica.port, ['GET', 'voxa-sentinel-probe']), /after/, 'and the hub writes there now');
    await eventually(async () => (await api.http.get('/readyz')).status === 200, 30_000, '/readyz ready again');
  } finally {
    await api.close();
  }
});
