/**
 * Authentication for /v1: koa-jwt verifies the bearer token (HS256 only, issuer and audience pinned), then
 * the user is loaded from the store so a disabled or removed account is locked out at once and the role is
 * always the current one. ctx.state.user is the UserRecord, ctx.state.jwt the verified claims.
 */
import type { Middleware } from 'koa';
import koaJwt from 'koa-jwt';
import { VoxaError } from '../errors.js';
import type { HubCore } from '../hub.js';
import { jwtKey, jwtVerifyOptions, userForClaims } from '../auth/tokens.js';

export function authenticate(hub: HubCore): Middleware {
  const opts = jwtVerifyOptions(hub);
  const verify = koaJwt({
    // A KeyObject (see jwtKey); koa-jwt hands it to jsonwebtoken unchanged.
    secret: jwtKey(hub) as unknown as string,
    key: 'jwt',
    algorithms: opts.algorithms,
    issuer: opts.issuer,
    audience: opts.audience,
  });
  const loadUser: Middleware = async (ctx, next) => {
    const user = await userForClaims(hub, ctx.state.jwt);
    if (!user) throw new VoxaError('UNAUTHENTICATED');
    ctx.state.user = user;
    return next();
  };
  return function authenticateRequest(ctx, next) {
    return verify(ctx, () => loadUser(ctx, next));
  };
}
