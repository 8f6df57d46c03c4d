/**
 * Conversations and messages: the rules (membership, workspace boundaries, idempotent sends, author-only
 * edits) shared by the REST API and the WebSocket edge, so a send over a socket means exactly what
 * `POST /v1/conversations/:id/messages` means.
 */
import { longerThan, type Conversation, type ConversationSummary, type Message, type UserRecord } from '../domain.js';
import { VoxaError } from '../errors.js';
import { createEvent, type EventEnvelope } from '../events/catalog.js';
import { newId } from '../ids.js';
import type { ConversationPosition, OutboxEntry } from '../store/port.js';
import type { HubCore } from '../hub.js';
import { recordOutbox, toOutbox, type RecordedOutbox } from '../events/outbox-entry.js';
import { checkAttachments } from '../files/attachments.js';
import { fieldError } from '../http/validate.js';

export type OpenConversationInput =
  | { type: 'direct'; members: string[] }
  | { type: 'group'; title: string; members: string[] };

export interface SendInput {
  text: string;
  clientId?: string | null;
  attachments?: string[];
}

/**
 * The object a request's fields came in, which prefixes the paths of VALIDATION_FAILED so they match the
 * transport's schema errors: `body` for REST, `data` for a WebSocket frame.
 */
export type InputRoot = 'body' | 'data';

export class ChatService {
  constructor(private readonly hub: HubCore) {}

