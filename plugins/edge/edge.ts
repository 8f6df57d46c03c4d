/**
 * The session layer of the WebSocket edge: everything that does not depend on the transport.
 *
 * Delivery. Each edge process holds one core NATS subscription per workspace that has a local session
 * (`<ns>.chat.<ws>.>` and `<ns>.rt.<ws>.>`) and fans out locally through a per-conversation *feed*. One
 * wildcard per workspace keeps the subscription count independent of how many conversations the local users
 * are in and makes membership changes free (no subscribe/unsubscribe race); events of conversations without a
 * local member are dropped after reading the conversation id from the subject, before any JSON parsing.
 *
 * Ordering and exactly-once. A feed tracks the highest contiguous `seq` it has emitted. A message beyond the
 * next one (a lost or reordered event) makes the feed read the missing messages from the store first. Each
 * session additionally keeps a cursor per conversation: duplicates (seq ≤ cursor) are dropped, and a session
 * that is behind (it resumed from an older cursor, or was held while waiting for `resume`) catches up from the
 * store while live events queue behind; the queue then drains with the overlap removed. The subscription is
 * live before any store read, so nothing falls between the backlog and the live flow.
 *
 * Encoding. Every outgoing event is a Frame serialised at most once per transport and written to each socket.
 */
import { randomBytes } from 'node:crypto';
import type { Subscription } from 'nats';
import type { Logger } from 'pino';
import type { Conversation, Message, UserRecord } from '../../core/domain.js';
import { VoxaError, isVoxaError, type ErrorCode } from '../../core/errors.js';
import { userForClaims } from '../../core/auth/tokens.js';
import { checkEventData, createEvent, subjectOf, withNamespace, type AnyEvent } from '../../core/events/catalog.js';
import type { Hub } from '../../core/hub.js';
import { newId } from '../../core/ids.js';
import { initEdgeSeries, metrics } from '../../core/telemetry/metrics.js';
import { withConsumerSpan, type ConsumedMessage } from '../../core/telemetry/nats.js';
import { malformedReason } from '../runtime/dlq.js';
import { Frame } from './frame.js';
import { Presence, presencePrefix, type PresenceDevice } from './presence.js';
import { CLIENT_EVENTS, describeZodError, isClientEvent, type ClientEventData, type ClientEventName, type Handshake } from './protocol.js';

export type TransportKind = 'ws' | 'socketio';

/** What the session layer needs from a transport connection. */
export interface Transport {
  readonly kind: TransportKind;
  /** Writes one frame (encoded once, shared between sockets). */
  write(frame: Frame): void;
  /** Bytes (or an estimate) written but not yet taken by the network. */
  buffered(): number;
  /** Closes the connection with a machine-readable reason. */
  kick(code: ErrorCode, message: string): void;
}

export interface EdgeOptions {
  /** Largest accepted frame in bytes (ws maxPayload, Socket.IO maxHttpBufferSize). */
  maxFrameBytes: number;
  /** Send buffer a connection may have before it is disconnected as a slow consumer. */
  maxBufferedBytes: number;
  /** Per-connection send-message budget: tokens per second and burst. */
  sendPerSecond: number;
  sendBurst: number;
  /** Per-connection budget for all frames together. */
  framesPerSecond: number;
  framesBurst: number;
  /** Minimum interval between forwarded typing frames per connection and conversation. */
  typingThrottleMs: number;
  /** A typing indicator without renewal stops by itself after this long. */
  typingTtlMs: number;
  /** How long a new connection's live delivery waits for a `resume` before it starts. */
  resumeHoldMs: number;
  /** Delivered receipts are batched for this long. */
  receiptFlushMs: number;
  /**
   * Delivered receipts are produced only in conversations up to this size, and status updates go to every
   * other member only up to this size (beyond it, to the members who sent messages). Per-recipient receipts
   * in a big room are quadratic: 1,000 members would mean 1,000 receipt events per message, each fanned out.
   */
  receiptsMaxMembers: number;
  /** Presence heartbeat and device expiry. */
  presenceHeartbeatMs: number;
  presenceTtlMs: number;
  /** Time a plain WebSocket client has to send its auth frame. */
  authTimeoutMs: number;
  /** Frames a connection may have waiting to be processed before it is told to slow down. */
  maxPendingFrames: number;
  /** Messages per store page when catching up. */
  pageSize: number;
  /** How often connections are checked for an expired access token (and metrics flushed). */
  expiryCheckMs: number;
}

export const DEFAULT_EDGE_OPTIONS: EdgeOptions = {
  maxFrameBytes: 64 * 1024,
  maxBufferedBytes: 1024 * 1024,
  sendPerSecond: 10,
  sendBurst: 30,
  framesPerSecond: 50,
  framesBurst: 100,
  typingThrottleMs: 2000,
  typingTtlMs: 5000,
  resumeHoldMs: 750,
  receiptFlushMs: 250,
  receiptsMaxMembers: 100,
  presenceHeartbeatMs: 15_000,
  presenceTtlMs: 45_000,
  authTimeoutMs: 5000,
  maxPendingFrames: 64,
  pageSize: 200,
  expiryCheckMs: 1000,
};

/** A token bucket: cheap per-connection rate limiting without timers. */
class Bucket {
  private tokens: number;
  private at = Date.now();
  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
  ) {
    this.tokens = burst;
  }
  take(): boolean {
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.perSecond);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
  /** Whole seconds until the next token (at least 1): the `retryAfter` of a refusal. */
  retryAfter(): number {
    return Math.max(1, Math.ceil((1 - this.tokens) / this.perSecond));
  }
}

/** RATE_LIMITED from a connection's own bucket, with `details.retryAfter` like the shared limits give. */
function bucketLimited(bucket: Bucket, message: string): VoxaError {
  return new VoxaError('RATE_LIMITED', message, { retryAfter: bucket.retryAfter() });
}

/** Messages up to seq `upTo` (and never past the cursor) edited or deleted after `since` (ISO). */
interface ChangesRequest {
  readonly since: string;
  readonly upTo: number;
}

type Out =
  | { kind: 'msg'; seq: number; frame: Frame; senderId: string }
  | { kind: 'edit'; seq: number; frame: Frame }
  | { kind: 'plain'; frame: Frame; exceptUser?: string };

/**
 * One session's position in one conversation. There is one per session and conversation (an agent in 200
 * conversations has 200), so it is a class of fixed shape, and the queue, the waiter list and a pending changes
 * read exist only while used.
 */
class ConvState {
  /** True while the session reads its backlog (or waits for resume); live events queue meanwhile. */
  catching = true;
  running = false;
  overflow = false;
  /** Live events waiting behind a catch-up (null when none). */
  queue: Out[] | null = null;
  /**
   * A changes read the catch-up owes (null when none), asked for by a resume with `changesSince` or a dropped
   * queue: it first sends the current state of those messages, then the backlog. Every request puts a new
   * object here, so a sendChanges that started before one sees it and leaves it for another read (it may want
   * more than was read: edits committed after the read, a higher seq).
   */
  changes: ChangesRequest | null = null;
  /**
   * This connection has sent the current state of every message up to `from` changed after this time (ISO), or
   * null: a later resume asking for no more than that needs no changes read ("once per connection").
   */
  changesSent: string | null = null;
  /** When the current queue got its first event (ms): a dropped queue's edits are re-read from then on. */
  queueSince = 0;
  /** Resume acks waiting for the catch-up to finish (null when none). */
  waiters: Array<() => void> | null = null;
  /**
   * This connection has sent every message in (from, cursor]: a later resume from inside that range sends none
   * of them again ("once per connection"); one from further back moves `from` back and sends from there.
   */
  from: number;
  constructor(
    public cursor: number,
    /** Waiting for the resume hold to end: no catch-up runs yet. */
    public held: boolean,
  ) {
    this.from = cursor;
  }

  /** Asks for a changes read (`since` from changesBound), merged with the one pending: the earlier time, the higher seq. */
  askChanges(since: string, upTo: number): void {
    const cur = this.changes;
    this.changes = { since: cur !== null && cur.since < since ? cur.since : since, upTo: Math.max(cur?.upTo ?? 0, upTo) };
  }

  /** Wakes and forgets whoever waits for this catch-up. */
  wake(): void {
    const w = this.waiters;
    this.waiters = null;
    if (w) for (const f of w) f();
  }
}

/** The seq an event's message carries (created, updated, deleted), or -1 for events without one. */
function seqOfMessageEvent(ev: AnyEvent): number {
  return ev.type === 'message.created' || ev.type === 'message.updated' || ev.type === 'message.deleted' ? ev.data.message.seq : -1;
}

