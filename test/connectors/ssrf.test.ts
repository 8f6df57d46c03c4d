import { createServer, type Server } from 'node:http';
import test from 'ava';
import { checkUrl, isPublicAddress, safeRequest, SsrfError, type Resolver } from '../../connectors/net.js';
import { deliverOnce } from '../../connectors/webhook/index.js';
import { generateSecret } from '../../connectors/webhook/signing.js';

let server: Server;
let port = 0;
let hits = 0;
test.before(async () => {
  server = createServer((req, res) => {
    hits++;
    const to = new URL(req.url ?? '/', 'http://x').searchParams.get('to');
    if (to) {
      res.writeHead(302, { location: to });
      res.end();
      return;
    }
    res.writeHead(200);
    res.end('fine');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as { port: number }).port;
});
test.after.always(() => new Promise<void>((r) => server.close(() => r())));

const refused = [
  'http://127.0.0.1/',
  'http://127.1/',
  'http://2130706433/', // decimal
  'http://017700000001/', // octal
  'http://0x7f000001/', // hex
  'http://0x7f.0.0.1/',
  'http://0177.0.0.1/',
  'http://[::1]/',
  'http://[::ffff:127.0.0.1]/', // IPv4-mapped IPv6
  'http://[::ffff:7f00:1]/',
  'http://[::7f00:1]/', // IPv4-compatible (deprecated ::/96) 127.0.0.1
  'http://[::a00:1]/', // IPv4-compatible 10.0.0.1
  'http://[4000::1]/', // outside global unicast 2000::/3
  'http://[0:0:0:0:0:ffff:a00:1]/', // mapped 10.0.0.1
  'http://0.0.0.0/',
  'http://0/',
  'http://[::]/',
  'http://10.1.2.3/',
  'http://172.16.0.1/',
  'http://192.168.1.1/',
  'http://169.254.169.254/latest/meta-data/', // cloud metadata, link-local
  'http://[fe80::1]/',
  'http://[fd00::1]/', // unique local
  'http://100.64.0.1/', // CGNAT
  'http://224.0.0.1/', // multicast
  'http://[ff02::1]/',
  'http://255.255.255.255/',
  'http://localhost/',
  'http://LOCALHOST./',
  'http://api.localhost/',
  'file:///etc/passwd',
  'ftp://example.com/',
  'http://user:pw@example.com/',
];

for (const url of refused) {
  test(`refuses ${url}`, (t) => {
    t.throws(() => checkUrl(url, false), { instanceOf: SsrfError });
  });
}

test('public addresses and names pass the URL check; private ones pass when allowed', (t) => {
  t.notThrows(() => checkUrl('https://93.184.216.34/hook', false));
  t.notThrows(() => checkUrl('https://[2606:4700:4700::1111]/hook', false));
  t.notThrows(() => checkUrl('https://hooks.example.com/x', false)); // names are checked at connect time
  t.notThrows(() => checkUrl('http://127.0.0.1/', true));
  t.true(isPublicAddress('8.8.8.8'));
  t.false(isPublicAddress('::ffff:192.168.0.1'));
  t.false(isPublicAddress('::7f00:1'));
  t.true(isPublicAddress('2a00:1450:4001:80b::200e'));
});

test.serial('a name whose DNS answer is loopback is refused at connect time (rebinding)', async (t) => {
  const resolver: Resolver = async () => [{ address: '127.0.0.1', family: 4 }];
  const before = hits;
  const err = await t.throwsAsync(safeRequest({ url: `http://rebind.example.com:${port}/`, allowPrivate: false, resolver }));
  t.regex(err!.message, /resolves to 127\.0\.0\.1/);
  t.is(hits, before, 'no request reached the server');
});

test('one private answer among public ones is enough to refuse', async (t) => {
  const resolver: Resolver = async () => [
    { address: '93.184.216.34', family: 4 },
    { address: '10.0.0.5', family: 4 },
  ];
  await t.throwsAsync(safeRequest({ url: 'http://mixed.example.com/', allowPrivate: false, resolver }), { message: /10\.0\.0\.5/ });
});

test('the same name is allowed when private networks are allowed', async (t) => {
  const resolver: Resolver = async () => [{ address: '127.0.0.1', family: 4 }];
  const res = await safeRequest({ url: `http://rebind.example.com:${port}/`, allowPrivate: true, resolver, method: 'GET' });
  t.is(res.status, 200);
});

test.serial('every redirect hop is re-checked: a redirect to loopback is refused', async (t) => {
  // Treat exactly 127.0.0.1 as "public" so the first hop connects; the redirect targets other loopback spellings.
  const isAllowed = (ip: string): boolean => ip === '127.0.0.1';
  for (const to of [`http://127.0.0.2:${port}/`, `http://[::1]:${port}/`, `http://localhost:${port}/`, `http://2130706434:${port}/`]) {
    const before = hits;
    const err = await t.throwsAsync(
      safeRequest({ url: `http://127.0.0.1:${port}/?to=${encodeURIComponent(to)}`, allowPrivate: false, isAllowed, method: 'GET' }),
      { instanceOf: SsrfError },
    );
    t.truthy(err);
    t.is(hits, before + 1, `only the first hop was requested (${to})`);
  }
  // And a redirect to a name resolving to a private address is caught by the lookup.
  const resolver: Resolver = async () => [{ address: '10.9.9.9', family: 4 }];
  await t.throwsAsync(
    safeRequest({ url: `http://127.0.0.1:${port}/?to=${encodeURIComponent('http://internal.example.com/')}`, allowPrivate: false, isAllowed, resolver, method: 'GET' }),
    { message: /10\.9\.9\.9/ },
  );
});

test('redirects are followed (and capped) when allowed', async (t) => {
  const ok = await safeRequest({ url: `http://127.0.0.1:${port}/?to=${encodeURIComponent(`http://127.0.0.1:${port}/done`)}`, allowPrivate: true, method: 'GET' });
  t.is(ok.status, 200);
  t.is(ok.redirects, 1);
  const loop = `http://127.0.0.1:${port}/?to=${encodeURIComponent(`http://127.0.0.1:${port}/?to=x`)}`;
  await t.throwsAsync(safeRequest({ url: loop, allowPrivate: true, method: 'GET', maxRedirects: 0 }), { message: /too many redirects/ });
});

test.serial('a webhook delivery to a loopback receiver is refused unless private targets are allowed', async (t) => {
  const before = hits;
  const secret = generateSecret();
  const r = await deliverOnce({ url: `http://127.0.0.1:${port}/`, secret }, 'evt_1', '{}', { allowPrivate: false });
  t.false(r.ok);
  t.true(r.fatal);
  t.is(hits, before);
  const ok = await deliverOnce({ url: `http://127.0.0.1:${port}/`, secret }, 'evt_1', '{}', { allowPrivate: true });
  t.true(ok.ok);
});

test('a receiver that never answers times out', async (t) => {
  const silent = createServer(() => undefined);
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const p = (silent.address() as { port: number }).port;
  const r = await deliverOnce({ url: `http://127.0.0.1:${p}/`, secret: generateSecret() }, 'evt_1', '{}', { allowPrivate: true, timeoutMs: 300 });
  t.false(r.ok);
  t.regex(r.error ?? '', /timed out/);
  silent.closeAllConnections();
  await new Promise<void>((r2) => silent.close(() => r2()));
});
