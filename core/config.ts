/**
 * One validated configuration for every Voxa process.
 *
 * Each field has a default, an environment variable and a sentence saying what it does. Values come from
 * (lowest to highest precedence) the defaults, an optional JSON file named by `VOXA_CONFIG`, and the
 * environment. A wrong value stops start-up with a message that names the field.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { parseTrustProxy } from './http/client-ip.js';
import { redisUrlProblem } from './redis-url.js';

/**
 * How a field may be shown outside the process (`voxa config check`, logs): `secret` only as "[set]", `url`
 * without the credentials in it. Marked here, next to the field, so a new secret field cannot be forgotten.
 */
export type Sensitivity = 'secret' | 'url';
type FieldDoc = { env: string; doc: string; sensitive?: Sensitivity };

const bool = z.union([z.boolean(), z.enum(['1', '0', 'true', 'false', 'yes', 'no'])]).transform((v) =>
  typeof v === 'boolean' ? v : ['1', 'true', 'yes'].includes(v),
);
/**
 * A whole number from a config file (a JSON number) or the environment (decimal digits, surrounding spaces
 * allowed): `1e3`, `0x10` or `1.0` are refused as the API refuses them in a query, not read as 1000 or 16.
 */
const int = (min: number, max: number) =>
  z
    .union([z.number(), z.string().trim().regex(/^-?\d+$/, 'a whole number in decimal digits')])
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));

/**
 * The connector-secrets key as its 32 bytes, or null when the value is not that much base64. One rule for the
 * schema (a key given in the config) and ensureSecrets (a key kept under dataDir), so `voxa config check`
 * refuses exactly what `voxa start` would.
 */
export function secretKeyBytes(value: string): Buffer | null {
  const key = Buffer.from(value, 'base64');
  return key.length === 32 ? key : null;
}

/**
 * True for a browser origin as the Origin header carries it (`scheme://host[:port]`, lower case, no path or
 * trailing slash) or `*`. The edge compares the header with these strings as they are, so any other form
 * (`https://app.example.com/`, `app.example.com`) would never match and is refused at start instead.
 */
export function isOrigin(value: string): boolean {
  if (value === '*') return true;
  try {
    const origin = new URL(value).origin;
    return origin !== 'null' && origin === value;
  } catch {
    return false;
  }
}

/** The placeholder of appConversationUrl that a conversation's id (URL-encoded) replaces. */
export const CONVERSATION_ID_PLACEHOLDER = '{conversationId}';

/**
 * True for an http(s) URL template holding {conversationId} outside its origin: the URL must parse whatever the
 * id, and two different ids must land on the same scheme, host and port.
 */
export function isConversationUrlTemplate(value: string): boolean {
  if (!value.includes(CONVERSATION_ID_PLACEHOLDER)) return false;
  try {
    const [a, b] = ['a1', 'b2'].map((id) => new URL(value.replaceAll(CONVERSATION_ID_PLACEHOLDER, id)));
    return (a!.protocol === 'https:' || a!.protocol === 'http:') && a!.origin === b!.origin;
  } catch {
    return false;
  }
}

