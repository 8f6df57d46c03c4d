/**
 * Requests Node's HTTP parser refuses never reach Koa; the hub still answers them with its error body (not a
 * bare status line), after any response already in progress on the connection, and closes the connection.
 */
import { connect } from 'node:net';
import test from 'ava';
import { runHub, type RunningHub } from '../../core/server.js';
import { startServers, testConfig } from '../helpers/hub.js';

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
function raw(bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(running.port, '127.0.0.1');
    let got = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => (got += d));
    sock.once('error', reject);
    sock.once('close', () => resolve(got));
    sock.write(bytes);
  });
}

/** The JSON body of each response in a raw stream, in order, with its status. */
function responses(stream: string): Array<{ status: number; body: { error?: { code: string; message: string } } }> {
  const out: Array<{ status: number; body: { error?: { code: string; message: string } } }> = [];
  let rest = stream;
  while (rest.startsWith('HTTP/1.1 ')) {
    const headEnd = rest.indexOf('\r\n\r\n');
    const head = rest.slice(0, headEnd);
    const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
    const body = rest.slice(headEnd + 4, headEnd + 4 + length);
    out.push({ status: Number(head.slice(9, 12)), body: JSON.parse(body) });
    rest = rest.slice(headEnd + 4 + length);
  }
  return out;
}

test('a broken request line gets 400 MALFORMED_REQUEST as JSON, then the connection closes', async (t) => {
  const got = await raw('HELLO THERE\r\n\r\n');
  const [r, ...more] = responses(got);
  t.is(r?.status, 400, got);
  t.is(r?.body.error?.code, 'MALFORMED_REQUEST');
  t.deepEqual(more, []);
});

test('a body that runs past its Content-Length: the first request is answered, then MALFORMED_REQUEST', async (t) => {
  // Content-Length says 2 (`{}`); what follows is parsed as a next request, which is garbage.
  const got = await raw('POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}{"email":"x"}\r\n\r\n');
  const rs = responses(got);
  t.deepEqual(
    rs.map((r) => [r.status, r.body.error?.code]),
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
  t.is(r?.body.error?.code, 'HEADERS_TOO_LARGE');
});