/**
 * The chat event types a feed acts on (see feedEvent); membership events aside, the rest (file.uploaded, a type
 * the catalog does not know) are dropped before parsing.
 */
const FEED_TYPES: ReadonlySet<string> = new Set(['message.created', 'message.updated', 'message.deleted', 'message.delivered', 'message.seen']);

/** Longest a backlog page waits for the connection to drain before the next one is written anyway. */
const DRAIN_WAIT_MS = 10_000;

const SETTLED: Promise<unknown> = Promise.resolve();

const NO_SESSIONS: readonly Session[] = [];

/**
 * A client's `changesSince` is a `serverTime` from some edge process, and edit times come from the clock of
 * whichever process made the edit: reading this much further back covers skew between them (and an outbox
 * publish that lagged its store write). Re-sending a state the client already has is harmless.
 */
const CHANGES_MARGIN_MS = 5000;

/** The time a changes read starts from for changes since `sinceMs`: that less the margin, as ISO. */
function changesBound(sinceMs: number): string {
  return new Date(sinceMs - CHANGES_MARGIN_MS).toISOString();
}

/**
 * A session's conversations (conversationId → ConvState), with the first one inline. Most connections of a
 * support hub (a widget visitor, a customer) are in one conversation, and a Map costs some 180 bytes before its
 * first entry; a second conversation moves everything into a Map.
 */
class ConvIndex {
  private oneId: string | null = null;
  private one: ConvState | null = null;
  private map: Map<string, ConvState> | null = null;

  get size(): number {
    return this.map ? this.map.size : this.one ? 1 : 0;
  }
  get(id: string): ConvState | undefined {
    if (this.map) return this.map.get(id);
    return this.oneId === id ? this.one! : undefined;
  }
  has(id: string): boolean {
    return this.get(id) !== undefined;
  }
  set(id: string, st: ConvState): void {
    if (this.map) this.map.set(id, st);
    else if (!this.one || this.oneId === id) {
      this.oneId = id;
      this.one = st;
    } else {
      this.map = new Map([
        [this.oneId!, this.one],
        [id, st],
      ]);
      this.oneId = this.one = null;
    }
  }
  delete(id: string): boolean {
    if (this.map) return this.map.delete(id);
    if (this.oneId !== id) return false;
    this.oneId = this.one = null;
    return true;
  }
  clear(): void {
    this.oneId = this.one = this.map = null;
  }
  keys(): Iterable<string> {
    return this.map ? this.map.keys() : this.oneId !== null ? [this.oneId] : [];
  }
  [Symbol.iterator](): Iterator<[string, ConvState]> {
    if (this.map) return this.map.entries();
    return (this.oneId !== null ? [[this.oneId, this.one!] as [string, ConvState]] : [])[Symbol.iterator]();
  }
}

/** What a session needs once it sends frames (an idle connection never does): rate limits and ordering. */
class Activity {
  /** Token buckets; a new bucket is full, so creating them on the first frame changes nothing. */
  readonly sendBucket: Bucket;
  readonly frameBucket: Bucket;
  /** conversationId → when this connection last forwarded `typing` (created on the first typing frame). */
  typingAt: Map<string, number> | null = null;
  /** Frames are processed one at a time per connection, so a client's sends keep their order. */
  chain: Promise<unknown> = SETTLED;
  /** Frames waiting to be processed. */
  pending = 0;
  constructor(opts: EdgeOptions) {
    this.sendBucket = new Bucket(opts.sendPerSecond, opts.sendBurst);
    this.frameBucket = new Bucket(opts.framesPerSecond, opts.framesBurst);
  }

  /** Runs `fn` once the frames before it are done (one at a time, in order of arrival). */
  enqueue<T>(fn: () => Promise<T>): Promise<T> {
    this.pending++;
    const p = this.chain.then(fn);
    this.chain = p.then(
      () => void this.pending--,
      () => void this.pending--,
    );
    return p;
  }
}

/**
 * A connected, authenticated device. Kept small: an idle connection costs what its fields cost, so what only
 * some sessions need (rate limits, typing throttle, the processing chain, the hold timer) is created on first
 * use. It is also its own presence record (PresenceDevice), so presence keeps no second object per device.
 */
export class Session implements PresenceDevice {
  readonly id = newId('dev');
  readonly convs = new ConvIndex();
  closed = false;
  holding = true;
  holdTimer: NodeJS.Timeout | null = null;
  /** Until `ready` is written, frames for this session wait here (null afterwards). */
  beforeReady: Frame[] | null = null;
  /** Created on the first frame from the client. */
  activity: Activity | null = null;

  constructor(
    /** The account as last read: replaced when a role or name changes (see Edge.recheckUser). */
    public user: UserRecord,
    readonly transport: Transport,
    /** When the access token the connection was opened with expires (ms since the epoch); then it is closed. */
    readonly expiresAt = Infinity,
  ) {}

  get workspaceId(): string {
    return this.user.workspaceId;
  }
  get userId(): string {
    return this.user.id;
  }
  get deviceId(): string {
    return this.id;
  }

  /** The session's rate limits, ordering and typing throttle (created on the first frame). */
  active(opts: EdgeOptions): Activity {
    return (this.activity ??= new Activity(opts));
  }
}

/** A conversation with at least one local session. */
class Feed {
  readonly sessions = new Set<Session>();
  /** Highest contiguous seq emitted; valid once ready. */
  last = 0;
  ready = false;
  busy = false;
  pending: AnyEvent[] = [];
  readonly statusMax = new Map<string, number>();
  readonly typing = new Map<string, NodeJS.Timeout>();
  readonly reported = new Map<string, number>();
  /** Members who sent a message this feed emitted: they always get status updates. */
  readonly senders = new Set<string>();
  /** Attached sessions per transport (for one latency observation per transport, without a scan). */
  readonly kinds: Record<TransportKind, number> = { ws: 0, socketio: 0 };

  constructor(public conv: Conversation) {}

  get id(): string {
    return this.conv.id;
  }
}

/** The answer to a frame that asked for one. */
export type AckData = { ok: true; [k: string]: unknown } | { ok: false; error: { code: string; message: string; details?: unknown } };

export function errorAck(err: unknown): AckData {
  if (isVoxaError(err)) {
    return { ok: false, error: { code: err.code, message: err.message, ...(err.details === undefined ? {} : { details: err.details }) } };
  }
  return { ok: false, error: { code: 'INTERNAL', message: 'Internal error.' } };
}

/** A resume cursor that was not applied, and why (`ready.skipped`, a resume ack's `skipped`). */
interface Skipped {
  conversationId: string;
  code: string;
}

/** Why a disabled (or removed) account's connection is refused and closed. */
const LOCKED_OUT = 'The account is disabled or no longer exists.';

interface WorkspaceSubs {
  chat: Subscription;
  rt: Subscription;
  /** Account changes (`user.updated`, `user.role_changed`) of the workspace's users. */
  users: Subscription;
  sessions: number;
}

export class Edge {
  readonly opts: EdgeOptions;
  readonly log: Logger;
  readonly edgeId = randomBytes(6).toString('hex');
  private readonly sessions = new Set<Session>();
  /** userId → its local session, or a Set when the user has several devices here (one is the common case). */
  private readonly byUser = new Map<string, Session | Set<Session>>();
  private readonly feeds = new Map<string, Feed>();
  /** userId → conversations (with local sessions) the user is a member of: who gets someone's presence. */
  private readonly peers = new Map<string, Set<string>>();
  private readonly workspaces = new Map<string, WorkspaceSubs>();
  private readonly receipts = new Map<string, { user: UserRecord; feed: Feed; seq: number; transport: TransportKind }>();
  private receiptTimer: NodeJS.Timeout | null = null;
  readonly presence: Presence;
  private readonly ns: string;
  private readonly decoder = new TextDecoder();
  private closing = false;
  private readonly seenMembership = new Set<string>();
  /**
   * Users with a presence event since a membership change's presence read began (one Set per read in flight,
   * null when none): for them the event already told the device, and the read's answer may be older.
   */
  private presenceReads: Set<Set<string>> | null = null;
  /** Strings shared by many sessions (workspace ids, roles), one copy each. */
  private readonly interned = new Map<string, string>();
  /** Frames written since the last metrics flush (a labelled inc per frame costs more than the write). */
  private readonly framesOut: Record<TransportKind, number> = { ws: 0, socketio: 0 };
  private readonly metricsTimer: NodeJS.Timeout;

