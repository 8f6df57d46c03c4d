/**
 * Which event types a webhook can subscribe to: the durable ones, exactly what the webhooks plugin consumes.
 * Ephemeral events (typing.*, presence.*) live on a short-lived memory stream that only broadcast plugins read,
 * so a subscription to them would never receive anything; they are refused when the subscription is made.
 * The connector's config schema (REST and CLI alike) and the REST body use the same schema from here.
 */
import { z } from 'zod';
import { EVENT_TYPES, isDurable, type EventType } from '../../core/events/catalog.js';

export const WEBHOOK_EVENT_TYPES: EventType[] = EVENT_TYPES.filter(isDurable);

/** One subscribed event type; the error lists what is allowed. */
export const WebhookEventType = z.enum(WEBHOOK_EVENT_TYPES as [EventType, ...EventType[]], {
  error: (iss) => `${JSON.stringify(iss.input)} cannot be sent to webhooks; allowed: ${WEBHOOK_EVENT_TYPES.join(', ')}`,
});

/** Why these types cannot be subscribed (the schema's message), or null when all of them can. */
export function webhookEventsError(types: string[]): string | null {
  const r = z.array(WebhookEventType).min(1, 'name at least one event type').safeParse(types);
  return r.success ? null : r.error.issues.map((i) => i.message).join('; ');
}
