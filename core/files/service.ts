/**
 * Uploads and downloads of conversation files.
 *
 * An upload is streamed: busboy parses the multipart body and the file part is piped through a byte counter
 * (which aborts the moment the limit is passed → 413) and a SHA-256 into a temp file under
 * `<dataDir>/tmp`; memory use does not grow with the file. Only then is the type decided, from the first
 * bytes (sniff.ts), and the name sanitised (names.ts). Images are re-encoded with sharp: a display copy
 * (at most DISPLAY_MAX px per side, orientation applied) and a thumbnail, both without EXIF/XMP/ICC
 * metadata — the uploaded original, which may carry GPS coordinates, is not kept. The blobs go to the blob
 * store; the metadata document and its `file.uploaded` event commit together (store.insertDoc).
 */
import Busboy from 'busboy';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import sharp from 'sharp';
import type { Conversation, UserRecord } from '../domain.js';
import { isVoxaError, VoxaError } from '../errors.js';
import { fieldError } from '../http/validate.js';
import { createEvent } from '../events/catalog.js';
import type { Hub } from '../hub.js';
import { newId } from '../ids.js';
import type { BlobStore } from './blob.js';
import { LocalBlobStore } from './local.js';
import { nameForType, sanitizeName } from './names.js';
import { S3BlobStore } from './s3.js';
import { SNIFF_BYTES, sniff, type Disposition } from './sniff.js';

/** Longest side of the display copy of an image. */
export const DISPLAY_MAX = 2048;
/** Longest side of a thumbnail. */
export const THUMB_MAX = 320;
/** Decoded size above which an image is refused (decompression bombs): 50 megapixels. */
export const MAX_PIXELS = 50_000_000;
export interface ImageVariant {
  key: string;
  contentType: string;
  size: number;
  width: number;
  height: number;
}

/** A file's metadata, kept as a `files` document. */
export interface FileRecord {
  id: string;
  workspaceId: string;
  conversationId: string;
  uploaderId: string;
  /** Sanitised name, with an extension that fits the type. */
  name: string;
  contentType: string;
  /** Bytes of the stored main blob. */
  size: number;
  /** SHA-256 (hex) of the bytes as uploaded. */
  sha256: string;
  disposition: Disposition;
  blobKey: string;
  width?: number;
  height?: number;
  thumbnail?: ImageVariant;
  createdAt: string;
}

/** What the API shows of a file. */
export function publicFile(f: FileRecord) {
  return {
    id: f.id,
    conversationId: f.conversationId,
    uploaderId: f.uploaderId,
    name: f.name,
    contentType: f.contentType,
    size: f.size,
    sha256: f.sha256,
    image: f.disposition === 'image',
    ...(f.width ? { width: f.width, height: f.height } : {}),
    ...(f.thumbnail ? { thumbnail: { width: f.thumbnail.width, height: f.thumbnail.height } } : {}),
    createdAt: f.createdAt,
  };
}

/** The blob store the config asks for. */
export function createBlobStore(hub: Pick<Hub, 'config'>): BlobStore {
  const c = hub.config;
  if (c.blobStore === 's3') {
    if (!c.s3Endpoint || !c.s3Bucket || !c.s3AccessKeyId || !c.s3SecretAccessKey) {
      throw new Error('blobStore is s3 but s3Endpoint, s3Bucket, s3AccessKeyId or s3SecretAccessKey is not set');
    }
    return new S3BlobStore({
      endpoint: c.s3Endpoint,
      region: c.s3Region,
      bucket: c.s3Bucket,
      accessKeyId: c.s3AccessKeyId,
      secretAccessKey: c.s3SecretAccessKey,
      pathStyle: c.s3PathStyle,
    });
  }
  return new LocalBlobStore(join(c.dataDir, 'files'));
}

/** Counts bytes as they pass and fails the pipeline as soon as there are more than `limit`. */
function byteLimit(limit: number, onChunk: (chunk: Buffer) => void): Transform & { bytes: number } {
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      t.bytes += chunk.length;
      if (t.bytes > limit) return cb(new VoxaError('FILE_TOO_LARGE', `The file is larger than ${limit} bytes.`, { limit }, { Connection: 'close' }));
      onChunk(chunk);
      cb(null, chunk);
    },
  }) as Transform & { bytes: number };
  t.bytes = 0;
  return t;
}

