/**
 * The embedded store: one SQLite file through better-sqlite3.
 *
 * better-sqlite3 is synchronous, so inside this process every write is naturally serialised. Each write
 * method is ONE atomic unit that also inserts its outbox rows: the change and its events commit together or
 * not at all. Units that arrive together are group-committed (see `tx`): one `BEGIN IMMEDIATE` transaction
 * for all, in which each unit is atomic on its own (a failing unit rolls back alone), which keeps
 * fsync-per-commit durability affordable under load. IMMEDIATE
 * takes the write lock up front, so another process on the same file (the CLI) waits on busy_timeout
 * instead of failing half-way with SQLITE_BUSY on lock upgrade.
 */
import Database from 'better-sqlite3';
import { context } from '@opentelemetry/api';
import { createHash } from 'node:crypto';
import { closeSync, fdatasync, openSync } from 'node:fs';
import type { Conversation, ConversationSummary, Message, Role, UserRecord, Workspace, WorkspaceSettings } from '../domain.js';
import { VoxaError } from '../errors.js';
import { assertCollection, assertFieldName, assertId, assertIndex, checkedFilter, checkedWrites, escapeLike, firstTakenInsert, requireInt as int, requireIsoTime, requireString as str } from './guards.js';
import type {
  ChangedQuery,
  ConversationPosition,
  DocValue,
  DocumentStore,
  DocWrite,
  HistoryQuery,
  NewMessage,
  OutboxEntry,
  OutboxFor,
  RefreshTokenRecord,
  SearchQuery,
  SearchResult,
  Store,
  WriteAllResult,
} from './port.js';
import { decodeCursor, encodeCursor, ftsQuery, MARK_CLOSE, MARK_OPEN, parseMarked, searchTerms } from '../search/query.js';

type Row = Record<string, unknown>;
type Db = Database.Database;

/**
 * Numbered migrations; `schema_version` remembers how far a file has come. Append only: a shipped
 * migration never changes, a new one gets the next number.
 */
export const MIGRATIONS: string[] = [
  // 1: the initial schema.
  `
  CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    settings TEXT NOT NULL,
    created_at TEXT NOT NULL
  );
  CREATE TABLE users (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    email TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    password_hash TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    totp TEXT,
    created_at TEXT NOT NULL
  );
  CREATE UNIQUE INDEX users_email ON users(email);
  CREATE INDEX users_workspace_name ON users(workspace_id, name);
  CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    family_id TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    revoked_at TEXT
  );
  CREATE UNIQUE INDEX refresh_tokens_hash ON refresh_tokens(token_hash);
  CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);
  CREATE INDEX refresh_tokens_user ON refresh_tokens(user_id);
  CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    type TEXT NOT NULL,
    title TEXT,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    direct_key TEXT
  );
  -- NULL direct keys (groups) are distinct in a SQLite unique index, so only direct pairs collide.
  CREATE UNIQUE INDEX conversations_direct ON conversations(workspace_id, direct_key);
  CREATE TABLE conversation_members (
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    pos INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
  ) WITHOUT ROWID;
  CREATE INDEX conversation_members_user ON conversation_members(user_id);
  CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    sender_id TEXT NOT NULL,
    text TEXT NOT NULL,
    client_id TEXT,
    created_at TEXT NOT NULL,
    edited_at TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    deleted_at TEXT,
    attachments TEXT
  );
  CREATE UNIQUE INDEX messages_seq ON messages(conversation_id, seq);
  -- NULL client ids are distinct, so only sends that carry a clientId are deduplicated.
  CREATE UNIQUE INDEX messages_client ON messages(conversation_id, sender_id, client_id);
  CREATE TABLE read_markers (
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
  ) WITHOUT ROWID;
  CREATE TABLE outbox (
    event_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    payload TEXT NOT NULL,
    headers TEXT NOT NULL,
    created_at TEXT NOT NULL
  );
  CREATE INDEX outbox_created ON outbox(created_at);
  CREATE TABLE docs (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (collection, id)
  ) WITHOUT ROWID;
  `,
  // 2: full-text search over message text (issue 7). An external-content FTS5 table over messages, kept in
  // step by triggers, so an append, edit or delete changes the index inside the same transaction. unicode61
  // with diacritics removed folds "é" to "e" for every script it knows.
  `
  CREATE VIRTUAL TABLE messages_fts USING fts5(
    text,
    content = 'messages',
    content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2'
  );
  CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, text) VALUES (new.rowid, new.text);
  END;
  CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
  END;
  CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
    INSERT INTO messages_fts (rowid, text) VALUES (new.rowid, new.text);
  END;
  INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
  `,
  // 3: the search index follows appends in batches instead of inside every append (see indexMessages).
  // fts_progress.indexed_rowid says how far the index has come: rows above it are not indexed yet. An edit or
  // delete touches the index only for a row below the mark (FTS5 must never be told to delete terms it was not
  // given; that corrupts an external-content index), and a row above it is indexed later with the text it has
  // then. A new row that lands below the mark (SQLite reuses the largest rowid after that row is deleted) is
  // indexed at once. Migration 2 indexed every row there was, so the mark starts at the last one.
  `
  CREATE TABLE fts_progress (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_rowid INTEGER NOT NULL
  );
  INSERT INTO fts_progress (id, indexed_rowid) VALUES (1, (SELECT coalesce(max(rowid), 0) FROM messages));
  DROP TRIGGER messages_fts_insert;
  DROP TRIGGER messages_fts_delete;
  DROP TRIGGER messages_fts_update;
  CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
  WHEN new.rowid <= (SELECT indexed_rowid FROM fts_progress WHERE id = 1) BEGIN
    INSERT INTO messages_fts (rowid, text) VALUES (new.rowid, new.text);
  END;
  CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
  WHEN old.rowid <= (SELECT indexed_rowid FROM fts_progress WHERE id = 1) BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
  END;
  CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages
  WHEN old.rowid <= (SELECT indexed_rowid FROM fts_progress WHERE id = 1) BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
    INSERT INTO messages_fts (rowid, text) VALUES (new.rowid, new.text);
  END;
  `,
  // 4: the edited or deleted messages of a conversation by seq (listChangedMessages, for a resuming client).
  // Partial: it holds only changed messages, so it stays small and costs an append nothing.
  `
  CREATE INDEX messages_changed ON messages(conversation_id, seq) WHERE edited_at IS NOT NULL OR deleted_at IS NOT NULL;
  `,
  // 5: access tokens issued before this time are refused (set when an account is disabled; UserRecord.tokensValidAfter).
  `
  ALTER TABLE users ADD COLUMN tokens_valid_after TEXT;
  `,
];

/** Most write units committed together in one group commit. */
const MAX_GROUP = 256;
/** Groups committed with savepoints after one whose unit failed, before trying without again. */
const SAVEPOINT_GROUPS_AFTER_FAILURE = 8;
/** Most messages one search-indexing pass takes; a longer backlog is worked off in passes that let I/O in between. */
const INDEX_BATCH = 500;

type UnitResult = { ok: true; value: unknown } | { ok: false; error: unknown };

