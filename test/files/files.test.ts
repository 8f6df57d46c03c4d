import test from 'ava';
import { readdirSync, existsSync, readlinkSync } from 'node:fs';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import sharp from 'sharp';
import { contentDisposition, nameForType, sanitizeName } from '../../core/files/names.js';
import { sniff } from '../../core/files/sniff.js';
import { serversForFile } from '../helpers/hub.js';
import { bearer, eventually, openApiHub, streamEvents, type ApiHub, type Session } from '../api/support.js';
import { multipart, postChunked } from './support.js';

// ---------- unit: sniffing and names ----------

const PNG_1x1 = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');

test('sniff decides from the bytes: images, documents, media, text; refuses executables, scripts, HTML, SVG', (t) => {
  const is = (bytes: Buffer | string, mime: string) => {
    const r = sniff(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes, 'latin1'));
    t.true(r.ok && r.type.mime === mime, `${mime}: ${JSON.stringify(r)}`);
  };
  const refused = (bytes: Buffer | string, why: RegExp) => {
    const r = sniff(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes, 'latin1'));
    t.true(!r.ok && why.test(r.reason), `${why}: ${JSON.stringify(r)}`);
  };
  is(PNG_1x1, 'image/png');
  is('\xff\xd8\xff\xe0\x00\x10JFIF', 'image/jpeg');
  is('GIF89a\x01\x00', 'image/gif');
  is('RIFF\x10\x00\x00\x00WEBPVP8 ', 'image/webp');
  is('%PDF-1.7\n', 'application/pdf');
  is('PK\x03\x04\x14\x00', 'application/zip');
  is('\x00\x00\x00\x18ftypmp42', 'video/mp4');
  is('hello, this is a note\n', 'text/plain; charset=utf-8');
  is(Buffer.from('grüße aus Köln'), 'text/plain; charset=utf-8');
  is(Buffer.from([0x00, 0x01, 0x02, 0x03, 0xfe]), 'application/octet-stream');
  refused('\x7fELF\x02\x01\x01', /ELF/);
  refused('MZ\x90\x00\x03', /PE/);
  refused(Buffer.from([0xcf, 0xfa, 0xed, 0xfe, 7, 0, 0, 1]), /Mach-O/);
  refused('#!/bin/sh\nrm -rf /\n', /script/);
  refused("<?php system($_GET['c']); ?>", /script/);
  refused('GIF-looking text then <?php evil(); ?>', /script/);
  refused(Buffer.from('\uFEFF  <!DOCTYPE html><html><script>alert(1)</script>'), /HTML/);
  refused('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', /HTML/);
  refused('<?xml version="1.0"?><svg/>', /HTML/);
  refused('hello <script>alert(1)</script>', /HTML/);
});

test('names lose path separators, control and bidi characters, reserved device names, and excess length', (t) => {
  t.is(sanitizeName('../../etc/passwd'), 'passwd');
  t.is(sanitizeName('C:\\Users\\x\\evil.txt'), 'evil.txt');
  t.is(sanitizeName('invoice\u202Efdp.exe'), 'invoicefdp.exe');
  t.is(sanitizeName('a\u0000b\u0007c\u001b[31m.txt'), 'a_b_c_[31m.txt');
  t.is(sanitizeName('zero\u200Bwidth\u2066x\u2069.txt'), 'zerowidthx.txt');
  t.is(sanitizeName('CON'), '_CON');
  t.is(sanitizeName('lpt1.txt'), '_lpt1.txt');
  t.is(sanitizeName('  ..hidden. '), 'hidden');
  t.is(sanitizeName('what?*<>|".txt'), 'what______.txt');
  t.is(sanitizeName(''), 'file');
  t.is(sanitizeName('...'), 'file');
  const long = sanitizeName(`${'é'.repeat(300)}.pdf`);
  t.true(Buffer.byteLength(long) <= 200);
  t.true(long.endsWith('.pdf'));
  t.is(nameForType('evil.exe', { mime: 'image/png', ext: ['png'], disposition: 'image' }), 'evil.png');
  t.is(nameForType('photo.JPEG', { mime: 'image/jpeg', ext: ['jpg', 'jpeg'], disposition: 'image' }), 'photo.JPEG');
  t.is(contentDisposition('attachment', 'Résumé "1".txt'), `attachment; filename="R_sum_ _1_.txt"; filename*=UTF-8''R%C3%A9sum%C3%A9%20%221%22.txt`);
});

// ---------- API ----------

const servers = serversForFile();

async function setup(api: ApiHub) {
  const [ana, bo, cy] = [await api.register('Ana'), await api.register('Bo'), await api.register('Cy')];
  const conv = (await api.http.post('/v1/conversations').set(...bearer(ana)).send({ type: 'direct', members: [bo.id] })).body.conversation as { id: string };
  const other = (await api.http.post('/v1/conversations').set(...bearer(bo)).send({ type: 'direct', members: [cy.id] })).body.conversation as { id: string };
  return { ana, bo, cy, conv, other };
}

