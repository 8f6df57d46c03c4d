/**
 * The one error middleware: every failure leaves the API as `{"error":{"code","message","details?"}}` with the
 * status of its code. VoxaErrors render as thrown; HTTP errors from libraries (koa-jwt's 401, a router's
 * 405) are mapped to our codes; anything else is a bug: logged with its stack, answered as a bare 500.
 */
import type { Middleware } from 'koa';
import type { Logger } from 'pino';
import { ERROR_CODES, VoxaError, isVoxaError, type ErrorCode } from '../errors.js';

const BY_STATUS: Partial<Record<number, ErrorCode>> = {
  400: 'VALIDATION_FAILED',
  401: 'UNAUTHENTICATED',
  403: 'FORBIDDEN',
  404: 'NOT_FOUND',
  405: 'METHOD_NOT_ALLOWED',
  413: 'PAYLOAD_TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  429: 'RATE_LIMITED',
};

/** Turns anything thrown into a VoxaError; unknown errors become INTERNAL (and `unexpected` is true). */
export function toVoxaError(err: unknown): { error: VoxaError; unexpected: boolean } {
  if (isVoxaError(err)) return { error: err, unexpected: false };
  const e = err as { status?: unknown; expose?: unknown; headers?: Record<string, string> } | null;
  // http-errors thrown by middleware we use (koa-jwt, the router, Koa's own ctx.throw) carry a status and
  // `expose` for client errors. Their messages are library text, so ours replace them.
  if (e && typeof e.status === 'number' && e.status >= 400 && e.status < 500 && e.expose === true) {
    const code = BY_STATUS[e.status] ?? 'VALIDATION_FAILED';
    return { error: new VoxaError(code, undefined, undefined, e.headers), unexpected: false };
  }
  return { error: new VoxaError('INTERNAL'), unexpected: true };
}

export function errorMiddleware(log: Logger): Middleware {
  return async function renderErrors(ctx, next) {
    try {
      await next();
    } catch (err) {
      const { error, unexpected } = toVoxaError(err);
      if (unexpected) log.error({ err, method: ctx.method, route: routeOf(ctx), requestId: (ctx.state as { requestId?: string }).requestId }, 'unhandled error in request');
      ctx.status = error.status;
      ctx.body = error.toJSON();
      if (error.headers) for (const [k, v] of Object.entries(error.headers)) ctx.set(k, v);
      if (error.code === 'PAYLOAD_TOO_LARGE') ctx.set('Connection', 'close'); // the rest of the body is not read
    }
  };
}

/** The route pattern that matched (e.g. /v1/conversations/:id), never the raw URL; 'unmatched' otherwise. */
export function routeOf(ctx: object): string {
  const r = (ctx as { _matchedRoute?: unknown })._matchedRoute;
  return typeof r === 'string' ? r : 'unmatched';
}

/** The shape of an error response, for docs and OpenAPI. */
export const ERROR_STATUS = Object.fromEntries(Object.entries(ERROR_CODES).map(([k, v]) => [k, v.status])) as Record<ErrorCode, number>;
