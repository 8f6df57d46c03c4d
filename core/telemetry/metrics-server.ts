/**
 * A bare /metrics endpoint for processes without the API (e.g. `voxa worker`), so every process can be
 * scraped. The API process serves /metrics from its Koa app instead.
 */
import { createServer, type Server } from 'node:http';
import { registry } from './metrics.js';

export interface MetricsServer {
  server: Server;
  port: number;
  close(): Promise<void>;
}

/** Listens on host:port (port 0 picks a free one) and answers GET /metrics; everything else is 404. */
export async function startMetricsServer(opts: { port: number; host?: string }): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"NOT_FOUND","message":"Only GET /metrics is served here."}}');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      () => res.writeHead(500).end(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '0.0.0.0', () => resolve());
  });
  return {
    server,
    port: (server.address() as { port: number }).port,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
