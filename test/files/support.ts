/** Helpers for the file tests: multipart bodies built by hand and sent with or without Content-Length. */
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';

export function multipart(parts: Array<{ field: string; filename?: string; contentType?: string; data: Buffer | string }>): { body: Buffer; type: string } {
  const boundary = `----voxa${Math.random().toString(16).slice(2)}`;
  const chunks: Buffer[] = [];
  for (const p of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${p.field}"`;
    if (p.filename !== undefined) head += `; filename="${p.filename}"`;
    head += '\r\n';
    if (p.contentType) head += `Content-Type: ${p.contentType}\r\n`;
    chunks.push(Buffer.from(`${head}\r\n`), Buffer.isBuffer(p.data) ? p.data : Buffer.from(p.data), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), type: `multipart/form-data; boundary=${boundary}` };
}

/**
 * POSTs a body in chunks with Transfer-Encoding: chunked (no Content-Length), so only the server's byte
 * counter can stop an oversized upload. Resolves with the status and parsed JSON, or with status 0 when the
 * server closed the connection before answering.
 */
export function postChunked(server: Server, path: string, token: string, body: Buffer, type: string): Promise<{ status: number; body: { error?: { code: string } } }> {
  const { port } = server.address() as AddressInfo;
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': type, 'Transfer-Encoding': 'chunked' } });
    req.on('response', (res) => {
      let text = '';
      res.on('data', (c) => (text += String(c)));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? (JSON.parse(text) as { error?: { code: string } }) : {} }));
    });
    req.on('error', () => resolve({ status: 0, body: {} }));
    let off = 0;
    const step = 16 * 1024;
    const pump = () => {
      while (off < body.length) {
        const ok = req.write(body.subarray(off, off + step));
        off += step;
        if (!ok) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}
