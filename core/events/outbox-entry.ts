import { currentTraceHeaders } from '../telemetry/propagation.js';
import type { OutboxEntry } from '../store/port.js';
import { subjectOf, type EventEnvelope } from './catalog.js';

/** Turns an event into the outbox row that will publish it, capturing the current trace context. */
export function toOutbox(event: EventEnvelope, namespace: string): OutboxEntry {
  return {
    eventId: event.id,
    subject: subjectOf(event, namespace),
    payload: JSON.stringify(event),
    headers: { ...currentTraceHeaders(), 'Voxa-Event-Type': event.type },
    createdAt: event.time,
  };
}
