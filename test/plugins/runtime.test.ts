import test from 'ava';
import type { AnyEvent } from '../../core/events/catalog.js';
import { metrics } from '../../core/telemetry/metrics.js';
import { openTestHub, serversForFile } from '../helpers/hub.js';
import { listPlugins, rewindPlugin, setPaused } from '../../plugins/runtime/admin.js';
import { consumerName, runtimeNames } from '../../plugins/runtime/control.js';
import { listDeadLetters, retryDeadLetter } from '../../plugins/runtime/dlq.js';
import { onceByEventId } from '../../plugins/runtime/idempotency.js';
import { PluginRuntime } from '../../plugins/runtime/runtime.js';
import { definePlugin, PermanentError, RetryableError, type DeliveryInfo, type Plugin, type PluginManifest } from '../../plugins/runtime/types.js';
import { FAST, messageEvent, openSibling, publishEvents, seenEvent, sleep, waitFor } from './helpers.js';

const servers = serversForFile();

type Seen = { event: AnyEvent; info: DeliveryInfo; at: number };

/** A test plugin whose handler the test supplies; every call is recorded. */
function recorder(
  manifest: Partial<PluginManifest> & { name: string },
  handle: (event: AnyEvent, info: DeliveryInfo, calls: Seen[]) => Promise<void> = async () => undefined,
): Plugin & { calls: Seen[] } {
  const calls: Seen[] = [];
  const p = definePlugin({
    manifest: { description: 'test plugin', events: ['message.created'], retry: { ackWaitMs: 1000, backoffMs: [100] }, ...manifest },
    async handle(event, info) {
      calls.push({ event, info, at: Date.now() });
      await handle(event, info, calls);
    },
  });
  return Object.assign(p, { calls });
}

async function processedCount(plugin: string): Promise<number> {
  const m = await metrics.pluginProcessed.get();
  return m.values.find((v) => v.labels.plugin === plugin)?.value ?? 0;
}

test('events are delivered once to a plugin and acked; other types on its filter are skipped', async (t) => {
  const hub = await openTestHub(servers);
  const p = recorder({ name: 'once' });
  const rt = new PluginRuntime(hub, [p], FAST);
  await rt.start();
  const events = [messageEvent(), messageEvent(), seenEvent(), messageEvent('c2')];
  await publishEvents(hub, events);
  await waitFor(() => p.calls.length >= 3, 'three deliveries');
  await sleep(1500); // longer than ack wait: an unacked event would come back
  t.deepEqual(p.calls.map((c) => c.event.id).sort(), events.filter((e) => e.type === 'message.created').map((e) => e.id).sort());
  t.true(p.calls.every((c) => c.info.attempt === 1 && c.info.source === 'stream' && c.info.generation === 0));
  const ci = await hub.bus.jsm.consumers.info(runtimeNames(hub.bus.namespace).events, consumerName('once', 0));
  t.is(ci.num_ack_pending, 0);
  t.is(ci.num_pending, 0);
  t.is(ci.config.filter_subject, `${hub.bus.namespace}.chat.*.*.message.created`);
  t.is(await processedCount('once'), 3);
  t.deepEqual(rt.status()[0], { name: 'once', mode: 'shared', state: 'running', generation: 0, inFlight: 0, consumer: 'once-g0' });
  await rt.stop();
  await hub.close();
});

test('transient failures are retried with backoff and attempt numbers, then succeed', async (t) => {
  const hub = await openTestHub(servers);
  const p = recorder({ name: 'flaky', retry: { ackWaitMs: 2000, backoffMs: [300, 600], maxDeliveries: 5 } }, async (_e, info) => {
    if (info.attempt === 1) throw new RetryableError('upstream busy', 400); // explicit delay wins
    if (info.attempt === 2) throw new Error('socket hang up'); // unknown errors are retryable: policy backoff[1]
  });
  const rt = new PluginRuntime(hub, [p], FAST);
  await rt.start();
  await publishEvents(hub, [messageEvent()]);
  await waitFor(() => p.calls.length >= 3, 'third attempt');
  await sleep(300);
  t.deepEqual(
    p.calls.map((c) => c.info.attempt),
    [1, 2, 3],
  );
  t.true(p.calls[1]!.at - p.calls[0]!.at >= 400 - 30, `first retry waited ${p.calls[1]!.at - p.calls[0]!.at} ms`);
  t.true(p.calls[2]!.at - p.calls[1]!.at >= 600 - 30, `second retry waited ${p.calls[2]!.at - p.calls[1]!.at} ms`);
  t.deepEqual(await listDeadLetters(hub.bus, { plugin: 'flaky' }), []);
  await rt.stop();
  await hub.close();
});

