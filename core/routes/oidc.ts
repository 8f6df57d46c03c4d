/** /v1/auth/google/*: Sign in with Google (OIDC authorization code + PKCE). 404 while not configured. */
import { z } from 'zod';
import { GoogleSignIn, FLOW_TTL_MS, OIDC_COOKIE } from '../auth/oidc.js';
import type { ApiRouter } from '../http/api-router.js';
import { SessionResponse } from './schemas.js';

const CallbackQuery = z
  .object({
    code: z.string().min(1).max(2048).optional(),
    state: z.string().min(1).max(512).optional(),
    error: z.string().max(200).optional(),
  })
  // Providers add parameters of their own (scope, authuser, prompt, …); they are ignored, not refused.
  .passthrough();

export function oidcRoutes(api: ApiRouter, google: GoogleSignIn): void {
  const cookieOpts = (secure: boolean) => ({ httpOnly: true, sameSite: 'lax' as const, secure, path: '/v1/auth/google', overwrite: true });

  api.add({
    method: 'get',
    path: '/v1/auth/google/start',
    tag: 'auth',
    summary: 'Start signing in with Google: redirects to Google and sets the HttpOnly cookie that binds the flow to this browser.',
    auth: false,
    responses: { 302: { description: 'Redirect to the provider.' } },
    errors: ['NOT_FOUND', 'UNAVAILABLE'],
    async handler(ctx) {
      const { url, cookie } = await google.start(`${ctx.protocol}://${ctx.host}`);
      ctx.cookies.set(OIDC_COOKIE, cookie, { ...cookieOpts(ctx.secure), maxAge: FLOW_TTL_MS });
      ctx.redirect(url);
    },
  });

  api.add({
    method: 'get',
    path: '/v1/auth/google/callback',
    tag: 'auth',
    summary: 'Where Google redirects back: checks state, exchanges the code, verifies the ID token, signs in.',
    auth: false,
    query: CallbackQuery,
    responses: { 200: { description: 'Signed in.', schema: SessionResponse } },
    errors: ['NOT_FOUND', 'SIGN_IN_FAILED', 'ACCOUNT_DISABLED', 'REGISTRATION_CLOSED', 'INVITE_REQUIRED', 'UNAVAILABLE'],
    async handler(ctx, { query }) {
      const cookie = ctx.cookies.get(OIDC_COOKIE);
      // The flow cookie is single-use whatever happens next.
      ctx.cookies.set(OIDC_COOKIE, null, cookieOpts(ctx.secure));
      ctx.body = await google.callback(
        { ...(query.code ? { code: query.code } : {}), ...(query.state ? { state: query.state } : {}), ...(query.error ? { error: query.error } : {}) },
        cookie,
        `${ctx.protocol}://${ctx.host}`,
        ctx.ip,
      );
    },
  });
}
