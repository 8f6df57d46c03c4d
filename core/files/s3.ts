/**
 * Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, R2, …) through a small Signature V4
 * client on node:http(s). The AWS SDK would add dozens of packages for three calls; SigV4 is a page, and
 * test/files/s3.test.ts checks it against the example in AWS's documentation.
 */
import { createHash, createHmac } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';
import { assertBlobKey, type BlobStore } from './blob.js';

export interface S3Options {
  /** e.g. https://s3.eu-central-1.amazonaws.com or http://minio:9000 */
  endpoint: string;
  region: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Path-style URLs (`endpoint/bucket/key`), which every S3-compatible service accepts. Default true. */
  pathStyle?: boolean;
}

const sha256Hex = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');
const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();

/** RFC 3986 encoding as SigV4 wants it: everything but unreserved characters, optionally keeping '/'. */
export function uriEncode(s: string, keepSlash: boolean): string {
  let out = '';
  for (const byte of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-._~]/.test(c) || (keepSlash && c === '/')) out += c;
    else out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

export interface SignInput {
  method: string;
  url: URL;
  /** Headers to sign (host is added from the URL). */
  headers: Record<string, string>;
  payloadHash: string;
  region: string;
  service?: string;
  accessKeyId: string;
  secretAccessKey: string;
  date: Date;
}

/** The headers to send for a request signed with AWS Signature Version 4 (header-based auth). */
export function signV4(input: SignInput): Record<string, string> {
  const service = input.service ?? 's3';
  const amzDate = input.date.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const day = amzDate.slice(0, 8);
  const headers: Record<string, string> = { ...input.headers, host: input.url.host, 'x-amz-date': amzDate, 'x-amz-content-sha256': input.payloadHash };
  const names = Object.keys(headers).map((h) => h.toLowerCase()).sort();
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  const canonicalHeaders = names.map((n) => `${n}:${String(lower[n]).trim().replace(/\s+/g, ' ')}\n`).join('');
  const signedHeaders = names.join(';');
  const query = [...input.url.searchParams.entries()]
    .map(([k, v]) => [uriEncode(k, false), uriEncode(v, false)] as const)
    .sort((a, b) => (a[0] === b[0] ? (a[1] < b[1] ? -1 : 1) : a[0] < b[0] ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const path = uriEncode(decodeURIComponent(input.url.pathname), true);
  const canonical = [input.method, path, query, canonicalHeaders, signedHeaders, input.payloadHash].join('\n');
  const scope = `${day}/${input.region}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(canonical)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${input.secretAccessKey}`, day), input.region), service), 'aws4_request');
  const signature = createHmac('sha256', key).update(toSign).digest('hex');
  return {
    ...headers,
    authorization: `AWS4-HMAC-SHA256 Credential=${input.accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`,
  };
}

async function fileSha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

export class S3BlobStore implements BlobStore {
  readonly kind = 's3' as const;
  constructor(private readonly opts: S3Options) {}

  private urlOf(key: string): URL {
    assertBlobKey(key);
    const base = new URL(this.opts.endpoint);
    if (this.opts.pathStyle === false) {
      base.hostname = `${this.opts.bucket}.${base.hostname}`;
      base.pathname = `/${key}`;
    } else {
      base.pathname = `${base.pathname.replace(/\/$/, '')}/${this.opts.bucket}/${key}`;
    }
    return base;
  }

  private send(method: string, url: URL, headers: Record<string, string>, payloadHash: string, body?: Readable): Promise<IncomingMessage> {
    const signed = signV4({ method, url, headers, payloadHash, region: this.opts.region, accessKeyId: this.opts.accessKeyId, secretAccessKey: this.opts.secretAccessKey, date: new Date() });
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { method, headers: signed, timeout: 60_000 });
    return new Promise((resolve, reject) => {
      req.on('response', resolve);
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error('S3 request timed out')));
      if (body) {
        body.on('error', (err) => req.destroy(err));
        body.pipe(req);
      } else req.end();
    });
  }

  private async fail(res: IncomingMessage, what: string): Promise<never> {
    let text = '';
    for await (const chunk of res) if (text.length < 2000) text += String(chunk);
    // The error body names the problem (AccessDenied, NoSuchBucket…); it holds no secret.
    const code = /<Code>([^<]+)<\/Code>/.exec(text)?.[1] ?? 'unknown';
    throw new Error(`S3 ${what} failed: HTTP ${res.statusCode} ${code}`);
  }

  async putFile(key: string, path: string, opts: { size: number; contentType: string }): Promise<void> {
    const hash = await fileSha256(path);
    const res = await this.send('PUT', this.urlOf(key), { 'content-length': String(opts.size), 'content-type': opts.contentType }, hash, createReadStream(path));
    if (res.statusCode !== 200) return this.fail(res, 'PUT');
    res.resume();
  }

  async get(key: string) {
    const res = await this.send('GET', this.urlOf(key), {}, sha256Hex(''));
    if (res.statusCode === 404) {
      res.resume();
      return null;
    }
    if (res.statusCode !== 200) return this.fail(res, 'GET');
    return { stream: res as Readable, size: Number(res.headers['content-length'] ?? 0) };
  }

  async delete(key: string): Promise<void> {
    const res = await this.send('DELETE', this.urlOf(key), {}, sha256Hex(''));
    if (res.statusCode !== 204 && res.statusCode !== 200 && res.statusCode !== 404) return this.fail(res, 'DELETE');
    res.resume();
  }
}