test('a permanent failure is dead-lettered with its reason; dlq retry redelivers to that plugin only', async (t) => {
  const hub = await openTestHub(servers);
  let fixed = false;
  const failing = recorder({ name: 'mailer' }, async () => {
    if (!fixed) throw new PermanentError('mailbox does not exist');
  });
  const other = recorder({ name: 'audit' });
  const rt = new PluginRuntime(hub, [failing, other], FAST);
  await rt.start();
  const evt = messageEvent();
  const seq = (await publishEvents(hub, [evt]))[0]!;
  let dead: Awaited<ReturnType<typeof listDeadLetters>> = [];
  await waitFor(async () => (dead = await listDeadLetters(hub.bus)).length === 1, 'a dead letter');
  t.like(dead[0], { plugin: 'mailer', eventId: evt.id, type: 'message.created', reason: 'mailbox does not exist', attempts: 1, streamSeq: seq });
  t.is(failing.calls.length, 1); // permanent: no retries
  const listed = await listPlugins(hub.bus, []);
  t.like(
    listed.find((r) => r.name === 'mailer'),
    { deadLetters: 1, state: 'running' },
  );
  fixed = true;
  const retried = await retryDeadLetter(hub.bus, dead[0]!.seq);
  t.is(retried.plugin, 'mailer');
  await waitFor(() => failing.calls.length === 2, 'the retried delivery');
  t.is(failing.calls[1]!.event.id, evt.id);
  t.is(failing.calls[1]!.info.source, 'retry');
  t.is(failing.calls[1]!.info.streamSeq, seq);
  await sleep(1200);
  t.is(other.calls.length, 1, 'the other plugin did not see the retry');
  t.is(failing.calls.length, 2);
  t.deepEqual(await listDeadLetters(hub.bus), []);
  await t.throwsAsync(retryDeadLetter(hub.bus, dead[0]!.seq), { message: /no dead letter/ });
  await rt.stop();
  await hub.close();
});

test('exhausting max deliveries dead-letters the event; a malformed payload is dead-lettered at once', async (t) => {
  const hub = await openTestHub(servers);
  const p = recorder({ name: 'doomed', retry: { maxDeliveries: 3, backoffMs: [50], ackWaitMs: 1000 } }, async () => {
    throw new Error('boom');
  });
  const rt = new PluginRuntime(hub, [p], FAST);
  await rt.start();
  const evt = messageEvent();
  await publishEvents(hub, [evt]);
  await hub.bus.publisher.publish(`${hub.bus.namespace}.chat.w1.c1.message.created`, Buffer.from('{not json'), {}, 'garbage-1');
  let dead: Awaited<ReturnType<typeof listDeadLetters>> = [];
  await waitFor(async () => (dead = await listDeadLetters(hub.bus, { plugin: 'doomed' })).length === 2, 'two dead letters');
  const exhausted = dead.find((d) => d.eventId === evt.id)!;
  t.like(exhausted, { attempts: 3, type: 'message.created', reason: 'max deliveries (3) exhausted: boom' });
  const malformed = dead.find((d) => d.eventId === null)!;
  t.regex(malformed.reason, /^malformed event/);
  t.deepEqual(
    p.calls.map((c) => c.info.attempt),
    [1, 2, 3],
  );
  const failed = (await metrics.pluginFailed.get()).values.filter((v) => v.labels.plugin === 'doomed');
  t.is(failed.find((v) => v.labels.reason === 'error')?.value, 3);
  t.is(failed.find((v) => v.labels.reason === 'malformed')?.value, 1);
  const dl = (await metrics.pluginDeadLettered.get()).values.find((v) => v.labels.plugin === 'doomed');
  t.is(dl?.value, 2);
  await rt.stop();
  await hub.close();
});

test('two processes of one plugin share its work: each event once overall, both get some', async (t) => {
  const a = await openTestHub(servers);
  const b = await openSibling(servers, a, 'sibling');
  const seen = new Map<string, string[]>();
  const make = (who: string) =>
    recorder({ name: 'shared', concurrency: 2 }, async (e) => {
      seen.set(e.id, [...(seen.get(e.id) ?? []), who]);
      await sleep(20);
    });
  const pa = make('a');
  const pb = make('b');
  const ra = new PluginRuntime(a, [pa], FAST);
  const rb = new PluginRuntime(b, [pb], FAST);
  await Promise.all([ra.start(), rb.start()]);
  const events = Array.from({ length: 40 }, () => messageEvent());
  await publishEvents(a, events);
  await waitFor(() => seen.size === 40, 'all 40 events');
  await sleep(1200);
  t.true([...seen.values()].every((who) => who.length === 1), 'no event handled twice');
  t.true(pa.calls.length > 0 && pb.calls.length > 0, `a=${pa.calls.length} b=${pb.calls.length}`);
  t.is(pa.calls.length + pb.calls.length, 40);
  await Promise.all([ra.stop(), rb.stop()]);
  await b.close();
  await a.close();
});

