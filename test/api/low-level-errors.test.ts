/**
 * Requests Node's HTTP server would answer by itself (with an empty body, or not at all) and WebSocket upgrades
 * the `ws` library would refuse in plain text get the hub's JSON error with the right status: an HTTP/1.1
 * request without Host, an unknown Expect, CONNECT, a broken handshake to /ws, an upgrade to a path nobody
 * serves. Raw bytes over node:net, against a hub started the way `voxa start` starts it (runHub, edge plugin).
 */
import { connect } from 'node:net';
import test from 'ava';
import { WebSocket } from 'ws';
import { runHub, type RunningHub } from '../../core/server.js';
import { startServers, testConfig } from '../helpers/hub.js';
import { exchange, responses, type Parsed, CLOSE_WITHIN_MS } from '../helpers/raw-http.js';

let servers: Awaited<ReturnType<typeof startServers>>;
let running: RunningHub;
test.before(async () => {
  servers = await startServers();
  running = await runHub(testConfig(servers, { host: '127.0.0.1', port: 0 }), { api: true, embedded: false, plugins: 'edge', name: 'voxa-low-level-errors' });
});
test.after.always(async () => {
  await running?.stop();
  await servers?.dispose();
});

/** The one response a request got, and that the server then closed the connection. */
async function only(t: import('ava').ExecutionContext, bytes: string): Promise<Parsed> {
  const { got, closed } = await exchange(running.port, bytes);
  t.true(closed, `the connection was still open after ${CLOSE_WITHIN_MS} ms; got ${JSON.stringify(got)}`);
  const rs = responses(got);
  t.is(rs.length, 1, JSON.stringify(got));
  return rs[0] ?? { status: 0, headers: {}, text: got, json: null };
}

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const upgrade = (path: string, headers: Record<string, string | undefined> = {}, method = 'GET') => {
  const all: Record<string, string | undefined> = { Host: 'x', Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Key': KEY, 'Sec-WebSocket-Version': '13', ...headers };
  const lines = Object.entries(all)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}: ${v}`);
  return `${method} ${path} HTTP/1.1\r\n${lines.join('\r\n')}\r\n\r\n`;
};

test('an HTTP/1.1 request without Host: 400 MALFORMED_REQUEST naming the header, as JSON, then close', async (t) => {
  const r = await only(t, 'GET /healthz HTTP/1.1\r\n\r\n');
  t.is(r.status, 400, r.text);
  t.is(r.json?.error?.code, 'MALFORMED_REQUEST', r.text);
  t.deepEqual(r.json?.error?.details, { header: 'host' });
  t.regex(r.headers['content-type'] ?? '', /^application\/json/);
});

test('HTTP/1.0 needs no Host (unchanged), and an empty Host is still a Host', async (t) => {
  const r10 = await only(t, 'GET /healthz HTTP/1.0\r\n\r\n');
  t.is(r10.status, 200, r10.text);
  const empty = responses((await exchange(running.port, 'GET /healthz HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n')).got);
  t.is(empty[0]?.status, 200, JSON.stringify(empty));
});

test('an Expect other than 100-continue: 417 with the JSON error naming the header, then close', async (t) => {
  const r = await only(t, 'POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n');
  t.is(r.status, 417, r.text);
  t.is(r.json?.error?.code, 'EXPECTATION_FAILED', r.text);
  t.deepEqual(r.json?.error?.details, { header: 'expect' });
});

test('Expect: 100-continue still works: 100 Continue, then the body is read and the route answers', async (t) => {
  const sock = connect(running.port, '127.0.0.1');
  t.teardown(() => sock.destroy());
  sock.setEncoding('utf8');
  let got = '';
  const waitFor = (re: RegExp) =>
    new Promise<void>((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error(`no ${re} in ${JSON.stringify(got)}`)), CLOSE_WITHIN_MS);
      const check = () => {
        if (!re.test(got)) return;
        clearTimeout(deadline);
        sock.off('data', check);
        resolve();
      };
      sock.on('data', check);
      check();
    });
  sock.on('data', (d: string) => (got += d));
  const body = JSON.stringify({ email: 'nobody@example.test', password: 'not-the-password' });
  sock.write(`POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`);
  await waitFor(/^HTTP\/1\.1 100 Continue\r\n\r\n/);
  sock.write(body);
  await waitFor(/\r\n\r\n\{.*\}$/s);
  const final = responses(got.replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, ''));
  // The body was read and judged: an unknown account, not a missing or unread body.
  t.is(final[0]?.status, 401, got);
  t.is(final[0]?.json?.error?.code, 'INVALID_CREDENTIALS', got);
});

test('CONNECT: 405 METHOD_NOT_ALLOWED as JSON, then close (Node alone drops the connection without a word)', async (t) => {
  const r = await only(t, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
  t.is(r.status, 405, r.text);
  t.is(r.json?.error?.code, 'METHOD_NOT_ALLOWED', r.text);
  t.is(r.headers.allow, '');
});

test('CONNECT after a pipelined request: that request is answered first, then the 405', async (t) => {
  const { got, closed } = await exchange(running.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nCONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
  t.true(closed);
  t.deepEqual(
    responses(got).map((r) => [r.status, r.json?.error?.code]),
    [
      [200, undefined],
      [405, 'METHOD_NOT_ALLOWED'],
    ],
    got,
  );
});

const brokenHandshakes: Array<[string, string, number, string, string]> = [
  ['no Sec-WebSocket-Key', upgrade('/ws', { 'Sec-WebSocket-Key': undefined }), 400, 'MALFORMED_REQUEST', 'sec-websocket-key'],
  ['a Sec-WebSocket-Key that is not 16 bytes of base64', upgrade('/ws', { 'Sec-WebSocket-Key': 'short' }), 400, 'MALFORMED_REQUEST', 'sec-websocket-key'],
  ['no Sec-WebSocket-Version', upgrade('/ws', { 'Sec-WebSocket-Version': undefined }), 400, 'MALFORMED_REQUEST', 'sec-websocket-version'],
  ['Sec-WebSocket-Version 12', upgrade('/ws', { 'Sec-WebSocket-Version': '12' }), 400, 'MALFORMED_REQUEST', 'sec-websocket-version'],
  ['Upgrade: h2c', upgrade('/ws', { Upgrade: 'h2c' }), 400, 'MALFORMED_REQUEST', 'upgrade'],
  ['no Host', upgrade('/ws', { Host: undefined }), 400, 'MALFORMED_REQUEST', 'host'],
  ['a Sec-WebSocket-Protocol that does not parse', upgrade('/ws', { 'Sec-WebSocket-Protocol': 'chat,,"x"' }), 400, 'MALFORMED_REQUEST', ''],
  ['POST', upgrade('/ws', {}, 'POST'), 405, 'METHOD_NOT_ALLOWED', ''],
];

for (const [what, bytes, status, code, header] of brokenHandshakes) {
  test(`an upgrade to /ws with ${what}: ${status} ${code} as JSON, then close`, async (t) => {
    const r = await only(t, bytes);
    t.is(r.status, status, r.text);
    t.is(r.json?.error?.code, code, r.text);
    t.regex(r.headers['content-type'] ?? '', /^application\/json/);
    if (header) t.deepEqual(r.json?.error?.details, { header });
    if (header === 'sec-websocket-version') t.is(r.headers['sec-websocket-version'], '13, 8');
    if (status === 405) t.is(r.headers.allow, 'GET');
  });
}

for (const path of ['/nope', '/socket.iox', '/socket.io', '/ws/extra']) {
  test(`an upgrade to ${path}: 404 NOT_FOUND as JSON, then close`, async (t) => {
    const r = await only(t, upgrade(`${path}?EIO=4&transport=websocket`));
    t.is(r.status, 404, r.text);
    t.is(r.json?.error?.code, 'NOT_FOUND', r.text);
  });
}

test("engine.io's own refusals under /socket.io/ are left as they are (the Socket.IO protocol's, not the hub's)", async (t) => {
  // An unknown transport: engine.io answers in its own words (plain text on an upgrade), not with the hub's error.
  const r = await only(t, upgrade('/socket.io/?EIO=4&transport=carrier-pigeon'));
  t.is(r.status, 400, r.text);
  t.true(r.text.length > 0);
  t.is(r.json?.error, undefined, r.text);
});

test('a correct handshake to /ws still opens a WebSocket', async (t) => {
  const ws = new WebSocket(`ws://127.0.0.1:${running.port}/ws`);
  t.teardown(() => ws.terminate());
  const opened = await new Promise<boolean>((resolve) => {
    ws.once('open', () => resolve(true));
    ws.once('error', () => resolve(false));
    ws.once('unexpected-response', () => resolve(false));
  });
  t.true(opened);
});
