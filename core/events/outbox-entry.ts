import { eventTraceHeaders } from '../telemetry/propagation.js';
import type { OutboxEntry, OutboxFor } from '../store/port.js';
import { subjectOf, type EventEnvelope } from './catalog.js';

/** Turns an event into the outbox row that will publish it, capturing the current trace context (or minting one). */
export function toOutbox(event: EventEnvelope, namespace: string): OutboxEntry {
  return {
    eventId: event.id,
    subject: subjectOf(event, namespace),
    payload: JSON.stringify(event),
    headers: { ...eventTraceHeaders(), 'Voxa-Event-Type': event.type },
    createdAt: event.time,
  };
}

/** An outbox builder that keeps the entries it built, so its caller can publish them once the write committed. */
export interface RecordedOutbox<T> extends OutboxFor<T> {
  readonly entries: OutboxEntry[];
}

/**
 * Wraps `build` to remember what it returned. A store may run a unit twice (a group commit retried after
 * another unit failed); the entries kept are those of the last run, the one that committed.
 */
export function recordOutbox<T>(build: OutboxFor<T>): RecordedOutbox<T> {
  let entries: OutboxEntry[] = [];
  return Object.defineProperty((value: T) => (entries = build(value)), 'entries', { get: () => entries }) as RecordedOutbox<T>;
}
