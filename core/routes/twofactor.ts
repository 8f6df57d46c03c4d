/** /v1/me/2fa/*: enrol, confirm, inspect and disable two-factor sign-in (TOTP) for the caller's account. */
import { z } from 'zod';
import type { TotpService } from '../auth/totp.js';
import type { ApiRouter } from '../http/api-router.js';

const Code = z.string().min(1).max(32);

const EnrollResponse = z.object({ secret: z.string(), otpauthUri: z.string(), qrCode: z.string() });
const ConfirmResponse = z.object({ recoveryCodes: z.array(z.string()) });
const StatusResponse = z.object({ enabled: z.boolean(), pending: z.boolean(), recoveryCodesLeft: z.number().int() });

export function twoFactorRoutes(api: ApiRouter, totp: TotpService): void {
  api.add({
    method: 'get',
    path: '/v1/me/2fa',
    tag: 'auth',
    summary: 'Whether two-factor sign-in is on, and how many recovery codes are left.',
    auth: true,
    responses: { 200: { description: 'Two-factor status.', schema: StatusResponse } },
    handler(ctx) {
      ctx.body = totp.status(ctx.state.user!);
    },
  });

  api.add({
    method: 'post',
    path: '/v1/me/2fa/enroll',
    tag: 'auth',
    summary: 'Start enrolment: a new secret, its otpauth:// URI and a QR code (PNG data URL). Not active until confirmed.',
    auth: true,
    responses: { 200: { description: 'The secret to add to an authenticator app.', schema: EnrollResponse } },
    errors: ['CONFLICT'],
    async handler(ctx) {
      ctx.body = await totp.enroll(ctx.state.user!);
    },
  });

  api.add({
    method: 'post',
    path: '/v1/me/2fa/confirm',
    tag: 'auth',
    summary:
      'Turn two-factor sign-in on with the account password and a first valid code; answers the ten recovery codes, shown only this once. The password keeps a stolen access token from locking the owner out.',
    auth: true,
    body: z.object({ password: z.string().min(1).max(1024), code: Code }).strict(),
    responses: { 200: { description: 'Two-factor sign-in is on.', schema: ConfirmResponse } },
    errors: ['CONFLICT', 'INVALID_CREDENTIALS', 'INVALID_OTP', 'RATE_LIMITED'],
    async handler(ctx, { body }) {
      ctx.body = await totp.confirm(ctx.state.user!, body.password, body.code);
    },
  });

  api.add({
    method: 'post',
    path: '/v1/me/2fa/disable',
    tag: 'auth',
    summary: 'Turn two-factor sign-in off; needs the password and a current code (or a recovery code).',
    auth: true,
    body: z.object({ password: z.string().min(1).max(1024), code: Code }).strict(),
    responses: { 204: { description: 'Two-factor sign-in is off.' } },
    errors: ['CONFLICT', 'INVALID_CREDENTIALS', 'INVALID_OTP', 'RATE_LIMITED'],
    async handler(ctx, { body }) {
      await totp.disable(ctx.state.user!, body.password, body.code);
      ctx.status = 204;
    },
  });
}
