/**
 * Cross-origin access to the REST API for browser apps served from another origin (config `corsOrigins`,
 * env VOXA_ORIGINS; the same list admits WebSocket handshakes at the edge).
 *
 * The API authenticates with bearer tokens, never cookies, so credentials are not allowed cross-origin: a page
 * on a listed origin reads answers only for the token it sends itself. A request without an Origin header
 * (curl, servers, native apps) is untouched, and so is a same-origin request: browsers need no CORS headers
 * for those. A preflight from an origin that is not listed is refused with 403 FORBIDDEN, so the reason shows
 * in the browser's network panel instead of a bare CORS failure.
 */
import type { Middleware } from 'koa';
import { VoxaError } from '../errors.js';

const ALLOW_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE';
/** Headers a browser may send beyond the CORS-safelisted ones. */
const ALLOW_HEADERS = 'Authorization, Content-Type, X-Request-Id';
/** Response headers a page may read beyond the safelisted ones. */
const EXPOSE_HEADERS = 'X-Request-Id, Retry-After, Allow, Content-Disposition, Content-Length';
/** How long a browser may cache a preflight's answer, in seconds. */
const PREFLIGHT_MAX_AGE = '600';

function sameOrigin(origin: string, host: string | undefined): boolean {
  if (!host) return false;
  try {
    return new URL(origin).host.toLowerCase() === host.toLowerCase();
  } catch {
    return false; // "null" (sandboxed frames, file://) and junk
  }
}

export function cors(allowList: readonly string[]): Middleware {
  const any = allowList.includes('*');
  const listed = new Set(allowList);
  return async function crossOrigin(ctx, next) {
    const origin = ctx.get('Origin');
    if (!origin) return next();
    ctx.vary('Origin');
    const allowed = any || listed.has(origin);
    const preflight = ctx.method === 'OPTIONS' && ctx.get('Access-Control-Request-Method') !== '';
    if (preflight) {
      if (!allowed) {
        if (sameOrigin(origin, ctx.get('Host'))) return next();
        throw new VoxaError('FORBIDDEN', 'This origin may not call the API (see VOXA_ORIGINS).');
      }
      ctx.set('Access-Control-Allow-Origin', origin);
      ctx.set('Access-Control-Allow-Methods', ALLOW_METHODS);
      ctx.set('Access-Control-Allow-Headers', ALLOW_HEADERS);
      ctx.set('Access-Control-Max-Age', PREFLIGHT_MAX_AGE);
      ctx.status = 204;
      return;
    }
    if (allowed) {
      ctx.set('Access-Control-Allow-Origin', origin);
      ctx.set('Access-Control-Expose-Headers', EXPOSE_HEADERS);
    }
    await next();
  };
}
