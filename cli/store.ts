/**
 * Commands that work straight against the configured store (`voxa users`, `voxa workspace`): open it, make sure
 * the default workspace exists, turn the services' errors into exit codes, and publish the events they committed.
 *
 * The store is the source of truth and every change is written with its event in the store's outbox. The event
 * is published at once when NATS (NATS_URL, else the embedded hub's port) answers within 1.5 s, the same way
 * as every CLI event (connectors/events.ts); otherwise it waits in the outbox and the running hub's sweeper
 * publishes it. So these commands work before the hub's first start and while it is down.
 */
import { loadConfig, type Config } from '../core/config.js';
import { isVoxaError } from '../core/errors.js';
import { createStore } from '../core/store/index.js';
import type { OutboxEntry, Store } from '../core/store/port.js';
import { toolNatsUrl } from '../connectors/context.js';
import { publishOutboxRows } from '../connectors/events.js';
import { CliError, EXIT } from './util.js';

export async function withStore<T>(fn: (store: Store, config: Config) => Promise<T>): Promise<T> {
  const config = loadConfig();
  let store: Store;
  try {
    store = await createStore(config);
    await store.init();
  } catch (err) {
    throw new CliError(`the store could not be opened: ${(err as Error).message}`, EXIT.UNAVAILABLE, 'UNAVAILABLE');
  }
  try {
    // The default workspace exists from the hub's first start; create it here too so the CLI can run first.
    await store.ensureWorkspace({
      id: config.defaultWorkspaceId,
      name: 'Default workspace',
      settings: { registration: config.registration, customersTalkToAgentsOnly: false, privatePush: false },
      createdAt: new Date().toISOString(),
    });
    return await fn(store, config);
  } catch (err) {
    if (isVoxaError(err)) {
      // As the API answers: 404 is "not found" (3); any other 4xx, a taken email (409) included, is input
      // the caller has to change (2); only the rest is a failure (1).
      const exit = err.status === 404 ? EXIT.NOT_FOUND : err.status >= 400 && err.status < 500 ? EXIT.USAGE : EXIT.FAIL;
      throw new CliError(err.message, exit, err.code);
    }
    throw err;
  } finally {
    await store.close();
  }
}

/** True when every entry was published now; false leaves them to the hub's sweeper, still a success. */
export async function publishNow(store: Store, config: Config, entries: OutboxEntry[]): Promise<boolean> {
  return entries.length > 0 && (await publishOutboxRows(store, toolNatsUrl(config), entries)) === entries.length;
}
