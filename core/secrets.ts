/**
 * Keys the hub needs: the JWT signing key and the key that encrypts connector secrets at rest. When the config
 * does not give them they are generated once and kept in `<dataDir>/secrets.json` (mode 0600), so tokens and
 * encrypted data survive restarts. They are never logged.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, secretKeyBytes, type Config } from './config.js';

export interface Secrets {
  jwtSecret: string;
  /** 32 bytes for AES-256-GCM. */
  encryptionKey: Buffer;
}

export async function ensureSecrets(config: Config): Promise<Secrets> {
  let stored: { jwtSecret?: string; secretKey?: string } = {};
  const file = join(config.dataDir, 'secrets.json');
  if (!config.jwtSecret || !config.secretKey) {
    mkdirSync(config.dataDir, { recursive: true });
    if (existsSync(file)) stored = JSON.parse(readFileSync(file, 'utf8')) as typeof stored;
    if (!stored.jwtSecret || !stored.secretKey) {
      stored = {
        jwtSecret: stored.jwtSecret ?? randomBytes(48).toString('base64url'),
        secretKey: stored.secretKey ?? randomBytes(32).toString('base64'),
      };
      writeFileSync(file, JSON.stringify(stored), { mode: 0o600 });
    }
  }
  const encryptionKey = secretKeyBytes(config.secretKey ?? stored.secretKey!);
  if (!encryptionKey) {
    // A bad configured key is normally refused by parseConfig already; this covers a config built without it
    // and a secrets.json edited by hand. Either way it is a config problem, not an unreachable dependency.
    throw new ConfigError(
      config.secretKey ? 'invalid config field "secretKey" (env VOXA_SECRET_KEY): must be 32 bytes, base64' : `the secretKey kept in ${file} is not 32 bytes of base64`,
      'secretKey',
    );
  }
  return { jwtSecret: config.jwtSecret ?? stored.jwtSecret!, encryptionKey };
}