  /** Commits nothing itself: publishes what a store write put in the outbox, waiting at most publishAckWaitMs. */
  async publish(entries: OutboxEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const wait = this.hub.config.publishAckWaitMs;
    const sent = this.hub.outbox.dispatch(entries).catch(() => undefined); // the sweeper retries failures
    if (wait <= 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([sent, new Promise<void>((r) => (timer = setTimeout(r, wait)))]);
    clearTimeout(timer);
  }

  outboxOf(events: EventEnvelope[]): OutboxEntry[] {
    return events.map((e) => toOutbox(e, this.hub.bus.namespace));
  }

  /** The outbox builder for a write whose events `build` makes from the stored value; publish its `entries` after. */
  eventsFor<T>(build: (value: T) => EventEnvelope[]): RecordedOutbox<T> {
    return recordOutbox((value: T) => this.outboxOf(build(value)));
  }

  async getConversationFor(actor: UserRecord, conversationId: string): Promise<Conversation> {
    const conv = await this.hub.store.getConversation(conversationId);
    // A conversation in another workspace does not exist as far as the caller can tell.
    if (!conv || conv.workspaceId !== actor.workspaceId) throw new VoxaError('CONVERSATION_NOT_FOUND');
    if (!conv.members.includes(actor.id)) throw new VoxaError('NOT_A_MEMBER');
    return conv;
  }

  /**
   * getConversationFor for the send path: the same checks, on a conversation that may come from the hub's
   * short-lived read cache (core/auth/read-cache.ts). Only workspace and membership are read from it; its
   * lastSeq may be behind, so callers that need the current conversation use getConversationFor.
   */
  private async conversationForSend(actor: UserRecord, conversationId: string): Promise<Conversation> {
    const cache = this.hub.caches?.conversations;
    const hit = cache?.peek(conversationId);
    if (hit && hit.workspaceId === actor.workspaceId && hit.members.includes(actor.id)) return hit;
    const epoch = cache?.epoch ?? 0;
    const conv = await this.getConversationFor(actor, conversationId);
    cache?.put(conversationId, conv, epoch);
    return conv;
  }

  /** `where`: see InputRoot; the edge (no argument) names fields under `data`. */
  async openConversation(actor: UserRecord, input: OpenConversationInput, where: InputRoot = 'data'): Promise<{ conversation: Conversation; created: boolean }> {
    const others = [...new Set(input.members.filter((m) => m !== actor.id))];
    if (input.type === 'direct' && others.length !== 1) throw fieldError(`${where}.members`, 'A direct conversation has exactly one other member.');
    if (input.type === 'group' && others.length < 1) throw fieldError(`${where}.members`, 'A group needs at least one other member.');
    const users = await Promise.all(others.map((id) => this.hub.store.getUser(id)));
    const missing = others.filter((_, i) => {
      const u = users[i];
      return !u || u.workspaceId !== actor.workspaceId || u.disabled || u.passwordHash === null;
    });
    if (missing.length) throw new VoxaError('USER_NOT_FOUND', 'Some members do not exist in this workspace.', { members: missing });
    if (actor.role === 'customer') {
      const ws = await this.hub.store.getWorkspace(actor.workspaceId);
      if (ws?.settings.customersTalkToAgentsOnly && users.some((u) => u!.role === 'customer')) {
        throw new VoxaError('FORBIDDEN', 'Customers in this workspace may only talk with agents.');
      }
    }
    const now = new Date().toISOString();
    const conv: Conversation & { directKey?: string } = {
      id: newId('cnv'),
      workspaceId: actor.workspaceId,
      type: input.type,
      title: input.type === 'group' ? input.title : null,
      members: [actor.id, ...others],
      createdBy: actor.id,
      createdAt: now,
      updatedAt: now,
      lastSeq: 0,
      ...(input.type === 'direct' ? { directKey: [actor.id, others[0]!].sort().join(':') } : {}),
    };
    const events = this.eventsFor((c: Conversation) => [
      createEvent('conversation.created', {
        workspaceId: c.workspaceId,
        conversationId: c.id,
        actor: { type: 'user', id: actor.id },
        data: { conversation: c },
      }),
    ]);
    const result = await this.hub.store.createConversation(conv, events);
    if (result.created) await this.publish(events.entries);
    return result;
  }

  async updateGroup(actor: UserRecord, conversationId: string, change: { title?: string; add?: string[]; remove?: string[] }): Promise<Conversation> {
    const conv = await this.getConversationFor(actor, conversationId);
    if (conv.type !== 'group') throw new VoxaError('CONFLICT', 'A direct conversation cannot be renamed and its members cannot change.');
    const removingOthers = (change.remove ?? []).some((id) => id !== actor.id);
    if (removingOthers && conv.createdBy !== actor.id && actor.role !== 'admin') {
      throw new VoxaError('FORBIDDEN', 'Only the group creator or an admin may remove other members.');
    }
    const add = [...new Set(change.add ?? [])].filter((id) => !conv.members.includes(id));
    const users = await Promise.all(add.map((id) => this.hub.store.getUser(id)));
    const missing = add.filter((_, i) => !users[i] || users[i]!.workspaceId !== actor.workspaceId || users[i]!.disabled || users[i]!.passwordHash === null);
    if (missing.length) throw new VoxaError('USER_NOT_FOUND', 'Some members do not exist in this workspace.', { members: missing });
    // The same rule as when opening: a customer restricted to agents cannot bring another customer in.
    if (actor.role === 'customer' && users.some((u) => u!.role === 'customer')) {
      const ws = await this.hub.store.getWorkspace(actor.workspaceId);
      if (ws?.settings.customersTalkToAgentsOnly) throw new VoxaError('FORBIDDEN', 'Customers in this workspace may only talk with agents.');
    }
    const remove = (change.remove ?? []).filter((id) => conv.members.includes(id));
    const events = this.eventsFor((c: Conversation) => [
      createEvent('conversation.updated', {
        workspaceId: c.workspaceId,
        conversationId: c.id,
        actor: { type: 'user', id: actor.id },
        data: { conversation: c, added: add, removed: remove },
      }),
    ]);
    const updated = await this.hub.store.updateMembers(conversationId, { add, remove, ...(change.title ? { title: change.title } : {}) }, events);
    if (!updated) throw new VoxaError('CONVERSATION_NOT_FOUND');
    await this.publish(events.entries);
    return updated;
  }

  listConversations(actor: UserRecord, opts: { limit?: number; after?: ConversationPosition } = {}): Promise<ConversationSummary[]> {
    return this.hub.store.listConversations(actor.id, opts);
  }

  /** `where`: see InputRoot; the edge (no argument) names fields under `data`. */
  async sendMessage(actor: UserRecord, conversationId: string, input: SendInput, where: InputRoot = 'data'): Promise<{ message: Message; created: boolean }> {
    this.checkText(input.text, where, !!input.attachments?.length);
    const conv = await this.conversationForSend(actor, conversationId);
    if (input.attachments?.length) await checkAttachments(this.hub.store, conv, input.attachments, `${where}.attachments`);
    // Leased: a fast sender passes from this process's share of the allowance without a Redis round trip.
    const limited = this.hub.rateLimiter.take(`send:${actor.id}`, this.hub.config.sendRateLimitPerMinute);
    if (limited) await limited;
    const events = this.eventsFor((m: Message) => [
      createEvent('message.created', {
        workspaceId: conv.workspaceId,
        conversationId,
        actor: { type: 'user', id: actor.id },
        data: { message: m },
      }),
    ]);
    const result = await this.hub.store.appendMessage(
      {
        id: newId('msg'),
        conversationId,
        senderId: actor.id,
        text: input.text,
        clientId: input.clientId ?? null,
        createdAt: new Date().toISOString(),
        ...(input.attachments?.length ? { attachments: input.attachments } : {}),
      },
      events,
    );
    if (result.created) await this.publish(events.entries);
    return result;
  }

  async history(actor: UserRecord, conversationId: string, q: { before?: number; after?: number; limit: number }) {
    await this.getConversationFor(actor, conversationId);
    return this.hub.store.listMessages(conversationId, q);
  }

  /** A message's text: not blank (unless attachments carry the message), not over the length limit. */
  private checkText(text: string, where: InputRoot, hasAttachments = false): void {
    if (text.trim().length === 0 && !hasAttachments) throw fieldError(`${where}.text`, 'A message needs text.');
    const max = this.hub.config.maxMessageLength;
    if (longerThan(text, max)) throw fieldError(`${where}.text`, `Text is longer than ${max} characters.`, { maxLength: max });
  }

  private async ownMessage(actor: UserRecord, conversationId: string, messageId: string, allowAdmin: boolean): Promise<Message> {
    await this.getConversationFor(actor, conversationId);
    const msg = await this.hub.store.getMessage(conversationId, messageId);
    if (!msg) throw new VoxaError('MESSAGE_NOT_FOUND');
    if (msg.senderId !== actor.id && !(allowAdmin && actor.role === 'admin')) {
      throw new VoxaError('FORBIDDEN', allowAdmin ? 'Only the author or an admin may delete this message.' : 'Only the author may edit this message.');
    }
    return msg;
  }

  /** `where`: see InputRoot. */
  async editMessage(actor: UserRecord, conversationId: string, messageId: string, text: string, where: InputRoot = 'data'): Promise<Message> {
    this.checkText(text, where);
    const msg = await this.ownMessage(actor, conversationId, messageId, false);
    if (msg.deleted) throw new VoxaError('MESSAGE_DELETED');
    const events = this.eventsFor((m: Message) => [
      createEvent('message.updated', {
        // ownMessage found the conversation in the actor's workspace.
        workspaceId: actor.workspaceId,
        conversationId,
        actor: { type: 'user', id: actor.id },
        data: { message: m },
      }),
    ]);
    const updated = await this.hub.store.editMessage(conversationId, messageId, text, new Date().toISOString(), events);
    if (!updated) throw new VoxaError('MESSAGE_NOT_FOUND');
    if (updated.deleted) throw new VoxaError('MESSAGE_DELETED');
    await this.publish(events.entries);
    return updated;
  }

  async deleteMessage(actor: UserRecord, conversationId: string, messageId: string): Promise<Message> {
    const msg = await this.ownMessage(actor, conversationId, messageId, true);
    if (msg.deleted) return msg;
    const events = this.eventsFor((m: Message) => [
      createEvent('message.deleted', {
        workspaceId: actor.workspaceId,
        conversationId,
        actor: { type: 'user', id: actor.id },
        data: { message: m },
      }),
    ]);
    const deleted = await this.hub.store.deleteMessage(conversationId, messageId, new Date().toISOString(), events);
    if (!deleted) throw new VoxaError('MESSAGE_NOT_FOUND');
    await this.publish(events.entries);
    return deleted;
  }

  /** Moves the caller's read marker (never past the last message, never back). */
  async markRead(actor: UserRecord, conversationId: string, seq: number): Promise<{ seq: number; changed: boolean }> {
    const conv = await this.getConversationFor(actor, conversationId);
    const target = Math.min(seq, conv.lastSeq);
    const events = this.eventsFor((s: number) => [
      createEvent('message.seen', {
        workspaceId: conv.workspaceId,
        conversationId,
        actor: { type: 'user', id: actor.id },
        data: { conversationId, userId: actor.id, seq: s },
      }),
    ]);
    const res = await this.hub.store.setReadMarker(conversationId, actor.id, target, events);
    if (res.changed) await this.publish(events.entries);
    return res;
  }

  /**
   * A recipient device got messages up to seq. Receipts are not stored: the event is published directly
   * (deduplicated by a deterministic id), and the sender's edge turns it into message-status-update.
   */
  async markDelivered(actor: UserRecord, conversation: Conversation, seq: number, transport?: 'socketio' | 'ws'): Promise<void> {
    const ev = createEvent('message.delivered', {
      workspaceId: conversation.workspaceId,
      conversationId: conversation.id,
      actor: { type: 'user', id: actor.id },
      // transport: which edge transport delivered (analytics counts deliveries by it).
      data: { conversationId: conversation.id, userId: actor.id, seq, ...(transport ? { transport } : {}) },
    });
    ev.id = `evt_dlv_${conversation.id}_${actor.id}_${seq}`;
    await this.hub.outbox.dispatch([toOutbox(ev, this.hub.bus.namespace)], { stored: false }).catch(() => undefined);
  }
}
