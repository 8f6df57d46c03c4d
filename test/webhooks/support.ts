/** Shared by the webhook tests: events to feed a WebhookService directly. */
import { createEvent, type AnyEvent } from '../../core/events/catalog.js';
import type { Hub } from '../../core/hub.js';

let n = 0;

/** A fresh `message.created` in the default workspace, with the next seq of this test file. */
export function event(hub: Hub): AnyEvent {
  const i = ++n;
  return createEvent('message.created', {
    workspaceId: hub.config.defaultWorkspaceId,
    conversationId: 'cnv_1',
    actor: { type: 'user', id: 'usr_1' },
    data: { message: { id: `msg_${i}`, conversationId: 'cnv_1', seq: i, senderId: 'usr_1', text: `hi ${i}`, clientId: null, createdAt: new Date().toISOString() } },
  }) as AnyEvent;
}
