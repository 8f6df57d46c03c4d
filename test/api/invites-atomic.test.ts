/**
 * Registering with an invite code claims the code, then writes the account. These tests make that account
 * write fail for real, after the claim, inside the hub's own SQLite store: a trigger (added through a second
 * connection to the same database file) aborts updates of one user row. The store is not mocked; the failure
 * is what a real store error (a full disk, a lock held too long) would look like to the hub.
 */
import test from 'ava';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { INVITES_COLLECTION, inviteMatches } from '../../core/auth/invites.js';
import { preRegisterUser } from '../../core/auth/service.js';
import { serversForFile } from '../helpers/hub.js';
import { openApiHub, type ApiHub } from './support.js';

const servers = serversForFile();
const CLI = { type: 'system' as const, id: 'voxa-cli' };

async function invited(api: ApiHub, email: string) {
  return preRegisterUser(api.hub.store, api.hub.config.natsNamespace, { email, role: 'agent', workspaceId: api.hub.config.defaultWorkspaceId }, CLI);
}

/** Makes every update of the user row with this email fail, until the returned function is called. */
function failAccountWrites(api: ApiHub, email: string): () => void {
  const db = new Database(join(api.hub.config.dataDir, 'voxa.db'), { timeout: 5000 });
  // The email is a test constant of plain characters; a trigger body cannot take bound parameters.
  db.exec(`CREATE TRIGGER test_refuse_account_write BEFORE UPDATE ON users WHEN old.email = '${email}'
           BEGIN SELECT RAISE(ABORT, 'account write refused by the test'); END`);
  return () => {
    db.exec('DROP TRIGGER test_refuse_account_write');
    db.close();
  };
}

const register = (api: ApiHub, email: string, name: string, invite: string) =>
  api.http.post('/v1/auth/register').send({ email, password: `long enough pw ${name}`, name, invite });

test('an account write that fails after the code was claimed leaves the code usable', async (t) => {
  const api = await openApiHub(servers);
  try {
    const email = 'fails-once@example.test';
    const { user, invite } = await invited(api, email);
    const restore = failAccountWrites(api, email);
    let failed;
    try {
      failed = await register(api, email, 'First', invite.code);
    } finally {
      restore();
    }
    t.is(failed.status, 500, JSON.stringify(failed.body));
    t.is(failed.body.error.code, 'INTERNAL');
    t.is((await api.hub.store.getUser(user.id))?.passwordHash, null, 'the account is still unregistered');
    t.is((await api.hub.store.docs.get<{ usedAt?: string }>(INVITES_COLLECTION, user.id))?.usedAt, undefined, 'the claim was handed back');
    t.true(await inviteMatches(api.hub.store.docs, user.id, invite.code), 'the code still matches');

    // The invited person tries again with the same code, and gets the account with its role.
    const again = await register(api, email, 'Second', invite.code);
    t.is(again.status, 201, JSON.stringify(again.body));
    t.is(again.body.user.id, user.id);
    t.is(again.body.user.role, 'agent');
    t.is(again.body.user.name, 'Second');
    t.is((await api.http.post('/v1/auth/login').send({ email, password: 'long enough pw Second' })).status, 200);
    // Now it is spent.
    t.false(await inviteMatches(api.hub.store.docs, user.id, invite.code));
    t.is((await register(api, email, 'Third', invite.code)).body.error.code, 'EMAIL_TAKEN');
  } finally {
    await api.close();
  }
});

test('two registrations racing with one code while the account write fails: neither spends the code', async (t) => {
  const api = await openApiHub(servers);
  try {
    const email = 'race-fails@example.test';
    const { user, invite } = await invited(api, email);
    const restore = failAccountWrites(api, email);
    let both;
    try {
      both = await Promise.all([register(api, email, 'One', invite.code), register(api, email, 'Two', invite.code)]);
    } finally {
      restore();
    }
    const shown = JSON.stringify(both.map((r) => [r.status, r.body]));
    // Whoever held the claim failed on the account write (500); the other either lost the claim to it (409
    // CONFLICT) or claimed after the hand-back and failed the same way.
    t.true(both.some((r) => r.status === 500), shown);
    for (const r of both) {
      t.true(r.status === 500 || (r.status === 409 && r.body.error.code === 'CONFLICT'), shown);
    }
    t.is((await api.hub.store.getUser(user.id))?.passwordHash, null);
    t.true(await inviteMatches(api.hub.store.docs, user.id, invite.code), 'the code still matches');
    const later = await register(api, email, 'Later', invite.code);
    t.is(later.status, 201, JSON.stringify(later.body));
    t.is(later.body.user.role, 'agent');
  } finally {
    await api.close();
  }
});

test('two registrations racing with one code: one wins, the loser gets a 409 and no account', async (t) => {
  const api = await openApiHub(servers);
  try {
    const email = 'race-wins@example.test';
    const { user, invite } = await invited(api, email);
    const both = await Promise.all([register(api, email, 'One', invite.code), register(api, email, 'Two', invite.code)]);
    const shown = JSON.stringify(both.map((r) => [r.status, r.body]));
    t.deepEqual(both.map((r) => r.status).sort(), [201, 409], shown);
    const winner = both.find((r) => r.status === 201)!;
    const loser = both.find((r) => r.status === 409)!;
    // Lost at the claim (CONFLICT), or came after the winner had registered (EMAIL_TAKEN).
    t.true(['CONFLICT', 'EMAIL_TAKEN'].includes(loser.body.error.code), shown);
    t.is(winner.body.user.id, user.id);
    const winnerName = winner.body.user.name as string;
    const loserName = winnerName === 'One' ? 'Two' : 'One';
    t.is((await api.hub.store.getUser(user.id))?.name, winnerName);
    t.is((await api.http.post('/v1/auth/login').send({ email, password: `long enough pw ${winnerName}` })).status, 200);
    t.is((await api.http.post('/v1/auth/login').send({ email, password: `long enough pw ${loserName}` })).status, 401, "the loser's password was not set");
    // The winner's registration spent the code.
    t.truthy((await api.hub.store.docs.get<{ usedAt?: string }>(INVITES_COLLECTION, user.id))?.usedAt);
    t.false(await inviteMatches(api.hub.store.docs, user.id, invite.code));
  } finally {
    await api.close();
  }
});
