/**
 * Outbound HTTP for targets a user typed in (webhook URLs): refuses private, loopback, link-local,
 * unique-local, CGNAT, multicast, reserved and unspecified addresses unless private networks are allowed.
 *
 * The check runs where it cannot be bypassed:
 *  - on IP literals after the WHATWG URL parser has normalised them (decimal `2130706433`, octal `0177.0.0.1`,
 *    hex `0x7f.1` and `[::ffff:127.0.0.1]` all come out as canonical addresses),
 *  - on every DNS answer, inside the socket's own `lookup`, so the address checked is the address connected
 *    to (a name that resolves to 127.0.0.1, or changes its answer between a check and the connect —
 *    DNS rebinding — is caught),
 *  - again on every redirect hop, which are followed by hand (at most `maxRedirects`).
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';

export class SsrfError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SsrfError';
  }
}

/** Resolves a host name to its addresses (injectable so tests can serve a hostile DNS answer). */
export type Resolver = (hostname: string) => Promise<Array<{ address: string; family: number }>>;

const systemResolver: Resolver = (hostname) => dnsLookup(hostname, { all: true, verbatim: true });

/** IPv6 global unicast, 2000::/3: the only IPv6 block that is routed on the internet. */
const GLOBAL_UNICAST_V6 = ipaddr.parseCIDR('2000::/3');

/**
 * True only for globally routable unicast addresses. IPv4-mapped IPv6 is judged as the IPv4 it carries. An
 * IPv6 address must also lie in 2000::/3: outside it, blocks ipaddr.js has no name for (the deprecated
 * IPv4-compatible ::/96, such as ::7f00:1, and the rest of the unassigned space) would pass as "unicast".
 */
export function isPublicAddress(address: string): boolean {
  if (!ipaddr.isValid(address)) return false;
  let ip = ipaddr.parse(address);
  if (ip.kind() === 'ipv6' && (ip as ipaddr.IPv6).isIPv4MappedAddress()) ip = (ip as ipaddr.IPv6).toIPv4Address();
  if (ip.kind() === 'ipv6' && !(ip as ipaddr.IPv6).match(GLOBAL_UNICAST_V6 as [ipaddr.IPv6, number])) return false;
  // ipaddr.js names every special-purpose block (private, loopback, linkLocal, uniqueLocal, carrierGradeNat,
  // multicast, unspecified, broadcast, reserved, 6to4, teredo, …); only what is left is "unicast".
  return ip.range() === 'unicast';
}

function isLocalName(host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  return h === 'localhost' || h.endsWith('.localhost') || h === 'localhost.localdomain';
}

