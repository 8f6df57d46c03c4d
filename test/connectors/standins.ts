/**
 * Local stand-ins for the Google Drive and Dropbox HTTP APIs and an OAuth2 token endpoint. The real SDKs are
 * pointed at them. They check request shapes (paths, auth headers, multipart bodies, Dropbox-API-Arg) and
 * fail on demand: queue a failure with `failNext`. `park` holds a request at the far end until the test lets it
 * go, to keep a race open for as long as the test needs.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

export interface Failure {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
  /** Never answer (to exercise timeouts). */
  hang?: boolean;
  /** Do the work, then answer with the failure: the far end committed but the caller never heard (a lost answer). */
  after?: boolean;
  /** Only for requests whose "METHOD /path?query" matches; others pass it by. */
  match?: RegExp;
}

/** A request held by `park`: it has arrived but the stand-in has not read or acted on it yet. */
export interface Parked {
  /** Resolves once a matching request has arrived and is being held. */
  readonly arrived: Promise<void>;
  /** Lets the held request go on: the stand-in then records it, does its work and answers as usual. */
  release(): void;
}

export interface StandIn {
  url: string;
  requests: Array<{ method: string; path: string; auth: string | undefined; body: string; rawBody: Buffer; headers: IncomingMessage['headers'] }>;
  /** Current valid access token; others get 401. */
  validToken: string;
  /** Refresh tokens the token endpoint accepts, and the access token it hands out next. */
  refreshTokens: Set<string>;
  nextAccessToken: string;
  /** Authorization codes issued by /authorize with their PKCE challenge. */
  codes: Map<string, string>;
  failNext: Failure[];
  /**
   * Holds the next request whose "METHOD /path?query" matches (any request without `match`) until
   * `release()`; a `failNext` entry is picked for it only then.
   */
  park(match?: RegExp): Parked;
  files: Map<string, { name: string; parents?: string[]; content: string }>;
  /** Drive file ids handed out by files.generateIds (a create may use only these). */
  generatedIds: Set<string>;
  close(): Promise<void>;
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

/** Splits a multipart/related body into its parts' bodies. */
function multipartParts(body: string, contentType: string): string[] {
  const boundary = /boundary=([^;]+)/.exec(contentType)?.[1];
  if (!boundary) return [];
  return body
    .split(`--${boundary}`)
    .slice(1, -1)
    .map((p) => p.split(/\r?\n\r?\n/).slice(1).join('\n\n').replace(/\r?\n$/, ''));
}

export async function startStandIn(): Promise<StandIn> {
  let counter = 0;
  const parks: Array<{ match?: RegExp; hold: Promise<void>; arrive(): void }> = [];
  const s: StandIn = {
    url: '',
    requests: [],
    validToken: 'tok1',
    refreshTokens: new Set(['refresh1']),
    nextAccessToken: 'tok2',
    codes: new Map(),
    failNext: [],
    park(match) {
      let arrive!: () => void;
      let release!: () => void;
      const arrived = new Promise<void>((r) => (arrive = r));
      const hold = new Promise<void>((r) => (release = r));
      parks.push({ match, hold, arrive });
      return { arrived, release };
    },
    files: new Map(),
    generatedIds: new Set(),
    close: async () => undefined,
  };
  const answer = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks);
      const body = rawBody.toString('utf8');
      const url = new URL(req.url ?? '/', 'http://x');
      s.requests.push({ method: req.method ?? '', path: url.pathname + url.search, auth: req.headers.authorization, body, rawBody, headers: req.headers });

      // OAuth: the consent page redirects straight back with a code (the "user" always agrees).
      if (url.pathname === '/authorize') {
        const code = `code${++counter}`;
        if (url.searchParams.get('code_challenge_method') !== 'S256') return json(res, 400, { error: 'pkce required' });
        s.codes.set(code, url.searchParams.get('code_challenge') ?? '');
        const back = new URL(url.searchParams.get('redirect_uri')!);
        back.searchParams.set('code', code);
        back.searchParams.set('state', url.searchParams.get('state') ?? '');
        res.writeHead(302, { location: back.toString() });
        res.end();
        return;
      }
      if (url.pathname === '/token') {
        const form = new URLSearchParams(body);
        if (form.get('grant_type') === 'authorization_code') {
          const challenge = s.codes.get(form.get('code') ?? '');
          const verifier = form.get('code_verifier') ?? '';
          const expected = createHash('sha256').update(verifier).digest('base64url');
          if (!challenge || challenge !== expected) return json(res, 400, { error: 'invalid_grant', error_description: 'PKCE verifier does not match' });
          s.codes.delete(form.get('code')!);
          s.validToken = s.nextAccessToken;
          return json(res, 200, { access_token: s.validToken, refresh_token: 'refresh1', expires_in: 3600, token_type: 'bearer' });
        }
        if (form.get('grant_type') === 'refresh_token') {
          if (!s.refreshTokens.has(form.get('refresh_token') ?? '')) return json(res, 400, { error: 'invalid_grant', error_description: 'Token has been expired or revoked.' });
          s.validToken = s.nextAccessToken;
          return json(res, 200, { access_token: s.validToken, expires_in: 3600, token_type: 'bearer' });
        }
        return json(res, 400, { error: 'unsupported_grant_type' });
      }

