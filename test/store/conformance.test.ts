/**
 * The store contract, once, for every adapter. Only the factory differs: SQLite always runs (a fresh temp
 * file per test); MongoDB runs when MONGO_URL is set (a unique database per test, dropped afterwards).
 * Point MONGO_URL at a replica set (a single-node one is enough): on a standalone server the adapter has no
 * transactions, and racing duplicate sends may then leave gaps in seq, which this suite checks against.
 */
import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Message, Role, UserRecord, Workspace } from '../../core/domain.js';
import { VoxaError, type ErrorCode } from '../../core/errors.js';
import { newId, ulid } from '../../core/ids.js';
import { MAX_WRITE_BATCH, type DocValue, type OutboxEntry, type RefreshTokenRecord, type Store } from '../../core/store/port.js';
import { SqliteStore } from '../../core/store/sqlite.js';
import { at, group, ob, send } from './support.js';

interface Harness {
  store: Store;
  /** Closes the store and opens the same data again (a restart). */
  reopen(): Promise<Store>;
  dispose(): Promise<void>;
}

interface Backend {
  name: string;
  open(): Promise<Harness>;
}

const sqlite: Backend = {
  name: 'sqlite',
  async open() {
    const dir = mkdtempSync(join(tmpdir(), 'voxa-store-'));
    const file = join(dir, 'voxa.db');
    const h: Harness = {
      store: new SqliteStore(file),
      async reopen() {
        await h.store.close();
        h.store = new SqliteStore(file);
        await h.store.init();
        return h.store;
      },
      async dispose() {
        await h.store.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
    await h.store.init();
    return h;
  },
};

const backends: Backend[] = [sqlite];

const mongoUrl = process.env.MONGO_URL;
if (mongoUrl) {
  const { MongoStore } = await import('../../core/store/mongo.js');
  const { MongoClient } = await import('mongodb');
  backends.push({
    name: 'mongo',
    async open() {
      const dbName = `voxa_test_${ulid()}`;
      const h: Harness = {
        store: new MongoStore(mongoUrl, dbName),
        async reopen() {
          await h.store.close();
          h.store = new MongoStore(mongoUrl, dbName);
          await h.store.init();
          return h.store;
        },
        async dispose() {
          await h.store.close();
          const client = await MongoClient.connect(mongoUrl);
          try {
            await client.db(dbName).dropDatabase();
          } finally {
            await client.close();
          }
        },
      };
      await h.store.init();
      return h;
    },
  });
}

// ---------- helpers ----------

const settings = { registration: 'open' as const, customersTalkToAgentsOnly: false, privatePush: false };

async function workspace(s: Store, id = 'ws1'): Promise<Workspace> {
  return s.ensureWorkspace({ id, name: `Workspace ${id}`, settings, createdAt: at(0) });
}

function userRec(overrides: Partial<UserRecord> = {}): UserRecord {
  const id = overrides.id ?? newId('usr');
  return {
    id,
    workspaceId: 'ws1',
    email: `${id}@example.test`,
    name: `User ${id}`,
    role: 'customer',
    createdAt: at(0),
    passwordHash: 'hash',
    disabled: false,
    ...overrides,
  };
}

async function rejectsWithCode(t: ExecutionContext, p: Promise<unknown>, code: ErrorCode): Promise<void> {
  const err = await t.throwsAsync(p);
  t.true(err instanceof VoxaError, `expected a VoxaError, got ${String(err)}`);
  t.is((err as VoxaError).code, code);
}

function tokenRec(overrides: Partial<RefreshTokenRecord> = {}): RefreshTokenRecord {
  const id = overrides.id ?? newId('rtk');
  return {
    id,
    userId: 'u1',
    familyId: 'fam1',
    tokenHash: `hash-${id}`,
    createdAt: at(0),
    expiresAt: at(100000),
    usedAt: null,
    revokedAt: null,
    ...overrides,
  };
}

// ---------- the suite ----------

for (const backend of backends) {
  const it = (title: string, fn: (t: ExecutionContext, s: Store, h: Harness) => Promise<void>) =>
    test(`${backend.name}: ${title}`, async (t) => {
      const h = await backend.open();
      try {
        await fn(t, h.store, h);
      } finally {
        await h.dispose();
      }
    });

  it('init is idempotent and ping answers', async (t, s) => {
    await s.init();
    await t.notThrowsAsync(s.ping());
    t.is(s.kind, backend.name as Store['kind']);
  });

  // Workspaces

  it('ensureWorkspace creates once and returns the stored workspace afterwards', async (t, s) => {
    const w = await workspace(s);
    t.is(w.name, 'Workspace ws1');
    const again = await s.ensureWorkspace({ id: 'ws1', name: 'Other name', settings: { ...settings, registration: 'closed' }, createdAt: at(5) });
    t.deepEqual(again, w);
    t.deepEqual(await s.getWorkspace('ws1'), w);
    t.is(await s.getWorkspace('nope'), null);
  });

  it('updateWorkspaceSettings merges the patch and writes its outbox entry', async (t, s) => {
    await workspace(s);
    const before = await s.outboxCount();
    const w = await s.updateWorkspaceSettings('ws1', { registration: 'invite' }, ob('workspace.updated'));
    t.deepEqual(w.settings, { ...settings, registration: 'invite' });
    t.deepEqual((await s.getWorkspace('ws1'))!.settings, w.settings);
    t.is(await s.outboxCount(), before + 1);
    const [entry] = await s.outboxPending(10, '9999');
    t.deepEqual(JSON.parse(entry!.payload), w);
  });

  // Users

  it('createUser lower-cases the email and round-trips every field', async (t, s) => {
    await workspace(s);
    const totp = { secretEnc: 'enc', enabled: true, lastStep: 5, recoveryHashes: ['a', 'b'] };
    const u = await s.createUser(userRec({ id: 'u1', email: 'Ann.Smith@Example.TEST', name: 'Ann', role: 'admin', totp }), ob('user.created'));
    t.is(u.email, 'ann.smith@example.test');
    const got = await s.getUser('u1');
    t.deepEqual(got, u);
    t.deepEqual(got!.totp, totp);
    t.deepEqual(await s.getUserByEmail('ANN.SMITH@example.test'), u);
    t.is(await s.getUser('missing'), null);
    t.is(await s.getUserByEmail('missing@example.test'), null);
    const [entry] = await s.outboxPending(10, '9999');
    t.is(JSON.parse(entry!.payload).email, 'ann.smith@example.test');
    const plain = await s.createUser(userRec({ id: 'u2', passwordHash: null }), ob('user.created'));
    t.is(plain.passwordHash, null);
    t.false('totp' in plain && plain.totp != null);
  });

  it('a duplicate email in any case throws EMAIL_TAKEN and writes nothing', async (t, s) => {
    await workspace(s);
    await s.createUser(userRec({ id: 'u1', email: 'bob@example.test' }), ob('user.created'));
    await rejectsWithCode(t, s.createUser(userRec({ id: 'u2', email: 'BOB@Example.test' }), ob('user.created')), 'EMAIL_TAKEN');
    t.is(await s.getUser('u2'), null);
    t.is(await s.outboxCount(), 1);
    // Concurrent registrations of one address: exactly one wins.
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => s.createUser(userRec({ id: `c${i}`, email: 'race@example.test' }), ob('user.created'))),
    );
    t.is(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results) if (r.status === 'rejected') t.is((r.reason as VoxaError).code, 'EMAIL_TAKEN');
    t.is(await s.outboxCount(), 2);
  });

  it('updateUser applies only the given fields and returns null for an unknown user', async (t, s) => {
    await workspace(s);
    await s.createUser(userRec({ id: 'u1', name: 'Old', role: 'customer' }), ob('user.created'));
    const u = await s.updateUser('u1', { name: 'New', disabled: true }, ob('user.updated'));
    t.is(u!.name, 'New');
    t.true(u!.disabled);
    t.is(u!.role, 'customer');
    t.is(u!.passwordHash, 'hash');
    const u2 = await s.updateUser('u1', { passwordHash: 'h2', role: 'agent', totp: { secretEnc: 's', enabled: false } }, ob('user.updated'));
    t.is(u2!.passwordHash, 'h2');
    t.is(u2!.role, 'agent');
    t.deepEqual(u2!.totp, { secretEnc: 's', enabled: false });
    t.deepEqual(await s.getUser('u1'), u2);
    t.is(await s.updateUser('missing', { name: 'x' }, ob('user.updated')), null);
    t.is(await s.outboxCount(), 3);
  });

  it('updateUser keeps tokensValidAfter, clears it with null, and refuses a value that is not an ISO time', async (t, s) => {
    await workspace(s);
    await s.createUser(userRec({ id: 'u1' }), ob('user.created'));
    t.false('tokensValidAfter' in (await s.getUser('u1'))!, 'absent until set');
    const at = '2031-05-06T07:08:09.123Z';
    const u = await s.updateUser('u1', { disabled: true, tokensValidAfter: at }, ob('user.updated'));
    t.is(u!.tokensValidAfter, at);
    t.is((await s.getUser('u1'))!.tokensValidAfter, at);
    t.is((await s.updateUser('u1', { name: 'Other' }, ob('user.updated')))!.tokensValidAfter, at, 'other changes keep it');
    await s.updateUser('u1', { tokensValidAfter: null }, ob('user.updated'));
    t.false('tokensValidAfter' in (await s.getUser('u1'))!);
    await t.throwsAsync(s.updateUser('u1', { tokensValidAfter: { $ne: null } as unknown as string }, ob('user.updated')));
    t.false('tokensValidAfter' in (await s.getUser('u1'))!, 'nothing written');
  });

  it('searchUsers matches name or email case-insensitively, takes wildcards literally, orders by name', async (t, s) => {
    await workspace(s);
    await workspace(s, 'ws2');
    const mk = (id: string, name: string, email: string, ws = 'ws1') => s.createUser(userRec({ id, name, email, workspaceId: ws }), ob('user.created'));
    await mk('u1', 'Anna', 'anna@example.test');
    await mk('u2', 'Ann', 'first@example.test');
    await mk('u3', 'Bob_Smith', 'bob@example.test');
    await mk('u4', 'Carl 100%', 'carl@example.test');
    await mk('u5', 'Bobby', 'bobby@other.test');
    await mk('u6', 'Annabel', 'annabel@example.test', 'ws2');
    await mk('u7', 'Dave', 'dave.smith@example.test');
    const names = async (q: string, limit = 10) => (await s.searchUsers('ws1', q, limit)).map((u) => u.name);
    t.deepEqual(await names('ANN'), ['Ann', 'Anna']); // other workspace excluded
    t.deepEqual(await names('_'), ['Bob_Smith']);
    t.deepEqual(await names('%'), ['Carl 100%']);
    t.deepEqual(await names('b_s'), ['Bob_Smith']);
    t.deepEqual(await names('b%'), []);
    t.deepEqual(await names('.*'), []);
    t.deepEqual(await names('OTHER.test'), ['Bobby']); // email match
    t.deepEqual(await names('bob.example'), []); // a literal dot, not "any character" (would match bob@example)
    t.deepEqual(await names('smith'), ['Bob_Smith', 'Dave']);
    t.deepEqual(await names('a', 2), ['Ann', 'Anna']);
    t.is((await s.searchUsers('ws1', 'bob', 10))[0]!.passwordHash, 'hash');
  });

  it('searchUsers with activeOnly leaves out invited and disabled users before the limit', async (t, s) => {
    await workspace(s);
    await s.createUser(userRec({ id: 'u1', name: 'Aaron', email: 'aaron@example.test', passwordHash: null }), ob('user.created'));
    await s.createUser(userRec({ id: 'u2', name: 'Abe', email: 'abe@example.test', disabled: true }), ob('user.created'));
    await s.createUser(userRec({ id: 'u3', name: 'Ada', email: 'ada@example.test' }), ob('user.created'));
    await s.createUser(userRec({ id: 'u4', name: 'Alan', email: 'alan@example.test' }), ob('user.created'));
    const names = async (limit: number, activeOnly?: boolean) => (await s.searchUsers('ws1', 'a', limit, activeOnly === undefined ? undefined : { activeOnly })).map((u) => u.name);
    t.deepEqual(await names(1, true), ['Ada']);
    t.deepEqual(await names(10, true), ['Ada', 'Alan']);
    t.deepEqual(await names(10), ['Aaron', 'Abe', 'Ada', 'Alan'], 'everyone without the option (the CLI lists invited users too)');
    t.deepEqual(await names(10, false), ['Aaron', 'Abe', 'Ada', 'Alan']);
  });

  it('searchUsers with roles lists only those roles, before the limit', async (t, s) => {
    await workspace(s);
    await s.createUser(userRec({ id: 'u1', name: 'Aaron', email: 'aaron@example.test', role: 'customer' }), ob('user.created'));
    await s.createUser(userRec({ id: 'u2', name: 'Abe', email: 'abe@example.test', role: 'agent' }), ob('user.created'));
    await s.createUser(userRec({ id: 'u3', name: 'Ada', email: 'ada@example.test', role: 'admin' }), ob('user.created'));
    await s.createUser(userRec({ id: 'u4', name: 'Alan', email: 'alan@example.test', role: 'customer' }), ob('user.created'));
    const names = async (roles: Role[], limit = 10) => (await s.searchUsers('ws1', 'a', limit, { activeOnly: true, roles })).map((u) => u.name);
    t.deepEqual(await names(['agent', 'admin']), ['Abe', 'Ada']);
    t.deepEqual(await names(['agent', 'admin'], 1), ['Abe'], 'the limit counts only listed users');
    t.deepEqual(await names(['customer']), ['Aaron', 'Alan']);
    t.deepEqual(await names([]), []);
  });

  // Refresh tokens

  it('refresh token rotation is a compare-and-set', async (t, s) => {
    const first = tokenRec({ id: 'r1' });
    await s.insertRefreshToken(first);
    t.deepEqual(await s.getRefreshTokenByHash('hash-r1'), first);
    t.is(await s.getRefreshTokenByHash('nope'), null);
    t.true(await s.rotateRefreshToken('r1', at(1), tokenRec({ id: 'r2' })));
    t.is((await s.getRefreshTokenByHash('hash-r1'))!.usedAt, at(1));
    t.deepEqual(await s.getRefreshTokenByHash('hash-r2'), tokenRec({ id: 'r2' }));
    // Second rotation of the same token: refused, and the would-be successor is not stored.
    t.false(await s.rotateRefreshToken('r1', at(2), tokenRec({ id: 'r3' })));
    t.is(await s.getRefreshTokenByHash('hash-r3'), null);
    t.is((await s.getRefreshTokenByHash('hash-r1'))!.usedAt, at(1));
    // Concurrent rotations of r2: exactly one wins.
    const wins = await Promise.all(Array.from({ length: 6 }, (_, i) => s.rotateRefreshToken('r2', at(3), tokenRec({ id: `x${i}` }))));
    t.is(wins.filter(Boolean).length, 1);
    const stored = await Promise.all(Array.from({ length: 6 }, (_, i) => s.getRefreshTokenByHash(`hash-x${i}`)));
    t.is(stored.filter(Boolean).length, 1);
  });

  it('revokeTokenFamily and revokeUserTokens revoke only their targets; a revoked token cannot rotate', async (t, s) => {
    await s.insertRefreshToken(tokenRec({ id: 'a1', familyId: 'famA' }));
    await s.insertRefreshToken(tokenRec({ id: 'a2', familyId: 'famA' }));
    await s.insertRefreshToken(tokenRec({ id: 'b1', familyId: 'famB' }));
    await s.insertRefreshToken(tokenRec({ id: 'c1', familyId: 'famC', userId: 'u2' }));
    await s.revokeTokenFamily('famA', at(5));
    t.is((await s.getRefreshTokenByHash('hash-a1'))!.revokedAt, at(5));
    t.is((await s.getRefreshTokenByHash('hash-a2'))!.revokedAt, at(5));
    t.is((await s.getRefreshTokenByHash('hash-b1'))!.revokedAt, null);
    t.false(await s.rotateRefreshToken('a2', at(6), tokenRec({ id: 'a3', familyId: 'famA' })));
    t.is(await s.getRefreshTokenByHash('hash-a3'), null);
    await s.revokeUserTokens('u1', at(7));
    t.is((await s.getRefreshTokenByHash('hash-b1'))!.revokedAt, at(7));
    t.is((await s.getRefreshTokenByHash('hash-a1'))!.revokedAt, at(5)); // the first revocation time stays
    t.is((await s.getRefreshTokenByHash('hash-c1'))!.revokedAt, null);
  });

  // Conversations

  it('createConversation stores a group and its outbox entry; getConversation reads it back', async (t, s) => {
    const c = await group(s, ['u1', 'u2', 'u3'], { title: 'Team' });
    t.deepEqual(await s.getConversation(c.id), c);
    t.deepEqual(c.members, ['u1', 'u2', 'u3']);
    t.is(c.lastSeq, 0);
    t.false('directKey' in c);
    t.is(await s.outboxCount(), 1);
    t.is(await s.getConversation('missing'), null);
  });

  it('direct conversations are deduplicated per workspace, also under concurrent creation', async (t, s) => {
    const direct = (ws: string) =>
      s.createConversation(
        { id: newId('cnv'), workspaceId: ws, type: 'direct', title: null, members: ['u1', 'u2'], createdBy: 'u1', createdAt: at(1), updatedAt: at(1), lastSeq: 0, directKey: 'u1:u2' },
        ob('conversation.created'),
      );
    const results = await Promise.all(Array.from({ length: 10 }, () => direct('ws1')));
    t.is(results.filter((r) => r.created).length, 1);
    t.is(new Set(results.map((r) => r.conversation.id)).size, 1);
    t.is(await s.outboxCount(), 1);
    const other = await direct('ws2');
    t.true(other.created);
    t.not(other.conversation.id, results[0]!.conversation.id);
    // Groups share no key: two groups with the same members are two conversations.
    const g1 = await group(s, ['u1', 'u2']);
    const g2 = await group(s, ['u1', 'u2']);
    t.not(g1.id, g2.id);
  });

  it('updateMembers adds, removes and retitles; unknown conversation gives null', async (t, s) => {
    const c = await group(s, ['u1', 'u2']);
    const u = await s.updateMembers(c.id, { add: ['u3', 'u2', 'u4'], remove: ['u1'], title: 'Renamed' }, ob('conversation.updated'));
    t.deepEqual(u!.members, ['u2', 'u3', 'u4']);
    t.is(u!.title, 'Renamed');
    t.deepEqual(await s.getConversation(c.id), u);
    t.is(await s.outboxCount(), 2);
    t.is(await s.updateMembers('missing', { add: ['x'] }, ob('conversation.updated')), null);
    t.is(await s.outboxCount(), 2);
    t.true((await s.listConversations('u4')).some((x) => x.id === c.id));
    t.false((await s.listConversations('u1')).some((x) => x.id === c.id));
  });

  // Messages

  it('50 concurrent sends get seqs 1..50 with no gaps or duplicates, each with its outbox row', async (t, s) => {
    const c = await group(s, ['u1', 'u2']);
    const before = await s.outboxCount();
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => send(s, c.id, i % 2 ? 'u1' : 'u2', `m${i}`)));
    const seqs = results.map((r) => r.message.seq).sort((a, b) => a - b);
    t.deepEqual(seqs, Array.from({ length: 50 }, (_, i) => i + 1));
    t.true(results.every((r) => r.created));
    t.is((await s.getConversation(c.id))!.lastSeq, 50);
    t.is(await s.outboxCount(), before + 50);
    // The outbox captured the final message, seq included.
    const pending = await s.outboxPending(100, '9999');
    const captured = pending.filter((e) => e.subject === 'test.message.created').map((e) => (JSON.parse(e.payload) as Message).seq);
    t.deepEqual(captured.sort((a, b) => a - b), seqs);
    const page = await s.listMessages(c.id, { limit: 100 });
    t.deepEqual(page.messages.map((m) => m.seq), seqs);
    t.false(page.hasMore);
  });

  it('a repeated clientId returns the stored message and writes nothing, even concurrently', async (t, s) => {
    const c = await group(s, ['u1', 'u2']);
    const before = await s.outboxCount();
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => send(s, c.id, 'u1', `try ${i}`, { clientId: 'cli-1' })));
    t.is(results.filter((r) => r.created).length, 1);
    t.is(new Set(results.map((r) => r.message.id)).size, 1);
    t.is(await s.outboxCount(), before + 1);
    const again = await send(s, c.id, 'u1', 'later', { clientId: 'cli-1' });
    t.false(again.created);
    t.is(again.message.seq, 1);
    t.is(again.message.clientId, 'cli-1');
    t.is(await s.outboxCount(), before + 1);
    t.is((await s.getConversation(c.id))!.lastSeq, 1); // no seq consumed by repeats
    // The same clientId from another sender, and sends without clientId, are distinct messages.
    t.true((await send(s, c.id, 'u2', 'x', { clientId: 'cli-1' })).created);
    t.true((await send(s, c.id, 'u1', 'y')).created);
    t.true((await send(s, c.id, 'u1', 'y')).created);
    t.is((await s.getConversation(c.id))!.lastSeq, 4);
    t.is(await s.outboxCount(), before + 4);
  });

  it('a send to an unknown conversation fails and writes nothing', async (t, s) => {
    await rejectsWithCode(t, send(s, 'cnv_missing', 'u1', 'hi'), 'CONVERSATION_NOT_FOUND');
    t.is(await s.outboxCount(), 0);
  });

  it('sends made together where one fails: the others are stored in order, the failed one leaves nothing', async (t, s) => {
    const c = await group(s, ['u1', 'u2']);
    const before = await s.outboxCount();
    for (const round of [1, 2]) {
      // Started in one turn, so a store that group-commits takes them as one group.
      const sends = [0, 1, 2, 3, 4].map((i) =>
        i === 2
          ? s.appendMessage({ id: newId('msg'), conversationId: c.id, senderId: 'u1', text: `bad ${round}`, clientId: `bad${round}`, createdAt: at(2) }, () => {
              throw new Error('boom');
            })
          : send(s, c.id, 'u1', `r${round} m${i}`, { clientId: `r${round}-${i}` }),
      );
      const settled = await Promise.allSettled(sends);
      t.deepEqual(
        settled.map((r) => r.status),
        ['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled'],
      );
      t.is(((settled[2] as PromiseRejectedResult).reason as Error).message, 'boom');
    }
    const { messages } = await s.listMessages(c.id, { limit: 20 });
    t.deepEqual(
      messages.map((m) => [m.seq, m.text]),
      [
        [1, 'r1 m0'],
        [2, 'r1 m1'],
        [3, 'r1 m3'],
        [4, 'r1 m4'],
        [5, 'r2 m0'],
        [6, 'r2 m1'],
        [7, 'r2 m3'],
        [8, 'r2 m4'],
      ],
    );
    t.is(await s.outboxCount(), before + 8);
    t.is((await s.getConversation(c.id))!.lastSeq, 8);
    // The failed sends' clientIds are still free.
    t.true((await send(s, c.id, 'u1', 'again', { clientId: 'bad1' })).created);
  });

  it('when building the outbox entries fails, the message is not stored either', async (t, s) => {
    const c = await group(s, ['u1', 'u2']);
    const before = await s.outboxCount();
    const failing = s.appendMessage({ id: newId('msg'), conversationId: c.id, senderId: 'u1', text: 'x', clientId: 'k', createdAt: at(2) }, () => {
      throw new Error('boom');
    });
    await t.throwsAsync(failing, { message: 'boom' });
    t.deepEqual((await s.listMessages(c.id, { limit: 10 })).messages, []);
    t.is(await s.outboxCount(), before);
    // The clientId is still free.
    t.true((await send(s, c.id, 'u1', 'x', { clientId: 'k' })).created);
  });

  it('messages map to the domain shape: optional fields only when present', async (t, s) => {
    const c = await group(s, ['u1', 'u2']);
    const plain = (await send(s, c.id, 'u1', 'hello', { t: 3 })).message;
    t.deepEqual(plain, { id: plain.id, conversationId: c.id, seq: 1, senderId: 'u1', text: 'hello', clientId: null, createdAt: at(3) });
    const withFiles = (await send(s, c.id, 'u1', 'files', { attachments: ['fil_1', 'fil_2'], clientId: 'c1' })).message;
    t.deepEqual(withFiles.attachments, ['fil_1', 'fil_2']);
    t.deepEqual(await s.getMessage(c.id, withFiles.id), withFiles);
    t.is(await s.getMessage(c.id, 'msg_missing'), null);
    t.is(await s.getMessage('cnv_other', plain.id), null); // the conversation id must match too
  });

  it('history pages with before, after and limit and reports hasMore', async (t, s) => {
    const c = await group(s, ['u1', 'u2']);
    t.deepEqual(await s.listMessages(c.id, { limit: 5 }), { messages: [], hasMore: false });
    for (let i = 1; i <= 10; i++) await send(s, c.id, 'u1', `m${i}`, { t: 10 + i });
    const seqs = async (q: { before?: number; after?: number; limit: number }) => {
      const r = await s.listMessages(c.id, q);
      return [r.messages.map((m) => m.seq), r.hasMore];
    };
    t.deepEqual(await seqs({ limit: 3 }), [[8, 9, 10], true]);
    t.deepEqual(await seqs({ limit: 10 }), [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], false]);
    t.deepEqual(await seqs({ limit: 20 }), [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], false]);
    t.deepEqual(await seqs({ before: 8, limit: 3 }), [[5, 6, 7], true]);
    t.deepEqual(await seqs({ before: 4, limit: 3 }), [[1, 2, 3], false]);
    t.deepEqual(await seqs({ before: 3, limit: 5 }), [[1, 2], false]);
    t.deepEqual(await seqs({ before: 1, limit: 5 }), [[], false]);
    t.deepEqual(await seqs({ after: 7, limit: 2 }), [[8, 9], true]);
    t.deepEqual(await seqs({ after: 7, limit: 3 }), [[8, 9, 10], false]);
    t.deepEqual(await seqs({ after: 10, limit: 3 }), [[], false]);
    t.deepEqual(await seqs({ after: 0, limit: 4 }), [[1, 2, 3, 4], true]);
    t.deepEqual(await seqs({ after: 2, before: 6, limit: 10 }), [[3, 4, 5], false]);
    t.deepEqual(await seqs({ after: 2, before: 9, limit: 3 }), [[3, 4, 5], true]);
  });

  it('editMessage changes the text and sets editedAt; unknown gives null', async (t, s) => {
    const c = await group(s, ['u1', 'u2']);
    const m = (await send(s, c.id, 'u1', 'first')).message;
    t.false('editedAt' in m);
    const before = await s.outboxCount();
    const e = await s.editMessage(c.id, m.id, 'second', at(50), ob('message.updated'));
    t.is(e!.text, 'second');
    t.is(e!.editedAt, at(50));
    t.is(e!.seq, m.seq);
    t.deepEqual(await s.getMessage(c.id, m.id), e);
    t.is(await s.outboxCount(), before + 1);
    t.is(await s.editMessage(c.id, 'msg_missing', 'x', at(51), ob('message.updated')), null);
    t.is(await s.outboxCount(), before + 1);
  });

  it('deleteMessage leaves a tombstone, is idempotent, and a deleted message cannot be edited', async (t, s) => {
    const c = await group(s, ['u1', 'u2']);
    const m = (await send(s, c.id, 'u1', 'secret', { attachments: ['fil_1'] })).message;
    const before = await s.outboxCount();
    const d = await s.deleteMessage(c.id, m.id, at(60), ob('message.deleted'));
    t.is(d!.text, '');
    t.true(d!.deleted);
    t.false('attachments' in d!);
    t.is(d!.seq, m.seq);
    t.is(await s.outboxCount(), before + 1);
    const twice = await s.deleteMessage(c.id, m.id, at(61), ob('message.deleted'));
    t.deepEqual(twice, d);
    t.is(await s.outboxCount(), before + 1);
    const edited = await s.editMessage(c.id, m.id, 'resurrect', at(62), ob('message.updated'));
    t.deepEqual(edited, d);
    t.is(await s.outboxCount(), before + 1);
    const history = await s.listMessages(c.id, { limit: 10 });
    t.deepEqual(history.messages, [d]);
    t.false(JSON.stringify(history).includes('secret'));
    t.is(await s.deleteMessage(c.id, 'msg_missing', at(63), ob('message.deleted')), null);
  });

  it('listChangedMessages lists edits and deletes after a time, up to a seq, in seq order and paged', async (t, s) => {
    const c = await group(s, ['u1', 'u2']);
    const other = await group(s, ['u1', 'u2']);
    const ms: Message[] = [];
    for (let i = 1; i <= 8; i++) ms.push((await send(s, c.id, 'u1', `m${i}`)).message);
    const o = (await send(s, other.id, 'u1', 'elsewhere')).message;
    await s.editMessage(c.id, ms[0]!.id, 'old edit', at(20), ob('message.updated'));
    await s.editMessage(c.id, ms[4]!.id, 'm5 edited', at(40), ob('message.updated'));
    await s.deleteMessage(c.id, ms[2]!.id, at(41), ob('message.deleted'));
    await s.editMessage(c.id, ms[5]!.id, 'm6 edited', at(42), ob('message.updated'));
    await s.editMessage(c.id, ms[6]!.id, 'm7 edited', at(43), ob('message.updated'));
    await s.editMessage(other.id, o.id, 'other edited', at(44), ob('message.updated'));
    const list = (q: Parameters<Store['listChangedMessages']>[1]) =>
      s.listChangedMessages(c.id, q).then((r) => [r.messages.map((m) => m.seq), r.hasMore] as const);

    // Strictly after `since`, only up to `upToSeq`; other conversations never show.
    t.deepEqual(await list({ since: at(30), upToSeq: 6, limit: 10 }), [[3, 5, 6], false]);
    t.deepEqual(await list({ since: at(40), upToSeq: 100, limit: 10 }), [[3, 6, 7], false]);
    t.deepEqual(await list({ since: at(10), upToSeq: 8, limit: 10 }), [[1, 3, 5, 6, 7], false]);
    t.deepEqual(await list({ since: at(50), upToSeq: 8, limit: 10 }), [[], false]);
    // Paged by afterSeq.
    t.deepEqual(await list({ since: at(10), upToSeq: 8, limit: 2 }), [[1, 3], true]);
    t.deepEqual(await list({ since: at(10), upToSeq: 8, limit: 2, afterSeq: 3 }), [[5, 6], true]);
    t.deepEqual(await list({ since: at(10), upToSeq: 8, limit: 2, afterSeq: 6 }), [[7], false]);
    // The messages come in their current state: a tombstone for the deleted one.
    const { messages } = await s.listChangedMessages(c.id, { since: at(30), upToSeq: 5, limit: 10 });
    t.deepEqual(messages, [await s.getMessage(c.id, ms[2]!.id), await s.getMessage(c.id, ms[4]!.id)]);
    t.true(messages[0]!.deleted);
    t.is(messages[0]!.text, '');
    // A time with an offset is the same instant as at(40), not compared as text.
    t.is(Date.parse('2029-12-31T19:00:40.000-05:00'), Date.parse(at(40)));
    t.deepEqual(await list({ since: '2029-12-31T19:00:40.000-05:00', upToSeq: 8, limit: 10 }), [[3, 6, 7], false]);
    await t.throwsAsync(s.listChangedMessages(c.id, { since: 'yesterday', upToSeq: 8, limit: 10 }), { instanceOf: VoxaError });
  });

  // Read markers

  it('read markers only move forward and write an outbox entry only when they move', async (t, s) => {
    const c = await group(s, ['u1', 'u2', 'u3']);
    for (let i = 0; i < 5; i++) await send(s, c.id, 'u2', `m${i}`);
    const before = await s.outboxCount();
    t.is(await s.getReadMarker(c.id, 'u1'), 0);
    t.deepEqual(await s.setReadMarker(c.id, 'u1', 3, ob('message.seen')), { seq: 3, changed: true });
    t.deepEqual(await s.setReadMarker(c.id, 'u1', 2, ob('message.seen')), { seq: 3, changed: false });
    t.deepEqual(await s.setReadMarker(c.id, 'u1', 3, ob('message.seen')), { seq: 3, changed: false });
    t.deepEqual(await s.setReadMarker(c.id, 'u1', 5, ob('message.seen')), { seq: 5, changed: true });
    t.deepEqual(await s.setReadMarker(c.id, 'u2', 0, ob('message.seen')), { seq: 0, changed: false });
    t.is(await s.getReadMarker(c.id, 'u1'), 5);
    t.is(await s.outboxCount(), before + 2);
    const [, second] = (await s.outboxPending(100, '9999')).filter((e) => e.subject === 'test.message.seen');
    t.is(JSON.parse(second!.payload), 5);
    t.deepEqual(await s.getReadMarkers(c.id), { u1: 5, u2: 0, u3: 0 });
    // Concurrent markers settle on the highest.
    await Promise.all([4, 1, 3, 2].map((n) => s.setReadMarker(c.id, 'u3', n, ob('message.seen'))));
    t.is(await s.getReadMarker(c.id, 'u3'), 4);
  });

  it('listConversations: most recently active first, last message, read marker and unread count', async (t, s) => {
    const a = await group(s, ['u1', 'u2'], { createdAt: at(1), updatedAt: at(1), title: 'A' });
    const b = await group(s, ['u1', 'u3'], { createdAt: at(2), updatedAt: at(2), title: 'B' });
    const empty = await group(s, ['u1', 'u2', 'u3'], { createdAt: at(3), updatedAt: at(3), title: 'Empty' });
    await group(s, ['u2', 'u3'], { createdAt: at(4), updatedAt: at(4), title: 'Not mine' });
    await send(s, a.id, 'u2', 'a1', { t: 10 });
    await send(s, a.id, 'u1', 'a2 (mine)', { t: 11 });
    const a3 = (await send(s, a.id, 'u2', 'a3', { t: 12 })).message;
    await send(s, a.id, 'u2', 'a4', { t: 13 });
    await send(s, b.id, 'u3', 'b1', { t: 20 });
    await send(s, b.id, 'u3', 'b2', { t: 21 });
    await s.deleteMessage(a.id, a3.id, at(30), ob('message.deleted'));
    await s.setReadMarker(b.id, 'u1', 1, ob('message.seen'));

    const list = await s.listConversations('u1');
    t.deepEqual(list.map((c) => c.title), ['B', 'A', 'Empty']);
    const [lb, la, le] = list;
    t.is(lb!.updatedAt, at(21));
    t.is(lb!.lastMessage!.text, 'b2');
    t.is(lb!.readSeq, 1);
    t.is(lb!.unreadCount, 1);
    t.is(la!.lastMessage!.seq, 4);
    t.is(la!.readSeq, 0);
    t.is(la!.unreadCount, 2); // a1 and a4: not own, not deleted
    t.deepEqual(la!.members, ['u1', 'u2']);
    t.is(la!.lastSeq, 4);
    t.is(le!.id, empty.id);
    t.is(le!.lastMessage, null);
    t.is(le!.unreadCount, 0);

    // A new message in A moves it to the top; u2 sees its own unread view.
    await send(s, a.id, 'u1', 'a5', { t: 40 });
    t.deepEqual((await s.listConversations('u1')).map((c) => c.title), ['A', 'B', 'Empty']);
    const forU2 = await s.listConversations('u2');
    t.deepEqual(forU2.map((c) => c.title), ['A', 'Not mine', 'Empty']);
    t.is(forU2[0]!.unreadCount, 2); // a2 and a5, from u1
    t.deepEqual((await s.listConversations('u1', { limit: 1 })).map((c) => c.title), ['A']);
    t.deepEqual(await s.listConversations('nobody'), []);
  });

  it('listConversations pages from a position: after the last one seen, ties on updatedAt broken by id', async (t, s) => {
    // Four conversations active at the same instant and one older: the same order a page at a time as whole.
    const same = await Promise.all([0, 1, 2, 3].map((i) => group(s, ['u1', 'u2'], { createdAt: at(5), updatedAt: at(5), title: `same ${i}` })));
    await group(s, ['u1', 'u2'], { createdAt: at(1), updatedAt: at(1), title: 'older' });
    const whole = (await s.listConversations('u1')).map((c) => c.title);
    t.is(whole.length, 5);
    t.is(whole[4], 'older');
    t.deepEqual(whole.slice(0, 4), [...same].sort((x, y) => (x.id < y.id ? 1 : -1)).map((c) => c.title), 'ties: by id, descending');
    const paged: string[] = [];
    let after: { updatedAt: string; id: string } | undefined;
    for (;;) {
      const page = await s.listConversations('u1', { limit: 2, ...(after ? { after } : {}) });
      paged.push(...page.map((c) => c.title!));
      if (page.length < 2) break;
      after = { updatedAt: page[1]!.updatedAt, id: page[1]!.id };
    }
    t.deepEqual(paged, whole);
    t.deepEqual(await s.listConversations('u1', { after: { updatedAt: at(1), id: 'zzz' } }).then((l) => l.map((c) => c.title)), ['older'], 'same time, smaller id');
    t.deepEqual(await s.listConversations('u1', { after: { updatedAt: at(0), id: 'a' } }), []);
  });

  // Outbox

  it('outbox: pending oldest first before a cutoff, delete and count', async (t, s) => {
    const mk = (n: number): OutboxEntry[] => [
      { eventId: `evt_${n}`, subject: `s.${n}`, payload: `{"n":${n}}`, headers: { traceparent: `tp${n}` }, createdAt: at(n) },
    ];
    // Written out of order, through real changes.
    for (const n of [3, 1, 2, 5]) await s.createUser(userRec({ id: `u${n}` }), () => mk(n));
    t.is(await s.outboxCount(), 4);
    const pending = await s.outboxPending(10, at(4));
    t.deepEqual(pending.map((e) => e.eventId), ['evt_1', 'evt_2', 'evt_3']);
    t.deepEqual(pending[0], mk(1)[0]);
    t.deepEqual((await s.outboxPending(2, at(100))).map((e) => e.eventId), ['evt_1', 'evt_2']);
    await s.outboxDelete(['evt_1', 'evt_3', 'evt_unknown']);
    await s.outboxDelete([]);
    t.is(await s.outboxCount(), 2);
    t.deepEqual((await s.outboxPending(10, at(100))).map((e) => e.eventId), ['evt_2', 'evt_5']);
  });

  // Documents

  it('docs: put, get, insert-if-absent, replace, delete', async (t, s) => {
    t.is(await s.docs.get('hooks', 'h1'), null);
    await s.docs.put('hooks', 'h1', { url: 'http://a', n: 1 });
    t.deepEqual(await s.docs.get('hooks', 'h1'), { url: 'http://a', n: 1 });
    t.false(await s.docs.insert('hooks', 'h1', { url: 'http://b' }));
    t.deepEqual(await s.docs.get('hooks', 'h1'), { url: 'http://a', n: 1 });
    t.true(await s.docs.insert('hooks', 'h2', { url: 'http://b', nested: { deep: [1, 2] } }));
    t.deepEqual(await s.docs.get('hooks', 'h2'), { url: 'http://b', nested: { deep: [1, 2] } });
    await s.docs.put('hooks', 'h1', { url: 'http://c' });
    t.deepEqual(await s.docs.get('hooks', 'h1'), { url: 'http://c' });
    t.is(await s.docs.get('other', 'h1'), null); // collections are separate
    t.true(await s.docs.delete('hooks', 'h1'));
    t.false(await s.docs.delete('hooks', 'h1'));
    t.is(await s.docs.count('hooks'), 1);
  });

  it('docs: writeAll writes inserts and puts across collections together, in order', async (t, s) => {
    await s.docs.put('rows', 'p1', { v: 1 });
    t.deepEqual(
      await s.docs.writeAll([
        { op: 'insert', collection: 'keys', id: 'k1', doc: { rowId: 'r1' } },
        { op: 'insert', collection: 'rows', id: 'r1', doc: { v: 'new', nested: { deep: [1, 2] } } },
        { op: 'put', collection: 'rows', id: 'p1', doc: { v: 2 } },
        // A later write of the same id wins, as it would one call after the other.
        { op: 'insert', collection: 'rows', id: 'r2', doc: { v: 'first' } },
        { op: 'put', collection: 'rows', id: 'r2', doc: { v: 'second' } },
      ]),
      { written: true },
    );
    t.deepEqual(await s.docs.get('keys', 'k1'), { rowId: 'r1' });
    t.deepEqual(await s.docs.get('rows', 'r1'), { v: 'new', nested: { deep: [1, 2] } });
    t.deepEqual(await s.docs.get('rows', 'p1'), { v: 2 }, 'a put replaces');
    t.deepEqual(await s.docs.get('rows', 'r2'), { v: 'second' });
    t.is(await s.docs.count('rows'), 3);
    t.deepEqual(await s.docs.writeAll([]), { written: true }, 'an empty batch');
    t.is(await s.docs.count('keys'), 1);
  });

  it('docs: writeAll writes nothing when an insert finds its id taken, and names that insert', async (t, s) => {
    await s.docs.put('keys', 'k1', { rowId: 'r0' });
    await s.docs.put('rows', 'p1', { v: 1 });
    const batch = (key: string) => [
      { op: 'put' as const, collection: 'rows', id: 'p1', doc: { v: 'changed' } },
      { op: 'insert' as const, collection: 'keys', id: 'k2', doc: { rowId: 'r9' } },
      { op: 'insert' as const, collection: 'keys', id: key, doc: { rowId: 'r9' } },
      { op: 'insert' as const, collection: 'rows', id: 'r9', doc: { v: 9 } },
    ];
    t.deepEqual(await s.docs.writeAll(batch('k1')), { written: false, conflict: { collection: 'keys', id: 'k1' } });
    t.deepEqual(await s.docs.get('rows', 'p1'), { v: 1 }, 'the put before the conflict was not applied');
    t.is(await s.docs.get('keys', 'k2'), null, 'nor the insert before it');
    t.is(await s.docs.get('rows', 'r9'), null, 'nor the one after it');
    t.deepEqual(await s.docs.get('keys', 'k1'), { rowId: 'r0' }, 'the taken id keeps its document');
    // An id taken by an earlier write of the same batch counts too.
    t.deepEqual(await s.docs.writeAll(batch('k2')), { written: false, conflict: { collection: 'keys', id: 'k2' } });
    t.deepEqual(
      await s.docs.writeAll([
        { op: 'put', collection: 'keys', id: 'k5', doc: {} },
        { op: 'insert', collection: 'keys', id: 'k5', doc: {} },
      ]),
      { written: false, conflict: { collection: 'keys', id: 'k5' } },
    );
    t.is(await s.docs.count('keys'), 1);
    t.is(await s.docs.count('rows'), 1);
    // The same batch with a free key goes through whole.
    t.deepEqual(await s.docs.writeAll(batch('k3')), { written: true });
    t.deepEqual(await s.docs.get('rows', 'p1'), { v: 'changed' });
    t.is(await s.docs.count('keys'), 3);
  });

  it('docs: concurrent writeAll batches inserting one key: exactly one is written, whole', async (t, s) => {
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        s.docs.writeAll([
          { op: 'insert', collection: 'keys', id: 'race', doc: { rowId: `row${i}` } },
          { op: 'insert', collection: 'rows', id: `row${i}`, doc: { i } },
        ]),
      ),
    );
    t.is(results.filter((r) => r.written).length, 1);
    t.true(results.filter((r) => !r.written).every((r) => !r.written && r.conflict.collection === 'keys' && r.conflict.id === 'race'));
    const key = await s.docs.get<{ rowId: string }>('keys', 'race');
    const rows = await s.docs.find<{ i: number }>('rows');
    t.is(rows.length, 1, 'only the winner wrote its row');
    t.is(key!.rowId, `row${rows[0]!.i}`, 'the key and its row belong together');
  });

  it('docs: writeAll rejects bad input with VALIDATION_FAILED and writes none of the batch', async (t, s) => {
    const ok = { op: 'insert' as const, collection: 'keys', id: 'fine', doc: { a: 1 } };
    const bad = (w: unknown) => s.docs.writeAll([ok, w as never]);
    await rejectsWithCode(t, s.docs.writeAll({ op: 'insert' } as never), 'VALIDATION_FAILED');
    await rejectsWithCode(t, bad(null), 'VALIDATION_FAILED');
    await rejectsWithCode(t, bad({ op: 'delete', collection: 'keys', id: 'x', doc: {} }), 'VALIDATION_FAILED');
    await rejectsWithCode(t, bad({ op: 'put', collection: 'bad name!', id: 'x', doc: {} }), 'VALIDATION_FAILED');
    await rejectsWithCode(t, bad({ op: 'put', collection: 'keys', id: { $ne: null }, doc: {} }), 'VALIDATION_FAILED');
    await rejectsWithCode(t, bad({ op: 'put', collection: 'keys', id: '', doc: {} }), 'VALIDATION_FAILED');
    await rejectsWithCode(t, bad({ op: 'put', collection: 'keys', id: 'x', doc: null }), 'VALIDATION_FAILED');
    await rejectsWithCode(t, bad({ op: 'put', collection: 'keys', id: 'x', doc: 'text' }), 'VALIDATION_FAILED');
    const tooMany = Array.from({ length: MAX_WRITE_BATCH + 1 }, (_, i) => ({ op: 'put' as const, collection: 'keys', id: `k${i}`, doc: {} }));
    await rejectsWithCode(t, s.docs.writeAll(tooMany), 'VALIDATION_FAILED');
    t.is(await s.docs.count('keys'), 0);
  });

  it('docs: find with equality filters, ordering, limit and afterId; count', async (t, s) => {
    const rows = [
      { id: 'd1', kind: 'a', n: 3, on: true, owner: 'x' },
      { id: 'd2', kind: 'b', n: 1, on: false, owner: null },
      { id: 'd3', kind: 'a', n: 2, on: true },
      { id: 'd4', kind: 'a', n: 5, on: false, owner: 'y' },
      { id: 'd5', kind: '1', n: 1, on: true, owner: 'x' },
    ];
    for (const r of rows) await s.docs.put('items', r.id, r);
    await s.docs.put('elsewhere', 'd9', { kind: 'a' });
    const ids = async (filter?: Record<string, DocValue>, opts?: Parameters<Store['docs']['find']>[2]) =>
      (await s.docs.find<{ id: string }>('items', filter, opts)).map((d) => d.id);
    t.deepEqual(await ids(), ['d1', 'd2', 'd3', 'd4', 'd5']);
    t.deepEqual(await ids({ kind: 'a' }), ['d1', 'd3', 'd4']);
    t.deepEqual(await ids({ kind: 'a', on: true }), ['d1', 'd3']);
    t.deepEqual(await ids({ on: false }), ['d2', 'd4']);
    t.deepEqual(await ids({ n: 1 }), ['d2', 'd5']);
    t.deepEqual(await ids({ kind: 1 }), []); // a number does not match the string '1'
    t.deepEqual(await ids({ kind: '1' }), ['d5']);
    t.deepEqual(await ids({ owner: null }), ['d2', 'd3']); // null matches null and missing
    t.deepEqual(await ids({ owner: 'x' }), ['d1', 'd5']);
    t.deepEqual(await ids({ missingField: 'z' }), []);
    t.deepEqual(await ids({ kind: 'a' }, { orderBy: 'n' }), ['d3', 'd1', 'd4']);
    t.deepEqual(await ids({ kind: 'a' }, { orderBy: 'n', desc: true }), ['d4', 'd1', 'd3']);
    t.deepEqual(await ids(undefined, { desc: true, limit: 2 }), ['d5', 'd4']);
    t.deepEqual(await ids(undefined, { afterId: 'd2', limit: 2 }), ['d3', 'd4']);
    t.deepEqual(await ids(undefined, { afterId: 'd3', desc: true }), ['d2', 'd1']);
    t.is(await s.docs.count('items'), 5);
    t.is(await s.docs.count('items', { kind: 'a' }), 3);
    t.is(await s.docs.count('items', { kind: 'a', on: false }), 1);
  });

  it('docs: deleteBefore prunes string fields below a cutoff in batches, keeps the rest', async (t, s) => {
    await s.docs.put('expiring', 'old1', { at: '2030-01-01T00:00:00.000Z' });
    await s.docs.put('expiring', 'old2', { at: '2030-01-01T00:00:01.000Z' });
    await s.docs.put('expiring', 'old3', { at: '2030-01-01T00:00:02.000Z' });
    await s.docs.put('expiring', 'edge', { at: '2030-01-01T00:01:00.000Z' }); // equal to the cutoff: kept
    await s.docs.put('expiring', 'live', { at: '2030-01-02T00:00:00.000Z' });
    await s.docs.put('expiring', 'none', { other: 'x' });
    await s.docs.put('expiring', 'num', { at: 5 }); // not a time: never "before"
    await s.docs.put('kept', 'old', { at: '2000-01-01T00:00:00.000Z' }); // another collection
    const cutoff = '2030-01-01T00:01:00.000Z';
    t.is(await s.docs.deleteBefore('expiring', 'at', cutoff, 2), 2);
    t.is(await s.docs.deleteBefore('expiring', 'at', cutoff, 2), 1);
    t.is(await s.docs.deleteBefore('expiring', 'at', cutoff, 2), 0);
    t.deepEqual((await s.docs.find<{ at?: unknown }>('expiring')).length, 4);
    for (const id of ['edge', 'live', 'none', 'num']) t.truthy(await s.docs.get('expiring', id), id);
    t.truthy(await s.docs.get('kept', 'old'));
    await rejectsWithCode(t, s.docs.deleteBefore('expiring', 'a.b', cutoff), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.docs.deleteBefore('expiring', 'at', { $gt: '' } as unknown as string), 'VALIDATION_FAILED');
  });

  it('docs: ensureIndex is idempotent and finds answer the same with the index', async (t, s) => {
    for (let i = 0; i < 12; i++) await s.docs.put('indexed', `d${String(i).padStart(2, '0')}`, { ws: `w${i % 3}`, day: `d${i % 2}`, n: i });
    await s.docs.put('other', 'd00', { ws: 'w0', day: 'd0' });
    const q = () => s.docs.find<{ n: number }>('indexed', { ws: 'w0', day: 'd0' });
    const before = (await q()).map((d) => d.n);
    await s.docs.ensureIndex('indexed', ['ws', 'day']);
    await s.docs.ensureIndex('indexed', ['ws', 'day']);
    await s.docs.ensureIndex('indexed', ['ws']);
    t.deepEqual((await q()).map((d) => d.n), before);
    t.deepEqual(before, [0, 6]);
    t.deepEqual((await s.docs.find<{ n: number }>('indexed', { ws: 'w1' }, { afterId: 'd01', limit: 2 })).map((d) => d.n), [4, 7]);
    t.is(await s.docs.count('indexed', { ws: 'w2' }), 4);
    await rejectsWithCode(t, s.docs.ensureIndex('indexed', ['a.b']), 'VALIDATION_FAILED');
  });

  it('docs: operator objects and unsafe field names are rejected with VALIDATION_FAILED', async (t, s) => {
    await s.docs.put('items', 'd1', { owner: 'x', secret: 's' });
    const asFilter = (v: unknown) => v as Record<string, DocValue>;
    await rejectsWithCode(t, s.docs.find('items', asFilter({ owner: { $ne: null } })), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.docs.find('items', asFilter({ owner: { $gt: '' } })), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.docs.find('items', asFilter({ owner: ['x'] })), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.docs.count('items', asFilter({ owner: { $exists: true } })), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.docs.find('items', asFilter({ $where: 'true' })), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.docs.find('items', asFilter({ 'a.b': 'x' })), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.docs.find('items', asFilter({ "owner') OR 1=1 --": 'x' })), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.docs.find('items', {}, { orderBy: 'n; DROP TABLE docs' }), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.docs.get('items', { $ne: null } as unknown as string), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.docs.find('items', {}, { afterId: { $gt: '' } as unknown as string }), 'VALIDATION_FAILED');
    // Nothing was disturbed.
    t.deepEqual(await s.docs.get('items', 'd1'), { owner: 'x', secret: 's' });
  });

  it('operator objects in place of ids or text are rejected with VALIDATION_FAILED, never run', async (t, s) => {
    await workspace(s);
    await s.createUser(userRec({ id: 'u1', email: 'only@example.test' }), ob('user.created'));
    const op = { $ne: null } as unknown as string;
    await rejectsWithCode(t, s.getUser(op), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.getUserByEmail(op), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.searchUsers('ws1', op, 10), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.searchUsers(op, 'only', 10), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.getRefreshTokenByHash(op), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.getConversation(op), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.listConversations(op), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.listMessages(op, { limit: 5 }), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.listMessages('cnv_x', { limit: 5, before: { $gt: 0 } as unknown as number }), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.getMessage('cnv_x', op), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.getReadMarker('cnv_x', op), 'VALIDATION_FAILED');
    t.is((await s.searchUsers('ws1', 'only', 10)).length, 1);
  });

  // Restart durability

  it('insertDoc writes the document and its outbox entries together, once', async (t, s) => {
    const before = await s.outboxCount();
    t.true(await s.insertDoc('files', 'fil_1', { name: 'a.png', size: 3 }, ob('file.uploaded')));
    t.deepEqual(await s.docs.get('files', 'fil_1'), { name: 'a.png', size: 3 });
    t.is(await s.outboxCount(), before + 1);
    t.false(await s.insertDoc('files', 'fil_1', { name: 'other' }, ob('file.uploaded')));
    t.deepEqual(await s.docs.get('files', 'fil_1'), { name: 'a.png', size: 3 });
    t.is(await s.outboxCount(), before + 1, 'a duplicate writes no event');
    t.deepEqual((await s.docs.find('files', { name: 'a.png' })).length, 1);
  });

  it('putDoc and deleteDoc commit the document change and its outbox entries together', async (t, s) => {
    const before = await s.outboxCount();
    // A document first written without an event (docs.put) can then be changed with one.
    await s.docs.put('connections', 'con_1', { name: 'a', status: 'active' });
    await s.putDoc('connections', 'con_1', { name: 'a', status: 'disabled' }, ob('connection.changed'));
    t.deepEqual(await s.docs.get('connections', 'con_1'), { name: 'a', status: 'disabled' });
    await s.putDoc('connections', 'con_2', { name: 'b', status: 'active' }, ob('connection.changed'));
    t.is((await s.docs.find('connections', { status: 'active' })).length, 1);
    t.is(await s.outboxCount(), before + 2);
    const seen: unknown[] = [];
    t.true(await s.deleteDoc('connections', 'con_1', (doc) => (seen.push(doc), ob('connection.changed')(doc))));
    t.deepEqual(seen, [{ name: 'a', status: 'disabled' }], 'the outbox builder gets the document as it was');
    t.is(await s.docs.get('connections', 'con_1'), null);
    t.is(await s.outboxCount(), before + 3);
    t.false(await s.deleteDoc('connections', 'con_1', ob('connection.changed')));
    t.is(await s.outboxCount(), before + 3, 'deleting a missing document writes no event');
    const pending = await s.outboxPending(100, new Date(Date.now() + 60_000).toISOString());
    t.is(pending.filter((e) => e.subject === 'test.connection.changed').length, 3);
  });

  it('updateDoc changes a document with its outbox entries only when the change applies, once under a race', async (t, s) => {
    await s.docs.put('connections', 'con_u', { name: 'u', status: 'active' });
    const before = await s.outboxCount();
    type Conn = { name: string; status: string };
    const toBroken = (cur: Conn): Conn | null => (cur.status === 'broken' ? null : { ...cur, status: 'broken' });
    // Ten callers race to make the same transition: one writes it (and its event), the others see it done.
    const results = await Promise.all(Array.from({ length: 10 }, () => s.updateDoc<Conn>('connections', 'con_u', toBroken, ob('connection.changed'))));
    t.is(results.filter((r) => r !== null).length, 1);
    t.deepEqual(await s.docs.get('connections', 'con_u'), { name: 'u', status: 'broken' });
    t.is(await s.outboxCount(), before + 1, 'one event for one change');
    t.is(await s.updateDoc<Conn>('connections', 'con_missing', toBroken, ob('connection.changed')), null);
    t.is(await s.outboxCount(), before + 1, 'nothing for a missing document');
  });

  // Search (issue 7)

  it('searchMessages: ranked hits with highlights, only in the caller\'s conversations, not deleted', async (t, s) => {
    const mine = await group(s, ['u1', 'u2']);
    const theirs = await group(s, ['u3', 'u4']);
    const m1 = (await send(s, mine.id, 'u2', 'The quarterly invoice is attached', { t: 11 })).message;
    const m2 = (await send(s, mine.id, 'u1', 'invoice invoice: the invoice number changed', { t: 12 })).message;
    await send(s, mine.id, 'u1', 'nothing to see here', { t: 13 });
    await send(s, theirs.id, 'u3', 'secret invoice of another team', { t: 14 });

    const res = await s.searchMessages('u1', 'Invoice', { limit: 10 });
    t.deepEqual(res.hits.map((h) => h.message.id).sort(), [m1.id, m2.id].sort());
    t.is(res.hits[0]!.message.id, m2.id, 'more occurrences rank higher');
    t.true(res.hits[0]!.score >= res.hits[1]!.score);
    t.is(res.nextCursor, null);
    for (const h of res.hits) {
      t.true(h.highlights.length >= 1);
      for (const [a, b] of h.highlights) t.is(h.snippet.slice(a, b).toLowerCase(), 'invoice');
    }
    // Users outside a conversation never see its messages; a conversation filter narrows further.
    t.deepEqual((await s.searchMessages('u3', 'invoice', { limit: 10 })).hits.map((h) => h.message.conversationId), [theirs.id]);
    t.deepEqual((await s.searchMessages('u1', 'invoice', { limit: 10, conversationId: theirs.id })).hits, []);
    t.is((await s.searchMessages('u1', 'invoice', { limit: 10, conversationId: mine.id })).hits.length, 2);
    // All terms must match; the last one also as a prefix.
    t.deepEqual((await s.searchMessages('u1', 'invoice quarter', { limit: 10 })).hits.map((h) => h.message.id), [m1.id]);
    const ids = async (q: string) => (await s.searchMessages('u1', q, { limit: 10 })).hits.map((h) => h.message.id);
    t.deepEqual(await ids('quart'), [m1.id], 'search as you type: the last term as a prefix');
    t.deepEqual(await ids('invoice attach'), [m1.id]);
    t.deepEqual(await ids('quarter invoice'), [], 'a term before the last is a whole word ("quarter" is not "quarterly")');
    t.deepEqual(await ids('voice'), [], 'never inside a word');
    t.deepEqual((await s.searchMessages('u1', 'nothing', { limit: 10 })).hits.length, 1);
    // A member who leaves stops finding the conversation.
    await s.updateMembers(mine.id, { remove: ['u2'] }, ob('conversation.updated'));
    t.deepEqual((await s.searchMessages('u2', 'invoice', { limit: 10 })).hits, []);
  });

  it('searchMessages: edits and deletes change the results at once', async (t, s) => {
    const c = await group(s, ['u1', 'u2']);
    const m = (await send(s, c.id, 'u1', 'meet at the harbour')).message;
    t.is((await s.searchMessages('u2', 'harbour', { limit: 5 })).hits.length, 1);
    await s.editMessage(c.id, m.id, 'meet at the station', at(20), ob('message.updated'));
    t.deepEqual((await s.searchMessages('u2', 'harbour', { limit: 5 })).hits, []);
    const hit = (await s.searchMessages('u2', 'station', { limit: 5 })).hits[0]!;
    t.is(hit.message.id, m.id);
    t.is(hit.message.text, 'meet at the station');
    t.truthy(hit.message.editedAt);
    await s.deleteMessage(c.id, m.id, at(21), ob('message.deleted'));
    t.deepEqual((await s.searchMessages('u2', 'station', { limit: 5 })).hits, []);
    t.deepEqual((await s.searchMessages('u2', 'meet', { limit: 5 })).hits, []);
  });

  it('searchMessages: pages with a cursor, no duplicates, no gaps', async (t, s) => {
    const c = await group(s, ['u1', 'u2']);
    for (let i = 0; i < 7; i++) await send(s, c.id, 'u1', `report number ${i}`, { t: 20 + i });
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < 5; page++) {
      const res = await s.searchMessages('u2', 'report', { limit: 3, ...(cursor ? { cursor } : {}) });
      seen.push(...res.hits.map((h) => h.message.id));
      if (!res.nextCursor) break;
      cursor = res.nextCursor;
    }
    t.is(seen.length, 7);
    t.is(new Set(seen).size, 7);
    await rejectsWithCode(t, s.searchMessages('u2', 'report', { limit: 3, cursor: 'not-a-cursor' }), 'VALIDATION_FAILED');
  });

  it('searchMessages: query syntax is plain text (FTS5 / $text operators do nothing), odd input is harmless', async (t, s) => {
    const c = await group(s, ['u1', 'u2']);
    const a = (await send(s, c.id, 'u1', 'alpha beta')).message;
    await send(s, c.id, 'u1', 'gamma delta');
    // OR / NOT / NEAR / column filters / negation / quotes / stars are separators, not operators.
    t.deepEqual((await s.searchMessages('u2', 'alpha OR gamma', { limit: 10 })).hits, [], 'OR is a word that must match');
    t.deepEqual((await s.searchMessages('u2', 'alpha -beta', { limit: 10 })).hits.map((h) => h.message.id), [a.id], 'minus does not negate');
    t.deepEqual((await s.searchMessages('u2', 'text:alpha', { limit: 10 })).hits, [], 'no column filter: "text" must match too');
    for (const q of ['"', '*', 'NEAR(alpha beta)', '((', '{"$ne":null}', '\u0000', '^alpha', 'alpha"*', '-', '   ', '', '💥', 'a'.repeat(5000)]) {
      const res = await s.searchMessages('u2', q, { limit: 10 });
      t.true(Array.isArray(res.hits), q);
    }
    t.deepEqual((await s.searchMessages('u2', '"alpha"', { limit: 10 })).hits.map((h) => h.message.id), [a.id]);
    // Operator objects in place of the query or ids never reach the engine.
    await rejectsWithCode(t, s.searchMessages('u2', { $ne: null } as unknown as string, { limit: 5 }), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.searchMessages({ $ne: null } as unknown as string, 'alpha', { limit: 5 }), 'VALIDATION_FAILED');
    await rejectsWithCode(t, s.searchMessages('u2', 'alpha', { limit: 5, conversationId: { $ne: null } as unknown as string }), 'VALIDATION_FAILED');
  });

  it('everything survives close() and reopening the same data', async (t, _s, h) => {
    let s = h.store;
    await workspace(s);
    const u = await s.createUser(userRec({ id: 'u1', email: 'Keep@Example.test' }), ob('user.created'));
    const c = await group(s, ['u1', 'u2']);
    for (let i = 0; i < 3; i++) await send(s, c.id, 'u2', `m${i}`, { clientId: `k${i}` });
    await s.setReadMarker(c.id, 'u1', 2, ob('message.seen'));
    await s.insertRefreshToken(tokenRec({ id: 'r1' }));
    await s.docs.put('hooks', 'h1', { url: 'http://keep' });
    const outbox = await s.outboxCount();

    s = await h.reopen();
    t.deepEqual(await s.getUser('u1'), u);
    t.deepEqual((await s.getUserByEmail('keep@example.test'))!.id, 'u1');
    t.is((await s.getConversation(c.id))!.lastSeq, 3);
    t.deepEqual((await s.listMessages(c.id, { limit: 10 })).messages.map((m) => m.text), ['m0', 'm1', 'm2']);
    t.is(await s.getReadMarker(c.id, 'u1'), 2);
    t.is((await s.listConversations('u1'))[0]!.unreadCount, 1);
    t.truthy(await s.getRefreshTokenByHash('hash-r1'));
    t.deepEqual(await s.docs.get('hooks', 'h1'), { url: 'http://keep' });
    t.is(await s.outboxCount(), outbox);
    // Sequencing and idempotency carry on where they left off.
    t.false((await send(s, c.id, 'u2', 'again', { clientId: 'k1' })).created);
    t.is((await send(s, c.id, 'u2', 'next')).message.seq, 4);
    await rejectsWithCode(t, s.createUser(userRec({ id: 'u9', email: 'keep@example.test' }), ob('user.created')), 'EMAIL_TAKEN');
  });
}

