import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  OIDC_USED_STATES_COLLECTION,
  RECOVERY_USED_COLLECTION,
  TOTP_STEPS_COLLECTION,
  pruneRecords as pruneAuthRecords,
  startPruner,
} from '../../core/auth/prune.js';
import { INVITES_COLLECTION } from '../../core/auth/invites.js';
import { SqliteStore } from '../../core/store/sqlite.js';
import { openTestHub, startServers } from '../helpers/hub.js';
import { eventually } from '../api/support.js';

const NOW = new Date('2031-06-01T12:00:00.000Z');
const ago = (ms: number, from = NOW) => new Date(from.getTime() - ms).toISOString();
const MIN = 60_000;

async function withStore(fn: (s: SqliteStore) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'voxa-prune-'));
  const store = new SqliteStore(join(dir, 'voxa.db'));
  await store.init();
  try {
    await fn(store);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('expired step, recovery and Google-state records are pruned; live and unsettled ones are kept', async (t) => {
  await withStore(async (s) => {
    await s.docs.insert(TOTP_STEPS_COLLECTION, 'u1:100', { userId: 'u1', step: 100, at: ago(11 * MIN) });
    await s.docs.insert(TOTP_STEPS_COLLECTION, 'u1:200', { userId: 'u1', step: 200, at: ago(1 * MIN) });
    await s.docs.insert(RECOVERY_USED_COLLECTION, 'u1:old', { userId: 'u1', at: ago(49 * 60 * MIN), settledAt: ago(48 * 60 * MIN) });
    await s.docs.insert(RECOVERY_USED_COLLECTION, 'u1:new', { userId: 'u1', at: ago(2 * MIN), settledAt: ago(2 * MIN) });
    // Used but never settled (the process died before the hash left the user): must keep the code dead.
    await s.docs.insert(RECOVERY_USED_COLLECTION, 'u1:unsettled', { userId: 'u1', at: ago(90 * 24 * 60 * MIN) });
    await s.docs.insert(OIDC_USED_STATES_COLLECTION, 'st-old', { at: ago(16 * MIN) });
    await s.docs.insert(OIDC_USED_STATES_COLLECTION, 'st-live', { at: ago(9 * MIN) });
    // Invite codes go once expired (plus the clock-skew room); a live one stays.
    await s.docs.insert(INVITES_COLLECTION, 'usr_old', { hash: 'h', expiresAt: ago(6 * MIN) });
    await s.docs.insert(INVITES_COLLECTION, 'usr_live', { hash: 'h', expiresAt: ago(-24 * 60 * MIN) });
    // Something else in the store with an old `at` is not ours to prune.
    await s.docs.insert('identities', 'google:x', { userId: 'u1', at: ago(365 * 24 * 60 * MIN) });

    const counts = await pruneAuthRecords(s.docs, NOW);
    t.deepEqual(counts, { [TOTP_STEPS_COLLECTION]: 1, [RECOVERY_USED_COLLECTION]: 1, [OIDC_USED_STATES_COLLECTION]: 1, [INVITES_COLLECTION]: 1 });
    t.is(await s.docs.get(INVITES_COLLECTION, 'usr_old'), null);
    t.truthy(await s.docs.get(INVITES_COLLECTION, 'usr_live'));
    t.is(await s.docs.get(TOTP_STEPS_COLLECTION, 'u1:100'), null);
    t.truthy(await s.docs.get(TOTP_STEPS_COLLECTION, 'u1:200'));
    t.is(await s.docs.get(RECOVERY_USED_COLLECTION, 'u1:old'), null);
    t.truthy(await s.docs.get(RECOVERY_USED_COLLECTION, 'u1:new'));
    t.truthy(await s.docs.get(RECOVERY_USED_COLLECTION, 'u1:unsettled'));
    t.is(await s.docs.get(OIDC_USED_STATES_COLLECTION, 'st-old'), null);
    t.truthy(await s.docs.get(OIDC_USED_STATES_COLLECTION, 'st-live'));
    t.truthy(await s.docs.get('identities', 'google:x'));

    // Time moves on: what was live expires too, and a second run is a no-op on what is gone.
    const later = new Date(NOW.getTime() + 2 * 24 * 60 * MIN);
    t.deepEqual(await pruneAuthRecords(s.docs, later), { [TOTP_STEPS_COLLECTION]: 1, [RECOVERY_USED_COLLECTION]: 1, [OIDC_USED_STATES_COLLECTION]: 1, [INVITES_COLLECTION]: 1 });
    t.is(await s.docs.count(TOTP_STEPS_COLLECTION), 0);
    t.is(await s.docs.count(RECOVERY_USED_COLLECTION), 1, 'only the unsettled claim is left');
  });
});

test('pruning works through more than one batch', async (t) => {
  await withStore(async (s) => {
    for (let i = 0; i < 1005; i++) await s.docs.insert(TOTP_STEPS_COLLECTION, `u:${i}`, { userId: 'u', step: i, at: ago(60 * MIN) });
    t.deepEqual((await pruneAuthRecords(s.docs, NOW))[TOTP_STEPS_COLLECTION], 1005);
    t.is(await s.docs.count(TOTP_STEPS_COLLECTION), 0);
  });
});

test('startPruner: runs on its timer, stop() ends it; interval 0 never runs', async (t) => {
  await withStore(async (s) => {
    const idle = startPruner(s.docs, 0);
    await s.docs.insert(TOTP_STEPS_COLLECTION, 'u:1', { userId: 'u', step: 1, at: ago(60 * MIN, new Date()) });
    await new Promise((r) => setTimeout(r, 100));
    t.truthy(await s.docs.get(TOTP_STEPS_COLLECTION, 'u:1'));
    await idle.stop();

    const pruner = startPruner(s.docs, 30);
    await eventually(async () => (await s.docs.get(TOTP_STEPS_COLLECTION, 'u:1')) === null);
    await pruner.stop();
    // Stopped: a new expired record stays.
    await s.docs.insert(TOTP_STEPS_COLLECTION, 'u:2', { userId: 'u', step: 2, at: ago(60 * MIN, new Date()) });
    await new Promise((r) => setTimeout(r, 150));
    t.truthy(await s.docs.get(TOTP_STEPS_COLLECTION, 'u:2'));
  });
});

test('the hub starts the pruner with itself and closeHub stops it', async (t) => {
  const servers = await startServers();
  try {
    const hub = await openTestHub(servers, { pruneIntervalMs: 50 });
    try {
      t.truthy(hub.pruner);
      await hub.store.docs.insert(OIDC_USED_STATES_COLLECTION, 'st-old', { at: ago(60 * MIN, new Date()) });
      await hub.store.docs.insert(OIDC_USED_STATES_COLLECTION, 'st-live', { at: new Date().toISOString() });
      await eventually(async () => (await hub.store.docs.get(OIDC_USED_STATES_COLLECTION, 'st-old')) === null);
      t.truthy(await hub.store.docs.get(OIDC_USED_STATES_COLLECTION, 'st-live'));
    } finally {
      await hub.close();
    }
  } finally {
    await servers.dispose();
  }
});
