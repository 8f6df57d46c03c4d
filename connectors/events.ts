/**
 * `connection.changed` / `webhook.changed`: every admin change of a connection (add, update, enable, disable,
 * remove, key rotation, auto-disable, a revoked grant) commits its document change and its event together
 * (store.putDoc / deleteDoc / insertDoc), then publishes the event right away when this process can.
 *
 * Who publishes: inside the hub (an API request, a plugin) the outbox relay does. A CLI process has no relay:
 * its rows are collected here and published when the tool context closes, if NATS answers quickly; otherwise
 * they wait in the outbox for the running hub's sweeper. Either way the event is never lost and never sent
 * twice to a consumer (Nats-Msg-Id = event id; consumers are idempotent by id).
 */
import { connect } from 'nats';
import { JetStreamPublisher } from '../core/bus/nats.js';
import { createEvent, type Actor, type EventEnvelope } from '../core/events/catalog.js';
import { toOutbox } from '../core/events/outbox-entry.js';
import type { Hub } from '../core/hub.js';
import type { OutboxEntry } from '../core/store/port.js';
import type { ConnectionRecord } from './types.js';

/** What happened to a connection, as the event's `action`. */
export type ConnectionAction = 'added' | 'updated' | 'enabled' | 'disabled' | 'broken' | 'auto_disabled' | 'removed' | 'keys_rotated';

/** A webhook subscription is a connection of the `webhook` connector; it gets the webhook event instead. */
export function changeEvent(hub: Pick<Hub, 'config'>, rec: Pick<ConnectionRecord, 'id' | 'workspaceId' | 'connector'>, action: ConnectionAction, actor: Actor): OutboxEntry[] {
  const ev: EventEnvelope =
    rec.connector === 'webhook'
      ? createEvent('webhook.changed', { workspaceId: rec.workspaceId, actor, data: { webhookId: rec.id, action } })
      : createEvent('connection.changed', { workspaceId: rec.workspaceId, actor, data: { connectionId: rec.id, connector: rec.connector, action } });
  // The namespace comes from config, not the bus: a CLI process has no bus (and the hub's bus uses the same one).
  return [toOutbox(ev, hub.config.natsNamespace)];
}

/** Rows committed by a tool process (no outbox relay), published when its context closes. */
const toolRows = new WeakMap<object, OutboxEntry[]>();

/** Marks a partial hub as a tool process: committed rows are kept for flushToolOutbox instead of dispatched. */
export function trackToolOutbox(hub: object): void {
  toolRows.set(hub, []);
}

/** Publishes freshly committed rows now when the process can; the outbox sweeper covers every failure. */
export function publishCommitted(hub: Hub, entries: OutboxEntry[]): void {
  if (entries.length === 0) return;
  const kept = toolRows.get(hub);
  if (kept) {
    kept.push(...entries);
    return;
  }
  // Inside the hub: the relay deletes the rows once JetStream acked them.
  hub.outbox?.dispatch(entries).catch(() => undefined);
}

/**
 * Publishes a tool process's committed rows over a short-lived NATS connection and deletes the acked ones.
 * Returns how many were published; 0 when NATS did not answer (the hub's sweeper publishes them later).
 */
export async function flushToolOutbox(hub: Hub, natsUrl: string | undefined, timeoutMs = 1500): Promise<number> {
  const rows = toolRows.get(hub);
  if (!rows || rows.length === 0) return 0;
  toolRows.set(hub, []);
  return publishOutboxRows(hub.store, natsUrl, rows, timeoutMs);
}

/**
 * The one way a short-lived process (the CLI) publishes rows it committed to the outbox: connect to NATS for at
 * most `timeoutMs`, publish, delete what JetStream acked. Returns how many were published; whatever was not
 * stays in the outbox for the running hub's sweeper.
 */
export async function publishOutboxRows(store: Pick<Hub['store'], 'outboxDelete'>, natsUrl: string | undefined, rows: OutboxEntry[], timeoutMs = 1500): Promise<number> {
  if (rows.length === 0 || !natsUrl) return 0;
  let nc;
  try {
    nc = await connect({ servers: natsUrl.split(','), name: 'voxa-cli-outbox', timeout: timeoutMs, maxReconnectAttempts: -1 });
  } catch {
    return 0;
  }
  const publisher = new JetStreamPublisher(nc, timeoutMs * 2);
  try {
    const results = await Promise.allSettled(rows.map((e) => publisher.publish(e.subject, Buffer.from(e.payload), e.headers, e.eventId)));
    const acked = rows.filter((_, i) => results[i]!.status === 'fulfilled').map((e) => e.eventId);
    if (acked.length) await store.outboxDelete(acked).catch(() => undefined);
    return acked.length;
  } finally {
    publisher.close();
    await nc.close().catch(() => undefined);
  }
}
