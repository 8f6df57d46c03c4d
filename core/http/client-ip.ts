/**
 * Which address a request came from, for per-IP rate limits, audit entries and logs.
 *
 * Without a trusted proxy the answer is the TCP peer, whatever headers say: anyone can send an
 * `X-Forwarded-For`. Behind reverse proxies the peer is the nearest proxy, and every user would share its
 * bucket, so `trustProxy` says which hops may speak for the client:
 *
 * - `{ hops: n }`: exactly n proxies always stand in front of the hub. The peer and the n - 1 rightmost
 *   header entries are proxies; the entry left of them is the client.
 * - `{ cidrs: [...] }`: a peer or header entry inside these ranges is a proxy. The header is read right to
 *   left and the first address outside the ranges is the client.
 *
 * Either way the client is the rightmost hop that no trusted proxy vouches past: entries further left were
 * written by whoever sent the request and are ignored, so a client cannot choose its own bucket by
 * prepending addresses.
 */
import { BlockList, isIP } from 'node:net';
import type { Middleware } from 'koa';

/** Parsed `trustProxy` setting: false (the default) trusts no header at all. */
export type TrustProxy = false | { hops: number } | { cidrs: string[] };

/** Names accepted in the CIDR list for common setups. */
const ALIASES: Record<string, string[]> = {
  loopback: ['127.0.0.0/8', '::1/128'],
  private: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'],
};

export const MAX_PROXY_HOPS = 16;

/**
 * Reads the setting as it comes from the environment or a config file: off/false/0, a hop count, or a
 * comma-separated list (or array) of addresses, CIDR ranges and the aliases `loopback` and `private`.
 * Throws an Error naming the bad part; `true` is refused because trusting every hop lets anyone pick an IP.
 */
export function parseTrustProxy(raw: unknown): TrustProxy {
  if (raw === false || raw === undefined || raw === null) return false;
  if (raw === true) throw new Error('true would trust any X-Forwarded-For; give a hop count or the proxies\' addresses/CIDRs');
  if (typeof raw === 'number') return hops(raw);
  const parts = (Array.isArray(raw) ? raw.map(String) : String(raw).split(',')).map((s) => s.trim()).filter(Boolean);
  if (parts.length === 0) return false;
  if (parts.length === 1) {
    const one = parts[0]!.toLowerCase();
    if (['off', 'false', 'no', '0'].includes(one)) return false;
    if (['on', 'true', 'yes'].includes(one)) throw new Error(`"${one}" would trust any X-Forwarded-For; give a hop count or the proxies' addresses/CIDRs`);
    if (/^\d+$/.test(one)) return hops(Number(one));
  }
  const cidrs: string[] = [];
  for (const p of parts) {
    const alias = ALIASES[p.toLowerCase()];
    if (alias) cidrs.push(...alias);
    else {
      toBlockList([p]); // throws on a bad entry
      cidrs.push(p);
    }
  }
  return { cidrs };
}

function hops(n: number): TrustProxy {
  if (!Number.isInteger(n) || n < 0 || n > MAX_PROXY_HOPS) throw new Error(`hop count must be an integer from 0 to ${MAX_PROXY_HOPS}`);
  return n === 0 ? false : { hops: n };
}

function toBlockList(cidrs: string[]): BlockList {
  const list = new BlockList();
  for (const c of cidrs) {
    const [addr, bits, extra] = c.split('/');
    const family = isIP(addr ?? '');
    if (!family || extra !== undefined) throw new Error(`"${c}" is not an IP address or CIDR range`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (bits === undefined) list.addAddress(addr!, type);
    else {
      const prefix = Number(bits);
      if (!/^\d+$/.test(bits) || prefix > (family === 4 ? 32 : 128)) throw new Error(`"${c}" has a bad prefix length`);
      list.addSubnet(addr!, prefix, type);
    }
  }
  return list;
}

/** `::ffff:1.2.3.4` → `1.2.3.4`, so one client has one bucket whether it reached us over IPv4 or IPv6. */
function normalize(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? m[1]! : ip;
}

/** One header entry as an address, or null: proxies may add a port (`1.2.3.4:80`, `[::1]:80`) or quotes. */
function headerAddress(entry: string): string | null {
  let s = entry.trim().replace(/^"|"$/g, '');
  const bracket = /^\[([^\]]+)\](?::\d+)?$/.exec(s);
  if (bracket) s = bracket[1]!;
  else if (/^\d+\.\d+\.\d+\.\d+:\d+$/.test(s)) s = s.slice(0, s.lastIndexOf(':'));
  return isIP(s) ? normalize(s) : null;
}

/** Resolves client addresses for one `trustProxy` setting. */
export class ClientIpResolver {
  private readonly trusted: BlockList | null;

  constructor(readonly trust: TrustProxy) {
    this.trusted = trust && 'cidrs' in trust ? toBlockList(trust.cidrs) : null;
  }

  /** Whether the TCP peer is a proxy whose forwarding headers count. */
  peerIsProxy(peer: string): boolean {
    if (!this.trust) return false;
    if ('hops' in this.trust) return true;
    return this.isTrusted(normalize(peer));
  }

  private isTrusted(ip: string): boolean {
    const family = isIP(ip);
    return family !== 0 && this.trusted!.check(ip, family === 4 ? 'ipv4' : 'ipv6');
  }

  /**
   * The client address given the TCP peer and the raw `X-Forwarded-For` value(s). Entries that are not
   * addresses end the walk: the hop to their right, which a trusted proxy wrote, is the best we know.
   */
  resolve(peer: string, forwardedFor: string | string[] | undefined): string {
    const socketIp = normalize(peer);
    if (!this.trust || forwardedFor === undefined) return socketIp;
    const chain = (Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor).split(',').filter((s) => s.trim() !== '');
    if ('hops' in this.trust) {
      // The peer is hop 1; each further proxy appended the address it received the request from.
      let client = socketIp;
      for (let i = 1; i <= this.trust.hops && chain.length > 0; i++) {
        const next = headerAddress(chain.pop()!);
        if (next === null) break;
        client = next;
      }
      return client;
    }
    let client = socketIp;
    while (this.isTrusted(client) && chain.length > 0) {
      const next = headerAddress(chain.pop()!);
      if (next === null) break;
      client = next;
    }
    return client;
  }
}

/**
 * Sets `ctx.ip` (and so `ctx.request.ip`) to the resolved client address before any handler reads it, and
 * drops `X-Forwarded-Proto`/`-Host` from peers that are not trusted proxies, so that with `app.proxy` on
 * only a trusted proxy can make Koa believe a request came over HTTPS or for another host.
 */
export function clientIp(trust: TrustProxy): Middleware {
  const resolver = new ClientIpResolver(trust);
  return async function resolveClientIp(ctx, next) {
    const peer = ctx.req.socket.remoteAddress ?? '';
    if (trust && !resolver.peerIsProxy(peer)) {
      delete ctx.req.headers['x-forwarded-proto'];
      delete ctx.req.headers['x-forwarded-host'];
    }
    ctx.request.ip = resolver.resolve(peer, ctx.req.headers['x-forwarded-for']);
    await next();
  };
}
