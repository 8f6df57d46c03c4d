/**
 * The S3 adapter: its SigV4 signer against the worked example in AWS's S3 documentation, and the blob store
 * against a local stand-in of S3 that checks every request's signature and keeps objects in memory.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { S3BlobStore, signV4 } from '../../core/files/s3.js';

const EMPTY_SHA = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

test('SigV4 matches the AWS documentation example (GET Object with Range)', (t) => {
  const h = signV4({
    method: 'GET',
    url: new URL('https://examplebucket.s3.amazonaws.com/test.txt'),
    headers: { range: 'bytes=0-9' },
    payloadHash: EMPTY_SHA,
    region: 'us-east-1',
    accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
    secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
    date: new Date('2013-05-24T00:00:00Z'),
  });
  t.is(
    h.authorization,
    'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
  );
});

test('S3BlobStore puts, gets and deletes through a signature-checking stand-in', async (t) => {
  const objects = new Map<string, { body: Buffer; type: string }>();
  const creds = { accessKeyId: 'AKIDTEST', secretAccessKey: 'stand-in-secret' };
  const rejected: string[] = [];
  const server = createServer(async (req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const url = new URL(req.url!, `http://${req.headers.host}`);
    // Re-sign what arrived with the secret the stand-in knows; anything else is a 403 like S3's.
    const signed = String(req.headers.authorization ?? '').match(/SignedHeaders=([^,]+)/)?.[1]?.split(';') ?? [];
    const headers = Object.fromEntries(signed.filter((n) => !['host', 'x-amz-date', 'x-amz-content-sha256'].includes(n)).map((n) => [n, String(req.headers[n])]));
    const amz = String(req.headers['x-amz-date']);
    const date = new Date(`${amz.slice(0, 4)}-${amz.slice(4, 6)}-${amz.slice(6, 8)}T${amz.slice(9, 11)}:${amz.slice(11, 13)}:${amz.slice(13, 15)}Z`);
    const expect = signV4({ method: req.method!, url, headers, payloadHash: String(req.headers['x-amz-content-sha256']), region: 'eu-test-1', ...creds, date });
    const hashOk = req.method !== 'PUT' || createHash('sha256').update(body).digest('hex') === req.headers['x-amz-content-sha256'];
    if (expect.authorization !== req.headers.authorization || !hashOk) {
      rejected.push(req.method!);
      res.writeHead(403).end('<Error><Code>SignatureDoesNotMatch</Code></Error>');
      return;
    }
    const key = url.pathname;
    if (req.method === 'PUT') {
      objects.set(key, { body, type: String(req.headers['content-type']) });
      res.writeHead(200).end();
    } else if (req.method === 'GET') {
      const o = objects.get(key);
      if (!o) return void res.writeHead(404).end('<Error><Code>NoSuchKey</Code></Error>');
      res.writeHead(200, { 'Content-Type': o.type, 'Content-Length': o.body.length }).end(o.body);
    } else if (req.method === 'DELETE') {
      objects.delete(key);
      res.writeHead(204).end();
    } else res.writeHead(405).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const dir = mkdtempSync(join(tmpdir(), 'voxa-s3-'));
  try {
    const store = new S3BlobStore({ endpoint, region: 'eu-test-1', bucket: 'voxa-files', ...creds });
    const file = join(dir, 'blob');
    writeFileSync(file, 'hello s3 ✓');
    await store.putFile('default/fil_1/main', file, { size: 12, contentType: 'text/plain; charset=utf-8' });
    t.deepEqual([...objects.keys()], ['/voxa-files/default/fil_1/main']);
    const got = await store.get('default/fil_1/main');
    let text = '';
    for await (const c of got!.stream) text += String(c);
    t.is(text, 'hello s3 ✓');
    t.is(await store.get('default/fil_2/main'), null);
    await store.delete('default/fil_1/main');
    t.is(objects.size, 0);
    t.deepEqual(rejected, []);
    await t.throwsAsync(store.get('../../etc/passwd'), { message: /invalid blob key/ });

    const wrong = new S3BlobStore({ endpoint, region: 'eu-test-1', bucket: 'voxa-files', accessKeyId: 'AKIDTEST', secretAccessKey: 'not-it' });
    await t.throwsAsync(wrong.putFile('default/fil_3/main', file, { size: 12, contentType: 'text/plain' }), { message: /HTTP 403 SignatureDoesNotMatch/ });
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
