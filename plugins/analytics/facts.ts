/**
 * Analytics facts: one small document per countable thing (a message, an opened conversation, a delivery, a
 * push or email sent), each under an id derived from what it counts, never from when it was processed. So
 * handling an event twice, or replaying the whole stream after a rewind, inserts nothing new and the
 * numbers cannot double; and deleting the facts and rewinding the plugin rebuilds them exactly.
 *
 * Day figures are computed from the facts when asked (report.ts) rather than kept as running counters,
 * because counters cannot be made idempotent without remembering every event anyway, and the first-response
 * time depends on message order, which at-least-once delivery does not guarantee.
 */
import type { DocumentStore } from '../../core/store/port.js';

export const FACTS_COLLECTION = 'analytics_facts';

/** Which side of a support conversation a sender is on: agents and admins answer, customers ask. */
export type Side = 'agent' | 'customer' | 'other';

interface BaseFact {
  workspaceId: string;
  /** UTC day (YYYY-MM-DD) the fact counts towards. */
  day: string;
  /** When it happened (ISO). */
  at: string;
}

export interface MessageFact extends BaseFact {
  kind: 'message';
  conversationId: string;
  seq: number;
  senderId: string;
  /** The sender's side, from their role when the message was first counted. */
  side: Side;
}

export interface ConversationFact extends BaseFact {
  kind: 'conversation';
  conversationId: string;
}

export interface DeliveryFact extends BaseFact {
  kind: 'delivery';
  transport: string;
}

export interface SentFact extends BaseFact {
  kind: 'push' | 'email';
}

export type Fact = MessageFact | ConversationFact | DeliveryFact | SentFact;

/** UTC calendar day of an ISO time. */
export function utcDay(iso: string): string {
  return new Date(iso).toISOString().slice(0, 10);
}

/** The fact id of message `seq` in a conversation; report.ts looks earlier messages up by it. */
export function messageFactId(conversationId: string, seq: number): string {
  return `m:${conversationId}:${seq}`;
}

/**
 * The index behind the report's per-day look-up (`{workspaceId, day}`); without it SQLite reads every fact
 * of every workspace for each day of a report. Idempotent; the plugin calls it at start.
 */
export function ensureFactIndexes(docs: DocumentStore): Promise<void> {
  return docs.ensureIndex(FACTS_COLLECTION, ['workspaceId', 'day']);
}

/** Stores a fact unless one with this id exists; true when it was new. */
export function recordFact(docs: DocumentStore, id: string, fact: Fact): Promise<boolean> {
  return docs.insert(FACTS_COLLECTION, id, fact);
}

/**
 * Counts a push or email that was sent. `key` must identify the send (e.g. event id and device), so a
 * retried send is counted once. Used by the push and email plugins.
 */
export function recordSent(docs: DocumentStore, kind: 'push' | 'email', fields: { workspaceId: string; key: string; at?: string }): Promise<boolean> {
  const at = fields.at ?? new Date().toISOString();
  return recordFact(docs, `${kind === 'push' ? 'p' : 'e'}:${fields.key}`, { kind, workspaceId: fields.workspaceId, day: utcDay(at), at });
}
