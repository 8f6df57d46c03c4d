/**
 * The event catalog: every event the hub publishes, its payload schema and its subject, in one file.
 * Publishing, subscribing, plugin manifests, `voxa events tail` and docs/events.md are all typed from it;
 * test/events/catalog.test.ts checks catalog, streams and docs agree.
 *
 * Subjects go broad to narrow:
 *   chat.<workspaceId>.<conversationId>.<type>   conversation events (durable)
 *   user.<workspaceId>.<userId>.<type>           account events (durable)
 *   admin.<workspaceId>.<type>                   workspace administration events (durable)
 *   rt.<workspaceId>.<conversationId>.typing.*   typing (ephemeral, memory stream)
 *   rt.<workspaceId>.presence.*                  presence (ephemeral, memory stream)
 */
import { z } from 'zod';
import { ConversationSchema, MessageSchema, RoleSchema, UserSchema } from '../domain.js';
import { ulid } from '../ids.js';

export type EventScope = 'chat' | 'user' | 'admin' | 'typing' | 'presence';

interface EventDef<S extends z.ZodTypeAny = z.ZodTypeAny> {
  scope: EventScope;
  /** One sentence for the docs and `voxa events types`. */
  doc: string;
  data: S;
}

const def = <S extends z.ZodTypeAny>(scope: EventScope, doc: string, data: S): EventDef<S> => ({ scope, doc, data });

const SeqMarker = z.object({ conversationId: z.string(), userId: z.string(), seq: z.number().int().nonnegative() });

export const EVENTS = {
  'message.created': def('chat', 'A message was stored and got its seq.', z.object({ message: MessageSchema })),
  'message.updated': def('chat', 'A message text was edited by its author.', z.object({ message: MessageSchema })),
  'message.deleted': def('chat', 'A message was deleted; its text is gone (tombstone).', z.object({ message: MessageSchema })),
  'message.delivered': def('chat', 'A recipient device received messages up to seq.', SeqMarker.extend({ transport: z.enum(['socketio', 'ws']).optional() })),
  'message.seen': def('chat', 'A member read the conversation up to seq (read marker moved).', SeqMarker),
  'conversation.created': def('chat', 'A conversation was opened.', z.object({ conversation: ConversationSchema })),
  'conversation.updated': def(
    'chat',
    'A conversation changed (title, members).',
    z.object({ conversation: ConversationSchema, added: z.array(z.string()).optional(), removed: z.array(z.string()).optional() }),
  ),
  'file.uploaded': def(
    'chat',
    'A file was uploaded into a conversation.',
    z.object({ file: z.object({ id: z.string(), name: z.string(), size: z.number(), contentType: z.string(), conversationId: z.string() }) }),
  ),
  'user.registered': def('user', 'An account was created (registration or pre-registration).', z.object({ user: UserSchema })),
  'user.updated': def('user', 'An account changed (name, role, disabled).', z.object({ user: UserSchema, changes: z.array(z.string()) })),
  'user.role_changed': def('user', 'An account got a new role.', z.object({ user: UserSchema, from: RoleSchema, to: RoleSchema })),
  'user.login': def('user', 'A successful sign-in.', z.object({ ip: z.string().optional(), method: z.string() })),
  'user.login_failed': def('user', 'A failed sign-in for an existing account.', z.object({ ip: z.string().optional(), reason: z.string() })),
  'user.logout': def('user', 'A sign-out; the refresh token family was revoked.', z.object({})),
  'user.token_reuse': def('user', 'A used refresh token was presented again; its family was revoked.', z.object({ familyId: z.string() })),
  'workspace.updated': def('admin', 'Workspace settings changed.', z.object({ settings: z.record(z.string(), z.unknown()) })),
  'connection.changed': def(
    'admin',
    'A connector connection was added, changed, enabled, disabled or removed.',
    z.object({ connectionId: z.string(), connector: z.string(), action: z.string() }),
  ),
  'webhook.changed': def('admin', 'A webhook subscription was added, changed or removed.', z.object({ webhookId: z.string(), action: z.string() })),
  'data.exported': def('admin', 'Workspace data was exported.', z.object({ what: z.string() })),
  'typing.started': def('typing', 'A member started typing (ephemeral).', z.object({ conversationId: z.string(), userId: z.string() })),
  'typing.stopped': def('typing', 'A member stopped typing (ephemeral).', z.object({ conversationId: z.string(), userId: z.string() })),
  'presence.online': def('presence', 'The first device of a user connected (ephemeral).', z.object({ userId: z.string() })),
  'presence.offline': def('presence', 'The last device of a user left (ephemeral).', z.object({ userId: z.string() })),
} as const;

export type EventType = keyof typeof EVENTS;
export type EventData<T extends EventType> = z.infer<(typeof EVENTS)[T]['data']>;
export const EVENT_TYPES = Object.keys(EVENTS) as EventType[];

export type Actor = { type: 'user' | 'system' | 'plugin'; id: string };

