/**
 * The marketer's CLI driven as a subprocess against a live hub (real NATS, Redis, SQLite): webhooks add/list/
 * test/deliveries/redeliver, connections list/add/backfill, errors and exit codes, completion.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { createEvent, subjectOf } from '../../core/events/catalog.js';
import { ConnectorQueues } from '../../connectors/queues.js';
import { DELIVERIES, DELIVERY_KEYS, WebhookService } from '../../plugins/webhooks/service.js';
import { AUDIT_COLLECTION, type AuditEntry } from '../../plugins/audit/chain.js';
import { createAuditPlugin } from '../../plugins/audit/index.js';
import { PluginRuntime } from '../../plugins/runtime/runtime.js';
import type { Hub } from '../../core/hub.js';
import { openTestHub, startServers, type TestServers } from '../helpers/hub.js';
import { startReceiver, until, type Receiver } from './receiver.js';
import { runCli, type CliResult } from '../helpers/cli.js';
import { cliEnv } from './cli-proc.js';

let servers: TestServers & { dispose(): Promise<void> };
let hub: Hub & { close(): Promise<void> };
let rcv: Receiver;
let queues: ConnectorQueues;
const logs: string[] = [];

test.before(async () => {
  servers = await startServers();
  hub = await openTestHub(servers, { webhooksAllowPrivate: true });
  rcv = await startReceiver();
  // The hub side: a webhook worker on the same namespace, as `voxa start` would run it.
  queues = new ConnectorQueues(hub);
  new WebhookService(hub, queues, { scheduleMs: [50, 100], retryWindowMs: 3600_000, jitter: 0 }).startWorker();
});
test.after.always(async () => {
  await queues?.close();
  await rcv?.close();
  await hub?.close();
  await servers?.dispose();
});

function env(): NodeJS.ProcessEnv {
  return cliEnv(servers, hub, { VOXA_WEBHOOKS_ALLOW_PRIVATE: '1' });
}

function voxa(...args: string[]): Promise<CliResult> {
  return voxaWith(env(), ...args);
}

/** Runs the CLI; everything it printed is kept in `logs` (to prove a secret is shown once). */
async function voxaWith(childEnv: NodeJS.ProcessEnv, ...args: string[]): Promise<CliResult> {
  const r = await runCli(childEnv, args);
  logs.push(r.stdout, r.stderr);
  return r;
}

test.serial('webhooks add prints the id and secret once; list, test, deliveries and redeliver work; the secret never shows again', async (t) => {
  const add = await voxa('webhooks', 'add', '--url', rcv.url, '--events', 'message.created,message.updated', '--json');
  t.is(add.code, 0, add.stderr);
  const created = JSON.parse(add.stdout) as { id: string; secret: string };
  t.regex(created.secret, /^whsec_/);
  rcv.secret = created.secret;

  const list = await voxa('webhooks', 'list', '--json');
  t.is(list.code, 0, list.stderr);
  const { webhooks } = JSON.parse(list.stdout) as { webhooks: Array<{ id: string; status: string }> };
  t.deepEqual(webhooks.map((w) => w.id), [created.id]);
  t.false(list.stdout.includes(created.secret.slice(6)), 'list does not print the secret');

  const text = await voxa('connections', 'list');
  t.regex(text.stdout, /secret=\[set\]/);
  t.false(text.stdout.includes(created.secret.slice(6)));

  const sent = await voxa('webhooks', 'test', created.id, '--json');
  t.is(sent.code, 0, sent.stderr);
  t.is(rcv.received.length, 1);
  t.true(rcv.received[0]!.verified, 'the test event carries a valid Standard Webhooks signature');
  t.is(rcv.received[0]!.json.type, 'webhook.test');

  const dl = await voxa('webhooks', 'deliveries', created.id, '--json');
  const { deliveries } = JSON.parse(dl.stdout) as { deliveries: Array<{ id: string; status: string; lastStatusCode: number }> };
  t.is(deliveries.length, 1);
  t.is(deliveries[0]!.lastStatusCode, 200);

  rcv.script = [500];
  const again = await voxa('webhooks', 'redeliver', deliveries[0]!.id, '--json');
  t.is(again.code, 1, 'a failed redelivery exits 1');
  const ok = await voxa('webhooks', 'redeliver', deliveries[0]!.id);
  t.is(ok.code, 0);
  t.is(rcv.received.at(-1)!.id, rcv.received[0]!.id, 'redelivery keeps the webhook-id');

  // Nothing the CLI wrote anywhere contains the secret, except the one `add` output.
  t.is(logs.filter((l) => l.includes(created.secret.slice(6))).length, 1);
});

