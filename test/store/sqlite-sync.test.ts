/**
 * The SQLite adapter answers group-committed writes only after an fdatasync of the WAL, running the commit
 * itself at synchronous=NORMAL (core/store/sqlite.ts, deferSync). These tests pin what must hold around that:
 * every other write still runs at FULL, an answered write is committed and survives reopening, and the
 * adapter still works when the caller asked for NORMAL.
 */
import test from 'ava';
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../core/store/sqlite.js';

const SYNC_FULL = 2;
const SYNC_NORMAL = 1;

function tempFile(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'voxa-sqlite-sync-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'voxa.db');
}

const synchronousOf = (store: SqliteStore) => (store as unknown as { db: Database.Database }).db.pragma('synchronous', { simple: true });

async function seed(store: SqliteStore, n: number): Promise<void> {
  const now = new Date().toISOString();
  await store.createConversation(
    { id: 'cnv_1', workspaceId: 'w', type: 'group', title: 't', members: ['u1', 'u2'], createdBy: 'u1', createdAt: now, updatedAt: now, lastSeq: 0 },
    () => [],
  );
  await Promise.all(
    Array.from({ length: n }, (_, i) =>
      store.appendMessage({ id: `msg_${i}`, conversationId: 'cnv_1', senderId: 'u1', text: `m${i}`, clientId: null, createdAt: now }, (m) => [
        { eventId: `evt_${m.id}`, subject: 's', payload: '{}', headers: {}, createdAt: now },
      ]),
    ),
  );
}

test('group commits leave the connection at FULL; answered writes are visible to another connection and survive reopening', async (t) => {
  const file = tempFile(t);
  let store = new SqliteStore(file);
  await store.init();
  await seed(store, 300);
  t.is(synchronousOf(store), SYNC_FULL);
  const other = new Database(file, { readonly: true });
  t.is((other.prepare('SELECT count(*) AS n FROM messages').get() as { n: number }).n, 300);
  t.is((other.prepare('SELECT max(last_seq) AS s FROM conversations').get() as { s: number }).s, 300);
  other.close();
  await store.outboxDelete(Array.from({ length: 300 }, (_, i) => `evt_msg_${i}`));
  t.is(await store.outboxCount(), 0);
  await store.close();
  store = new SqliteStore(file);
  await store.init();
  const page = await store.listMessages('cnv_1', { limit: 500 });
  t.is(page.messages.length, 300);
  t.deepEqual(
    page.messages.map((m) => m.seq),
    Array.from({ length: 300 }, (_, i) => i + 1),
  );
  await store.close();
});

test('a unit that fails still rolls back alone, and the connection is back at FULL', async (t) => {
  const file = tempFile(t);
  const store = new SqliteStore(file);
  await store.init();
  await seed(store, 1);
  const now = new Date().toISOString();
  const results = await Promise.allSettled([
    store.appendMessage({ id: 'msg_a', conversationId: 'cnv_1', senderId: 'u1', text: 'a', clientId: null, createdAt: now }, () => []),
    store.appendMessage({ id: 'msg_b', conversationId: 'cnv_missing', senderId: 'u1', text: 'b', clientId: null, createdAt: now }, () => []),
    store.appendMessage({ id: 'msg_c', conversationId: 'cnv_1', senderId: 'u1', text: 'c', clientId: null, createdAt: now }, () => []),
  ]);
  t.deepEqual(
    results.map((r) => r.status),
    ['fulfilled', 'rejected', 'fulfilled'],
  );
  t.is(synchronousOf(store), SYNC_FULL);
  t.is((await store.listMessages('cnv_1', { limit: 10 })).messages.length, 3);
  await store.close();
});

test('a store opened with synchronous NORMAL stays at NORMAL', async (t) => {
  const file = tempFile(t);
  const store = new SqliteStore(file, { synchronous: 'NORMAL' });
  await store.init();
  await seed(store, 20);
  t.is(synchronousOf(store), SYNC_NORMAL);
  t.is((await store.listMessages('cnv_1', { limit: 50 })).messages.length, 20);
  await store.close();
});

test('document and token writes join the group commit instead of committing (and fsyncing) on their own', async (t) => {
  const file = tempFile(t);
  const store = new SqliteStore(file);
  await store.init();
  t.teardown(() => store.close());
  // Every group commit goes through flushWrites; a write that commits on its own (an fsync on the event loop,
  // blocking everything else) never does.
  const internals = store as unknown as { flushWrites(): void };
  const flush = internals.flushWrites.bind(store);
  let groups = 0;
  internals.flushWrites = () => {
    groups++;
    flush();
  };
  const now = new Date().toISOString();
  await Promise.all([
    ...Array.from({ length: 40 }, (_, i) => store.docs.put('plugin_state', `p${i}`, { i })),
    ...Array.from({ length: 40 }, (_, i) => store.docs.insert('processed:x', `k${i}`, { at: now })),
  ]);
  t.true(groups >= 1 && groups <= 2, `80 writes made together committed in ${groups} group(s)`);
  const before = groups;
  await Promise.all([
    store.docs.delete('plugin_state', 'p0'),
    store.docs.deleteBefore('processed:x', 'at', '9999'),
    store.insertRefreshToken({ id: 'rt_1', userId: 'u1', familyId: 'f1', tokenHash: 'h1', createdAt: now, expiresAt: now, usedAt: null, revokedAt: null }),
  ]);
  await store.revokeTokenFamily('f1', now);
  await store.revokeUserTokens('u1', now);
  t.true(groups >= before + 3, 'delete, deleteBefore, token insert and revocations went through group commits');
  t.is(await store.docs.get('plugin_state', 'p0'), null);
  t.is(await store.docs.count('processed:x'), 0);
  t.is(await store.docs.count('plugin_state'), 39);
  t.truthy((await store.getRefreshTokenByHash('h1'))?.revokedAt);
});
