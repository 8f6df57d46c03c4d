/**
 * Base32 encoding over any 32-character alphabet, most significant bits first; a last partial group is
 * padded with zero bits (no '=' padding). TOTP secrets use RFC 4648's alphabet, ids Crockford's.
 */
export function encodeBase32(bytes: Uint8Array, alphabet: string): string {
  let out = '';
  let bits = 0;
  let acc = 0;
  for (const byte of bytes) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += alphabet[(acc >>> bits) & 31];
    }
    acc &= (1 << bits) - 1;
  }
  if (bits > 0) out += alphabet[(acc << (5 - bits)) & 31];
  return out;
}