/** Field name → env var and description. The schema below carries the defaults. */
export const CONFIG_DOCS: Record<string, FieldDoc> = {
  port: { env: 'PORT', doc: 'TCP port the API and the WebSocket edge listen on.' },
  host: { env: 'HOST', doc: 'Address the API binds to.' },
  dataDir: { env: 'VOXA_DATA_DIR', doc: 'Directory for the SQLite store, the embedded NATS and Redis data.' },
  natsUrl: { env: 'NATS_URL', doc: 'External NATS server, or a comma-separated list of the servers of a NATS cluster; when unset, `voxa start` spawns nats-server -c nats.conf.', sensitive: 'url' },
  redisUrl: { env: 'REDIS_URL', doc: 'External Redis (redis:// or rediss://), or its primary through Sentinel (redis-sentinel://host:26379,…/<master name>); when unset, `voxa start` spawns redis-server.', sensitive: 'url' },
  workerMetricsPort: { env: 'VOXA_METRICS_PORT', doc: 'Port of the /metrics endpoint of a process without the API (`voxa worker`); 0 picks a free port.' },
  embeddedNatsPort: { env: 'VOXA_EMBEDDED_NATS_PORT', doc: 'Client port of the nats-server that `voxa start` spawns when NATS_URL is unset.' },
  embeddedNatsMonitorPort: { env: 'VOXA_EMBEDDED_NATS_MONITOR_PORT', doc: 'HTTP monitoring port (/varz, /jsz) of the embedded nats-server, on 127.0.0.1.' },
  embeddedRedisPort: { env: 'VOXA_EMBEDDED_REDIS_PORT', doc: 'Port of the redis-server that `voxa start` spawns when REDIS_URL is unset.' },
  mongoUrl: { env: 'MONGO_URL', doc: 'MongoDB connection string; when set the MongoDB store is used instead of SQLite.', sensitive: 'url' },
  mongoDb: { env: 'MONGO_DB', doc: 'Database name inside MongoDB.' },
  natsReplicas: { env: 'VOXA_NATS_REPLICAS', doc: 'Copies a NATS cluster keeps of each stream the hub declares (and of the plugin runtime\'s control bucket): 1 on a single server, 3 on a three-node cluster (at most the number of JetStream servers).' },
  natsNamespace: { env: 'VOXA_NATS_NAMESPACE', doc: 'Prefix for stream names and subjects, so several hubs (or tests) can share one NATS server.' },
  jwtSecret: { env: 'VOXA_JWT_SECRET', doc: 'HS256 signing key for access tokens (min 32 chars). Generated and kept under dataDir when unset.', sensitive: 'secret' },
  jwtIssuer: { env: 'VOXA_JWT_ISSUER', doc: 'The `iss` claim access tokens carry and that is required on verify.' },
  jwtAudience: { env: 'VOXA_JWT_AUDIENCE', doc: 'The `aud` claim access tokens carry and that is required on verify.' },
  accessTokenTtlSeconds: { env: 'VOXA_ACCESS_TTL', doc: 'Lifetime of an access token in seconds.' },
  refreshTokenTtlSeconds: { env: 'VOXA_REFRESH_TTL', doc: 'Lifetime of a refresh token in seconds.' },
  refreshReuseGraceSeconds: { env: 'VOXA_REFRESH_REUSE_GRACE', doc: 'Seconds after a refresh token was used during which presenting it again counts as a lost race between two concurrent refreshes (409, the session stays valid) rather than theft (the family is revoked); 0 treats every reuse as theft.' },
  registration: { env: 'VOXA_REGISTRATION', doc: 'Who may register: open, invite (only pre-registered emails) or closed.' },
  defaultWorkspaceId: { env: 'VOXA_DEFAULT_WORKSPACE', doc: 'Id of the workspace created on first start; new registrations join it.' },
  bodyLimitBytes: { env: 'VOXA_BODY_LIMIT', doc: 'Largest accepted JSON request body in bytes; larger bodies get 413.' },
  maxMessageLength: { env: 'VOXA_MAX_MESSAGE_LENGTH', doc: 'Longest message text in characters.' },
  authRateLimitPerMinute: { env: 'VOXA_AUTH_RATE_LIMIT', doc: 'Login/registration attempts allowed per IP and per account per minute.' },
  trustProxy: { env: 'VOXA_TRUST_PROXY', doc: 'Reverse proxies whose X-Forwarded-For names the client (for per-IP limits, audit and logs): off, a hop count, or comma-separated proxy addresses/CIDRs (aliases loopback, private); the rightmost untrusted hop is the client.' },
  pruneIntervalMs: { env: 'VOXA_PRUNE_INTERVAL_MS', doc: 'How often each hub process deletes expired one-time sign-in records (used TOTP steps, settled recovery codes, used Google sign-in states); 0 turns pruning off.' },
  sendRateLimitPerMinute: { env: 'VOXA_SEND_RATE_LIMIT', doc: 'Messages one user may send per minute (REST and sockets together).' },
  publishAckWaitMs: { env: 'VOXA_PUBLISH_ACK_WAIT_MS', doc: 'How long a send waits for the JetStream ack before answering anyway (the outbox finishes the job).' },
  stopTimeoutMs: { env: 'VOXA_STOP_TIMEOUT_MS', doc: 'How long a stop (SIGINT/SIGTERM) may take before the process ends anyway, stopping its embedded nats-server and redis-server first.' },
  outboxSweepMs: { env: 'VOXA_OUTBOX_SWEEP_MS', doc: 'How often the outbox sweeper looks for committed events that were not confirmed published.' },
  outboxGraceMs: { env: 'VOXA_OUTBOX_GRACE_MS', doc: 'Age an unconfirmed outbox entry must reach before the sweeper republishes it.' },
  corsOrigins: { env: 'VOXA_ORIGINS', doc: 'Comma-separated browser origins allowed for CORS and WebSocket handshakes; empty allows same-origin and non-browser clients only.' },
  plugins: { env: 'VOXA_PLUGINS', doc: 'Comma-separated plugins `voxa start` runs in-process; "all" runs every built-in plugin.' },
  logLevel: { env: 'LOG_LEVEL', doc: 'pino log level: fatal, error, warn, info, debug, trace or silent.' },
  secretKey: { env: 'VOXA_SECRET_KEY', doc: 'Key (base64, 32 bytes) that encrypts connector secrets at rest. Generated and kept under dataDir when unset.', sensitive: 'secret' },
  previousSecretKeys: { env: 'VOXA_PREVIOUS_SECRET_KEYS', doc: 'Comma-separated earlier secret keys (base64) still accepted for decryption while `voxa connections rotate-keys` re-encrypts under secretKey.', sensitive: 'secret' },
  tracing: { env: 'VOXA_TRACING', doc: 'Start OpenTelemetry tracing (export configured by the standard OTEL_* variables).' },
  webhooksAllowPrivate: { env: 'VOXA_WEBHOOKS_ALLOW_PRIVATE', doc: 'Allow webhook targets on private, loopback and link-local addresses.' },
  webhookDeliveryRetentionDays: { env: 'VOXA_WEBHOOK_DELIVERY_RETENTION_DAYS', doc: 'Days a settled webhook delivery (succeeded or failed) and its idempotency key are kept before the webhooks plugin deletes them; pending ones are never deleted. 0 keeps them forever.' },
  publicUrl: { env: 'VOXA_PUBLIC_URL', doc: 'Base URL users reach the hub at; used in links (emails, OAuth redirects).', sensitive: 'url' },
  appConversationUrl: { env: 'VOXA_APP_CONVERSATION_URL', doc: 'Where your chat app opens a conversation, as an http(s) URL with {conversationId} in place of the id (e.g. https://app.example.com/chats/{conversationId}); email digests link each conversation there. Unset, digests carry no conversation links (the hub itself serves no pages for them).', sensitive: 'url' },
  smtpUrl: { env: 'VOXA_SMTP_URL', doc: 'SMTP server for email digests (smtp:// or smtps://, credentials in the URL; never logged). Unset turns email off.', sensitive: 'secret' },
  emailFrom: { env: 'VOXA_EMAIL_FROM', doc: 'From address of notification emails.' },
  emailDigestDelaySeconds: { env: 'VOXA_EMAIL_DELAY', doc: 'Default wait before an unread-message digest is emailed (users can change theirs); reading in time cancels it.' },
  uploadMaxBytes: { env: 'VOXA_UPLOAD_MAX_BYTES', doc: 'Largest file one upload may be, in bytes (a workspace may set a lower limit); larger uploads are cut off with 413.' },
  blobStore: { env: 'VOXA_BLOB_STORE', doc: 'Where uploaded files live: local (a directory under dataDir) or s3 (an S3-compatible service, see the s3* fields).' },
  s3Endpoint: { env: 'VOXA_S3_ENDPOINT', doc: 'S3-compatible endpoint URL, e.g. https://s3.eu-central-1.amazonaws.com or http://minio:9000.', sensitive: 'url' },
  s3Region: { env: 'VOXA_S3_REGION', doc: 'Region used in S3 request signatures.' },
  s3Bucket: { env: 'VOXA_S3_BUCKET', doc: 'Bucket uploaded files are stored in.' },
  s3AccessKeyId: { env: 'VOXA_S3_ACCESS_KEY_ID', doc: 'Access key id for the S3 bucket.' },
  s3SecretAccessKey: { env: 'VOXA_S3_SECRET_ACCESS_KEY', doc: 'Secret access key for the S3 bucket (never logged).', sensitive: 'secret' },
  s3PathStyle: { env: 'VOXA_S3_PATH_STYLE', doc: 'Use path-style S3 URLs (endpoint/bucket/key), which every S3-compatible service accepts; false uses bucket subdomains.' },
  googleIssuer: { env: 'VOXA_GOOGLE_ISSUER', doc: 'OpenID Connect issuer for "Sign in with Google"; its /.well-known/openid-configuration is read at first use.' },
  googleClientId: { env: 'VOXA_GOOGLE_CLIENT_ID', doc: 'OAuth client id for "Sign in with Google"; unset turns it off (404).' },
  googleClientSecret: { env: 'VOXA_GOOGLE_CLIENT_SECRET', doc: 'OAuth client secret for "Sign in with Google" (never logged).', sensitive: 'secret' },
  fcmCredentials: { env: 'VOXA_FCM_CREDENTIALS', doc: 'Firebase service account for push: a path to its JSON file or the JSON itself (never logged). Unset turns push off.', sensitive: 'secret' },
};

