/**
 * Input guards shared by both store adapters. Anything a caller passes that ends up inside a query goes
 * through here first, so neither adapter can be handed an operator object (`{"$ne": null}`) or a field
 * path that reaches outside a document's top level.
 */
import { VoxaError } from '../errors.js';
import { MAX_WRITE_BATCH, type DocValue, type DocWrite } from './port.js';

/** Top-level field names only: no dots (nested paths), no `$` (operators), nothing SQL could misread. */
const FIELD_NAME = /^[A-Za-z0-9_]+$/;
/** Collection names are chosen by code, but stay conservative anyway. */
const COLLECTION_NAME = /^[A-Za-z0-9_.:-]{1,100}$/;

/** Throws VALIDATION_FAILED unless `name` is a plain top-level field name. */
export function assertFieldName(name: string): void {
  if (typeof name !== 'string' || !FIELD_NAME.test(name)) {
    throw new VoxaError('VALIDATION_FAILED', 'Filter and sort fields must be plain top-level field names.', { field: String(name) });
  }
}

/** An index declaration: a valid collection and at least one plain top-level field. */
export function assertIndex(collection: string, fields: string[]): void {
  assertCollection(collection);
  if (!Array.isArray(fields) || fields.length === 0) throw new VoxaError('VALIDATION_FAILED', 'An index needs at least one field.');
  for (const f of fields) assertFieldName(f);
}

export function assertCollection(name: string): void {
  if (typeof name !== 'string' || !COLLECTION_NAME.test(name)) {
    throw new VoxaError('VALIDATION_FAILED', 'Invalid document collection name.', { collection: String(name) });
  }
}

/** Ids reach queries as values; they must be non-empty strings, never objects. */
export function assertId(id: unknown, what = 'id'): asserts id is string {
  if (typeof id !== 'string' || id.length === 0) {
    throw new VoxaError('VALIDATION_FAILED', `${what} must be a non-empty string.`, { field: what });
  }
}

/** A value that must be a string before it reaches a query (never an operator object such as {"$ne":null}). */
export function requireString(v: unknown, field: string): string {
  if (typeof v !== 'string') throw new VoxaError('VALIDATION_FAILED', `${field} must be a string.`, { field });
  return v;
}

/** A value that must be a finite number before it reaches a query; truncated to an integer. */
export function requireInt(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new VoxaError('VALIDATION_FAILED', `${field} must be a number.`, { field });
  return Math.trunc(v);
}

/**
 * A time that must parse, returned as toISOString writes it: stored times are in that form, so comparing
 * the strings compares the times (an offset like +02:00 would not sort right).
 */
export function requireIsoTime(v: unknown, field: string): string {
  const ms = typeof v === 'string' ? Date.parse(v) : NaN;
  if (!Number.isFinite(ms)) throw new VoxaError('VALIDATION_FAILED', `${field} must be an ISO 8601 time.`, { field });
  return new Date(ms).toISOString();
}

export function isDocValue(v: unknown): v is DocValue {
  return v === null || typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v));
}

/**
 * Checks a document filter and returns its entries. The port's types already say "primitives only", but
 * filters often come straight from parsed JSON at run time, where the types promise nothing.
 */
export function checkedFilter(filter: Record<string, DocValue> | undefined): Array<[string, DocValue]> {
  if (filter === undefined || filter === null) return [];
  if (typeof filter !== 'object' || Array.isArray(filter)) {
    throw new VoxaError('VALIDATION_FAILED', 'A document filter must be an object of field → value.');
  }
  const out: Array<[string, DocValue]> = [];
  for (const [k, v] of Object.entries(filter)) {
    assertFieldName(k);
    if (!isDocValue(v)) {
      throw new VoxaError('VALIDATION_FAILED', 'Filter values must be strings, numbers, booleans or null.', { field: k });
    }
    out.push([k, v]);
  }
  return out;
}

/** Escapes LIKE wildcards so user text is matched literally (used with `ESCAPE '\'`). */
export function escapeLike(q: string): string {
  return q.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/** Escapes every regular-expression metacharacter so user text is matched literally. */
export function escapeRegex(q: string): string {
  return q.replace(/[.*+?^${}()|[\]\\/-]/g, (c) => `\\${c}`);
}

/**
 * Checks a DocumentStore.writeAll batch: an array of at most MAX_WRITE_BATCH writes, each an "insert" or
 * "put" with a valid collection, a string id and an object document. Returns the writes as checked (new
 * objects with exactly those four fields).
 */
export function checkedWrites(writes: unknown): DocWrite[] {
  if (!Array.isArray(writes)) throw new VoxaError('VALIDATION_FAILED', 'A batch of writes must be an array.');
  if (writes.length > MAX_WRITE_BATCH) {
    throw new VoxaError('VALIDATION_FAILED', `A batch holds at most ${MAX_WRITE_BATCH} writes.`, { count: writes.length });
  }
  return writes.map((w: unknown, i) => {
    if (typeof w !== 'object' || w === null) throw new VoxaError('VALIDATION_FAILED', 'Each write must be an object.', { field: `writes[${i}]` });
    const { op, collection, id, doc } = w as Record<string, unknown>;
    if (op !== 'insert' && op !== 'put') {
      throw new VoxaError('VALIDATION_FAILED', 'A write\'s op must be "insert" or "put".', { field: `writes[${i}].op` });
    }
    assertCollection(collection as string);
    assertId(id, `writes[${i}].id`);
    if (typeof doc !== 'object' || doc === null) throw new VoxaError('VALIDATION_FAILED', 'A write\'s doc must be an object.', { field: `writes[${i}].doc` });
    return { op, collection: collection as string, id, doc };
  });
}

/**
 * The first insert of a checked writeAll batch, in batch order, whose id is taken: by an earlier write of the
 * same batch, or already stored (`stored` says, per insert). Null when every insert's id is free. Shared by both
 * adapters so they report the same conflict for the same batch.
 */
export function firstTakenInsert(writes: DocWrite[], stored: (w: DocWrite) => boolean): DocWrite | null {
  const claimed = new Set<string>();
  for (const w of writes) {
    const key = JSON.stringify([w.collection, w.id]);
    if (w.op === 'insert' && (claimed.has(key) || stored(w))) return w;
    claimed.add(key);
  }
  return null;
}
