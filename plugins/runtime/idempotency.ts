/**
 * Exactly-once-visible effects on top of at-least-once delivery.
 *
 * JetStream may hand a plugin the same event more than once (a redelivery after a crash, an ack lost on a
 * reconnect, an outbox republish, a rewind). A plugin makes its effects idempotent by running them through
 * `onceByEventId`, which keeps a "processed" mark per (plugin, key) in the store's document collection
 * `processed:<plugin>`.
 *
 * Two orders are offered, because no mark can be atomic with an effect outside the store:
 *  - mark 'after' (default): run the effect, then mark. A crash between the two repeats the effect on the
 *    next delivery (at-least-once). Right for effects that are harmless or deduplicated downstream when
 *    repeated (webhooks with an idempotency key, upserts, push with a collapse key).
 *  - mark 'before': claim the mark, then run the effect; a failure removes the claim so a retry can run.
 *    A crash between claim and effect loses the effect (at-most-once). Right where a duplicate is worse than
 *    a miss (a charge, an SMS).
 * Effects that live in the store itself are best written keyed by the event id (docs.insert), which is
 * atomic and needs no separate mark.
 */
import type { DocumentStore } from '../../core/store/port.js';
import type { PluginManifest } from './types.js';

export type MarkOrder = 'after' | 'before';

/** The document collection holding a plugin's processed marks. */
export function processedCollection(plugin: string): string {
  return `processed:${plugin}`;
}

/**
 * The idempotency key of a delivery. 'skip-processed' plugins (the default) key by event id alone, so a
 * rewind only catches up on what they missed; 'reprocess' plugins key by (event id, consumer generation), so
 * after a rewind every replayed event is handled once more — once per generation.
 */
export function dedupeKey(manifest: Pick<PluginManifest, 'replay'>, eventId: string, generation = 0): string {
  return manifest.replay === 'reprocess' && generation > 0 ? `${eventId}@g${generation}` : eventId;
}

export interface OnceResult<T> {
  /** False when the key was already processed and `fn` did not run. */
  ran: boolean;
  value?: T;
}

/**
 * Runs `fn` unless `key` (normally `info.dedupeKey ?? event.id`) is already marked processed for `plugin`.
 * See the file comment for the choice between marking after and before the effect.
 */
export async function onceByEventId<T>(
  hub: { store: { docs: DocumentStore } },
  plugin: string,
  key: string,
  fn: () => Promise<T>,
  opts: { mark?: MarkOrder } = {},
): Promise<OnceResult<T>> {
  const docs = hub.store.docs;
  const coll = processedCollection(plugin);
  if (opts.mark === 'before') {
    const claimed = await docs.insert(coll, key, { at: new Date().toISOString(), state: 'claimed' });
    if (!claimed) return { ran: false };
    try {
      return { ran: true, value: await fn() };
    } catch (err) {
      // Give the claim back so the retry the runtime schedules can run the effect.
      await docs.delete(coll, key).catch(() => undefined);
      throw err;
    }
  }
  if (await docs.get(coll, key)) return { ran: false };
  const value = await fn();
  // insert (not put): if a concurrent delivery marked it first, keep its timestamp.
  await docs.insert(coll, key, { at: new Date().toISOString(), state: 'done' });
  return { ran: true, value };
}

/** True when `key` is marked processed for `plugin`. */
export async function isProcessed(hub: { store: { docs: DocumentStore } }, plugin: string, key: string): Promise<boolean> {
  return (await hub.store.docs.get(processedCollection(plugin), key)) !== null;
}
