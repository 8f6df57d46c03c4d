/**
 * runHub's stop (also what undoes a start that failed part-way) runs every step even when one fails: a plugin
 * runtime that throws while stopping must not leave the hub's NATS connection (or its store and Redis client) open.
 */
import test from 'ava';
import { runHub } from '../../core/server.js';
import { BUILTIN_PLUGINS } from '../../plugins/index.js';
import { definePlugin } from '../../plugins/runtime/types.js';
import { testConfig, serversForFile } from '../helpers/hub.js';
import { freePort } from '../helpers/servers.js';

const servers = serversForFile();

test('a plugin stop that throws still closes the hub, and the stop reports the failure', async (t) => {
  const config = testConfig(servers, { host: '127.0.0.1', port: 0 });
  const running = await runHub(config, { api: true, embedded: false, plugins: 'audit', name: 'voxa-run-stop' });
  const realStop = running.runtime.stop.bind(running.runtime);
  running.runtime.stop = async () => {
    await realStop();
    throw new Error('plugin stop failed');
  };
  t.false(running.hub.bus.nc.isClosed());
  const err = await t.throwsAsync(running.stop());
  t.is(err!.message, 'plugin stop failed');
  t.true(running.hub.bus.nc.isClosed(), 'the NATS connection is closed');
  t.false(running.server!.listening, 'the API no longer listens');
});

test('an unknown plugin name fails the start with its name', async (t) => {
  const config = testConfig(servers, { host: '127.0.0.1', port: 0 });
  const err = await t.throwsAsync(runHub(config, { api: true, embedded: false, plugins: 'no-such-plugin', name: 'voxa-run-stop' }));
  t.regex(err!.message, /no-such-plugin/);
});

test('the port answers 503 (readyz names the plugins) until every plugin has started, then the app serves', async (t) => {
  // A plugin whose start waits until the test lets it go: the window in which the edge would not be attached yet.
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let started!: () => void;
  const inStart = new Promise<void>((r) => (started = r));
  const plugin = definePlugin({
    manifest: { name: 'slow-start', description: 'test', events: ['message.created'] },
    async start() {
      started();
      await gate;
    },
    async handle() {},
  });
  BUILTIN_PLUGINS.push({ name: 'slow-start', description: 'test', load: async () => plugin });
  t.teardown(() => void BUILTIN_PLUGINS.splice(BUILTIN_PLUGINS.findIndex((p) => p.name === 'slow-start'), 1));
  const port = await freePort();
  const config = testConfig(servers, { host: '127.0.0.1', port });
  const running = runHub(config, { api: true, embedded: false, plugins: 'slow-start', name: 'voxa-run-slow' });
  running.catch(() => undefined);
  await inStart;
  const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
  t.is(ready.status, 503);
  t.like(await ready.json(), { failing: ['plugins'] });
  t.is((await fetch(`http://127.0.0.1:${port}/v1/me`)).status, 503, 'not the app yet');
  release();
  const r = await running;
  t.teardown(() => r.stop());
  t.is((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200);
  t.is((await fetch(`http://127.0.0.1:${port}/v1/me`)).status, 401, 'the app answers now');
});
