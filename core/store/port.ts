/**
 * The store port: everything the hub keeps, behind one interface with two adapters (SQLite, the embedded
 * default, and MongoDB). test/store/conformance.test.ts is the one contract both must pass.
 *
 * Every write that produces events takes them as outbox entries and commits them in the same atomic unit as
 * the change itself; the outbox relay publishes them afterwards and deletes them once JetStream has acked.
 */
import type { Conversation, ConversationSummary, Message, Role, UserRecord, Workspace, WorkspaceSettings } from '../domain.js';

/** An event waiting to be (confirmed) published. `payload` is the JSON envelope. */
export interface OutboxEntry {
  eventId: string;
  subject: string;
  payload: string;
  /** Headers to publish with (e.g. traceparent), captured when the change was made. */
  headers: Record<string, string>;
  createdAt: string;
}

export interface RefreshTokenRecord {
  id: string;
  userId: string;
  familyId: string;
  /** SHA-256 of the opaque token; the token itself is never stored. */
  tokenHash: string;
  createdAt: string;
  expiresAt: string;
  usedAt: string | null;
  revokedAt: string | null;
}

export interface NewMessage {
  id: string;
  conversationId: string;
  senderId: string;
  text: string;
  clientId: string | null;
  createdAt: string;
  attachments?: string[];
}

export interface HistoryQuery {
  /** Only messages with seq < before. */
  before?: number;
  /** Only messages with seq > after. */
  after?: number;
  limit: number;
}

/** Which edited or deleted messages to list (listChangedMessages). */
export interface ChangedQuery {
  /** Only messages with seq <= upToSeq. */
  upToSeq: number;
  /** Only messages edited or deleted strictly after this time (ISO 8601). */
  since: string;
  /** Only messages with seq > afterSeq: the previous page's last seq. */
  afterSeq?: number;
  limit: number;
}

/** Options of a message search (issue 7). */
export interface SearchQuery {
  /** Only this conversation (the user must still be a member). */
  conversationId?: string;
  limit: number;
  /** Opaque cursor from a previous page's nextCursor. */
  cursor?: string;
}

/** One ranked search result: the message and a plain-text snippet with highlight ranges [start, end). */
export interface SearchHit {
  message: Message;
  snippet: string;
  highlights: Array<[number, number]>;
  /** Higher is better; comparable only within one result list. */
  score: number;
}

export interface SearchResult {
  hits: SearchHit[];
  nextCursor: string | null;
}

/** Builds the outbox entries for a change once the store knows its final shape (e.g. the assigned seq). */
export type OutboxFor<T> = (value: T) => OutboxEntry[];

/** Simple values allowed in a document filter: equality only, so no operator object can reach the store. */
export type DocValue = string | number | boolean | null;

/** One write of a DocumentStore.writeAll batch. */
export type DocWrite =
  /** Insert only if absent: an id that exists makes the whole batch write nothing. */
  | { op: 'insert'; collection: string; id: string; doc: object }
  /** Insert or replace. */
  | { op: 'put'; collection: string; id: string; doc: object };

/** What writeAll did: everything, or nothing because an insert's id was taken (the first such insert). */
export type WriteAllResult = { written: true } | { written: false; conflict: { collection: string; id: string } };

/** The most writes one writeAll batch may hold. */
export const MAX_WRITE_BATCH = 1000;

/**
 * A small document store for plugins and connectors (webhooks, connections, devices, audit entries…), so a
 * feature does not need its own adapter pair. Filters are equality on top-level fields.
 */
/** A place in the conversation list's order: a conversation's updatedAt and id. */
export interface ConversationPosition {
  updatedAt: string;
  id: string;
}

