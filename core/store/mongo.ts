/**
 * The production store: MongoDB through the official driver.
 *
 * Durability: every write uses w:'majority' with j:true, so an acknowledged send is journaled on a majority.
 *
 * Atomicity of a change and its outbox entries, two modes chosen at init():
 *
 * - Replica set or sharded cluster: each write method runs in one transaction (`session.withTransaction`),
 *   outbox inserts included, exactly like the SQLite adapter. Write conflicts (two sends bumping one
 *   conversation's seq) are transient errors the driver retries.
 *
 * - Standalone server (development only; no transactions): outbox entries are written FIRST, marked
 *   `pending` with a note of which document the change touches and a fresh operation id; then the change is
 *   applied as a single-document write that also records that operation id in the document's `_ops` (the
 *   last few ids). Updates are compare-and-set on a `_v` version, so the state the event describes is
 *   exactly the state written. Afterwards the `pending` mark is removed. A crash in between leaves a pending
 *   entry, never a change without its event: the sweeper (outboxPending) checks, once the entry is older
 *   than PENDING_VERIFY_MS, whether the document carries the operation id; if so the change happened and the
 *   event is released, if not the event is dropped. So an orphan event is either made true or never
 *   published. The price in this mode: a crash or a failed send (a lost clientId race, an outbox builder
 *   that throws, a network error) between the seq increment and the message insert can leave a gap in seq
 *   numbers (never a duplicate), and the conversation's updatedAt raised, so it moves up the list with
 *   nothing new in it (listConversations then shows the newest message that exists). Batches of documents
 *   (writeAll) are undone on error but not across a crash. Use a replica set for anything but development.
 */
import { createHash } from 'node:crypto';
import { MongoClient, MongoServerError, type ClientSession, type Collection, type Db, type Filter, type TransactionOptions, type UpdateFilter } from 'mongodb';
import type { Conversation, ConversationSummary, Message, Role, UserRecord, Workspace, WorkspaceSettings } from '../domain.js';
import { VoxaError } from '../errors.js';
import { ulid } from '../ids.js';
import { assertCollection, assertFieldName, assertId, assertIndex, checkedFilter, checkedWrites, escapeRegex, firstTakenInsert, requireInt, requireIsoTime, requireString } from './guards.js';
import type { ChangedQuery, DocValue, DocumentStore, DocWrite, HistoryQuery, NewMessage, OutboxEntry, OutboxFor, RefreshTokenRecord, SearchQuery, SearchResult, Store, WriteAllResult } from './port.js';
import { decodeCursor, encodeCursor, makeSnippet, searchTerms } from '../search/query.js';

/** How old a pending (standalone-mode) outbox entry must be before the sweeper decides its fate. */
const PENDING_VERIFY_MS = 5 * 60_000;
/** How many recent operation ids a document remembers for that check. */
const OPS_KEPT = 20;
/**
 * Word boundaries for message search, with "word character" as core/search/query.ts `searchTerms` defines it
 * (letters, digits, marks). MongoDB's regex engine (PCRE/PCRE2) runs in UTF mode, where \p{…} classes and
 * case-insensitive matching cover all of Unicode; \b and \w would be ASCII-only on some server versions.
 */
const WORD_START = '(?<![\\p{L}\\p{N}\\p{M}])';
const WORD_END = '(?![\\p{L}\\p{N}\\p{M}])';
const WRITE_CONCERN = { w: 'majority' as const, journal: true };
const TXN_OPTS: TransactionOptions = {
  readConcern: { level: 'majority' },
  writeConcern: WRITE_CONCERN,
  readPreference: 'primary',
};

/** Fields every changeable document carries for compare-and-set and crash verification. */
interface Versioned {
  _v: number;
  _ops: string[];
}
interface WorkspaceDoc extends Versioned {
  _id: string;
  name: string;
  settings: WorkspaceSettings;
  createdAt: string;
}
interface UserDoc extends Versioned {
  _id: string;
  workspaceId: string;
  email: string;
  name: string;
  role: UserRecord['role'];
  passwordHash: string | null;
  disabled: boolean;
  totp: UserRecord['totp'] | null;
  tokensValidAfter?: string | null;
  createdAt: string;
}
/** A refresh token as stored: the record with its id as `_id`. */
type TokenDoc = Omit<RefreshTokenRecord, 'id'> & { _id: string };
interface ConversationDoc extends Versioned {
  _id: string;
  workspaceId: string;
  type: Conversation['type'];
  title: string | null;
  members: string[];
  createdBy: string;
  createdAt: string;
  updatedAt: string;
  lastSeq: number;
  directKey?: string;
}
interface MessageDoc extends Versioned {
  _id: string;
  conversationId: string;
  seq: number;
  senderId: string;
  text: string;
  clientId: string | null;
  createdAt: string;
  editedAt?: string;
  deleted?: boolean;
  deletedAt?: string;
  attachments?: string[];
}
interface MarkerDoc extends Versioned {
  /** JSON of [conversationId, userId]: an injective key whatever characters the ids hold. */
  _id: string;
  conversationId: string;
  userId: string;
  seq: number;
}
interface OutboxDoc {
  _id: string;
  subject: string;
  payload: string;
  headers: Record<string, string>;
  createdAt: string;
  /** Standalone mode only: the change is not confirmed yet. */
  pending?: true;
  verify?: { coll: string; id: string; op: string; gone?: true };
  insertedAt?: Date;
}
interface DocDoc {
  collection: string;
  id: string;
  doc: Record<string, unknown>;
}

/** Per-call context: the session (transaction mode) and the operation id (standalone mode). */
interface Ctx {
  session: ClientSession | undefined;
  op: string;
  eventIds: string[];
}

/** Thrown inside a unit when a compare-and-set lost a race; the unit runs again from the start. */
class Retry extends Error {}

/** Thrown inside a writeAll unit when an insert's id is taken: the unit is abandoned and reports it. */
class WriteConflict extends Error {
  constructor(
    readonly collection: string,
    readonly id: string,
  ) {
    super(`document ${id} exists in ${collection}`);
  }
}

/** Every user-supplied value that reaches a query passes one of these: never an operator object. */
const str = requireString;
const int = requireInt;

function isDuplicate(err: unknown, field?: string): boolean {
  if (!(err instanceof MongoServerError) || err.code !== 11000) return false;
  if (field === undefined) return true;
  const kp = (err as MongoServerError & { keyPattern?: Record<string, unknown> }).keyPattern;
  return kp ? field in kp : (err.message ?? '').includes(field);
}

const markerId = (conversationId: string, userId: string) => JSON.stringify([conversationId, userId]);
const pushOp = (op: string) => ({ _ops: { $each: [op], $slice: -OPS_KEPT } });

