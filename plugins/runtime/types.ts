/**
 * What a plugin declares and what it gets. A plugin is a manifest plus a handler; the runtime
 * (plugins/runtime/runtime.ts) alone owns the JetStream consumer, concurrency, ack/nak/term, dead letters,
 * drain, metrics and spans. Handlers steer retries by throwing RetryableError or PermanentError.
 */
import type { AnyEvent, EventType } from '../../core/events/catalog.js';
import type { Hub } from '../../core/hub.js';
import type { Logger } from 'pino';
import type { Server as HttpServer } from 'node:http';
import type { z } from 'zod';
import type { RouteDef } from '../../core/http/api-router.js';

export interface RetryPolicy {
  /** Deliveries before the event goes to the dead-letter stream (default 5). */
  maxDeliveries?: number;
  /** Delay before redelivery after attempt n (last value repeats); default [1s, 5s, 30s, 2m]. */
  backoffMs?: number[];
  /** How long a delivery may run before JetStream redelivers it (default 30 s). */
  ackWaitMs?: number;
}

export interface PluginManifest {
  /** Unique, [a-z0-9-]; names the durable consumer. */
  name: string;
  description: string;
  /** Catalog event types the plugin handles. */
  events: EventType[];
  /** Handler calls in flight at once per process (default 8; 1 when `ordered`). */
  concurrency?: number;
  /**
   * Handle events strictly one after another in stream order, across every process that runs the plugin and
   * across redeliveries: the consumer gets max_ack_pending = 1, so JetStream hands out the next event only once
   * the previous one is acked, and a nak'd or timed-out event comes back before anything later. The price: one
   * event at a time for the whole plugin, and a failing event holds the rest until it succeeds or is
   * dead-lettered (events put back by `voxa dlq retry` are outside this order). Shared mode only.
   */
  ordered?: boolean;
  retry?: RetryPolicy;
  /** Connector ids the plugin needs (connectors/registry.ts). */
  connectors?: string[];
  /**
   * 'shared' (default): one durable consumer; every process running the plugin shares the work.
   * 'broadcast': every process sees every event (the WebSocket edge fans out to its own sockets).
   */
  mode?: 'shared' | 'broadcast';
  /**
   * What a rewind means for this plugin (see docs/plugins.md, "Replay"):
   * 'skip-processed' (default): events the plugin already handled stay handled; a rewind only catches up on
   *   what it missed (the idempotency helper keys by event id alone).
   * 'reprocess': a rewind re-runs every replayed event once more (e.g. rebuilding analytics); the helper keys
   *   by (event id, consumer generation), so each event is still handled once per generation.
   */
  replay?: 'skip-processed' | 'reprocess';
  /**
   * Where a brand-new consumer starts (only when the plugin's consumer is created for the first time):
   * 'new' (default) only events published from then on; 'all' everything the stream still holds.
   */
  startAt?: 'new' | 'all';
}

export interface DeliveryInfo {
  /** 1 on the first delivery. */
  attempt: number;
  /** Stream sequence of the event. */
  streamSeq: number;
  subject: string;
  /**
   * Consumer generation (0 until the first rewind). Bumped by `voxa plugins rewind`; see `replay`.
   * Absent in broadcast mode.
   */
  generation?: number;
  /** 'stream' for live events, 'retry' for an event put back by `voxa dlq retry`, 'broadcast' in broadcast mode. */
  source?: 'stream' | 'retry' | 'broadcast';
  /**
   * The key the idempotency helper should use for this delivery: the event id, or `<event id>@g<generation>`
   * for a 'reprocess' plugin after a rewind. Pass it to `onceByEventId` (plugins/runtime/idempotency.ts).
   */
  dedupeKey?: string;
  /** Aborted when the runtime gives up waiting for the handler (stop deadline or maximum run time). */
  signal?: AbortSignal;
}

export interface PluginContext {
  hub: Hub;
  log: Logger;
  /** The API's HTTP server, when the plugin runs in the API process (the edge attaches its sockets here). */
  httpServer?: HttpServer;
}

type Schema = z.ZodType | undefined;

/**
 * A REST route a plugin declares: core's RouteDef (core/http/api-router.ts) with `path` relative to /v1
 * (`/devices` serves `/v1/devices`). The route goes through core's ApiRouter, so it is checked exactly like a
 * core route (strict params, query and body; a body on a route that declares none is refused unless it is
 * `{}`; a route that declares no query takes no parameters) and is listed in /v1/openapi.json with its
 * schemas. Whether it needs a token, and its OpenAPI tag (`plugin:<name>`), follow from where it is declared.
 */
export type PluginRouteDef<P extends Schema = undefined, Q extends Schema = undefined, B extends Schema = undefined> = Omit<RouteDef<P, Q, B>, 'auth' | 'tag'>;

/**
 * A route without authentication: no roles (there is no caller to check) and no JSON body schema. A route
 * that answers clients posting something other than JSON (a mail client's one-click unsubscribe form) says
 * so with `ownBody`; any other refuses a body but `{}`, like every core route that takes none.
 */
export type PublicPluginRouteDef<P extends Schema = undefined, Q extends Schema = undefined> = Omit<PluginRouteDef<P, Q, undefined>, 'roles' | 'body'>;

/** Where a plugin declares its authenticated routes; `add` returns the router for chaining. */
export interface PluginRouter {
  add<P extends Schema = undefined, Q extends Schema = undefined, B extends Schema = undefined>(def: PluginRouteDef<P, Q, B>): PluginRouter;
}

/** Where a plugin declares its public routes. */
export interface PublicPluginRouter {
  add<P extends Schema = undefined, Q extends Schema = undefined>(def: PublicPluginRouteDef<P, Q>): PublicPluginRouter;
}

/** Extra REST routes a plugin declares under /v1, behind authentication (ctx.state.user is the caller). */
export type PluginRoutes = (router: PluginRouter, ctx: PluginContext) => void;

/** Extra REST routes a plugin declares under /v1 without authentication. */
export type PublicPluginRoutes = (router: PublicPluginRouter, ctx: PluginContext) => void;

export interface Plugin {
  manifest: PluginManifest;
  /** Runs once before consuming starts (set up routes, queues, sockets). */
  start?(ctx: PluginContext): Promise<void>;
  handle(event: AnyEvent, info: DeliveryInfo): Promise<void>;
  /** REST routes the plugin adds (mounted by core/http/app.ts). */
  routes?: PluginRoutes;
  /**
   * REST routes declared under /v1 WITHOUT authentication (e.g. a signed one-click unsubscribe link that a
   * mail client POSTs to). Each handler must check its own credential.
   */
  publicRoutes?: PublicPluginRoutes;
  /** Runs after in-flight work drained. */
  stop?(): Promise<void>;
}

/** Try again later (after `delayMs`, or the policy's backoff). */
export class RetryableError extends Error {
  constructor(
    message: string,
    readonly delayMs?: number,
  ) {
    super(message);
    this.name = 'RetryableError';
  }
}

/** Never succeeds: dead-letter at once with this reason. */
export class PermanentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PermanentError';
  }
}

export function definePlugin(p: Plugin): Plugin {
  if (!/^[a-z0-9-]{1,40}$/.test(p.manifest.name)) throw new Error(`bad plugin name ${p.manifest.name}`);
  return p;
}
