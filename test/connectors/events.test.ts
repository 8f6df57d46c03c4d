/**
 * connection.changed / webhook.changed from a process without the hub (the CLI's tool context): the change and
 * its outbox row commit together; the row is published when the context closes if NATS answers, and otherwise
 * stays in the outbox for the hub's sweeper. Also: what each change publishes, and that token refreshes don't.
 */
import test from 'ava';
import { connect } from 'nats';
import { rmSync } from 'node:fs';
import { ensureStreams, streamNames } from '../../core/bus/nats.js';
import { EnvelopeSchema, type EventEnvelope } from '../../core/events/catalog.js';
import { ConnectionService } from '../../connectors/connections.js';
import { openToolContext } from '../../connectors/context.js';
import { generateSecret } from '../../connectors/webhook/signing.js';
import { freePort } from '../helpers/servers.js';
import { testConfig, serversForFile } from '../helpers/hub.js';

const servers = serversForFile();

/** Every event in the namespace's events stream, oldest first. */
async function streamEvents(ns: string): Promise<EventEnvelope[]> {
  const nc = await connect({ servers: servers.nats.url, maxReconnectAttempts: -1 });
  try {
    const jsm = await nc.jetstreamManager();
    const stream = streamNames(ns).events;
    const info = await jsm.streams.info(stream);
    const out: EventEnvelope[] = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage(stream, { seq });
      out.push(EnvelopeSchema.parse(m.json()) as EventEnvelope);
    }
    return out;
  } finally {
    await nc.close();
  }
}

test('a tool process commits each change with its event and publishes the rows when it closes', async (t) => {
  const config = testConfig(servers);
  const nc = await connect({ servers: servers.nats.url, maxReconnectAttempts: -1 });
  await ensureStreams(await nc.jetstreamManager(), config.natsNamespace);
  await nc.close();
  const ctx = await openToolContext(config);
  const ws = config.defaultWorkspaceId;
  const svc = new ConnectionService(ctx.hub);
  const secret = generateSecret();
  const hook = await svc.create(ws, 'webhook', { url: 'https://example.com/in', events: ['message.created'], secret });
  const drive = await svc.create(ws, 'google-drive', { clientId: 'cid', clientSecret: 'cs', folderId: 'f1', accessToken: 'a', refreshToken: 'r', expiresAt: new Date().toISOString() });
  await svc.update(drive.id, { folderId: 'f2' }, ws);
  await svc.setStatus(drive.id, 'disabled', 'disabled by a user', ws);
  await svc.setStatus(drive.id, 'active', null, ws);
  // A refreshed OAuth2 token is routine: saved, but not announced.
  await svc.contextFor(drive.id).saveSecrets({ accessToken: 'b' });
  t.is((await svc.resolve(drive.id)).config.accessToken, 'b');
  await svc.contextFor(drive.id).markBroken('grant revoked: invalid_grant');
  await svc.remove(hook.id, ws);
  t.is(await ctx.hub.store.outboxCount(), 7, 'one committed row per change, none for the token refresh');
  await ctx.close();

  const events = await streamEvents(config.natsNamespace);
  t.deepEqual(
    events.map((e) => [e.type, (e.data as { action: string }).action]),
    [
      ['webhook.changed', 'added'],
      ['connection.changed', 'added'],
      ['connection.changed', 'updated'],
      ['connection.changed', 'disabled'],
      ['connection.changed', 'enabled'],
      ['connection.changed', 'broken'],
      ['webhook.changed', 'removed'],
    ],
  );
  t.true(events.every((e) => e.workspaceId === ws && e.actor.type === 'system' && e.actor.id === 'voxa-cli'));
  t.deepEqual(events[1]!.data, { connectionId: drive.id, connector: 'google-drive', action: 'added' });
  t.false(JSON.stringify(events).includes(secret), 'no secret in any event');

  // Published and acked, so the rows are gone.
  const again = await openToolContext(config);
  t.is(await again.hub.store.outboxCount(), 0);
  await again.close();
  rmSync(config.dataDir, { recursive: true, force: true });
});

test('without a reachable NATS the rows stay in the outbox for the hub sweeper', async (t) => {
  const config = testConfig(servers, { natsUrl: `nats://127.0.0.1:${await freePort()}` });
  const ctx = await openToolContext(config);
  const svc = new ConnectionService(ctx.hub);
  await svc.create(config.defaultWorkspaceId, 'webhook', { url: 'https://example.com/in', events: ['message.created'], secret: generateSecret() });
  await ctx.close();
  const again = await openToolContext(config);
  const rows = await again.hub.store.outboxPending(10, new Date(Date.now() + 60_000).toISOString());
  t.is(rows.length, 1);
  t.is(rows[0]!.subject, `${config.natsNamespace}.admin.${config.defaultWorkspaceId}.webhook.changed`);
  await again.close();
  rmSync(config.dataDir, { recursive: true, force: true });
});
