/**
 * Request and response schemas of the public REST contract (v1). Request objects are strict (unknown fields
 * are a 400); query values arrive as strings and are parsed by hand rather than coerced, so `1e2`, `-1`,
 * ` 5` or a repeated parameter are rejected instead of silently reinterpreted.
 */
import { z } from 'zod';
import { ConversationSchema, ConversationSummarySchema, longerThan, MessageSchema, RoleSchema, UserSchema, type Conversation, type Message } from '../domain.js';
import { ID_PATTERN } from '../ids.js';

export const Id = z.string().regex(ID_PATTERN, 'must be an id ([A-Za-z0-9_-], 1-64 chars)');

/** A query parameter holding a positive integer (no sign, exponent or leading zero). */
const positiveIntText = z
  .string()
  .regex(/^[1-9][0-9]{0,14}$/, 'must be a positive integer')
  .transform(Number);

/**
 * A positive integer query parameter of at most `max`. The pipe into a number is what /v1/openapi.json shows
 * (`type: integer` with the range; see api-router.ts), so keep the range on the number side.
 */
const queryInt = (max: number) => positiveIntText.pipe(z.number().int().min(1).max(max));

/** A sequence number in a query: fifteen digits at most (the text's pattern), so always a safe integer. */
export const QuerySeq = queryInt(999_999_999_999_999);

/** `limit` from 1 to `max`, `fallback` when absent; plugins use it with their own bounds. */
export const queryLimit = (max: number, fallback: number) => queryInt(max).optional().default(fallback);

export const Limit = queryLimit(200, 50);

export const Email = z.email().max(254);
export const Password = z.string().min(8, 'at least 8 characters').max(256);
export const PersonName = z.string().trim().min(1).max(100);

// Auth
export const RegisterBody = z.strictObject({
  email: Email,
  password: Password,
  name: PersonName,
  /** The code that came with an invitation (`voxa users add`): needed to register an invited email. */
  invite: z.string().min(1).max(100).optional(),
});
export const LoginBody = z.strictObject({
  email: z.string().min(1).max(254),
  password: z.string().min(1).max(256),
  /** One-time code for accounts with two-factor sign-in (issue 7). */
  otp: z.string().regex(/^[0-9A-Za-z-]{4,32}$/).optional(),
});
export const RefreshBody = z.strictObject({ refreshToken: z.string().min(1).max(512) });
export const LogoutBody = z.strictObject({ refreshToken: z.string().min(1).max(512).optional() }).optional();

export const SessionResponse = z.object({ user: UserSchema, accessToken: z.string(), refreshToken: z.string() });
export const UserResponse = z.object({ user: UserSchema });

/**
 * Search text in a query (users, messages): at most `max` characters, no control characters. They are never
 * part of what anyone searches for, and a store may misread them (SQLite's LIKE ends a pattern at NUL, which
 * matched everyone).
 */
export const SearchText = (max: number) => z.string().max(max).regex(/^\P{Cc}*$/u, 'must not contain control characters');

// Users
export const UsersQuery = z.strictObject({
  // Literal text.
  q: SearchText(100).optional().default(''),
  limit: Limit,
});
export const UsersResponse = z.object({ users: z.array(UserSchema) });
export const UserParams = z.strictObject({ id: Id });
export const AccountChangeBody = z
  .strictObject({ role: RoleSchema.optional(), disabled: z.boolean().optional() })
  .refine((b) => b.role !== undefined || b.disabled !== undefined, 'name at least one of role and disabled')
  // The refinement has no JSON Schema form; minProperties says the same in /v1/openapi.json.
  .meta({ minProperties: 1 });
export const AccountResponse = z.object({ user: UserSchema, disabled: z.boolean(), changed: z.boolean() });

// Conversations
export const ConversationParams = z.strictObject({ id: Id });
export const CreateConversationBody = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('direct'), members: z.array(Id).min(1).max(2) }),
  z.strictObject({ type: z.literal('group'), title: z.string().trim().min(1).max(200), members: z.array(Id).min(1).max(500) }),
]);
export const UpdateConversationBody = z
  .strictObject({
    title: z.string().trim().min(1).max(200).optional(),
    addMembers: z.array(Id).max(500).optional(),
    removeMembers: z.array(Id).max(500).optional(),
  })
  .refine((b) => b.title !== undefined || (b.addMembers?.length ?? 0) > 0 || (b.removeMembers?.length ?? 0) > 0, {
    message: 'Give a title, addMembers or removeMembers.',
  })
  .meta({ minProperties: 1 });
