/**
 * The HTTP API as a Koa app, built from the hub's dependencies. It never listens: the server entry calls
 * `buildApp(hub).callback()` and owns the socket; tests drive the same callback with supertest.
 *
 * Middleware order (outermost first): request metrics (sees the final status), the error renderer, then the
 * declared routes (each: authenticate → role check → JSON body → validation → handler), plugin routes under
 * /v1 behind authentication, and a last stop that answers 405 or 404.
 */
import { Router } from '@koa/router';
import Koa, { type Middleware } from 'koa';
import { AuthService } from '../auth/service.js';
import { VoxaError } from '../errors.js';
import type { Hub } from '../hub.js';
import type { PluginContext, PluginRoutes } from '../../plugins/runtime/types.js';
import { authRoutes } from '../routes/auth.js';
import { conversationRoutes } from '../routes/conversations.js';
import { userRoutes } from '../routes/users.js';
import { twoFactorRoutes } from '../routes/twofactor.js';
import { searchRoutes } from '../routes/search.js';
import { fileRoutes } from '../routes/files.js';
import { oidcRoutes } from '../routes/oidc.js';
import { GoogleSignIn } from '../auth/oidc.js';
import { FileService } from '../files/service.js';
import { TotpService } from '../auth/totp.js';
import { metrics } from '../telemetry/metrics.js';
import { ApiRouter, buildOpenApi, type ApiState } from './api-router.js';
import { authenticate } from './auth.js';
import { clientIp } from './client-ip.js';
import { jsonBody } from './body.js';
import { errorMiddleware, routeOf } from './errors.js';
import { healthRoutes } from './health.js';

export interface BuildAppOptions {
  /** REST routes of plugins, mounted under /v1 after authentication. */
  pluginRoutes?: Array<{ name: string; routes: PluginRoutes; publicRoutes?: PluginRoutes }>;
  pluginContext?: PluginContext;
}

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** Counts and times every request by route pattern (never the raw URL, which would explode cardinality). */
function httpMetrics(): Middleware {
  return async function measure(ctx, next) {
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
  conversationRoutes(api, hub);
  twoFactorRoutes(api, new TotpService(hub));
  searchRoutes(api, hub);
  fileRoutes(api, new FileService(hub));
  oidcRoutes(api, new GoogleSignIn(hub, accounts));

  const pluginRouters: Array<{ name: string; router: Router<ApiState>; auth: boolean }> = [];
  const pluginContext: PluginContext = opts.pluginContext ?? { hub, log: hub.log };
  for (const p of opts.pluginRoutes ?? []) {
    const router = new Router<ApiState>({ prefix: '/v1' });
    // Router-level middleware only runs when one of this router's routes matched.
    router.use(auth as never, jsonBody(hub.config.bodyLimitBytes) as never);
    p.routes(router as never, pluginContext);
    pluginRouters.push({ name: p.name, router, auth: true });
  }
  for (const p of opts.pluginRoutes ?? []) {
    if (!p.publicRoutes) continue;
    // No authentication and no JSON body parser: these handlers check their own credential (a signed link).
    const router = new Router<ApiState>({ prefix: '/v1' });
    p.publicRoutes(router as never, pluginContext);
    pluginRouters.push({ name: p.name, router, auth: false });
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
      openapi ??= withPluginPaths(buildOpenApi(api.routes, { title: 'Voxa Hub API', version: '1' }), pluginRouters);
      ctx.body = openapi;
    },
  });

  app.use(clientIp(hub.config.trustProxy));
  app.use(httpMetrics());
  app.use(errorMiddleware(hub.log));
  app.use(async (ctx, next) => {
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.set('Cache-Control', 'no-store');
    await next();
  });
  app.use(api.router.routes() as Middleware<ApiState>);
  for (const { router } of pluginRouters) app.use(router.routes() as Middleware<ApiState>);
  const routers = [api.router, ...pluginRouters.map((p) => p.router)];
  app.use(async (ctx) => {
    const allowed = new Set<string>();
    for (const r of routers) for (const layer of r.match(ctx.path, ctx.method).path) for (const m of layer.methods) allowed.add(m);
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

/** Adds the plugins' routes to the OpenAPI document (they declare no schemas, so only paths and auth). */
function withPluginPaths(doc: Record<string, unknown>, plugins: Array<{ name: string; router: Router<ApiState>; auth: boolean }>): Record<string, unknown> {
  const paths = doc.paths as Record<string, Record<string, unknown>>;
  for (const { name, router, auth } of plugins) {
    for (const layer of router.stack) {
      if (!layer.methods.length || typeof layer.path !== 'string') continue;
      const path = layer.path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
      for (const m of layer.methods) {
        if (m === 'HEAD') continue;
        paths[path] ??= {};
        paths[path][m.toLowerCase()] = {
          summary: `Route of the ${name} plugin.`,
          tags: [`plugin:${name}`],
          // Public plugin routes (e.g. one-click unsubscribe) check their own signed credential.
          security: auth ? [{ bearer: [] }] : [],
          responses: { default: { description: 'See the plugin docs; errors use the Error shape.', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } } },
        };
      }
    }
  }
  return doc;
}