  constructor(
    readonly hub: Hub,
    opts: Partial<EdgeOptions> = {},
  ) {
    this.opts = { ...DEFAULT_EDGE_OPTIONS, ...opts };
    this.log = hub.log.child({ component: 'edge' });
    initEdgeSeries(); // zero series per transport, so edge dashboards read 0 rather than "no data"
    this.ns = hub.bus.namespace;
    this.presence = new Presence(
      hub.redis,
      presencePrefix(this.ns),
      { ttlMs: this.opts.presenceTtlMs, heartbeatMs: this.opts.presenceHeartbeatMs },
      (change, d) => this.publishPresence(change, d.workspaceId, d.userId),
      this.log,
    );
    this.presence.start();
    // One timer for the whole edge (not one per connection): metrics flush and access-token expiry.
    this.metricsTimer = setInterval(() => {
      this.flushMetrics();
      this.expireSessions();
    }, this.opts.expiryCheckMs);
    this.metricsTimer.unref();
    void this.watchNats();
  }

  private flushMetrics(): void {
    for (const kind of ['ws', 'socketio'] as const) {
      if (this.framesOut[kind]) metrics.edgeFramesOut.inc({ transport: kind }, this.framesOut[kind]);
      this.framesOut[kind] = 0;
    }
  }

  /**
   * Connections whose access token expired are closed with UNAUTHENTICATED: the client refreshes its token,
   * reconnects and resumes from its cursors. A scan of a number per session each interval is cheaper than a
   * timer per connection (memory) and needs no bookkeeping.
   */
  private expireSessions(): void {
    const now = Date.now();
    for (const s of this.sessions) {
      if (s.expiresAt > now) continue;
      try {
        s.transport.kick('UNAUTHENTICATED', 'The access token expired; refresh it, reconnect and resume.');
      } catch {
        /* already gone */
      }
      this.close(s);
    }
  }

  /**
   * An account change announced by any process: the user's connections here re-read the account from the
   * store (not the read cache, which this same event is invalidating meanwhile), and are closed if it is
   * disabled or gone; otherwise they carry on with the new role and name.
   */
  private onUserChanged(userId: string): void {
    if (!this.byUser.has(userId)) return;
    void this.recheckUser(userId).catch((err: unknown) => this.log.warn({ err, userId }, 'edge: could not re-read a changed account'));
  }

  private async recheckUser(userId: string): Promise<void> {
    const u = await this.hub.store.getUser(userId);
    const allowed = u && !u.disabled && u.passwordHash !== null;
    const current = allowed ? this.sessionUser(u) : null;
    for (const s of [...this.sessionsOf(userId)]) {
      if (current) s.user = current;
      else this.lockOut(s);
    }
  }

  /** Closes a session whose account may no longer connect. */
  private lockOut(s: Session): void {
    if (s.closed) return;
    try {
      s.transport.kick('UNAUTHENTICATED', LOCKED_OUT);
    } catch {
      /* already gone */
    }
    this.close(s);
  }

  get connectionCount(): number {
    return this.sessions.size;
  }

  private addUserSession(s: Session): void {
    const cur = this.byUser.get(s.user.id);
    if (!cur) this.byUser.set(s.user.id, s);
    else if (cur instanceof Set) cur.add(s);
    else if (cur !== s) this.byUser.set(s.user.id, new Set([cur, s]));
  }

  private removeUserSession(s: Session): void {
    const cur = this.byUser.get(s.user.id);
    if (cur === s) this.byUser.delete(s.user.id);
    else if (cur instanceof Set && cur.delete(s)) {
      if (cur.size === 1) this.byUser.set(s.user.id, cur.values().next().value!);
      else if (cur.size === 0) this.byUser.delete(s.user.id);
    }
  }

  /**
   * The local sessions of a user, not copied: a loop may close the session it is at (a Set iteration goes on
   * with the rest), but one that takes sessions away otherwise iterates a copy.
   */
  private sessionsOf(userId: string): Iterable<Session> {
    const cur = this.byUser.get(userId);
    return !cur ? NO_SESSIONS : cur instanceof Set ? cur : [cur];
  }

  // ---------------------------------------------------------------------------------------------------------
  // Sessions

  /**
   * Registers an authenticated connection: subscribes, loads its conversations, announces presence, writes
   * `ready` (with the peers online right now) and starts delivery.
   */
  async open(user: UserRecord, transport: Transport, handshake: Pick<Handshake, 'cursors' | 'changesSince'> = {}, expiresAt = Infinity): Promise<Session> {
    const s = new Session(this.sessionUser(user), transport, expiresAt);
    // Nothing reaches the client before `ready`: frames that come meanwhile (presence, membership) wait.
    s.beforeReady = [];
    this.sessions.add(s);
    this.addUserSession(s);
    metrics.edgeConnections.inc({ transport: transport.kind });
    metrics.edgeConnectionsOpened.inc({ transport: transport.kind });
    try {
      // The subscription must be live before we read where each conversation stands.
      await this.subscribeWorkspace(user.workspaceId);
      // Taken once live events flow and before any read: a change after it reaches the client live or in this
      // session's reads, so a later resume with this time as changesSince misses nothing.
      const serverTime = new Date().toISOString();
      const convs = await this.hub.chat.listConversations(user, { limit: 10_000 });
      if (s.closed) return s;
      for (const c of convs) {
        const { lastMessage: _l, unreadCount: _u, readSeq: _r, ...conv } = c;
        this.attach(s, this.ensureFeed(conv), conv.lastSeq, true);
      }
      void this.presence.connect(s);
      // Read after the session is attached: a peer's change from here on reaches it as an event (held in
      // beforeReady and written after `ready`), so the snapshot plus the events that follow it are complete.
      // Handshake cursors for conversations the list did not have: attached if the user is a member after all
      // (joined meanwhile), otherwise named in `ready.skipped`, as a resume names them.
      const skipped: Skipped[] = [];
      for (const convId of Object.keys(handshake.cursors ?? {})) {
        if (s.convs.has(convId)) continue;
        const found = await this.feedForCursor(s, convId);
        if (s.closed) return s;
        if (found instanceof Feed) this.attach(s, found, found.last, true);
        else skipped.push(found);
      }
      const online = await this.presence.onlineAmong(this.peersOf(s));
      if (s.closed) return s;
      this.writeReady(s, online, serverTime, skipped);
      if (handshake.cursors) {
        metrics.edgeResumes.inc({ transport: transport.kind });
        this.release(s, handshake.cursors, handshake.changesSince);
      } else {
        s.holdTimer = setTimeout(() => this.release(s, {}), this.opts.resumeHoldMs);
      }
    } catch (err) {
      this.close(s);
      throw err;
    }
    return s;
  }

  /**
   * The user as a session keeps it: without credential material (password hash, TOTP state — a session has no
   * use for them, and whatever sits in memory can end up in a heap dump), and with the strings every session of
   * a workspace shares (workspace id, role) shared rather than one copy per connection.
   */
  private sessionUser(user: UserRecord): UserRecord {
    return { ...user, workspaceId: this.intern(user.workspaceId), role: this.intern(user.role) as UserRecord['role'], passwordHash: null, totp: null };
  }

  private intern(value: string): string {
    const known = this.interned.get(value);
    if (known !== undefined) return known;
    if (this.interned.size < 10_000) this.interned.set(value, value);
    return value;
  }

  /** The users who share a conversation with the session's user (without the user). */
  private peersOf(s: Session): string[] {
    const self = s.user.id;
    if (s.convs.size === 1) {
      // The common case needs no Set (a big room's connect storm would pay one insert per member per arrival).
      const [only] = s.convs.keys();
      const feed = only === undefined ? undefined : this.feeds.get(only);
      return feed ? feed.conv.members.filter((m) => m !== self) : [];
    }
    const peers = new Set<string>();
    for (const convId of s.convs.keys()) {
      const feed = this.feeds.get(convId);
      if (feed) for (const m of feed.conv.members) if (m !== self) peers.add(m);
    }
    return [...peers];
  }

  /**
   * `ready {ok, userId, deviceId, serverTime, online?}`: `online` lists the peers online now, absent when
   * presence is unavailable (Redis down); `serverTime` is what the client passes back as `changesSince`. Then
   * what waited for it is written, in order.
   */
  private writeReady(s: Session, online: string[] | null, serverTime: string, skipped: Skipped[]): void {
    const data = { ok: true, userId: s.user.id, deviceId: s.id, serverTime, ...(online ? { online } : {}), ...(skipped.length ? { skipped } : {}) };
    const waiting = s.beforeReady ?? [];
    s.beforeReady = null;
    this.write(s, new Frame('ready', data));
    for (const f of waiting) this.write(s, f);
  }

