/** Shared by the webhook tests: events to feed a WebhookService directly. */
import type { AnyEvent } from '../../core/events/catalog.js';
import type { Hub } from '../../core/hub.js';
import { messageEvent } from '../plugins/helpers.js';

/** A fresh `message.created` in the hub's default workspace (where the tests' subscriptions live), next seq. */
export function event(hub: Hub): AnyEvent {
  return messageEvent('cnv_1', hub.config.defaultWorkspaceId);
}
