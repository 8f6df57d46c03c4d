/**
 * Every CLI command that writes an event publishes it the same way: at once when NATS answers, whether that is
 * NATS_URL or the embedded hub's port (VOXA_EMBEDDED_NATS_PORT), and with one actor, system:voxa-cli.
 */
import test from 'ava';
import { CLI_ACTOR } from '../../connectors/context.js';
import { streamEvents, eventually } from '../api/support.js';
import { runCli } from '../helpers/cli.js';
import { hubForFile } from '../helpers/hub.js';

const shared = hubForFile();


/** A shell next to a `voxa start` that embeds NATS: no NATS_URL, only the embedded port. */
function embeddedEnv(): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    LOG_LEVEL: 'silent',
    VOXA_DATA_DIR: shared.hub.config.dataDir,
    VOXA_NATS_NAMESPACE: shared.hub.config.natsNamespace,
    VOXA_SECRET_KEY: shared.hub.secrets.encryptionKey.toString('base64'),
    VOXA_EMBEDDED_NATS_PORT: String(shared.servers.nats.port),
  };
}

async function voxa(...args: string[]): Promise<unknown> {
  const r = await runCli(embeddedEnv(), [...args, '--json']);
  if (r.code !== 0) throw new Error(`voxa ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

test.serial('users add and set-role publish at once on the embedded port, like webhooks add', async (t) => {
  const added = (await voxa('users', 'add', '--email', 'emb@example.test', '--role', 'customer')) as { user: { id: string }; eventPublished: boolean };
  t.true(added.eventPublished, 'users add published its event itself');
  const set = (await voxa('users', 'set-role', '--email', 'emb@example.test', '--role', 'agent')) as { eventPublished: boolean };
  t.true(set.eventPublished, 'users set-role published its event itself');
  const hook = (await voxa('webhooks', 'add', '--url', 'https://hooks.example.com/in', '--events', 'message.created')) as { id: string };

  const events = await eventually(async () => {
    const all = (await streamEvents(shared.hub)).map((e) => e.event);
    const found = {
      registered: all.find((e) => e.type === 'user.registered' && e.userId === added.user.id),
      roleChanged: all.find((e) => e.type === 'user.role_changed' && e.userId === added.user.id),
      webhook: all.find((e) => e.type === 'webhook.changed' && (e.data as { webhookId: string }).webhookId === hook.id),
    };
    return found.registered && found.roleChanged && found.webhook ? found : null;
  });
  t.deepEqual(events.roleChanged!.actor, CLI_ACTOR);
  t.deepEqual(events.webhook!.actor, CLI_ACTOR);
});

test.serial('users add names the same actor as every other CLI event', async (t) => {
  const added = (await voxa('users', 'add', '--email', 'actor@example.test', '--role', 'customer')) as { user: { id: string } };
  const ev = await eventually(async () => (await streamEvents(shared.hub)).map((e) => e.event).find((e) => e.type === 'user.registered' && e.userId === added.user.id));
  t.deepEqual(ev.actor, CLI_ACTOR);
});

test.serial('with nothing on the embedded port the event waits in the outbox and the command still succeeds', async (t) => {
  const r = await runCli({ ...embeddedEnv(), VOXA_EMBEDDED_NATS_PORT: '1' }, ['users', 'add', '--email', 'later@example.test', '--role', 'customer']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /event queued in the outbox/);
});
