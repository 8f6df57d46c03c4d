/**
 * Redis connections from REDIS_URL, for a single server or for a primary watched by Redis Sentinel:
 *
 *   redis://[user:password@]host:6379[/db]           one server (ioredis reads the URL as it is)
 *   rediss://…                                       the same over TLS
 *   redis-sentinel://[user:password@]host1:26379,host2:26379,host3:26379/<master name>[/db][?sentinelPassword=…]
 *
 * With Sentinel the client asks the sentinels which server is the primary, connects there, and after a
 * failover asks again and follows the promoted replica. The credentials in the URL are the primary's; the
 * sentinels' own password, when they have one, is the `sentinelPassword` parameter.
 */
import { Redis, type RedisOptions } from 'ioredis';

const SENTINEL = /^redis(?:s)?-sentinel:\/\//i;

export class RedisUrlError extends Error {}

/** Connection options for a redis-sentinel:// URL; undefined for any other URL (ioredis takes those as they are). */
export function sentinelOptions(url: string): RedisOptions | undefined {
  if (!SENTINEL.test(url)) return undefined;
  const tls = /^rediss-/i.test(url);
  let rest = url.replace(SENTINEL, '');
  let query = '';
  const q = rest.indexOf('?');
  if (q >= 0) {
    query = rest.slice(q + 1);
    rest = rest.slice(0, q);
  }
  let user: string | undefined;
  let password: string | undefined;
  const at = rest.lastIndexOf('@', rest.indexOf('/') >= 0 ? rest.indexOf('/') : rest.length);
  if (at >= 0) {
    const info = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const colon = info.indexOf(':');
    user = decodeURIComponent(colon >= 0 ? info.slice(0, colon) : info) || undefined;
    password = colon >= 0 ? decodeURIComponent(info.slice(colon + 1)) : undefined;
  }
  const [hostList = '', name = '', db, ...extra] = rest.split('/');
  if (!name || extra.length > 0) throw new RedisUrlError('a redis-sentinel URL names its master after the hosts: redis-sentinel://host:26379,…/<master name>[/db]');
  const sentinels = hostList.split(',').map((h) => {
    const m = /^(\[[^\]]+\]|[^:]+)(?::(\d{1,5}))?$/.exec(h.trim());
    if (!m) throw new RedisUrlError(`a redis-sentinel URL lists sentinels as host[:port]; got "${h}"`);
    return { host: m[1]!.replace(/^\[|\]$/g, ''), port: m[2] ? Number(m[2]) : 26379 };
  });
  if (db !== undefined && db !== '' && !/^\d{1,2}$/.test(db)) throw new RedisUrlError(`the database after the master name must be a number; got "${db}"`);
  const params = new URLSearchParams(query);
  for (const k of params.keys()) if (k !== 'sentinelPassword') throw new RedisUrlError(`a redis-sentinel URL takes only the sentinelPassword parameter; got "${k}"`);
  const sentinelPassword = params.get('sentinelPassword') ?? undefined;
  return {
    sentinels,
    name: decodeURIComponent(name),
    ...(user ? { username: user } : {}),
    ...(password ? { password } : {}),
    ...(sentinelPassword ? { sentinelPassword } : {}),
    ...(db ? { db: Number(db) } : {}),
    ...(tls ? { tls: {}, enableTLSForSentinelMode: true } : {}),
  };
}

/** A client for REDIS_URL with `opts` on top (timeouts, retry strategy). */
export function createRedis(url: string, opts: RedisOptions = {}): Redis {
  const sentinel = sentinelOptions(url);
  return sentinel ? new Redis({ ...sentinel, ...opts }) : new Redis(url, opts);
}

/** Undefined when REDIS_URL is usable, else what is wrong with it (for config validation). */
export function redisUrlProblem(url: string): string | undefined {
  if (SENTINEL.test(url)) {
    try {
      sentinelOptions(url);
      return undefined;
    } catch (err) {
      return (err as Error).message;
    }
  }
  return /^rediss?:\/\/|^\/|^unix:/i.test(url) ? undefined : 'expected redis://, rediss:// or redis-sentinel:// (docs/scale-out.md)';
}
