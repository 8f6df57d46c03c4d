/**
 * voxa_dependency_up must say 0 for as long as a dependency does not answer, not only once its connection
 * drops: a frozen server (SIGSTOP) keeps the TCP connection open, so connection state alone still looks fine,
 * and a gauge that flickers back to 1 keeps resetting the VoxaDependencyDown alert's 1-minute timer.
 */
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { rmSync } from 'node:fs';
import { hubForFile, testConfig } from '../helpers/hub.js';
import { freePort } from '../helpers/servers.js';
import { eventually } from '../api/support.js';
import { startHubCollectors, type Collectors } from '../../core/telemetry/collectors.js';
import { registry } from '../../core/telemetry/metrics.js';
import { runHub } from '../../core/server.js';

// Serial: the metrics registry is per process and both tests read the same gauge.
const env = hubForFile();

async function gauge(dependency: string): Promise<number | undefined> {
  const metric = registry.getSingleMetric('voxa_dependency_up');
  if (!metric) throw new Error('voxa_dependency_up is not registered');
  return (await metric.get()).values.find((v) => v.labels.dependency === dependency)?.value;
}

/** Collectors whose timer never fires during the test: every pass is one the test asked for. */
async function collectors(t: { teardown(fn: () => void): void }): Promise<Collectors> {
  const c = startHubCollectors(env.hub, { intervalMs: 3_600_000 });
  t.teardown(() => c());
  await c.sample(); // the boot pass, finished before anything is frozen
  return c;
}

/** Samples `times` times about a second apart and returns what the gauge read after each pass. */
async function sampleWhileFrozen(c: Collectors, dependency: string, times: number): Promise<Array<number | undefined>> {
  const seen: Array<number | undefined> = [];
  for (let i = 0; i < times; i++) {
    await c.sample();
    seen.push(await gauge(dependency));
    await sleep(1000);
  }
  return seen;
}

/** Samples until the gauge reads 1 again (a slow machine only makes this take longer). */
async function recovers(c: Collectors, dependency: string): Promise<void> {
  await eventually(async () => {
    await c.sample();
    return (await gauge(dependency)) === 1;
  }, 60_000);
}

test.serial('a frozen Redis reads 0 on every sample until it answers again, then 1', async (t) => {
  const c = await collectors(t);
  await recovers(c, 'redis'); // reachable before the freeze (a fresh client may still be connecting)
  const { redis } = env.servers;
  t.teardown(() => redis.thaw());
  redis.freeze();
  await sleep(200); // let the stop signal land before the first probe goes out
  t.deepEqual(await sampleWhileFrozen(c, 'redis', 5), [0, 0, 0, 0, 0]);
  redis.thaw();
  await recovers(c, 'redis');
  t.is(await gauge('redis'), 1);
});

test.serial('a frozen NATS server reads 0 on every sample until it answers again, then 1', async (t) => {
  const c = await collectors(t);
  await recovers(c, 'nats'); // reachable before the freeze (a fresh client may still be connecting)
  const { nats } = env.servers;
  t.teardown(() => nats.thaw());
  nats.freeze();
  await sleep(200);
  // Well inside the client's ping-out (10 s × 3), so the connection still looks up the whole time: only a
  // question that needs an answer can tell.
  t.deepEqual(await sampleWhileFrozen(c, 'nats', 4), [0, 0, 0, 0]);
  nats.thaw();
  await recovers(c, 'nats');
  t.is(await gauge('nats'), 1);
});

test.serial('a worker (no API, no /readyz) serves the same: its /metrics reads redis 0 while Redis is frozen, 1 after', async (t) => {
  const metricsPort = await freePort();
  const config = testConfig(env.servers, { host: '127.0.0.1', workerMetricsPort: metricsPort });
  const running = await runHub(config, { api: false, embedded: false, plugins: 'audit', name: 'voxa-worker-gauge' });
  const { redis } = env.servers;
  t.teardown(async () => {
    redis.thaw();
    await running.stop();
    rmSync(config.dataDir, { recursive: true, force: true });
  });
  t.is(running.server, null, 'no API server in a worker');
  const scrape = async (): Promise<string | undefined> => {
    const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    return /^voxa_dependency_up\{dependency="redis"\} (\d)$/m.exec(await res.text())?.[1];
  };
  await eventually(async () => (await scrape()) === '1', 60_000);

  redis.freeze();
  // The worker samples on its own 5 s timer: wait for the first pass that sees the freeze, then keep scraping
  // across at least two more passes.
  await eventually(async () => (await scrape()) === '0', 60_000);
  const seen: Array<string | undefined> = [];
  for (let i = 0; i < 12; i++) {
    await sleep(1000);
    seen.push(await scrape());
  }
  t.deepEqual(seen, Array(12).fill('0'));

  redis.thaw();
  await eventually(async () => (await scrape()) === '1', 60_000);
  t.pass();
});