interface Spooled {
  path: string;
  size: number;
  sha256: string;
  head: Buffer;
  filename: string;
}

/** Where a workspace keeps an upload limit below the hub's: `{maxBytes}` keyed by workspace id (PATCH /v1/workspace). */
export const FILE_LIMITS = 'file_limits';

/** The upload limit for a workspace: the config's, or a lower one the workspace set. */
export async function uploadLimitFor(hub: Pick<Hub, 'store' | 'config'>, workspaceId: string): Promise<number> {
  const ws = await hub.store.docs.get<{ maxBytes?: number }>(FILE_LIMITS, workspaceId);
  const max = hub.config.uploadMaxBytes;
  return typeof ws?.maxBytes === 'number' && ws.maxBytes > 0 ? Math.min(ws.maxBytes, max) : max;
}

export class FileService {
  readonly blobs: BlobStore;
  constructor(
    private readonly hub: Hub,
    blobs?: BlobStore,
  ) {
    this.blobs = blobs ?? createBlobStore(hub);
  }

  /** The upload limit for a workspace (uploadLimitFor). */
  limitFor(workspaceId: string): Promise<number> {
    return uploadLimitFor(this.hub, workspaceId);
  }

  /** Reads one `file` part of a multipart request into a temp file, enforcing the byte limit while reading. */
  private spool(req: IncomingMessage, limit: number): Promise<Spooled> {
    const tmpDir = join(this.hub.config.dataDir, 'tmp');
    return new Promise<Spooled>((resolve, reject) => {
      let bb: Busboy.Busboy;
      try {
        // Browsers send file names as raw UTF-8; busboy's default for them is latin1.
        bb = Busboy({ headers: req.headers, defParamCharset: 'utf8', limits: { files: 1, fields: 10, fieldSize: 1024, parts: 12, headerPairs: 50 } });
      } catch {
        reject(new VoxaError('UNSUPPORTED_MEDIA_TYPE', 'The body must be multipart/form-data with a boundary.'));
        return;
      }
      let settled = false;
      let writing: Promise<Spooled> | null = null;
      /** The file part being written, while it is. */
      let part: Readable | null = null;
      const fail = (err: unknown) => {
        if (settled) return;
        settled = true;
        // Stop parsing; the rest of the body is discarded and the connection closed after the answer.
        req.unpipe(bb);
        req.resume();
        // Unpiped, busboy would never end the file part: its pipeline would wait forever, holding the temp file
        // and its descriptor (an aborted upload left both behind). Ending it with the error removes the file.
        part?.destroy(err instanceof Error ? err : new Error(String(err)));
        reject(err);
      };
      bb.on('file', (field, stream: Readable, info) => {
        if (field !== 'file' || writing) {
          stream.resume();
          return;
        }
        part = stream;
        stream.once('end', () => (part = null));
        // Listened to at once: the pipeline below attaches only after mkdir, and a body that ends without its
        // closing boundary errors this stream before that. Unheard, the 'error' event would end the process.
        // The error itself reaches the pipeline, which answers it (below).
        let partError: Error | null = null;
        stream.on('error', (err: Error) => void (partError ??= err));
        const path = join(tmpDir, `upload-${randomBytes(12).toString('hex')}`);
        const hash = createHash('sha256');
        const headParts: Buffer[] = [];
        let headLen = 0;
        const counter = byteLimit(limit, (chunk) => {
          hash.update(chunk);
          if (headLen < SNIFF_BYTES) {
            headParts.push(chunk.subarray(0, SNIFF_BYTES - headLen));
            headLen += Math.min(chunk.length, SNIFF_BYTES - headLen);
          }
        });
        writing = mkdir(tmpDir, { recursive: true })
          .then(() => pipeline(stream, counter, createWriteStream(path, { mode: 0o600 })))
          .then(() => ({ path, size: counter.bytes, sha256: hash.digest('hex'), head: Buffer.concat(headParts), filename: info.filename ?? '' }))
          .catch(async (err: unknown) => {
            await rm(path, { force: true });
            // The part itself broke (the body ended mid-part, say): bad input, not a failure of ours.
            if (!isVoxaError(err) && partError) throw fieldError('body.file', `the multipart body is malformed (${partError.message})`);
            throw err;
          });
        writing.catch(fail);
      });
      bb.on('error', () => fail(fieldError('body.file', 'the multipart body is malformed')));
      bb.on('partsLimit', () => fail(fieldError('body', 'too many parts in the multipart body (at most 12)')));
      bb.on('close', () => {
        if (settled) return;
        if (!writing) return fail(fieldError('body.file', 'the body has no part named "file"'));
        writing.then(
          (s) => {
            if (settled) return void rm(s.path, { force: true });
            settled = true;
            resolve(s);
          },
          fail,
        );
      });
      const aborted = () => fail(new VoxaError('VALIDATION_FAILED', 'The upload was aborted.'));
      req.on('aborted', aborted);
      // A client that goes away mid-body: the request closes before it completed.
      req.on('close', () => {
        if (!req.complete) aborted();
      });
      req.pipe(bb);
    });
  }