/**
 * Where the next page of the conversation list starts: the last conversation of the page before, as an opaque
 * text (base64url of its updatedAt and id). Parsed into a store position; anything else is a 400 naming it.
 */
export const ConversationCursor = z
  .string()
  .max(200)
  .regex(/^[A-Za-z0-9_-]+$/, 'must be a nextCursor from an earlier answer')
  .transform((text, ctx) => {
    let pair: unknown;
    try {
      pair = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
    } catch {
      pair = null;
    }
    const [updatedAt, id] = Array.isArray(pair) && pair.length === 2 ? (pair as unknown[]) : [];
    if (typeof updatedAt !== 'string' || Number.isNaN(Date.parse(updatedAt)) || !Id.safeParse(id).success) {
      ctx.addIssue({ code: 'custom', message: 'must be a nextCursor from an earlier answer' });
      return z.NEVER;
    }
    return { updatedAt, id: id as string };
  })
  .describe('The nextCursor of the previous page.');
export function conversationCursor(c: { updatedAt: string; id: string }): string {
  return Buffer.from(JSON.stringify([c.updatedAt, c.id]), 'utf8').toString('base64url');
}
export const ConversationsQuery = z.strictObject({ limit: Limit, cursor: ConversationCursor.optional() });
export const ConversationResponse = z.object({ conversation: ConversationSchema });
export const ConversationsResponse = z.object({
  conversations: z.array(ConversationSummarySchema),
  /** More conversations follow: ask again with cursor = nextCursor. */
  hasMore: z.boolean(),
  nextCursor: z.string().nullable(),
});

// Messages
export const MessageParams = z.strictObject({ id: Id, messageId: Id });
/**
 * Message text of at most `maxLength` characters (the hub's maxMessageLength). The bodies below are built per
 * hub from its config, so the limit in /v1/openapi.json is the one this server enforces. ChatService checks
 * the same limit with the same words for the WebSocket edge.
 */
const MessageText = (maxLength: number) =>
  z
    .string()
    .refine((s) => !longerThan(s, maxLength), `Text is longer than ${maxLength} characters.`)
    // Characters are code points, as JSON Schema counts them (the refinement has no JSON Schema form).
    .meta({ maxLength });
export const sendMessageBody = (maxLength: number) =>
  z.strictObject({
    text: MessageText(maxLength),
    /** The client's own id for this send: the same clientId again returns the same message. */
    clientId: z.string().min(1).max(128).nullable().optional(),
    /** Ids of files uploaded into this conversation (POST /v1/conversations/:id/files), at most 10. */
    attachments: z.array(Id).max(10).optional(),
  });
export const editMessageBody = (maxLength: number) => z.strictObject({ text: MessageText(maxLength) });
export const HistoryQuery = z.strictObject({
  before: QuerySeq.optional(),
  after: QuerySeq.optional(),
  limit: Limit,
});
export const ReadBody = z.strictObject({ seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) });
export const ReadResponse = z.object({ seq: z.number().int() });

/** The contract's message fields, plus attachments when a message has them. */
export const MessageOut = MessageSchema;
export const MessageResponse = z.object({ message: MessageOut });
export const MessagesResponse = z.object({ messages: z.array(MessageOut), hasMore: z.boolean() });

/** A message as the API shows it: exactly the contract's fields, whatever else the store returned. */
export function messageOut(m: Message): Message {
  const out: Message = {
    id: m.id,
    conversationId: m.conversationId,
    seq: m.seq,
    senderId: m.senderId,
    text: m.text,
    clientId: m.clientId ?? null,
    createdAt: m.createdAt,
  };
  if (m.editedAt) out.editedAt = m.editedAt;
  if (m.deleted) out.deleted = true;
  if (m.attachments && m.attachments.length) out.attachments = m.attachments;
  return out;
}

/** A conversation as the API shows it (no store-internal fields such as the direct-pair key). */
export function conversationOut(c: Conversation): Conversation {
  return {
    id: c.id,
    workspaceId: c.workspaceId,
    type: c.type,
    title: c.title,
    members: c.members,
    createdBy: c.createdBy,
    createdAt: c.createdAt,
    updatedAt: c.updatedAt,
    lastSeq: c.lastSeq,
  };
}