export const ConfigSchema = z
  .object({
    port: int(0, 65535).default(8080),
    host: z.string().min(1).default('0.0.0.0'),
    dataDir: z.string().min(1).default('./data'),
    natsUrl: z.string().optional(),
    redisUrl: z
      .string()
      .superRefine((v, ctx) => {
        const problem = redisUrlProblem(v);
        if (problem) ctx.addIssue({ code: 'custom', message: problem });
      })
      .optional(),
    workerMetricsPort: int(0, 65535).default(9464),
    embeddedNatsPort: int(1, 65535).default(4222),
    embeddedNatsMonitorPort: int(1, 65535).default(8222),
    embeddedRedisPort: int(1, 65535).default(6390),
    mongoUrl: z.string().optional(),
    mongoDb: z.string().min(1).default('voxa'),
    natsReplicas: int(1, 5).default(1),
    natsNamespace: z
      .string()
      .regex(/^[A-Za-z0-9_-]*$/, 'letters, digits, _ and - only')
      .default(''),
    jwtSecret: z.string().min(32, 'must be at least 32 characters').optional(),
    jwtIssuer: z.string().min(1).default('voxa-hub'),
    jwtAudience: z.string().min(1).default('voxa-api'),
    accessTokenTtlSeconds: int(30, 86400).default(900),
    refreshTokenTtlSeconds: int(60, 365 * 86400).default(30 * 86400),
    refreshReuseGraceSeconds: int(0, 60).default(5),
    registration: z.enum(['open', 'invite', 'closed']).default('open'),
    defaultWorkspaceId: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,64}$/, 'letters, digits, _ and - only')
      .default('default'),
    bodyLimitBytes: int(1024, 64 * 1024 * 1024).default(256 * 1024),
    maxMessageLength: int(1, 1_000_000).default(10_000),
    authRateLimitPerMinute: int(1, 1_000_000).default(20),
    trustProxy: z
      .union([z.boolean(), z.number(), z.string(), z.array(z.string())])
      .transform((v, ctx) => {
        try {
          return parseTrustProxy(v);
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: (err as Error).message });
          return z.NEVER;
        }
      })
      .default(false),
    pruneIntervalMs: int(0, 86_400_000).default(600_000),
    sendRateLimitPerMinute: int(1, 10_000_000).default(600),
    publishAckWaitMs: int(0, 60_000).default(1000),
    stopTimeoutMs: int(1000, 600_000).default(30_000),
    outboxSweepMs: int(50, 600_000).default(1000),
    outboxGraceMs: int(0, 600_000).default(2000),
    corsOrigins: z
      .union([z.array(z.string()), z.string()])
      .transform((v, ctx) => {
        const origins = Array.isArray(v) ? v : v.split(',').map((s) => s.trim()).filter(Boolean);
        const bad = origins.find((o) => !isOrigin(o));
        if (bad !== undefined) {
          ctx.addIssue({ code: 'custom', message: `${JSON.stringify(bad)} is not an origin: expected scheme://host[:port] as browsers send it (e.g. https://app.example.com), or *` });
          return z.NEVER;
        }
        return origins;
      })
      .default([]),
    plugins: z.string().default('all'),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    secretKey: z
      .string()
      .refine((v) => secretKeyBytes(v) !== null, 'must be 32 bytes, base64')
      .optional(),
    previousSecretKeys: z
      .union([z.array(z.string()), z.string()])
      .transform((v) => (Array.isArray(v) ? v : v.split(',').map((s) => s.trim()).filter(Boolean)))
      // Checked here, not first when a connection's secret is decrypted: the same rule as secretKey.
      .refine((keys) => keys.every((k) => secretKeyBytes(k) !== null), 'each must be 32 bytes, base64')
      .default([]),
    tracing: bool.default(false),
    webhooksAllowPrivate: bool.default(false),
    webhookDeliveryRetentionDays: int(0, 3650).default(30),
    publicUrl: z.string().url().optional(),
    appConversationUrl: z
      .string()
      .refine(isConversationUrlTemplate, 'an http(s) URL with {conversationId} where the id goes, e.g. https://app.example.com/chats/{conversationId}')
      .optional(),
    smtpUrl: z.string().regex(/^smtps?:\/\//, 'an smtp:// or smtps:// URL').optional(),
    emailFrom: z.string().min(3).default('Voxa Hub <no-reply@localhost>'),
    emailDigestDelaySeconds: int(0, 7 * 86400).default(300),
    fcmCredentials: z.string().min(1).optional(),
    uploadMaxBytes: int(1, 100 * 1024 * 1024 * 1024).default(25 * 1024 * 1024),
    blobStore: z.enum(['local', 's3']).default('local'),
    s3Endpoint: z.string().url().optional(),
    s3Region: z.string().min(1).default('us-east-1'),
    s3Bucket: z.string().min(1).optional(),
    s3AccessKeyId: z.string().min(1).optional(),
    s3SecretAccessKey: z.string().min(1).optional(),
    s3PathStyle: bool.default(true),
    googleIssuer: z.string().url().default('https://accounts.google.com'),
    googleClientId: z.string().min(1).optional(),
    googleClientSecret: z.string().min(1).optional(),
  })
  .strict();

