/**
 * Short-lived in-process caches of the two records every send reads: the caller (UserRecord, to lock out
 * disabled accounts and apply the current role) and the conversation (workspace and members). Without them
 * each send does two store reads before its write.
 *
 * What keeps them honest:
 *  - In this process, every store write that can change them (`updateUser`, `updateMembers`) drops the entry
 *    before the write's promise resolves to its caller (see `invalidatingStore`), so a role change, a disabled
 *    account or a removed member takes effect for the very next request here.
 *  - Other processes (more API/edge processes, the CLI through the outbox sweeper) announce their changes as
 *    events: `watchInvalidations` listens to `user.*` and `conversation.*` subjects on core NATS and drops the
 *    entry as soon as the event arrives (milliseconds).
 *  - Every entry expires after `ttlMs` (5 s by default) whatever happens, which bounds staleness when NATS is
 *    down or a change was written without an event.
 *  - A read that started before an invalidation never repopulates the cache with what it read (an epoch
 *    check), so a slow read cannot resurrect the old record.
 * Only records that would let the request through are cached; "not found" and "locked out" always go to the
 * store, so a newly allowed user or member is never turned away by the cache.
 */
import type { NatsConnection, Subscription } from 'nats';
import type { Conversation, UserRecord } from '../domain.js';
import type { Store } from '../store/port.js';
import { withNamespace } from '../events/catalog.js';

/** Default lifetime of a cached record. */
export const READ_CACHE_TTL_MS = 5_000;

/** A bounded id → record map with a TTL per entry and an invalidation epoch. Records are frozen (shared). */
export class ReadCache<V extends object> {
  private readonly map = new Map<string, { value: V; expires: number }>();
  /** Bumped by every invalidation; a load that started in an older epoch is not stored. */
  epoch = 0;

  constructor(
    readonly ttlMs = READ_CACHE_TTL_MS,
    private readonly max = 10_000,
  ) {}

  /** The cached record, or undefined when absent or expired. */
  peek(id: string): V | undefined {
    const e = this.map.get(id);
    if (!e) return undefined;
    if (e.expires > Date.now()) return e.value;
    this.map.delete(id);
    return undefined;
  }

  /** Stores a record loaded while `epoch` was current; ignored when an invalidation happened since. */
  put(id: string, value: V, epoch: number): void {
    if (epoch !== this.epoch || this.ttlMs <= 0) return;
    if (this.map.size >= this.max) {
      // Oldest insertion first: a Map iterates in insertion order.
      const oldest = this.map.keys().next().value;
      if (oldest !== undefined) this.map.delete(oldest);
    }
    this.map.delete(id);
    this.map.set(id, { value: Object.freeze(value), expires: Date.now() + this.ttlMs });
  }

  invalidate(id: string): void {
    this.epoch++;
    this.map.delete(id);
  }

  clear(): void {
    this.epoch++;
    this.map.clear();
  }

  get size(): number {
    return this.map.size;
  }
}

/** The hub's read caches. */
export interface ReadCaches {
  users: ReadCache<UserRecord>;
  conversations: ReadCache<Conversation>;
}

export function createReadCaches(ttlMs = READ_CACHE_TTL_MS): ReadCaches {
  return { users: new ReadCache<UserRecord>(ttlMs), conversations: new ReadCache<Conversation>(ttlMs) };
}

/**
 * The store, with `updateUser` and `updateMembers` dropping the cached record both when they start and
 * before they resolve (or reject) to their caller. Everything else passes through untouched.
 */
export function invalidatingStore<S extends Store>(store: S, caches: ReadCaches): S {
  const updateUser: Store['updateUser'] = async (id, patch, outbox) => {
    caches.users.invalidate(id);
    try {
      return await store.updateUser(id, patch, outbox);
    } finally {
      caches.users.invalidate(id);
    }
  };
  const updateMembers: Store['updateMembers'] = async (id, change, outbox) => {
    caches.conversations.invalidate(id);
    try {
      return await store.updateMembers(id, change, outbox);
    } finally {
      caches.conversations.invalidate(id);
    }
  };
  return new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === 'updateUser') return updateUser;
      if (prop === 'updateMembers') return updateMembers;
      return Reflect.get(target, prop, receiver);
    },
  });
}

/**
 * Drops cached records when another process announces a change: any user-scoped event names its user in the
 * subject (`user.<workspace>.<user>.<type>`), any `conversation.*` event its conversation
 * (`chat.<workspace>.<conversation>.conversation.<what>`). Core NATS subscriptions: they see every event as
 * it is published and need no consumer state. Returns the subscriptions (closed with the connection).
 */
export function watchInvalidations(nc: NatsConnection, namespace: string, caches: ReadCaches): Subscription[] {
  const skip = namespace ? namespace.split('.').length : 0;
  const idAt = (subject: string) => subject.split('.')[skip + 2];
  return [
    nc.subscribe(withNamespace(namespace, 'user.*.*.>'), {
      callback: (_err, msg) => {
        const id = idAt(msg.subject);
        if (id) caches.users.invalidate(id);
      },
    }),
    nc.subscribe(withNamespace(namespace, 'chat.*.*.conversation.>'), {
      callback: (_err, msg) => {
        const id = idAt(msg.subject);
        if (id) caches.conversations.invalidate(id);
      },
    }),
  ];
}