test.serial('backfill replays history into one connection, and a second backfill writes nothing', async (t) => {
  const add = await voxa('webhooks', 'add', '--url', rcv.url, '--events', 'message.created', '--json');
  const { id, secret } = JSON.parse(add.stdout) as { id: string; secret: string };
  rcv.secret = secret;
  const before = rcv.received.length;
  const ws = hub.config.defaultWorkspaceId;
  const events = [1, 2, 3].map((n) =>
    createEvent('message.created', {
      workspaceId: ws,
      conversationId: 'cnv_b',
      actor: { type: 'user', id: 'usr_1' },
      data: { message: { id: `msg_${n}`, conversationId: 'cnv_b', seq: n, senderId: 'usr_1', text: `m${n}`, clientId: null, createdAt: new Date().toISOString() } },
    }),
  );
  for (const e of events) await hub.bus.publisher.publish(subjectOf(e, hub.bus.namespace), Buffer.from(JSON.stringify(e)), {}, e.id);

  const first = await voxa('connections', 'backfill', id, '--since', '1', '--json');
  t.is(first.code, 0, first.stderr + first.stdout);
  const s1 = JSON.parse(first.stdout) as { events: number; written: number; skipped: number };
  t.is(s1.written, 3);
  await until(() => rcv.received.length >= before + 3, 30_000, 'backfilled deliveries');
  // Only the new subscription got them (the first one does not take message.created from a backfill).
  t.deepEqual(
    rcv.received.slice(before).map((r) => r.id),
    events.map((e) => e.id),
  );
  t.true(rcv.received.slice(before).every((r) => r.verified));

  const second = await voxa('connections', 'backfill', id, '--since', '2020-01-01', '--json');
  const s2 = JSON.parse(second.stdout) as { written: number; skipped: number };
  t.is(s2.written, 0);
  t.is(s2.skipped, 3);
  await new Promise((r) => setTimeout(r, 500));
  t.is(rcv.received.length, before + 3, 'nothing delivered twice');
});

test.serial('connections add refuses to prompt without a terminal; --config works; errors have exit codes', async (t) => {
  const noTty = await voxa('connections', 'add', 'webhook');
  t.is(noTty.code, 2);
  t.regex(noTty.stderr, /not prompting without a terminal/);
  t.regex(noTty.stderr, /url/);

  const file = join(hub.config.dataDir, 'hook.json');
  writeFileSync(file, JSON.stringify({ url: rcv.url, events: ['message.updated'], secret: 'whsec_' + Buffer.alloc(32, 3).toString('base64') }));
  const added = await voxa('connections', 'add', 'webhook', '--config', file, '--json');
  t.is(added.code, 0, added.stderr);
  const { connection } = JSON.parse(added.stdout) as { connection: { id: string; secretFields: string[] } };
  t.deepEqual(connection.secretFields, ['secret']);
  t.false(added.stdout.includes(Buffer.alloc(32, 3).toString('base64')));

  const dis = await voxa('connections', 'disable', connection.id, '--json');
  t.is((JSON.parse(dis.stdout) as { connection: { status: string } }).connection.status, 'disabled');
  const rm = await voxa('connections', 'remove', connection.id);
  t.is(rm.code, 0);

  const missing = await voxa('connections', 'test', 'con_nope', '--json');
  t.is(missing.code, 3);
  t.is((JSON.parse(missing.stderr) as { error: { code: string } }).error.code, 'NOT_FOUND');
  const unknown = await voxa('connectors', 'spec', 'nope');
  t.is(unknown.code, 3);
  const badEvents = await voxa('webhooks', 'add', '--url', rcv.url, '--events', 'message.exploded');
  t.is(badEvents.code, 2);
  const badSince = await voxa('connections', 'backfill', 'con_x', '--since', 'yesterday');
  t.is(badSince.code, 2);
});

test('connectors list/spec and completion come from the command tree', async (t) => {
  const list = await voxa('connectors', 'list', '--json');
  t.deepEqual((JSON.parse(list.stdout) as Array<{ id: string }>).map((c) => c.id).sort(), ['dropbox', 'google-drive', 'webhook']);
  const spec = await voxa('connectors', 'spec', 'webhook', '--json');
  const s = JSON.parse(spec.stdout) as { configSchema: { properties: Record<string, { 'x-secret'?: boolean }> } };
  t.true(s.configSchema.properties.secret!['x-secret']);
  const bash = await voxa('completion', 'bash');
  t.is(bash.code, 0);
  t.regex(bash.stdout, /complete -F _voxa_complete voxa/);
  t.regex(bash.stdout, /"voxa:webhooks"\) words="add list test deliveries redeliver remove/);
  const zsh = await voxa('completion', 'zsh');
  t.regex(zsh.stdout, /bashcompinit/);
  const help = await voxa('webhooks', 'add', '--help');
  t.regex(help.stdout, /Examples:/);
});

