import test from 'ava';
import { runCli } from '../helpers/cli.js';
import type { Conversation, Message } from '../../core/domain.js';
import { createEvent, type AnyEvent } from '../../core/events/catalog.js';
import { FACTS_COLLECTION, recordSent, type Fact } from '../../plugins/analytics/facts.js';
import { createAnalyticsPlugin } from '../../plugins/analytics/index.js';
import { buildReport, percentile } from '../../plugins/analytics/report.js';
import type { Plugin } from '../../plugins/runtime/types.js';
import { serversForFile } from '../helpers/hub.js';
import { assertInvalid, bearer, createUser, openPluginApi, type PluginApi } from '../notifications/support.js';

const servers = serversForFile();

const info = { attempt: 1, streamSeq: 1, subject: 'x' };
const actor = (id: string) => ({ type: 'user' as const, id });

function conversation(id: string, at: string, members: string[], workspaceId = 'w1'): AnyEvent {
  const c: Conversation = { id, workspaceId, type: 'direct', title: null, members, createdBy: members[0]!, createdAt: at, updatedAt: at, lastSeq: 0 };
  return createEvent('conversation.created', { workspaceId, conversationId: id, actor: actor(members[0]!), data: { conversation: c }, time: at });
}
function message(conversationId: string, seq: number, senderId: string, at: string, workspaceId = 'w1'): AnyEvent {
  const m: Message = { id: `msg_${conversationId}_${seq}`, conversationId, seq, senderId, text: 'hi', clientId: null, createdAt: at };
  return createEvent('message.created', { workspaceId, conversationId, actor: actor(senderId), data: { message: m }, time: at });
}
function delivered(conversationId: string, at: string, transport?: 'socketio' | 'ws'): AnyEvent {
  const data = { conversationId, userId: 'cust1', seq: 1, ...(transport ? { transport } : {}) };
  return createEvent('message.delivered', { workspaceId: 'w1', conversationId, actor: actor('cust1'), data, time: at });
}

/**
 * A known sequence over two days (see the expected numbers in the test below).
 * agent1 = agent, admin1 = admin (answers like an agent), cust1/cust2 = customers.
 */
function knownEvents(): AnyEvent[] {
  return [
    conversation('cnv_1', '2025-03-01T09:00:00.000Z', ['cust1', 'agent1']),
    conversation('cnv_2', '2025-03-01T10:00:00.000Z', ['cust2', 'admin1']),
    message('cnv_1', 1, 'cust1', '2025-03-01T09:00:00.000Z'),
    message('cnv_1', 2, 'cust1', '2025-03-01T09:01:00.000Z'), // same turn: does not restart it
    message('cnv_1', 3, 'agent1', '2025-03-01T09:05:00.000Z'), // 5 min
    message('cnv_1', 4, 'agent1', '2025-03-01T09:06:00.000Z'), // not a first response
    message('cnv_1', 5, 'cust1', '2025-03-01T09:10:00.000Z'),
    message('cnv_1', 6, 'agent1', '2025-03-01T09:12:00.000Z'), // 2 min
    message('cnv_2', 1, 'cust2', '2025-03-01T10:00:00.000Z'),
    message('cnv_2', 2, 'admin1', '2025-03-01T10:00:30.000Z'), // 30 s
    message('cnv_1', 7, 'cust1', '2025-03-01T23:30:00.000Z'),
    message('cnv_1', 8, 'agent1', '2025-03-02T00:10:00.000Z'), // 40 min, counts on the 2nd (day of the reply)
    conversation('cnv_3', '2025-03-02T08:00:00.000Z', ['cust2', 'agent1']),
    message('cnv_3', 1, 'cust2', '2025-03-02T08:00:00.000Z'),
    message('cnv_3', 2, 'cust2', '2025-03-02T08:01:00.000Z'),
    message('cnv_3', 3, 'agent1', '2025-03-02T08:02:00.000Z'), // 2 min
    delivered('cnv_3', '2025-03-02T08:00:01.000Z', 'socketio'),
    delivered('cnv_3', '2025-03-02T08:01:01.000Z', 'socketio'),
    delivered('cnv_3', '2025-03-02T08:02:01.000Z', 'ws'),
    delivered('cnv_3', '2025-03-02T08:03:01.000Z'),
    // Another workspace: must not leak into w1's numbers.
    conversation('cnv_9', '2025-03-01T09:00:00.000Z', ['x1', 'x2'], 'w2'),
    message('cnv_9', 1, 'x1', '2025-03-01T09:00:00.000Z', 'w2'),
  ];
}