  /** Forgets a connection (its transport is already closed or closing). */
  close(s: Session): void {
    if (s.closed) return;
    s.closed = true;
    if (s.holdTimer) clearTimeout(s.holdTimer);
    s.beforeReady = null;
    this.sessions.delete(s);
    this.removeUserSession(s);
    for (const [convId, st] of s.convs) {
      st.wake();
      const feed = this.feeds.get(convId);
      if (feed) this.detach(s, feed);
    }
    s.convs.clear();
    metrics.edgeConnections.dec({ transport: s.transport.kind });
    void this.presence.disconnect(s.id);
    const ws = this.workspaces.get(s.user.workspaceId);
    if (ws && --ws.sessions <= 0) {
      this.workspaces.delete(s.user.workspaceId);
      ws.chat.unsubscribe();
      ws.rt.unsubscribe();
      ws.users.unsubscribe();
    }
  }

  /** Ends the hold: applies resume cursors (if any) and starts catching up every conversation. */
  private release(s: Session, cursors: Record<string, number>, changesSince?: string): void {
    if (!s.holding || s.closed) return;
    s.holding = false;
    if (s.holdTimer) clearTimeout(s.holdTimer);
    s.holdTimer = null;
    for (const [convId, st] of s.convs) {
      const c = cursors[convId];
      const feed = this.feeds.get(convId);
      this.resumeAt(s, st, feed, c === undefined ? undefined : this.clampCursor(feed, c), changesSince);
    }
  }

  /**
   * A client's cursor, never past the last message this edge knows of. A cursor from the future (a bug, or a
   * message the event has not brought here yet) would otherwise hide the real messages that take those seqs;
   * clamped, the worst case is a message sent again, which the client drops by id.
   */
  private clampCursor(feed: Feed | undefined, cursor: number): number {
    return feed ? Math.min(cursor, feed.last) : cursor;
  }

  /**
   * Puts one conversation of a session at a client's clamped cursor `c` (none: where it is), folds in the
   * client's `changesSince` and starts the catch-up. Everything in (from, cursor] already went out on this
   * connection: a cursor inside that range sends none of it again, and one ahead of ours means the client has
   * those messages (e.g. from REST); one from further back moves `from` back and sends from there. While held
   * nothing went out, so the client's cursor is taken as it is.
   */
  private resumeAt(s: Session, st: ConvState, feed: Feed | undefined, c: number | undefined, changesSince: string | undefined): void {
    if (c !== undefined) {
      const before = st.cursor;
      if (st.held || c < st.from) st.cursor = st.from = c;
      else st.cursor = Math.max(st.cursor, c);
      if (changesSince !== undefined) {
        // The messages this connection sent, (from, cursor], went out in their current state (and their later
        // edits live): changes are read for those up to `from`, and for any the client skipped past the cursor.
        const upTo = c > before ? Math.max(st.from, c) : st.from;
        const bound = changesBound(Date.parse(changesSince));
        const covered = st.changesSent !== null && st.changesSent <= bound && upTo <= st.from;
        if (!covered) st.askChanges(bound, upTo);
      }
    }
    st.held = false;
    if (feed) void this.catchUp(s, feed, st);
  }

  private attach(s: Session, feed: Feed, cursor: number, held: boolean): ConvState {
    let st = s.convs.get(feed.id);
    if (st) return st;
    st = new ConvState(cursor, held);
    s.convs.set(feed.id, st);
    feed.sessions.add(s);
    feed.kinds[s.transport.kind]++;
    if (!held && feed.ready) void this.catchUp(s, feed, st);
    return st;
  }

  private detach(s: Session, feed: Feed): void {
    if (feed.sessions.delete(s)) feed.kinds[s.transport.kind]--;
    if (feed.sessions.size === 0) this.dropFeed(feed);
  }

  // ---------------------------------------------------------------------------------------------------------
  // Frames from clients

  /**
   * Handles one client frame. Returns the ack data (the transport sends it when the client asked for an ack,
   * or as an error frame when it did not and the frame failed).
   */
  async handle(s: Session, type: string, data: unknown): Promise<AckData> {
    metrics.edgeFramesIn.inc({ transport: s.transport.kind });
    const a = s.active(this.opts);
    if (!a.frameBucket.take()) return errorAck(bucketLimited(a.frameBucket, 'Too many frames on this connection; slow down.'));
    // Socket.IO allows any value as an event name (`42[1,{}]` names event 1): only a known string is one.
    if (typeof type !== 'string' || !isClientEvent(type)) {
      const name = typeof type === 'string' ? type.slice(0, 64) : typeof type;
      return errorAck(new VoxaError('VALIDATION_FAILED', `Unknown event type "${name}".`, { type: 'unknown-event', fields: ['type'] }));
    }
    const parsed = CLIENT_EVENTS[type].safeParse(data);
    if (!parsed.success) {
      const { message, details } = describeZodError(parsed.error);
      return errorAck(new VoxaError('VALIDATION_FAILED', message, details));
    }
    if (a.pending > this.opts.maxPendingFrames) {
      // Acks free the queue as they come; a second is a fair guess at when there is room again.
      return errorAck(new VoxaError('RATE_LIMITED', 'Too many frames waiting on this connection; wait for acks.', { retryAfter: 1 }));
    }
    return a.enqueue(async () => {
      try {
        return await this.dispatch(s, type, parsed.data as ClientEventData<typeof type>);
      } catch (err) {
        if (!isVoxaError(err)) this.log.error({ err, type }, 'edge frame failed');
        return errorAck(err);
      }
    });
  }

  private async dispatch<N extends ClientEventName>(s: Session, type: N, data: ClientEventData<N>): Promise<AckData> {
    if (s.closed) return errorAck(new VoxaError('UNAUTHENTICATED', 'The connection is closed.'));
    // The account is re-read for every frame, as REST re-reads it for every request (from the same short-lived
    // cache): a disabled account's open connections are refused and closed, a new role applies at once.
    const current = await userForClaims(this.hub, { sub: s.user.id });
    if (!current) {
      // The frame's ack goes out first (the transport writes it when this returns), then the connection closes.
      setImmediate(() => this.lockOut(s));
      return errorAck(new VoxaError('UNAUTHENTICATED', LOCKED_OUT));
    }
    if (current.role !== s.user.role || current.name !== s.user.name) s.user = this.sessionUser(current);
    if (s.closed) return errorAck(new VoxaError('UNAUTHENTICATED', 'The connection is closed.'));
    switch (type) {
      case 'send-message': {
        const d = data as ClientEventData<'send-message'>;
        const sendBucket = s.active(this.opts).sendBucket;
        if (!sendBucket.take()) throw bucketLimited(sendBucket, 'Too many messages on this connection; slow down.');
        // Exactly the REST call (core/routes/conversations.ts): ChatService checks the attachments.
        const res = await this.hub.chat.sendMessage(s.user, d.conversationId, {
          text: d.text,
          clientId: d.clientId ?? null,
          ...(d.attachments ? { attachments: d.attachments } : {}),
        });
        if (res.created) metrics.messagesSent.inc({ transport: s.transport.kind });
        return { ok: true, message: res.message, created: res.created };
      }
      case 'typing':
      case 'stop-typing': {
        const d = data as ClientEventData<'typing'>;
        const conv = await this.memberConversation(s, d.conversationId);
        const now = Date.now();
        if (type === 'typing') {
          const a = s.active(this.opts);
          const last = a.typingAt?.get(conv.id) ?? 0;
          if (now - last < this.opts.typingThrottleMs) return { ok: true, throttled: true };
          (a.typingAt ??= new Map()).set(conv.id, now);
        } else {
          s.activity?.typingAt?.delete(conv.id);
        }
        this.publishEphemeral(
          createEvent(type === 'typing' ? 'typing.started' : 'typing.stopped', {
            workspaceId: conv.workspaceId,
            conversationId: conv.id,
            actor: { type: 'user', id: s.user.id },
            data: { conversationId: conv.id, userId: s.user.id },
          }),
        );
        return { ok: true };
      }
      case 'message-seen': {
        const d = data as ClientEventData<'message-seen'>;
        const res = await this.hub.chat.markRead(s.user, d.conversationId, d.seq);
        return { ok: true, seq: res.seq, changed: res.changed };
      }
      case 'resume': {
        const d = data as ClientEventData<'resume'>;
        return this.resume(s, d.cursors, d.changesSince);
      }
    }
    return errorAck(new VoxaError('VALIDATION_FAILED', 'Unknown event type.'));
  }

  /** The conversation, if the session's user is a member (from local state, else from the store). */
  private async memberConversation(s: Session, conversationId: string): Promise<Conversation> {
    const feed = this.feeds.get(conversationId);
    if (feed && s.convs.has(conversationId)) return feed.conv;
    return this.hub.chat.getConversationFor(s.user, conversationId);
  }