function toWorkspace(d: WorkspaceDoc): Workspace {
  return { id: d._id, name: d.name, settings: d.settings, createdAt: d.createdAt };
}
function toUser(d: UserDoc): UserRecord {
  const u: UserRecord = {
    id: d._id,
    workspaceId: d.workspaceId,
    email: d.email,
    name: d.name,
    role: d.role,
    createdAt: d.createdAt,
    passwordHash: d.passwordHash ?? null,
    disabled: d.disabled === true,
  };
  if (d.totp != null) u.totp = d.totp;
  if (d.tokensValidAfter != null) u.tokensValidAfter = d.tokensValidAfter;
  return u;
}
function toToken(d: TokenDoc): RefreshTokenRecord {
  return {
    id: d._id,
    userId: d.userId,
    familyId: d.familyId,
    tokenHash: d.tokenHash,
    createdAt: d.createdAt,
    expiresAt: d.expiresAt,
    usedAt: d.usedAt ?? null,
    revokedAt: d.revokedAt ?? null,
  };
}
function toConversation(d: ConversationDoc): Conversation {
  return {
    id: d._id,
    workspaceId: d.workspaceId,
    type: d.type,
    title: d.title ?? null,
    members: d.members,
    createdBy: d.createdBy,
    createdAt: d.createdAt,
    updatedAt: d.updatedAt,
    lastSeq: d.lastSeq,
  };
}
function toMessage(d: MessageDoc): Message {
  const m: Message = {
    id: d._id,
    conversationId: d.conversationId,
    seq: d.seq,
    senderId: d.senderId,
    text: d.text,
    clientId: d.clientId ?? null,
    createdAt: d.createdAt,
  };
  if (d.editedAt != null) m.editedAt = d.editedAt;
  if (d.deleted === true) m.deleted = true;
  if (d.attachments != null) m.attachments = d.attachments;
  return m;
}

export interface MongoStoreOptions {
  /** Force transactions on or off; by default they are used when the deployment supports them. */
  transactions?: boolean;
}

export class MongoStore implements Store {
  readonly kind = 'mongo' as const;
  readonly docs: DocumentStore;
  private readonly client: MongoClient;
  private readonly db: Db;
  private transactions = false;
  private connected: Promise<MongoClient> | null = null;
  /** The last queued send per conversation (see appendMessage); an entry lives only while sends are queued. */
  private readonly sendQueues = new Map<string, Promise<void>>();

  readonly workspaces: Collection<WorkspaceDoc>;
  readonly users: Collection<UserDoc>;
  readonly tokens: Collection<TokenDoc>;
  readonly conversations: Collection<ConversationDoc>;
  readonly messages: Collection<MessageDoc>;
  readonly markers: Collection<MarkerDoc>;
  readonly outbox: Collection<OutboxDoc>;
  readonly docsColl: Collection<DocDoc>;

  constructor(
    url: string,
    dbName: string,
    private readonly opts: MongoStoreOptions = {},
  ) {
    this.client = new MongoClient(url, { writeConcern: WRITE_CONCERN, ignoreUndefined: true, serverSelectionTimeoutMS: 10_000 });
    this.db = this.client.db(dbName);
    this.workspaces = this.db.collection('workspaces');
    this.users = this.db.collection('users');
    this.tokens = this.db.collection('refresh_tokens');
    this.conversations = this.db.collection('conversations');
    this.messages = this.db.collection('messages');
    this.markers = this.db.collection('read_markers');
    this.outbox = this.db.collection('outbox');
    this.docsColl = this.db.collection('docs');
    this.docs = new MongoDocs(this.docsColl, (writes) => this.writeDocs(writes));
  }

  async init(): Promise<void> {
    this.connected ??= this.client.connect();
    await this.connected;
    const hello = await this.db.admin().command({ hello: 1 });
    const supports = typeof hello.setName === 'string' || hello.msg === 'isdbgrid';
    this.transactions = this.opts.transactions ?? supports;

    await Promise.all([
      this.users.createIndexes([
        { key: { email: 1 }, name: 'email_unique', unique: true },
        { key: { workspaceId: 1, name: 1 }, name: 'workspace_name' },
      ]),
      this.tokens.createIndexes([
        { key: { tokenHash: 1 }, name: 'hash_unique', unique: true },
        { key: { familyId: 1 }, name: 'family' },
        { key: { userId: 1 }, name: 'user' },
      ]),
      this.conversations.createIndexes([
        // Only direct conversations carry a directKey; groups must not collide on a missing one.
        { key: { workspaceId: 1, directKey: 1 }, name: 'direct_unique', unique: true, partialFilterExpression: { directKey: { $type: 'string' } } },
        { key: { members: 1, updatedAt: -1 }, name: 'member_activity' },
      ]),
      this.messages.createIndexes([
        { key: { conversationId: 1, seq: 1 }, name: 'seq_unique', unique: true },
        // Sends without a clientId (null) are never deduplicated.
        {
          key: { conversationId: 1, senderId: 1, clientId: 1 },
          name: 'client_unique',
          unique: true,
          partialFilterExpression: { clientId: { $type: 'string' } },
        },
        // No text index: searchMessages matches by regex, which `$text` cannot serve (see there). A deployment
        // created by an earlier version still has the unused `text_search` index; it can be dropped.
        // Edited and deleted messages by seq (listChangedMessages): partial, so they hold the changed messages
        // only. Two of them because a partial filter cannot say "edited or deleted" on every server version.
        { key: { conversationId: 1, seq: 1 }, name: 'edited_seq', partialFilterExpression: { editedAt: { $type: 'string' } } },
        { key: { conversationId: 1, seq: 1 }, name: 'deleted_seq', partialFilterExpression: { deletedAt: { $type: 'string' } } },
      ]),
      this.markers.createIndexes([{ key: { conversationId: 1 }, name: 'conversation' }]),
      this.outbox.createIndexes([
        // Serves outboxPending's sort {createdAt, _id} as well as its range, so a drain batch reads about `limit`
        // entries, not every entry older than the cutoff. A new name: createIndexes refuses an existing name with
        // other keys. Deployments made by an earlier version also have `created` on {createdAt: 1}, now unused;
        // it can be dropped.
        { key: { createdAt: 1, _id: 1 }, name: 'created_id' },
        { key: { insertedAt: 1 }, name: 'pending_inserted', partialFilterExpression: { pending: true } },
      ]),
      this.docsColl.createIndexes([{ key: { collection: 1, id: 1 }, name: 'collection_id_unique', unique: true }]),
    ]);
  }

  async ping(): Promise<void> {
    await this.db.command({ ping: 1 });
  }

  async close(): Promise<void> {
    await this.client.close();
  }