const EXPECTED_DAY1 = {
  day: '2025-03-01',
  messages: 9,
  activeUsers: 4,
  conversationsOpened: 2,
  firstResponse: { count: 3, medianMs: 120_000, p90Ms: 300_000 },
  deliveries: {},
  pushesSent: 0,
  emailsSent: 0,
};
const EXPECTED_DAY2 = {
  day: '2025-03-02',
  messages: 4,
  activeUsers: 2,
  conversationsOpened: 1,
  firstResponse: { count: 2, medianMs: 120_000, p90Ms: 2_400_000 },
  deliveries: { socketio: 2, ws: 1, unknown: 1 },
  pushesSent: 2,
  emailsSent: 1,
};
const EXPECTED_DAY3 = { day: '2025-03-03', messages: 0, activeUsers: 0, conversationsOpened: 0, firstResponse: { count: 0, medianMs: null, p90Ms: null }, deliveries: {}, pushesSent: 0, emailsSent: 0 };

/** Deterministic shuffle so the test is repeatable yet not in publish order. */
function shuffled<T>(xs: T[]): T[] {
  const out = [...xs];
  let s = 42;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

async function seedUsers(api: PluginApi): Promise<void> {
  await createUser(api.hub.store, { id: 'agent1', role: 'agent' });
  await createUser(api.hub.store, { id: 'admin1', role: 'admin' });
  await createUser(api.hub.store, { id: 'cust1', role: 'customer' });
  await createUser(api.hub.store, { id: 'cust2', role: 'customer' });
}

async function feed(plugin: Plugin, events: AnyEvent[]): Promise<void> {
  for (const e of events) await plugin.handle(e, info);
}

test('nearest-rank percentiles', (t) => {
  t.is(percentile([], 0.5), null);
  t.is(percentile([7], 0.9), 7);
  t.is(percentile([1, 2, 3, 4], 0.5), 2);
  t.is(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9), 9);
  t.is(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 0.9), 10);
});

test('numbers match a known event sequence, out of order and redelivered, and survive a replay and a rebuild', async (t) => {
  const plugin = createAnalyticsPlugin();
  const api = await openPluginApi(servers, [plugin]);
  try {
    await seedUsers(api);
    const events = knownEvents();
    // Out of order and every event twice (at-least-once delivery).
    await feed(plugin, shuffled([...events, ...events]));
    await recordSent(api.hub.store.docs, 'push', { workspaceId: 'w1', key: 'evt_a:dev1', at: '2025-03-02T08:00:02.000Z' });
    await recordSent(api.hub.store.docs, 'push', { workspaceId: 'w1', key: 'evt_a:dev2', at: '2025-03-02T08:00:02.000Z' });
    await recordSent(api.hub.store.docs, 'push', { workspaceId: 'w1', key: 'evt_a:dev2', at: '2025-03-02T08:00:03.000Z' }); // a retry of the same send
    await recordSent(api.hub.store.docs, 'email', { workspaceId: 'w1', key: 'digest:cust1:1', at: '2025-03-02T09:00:00.000Z' });

    const report = await buildReport(api.hub.store.docs, 'w1', '2025-03-01', '2025-03-03');
    t.deepEqual(report.days, [EXPECTED_DAY1, EXPECTED_DAY2, EXPECTED_DAY3]);
    t.deepEqual(report.totals, {
      messages: 13,
      activeUsers: 4,
      conversationsOpened: 3,
      // Samples 30 s, 2 min, 2 min, 5 min, 40 min.
      firstResponse: { count: 5, medianMs: 120_000, p90Ms: 2_400_000 },
      deliveries: { socketio: 2, ws: 1, unknown: 1 },
      pushesSent: 2,
      emailsSent: 1,
    });
    const other = await buildReport(api.hub.store.docs, 'w2', '2025-03-01', '2025-03-01');
    t.is(other.days[0]!.messages, 1);
    t.is(other.days[0]!.conversationsOpened, 1);

    // A rewind replays everything through a fresh plugin instance: nothing changes.
    const replayed = createAnalyticsPlugin();
    await replayed.start!({ hub: api.hub, log: api.hub.log });
    await feed(replayed, events);
    t.deepEqual(await buildReport(api.hub.store.docs, 'w1', '2025-03-01', '2025-03-03'), report);

    // Rebuild: the message and conversation facts are thrown away and a rewind recreates the same numbers.
    const facts = await api.hub.store.docs.find<Fact & { kind: string }>(FACTS_COLLECTION, {});
    let removed = 0;
    for (const f of facts) {
      if (f.kind === 'message') removed += Number(await api.hub.store.docs.delete(FACTS_COLLECTION, `m:${(f as { conversationId: string }).conversationId}:${(f as { seq: number }).seq}`));
      if (f.kind === 'conversation') removed += Number(await api.hub.store.docs.delete(FACTS_COLLECTION, `c:${(f as { conversationId: string }).conversationId}`));
    }
    t.is(removed, 13 + 3 + 2); // w1's and w2's messages and conversations
    t.is((await buildReport(api.hub.store.docs, 'w1', '2025-03-01', '2025-03-03')).totals.messages, 0);
    await feed(replayed, shuffled(events));
    t.deepEqual(await buildReport(api.hub.store.docs, 'w1', '2025-03-01', '2025-03-03'), report);
  } finally {
    await api.close();
  }
});