  /** Handles `POST /v1/conversations/:id/files`. */
  async upload(actor: UserRecord, conversationId: string, req: IncomingMessage): Promise<FileRecord> {
    const conv = await this.hub.chat.getConversationFor(actor, conversationId);
    await this.hub.rateLimiter.hit(`upload:${actor.id}`, 60);
    const type = String(req.headers['content-type'] ?? '');
    if (!/^multipart\/form-data\s*;/i.test(type)) throw new VoxaError('UNSUPPORTED_MEDIA_TYPE', 'Upload files as multipart/form-data with one part named "file".');
    const limit = await this.limitFor(conv.workspaceId);
    // A declared length far past the limit is refused before a byte is read (multipart adds some overhead).
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit + 64 * 1024) {
      throw new VoxaError('FILE_TOO_LARGE', `The file is larger than ${limit} bytes.`, { limit }, { Connection: 'close' });
    }
    const spooled = await this.spool(req, limit);
    const made: string[] = [];
    try {
      return await this.store(actor, conv, spooled, made);
    } finally {
      await Promise.all([spooled.path, ...made].map((p) => rm(p, { force: true })));
    }
  }

  private async store(actor: UserRecord, conv: Conversation, s: Spooled, made: string[]): Promise<FileRecord> {
    const sniffed = sniff(s.head);
    if (!sniffed.ok) throw new VoxaError('FILE_TYPE_REFUSED', `Files of this type are not accepted: ${sniffed.reason}.`, { reason: sniffed.reason });
    const id = newId('fil');
    const name = nameForType(sanitizeName(s.filename), sniffed.type);
    const base = `${conv.workspaceId}/${id}`;
    const record: FileRecord = {
      id,
      workspaceId: conv.workspaceId,
      conversationId: conv.id,
      uploaderId: actor.id,
      name,
      contentType: sniffed.type.mime,
      size: s.size,
      sha256: s.sha256,
      disposition: sniffed.type.disposition,
      blobKey: `${base}/main`,
      createdAt: new Date().toISOString(),
    };
    if (sniffed.type.disposition === 'image') {
      const display = `${s.path}.display`;
      const thumb = `${s.path}.thumb`;
      made.push(display, thumb);
      const img = await this.processImage(s.path, sniffed.type.mime, display, thumb);
      await this.blobs.putFile(record.blobKey, display, { size: img.display.size, contentType: sniffed.type.mime });
      await this.blobs.putFile(`${base}/thumb`, thumb, { size: img.thumb.size, contentType: 'image/webp' });
      Object.assign(record, { size: img.display.size, width: img.display.width, height: img.display.height });
      record.thumbnail = { key: `${base}/thumb`, contentType: 'image/webp', ...img.thumb };
    } else {
      await this.blobs.putFile(record.blobKey, s.path, { size: s.size, contentType: sniffed.type.mime });
    }
    const events = this.hub.chat.eventsFor((f: FileRecord) => [
      createEvent('file.uploaded', {
        workspaceId: f.workspaceId,
        conversationId: f.conversationId,
        actor: { type: 'user', id: actor.id },
        data: { file: { id: f.id, name: f.name, size: f.size, contentType: f.contentType, conversationId: f.conversationId } },
      }),
    ]);
    await this.hub.store.insertDoc('files', id, record, events);
    await this.hub.chat.publish(events.entries);
    return record;
  }

  /** Writes the display copy (same format) and a WebP thumbnail, both without metadata. */
  private async processImage(src: string, mime: string, displayPath: string, thumbPath: string) {
    const animated = mime === 'image/gif' || mime === 'image/webp';
    try {
      const input = () => sharp(src, { limitInputPixels: MAX_PIXELS, animated, failOn: 'error' });
      // rotate() applies the EXIF orientation to the pixels, since the EXIF block itself is dropped.
      let pipelineDisplay = input().rotate().resize({ width: DISPLAY_MAX, height: DISPLAY_MAX, fit: 'inside', withoutEnlargement: true });
      if (mime === 'image/jpeg') pipelineDisplay = pipelineDisplay.jpeg({ quality: 85, mozjpeg: true });
      else if (mime === 'image/png') pipelineDisplay = pipelineDisplay.png();
      else if (mime === 'image/webp') pipelineDisplay = pipelineDisplay.webp({ quality: 85 });
      else pipelineDisplay = pipelineDisplay.gif();
      // sharp drops EXIF, XMP and ICC unless withMetadata()/keepExif() is asked for; neither is.
      const d = await pipelineDisplay.toFile(displayPath);
      const th = await sharp(src, { limitInputPixels: MAX_PIXELS, failOn: 'error' })
        .rotate()
        .resize({ width: THUMB_MAX, height: THUMB_MAX, fit: 'inside', withoutEnlargement: true })
        .webp({ quality: 75 })
        .toFile(thumbPath);
      const dSize = (await stat(displayPath)).size;
      // For animations sharp reports the height of the whole strip of frames; one frame's height is pageHeight.
      const height = (d as { pageHeight?: number }).pageHeight ?? d.height;
      return { display: { size: dSize, width: d.width, height }, thumb: { size: th.size, width: th.width, height: th.height } };
    } catch (err) {
      const msg = (err as Error).message ?? '';
      if (/pixel limit/i.test(msg)) throw new VoxaError('FILE_TOO_LARGE', `The image has more than ${MAX_PIXELS} pixels.`, { maxPixels: MAX_PIXELS });
      throw new VoxaError('FILE_TYPE_REFUSED', 'The image could not be decoded.', { reason: 'undecodable image' });
    }
  }

  /** The file, if the caller may see it (a member of its conversation); FILE_NOT_FOUND otherwise. */
  async fileFor(actor: UserRecord, fileId: string): Promise<FileRecord> {
    const file = await this.hub.store.docs.get<FileRecord>('files', fileId);
    if (!file || file.workspaceId !== actor.workspaceId) throw new VoxaError('FILE_NOT_FOUND');
    try {
      await this.hub.chat.getConversationFor(actor, file.conversationId);
    } catch {
      // Not telling a non-member that the file exists.
      throw new VoxaError('FILE_NOT_FOUND');
    }
    return file;
  }

  /** The bytes of one variant of a file the caller got from fileFor (which checked the actor may read it). */
  async open(file: FileRecord, variant: 'main' | 'thumbnail') {
    if (variant === 'thumbnail' && !file.thumbnail) throw new VoxaError('FILE_NOT_FOUND', 'This file has no thumbnail (it is not an image).');
    const key = variant === 'thumbnail' ? file.thumbnail!.key : file.blobKey;
    const blob = await this.blobs.get(key);
    if (!blob) throw new VoxaError('FILE_NOT_FOUND', 'The file content is missing from the blob store.');
    return { file, blob, contentType: variant === 'thumbnail' ? file.thumbnail!.contentType : file.contentType };
  }
}
