/** The rule for `attachments` on a message, shared by the REST API and the WebSocket edge (via ChatService). */
import type { Conversation } from '../domain.js';
import { fieldError } from '../http/validate.js';
import type { Store } from '../store/port.js';

/** Most attachments one message may carry. */
export const MAX_ATTACHMENTS = 10;

/**
 * Checks a message's attachments: at most MAX_ATTACHMENTS distinct ids, each a file uploaded into this same
 * conversation. The sender is already known to be a member, so this also means they could download each
 * one; a file from another conversation cannot be re-shared by id into this one. `path` names the field in
 * errors (`body.attachments`, `data.attachments`).
 */
export async function checkAttachments(store: Store, conv: Conversation, ids: string[], path: string): Promise<void> {
  if (ids.length > MAX_ATTACHMENTS) throw fieldError(path, `At most ${MAX_ATTACHMENTS} attachments.`);
  if (new Set(ids).size !== ids.length) throw fieldError(path, 'Attachments repeat.');
  const files = await Promise.all(ids.map((id) => store.docs.get<{ conversationId?: string; workspaceId?: string }>('files', id)));
  const bad = ids.filter((_, i) => files[i]?.conversationId !== conv.id || files[i]?.workspaceId !== conv.workspaceId);
  if (bad.length) throw fieldError(path, 'Some attachments are not files of this conversation.', { attachments: bad });
}
