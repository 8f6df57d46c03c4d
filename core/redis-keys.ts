/**
 * The prefix of every Redis key of one hub (rate limits, presence, job queues, write leases): `voxa:<namespace>`, so
 * hubs and tests that share a Redis do not see each other's keys.
 */
export function redisPrefix(namespace: string): string {
  return `voxa:${namespace || 'default'}`;
}