export interface SqliteStoreOptions {
  /**
   * SQLite `synchronous` level. FULL (default) fsyncs every commit, so an accepted message survives a
   * power cut, like MongoDB's journaled writes. NORMAL in WAL mode still survives a process crash and is
   * much faster, but the last commits can be lost if the machine itself goes down.
   */
  synchronous?: 'FULL' | 'NORMAL';
  /** How long to wait for another process's write lock before failing (ms). */
  busyTimeoutMs?: number;
  /**
   * How often new messages are added to the search index (ms), default 100. Indexing in batches costs an
   * append about a third less than indexing inside it; a search first indexes whatever is still waiting, so
   * it never misses a stored message.
   */
  searchIndexIntervalMs?: number;
}

function bool(v: unknown): boolean {
  return v === 1 || v === true;
}

function toWorkspace(r: Row): Workspace {
  return { id: r.id as string, name: r.name as string, settings: JSON.parse(r.settings as string) as WorkspaceSettings, createdAt: r.created_at as string };
}

function toUser(r: Row): UserRecord {
  const u: UserRecord = {
    id: r.id as string,
    workspaceId: r.workspace_id as string,
    email: r.email as string,
    name: r.name as string,
    role: r.role as UserRecord['role'],
    createdAt: r.created_at as string,
    passwordHash: (r.password_hash as string | null) ?? null,
    disabled: bool(r.disabled),
  };
  if (r.totp != null) u.totp = JSON.parse(r.totp as string) as UserRecord['totp'];
  if (r.tokens_valid_after != null) u.tokensValidAfter = r.tokens_valid_after as string;
  return u;
}

function toToken(r: Row): RefreshTokenRecord {
  return {
    id: r.id as string,
    userId: r.user_id as string,
    familyId: r.family_id as string,
    tokenHash: r.token_hash as string,
    createdAt: r.created_at as string,
    expiresAt: r.expires_at as string,
    usedAt: (r.used_at as string | null) ?? null,
    revokedAt: (r.revoked_at as string | null) ?? null,
  };
}

function toConversation(r: Row): Conversation {
  return {
    id: r.id as string,
    workspaceId: r.workspace_id as string,
    type: r.type as Conversation['type'],
    title: (r.title as string | null) ?? null,
    members: JSON.parse(r.members as string) as string[],
    createdBy: r.created_by as string,
    createdAt: r.created_at as string,
    updatedAt: r.updated_at as string,
    lastSeq: Number(r.last_seq),
  };
}

function toMessage(r: Row): Message {
  const m: Message = {
    id: r.id as string,
    conversationId: r.conversation_id as string,
    seq: Number(r.seq),
    senderId: r.sender_id as string,
    text: r.text as string,
    clientId: (r.client_id as string | null) ?? null,
    createdAt: r.created_at as string,
  };
  if (r.edited_at != null) m.editedAt = r.edited_at as string;
  if (bool(r.deleted)) m.deleted = true;
  if (r.attachments != null) m.attachments = JSON.parse(r.attachments as string) as string[];
  return m;
}

/** better-sqlite3 binds no booleans; JSON stores them as 1/0 for json_extract too. */
function bindable(v: DocValue): string | number | null {
  if (typeof v === 'boolean') return v ? 1 : 0;
  return v;
}

function isUniqueViolation(err: unknown, index?: string): boolean {
  const e = err as { code?: string; message?: string };
  if (e?.code !== 'SQLITE_CONSTRAINT_UNIQUE' && e?.code !== 'SQLITE_CONSTRAINT_PRIMARYKEY') return false;
  return index === undefined || (e.message ?? '').includes(index);
}

/** Conversation columns plus its members, in join order, as a JSON array. */
const CONV_SELECT = `SELECT c.*, (SELECT json_group_array(user_id) FROM
  (SELECT user_id FROM conversation_members WHERE conversation_id = c.id ORDER BY pos)) AS members
  FROM conversations c`;

/** The name ensureIndex gives the index of `fields` in `collection` (stable, so deleteBefore can name it). */
function docsIndexName(collection: string, fields: string[]): string {
  return `docs_ix_${createHash('sha256').update(`v1\0${collection}\0${fields.join('\0')}`).digest('hex').slice(0, 16)}`;
}

export class SqliteStore implements Store {
  readonly kind = 'sqlite' as const;
  readonly docs: DocumentStore;
  private db: Db;
  private readonly stmts = new Map<string, Database.Statement>();
  private pending: Array<{ fn: () => unknown; resolve: (v: unknown) => void; reject: (e: unknown) => void }> = [];
  private flushScheduled = false;
  /** Groups still to run with savepoints after a unit failed (see groupWithoutSavepoints). */
  private savepointGroups = 0;
  /**
   * One transaction function for every unit, made once: `.immediate(fn)` opens BEGIN IMMEDIATE, a call while
   * a transaction is open is a SAVEPOINT. better-sqlite3 builds four wrappers per db.transaction() call, which
   * per unit cost about a sixth of a send's store time.
   */
  private readonly runTx: Database.Transaction<(fn: () => unknown) => unknown>;
  /**
   * synchronous=FULL without blocking the event loop on fsync. A group commit runs at NORMAL (SQLite writes
   * the WAL frames but does not sync them) and its callers are answered only after an fdatasync of the WAL
   * file, done on libuv's thread pool: the same guarantee as FULL (every acknowledged commit is on disk; WAL
   * recovery replays it after a power cut), while the next group keeps building and committing meanwhile.
   * All other writes (migrations, single statements) stay at FULL. The WAL file keeps its inode while this
   * connection is open (SQLite removes it only when the last connection closes), so one descriptor serves.
   */
  private readonly deferSync: boolean;
  private walFd: number | null = null;
  private syncWaiters: Array<(err: Error | null) => void> = [];
  private syncing = false;
  private readonly searchIndexIntervalMs: number;
  /** Started by init(), once the search-index tables exist. */
  private indexTimer: NodeJS.Timeout | null = null;
  /** A background indexing pass is queued or running. */
  private indexing = false;