test('GET /v1/analytics: agents and admins of the workspace only, dates validated', async (t) => {
  const plugin = createAnalyticsPlugin();
  const api = await openPluginApi(servers, [plugin]);
  try {
    const agent = await api.register('Agent', 'agent');
    const admin = await api.register('Admin', 'admin');
    const customer = await api.register('Cust');
    const ws = api.hub.config.defaultWorkspaceId;
    // Real traffic through the chat API, so the events carry real ids and times.
    const conv = await api.http.post('/v1/conversations').set(...bearer(customer)).send({ type: 'direct', members: [agent.id] });
    t.is(conv.status, 201);
    const convId = conv.body.conversation.id as string;
    for (const [who, text] of [[customer, 'help'], [agent, 'hello']] as const) {
      const r = await api.http.post(`/v1/conversations/${convId}/messages`).set(...bearer(who)).send({ text });
      t.is(r.status, 201);
      await plugin.handle(message(convId, r.body.message.seq, who.id, r.body.message.createdAt, ws), info);
    }
    await plugin.handle(conversation(convId, conv.body.conversation.createdAt, [customer.id, agent.id], ws), info);
    const today = new Date().toISOString().slice(0, 10);

    const res = await api.http.get(`/v1/analytics?from=${today}&to=${today}`).set(...bearer(agent));
    t.is(res.status, 200);
    t.is(res.body.workspaceId, ws);
    t.like(res.body.days[0], { day: today, messages: 2, activeUsers: 2, conversationsOpened: 1 });
    t.is(res.body.days[0].firstResponse.count, 1);
    t.is((await api.http.get('/v1/analytics').set(...bearer(admin))).body.days.length, 30); // default: the last 30 days
    const params = (await api.http.get('/v1/openapi.json')).body.paths['/v1/analytics'].get.parameters as Array<{ name: string; description?: string }>;
    t.regex(params.find((p) => p.name === 'from')?.description ?? '', /Default: 29 days before `to`/, 'openapi.json says what the default range is');
    t.regex(params.find((p) => p.name === 'to')?.description ?? '', /Default: today/);

    t.is((await api.http.get('/v1/analytics').set(...bearer(customer))).status, 403);
    t.is((await api.http.get('/v1/analytics')).status, 401);
    for (const q of ['from=2025-13-01', 'from=yesterday', 'from=2025-02-30', 'from=2025-03-02&to=2025-03-01', 'from=2020-01-01&to=2025-01-01', 'from[x]=1', 'bogus=1']) {
      const bad = await api.http.get(`/v1/analytics?${q}`).set(...bearer(admin));
      t.is(bad.status, 400, q);
      t.is(bad.body.error.code, 'VALIDATION_FAILED', q);
    }
    assertInvalid(t, await api.http.get('/v1/analytics').set(...bearer(admin)).send({ a: 1 }), 'body.a', 'a body on GET');
    assertInvalid(t, await api.http.get(`/v1/analytics?from=${today}&from=${today}`).set(...bearer(admin)), 'query.from', 'repeated from');
    assertInvalid(t, await api.http.get('/v1/analytics?bogus=1').set(...bearer(admin)), 'query.bogus', 'unknown parameter');
    const route = (await api.http.get('/v1/openapi.json')).body.paths['/v1/analytics']?.get;
    t.deepEqual(route?.parameters.map((p: { name: string }) => p.name), ['from', 'to']);
    t.truthy(route?.responses['200'].content['application/json'].schema.properties.days);
  } finally {
    await api.close();
  }
});

