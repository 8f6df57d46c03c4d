/**
 * Authentication for /v1: koa-jwt verifies the bearer token (HS256 only, issuer and audience pinned), then
 * the user is loaded (store, or the short-lived read cache kept current by invalidation) so a disabled or
 * removed account is locked out and the role is the current one. ctx.state.user is the UserRecord,
 * ctx.state.jwt the verified claims.
 *
 * A token koa-jwt accepted is remembered (token → claims) until its `exp`: verifying the same string again
 * with the same key and options can only give the same answer until then, so repeat requests skip the
 * decode + HMAC + claim checks (about a tenth of a send). Expiry is re-checked on every use exactly as
 * jsonwebtoken does it; the map is bounded and lives only in memory.
 */
import type { Middleware } from 'koa';
import koaJwt from 'koa-jwt';
import { VoxaError } from '../errors.js';
import type { HubCore } from '../hub.js';
import { jwtKey, jwtVerifyOptions, userForClaims, type AccessClaims } from '../auth/tokens.js';

/** Tokens remembered at most (oldest dropped first). */
const VERIFIED_MAX = 10_000;

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
  const verified = new Map<string, AccessClaims>();

  const loadUser = async (ctx: Parameters<Middleware>[0], next: () => Promise<unknown>) => {
    const user = await userForClaims(hub, ctx.state.jwt);
    if (!user) throw new VoxaError('UNAUTHENTICATED');
    ctx.state.user = user;
    return next();
  };
  return function authenticateRequest(ctx, next) {
    const token = bearerToken(ctx.get('Authorization'));
    if (token !== null) {
      const claims = verified.get(token);
      if (claims) {
        // jsonwebtoken's rule: expired once the current whole second reaches exp.
        if (Math.floor(Date.now() / 1000) < claims.exp) {
          ctx.state.jwt = claims;
          return loadUser(ctx, next);
        }
        verified.delete(token);
      }
    }
    return verify(ctx, () => {
      const claims = ctx.state.jwt as AccessClaims | undefined;
      if (token !== null && claims && typeof claims.exp === 'number') {
        if (verified.size >= VERIFIED_MAX) verified.delete(verified.keys().next().value!);
        verified.set(token, Object.freeze(claims));
      }
      return loadUser(ctx, next);
    });
  };
}

/**
 * The token of an `Authorization: Bearer <token>` header, split the way koa-jwt splits it (so a header koa-jwt
 * would reject never reaches the remembered tokens), or null.
 */
function bearerToken(header: string): string | null {
  if (!header) return null;
  const parts = header.trim().split(' ');
  if (parts.length !== 2 || !/^Bearer$/i.test(parts[0]!)) return null;
  return parts[1] || null;
}
