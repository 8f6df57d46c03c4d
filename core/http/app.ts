/**
 * The HTTP API as a Koa app, built from the hub's dependencies. It never listens: the server entry calls
 * `buildApp(hub).callback()` and owns the socket; tests drive the same callback with supertest.
 *
 * Middleware order (outermost first): client address, request id, request metrics (sees the final status), the
 * error renderer, cross-origin headers and preflights, then the declared routes (each: authenticate → role
 * check → JSON body → validation → handler), core's and the plugins' alike, and a last stop that answers 405
 * or 404.
 */
import Koa, { type Middleware } from 'koa';
import type { z } from 'zod';
import { AuthService } from '../auth/service.js';
import { VoxaError } from '../errors.js';
import type { Hub } from '../hub.js';
import type { PluginContext, PluginRouter, PluginRoutes, PublicPluginRouter, PublicPluginRoutes } from '../../plugins/runtime/types.js';
import { authRoutes } from '../routes/auth.js';
import { conversationRoutes } from '../routes/conversations.js';
import { userRoutes } from '../routes/users.js';
import { workspaceRoutes } from '../routes/workspace.js';
import { twoFactorRoutes } from '../routes/twofactor.js';
import { searchRoutes } from '../routes/search.js';
import { fileRoutes } from '../routes/files.js';
import { oidcRoutes } from '../routes/oidc.js';
import { GoogleSignIn } from '../auth/oidc.js';
import { FileService } from '../files/service.js';
import { TotpService } from '../auth/totp.js';
import { metrics } from '../telemetry/metrics.js';
import { ApiRouter, buildOpenApi, type ApiState, type RouteDef } from './api-router.js';
import { authenticate } from './auth.js';
import { clientIp } from './client-ip.js';
import { errorMiddleware, routeOf } from './errors.js';
import { healthRoutes } from './health.js';
import { requestId } from './request-id.js';
import { cors } from './cors.js';

export interface BuildAppOptions {
  /** REST routes of plugins, declared under /v1 (behind authentication unless public). */
  pluginRoutes?: Array<{ name: string; routes: PluginRoutes; publicRoutes?: PublicPluginRoutes }>;
  pluginContext?: PluginContext;
}

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/**
 * The operational endpoints: probes and the scrape. They are not API traffic, so they are neither counted in
 * the API's request metrics nor traced (telemetry/tracing.ts): a readiness probe answering 503 slowly during a
 * dependency outage would otherwise fire the API's error-rate and latency alerts by itself.
 */
export const OPERATIONAL_PATHS: ReadonlySet<string> = new Set(['/healthz', '/readyz', '/metrics']);

/** Counts and times every API request by route pattern (never the raw URL, which would explode cardinality). */
function httpMetrics(): Middleware {
  return async function measure(ctx, next) {
    if (OPERATIONAL_PATHS.has(ctx.path)) return next();
    const started = process.hrtime.bigint();
    try {
      await next();
    } finally {
      const route = routeOf(ctx);
      const method = KNOWN_METHODS.has(ctx.method) ? ctx.method : 'OTHER';
      metrics.httpRequests.inc({ route, method, status: String(ctx.status) });
      metrics.httpDuration.observe({ route, method }, Number(process.hrtime.bigint() - started) / 1e9);
    }
  };
}

export function buildApp(hub: Hub, opts: BuildAppOptions = {}): Koa<ApiState> {
  const app = new Koa<ApiState>();
  // Errors are rendered and logged by errorMiddleware; Koa's own stderr printing would duplicate them.
  app.silent = true;
  // Forwarded proto/host count only with a trusted proxy; clientIp() drops them from any other peer.
  app.proxy = hub.config.trustProxy !== false;
  const auth = authenticate(hub);
  const api = new ApiRouter({ authenticate: auth, bodyLimitBytes: hub.config.bodyLimitBytes });

  healthRoutes(api, hub);
  const accounts = new AuthService(hub);
  authRoutes(api, accounts);
  userRoutes(api, hub);
  workspaceRoutes(api, hub);
  conversationRoutes(api, hub);
  twoFactorRoutes(api, new TotpService(hub));
  searchRoutes(api, hub);
  fileRoutes(api, new FileService(hub));
  oidcRoutes(api, new GoogleSignIn(hub, accounts));

  const pluginContext: PluginContext = opts.pluginContext ?? { hub, log: hub.log };
  for (const p of opts.pluginRoutes ?? []) {
    p.routes(pluginRouter(api, p.name, true), pluginContext);
    p.publicRoutes?.(pluginRouter(api, p.name, false), pluginContext);
  }

  let openapi: Record<string, unknown> | null = null;
  api.add({
    method: 'get',
    path: '/v1/openapi.json',
    tag: 'operations',
    summary: 'This document.',
    auth: false,
    responses: { 200: { description: 'OpenAPI 3.1 description of the API.' } },
    handler(ctx) {
      openapi ??= buildOpenApi(api.routes, { title: 'Voxa Hub API', version: '1' });
      ctx.body = openapi;
    },
  });

  app.use(clientIp(hub.config.trustProxy));
  app.use(requestId());
  app.use(httpMetrics());
  app.use(errorMiddleware(hub.log));
  app.use(cors(hub.config.corsOrigins));
  app.use(async (ctx, next) => {
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.set('Cache-Control', 'no-store');
    await next();
  });
  app.use(api.router.routes() as Middleware<ApiState>);
  app.use(async (ctx) => {
    const allowed = new Set<string>();
    for (const layer of api.router.match(ctx.path, ctx.method).path) for (const m of layer.methods) allowed.add(m);
    if (allowed.size === 0) throw new VoxaError('NOT_FOUND', `No route for ${ctx.method} ${ctx.path.slice(0, 200)}.`);
    const allow = [...allowed].sort().join(', ');
    if (ctx.method === 'OPTIONS') {
      ctx.status = 204;
      ctx.set('Allow', allow);
      return;
    }
    throw new VoxaError('METHOD_NOT_ALLOWED', `Use ${allow} on this path.`, { allowed: [...allowed].sort() }, { Allow: allow });
  });
  return app;
}

/** A plugin route's path under /v1; anything else is a mistake in the plugin, refused when it is mounted. */
function v1Path(name: string, path: string): string {
  if (!path.startsWith('/') || path === '/v1' || path.startsWith('/v1/')) throw new Error(`plugin ${name}: route path ${path} must start with / and be relative to /v1`);
  return `/v1${path}`;
}

/**
 * What a plugin declares its routes on: core's ApiRouter itself, so a plugin route is checked exactly like a
 * core one (params, query and body) and is listed in /v1/openapi.json with its schemas, tagged
 * `plugin:<name>`. Routes declared through `routes` need a token; those through `publicRoutes` do not (each
 * checks its own credential, such as a signed link).
 */
function pluginRouter(api: ApiRouter, name: string, auth: true): PluginRouter;
function pluginRouter(api: ApiRouter, name: string, auth: false): PublicPluginRouter;
function pluginRouter(api: ApiRouter, name: string, auth: boolean): PluginRouter {
  const router: PluginRouter = {
    add(def) {
      api.add({ ...def, path: v1Path(name, def.path), tag: `plugin:${name}`, auth } as RouteDef<z.ZodType, z.ZodType, z.ZodType>);
      return router;
    },
  };
  return router;
}
