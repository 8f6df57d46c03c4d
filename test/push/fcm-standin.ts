/**
 * A local stand-in for the far end of FCM: Google's OAuth token endpoint and the FCM v1 send API, over TLS
 * with a throwaway certificate for fcm.googleapis.com and oauth2.googleapis.com. The real firebase-admin
 * talks to it through the push plugin's `connect` hook, which opens its TLS connections here and verifies
 * them against that certificate.
 *
 * The token endpoint checks the service-account JWT's RS256 signature; the send endpoint checks the bearer
 * token it issued. Replies per registration token can be scripted (unregistered, invalid, quota with
 * Retry-After, unavailable); everything else succeeds.
 */
import { execFileSync } from 'node:child_process';
import { createVerify, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { RequestOptions } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';

export type Reply = 'ok' | 'unregistered' | 'invalid' | 'quota' | 'unavailable';

/** The FCM v1 JSON message as it arrives on the wire (snake_case where FCM uses it). */
export interface WireMessage {
  token: string;
  data?: Record<string, string>;
  notification?: { title?: string; body?: string };
  android?: { collapse_key?: string; priority?: string; notification?: Record<string, unknown> };
  apns?: { headers?: Record<string, string>; payload?: unknown };
  webpush?: { headers?: Record<string, string> };
}

export interface SentMessage {
  project: string;
  message: WireMessage;
  authorization: string;
  /** What the stand-in answered. */
  reply: Reply;
}

export interface FcmStandIn {
  serviceAccount: { project_id: string; client_email: string; private_key: string; type: string };
  connect: (options: RequestOptions) => Duplex;
  requests: SentMessage[];
  /** Successful sends only. */
  delivered(token?: string): SentMessage[];
  tokensIssued: number;
  /** Queue replies for a token; each request takes the next one, then 'ok' forever. */
  script(token: string, ...replies: Reply[]): void;
  retryAfterSeconds: number;
  close(): Promise<void>;
}

const FCM_ERROR = 'type.googleapis.com/google.firebase.fcm.v1.FcmError';

function errorBody(code: number, status: string, message: string, fcmCode: string): string {
  return JSON.stringify({ error: { code, message, status, details: [{ '@type': FCM_ERROR, errorCode: fcmCode }] } });
}

function b64json(part: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
}

export async function startFcmStandIn(): Promise<FcmStandIn> {
  const dir = mkdtempSync(join(tmpdir(), 'voxa-fcm-'));
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    '-subj', '/CN=fcm.googleapis.com',
    '-addext', 'subjectAltName=DNS:fcm.googleapis.com,DNS:oauth2.googleapis.com',
  ], { stdio: 'ignore' });
  const tlsKey = readFileSync(join(dir, 'key.pem'));
  const tlsCert = readFileSync(join(dir, 'cert.pem'));
  rmSync(dir, { recursive: true, force: true });

  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const serviceAccount = { type: 'service_account', project_id: 'voxa-test', client_email: 'push@voxa-test.iam.gserviceaccount.com', private_key: privateKey };

  const issued = new Set<string>();
  const scripts = new Map<string, Reply[]>();
  const state = { requests: [] as SentMessage[], retryAfterSeconds: 1 };
  let n = 0;

  const server: Server = createServer({ key: tlsKey, cert: tlsCert }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const host = (req.headers.host ?? '').split(':')[0];
      const json = (status: number, payload: string, headers: Record<string, string> = {}) => {
        res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', ...headers });
        res.end(payload);
      };
      if (host === 'oauth2.googleapis.com' && req.method === 'POST' && req.url === '/token') {
        const form = new URLSearchParams(body);
        const [h, p, sig] = (form.get('assertion') ?? '').split('.');
        const valid =
          form.get('grant_type') === 'urn:ietf:params:oauth:grant-type:jwt-bearer' &&
          !!h && !!p && !!sig &&
          b64json(h).alg === 'RS256' &&
          b64json(p).iss === serviceAccount.client_email &&
          createVerify('RSA-SHA256').update(`${h}.${p}`).verify(publicKey, Buffer.from(sig, 'base64url'));
        if (!valid) return json(400, JSON.stringify({ error: 'invalid_grant' }));
        const token = `ya29.standin-${++n}`;
        issued.add(token);
        return json(200, JSON.stringify({ access_token: token, expires_in: 3600, token_type: 'Bearer' }));
      }
      const m = /^\/v1\/projects\/([^/]+)\/messages:send$/.exec(req.url ?? '');
      if (host === 'fcm.googleapis.com' && req.method === 'POST' && m) {
        const authorization = req.headers.authorization ?? '';
        if (!issued.has(authorization.replace(/^Bearer /, ''))) {
          return json(401, JSON.stringify({ error: { code: 401, message: 'Request had invalid authentication credentials.', status: 'UNAUTHENTICATED' } }));
        }
        const { message } = JSON.parse(body) as { message: SentMessage['message'] };
        const queue = scripts.get(message.token) ?? [];
        const reply: Reply = queue.shift() ?? 'ok';
        state.requests.push({ project: m[1]!, message, authorization, reply });
        switch (reply) {
          case 'ok':
            return json(200, JSON.stringify({ name: `projects/${m[1]}/messages/${++n}` }));
          case 'unregistered':
            return json(404, errorBody(404, 'NOT_FOUND', 'Requested entity was not found.', 'UNREGISTERED'));
          case 'invalid':
            return json(400, errorBody(400, 'INVALID_ARGUMENT', 'The registration token is not a valid FCM registration token', 'INVALID_ARGUMENT'));
          case 'quota':
            return json(429, errorBody(429, 'RESOURCE_EXHAUSTED', 'Quota exceeded.', 'QUOTA_EXCEEDED'), { 'retry-after': String(state.retryAfterSeconds) });
          case 'unavailable':
            // firebase-admin retries 503 itself; a 500 reaches the plugin.
            return json(500, errorBody(500, 'INTERNAL', 'Internal error.', 'INTERNAL'));
        }
      }
      json(404, JSON.stringify({ error: { code: 404, message: `no stand-in for ${req.method} ${host}${req.url}` } }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;

  return {
    serviceAccount,
    connect: (options) => tlsConnect({ host: '127.0.0.1', port, servername: String(options.servername ?? options.host ?? ''), ca: tlsCert }),
    get requests() {
      return state.requests;
    },
    delivered(token) {
      return state.requests.filter((r) => r.reply === 'ok' && (!token || r.message.token === token));
    },
    get tokensIssued() {
      return issued.size;
    },
    script(token, ...replies) {
      scripts.set(token, [...(scripts.get(token) ?? []), ...replies]);
    },
    get retryAfterSeconds() {
      return state.retryAfterSeconds;
    },
    set retryAfterSeconds(v: number) {
      state.retryAfterSeconds = v;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
