/**
 * Events whose envelope is fine but whose `data` does not match the catalog (published by hand with
 * `nats pub`, or by a buggy external producer): the runtime checks `data` before a handler sees it and
 * dead-letters such an event at once; broadcast skips it; a backfill counts it as failed. Extra fields a
 * newer producer adds are not malformed and reach the handler as published.
 */
import test from 'ava';
import { runBackfill, type BackfillTarget } from '../../connectors/backfill.js';
import type { ConnectionRecord } from '../../connectors/types.js';
import type { AnyEvent, EventEnvelope } from '../../core/events/catalog.js';
import type { Hub } from '../../core/hub.js';
import { metrics } from '../../core/telemetry/metrics.js';
import { openTestHub, serversForFile } from '../helpers/hub.js';
import { consumerName, runtimeNames } from '../../plugins/runtime/control.js';
import { listDeadLetters, retryDeadLetter } from '../../plugins/runtime/dlq.js';
import { PluginRuntime } from '../../plugins/runtime/runtime.js';
import { definePlugin, type DeliveryInfo, type Plugin, type PluginManifest } from '../../plugins/runtime/types.js';
import { FAST, messageEvent, waitFor } from './helpers.js';

const servers = serversForFile();

/**
 * A plugin that writes transcript lines from message.created, the way a real one would: it trusts
 * `data.message`. `seen` holds every event the handler was given, `done` the ids whose handler returned.
 */
function transcriptPlugin(manifest: Partial<PluginManifest> & { name: string }): Plugin & { seen: AnyEvent[]; done: Set<string>; lines: string[] } {
  const seen: AnyEvent[] = [];
  const done = new Set<string>();
  const lines: string[] = [];
  const p = definePlugin({
    // Three deliveries with a short backoff: before the data check, a crashing handler went round them all.
    manifest: { description: 'test plugin', events: ['message.created'], retry: { maxDeliveries: 3, ackWaitMs: 1000, backoffMs: [50] }, ...manifest },
    async handle(event: AnyEvent, _info: DeliveryInfo) {
      seen.push(event);
      if (event.type !== 'message.created') return;
      const m = event.data.message;
      lines.push(`${m.seq} ${m.senderId}: ${m.text}`);
      done.add(event.id);
    },
  });
  return Object.assign(p, { seen, done, lines });
}

/** A message.created envelope (valid) around `data` (whatever the test wants), as raw JSON on the stream. */
async function publishRaw(hub: Hub, id: string, data: unknown): Promise<void> {
  const envelope = { id, type: 'message.created', time: new Date().toISOString(), workspaceId: 'w1', conversationId: 'c1', actor: { type: 'user', id: 'u1' }, data, v: 1 };
  await hub.bus.publisher.publish(`${hub.bus.namespace}.chat.w1.c1.message.created`, Buffer.from(JSON.stringify(envelope)), {}, id);
}

/** A good event as JSON, for building malformed variants of it. */
function goodData(): { message: Record<string, unknown> } {
  return structuredClone(messageEvent().data) as { message: Record<string, unknown> };
}

async function malformedCount(plugin: string): Promise<number> {
  return (await metrics.pluginFailed.get()).values.find((v) => v.labels.plugin === plugin && v.labels.reason === 'malformed')?.value ?? 0;
}

async function publishGood(hub: Hub): Promise<EventEnvelope<'message.created'>> {
  const e = messageEvent() as EventEnvelope<'message.created'>;
  await publishRaw(hub, e.id, e.data);
  return e;
}

test('shared: an event with malformed data is dead-lettered at once with a readable reason; the handler never sees it', async (t) => {
  const hub = await openTestHub(servers);
  const p = transcriptPlugin({ name: 'bad-data' });
  const rt = new PluginRuntime(hub, [p], FAST);
  await rt.start();

  const wrongType = goodData();
  wrongType.message.seq = 'x';
  await publishRaw(hub, 'evt_bad_seq', wrongType);
  await publishRaw(hub, 'evt_bad_empty', {});
  await publishRaw(hub, 'evt_bad_null', null);
  const good = await publishGood(hub);
  const bad = ['evt_bad_seq', 'evt_bad_empty', 'evt_bad_null'];

  // Each bad event has an outcome: dead-lettered, or (the old behaviour) handled. The good one is handled.
  await waitFor(async () => {
    const dead = new Set((await listDeadLetters(hub.bus)).map((d) => d.eventId));
    return p.done.has(good.id) && bad.every((id) => dead.has(id) || p.done.has(id));
  }, 'every event settled');

  t.deepEqual(p.seen.map((e) => e.id), [good.id], 'the handler saw only the good event');
  t.deepEqual(p.lines, [`${good.data.message.seq} u1: ${good.data.message.text}`]);
  const dead = await listDeadLetters(hub.bus, { plugin: 'bad-data' });
  t.deepEqual(
    dead.map((d) => [d.eventId, d.type, d.attempts, d.reason]).sort(),
    [
      ['evt_bad_empty', 'message.created', 1, 'malformed message.created data: message: missing (expected object)'],
      ['evt_bad_null', 'message.created', 1, 'malformed message.created data: expected object, received null'],
      ['evt_bad_seq', 'message.created', 1, 'malformed message.created data: message.seq: expected number, received string'],
    ],
  );
  t.is(await malformedCount('bad-data'), 3);

  // Nothing is stuck: a later good event goes through, and the consumer has nothing pending.
  const later = await publishGood(hub);
  await waitFor(() => p.done.has(later.id), 'a later event handled');
  await waitFor(async () => (await hub.bus.jsm.consumers.info(runtimeNames(hub.bus.namespace).events, consumerName('bad-data', 0))).num_ack_pending === 0, 'nothing left unacked');

  // Malformed stays malformed: a retry comes back to the DLQ once more, again without a handler call.
  const seq = dead.find((d) => d.eventId === 'evt_bad_seq')!.seq;
  await retryDeadLetter(hub.bus, seq);
  await waitFor(async () => (await listDeadLetters(hub.bus, { plugin: 'bad-data' })).some((d) => d.seq > seq && d.eventId === 'evt_bad_seq'), 'the retry dead-lettered again');
  const again = (await listDeadLetters(hub.bus, { plugin: 'bad-data' })).find((d) => d.seq > seq && d.eventId === 'evt_bad_seq')!;
  t.is(again.attempts, 1);
  t.is(again.reason, 'malformed message.created data: message.seq: expected number, received string');
  t.deepEqual(p.seen.map((e) => e.id), [good.id, later.id]);
  await rt.stop();
  await hub.close();
});

