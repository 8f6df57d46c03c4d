/**
 * Raw HTTP for tests of what the server answers before (or instead of) the app: bytes written to a socket as
 * they are, and the responses read back from the stream.
 */
import { connect } from 'node:net';

/** How long a connection may take to be answered and closed; the bugs these tests guard against never close it. */
export const CLOSE_WITHIN_MS = 10_000;

/**
 * Writes raw bytes to 127.0.0.1:`port` (each string its own write, a tick apart) and collects everything the
 * server sends until it closes the connection; `closed` is false when it had not closed within CLOSE_WITHIN_MS.
 */
export function exchange(port: number, ...parts: string[]): Promise<{ got: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    let got = '';
    const deadline = setTimeout(() => {
      sock.removeAllListeners('close');
      sock.destroy();
      resolve({ got, closed: false });
    }, CLOSE_WITHIN_MS);
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => (got += d));
    sock.once('error', reject);
    sock.once('close', () => {
      clearTimeout(deadline);
      resolve({ got, closed: true });
    });
    void (async () => {
      for (const part of parts) {
        sock.write(part);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
  });
}

export interface Parsed {
  status: number;
  headers: Record<string, string>;
  text: string;
  json: { error?: { code: string; message: string; details?: Record<string, unknown> } } | null;
}

/** The responses in a raw stream, in order (bodies framed by Content-Length, or chunked). */
export function responses(stream: string): Parsed[] {
  const out: Parsed[] = [];
  let rest = stream;
  while (rest.startsWith('HTTP/1.1 ')) {
    const headEnd = rest.indexOf('\r\n\r\n');
    if (headEnd === -1) break;
    const lines = rest.slice(0, headEnd).split('\r\n');
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    let text = '';
    rest = rest.slice(headEnd + 4);
    const status = Number(lines[0]!.slice(9, 12));
    if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      text = rest.slice(0, n);
      rest = rest.slice(n);
    } else if (headers['transfer-encoding'] === 'chunked') {
      for (;;) {
        const eol = rest.indexOf('\r\n');
        const size = parseInt(rest.slice(0, eol), 16);
        text += rest.slice(eol + 2, eol + 2 + size);
        rest = rest.slice(eol + 2 + size + 2);
        if (size === 0 || Number.isNaN(size)) break;
      }
    } else if (status !== 100 && status !== 101) {
      text = rest;
      rest = '';
    }
    let json: Parsed['json'] = null;
    try {
      json = JSON.parse(text) as Parsed['json'];
    } catch {
      // not JSON: left null, which the assertions report
    }
    out.push({ status, headers, text, json });
  }
  return out;
}
