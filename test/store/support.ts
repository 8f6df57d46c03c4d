/** Helpers shared by the store tests: fixed clock values, recording outbox builders, a group and a send. */
import type { Conversation, Message } from '../../core/domain.js';
import { newId } from '../../core/ids.js';
import type { OutboxEntry, Store } from '../../core/store/port.js';

const T0 = Date.parse('2030-01-01T00:00:00.000Z');
/** Deterministic, strictly increasing timestamps so ordering tests never depend on the clock. */
export const at = (i: number): string => new Date(T0 + i * 1000).toISOString();

/** An outbox callback that records its value in the payload, so tests can check what was captured. */
export function ob<T>(tag: string) {
  return (v: T): OutboxEntry[] => [
    { eventId: newId('evt'), subject: `test.${tag}`, payload: JSON.stringify(v), headers: { traceparent: '00-abc-def-01', 'Voxa-Event-Type': tag }, createdAt: new Date().toISOString() },
  ];
}

export async function group(s: Store, members: string[], overrides: Partial<Conversation> = {}): Promise<Conversation> {
  const conv: Conversation = {
    id: newId('cnv'),
    workspaceId: 'ws1',
    type: 'group',
    title: 'Group',
    members,
    createdBy: members[0]!,
    createdAt: at(1),
    updatedAt: at(1),
    lastSeq: 0,
    ...overrides,
  };
  const res = await s.createConversation(conv, ob('conversation.created'));
  return res.conversation;
}

export async function send(s: Store, conversationId: string, senderId: string, text: string, opts: { clientId?: string | null; t?: number; attachments?: string[] } = {}) {
  return s.appendMessage(
    {
      id: newId('msg'),
      conversationId,
      senderId,
      text,
      clientId: opts.clientId ?? null,
      createdAt: at(opts.t ?? 10),
      ...(opts.attachments ? { attachments: opts.attachments } : {}),
    },
    ob<Message>('message.created'),
  );
}
