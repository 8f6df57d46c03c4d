/** What a test that runs `voxa start` (or `worker`) as a process needs to disturb nothing: its own ports and data dir. */
import type { ExecutionContext } from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './servers.js';

/** Fresh ports and a temp data dir (removed after the test), as env vars for one `voxa start`. */
export async function hubEnv(t: ExecutionContext, prefix: string): Promise<Record<string, string>> {
  const dataDir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  return {
    VOXA_DATA_DIR: dataDir,
    PORT: String(await freePort()),
    VOXA_EMBEDDED_NATS_PORT: String(await freePort()),
    VOXA_EMBEDDED_REDIS_PORT: String(await freePort()),
    VOXA_EMBEDDED_NATS_MONITOR_PORT: String(await freePort()),
  };
}
