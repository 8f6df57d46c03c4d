/**
 * Per-user conversation mutes: a muted conversation never causes a push and is left out of email digests.
 * One document per (user, conversation) so muting is idempotent and a user's list is one query.
 */
import type { DocumentStore } from '../../core/store/port.js';

export const MUTES_COLLECTION = 'notification_mutes';

interface MuteDoc {
  userId: string;
  conversationId: string;
  at: string;
}

const muteId = (userId: string, conversationId: string): string => `${userId}:${conversationId}`;

export async function isMuted(docs: DocumentStore, userId: string, conversationId: string): Promise<boolean> {
  return (await docs.get(MUTES_COLLECTION, muteId(userId, conversationId))) !== null;
}

export async function setMuted(docs: DocumentStore, userId: string, conversationId: string, muted: boolean): Promise<void> {
  if (muted) await docs.insert<MuteDoc>(MUTES_COLLECTION, muteId(userId, conversationId), { userId, conversationId, at: new Date().toISOString() });
  else await docs.delete(MUTES_COLLECTION, muteId(userId, conversationId));
}

/** Ids of the conversations the user muted. */
export async function mutedConversations(docs: DocumentStore, userId: string): Promise<Set<string>> {
  const rows = await docs.find<MuteDoc>(MUTES_COLLECTION, { userId });
  return new Set(rows.map((r) => r.conversationId));
}
