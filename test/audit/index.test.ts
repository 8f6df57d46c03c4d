import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DocValue } from '../../core/store/port.js';
import { SqliteStore } from '../../core/store/sqlite.js';
import type { PluginContext } from '../../plugins/runtime/types.js';
import { createAuditPlugin } from '../../plugins/audit/index.js';
import { AUDIT_COLLECTION, appendEntry, ensureAuditIndexes, entryForEvent, listEntries } from '../../plugins/audit/chain.js';

type Explainable = { explainFind(collection: string, filter?: Record<string, DocValue>, opts?: { limit?: number; afterId?: string }): string[] };

async function withStore(fn: (s: SqliteStore, explain: Explainable['explainFind']) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'voxa-auditix-'));
  const store = new SqliteStore(join(dir, 'voxa.db'));
  await store.init();
  const docs = store.docs as unknown as Explainable;
  try {
    await fn(store, (...args) => docs.explainFind(...args));
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const usesIndex = (plan: string[]) => plan.some((d) => /USING INDEX docs_ix_/.test(d));

async function fill(s: SqliteStore, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await appendEntry(s.docs, {
      eventId: `evt_${i}`,
      eventTime: new Date().toISOString(),
      type: 'user.login',
      actor: { type: 'user', id: `u${i}` },
      workspaceId: i % 2 ? 'w1' : 'w2',
      summary: 'signed in',
    });
  }
  // Unrelated documents in the same table.
  for (let i = 0; i < 20; i++) await s.docs.put('other', `o${i}`, { eventId: `evt_${i}`, workspaceId: 'w1' });
}

test('audit look-ups by event id and by workspace use their index on SQLite (EXPLAIN QUERY PLAN)', async (t) => {
  await withStore(async (s, explain) => {
    await fill(s, 30);
    t.false(usesIndex(explain(AUDIT_COLLECTION, { eventId: 'evt_3' }, { limit: 1 })), 'no index before it is declared');

    await ensureAuditIndexes(s.docs);
    await ensureAuditIndexes(s.docs); // idempotent
    const byEvent = explain(AUDIT_COLLECTION, { eventId: 'evt_3' }, { limit: 1 });
    t.true(usesIndex(byEvent), byEvent.join(' | '));
    t.false(byEvent.some((d) => /^SCAN/.test(d)), byEvent.join(' | '));
    // The listing: workspace equality, paged by id, in id order (no temp sort).
    const byWorkspace = explain(AUDIT_COLLECTION, { workspaceId: 'w1' }, { limit: 11, afterId: 'aud_000000000004' });
    t.true(usesIndex(byWorkspace), byWorkspace.join(' | '));
    t.false(byWorkspace.some((d) => /TEMP B-TREE/.test(d)), byWorkspace.join(' | '));

    // Same answers through the index as before.
    t.is((await entryForEvent(s.docs, 'evt_3'))?.seq, 4);
    t.is(await entryForEvent(s.docs, 'evt_missing'), null);
    const page = await listEntries(s.docs, { workspaceId: 'w1', limit: 5, afterSeq: 4 });
    t.deepEqual(page.entries.map((e) => e.seq), [6, 8, 10, 12, 14]);
    t.is(page.nextAfterSeq, 14);
  });
});

test('the audit plugin declares its indexes when it starts; the index survives a reopen', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'voxa-auditix-'));
  const file = join(dir, 'voxa.db');
  try {
    let store = new SqliteStore(file);
    await store.init();
    await createAuditPlugin().start!({ hub: { store } } as unknown as PluginContext);
    await store.close();
    store = new SqliteStore(file);
    await store.init();
    const plan = (store.docs as unknown as Explainable).explainFind(AUDIT_COLLECTION, { eventId: 'x' }, { limit: 1 });
    t.true(usesIndex(plan), plan.join(' | '));
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ensureIndex refuses unsafe names', async (t) => {
  await withStore(async (s) => {
    await t.throwsAsync(s.docs.ensureIndex(AUDIT_COLLECTION, ["x') --"]), { message: /plain top-level field names/ });
    await t.throwsAsync(s.docs.ensureIndex("a'b", ['x']), { message: /collection/ });
    await t.throwsAsync(s.docs.ensureIndex(AUDIT_COLLECTION, []), { message: /at least one field/ });
  });
});
