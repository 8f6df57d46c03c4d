import test from 'ava';
import { runCli } from '../helpers/cli.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEvent, type AnyEvent } from '../../core/events/catalog.js';
import type { Hub } from '../../core/hub.js';
import { createStore } from '../../core/store/index.js';
import type { Store } from '../../core/store/port.js';
import { AUDIT_COLLECTION, appendEntry, auditId, hashEntry, listEntries, verifyChain, type AuditEntry } from '../../plugins/audit/chain.js';
import { createAuditPlugin } from '../../plugins/audit/index.js';
import type { Plugin } from '../../plugins/runtime/types.js';

const info = { attempt: 1, streamSeq: 1, subject: 'x' };

async function setup(): Promise<{ store: Store; dir: string; plugin: Plugin; close(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'voxa-audit-'));
  const store = await createStore({ dataDir: dir, mongoDb: 'voxa' });
  await store.init();
  const plugin = createAuditPlugin();
  await plugin.start!({ hub: { store } as unknown as Hub, log: undefined as never });
  return {
    store,
    dir,
    plugin,
    async close() {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const actor = { type: 'user' as const, id: 'usr_admin' };
function someEvents(): AnyEvent[] {
  const conv = { id: 'cnv_1', workspaceId: 'w1', type: 'group' as const, title: 'T', members: ['a', 'b'], createdBy: 'a', createdAt: '', updatedAt: '', lastSeq: 0 };
  const user = { id: 'usr_b', workspaceId: 'w1', email: 'b@x.test', name: 'B', role: 'agent' as const, createdAt: '' };
  return [
    createEvent('user.login', { workspaceId: 'w1', userId: 'usr_admin', actor, data: { method: 'password', ip: '10.0.0.1' } }),
    createEvent('user.login_failed', { workspaceId: 'w1', userId: 'usr_b', actor: { type: 'system', id: 'auth' }, data: { reason: 'bad password' } }),
    createEvent('user.role_changed', { workspaceId: 'w1', userId: 'usr_b', actor, data: { user, from: 'customer', to: 'agent' } }),
    createEvent('conversation.updated', { workspaceId: 'w1', conversationId: 'cnv_1', actor, data: { conversation: conv, added: ['usr_b'], removed: [] } }),
    createEvent('connection.changed', { workspaceId: 'w2', actor, data: { connectionId: 'con_1', connector: 'dropbox', action: 'added' } }),
    createEvent('webhook.changed', { workspaceId: 'w1', actor, data: { webhookId: 'whk_1', action: 'removed' } }),
    createEvent('data.exported', { workspaceId: 'w1', actor, data: { what: 'messages' } }),
  ];
}

async function entries(store: Store): Promise<AuditEntry[]> {
  return store.docs.find<AuditEntry>(AUDIT_COLLECTION, {});
}

test('events append a hash chain once each; irrelevant events append nothing', async (t) => {
  const s = await setup();
  const events = someEvents();
  for (const e of events) await s.plugin.handle(e, info);
  // Redelivery of every event appends nothing.
  for (const e of events) await s.plugin.handle(e, { ...info, attempt: 2 });
  // A title-only conversation change is not security-relevant.
  const conv = { id: 'cnv_1', workspaceId: 'w1', type: 'group' as const, title: 'New', members: ['a'], createdBy: 'a', createdAt: '', updatedAt: '', lastSeq: 0 };
  await s.plugin.handle(createEvent('conversation.updated', { workspaceId: 'w1', conversationId: 'cnv_1', actor, data: { conversation: conv } }), info);

  const all = await entries(s.store);
  t.is(all.length, events.length);
  t.deepEqual(all.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7]);
  t.deepEqual(all.map((e) => e.eventId), events.map((e) => e.id));
  t.is(all[0]!.prevHash, '0'.repeat(64));
  for (let i = 1; i < all.length; i++) t.is(all[i]!.prevHash, all[i - 1]!.hash);
  t.regex(all[2]!.summary, /customer to agent/);
  t.deepEqual(all[3]!.details, { added: ['usr_b'], removed: [] });
  const result = await verifyChain(s.store.docs);
  t.true(result.ok);
  t.is(result.checked, 7);
  t.is(result.head?.hash, all[6]!.hash);
  await s.close();
});

test('concurrent appends (two writers) still form one gapless chain', async (t) => {
  const s = await setup();
  const events = Array.from({ length: 30 }, (_, i) => createEvent('data.exported', { workspaceId: 'w1', actor, data: { what: `batch ${i}` } }));
  // Every event twice and all at once: each appears exactly once and the chain verifies.
  await Promise.all([...events, ...events].map((e) => s.plugin.handle(e, info)));
  const all = await entries(s.store);
  t.is(all.length, 30);
  t.is(new Set(all.map((e) => e.eventId)).size, 30);
  t.true((await verifyChain(s.store.docs)).ok);
  await s.close();
});

test('verify names the first edited entry, even when its hash was recomputed', async (t) => {
  const s = await setup();
  for (const e of someEvents()) await s.plugin.handle(e, info);
  const third = (await s.store.docs.get<AuditEntry>(AUDIT_COLLECTION, auditId(3)))!;
  await s.store.docs.put(AUDIT_COLLECTION, third.id, { ...third, summary: 'nothing to see here' });
  let r = await verifyChain(s.store.docs);
  t.false(r.ok);
  t.is(r.firstBroken?.seq, 3);
  t.is(r.firstBroken?.reason, 'edited');
  t.is(r.checked, 2);

  // A careful forger recomputes the hash: the next entry no longer links to it.
  const forged = { ...third, summary: 'nothing to see here' };
  await s.store.docs.put(AUDIT_COLLECTION, third.id, { ...forged, hash: hashEntry(forged) });
  r = await verifyChain(s.store.docs);
  t.false(r.ok);
  t.is(r.firstBroken?.seq, 4);
  t.is(r.firstBroken?.reason, 'broken-link');
  await s.close();
});

test('verify catches a removed entry, a removed tail and reordered entries', async (t) => {
  const s = await setup();
  for (const e of someEvents()) await s.plugin.handle(e, info);
  const all = await entries(s.store);

  await s.store.docs.delete(AUDIT_COLLECTION, auditId(4));
  let r = await verifyChain(s.store.docs);
  t.is(r.firstBroken?.seq, 4);
  t.is(r.firstBroken?.reason, 'missing');
  await s.store.docs.put(AUDIT_COLLECTION, auditId(4), all[3]!);
  t.true((await verifyChain(s.store.docs)).ok);

  // Swap entries 5 and 6.
  await s.store.docs.put(AUDIT_COLLECTION, auditId(5), all[5]!);
  await s.store.docs.put(AUDIT_COLLECTION, auditId(6), all[4]!);
  r = await verifyChain(s.store.docs);
  t.is(r.firstBroken?.seq, 5);
  t.is(r.firstBroken?.reason, 'out-of-order');
  // Swap them back but renumber seq (and id) as if they had always been in that order: the links break.
  const moved5 = { ...all[5]!, seq: 5, id: auditId(5) };
  const moved6 = { ...all[4]!, seq: 6, id: auditId(6) };
  await s.store.docs.put(AUDIT_COLLECTION, auditId(5), { ...moved5, hash: hashEntry(moved5) });
  await s.store.docs.put(AUDIT_COLLECTION, auditId(6), { ...moved6, hash: hashEntry(moved6) });
  r = await verifyChain(s.store.docs);
  t.is(r.firstBroken?.seq, 5);
  t.is(r.firstBroken?.reason, 'broken-link');
  await s.store.docs.put(AUDIT_COLLECTION, auditId(5), all[4]!);
  await s.store.docs.put(AUDIT_COLLECTION, auditId(6), all[5]!);
  t.true((await verifyChain(s.store.docs)).ok);

  // Cutting off the tail is caught by the head record.
  await s.store.docs.delete(AUDIT_COLLECTION, auditId(7));
  r = await verifyChain(s.store.docs);
  t.is(r.firstBroken?.seq, 7);
  t.is(r.firstBroken?.reason, 'truncated');
  await s.close();
});

test('list filters by time and workspace and pages by seq', async (t) => {
  const s = await setup();
  let clock = Date.parse('2025-03-01T00:00:00Z');
  const now = () => new Date((clock += 3_600_000));
  for (const e of someEvents()) {
    const { describeEvent } = await import('../../plugins/audit/describe.js');
    await appendEntry(s.store.docs, describeEvent(e)!, now);
  }
  // Entry n was appended at 2025-03-01T0n:00Z.
  const since = await listEntries(s.store.docs, { since: '2025-03-01T04:00:00.000Z', limit: 100 });
  t.deepEqual(since.entries.map((e) => e.seq), [4, 5, 6, 7]);
  const w1 = await listEntries(s.store.docs, { since: '2025-03-01T04:00:00.000Z', workspaceId: 'w1', limit: 100 });
  t.deepEqual(w1.entries.map((e) => e.seq), [4, 6, 7]);
  const page1 = await listEntries(s.store.docs, { limit: 3 });
  t.deepEqual(page1.entries.map((e) => e.seq), [1, 2, 3]);
  t.is(page1.nextAfterSeq, 3);
  const page3 = await listEntries(s.store.docs, { limit: 3, afterSeq: 6 });
  t.deepEqual(page3.entries.map((e) => e.seq), [7]);
  t.is(page3.nextAfterSeq, null);
  await s.close();
});

test('voxa audit verify exits 1 naming the broken entry; list --json prints entries', async (t) => {
  const s = await setup();
  for (const e of someEvents()) await s.plugin.handle(e, info);
  const env: NodeJS.ProcessEnv = { ...process.env, VOXA_DATA_DIR: s.dir, LOG_LEVEL: 'silent' };
  delete env.MONGO_URL;
  delete env.VOXA_CONFIG;
  const ok = await runCli(env, ['audit', 'verify', '--json']);
  t.is(ok.code, 0, ok.stderr);
  t.is(JSON.parse(ok.stdout).ok, true);
  const listed = await runCli(env, ['audit', 'list', '--since', '1h', '--workspace', 'w2', '--json']);
  t.is(listed.code, 0, listed.stderr);
  t.deepEqual(JSON.parse(listed.stdout).entries.map((e: AuditEntry) => e.type), ['connection.changed']);

  const second = (await s.store.docs.get<AuditEntry>(AUDIT_COLLECTION, auditId(2)))!;
  await s.store.docs.put(AUDIT_COLLECTION, second.id, { ...second, actor: { type: 'user', id: 'someone-else' } });
  const err = await runCli(env, ['audit', 'verify']);
  t.is(err.code, 1);
  t.regex(err.stdout, /BROKEN at seq 2 \(aud_000000000002\): edited/);
  await s.close();
});
