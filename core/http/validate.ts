/**
 * Validation with zod at the edge of every route, plus the role check. Both are exported for plugin routes.
 */
import type { Middleware } from 'koa';
import { z } from 'zod';
import type { Role, UserRecord } from '../domain.js';
import { VoxaError } from '../errors.js';

/** One problem with a request, by dotted path (e.g. `body.members.0`). */
export interface FieldIssue {
  path: string;
  code: string;
  message: string;
}

/** The details of a VALIDATION_FAILED error: the offending fields and one line per issue. */
export interface ValidationDetails {
  fields: string[];
  issues: FieldIssue[];
}

function issuesOf(error: z.ZodError, where?: string): FieldIssue[] {
  const out: FieldIssue[] = [];
  for (const issue of error.issues.slice(0, 20)) {
    const base = [...(where ? [where] : []), ...issue.path.map(String)];
    if (issue.code === 'unrecognized_keys') {
      // Name each unknown field, not just the object holding it.
      for (const key of issue.keys) out.push({ path: [...base, key].join('.'), code: 'unknown_field', message: 'Unknown field.' });
    } else {
      out.push({ path: base.join('.') || where || '(root)', code: issue.code, message: issue.message });
    }
  }
  return out;
}

/**
 * The VALIDATION_FAILED details of a zod error. Exported so the WebSocket edge answers a bad frame with the
 * same `{fields, issues}` shape as REST answers a bad body.
 */
export function validationDetails(error: z.ZodError, where?: string): ValidationDetails {
  const issues = issuesOf(error, where);
  return { fields: [...new Set(issues.map((i) => i.path))], issues };
}

/**
 * Parses `value` with `schema`, or throws VoxaError VALIDATION_FAILED naming the fields. `where` prefixes
 * the paths (`body`, `query`, `params`).
 */
export function validate<S extends z.ZodType>(schema: S, value: unknown, where?: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const details = validationDetails(result.error, where);
  const issues = details.issues;
  const first = issues[0];
  throw new VoxaError('VALIDATION_FAILED', first ? `${first.path}: ${first.message}` : undefined, details);
}

/**
 * A VALIDATION_FAILED for one field, found by a rule beyond the schema (blank text, a direct conversation with
 * yourself), in the same `{fields, issues}` shape as schema errors. `path` is the full dotted path
 * (`body.text`, or `data.text` for a WebSocket frame); `extra` adds code-specific details; `code` is the issue's.
 */
export function fieldError(path: string, message: string, extra: Record<string, unknown> = {}, code = 'custom'): VoxaError {
  const details: ValidationDetails & Record<string, unknown> = { ...extra, fields: [path], issues: [{ path, code, message }] };
  return new VoxaError('VALIDATION_FAILED', `${path}: ${message}`, details);
}

/**
 * Lets the request through only when ctx.state.user (set by authentication) has one of `roles`: 401 when
 * nobody is signed in, 403 FORBIDDEN otherwise.
 */
export function requireRole(...roles: Role[]): Middleware {
  const allowed = new Set<Role>(roles);
  return async function checkRole(ctx, next) {
    const user = ctx.state.user as UserRecord | undefined;
    if (!user) throw new VoxaError('UNAUTHENTICATED');
    if (!allowed.has(user.role)) throw new VoxaError('FORBIDDEN', `This needs the role ${roles.join(' or ')}.`);
    return next();
  };
}
