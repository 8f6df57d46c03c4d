/**
 * The hub's domain objects as zod schemas: the REST responses, the event payloads and the store port all
 * use these, so a field is named once.
 */
import { z } from 'zod';

export const RoleSchema = z.enum(['admin', 'agent', 'customer']);
export type Role = z.infer<typeof RoleSchema>;

export const WorkspaceSettingsSchema = z.object({
  /** Who may register into this workspace. */
  registration: z.enum(['open', 'invite', 'closed']),
  /** When true a customer may only open conversations that include an agent or admin. */
  customersTalkToAgentsOnly: z.boolean(),
  /** When true pushes carry no message text. */
  privatePush: z.boolean(),
});
export type WorkspaceSettings = z.infer<typeof WorkspaceSettingsSchema>;

export const WorkspaceSchema = z.object({
  id: z.string(),
  name: z.string(),
  settings: WorkspaceSettingsSchema,
  createdAt: z.string(),
});
export type Workspace = z.infer<typeof WorkspaceSchema>;

/** A user as the API shows it (never the password hash). */
export const UserSchema = z.object({
  id: z.string(),
  workspaceId: z.string(),
  email: z.string(),
  name: z.string(),
  role: RoleSchema,
  createdAt: z.string(),
});
export type User = z.infer<typeof UserSchema>;

/** A user as the store keeps it. `passwordHash` is null for an invited user who has not registered yet. */
export interface UserRecord extends User {
  passwordHash: string | null;
  disabled: boolean;
  /** TOTP state (issue 7); absent when two-factor sign-in is off. */
  totp?: { secretEnc: string; enabled: boolean; lastStep?: number; recoveryHashes?: string[] } | null;
  /**
   * Access tokens issued before this time (ISO) are refused, though unexpired: set when the account is
   * disabled, so enabling it again does not bring back the tokens it had. Absent: every unexpired token counts.
   */
  tokensValidAfter?: string | null;
}

export const ConversationSchema = z.object({
  id: z.string(),
  workspaceId: z.string(),
  type: z.enum(['direct', 'group']),
  title: z.string().nullable(),
  members: z.array(z.string()),
  createdBy: z.string(),
  createdAt: z.string(),
  updatedAt: z.string(),
  /** Highest message seq assigned so far (0 when empty). */
  lastSeq: z.number().int(),
});
export type Conversation = z.infer<typeof ConversationSchema>;

export const MessageSchema = z.object({
  id: z.string(),
  conversationId: z.string(),
  seq: z.number().int().positive(),
  senderId: z.string(),
  text: z.string(),
  clientId: z.string().nullable(),
  createdAt: z.string(),
  editedAt: z.string().optional(),
  deleted: z.boolean().optional(),
  attachments: z.array(z.string()).optional(),
});
export type Message = z.infer<typeof MessageSchema>;

export const ConversationSummarySchema = ConversationSchema.extend({
  lastMessage: MessageSchema.nullable(),
  unreadCount: z.number().int(),
  /** The caller's read marker (highest seq they have seen). */
  readSeq: z.number().int(),
});
export type ConversationSummary = z.infer<typeof ConversationSummarySchema>;

/**
 * Whether `text` has more than `max` characters, counted as Unicode code points (what JSON Schema's maxLength
 * and the docs mean by characters), not UTF-16 units: an emoji is one character, not two. Counts only when
 * the UTF-16 length leaves it open.
 */
export function longerThan(text: string, max: number): boolean {
  if (text.length <= max) return false;
  if (text.length > 2 * max) return true;
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    // A high surrogate followed by a low one is one character.
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    if (++n > max) return true;
  }
  return false;
}

export function publicUser(u: UserRecord | User): User {
  return { id: u.id, workspaceId: u.workspaceId, email: u.email, name: u.name, role: u.role, createdAt: u.createdAt };
}
