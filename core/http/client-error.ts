/**
 * Requests that never reach Koa: bytes Node's HTTP parser refuses (a broken request line, a body that runs past
 * its Content-Length into garbage, headers over the size limit) or a request that timed out. Node's default
 * answer is a bare status line with no body, written at once even when a response to the previous request on
 * that connection is still being produced (which is then lost). Here the client gets the hub's usual
 * `{"error":{code,message}}` body, after any response already in progress, and then the connection closes.
 */
import { STATUS_CODES, type ServerResponse } from 'node:http';
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

/** The server's 'clientError' listener. */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  // The peer went away (or the socket is already done): nobody to answer.
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const answer = () => {
    if (socket.writable) socket.end(clientErrorResponse(err));
    else socket.destroy();
  };
  // The response to the request before the broken bytes may still be on its way (handlers are async): send
  // it first, then the error. A response that ends without finishing (its handler failed hard) closes too.
  const inProgress = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (inProgress && !inProgress.writableFinished) {
    let done = false;
    const once = () => {
      if (done) return;
      done = true;
      answer();
    };
    inProgress.once('finish', once);
    inProgress.once('close', once);
    return;
  }
  answer();
}
