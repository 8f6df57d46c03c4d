/**
 * SQLite only: the search index follows appends in batches (fts_progress marks how far it has come). Every
 * test ends with FTS5's own integrity check against the messages table, which fails if the index was ever told
 * to forget terms it never held, or misses or keeps a row it should not.
 */
import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Message } from '../../core/domain.js';
import { MIGRATIONS, SqliteStore, type SqliteStoreOptions } from '../../core/store/sqlite.js';
import { at, group, ob, send } from './support.js';

/** A store on a fresh file; its timer never indexes unless the test asks for a short interval. */
async function open(t: ExecutionContext, opts: SqliteStoreOptions = { searchIndexIntervalMs: 3_600_000 }) {
  const dir = mkdtempSync(join(tmpdir(), 'voxa-fts-'));
  const file = join(dir, 'voxa.db');
  const h = { file, store: new SqliteStore(file, opts) };
  t.teardown(async () => {
    await h.store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await h.store.init();
  return h;
}

/** FTS5's integrity check, including the comparison with the content table (rank 1); throws on any mismatch. */
function checkIndex(file: string): void {
  const db = new Database(file);
  try {
    db.prepare(`INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)`).run();
  } finally {
    db.close();
  }
}

const ids = async (s: SqliteStore, user: string, q: string) => (await s.searchMessages(user, q, { limit: 50 })).hits.map((h) => h.message.id);

test('appends wait for the index, and a search indexes them first: nothing stored is missed', async (t) => {
  const { store, file } = await open(t);
  const c = await group(store, ['u1', 'u2']);
  const sent = await Promise.all(Array.from({ length: 30 }, (_, i) => send(store, c.id, 'u1', `lighthouse number ${i}`)));
  t.is(store.unindexedMessages(), 30, 'appends leave indexing to the batch');
  t.deepEqual((await ids(store, 'u2', 'lighthouse')).sort(), sent.map((r) => r.message.id).sort());
  t.is(store.unindexedMessages(), 0);
  checkIndex(file);
});

test('edits and deletes of messages not yet indexed: the index ends with the text the row has now', async (t) => {
  const { store, file } = await open(t);
  const c = await group(store, ['u1', 'u2']);
  const old = (await send(store, c.id, 'u1', 'indexed before the edit')).message;
  t.deepEqual(await ids(store, 'u1', 'indexed'), [old.id]);
  const a = (await send(store, c.id, 'u1', 'draft harbour')).message;
  const b = (await send(store, c.id, 'u1', 'secret harbour')).message;
  t.is(store.unindexedMessages(), 2);
  await store.editMessage(c.id, a.id, 'final station', at(20), ob<Message>('message.updated'));
  await store.deleteMessage(c.id, b.id, at(21), ob<Message>('message.deleted'));
  await store.editMessage(c.id, old.id, 'rewritten after indexing', at(22), ob<Message>('message.updated'));
  t.deepEqual(await ids(store, 'u1', 'harbour'), []);
  t.deepEqual(await ids(store, 'u1', 'station'), [a.id]);
  t.deepEqual(await ids(store, 'u1', 'secret'), []);
  t.deepEqual(await ids(store, 'u1', 'indexed'), []);
  t.deepEqual(await ids(store, 'u1', 'rewritten'), [old.id]);
  checkIndex(file);
});

test('the timer indexes in the background, more than one batch, without a search', async (t) => {
  const { store, file } = await open(t, { searchIndexIntervalMs: 20 });
  const c = await group(store, ['u1', 'u2']);
  // More than one batch (500), so the pass that follows a full one runs too.
  for (let i = 0; i < 3; i++) await Promise.all(Array.from({ length: 400 }, (_, j) => send(store, c.id, 'u1', `batch ${i} item ${j}`)));
  const deadline = Date.now() + 20_000;
  while (store.unindexedMessages() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.is(store.unindexedMessages(), 0);
  checkIndex(file);
  t.is((await store.searchMessages('u2', 'item', { limit: 5 })).hits.length, 5);
});

test('a row that reuses a deleted rowid below the mark is indexed at once', async (t) => {
  const { store, file } = await open(t);
  const c = await group(store, ['u1', 'u2']);
  await send(store, c.id, 'u1', 'first anchor');
  const last = (await send(store, c.id, 'u1', 'doomed anchor')).message;
  t.is((await ids(store, 'u1', 'anchor')).length, 2);
  // Removed by hand (no API deletes rows; retention some day might): SQLite then hands the same rowid out again.
  const db = new Database(file);
  const rowid = (db.prepare('SELECT rowid AS r FROM messages WHERE id = ?').get(last.id) as { r: number }).r;
  db.prepare('DELETE FROM messages WHERE id = ?').run(last.id);
  db.close();
  const next = (await send(store, c.id, 'u1', 'replacement beacon', { t: 30 })).message;
  const db2 = new Database(file, { readonly: true });
  t.is((db2.prepare('SELECT rowid AS r FROM messages WHERE id = ?').get(next.id) as { r: number }).r, rowid, 'the rowid was reused');
  db2.close();
  t.is(store.unindexedMessages(), 0, 'indexed by the insert itself');
  t.deepEqual(await ids(store, 'u1', 'beacon'), [next.id]);
  t.deepEqual(await ids(store, 'u1', 'doomed'), []);
  checkIndex(file);
});

test('messages not yet indexed at shutdown are found after a restart', async (t) => {
  const h = await open(t);
  const c = await group(h.store, ['u1', 'u2']);
  const m = (await send(h.store, c.id, 'u1', 'survives the restart')).message;
  t.is(h.store.unindexedMessages(), 1);
  await h.store.close();
  h.store = new SqliteStore(h.file, { searchIndexIntervalMs: 3_600_000 });
  await h.store.init();
  t.is(h.store.unindexedMessages(), 1);
  t.deepEqual(await ids(h.store, 'u2', 'restart'), [m.id]);
  checkIndex(h.file);
});

test('a database indexed by triggers (schema 2) upgrades without reindexing and keeps its hits', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'voxa-fts-'));
  const file = join(dir, 'voxa.db');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // Schema 2 as the release before this one left it: two messages, indexed by its insert trigger.
  const db = new Database(file);
  db.exec('CREATE TABLE schema_version (version INTEGER NOT NULL)');
  for (let i = 0; i < 2; i++) {
    db.exec(MIGRATIONS[i]!);
    db.prepare('INSERT INTO schema_version (version) VALUES (?)').run(i + 1);
  }
  db.exec(`INSERT INTO conversations (id, workspace_id, type, title, created_by, created_at, updated_at, last_seq)
           VALUES ('cnv_old', 'ws1', 'group', 'Old', 'u1', '${at(1)}', '${at(1)}', 2)`);
  db.exec(`INSERT INTO conversation_members (conversation_id, user_id, pos) VALUES ('cnv_old', 'u1', 0), ('cnv_old', 'u2', 1)`);
  db.exec(`INSERT INTO messages (id, conversation_id, seq, sender_id, text, created_at) VALUES
           ('msg_a', 'cnv_old', 1, 'u1', 'legacy lantern', '${at(2)}'), ('msg_b', 'cnv_old', 2, 'u1', 'legacy compass', '${at(3)}')`);
  db.close();
  const store = new SqliteStore(file, { searchIndexIntervalMs: 3_600_000 });
  t.teardown(() => store.close());
  await store.init();
  t.is(store.unindexedMessages(), 0, 'rows indexed under schema 2 count as indexed');
  t.deepEqual((await ids(store, 'u2', 'legacy')).sort(), ['msg_a', 'msg_b']);
  await store.editMessage('cnv_old', 'msg_a', 'modern lantern', at(5), ob<Message>('message.updated'));
  t.deepEqual(await ids(store, 'u2', 'legacy'), ['msg_b']);
  checkIndex(file);
});