/** Checks a URL before any connection: scheme, and the host when it is an IP literal or a local name. */
export function checkUrl(raw: string, allowPrivate: boolean, isAllowed: (ip: string) => boolean = isPublicAddress): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new SsrfError(`not a valid URL: ${raw}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new SsrfError(`only http and https targets are allowed, not ${url.protocol}`);
  if (url.username || url.password) throw new SsrfError('credentials in the URL are not allowed');
  if (allowPrivate) return url;
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (ipaddr.isValid(host)) {
    if (!isAllowed(host)) throw new SsrfError(`target address ${host} is not public`);
  } else if (isLocalName(host)) {
    throw new SsrfError(`target host ${host} is local`);
  }
  return url;
}

/**
 * Why a new webhook target is refused up front (checkUrl's reason), or null when it passes. No private, loopback
 * or local targets unless `allowPrivate`; delivery checks the DNS answers again on every send.
 */
export function webhookTargetProblem(url: string, allowPrivate: boolean): string | null {
  try {
    checkUrl(url, allowPrivate);
    return null;
  } catch (err) {
    if (!(err instanceof SsrfError)) throw err;
    return err.message;
  }
}

/** A socket `lookup` that resolves through `resolve` and refuses the connection if any answer is not public. */
export function guardedLookup(resolve: Resolver, allowPrivate: boolean, isAllowed: (ip: string) => boolean = isPublicAddress): LookupFunction {
  return ((hostname: string, options: { all?: boolean; family?: number }, callback: (...args: unknown[]) => void) => {
    resolve(hostname).then(
      (answers) => {
        if (answers.length === 0) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }));
        if (!allowPrivate) {
          // All answers must be public: a client may try any of them (happy eyeballs), so one bad answer is enough
          // to refuse the name.
          const bad = answers.find((a) => !isAllowed(a.address));
          if (bad) return callback(new SsrfError(`${hostname} resolves to ${bad.address}, which is not public`));
        }
        const wanted = options.family ? answers.filter((a) => a.family === options.family) : answers;
        const list = wanted.length ? wanted : answers;
        if (options.all) callback(null, list);
        else callback(null, list[0]!.address, list[0]!.family);
      },
      (err: Error) => callback(err),
    );
  }) as unknown as LookupFunction;
}

export interface SafeRequest {
  url: string;
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  allowPrivate: boolean;
  /** Whole request budget including redirects (default 10 s). */
  timeoutMs?: number;
  maxRedirects?: number;
  resolver?: Resolver;
  /** Response body bytes kept (the rest is drained and dropped). */
  maxBodyBytes?: number;
  /** Which addresses count as public (default isPublicAddress); tests narrow it to exercise the redirect check. */
  isAllowed?: (ip: string) => boolean;
}

export interface SafeResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** The URL that finally answered (after redirects). */
  url: string;
  redirects: number;
}

/** Sends one request with the SSRF guard, a timeout and hand-followed redirects (each re-checked). */
export async function safeRequest(req: SafeRequest): Promise<SafeResponse> {
  const maxRedirects = req.maxRedirects ?? 3;
  const deadline = Date.now() + (req.timeoutMs ?? 10_000);
  const isAllowed = req.isAllowed ?? isPublicAddress;
  const lookup = guardedLookup(req.resolver ?? systemResolver, req.allowPrivate, isAllowed);
  let url = checkUrl(req.url, req.allowPrivate, isAllowed);
  let method = req.method ?? 'POST';
  let body = req.body;
  for (let hop = 0; ; hop++) {
    const res = await once(url, method, req.headers ?? {}, body, lookup, deadline, req.maxBodyBytes ?? 16 * 1024);
    const location = res.headers.location;
    if (res.status >= 300 && res.status < 400 && location && [301, 302, 303, 307, 308].includes(res.status)) {
      if (hop >= maxRedirects) throw new SsrfError(`too many redirects (more than ${maxRedirects})`);
      url = checkUrl(new URL(location, url).toString(), req.allowPrivate, isAllowed);
      // 303 means "go GET it"; the others keep the method and body (a webhook stays a POST).
      if (res.status === 303) {
        method = 'GET';
        body = undefined;
      }
      continue;
    }
    return { ...res, url: url.toString(), redirects: hop };
  }
}

function once(
  url: URL,
  method: string,
  headers: Record<string, string>,
  body: string | undefined,
  lookup: LookupFunction,
  deadline: number,
  maxBodyBytes: number,
): Promise<Omit<SafeResponse, 'url' | 'redirects'>> {
  const remaining = deadline - Date.now();
  if (remaining <= 0) return Promise.reject(new Error('timed out'));
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const r = mod.request(
      url,
      {
        method,
        headers: { ...headers, ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}) },
        lookup,
        // A fresh connection per request: a pooled socket would skip the lookup and with it the check.
        agent: false,
        timeout: remaining,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          if (size < maxBodyBytes) chunks.push(c.subarray(0, maxBodyBytes - size));
          size += c.length;
        });
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', (e) => {
          clearTimeout(timer);
          reject(e);
        });
      },
    );
    // `timeout` above only covers socket idleness; this bounds the whole exchange.
    const timer = setTimeout(() => r.destroy(new Error('request timed out')), remaining);
    r.on('timeout', () => r.destroy(new Error('timed out')));
    r.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    if (body !== undefined) r.write(body);
    r.end();
  });
}