  /**
   * Resume: for each named conversation, send the changes since `changesSince` to messages at or before the
   * client's cursor, then every message after it, in order, then continue live. Answers after all of them
   * were written, with a `serverTime` for the next resume.
   */
  private async resume(s: Session, cursors: Record<string, number>, changesSince?: string): Promise<AckData> {
    metrics.edgeResumes.inc({ transport: s.transport.kind });
    // The session's subscription is live already, so "now" is before every read this resume makes.
    const serverTime = new Date().toISOString();
    const skipped: Skipped[] = [];
    const waits: Promise<void>[] = [];
    const known: Record<string, number> = {};
    for (const [convId, cursor] of Object.entries(cursors)) {
      let st = s.convs.get(convId);
      let feed: Feed | undefined;
      if (st) feed = this.feeds.get(convId);
      else {
        const found = await this.feedForCursor(s, convId);
        if (s.closed) break;
        if (!(found instanceof Feed)) {
          skipped.push(found);
          continue;
        }
        feed = found;
      }
      const c = this.clampCursor(feed, cursor);
      st ??= this.attach(s, feed!, c, s.holding);
      known[convId] = c;
      // While the session is held, release() below applies the cursors.
      if (!s.holding) this.resumeAt(s, st, feed, c, changesSince);
      waits.push(this.caughtUp(st));
    }
    if (s.holding) this.release(s, known, changesSince);
    await Promise.all(waits);
    const positions: Record<string, number> = {};
    for (const id of Object.keys(known)) positions[id] = s.convs.get(id)?.cursor ?? 0;
    return { ok: true, cursors: positions, serverTime, ...(skipped.length ? { skipped } : {}) };
  }

  /**
   * A cursor's conversation that the session does not hold (joined a moment ago, or not the caller's at all),
   * checked the REST way: its feed, or why the cursor is skipped (NOT_A_MEMBER, CONVERSATION_NOT_FOUND).
   */
  private async feedForCursor(s: Session, convId: string): Promise<Feed | Skipped> {
    try {
      return this.ensureFeed(await this.hub.chat.getConversationFor(s.user, convId));
    } catch (err) {
      return { conversationId: convId, code: isVoxaError(err) ? err.code : 'INTERNAL' };
    }
  }

  private caughtUp(st: ConvState): Promise<void> {
    if (!st.catching) return Promise.resolve();
    return new Promise((resolve) => (st.waiters ??= []).push(resolve));
  }

  // ---------------------------------------------------------------------------------------------------------
  // Writing to sessions

  private write(s: Session, frame: Frame): void {
    if (s.closed) return;
    if (s.beforeReady) {
      s.beforeReady.push(frame);
      return;
    }
    if (s.transport.buffered() > this.opts.maxBufferedBytes) {
      metrics.edgeSlowClientDisconnects.inc({ transport: s.transport.kind });
      this.log.info({ userId: s.user.id, deviceId: s.id }, 'edge: disconnecting a slow consumer');
      s.transport.kick('SLOW_CONSUMER', 'The connection could not keep up; reconnect and resume from your last seq.');
      this.close(s);
      return;
    }
    s.transport.write(frame);
    this.framesOut[s.transport.kind]++;
  }

  /** Offers a feed event to one session, respecting its cursor (drop duplicates, catch up on gaps). */
  private offer(s: Session, feed: Feed, out: Out): void {
    const st = s.convs.get(feed.id);
    if (!st) return;
    if (st.catching) {
      if (st.queue && st.queue.length >= 1000) {
        // The catch-up re-reads from the store until it reaches the feed; the queue only avoids that work.
        // Messages come back with that read, and edits of messages the session already has come back with a
        // changes read from when the queue began (edits of later messages are in the backlog's current state).
        st.queue = null;
        st.overflow = true;
        st.askChanges(changesBound(st.queueSince), st.cursor);
      }
      if (!st.overflow) this.enqueue(st, out);
      return;
    }
    if (!this.apply(s, feed, st, out)) {
      this.enqueue(st, out);
      void this.catchUp(s, feed, st);
    }
  }

  private enqueue(st: ConvState, out: Out): void {
    if (!st.queue) {
      st.queue = [];
      st.queueSince = Date.now();
    }
    st.queue.push(out);
  }

  /** Applies one event to a caught-up session; false when it lies beyond a gap. */
  private apply(s: Session, feed: Feed, st: ConvState, out: Out): boolean {
    switch (out.kind) {
      case 'msg':
        if (out.seq <= st.cursor) return true;
        if (out.seq !== st.cursor + 1) return false;
        st.cursor = out.seq;
        this.write(s, out.frame);
        if (out.senderId !== s.user.id) this.noteDelivered(s, feed, out.seq);
        return true;
      case 'edit':
        if (out.seq > st.cursor) return false;
        this.write(s, out.frame);
        return true;
      case 'plain':
        if (out.exceptUser !== s.user.id) this.write(s, out.frame);
        return true;
    }
  }

  /** Brings a session up to date in one conversation: store backlog first, then what queued meanwhile. */
  private async catchUp(s: Session, feed: Feed, st: ConvState): Promise<void> {
    st.catching = true;
    if (st.running || st.held) return;
    st.running = true;
    try {
      let caughtUp = await this.catchUpLoop(s, feed, st);
      // The loop's answer reaches us a microtask later, and meanwhile a live event may have been queued behind
      // the catch-up (it is still on) or a resume may have left changes to send: run again until level.
      while (caughtUp && (st.changes !== null || !this.isLevel(feed, st))) caughtUp = await this.catchUpLoop(s, feed, st);
      st.running = false;
      if (caughtUp) {
        st.catching = false;
        st.wake();
      }
    } catch (err) {
      this.log.warn({ err, conversationId: feed.id }, 'edge: catch-up failed; retrying');
      setTimeout(() => {
        st.running = false;
        if (!s.closed && s.convs.get(feed.id) === st) void this.catchUp(s, feed, st);
      }, 500).unref();
    }
  }

  /** Nothing queued or blocked, and every message up to the feed's last sent. */
  private isLevel(feed: Feed, st: ConvState): boolean {
    return !st.queue && !st.overflow && st.cursor >= feed.last;
  }

