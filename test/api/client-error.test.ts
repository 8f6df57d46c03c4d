/**
 * Requests Node's HTTP parser refuses never reach Koa; the hub still answers them with its error body (not a
 * bare status line), after any response already in progress on the connection, and closes the connection.
 */
import { connect } from 'node:net';
import test from 'ava';
import { runHub, type RunningHub } from '../../core/server.js';
import { startServers, testConfig } from '../helpers/hub.js';
import { exchange, responses, CLOSE_WITHIN_MS } from '../helpers/raw-http.js';

let servers: Awaited<ReturnType<typeof startServers>>;
let running: RunningHub;
test.before(async () => {
  servers = await startServers();
  running = await runHub(testConfig(servers, { host: '127.0.0.1', port: 0 }), { api: true, embedded: false, plugins: 'audit', name: 'voxa-client-error' });
});
test.after.always(async () => {
  await running?.stop();
  await servers?.dispose();
});

/** Writes raw bytes and collects everything the server sends until it closes the connection. */
async function raw(bytes: string): Promise<string> {
  return (await exchange(running.port, bytes)).got;
}

test('a broken request line gets 400 MALFORMED_REQUEST as JSON, then the connection closes', async (t) => {
  const got = await raw('HELLO THERE\r\n\r\n');
  const [r, ...more] = responses(got);
  t.is(r?.status, 400, got);
  t.is(r?.json?.error?.code, 'MALFORMED_REQUEST');
  t.deepEqual(more, []);
});

test('a body that runs past its Content-Length: the first request is answered, then MALFORMED_REQUEST', async (t) => {
  // Content-Length says 2 (`{}`); what follows is parsed as a next request, which is garbage.
  const got = await raw('POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}{"email":"x"}\r\n\r\n');
  const rs = responses(got);
  t.deepEqual(
    rs.map((r) => [r.status, r.json?.error?.code]),
    [
      [400, 'VALIDATION_FAILED'],
      [400, 'MALFORMED_REQUEST'],
    ],
    got,
  );
});

test('headers over the limit get 431 HEADERS_TOO_LARGE as JSON', async (t) => {
  const got = await raw(`GET /v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${'a'.repeat(60_000)}\r\n\r\n`);
  const [r] = responses(got);
  t.is(r?.status, 431, got.slice(0, 200));
  t.is(r?.json?.error?.code, 'HEADERS_TOO_LARGE');
});

const chunkedLogin = 'POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n';

test('a bad chunk in the body of the request being read gets 400 MALFORMED_REQUEST at once, and the connection closes', async (t) => {
  const { got, closed } = await exchange(running.port, `${chunkedLogin}ZZ\r\nabc\r\n0\r\n\r\n`);
  t.true(closed, 'the connection was still open after 10 s');
  t.deepEqual(
    responses(got).map((r) => [r.status, r.json?.error?.code]),
    [[400, 'MALFORMED_REQUEST']],
    got,
  );
});

test('a valid chunk, then a bad one in a later packet: 400 MALFORMED_REQUEST, and the connection closes', async (t) => {
  const { got, closed } = await exchange(running.port, `${chunkedLogin}5\r\n{"tex`, 'ZZ');
  t.true(closed, 'the connection was still open after 10 s');
  t.deepEqual(
    responses(got).map((r) => [r.status, r.json?.error?.code]),
    [[400, 'MALFORMED_REQUEST']],
    got,
  );
});

test('a peer that never hangs up after a bad chunk: the hub still lets go of the connection (the body read is aborted)', async (t) => {
  // allowHalfOpen: this client does not close when the hub ends its side, so only the hub can close the socket.
  const sock = connect({ port: running.port, host: '127.0.0.1', allowHalfOpen: true });
  t.teardown(() => sock.destroy());
  let got = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => (got += d));
  const ended = new Promise<boolean>((resolve) => {
    const deadline = setTimeout(() => resolve(false), CLOSE_WITHIN_MS);
    sock.once('end', () => {
      clearTimeout(deadline);
      resolve(true);
    });
  });
  await new Promise<void>((resolve) => sock.once('connect', resolve));
  sock.write(`${chunkedLogin}5\r\n{"tex`);
  await new Promise((r) => setTimeout(r, 20));
  sock.write('ZZ');
  t.true(await ended, 'no answer within 10 s');
  t.is(responses(got)[0]?.json?.error?.code, 'MALFORMED_REQUEST', got);
  // The hub's side closes without waiting for the peer: no connection is left on the server.
  const deadline = Date.now() + CLOSE_WITHIN_MS;
  let open = -1;
  while (Date.now() < deadline) {
    open = await new Promise<number>((resolve, reject) => running.server!.getConnections((err, n) => (err ? reject(err) : resolve(n))));
    if (open === 0) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  t.is(open, 0, 'the hub kept the connection open');
});

test('pipelined requests before the broken bytes are all answered, in order, then MALFORMED_REQUEST', async (t) => {
  const { got, closed } = await exchange(running.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\nBLAH BLAH\r\n\r\n');
  t.true(closed, 'the connection was still open after 10 s');
  const rs = responses(got);
  t.deepEqual(
    rs.map((r) => [r.status, r.json?.error?.code]),
    [
      [200, undefined],
      [200, undefined],
      [400, 'MALFORMED_REQUEST'],
    ],
    got,
  );
  // The second is /readyz's report (the test servers are up), not a second /healthz.
  t.is((rs[1]?.json as { status?: string } | null | undefined)?.status, 'ok');
  t.truthy((rs[1]?.json as { checks?: unknown } | null | undefined)?.checks);
});
