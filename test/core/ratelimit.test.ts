/**
 * The Redis rate limiter batches hits that arrive together into one script call; these tests check that the
 * decisions are still exactly those of one INCR per hit, and that two processes share one counter.
 */
import test from 'ava';
import { Redis } from 'ioredis';
import { RateLimiter } from '../../core/ratelimit.js';
import { VoxaError } from '../../core/errors.js';
import { startRedis, uniqueNamespace, type ManagedServer } from '../helpers/servers.js';

let redis: ManagedServer;
const clients: Redis[] = [];

test.before(async () => {
  redis = await startRedis();
});
test.after.always(async () => {
  for (const c of clients) c.disconnect();
  await redis?.dispose();
});

async function client(): Promise<Redis> {
  const c = new Redis(redis.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
  clients.push(c);
  if (c.status !== 'ready') await new Promise((r) => c.once('ready', r));
  return c;
}

const outcome = (p: Promise<void>) =>
  p.then(
    () => 'ok',
    (err: unknown) => (err instanceof VoxaError ? err.code : String(err)),
  );

test('concurrent hits over the limit: exactly `limit` pass, the rest get RATE_LIMITED with Retry-After', async (t) => {
  const limiter = new RateLimiter(await client(), `${uniqueNamespace()}:`);
  const results = await Promise.all(Array.from({ length: 25 }, () => outcome(limiter.hit('send:u1', 10))));
  t.is(results.filter((r) => r === 'ok').length, 10);
  t.is(results.filter((r) => r === 'RATE_LIMITED').length, 15);
  // Arrival order decides: the first ten calls are the ones let through.
  t.deepEqual(results.slice(0, 10), Array(10).fill('ok'));
  const err = await t.throwsAsync(limiter.hit('send:u1', 10));
  t.true(err instanceof VoxaError);
  const retryAfter = Number((err as VoxaError).headers?.['Retry-After']);
  t.true(retryAfter >= 1 && retryAfter <= 60);
  // Another key has its own counter.
  await t.notThrowsAsync(limiter.hit('send:u2', 10));
});

test('two limiters on separate connections (two processes) share the counter', async (t) => {
  const prefix = `${uniqueNamespace()}:`;
  const a = new RateLimiter(await client(), prefix);
  const b = new RateLimiter(await client(), prefix);
  const results = await Promise.all(Array.from({ length: 12 }, (_, i) => outcome((i % 2 ? a : b).hit('send:u', 8))));
  t.is(results.filter((r) => r === 'ok').length, 8);
  await t.throwsAsync(a.hit('send:u', 8), { instanceOf: VoxaError });
  await t.throwsAsync(b.hit('send:u', 8), { instanceOf: VoxaError });
});

test('the window expires and reset() forgets the counter', async (t) => {
  const limiter = new RateLimiter(await client(), `${uniqueNamespace()}:`);
  await limiter.hit('k', 1, 300);
  await t.throwsAsync(limiter.hit('k', 1, 300), { instanceOf: VoxaError });
  const deadline = Date.now() + 10_000;
  let passed = false;
  while (!passed && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    passed = (await outcome(limiter.hit('k', 1, 300))) === 'ok';
  }
  t.true(passed, 'a hit passes again after the window');
  await limiter.reset('k');
  await t.notThrowsAsync(limiter.hit('k', 1, 60_000));
});

test('fails open when Redis is unreachable', async (t) => {
  const c = await client();
  const limiter = new RateLimiter(c, `${uniqueNamespace()}:`);
  c.disconnect();
  await t.notThrowsAsync(limiter.hit('k', 0));
});
