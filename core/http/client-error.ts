/**
 * Requests that never reach Koa: bytes Node's HTTP parser refuses (a broken request line, a body that runs past
 * its Content-Length into garbage, headers over the size limit) or a request that timed out. Node's default
 * answer is a bare status line with no body, written at once even when a response to the previous request on
 * that connection is still being produced (which is then lost). Here the client gets the hub's usual
 * `{"error":{code,message}}` body, after the responses to every earlier request on the connection (pipelined
 * ones included), and then the connection closes. When the broken bytes are in the body of the request being
 * read (a bad chunk), that request is never answered by its handler: the error goes out at once and the
 * connection is closed, which aborts the handler's read.
 */
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { VoxaError, type ErrorCode } from '../errors.js';

function codeFor(err: NodeJS.ErrnoException): ErrorCode {
  if (err.code === 'HPE_HEADER_OVERFLOW') return 'HEADERS_TOO_LARGE';
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return 'REQUEST_TIMEOUT';
  return 'MALFORMED_REQUEST';
}

/** The whole raw response for a parser-level error: status line, headers, JSON body. */
export function clientErrorResponse(err: NodeJS.ErrnoException): string {
  const e = new VoxaError(codeFor(err));
  const body = JSON.stringify(e.toJSON());
  return [
    `HTTP/1.1 ${e.status} ${STATUS_CODES[e.status] ?? 'Error'}`,
    'content-type: application/json; charset=utf-8',
    `content-length: ${Buffer.byteLength(body)}`,
    'connection: close',
    '',
    body,
  ].join('\r\n');
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
  const tracked = socket as TrackedSocket;
  // The peer went away: nobody to answer.
  if (err.code === 'ECONNRESET') {
    socket.destroy();
    return;
  }
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
    socket.end(clientErrorResponse(err), unread ? () => socket.destroy() : undefined);
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
