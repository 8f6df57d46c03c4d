/**
 * The digest reads every unread conversation, not only the 200 most recently active: a user in many
 * conversations still hears about unread messages in an old one.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../core/store/sqlite.js';
import { unreadConversations } from '../../plugins/email/digest.js';
import { at, group, send } from '../store/support.js';

test('unreadConversations pages through the whole list: an unread conversation past the first 200 is found', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'voxa-unread-'));
  const store = new SqliteStore(join(dir, 'voxa.db'));
  t.teardown(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await store.init();
  // The oldest conversation has the unread message; 450 newer ones (several sharing a time) have none.
  const old = await group(store, ['u1', 'u2'], { title: 'old', createdAt: at(1), updatedAt: at(1) });
  await send(store, old.id, 'u2', 'are you there?', { t: 2 });
  for (let i = 0; i < 450; i++) await group(store, ['u1', 'u2'], { title: `new ${i}`, createdAt: at(10 + Math.floor(i / 3)), updatedAt: at(10 + Math.floor(i / 3)) });
  t.is((await store.listConversations('u1', { limit: 200 })).filter((c) => c.unreadCount > 0).length, 0, 'the first page alone misses it');

  const unread = await unreadConversations(store, 'u1');
  t.deepEqual(unread.map((c) => [c.title, c.unreadCount]), [['old', 1]]);
  t.deepEqual(await unreadConversations(store, 'u2'), [], 'their own message is not unread for the sender');
});