      const at = s.failNext.findIndex((f) => !f.match || f.match.test(`${req.method} ${url.pathname}${url.search}`));
      const fail = at < 0 ? undefined : s.failNext.splice(at, 1)[0];
      if (fail?.hang) return; // never answers
      const failWith = (f: Failure): void => json(res, f.status, f.body ?? { error: { code: f.status, message: 'stand-in failure' } }, f.headers);
      if (fail && !fail.after) return failWith(fail);
      // The API's own answer, unless the failure says it is lost on the way back.
      const reply = (status: number, body: unknown, headers: Record<string, string> = {}): void => (fail ? failWith(fail) : json(res, status, body, headers));
      if (req.headers.authorization !== `Bearer ${s.validToken}`) return json(res, 401, { error: { code: 401, message: 'Invalid Credentials' } });

      // Google Drive v3
      if (url.pathname === '/drive/v3/about') return reply(200, { user: { emailAddress: 'marketer@example.com', displayName: 'M' } });
      if (req.method === 'GET' && url.pathname === '/drive/v3/files/generateIds') {
        const ids = Array.from({ length: Number(url.searchParams.get('count') ?? 10) }, () => `gen${++counter}`);
        for (const id of ids) s.generatedIds.add(id);
        return reply(200, { kind: 'drive#generatedIds', space: url.searchParams.get('space') ?? 'drive', ids });
      }
      if (req.method === 'POST' && url.pathname === '/upload/drive/v3/files') {
        if (url.searchParams.get('uploadType') !== 'multipart') return json(res, 400, { error: { message: 'uploadType must be multipart' } });
        const [meta, content] = multipartParts(body, String(req.headers['content-type']));
        const m = JSON.parse(meta ?? '{}') as { id?: string; name?: string; parents?: string[] };
        if (!m.name || !m.parents?.length) return json(res, 400, { error: { message: 'name and parents required' } });
        if (m.id !== undefined && !s.generatedIds.has(m.id)) return json(res, 400, { error: { code: 400, message: 'The provided file ID is not usable.' } });
        // Drive's answer to a second create with a pre-generated id: the first one landed, no duplicate is made.
        if (m.id !== undefined && s.files.has(m.id)) return json(res, 409, { error: { code: 409, message: 'A file already exists with the provided ID.' } });
        const id = m.id ?? `file${++counter}`;
        s.files.set(id, { name: m.name, parents: m.parents, content: content ?? '' });
        return reply(200, { id });
      }
      const upd = /^\/upload\/drive\/v3\/files\/([^/]+)$/.exec(url.pathname);
      if (req.method === 'PATCH' && upd) {
        const f = s.files.get(upd[1]!);
        if (!f) return json(res, 404, { error: { code: 404, message: 'File not found' } });
        const ct = String(req.headers['content-type'] ?? '');
        f.content = ct.startsWith('multipart/') ? (multipartParts(body, ct).at(-1) ?? '') : body;
        return reply(200, { id: upd[1] });
      }

      // Dropbox v2 (the SDK's hosts are mapped to /api and /content)
      if (url.pathname === '/api/2/users/get_current_account') return reply(200, { account_id: 'dbid:1', email: 'marketer@example.com', name: { display_name: 'M' } });
      if (url.pathname === '/content/2/files/upload') {
        const arg = JSON.parse(String(req.headers['dropbox-api-arg'] ?? '{}')) as { path?: string; mode?: { '.tag': string } };
        if (!arg.path?.startsWith('/') || req.headers['content-type'] !== 'application/octet-stream') return json(res, 400, { error_summary: 'bad request shape' });
        if (arg.mode?.['.tag'] !== 'overwrite' && s.files.has(arg.path)) return json(res, 409, { error_summary: 'path/conflict/file/..', error: { '.tag': 'path' } });
        s.files.set(arg.path, { name: arg.path, content: body });
        return reply(200, { id: `id:${arg.path}`, path_display: arg.path, name: arg.path.split('/').pop() });
      }
      json(res, 404, { error: { message: `no route ${req.method} ${url.pathname}` } });
    });
  };
  const server: Server = createServer((req, res) => {
    const at = parks.findIndex((p) => !p.match || p.match.test(`${req.method} ${req.url ?? '/'}`));
    if (at < 0) return answer(req, res);
    const park = parks.splice(at, 1)[0]!;
    park.arrive();
    void park.hold.then(() => answer(req, res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  s.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  s.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return s;
}

/**
 * One stand-in shared by every test of a file: registers the file's before/after hooks (call it at the top
 * level). Read `.api` inside tests, where `before` has run.
 */
export function standInForFile(): { readonly api: StandIn } {
  let api: StandIn | undefined;
  test.before(async () => {
    api = await startStandIn();
  });
  test.after.always(async () => {
    await api?.close();
  });
  return {
    get api() {
      if (!api) throw new Error('standInForFile: the stand-in exists only once the before hook ran');
      return api;
    },
  };
}