export interface DocumentStore {
  get<T extends object>(collection: string, id: string): Promise<T | null>;
  /** Insert or replace. */
  put<T extends object>(collection: string, id: string, doc: T): Promise<void>;
  /** Insert only if absent; false when the id exists (idempotency keys). */
  insert<T extends object>(collection: string, id: string, doc: T): Promise<boolean>;
  /**
   * Several inserts and puts, possibly across collections, as one atomic unit: all are written, in order, or
   * none. An insert whose id exists — stored already, or written by an earlier write of the same batch — makes
   * the whole batch a no-op, reported with that insert's collection and id: an idempotency key and the record
   * it guards can be written together, so a failure can never leave the key without the record. At most
   * MAX_WRITE_BATCH writes; an empty batch writes nothing and reports written. Readers never see part of a
   * batch (SQLite; MongoDB replica sets, where it is one transaction). On a standalone MongoDB server (no
   * transactions, development only) the writes are applied in order and undone if one fails, but a crash
   * part-way can leave a prefix written: callers that must survive that keep a repair path.
   */
  writeAll(writes: DocWrite[]): Promise<WriteAllResult>;
  delete(collection: string, id: string): Promise<boolean>;
  /** Documents whose fields equal the filter, ordered by id (ids are time-ordered) unless orderBy is given. */
  find<T extends object>(
    collection: string,
    filter?: Record<string, DocValue>,
    opts?: { limit?: number; orderBy?: string; desc?: boolean; afterId?: string },
  ): Promise<T[]>;
  count(collection: string, filter?: Record<string, DocValue>): Promise<number>;
  /**
   * Deletes up to `limit` (default 1000) documents of `collection` whose top-level `field` is a string less
   * than `before`; documents without the field, or with a non-string value, are kept. ISO-8601 UTC times
   * compare in time order as strings, so this prunes records older than a cutoff. Returns how many went;
   * call again while it returns `limit`.
   */
  deleteBefore(collection: string, field: string, before: string, limit?: number): Promise<number>;
  /**
   * Declares an index for equality look-ups on these top-level fields of one collection (then by id, the
   * order every find returns), created idempotently: call it at start-up for the filters a feature uses on
   * collections that grow (audit log, analytics facts). Finds work without it, by scanning the collection.
   */
  ensureIndex(collection: string, fields: string[]): Promise<void>;
}

export interface Store {
  readonly kind: 'sqlite' | 'mongo';
  /** Creates tables/collections and indexes idempotently. */
  init(): Promise<void>;
  /** Throws when the store cannot be reached (for /readyz). */
  ping(): Promise<void>;
  close(): Promise<void>;

  // Workspaces
  /** Creates the workspace if absent; returns the stored one either way. */
  ensureWorkspace(ws: Workspace): Promise<Workspace>;
  getWorkspace(id: string): Promise<Workspace | null>;
  updateWorkspaceSettings(id: string, patch: Partial<WorkspaceSettings>, outbox: OutboxFor<Workspace>): Promise<Workspace>;

  // Users. Emails are stored lower-cased and are unique across the hub.
  /** Throws VoxaError('EMAIL_TAKEN') on a duplicate email. */
  createUser(user: UserRecord, outbox: OutboxFor<UserRecord>): Promise<UserRecord>;
  getUser(id: string): Promise<UserRecord | null>;
  getUserByEmail(email: string): Promise<UserRecord | null>;
  /**
   * Users of a workspace whose name or email contains q (case-insensitive, literal text), ordered by name.
   * With `activeOnly`, invited accounts that never registered (no password) and disabled ones are left out in
   * the query itself, so `limit` counts only users that are returned. With `roles`, only users of those roles,
   * in the query too.
   */
  searchUsers(workspaceId: string, q: string, limit: number, opts?: { activeOnly?: boolean; roles?: Role[] }): Promise<UserRecord[]>;
  updateUser(
    id: string,
    patch: Partial<Pick<UserRecord, 'name' | 'role' | 'passwordHash' | 'disabled' | 'totp' | 'tokensValidAfter'>>,
    outbox: OutboxFor<UserRecord>,
  ): Promise<UserRecord | null>;

  // Refresh tokens
  insertRefreshToken(rec: RefreshTokenRecord): Promise<void>;
  getRefreshTokenByHash(tokenHash: string): Promise<RefreshTokenRecord | null>;
  /**
   * Atomically marks `oldId` used and inserts `next`, only if `oldId` is neither used nor revoked.
   * Returns false (and inserts nothing) when it was: the caller treats that as reuse.
   */
  rotateRefreshToken(oldId: string, usedAt: string, next: RefreshTokenRecord): Promise<boolean>;
  revokeTokenFamily(familyId: string, at: string): Promise<void>;
  revokeUserTokens(userId: string, at: string): Promise<void>;

  // Conversations
  /**
   * Creates a conversation. For `direct` conversations `directKey` (the two user ids sorted, joined by ':')
   * is unique per workspace: when one exists it is returned with created=false and nothing is written.
   */
  createConversation(
    conv: Conversation & { directKey?: string },
    outbox: OutboxFor<Conversation>,
  ): Promise<{ conversation: Conversation; created: boolean }>;
  getConversation(id: string): Promise<Conversation | null>;
  /**
   * The user's conversations, most recently active first (updatedAt, then id, both descending), with last
   * message, unread count and read marker. `after`: only those that come after this position in that order
   * (the last one of the previous page), so a caller reads the whole list a page at a time.
   */
  listConversations(userId: string, opts?: { limit?: number; after?: ConversationPosition }): Promise<ConversationSummary[]>;
  /** Adds and removes members of a group; returns the updated conversation. */
  updateMembers(
    conversationId: string,
    change: { add?: string[]; remove?: string[]; title?: string },
    outbox: OutboxFor<Conversation>,
  ): Promise<Conversation | null>;

