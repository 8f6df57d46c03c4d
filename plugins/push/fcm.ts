/**
 * FCM through firebase-admin: app set-up from a service-account credential, the message we send for a chat
 * message, and how FCM's errors map to what the plugin does.
 *
 * Retry-After: firebase-admin retries 503 answers itself (honouring Retry-After), but for 429 (quota) it
 * throws an error that does not carry the response headers. So every FCM request goes through our own
 * https.Agent, which watches responses for a Retry-After header. FCM quotas are per project, so one
 * "not before" time for the whole process is the right granularity: the plugin does not send before it.
 */
import { createSign, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ClientRequest, IncomingMessage } from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import { deleteApp, initializeApp, type App, type Credential, type GoogleOAuthAccessToken } from 'firebase-admin/app';
import { getMessaging, type Message, type Messaging } from 'firebase-admin/messaging';

/** Characters of message text in a push body. */
export const PUSH_PREVIEW_CHARS = 120;

/** An https.Agent that remembers the latest Retry-After any FCM (or token) response asked for. */
export class RetryAfterAgent extends https.Agent {
  /** Epoch ms before which FCM asked us not to send. */
  notBefore = 0;

  constructor(opts: https.AgentOptions & { connect?: (options: https.RequestOptions) => Duplex }) {
    super({ keepAlive: true, ...opts });
    // Tests point every connection at a local stand-in of Google's endpoints (TLS still verified).
    if (opts.connect) (this as unknown as { createConnection: unknown }).createConnection = opts.connect;
  }

  /** Called by Node for every request that uses this agent (not in the public typings, stable since Node 0.x). */
  addRequest(req: ClientRequest, options: unknown): void {
    req.once('response', (res: IncomingMessage) => {
      const until = parseRetryAfter(res.headers['retry-after']);
      if (until !== null) this.notBefore = Math.max(this.notBefore, until);
    });
    (https.Agent.prototype as unknown as { addRequest(r: ClientRequest, o: unknown): void }).addRequest.call(this, req, options);
  }
}

/** Retry-After as seconds or an HTTP date → epoch ms, or null when absent or unreadable. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | null {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v) return null;
  if (/^\d+$/.test(v.trim())) return now + Number(v.trim()) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : t;
}

export interface ServiceAccountJson {
  project_id: string;
  client_email: string;
  private_key: string;
  private_key_id?: string;
  token_uri?: string;
  [k: string]: unknown;
}

const GOOGLE_TOKEN_URI = 'https://oauth2.googleapis.com/token';
const FCM_SCOPES = 'https://www.googleapis.com/auth/firebase.messaging https://www.googleapis.com/auth/cloud-platform';

/**
 * The service-account OAuth flow (a signed JWT exchanged for an access token) over our own agent.
 * firebase-admin's cert() credential builds its Google auth client without the agent it is given, so its token
 * requests could not be observed or pointed at a stand-in; this implements the SDK's public Credential
 * interface instead. firebase-admin caches the token until shortly before it expires.
 */
export class ServiceAccountCredential implements Credential {
  constructor(
    private readonly account: ServiceAccountJson,
    private readonly agent: https.Agent,
  ) {}

  async getAccessToken(): Promise<GoogleOAuthAccessToken> {
    const tokenUri = this.account.token_uri ?? GOOGLE_TOKEN_URI;
    const now = Math.floor(Date.now() / 1000);
    const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const unsigned = `${part({ alg: 'RS256', typ: 'JWT', ...(this.account.private_key_id ? { kid: this.account.private_key_id } : {}) })}.${part({
      iss: this.account.client_email,
      scope: FCM_SCOPES,
      aud: tokenUri,
      iat: now,
      exp: now + 3600,
    })}`;
    const assertion = `${unsigned}.${createSign('RSA-SHA256').update(unsigned).sign(this.account.private_key, 'base64url')}`;
    const form = new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion }).toString();
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = https.request(tokenUri, { method: 'POST', agent: this.agent, timeout: 15_000, headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(form) } }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          if (text.length < 65_536) text += c; // a token answer is tiny; do not buffer a runaway body
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on('timeout', () => req.destroy(new Error('token request timed out')));
      req.on('error', reject);
      req.end(form);
    });
    let json: { access_token?: unknown; expires_in?: unknown; error?: unknown } = {};
    try {
      json = JSON.parse(body) as typeof json;
    } catch {
      // handled below
    }
    if (status !== 200 || typeof json.access_token !== 'string' || typeof json.expires_in !== 'number') {
      // Only the status and Google's error code: the response could echo parts of the assertion.
      throw new Error(`token endpoint answered ${status}${typeof json.error === 'string' ? ` (${json.error})` : ''}`);
    }
    return { access_token: json.access_token, expires_in: json.expires_in };
  }
}