  /** True once the session is level with the feed; false when the session went away meanwhile. */
  private async catchUpLoop(s: Session, feed: Feed, st: ConvState): Promise<boolean> {
    let checkedMembership = false;
    let stalls = 0;
    for (;;) {
      if (s.closed || s.convs.get(feed.id) !== st) return false;
      const q = st.queue;
      if (q) {
        while (q.length > 0) {
          if (!this.apply(s, feed, st, q[0]!)) break;
          q.shift();
        }
        if (q.length === 0 && st.queue === q) st.queue = null;
      }
      // Events queue again from here on. What a full queue dropped is re-read below: its messages by the page
      // read, its edits by the changes read that the drop asked for, which starts after this point and so sees
      // every dropped edit committed.
      st.overflow = false;
      if (st.changes !== null && !(await this.sendChanges(s, feed, st))) return false;
      // Level with the feed and nothing blocked: the caller checks again when it gets this answer (an await
      // later) and only then lets live events apply directly.
      if (this.isLevel(feed, st)) return true;
      if (!checkedMembership) {
        checkedMembership = true;
        const conv = await this.hub.store.getConversation(feed.id);
        if (s.closed || s.convs.get(feed.id) !== st) return false;
        if (!conv || !conv.members.includes(s.user.id)) {
          this.removeMember(s, feed);
          return false;
        }
      }
      if (this.needsDrain(s) && !(await this.drained(s, feed, st))) return false;
      const before = st.cursor;
      // Events queued so far were committed before this read begins, so for the messages it returns it shows
      // their edits already (or a later state); see dropCovered.
      const queued = st.queue;
      const known = queued?.length ?? 0;
      const page = await this.hub.store.listMessages(feed.id, { after: st.cursor, limit: this.opts.pageSize });
      if (s.closed || s.convs.get(feed.id) !== st) return false;
      let fromOthers = 0;
      for (const m of page.messages) {
        if (m.seq <= st.cursor) continue;
        // Several conversations may be catching up on one connection: check the room before every frame.
        if (this.needsDrain(s) && !(await this.drained(s, feed, st))) return false;
        st.cursor = m.seq;
        this.write(s, new Frame('receive-message', m));
        metrics.edgeResumedMessages.inc({ transport: s.transport.kind });
        if (m.senderId !== s.user.id) fromOthers = m.seq;
      }
      if (fromOthers) this.noteDelivered(s, feed, fromOthers);
      if (queued && st.queue === queued && st.cursor > before) this.dropCovered(queued, known, before, st.cursor);
      if (st.cursor === before && !page.hasMore) {
        // Nothing past the cursor, yet something queued is blocked: what we hold is newer than what this
        // read sees. Retry briefly, then step over the hole rather than stall the conversation forever.
        if (++stalls > 20) {
          this.log.warn({ conversationId: feed.id, cursor: st.cursor }, 'edge: catch-up found no messages for a gap');
          const head = st.queue?.[0];
          if (head && head.kind !== 'plain') st.cursor = head.kind === 'msg' ? head.seq - 1 : head.seq;
          else if (st.cursor < feed.last) st.cursor = feed.last;
          stalls = 0;
        } else await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /**
   * Removes, from the first `known` entries of a catch-up's queue, the edits of messages in (from, to] that
   * the page read just sent. Those events were queued before the read began, so the page showed each message
   * in that state or a later one: writing the queued edit after it could put a message back to an older text
   * (until the next edit's event). Edits queued after the read began stay: they may be newer than the page.
   */
  private dropCovered(queue: Out[], known: number, from: number, to: number): void {
    let w = 0;
    for (let r = 0; r < queue.length; r++) {
      const out = queue[r]!;
      if (r < known && out.kind === 'edit' && out.seq > from && out.seq <= to) continue;
      queue[w++] = out;
    }
    queue.length = w;
  }

  /** Whether the connection holds more than half its send budget: a backlog then waits in drained first. */
  private needsDrain(s: Session): boolean {
    return s.transport.buffered() > this.opts.maxBufferedBytes / 2;
  }

  /**
   * Waits, before the next page of a backlog, until the connection has sent most of what it holds. Pages are
   * read from the store without a real wait, so a long backlog (or several conversations catching up at once)
   * would otherwise pile up in the send buffer within one turn and cut even a fast client as a slow consumer.
   * A client that does not drain within DRAIN_WAIT_MS is left to write(), which cuts it if it is past the limit.
   * Checked before every backlog frame, since several conversations may be catching up on one connection; the
   * callers ask needsDrain first, so a frame with room to spare costs no promise. False when the session went
   * away meanwhile.
   */
  private async drained(s: Session, feed: Feed, st: ConvState): Promise<boolean> {
    const low = this.opts.maxBufferedBytes / 2;
    if (s.transport.buffered() <= low) return true; // the common case: no timer
    const deadline = Date.now() + DRAIN_WAIT_MS;
    while (s.transport.buffered() > low && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
      if (s.closed || s.convs.get(feed.id) !== st) return false;
    }
    return true;
  }

  /**
   * The current state of messages up to the session's cursor that were edited or deleted after
   * `st.changes.since`, as the live frames, in seq order. Messages after the cursor come in the backlog in their
   * current state anyway. False when the session went away meanwhile.
   */
  private async sendChanges(s: Session, feed: Feed, st: ConvState): Promise<boolean> {
    const req = st.changes!;
    const since = req.since;
    const upToSeq = Math.min(st.cursor, req.upTo);
    let afterSeq = 0;
    for (;;) {
      if (this.needsDrain(s) && !(await this.drained(s, feed, st))) return false;
      const page = await this.hub.store.listChangedMessages(feed.id, { upToSeq, since, afterSeq, limit: this.opts.pageSize });
      if (s.closed || s.convs.get(feed.id) !== st) return false;
      for (const m of page.messages) {
        if (this.needsDrain(s) && !(await this.drained(s, feed, st))) return false;
        this.write(s, new Frame(m.deleted ? 'message-deleted' : 'message-updated', m));
        afterSeq = m.seq;
      }
      if (!page.hasMore) break;
    }
    // Cleared only now: a failed read leaves it for the retry, and a request meanwhile (a resume, a dropped queue:
    // a new object) asks for another read, since it may want more than this one read.
    if (st.changes === req) {
      st.changes = null;
      if (upToSeq >= st.from && (st.changesSent === null || since < st.changesSent)) st.changesSent = since;
    }
    return true;
  }

  // ---------------------------------------------------------------------------------------------------------
  // Feeds

  private ensureFeed(conv: Conversation): Feed {
    let feed = this.feeds.get(conv.id);
    if (feed) return feed;
    feed = new Feed(conv);
    feed.last = conv.lastSeq;
    feed.ready = true;
    this.feeds.set(conv.id, feed);
    for (const m of conv.members) this.indexPeer(m, conv.id, true);
    return feed;
  }

  private dropFeed(feed: Feed): void {
    this.feeds.delete(feed.id);
    for (const m of feed.conv.members) this.indexPeer(m, feed.id, false);
    for (const t of feed.typing.values()) clearTimeout(t);
    feed.typing.clear();
  }

  private indexPeer(userId: string, convId: string, add: boolean): void {
    let set = this.peers.get(userId);
    if (add) {
      if (!set) this.peers.set(userId, (set = new Set()));
      set.add(convId);
    } else if (set) {
      set.delete(convId);
      if (set.size === 0) this.peers.delete(userId);
    }
  }

  private emit(feed: Feed, out: Out): void {
    for (const s of feed.sessions) this.offer(s, feed, out);
  }

  private emitMessage(feed: Feed, m: Message, time?: string): void {
    feed.last = m.seq;
    feed.senders.add(m.senderId);
    const frame = new Frame('receive-message', m);
    this.emit(feed, { kind: 'msg', seq: m.seq, frame, senderId: m.senderId });
    if (time) {
      const sec = (Date.now() - Date.parse(time)) / 1000;
      if (Number.isFinite(sec) && sec >= 0) {
        // One observation per transport that got the message, not per socket.
        if (feed.kinds.ws) metrics.deliveryLatency.observe({ transport: 'ws' }, sec);
        if (feed.kinds.socketio) metrics.deliveryLatency.observe({ transport: 'socketio' }, sec);
      }
    }
    // A sent message ends its author's typing indicator.
    const t = feed.typing.get(m.senderId);
    if (t) {
      clearTimeout(t);
      feed.typing.delete(m.senderId);
      this.emit(feed, { kind: 'plain', frame: new Frame('stop-typing', { conversationId: feed.id, userId: m.senderId }), exceptUser: m.senderId });
    }
  }

  /** Feed-level ordering: events are applied in seq order; a gap is filled from the store first. */
  private feedEvent(feed: Feed, ev: AnyEvent): void {
    if (!feed.ready || feed.busy) {
      feed.pending.push(ev);
      return;
    }
    switch (ev.type) {
      case 'message.created': {
        const m = ev.data.message;
        if (m.seq <= feed.last) return;
        if (m.seq === feed.last + 1) return this.emitMessage(feed, m, ev.time);
        feed.pending.push(ev);
        return void this.fill(feed, m.seq);
      }
      case 'message.updated':
      case 'message.deleted': {
        const m = ev.data.message;
        if (m.seq > feed.last) {
          // The edit overtook its message: the store read shows the message in its current state.
          feed.pending.push(ev);
          return void this.fill(feed, m.seq);
        }
        const frame = new Frame(ev.type === 'message.updated' ? 'message-updated' : 'message-deleted', m);
        return this.emit(feed, { kind: 'edit', seq: m.seq, frame });
      }
      case 'message.delivered':
      case 'message.seen': {
        const d = ev.data;
        const status = ev.type === 'message.delivered' ? 'delivered' : 'seen';
        const key = `${status}:${d.userId}`;
        if ((feed.statusMax.get(key) ?? -1) >= d.seq) return;
        feed.statusMax.set(key, d.seq);
        const frame = new Frame('message-status-update', { conversationId: feed.id, seq: d.seq, status, userId: d.userId });
        const out: Out = { kind: 'plain', frame, exceptUser: d.userId };
        if (feed.conv.members.length <= this.opts.receiptsMaxMembers) return this.emit(feed, out);
        for (const userId of feed.senders) {
          for (const s of this.sessionsOf(userId)) if (s.convs.has(feed.id)) this.offer(s, feed, out);
        }
        return;
      }
      default:
        return;
    }
  }

  private async fill(feed: Feed, upto: number): Promise<void> {
    if (feed.busy) return;
    feed.busy = true;
    let stalls = 0;
    let gaveUp = false;
    try {
      while (feed.last < upto && this.feeds.get(feed.id) === feed) {
        const page = await this.hub.store.listMessages(feed.id, { after: feed.last, limit: this.opts.pageSize });
        let progressed = false;
        for (const m of page.messages) {
          if (m.seq !== feed.last + 1) break;
          this.emitMessage(feed, m);
          progressed = true;
        }
        if (!progressed) {
          if (++stalls > 20) {
            gaveUp = true;
            break;
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    } catch (err) {
      this.log.warn({ err, conversationId: feed.id }, 'edge: gap fill failed');
    } finally {
      feed.busy = false;
    }
    let pending = feed.pending.splice(0);
    if (gaveUp) {
      // The store has nothing past feed.last although an event claimed `upto`: a hand-made event, or a store
      // restored behind JetStream. Drop the claims at or past it, or replaying them would start this fill
      // again, for ever. A real message among them is in the store by the time a later one triggers a fill.
      const dropped = pending.filter((ev) => seqOfMessageEvent(ev) >= upto);
      pending = pending.filter((ev) => seqOfMessageEvent(ev) < upto);
      this.log.warn(
        { conversationId: feed.id, last: feed.last, upto, dropped: dropped.map((ev) => ev.id).slice(0, 10) },
        'edge: store has no messages for a gap; dropping the events that claim them',
      );
    }
    for (let i = 0; i < pending.length; i++) {
      if (feed.busy) {
        // Not unshift(...rest): a long backlog of events would overflow the stack as call arguments.
        feed.pending = pending.slice(i).concat(feed.pending);
        break;
      }
      this.feedEvent(feed, pending[i]!);
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Membership

  /**
   * A membership event from any source (this edge's core subscription or the runtime's JetStream broadcast
   * consumer, which also covers a NATS reconnect). Each event is applied once.
   */
  membershipEvent(ev: AnyEvent): void {
    if (ev.type !== 'conversation.created' && ev.type !== 'conversation.updated') return;
    if (this.seenMembership.has(ev.id)) return;
    this.seenMembership.add(ev.id);
    if (this.seenMembership.size > 2000) this.seenMembership.delete(this.seenMembership.values().next().value!);
    this.membership(ev);
  }

  private membership(ev: AnyEvent): void {
    if (ev.type !== 'conversation.created' && ev.type !== 'conversation.updated') return;
    const conv = ev.data.conversation;
    const feed = this.feeds.get(conv.id);
    const removed = ev.type === 'conversation.updated' ? (ev.data.removed ?? []) : [];
    const added = ev.type === 'conversation.created' ? conv.members : (ev.data.added ?? []);
    if (feed) {
      // Stale events (an older membership state arriving late) must not undo a newer one.
      if (Date.parse(conv.updatedAt) < Date.parse(feed.conv.updatedAt)) return;
      for (const m of feed.conv.members) if (!conv.members.includes(m)) this.indexPeer(m, feed.id, false);
      for (const m of conv.members) this.indexPeer(m, feed.id, true);
      feed.conv = { ...conv, lastSeq: Math.max(conv.lastSeq, feed.last) };
      for (const userId of removed) {
        for (const s of [...this.sessionsOf(userId)]) this.removeMember(s, feed);
      }
    }
    const info = { conversationId: conv.id, membership: 'member', conversation: conv, added, removed };
    const frame = new Frame('conversation-updated', info);
    // Members already attached hear about the change.
    if (feed) for (const s of feed.sessions) this.write(s, frame);
    // Local sessions of new members start receiving at once: everything of a new conversation, and from the
    // moment of joining for an existing one.
    for (const userId of added) {
      if (!this.byUser.has(userId) || !conv.members.includes(userId)) continue;
      const f = this.ensureFeed(conv);
      for (const s of this.sessionsOf(userId)) {
        if (s.convs.has(conv.id)) continue;
        this.write(s, frame);
        // The write may have cut a slow session: a closed one must not be attached to the feed (it would stay).
        if (!s.closed) this.attach(s, f, ev.type === 'conversation.created' ? 0 : conv.lastSeq, s.holding);
      }
    }
    if (added.length) this.announceNewPeers(conv, added);
  }

  /**
   * After members were added: each local device of the conversation learns which of its new peers are online
   * now (a newly added member: every other member; an existing one: the added users), except peers it already
   * shares another conversation with (it heard about those already). Presence events only say what changes, so
   * without this a peer who was online before the change would look offline until it next comes or goes.
   * Runs after the membership frames were written, so `user-online` follows `conversation-updated`. Nothing is
   * kept per session; the work exists only while a change is being announced. Redis down: nothing is sent.
   */
  private announceNewPeers(conv: Conversation, added: readonly string[]): void {
    const feed = this.feeds.get(conv.id);
    if (!feed || feed.sessions.size === 0) return;
    const addedSet = new Set(added.filter((u) => conv.members.includes(u)));
    if (addedSet.size === 0) return;
    const todo = new Map<Session, string[]>();
    const wanted = new Set<string>();
    for (const s of feed.sessions) {
      const self = s.user.id;
      const candidates = addedSet.has(self) ? conv.members : addedSet;
      const fresh: string[] = [];
      for (const peer of candidates) {
        if (peer === self || this.sharesElsewhere(s, peer, conv.id)) continue;
        fresh.push(peer);
        wanted.add(peer);
      }
      if (fresh.length) todo.set(s, fresh);
    }
    if (todo.size === 0) return;
    this.writeNewPeersOnline(conv.id, todo, [...wanted]).catch((err: unknown) => this.log.debug({ err }, 'edge: announcing new peers failed'));
  }

  /** Whether the session already shares a conversation other than `convId` with `peer`. */
  private sharesElsewhere(s: Session, peer: string, convId: string): boolean {
    const convs = this.peers.get(peer);
    if (!convs) return false;
    for (const id of convs) if (id !== convId && s.convs.has(id)) return true;
    return false;
  }

  private async writeNewPeersOnline(convId: string, todo: Map<Session, string[]>, wanted: string[]): Promise<void> {
    const changed = new Set<string>();
    const reads = (this.presenceReads ??= new Set());
    reads.add(changed);
    let online: string[] | null;
    try {
      // null when Redis is down or slow: presence degrades, nothing is sent.
      online = await this.presence.onlineAmong(wanted);
    } finally {
      reads.delete(changed);
      if (reads.size === 0 && this.presenceReads === reads) this.presenceReads = null;
    }
    if (!online || online.length === 0) return;
    const frames = new Map<string, Frame>();
    for (const u of online) if (!changed.has(u)) frames.set(u, new Frame('user-online', { userId: u }));
    if (frames.size === 0) return;
    for (const [s, peers] of todo) {
      // A device that left the conversation (or closed) meanwhile has no use for it.
      if (s.closed || !s.convs.has(convId)) continue;
      for (const peer of peers) {
        const frame = frames.get(peer);
        if (frame) this.write(s, frame);
      }
    }
  }

  /** A removed member's sessions stop receiving the conversation at once. */
  private removeMember(s: Session, feed: Feed): void {
    const st = s.convs.get(feed.id);
    if (!st) return;
    s.convs.delete(feed.id);
    st.wake();
    this.write(s, new Frame('conversation-updated', { conversationId: feed.id, membership: 'removed' }));
    this.detach(s, feed);
  }

  // ---------------------------------------------------------------------------------------------------------
  // NATS

  private async subscribeWorkspace(workspaceId: string): Promise<void> {
    const existing = this.workspaces.get(workspaceId);
    if (existing) {
      existing.sessions++;
      return;
    }
    const nc = this.hub.bus.nc;
    const chatPrefix = withNamespace(this.ns, `chat.${workspaceId}.`);
    const rtPrefix = withNamespace(this.ns, `rt.${workspaceId}.`);
    const userPrefix = withNamespace(this.ns, `user.${workspaceId}.`);
    const subs: WorkspaceSubs = {
      chat: nc.subscribe(`${chatPrefix}>`, { callback: (err, msg) => !err && this.onChat(msg.subject.slice(chatPrefix.length), msg.data, msg) }),
      rt: nc.subscribe(`${rtPrefix}>`, { callback: (err, msg) => !err && this.onRealtime(msg.subject.slice(rtPrefix.length), msg.data) }),
      users: nc.subscribe(`${userPrefix}*.user.>`, {
        callback: (err, msg) => {
          // Sign-ins and the like say nothing new about the account: only changes to it are re-read.
          if (err || !(msg.subject.endsWith('.user.updated') || msg.subject.endsWith('.user.role_changed'))) return;
          this.onUserChanged(msg.subject.slice(userPrefix.length).split('.')[0]!);
        },
      }),
      sessions: 1,
    };
    this.workspaces.set(workspaceId, subs);
    // A round trip makes sure the server registered our interest before the caller reads the store.
    await nc.flush();
  }

  /**
   * The event in a message on `subject` of this `type`, or null. Anyone who may publish on a chat subject
   * reaches this subscription (a hand-made `nats pub`, a buggy producer), so the data is checked against the
   * catalog as the plugin runtime does: a malformed message.created taken at face value would go to clients
   * and take the seq of the real one. Only for events a feed uses: the rest are dropped before parsing.
   */
  private parse(data: Uint8Array, type: string): AnyEvent | null {
    let ev: AnyEvent | null = null;
    try {
      ev = JSON.parse(this.decoder.decode(data)) as AnyEvent | null;
    } catch {
      // not JSON: reported below
    }
    if (!ev || typeof ev !== 'object' || ev.type !== type) return this.malformed(type, undefined, "malformed event: not JSON, or not an event of its subject's type");
    const problems = checkEventData(ev);
    // Worded as the plugin runtime's dead-letter reasons, so one search finds both.
    return problems ? this.malformed(type, typeof ev.id === 'string' ? ev.id : undefined, malformedReason(problems, type)) : ev;
  }

  private malformed(type: string, eventId: string | undefined, reason: string): null {
    metrics.pluginFailed.inc({ plugin: 'edge', reason: 'malformed' });
    this.log.warn({ type, eventId, reason: reason.slice(0, 500) }, 'edge: malformed event dropped');
    return null;
  }

  /** `rest` is `<conversationId>.<type>`. */
  private onChat(rest: string, data: Uint8Array, msg?: ConsumedMessage): void {
    const dot = rest.indexOf('.');
    const convId = rest.slice(0, dot);
    const type = rest.slice(dot + 1);
    const isMembership = type === 'conversation.created' || type === 'conversation.updated';
    const feed = this.feeds.get(convId);
    // Nobody here cares, or no feed uses the type: skip before parsing. Not only work saved: the catalog check in
    // parse() has no schema for a type it does not know, and a throw here would end the NATS connection's reader.
    if (!isMembership && (!feed || !FEED_TYPES.has(type))) return;
    const ev = this.parse(data, type);
    if (!ev) return;
    try {
      if (isMembership) this.membershipEvent(ev);
      else if (feed && msg) {
        // A consumer span per fanned-out event (child of the publish via traceparent), so the edge hop is in the
        // message's trace. feedEvent still runs synchronously, in arrival order.
        void withConsumerSpan('edge', msg, async () => this.feedEvent(feed, ev)).catch((err: unknown) =>
          this.log.warn({ err, type }, 'edge: event handling failed'),
        );
      } else if (feed) this.feedEvent(feed, ev);
    } catch (err) {
      this.log.warn({ err, type }, 'edge: event handling failed');
    }
  }

  /** `rest` is `<conversationId>.typing.<started|stopped>` or `presence.<online|offline>`. */
  private onRealtime(rest: string, data: Uint8Array): void {
    if (rest === 'presence.online' || rest === 'presence.offline') {
      const ev = this.parse(data, rest);
      if (!ev || (ev.type !== 'presence.online' && ev.type !== 'presence.offline')) return;
      return this.deliverPresence(ev.type === 'presence.online' ? 'user-online' : 'user-offline', ev.data.userId);
    }
    const dot = rest.indexOf('.');
    const feed = this.feeds.get(rest.slice(0, dot));
    if (!feed) return;
    const type = rest.slice(dot + 1);
    if (type !== 'typing.started' && type !== 'typing.stopped') return;
    const ev = this.parse(data, type);
    if (!ev || (ev.type !== 'typing.started' && ev.type !== 'typing.stopped')) return;
    const userId = ev.data.userId;
    const prev = feed.typing.get(userId);
    if (prev) clearTimeout(prev);
    feed.typing.delete(userId);
    const info = { conversationId: feed.id, userId };
    if (ev.type === 'typing.started') {
      const timer = setTimeout(() => {
        feed.typing.delete(userId);
        this.emit(feed, { kind: 'plain', frame: new Frame('stop-typing', info), exceptUser: userId });
      }, this.opts.typingTtlMs);
      timer.unref();
      feed.typing.set(userId, timer);
      this.emit(feed, { kind: 'plain', frame: new Frame('typing', info), exceptUser: userId });
    } else if (prev) {
      this.emit(feed, { kind: 'plain', frame: new Frame('stop-typing', info), exceptUser: userId });
    }
  }

  private deliverPresence(name: 'user-online' | 'user-offline', userId: string): void {
    if (this.presenceReads) for (const changed of this.presenceReads) changed.add(userId);
    const convs = this.peers.get(userId);
    if (!convs) return;
    const frame = new Frame(name, { userId });
    // A session in several shared conversations hears it once. The common case of one shared conversation
    // needs no bookkeeping (a big room's connect storm would otherwise pay a Set insert per peer per arrival).
    const seen = convs.size > 1 ? new Set<Session>() : null;
    for (const convId of convs) {
      const feed = this.feeds.get(convId);
      if (!feed) continue;
      for (const s of feed.sessions) {
        if (s.user.id === userId) continue;
        if (seen) {
          if (seen.has(s)) continue;
          seen.add(s);
        }
        this.write(s, frame);
      }
    }
  }

  private publishPresence(change: 'online' | 'offline', workspaceId: string, userId: string): void {
    if (this.closing && change === 'online') return;
    this.publishEphemeral(
      createEvent(change === 'online' ? 'presence.online' : 'presence.offline', {
        workspaceId,
        userId,
        actor: { type: 'user', id: userId },
        data: { userId },
      }),
    );
  }

  /** Typing and presence are fire-and-forget core publishes (the memory stream keeps them briefly). */
  private publishEphemeral(ev: AnyEvent): void {
    try {
      if (!this.hub.bus.nc.isClosed()) this.hub.bus.nc.publish(subjectOf(ev, this.ns), JSON.stringify(ev));
    } catch (err) {
      this.log.debug({ err }, 'edge: ephemeral publish failed');
    }
  }

  /**
   * After a NATS reconnect, core subscriptions may have missed events: every feed checks the store for
   * messages past its position (and the sessions follow through the usual gap handling).
   */
  private async watchNats(): Promise<void> {
    for await (const st of this.hub.bus.nc.status()) {
      if (st.type !== 'reconnect' || this.closing) continue;
      this.log.info({ feeds: this.feeds.size }, 'edge: NATS reconnected; checking feeds for missed messages');
      for (const feed of [...this.feeds.values()]) {
        try {
          const conv = await this.hub.store.getConversation(feed.id);
          if (conv && conv.lastSeq > feed.last) void this.fill(feed, conv.lastSeq);
        } catch (err) {
          this.log.warn({ err }, 'edge: resync after reconnect failed');
        }
      }
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Receipts

  private noteDelivered(s: Session, feed: Feed, seq: number): void {
    if (feed.conv.members.length > this.opts.receiptsMaxMembers) return;
    const key = `${s.user.id}|${feed.id}`;
    if ((feed.reported.get(s.user.id) ?? 0) >= seq) return;
    const cur = this.receipts.get(key);
    if (cur && cur.seq >= seq) return;
    this.receipts.set(key, { user: s.user, feed, seq, transport: s.transport.kind });
    if (!this.receiptTimer) {
      this.receiptTimer = setTimeout(() => void this.flushReceipts(), this.opts.receiptFlushMs);
      this.receiptTimer.unref();
    }
  }

  private async flushReceipts(): Promise<void> {
    this.receiptTimer = null;
    const batch = [...this.receipts.values()];
    this.receipts.clear();
    await Promise.all(
      batch.map(async ({ user, feed, seq, transport }) => {
        if ((feed.reported.get(user.id) ?? 0) >= seq) return;
        feed.reported.set(user.id, seq);
        try {
          await this.hub.chat.markDelivered(user, feed.conv, seq, transport);
        } catch (err) {
          this.log.debug({ err }, 'edge: delivered receipt failed');
        }
      }),
    );
  }

  // ---------------------------------------------------------------------------------------------------------

  /** Closes every session (clients reconnect elsewhere and resume), unsubscribes, removes presence. */
  async shutdown(): Promise<void> {
    this.closing = true;
    clearInterval(this.metricsTimer);
    this.flushMetrics();
    for (const s of [...this.sessions]) {
      try {
        s.transport.kick('UNAVAILABLE', 'The edge is shutting down; reconnect and resume.');
      } catch {
        /* already gone */
      }
      this.close(s);
    }
    if (this.receiptTimer) clearTimeout(this.receiptTimer);
    await this.flushReceipts();
    for (const ws of this.workspaces.values()) {
      ws.chat.unsubscribe();
      ws.rt.unsubscribe();
      ws.users.unsubscribe();
    }
    this.workspaces.clear();
    await this.presence.close();
  }
}