test('a worker killed mid-batch: the other one processes its events after ack wait, each effect once', async (t) => {
  const a = await openTestHub(servers);
  const b = await openSibling(servers, a, 'survivor');
  const effects = new Map<string, number>();
  const effect = (id: string) => async () => void effects.set(id, (effects.get(id) ?? 0) + 1);
  const hang = (signal?: AbortSignal) => new Promise<void>((_, reject) => signal?.addEventListener('abort', () => reject(new Error('aborted'))));
  const manifest = { name: 'charger', concurrency: 4, retry: { ackWaitMs: 1000, backoffMs: [100] } };
  let index = 0;
  const order = new Map<string, number>();
  // Process A dies: half its events after the effect (before the ack), half before the effect.
  const pa = recorder(manifest, async (e, info) => {
    const i = order.get(e.id) ?? index++;
    order.set(e.id, i);
    if (i % 2 === 0) await onceByEventId(a, 'charger', info.dedupeKey!, effect(e.id));
    await hang(info.signal);
  });
  const ran: boolean[] = [];
  const pb = recorder(manifest, async (e, info) => {
    ran.push((await onceByEventId(b, 'charger', info.dedupeKey!, effect(e.id))).ran);
  });
  const ra = new PluginRuntime(a, [pa], FAST);
  // Torn down even when an assertion fails: A's handlers hang until stopped, and would keep this file's
  // process alive after its tests.
  t.teardown(async () => {
    await ra.stop({ timeoutMs: 300 });
    await a.close();
  });
  await ra.start();
  const events = Array.from({ length: 4 }, () => messageEvent());
  await publishEvents(a, events);
  await waitFor(() => pa.calls.length === 4 && effects.size === 2, 'A holding all four, two effects done');
  const rb = new PluginRuntime(b, [pb], FAST);
  t.teardown(async () => {
    await rb.stop();
    await b.close();
  });
  await rb.start();
  a.bus.nc.close(); // the "kill": no acks, no naks, no drain
  // Until B's handlers have finished, not just started: a handler's effect lands before its processed mark is
  // committed, and `ran` is only known after that.
  await waitFor(() => pb.calls.length === 4 && ran.length === 4, 'B processing the four events');
  t.true(pb.calls.every((c) => c.info.attempt >= 2), 'they were redeliveries');
  t.deepEqual(new Set(pb.calls.map((c) => c.event.id)), new Set(events.map((e) => e.id)));
  t.true(events.every((e) => effects.get(e.id) === 1), JSON.stringify([...effects]));
  t.is(ran.filter(Boolean).length, 2, 'B ran only the effects A had not done');
});

test('pause stops processing in every process; resume continues where it stopped', async (t) => {
  const hub = await openTestHub(servers);
  const p = recorder({ name: 'pausable' });
  const rt = new PluginRuntime(hub, [p], FAST);
  await rt.start();
  await publishEvents(hub, [messageEvent()]);
  await waitFor(() => p.calls.length === 1, 'first event');
  await setPaused(hub.bus, 'pausable', true);
  await waitFor(() => rt.status()[0]!.state === 'paused', 'paused state');
  await publishEvents(hub, [messageEvent(), messageEvent()]);
  await sleep(1500);
  t.is(p.calls.length, 1, 'nothing handled while paused');
  t.like((await listPlugins(hub.bus)).find((r) => r.name === 'pausable'), { state: 'paused', pending: 2 });
  await setPaused(hub.bus, 'pausable', false);
  await waitFor(() => p.calls.length === 3, 'the two held events');
  t.is(rt.status()[0]!.state, 'running');
  await rt.stop();
  await hub.close();
});