test('a reason names at most eight problems and counts the rest', async (t) => {
  const hub = await openTestHub(servers);
  const p = transcriptPlugin({ name: 'many-bad' });
  const rt = new PluginRuntime(hub, [p], FAST);
  await rt.start();
  // Every field of the message has the wrong type: ten problems.
  const m = { id: 1, conversationId: 2, seq: 'x', senderId: 3, text: 4, clientId: 5, createdAt: 6, editedAt: 7, deleted: 'no', attachments: 'a' };
  await publishRaw(hub, 'evt_many', { message: m });
  await waitFor(async () => (await listDeadLetters(hub.bus, { plugin: 'many-bad' })).length === 1, 'one dead letter');
  const [d] = await listDeadLetters(hub.bus, { plugin: 'many-bad' });
  t.regex(d!.reason, /^malformed message\.created data: message\.id: expected string, received number; message\.conversationId: /);
  t.regex(d!.reason, /; and 2 more$/);
  t.is(d!.reason.split('; ').length, 9);
  t.is(p.seen.length, 0);
  await rt.stop();
  await hub.close();
});

test('unknown extra fields in data are not malformed, and the handler gets them as published', async (t) => {
  const hub = await openTestHub(servers);
  const p = transcriptPlugin({ name: 'newer-producer' });
  const rt = new PluginRuntime(hub, [p], FAST);
  await rt.start();
  const data = goodData();
  data.message.reactions = [{ emoji: '👍', by: 'u2' }];
  const withExtra = { ...data, thread: { rootId: 'm0' } };
  await publishRaw(hub, 'evt_extra', withExtra);
  await waitFor(() => p.done.has('evt_extra'), 'the event handled');
  const got = p.seen.find((e) => e.id === 'evt_extra')!;
  t.deepEqual(got.data, withExtra as never, 'unknown fields are kept, nested and top-level');
  t.is(await malformedCount('newer-producer'), 0);
  t.deepEqual(await listDeadLetters(hub.bus, { plugin: 'newer-producer' }), []);
  await rt.stop();
  await hub.close();
});

test('broadcast: an event with malformed data is skipped and counted; the next one is handled', async (t) => {
  const hub = await openTestHub(servers);
  const p = transcriptPlugin({ name: 'bad-fanout', mode: 'broadcast', concurrency: 1 });
  const rt = new PluginRuntime(hub, [p], FAST);
  await rt.start();
  await publishRaw(hub, 'evt_bc_bad', { message: { ...goodData().message, seq: 'x' } });
  const good = await publishGood(hub);
  await waitFor(() => p.done.has(good.id), 'the good event handled');
  await waitFor(async () => (await malformedCount('bad-fanout')) === 1, 'the malformed one counted');
  t.deepEqual(p.seen.map((e) => e.id), [good.id]);
  await rt.stop();
  await hub.close();
});

test('backfill: a replayed event with malformed data counts as failed with the reason; the rest is replayed', async (t) => {
  const hub = await openTestHub(servers);
  const good = messageEvent();
  await publishRaw(hub, 'evt_bf_bad', {});
  await publishRaw(hub, good.id, good.data);
  await hub.bus.publisher.publish(`${hub.bus.namespace}.chat.w1.c1.message.created`, Buffer.from('{not json'), {}, 'evt_bf_garbage');
  const accepted: string[] = [];
  const target: BackfillTarget = {
    async accept(e) {
      accepted.push(e.id);
      return 'written';
    },
  };
  const now = new Date().toISOString();
  const conn: ConnectionRecord = {
    id: 'con_1',
    workspaceId: 'w1',
    connector: 'webhook',
    name: 'test',
    config: {},
    secretFields: [],
    sealed: null,
    status: 'active',
    statusReason: null,
    createdAt: now,
    updatedAt: now,
  };
  const summary = await runBackfill(hub.bus, conn, target, { seq: 1 });
  t.deepEqual(accepted, [good.id]);
  t.is(summary.events, 3);
  t.is(summary.written, 1);
  t.is(summary.failed, 2);
  t.deepEqual(summary.failures[0], { eventId: 'evt_bf_bad', conversationId: 'c1', reason: 'malformed message.created data: message: missing (expected object)' });
  t.is(summary.failures.length, 2);
  t.regex(summary.failures[1]!.reason, new RegExp(`^stream seq ${summary.toSeq}: malformed event: not JSON \\(`));
  await hub.close();
});
