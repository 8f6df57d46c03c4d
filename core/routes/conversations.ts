/**
 * Conversations and messages over REST. Every rule lives in ChatService (shared with the WebSocket edge);
 * these handlers only validate, call it and shape the response.
 */
import type { Hub } from '../hub.js';
import type { ApiRouter } from '../http/api-router.js';
import { metrics } from '../telemetry/metrics.js';
import {
  ConversationParams,
  ConversationResponse,
  ConversationsQuery,
  ConversationsResponse,
  CreateConversationBody,
  HistoryQuery,
  MessageParams,
  MessageResponse,
  MessagesResponse,
  ReadBody,
  ReadResponse,
  UpdateConversationBody,
  conversationCursor,
  conversationOut,
  editMessageBody,
  messageOut,
  sendMessageBody,
} from './schemas.js';

export function conversationRoutes(api: ApiRouter, hub: Hub): void {
  const chat = hub.chat;
  const SendMessageBody = sendMessageBody(hub.config.maxMessageLength);
  const EditMessageBody = editMessageBody(hub.config.maxMessageLength);

  api.add({
    method: 'post',
    path: '/v1/conversations',
    tag: 'conversations',
    summary: 'Open a direct conversation (returned as is when the pair already has one) or a group.',
    auth: true,
    body: CreateConversationBody,
    responses: {
      201: { description: 'Created.', schema: ConversationResponse },
      200: { description: 'The existing direct conversation between the two users.', schema: ConversationResponse },
    },
    errors: ['USER_NOT_FOUND', 'FORBIDDEN'],
    async handler(ctx, { body }) {
      const { conversation, created } = await chat.openConversation(ctx.state.user!, body, 'body');
      ctx.status = created ? 201 : 200;
      ctx.body = { conversation: conversationOut(conversation) };
    },
  });

  api.add({
    method: 'get',
    path: '/v1/conversations',
    tag: 'conversations',
    summary: "The caller's conversations, most recently active first, with last message and unread count.",
    auth: true,
    query: ConversationsQuery,
    responses: { 200: { description: 'Conversation summaries.', schema: ConversationsResponse } },
    async handler(ctx, { query }) {
      // One more than asked says whether another page follows.
      const list = await chat.listConversations(ctx.state.user!, { limit: query.limit + 1, ...(query.cursor ? { after: query.cursor } : {}) });
      const page = list.slice(0, query.limit);
      const hasMore = list.length > query.limit;
      ctx.body = {
        conversations: page.map((c) => ({
          ...conversationOut(c),
          lastMessage: c.lastMessage ? messageOut(c.lastMessage) : null,
          unreadCount: c.unreadCount,
          readSeq: c.readSeq,
        })),
        hasMore,
        nextCursor: hasMore ? conversationCursor(page.at(-1)!) : null,
      };
    },
  });

  api.add({
    method: 'get',
    path: '/v1/conversations/:id',
    tag: 'conversations',
    summary: 'One conversation the caller is a member of.',
    auth: true,
    params: ConversationParams,
    responses: { 200: { description: 'The conversation.', schema: ConversationResponse } },
    errors: ['CONVERSATION_NOT_FOUND', 'NOT_A_MEMBER'],
    async handler(ctx, { params }) {
      ctx.body = { conversation: conversationOut(await chat.getConversationFor(ctx.state.user!, params.id)) };
    },
  });

  api.add({
    method: 'patch',
    path: '/v1/conversations/:id',
    tag: 'conversations',
    summary: 'Rename a group or add/remove members (removing others: the creator or an admin only).',
    auth: true,
    params: ConversationParams,
    body: UpdateConversationBody,
    responses: { 200: { description: 'The updated conversation.', schema: ConversationResponse } },
    errors: ['CONVERSATION_NOT_FOUND', 'NOT_A_MEMBER', 'FORBIDDEN', 'CONFLICT', 'USER_NOT_FOUND'],
    async handler(ctx, { params, body }) {
      const conv = await chat.updateGroup(ctx.state.user!, params.id, {
        ...(body.title !== undefined ? { title: body.title } : {}),
        ...(body.addMembers ? { add: body.addMembers } : {}),
        ...(body.removeMembers ? { remove: body.removeMembers } : {}),
      });
      ctx.body = { conversation: conversationOut(conv) };
    },
  });

  api.add({
    method: 'post',
    path: '/v1/conversations/:id/messages',
    tag: 'messages',
    summary: 'Send a message. 201 for a new message; 200 with the same message when clientId was already used.',
    auth: true,
    params: ConversationParams,
    body: SendMessageBody,
    responses: {
      201: { description: 'Stored (and published) with its seq.', schema: MessageResponse },
      200: { description: 'Idempotent repeat: the message first stored with this clientId.', schema: MessageResponse },
    },
    errors: ['CONVERSATION_NOT_FOUND', 'NOT_A_MEMBER', 'RATE_LIMITED'],
    async handler(ctx, { params, body }) {
      const { message, created } = await chat.sendMessage(ctx.state.user!, params.id, { text: body.text, clientId: body.clientId ?? null, ...(body.attachments ? { attachments: body.attachments } : {}) }, 'body');
      if (created) metrics.messagesSent.inc({ transport: 'rest' });
      ctx.status = created ? 201 : 200;
      ctx.body = { message: messageOut(message) };
    },
  });

  api.add({
    method: 'get',
    path: '/v1/conversations/:id/messages',
    tag: 'messages',
    summary: 'History in ascending seq: the newest `limit` (below `before` if given), or the oldest above `after`.',
    auth: true,
    params: ConversationParams,
    query: HistoryQuery,
    responses: { 200: { description: 'Messages and whether more exist in the paging direction.', schema: MessagesResponse } },
    errors: ['CONVERSATION_NOT_FOUND', 'NOT_A_MEMBER'],
    async handler(ctx, { params, query }) {
      const page = await chat.history(ctx.state.user!, params.id, {
        limit: query.limit,
        ...(query.before !== undefined ? { before: query.before } : {}),
        ...(query.after !== undefined ? { after: query.after } : {}),
      });
      ctx.body = { messages: page.messages.map(messageOut), hasMore: page.hasMore };
    },
  });

  api.add({
    method: 'patch',
    path: '/v1/conversations/:id/messages/:messageId',
    tag: 'messages',
    summary: 'Edit the text of your own message.',
    auth: true,
    params: MessageParams,
    body: EditMessageBody,
    responses: { 200: { description: 'The edited message.', schema: MessageResponse } },
    errors: ['CONVERSATION_NOT_FOUND', 'NOT_A_MEMBER', 'MESSAGE_NOT_FOUND', 'FORBIDDEN', 'MESSAGE_DELETED'],
    async handler(ctx, { params, body }) {
      ctx.body = { message: messageOut(await chat.editMessage(ctx.state.user!, params.id, params.messageId, body.text, 'body')) };
    },
  });

  api.add({
    method: 'delete',
    path: '/v1/conversations/:id/messages/:messageId',
    tag: 'messages',
    summary: 'Delete your message (admins: any message). It stays as a tombstone without text; deleting again is a no-op.',
    auth: true,
    params: MessageParams,
    responses: { 200: { description: 'The tombstone.', schema: MessageResponse } },
    errors: ['CONVERSATION_NOT_FOUND', 'NOT_A_MEMBER', 'MESSAGE_NOT_FOUND', 'FORBIDDEN'],
    async handler(ctx, { params }) {
      ctx.body = { message: messageOut(await chat.deleteMessage(ctx.state.user!, params.id, params.messageId)) };
    },
  });

  api.add({
    method: 'post',
    path: '/v1/conversations/:id/read',
    tag: 'messages',
    summary: 'Move your read marker forward to seq (capped at the last message; never moves back).',
    auth: true,
    params: ConversationParams,
    body: ReadBody,
    responses: { 200: { description: 'Your read marker after the call.', schema: ReadResponse } },
    errors: ['CONVERSATION_NOT_FOUND', 'NOT_A_MEMBER'],
    async handler(ctx, { params, body }) {
      const res = await chat.markRead(ctx.state.user!, params.id, body.seq);
      ctx.body = { seq: res.seq };
    },
  });
}
