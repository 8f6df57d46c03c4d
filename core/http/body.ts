/**
 * JSON request bodies, read by hand instead of a body-parser package so every limit is ours:
 * only application/json (415), at most `limit` bytes (413, judged on Content-Length before reading and while
 * reading), valid UTF-8 JSON (400 MALFORMED_JSON), nesting at most MAX_DEPTH (400 JSON_TOO_DEEP, checked
 * by a linear scan before parsing, so no recursion ever sees a deep document), and no keys that could
 * reach an object prototype (400 VALIDATION_FAILED), and no strings with lone UTF-16 surrogates (400
 * VALIDATION_FAILED, see well-formed.ts).
 *
 * The parsed body goes to `ctx.state.body` (undefined when the request had none).
 */
import type { Middleware } from 'koa';
import type { IncomingMessage } from 'node:http';
import { VoxaError } from '../errors.js';
import { assertWellFormed } from './well-formed.js';

export const MAX_DEPTH = 32;
/** Keys that reach an object's prototype; refused anywhere in a body (and as keys of socket frames' maps). */
export const FORBIDDEN_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  if (len !== undefined) return len !== '0';
  return req.headers['transfer-encoding'] !== undefined;
}

/** Reads the raw body, giving up (413) as soon as it passes `limit` bytes. */
function readLimited(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (err: Error | null, value?: Buffer) => {
      if (done) return;
      done = true;
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onAborted);
      if (err) reject(err);
      else resolve(value!);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        // Stop reading: the response closes the connection instead of draining an unbounded upload.
        req.pause();
        finish(new VoxaError('PAYLOAD_TOO_LARGE', `The body is larger than ${limit} bytes.`, { limit }));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => finish(null, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    const onError = (err: Error) => finish(new VoxaError('MALFORMED_JSON', `The body could not be read: ${err.message}`));
    const onAborted = () => finish(new VoxaError('MALFORMED_JSON', 'The request was aborted.'));
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onAborted);
  });
}

/**
 * Deepest nesting of arrays/objects in a JSON text, by a single pass that skips string contents. Stops
 * counting (returns early) once `max` is exceeded.
 */
export function jsonDepth(text: string, max = MAX_DEPTH): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \ */) i++;
      else if (c === 34 /* " */) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 /* { */ || c === 91 /* [ */) {
      if (++depth > deepest) {
        deepest = depth;
        if (deepest > max) return deepest;
      }
    } else if (c === 125 /* } */ || c === 93 /* ] */) depth--;
  }
  return deepest;
}

/**
 * Finds a prototype-reaching key anywhere in a parsed document (iteratively; depth is already bounded) and
 * returns it with its path under `root` (`body.config.__proto__`), as every other refusal names its field.
 */
function forbiddenKey(value: unknown, root: string): { key: string; path: string } | null {
  const stack: Array<[unknown, string]> = [[value, root]];
  while (stack.length) {
    const [v, path] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (Array.isArray(v)) {
      v.forEach((item, i) => stack.push([item, `${path}.${i}`]));
      continue;
    }
    for (const k of Object.keys(v)) {
      if (FORBIDDEN_KEYS.has(k)) return { key: k, path: `${path}.${k}` };
      stack.push([(v as Record<string, unknown>)[k], `${path}.${k}`]);
    }
  }
  return null;
}

const decoder = new TextDecoder('utf-8', { fatal: true });

/** Parses a JSON body with every check above; exported for the WebSocket edge's text frames too. */
export function parseJsonText(text: string): unknown {
  if (jsonDepth(text) > MAX_DEPTH) throw new VoxaError('JSON_TOO_DEEP', `JSON may nest at most ${MAX_DEPTH} levels.`, { maxDepth: MAX_DEPTH });
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new VoxaError('MALFORMED_JSON', `The body is not valid JSON: ${(err as Error).message}`);
  }
  // Cheap substring test first: the walk only runs when such a key could be present, spelt out or with a
  // \u escape in it ("__proto\u005f_" is the same key once parsed).
  if (text.includes('__proto__') || text.includes('constructor') || text.includes('prototype') || text.includes('\\u')) {
    const found = forbiddenKey(value, 'body');
    if (found) {
      throw new VoxaError('VALIDATION_FAILED', `${found.path}: the key "${found.key}" is not allowed.`, {
        fields: [found.path],
        issues: [{ path: found.path, code: 'forbidden_key', message: 'A key that reaches an object prototype.' }],
      });
    }
  }
  assertWellFormed(value, text, 'body');
  return value;
}

/** Middleware that reads and checks a JSON body into ctx.state.body. */
export function jsonBody(limit: number): Middleware {
  return async function readJsonBody(ctx, next) {
    const req = ctx.req;
    if (!hasBody(req)) {
      ctx.state.body = undefined;
      return next();
    }
    if (!ctx.is('application/json')) {
      throw new VoxaError('UNSUPPORTED_MEDIA_TYPE', 'The body must be application/json.', { contentType: ctx.get('Content-Type') || null });
    }
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) throw new VoxaError('PAYLOAD_TOO_LARGE', `The body is larger than ${limit} bytes.`, { limit });
    const charset = ctx.request.charset;
    if (charset && charset.toLowerCase() !== 'utf-8' && charset.toLowerCase() !== 'utf8') {
      throw new VoxaError('UNSUPPORTED_MEDIA_TYPE', 'JSON bodies must be UTF-8.', { charset });
    }
    const raw = await readLimited(req, limit);
    let text: string;
    try {
      text = decoder.decode(raw);
    } catch {
      throw new VoxaError('MALFORMED_JSON', 'The body is not valid UTF-8.');
    }
    ctx.state.body = text.length === 0 ? undefined : parseJsonText(text);
    return next();
  };
}
