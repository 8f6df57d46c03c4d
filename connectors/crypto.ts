/**
 * Encryption of connection secrets at rest: AES-256-GCM with a random 96-bit nonce per value. Every ciphertext
 * names the key that made it (`kid`, the first 8 bytes of the key's SHA-256 in hex), so after a key change the
 * old key can still decrypt until `voxa connections rotate-keys` has re-encrypted everything under the new one.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

/** One sealed value as stored: `v1.<kid>.<nonce>.<tag>.<ciphertext>` (base64url parts). */
export type Sealed = string;

export class KeyringError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyringError';
  }
}

/** The id a key is known by in ciphertexts; not secret (a hash prefix) and stable across processes. */
export function keyId(key: Buffer): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 16);
}

/** The current key (encrypts) plus earlier keys (decrypt only). */
export class Keyring {
  readonly currentId: string;
  private readonly keys = new Map<string, Buffer>();

  constructor(current: Buffer, previous: Buffer[] = []) {
    for (const k of [current, ...previous]) {
      if (k.length !== 32) throw new KeyringError('secret keys must be 32 bytes (base64 in config)');
      this.keys.set(keyId(k), k);
    }
    this.currentId = keyId(current);
  }

  /** Builds the keyring from the hub's secrets and the `previousSecretKeys` config field. */
  static from(current: Buffer, previousBase64: string[] = []): Keyring {
    return new Keyring(current, previousBase64.map((b) => Buffer.from(b, 'base64')));
  }

  seal(plain: string, aad = ''): Sealed {
    const key = this.keys.get(this.currentId)!;
    const nonce = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key, nonce);
    // The associated data binds a ciphertext to its record (e.g. the connection id), so a sealed value copied
    // into another record does not decrypt there.
    cipher.setAAD(Buffer.from(aad));
    const data = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    const tag = cipher.getAuthTag();
    return ['v1', this.currentId, nonce.toString('base64url'), tag.toString('base64url'), data.toString('base64url')].join('.');
  }

  open(sealed: Sealed, aad = ''): string {
    const parts = sealed.split('.');
    if (parts.length !== 5 || parts[0] !== 'v1') throw new KeyringError('not a sealed value');
    const [, kid, nonce, tag, data] = parts as [string, string, string, string, string];
    const key = this.keys.get(kid);
    if (!key) throw new KeyringError(`no key with id ${kid} in the keyring (add the old key to VOXA_PREVIOUS_SECRET_KEYS)`);
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(nonce, 'base64url'));
    decipher.setAAD(Buffer.from(aad));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    try {
      return Buffer.concat([decipher.update(Buffer.from(data, 'base64url')), decipher.final()]).toString('utf8');
    } catch {
      throw new KeyringError('sealed value failed authentication (wrong key or tampered)');
    }
  }

  /** The key id a sealed value was made with. */
  static kidOf(sealed: Sealed): string | undefined {
    return sealed.split('.')[1];
  }
}
