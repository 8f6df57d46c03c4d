/**
 * What a file is, decided from its first bytes — never from its name or the Content-Type the client sent,
 * both of which an uploader controls. Executables, scripts, HTML and SVG are refused outright: served from
 * the hub's origin they could run in a browser or on a desktop, and no chat needs them inline.
 */

/** How a sniffed type may be served. */
export type Disposition = 'image' | 'inline' | 'attachment';

export interface Sniffed {
  mime: string;
  /** Extensions that fit the type (the first is used when the name's does not fit). */
  ext: string[];
  /** image: resized + thumbnailed, served inline; attachment: always downloaded. */
  disposition: Disposition;
}

export type SniffResult = { ok: true; type: Sniffed } | { ok: false; reason: string };

/** Bytes the sniffer needs to see (more is ignored). */
export const SNIFF_BYTES = 512;

/**
 * An MPEG audio frame header (an MP3 without ID3 tag): 11 sync bits, then a version that is not the reserved
 * one and layer II or III. Layer I and the reserved values are left out, so text starting with a UTF-16
 * byte-order mark (FF FE, FF FF) is not taken for audio.
 */
function mpegAudioFrame(b: Buffer): boolean {
  if (b.length < 2 || b[0] !== 0xff || (b[1]! & 0xe0) !== 0xe0) return false;
  const version = (b[1]! >> 3) & 0b11; // 01 is reserved
  const layer = (b[1]! >> 1) & 0b11; // 01 layer III, 10 layer II, 11 layer I, 00 reserved
  return version !== 0b01 && (layer === 0b01 || layer === 0b10);
}

const startsWith = (b: Buffer, sig: number[], at = 0) => b.length >= at + sig.length && sig.every((v, i) => b[at + i] === v);
const ascii = (b: Buffer, text: string, at = 0) => b.length >= at + text.length && b.toString('latin1', at, at + text.length) === text;

const ok = (mime: string, ext: string[], disposition: Disposition): SniffResult => ({ ok: true, type: { mime, ext, disposition } });
const refuse = (reason: string): SniffResult => ({ ok: false, reason });

/** Markup a browser would render as a document (case-insensitive, after optional BOM and whitespace). */
const HTML_STARTS = ['<!doctype html', '<html', '<head', '<body', '<script', '<iframe', '<svg', '<?xml', '<!--', '<title', '<style', '<meta', '<a ', '<div', '<img', '<object', '<embed', '<link', '<table', '<p>', '<br', '<h1', '<b>', '<form'];

/** True when the bytes decode as UTF-8 text without NULs or other binary control characters. */
function isText(b: Buffer): boolean {
  // A multi-byte character cut at the end of the sample is not a reason to call it binary.
  let end = b.length;
  for (let i = 0; i < 3 && end > 0; i++) {
    const c = b[end - 1]!;
    if (c < 0x80) break;
    end--;
    if (c >= 0xc0) break;
  }
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(b.subarray(0, end));
    for (const ch of text) {
      const c = ch.codePointAt(0)!;
      if (c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d && c !== 0x0c) return false;
    }
    return true;
  } catch {
    return false;
  }
}

/** Decides the type of a file from its first bytes (at least SNIFF_BYTES of them, unless the file is shorter). */
export function sniff(head: Buffer): SniffResult {
  const b = head.subarray(0, SNIFF_BYTES);
  if (b.length === 0) return ok('application/octet-stream', ['bin'], 'attachment');

  // Images.
  if (startsWith(b, [0xff, 0xd8, 0xff])) return ok('image/jpeg', ['jpg', 'jpeg'], 'image');
  if (startsWith(b, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return ok('image/png', ['png'], 'image');
  if (ascii(b, 'GIF87a') || ascii(b, 'GIF89a')) return ok('image/gif', ['gif'], 'image');
  if (ascii(b, 'RIFF') && ascii(b, 'WEBP', 8)) return ok('image/webp', ['webp'], 'image');

  // Executables: ELF, PE (MZ), Mach-O (both byte orders, 32/64-bit, universal), Java class shares CAFEBABE.
  if (startsWith(b, [0x7f, 0x45, 0x4c, 0x46])) return refuse('executable (ELF)');
  if (ascii(b, 'MZ')) return refuse('executable (PE/DOS)');
  for (const sig of [[0xfe, 0xed, 0xfa, 0xce], [0xfe, 0xed, 0xfa, 0xcf], [0xce, 0xfa, 0xed, 0xfe], [0xcf, 0xfa, 0xed, 0xfe], [0xca, 0xfe, 0xba, 0xbe]]) {
    if (startsWith(b, sig)) return refuse('executable (Mach-O or Java class)');
  }
  if (ascii(b, '#!')) return refuse('script (#!)');

  // Documents, archives, media.
  if (ascii(b, '%PDF-')) return ok('application/pdf', ['pdf'], 'attachment');
  if (startsWith(b, [0x50, 0x4b, 0x03, 0x04]) || startsWith(b, [0x50, 0x4b, 0x05, 0x06])) return ok('application/zip', ['zip'], 'attachment');
  if (startsWith(b, [0x1f, 0x8b])) return ok('application/gzip', ['gz'], 'attachment');
  if (ascii(b, 'ftyp', 4)) {
    const brand = b.toString('latin1', 8, 12);
    if (brand === 'qt  ') return ok('video/quicktime', ['mov'], 'attachment');
    if (brand.startsWith('M4A')) return ok('audio/mp4', ['m4a'], 'attachment');
    if (/^(heic|heix|mif1|avif)/.test(brand)) return ok('application/octet-stream', ['bin'], 'attachment');
    return ok('video/mp4', ['mp4'], 'attachment');
  }
  if (ascii(b, 'OggS')) return ok('audio/ogg', ['ogg'], 'attachment');
  if (ascii(b, 'RIFF') && ascii(b, 'WAVE', 8)) return ok('audio/wav', ['wav'], 'attachment');
  if (ascii(b, 'ID3') || mpegAudioFrame(b)) return ok('audio/mpeg', ['mp3'], 'attachment');

  // Text: look at where markup or code would start.
  if (isText(b)) {
    const text = b.toString('utf8').replace(/^\uFEFF/, '').trimStart().toLowerCase();
    if (text.startsWith('<?php') || text.includes('<?php') || text.startsWith('<%')) return refuse('server-side script');
    if (HTML_STARTS.some((s) => text.startsWith(s)) || /<(script|html|svg|iframe|body)[\s>/]/.test(text)) return refuse('HTML or SVG markup');
    return ok('text/plain; charset=utf-8', ['txt'], 'attachment');
  }
  return ok('application/octet-stream', ['bin'], 'attachment');
}