function upload(api: ApiHub, who: Session, convId: string, name: string, data: Buffer | string, contentType = 'application/octet-stream') {
  return api.http.post(`/v1/conversations/${convId}/files`).set(...bearer(who)).attach('file', Buffer.isBuffer(data) ? data : Buffer.from(data), { filename: name, contentType });
}

/** Downloads as a Buffer whatever the content type. */
function download(api: ApiHub, who: Session, path: string) {
  return api.http
    .get(path)
    .set(...bearer(who))
    .buffer(true)
    .parse((res, cb) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => cb(null, Buffer.concat(chunks)));
    });
}

test('an image gets a display copy and a thumbnail, both without EXIF; members download it inline with the right headers', async (t) => {
  const api = await openApiHub(servers);
  try {
    const { ana, bo, cy, conv } = await setup(api);
    const jpeg = await sharp({ create: { width: 3000, height: 1500, channels: 3, background: { r: 200, g: 30, b: 30 } } })
      .jpeg()
      .withExif({ IFD0: { Copyright: 'GPS-SECRET-MARKER', Artist: 'Ana' } })
      .toBuffer();
    t.truthy((await sharp(jpeg).metadata()).exif, 'the upload does carry EXIF');

    const res = await upload(api, ana, conv.id, 'holiday.jpg', jpeg, 'text/html');
    t.is(res.status, 201);
    const file = res.body.file;
    t.like(file, { name: 'holiday.jpg', contentType: 'image/jpeg', image: true, width: 2048, height: 1024, conversationId: conv.id, uploaderId: ana.id });
    t.like(file.thumbnail, { width: 320, height: 160 });

    const main = await download(api, bo, `/v1/files/${file.id}`);
    t.is(main.status, 200);
    t.is(main.headers['content-type'], 'image/jpeg', 'the sniffed type, not the one the client claimed');
    t.is(main.headers['x-content-type-options'], 'nosniff');
    t.regex(main.headers['content-disposition']!, /^inline; filename="holiday\.jpg"; filename\*=UTF-8''holiday\.jpg$/);
    const meta = await sharp(main.body as Buffer).metadata();
    t.is(meta.width, 2048);
    t.is(meta.height, 1024);
    t.is(meta.exif, undefined, 'EXIF is gone');
    t.false((main.body as Buffer).includes('GPS-SECRET-MARKER'));

    const thumb = await download(api, bo, `/v1/files/${file.id}/thumbnail`);
    t.is(thumb.status, 200);
    t.is(thumb.headers['content-type'], 'image/webp');
    const tm = await sharp(thumb.body as Buffer).metadata();
    t.is(tm.format, 'webp');
    t.true(tm.width! <= 320 && tm.height! <= 320);
    t.is(tm.exif, undefined);

    // Download authorization: a non-member, a stranger without a token, an unknown id.
    const denied = await api.http.get(`/v1/files/${file.id}`).set(...bearer(cy));
    t.is(denied.status, 404);
    t.is(denied.body.error.code, 'FILE_NOT_FOUND');
    t.is((await api.http.get(`/v1/files/${file.id}/thumbnail`).set(...bearer(cy))).status, 404);
    t.is((await api.http.get(`/v1/files/${file.id}/meta`).set(...bearer(cy))).status, 404);
    t.is((await api.http.get(`/v1/files/${file.id}`)).status, 401);
    t.is((await api.http.get('/v1/files/fil_nope').set(...bearer(ana))).body.error.code, 'FILE_NOT_FOUND');
    t.is((await api.http.get('/v1/files/..%2F..%2Fsecrets.json').set(...bearer(ana))).status, 400);
    t.is((await api.http.get(`/v1/files/${file.id}/meta`).set(...bearer(bo))).body.file.id, file.id);

    // Leaving the conversation ends access.
    // (A direct conversation has fixed members; a group shows it.)
    const grp = (await api.http.post('/v1/conversations').set(...bearer(ana)).send({ type: 'group', title: 'G', members: [bo.id, cy.id] })).body.conversation;
    const g = (await upload(api, ana, grp.id, 'dot.png', PNG_1x1)).body.file;
    t.is((await download(api, cy, `/v1/files/${g.id}`)).status, 200);
    t.is((await api.http.patch(`/v1/conversations/${grp.id}`).set(...bearer(ana)).send({ removeMembers: [cy.id] })).status, 200);
    t.is((await api.http.get(`/v1/files/${g.id}`).set(...bearer(cy))).status, 404);

    // file.uploaded went out through the outbox.
    const ev = await eventually(async () => (await streamEvents(api.hub)).find((e) => e.event.type === 'file.uploaded' && (e.event.data as { file: { id: string } }).file.id === file.id));
    t.like(ev.event, { conversationId: conv.id, actor: { type: 'user', id: ana.id } });
    t.like((ev.event.data as { file: object }).file, { name: 'holiday.jpg', contentType: 'image/jpeg', size: file.size });
    t.is(ev.msgId, ev.event.id);
  } finally {
    await api.close();
  }
});

