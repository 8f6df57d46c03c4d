import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { serversForFile } from '../helpers/hub.js';
import { uniqueNamespace } from '../helpers/servers.js';
import { eventually, group, makeUser, openEdgeHub, seqsOf, sioClient, sleep, spawnEdge, wsClient, type TestClient } from './support.js';

const servers = serversForFile();

/** Two hubs on one SQLite file (WAL) and one NATS namespace: two edges of one deployment. */
function shared() {
  return { dataDir: mkdtempSync(join(tmpdir(), 'voxa-edge-')), natsNamespace: uniqueNamespace('e') };
}

test('two edge processes: clients on each chat with each other, in order, both transports', async (t) => {
  const cfg = shared();
  const e1 = await openEdgeHub(servers, cfg);
  const e2 = await openEdgeHub(servers, cfg);
  try {
    const [alice, bob] = await Promise.all([makeUser(e1.hub, 'Alice'), makeUser(e1.hub, 'Bob')]);
    const conv = await group(e1.hub, alice, [bob]);
    const a = await sioClient(e1.url, alice.token);
    const b = await wsClient(e2.url, bob.token);
    const b2 = await sioClient(e1.url, bob.token); // bob's second device, on the other edge
    await sleep(800);
    // Interleaved sends from both sides.
    await Promise.all([
      (async () => {
        for (let i = 0; i < 15; i++) await a.request('send-message', { conversationId: conv.id, text: `a${i}` });
      })(),
      (async () => {
        for (let i = 0; i < 15; i++) await b.request('send-message', { conversationId: conv.id, text: `b${i}` });
      })(),
    ]);
    const all = Array.from({ length: 30 }, (_, i) => i + 1);
    for (const c of [a, b, b2]) await eventually(() => seqsOf(c, conv.id).length === 30, 15_000, 'all delivered');
    t.deepEqual(seqsOf(a, conv.id), all);
    t.deepEqual(seqsOf(b, conv.id), all);
    t.deepEqual(seqsOf(b2, conv.id), all);
    // Typing crosses edges too.
    await b.request('typing', { conversationId: conv.id });
    await eventually(() => a.of('typing').some((d) => d.userId === bob.user.id), 10_000, 'typing across edges');
    for (const c of [a, b, b2]) c.close();
  } finally {
    await e2.close();
    await e1.close();
    rmSync(cfg.dataDir, { recursive: true, force: true });
  }
});

test('kill -9 of an edge under a stream of sends: clients resume on the survivor, nothing lost, nothing twice', async (t) => {
  const cfg = shared();
  const survivor = await openEdgeHub(servers, cfg);
  const { child, url } = await spawnEdge(servers, survivor.hub, cfg);
  try {
    const [alice, bob, carol] = await Promise.all([makeUser(survivor.hub, 'Alice'), makeUser(survivor.hub, 'Bob'), makeUser(survivor.hub, 'Carol')]);
    const conv = await group(survivor.hub, alice, [bob, carol]);
    const sender = await wsClient(survivor.url, alice.token);
    // Two receivers on the doomed edge, one per transport.
    const victims: Array<{ name: string; token: string; sio: boolean; first: TestClient }> = [
      { name: 'bob', token: bob.token, sio: false, first: await wsClient(url, bob.token) },
      { name: 'carol', token: carol.token, sio: true, first: await sioClient(url, carol.token) },
    ];
    await sleep(800);
    let stop = false;
    let sent = 0;
    const stream = (async () => {
      while (!stop) {
        const ack = await sender.request('send-message', { conversationId: conv.id, text: `n${sent}`, clientId: `k${sent}` });
        if (ack.ok) sent++;
        await sleep(3);
      }
    })();
    await eventually(() => victims.every((v) => seqsOf(v.first, conv.id).length >= 20), 15_000, 'stream flowing');
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    // Clients notice, reconnect to the surviving edge and resume from the last seq they saw.
    const seconds: TestClient[] = [];
    for (const v of victims) {
      await v.first.closed;
      const seen = seqsOf(v.first, conv.id);
      const cursor = seen.at(-1) ?? 0;
      const c = v.sio ? await sioClient(survivor.url, v.token) : await wsClient(survivor.url, v.token);
      const ack = await c.request('resume', { cursors: { [conv.id]: cursor } });
      t.true(ack.ok);
      seconds.push(c);
    }
    await sleep(300);
    stop = true;
    await stream;
    const last = (await survivor.hub.store.getConversation(conv.id))!.lastSeq;
    t.true(last >= 25);
    for (let i = 0; i < victims.length; i++) {
      const v = victims[i]!;
      const c = seconds[i]!;
      await eventually(() => seqsOf(c, conv.id).at(-1) === last, 15_000, `${v.name} caught up`);
      const all = [...seqsOf(v.first, conv.id), ...seqsOf(c, conv.id)];
      t.deepEqual(all, Array.from({ length: last }, (_, k) => k + 1), `${v.name}: every message once, in order`);
      c.close();
    }
    sender.close();
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await survivor.close();
    rmSync(cfg.dataDir, { recursive: true, force: true });
  }
});
