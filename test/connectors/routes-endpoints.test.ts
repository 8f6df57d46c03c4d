/**
 * Where a connection sends its requests is the operator's choice, not a workspace admin's: over REST the endpoint
 * overrides of the storage connectors (API base, OAuth authorize and token URLs) are refused, so an admin can
 * neither aim the hub at internal addresses nor send a stored refresh token and client secret to a server of
 * their own. A webhook's url gets the same private-target check on POST/PATCH /v1/connections as on
 * POST /v1/webhooks. The hub here runs with the default webhooksAllowPrivate (false).
 */
import test from 'ava';
import { ConnectionService } from '../../connectors/connections.js';
import { generateSecret } from '../../connectors/webhook/signing.js';
import { createWebhooksPlugin } from '../../plugins/webhooks/index.js';
import { startServers } from '../helpers/hub.js';
import { bearer, openPluginApi, type PluginApi, type Session } from '../notifications/support.js';
import { startReceiver, type Receiver } from './receiver.js';

let servers: Awaited<ReturnType<typeof startServers>>;
let api: PluginApi;
let rcv: Receiver;
let admin: Session;
test.before(async () => {
  servers = await startServers();
  api = await openPluginApi(servers, [createWebhooksPlugin()]);
  rcv = await startReceiver();
  admin = await api.register('Root', 'admin');
});
// One after hook: the hub closes before its servers stop.
test.after.always(async () => {
  await rcv?.close();
  await api?.close();
  await servers?.dispose();
});

const oauth = { clientId: 'client', clientSecret: 'CLIENT-SECRET-1', accessToken: 'AT-1', refreshToken: 'RT-1', expiresAt: '2000-01-01T00:00:00Z' };

test.serial('the storage connectors\' endpoint overrides are refused over REST, on create and on patch; nothing is sent to them', async (t) => {
  for (const [connector, fields] of [
    ['google-drive', ['rootUrl', 'authorizeUrl', 'tokenUrl']],
    ['dropbox', ['apiBaseUrl', 'authorizeUrl', 'tokenUrl']],
  ] as const) {
    for (const field of fields) {
      const r = await api.http.post('/v1/connections').set(...bearer(admin)).send({ connector, config: { ...oauth, [field]: rcv.url } });
      t.is(r.status, 400, `${connector} ${field}`);
      t.is(r.body.error.code, 'VALIDATION_FAILED');
      t.deepEqual(r.body.error.details.issues, [{ path: `body.config.${field}`, code: 'operator_only', message: 'Set by the hub operator only (voxa connections add), not over the API.' }]);
    }
  }
  t.deepEqual((await api.http.get('/v1/connections').set(...bearer(admin))).body.connections, [], 'none was created');

  // One the operator made (as the CLI does: no actor, straight through the service), then patched by an admin.
  const drive = await new ConnectionService(api.hub).create(api.hub.config.defaultWorkspaceId, 'google-drive', oauth);
  const steal = await api.http.patch(`/v1/connections/${drive.id}`).set(...bearer(admin)).send({ config: { tokenUrl: `${rcv.url}/steal` } });
  t.is(steal.status, 400);
  t.deepEqual(steal.body.error.details.fields, ['body.config.tokenUrl']);
  t.is((await new ConnectionService(api.hub).getRecord(drive.id)).config.tokenUrl, undefined, 'the stored config is unchanged');
  // Fields that are not endpoints still change over REST.
  const moved = await api.http.patch(`/v1/connections/${drive.id}`).set(...bearer(admin)).send({ config: { folderId: 'folder-2' } });
  t.is(moved.status, 200, JSON.stringify(moved.body));
  t.is(moved.body.connection.config.folderId, 'folder-2');
  t.is(rcv.received.length, 0, 'nothing reached the would-be endpoint');
});

test.serial('a webhook connection whose url is private is refused on POST and PATCH /v1/connections, as on POST /v1/webhooks', async (t) => {
  const config = { url: 'http://127.0.0.1:9/hook', events: ['message.created'], secret: generateSecret() };
  for (const [path, body] of [
    ['/v1/webhooks', { url: config.url, events: config.events }],
    ['/v1/connections', { connector: 'webhook', config }],
  ] as const) {
    const r = await api.http.post(path).set(...bearer(admin)).send(body);
    t.is(r.status, 400, path);
    t.is(r.body.error.details.issues[0].code, 'refused_target', path);
  }
  const hook = await api.http.post('/v1/connections').set(...bearer(admin)).send({ connector: 'webhook', config: { ...config, url: 'https://hooks.example.com/in' } });
  t.is(hook.status, 201, JSON.stringify(hook.body));
  const patched = await api.http.patch(`/v1/connections/${hook.body.connection.id as string}`).set(...bearer(admin)).send({ config: { url: 'http://[::1]:9/x' } });
  t.is(patched.status, 400);
  t.deepEqual(patched.body.error.details.fields, ['body.config.url']);
  t.is((await new ConnectionService(api.hub).getRecord(hook.body.connection.id as string)).config.url, 'https://hooks.example.com/in');
});
