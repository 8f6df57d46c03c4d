/**
 * Every error code the hub answers with, in one place. A test checks each code is unique and documented
 * in docs/errors.md. Handlers throw `VoxaError`; one middleware renders `{"error":{code,message,details?}}`.
 */
export const ERROR_CODES = {
  VALIDATION_FAILED: { status: 400, message: 'The request does not match the expected schema.' },
  MALFORMED_JSON: { status: 400, message: 'The body is not valid JSON.' },
  JSON_TOO_DEEP: { status: 400, message: 'The JSON body is nested too deeply.' },
  MALFORMED_REQUEST: { status: 400, message: 'The HTTP request is malformed; the connection is closed.' },
  EXPECTATION_FAILED: { status: 417, message: 'The request expects something of the server it does not do; the connection is closed.' },
  HEADERS_TOO_LARGE: { status: 431, message: 'The request headers are larger than the server accepts; the connection is closed.' },
  REQUEST_TIMEOUT: { status: 408, message: 'The request did not arrive in time; the connection is closed.' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'The body must be application/json.' },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'The body is larger than the configured limit.' },
  UNAUTHENTICATED: { status: 401, message: 'A valid access token is required.' },
  INVALID_CREDENTIALS: { status: 401, message: 'Email or password is wrong.' },
  OTP_REQUIRED: { status: 401, message: 'A one-time code is required for this account.' },
  INVALID_OTP: { status: 401, message: 'The one-time code is wrong or already used.' },
  INVALID_REFRESH_TOKEN: { status: 401, message: 'The refresh token is unknown, expired or revoked.' },
  ACCOUNT_DISABLED: { status: 403, message: 'This account is disabled.' },
  REFRESH_TOKEN_REUSED: { status: 401, message: 'The refresh token was already used; its whole family is revoked.' },
  FORBIDDEN: { status: 403, message: 'You may not do this.' },
  REGISTRATION_CLOSED: { status: 403, message: 'Registration is closed on this hub.' },
  INVITE_REQUIRED: { status: 403, message: 'Registration is by invitation only.' },
  NOT_A_MEMBER: { status: 403, message: 'You are not a member of this conversation.' },
  NOT_FOUND: { status: 404, message: 'Not found.' },
  CONVERSATION_NOT_FOUND: { status: 404, message: 'No such conversation.' },
  MESSAGE_NOT_FOUND: { status: 404, message: 'No such message.' },
  USER_NOT_FOUND: { status: 404, message: 'No such user.' },
  EMAIL_TAKEN: { status: 409, message: 'An account with this email already exists.' },
  CONFLICT: { status: 409, message: 'The request conflicts with the current state.' },
  MESSAGE_DELETED: { status: 409, message: 'The message was deleted.' },
  RATE_LIMITED: { status: 429, message: 'Too many requests; slow down.' },
  SLOW_CONSUMER: { status: 429, message: 'The connection could not keep up with its messages; reconnect and resume.' },
  METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed on this path.' },
  INTERNAL: { status: 500, message: 'Internal error.' },
  UNAVAILABLE: { status: 503, message: 'A dependency is unavailable.' },
  FILE_TOO_LARGE: { status: 413, message: 'The file is larger than the upload limit.' },
  FILE_TYPE_REFUSED: { status: 415, message: 'Files of this type are not accepted (executables, scripts, HTML, SVG).' },
  FILE_NOT_FOUND: { status: 404, message: 'No such file.' },
  SIGN_IN_FAILED: { status: 401, message: 'Signing in with the identity provider failed.' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export class VoxaError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message?: string,
    readonly details?: unknown,
    /** Extra response headers, e.g. Retry-After. */
    readonly headers?: Record<string, string>,
  ) {
    super(message ?? ERROR_CODES[code].message);
    this.name = 'VoxaError';
    this.status = ERROR_CODES[code].status;
  }

  toJSON(): { error: { code: string; message: string; details?: unknown } } {
    return { error: { code: this.code, message: this.message, ...(this.details === undefined ? {} : { details: this.details }) } };
  }
}

export function isVoxaError(err: unknown): err is VoxaError {
  return err instanceof VoxaError;
}
