/** `voxa dlq retry --all` and dead-letter reasons, against a real NATS and a running plugin runtime. */
import test from 'ava';
import type { JetStreamClient } from 'nats';
import type { Hub } from '../../core/hub.js';
import { runCli } from '../helpers/cli.js';
import { openTestHub, serversForFile } from '../helpers/hub.js';
import { runtimeNames } from '../../plugins/runtime/control.js';
import { listDeadLetters, retryAllDeadLetters, type NatsHandles } from '../../plugins/runtime/dlq.js';
import { PluginRuntime } from '../../plugins/runtime/runtime.js';
import { definePlugin, PermanentError } from '../../plugins/runtime/types.js';
import { FAST, messageEvent, publishEvents, waitFor } from './helpers.js';

const servers = serversForFile();

async function lastDlqSeq(hub: Hub): Promise<number> {
  return (await hub.bus.jsm.streams.info(runtimeNames(hub.bus.namespace).deadLetter)).state.last_seq;
}

test('retry --all puts back each dead letter present at the start once, even when the plugin fails it again at once', async (t) => {
  const hub = await openTestHub(servers);
  // Fails the live delivery and the first two retries of each event, then succeeds.
  const calls = new Map<string, number>();
  const plugin = definePlugin({
    manifest: { name: 'dlq-again', description: 'fails a few times', events: ['message.created'], retry: { maxDeliveries: 1, ackWaitMs: 1000 } },
    async handle(e) {
      const n = (calls.get(e.id) ?? 0) + 1;
      calls.set(e.id, n);
      if (n <= 3) throw new PermanentError(`failure ${n}`);
    },
  });
  const rt = new PluginRuntime(hub, [plugin], FAST);
  await rt.start();
  const events = [messageEvent(), messageEvent(), messageEvent()];
  await publishEvents(hub, events);
  await waitFor(async () => (await listDeadLetters(hub.bus)).length === 3, 'three dead letters');
  const present = (await listDeadLetters(hub.bus)).map((d) => d.seq);

  // The worst case for the old loop, made certain: each retry has been dead-lettered again before the
  // command moves on (a plugin that fails faster than the CLI works through the list).
  const real = hub.bus.js;
  const js = Object.create(real) as JetStreamClient;
  js.publish = async (subject, data, opts) => {
    const before = await lastDlqSeq(hub);
    const ack = await real.publish(subject, data, opts);
    if (subject.includes('.retry.')) {
      const eventId = opts?.headers?.get('Voxa-Event-Id') ?? '';
      const attempt = (calls.get(eventId) ?? 0) + 1;
      await waitFor(() => (calls.get(eventId) ?? 0) >= attempt, 'the retry handled');
      if (attempt <= 3) await waitFor(async () => (await lastDlqSeq(hub)) > before, 'the retry dead-lettered again');
    }
    return ack;
  };
  const handles: NatsHandles = { js, jsm: hub.bus.jsm, namespace: hub.bus.namespace };

  const retried = await retryAllDeadLetters(handles);
  t.deepEqual(retried.map((d) => d.seq), present, 'exactly the dead letters that were there');
  t.deepEqual(retried.map((d) => d.eventId), events.map((e) => e.id));
  t.deepEqual([...calls.values()], [2, 2, 2], 'each event retried once');
  const left = await listDeadLetters(hub.bus);
  t.is(left.length, 3, 'the ones that failed again wait in the DLQ');
  t.true(left.every((d) => d.reason === 'failure 2' && d.seq > Math.max(...present)));
  await rt.stop();
  await hub.close();
});

test('malformed events: dlq list shows a short readable reason; dlq retry --all counts what was there', async (t) => {
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
  const notEnvelope = reasons.filter((r) => r.startsWith('malformed event: id: missing (expected string); '));
  t.is(notJson.length, 2, reasons.join('\n'));
  t.is(notEnvelope.length, 2, reasons.join('\n'));
  t.true(notEnvelope[0]!.includes('v: expected 1'), notEnvelope[0]);
  t.false(reasons.some((r) => r.includes('\n') || r.includes('"code"')));
  const table = await runCli(env, ['dlq', 'list']);
  t.regex(table.stdout, /malformed event: id: missing \(expected string\); time: missing \(expected string\);.* data: missing; v: expected 1/);

  const present = (await listDeadLetters(hub.bus)).map((d) => d.seq);
  const retried = await runCli(env, ['dlq', 'retry', '--all', '--json']);
  t.is(retried.code, 0, retried.stderr);
  const out = JSON.parse(retried.stdout) as { count: number; retried: Array<{ seq: number }> };
  t.is(out.count, 4);
  t.deepEqual(out.retried.map((d) => d.seq), present);
  // Malformed stays malformed: each comes back to the DLQ once, under a new sequence.
  await waitFor(async () => (await listDeadLetters(hub.bus)).length === 4, 'the retries dead-lettered again');
  t.true((await listDeadLetters(hub.bus)).every((d) => d.seq > Math.max(...present)));
  await rt.stop();
  await hub.close();
});

test('dlq list --plugin: an unknown name is exit 3 naming it, a known plugin without dead letters is an empty list', async (t) => {
  const hub = await openTestHub(servers);
  const plugin = definePlugin({
    manifest: { name: 'dlq-other', description: 'always fails', events: ['message.created'], retry: { ackWaitMs: 1000 } },
    async handle() {
      throw new PermanentError('always');
    },
  });
  const rt = new PluginRuntime(hub, [plugin], FAST);
  await rt.start();
  await publishEvents(hub, [messageEvent()]);
  await waitFor(async () => (await listDeadLetters(hub.bus)).length === 1, 'the dead letter of another plugin');

  const env = { PATH: process.env.PATH, HOME: process.env.HOME, NATS_URL: servers.nats.url, VOXA_NATS_NAMESPACE: hub.bus.namespace, LOG_LEVEL: 'silent' };
  const unknown = await runCli(env, ['dlq', 'list', '--plugin', 'nope']);
  t.is(unknown.code, 3, unknown.stdout);
  t.regex(unknown.stderr, /no plugin named nope/);
  t.notRegex(unknown.stdout, /empty/);
  const unknownJson = await runCli(env, ['dlq', 'list', '--plugin', 'nope', '--json']);
  t.is(unknownJson.code, 3);
  t.like(JSON.parse(unknownJson.stderr), { error: { code: 'PLUGIN_NOT_FOUND' } });
  const retryUnknown = await runCli(env, ['dlq', 'retry', '--all', '--plugin', 'nope']);
  t.is(retryUnknown.code, 3, retryUnknown.stdout);

  // email is built in but not running here: known, and none of the dead letters are its.
  const none = await runCli(env, ['dlq', 'list', '--plugin', 'email']);
  t.is(none.code, 0, none.stderr);
  t.is(none.stdout.trim(), 'No dead letters for plugin email.');
  const mine = await runCli(env, ['dlq', 'list', '--plugin', 'dlq-other', '--json']);
  t.is(mine.code, 0, mine.stderr);
  t.like((JSON.parse(mine.stdout) as { deadLetters: unknown[] }).deadLetters, [{ plugin: 'dlq-other', reason: 'always' }]);
  await rt.stop();
  await hub.close();
});
