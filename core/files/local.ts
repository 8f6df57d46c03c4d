/** Blobs as files in a directory (by default `<dataDir>/files`). */
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { assertBlobKey, type BlobStore } from './blob.js';

export class LocalBlobStore implements BlobStore {
  readonly kind = 'local' as const;
  constructor(readonly root: string) {}

  private pathOf(key: string): string {
    assertBlobKey(key); // no `..`, no absolute paths: keys are [A-Za-z0-9_-] segments only
    return join(this.root, ...key.split('/'));
  }

  async putFile(key: string, path: string): Promise<void> {
    const target = this.pathOf(key);
    await mkdir(dirname(target), { recursive: true });
    // Copy to a temp name beside the target, then rename: a reader never sees half a blob.
    const tmp = `${target}.part`;
    await copyFile(path, tmp);
    await rename(tmp, target);
  }

  async get(key: string) {
    const path = this.pathOf(key);
    try {
      const st = await stat(path);
      return { stream: createReadStream(path), size: st.size };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.pathOf(key), { force: true });
  }
}