test('voxa analytics --json prints the same report; bad dates exit 2', async (t) => {
  const plugin = createAnalyticsPlugin();
  const api = await openPluginApi(servers, [plugin]);
  try {
    await seedUsers(api);
    await feed(plugin, knownEvents());
    const env: NodeJS.ProcessEnv = { ...process.env, VOXA_DATA_DIR: api.hub.config.dataDir, LOG_LEVEL: 'silent' };
    delete env.MONGO_URL;
    delete env.VOXA_CONFIG;
    const out = await runCli(env, ['analytics', '--from', '2025-03-01', '--to', '2025-03-02', '--workspace', 'w1', '--json']);
    t.is(out.code, 0, out.stderr);
    const report = JSON.parse(out.stdout);
    t.deepEqual(report.days[0], EXPECTED_DAY1);
    t.is(report.days[1].firstResponse.p90Ms, 2_400_000);
    const err = await runCli(env, ['analytics', '--from', '2025-03-05', '--to', '2025-03-01']);
    t.is(err.code, 2);
    t.regex(err.stderr, /from/);
  } finally {
    await api.close();
  }
});

test('through the runtime: figures from live traffic, rebuilt by a rewind after the facts are lost, not doubled by a second rewind', async (t) => {
  const { connectAdmin, rewindPlugin } = await import('../../plugins/runtime/admin.js');
  const { consumerName } = await import('../../plugins/runtime/control.js');
  const plugin = createAnalyticsPlugin();
  const api = await openPluginApi(servers, [plugin], {}, { runtime: true });
  const admin = await connectAdmin(api.hub.config.natsUrl!, api.hub.bus.namespace);
  try {
    const agent = await api.register('Agent', 'agent');
    const customer = await api.register('Cust');
    const ws = api.hub.config.defaultWorkspaceId;
    const conv = await api.http.post('/v1/conversations').set(...bearer(customer)).send({ type: 'direct', members: [agent.id] });
    const convId = conv.body.conversation.id as string;
    for (const [who, text] of [[customer, 'help'], [customer, 'please'], [agent, 'hello'], [customer, 'thanks'], [agent, 'welcome']] as const) {
      t.is((await api.http.post(`/v1/conversations/${convId}/messages`).set(...bearer(who)).send({ text })).status, 201);
    }
    const today = new Date().toISOString().slice(0, 10);
    const report = () => buildReport(api.hub.store.docs, ws, today, today);
    const live = await eventuallyReport(report, (r) => r.days[0]!.messages === 5 && r.days[0]!.conversationsOpened === 1 && r.days[0]!.firstResponse.count === 2);
    t.is(live.days[0]!.activeUsers, 2);

    // Drained: the current consumer has nothing pending or unacknowledged.
    const drained = async (generation: number) => {
      const info = await api.hub.bus.jsm.consumers.info(api.hub.bus.streams.events, consumerName('analytics', generation)).catch(() => null);
      return info !== null && info.num_pending === 0 && info.num_ack_pending === 0 && info.delivered.stream_seq > 0;
    };
    // The facts are lost; a rewind to the start of the stream rebuilds exactly the same figures.
    for (const f of await api.hub.store.docs.find<{ kind: string; conversationId?: string; seq?: number }>(FACTS_COLLECTION, {})) {
      if (f.kind === 'message') await api.hub.store.docs.delete(FACTS_COLLECTION, `m:${f.conversationId}:${f.seq}`);
    }
    t.is((await report()).days[0]!.messages, 0);
    const first = await rewindPlugin(admin, 'analytics', 1);
    await eventuallyReport(report, (r) => r.days[0]!.messages === 5);
    t.deepEqual(await report(), live);

    // Another rewind over facts that are all there changes nothing.
    const second = await rewindPlugin(admin, 'analytics', 1);
    t.true(second.generation > first.generation);
    await eventuallyReport(report, async () => drained(second.generation));
    t.deepEqual(await report(), live);
  } finally {
    await admin.nc.close();
    await api.close();
  }
});

async function eventuallyReport<R>(get: () => Promise<R>, ok: (r: R) => boolean | Promise<boolean>): Promise<R> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const r = await get();
    if (await ok(r)) return r;
    if (Date.now() > deadline) throw new Error(`report never matched: ${JSON.stringify(r)}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}
