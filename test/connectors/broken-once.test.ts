/**
 * A revoked grant makes one `broken` transition per connection, however many of its jobs hit it at once: one
 * `connection.changed … broken` event (and so one audit entry), not one per job or per refresh attempt.
 */
import test from 'ava';
import { newId } from '../../core/ids.js';
import { AuthExpiredError } from '../../connectors/types.js';
import { StorageSync } from '../../plugins/storage-sync/service.js';
import { eventually, streamEvents } from '../api/support.js';
import { hubForFile } from '../helpers/hub.js';
import { standInForFile } from './standins.js';

const shared = hubForFile();

const fake = standInForFile();

async function brokenEvents(connectionId: string): Promise<string[]> {
  return (await streamEvents(shared.hub))
    .filter((e) => e.event.type === 'connection.changed')
    .filter((e) => {
      const d = e.event.data as { connectionId: string; action: string };
      return d.connectionId === connectionId && d.action === 'broken';
    })
    .map((e) => e.event.id);
}

test('concurrent jobs of a connection whose grant was revoked mark it broken once, with one event', async (t) => {
  const ws = shared.hub.config.defaultWorkspaceId;
  const now = new Date().toISOString();
  const { conversation } = await shared.hub.store.createConversation(
    { id: newId('cnv'), workspaceId: ws, type: 'group', title: 'Q3', members: ['usr_a'], createdBy: 'usr_a', createdAt: now, updatedAt: now, lastSeq: 0 },
    () => [],
  );
  // Two services stand for two processes running this connector's jobs (hub and worker).
  const [a, b] = [new StorageSync(shared.hub, null, 'dropbox'), new StorageSync(shared.hub, null, 'dropbox')];
  const conn = await a.connections.create(ws, 'dropbox', {
    clientId: 'appkey', folderPath: '/Voxa', apiBaseUrl: fake.api.url, tokenUrl: `${fake.api.url}/token`,
    accessToken: 'tok1', refreshToken: 'refresh1', expiresAt: new Date(Date.now() - 1000).toISOString(),
  });
  fake.api.refreshTokens.clear(); // invalid_grant from now on

  const job = { name: 'transcript', data: { connectionId: conn.id, conversationId: conversation.id } };
  const outcomes = await Promise.allSettled([a.process(job), a.process(job), b.process(job), b.process(job)]);
  t.true(outcomes.every((o) => o.status === 'rejected' && o.reason instanceof AuthExpiredError));
  // And the token code's own hook, called again (as another process would after its refresh failed).
  await b.connections.contextFor(conn.id).markBroken('invalid_grant again');

  const view = await a.connections.get(conn.id);
  t.is(view.status, 'broken');
  t.regex(view.statusReason ?? '', /invalid_grant/);
  t.notRegex(view.statusReason ?? '', /again/, 'the first reason stays');
  await eventually(async () => (await shared.hub.store.outboxCount()) === 0 && (await brokenEvents(conn.id)).length > 0);
  t.is((await brokenEvents(conn.id)).length, 1, 'one broken event for one change');

  // Re-enabled and revoked again is a new change: a second event.
  await a.connections.setStatus(conn.id, 'active', null);
  await Promise.allSettled([a.process(job), b.process(job)]);
  await eventually(async () => (await shared.hub.store.outboxCount()) === 0 && (await brokenEvents(conn.id)).length > 1);
  t.is((await brokenEvents(conn.id)).length, 2);
});

test('a token refresh saved after the connection was marked broken or disabled keeps that status', async (t) => {
  const ws = shared.hub.config.defaultWorkspaceId;
  const sync = new StorageSync(shared.hub, null, 'dropbox');
  for (const status of ['broken', 'disabled'] as const) {
    const conn = await sync.connections.create(ws, 'dropbox', {
      clientId: 'appkey', folderPath: '/Voxa', apiBaseUrl: fake.api.url, tokenUrl: `${fake.api.url}/token`,
      accessToken: 'old-access', refreshToken: 'refresh-x', expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    });
    const ctx = sync.connections.contextFor(conn.id);
    // The refresh read the record, then the status changed, then the refresh saves its new tokens.
    const saving = ctx.saveSecrets({ accessToken: 'new-access', expiresAt: new Date(Date.now() + 7_200_000).toISOString() });
    if (status === 'broken') await ctx.markBroken('invalid_grant');
    else await sync.connections.setStatus(conn.id, 'disabled', 'paused by an admin');
    await saving;
    const view = await sync.connections.get(conn.id);
    t.is(view.status, status, `stays ${status}`);
    const resolved = await sync.connections.resolve(await sync.connections.getRecord(conn.id));
    t.is(resolved.config.accessToken, 'new-access', 'the new token was still saved');
  }
});
