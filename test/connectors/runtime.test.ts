/**
 * The webhooks and drive-sync plugins through the real plugin runtime: a message sent through the chat
 * service becomes an event on JetStream, the runtime hands it to the plugins, and the receiver / the Drive
 * stand-in get the result.
 */
import test from 'ava';
import type { UserRecord } from '../../core/domain.js';
import { newId } from '../../core/ids.js';
import { ConnectionService } from '../../connectors/connections.js';
import { generateSecret } from '../../connectors/webhook/signing.js';
import { PluginRuntime } from '../../plugins/runtime/runtime.js';
import { createDriveSyncPlugin } from '../../plugins/storage-sync/index.js';
import { createWebhooksPlugin } from '../../plugins/webhooks/index.js';
import { openTestHub, serversForFile } from '../helpers/hub.js';
import { startReceiver, until } from './receiver.js';
import { startStandIn } from './standins.js';

const servers = serversForFile();

test('a sent message reaches a webhook receiver and a Drive transcript through the plugin runtime', async (t) => {
  const hub = await openTestHub(servers, { webhooksAllowPrivate: true });
  const rcv = await startReceiver();
  const api = await startStandIn();
  const ws = hub.config.defaultWorkspaceId;
  const conns = new ConnectionService(hub);
  rcv.secret = generateSecret();
  const sub = await conns.create(ws, 'webhook', { url: rcv.url, events: ['message.created', 'message.updated'], secret: rcv.secret });
  await conns.create(ws, 'google-drive', {
    clientId: 'cid',
    clientSecret: 'cs',
    folderId: 'f1',
    rootUrl: `${api.url}/`,
    tokenUrl: `${api.url}/token`,
    accessToken: 'tok1',
    refreshToken: 'refresh1',
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });

  const now = new Date().toISOString();
  const users: UserRecord[] = ['Ada', 'Bo'].map((name) => ({ id: newId('usr'), workspaceId: ws, email: `${name}@example.com`.toLowerCase(), name, role: 'agent', createdAt: now, passwordHash: 'x', disabled: false }));
  for (const u of users) await hub.store.createUser(u, () => []);
  const runtime = new PluginRuntime(hub, [createWebhooksPlugin({ scheduleMs: [50] }), createDriveSyncPlugin()]);
  await runtime.start();
  try {
    const { conversation } = await hub.chat.openConversation(users[0]!, { type: 'direct', members: [users[1]!.id] });
    const sent = [];
    for (const text of ['hi', 'there', 'friend']) sent.push((await hub.chat.sendMessage(users[0]!, conversation.id, { text })).message);

    await until(() => rcv.received.length >= 3, 60_000, 'three webhook deliveries');
    t.deepEqual(
      rcv.received.map((r) => (r.json.data as { message: { id: string } }).message.id),
      sent.map((m) => m.id),
      'in send order',
    );
    t.true(rcv.received.every((r) => r.verified));

    await until(() => [...api.files.values()].some((f) => f.content.includes('friend')), 60_000, 'transcript with every message');
    t.is(api.files.size, 1, 'one transcript file for the conversation');
    const deliveries = await hub.store.docs.count('webhook_deliveries', { subscriptionId: sub.id });
    t.is(deliveries, 3);
  } finally {
    await runtime.stop();
    await api.close();
    await rcv.close();
    await hub.close();
  }
});
