/**
 * The blob store port: where file bytes live. Metadata stays in the hub's store (`files` documents); a blob
 * is addressed by an opaque key the hub makes (`<workspace>/<fileId>/<variant>`), never by a user-given name.
 *
 * Adapters: LocalBlobStore (a directory under dataDir, the default) and S3BlobStore (any S3-compatible
 * service). Uploads are spooled to a temp file first (size counted, type sniffed, images processed), so
 * `putFile` always knows the length — which S3's single PUT needs — and nothing is held whole in memory.
 */
import type { Readable } from 'node:stream';

export interface BlobStore {
  readonly kind: 'local' | 's3';
  /** Stores the file at `path` under `key` (replacing any blob with that key). */
  putFile(key: string, path: string, opts: { size: number; contentType: string }): Promise<void>;
  /** The blob's bytes as a stream, or null when there is no such blob. */
  get(key: string): Promise<{ stream: Readable; size: number } | null>;
  /** Removes a blob; missing blobs are fine. */
  delete(key: string): Promise<void>;
}

/** Keys are made by the hub; this is the shape it makes, checked again by each adapter. */
export const BLOB_KEY = /^[A-Za-z0-9_-]{1,64}(\/[A-Za-z0-9_-]{1,64}){1,3}$/;

export function assertBlobKey(key: string): void {
  if (!BLOB_KEY.test(key)) throw new Error(`invalid blob key ${JSON.stringify(key).slice(0, 100)}`);
}
