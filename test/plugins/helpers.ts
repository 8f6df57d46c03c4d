/** Shared bits for the plugin runtime tests: publishing events, polling for conditions, extra hubs. */
import { rmSync } from 'node:fs';
import { createEvent, subjectOf, type AnyEvent } from '../../core/events/catalog.js';
import { closeHub, openHub, type Hub } from '../../core/hub.js';
import { testConfig, type TestServers } from '../helpers/hub.js';

/** Runtime options for tests: short fetch expiry and metric interval, so stops and metrics come quickly. */
export const FAST = { fetchExpiresMs: 1000, metricsIntervalMs: 500 };

/** Polls `cond` until it holds; fails with `what` after `timeoutMs`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let n = 0;
/** A message.created event in workspace w1 whose data matches the catalog (the runtime checks it). */
export function messageEvent(conversationId = 'c1', workspaceId = 'w1'): AnyEvent {
  const i = ++n;
  return createEvent('message.created', {
    workspaceId,
    conversationId,
    actor: { type: 'user', id: 'u1' },
    data: {
      message: { id: `m${i}`, conversationId, seq: i, senderId: 'u1', text: `hello ${i}`, clientId: null, createdAt: new Date().toISOString() },
    } as never,
  }) as AnyEvent;
}

export function seenEvent(conversationId = 'c1'): AnyEvent {
  return createEvent('message.seen', {
    workspaceId: 'w1',
    conversationId,
    actor: { type: 'user', id: 'u1' },
    data: { conversationId, userId: 'u1', seq: 1 },
  }) as AnyEvent;
}

/** Publishes events to JetStream the way the outbox does; resolves with their stream sequences. */
export async function publishEvents(hub: Hub, events: AnyEvent[]): Promise<number[]> {
  const acks = await Promise.all(
    events.map((e) => hub.bus.publisher.publish(subjectOf(e, hub.bus.namespace), Buffer.from(JSON.stringify(e)), { 'Voxa-Event-Type': e.type }, e.id)),
  );
  return acks.map((a) => a.seq);
}

/**
 * A second "process" of the same hub: same NATS namespace and the same data dir (so the same SQLite store,
 * as two processes on one host would share it). close() leaves the data dir to the first hub.
 */
export async function openSibling(servers: TestServers, first: Hub, name: string): Promise<Hub & { close(): Promise<void> }> {
  const config = testConfig(servers, { natsNamespace: first.bus.namespace, dataDir: first.config.dataDir });
  const hub = await openHub(config, { name });
  return Object.assign(hub, {
    async close() {
      await closeHub(hub);
    },
  });
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