test('type spoofing: shell.php.jpg with PHP, HTML named .png and an ELF named .jpg are refused; a PNG named .exe is stored as a PNG', async (t) => {
  const api = await openApiHub(servers);
  try {
    const { ana, conv } = await setup(api);
    for (const [name, data] of [
      ['shell.php.jpg', "<?php system($_GET['cmd']); ?>"],
      ['cute.png', '<!doctype html><html><body><script>document.location="//evil"</script>'],
      ['logo.jpg', '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'],
      ['photo.jpg', Buffer.concat([Buffer.from('\x7fELF\x02\x01\x01\x00', 'latin1'), Buffer.alloc(64)])],
      ['setup.gif', Buffer.concat([Buffer.from('MZ\x90\x00', 'latin1'), Buffer.alloc(64)])],
    ] as const) {
      const r = await upload(api, ana, conv.id, name, data, 'image/jpeg');
      t.is(r.status, 415, name);
      t.is(r.body.error.code, 'FILE_TYPE_REFUSED', name);
    }
    // A file with a valid JPEG signature but garbage after it is not decodable: refused, not a 500.
    const fake = await upload(api, ana, conv.id, 'broken.jpg', Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(200, 7)]));
    t.is(fake.status, 415);
    t.is(await api.hub.store.docs.count('files'), 0, 'nothing refused was stored');

    const png = await upload(api, ana, conv.id, 'invoice.exe', PNG_1x1, 'application/x-msdownload');
    t.is(png.status, 201);
    t.like(png.body.file, { name: 'invoice.png', contentType: 'image/png', image: true, width: 1, height: 1 });

    // Plain text downloads as an attachment with a sanitised name in both filename forms.
    const txt = await upload(api, ana, conv.id, 'Résumé\u202Egnp.txt', 'just some notes', 'image/png');
    t.is(txt.status, 201);
    t.like(txt.body.file, { name: 'Résumégnp.txt', contentType: 'text/plain; charset=utf-8', image: false });
    t.false('thumbnail' in txt.body.file);
    const dl = await download(api, ana, `/v1/files/${txt.body.file.id}`);
    t.is(dl.status, 200);
    t.is(dl.headers['content-type'], 'text/plain; charset=utf-8');
    t.is(dl.headers['content-disposition'], `attachment; filename="R_sum_gnp.txt"; filename*=UTF-8''R%C3%A9sum%C3%A9gnp.txt`);
    t.is(dl.headers['x-content-type-options'], 'nosniff');
    t.is((dl.body as Buffer).toString(), 'just some notes');
    t.is((await api.http.get(`/v1/files/${txt.body.file.id}/thumbnail`).set(...bearer(ana))).body.error.code, 'FILE_NOT_FOUND');
  } finally {
    await api.close();
  }
});

