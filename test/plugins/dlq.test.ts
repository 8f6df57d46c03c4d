/** Dead-letter reasons, against a real NATS and a running plugin runtime. */
import test from 'ava';
import { runCli } from '../helpers/cli.js';
import { openTestHub, startServers } from '../helpers/hub.js';
import { listDeadLetters } from '../../plugins/runtime/dlq.js';
import { PluginRuntime } from '../../plugins/runtime/runtime.js';
import { definePlugin } from '../../plugins/runtime/types.js';
import { waitFor } from './helpers.js';

let servers: Awaited<ReturnType<typeof startServers>>;
test.before(async () => {
  servers = await startServers();
});
test.after.always(async () => {
  await servers?.dispose();
});

const FAST = { fetchExpiresMs: 1000, metricsIntervalMs: 500 };

test('malformed events: dlq list shows a short readable reason', async (t) => {
  const hub = await openTestHub(servers);
  const plugins = ['dlq-a', 'dlq-b'].map((name) =>
    definePlugin({ manifest: { name, description: 'takes messages', events: ['message.created'], retry: { ackWaitMs: 1000 } }, async handle() {} }),
  );
  const rt = new PluginRuntime(hub, plugins, FAST);
  await rt.start();
  const subject = `${hub.bus.namespace}.chat.w1.c1.message.created`;
  // Straight to JetStream, bodies that are not envelopes: one is not JSON, one lacks most fields.
  await hub.bus.publisher.publish(subject, Buffer.from('{not json'), {}, 'bad-1');
  await hub.bus.publisher.publish(subject, Buffer.from(JSON.stringify({ type: 'message.created', v: 2 })), {}, 'bad-2');
  await waitFor(async () => (await listDeadLetters(hub.bus)).length === 4, 'four dead letters');

  const env = { PATH: process.env.PATH, HOME: process.env.HOME, NATS_URL: servers.nats.url, VOXA_NATS_NAMESPACE: hub.bus.namespace, LOG_LEVEL: 'silent' };
  const listed = await runCli(env, ['dlq', 'list', '--json']);
  t.is(listed.code, 0, listed.stderr);
  const reasons = (JSON.parse(listed.stdout) as { deadLetters: Array<{ reason: string }> }).deadLetters.map((d) => d.reason);
  const notJson = reasons.filter((r) => r.startsWith('malformed event: not JSON ('));
  const notEnvelope = reasons.filter((r) => r.startsWith('malformed event: id: expected string, received undefined; '));
  t.is(notJson.length, 2, reasons.join('\n'));
  t.is(notEnvelope.length, 2, reasons.join('\n'));
  t.true(notEnvelope[0]!.includes('v: expected 1'), notEnvelope[0]);
  t.false(reasons.some((r) => r.includes('\n') || r.includes('"code"')));
  const table = await runCli(env, ['dlq', 'list']);
  t.regex(table.stdout, /malformed event: id: expected string, received undefined; time: expected string/);

  await rt.stop();
  await hub.close();
});