  /**
   * Runs one write unit: in a transaction when available, otherwise with the standalone protocol described
   * at the top of this file. Retries when the unit throws Retry (a lost compare-and-set).
   */
  private async unit<T>(fn: (ctx: Ctx) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const ctx: Ctx = { session: undefined, op: ulid(), eventIds: [] };
      try {
        if (this.transactions) {
          const session = this.client.startSession();
          try {
            ctx.session = session;
            let out: T | undefined;
            await session.withTransaction(async () => {
              ctx.eventIds = [];
              out = await fn(ctx);
            }, TXN_OPTS);
            return out as T;
          } finally {
            await session.endSession();
          }
        }
        const out = await fn(ctx);
        if (ctx.eventIds.length) {
          // If this fails the entries stay pending and the sweeper verifies them later: nothing is lost.
          await this.outbox.updateMany({ _id: { $in: ctx.eventIds } }, { $unset: { pending: '', verify: '', insertedAt: '' } }).catch(() => undefined);
        }
        return out;
      } catch (err) {
        // Standalone mode: drop the entries only when the change certainly did not happen. Anything else
        // (a network error on the change itself) leaves them pending for verification.
        const notApplied = err instanceof Retry || err instanceof VoxaError || isDuplicate(err);
        if (!this.transactions && ctx.eventIds.length && notApplied) {
          await this.outbox.deleteMany({ _id: { $in: ctx.eventIds } }).catch(() => undefined);
        }
        if (err instanceof Retry && attempt < 50) continue;
        if (err instanceof Retry) throw new VoxaError('CONFLICT', 'Too much contention on this item; try again.');
        throw err;
      }
    }
  }

  /** Inserts a change's outbox entries within the unit (pending until confirmed in standalone mode). */
  private async putOutbox(ctx: Ctx, entries: OutboxEntry[], coll: string, id: string, gone = false): Promise<void> {
    if (!entries.length) return;
    const pending = !this.transactions;
    const docs: OutboxDoc[] = entries.map((e) => ({
      _id: e.eventId,
      subject: e.subject,
      payload: e.payload,
      headers: e.headers ?? {},
      createdAt: e.createdAt,
      ...(pending ? { pending: true as const, verify: { coll, id, op: ctx.op, ...(gone ? { gone: true as const } : {}) }, insertedAt: new Date() } : {}),
    }));
    await this.outbox.insertMany(docs, { session: ctx.session });
    ctx.eventIds.push(...docs.map((d) => d._id));
  }

  // Workspaces

  async ensureWorkspace(ws: Workspace): Promise<Workspace> {
    const id = str(ws.id, 'id');
    for (let i = 0; i < 3; i++) {
      try {
        await this.workspaces.updateOne(
          { _id: id },
          { $setOnInsert: { name: ws.name, settings: ws.settings, createdAt: ws.createdAt, _v: 0, _ops: [] } },
          { upsert: true },
        );
        break;
      } catch (err) {
        // Two concurrent upserts of a new id: one inserts, the other sees a duplicate and simply re-reads.
        if (!isDuplicate(err)) throw err;
      }
    }
    return toWorkspace((await this.workspaces.findOne({ _id: id }))!);
  }

  async getWorkspace(id: string): Promise<Workspace | null> {
    const d = await this.workspaces.findOne({ _id: str(id, 'id') });
    return d ? toWorkspace(d) : null;
  }

  async updateWorkspaceSettings(id: string, patch: Partial<WorkspaceSettings>, outbox: OutboxFor<Workspace>): Promise<Workspace> {
    str(id, 'id');
    return this.unit(async (ctx) => {
      const cur = await this.workspaces.findOne({ _id: id }, { session: ctx.session });
      if (!cur) throw new VoxaError('NOT_FOUND', 'No such workspace.');
      const settings = { ...cur.settings };
      for (const [k, v] of Object.entries(patch)) if (v !== undefined) (settings as Record<string, unknown>)[k] = v;
      const next = { ...toWorkspace(cur), settings };
      await this.putOutbox(ctx, outbox(next), 'workspaces', id);
      const res = await this.workspaces.updateOne(
        { _id: id, _v: cur._v },
        { $set: { settings, _v: cur._v + 1 }, $push: pushOp(ctx.op) },
        { session: ctx.session },
      );
      if (res.matchedCount !== 1) throw new Retry();
      return next;
    });
  }

  // Users

  async createUser(user: UserRecord, outbox: OutboxFor<UserRecord>): Promise<UserRecord> {
    const u: UserRecord = { ...user, id: str(user.id, 'id'), email: str(user.email, 'email').toLowerCase() };
    try {
      return await this.unit(async (ctx) => {
        const stored = toUser({ ...this.userDoc(u), _v: 0, _ops: [] });
        await this.putOutbox(ctx, outbox(stored), 'users', u.id);
        await this.users.insertOne({ ...this.userDoc(u), _v: 0, _ops: [ctx.op] }, { session: ctx.session });
        return stored;
      });
    } catch (err) {
      if (isDuplicate(err, 'email')) throw new VoxaError('EMAIL_TAKEN');
      throw err;
    }
  }

  private userDoc(u: UserRecord): Omit<UserDoc, '_v' | '_ops'> {
    return {
      _id: u.id,
      workspaceId: str(u.workspaceId, 'workspaceId'),
      email: u.email,
      name: u.name,
      role: u.role,
      passwordHash: u.passwordHash ?? null,
      disabled: u.disabled === true,
      totp: u.totp ?? null,
      createdAt: u.createdAt,
    };
  }

  async getUser(id: string): Promise<UserRecord | null> {
    const d = await this.users.findOne({ _id: str(id, 'id') });
    return d ? toUser(d) : null;
  }

  async getUserByEmail(email: string): Promise<UserRecord | null> {
    const d = await this.users.findOne({ email: str(email, 'email').toLowerCase() });
    return d ? toUser(d) : null;
  }

  async searchUsers(workspaceId: string, q: string, limit: number, opts: { activeOnly?: boolean; roles?: Role[] } = {}): Promise<UserRecord[]> {
    // The text is escaped so that it is matched literally, wildcards and regex syntax included.
    const pattern = escapeRegex(str(q, 'q'));
    const n = Math.max(0, int(limit, 'limit'));
    if (n === 0) return []; // limit(0) would mean "no limit" to MongoDB
    // No collation: workspaceId matches exactly, and the `workspace_name` index (simple collation) can serve it;
    // a query collation would make it case-insensitive and unable to use that index. The regex finds every match
    // in the workspace anyway, so the order is a top-k sort in memory: lower-cased name, name, id, like SQLite's
    // ORDER BY voxa_lower(name), name, id (MongoDB's $toLower folds ASCII only, so non-ASCII capitals can
    // sort differently).
    const docs = await this.users
      .aggregate<UserDoc>([
        {
          $match: {
            workspaceId: str(workspaceId, 'workspaceId'),
            // $ne: null also leaves out documents without the field; $ne: true those without `disabled`.
            ...(opts.activeOnly === true ? { passwordHash: { $ne: null }, disabled: { $ne: true } } : {}),
            // Strings only (checked), so nothing from a caller becomes an operator.
            ...(opts.roles ? { role: { $in: opts.roles.map((r) => str(r, 'roles')) } } : {}),
            $or: [{ name: { $regex: pattern, $options: 'i' } }, { email: { $regex: pattern, $options: 'i' } }],
          },
        },
        { $addFields: { _nameKey: { $toLower: '$name' } } },
        { $sort: { _nameKey: 1, name: 1, _id: 1 } },
        { $limit: n },
      ])
      .toArray();
    return docs.map(toUser);
  }

  async updateUser(
    id: string,
    patch: Partial<Pick<UserRecord, 'name' | 'role' | 'passwordHash' | 'disabled' | 'totp' | 'tokensValidAfter'>>,
    outbox: OutboxFor<UserRecord>,
  ): Promise<UserRecord | null> {
    str(id, 'id');
    // Only known fields are copied, so a patch can never smuggle in `_v`, `email` or an operator.
    const set: Partial<UserDoc> = {};
    if (patch.name !== undefined) set.name = patch.name;
    if (patch.role !== undefined) set.role = patch.role;
    if (patch.passwordHash !== undefined) set.passwordHash = patch.passwordHash ?? null;
    if (patch.disabled !== undefined) set.disabled = patch.disabled === true;
    if (patch.totp !== undefined) set.totp = patch.totp ?? null;
    if (patch.tokensValidAfter !== undefined) set.tokensValidAfter = patch.tokensValidAfter ? requireIsoTime(patch.tokensValidAfter, 'tokensValidAfter') : null;
    return this.unit(async (ctx) => {
      const cur = await this.users.findOne({ _id: id }, { session: ctx.session });
      if (!cur) return null;
      const next = toUser({ ...cur, ...set });
      await this.putOutbox(ctx, outbox(next), 'users', id);
      const res = await this.users.updateOne({ _id: id, _v: cur._v }, { $set: { ...set, _v: cur._v + 1 }, $push: pushOp(ctx.op) }, { session: ctx.session });
      if (res.matchedCount !== 1) throw new Retry();
      return next;
    });
  }

  // Refresh tokens

  private tokenDoc(rec: RefreshTokenRecord): TokenDoc {
    return {
      _id: str(rec.id, 'id'),
      userId: str(rec.userId, 'userId'),
      familyId: str(rec.familyId, 'familyId'),
      tokenHash: str(rec.tokenHash, 'tokenHash'),
      createdAt: rec.createdAt,
      expiresAt: rec.expiresAt,
      usedAt: rec.usedAt ?? null,
      revokedAt: rec.revokedAt ?? null,
    };
  }

  async insertRefreshToken(rec: RefreshTokenRecord): Promise<void> {
    await this.tokens.insertOne(this.tokenDoc(rec));
  }

  async getRefreshTokenByHash(tokenHash: string): Promise<RefreshTokenRecord | null> {
    const d = await this.tokens.findOne({ tokenHash: str(tokenHash, 'tokenHash') });
    return d ? toToken(d) : null;
  }

  async rotateRefreshToken(oldId: string, usedAt: string, next: RefreshTokenRecord): Promise<boolean> {
    str(oldId, 'oldId');
    const nextDoc = this.tokenDoc(next);
    const used = str(usedAt, 'usedAt');
    if (!this.transactions) {
      // Standalone: the successor goes in first, then the old token is marked used only if it is still live.
      // A revokeTokenFamily running at any point in between either revokes the successor too or makes the
      // compare-and-set fail (and the successor is removed), so a revoked family never keeps a live token; in
      // the other order it could revoke the family just before the successor was inserted. A crash part-way
      // leaves at most an unused successor whose secret nobody was given, or the old token used and the
      // successor never handed out: the user signs in again, which fails closed.
      await this.tokens.insertOne(nextDoc);
      const res = await this.tokens.updateOne({ _id: oldId, usedAt: null, revokedAt: null }, { $set: { usedAt: used } });
      if (res.modifiedCount === 1) return true;
      await this.tokens.deleteOne({ _id: nextDoc._id });
      return false;
    }
    // In a transaction the two writes are atomic.
    return this.unit(async (ctx) => {
      const res = await this.tokens.updateOne({ _id: oldId, usedAt: null, revokedAt: null }, { $set: { usedAt: used } }, { session: ctx.session });
      if (res.modifiedCount !== 1) return false;
      await this.tokens.insertOne(nextDoc, { session: ctx.session });
      return true;
    });
  }

  async revokeTokenFamily(familyId: string, at: string): Promise<void> {
    await this.tokens.updateMany({ familyId: str(familyId, 'familyId'), revokedAt: null }, { $set: { revokedAt: str(at, 'at') } });
  }

  async revokeUserTokens(userId: string, at: string): Promise<void> {
    await this.tokens.updateMany({ userId: str(userId, 'userId'), revokedAt: null }, { $set: { revokedAt: str(at, 'at') } });
  }

  // Conversations

  async createConversation(
    conv: Conversation & { directKey?: string },
    outbox: OutboxFor<Conversation>,
  ): Promise<{ conversation: Conversation; created: boolean }> {
    const workspaceId = str(conv.workspaceId, 'workspaceId');
    const directKey = conv.type === 'direct' && typeof conv.directKey === 'string' ? conv.directKey : undefined;
    const existing = async (session?: ClientSession) => {
      if (directKey === undefined) return null;
      const d = await this.conversations.findOne({ workspaceId, directKey }, { session });
      return d ? { conversation: toConversation(d), created: false } : null;
    };
    const doc: ConversationDoc = {
      _id: str(conv.id, 'id'),
      workspaceId,
      type: conv.type,
      title: conv.title ?? null,
      members: [...new Set(conv.members.map((m) => str(m, 'members')))],
      createdBy: str(conv.createdBy, 'createdBy'),
      createdAt: conv.createdAt,
      updatedAt: conv.updatedAt,
      lastSeq: conv.lastSeq ?? 0,
      ...(directKey !== undefined ? { directKey } : {}),
      _v: 0,
      _ops: [],
    };
    try {
      return await this.unit(async (ctx) => {
        const found = await existing(ctx.session);
        if (found) return found;
        const stored = toConversation(doc);
        await this.putOutbox(ctx, outbox(stored), 'conversations', doc._id);
        await this.conversations.insertOne({ ...doc, _ops: [ctx.op] }, { session: ctx.session });
        return { conversation: stored, created: true };
      });
    } catch (err) {
      // A concurrent creation of the same pair won the unique index: return its conversation.
      if (isDuplicate(err, 'directKey')) {
        const found = await existing();
        if (found) return found;
      }
      throw err;
    }
  }

  async getConversation(id: string): Promise<Conversation | null> {
    const d = await this.conversations.findOne({ _id: str(id, 'id') });
    return d ? toConversation(d) : null;
  }

  /**
   * Four queries whatever the number of conversations: the conversations, then the caller's read markers (by
   * _id), then the last messages and the unread counts together (each an $or of per-conversation branches,
   * served by the {conversationId, seq} index). Not one snapshot, as it is not on SQLite's single statement
   * either side of a concurrent send; the counts are bounded by the conversations' lastSeq as read.
   */
  async listConversations(userId: string, opts: { limit?: number; after?: { updatedAt: string; id: string } } = {}): Promise<ConversationSummary[]> {
    str(userId, 'userId');
    const limit = Math.max(0, int(opts.limit ?? 200, 'limit'));
    if (limit === 0) return [];
    // `after`: only conversations past that position in the list's order (updatedAt, then id, descending).
    const after = opts.after ? { updatedAt: str(opts.after.updatedAt, 'after.updatedAt'), id: str(opts.after.id, 'after.id') } : null;
    const filter: Filter<ConversationDoc> = { members: userId };
    if (after) filter.$or = [{ updatedAt: { $lt: after.updatedAt } }, { updatedAt: after.updatedAt, _id: { $lt: after.id } }];
    const convs = await this.conversations.find(filter).sort({ updatedAt: -1, _id: -1 }).limit(limit).toArray();
    if (convs.length === 0) return [];
    const markers = await this.markers.find({ _id: { $in: convs.map((c) => markerId(c._id, userId)) } }, { projection: { conversationId: 1, seq: 1 } }).toArray();
    const readSeqOf = new Map(markers.map((m) => [m.conversationId, m.seq]));
    const readSeq = (c: ConversationDoc) => readSeqOf.get(c._id) ?? 0;
    const withMessages = convs.filter((c) => c.lastSeq > 0);
    const withUnread = withMessages.filter((c) => c.lastSeq > readSeq(c));
    const [lastDocs, counts] = await Promise.all([
      withMessages.length ? this.messages.find({ $or: withMessages.map((c) => ({ conversationId: c._id, seq: c.lastSeq })) }).toArray() : [],
      withUnread.length
        ? this.messages
            .aggregate<{ _id: string; n: number }>([
              {
                $match: {
                  $or: withUnread.map((c) => ({
                    conversationId: c._id,
                    seq: { $gt: readSeq(c), $lte: c.lastSeq },
                    senderId: { $ne: userId },
                    deleted: { $ne: true },
                  })),
                },
              },
              { $group: { _id: '$conversationId', n: { $sum: 1 } } },
            ])
            .toArray()
        : [],
    ]);
    const lastOf = new Map(lastDocs.map((m) => [m.conversationId, m]));
    const unreadOf = new Map(counts.map((r) => [r._id, r.n]));
    // Standalone mode only: a send that failed after its seq increment leaves lastSeq naming no message; the
    // newest message that exists is the last one then (one more query per such conversation, rare).
    const missing = withMessages.filter((c) => !lastOf.has(c._id));
    await Promise.all(
      missing.map(async (c) => {
        const [d] = await this.messages.find({ conversationId: c._id }).sort({ seq: -1 }).limit(1).toArray();
        if (d) lastOf.set(c._id, d);
      }),
    );
    return convs.map((d) => {
      const last = lastOf.get(d._id);
      return { ...toConversation(d), lastMessage: last ? toMessage(last) : null, unreadCount: unreadOf.get(d._id) ?? 0, readSeq: readSeq(d) };
    });
  }

  async updateMembers(
    conversationId: string,
    change: { add?: string[]; remove?: string[]; title?: string },
    outbox: OutboxFor<Conversation>,
  ): Promise<Conversation | null> {
    str(conversationId, 'conversationId');
    const add = (change.add ?? []).map((m) => str(m, 'add'));
    const remove = new Set((change.remove ?? []).map((m) => str(m, 'remove')));
    return this.unit(async (ctx) => {
      const cur = await this.conversations.findOne({ _id: conversationId }, { session: ctx.session });
      if (!cur) return null;
      const members = cur.members.filter((m) => !remove.has(m));
      for (const m of add) if (!members.includes(m)) members.push(m);
      const now = new Date().toISOString();
      const updatedAt = now > cur.updatedAt ? now : cur.updatedAt;
      const title = change.title !== undefined ? change.title : cur.title;
      const next = toConversation({ ...cur, members, title, updatedAt });
      await this.putOutbox(ctx, outbox(next), 'conversations', conversationId);
      // lastSeq is left alone (sends bump it with $inc and do not touch _v); updatedAt only moves forward.
      const res = await this.conversations.updateOne(
        { _id: conversationId, _v: cur._v },
        { $set: { members, title, _v: cur._v + 1 }, $max: { updatedAt }, $push: pushOp(ctx.op) },
        { session: ctx.session },
      );
      if (res.matchedCount !== 1) throw new Retry();
      return next;
    });
  }

  // Messages

  /**
   * Sends to one conversation from this process run one after another, in call order, so their seqs follow
   * the order they arrived in, as in the SQLite adapter. Run concurrently, each would be its own transaction
   * racing for the conversation's `$inc`, and the losers retry after a random backoff, so seq order would be
   * random. Across processes the `$inc` on the conversation document (in the send's transaction) still gives
   * every send a distinct seq; only the order between processes is whoever commits first. Sends to the same
   * conversation would conflict anyway, so queueing them costs little throughput; other conversations are not
   * held up.
   */
  async appendMessage(msg: NewMessage, outbox: OutboxFor<Message>): Promise<{ message: Message; created: boolean }> {
    const conversationId = str(msg.conversationId, 'conversationId');
    const prev = this.sendQueues.get(conversationId);
    const run = () => this.appendNow(conversationId, msg, outbox);
    // A failed send does not stop the ones queued after it.
    const result = prev ? prev.then(run) : run();
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.sendQueues.set(conversationId, tail);
    void tail.then(() => {
      if (this.sendQueues.get(conversationId) === tail) this.sendQueues.delete(conversationId);
    });
    return result;
  }

  private async appendNow(conversationId: string, msg: NewMessage, outbox: OutboxFor<Message>): Promise<{ message: Message; created: boolean }> {
    const senderId = str(msg.senderId, 'senderId');
    const id = str(msg.id, 'id');
    const createdAt = str(msg.createdAt, 'createdAt');
    const clientId = typeof msg.clientId === 'string' ? msg.clientId : null;
    const byClient = async (session?: ClientSession) => {
      if (clientId === null) return null;
      const d = await this.messages.findOne({ conversationId, senderId, clientId }, { session });
      return d ? { message: toMessage(d), created: false } : null;
    };
    try {
      return await this.unit(async (ctx) => {
        // A repeat writes nothing: no seq consumed, no outbox entries.
        const dup = await byClient(ctx.session);
        if (dup) return dup;
        const conv = await this.conversations.findOneAndUpdate(
          { _id: conversationId },
          { $inc: { lastSeq: 1 }, $max: { updatedAt: createdAt } },
          { returnDocument: 'after', session: ctx.session, projection: { lastSeq: 1 } },
        );
        if (!conv) throw new VoxaError('CONVERSATION_NOT_FOUND');
        const doc: MessageDoc = {
          _id: id,
          conversationId,
          seq: conv.lastSeq,
          senderId,
          text: String(msg.text),
          clientId,
          createdAt,
          ...(msg.attachments && msg.attachments.length ? { attachments: msg.attachments.map((a) => str(a, 'attachments')) } : {}),
          _v: 0,
          _ops: [ctx.op],
        };
        const message = toMessage(doc);
        await this.putOutbox(ctx, outbox(message), 'messages', id);
        await this.messages.insertOne(doc, { session: ctx.session });
        return { message, created: true };
      });
    } catch (err) {
      // A concurrent send with the same clientId got in first (only reachable without transactions, or
      // when a transaction lost on the unique index): return that message.
      if (isDuplicate(err, 'clientId')) {
        const dup = await byClient();
        if (dup) return dup;
      }
      throw err;
    }
  }

  async listMessages(conversationId: string, q: HistoryQuery): Promise<{ messages: Message[]; hasMore: boolean }> {
    str(conversationId, 'conversationId');
    const limit = Math.max(0, int(q.limit, 'limit'));
    const seq: { $gt?: number; $lt?: number } = {};
    if (q.before !== undefined) seq.$lt = int(q.before, 'before');
    if (q.after !== undefined) seq.$gt = int(q.after, 'after');
    const filter: Filter<MessageDoc> = { conversationId, ...(Object.keys(seq).length ? { seq } : {}) };
    // One extra document tells whether there is more in the direction being read.
    if (q.after !== undefined) {
      const docs = await this.messages.find(filter).sort({ seq: 1 }).limit(limit + 1).toArray();
      return { messages: docs.slice(0, limit).map(toMessage), hasMore: docs.length > limit };
    }
    const docs = await this.messages.find(filter).sort({ seq: -1 }).limit(limit + 1).toArray();
    return { messages: docs.slice(0, limit).reverse().map(toMessage), hasMore: docs.length > limit };
  }

  async listChangedMessages(conversationId: string, q: ChangedQuery): Promise<{ messages: Message[]; hasMore: boolean }> {
    str(conversationId, 'conversationId');
    const limit = Math.max(0, int(q.limit, 'limit'));
    const seq = { $gt: q.afterSeq !== undefined ? int(q.afterSeq, 'afterSeq') : 0, $lte: int(q.upToSeq, 'upToSeq') };
    const since = requireIsoTime(q.since, 'since');
    // Each branch names its partial index's condition ($type string) so the planner can use that index.
    const filter: Filter<MessageDoc> = {
      $or: [
        { conversationId, seq, editedAt: { $type: 'string', $gt: since } },
        { conversationId, seq, deletedAt: { $type: 'string', $gt: since } },
      ],
    };
    const docs = await this.messages.find(filter).sort({ seq: 1 }).limit(limit + 1).toArray();
    return { messages: docs.slice(0, limit).map(toMessage), hasMore: docs.length > limit };
  }

  async getMessage(conversationId: string, messageId: string): Promise<Message | null> {
    const d = await this.messages.findOne({ _id: str(messageId, 'messageId'), conversationId: str(conversationId, 'conversationId') });
    return d ? toMessage(d) : null;
  }

  async editMessage(conversationId: string, messageId: string, text: string, editedAt: string, outbox: OutboxFor<Message>): Promise<Message | null> {
    const filter = { _id: str(messageId, 'messageId'), conversationId: str(conversationId, 'conversationId') };
    return this.unit(async (ctx) => {
      const cur = await this.messages.findOne(filter, { session: ctx.session });
      if (!cur || cur.deleted === true) return cur ? toMessage(cur) : null;
      const next = toMessage({ ...cur, text: String(text), editedAt: str(editedAt, 'editedAt') });
      await this.putOutbox(ctx, outbox(next), 'messages', cur._id);
      const res = await this.messages.updateOne(
        { ...filter, _v: cur._v },
        { $set: { text: next.text, editedAt: next.editedAt!, _v: cur._v + 1 }, $push: pushOp(ctx.op) },
        { session: ctx.session },
      );
      if (res.matchedCount !== 1) throw new Retry();
      return next;
    });
  }

  async deleteMessage(conversationId: string, messageId: string, deletedAt: string, outbox: OutboxFor<Message>): Promise<Message | null> {
    const filter = { _id: str(messageId, 'messageId'), conversationId: str(conversationId, 'conversationId') };
    return this.unit(async (ctx) => {
      const cur = await this.messages.findOne(filter, { session: ctx.session });
      if (!cur || cur.deleted === true) return cur ? toMessage(cur) : null;
      const { attachments: _gone, ...rest } = cur;
      const next = toMessage({ ...rest, text: '', deleted: true });
      await this.putOutbox(ctx, outbox(next), 'messages', cur._id);
      // The text and attachments are really gone, not hidden.
      const res = await this.messages.updateOne(
        { ...filter, _v: cur._v },
        { $set: { text: '', deleted: true, deletedAt: str(deletedAt, 'deletedAt'), _v: cur._v + 1 }, $unset: { attachments: '' }, $push: pushOp(ctx.op) },
        { session: ctx.session },
      );
      if (res.matchedCount !== 1) throw new Retry();
      return next;
    });
  }

  // Search

  /**
   * The same result set as the SQLite adapter's FTS5 query (core/search/query.ts `ftsQuery`): every term must
   * be a whole word of the message, except the last, which only has to start a word (search-as-you-type);
   * a term never matches inside another word. A word is a run of letters, digits and marks, as `searchTerms`
   * splits the query. MongoDB's `$text` cannot do this (no prefixes; quoted phrases match as substrings), so
   * each term is a case-insensitive regex anchored at a word start by a look-behind, all of them required.
   *
   * Ranking: the number of matched words (ties newest first). SQLite ranks by bm25, so the order of equally
   * good hits can differ between the adapters; the set cannot, except that SQLite also folds diacritics
   * ("cafe" finds "café") and compatibility forms (NFKC) of the stored text, which a regex does not.
   *
   * Cost: an unanchored regex cannot use index bounds, so a search reads every (not deleted) message of the
   * caller's conversations (or of the one conversation asked for) through the {conversationId, seq} index and
   * tests it: O(messages in those conversations) per query, each keystroke of search-as-you-type included.
   * The sort is a top-k of offset + limit + 1 documents in memory. When that gets too slow, the indexable way
   * is a stored array of normalised words per message (multikey index: equality for whole terms, an anchored
   * `^prefix` regex for the last), or Atlas Search.
   */
  async searchMessages(userId: string, q: string, opts: SearchQuery): Promise<SearchResult> {
    str(userId, 'userId');
    const terms = searchTerms(str(q, 'q'));
    const limit = Math.max(0, int(opts.limit, 'limit'));
    const offset = decodeCursor(opts.cursor);
    if (terms.length === 0 || limit === 0) return { hits: [], nextCursor: null };
    // The caller's conversations first (by the member index), then the match inside them.
    const convFilter: Filter<ConversationDoc> = { members: userId };
    if (opts.conversationId !== undefined) convFilter._id = str(opts.conversationId, 'conversationId');
    const convIds = (await this.conversations.find(convFilter, { projection: { _id: 1 } }).toArray()).map((c) => c._id);
    if (convIds.length === 0) return { hits: [], nextCursor: null };
    // Terms hold only word characters (searchTerms), escaped anyway so nothing in them can act as syntax.
    const termPattern = (t: string, i: number) => (i === terms.length - 1 ? escapeRegex(t) : `${escapeRegex(t)}${WORD_END}`);
    const match: Filter<MessageDoc> = {
      conversationId: { $in: convIds },
      deleted: { $ne: true },
      $and: terms.map((t, i) => ({ text: { $regex: `${WORD_START}${termPattern(t, i)}`, $options: 'i' } })),
    };
    // Any term at a word start, counted over the whole text: the score.
    const anyTerm = `${WORD_START}(?:${terms.map(termPattern).join('|')})`;
    const docs = await this.messages
      .aggregate<MessageDoc & { score: number }>([
        { $match: match },
        { $addFields: { score: { $size: { $regexFindAll: { input: '$text', regex: anyTerm, options: 'i' } } } } },
        { $sort: { score: -1, _id: -1 } },
        { $skip: offset },
        { $limit: limit + 1 },
      ])
      .toArray();
    const hits = docs.slice(0, limit).map((d) => {
      const { score, ...doc } = d;
      const message = toMessage(doc);
      return { message, ...makeSnippet(message.text, terms), score: Number(score) };
    });
    return { hits, nextCursor: docs.length > limit ? encodeCursor(offset + limit) : null };
  }

  // Documents with events

  async insertDoc<T extends object>(collection: string, id: string, doc: T, outbox: OutboxFor<T>): Promise<boolean> {
    assertCollection(collection);
    assertId(id);
    // A string _id derived from (collection, id) lets the standalone-mode sweeper verify the change by _id and
    // _ops like every other collection; the (collection, id) unique index still guards duplicates.
    const key = JSON.stringify([collection, id]);
    try {
      return await this.unit(async (ctx) => {
        await this.putOutbox(ctx, outbox(doc), 'docs', key);
        await this.docsColl.insertOne({ _id: key, collection, id, doc: doc as Record<string, unknown>, _ops: [ctx.op] } as DocDoc, { session: ctx.session });
        return true;
      });
    } catch (err) {
      if (isDuplicate(err)) return false;
      throw err;
    }
  }

  async putDoc<T extends object>(collection: string, id: string, doc: T, outbox: OutboxFor<T>): Promise<void> {
    assertCollection(collection);
    assertId(id);
    const key = JSON.stringify([collection, id]);
    await this.unit(async (ctx) => {
      await this.putOutbox(ctx, outbox(doc), 'docs', key);
      try {
        await this.docsColl.updateOne(
          { collection, id },
          { $set: { doc: doc as Record<string, unknown> }, $push: pushOp(ctx.op), $setOnInsert: { _id: key } } as unknown as UpdateFilter<DocDoc>,
          { upsert: true, session: ctx.session },
        );
      } catch (err) {
        // Two concurrent upserts of a new id: the loser starts over as an update.
        if (isDuplicate(err)) throw new Retry();
        throw err;
      }
    });
  }

  async deleteDoc<T extends object>(collection: string, id: string, outbox: OutboxFor<T>): Promise<boolean> {
    assertCollection(collection);
    assertId(id);
    const key = JSON.stringify([collection, id]);
    return this.unit(async (ctx) => {
      const cur = await this.docsColl.findOne({ collection, id }, { session: ctx.session });
      if (!cur) return false;
      await this.putOutbox(ctx, outbox(cur.doc as T), 'docs', key, true);
      const res = await this.docsColl.deleteOne({ collection, id }, { session: ctx.session });
      if (res.deletedCount !== 1) throw new Retry(); // deleted meanwhile: the next round finds nothing
      return true;
    });
  }

  async updateDoc<T extends object>(collection: string, id: string, change: (current: T) => T | null, outbox: OutboxFor<T>): Promise<T | null> {
    assertCollection(collection);
    assertId(id);
    const key = JSON.stringify([collection, id]);
    return this.unit(async (ctx) => {
      const cur = await this.docsColl.findOne({ collection, id }, { session: ctx.session });
      if (!cur) return null;
      const next = change(cur.doc as T);
      if (next === null) return null;
      await this.putOutbox(ctx, outbox(next), 'docs', key);
      // Matching the document as read makes this a compare-and-set without transactions too: a concurrent
      // change makes it miss, and the next round calls `change` on what that one wrote. $eq, so a stored
      // document whose first key starts with `$` is compared literally, not read as an operator.
      const res = await this.docsColl.updateOne(
        { collection, id, doc: { $eq: cur.doc } },
        { $set: { doc: next as Record<string, unknown> }, $push: pushOp(ctx.op) } as unknown as UpdateFilter<DocDoc>,
        { session: ctx.session },
      );
      if (res.matchedCount !== 1) throw new Retry();
      return next;
    });
  }

  /**
   * DocumentStore.writeAll, as one unit: one transaction on a replica set (a taken id aborts it, so nothing is
   * written). Standalone, the inserts' ids are looked up first (the usual conflict writes nothing), then the
   * writes are applied in order, and undone in reverse if one fails; only a crash part-way can leave a prefix.
   */
  private async writeDocs(writes: DocWrite[]): Promise<WriteAllResult> {
    if (writes.length === 0) return { written: true };
    if (!this.transactions) {
      // The inserts' stored ids in one query; an insert of an id an earlier write of the batch claims fails too.
      const inserts = writes.filter((w) => w.op === 'insert');
      const stored = inserts.length
        ? await this.docsColl.find({ $or: inserts.map((w) => ({ collection: w.collection, id: w.id })) }, { projection: { collection: 1, id: 1 } }).toArray()
        : [];
      const storedKeys = new Set(stored.map((d) => JSON.stringify([d.collection, d.id])));
      const taken = firstTakenInsert(writes, (w) => storedKeys.has(JSON.stringify([w.collection, w.id])));
      if (taken) return { written: false, conflict: { collection: taken.collection, id: taken.id } };
    }
    try {
      return await this.unit(async (ctx): Promise<WriteAllResult> => {
        const undo: Array<() => Promise<unknown>> = [];
        try {
          for (const w of writes) {
            const { collection, id } = w;
            const doc = w.doc as Record<string, unknown>;
            if (w.op === 'insert') {
              try {
                await this.docsColl.insertOne({ collection, id, doc }, { session: ctx.session });
              } catch (err) {
                if (isDuplicate(err)) throw new WriteConflict(collection, id);
                throw err;
              }
              // Each undo only takes back this batch's own write: a concurrent writer's later change stays.
              if (!ctx.session) undo.push(() => this.docsColl.deleteOne({ collection, id, doc: { $eq: doc } }));
            } else {
              const before = ctx.session ? null : await this.docsColl.findOne({ collection, id });
              try {
                await this.docsColl.replaceOne({ collection, id }, { collection, id, doc }, { upsert: true, session: ctx.session });
              } catch (err) {
                // Two concurrent upserts of a new id: the loser starts over, when it is an update.
                if (isDuplicate(err)) throw new Retry();
                throw err;
              }
              if (!ctx.session) {
                const mine = { collection, id, doc: { $eq: doc } };
                undo.push(() => (before ? this.docsColl.replaceOne(mine, { collection, id, doc: before.doc }) : this.docsColl.deleteOne(mine)));
              }
            }
          }
          return { written: true };
        } catch (err) {
          // Standalone: take back what this round wrote before the error goes up (or the round runs again).
          for (const step of undo.reverse()) await step().catch(() => undefined);
          throw err;
        }
      });
    } catch (err) {
      if (err instanceof WriteConflict) return { written: false, conflict: { collection: err.collection, id: err.id } };
      throw err;
    }
  }

  // Read markers

  async setReadMarker(conversationId: string, userId: string, seq: number, outbox: OutboxFor<number>): Promise<{ seq: number; changed: boolean }> {
    str(conversationId, 'conversationId');
    str(userId, 'userId');
    const target = int(seq, 'seq');
    const _id = markerId(conversationId, userId);
    return this.unit(async (ctx) => {
      const cur = await this.markers.findOne({ _id }, { session: ctx.session });
      const curSeq = cur?.seq ?? 0;
      if (!(target > curSeq)) return { seq: curSeq, changed: false };
      await this.putOutbox(ctx, outbox(target), 'read_markers', _id);
      if (cur) {
        const res = await this.markers.updateOne({ _id, _v: cur._v }, { $set: { seq: target, _v: cur._v + 1 }, $push: pushOp(ctx.op) }, { session: ctx.session });
        if (res.matchedCount !== 1) throw new Retry();
      } else {
        try {
          await this.markers.insertOne({ _id, conversationId, userId, seq: target, _v: 0, _ops: [ctx.op] }, { session: ctx.session });
        } catch (err) {
          // Someone else created the marker meanwhile: start over and compare with theirs.
          if (isDuplicate(err)) throw new Retry();
          throw err;
        }
      }
      return { seq: target, changed: true };
    });
  }

  async getReadMarker(conversationId: string, userId: string): Promise<number> {
    const d = await this.markers.findOne({ _id: markerId(str(conversationId, 'conversationId'), str(userId, 'userId')) });
    return d?.seq ?? 0;
  }

  async getReadMarkers(conversationId: string): Promise<Record<string, number>> {
    const conv = await this.conversations.findOne({ _id: str(conversationId, 'conversationId') }, { projection: { members: 1 } });
    if (!conv) return {};
    const markers = await this.markers.find({ conversationId }).toArray();
    const bySeq = new Map(markers.map((m) => [m.userId, m.seq]));
    const out: Record<string, number> = {};
    for (const m of conv.members) out[m] = bySeq.get(m) ?? 0;
    return out;
  }

  // Outbox

  /** Standalone mode: settles entries whose change was never confirmed (see the top of this file). */
  private async settlePending(limit: number): Promise<void> {
    const stale = await this.outbox
      .find({ pending: true, insertedAt: { $lt: new Date(Date.now() - PENDING_VERIFY_MS) } })
      .limit(limit)
      .toArray();
    const collections: Record<string, Collection<{ _id: string; _ops: string[] }>> = {
      workspaces: this.db.collection('workspaces'),
      users: this.db.collection('users'),
      conversations: this.db.collection('conversations'),
      messages: this.db.collection('messages'),
      read_markers: this.db.collection('read_markers'),
      docs: this.db.collection('docs'),
    };
    for (const e of stale) {
      const v = e.verify;
      const coll = v ? collections[v.coll] : undefined;
      let applied = v && coll ? (await coll.countDocuments({ _id: v.id, _ops: v.op }, { limit: 1 })) > 0 : false;
      if (v && v.coll === 'docs' && !applied) {
        // putDoc/deleteDoc: a document first written by docs.put has a driver-made _id, so look it up by
        // (collection, id); a delete happened when the document is gone.
        const [collection, id] = JSON.parse(v.id) as [string, string];
        const filter = v.gone ? { collection, id } : { collection, id, _ops: v.op };
        const n = await this.docsColl.countDocuments(filter as Filter<DocDoc>, { limit: 1 });
        applied = v.gone ? n === 0 : n > 0;
      }
      if (applied) await this.outbox.updateOne({ _id: e._id }, { $unset: { pending: '', verify: '', insertedAt: '' } });
      else await this.outbox.deleteOne({ _id: e._id, pending: true });
    }
  }

  async outboxPending(limit: number, olderThan: string): Promise<OutboxEntry[]> {
    const n = Math.max(0, int(limit, 'limit'));
    if (!this.transactions) await this.settlePending(n || 1);
    if (n === 0) return []; // limit(0) would mean "no limit" to MongoDB
    const docs = await this.outbox
      .find({ pending: { $exists: false }, createdAt: { $lt: str(olderThan, 'olderThan') } })
      .sort({ createdAt: 1, _id: 1 })
      .limit(n)
      .toArray();
    return docs.map((d) => ({ eventId: d._id, subject: d.subject, payload: d.payload, headers: d.headers ?? {}, createdAt: d.createdAt }));
  }

  async outboxDelete(eventIds: string[]): Promise<void> {
    const ids = eventIds.filter((id): id is string => typeof id === 'string');
    if (!ids.length) return;
    await this.outbox.deleteMany({ _id: { $in: ids } });
  }

  async outboxCount(): Promise<number> {
    return this.outbox.countDocuments({});
  }
}

