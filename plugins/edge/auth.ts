/**
 * Handshake checks for both transports: the access token and the Origin allow-list.
 */
import type { IncomingMessage } from 'node:http';
import type { UserRecord } from '../../core/domain.js';
import type { HubCore } from '../../core/hub.js';
import { verifyAccessToken } from '../../core/auth/tokens.js';

/**
 * Verifies an access token exactly like the REST API (HS256, issuer, audience, expiry, an existing enabled
 * account); throws VoxaError UNAUTHENTICATED. The token is never logged or echoed.
 */
export function verifyToken(hub: HubCore, token: string): Promise<UserRecord> {
  return verifyAccessToken(hub, token);
}

/**
 * When a token (already verified with verifyToken) expires, in ms since the epoch; Infinity without `exp`.
 * Read from the payload directly: the signature was checked a moment ago.
 */
export function tokenExpiry(token: string): number {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof payload.exp === 'number' ? payload.exp * 1000 : Infinity;
  } catch {
    return Infinity;
  }
}

/**
 * Cross-site WebSocket hijacking guard. Browsers always send Origin on a WebSocket handshake and cookies or
 * not, a page on another site must not open a socket as the user. Allowed: no Origin (non-browser clients,
 * which must still present a token), an origin in the allow-list, or the origin of the host being called.
 */
export function originAllowed(req: IncomingMessage, allowList: readonly string[]): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  if (allowList.includes('*') || allowList.includes(origin)) return true;
  let host: string;
  try {
    host = new URL(origin).host;
  } catch {
    return false; // "null" (sandboxed frames, file://) and junk
  }
  const hostHeader = req.headers.host;
  return typeof hostHeader === 'string' && hostHeader.length > 0 && host.toLowerCase() === hostHeader.toLowerCase();
}