export type Config = z.infer<typeof ConfigSchema>;
export type ConfigInput = z.input<typeof ConfigSchema>;

export class ConfigError extends Error {
  constructor(
    message: string,
    readonly field: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Reads the config from defaults, the optional `VOXA_CONFIG` JSON file, the environment and overrides. */
export function loadConfig(overrides: ConfigInput = {}, env: NodeJS.ProcessEnv = process.env): Config {
  let fromFile: Record<string, unknown> = {};
  if (env.VOXA_CONFIG) {
    try {
      fromFile = JSON.parse(readFileSync(env.VOXA_CONFIG, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new ConfigError(`config file ${env.VOXA_CONFIG} could not be read: ${(err as Error).message}`, 'VOXA_CONFIG');
    }
  }
  const fromEnv: Record<string, unknown> = {};
  for (const [field, { env: name }] of Object.entries(CONFIG_DOCS)) {
    const value = env[name];
    if (value !== undefined && value !== '') fromEnv[field] = value;
  }
  return parseConfig({ ...fromFile, ...fromEnv, ...overrides });
}

/** Validates a raw config object; the error names the first bad field and its env var. */
export function parseConfig(raw: unknown): Config {
  const result = ConfigSchema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const field = issue.path.join('.') || (issue.code === 'unrecognized_keys' ? issue.keys.join(',') : '(root)');
    const env = CONFIG_DOCS[field]?.env;
    throw new ConfigError(`invalid config field "${field}"${env ? ` (env ${env})` : ''}: ${issue.message}`, field);
  }
  return result.data;
}

/** Every field with its env var, default and description: for `voxa config defaults` and the docs. */
export function describeConfig(): Array<{ field: string; env: string; default: unknown; doc: string; sensitive?: Sensitivity }> {
  const defaults = ConfigSchema.parse({});
  return Object.entries(CONFIG_DOCS).map(([field, d]) => ({
    field,
    env: d.env,
    default: (defaults as Record<string, unknown>)[field],
    doc: d.doc,
    ...(d.sensitive ? { sensitive: d.sensitive } : {}),
  }));
}

/** The fields marked `sensitive`, by kind: for `redactConfig` and the log redaction (core/log.ts). */
export const SENSITIVE_FIELDS: Record<Sensitivity, string[]> = {
  secret: Object.entries(CONFIG_DOCS).filter(([, d]) => d.sensitive === 'secret').map(([f]) => f),
  url: Object.entries(CONFIG_DOCS).filter(([, d]) => d.sensitive === 'url').map(([f]) => f),
};

/**
 * A URL (or a comma-separated list, or a MongoDB multi-host string) with the credentials masked: the password
 * becomes `***`, and a lone user part too, since NATS takes a token in that place (`nats://token@host`).
 */
export function maskUrl(value: string): string {
  return value.replace(/([a-z][a-z0-9+.-]*:\/\/)([^@/\s]*)@/gi, (_m, scheme: string, userinfo: string) => {
    const colon = userinfo.indexOf(':');
    return `${scheme}${colon >= 0 ? `${userinfo.slice(0, colon)}:***` : '***'}@`;
  });
}

/** The config as it may be printed: secret fields as "[set]" (absent when unset), URLs without credentials. */
export function redactConfig(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = { ...config };
  for (const field of SENSITIVE_FIELDS.secret) {
    const v = out[field];
    out[field] = v === undefined || v === '' || (Array.isArray(v) && v.length === 0) ? undefined : '[set]';
  }
  for (const field of SENSITIVE_FIELDS.url) {
    if (typeof out[field] === 'string') out[field] = maskUrl(out[field]);
  }
  return out;
}
