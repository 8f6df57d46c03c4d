/** /v1/auth/* and /v1/me: registration, sign-in, token refresh, sign-out and the caller's own account. */
import type { AuthService } from '../auth/service.js';
import { publicUser } from '../domain.js';
import type { ApiRouter } from '../http/api-router.js';
import { LoginBody, LogoutBody, RefreshBody, RegisterBody, SessionResponse, UserResponse } from './schemas.js';

export function authRoutes(api: ApiRouter, auth: AuthService): void {
  api.add({
    method: 'post',
    path: '/v1/auth/register',
    tag: 'auth',
    summary: 'Create an account in the default workspace (role customer) and sign in.',
    auth: false,
    body: RegisterBody,
    responses: { 201: { description: 'Registered and signed in.', schema: SessionResponse } },
    errors: ['REGISTRATION_CLOSED', 'INVITE_REQUIRED', 'EMAIL_TAKEN', 'RATE_LIMITED'],
    async handler(ctx, { body }) {
      ctx.status = 201;
      ctx.body = await auth.register(body, ctx.ip);
    },
  });

  api.add({
    method: 'post',
    path: '/v1/auth/login',
    tag: 'auth',
    summary: 'Sign in with email and password.',
    auth: false,
    body: LoginBody,
    responses: { 200: { description: 'Signed in.', schema: SessionResponse } },
    errors: ['INVALID_CREDENTIALS', 'ACCOUNT_DISABLED', 'OTP_REQUIRED', 'INVALID_OTP', 'RATE_LIMITED'],
    async handler(ctx, { body }) {
      ctx.body = await auth.login(body, ctx.ip);
    },
  });

  api.add({
    method: 'post',
    path: '/v1/auth/refresh',
    tag: 'auth',
    summary: 'Trade a refresh token for a new pair (the old refresh token is used up).',
    auth: false,
    body: RefreshBody,
    responses: { 200: { description: 'A new access and refresh token.', schema: SessionResponse } },
    errors: ['INVALID_REFRESH_TOKEN', 'REFRESH_TOKEN_REUSED', 'CONFLICT'],
    async handler(ctx, { body }) {
      ctx.body = await auth.refresh(body.refreshToken);
    },
  });

  api.add({
    method: 'post',
    path: '/v1/auth/logout',
    tag: 'auth',
    summary: "Sign out: revokes the given refresh token's family, or the session the access token belongs to.",
    auth: true,
    body: LogoutBody,
    responses: { 204: { description: 'Signed out.' } },
    errors: ['INVALID_REFRESH_TOKEN'],
    async handler(ctx, { body }) {
      await auth.logout(ctx.state.user!, ctx.state.jwt?.fid, body?.refreshToken);
      ctx.status = 204;
    },
  });

  api.add({
    method: 'get',
    path: '/v1/me',
    tag: 'auth',
    summary: 'The signed-in account.',
    auth: true,
    responses: { 200: { description: 'The caller.', schema: UserResponse } },
    handler(ctx) {
      ctx.body = { user: publicUser(ctx.state.user!) };
    },
  });
}
