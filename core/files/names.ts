/**
 * File names from uploaders, made safe to store, show and hand back in Content-Disposition: no path
 * separators (the name never becomes a path anyway, but a downloader might save it as one), no control or
 * bidirectional-override characters (which make `invoice‮fdp.exe` display as `invoiceexe.pdf`), no
 * Windows device names, no leading or trailing dots and spaces, and at most MAX_NAME_BYTES of UTF-8.
 */
import type { Sniffed } from './sniff.js';

export const MAX_NAME_BYTES = 200;

/** Characters that reorder text or are invisible: bidi embeddings/overrides/isolates, marks, zero-width. */
const INVISIBLE = /[\u061C\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u2069\uFEFF]/g;
/** Controls (C0, DEL, C1) and the characters Windows or shells treat as separators or wildcards. */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001F\u007F-\u009F/\\:*?"<>|]/g;
const RESERVED = /^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$)(\..*)?$/i;

function truncateUtf8(s: string, maxBytes: number): string {
  let out = '';
  let bytes = 0;
  for (const ch of s) {
    const n = Buffer.byteLength(ch);
    if (bytes + n > maxBytes) break;
    out += ch;
    bytes += n;
  }
  return out;
}

function splitExt(name: string): [string, string] {
  const dot = name.lastIndexOf('.');
  return dot > 0 ? [name.slice(0, dot), name.slice(dot + 1)] : [name, ''];
}

/** A display- and download-safe version of an uploaded file name. */
export function sanitizeName(raw: string): string {
  let name = raw.normalize('NFC').replace(INVISIBLE, '');
  // Keep only the last path segment, then neutralise whatever separators remain.
  name = name.split(/[/\\]/).pop() ?? '';
  name = name.replace(UNSAFE, '_').replace(/\s+/g, ' ');
  name = name.replace(/^[\s.]+|[\s.]+$/g, '');
  if (RESERVED.test(name)) name = `_${name}`;
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) {
    // Shorten the stem and keep the extension (when it is a short one).
    const [stem, ext] = splitExt(name);
    const suffix = ext && Buffer.byteLength(ext) <= 16 ? `.${ext}` : '';
    name = truncateUtf8(stem, MAX_NAME_BYTES - Buffer.byteLength(suffix)).replace(/[\s.]+$/, '') + suffix;
  }
  return name || 'file';
}

/**
 * The name with an extension that fits the sniffed type: a PNG uploaded as `photo.exe` is stored as
 * `photo.png`, so a download never lands on disk with an extension that would run it. Names of unknown
 * binary types keep theirs.
 */
export function nameForType(name: string, type: Sniffed): string {
  if (type.mime === 'application/octet-stream') return name;
  const [stem, ext] = splitExt(name);
  if (ext && type.ext.includes(ext.toLowerCase())) return name;
  return `${stem || 'file'}.${type.ext[0]}`;
}

/** Content-Disposition with an ASCII fallback and the exact name as RFC 5987 `filename*`. */
export function contentDisposition(kind: 'inline' | 'attachment', name: string): string {
  const fallback = name.replace(/[^\x20-\x7e]/g, '_').replace(/["\\%]/g, '_');
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `${kind}; filename="${fallback}"; filename*=UTF-8''${encoded}`;
}
