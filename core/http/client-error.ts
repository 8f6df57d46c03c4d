/**
 * Requests that never reach Koa: bytes Node's HTTP parser refuses (a broken request line, a body that runs past
 * its Content-Length into garbage, headers over the size limit) or a request that timed out. Node's default
 * answer is a bare status line with no body, written at once even when a response to the previous request on
 * that connection is still being produced (which is then lost). Here the client gets the hub's usual
 * `{"error":{code,message}}` body, after the responses to every earlier request on the connection (pipelined
 * ones included), and then the connection closes. When the broken bytes are in the body of the request being
 * read (a bad chunk), that request is never answered by its handler: the error goes out at once and the
 * connection is closed, which aborts the handler's read.
 *
 * The other requests Node answers by itself get the same treatment: an HTTP/1.1 request without a Host header
 * (400), an `Expect` other than `100-continue` (417), and the CONNECT method (405; Node would just drop the
 * connection). Refused WebSocket upgrades (plugins/edge) are written with `refuseRaw` from here too.
 */
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { VoxaError, type ErrorCode } from '../errors.js';

function codeFor(err: NodeJS.ErrnoException): ErrorCode {
  if (err.code === 'HPE_HEADER_OVERFLOW') return 'HEADERS_TOO_LARGE';
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return 'REQUEST_TIMEOUT';
  return 'MALFORMED_REQUEST';
}

/** One refusal: the status (the code's own unless given), the hub's error body, extra headers. */
export interface Refusal {
  code: ErrorCode;
  message?: string;
  details?: unknown;
  /** Only where HTTP asks for a status the code's own is not (417 for an unknown expectation). */
  status?: number;
  headers?: Record<string, string>;
}

