/**
 * `manifest.ordered`: one event at a time in stream order across processes and redeliveries (the consumer's
 * max_ack_pending = 1), and an existing consumer picks the setting up when the plugin restarts.
 */
import test from 'ava';
import type { AnyEvent } from '../../core/events/catalog.js';
import { openTestHub, serversForFile } from '../helpers/hub.js';
import { consumerName, runtimeNames } from '../../plugins/runtime/control.js';
import { PluginRuntime } from '../../plugins/runtime/runtime.js';
import { definePlugin, RetryableError, type DeliveryInfo, type Plugin, type PluginManifest } from '../../plugins/runtime/types.js';
import { FAST, messageEvent, openSibling, publishEvents, sleep, waitFor } from './helpers.js';

const servers = serversForFile();

interface Call {
  seq: number;
  attempt: number;
  proc: string;
  ok: boolean;
}

/** A plugin that logs each call (into a log shared by every "process" of the test) and then runs `body`. */
function orderedPlugin(
  name: string,
  proc: string,
  log: Call[],
  body: (event: AnyEvent, info: DeliveryInfo) => Promise<void>,
  manifest: Partial<PluginManifest> = { ordered: true },
): Plugin {
  return definePlugin({
    manifest: { name, description: 'ordered test plugin', events: ['message.created'], retry: { ackWaitMs: 2000, backoffMs: [100], maxDeliveries: 5 }, ...manifest },
    async handle(event, info) {
      const call: Call = { seq: info.streamSeq, attempt: info.attempt, proc, ok: false };
      log.push(call);
      await body(event, info);
      call.ok = true;
    },
  });
}

const jitter = (): Promise<void> => sleep(Math.floor(Math.random() * 4));

test('two processes of an ordered plugin handle events one at a time in stream order', async (t) => {
  const hub = await openTestHub(servers);
  const sibling = await openSibling(servers, hub, 'worker');
  const log: Call[] = [];
  let running = 0;
  let overlap = 0;
  const body = async (): Promise<void> => {
    if (++running > 1) overlap++;
    await jitter();
    running--;
  };
  const a = new PluginRuntime(hub, [orderedPlugin('ord-two', 'hub', log, body)], FAST);
  const b = new PluginRuntime(sibling, [orderedPlugin('ord-two', 'worker', log, body)], FAST);
  await a.start();
  await b.start();
  const seqs = await publishEvents(hub, Array.from({ length: 150 }, () => messageEvent()));
  await waitFor(() => log.filter((c) => c.ok).length >= seqs.length, 'every event handled', 60_000);
  t.is(overlap, 0, 'never two handler calls at once across the processes');
  t.deepEqual(
    log.map((c) => c.seq),
    [...seqs].sort((x, y) => x - y),
    'handled in stream order',
  );
  t.true(new Set(log.map((c) => c.proc)).size === 2, 'both processes took part');
  const ci = await hub.bus.jsm.consumers.info(runtimeNames(hub.bus.namespace).events, consumerName('ord-two', 0));
  t.is(ci.config.max_ack_pending, 1);
  await b.stop();
  await a.stop();
  await sibling.close();
  await hub.close();
});

test('a retried event comes back before any later one', async (t) => {
  const hub = await openTestHub(servers);
  const log: Call[] = [];
  let failed = false;
  const seqs: number[] = [];
  const p = orderedPlugin('ord-retry', 'hub', log, async (_e, info) => {
    // The third event fails once; with a plain consumer the later ones would be handled during its delay.
    if (!failed && info.streamSeq === seqs[2]) {
      failed = true;
      throw new RetryableError('receiver busy', 400);
    }
  });
  const rt = new PluginRuntime(hub, [p], FAST);
  await rt.start();
  seqs.push(...(await publishEvents(hub, Array.from({ length: 8 }, () => messageEvent()))));
  seqs.sort((x, y) => x - y);
  await waitFor(() => log.filter((c) => c.ok).length >= seqs.length, 'every event handled');
  t.deepEqual(
    log.map((c) => [c.seq, c.attempt]),
    [...seqs.slice(0, 3).map((s) => [s, 1]), [seqs[2], 2], ...seqs.slice(3).map((s) => [s, 1])],
  );
  await rt.stop();
  await hub.close();
});

test('an existing consumer is switched to ordered (and back) when the plugin restarts with the new manifest', async (t) => {
  const hub = await openTestHub(servers);
  const info = () => hub.bus.jsm.consumers.info(runtimeNames(hub.bus.namespace).events, consumerName('ord-up', 0));
  const run = async (manifest: Partial<PluginManifest>): Promise<void> => {
    const rt = new PluginRuntime(hub, [orderedPlugin('ord-up', 'hub', [], async () => undefined, manifest)], FAST);
    await rt.start();
    await rt.stop();
  };
  await run({});
  t.true(((await info()).config.max_ack_pending ?? 0) > 1);
  await run({ ordered: true });
  t.is((await info()).config.max_ack_pending, 1);
  await run({});
  t.true(((await info()).config.max_ack_pending ?? 0) > 1);
  await hub.close();
});

test('ordered is refused for a broadcast plugin', (t) => {
  const p = orderedPlugin('ord-bc', 'hub', [], async () => undefined, { ordered: true, mode: 'broadcast' });
  t.throws(() => new PluginRuntime({ bus: { namespace: 'x' }, log: { child: () => ({ child: () => ({}) }) } } as never, [p]), { message: /needs shared mode/ });
});