  // Messages
  /**
   * Stores a message with the next seq of its conversation, assigned atomically. When (conversationId,
   * senderId, clientId) already exists — including under concurrent sends — returns that message with
   * created=false and writes nothing.
   */
  appendMessage(msg: NewMessage, outbox: OutboxFor<Message>): Promise<{ message: Message; created: boolean }>;
  /** Messages in ascending seq. With only `before`, the newest `limit` below it; with `after`, the oldest above it. */
  listMessages(conversationId: string, q: HistoryQuery): Promise<{ messages: Message[]; hasMore: boolean }>;
  getMessage(conversationId: string, messageId: string): Promise<Message | null>;
  /**
   * Messages (in their current state, ascending seq) whose editedAt or deletedAt is after `q.since`, within
   * (afterSeq, upToSeq]: what a resuming client missed about messages it already has. Served by an index over
   * the changed messages only, so a big conversation with few edits is cheap.
   */
  listChangedMessages(conversationId: string, q: ChangedQuery): Promise<{ messages: Message[]; hasMore: boolean }>;
  editMessage(conversationId: string, messageId: string, text: string, editedAt: string, outbox: OutboxFor<Message>): Promise<Message | null>;
  /** Tombstones a message: text becomes '' and deleted true. Deleting twice is a no-op returning the tombstone. */
  deleteMessage(conversationId: string, messageId: string, deletedAt: string, outbox: OutboxFor<Message>): Promise<Message | null>;

  /**
   * Full-text search over the (not deleted) messages of the conversations `userId` is a member of, best
   * match first. `q` is plain text: adapters turn it into terms (core/search/query.ts) so no query operator
   * reaches the engine; a query without any word matches nothing. Edits and deletes are reflected at once.
   */
  searchMessages(userId: string, q: string, opts: SearchQuery): Promise<SearchResult>;

  // Read markers
  /** Moves the user's read marker forward (never back); returns the marker after the call and whether it moved. */
  setReadMarker(
    conversationId: string,
    userId: string,
    seq: number,
    outbox: OutboxFor<number>,
  ): Promise<{ seq: number; changed: boolean }>;
  getReadMarker(conversationId: string, userId: string): Promise<number>;
  /** Every member's read marker in a conversation. */
  getReadMarkers(conversationId: string): Promise<Record<string, number>>;

  // Outbox
  /** Entries created before `olderThan`, oldest first. */
  outboxPending(limit: number, olderThan: string): Promise<OutboxEntry[]>;
  outboxDelete(eventIds: string[]): Promise<void>;
  outboxCount(): Promise<number>;

  /** Generic documents for plugins and connectors. */
  readonly docs: DocumentStore;

  /**
   * Inserts a document (like docs.insert) together with its outbox entries, atomically: for document-kept
   * records whose creation is an event (e.g. an uploaded file → file.uploaded). False, and nothing written,
   * when the id exists.
   */
  insertDoc<T extends object>(collection: string, id: string, doc: T, outbox: OutboxFor<T>): Promise<boolean>;

  /**
   * Inserts or replaces a document (like docs.put) together with its outbox entries, atomically: for
   * document-kept records whose every change is an event (connections, webhooks → connection.changed).
   */
  putDoc<T extends object>(collection: string, id: string, doc: T, outbox: OutboxFor<T>): Promise<void>;

  /**
   * Deletes a document together with its outbox entries, atomically; `outbox` gets the document as it was.
   * False, and nothing written, when there was no such document.
   */
  deleteDoc<T extends object>(collection: string, id: string, outbox: OutboxFor<T>): Promise<boolean>;

  /**
   * Read-modify-write of one document with its outbox entries, atomically: `change` gets the current document
   * and returns the next one, or null to write nothing (then no event either). For transitions that must
   * happen once however many callers race (a connection marked broken). Returns the document written, or
   * null when there was none or `change` declined. `change` must be synchronous and free of side effects: it
   * may run again when a concurrent write got there first.
   */
  updateDoc<T extends object>(collection: string, id: string, change: (current: T) => T | null, outbox: OutboxFor<T>): Promise<T | null>;
}
