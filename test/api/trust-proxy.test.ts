import test from 'ava';
import { ConfigError } from '../../core/config.js';
import { ClientIpResolver, parseTrustProxy } from '../../core/http/client-ip.js';
import { testConfig, serversForFile } from '../helpers/hub.js';
import { eventually, openApiHub, streamEvents, type ApiHub } from './support.js';

const servers = serversForFile();

const bucketKey = (api: ApiHub, kind: string, ip: string) => `voxa:${api.hub.config.natsNamespace}:rl:${kind}:ip:${ip}`;

/** One failed login per call, each for a different account so only the per-IP bucket accumulates. */
let n = 0;
async function badLogin(api: ApiHub, xff?: string): Promise<number> {
  const req = api.http.post('/v1/auth/login');
  if (xff !== undefined) req.set('X-Forwarded-For', xff);
  return (await req.send({ email: `nobody${n++}@example.test`, password: 'wrong password' })).status;
}

test('parseTrustProxy: off by default, hop counts, CIDR lists and aliases; refuses true and junk', (t) => {
  t.false(parseTrustProxy(undefined));
  t.false(parseTrustProxy('off'));
  t.false(parseTrustProxy('0'));
  t.false(parseTrustProxy(''));
  t.deepEqual(parseTrustProxy('2'), { hops: 2 });
  t.deepEqual(parseTrustProxy(1), { hops: 1 });
  t.deepEqual(parseTrustProxy('10.0.0.0/8, 192.0.2.1'), { cidrs: ['10.0.0.0/8', '192.0.2.1'] });
  t.deepEqual(parseTrustProxy(['loopback']), { cidrs: ['127.0.0.0/8', '::1/128'] });
  t.throws(() => parseTrustProxy(true));
  t.throws(() => parseTrustProxy('yes'));
  t.throws(() => parseTrustProxy('10.0.0.0/33'));
  t.throws(() => parseTrustProxy('proxy.example.com'));
  t.throws(() => parseTrustProxy('99'));
  // Through the config schema: the env string is parsed, a bad one names the field.
  t.deepEqual(testConfig(servers, { trustProxy: '127.0.0.1, fd00::/8' }).trustProxy, { cidrs: ['127.0.0.1', 'fd00::/8'] });
  t.false(testConfig(servers).trustProxy);
  const err = t.throws(() => testConfig(servers, { trustProxy: 'true' }), { instanceOf: ConfigError });
  t.is(err?.field, 'trustProxy');
});

test('resolver: the rightmost untrusted hop wins, never the client-supplied leftmost one', (t) => {
  const off = new ClientIpResolver(false);
  t.is(off.resolve('::ffff:198.51.100.9', '203.0.113.5'), '198.51.100.9');

  const cidrs = new ClientIpResolver({ cidrs: ['10.0.0.0/8', '127.0.0.1'] });
  // Spoofed 6.6.6.6 on the left, the real client appended by the outer proxy, then an inner proxy.
  t.is(cidrs.resolve('127.0.0.1', '6.6.6.6, 203.0.113.7, 10.0.0.2'), '203.0.113.7');
  // A peer that is not a trusted proxy: its header is ignored.
  t.is(cidrs.resolve('198.51.100.9', '6.6.6.6'), '198.51.100.9');
  // Every hop trusted (a request from inside): the leftmost address.
  t.is(cidrs.resolve('10.0.0.1', '10.0.0.3, 10.0.0.2'), '10.0.0.3');
  // Ports and IPv6 brackets as some proxies write them; junk ends the walk at the last trusted hop.
  t.is(cidrs.resolve('10.0.0.1', '[2001:db8::1]:4711'), '2001:db8::1');
  t.is(cidrs.resolve('10.0.0.1', '203.0.113.8:5000'), '203.0.113.8');
  t.is(cidrs.resolve('10.0.0.1', 'not-an-ip'), '10.0.0.1');
  // Several header lines count as one list.
  t.is(cidrs.resolve('10.0.0.1', ['6.6.6.6', '203.0.113.9']), '203.0.113.9');

  const two = new ClientIpResolver({ hops: 2 });
  t.is(two.resolve('10.9.9.9', '6.6.6.6, 203.0.113.7, 10.0.0.2'), '203.0.113.7');
  // Fewer entries than hops: the leftmost one there is.
  t.is(two.resolve('10.9.9.9', '203.0.113.7'), '203.0.113.7');
  t.is(new ClientIpResolver({ hops: 1 }).resolve('10.9.9.9', '6.6.6.6, 203.0.113.7'), '203.0.113.7');
});

test('trust off: a spoofed X-Forwarded-For does not change the per-IP bucket', async (t) => {
  const api = await openApiHub(servers, { authRateLimitPerMinute: 3 });
  try {
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push(await badLogin(api, `203.0.113.${i + 1}`));
    // Every spoofed address still counted against the socket's address: the 4th attempt is refused.
    t.deepEqual(statuses, [401, 401, 401, 429]);
    t.is(await api.hub.redis!.get(bucketKey(api, 'login', '203.0.113.1')), null);
    t.is(await api.hub.redis!.get(bucketKey(api, 'login', '127.0.0.1')), '4');
  } finally {
    await api.close();
  }
});

test('trust on: distinct forwarded clients get distinct buckets, keyed by the rightmost untrusted hop', async (t) => {
  // The test client connects over loopback, which plays the reverse proxy here.
  const api = await openApiHub(servers, { authRateLimitPerMinute: 3, trustProxy: 'loopback, 10.0.0.0/8' });
  try {
    // Two clients behind two proxies; each client also prepends a forged address that must be ignored.
    const a = '6.6.6.6, 203.0.113.10, 10.0.0.2';
    const b = '6.6.6.6, 203.0.113.20, 10.0.0.2';
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push(await badLogin(api, a));
    for (let i = 0; i < 3; i++) statuses.push(await badLogin(api, b));
    t.deepEqual(statuses, Array(6).fill(401));
    t.is(await api.hub.redis!.get(bucketKey(api, 'login', '203.0.113.10')), '3');
    t.is(await api.hub.redis!.get(bucketKey(api, 'login', '203.0.113.20')), '3');
    t.is(await api.hub.redis!.get(bucketKey(api, 'login', '6.6.6.6')), null);
    // Client a's fourth try is refused; a third client is not.
    t.is(await badLogin(api, a), 429);
    t.is(await badLogin(api, '203.0.113.30'), 401);

    // The resolved address is what the sign-in event (and so the audit log) records.
    const reg = await api.http.post('/v1/auth/register').set('X-Forwarded-For', '6.6.6.6, 198.51.100.44').send({ email: `ip${n++}@example.test`, password: 'correct horse battery', name: 'Ip' });
    t.is(reg.status, 201);
    const login = await api.http
      .post('/v1/auth/login')
      .set('X-Forwarded-For', '6.6.6.6, 198.51.100.45')
      .send({ email: reg.body.user.email, password: 'correct horse battery' });
    t.is(login.status, 200);
    const ev = await eventually(async () => (await streamEvents(api.hub)).find((e) => e.event.type === 'user.login' && e.event.userId === reg.body.user.id));
    t.is((ev.event.data as { ip?: string }).ip, '198.51.100.45');
  } finally {
    await api.close();
  }
});
