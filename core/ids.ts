import { randomFillSync } from 'node:crypto';
import { encodeBase32 } from './base32.js';

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz'; // Crockford base32, lower case

let lastTime = 0;
let lastRandom: Uint8Array = new Uint8Array(10);

/** Randomness is drawn from the OS 64 ids at a time: one call per 64 new milliseconds, not one per id. */
const pool = new Uint8Array(640);
let poolAt = pool.length;
function freshRandom(): Uint8Array {
  if (poolAt === pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  // A copy: the same-millisecond increment below must not write into the pool.
  const r = pool.slice(poolAt, poolAt + 10);
  poolAt += 10;
  return r;
}

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
    lastRandom = freshRandom();
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
