/**
 * The connector framework's one small interface. A connector is a declaration: what it is called, how it
 * authenticates, what its configuration looks like (a zod schema that also yields JSON Schema for the CLI's
 * prompts, `--config` input and the docs), which config fields are secret, how to check credentials against
 * the real service, and the rate limit its provider imposes. Connections (connectors configured in a
 * workspace) are kept by connectors/connections.ts.
 */
import { z } from 'zod';
import type { Hub } from '../core/hub.js';
import { PermanentError, RetryableError } from '../plugins/runtime/types.js';

export { PermanentError, RetryableError };

export type AuthKind = 'oauth2' | 'apiKey' | 'secret' | 'serviceAccount';

/** A provider's OAuth2 endpoints and scopes (authorization code with PKCE, loopback redirect). */
export interface OAuthSpec {
  authorizeUrl: string;
  tokenUrl: string;
  scopes: string[];
  /** Extra authorize-URL parameters (e.g. Google's access_type=offline for a refresh token). */
  extraAuthorizeParams?: Record<string, string>;
  /** Config field names that may override the endpoints (tests point them at stand-ins). */
  authorizeUrlField?: string;
  tokenUrlField?: string;
}

export type ConnectionStatus = 'active' | 'disabled' | 'broken';

/** A connection as stored (secrets sealed) and as listed (secrets never included). */
export interface ConnectionRecord {
  id: string;
  workspaceId: string;
  connector: string;
  name: string;
  /** Non-secret configuration. */
  config: Record<string, unknown>;
  /** Names of the secret fields that have a value (so listings can say "set" without the value). */
  secretFields: string[];
  /** Secret fields sealed together as one JSON object (connectors/crypto.ts). */
  sealed: string | null;
  status: ConnectionStatus;
  /** Why the connection is disabled or broken (e.g. "grant revoked: invalid_grant"). */
  statusReason: string | null;
  createdAt: string;
  updatedAt: string;
}

/** A connection with its secrets opened, for connector code only. Never log or print it. */
export interface ResolvedConnection<C = Record<string, unknown>> {
  record: ConnectionRecord;
  /** Config and secrets merged. */
  config: C;
}

export interface TestResult {
  ok: boolean;
  /** What was checked, in a sentence (account name, HTTP status…). */
  detail: string;
}

export interface ConnectorContext {
  hub: Hub;
  /** Persists a change of secrets (a refreshed OAuth2 token) and returns the updated connection. */
  saveSecrets(patch: Record<string, unknown>): Promise<void>;
  /** Marks the connection broken with a reason (a revoked grant); it stays broken until reconnected. */
  markBroken(reason: string): Promise<void>;
}

export interface Connector<S extends z.ZodObject = z.ZodObject> {
  /** Registry id, [a-z0-9-]: `voxa connections add <id>`. */
  id: string;
  displayName: string;
  description: string;
  authKind: AuthKind;
  /** Everything a connection holds, secrets included; secret fields are listed in `secretFields`. */
  configSchema: S;
  secretFields: string[];
  /** Fields filled by the OAuth2 flow rather than by the user (tokens); not prompted for. */
  oauthFields?: string[];
  /**
   * Fields that say where the connection's requests, and with them its credentials, are sent (API base and
   * OAuth endpoint overrides, for proxies and test stand-ins). The hub operator sets them with the CLI; the
   * REST API refuses them, so a workspace admin can neither aim the hub at internal addresses nor send a
   * stored refresh token or client secret to a server of their own.
   */
  endpointFields?: string[];
  oauth?: OAuthSpec;
  /** The provider's quota, enforced by the connector's BullMQ queue limiter. */
  rateLimit?: { max: number; durationMs: number };
  /** Checks the credentials against the real service. Never throws for a bad credential; says so instead. */
  test(conn: ResolvedConnection<z.infer<S>>, ctx: ConnectorContext): Promise<TestResult>;
}

/** JSON Schema of a connector's config for prompts and docs; secret fields carry `writeOnly` and `x-secret`, endpoint overrides `x-operator-only`. */
export function jsonSchemaOf(c: Connector): Record<string, unknown> {
  const schema = z.toJSONSchema(c.configSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown> & {
    properties?: Record<string, Record<string, unknown>>;
    required?: string[];
  };
  for (const f of c.secretFields) {
    const p = schema.properties?.[f];
    if (p) Object.assign(p, { writeOnly: true, 'x-secret': true });
  }
  for (const f of c.oauthFields ?? []) {
    const p = schema.properties?.[f];
    if (p) Object.assign(p, { readOnly: true, 'x-oauth': true });
  }
  for (const f of c.endpointFields ?? []) {
    const p = schema.properties?.[f];
    if (p) Object.assign(p, { 'x-operator-only': true });
  }
  return schema;
}

/** A credential was revoked or expired and cannot be refreshed: the connection is marked broken. */
export class AuthExpiredError extends PermanentError {
  constructor(message: string) {
    super(message);
    this.name = 'AuthExpiredError';
  }
}

/** Parses Retry-After (seconds or an HTTP date) into milliseconds; undefined when absent or unreadable. */
export function retryAfterMs(value: string | null | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const s = value.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  const at = Date.parse(s);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/**
 * Maps a provider's HTTP answer to the error a handler or job should throw: 401 → AuthExpiredError (after a
 * refresh was already tried), 408/425/429/5xx → RetryableError honouring Retry-After, other 4xx → PermanentError.
 */
export function errorForStatus(status: number, what: string, retryAfter?: string | null): Error {
  if (status === 401) return new AuthExpiredError(`${what}: unauthorized (401)`);
  if (status === 408 || status === 425 || status === 429 || status >= 500) {
    return new RetryableError(`${what}: HTTP ${status}`, retryAfterMs(retryAfter));
  }
  return new PermanentError(`${what}: HTTP ${status}`);
}

/** Exponential backoff with full jitter: a random delay in [base·2^(n-1)/2, base·2^(n-1)], capped. */
export function backoffWithJitter(attempt: number, baseMs = 1000, capMs = 15 * 60_000, rand = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + (rand() * ceiling) / 2);
}

/** Passes a connector object through with its types checked (the registry lists them explicitly). */
export function defineConnector<S extends z.ZodObject>(c: Connector<S>): Connector<S> {
  if (!/^[a-z0-9-]{1,40}$/.test(c.id)) throw new Error(`bad connector id ${c.id}`);
  for (const f of c.secretFields) if (!(f in c.configSchema.shape)) throw new Error(`${c.id}: secret field ${f} is not in the schema`);
  return c;
}
