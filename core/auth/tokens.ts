/**
 * Access and refresh tokens.
 *
 * Access tokens are short-lived JWTs (HS256 with the hub's secret; algorithm, issuer and audience pinned on
 * verify). They carry the user id, workspace and the refresh-token family they were issued with, so logout
 * can revoke "the current session" without the client sending the refresh token.
 *
 * Refresh tokens are opaque random strings; the store keeps only their SHA-256. Each refresh rotates the
 * token; presenting a used one again means it leaked, and the whole family is revoked (unless it comes within
 * seconds of its own use: then it lost a race with a concurrent refresh, see AuthService.refresh).
 */
import { createHash, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import jwt from 'jsonwebtoken';
import type { UserRecord } from '../domain.js';
import { VoxaError } from '../errors.js';
import type { HubCore } from '../hub.js';
import { newId } from '../ids.js';
import type { RefreshTokenRecord } from '../store/port.js';

/** The claims an access token carries. */
export interface AccessClaims {
  /** User id. */
  sub: string;
  /** Workspace id. */
  wid: string;
  /** Refresh-token family the token was issued with. */
  fid: string;
  /** When it was issued, in ms (iat has whole seconds): compared with an account's tokensValidAfter. */
  ims?: number;
  iss: string;
  aud: string | string[];
  iat: number;
  exp: number;
}

const keys = new WeakMap<object, KeyObject>();

/**
 * The JWT secret as a KeyObject, made once per hub. Handed a string, jsonwebtoken first tries to parse it as
 * a PEM public/private key and only falls back to a secret key after that throws, on every call: about ten
 * times the cost of the HMAC itself, which made authentication the slowest step of a send.
 */
export function jwtKey(hub: Pick<HubCore, 'secrets'>): KeyObject {
  let key = keys.get(hub.secrets);
  if (!key) {
    key = createSecretKey(Buffer.from(hub.secrets.jwtSecret, 'utf8'));
    keys.set(hub.secrets, key);
  }
  return key;
}

/** The exact verify options, shared by koa-jwt (REST) and verifyAccessToken (sockets). */
export function jwtVerifyOptions(hub: Pick<HubCore, 'config'>): { algorithms: ['HS256']; issuer: string; audience: string } {
  return { algorithms: ['HS256'], issuer: hub.config.jwtIssuer, audience: hub.config.jwtAudience };
}

/** Signs an access token for the user, bound to a refresh-token family. */
export function signAccessToken(hub: Pick<HubCore, 'config' | 'secrets'>, user: Pick<UserRecord, 'id' | 'workspaceId'>, familyId: string): string {
  return jwt.sign({ wid: user.workspaceId, fid: familyId, ims: Date.now() }, jwtKey(hub), {
    algorithm: 'HS256',
    subject: user.id,
    issuer: hub.config.jwtIssuer,
    audience: hub.config.jwtAudience,
    expiresIn: hub.config.accessTokenTtlSeconds,
  });
}

/**
 * The user an access token names, if it is still allowed in: disabled, deleted or invited-only → null.
 * Allowed users come from the hub's short-lived read cache when it has one (see core/auth/read-cache.ts for
 * how changes reach it); everything else is read from the store.
 */
export async function userForClaims(hub: Pick<HubCore, 'store' | 'caches'>, claims: unknown): Promise<UserRecord | null> {
  const sub = (claims as { sub?: unknown } | null)?.sub;
  if (typeof sub !== 'string') return null;
  const cache = hub.caches?.users;
  const hit = cache?.peek(sub);
  if (hit) return issuedInTime(hit, claims) ? hit : null;
  const epoch = cache?.epoch ?? 0;
  const user = await hub.store.getUser(sub);
  if (!user || user.disabled || user.passwordHash === null) return null;
  cache?.put(sub, user, epoch);
  return issuedInTime(user, claims) ? user : null;
}

/**
 * False for a token issued before the account's `tokensValidAfter` (it was disabled after the token was made).
 * Claims without `iat` (the edge re-checking an open session by user id) are not about a token: true.
 */
function issuedInTime(user: UserRecord, claims: unknown): boolean {
  if (!user.tokensValidAfter) return true;
  const { iat, ims } = claims as { iat?: unknown; ims?: unknown };
  if (typeof iat !== 'number') return true;
  // ims has the milliseconds; a token without it (none are made now) counts from the start of its second.
  return (typeof ims === 'number' ? ims : iat * 1000) > Date.parse(user.tokensValidAfter);
}

/**
 * Verifies an access token (signature, algorithm, issuer, audience, expiry) and loads its user. Used by the
 * WebSocket edge for handshakes. Throws VoxaError UNAUTHENTICATED for anything that does not check out.
 */
export async function verifyAccessToken(hub: HubCore, token: string): Promise<UserRecord> {
  if (typeof token !== 'string' || token.length === 0 || token.length > 4096) throw new VoxaError('UNAUTHENTICATED');
  let claims: unknown;
  try {
    claims = jwt.verify(token, jwtKey(hub), jwtVerifyOptions(hub));
  } catch {
    throw new VoxaError('UNAUTHENTICATED');
  }
  const user = await userForClaims(hub, claims);
  if (!user) throw new VoxaError('UNAUTHENTICATED');
  return user;
}

/** SHA-256 (hex) of a refresh token: what the store keeps and looks up by. */
export function hashRefreshToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** A new opaque refresh token and the record to store for it. */
export function newRefreshToken(
  hub: Pick<HubCore, 'config'>,
  userId: string,
  familyId: string = newId('fam'),
  now = new Date(),
): { token: string; record: RefreshTokenRecord } {
  const token = `rt_${randomBytes(32).toString('base64url')}`;
  return {
    token,
    record: {
      id: newId('rtk'),
      userId,
      familyId,
      tokenHash: hashRefreshToken(token),
      createdAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + hub.config.refreshTokenTtlSeconds * 1000).toISOString(),
      usedAt: null,
      revokedAt: null,
    },
  };
}