/** Reads VOXA_FCM_CREDENTIALS: the JSON itself or a path to the file. Errors never echo the secret. */
export function readServiceAccount(value: string): ServiceAccountJson {
  let raw: string;
  if (value.trim().startsWith('{')) raw = value;
  else {
    try {
      raw = readFileSync(value, 'utf8');
    } catch (err) {
      throw new Error(`fcmCredentials: cannot read the service account file (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  let json: Partial<ServiceAccountJson>;
  try {
    json = JSON.parse(raw) as Partial<ServiceAccountJson>;
  } catch {
    throw new Error('fcmCredentials: the service account is not valid JSON');
  }
  for (const field of ['project_id', 'client_email', 'private_key'] as const) {
    if (typeof json[field] !== 'string' || !json[field]) throw new Error(`fcmCredentials: the service account has no ${field}`);
  }
  if (json.token_uri !== undefined && (typeof json.token_uri !== 'string' || !json.token_uri.startsWith('https://'))) {
    throw new Error('fcmCredentials: token_uri must be an https URL');
  }
  return json as ServiceAccountJson;
}

export interface FcmClient {
  messaging: Messaging;
  agent: RetryAfterAgent;
  projectId: string;
  close(): Promise<void>;
}

/** A firebase-admin app of its own (unique name), so several hubs or tests in one process do not collide. */
export function openFcm(account: ServiceAccountJson, connect?: (options: https.RequestOptions) => Duplex): FcmClient {
  const agent = new RetryAfterAgent(connect ? { connect } : {});
  const app: App = initializeApp(
    { credential: new ServiceAccountCredential(account, agent), projectId: account.project_id, httpAgent: agent },
    `voxa-push-${randomUUID()}`,
  );
  const messaging = getMessaging(app);
  return {
    messaging,
    agent,
    projectId: account.project_id,
    async close() {
      await deleteApp(app);
      agent.destroy();
    },
  };
}

/** Cuts text to at most `max` code points (never splitting an emoji), marking the cut. */
export function truncate(text: string, max = PUSH_PREVIEW_CHARS): string {
  const chars = [...text.replace(/\s+/g, ' ').trim()];
  return chars.length <= max ? chars.join('') : `${chars.slice(0, max - 1).join('')}…`;
}

export interface PushContent {
  token: string;
  conversationId: string;
  seq: number;
  high: boolean;
  /** Null when the workspace wants private pushes: no title from the chat, no text. */
  content: { title: string; body: string } | null;
}

/** The FCM message for one device. Collapsed per conversation on every platform. */
export function buildMessage(p: PushContent): Message {
  // webpush Topic: at most 32 URL-safe base64 characters; conversation ids fit, longer ones are cut.
  const topic = p.conversationId.replace(/[^A-Za-z0-9_-]/g, '').slice(0, 32);
  return {
    token: p.token,
    data: { conversationId: p.conversationId, seq: String(p.seq) },
    // A private push says only that something arrived: no sender, no conversation title, no text.
    notification: p.content ? { title: p.content.title, body: p.content.body } : { title: 'New message' },
    android: { collapseKey: p.conversationId, priority: p.high ? 'high' : 'normal', notification: { tag: p.conversationId } },
    apns: {
      headers: { 'apns-collapse-id': p.conversationId.slice(0, 64), 'apns-priority': p.high ? '10' : '5' },
      payload: { aps: { threadId: p.conversationId } },
    },
    webpush: { headers: { Topic: topic, Urgency: p.high ? 'high' : 'normal' } },
  };
}

/** What to do about an error from messaging.send(). */
export type FcmOutcome = 'remove-device' | 'retry' | 'give-up';

export function classifyFcmError(err: unknown): FcmOutcome {
  const code = (err as { code?: string; errorInfo?: { code?: string } }).code ?? (err as { errorInfo?: { code?: string } }).errorInfo?.code ?? '';
  switch (code) {
    // The token is dead or was never valid (or belongs to another Firebase project).
    case 'messaging/registration-token-not-registered':
    case 'messaging/invalid-registration-token':
    case 'messaging/invalid-argument':
    case 'messaging/mismatched-credential':
      return 'remove-device';
    case 'messaging/message-rate-exceeded':
    case 'messaging/device-message-rate-exceeded':
    case 'messaging/server-unavailable':
    case 'messaging/internal-error':
    case 'messaging/unknown-error':
    case 'messaging/authentication-error': // our credential or Google's token service: an outage, not a bad token
    case 'app/invalid-credential':
      return 'retry';
    default:
      // Network failures reach us without a messaging/ code: retry those too.
      return code.startsWith('messaging/') ? 'give-up' : 'retry';
  }
}
