/**
 * Random bytes for ids (ulids, minted trace ids), drawn from the OS a block at a time instead of one call per
 * id: a crypto call costs far more than the copy of a few bytes out of a pool.
 */
import { randomFillSync } from 'node:crypto';

const POOL = Buffer.alloc(4096);
let at = POOL.length;

/** `n` (≤ 4096) fresh random bytes, as a view into the pool: read or copy them before the next call. */
export function randomView(n: number): Buffer {
  if (at + n > POOL.length) {
    randomFillSync(POOL);
    at = 0;
  }
  const view = POOL.subarray(at, at + n);
  at += n;
  return view;
}