/** The envelope every event travels in. */
export interface EventEnvelope<T extends EventType = EventType> {
  id: string;
  type: T;
  time: string;
  workspaceId: string;
  conversationId?: string;
  /** For user-scoped events: the account the event is about. */
  userId?: string;
  actor: Actor;
  data: EventData<T>;
  v: 1;
}

export type AnyEvent = { [K in EventType]: EventEnvelope<K> }[EventType];

export const EnvelopeSchema = z.object({
  id: z.string().min(1),
  type: z.enum(EVENT_TYPES as [EventType, ...EventType[]]),
  time: z.string(),
  workspaceId: z.string(),
  conversationId: z.string().optional(),
  userId: z.string().optional(),
  actor: z.object({ type: z.enum(['user', 'system', 'plugin']), id: z.string() }),
  data: z.unknown(),
  v: z.literal(1),
});

/**
 * Checks an event's `data` against its type's schema (the envelope leaves it `unknown`): the problems, or
 * undefined when it fits. It only checks. Callers keep the data as published, because a zod object drops keys it
 * does not know, and fields a newer producer added are not an error; missing fields and wrong types are.
 */
export function checkEventData(event: { type: EventType; data: unknown }): z.ZodError | undefined {
  // A type the catalog does not know (an event from outside, typed only by a cast) is a problem, not a throw.
  const def = Object.hasOwn(EVENTS, event.type) ? EVENTS[event.type] : undefined;
  if (!def) return new z.ZodError([{ code: 'custom', path: ['type'], message: `unknown event type ${JSON.stringify(String(event.type)).slice(0, 80)}`, input: event.type }]);
  const r = def.data.safeParse(event.data);
  return r.success ? undefined : r.error;
}

export function createEvent<T extends EventType>(
  type: T,
  fields: { workspaceId: string; conversationId?: string; userId?: string; actor: Actor; data: EventData<T>; time?: string },
): EventEnvelope<T> {
  const scope = EVENTS[type].scope;
  if ((scope === 'chat' || scope === 'typing') && !fields.conversationId) throw new Error(`${type} needs a conversationId`);
  if (scope === 'user' && !fields.userId) throw new Error(`${type} needs a userId`);
  return {
    id: `evt_${ulid()}`,
    type,
    time: fields.time ?? new Date().toISOString(),
    workspaceId: fields.workspaceId,
    ...(fields.conversationId ? { conversationId: fields.conversationId } : {}),
    ...(fields.userId ? { userId: fields.userId } : {}),
    actor: fields.actor,
    data: fields.data,
    v: 1,
  };
}

/** Prefix for all subjects and stream names; empty in production, unique per test. */
export function withNamespace(ns: string, subject: string): string {
  return ns ? `${ns}.${subject}` : subject;
}

/** The subject an event is published on. */
export function subjectOf(event: Pick<EventEnvelope, 'type' | 'workspaceId' | 'conversationId' | 'userId'>, ns = ''): string {
  const scope = EVENTS[event.type].scope;
  switch (scope) {
    case 'chat':
      return withNamespace(ns, `chat.${event.workspaceId}.${event.conversationId}.${event.type}`);
    case 'user':
      return withNamespace(ns, `user.${event.workspaceId}.${event.userId}.${event.type}`);
    case 'admin':
      return withNamespace(ns, `admin.${event.workspaceId}.${event.type}`);
    case 'typing':
      return withNamespace(ns, `rt.${event.workspaceId}.${event.conversationId}.${event.type}`);
    case 'presence':
      return withNamespace(ns, `rt.${event.workspaceId}.${event.type}`);
  }
}

/** A subject filter that matches one event type in every workspace (and conversation). */
export function filterSubjectOf(type: EventType, ns = '', workspaceId = '*'): string {
  const scope = EVENTS[type].scope;
  switch (scope) {
    case 'chat':
      return withNamespace(ns, `chat.${workspaceId}.*.${type}`);
    case 'user':
      return withNamespace(ns, `user.${workspaceId}.*.${type}`);
    case 'admin':
      return withNamespace(ns, `admin.${workspaceId}.${type}`);
    case 'typing':
      return withNamespace(ns, `rt.${workspaceId}.*.${type}`);
    case 'presence':
      return withNamespace(ns, `rt.${workspaceId}.${type}`);
  }
}

/** True when the event goes to the durable stream (not the memory-backed ephemeral one). */
export function isDurable(type: EventType): boolean {
  const scope = EVENTS[type].scope;
  return scope !== 'typing' && scope !== 'presence';
}

/** Recovers the event type from a subject (inverse of subjectOf). */
export function typeFromSubject(subject: string, ns = ''): EventType | undefined {
  const parts = (ns ? subject.slice(ns.length + 1) : subject).split('.');
  const head = parts[0];
  const rest = head === 'chat' || head === 'user' || (head === 'rt' && parts[3] === 'typing') ? parts.slice(3) : parts.slice(2);
  const type = rest.join('.');
  return type in EVENTS ? (type as EventType) : undefined;
}