/**
 * Documents live in one collection as `{collection, id, doc}`; filters become equalities on `doc.<field>`
 * after guards.ts has checked the field name and that the value is a primitive.
 */
class MongoDocs implements DocumentStore {
  constructor(
    private readonly coll: Collection<DocDoc>,
    /** The store's writeAll unit (it needs the client's sessions and the transaction mode). */
    private readonly writeDocs: (writes: DocWrite[]) => Promise<WriteAllResult>,
  ) {}

  async get<T extends object>(collection: string, id: string): Promise<T | null> {
    assertCollection(collection);
    assertId(id);
    const d = await this.coll.findOne({ collection, id });
    return d ? (d.doc as T) : null;
  }

  async put<T extends object>(collection: string, id: string, doc: T): Promise<void> {
    assertCollection(collection);
    assertId(id);
    for (let i = 0; ; i++) {
      try {
        await this.coll.replaceOne({ collection, id }, { collection, id, doc: doc as Record<string, unknown> }, { upsert: true });
        return;
      } catch (err) {
        // Two concurrent upserts of a new id: the loser retries as a plain replace.
        if (!isDuplicate(err) || i >= 2) throw err;
      }
    }
  }

  async insert<T extends object>(collection: string, id: string, doc: T): Promise<boolean> {
    assertCollection(collection);
    assertId(id);
    try {
      await this.coll.insertOne({ collection, id, doc: doc as Record<string, unknown> });
      return true;
    } catch (err) {
      if (isDuplicate(err)) return false;
      throw err;
    }
  }