  constructor(
    readonly path: string,
    opts: SqliteStoreOptions = {},
  ) {
    this.db = new Database(path, { timeout: opts.busyTimeoutMs ?? 5000 });
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`busy_timeout = ${Math.trunc(opts.busyTimeoutMs ?? 5000)}`);
    this.db.pragma('foreign_keys = ON');
    this.db.pragma(`synchronous = ${opts.synchronous === 'NORMAL' ? 'NORMAL' : 'FULL'}`);
    // SQLite's own lower()/LIKE fold ASCII only; user search should fold "Ä" as well.
    this.db.function('voxa_lower', { deterministic: true }, (s: unknown) => (typeof s === 'string' ? s.toLowerCase() : s) as string | null);
    this.docs = new SqliteDocs(this);
    this.runTx = this.db.transaction((fn: () => unknown) => fn());
    this.deferSync = opts.synchronous !== 'NORMAL' && this.db.pragma('journal_mode', { simple: true }) === 'wal';
    this.searchIndexIntervalMs = opts.searchIndexIntervalMs ?? 100;
  }

  /** A cached prepared statement. */
  q(sql: string): Database.Statement {
    let s = this.stmts.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.stmts.set(sql, s);
    }
    return s;
  }

  /** Runs fn inside one BEGIN IMMEDIATE transaction, now. */
  private txNow<T>(fn: () => T): T {
    return this.runTx.immediate(fn) as T;
  }

  /**
   * Runs fn as its own atomic unit inside the next group commit. Writes that arrive in the same turn of the
   * event loop share one BEGIN IMMEDIATE … COMMIT, so with synchronous=FULL many concurrent sends cost one
   * fsync instead of one each. A unit that throws is rolled back alone; its caller gets the error, the others
   * still commit. Every promise settles only after the commit. fn must be synchronous and change nothing but
   * the database (and values it returns or hands to its outbox builder): it may run twice, see
   * groupWithoutSavepoints.
   */
  tx<T>(fn: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      // The unit runs later, in the flush that the first unit of its group scheduled. It runs in its own
      // caller's trace context instead, so its outbox rows carry its own request's traceparent. (Only the
      // trace context: AsyncResource.bind would carry everything but cost about a fifth of an append.)
      const ctx = context.active();
      this.pending.push({ fn: () => context.with(ctx, fn), resolve: resolve as (v: unknown) => void, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flushWrites());
      }
    });
  }

  private flushWrites(): void {
    this.flushScheduled = false;
    const batch = this.pending.splice(0, MAX_GROUP);
    if (this.pending.length) {
      this.flushScheduled = true;
      setImmediate(() => this.flushWrites());
    }
    if (!batch.length) return;
    let results: UnitResult[];
    let deferred = false;
    try {
      if (!this.db.open) throw new Error('The store is closed.');
      deferred = this.deferSync && this.openWal();
      if (deferred) this.q('PRAGMA synchronous = NORMAL').run();
      try {
        results = (this.savepointGroups > 0 ? null : this.groupWithoutSavepoints(batch)) ?? this.groupWithSavepoints(batch);
      } finally {
        if (deferred) this.q('PRAGMA synchronous = FULL').run();
      }
    } catch (error) {
      // BEGIN or COMMIT itself failed (e.g. busy past the timeout): nothing of the batch was written.
      for (const unit of batch) unit.reject(error);
      return;
    }
    const settle = (err: Error | null) =>
      batch.forEach((unit, i) => {
        const r = results[i]!;
        // A failed sync leaves the commit's durability unknown: nobody is told it succeeded.
        if (err) unit.reject(err);
        else if (r.ok) unit.resolve(r.value);
        else unit.reject(r.error);
      });
    if (deferred) this.afterWalSync(settle);
    else settle(null);
  }

  /**
   * The common case, cheaply: every unit straight inside the transaction, no savepoints (about a tenth of a
   * send's store time). If a unit throws, the whole group rolls back and null says to run it again with
   * savepoints; units are synchronous functions of the database alone, so a second run is the same change.
   * A group of one needs no second run: its error is its result. After a failure the next groups use
   * savepoints straight away, in case failures come in runs. Throws if BEGIN or COMMIT fails.
   */
  private groupWithoutSavepoints(batch: Array<{ fn: () => unknown }>): UnitResult[] | null {
    const results: UnitResult[] = [];
    let unitFailed = false;
    try {
      this.txNow(() => {
        for (const unit of batch) {
          try {
            results.push({ ok: true, value: unit.fn() });
          } catch (error) {
            unitFailed = true;
            throw error;
          }
        }
      });
      return results;
    } catch (error) {
      if (!unitFailed) throw error; // BEGIN or COMMIT failed
      // The transaction function rethrows the unit's own error once it has rolled back.
      if (batch.length === 1) return [{ ok: false, error }];
      this.savepointGroups = SAVEPOINT_GROUPS_AFTER_FAILURE;
      return null;
    }
  }

  /** Each unit in its own savepoint: one that throws rolls back alone, the others commit. */
  private groupWithSavepoints(batch: Array<{ fn: () => unknown }>): UnitResult[] {
    if (this.savepointGroups > 0) this.savepointGroups--;
    const results: UnitResult[] = [];
    this.txNow(() => {
      for (const unit of batch) {
        try {
          // A nested transaction function runs as a SAVEPOINT in better-sqlite3.
          results.push({ ok: true, value: this.runTx(unit.fn) });
        } catch (error) {
          results.push({ ok: false, error });
        }
      }
    });
    return results;
  }

  /** Opens the WAL file once (it exists after the first commit); false while it cannot, so FULL is used. */
  private openWal(): boolean {
    if (this.walFd !== null) return true;
    try {
      this.walFd = openSync(`${this.path}-wal`, 'r+');
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Calls back once an fdatasync of the WAL that started after this call has finished. Commits that land
   * while a sync runs share the next one, so there is at most one sync in flight and one queued.
   */
  private afterWalSync(cb: (err: Error | null) => void): void {
    this.syncWaiters.push(cb);
    if (!this.syncing) this.syncWal();
  }

  private syncWal(): void {
    const waiters = this.syncWaiters;
    this.syncWaiters = [];
    this.syncing = true;
    fdatasync(this.walFd!, (err) => {
      this.syncing = false;
      for (const w of waiters) w(err);
      if (this.syncWaiters.length) this.syncWal();
    });
  }

  /** Messages stored but not yet in the search index (0 before init). */
  unindexedMessages(): number {
    if (!this.db.open || !this.indexTimer) return 0;
    const r = this.q(
      'SELECT (SELECT count(*) FROM messages WHERE rowid > p.indexed_rowid) AS n FROM fts_progress p WHERE p.id = 1',
    ).get() as { n: number } | undefined;
    return r?.n ?? 0;
  }

  /** Whether messages above the index mark exist: two index look-ups, no count. */
  private indexBehind(): boolean {
    const r = this.q('SELECT (SELECT max(rowid) FROM messages) > indexed_rowid AS behind FROM fts_progress WHERE id = 1').get() as
      | { behind: number | null }
      | undefined;
    return r?.behind === 1;
  }

  /**
   * Adds up to `max` messages above the mark to the search index, in rowid order, and moves the mark past
   * them; returns how many. Must run inside a write transaction, so the rows and the mark move together and
   * no other connection indexes the same rows.
   */
  private indexMessages(max: number): number {
    const mark = (this.q('SELECT indexed_rowid AS r FROM fts_progress WHERE id = 1').get() as { r: number }).r;
    const last = this.q('SELECT max(rowid) AS r, count(*) AS n FROM (SELECT rowid FROM messages WHERE rowid > ? ORDER BY rowid LIMIT ?)').get(
      mark,
      max,
    ) as { r: number | null; n: number };
    if (last.r === null) return 0;
    this.q('INSERT INTO messages_fts (rowid, text) SELECT rowid, text FROM messages WHERE rowid > ? AND rowid <= ? ORDER BY rowid').run(mark, last.r);
    this.q('UPDATE fts_progress SET indexed_rowid = ? WHERE id = 1').run(last.r);
    return last.n;
  }

  /** The timer's pass: one batch through the group commit, then another at once while a backlog is left. */
  private indexInBackground(): void {
    if (this.indexing || !this.db.open || !this.indexBehind()) return;
    this.indexing = true;
    this.tx(() => this.indexMessages(INDEX_BATCH)).then(
      (n) => {
        this.indexing = false;
        if (n === INDEX_BATCH) setImmediate(() => this.indexInBackground());
      },
      () => {
        // A failed pass changed nothing (its transaction rolled back); the next tick tries again.
        this.indexing = false;
      },
    );
  }

  /** Indexes every message stored so far; a search waits for this, so it sees everything committed before it. */
  private async indexAll(): Promise<void> {
    if (!this.indexBehind()) return;
    await this.tx(() => {
      while (this.indexMessages(INDEX_BATCH) === INDEX_BATCH);
    });
  }

  private writeOutbox(entries: OutboxEntry[]): void {
    const ins = this.q('INSERT INTO outbox (event_id, subject, payload, headers, created_at) VALUES (?, ?, ?, ?, ?)');
    for (const e of entries) ins.run(e.eventId, e.subject, e.payload, JSON.stringify(e.headers ?? {}), e.createdAt);
  }

  async init(): Promise<void> {
    this.db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
    this.txNow(() => {
      const row = this.db.prepare('SELECT max(version) AS v FROM schema_version').get() as { v: number | null };
      const current = row.v ?? 0;
      for (let i = current; i < MIGRATIONS.length; i++) {
        this.db.exec(MIGRATIONS[i]!);
        this.db.prepare('INSERT INTO schema_version (version) VALUES (?)').run(i + 1);
      }
    });
    if (!this.indexTimer) {
      this.indexTimer = setInterval(() => this.indexInBackground(), this.searchIndexIntervalMs);
      this.indexTimer.unref();
    }
  }

  async ping(): Promise<void> {
    this.q('SELECT 1').get();
  }

  async close(): Promise<void> {
    if (this.indexTimer) clearInterval(this.indexTimer);
    // Let queued writes commit first: their callers are waiting on them.
    while (this.pending.length || this.flushScheduled || this.syncing) await new Promise((r) => setImmediate(r));
    if (this.walFd !== null) {
      closeSync(this.walFd);
      this.walFd = null;
    }
    if (this.db.open) this.db.close();
    this.stmts.clear();
  }

  // Workspaces

  async ensureWorkspace(ws: Workspace): Promise<Workspace> {
    return this.tx(() => {
      this.q('INSERT OR IGNORE INTO workspaces (id, name, settings, created_at) VALUES (?, ?, ?, ?)').run(
        ws.id,
        ws.name,
        JSON.stringify(ws.settings),
        ws.createdAt,
      );
      return toWorkspace(this.q('SELECT * FROM workspaces WHERE id = ?').get(ws.id) as Row);
    });
  }

  async getWorkspace(id: string): Promise<Workspace | null> {
    const r = this.q('SELECT * FROM workspaces WHERE id = ?').get(str(id, 'id')) as Row | undefined;
    return r ? toWorkspace(r) : null;
  }

  async updateWorkspaceSettings(id: string, patch: Partial<WorkspaceSettings>, outbox: OutboxFor<Workspace>): Promise<Workspace> {
    return this.tx(() => {
      const r = this.q('SELECT * FROM workspaces WHERE id = ?').get(id) as Row | undefined;
      if (!r) throw new VoxaError('NOT_FOUND', 'No such workspace.');
      const ws = toWorkspace(r);
      const settings = { ...ws.settings };
      for (const [k, v] of Object.entries(patch)) if (v !== undefined) (settings as Record<string, unknown>)[k] = v;
      this.q('UPDATE workspaces SET settings = ? WHERE id = ?').run(JSON.stringify(settings), id);
      const next = { ...ws, settings };
      this.writeOutbox(outbox(next));
      return next;
    });
  }

  // Users

  async createUser(user: UserRecord, outbox: OutboxFor<UserRecord>): Promise<UserRecord> {
    const u: UserRecord = { ...user, email: user.email.toLowerCase() };
    try {
      return await this.tx(() => {
        this.q(
          `INSERT INTO users (id, workspace_id, email, name, role, password_hash, disabled, totp, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(u.id, u.workspaceId, u.email, u.name, u.role, u.passwordHash ?? null, u.disabled ? 1 : 0, u.totp ? JSON.stringify(u.totp) : null, u.createdAt);
        const stored = toUser(this.q('SELECT * FROM users WHERE id = ?').get(u.id) as Row);
        this.writeOutbox(outbox(stored));
        return stored;
      });
    } catch (err) {
      if (isUniqueViolation(err, 'users.email')) throw new VoxaError('EMAIL_TAKEN');
      throw err;
    }
  }

  async getUser(id: string): Promise<UserRecord | null> {
    const r = this.q('SELECT * FROM users WHERE id = ?').get(str(id, 'id')) as Row | undefined;
    return r ? toUser(r) : null;
  }

  async getUserByEmail(email: string): Promise<UserRecord | null> {
    const r = this.q('SELECT * FROM users WHERE email = ?').get(str(email, 'email').toLowerCase()) as Row | undefined;
    return r ? toUser(r) : null;
  }

  async searchUsers(workspaceId: string, q: string, limit: number, opts: { activeOnly?: boolean; roles?: Role[] } = {}): Promise<UserRecord[]> {
    const pattern = `%${escapeLike(str(q, 'q').toLowerCase())}%`;
    // A fixed string chosen by a boolean, never built from input.
    const active = opts.activeOnly === true ? 'AND password_hash IS NOT NULL AND disabled = 0' : '';
    // The roles travel as one JSON parameter; the statement text stays the same for any set of them.
    const roles = opts.roles ? JSON.stringify(opts.roles.map((r) => str(r, 'roles'))) : null;
    const rows = this.q(
      `SELECT * FROM users WHERE workspace_id = ? ${active}
         AND (? IS NULL OR role IN (SELECT value FROM json_each(?)))
         AND (voxa_lower(name) LIKE ? ESCAPE '\\' OR email LIKE ? ESCAPE '\\')
       ORDER BY voxa_lower(name), name, id LIMIT ?`,
    ).all(str(workspaceId, 'workspaceId'), roles, roles, pattern, pattern, Math.max(0, int(limit, 'limit'))) as Row[];
    return rows.map(toUser);
  }

  async updateUser(
    id: string,
    patch: Partial<Pick<UserRecord, 'name' | 'role' | 'passwordHash' | 'disabled' | 'totp' | 'tokensValidAfter'>>,
    outbox: OutboxFor<UserRecord>,
  ): Promise<UserRecord | null> {
    // Column names come from this fixed map, never from the patch's keys.
    const cols: Record<string, [string, (v: unknown) => unknown]> = {
      name: ['name', (v) => v],
      role: ['role', (v) => v],
      passwordHash: ['password_hash', (v) => v ?? null],
      disabled: ['disabled', (v) => (v ? 1 : 0)],
      totp: ['totp', (v) => (v ? JSON.stringify(v) : null)],
      tokensValidAfter: ['tokens_valid_after', (v) => (v ? requireIsoTime(v, 'tokensValidAfter') : null)],
    };
    const sets: string[] = [];
    const args: unknown[] = [];
    for (const [k, v] of Object.entries(patch)) {
      const col = cols[k];
      if (!col || v === undefined) continue;
      sets.push(`${col[0]} = ?`);
      args.push(col[1](v));
    }
    return this.tx(() => {
      if (!this.q('SELECT 1 FROM users WHERE id = ?').get(id)) return null;
      if (sets.length) this.db.prepare(`UPDATE users SET ${sets.join(', ')} WHERE id = ?`).run(...args, id);
      const stored = toUser(this.q('SELECT * FROM users WHERE id = ?').get(id) as Row);
      this.writeOutbox(outbox(stored));
      return stored;
    });
  }

  // Refresh tokens

  private insertToken(rec: RefreshTokenRecord): void {
    this.q(
      `INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at, used_at, revoked_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(rec.id, rec.userId, rec.familyId, rec.tokenHash, rec.createdAt, rec.expiresAt, rec.usedAt ?? null, rec.revokedAt ?? null);
  }

  async insertRefreshToken(rec: RefreshTokenRecord): Promise<void> {
    await this.tx(() => this.insertToken(rec));
  }

  async getRefreshTokenByHash(tokenHash: string): Promise<RefreshTokenRecord | null> {
    const r = this.q('SELECT * FROM refresh_tokens WHERE token_hash = ?').get(str(tokenHash, 'tokenHash')) as Row | undefined;
    return r ? toToken(r) : null;
  }

  async rotateRefreshToken(oldId: string, usedAt: string, next: RefreshTokenRecord): Promise<boolean> {
    return this.tx(() => {
      // The compare-and-set: only one caller can flip used_at from NULL.
      const res = this.q('UPDATE refresh_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL').run(usedAt, oldId);
      if (res.changes !== 1) return false;
      this.insertToken(next);
      return true;
    });
  }

  async revokeTokenFamily(familyId: string, at: string): Promise<void> {
    await this.tx(() => this.q('UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL').run(at, familyId));
  }

  async revokeUserTokens(userId: string, at: string): Promise<void> {
    await this.tx(() => this.q('UPDATE refresh_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL').run(at, userId));
  }

  // Conversations

  private readConversation(id: string): Conversation | null {
    const r = this.q(`${CONV_SELECT} WHERE c.id = ?`).get(id) as Row | undefined;
    return r ? toConversation(r) : null;
  }

  async createConversation(
    conv: Conversation & { directKey?: string },
    outbox: OutboxFor<Conversation>,
  ): Promise<{ conversation: Conversation; created: boolean }> {
    const directKey = conv.type === 'direct' && typeof conv.directKey === 'string' ? conv.directKey : null;
    const existing = (): { conversation: Conversation; created: boolean } | null => {
      if (directKey === null) return null;
      const r = this.q('SELECT id FROM conversations WHERE workspace_id = ? AND direct_key = ?').get(conv.workspaceId, directKey) as Row | undefined;
      return r ? { conversation: this.readConversation(r.id as string)!, created: false } : null;
    };
    try {
      return await this.tx(() => {
        const found = existing();
        if (found) return found;
        this.q(
          `INSERT INTO conversations (id, workspace_id, type, title, created_by, created_at, updated_at, last_seq, direct_key)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(conv.id, conv.workspaceId, conv.type, conv.title ?? null, conv.createdBy, conv.createdAt, conv.updatedAt, conv.lastSeq ?? 0, directKey);
        const ins = this.q('INSERT OR IGNORE INTO conversation_members (conversation_id, user_id, pos) VALUES (?, ?, ?)');
        conv.members.forEach((m, i) => ins.run(conv.id, m, i));
        const stored = this.readConversation(conv.id)!;
        this.writeOutbox(outbox(stored));
        return { conversation: stored, created: true };
      });
    } catch (err) {
      // Belt and braces: the IMMEDIATE lock already serialises writers, but should two ever race past
      // the lookup, the unique index decides and the loser returns the winner's conversation.
      if (isUniqueViolation(err, 'conversations.workspace_id')) {
        const found = existing();
        if (found) return found;
      }
      throw err;
    }
  }

  async getConversation(id: string): Promise<Conversation | null> {
    return this.readConversation(str(id, 'id'));
  }

  async listConversations(userId: string, opts: { limit?: number; after?: ConversationPosition } = {}): Promise<ConversationSummary[]> {
    str(userId, 'userId');
    const limit = Math.max(0, int(opts.limit ?? 200, 'limit'));
    const after = opts.after ? { updatedAt: str(opts.after.updatedAt, 'after.updatedAt'), id: str(opts.after.id, 'after.id') } : null;
    const rows = this.q(
      `SELECT c.*,
         (SELECT json_group_array(user_id) FROM
           (SELECT user_id FROM conversation_members WHERE conversation_id = c.id ORDER BY pos)) AS members,
         COALESCE(r.seq, 0) AS read_seq,
         (SELECT count(*) FROM messages m
            WHERE m.conversation_id = c.id AND m.seq > COALESCE(r.seq, 0) AND m.sender_id <> ? AND m.deleted = 0) AS unread
       FROM conversation_members cm
       JOIN conversations c ON c.id = cm.conversation_id
       LEFT JOIN read_markers r ON r.conversation_id = c.id AND r.user_id = cm.user_id
       WHERE cm.user_id = ?
         AND (? IS NULL OR c.updated_at < ? OR (c.updated_at = ? AND c.id < ?))
       ORDER BY c.updated_at DESC, c.id DESC
       LIMIT ?`,
    ).all(userId, userId, after?.updatedAt ?? null, after?.updatedAt ?? null, after?.updatedAt ?? null, after?.id ?? null, limit) as Row[];
    const last = this.q('SELECT * FROM messages WHERE conversation_id = ? AND seq = ?');
    return rows.map((r) => {
      const conv = toConversation(r);
      const lm = conv.lastSeq > 0 ? (last.get(conv.id, conv.lastSeq) as Row | undefined) : undefined;
      return { ...conv, lastMessage: lm ? toMessage(lm) : null, unreadCount: Number(r.unread), readSeq: Number(r.read_seq) };
    });
  }

  async updateMembers(
    conversationId: string,
    change: { add?: string[]; remove?: string[]; title?: string },
    outbox: OutboxFor<Conversation>,
  ): Promise<Conversation | null> {
    return this.tx(() => {
      if (!this.q('SELECT 1 FROM conversations WHERE id = ?').get(conversationId)) return null;
      const del = this.q('DELETE FROM conversation_members WHERE conversation_id = ? AND user_id = ?');
      for (const id of change.remove ?? []) del.run(conversationId, id);
      const { p } = this.q('SELECT COALESCE(max(pos), -1) AS p FROM conversation_members WHERE conversation_id = ?').get(conversationId) as { p: number };
      const ins = this.q('INSERT OR IGNORE INTO conversation_members (conversation_id, user_id, pos) VALUES (?, ?, ?)');
      let pos = p;
      for (const id of change.add ?? []) if (ins.run(conversationId, id, pos + 1).changes) pos++;
      const now = new Date().toISOString();
      if (change.title !== undefined) this.q('UPDATE conversations SET title = ? WHERE id = ?').run(change.title, conversationId);
      this.q('UPDATE conversations SET updated_at = max(updated_at, ?) WHERE id = ?').run(now, conversationId);
      const stored = this.readConversation(conversationId)!;
      this.writeOutbox(outbox(stored));
      return stored;
    });
  }

  // Messages

  async appendMessage(msg: NewMessage, outbox: OutboxFor<Message>): Promise<{ message: Message; created: boolean }> {
    str(msg.conversationId, 'conversationId');
    str(msg.senderId, 'senderId');
    str(msg.id, 'id');
    const clientId = typeof msg.clientId === 'string' ? msg.clientId : null;
    return this.tx(() => {
      if (clientId !== null) {
        const dup = this.q('SELECT * FROM messages WHERE conversation_id = ? AND sender_id = ? AND client_id = ?').get(
          msg.conversationId,
          msg.senderId,
          clientId,
        ) as Row | undefined;
        // A repeat writes nothing: no seq consumed, no outbox rows.
        if (dup) return { message: toMessage(dup), created: false };
      }
      const bumped = this.q(
        `UPDATE conversations SET last_seq = last_seq + 1, updated_at = max(updated_at, ?) WHERE id = ? RETURNING last_seq`,
      ).get(msg.createdAt, msg.conversationId) as { last_seq: number } | undefined;
      if (!bumped) throw new VoxaError('CONVERSATION_NOT_FOUND');
      this.q(
        `INSERT INTO messages (id, conversation_id, seq, sender_id, text, client_id, created_at, attachments)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        msg.id,
        msg.conversationId,
        bumped.last_seq,
        msg.senderId,
        msg.text,
        clientId,
        msg.createdAt,
        msg.attachments && msg.attachments.length ? JSON.stringify(msg.attachments) : null,
      );
      // The row is exactly what was just inserted (same fields and order as toMessage): no need to read it back.
      const message: Message = {
        id: msg.id,
        conversationId: msg.conversationId,
        seq: Number(bumped.last_seq),
        senderId: msg.senderId,
        text: msg.text,
        clientId,
        createdAt: msg.createdAt,
      };
      if (msg.attachments && msg.attachments.length) message.attachments = [...msg.attachments];
      this.writeOutbox(outbox(message));
      return { message, created: true };
    });
  }

  async listMessages(conversationId: string, q: HistoryQuery): Promise<{ messages: Message[]; hasMore: boolean }> {
    str(conversationId, 'conversationId');
    const limit = Math.max(0, int(q.limit, 'limit'));
    const before = q.before !== undefined ? int(q.before, 'before') : null;
    const after = q.after !== undefined ? int(q.after, 'after') : null;
    // One extra row tells whether there is more in the direction being read.
    if (after !== null) {
      const rows = this.q(
        `SELECT * FROM messages WHERE conversation_id = ? AND seq > ? AND (? IS NULL OR seq < ?) ORDER BY seq ASC LIMIT ?`,
      ).all(conversationId, after, before, before, limit + 1) as Row[];
      return { messages: rows.slice(0, limit).map(toMessage), hasMore: rows.length > limit };
    }
    const rows = this.q(
      `SELECT * FROM messages WHERE conversation_id = ? AND (? IS NULL OR seq < ?) ORDER BY seq DESC LIMIT ?`,
    ).all(conversationId, before, before, limit + 1) as Row[];
    return { messages: rows.slice(0, limit).reverse().map(toMessage), hasMore: rows.length > limit };
  }

  async listChangedMessages(conversationId: string, q: ChangedQuery): Promise<{ messages: Message[]; hasMore: boolean }> {
    str(conversationId, 'conversationId');
    const limit = Math.max(0, int(q.limit, 'limit'));
    const upTo = int(q.upToSeq, 'upToSeq');
    const after = q.afterSeq !== undefined ? int(q.afterSeq, 'afterSeq') : 0;
    const since = requireIsoTime(q.since, 'since');
    // The first OR term repeats the index's condition word for word, which is how SQLite picks a partial index.
    const rows = this.q(
      `SELECT * FROM messages WHERE conversation_id = ? AND seq > ? AND seq <= ?
         AND (edited_at IS NOT NULL OR deleted_at IS NOT NULL) AND (edited_at > ? OR deleted_at > ?)
       ORDER BY seq ASC LIMIT ?`,
    ).all(conversationId, after, upTo, since, since, limit + 1) as Row[];
    return { messages: rows.slice(0, limit).map(toMessage), hasMore: rows.length > limit };
  }

  private readMessage(conversationId: string, messageId: string): Message | null {
    const r = this.q('SELECT * FROM messages WHERE id = ? AND conversation_id = ?').get(str(messageId, 'messageId'), str(conversationId, 'conversationId')) as Row | undefined;
    return r ? toMessage(r) : null;
  }

  async getMessage(conversationId: string, messageId: string): Promise<Message | null> {
    return this.readMessage(conversationId, messageId);
  }

  async editMessage(conversationId: string, messageId: string, text: string, editedAt: string, outbox: OutboxFor<Message>): Promise<Message | null> {
    return this.tx(() => {
      const cur = this.readMessage(conversationId, messageId);
      if (!cur || cur.deleted) return cur;
      this.q('UPDATE messages SET text = ?, edited_at = ? WHERE id = ?').run(text, editedAt, messageId);
      const message = this.readMessage(conversationId, messageId)!;
      this.writeOutbox(outbox(message));
      return message;
    });
  }

  async deleteMessage(conversationId: string, messageId: string, deletedAt: string, outbox: OutboxFor<Message>): Promise<Message | null> {
    return this.tx(() => {
      const cur = this.readMessage(conversationId, messageId);
      if (!cur || cur.deleted) return cur;
      // The text and attachments are really gone, not hidden.
      this.q(`UPDATE messages SET text = '', attachments = NULL, deleted = 1, deleted_at = ? WHERE id = ?`).run(deletedAt, messageId);
      const message = this.readMessage(conversationId, messageId)!;
      this.writeOutbox(outbox(message));
      return message;
    });
  }

  // Search

  async searchMessages(userId: string, q: string, opts: SearchQuery): Promise<SearchResult> {
    str(userId, 'userId');
    const terms = searchTerms(str(q, 'q'));
    const limit = Math.max(0, int(opts.limit, 'limit'));
    const offset = decodeCursor(opts.cursor);
    const conversationId = opts.conversationId !== undefined ? str(opts.conversationId, 'conversationId') : null;
    if (terms.length === 0 || limit === 0) return { hits: [], nextCursor: null };
    await this.indexAll();
    // bm25() is lower-is-better; the API's score is higher-is-better, so it is negated. The membership join
    // keeps the search inside the caller's conversations; the match is a bound parameter built from quoted terms.
    const rows = this.q(
      `SELECT m.*, bm25(messages_fts) AS rank,
         snippet(messages_fts, 0, '${MARK_OPEN}', '${MARK_CLOSE}', '…', 16) AS marked
       FROM messages_fts
       JOIN messages m ON m.rowid = messages_fts.rowid
       JOIN conversation_members cm ON cm.conversation_id = m.conversation_id AND cm.user_id = ?
       WHERE messages_fts MATCH ? AND m.deleted = 0 AND (? IS NULL OR m.conversation_id = ?)
       ORDER BY rank, m.rowid DESC
       LIMIT ? OFFSET ?`,
    ).all(userId, ftsQuery(terms), conversationId, conversationId, limit + 1, offset) as Row[];
    const hits = rows.slice(0, limit).map((r) => ({ message: toMessage(r), ...parseMarked(String(r.marked)), score: -Number(r.rank) }));
    return { hits, nextCursor: rows.length > limit ? encodeCursor(offset + limit) : null };
  }

  // Documents with events

  async insertDoc<T extends object>(collection: string, id: string, doc: T, outbox: OutboxFor<T>): Promise<boolean> {
    assertCollection(collection);
    assertId(id);
    return this.tx(() => {
      const res = this.q('INSERT OR IGNORE INTO docs (collection, id, doc) VALUES (?, ?, ?)').run(collection, id, JSON.stringify(doc));
      if (res.changes !== 1) return false;
      this.writeOutbox(outbox(doc));
      return true;
    });
  }

  async putDoc<T extends object>(collection: string, id: string, doc: T, outbox: OutboxFor<T>): Promise<void> {
    assertCollection(collection);
    assertId(id);
    return this.tx(() => {
      this.q('INSERT INTO docs (collection, id, doc) VALUES (?, ?, ?) ON CONFLICT (collection, id) DO UPDATE SET doc = excluded.doc').run(collection, id, JSON.stringify(doc));
      this.writeOutbox(outbox(doc));
    });
  }

  async deleteDoc<T extends object>(collection: string, id: string, outbox: OutboxFor<T>): Promise<boolean> {
    assertCollection(collection);
    assertId(id);
    return this.tx(() => {
      const row = this.q('SELECT doc FROM docs WHERE collection = ? AND id = ?').get(collection, id) as { doc: string } | undefined;
      if (!row) return false;
      this.q('DELETE FROM docs WHERE collection = ? AND id = ?').run(collection, id);
      this.writeOutbox(outbox(JSON.parse(row.doc) as T));
      return true;
    });
  }

  async updateDoc<T extends object>(collection: string, id: string, change: (current: T) => T | null, outbox: OutboxFor<T>): Promise<T | null> {
    assertCollection(collection);
    assertId(id);
    // The read and the write share one transaction, which SQLite serialises: no other writer in between.
    return this.tx(() => {
      const row = this.q('SELECT doc FROM docs WHERE collection = ? AND id = ?').get(collection, id) as { doc: string } | undefined;
      if (!row) return null;
      const next = change(JSON.parse(row.doc) as T);
      if (next === null) return null;
      this.q('UPDATE docs SET doc = ? WHERE collection = ? AND id = ?').run(JSON.stringify(next), collection, id);
      this.writeOutbox(outbox(next));
      return next;
    });
  }

  // Read markers

  async setReadMarker(conversationId: string, userId: string, seq: number, outbox: OutboxFor<number>): Promise<{ seq: number; changed: boolean }> {
    str(conversationId, 'conversationId');
    str(userId, 'userId');
    int(seq, 'seq');
    return this.tx(() => {
      const cur = (this.q('SELECT seq FROM read_markers WHERE conversation_id = ? AND user_id = ?').get(conversationId, userId) as { seq: number } | undefined)?.seq ?? 0;
      if (!(seq > cur)) return { seq: cur, changed: false };
      this.q(
        `INSERT INTO read_markers (conversation_id, user_id, seq) VALUES (?, ?, ?)
         ON CONFLICT (conversation_id, user_id) DO UPDATE SET seq = excluded.seq`,
      ).run(conversationId, userId, Math.trunc(seq));
      this.writeOutbox(outbox(Math.trunc(seq)));
      return { seq: Math.trunc(seq), changed: true };
    });
  }

  async getReadMarker(conversationId: string, userId: string): Promise<number> {
    const r = this.q('SELECT seq FROM read_markers WHERE conversation_id = ? AND user_id = ?').get(str(conversationId, 'conversationId'), str(userId, 'userId')) as { seq: number } | undefined;
    return r?.seq ?? 0;
  }

  async getReadMarkers(conversationId: string): Promise<Record<string, number>> {
    const rows = this.q(
      `SELECT cm.user_id AS user_id, COALESCE(r.seq, 0) AS seq FROM conversation_members cm
       LEFT JOIN read_markers r ON r.conversation_id = cm.conversation_id AND r.user_id = cm.user_id
       WHERE cm.conversation_id = ? ORDER BY cm.pos`,
    ).all(conversationId) as Array<{ user_id: string; seq: number }>;
    const out: Record<string, number> = {};
    for (const r of rows) out[r.user_id] = Number(r.seq);
    return out;
  }

  // Outbox

  async outboxPending(limit: number, olderThan: string): Promise<OutboxEntry[]> {
    const rows = this.q('SELECT * FROM outbox WHERE created_at < ? ORDER BY created_at, rowid LIMIT ?').all(olderThan, Math.max(0, Math.trunc(limit))) as Row[];
    return rows.map((r) => ({
      eventId: r.event_id as string,
      subject: r.subject as string,
      payload: r.payload as string,
      headers: JSON.parse(r.headers as string) as Record<string, string>,
      createdAt: r.created_at as string,
    }));
  }

  async outboxDelete(eventIds: string[]): Promise<void> {
    if (!eventIds.length) return;
    // Joins the group commit: a delete on its own would be one more fsync'd commit per batch.
    const ids = JSON.stringify(eventIds.map(String));
    await this.tx(() => this.q('DELETE FROM outbox WHERE event_id IN (SELECT value FROM json_each(?))').run(ids));
  }

  async outboxCount(): Promise<number> {
    return Number((this.q('SELECT count(*) AS n FROM outbox').get() as { n: number }).n);
  }
}

/**
 * Documents as JSON text in one table. Filters become `json_extract(doc, ?) = ?` with both the path and
 * the value bound, after guards.ts has checked the field name and that the value is a primitive.
 */
class SqliteDocs implements DocumentStore {
  constructor(private readonly s: SqliteStore) {}

  async get<T extends object>(collection: string, id: string): Promise<T | null> {
    assertCollection(collection);
    assertId(id);
    const r = this.s.q('SELECT doc FROM docs WHERE collection = ? AND id = ?').get(collection, id) as { doc: string } | undefined;
    return r ? (JSON.parse(r.doc) as T) : null;
  }

  async put<T extends object>(collection: string, id: string, doc: T): Promise<void> {
    assertCollection(collection);
    assertId(id);
    const json = JSON.stringify(doc);
    await this.s.tx(() => this.s.q('INSERT INTO docs (collection, id, doc) VALUES (?, ?, ?) ON CONFLICT (collection, id) DO UPDATE SET doc = excluded.doc').run(collection, id, json));
  }

  async insert<T extends object>(collection: string, id: string, doc: T): Promise<boolean> {
    assertCollection(collection);
    assertId(id);
    const json = JSON.stringify(doc);
    return this.s.tx(() => this.s.q('INSERT OR IGNORE INTO docs (collection, id, doc) VALUES (?, ?, ?)').run(collection, id, json).changes === 1);
  }

  async delete(collection: string, id: string): Promise<boolean> {
    assertCollection(collection);
    assertId(id);
    return this.s.tx(() => this.s.q('DELETE FROM docs WHERE collection = ? AND id = ?').run(collection, id).changes === 1);
  }

  /**
   * One unit of the group commit (see SqliteStore.tx), so its fsync is shared with concurrent writes and done
   * off the event loop. The inserts' ids are checked before anything is written, and a taken one returns
   * instead of throwing: a unit that throws makes its whole group run again with savepoints.
   */
  async writeAll(writes: DocWrite[]): Promise<WriteAllResult> {
    // Checked and serialised before the unit joins a group: a bad document fails this call alone, at once.
    const rows = checkedWrites(writes).map((w) => ({ ...w, json: JSON.stringify(w.doc) }));
    if (rows.length === 0) return { written: true };
    return this.s.tx((): WriteAllResult => {
      const taken = firstTakenInsert(rows, (w) => this.s.q('SELECT 1 FROM docs WHERE collection = ? AND id = ?').get(w.collection, w.id) !== undefined);
      if (taken) return { written: false, conflict: { collection: taken.collection, id: taken.id } };
      // Nothing else writes between the check and these (the unit runs inside one transaction); a plain INSERT
      // would still fail, and roll the unit back, if an id were taken after all.
      for (const w of rows) {
        if (w.op === 'insert') this.s.q('INSERT INTO docs (collection, id, doc) VALUES (?, ?, ?)').run(w.collection, w.id, w.json);
        else this.s.q('INSERT INTO docs (collection, id, doc) VALUES (?, ?, ?) ON CONFLICT (collection, id) DO UPDATE SET doc = excluded.doc').run(w.collection, w.id, w.json);
      }
      return { written: true };
    });
  }

  private where(collection: string, filter: Record<string, DocValue> | undefined): { sql: string; args: unknown[] } {
    assertCollection(collection);
    // The collection and the field paths are written into the SQL, not bound: SQLite uses an expression
    // index only when the query repeats its expression, and a partial index only when the query's WHERE
    // names its collection literally (see ensureIndex). Both were checked by guards.ts (no quotes possible).
    const parts = [`collection = '${collection}'`];
    const args: unknown[] = [];
    for (const [k, v] of checkedFilter(filter)) {
      if (v === null) {
        // Like MongoDB: null matches both an explicit null and a missing field.
        parts.push(`json_extract(doc, '$.${k}') IS NULL`);
      } else {
        parts.push(`json_extract(doc, '$.${k}') = ?`);
        args.push(bindable(v));
      }
    }
    return { sql: parts.join(' AND '), args };
  }

  /**
   * `afterId` pages through results by id: ids above it in ascending order, below it when `desc`.
   * With `orderBy`, results sort by that field and then by id.
   */
  async find<T extends object>(
    collection: string,
    filter?: Record<string, DocValue>,
    opts: { limit?: number; orderBy?: string; desc?: boolean; afterId?: string } = {},
  ): Promise<T[]> {
    const { sql, args } = this.findQuery(collection, filter, opts);
    const rows = this.s.q(sql).all(...args) as Array<{ doc: string }>;
    return rows.map((r) => JSON.parse(r.doc) as T);
  }

  /** The SQLite query plan of a find (EXPLAIN QUERY PLAN details), to check in tests that an index is used. */
  explainFind(collection: string, filter?: Record<string, DocValue>, opts: { limit?: number; orderBy?: string; desc?: boolean; afterId?: string } = {}): string[] {
    const { sql, args } = this.findQuery(collection, filter, opts);
    return (this.s.q(`EXPLAIN QUERY PLAN ${sql}`).all(...args) as Array<{ detail: string }>).map((r) => r.detail);
  }

  private findQuery(
    collection: string,
    filter: Record<string, DocValue> | undefined,
    opts: { limit?: number; orderBy?: string; desc?: boolean; afterId?: string },
  ): { sql: string; args: unknown[] } {
    const w = this.where(collection, filter);
    const dir = opts.desc ? 'DESC' : 'ASC';
    if (opts.afterId !== undefined) {
      assertId(opts.afterId, 'afterId');
      w.sql += opts.desc ? ' AND id < ?' : ' AND id > ?';
      w.args.push(opts.afterId);
    }
    let order = `id ${dir}`;
    if (opts.orderBy !== undefined) {
      assertFieldName(opts.orderBy);
      order = `json_extract(doc, ?) ${dir}, id ${dir}`;
    }
    const args = [...w.args];
    if (opts.orderBy !== undefined) args.push(`$.${opts.orderBy}`);
    let sql = `SELECT doc FROM docs WHERE ${w.sql} ORDER BY ${order}`;
    if (opts.limit !== undefined) {
      sql += ' LIMIT ?';
      args.push(Math.max(0, Math.trunc(opts.limit)));
    }
    return { sql, args };
  }

  async count(collection: string, filter?: Record<string, DocValue>): Promise<number> {
    const w = this.where(collection, filter);
    return Number((this.s.q(`SELECT count(*) AS n FROM docs WHERE ${w.sql}`).get(...w.args) as { n: number }).n);
  }

  /**
   * A partial expression index over this collection's rows only, so other collections' writes do not pay
   * for it: `(json_extract(doc,'$.f1'), …)` WHERE collection = '<collection>'. SQLite appends the primary
   * key (collection, id) to every index of a WITHOUT ROWID table, which serves the ORDER BY id / afterId
   * paging of every find; naming those columns explicitly made the planner ignore the index (3.53), so they
   * are left implicit. Named after a hash of its definition, so asking again is a no-op (IF NOT EXISTS).
   */
  async ensureIndex(collection: string, fields: string[]): Promise<void> {
    assertIndex(collection, fields);
    const cols = fields.map((f) => `json_extract(doc, '$.${f}')`).join(', ');
    const name = docsIndexName(collection, fields);
    this.s.q(`CREATE INDEX IF NOT EXISTS ${name} ON docs(${cols}) WHERE collection = '${collection}'`).run();
  }

  async deleteBefore(collection: string, field: string, before: string, limit = 1000): Promise<number> {
    str(before, 'before');
    const n = Math.max(0, Math.trunc(limit));
    const { sql, args } = this.beforeQuery(collection, field, before, n);
    // The batch keeps one prune from holding the write lock for long.
    return this.s.tx(() => this.s.q(`DELETE FROM docs WHERE (collection, id) IN (${sql})`).run(...args).changes);
  }

  /** deleteBefore's query plan, for tests: whether it uses an index (ensureIndex on the field) or scans. */
  explainDeleteBefore(collection: string, field: string): string[] {
    const { sql, args } = this.beforeQuery(collection, field, '', 1);
    return (this.s.q(`EXPLAIN QUERY PLAN ${sql}`).all(...args) as Array<{ detail: string }>).map((r) => r.detail);
  }

  /**
   * The ids deleteBefore takes. Collection and path are written into the SQL, as in `where`, so an index made by
   * ensureIndex on the field serves it: a prune of a large collection reads only what it deletes instead of
   * scanning every document of the collection under the write lock. json_type = 'text': SQLite orders every
   * number below every string, so without it a numeric field would count as "before" any cutoff.
   */
  private beforeQuery(collection: string, field: string, before: string, limit: number): { sql: string; args: unknown[] } {
    assertCollection(collection);
    assertFieldName(field);
    const value = `json_extract(doc, '$.${field}')`;
    // Without statistics SQLite prefers the primary key's `collection =` to a range on the field's index, which
    // reads every document of the collection: name the index when there is one.
    const index = docsIndexName(collection, [field]);
    const exists = this.s.q(`SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?`).get(index) !== undefined;
    return {
      sql: `SELECT collection, id FROM docs${exists ? ` INDEXED BY ${index}` : ''} WHERE collection = '${collection}' AND ${value} < ? AND json_type(doc, '$.${field}') = 'text' LIMIT ?`,
      args: [before, limit],
    };
  }
}
