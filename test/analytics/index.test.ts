import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DocValue } from '../../core/store/port.js';
import { SqliteStore } from '../../core/store/sqlite.js';
import type { PluginContext } from '../../plugins/runtime/types.js';
import { createAnalyticsPlugin } from '../../plugins/analytics/index.js';
import { FACTS_COLLECTION, ensureFactIndexes, recordFact } from '../../plugins/analytics/facts.js';
import { buildReport } from '../../plugins/analytics/report.js';

type Explainable = { explainFind(collection: string, filter?: Record<string, DocValue>): string[] };

test('the per-day facts look-up uses its index on SQLite (EXPLAIN QUERY PLAN); reports are unchanged', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'voxa-factsix-'));
  const store = new SqliteStore(join(dir, 'voxa.db'));
  await store.init();
  try {
    for (let i = 0; i < 40; i++) {
      const day = `2031-01-0${1 + (i % 3)}`;
      await recordFact(store.docs, `c:conv${i}`, { kind: 'conversation', workspaceId: i % 2 ? 'w1' : 'w2', day, at: `${day}T10:00:00.000Z`, conversationId: `conv${i}` });
    }
    const explain = () => (store.docs as unknown as Explainable).explainFind(FACTS_COLLECTION, { workspaceId: 'w1', day: '2031-01-02' });
    const before = await buildReport(store.docs, 'w1', '2031-01-01', '2031-01-03');
    t.false(explain().some((d) => /docs_ix_/.test(d)));

    await createAnalyticsPlugin().start!({ hub: { store } } as unknown as PluginContext);
    await ensureFactIndexes(store.docs); // again: a no-op
    const plan = explain();
    t.true(plan.some((d) => /SEARCH docs USING INDEX docs_ix_\w+ \(<expr>=\? AND <expr>=\?/.test(d)), plan.join(' | '));

    const after = await buildReport(store.docs, 'w1', '2031-01-01', '2031-01-03');
    t.deepEqual(after, before);
    t.deepEqual(after.days.map((d) => d.conversationsOpened), [7, 7, 6]);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