  async delete(collection: string, id: string): Promise<boolean> {
    assertCollection(collection);
    assertId(id);
    return (await this.coll.deleteOne({ collection, id })).deletedCount === 1;
  }

  async writeAll(writes: DocWrite[]): Promise<WriteAllResult> {
    const checked = checkedWrites(writes);
    // One document needs no transaction (a single-document write is atomic by itself), which costs round trips.
    if (checked.length === 1) {
      const w = checked[0]!;
      if (w.op === 'put') {
        await this.put(w.collection, w.id, w.doc);
        return { written: true };
      }
      return (await this.insert(w.collection, w.id, w.doc)) ? { written: true } : { written: false, conflict: { collection: w.collection, id: w.id } };
    }
    return this.writeDocs(checked);
  }

  private filterOf(collection: string, filter: Record<string, DocValue> | undefined): Filter<DocDoc> {
    assertCollection(collection);
    const f: Record<string, DocValue> = { collection };
    // Null matches an explicit null and a missing field, as it does in the SQLite adapter.
    for (const [k, v] of checkedFilter(filter)) f[`doc.${k}`] = v;
    return f as Filter<DocDoc>;
  }

  /** See the SQLite adapter: `afterId` pages by id, upwards or (with `desc`) downwards. */
  async find<T extends object>(
    collection: string,
    filter?: Record<string, DocValue>,
    opts: { limit?: number; orderBy?: string; desc?: boolean; afterId?: string } = {},
  ): Promise<T[]> {
    const f = this.filterOf(collection, filter) as Record<string, unknown>;
    const dir = opts.desc ? -1 : 1;
    if (opts.afterId !== undefined) {
      assertId(opts.afterId, 'afterId');
      f.id = opts.desc ? { $lt: opts.afterId } : { $gt: opts.afterId };
    }
    const sort: Record<string, 1 | -1> = {};
    if (opts.orderBy !== undefined) {
      assertFieldName(opts.orderBy);
      sort[`doc.${opts.orderBy}`] = dir;
    }
    sort.id = dir;
    let cursor = this.coll.find(f as Filter<DocDoc>).sort(sort);
    if (opts.limit !== undefined) {
      const n = Math.max(0, Math.trunc(opts.limit));
      if (n === 0) return [];
      cursor = cursor.limit(n);
    }
    return (await cursor.toArray()).map((d) => d.doc as T);
  }

