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

test('with Redis unreachable, hits are counted in this process: the limit still holds', async (t) => {
  const c = await client();
  const limiter = new RateLimiter(c, `${uniqueNamespace()}:`);
  c.disconnect();
  const results = await Promise.all(Array.from({ length: 8 }, () => outcome(limiter.hit('login:acct', 5))));
  t.deepEqual(results, ['ok', 'ok', 'ok', 'ok', 'ok', 'RATE_LIMITED', 'RATE_LIMITED', 'RATE_LIMITED']);
  const err = await t.throwsAsync(limiter.hit('login:acct', 5));
  t.true(Number((err as VoxaError).headers?.['Retry-After']) >= 1);
  t.is(await outcome(limiter.hit('login:other', 5)), 'ok', 'other keys have their own count');
  t.is(await outcome(limiter.hit('login:acct', 5, 1000)), 'ok', 'another window is another count');
  await limiter.reset('login:acct');
  t.is(await outcome(limiter.hit('login:acct', 5)), 'ok', 'reset() forgets the local count too');
});

test('with Redis stalled (connected, not answering), hits are counted in this process after the first times out', async (t) => {
  const server = await startRedis();
  t.teardown(() => server.dispose());
  const c = new Redis(server.url, { maxRetriesPerRequest: 1, commandTimeout: 300 });
  c.on('error', () => undefined); // the server is disposed under it at the end
  clients.push(c);
  if (c.status !== 'ready') await new Promise((r) => c.once('ready', r));
  const limiter = new RateLimiter(c, `${uniqueNamespace()}:`);
  server.freeze();
  try {
    const results: string[] = [];
    for (let i = 0; i < 5; i++) results.push(await outcome(limiter.hit('otp:acct', 3)));
    t.deepEqual(results, ['ok', 'ok', 'ok', 'RATE_LIMITED', 'RATE_LIMITED']);
    const leased: string[] = [];
    for (let i = 0; i < 4; i++) leased.push(await outcome(Promise.resolve(limiter.take('send:acct', 2))));
    t.deepEqual(leased, ['ok', 'ok', 'RATE_LIMITED', 'RATE_LIMITED']);
  } finally {
    server.thaw();
  }
});

test('leased hits (take): never more than the limit pass, over several processes too', async (t) => {
  const prefix = `${uniqueNamespace()}:`;
  const a = new RateLimiter(await client(), prefix);
  const b = new RateLimiter(await client(), prefix);
  const limit = 200; // a share of up to 12 hits is taken ahead
  const take = (l: RateLimiter) => outcome(Promise.resolve(l.take('send:u', limit)));
  const results: string[] = [];
  // Waves of concurrent hits from both "processes", so shares are taken, used and refilled in the background.
  for (let wave = 0; wave < 30; wave++) {
    results.push(...(await Promise.all(Array.from({ length: 10 }, (_, i) => take(i % 3 ? a : b)))));
  }
  const passed = results.filter((r) => r === 'ok').length;
  t.true(passed <= limit, `${passed} passed, the limit is ${limit}`);
  // Early refusal is bounded by the shares the two processes hold unused: at most one share each.
  t.true(passed >= limit - 2 * 12, `${passed} passed`);
  t.true(results.slice(-20).every((r) => r === 'RATE_LIMITED'), 'with both shares used up, every hit is refused');
  const c = await client();
  t.true(Number(await c.get(`${prefix}rl:send:u`)) <= limit, 'Redis never counted past the limit');
  const err = await t.throwsAsync(Promise.resolve(a.take('send:u', limit)));
  t.is((err as VoxaError).code, 'RATE_LIMITED');
  t.true(Number((err as VoxaError).headers?.['Retry-After']) >= 1);
});

test('leased hits pass without a round trip once a share is held, and small limits stay exact', async (t) => {
  const c = await client();
  const limiter = new RateLimiter(c, `${uniqueNamespace()}:`);
  // Warm the key up: the share doubles with use.
  for (let i = 0; i < 20; i++) await limiter.take('send:fast', 10_000);
  let sync = 0;
  for (let i = 0; i < 20; i++) {
    const p = limiter.take('send:fast', 10_000);
    if (p === undefined) sync++;
    else await p;
  }
  t.true(sync >= 10, `${sync} of 20 hits passed from the held share`);

  // A limit under 32 leases one hit at a time: the same decisions as hit().
  const exact = await Promise.all(Array.from({ length: 8 }, () => outcome(Promise.resolve(limiter.take('send:slow', 5)))));
  t.deepEqual(exact, ['ok', 'ok', 'ok', 'ok', 'ok', 'RATE_LIMITED', 'RATE_LIMITED', 'RATE_LIMITED']);
});

test('leased hits with Redis unreachable are counted in this process', async (t) => {
  const c = await client();
  const limiter = new RateLimiter(c, `${uniqueNamespace()}:`);
  c.disconnect();
  const results: string[] = [];
  for (let i = 0; i < 4; i++) results.push(await outcome(Promise.resolve(limiter.take('send:x', 3))));
  t.deepEqual(results, ['ok', 'ok', 'ok', 'RATE_LIMITED']);
  t.is(await outcome(Promise.resolve(limiter.take('send:x', 0))), 'RATE_LIMITED', 'a limit of 0 refuses');
});
