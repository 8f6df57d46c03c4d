/**
 * A hub started while NATS is down: the API port answers from the start (health alive, readiness 503 naming
 * nats, anything else 503 UNAVAILABLE with Retry-After) and the log says what start-up waits for; once NATS
 * answers, the hub finishes starting and serves. Before, the port stayed closed and the log silent.
 */
import test from 'ava';
import type { Logger } from 'pino';
import { runHub, StartAborted } from '../../core/server.js';
import { createLogger } from '../../core/log.js';
import { serversForFile, testConfig } from '../helpers/hub.js';
import { freePort } from '../helpers/servers.js';

const servers = serversForFile(); // this file stops and starts its NATS

test.serial('NATS down at start-up: 503s that name it and a log line, then a normal start when it returns', async (t) => {
  const port = await freePort();
  const config = testConfig(servers, { host: '127.0.0.1', port, plugins: 'audit' });
  const lines: string[] = [];
  const base = createLogger('silent', 'test');
  const log = Object.assign(Object.create(base) as Logger, {
    warn: (_o: unknown, msg: string) => void lines.push(`warn ${msg}`),
    info: (_o: unknown, msg?: string) => void lines.push(`info ${msg ?? String(_o)}`),
  });
  await servers.nats.stop();
  t.teardown(() => servers.nats.start().catch(() => undefined));

  const starting = runHub(config, { api: true, embedded: false, plugins: 'audit', name: 'no-nats-test', logger: log });
  starting.catch(() => undefined);
  const url = `http://127.0.0.1:${port}`;
  let health: Response | undefined;
  for (let i = 0; i < 100 && !health; i++) {
    health = await fetch(`${url}/healthz`).catch(() => undefined);
    if (!health) await new Promise((r) => setTimeout(r, 50));
  }
  t.is(health?.status, 200, 'alive while starting');
  // The store opens first (failing names the hub meanwhile); then start-up waits on NATS and says so.
  let report: { status?: string; failing?: string[] } = {};
  for (let i = 0; i < 100 && report.failing?.[0] !== 'nats'; i++) {
    const ready = await fetch(`${url}/readyz`);
    t.is(ready.status, 503);
    report = (await ready.json()) as typeof report;
    if (report.failing?.[0] !== 'nats') await new Promise((r) => setTimeout(r, 50));
  }
  t.like(report, { status: 'unavailable', failing: ['nats'] });
  const send = await fetch(`${url}/v1/auth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  t.is(send.status, 503);
  t.is(send.headers.get('retry-after'), '5');
  t.like(await send.json(), { error: { code: 'UNAVAILABLE', details: { failing: ['nats'] } } });
  await new Promise((r) => setTimeout(r, 2500)); // past NATS_WAIT_LOG_MS
  t.true(lines.includes('warn waiting for NATS: start-up goes on when it answers'), lines.join(' | '));

  await servers.nats.start();
  const running = await starting;
  t.teardown(() => running.stop());
  t.is(running.port, port);
  t.true(lines.includes('info NATS answered; starting'));
  t.is((await fetch(`${url}/readyz`)).status, 200);
  const reg = await fetch(`${url}/v1/auth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'late@example.test', password: 'long enough pw', name: 'Late' }) });
  t.is(reg.status, 201);
});

test.serial('a stop while start-up waits for NATS: runHub rejects with StartAborted and the port is closed again', async (t) => {
  const port = await freePort();
  const config = testConfig(servers, { host: '127.0.0.1', port, plugins: 'audit' });
  await servers.nats.stop();
  t.teardown(() => servers.nats.start().catch(() => undefined));
  const abort = new AbortController();
  const starting = runHub(config, { api: true, embedded: false, plugins: 'audit', name: 'no-nats-abort-test', logger: createLogger('silent', 'test'), signal: abort.signal });
  starting.catch(() => undefined);
  const url = `http://127.0.0.1:${port}`;
  let up = false;
  for (let i = 0; i < 100 && !up; i++) {
    up = (await fetch(`${url}/healthz`).catch(() => undefined))?.status === 200;
    if (!up) await new Promise((r) => setTimeout(r, 50));
  }
  t.true(up, 'serving while it waits');
  abort.abort();
  await t.throwsAsync(starting, { instanceOf: StartAborted });
  await t.throwsAsync(fetch(`${url}/healthz`), undefined, 'the port is closed');
});

test.serial('a NATS URL that cannot work (unparsable) fails start-up at once instead of waiting forever', async (t) => {
  const config = testConfig(servers, { host: '127.0.0.1', port: await freePort(), plugins: 'audit', natsUrl: 'nats://[::1' });
  const started = Date.now();
  await t.throwsAsync(runHub(config, { api: true, embedded: false, plugins: 'audit', name: 'bad-nats-url-test', logger: createLogger('silent', 'test') }), { message: /Invalid URL/ });
  t.true(Date.now() - started < 5000);
});
