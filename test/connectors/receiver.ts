/**
 * A local webhook receiver for tests: verifies every request's Standard Webhooks signature and answers from a
 * script (status codes in order, then 200), so tests can make it fail on demand.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { verify } from '../../connectors/webhook/signing.js';

export interface Received {
  id: string;
  timestamp: number;
  verified: boolean;
  body: string;
  json: { id: string; type: string; data: unknown };
  headers: IncomingHttpHeaders;
  status: number;
  at: number;
}

export interface Receiver {
  url: string;
  port: number;
  received: Received[];
  /** Status codes to answer next, in order (then 200). An entry may carry headers. */
  script: Array<number | { status: number; headers?: Record<string, string> }>;
  secret: string;
  close(): Promise<void>;
}

export async function startReceiver(secret = ''): Promise<Receiver> {
  const rcv: Receiver = { url: '', port: 0, received: [], script: [], secret, close: async () => undefined };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const next = rcv.script.shift() ?? 200;
      const { status, headers } = typeof next === 'number' ? { status: next, headers: {} } : { status: next.status, headers: next.headers ?? {} };
      let json: Received['json'] = { id: '', type: '', data: null };
      try {
        json = JSON.parse(body) as Received['json'];
      } catch {
        /* recorded as-is */
      }
      rcv.received.push({
        id: String(req.headers['webhook-id']),
        timestamp: Number(req.headers['webhook-timestamp']),
        verified: verify(rcv.secret, req.headers, body),
        body,
        json,
        headers: req.headers,
        status,
        at: Date.now(),
      });
      res.writeHead(status, headers);
      res.end('ok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  rcv.port = (server.address() as { port: number }).port;
  rcv.url = `http://127.0.0.1:${rcv.port}/hook`;
  rcv.close = () => new Promise<void>((r) => server.close(() => r()));
  return rcv;
}

/** Polls until `cond` holds (generous timeout; the machine is shared). */
export async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 30_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
