/**
 * runHub's stop (also what undoes a start that failed part-way) runs every step even when one fails: a plugin
 * runtime that throws while stopping must not leave the hub's NATS connection (or its store and Redis client) open.
 */
import test from 'ava';
import { runHub } from '../../core/server.js';
import { testConfig, serversForFile } from '../helpers/hub.js';

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
