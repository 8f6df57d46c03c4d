/**
 * The scale-out setup of docs/scale-out.md on loopback: a three-node NATS cluster started from the shipped
 * deploy/nats-cluster/node.conf, hubs with VOXA_NATS_REPLICAS=3, and two edges on different nodes.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import type { ManagedServer } from '../helpers/servers.js';
import { startNatsCluster, startRedis, uniqueNamespace, type NatsCluster } from '../helpers/servers.js';
import { openControl } from '../../plugins/runtime/control.js';
import { bearer, openApiHub, streamEvents } from '../api/support.js';
import { eventually, group, makeUser, openEdgeHub, seqsOf, sioClient, sleep, wsClient } from '../edge/support.js';

let cluster: NatsCluster;
let redis: ManagedServer;

test.before(async () => {
  [cluster, redis] = await Promise.all([startNatsCluster(3), startRedis()]);
});
test.after.always(async () => {
  await Promise.all([cluster?.dispose(), redis?.dispose()]);
});

/** TestServers for the helpers; natsUrl is always given as an override, so `nats` only fills the shape. */
const servers = () => ({ nats: cluster.nodes[0]!, redis });

test.serial('streams and the runtime bucket are declared with three replicas; edges on different nodes deliver to each other in order', async (t) => {
  const shared = { dataDir: mkdtempSync(join(tmpdir(), 'voxa-cluster-')), natsNamespace: uniqueNamespace('cl'), natsReplicas: 3 };
  // Each edge talks to one node only, so everything between them crosses the cluster's routes.
  const e1 = await openEdgeHub(servers(), { ...shared, natsUrl: cluster.nodes[0]!.url });
  const e2 = await openEdgeHub(servers(), { ...shared, natsUrl: cluster.nodes[1]!.url });
  try {
    t.is(e1.hub.bus.replicas, 3);
    for (const name of Object.values(e1.hub.bus.streams)) {
      const info = await e1.hub.bus.jsm.streams.info(name);
      t.is(info.config.num_replicas, 3, name);
      t.is(info.cluster?.replicas?.length, 2, `${name}: a leader and two followers`);
    }
    const kv = await openControl(e1.hub.bus.js, e1.hub.bus.namespace, e1.hub.bus.replicas);
    t.is((await kv.status()).replicas, 3);

    const [alice, bob] = await Promise.all([makeUser(e1.hub, 'Alice'), makeUser(e1.hub, 'Bob')]);
    const conv = await group(e1.hub, alice, [bob]);
    const a = await sioClient(e1.url, alice.token);
    const b = await wsClient(e2.url, bob.token);
    await sleep(500);
    for (let i = 0; i < 10; i++) {
      const from = i % 2 ? b : a;
      const ack = await from.request('send-message', { conversationId: conv.id, text: `m${i}`, clientId: `c${i}` });
      t.true(ack.ok, JSON.stringify(ack));
    }
    const all = Array.from({ length: 10 }, (_, i) => i + 1);
    await eventually(() => seqsOf(a, conv.id).length === 10 && seqsOf(b, conv.id).length === 10, 15_000, 'both sides got all ten');
    t.deepEqual(seqsOf(a, conv.id), all);
    t.deepEqual(seqsOf(b, conv.id), all);
    a.close();
    b.close();
  } finally {
    await e2.close();
    await e1.close();
    rmSync(shared.dataDir, { recursive: true, force: true });
  }
});

test.serial('losing the node that leads the events stream: every send is still accepted and each event is in the stream once', async (t) => {
  const api = await openApiHub(servers(), { natsUrl: cluster.url, natsReplicas: 3, natsNamespace: uniqueNamespace('cl') });
  const events = api.hub.bus.streams.events;
  let stopped: (ManagedServer & { name: string }) | undefined;
  try {
    const a = await api.register('Ada');
    const b = await api.register('Ben');
    const conv = await api.http.post('/v1/conversations').set(...bearer(a)).send({ type: 'direct', members: [b.id] });
    const id = conv.body.conversation.id as string;
    const send = async (i: number) => {
      const r = await api.http.post(`/v1/conversations/${id}/messages`).set(...bearer(a)).send({ text: `n${i}`, clientId: `k${i}` });
      t.is(r.status, 201, JSON.stringify(r.body));
    };
    for (let i = 0; i < 10; i++) await send(i);

    const leader = (await api.hub.bus.jsm.streams.info(events)).cluster?.leader;
    stopped = cluster.nodes.find((n) => n.name === leader);
    t.truthy(stopped, `the stream leader ${leader} is one of ours`);
    await stopped!.stop(true); // kill -9

    // Sends go on at once: the store takes them, the outbox publishes when the cluster has a new leader.
    for (let i = 10; i < 30; i++) await send(i);

    // JetStream API calls time out while the cluster elects a new leader: such a look is "not yet".
    const created = async () => (await streamEvents(api.hub)).filter((e) => e.event.type === 'message.created');
    await eventually(async () => (await created().catch(() => [])).length >= 30, 60_000, 'all thirty message.created in the stream');
    const msgs = await created();
    t.is(msgs.length, 30, 'no event twice');
    t.is(new Set(msgs.map((m) => m.msgId)).size, 30);
    t.deepEqual(
      msgs.map((m) => (m.event.data as { message: { seq: number } }).message.seq).sort((x, y) => x - y),
      Array.from({ length: 30 }, (_, i) => i + 1),
    );
    const info = await api.hub.bus.jsm.streams.info(events);
    t.not(info.cluster?.leader, leader, 'a surviving node leads now');

    // The node comes back and catches up as a follower.
    await stopped!.start();
    stopped = undefined;
    await eventually(
      async () => {
        const i = await api.hub.bus.jsm.streams.info(events).catch(() => null);
        return !!i && (i.cluster?.replicas ?? []).length === 2 && (i.cluster?.replicas ?? []).every((r) => r.current && !r.offline);
      },
      60_000,
      'the restarted node is a current follower again',
    );
    t.pass();
  } finally {
    await stopped?.start().catch(() => undefined);
    await api.close();
  }
});
