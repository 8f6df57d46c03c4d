/**
 * Closing connector queues: jobs in flight finish first, nothing rejects unhandled (BullMQ's connection start-up
 * check must not be cut off by a close), and a closed ConnectorQueues opens no new connections. Redis is real; a
 * small TCP relay in front of it adds latency, which is what widens the close-during-start-up window that load
 * opens on a busy machine.
 */
import net from 'node:net';
import test from 'ava';
import { Redis } from 'ioredis';
import { ConnectorQueues } from '../../connectors/queues.js';
import type { Config } from '../../core/config.js';
import { createLogger } from '../../core/log.js';
import { startRedis, uniqueNamespace, type ManagedServer } from '../helpers/servers.js';
import { until } from './receiver.js';

let redisServer: ManagedServer;
const rejections: unknown[] = [];
const onRejection = (reason: unknown): void => void rejections.push(reason);

test.before(async () => {
  redisServer = await startRedis();
  process.on('unhandledRejection', onRejection);
});
test.after.always(async () => {
  process.off('unhandledRejection', onRejection);
  await redisServer?.dispose();
});

/** A relay to Redis that holds every chunk for `delayMs` each way (a slow network or a loaded host). */
async function slowRelay(target: string, delayMs: number): Promise<{ url: string; close(): Promise<void> }> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
    const relay = (from: net.Socket, to: net.Socket): void => {
      from.on('data', (d: Buffer) => setTimeout(() => to.writable && to.write(d), delayMs));
      from.on('close', () => setTimeout(() => to.destroy(), delayMs));
    };
    relay(client, upstream);
    relay(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `redis://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function queuesOn(redis: Redis): ConnectorQueues {
  const config = { natsNamespace: uniqueNamespace('q') } as Config;
  return new ConnectorQueues({ redis, config, log: createLogger('silent', 'test') });
}

/** Lets late rejections (a reply arriving after close) surface before checking there were none. */
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 300));

test.serial('closing right after start-up, at every point of it, leaves no unhandled rejection', async (t) => {
  const relay = await slowRelay(redisServer.url, 20);
  const redis = new Redis(relay.url, { maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined);
  t.teardown(async () => {
    redis.disconnect();
    await relay.close();
  });
  rejections.length = 0;
  // Close after 0…190 ms: before the connections are up, during BullMQ's version check, and after.
  for (let i = 0; i < 20; i++) {
    const q = queuesOn(redis);
    q.work('webhook', async () => 'done');
    if (i % 2) void q.add('webhook', 'job', { i }).catch(() => undefined); // a producer racing the close
    await new Promise((r) => setTimeout(r, i * 10));
    await q.close();
  }
  await settle();
  t.deepEqual(rejections.map((r) => String((r as Error)?.message ?? r)), []);
});

test.serial('close waits for the jobs in flight, then closes; nothing rejects unhandled', async (t) => {
  const redis = new Redis(redisServer.url, { maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined);
  t.teardown(() => redis.disconnect());
  rejections.length = 0;
  const q = queuesOn(redis);
  const started: number[] = [];
  const finished: number[] = [];
  q.work(
    'dropbox',
    async (job) => {
      const n = (job.data as { n: number }).n;
      started.push(n);
      await new Promise((r) => setTimeout(r, 300));
      finished.push(n);
      return n;
    },
    { concurrency: 4 },
  );
  for (let n = 0; n < 12; n++) await q.add('dropbox', 'upload', { n });
  await until(() => started.length >= 4, 30_000, 'four jobs running');
  const running = started.length;
  await q.close();
  t.true(finished.length >= running, 'every job that had started ran to its end before close returned');
  t.deepEqual([...finished].sort(), [...started].sort(), 'no job was cut off half-way');
  t.true(started.length < 12, 'jobs still waiting stay queued for the next worker');
  await settle();
  t.deepEqual(rejections.map((r) => String((r as Error)?.message ?? r)), []);

  // The unfinished ones are still in Redis, and a new ConnectorQueues on the same namespace picks them up.
  const again = new ConnectorQueues({ redis, config: (q as unknown as { hub: { config: Config } }).hub.config, log: createLogger('silent', 'test') });
  t.teardown(() => again.close());
  const counts = await again.depth('dropbox');
  t.is(counts.waiting, 12 - started.length);
  t.is(counts.active, 0);
});

test.serial("the hub client's command timeout does not reach the queues' connections (blocking waits outlast it)", async (t) => {
  // Like the hub's own client, with a much shorter timeout: every idle blocking wait of a worker outlasts it.
  const redis = new Redis(redisServer.url, { maxRetriesPerRequest: 1, commandTimeout: 200 });
  redis.on('error', () => undefined);
  t.teardown(() => redis.disconnect());
  const q = queuesOn(redis);
  t.teardown(() => q.close());
  const errors: string[] = [];
  const done: number[] = [];
  const worker = q.work('dropbox', async (job) => void done.push((job.data as { n: number }).n));
  worker.on('error', (err) => errors.push(err.message));
  await new Promise((r) => setTimeout(r, 1500)); // idle: the worker sits in a blocking wait
  await q.add('dropbox', 'upload', { n: 1 });
  await until(() => done.length === 1, 30_000, 'the job after an idle spell');
  t.deepEqual(errors, []);
});

test.serial('a closed ConnectorQueues refuses new queues and workers; close is idempotent', async (t) => {
  const redis = new Redis(redisServer.url, { maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined);
  t.teardown(() => redis.disconnect());
  const q = queuesOn(redis);
  q.queue('webhook');
  const first = q.close();
  t.is(q.close(), first, 'a second close joins the first');
  await first;
  t.throws(() => q.queue('dropbox'), { message: /connector queues are closed/ });
  t.throws(() => q.work('dropbox', async () => undefined), { message: /connector queues are closed/ });
  await t.throwsAsync(q.add('google-drive', 'x', {}), { message: /connector queues are closed/ });
});

test.serial('close returns after the grace when Redis stops answering, and finishes in the background once it answers again', async (t) => {
  // A Redis of its own, frozen (SIGSTOP: connections stay open, nothing answers), so the others keep theirs.
  const frozen = await startRedis();
  t.teardown(() => frozen.dispose());
  const redis = new Redis(frozen.url, { maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined);
  t.teardown(() => redis.disconnect());
  rejections.length = 0;
  const config = { natsNamespace: uniqueNamespace('q') } as Config;
  const q = new ConnectorQueues({ redis, config, log: createLogger('silent', 'test') }, { closeGraceMs: 300 });
  const started: number[] = [];
  q.work('dropbox', async (job) => {
    started.push((job.data as { n: number }).n);
    await new Promise((r) => setTimeout(r, 200));
  });
  await q.add('dropbox', 'upload', { n: 1 });
  await until(() => started.length === 1, 30_000, 'a job running');
  frozen.freeze();
  t.teardown(() => frozen.thaw());
  // Before, close() waited on Redis for ever (and cutting the connections made BullMQ spin). The bound is
  // generous (the grace is 300 ms): it only tells a close that returns from one that never does.
  const outcome = await Promise.race([
    q.close().then(() => 'closed'),
    new Promise<string>((r) => setTimeout(() => r('still waiting'), 20_000).unref()),
  ]);
  t.is(outcome, 'closed');
  frozen.thaw();
  // Once Redis answers again, the close finishes in the background: the queues' own connections go away and
  // only the test's client is left.
  await until(async () => String(await redis.client('LIST')).trim().split('\n').length === 1, 30_000, 'the queues\' connections closed');
  await settle();
  t.deepEqual(rejections.map((r) => String((r as Error)?.message ?? r)), []);
});
