/**
 * Which events the audit log records and how each is summarised. Summaries name ids, roles, actions and
 * addresses, never message text, tokens or secrets.
 */
import type { AnyEvent, EventType } from '../../core/events/catalog.js';
import type { AuditInput } from './chain.js';

/** Every event type the audit plugin subscribes to. */
export const AUDITED_EVENTS: EventType[] = [
  'user.registered',
  'user.login',
  'user.login_failed',
  'user.logout',
  'user.token_reuse',
  'user.role_changed',
  'user.updated',
  'conversation.updated',
  'message.deleted',
  'connection.changed',
  'webhook.changed',
  'data.exported',
  'workspace.updated',
];

/** Account changes worth auditing; a name change is not. */
const SENSITIVE_USER_CHANGES = new Set(['role', 'disabled', 'password', 'passwordHash', 'totp', 'email']);

/** The audit entry for an event, or null when this particular event is not security-relevant. */
export function describeEvent(event: AnyEvent): AuditInput | null {
  const base = {
    eventId: event.id,
    eventTime: event.time,
    type: event.type,
    actor: event.actor,
    workspaceId: event.workspaceId,
  };
  switch (event.type) {
    case 'user.registered':
      return { ...base, subject: event.data.user.id, summary: `account ${event.data.user.id} registered with role ${event.data.user.role}`, details: { role: event.data.user.role } };
    case 'user.login':
      return { ...base, subject: event.userId, summary: `signed in (${event.data.method})`, details: { method: event.data.method, ...(event.data.ip ? { ip: event.data.ip } : {}) } };
    case 'user.login_failed':
      return { ...base, subject: event.userId, summary: `failed sign-in: ${event.data.reason}`, details: { reason: event.data.reason, ...(event.data.ip ? { ip: event.data.ip } : {}) } };
    case 'user.logout':
      return { ...base, subject: event.userId, summary: 'signed out' };
    case 'user.token_reuse':
      return { ...base, subject: event.userId, summary: `refresh token reused; token family ${event.data.familyId} revoked`, details: { familyId: event.data.familyId } };
    case 'user.role_changed':
      return { ...base, subject: event.data.user.id, summary: `role changed from ${event.data.from} to ${event.data.to}`, details: { from: event.data.from, to: event.data.to } };
    case 'user.updated': {
      const changes = event.data.changes.filter((c) => SENSITIVE_USER_CHANGES.has(c));
      if (changes.length === 0) return null;
      return { ...base, subject: event.data.user.id, summary: `account changed: ${changes.join(', ')}`, details: { changes } };
    }
    case 'conversation.updated': {
      const added = event.data.added ?? [];
      const removed = event.data.removed ?? [];
      if (added.length === 0 && removed.length === 0) return null; // a title change is not security-relevant
      const parts = [added.length ? `added ${added.join(', ')}` : '', removed.length ? `removed ${removed.join(', ')}` : ''].filter(Boolean);
      return { ...base, subject: event.data.conversation.id, summary: `members ${parts.join('; ')}`, details: { added, removed } };
    }
    case 'message.deleted':
      return {
        ...base,
        subject: event.data.message.conversationId,
        summary: `message ${event.data.message.id} (seq ${event.data.message.seq}, by ${event.data.message.senderId}) deleted`,
        details: { messageId: event.data.message.id, seq: event.data.message.seq, senderId: event.data.message.senderId },
      };
    case 'connection.changed':
      return { ...base, subject: event.data.connectionId, summary: `connection ${event.data.connectionId} (${event.data.connector}) ${event.data.action}`, details: { connector: event.data.connector, action: event.data.action } };
    case 'webhook.changed':
      return { ...base, subject: event.data.webhookId, summary: `webhook ${event.data.webhookId} ${event.data.action}`, details: { action: event.data.action } };
    case 'data.exported':
      return { ...base, summary: `data exported: ${event.data.what}`, details: { what: event.data.what } };
    case 'workspace.updated': {
      const keys = Object.keys(event.data.settings).sort();
      // Setting values are small flags and enums; recording them shows what the workspace was switched to.
      return { ...base, subject: event.workspaceId, summary: `workspace settings changed: ${keys.join(', ')}`, details: { settings: event.data.settings } };
    }
    default:
      return null;
  }
}
