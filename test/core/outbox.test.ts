import test from 'ava';
import type { StoredMsg } from 'nats';
import type { UserRecord } from '../../core/domain.js';
import { closeHub, openHub } from '../../core/hub.js';
import { testConfig, serversForFile } from '../helpers/hub.js';

const servers = serversForFile();

function user(id: string, workspaceId: string): UserRecord {
  return { id, workspaceId, email: `${id}@example.test`, name: id, role: 'customer', createdAt: new Date().toISOString(), passwordHash: 'x', disabled: false };
}

/** Two users of the hub's default workspace and a direct conversation between them. */
async function pair(hub: Awaited<ReturnType<typeof openHub>>, ids: [string, string]): Promise<{ a: UserRecord; conversation: { id: string } }> {
  const [a, b] = ids.map((id) => user(id, hub.config.defaultWorkspaceId)) as [UserRecord, UserRecord];
  await hub.store.createUser(a, () => []);
  await hub.store.createUser(b, () => []);
  const { conversation } = await hub.chat.openConversation(a, { type: 'direct', members: [b.id] });
  return { a, conversation };
}

async function until(cond: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Reads every message of the namespace's events stream, by sequence. */
async function readStream(hub: Awaited<ReturnType<typeof openHub>>): Promise<StoredMsg[]> {
  const info = await hub.bus.jsm.streams.info(hub.bus.streams.events);
  const out: StoredMsg[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    out.push(await hub.bus.jsm.streams.getMessage(hub.bus.streams.events, { seq }));
  }
  return out;
}

test.serial('sends succeed while NATS is down and the event arrives once when it returns', async (t) => {
  const config = testConfig(servers, { publishAckWaitMs: 300 });
  const hub = await openHub(config, { name: 'outbox-test' });
  const a = user('usr_a', config.defaultWorkspaceId);
  const b = user('usr_b', config.defaultWorkspaceId);
  await hub.store.createUser(a, () => []);
  await hub.store.createUser(b, () => []);
  const { conversation } = await hub.chat.openConversation(a, { type: 'direct', members: [b.id] });
  await until(async () => (await hub.store.outboxCount()) === 0);
  // What an operator reads in the log: one warning when events start waiting, one line when they are all out.
  const lines: Array<[string, Record<string, unknown>, string]> = [];
  for (const level of ['warn', 'info'] as const) {
    (hub.log as unknown as Record<string, unknown>)[level] = (obj: Record<string, unknown>, msg: string) => void lines.push([level, obj, msg]);
  }
  const outboxLines = () => lines.filter(([, , msg]) => msg.startsWith('outbox'));

  await servers.nats.stop();
  await until(() => !hub.bus.publisher.isConnected);
  const started = Date.now();
  const sent = [];
  for (let i = 0; i < 5; i++) sent.push((await hub.chat.sendMessage(a, conversation.id, { text: `offline ${i}`, clientId: `c${i}` })).message);
  t.true(Date.now() - started < 5000, 'sends do not wait for NATS');
  t.deepEqual(
    sent.map((m) => m.seq),
    [1, 2, 3, 4, 5],
  );
  t.is(await hub.store.outboxCount(), 5, 'committed events wait in the outbox');

  await new Promise((r) => setTimeout(r, 500)); // several sweep ticks (100 ms) of the outage
  t.deepEqual(
    outboxLines().map(([level, , msg]) => [level, msg.split(';')[0]]),
    [['warn', 'outbox: NATS is not taking events']],
    'one warning for the outage, not one per pass',
  );

  await servers.nats.start();
  await until(async () => (await hub.store.outboxCount()) === 0, 30_000);
  await until(() => outboxLines().length === 2);
  const [level, fields, line] = outboxLines()[1]!;
  t.is(level, 'info');
  t.regex(line, /^outbox caught up/);
  t.true(Number(fields.republished) >= 5, `republished ${String(fields.republished)}`);
  const msgs = await readStream(hub);
  const created = msgs
    .map((m) => JSON.parse(new TextDecoder().decode(m.data)) as { id: string; type: string; data: { message: { seq: number } } })
    .filter((e) => e.type === 'message.created');
  t.deepEqual(created.map((e) => e.data.message.seq).sort(), [1, 2, 3, 4, 5]);
  t.is(new Set(created.map((e) => e.id)).size, 5, 'each event once');
  // Republishing again (as a crashed sweeper would) is deduplicated by Nats-Msg-Id.
  const msg = msgs.find((m) => m.header?.get('Nats-Msg-Id') === created[0]!.id);
  t.truthy(msg, 'Nats-Msg-Id carries the event id');
  await closeHub(hub);
});

test.serial('committed data and unpublished events survive a restart of the hub', async (t) => {
  const config = testConfig(servers);
  let hub = await openHub(config, { name: 'restart-1' });
  const a = user('usr_c', config.defaultWorkspaceId);
  const b = user('usr_d', config.defaultWorkspaceId);
  await hub.store.createUser(a, () => []);
  await hub.store.createUser(b, () => []);
  const { conversation } = await hub.chat.openConversation(a, { type: 'direct', members: [b.id] });
  await hub.chat.sendMessage(a, conversation.id, { text: 'before restart', clientId: 'r1' });
  // Leave one event unpublished: stop NATS, send, then stop the hub before NATS returns.
  await servers.nats.stop();
  await until(() => !hub.bus.publisher.isConnected);
  const pending = await hub.chat.sendMessage(a, conversation.id, { text: 'sent during outage', clientId: 'r2' });
  await hub.outbox.stop();
  hub.bus.publisher.close();
  hub.bus.nc.close().catch(() => undefined);
  hub.redis?.disconnect();
  await hub.store.close();
  await servers.nats.start();

  hub = await openHub(config, { name: 'restart-2' });
  const history = await hub.chat.history(a, conversation.id, { limit: 10 });
  t.deepEqual(
    history.messages.map((m) => m.text),
    ['before restart', 'sent during outage'],
  );
  const again = await hub.chat.sendMessage(a, conversation.id, { text: 'ignored', clientId: 'r2' });
  t.false(again.created, 'clientId idempotency survives the restart');
  t.is(again.message.id, pending.message.id);
  await until(async () => (await hub.store.outboxCount()) === 0, 30_000);
  const events = (await readStream(hub)).map((m) => JSON.parse(new TextDecoder().decode(m.data)) as { type: string; data: { message?: { text: string } } });
  t.true(events.some((e) => e.type === 'message.created' && e.data.message?.text === 'sent during outage'));
  await closeHub(hub);
});

/** The seqs of message.created events in one conversation, in stream order. */
async function streamSeqs(hub: Awaited<ReturnType<typeof openHub>>, conversationId: string): Promise<number[]> {
  return (await readStream(hub))
    .map((m) => JSON.parse(new TextDecoder().decode(m.data)) as { type: string; conversationId?: string; data: { message: { seq: number } } })
    .filter((e) => e.type === 'message.created' && e.conversationId === conversationId)
    .map((e) => e.data.message.seq);
}

test.serial('events reach the stream in commit order: sends after NATS returns do not overtake those it missed', async (t) => {
  // A long grace: the old relay left the missed events for the sweeper that long, while new ones went straight out.
  const config = testConfig(servers, { publishAckWaitMs: 300, outboxGraceMs: 10_000, outboxSweepMs: 100 });
  const hub = await openHub(config, { name: 'outbox-order' });
  t.teardown(() => closeHub(hub));
  const { a, conversation } = await pair(hub, ['usr_e', 'usr_f']);
  await hub.chat.sendMessage(a, conversation.id, { text: 'first' });
  await until(async () => (await hub.store.outboxCount()) === 0);

  await servers.nats.stop();
  await until(() => !hub.bus.publisher.isConnected);
  for (let i = 0; i < 3; i++) await hub.chat.sendMessage(a, conversation.id, { text: `missed ${i}` });
  await servers.nats.start();
  await until(() => hub.bus.publisher.isConnected, 30_000);
  // Right after the reconnect, well inside the grace.
  for (let i = 0; i < 3; i++) await hub.chat.sendMessage(a, conversation.id, { text: `after ${i}` });

  await until(async () => (await hub.store.outboxCount()) === 0, 30_000);
  t.deepEqual(await streamSeqs(hub, conversation.id), [1, 2, 3, 4, 5, 6, 7]);
  // Caught up: sends are published directly again.
  await until(() => !hub.outbox.isBehind);
  await hub.chat.sendMessage(a, conversation.id, { text: 'later' });
  await until(async () => (await streamSeqs(hub, conversation.id)).length === 8);
  t.deepEqual(await streamSeqs(hub, conversation.id), [1, 2, 3, 4, 5, 6, 7, 8]);
  t.false(hub.outbox.isBehind);
});

test.serial('while NATS is down a send does not wait publishAckWaitMs for an ack that cannot come', async (t) => {
  // Before, a stored event dispatched while NATS was down waited for the relay to catch up (possibly forever,
  // one pending promise per send held by the relay), so every send took the whole ack wait.
  const config = testConfig(servers, { publishAckWaitMs: 5000, outboxSweepMs: 100 });
  const hub = await openHub(config, { name: 'outbox-down-wait' });
  t.teardown(() => closeHub(hub));
  const { a, conversation } = await pair(hub, ['usr_g', 'usr_h']);
  await until(() => !hub.outbox.isBehind);

  await servers.nats.stop();
  await until(() => !hub.bus.publisher.isConnected);
  const started = Date.now();
  for (let i = 0; i < 3; i++) await hub.chat.sendMessage(a, conversation.id, { text: `down ${i}` });
  t.true(Date.now() - started < 4000, `3 sends took ${Date.now() - started} ms`);
  t.true(hub.outbox.isBehind);

  await servers.nats.start();
  await until(() => hub.bus.publisher.isConnected, 30_000);
  await until(async () => (await hub.store.outboxCount()) === 0, 30_000);
  await until(() => !hub.outbox.isBehind);
  t.deepEqual(await streamSeqs(hub, conversation.id), [1, 2, 3]);
});

test.serial('with NATS frozen (connected, not answering), sends stop waiting for acks once a drain pass has failed', async (t) => {
  // The ack wait is long on purpose: each send would take all of it while NATS does not answer.
  const config = testConfig(servers, { publishAckWaitMs: 10_000, outboxSweepMs: 100 });
  const hub = await openHub(config, { name: 'outbox-frozen' });
  t.teardown(async () => {
    servers.nats.thaw();
    await closeHub(hub);
  });
  const { a, conversation } = await pair(hub, ['usr_i', 'usr_j']);
  await until(() => !hub.outbox.isBehind);

  servers.nats.freeze();
  // The first send after the freeze is published directly and waits; its publish times out and the drain's does too.
  void hub.chat.sendMessage(a, conversation.id, { text: 'into the freeze' });
  await until(() => hub.outbox.isFailing, 60_000);
  for (let i = 0; i < 3; i++) {
    const started = Date.now();
    const { message } = await hub.chat.sendMessage(a, conversation.id, { text: `frozen ${i}` });
    t.is(message.seq, i + 2);
    t.true(Date.now() - started < 3000, `send ${i} took ${Date.now() - started} ms`);
  }
  servers.nats.thaw();
  await until(async () => (await hub.store.outboxCount()) === 0 && !hub.outbox.isBehind, 60_000);
  t.deepEqual(await streamSeqs(hub, conversation.id), [1, 2, 3, 4]);
  t.false(hub.outbox.isFailing);
});