test.serial('webhook and connection changes made by the CLI reach JetStream and the audit log, secrets left out', async (t) => {
  // The audit plugin on the hub side, through the real runtime, as `voxa start` runs it.
  const runtime = new PluginRuntime(hub, [createAuditPlugin()]);
  await runtime.start();
  try {
    const add = await voxa('webhooks', 'add', '--url', rcv.url, '--events', 'message.created', '--json');
    t.is(add.code, 0, add.stderr);
    const { id, secret } = JSON.parse(add.stdout) as { id: string; secret: string };
    const dis = await voxa('connections', 'disable', id, '--json');
    t.is(dis.code, 0, dis.stderr);
    // A logged delivery and its key: the remove deletes them with the subscription.
    await hub.store.docs.put(DELIVERY_KEYS, `${id}:evt_cli`, { deliveryId: 'dlv_cli' });
    await hub.store.docs.put(DELIVERIES, 'dlv_cli', { id: 'dlv_cli', subscriptionId: id, eventId: 'evt_cli', status: 'succeeded' });
    const rm = await voxa('webhooks', 'remove', id, '--json');
    t.is(rm.code, 0, rm.stderr);
    t.deepEqual(JSON.parse(rm.stdout), { removed: id, deliveries: 1 });
    t.is(await hub.store.docs.get(DELIVERIES, 'dlv_cli'), null, 'the delivery went with the subscription');
    t.is(await hub.store.docs.get(DELIVERY_KEYS, `${id}:evt_cli`), null, 'and its key');

    // `connections remove` of a webhook deletes its log too.
    const other = JSON.parse((await voxa('webhooks', 'add', '--url', rcv.url, '--events', 'message.created', '--json')).stdout) as { id: string };
    await hub.store.docs.put(DELIVERY_KEYS, `${other.id}:evt_cli2`, { deliveryId: 'dlv_cli2' });
    await hub.store.docs.put(DELIVERIES, 'dlv_cli2', { id: 'dlv_cli2', subscriptionId: other.id, eventId: 'evt_cli2', status: 'succeeded' });
    const rm2 = await voxa('connections', 'remove', other.id, '--json');
    t.is(rm2.code, 0, rm2.stderr);
    t.deepEqual(JSON.parse(rm2.stdout), { removed: other.id, deliveries: 1 });
    t.is(await hub.store.docs.get(DELIVERIES, 'dlv_cli2'), null);
    t.is(await hub.store.docs.get(DELIVERY_KEYS, `${other.id}:evt_cli2`), null);

    const mine = async (): Promise<AuditEntry[]> => (await hub.store.docs.find<AuditEntry>(AUDIT_COLLECTION, { subject: id })).sort((a, b) => a.seq - b.seq);
    await until(async () => (await mine()).length >= 3, 30_000, 'three audit entries for the webhook');
    const entries = await mine();
    t.deepEqual(entries.map((e) => [e.type, e.details?.action]), [['webhook.changed', 'added'], ['webhook.changed', 'disabled'], ['webhook.changed', 'removed']]);
    t.deepEqual(entries[0]!.actor, { type: 'system', id: 'voxa-cli' });
    t.false(JSON.stringify(entries).includes(secret.slice(6)), 'no secret in the audit log');
  } finally {
    await runtime.stop();
  }
});

test.serial('connections retry-failed re-queues the failed jobs of that connection only', async (t) => {
  const { ConnectionService } = await import('../../connectors/connections.js');
  const { PermanentError } = await import('../../plugins/runtime/types.js');
  const svc = new ConnectionService(hub);
  const ws = hub.config.defaultWorkspaceId;
  const cfg = { clientId: 'cid', folderPath: '/Voxa', accessToken: 'a', refreshToken: 'r', expiresAt: new Date().toISOString() };
  const mine = await svc.create(ws, 'dropbox', cfg);
  const other = await svc.create(ws, 'dropbox', cfg);
  const calls: string[] = [];
  const q = new ConnectorQueues(hub);
  try {
    q.work('dropbox', async (job) => {
      calls.push((job.data as { connectionId: string }).connectionId);
      throw new PermanentError('far end refused');
    });
    for (const c of [mine, other]) await q.add('dropbox', 'transcript', { connectionId: c.id, conversationId: 'cnv_1' }, { attempts: 1 });
    await until(async () => (await q.queue('dropbox').getFailedCount()) === 2, 30_000, 'two failed jobs');

    const r = await voxa('connections', 'retry-failed', mine.id, '--json');
    t.is(r.code, 0, r.stderr);
    t.is(JSON.parse(r.stdout).retried, 1);
    await until(() => calls.filter((c) => c === mine.id).length === 2, 30_000, 'the job ran again');
    t.is(calls.filter((c) => c === other.id).length, 1, 'the other connection\'s job stays failed');

    const missing = await voxa('connections', 'retry-failed', 'con_nope');
    t.is(missing.code, 3, missing.stderr);
  } finally {
    await q.close();
  }
});

test.serial('without REDIS_URL/NATS_URL the CLI uses the embedded ports VOXA_EMBEDDED_REDIS_PORT/VOXA_EMBEDDED_NATS_PORT, not fixed defaults', async (t) => {
  const { REDIS_URL: _r, NATS_URL: _n, ...rest } = env();
  const embedded = { ...rest, VOXA_EMBEDDED_REDIS_PORT: new URL(servers.redis.url).port, VOXA_EMBEDDED_NATS_PORT: new URL(servers.nats.url).port };
  // retry-failed needs Redis: reaching it turns an unknown connection into "not found" (3), not "unreachable" (4).
  const r = await voxaWith(embedded, 'connections', 'retry-failed', 'con_nope', '--json');
  t.is(r.code, 3, r.stderr);
});