test('upload limits: declared and streamed (chunked) oversize uploads get 413 and leave nothing behind; a workspace can set a lower limit', async (t) => {
  const api = await openApiHub(servers, { uploadMaxBytes: 100_000 });
  try {
    const { ana, conv } = await setup(api);
    const big = Buffer.alloc(300_000, 'a');
    const declared = await upload(api, ana, conv.id, 'big.txt', big);
    t.is(declared.status, 413);
    t.is(declared.body.error.code, 'FILE_TOO_LARGE');
    t.is(declared.body.error.details.limit, 100_000);

    // No Content-Length: only the byte counter on the stream can stop it.
    const mp = multipart([{ field: 'file', filename: 'big.txt', contentType: 'text/plain', data: big }]);
    const chunked = await postChunked(api.server, `/v1/conversations/${conv.id}/files`, ana.accessToken, mp.body, mp.type);
    t.true(chunked.status === 413 || chunked.status === 0, `status ${chunked.status}`);
    if (chunked.status === 413) t.is(chunked.body.error!.code, 'FILE_TOO_LARGE');

    // Exactly at the limit is fine, one byte over is not.
    const at = multipart([{ field: 'file', filename: 'ok.txt', data: Buffer.alloc(100_000, 'b') }]);
    t.is((await postChunked(api.server, `/v1/conversations/${conv.id}/files`, ana.accessToken, at.body, at.type)).status, 201);
    const over = multipart([{ field: 'file', filename: 'over.txt', data: Buffer.alloc(100_001, 'b') }]);
    t.is((await postChunked(api.server, `/v1/conversations/${conv.id}/files`, ana.accessToken, over.body, over.type)).status, 413);

    await api.hub.store.docs.put('file_limits', api.hub.config.defaultWorkspaceId, { maxBytes: 1000 });
    const small = await upload(api, ana, conv.id, 'two-k.txt', Buffer.alloc(2000, 'c'));
    t.is(small.status, 413);
    t.is(small.body.error.details.limit, 1000);

    t.is(await api.hub.store.docs.count('files'), 1);
    // No temp files left over from the refused uploads.
    const tmp = join(api.hub.config.dataDir, 'tmp');
    await eventually(async () => !existsSync(tmp) || readdirSync(tmp).length === 0);
    t.pass();

    // Not multipart, no file part, a non-member: 4xx with a code.
    t.is((await api.http.post(`/v1/conversations/${conv.id}/files`).set(...bearer(ana)).send({ file: 'x' })).body.error.code, 'UNSUPPORTED_MEDIA_TYPE');
    const nofile = multipart([{ field: 'other', data: 'x' }]);
    const nf = await api.http.post(`/v1/conversations/${conv.id}/files`).set(...bearer(ana)).set('Content-Type', nofile.type).send(nofile.body);
    t.is(nf.status, 400);
    t.is(nf.body.error.code, 'VALIDATION_FAILED');
    const outsider = await api.register('Dee');
    t.is((await upload(api, outsider, conv.id, 'a.txt', 'x')).body.error.code, 'NOT_A_MEMBER');
  } finally {
    await api.close();
  }
});

test('messages carry attachments of their own conversation only', async (t) => {
  const api = await openApiHub(servers);
  try {
    const { ana, bo, conv, other } = await setup(api);
    const mine = (await upload(api, ana, conv.id, 'a.txt', 'aaa')).body.file;
    const theirs = (await upload(api, bo, other.id, 'b.txt', 'bbb')).body.file;
    const sent = await api.http.post(`/v1/conversations/${conv.id}/messages`).set(...bearer(bo)).send({ text: 'see file', attachments: [mine.id] });
    t.is(sent.status, 201);
    t.deepEqual(sent.body.message.attachments, [mine.id]);
    const noText = await api.http.post(`/v1/conversations/${conv.id}/messages`).set(...bearer(ana)).send({ text: '', attachments: [mine.id] });
    t.is(noText.status, 201, 'a file alone is a message');
    for (const attachments of [[theirs.id], ['fil_unknown'], [mine.id, mine.id], Array.from({ length: 11 }, (_, i) => `fil_${i}`), ['../x']]) {
      const r = await api.http.post(`/v1/conversations/${conv.id}/messages`).set(...bearer(bo)).send({ text: 'x', attachments });
      t.is(r.status, 400, JSON.stringify(attachments));
      t.is(r.body.error.code, 'VALIDATION_FAILED');
    }
    const hist = await api.http.get(`/v1/conversations/${conv.id}/messages`).set(...bearer(ana));
    t.is(hist.body.messages.length, 2);
  } finally {
    await api.close();
  }
});

test('an upload the client abandons mid-body leaves no temp file and no open descriptor behind', async (t) => {
  const api = await openApiHub(servers);
  try {
    const { ana, conv } = await setup(api);
    const { port } = api.server.address() as AddressInfo;
    const mp = multipart([{ field: 'file', filename: 'big.bin', contentType: 'application/octet-stream', data: Buffer.alloc(400_000, 7) }]);
    const tmp = join(api.hub.config.dataDir, 'tmp');
    const openTemp = () => readdirSync(`/proc/${process.pid}/fd`).filter((fd) => {
      try {
        return readlinkSync(`/proc/${process.pid}/fd/${fd}`).startsWith(tmp);
      } catch {
        return false;
      }
    }).length;
    for (let i = 0; i < 3; i++) {
      // Half the body, then the client goes away (a phone losing signal).
      await new Promise<void>((resolve) => {
        const req = request({ host: '127.0.0.1', port, path: `/v1/conversations/${conv.id}/files`, method: 'POST', headers: { Authorization: `Bearer ${ana.accessToken}`, 'Content-Type': mp.type, 'Content-Length': mp.body.length } });
        req.on('error', () => resolve());
        req.write(mp.body.subarray(0, 200_000), () => setTimeout(() => {
          req.destroy();
          resolve();
        }, 200));
      });
    }
    await eventually(async () => (!existsSync(tmp) || readdirSync(tmp).length === 0) && openTemp() === 0, 10_000);
    t.is(await api.hub.store.docs.count('files'), 0, 'nothing stored');
  } finally {
    await api.close();
  }
});
