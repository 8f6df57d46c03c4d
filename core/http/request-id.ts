/**
 * A request id for every API response (`X-Request-Id`), so a client reporting a failure and an operator reading
 * the logs or a trace can point at the same request. A well-formed id sent by the caller (a load balancer or
 * gateway that stamps one, or a client that keeps its own) is kept; anything else is replaced with one of ours.
 * The id is on `ctx.state.requestId`, in the log line of an unexpected error, and on the request's span.
 */
import { randomBytes } from 'node:crypto';
import { trace } from '@opentelemetry/api';
import type { Middleware } from 'koa';
import type { ApiState } from './api-router.js';

/** What we accept from a caller: short, and only characters that are safe in a header, a log line and a URL. */
const WELL_FORMED = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

/** The response header, in the spelling most proxies and tracing tools use. */
export const REQUEST_ID_HEADER = 'X-Request-Id';

/**
 * Ours are `req_<process prefix><counter>`: unique across processes through the random prefix, unique within
 * one through the counter, and cheap (no random bytes per request).
 */
export function requestIdGenerator(): () => string {
  const prefix = `req_${randomBytes(6).toString('base64url')}`;
  let n = 0;
  return () => `${prefix}${(++n).toString(36)}`;
}

export function requestId(): Middleware<ApiState> {
  const next_ = requestIdGenerator();
  return async function assignRequestId(ctx, next) {
    const sent = ctx.get(REQUEST_ID_HEADER);
    const id = sent && WELL_FORMED.test(sent) ? sent : next_();
    ctx.state.requestId = id;
    ctx.set(REQUEST_ID_HEADER, id);
    trace.getActiveSpan()?.setAttribute('http.request.id', id);
    await next();
  };
}
