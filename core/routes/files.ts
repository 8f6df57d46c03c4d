/**
 * Files: `POST /v1/conversations/:id/files` (multipart, one part named `file`), `GET /v1/files/:id`,
 * `GET /v1/files/:id/thumbnail` and `GET /v1/files/:id/meta`. The upload route declares no JSON body: the
 * multipart stream goes straight to FileService.
 */
import { z } from 'zod';
import { contentDisposition } from '../files/names.js';
import { publicFile, type FileService } from '../files/service.js';
import type { ApiContext, ApiRouter } from '../http/api-router.js';
import { ConversationParams, Id } from './schemas.js';

const FileOut = z.object({
  id: z.string(),
  conversationId: z.string(),
  uploaderId: z.string(),
  name: z.string(),
  contentType: z.string(),
  size: z.number().int(),
  sha256: z.string(),
  image: z.boolean(),
  width: z.number().int().optional(),
  height: z.number().int().optional(),
  thumbnail: z.object({ width: z.number().int(), height: z.number().int() }).optional(),
  createdAt: z.string(),
});
const FileResponse = z.object({ file: FileOut });
const FileParams = z.strictObject({ id: Id });
/** The upload's form as the OpenAPI document shows it; FileService reads and checks the stream itself. */
const UploadForm = z.strictObject({ file: z.file() });

async function send(ctx: ApiContext, files: FileService, variant: 'main' | 'thumbnail', id: string): Promise<void> {
  // Membership is checked on every request, revalidations included: that is what makes removal effective.
  const file = await files.fileFor(ctx.state.user!, id);
  // A file's bytes never change after upload, so its hash and the variant name the representation.
  ctx.set('ETag', `"${file.sha256}-${variant}"`);
  // `no-cache`, not a max-age: a browser may keep the copy but must ask each time, so a member who was removed
  // gets 404 instead of a cached file. A still-current member's revalidation costs a 304 without the bytes.
  ctx.set('Cache-Control', 'private, no-cache');
  ctx.status = 200;
  if (ctx.fresh) {
    ctx.status = 304;
    return;
  }
  const { blob, contentType } = await files.open(file, variant);
  ctx.type = contentType;
  ctx.length = blob.size;
  // Only images render inline; everything else downloads. nosniff (set for every response) stops a browser
  // from second-guessing the type, and the CSP sandbox disarms anything that still got rendered.
  const name = variant === 'thumbnail' ? `${file.name.replace(/\.[^.]*$/, '')}-thumbnail.webp` : file.name;
  ctx.set('Content-Disposition', contentDisposition(file.disposition === 'image' ? 'inline' : 'attachment', name));
  ctx.set('Content-Security-Policy', "default-src 'none'; sandbox");
  ctx.body = blob.stream;
}

export function fileRoutes(api: ApiRouter, files: FileService): void {
  api.add({
    method: 'post',
    path: '/v1/conversations/:id/files',
    ownBody: { contentType: 'multipart/form-data', schema: UploadForm },
    tag: 'files',
    summary:
      'Upload a file into a conversation (multipart/form-data, one part named "file"). The type is decided from the bytes; images get a display copy and a thumbnail without metadata. Attach it to a message with attachments: [id].',
    auth: true,
    params: ConversationParams,
    responses: { 201: { description: 'Stored.', schema: FileResponse } },
    errors: ['CONVERSATION_NOT_FOUND', 'NOT_A_MEMBER', 'FILE_TOO_LARGE', 'FILE_TYPE_REFUSED', 'UNSUPPORTED_MEDIA_TYPE', 'RATE_LIMITED'],
    async handler(ctx, { params }) {
      const file = await files.upload(ctx.state.user!, params.id, ctx.req);
      ctx.status = 201;
      ctx.body = { file: publicFile(file) };
    },
  });

  api.add({
    method: 'get',
    path: '/v1/files/:id/meta',
    tag: 'files',
    summary: "A file's metadata (members of its conversation only).",
    auth: true,
    params: FileParams,
    responses: { 200: { description: 'The file.', schema: FileResponse } },
    errors: ['FILE_NOT_FOUND'],
    async handler(ctx, { params }) {
      ctx.body = { file: publicFile(await files.fileFor(ctx.state.user!, params.id)) };
    },
  });

  api.add({
    method: 'get',
    path: '/v1/files/:id',
    tag: 'files',
    summary: 'Download a file (members of its conversation only). Images inline, everything else as an attachment.',
    auth: true,
    params: FileParams,
    responses: { 200: { description: 'The bytes, with Content-Type, Content-Disposition and nosniff.' } },
    errors: ['FILE_NOT_FOUND'],
    async handler(ctx, { params }) {
      await send(ctx, files, 'main', params.id);
    },
  });

  api.add({
    method: 'get',
    path: '/v1/files/:id/thumbnail',
    tag: 'files',
    summary: "An image's thumbnail (WebP, at most 320 px per side).",
    auth: true,
    params: FileParams,
    responses: { 200: { description: 'The thumbnail bytes.' } },
    errors: ['FILE_NOT_FOUND'],
    async handler(ctx, { params }) {
      await send(ctx, files, 'thumbnail', params.id);
    },
  });
}