  async count(collection: string, filter?: Record<string, DocValue>): Promise<number> {
    return this.coll.countDocuments(this.filterOf(collection, filter));
  }

  /** A partial index over this collection's documents only: {collection, doc.f1…, id}; createIndex is idempotent. */
  async ensureIndex(collection: string, fields: string[]): Promise<void> {
    assertIndex(collection, fields);
    const key: Record<string, 1> = { collection: 1 };
    for (const f of fields) key[`doc.${f}`] = 1;
    key.id = 1;
    const name = `docs_ix_${createHash('sha256').update(`${collection}\0${fields.join('\0')}`).digest('hex').slice(0, 16)}`;
    await this.coll.createIndex(key, { name, partialFilterExpression: { collection } });
  }

  async deleteBefore(collection: string, field: string, before: string, limit = 1000): Promise<number> {
    assertCollection(collection);
    assertFieldName(field);
    requireString(before, 'before');
    const n = Math.max(0, Math.trunc(limit));
    if (n === 0) return 0;
    // $lt with a string only matches strings (BSON type bracketing), like the SQLite adapter's json_type check.
    const f = { collection, [`doc.${field}`]: { $lt: before } } as Filter<DocDoc>;
    // deleteMany has no limit: pick one batch of ids, then delete those that still match.
    const ids = (await this.coll.find(f, { projection: { _id: 1 } }).limit(n).toArray()).map((d) => d._id);
    if (ids.length === 0) return 0;
    return (await this.coll.deleteMany({ $and: [f, { _id: { $in: ids } }] } as Filter<DocDoc>)).deletedCount;
  }
}
