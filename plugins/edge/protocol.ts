/**
 * The WebSocket edge vocabulary (DESIGN.md "WebSocket edge"), shared by the Socket.IO and the plain
 * WebSocket transports: what a client may send (validated like a REST body: strict objects of primitives),
 * and the names of what the server sends.
 */
import { z } from 'zod';
import { MAX_ATTACHMENTS } from '../../core/files/attachments.js';
import { ID_PATTERN } from '../../core/ids.js';
import { FORBIDDEN_KEYS } from '../../core/http/body.js';
import { validationDetails, type ValidationDetails } from '../../core/http/validate.js';

const Id = z.string().regex(ID_PATTERN);
const Seq = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

/** Largest number of conversations one resume may name; more is almost certainly abuse. */
export const MAX_RESUME_CURSORS = 2000;

const Cursors = z
  // A key that reaches the prototype (`__proto__`, `constructor`) is refused as REST refuses it in a body,
  // rather than silently dropped (zod's record skips `__proto__`) or looked up as a conversation. Checked on
  // the input, before the record drops it.
  .preprocess((raw, ctx) => {
    if (raw !== null && typeof raw === 'object' && !Array.isArray(raw)) {
      for (const key of Object.keys(raw)) {
        if (FORBIDDEN_KEYS.has(key)) ctx.issues.push({ code: 'custom', path: [key], message: 'this key is not allowed', input: key });
      }
    }
    return raw;
  }, z.record(Id, Seq))
  .refine((c) => Object.keys(c).length <= MAX_RESUME_CURSORS, `at most ${MAX_RESUME_CURSORS} conversations per resume`);

/**
 * A `serverTime` the edge gave the client earlier (`ready`, a resume ack): resume then also sends the
 * current state of messages at or before each cursor that were edited or deleted since.
 */
const ChangesSince = z.iso.datetime({ offset: true }).max(40);

/** Client → server events and their payload schemas. */
export const CLIENT_EVENTS = {
  'send-message': z
    .object({
      conversationId: Id,
      // The length limit is the configured maxMessageLength, enforced by ChatService like for REST.
      text: z.string(),
      clientId: z.string().min(1).max(128).optional(),
      // File ids from POST …/files; ChatService checks them exactly as for REST (core/files/attachments.ts).
      attachments: z.array(Id).max(MAX_ATTACHMENTS).optional(),
    })
    .strict(),
  typing: z.object({ conversationId: Id }).strict(),
  'stop-typing': z.object({ conversationId: Id }).strict(),
  'message-seen': z.object({ conversationId: Id, seq: Seq }).strict(),
  resume: z.object({ cursors: Cursors, changesSince: ChangesSince.optional() }).strict(),
} as const;

export type ClientEventName = keyof typeof CLIENT_EVENTS;
export type ClientEventData<N extends ClientEventName> = z.infer<(typeof CLIENT_EVENTS)[N]>;
export const CLIENT_EVENT_NAMES = Object.keys(CLIENT_EVENTS) as ClientEventName[];

export function isClientEvent(name: string): name is ClientEventName {
  return Object.prototype.hasOwnProperty.call(CLIENT_EVENTS, name);
}

/**
 * Server → client event names. `ready` is the first frame of a session (`{ok, userId, deviceId, serverTime, online?}`);
 * `error` is sent when a frame cannot be answered with an ack.
 */
export const SERVER_EVENTS = [
  'ready',
  'receive-message',
  'message-updated',
  'message-deleted',
  'typing',
  'stop-typing',
  'user-online',
  'user-offline',
  'message-status-update',
  'conversation-updated',
  'error',
] as const;
export type ServerEventName = (typeof SERVER_EVENTS)[number];

/** The plain-WebSocket envelope: `{type, data, ackId?}` as a JSON text frame. */
export const WsFrameSchema = z
  .object({
    type: z.string().min(1).max(64),
    data: z.unknown().optional(),
    ackId: z.union([z.string().min(1).max(64), z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)]).optional(),
  })
  .strict();

/**
 * The handshake: the token (never in the URL) and, optionally, resume cursors, so a reconnecting client gets
 * its backlog before any live message without a second round trip.
 */
export const HandshakeSchema = z
  .object({
    token: z.string().min(1).max(8192),
    cursors: Cursors.optional(),
    changesSince: ChangesSince.optional(),
  })
  .strict();
export type Handshake = z.infer<typeof HandshakeSchema>;

/** The first five issues as `path: message`, joined with `; ` (for a refusal's message). */
function issueSummary(details: ValidationDetails): string {
  return details.issues.slice(0, 5).map((d) => `${d.path}: ${d.message}`).join('; ');
}

/**
 * Why a handshake (Socket.IO `auth`, or the /ws auth frame's data) was refused: without a token string it is
 * UNAUTHENTICATED; with one, the rest was wrong (bad cursors, an unknown key) and the answer is
 * VALIDATION_FAILED naming the fields, as for any other frame.
 */
export function handshakeRefusal(raw: unknown, err: z.ZodError): { code: 'UNAUTHENTICATED' | 'VALIDATION_FAILED'; message: string; details?: ValidationDetails } {
  const token = raw !== null && typeof raw === 'object' ? (raw as { token?: unknown }).token : undefined;
  if (typeof token !== 'string' || token.length === 0) return { code: 'UNAUTHENTICATED', message: 'Send {auth: {token}} in the handshake.' };
  const details = validationDetails(err, 'auth');
  return { code: 'VALIDATION_FAILED', message: `Invalid handshake: ${issueSummary(details)}`, details };
}

/** Close codes of the plain WebSocket transport (4000–4999 are application codes). */
export const CLOSE = {
  /** Bad, expired or missing token, or no auth frame in time. */
  UNAUTHENTICATED: 4001,
  /** The first frame was not a valid auth frame. */
  PROTOCOL: 4002,
  /** The client did not read fast enough; reconnect and resume. */
  SLOW_CONSUMER: 4008,
  /** The edge is shutting down; reconnect (to another edge) and resume. */
  GOING_AWAY: 1001,
} as const;

/**
 * A zod error as a short, safe message and the same `{fields, issues}` details REST gives (docs/errors.md),
 * with paths under `data` as REST's are under `body`.
 */
export function describeZodError(err: z.ZodError): { message: string; details: ValidationDetails } {
  const details = validationDetails(err, 'data');
  return { message: `Invalid frame: ${issueSummary(details)}`, details };
}