test('rewind replays history into that plugin only, by time or sequence, honouring its replay mode', async (t) => {
  const hub = await openTestHub(servers);
  const effects = { rebuild: 0, notify: 0 };
  const rebuild = recorder({ name: 'rebuild', replay: 'reprocess' }, async (_e, info) => {
    await onceByEventId(hub, 'rebuild', info.dedupeKey!, async () => void effects.rebuild++);
  });
  const notify = recorder({ name: 'notify' }, async (_e, info) => {
    await onceByEventId(hub, 'notify', info.dedupeKey!, async () => void effects.notify++);
  });
  const bystander = recorder({ name: 'bystander' });
  const rt = new PluginRuntime(hub, [rebuild, notify, bystander], FAST);
  await rt.start();
  const before = new Date(Date.now() - 1000);
  const seqs = await publishEvents(hub, [messageEvent(), messageEvent(), messageEvent()]);
  await waitFor(() => rebuild.calls.length === 3 && notify.calls.length === 3 && bystander.calls.length === 3, 'first pass');

  const r1 = await rewindPlugin(hub.bus, 'rebuild', before);
  t.like(r1, { plugin: 'rebuild', generation: 1, consumer: 'rebuild-g1' });
  const r2 = await rewindPlugin(hub.bus, 'notify', seqs[0]!);
  t.like(r2, { generation: 1, since: seqs[0] });
  await waitFor(() => rebuild.calls.length === 6 && notify.calls.length === 6, 'replay');
  t.true(rebuild.calls.slice(3).every((c) => c.info.generation === 1 && c.info.dedupeKey === `${c.event.id}@g1`));
  t.is(effects.rebuild, 6, "'reprocess' re-runs its effects once per generation");
  t.is(effects.notify, 3, "'skip-processed' does not repeat them");
  await sleep(1200);
  t.is(bystander.calls.length, 3, 'other plugins see nothing of the rewind');
  const names = [];
  for await (const ci of hub.bus.jsm.consumers.list(runtimeNames(hub.bus.namespace).events)) names.push(ci.name);
  t.deepEqual(names.sort(), ['bystander-g0', 'notify-g1', 'rebuild-g1']);
  await t.throwsAsync(rewindPlugin(hub.bus, 'nosuch', 1), { message: /no consumer yet/ });
  // New events keep flowing to the rewound consumer.
  await publishEvents(hub, [messageEvent()]);
  await waitFor(() => rebuild.calls.length === 7, 'a live event after the rewind');
  await rt.stop();
  await hub.close();
});

test('graceful stop waits for in-flight handlers and acks them', async (t) => {
  const hub = await openTestHub(servers);
  const done: string[] = [];
  const p = recorder({ name: 'slow', concurrency: 4 }, async (e) => {
    await sleep(700);
    done.push(e.id);
  });
  const rt = new PluginRuntime(hub, [p], FAST);
  await rt.start();
  await publishEvents(hub, [messageEvent(), messageEvent()]);
  await waitFor(() => p.calls.length === 2, 'both handlers running');
  t.is(done.length, 0);
  await rt.stop({ timeoutMs: 10_000 });
  t.is(done.length, 2, 'stop returned only after the handlers finished');
  const ci = await hub.bus.jsm.consumers.info(runtimeNames(hub.bus.namespace).events, consumerName('slow', 0));
  t.is(ci.num_ack_pending, 0);
  t.is(ci.num_redelivered, 0);
  await hub.close();
});

test('broadcast mode: every process sees every event, ephemeral ones included', async (t) => {
  const a = await openTestHub(servers);
  const b = await openSibling(servers, a, 'edge2');
  const make = () => recorder({ name: 'fanout', mode: 'broadcast', events: ['message.created', 'typing.started'], concurrency: 1 });
  const pa = make();
  const pb = make();
  const ra = new PluginRuntime(a, [pa], FAST);
  const rb = new PluginRuntime(b, [pb], FAST);
  await Promise.all([ra.start(), rb.start()]);
  const typing = {
    id: 'evt_typing1',
    type: 'typing.started',
    time: new Date().toISOString(),
    workspaceId: 'w1',
    conversationId: 'c1',
    actor: { type: 'user', id: 'u1' },
    data: { conversationId: 'c1', userId: 'u1' },
    v: 1,
  } as AnyEvent;
  await publishEvents(a, [messageEvent(), messageEvent(), typing]);
  await waitFor(() => pa.calls.length === 3 && pb.calls.length === 3, 'three events in each process');
  // Two streams (durable, ephemeral) interleave freely, so compare as sets.
  t.deepEqual(pa.calls.map((c) => c.event.id).sort(), pb.calls.map((c) => c.event.id).sort());
  t.true(pa.calls.every((c) => c.info.source === 'broadcast'));
  t.throws(() => new PluginRuntime(a, [recorder({ name: 'bad', events: ['typing.started'] })]), { message: /ephemeral/ });
  await Promise.all([ra.stop(), rb.stop()]);
  await b.close();
  await a.close();
});
