import { encodeBase32 } from './base32.js';
import { randomView } from './random.js';

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz'; // Crockford base32, lower case

let lastTime = 0;
/** Our own copy: the same-millisecond increment below must not write into the shared random pool. */
const lastRandom = new Uint8Array(10);

/**
 * Time-ordered unique id (a ULID in lower case): 10 chars of milliseconds then 16 of randomness,
 * monotonic within one process. Safe in NATS subjects (no dots or wildcards).
 */
export function ulid(now = Date.now()): string {
  if (now <= lastTime) {
    // Same millisecond: increment the random part so ids stay sorted in creation order.
    for (let i = lastRandom.length - 1; i >= 0; i--) {
      if (lastRandom[i]! < 255) {
        lastRandom[i]!++;
        break;
      }
      lastRandom[i] = 0;
    }
    now = lastTime;
  } else {
    lastTime = now;
    lastRandom.set(randomView(10));
  }
  let time = '';
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  // 10 random bytes are exactly 16 characters.
  return time + encodeBase32(lastRandom, ALPHABET);
}

/** A prefixed id such as `msg_01hx…`: the prefix says what kind of thing it names. */
export function newId(prefix: 'usr' | 'cnv' | 'msg' | 'evt' | 'rtk' | 'fam' | 'dev' | 'con' | 'whk' | 'dlv' | 'fil' | 'aud' | 'job'): string {
  return `${prefix}_${ulid()}`;
}

/** Ids accepted in paths and bodies: what newId makes, plus the configured default workspace style. */
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
