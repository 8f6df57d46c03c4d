/**
 * The unread-message digest: what a user has not read, rendered as plain text and as HTML. Everything that
 * came from users (names, titles, message text) is HTML-escaped in the HTML part; the text part is plain.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { ConversationSummary, Message, UserRecord } from '../../core/domain.js';
import type { ConversationPosition, Store } from '../../core/store/port.js';
import { CONVERSATION_ID_PLACEHOLDER } from '../../core/config.js';
import { mutedConversations } from '../push/mutes.js';

/** Conversations shown in one digest; the rest are summed up in one line. */
export const MAX_CONVERSATIONS = 10;
/** Latest unread messages shown per conversation. */
export const MESSAGES_PER_CONVERSATION = 3;
/** Characters of a message shown in the digest. */
export const PREVIEW_CHARS = 280;

export interface DigestConversation {
  id: string;
  title: string;
  unreadCount: number;
  /** Where the user's chat app opens this conversation; null when no app URL is configured. */
  link: string | null;
  latest: Array<{ sender: string; text: string; createdAt: string }>;
}

export interface Digest {
  subject: string;
  text: string;
  html: string;
  unreadTotal: number;
  conversations: DigestConversation[];
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Cuts text to `max` characters at most (by code point, so an emoji is never split), marking the cut. */
export function preview(text: string, max = PREVIEW_CHARS): string {
  const chars = [...text.replace(/\s+/g, ' ').trim()];
  return chars.length <= max ? chars.join('') : `${chars.slice(0, max - 1).join('')}…`;
}

/** The signed token in an unsubscribe link: HMAC of the user id under a key derived from the hub's JWT secret. */
export function unsubscribeToken(secret: string, userId: string): string {
  return createHmac('sha256', secret).update(`voxa-email-unsubscribe:${userId}`).digest('base64url');
}

export function verifyUnsubscribeToken(secret: string, userId: string, token: string): boolean {
  const want = Buffer.from(unsubscribeToken(secret, userId));
  const got = Buffer.from(token);
  return want.length === got.length && timingSafeEqual(want, got);
}

/**
 * The link to a conversation in the user's chat app: the configured template (appConversationUrl) with the id
 * URL-encoded in place of {conversationId}. Null without a template: the hub serves no page for a conversation,
 * so a link to the hub would only be a dead one.
 */
export function conversationLink(template: string | undefined, conversationId: string): string | null {
  return template ? template.replaceAll(CONVERSATION_ID_PLACEHOLDER, encodeURIComponent(conversationId)) : null;
}

export function unsubscribeUrl(baseUrl: string, secret: string, userId: string): string {
  return `${baseUrl}/v1/notifications/unsubscribe?u=${encodeURIComponent(userId)}&t=${unsubscribeToken(secret, userId)}`;
}

/** Every conversation of the user with something unread, most recently active first, read a page at a time. */
export async function unreadConversations(store: Store, userId: string): Promise<ConversationSummary[]> {
  const unread: ConversationSummary[] = [];
  const page = 200;
  for (let after: ConversationPosition | undefined; ; ) {
    const list = await store.listConversations(userId, { limit: page, ...(after ? { after } : {}) });
    unread.push(...list.filter((c) => c.unreadCount > 0));
    if (list.length < page) return unread;
    const last = list.at(-1)!;
    after = { updatedAt: last.updatedAt, id: last.id };
  }
}

export interface DigestLinks {
  /** The signed one-click unsubscribe link (unsubscribeUrl). */
  unsubscribe: string;
  /** The appConversationUrl template; unset, the digest links no conversation. */
  conversationTemplate?: string | undefined;
}

/**
 * The digest for `user`, or null when they have nothing unread (outside muted conversations): then the
 * digest is dropped. Messages by the user themselves never count as unread.
 */
export async function buildDigest(store: Store, user: UserRecord, links: DigestLinks): Promise<Digest | null> {
  const muted = await mutedConversations(store.docs, user.id);
  const unread = (await unreadConversations(store, user.id)).filter((c) => !muted.has(c.id));
  if (unread.length === 0) return null;

  const names = new Map<string, string>();
  const nameOf = async (id: string): Promise<string> => {
    if (!names.has(id)) names.set(id, (await store.getUser(id))?.name ?? 'Someone');
    return names.get(id)!;
  };

  const conversations: DigestConversation[] = [];
  for (const c of unread.slice(0, MAX_CONVERSATIONS)) {
    const { messages } = await store.listMessages(c.id, { before: c.lastSeq + 1, limit: Math.min(c.unreadCount, MESSAGES_PER_CONVERSATION) + 5 });
    const fresh = messages.filter((m: Message) => m.seq > c.readSeq && m.senderId !== user.id && !m.deleted).slice(-MESSAGES_PER_CONVERSATION);
    const others = c.members.filter((m) => m !== user.id);
    const title = c.type === 'group' ? (c.title ?? 'Group') : await nameOf(others[0] ?? user.id);
    conversations.push({
      id: c.id,
      title,
      unreadCount: c.unreadCount,
      link: conversationLink(links.conversationTemplate, c.id),
      // A message that is only an attachment says so, as its push does.
      latest: await Promise.all(fresh.map(async (m) => ({ sender: await nameOf(m.senderId), text: preview(m.text) || 'Attachment', createdAt: m.createdAt }))),
    });
  }
  const unreadTotal = unread.reduce((n, c) => n + c.unreadCount, 0);
  const more = unread.length - conversations.length;
  const subject = `${unreadTotal} unread message${unreadTotal === 1 ? '' : 's'} in ${unread.length} conversation${unread.length === 1 ? '' : 's'}`;

  const text = [
    `Hi ${user.name},`,
    '',
    `you have ${subject}.`,
    '',
    ...conversations.flatMap((c) => [
      `${c.title} (${c.unreadCount} unread)`,
      ...c.latest.map((m) => `  ${m.sender}: ${m.text}`),
      ...(c.link ? [`  Open: ${c.link}`] : []),
      '',
    ]),
    ...(more > 0 ? [`…and ${more} more conversation${more === 1 ? '' : 's'}.`, ''] : []),
    `Stop these emails: ${links.unsubscribe}`,
  ].join('\n');

  const e = escapeHtml;
  const html = [
    '<!doctype html><html><body style="font-family:sans-serif">',
    `<p>Hi ${e(user.name)},</p>`,
    `<p>you have ${e(subject)}.</p>`,
    ...conversations.map(
      (c) =>
        `<h3>${c.link ? `<a href="${e(c.link)}">${e(c.title)}</a>` : e(c.title)} <small>(${c.unreadCount} unread)</small></h3><ul>` +
        c.latest.map((m) => `<li><b>${e(m.sender)}</b>: ${e(m.text)}</li>`).join('') +
        '</ul>',
    ),
    ...(more > 0 ? [`<p>…and ${more} more conversation${more === 1 ? '' : 's'}.</p>`] : []),
    `<p style="font-size:small"><a href="${e(links.unsubscribe)}">Stop these emails</a></p>`,
    '</body></html>',
  ].join('\n');

  return { subject, text, html, unreadTotal, conversations };
}