/** The whole raw response for a refusal written straight to a socket: status line, headers, JSON body; then close. */
export function rawErrorResponse(r: Refusal): string {
  const e = new VoxaError(r.code, r.message, r.details);
  const status = r.status ?? e.status;
  const body = JSON.stringify(e.toJSON());
  const extra = Object.entries(r.headers ?? {}).map(([name, value]) => `${name}: ${value}`);
  return [
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}`,
    'content-type: application/json; charset=utf-8',
    `content-length: ${Buffer.byteLength(body)}`,
    ...extra,
    'connection: close',
    '',
    body,
  ].join('\r\n');
}

/** The whole raw response for a parser-level error: status line, headers, JSON body. */
export function clientErrorResponse(err: NodeJS.ErrnoException): string {
  return rawErrorResponse({ code: codeFor(err) });
}

/** Answers a request Node did parse (so its response keeps its place in the connection's order), then closes. */
function answerJson(res: ServerResponse, r: Refusal): void {
  const e = new VoxaError(r.code, r.message, r.details);
  const body = JSON.stringify(e.toJSON());
  res.writeHead(r.status ?? e.status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...r.headers,
    connection: 'close',
  });
  res.end(body);
}

/**
 * RFC 9112 §3.2: an HTTP/1.1 request must carry Host. Node refuses one without it itself, with an empty 400;
 * the server is created with `requireHostHeader: false` and its request handler calls this first instead.
 * Answers (400 MALFORMED_REQUEST naming the header, then close) and returns true when Host is missing.
 */
export function refuseMissingHost(req: IncomingMessage, res: ServerResponse): boolean {
  const refusal = missingHost(req);
  if (refusal) answerJson(res, refusal);
  return refusal !== null;
}

/** The refusal of an HTTP/1.1 request without Host (RFC 9112 §3.2), or null; plain requests and upgrades alike. */
export function missingHost(req: IncomingMessage): Refusal | null {
  if (req.headers.host !== undefined || req.httpVersionMajor !== 1 || req.httpVersionMinor !== 1) return null;
  return { code: 'MALFORMED_REQUEST', message: 'An HTTP/1.1 request must have a Host header; the connection is closed.', details: { header: 'host' } };
}

/**
 * The server's 'checkExpectation' listener: a request whose `Expect` is anything but `100-continue` (which Node
 * handles itself, so uploads that ask for it keep working): 417 EXPECTATION_FAILED naming the header (RFC 9110
 * §10.1.1). The connection closes, so the body that may follow is never read.
 */
export function answerExpectation(req: IncomingMessage, res: ServerResponse): void {
  trackResponse(req, res);
  if (refuseMissingHost(req, res)) return;
  answerJson(res, {
    code: 'EXPECTATION_FAILED',
    status: 417,
    message: 'The only expectation this server meets is "Expect: 100-continue"; the connection is closed.',
    details: { header: 'expect' },
  });
}

/**
 * The server's 'connect' listener. The hub is no proxy: a CONNECT is answered 405 METHOD_NOT_ALLOWED (with an
 * empty Allow: the target it names is not one of ours, so no method is allowed on it) and the connection
 * closed. Without a listener Node destroys the socket without a word.
 */
export function answerConnect(_req: IncomingMessage, socket: Duplex): void {
  refuseRaw(socket, {
    code: 'METHOD_NOT_ALLOWED',
    message: 'CONNECT is not supported: this server is not a proxy; the connection is closed.',
    headers: { allow: '' },
  });
}

/**
 * Refuses a request whose socket was handed over by Node (an upgrade, a CONNECT): writes the raw error response
 * once every earlier response on the connection has gone out, then closes.
 */
export function refuseRaw(socket: Duplex, r: Refusal): void {
  // Node took its own error listener off the socket with the hand-over: a peer that resets must not crash us.
  if (socket.listenerCount('error') === 0) socket.on('error', destroySelf);
  sendAfterEarlierResponses(socket, rawErrorResponse(r), () => socket.destroy());
}

function destroySelf(this: Duplex): void {
  this.destroy();
}

/** Responses in progress on a socket, in request order: every one Node's queue holds, not only its head. */
const kResponses = Symbol('voxa.responsesInProgress');
/** Set once an answer to a client error is on its way, so a later error on the same socket adds no second one. */
const kAnswering = Symbol('voxa.answeringClientError');
type TrackedSocket = Duplex & { [kResponses]?: Set<ServerResponse>; [kAnswering]?: true };

function untrack(this: ServerResponse): void {
  (this.req.socket as TrackedSocket)[kResponses]?.delete(this);
}

/**
 * The server's 'request' listener (installed before the app's): records each response until it finishes.
 * Node only exposes the head of a connection's pipeline (`socket._httpMessage`); the responses queued behind
 * it are as much "in progress" when the parser gives up. A response that never finishes (its connection
 * closed) goes with its socket.
 */
export function trackResponse(req: IncomingMessage, res: ServerResponse): void {
  const socket = req.socket as TrackedSocket;
  (socket[kResponses] ??= new Set()).add(res);
  res.on('finish', untrack);
}

/** The server's 'clientError' listener. */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  // The peer went away: nobody to answer.
  if (err.code === 'ECONNRESET') {
    socket.destroy();
    return;
  }
  sendAfterEarlierResponses(socket, clientErrorResponse(err));
}

/**
 * Writes `response` (a whole raw HTTP response that closes the connection) after the responses to every earlier
 * request on the socket, then ends the socket. `afterEnd` runs once it is written.
 */
function sendAfterEarlierResponses(socket: Duplex, response: string, afterEnd?: () => void): void {
  const tracked = socket as TrackedSocket;
  // Already answering (more broken bytes, or the request timeout, while earlier responses are still going out).
  if (tracked[kAnswering]) return;
  // The socket is already done.
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  // Responses to earlier requests are sent first, then the error. A request whose body never arrived whole
  // (the broken bytes are in that body: a bad chunk) waits for nothing: its handler is still reading and would
  // wait forever. Only the last request on the connection can be in that state.
  const waitFor: ServerResponse[] = [];
  let unread: ServerResponse | null = null;
  for (const res of tracked[kResponses] ?? []) {
    if (res.writableFinished) continue;
    if (res.req.complete) waitFor.push(res);
    else unread = res;
  }
  const answer = () => {
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    // Its handler already began its response (on the wire by now: everything before it is sent), and bytes
    // after that would corrupt it: just close.
    if (unread?.headersSent) {
      socket.destroy();
      return;
    }
    // Once the answer is out, close for good when a request is still reading its body: closing the connection
    // is what aborts that request (Node aborts a closed connection's requests), so its handler gets an
    // 'aborted' instead of waiting for a peer that may never hang up; what it then writes is dropped.
    const then = unread ? () => socket.destroy() : afterEnd;
    socket.end(response, then);
  };
  if (waitFor.length === 0) {
    answer();
    return;
  }
  tracked[kAnswering] = true;
  // A response that ends without finishing (its handler failed hard) counts as done too.
  let pending = waitFor.length;
  const settled = function (this: ServerResponse) {
    this.off('finish', settled);
    this.off('close', settled);
    if (--pending === 0) answer();
  };
  for (const res of waitFor) {
    res.on('finish', settled);
    res.on('close', settled);
  }
}