// SQLite only: a second connection on the same file (the CLI next to the server) sees committed data and
// its writes interleave safely with ours.
test('sqlite: two connections on one file share data and keep seqs unique', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'voxa-store-'));
  const file = join(dir, 'voxa.db');
  const a = new SqliteStore(file);
  const b = new SqliteStore(file);
  try {
    await a.init();
    await b.init();
    const c = await group(a, ['u1', 'u2']);
    await Promise.all(Array.from({ length: 20 }, (_, i) => send(i % 2 ? a : b, c.id, 'u1', `m${i}`)));
    const seqs = (await a.listMessages(c.id, { limit: 50 })).messages.map((m) => m.seq);
    t.deepEqual(seqs, Array.from({ length: 20 }, (_, i) => i + 1));
    t.is(await b.outboxCount(), 21);
  } finally {
    await a.close();
    await b.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

// SQLite only: a writeAll batch is one unit of the group commit. A write that fails part-way (here a trigger
// standing in for a failing disk) takes the batch's earlier writes back with it, and only them: units
// committed in the same group are kept.
test('sqlite: a writeAll batch that fails part-way leaves nothing, and the units grouped with it commit', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'voxa-store-'));
  const file = join(dir, 'voxa.db');
  const s = new SqliteStore(file);
  const other = new Database(file);
  try {
    await s.init();
    other.exec(`CREATE TRIGGER fail_boom BEFORE INSERT ON docs WHEN new.collection = 'boom' BEGIN SELECT RAISE(ABORT, 'injected failure'); END`);
    const c = await group(s, ['u1', 'u2']);
    const outbox = await s.outboxCount();
    // Started in one turn, so they share one group commit.
    const [before, failing, after, message] = await Promise.allSettled([
      s.docs.writeAll([{ op: 'insert', collection: 'keys', id: 'k1', doc: {} }]),
      s.docs.writeAll([
        { op: 'insert', collection: 'keys', id: 'k2', doc: {} },
        { op: 'put', collection: 'rows', id: 'r2', doc: {} },
        { op: 'insert', collection: 'boom', id: 'b2', doc: {} },
      ]),
      s.docs.writeAll([{ op: 'insert', collection: 'keys', id: 'k3', doc: {} }]),
      send(s, c.id, 'u1', 'grouped with the batches'),
    ]);
    t.deepEqual(before, { status: 'fulfilled', value: { written: true } });
    t.is(failing!.status, 'rejected');
    t.regex(String((failing as PromiseRejectedResult).reason), /injected failure/);
    t.deepEqual(after, { status: 'fulfilled', value: { written: true } });
    t.is(message!.status, 'fulfilled');
    t.is(await s.docs.get('keys', 'k2'), null, 'the failed batch left no key');
    t.is(await s.docs.get('rows', 'r2'), null, 'and no row');
    t.deepEqual((await s.docs.find<object>('keys')).length, 2);
    t.is(await s.outboxCount(), outbox + 1);
    // Without the failure the same batch goes through.
    other.exec('DROP TRIGGER fail_boom');
    t.deepEqual(
      await s.docs.writeAll([
        { op: 'insert', collection: 'keys', id: 'k2', doc: {} },
        { op: 'insert', collection: 'boom', id: 'b2', doc: {} },
      ]),
      { written: true },
    );
  } finally {
    other.close();
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
