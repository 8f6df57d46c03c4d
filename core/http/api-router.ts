/**
 * Declared routes: each route names its method, path, schemas (params, query, body, responses) and the
 * errors it may answer with. The same declaration wires validation into the router and generates
 * /v1/openapi.json, so the docs cannot drift from what is enforced.
 */
import { Router } from '@koa/router';
import type { Middleware, ParameterizedContext } from 'koa';
import { z } from 'zod';
import type { Role, UserRecord } from '../domain.js';
import { ERROR_CODES, type ErrorCode } from '../errors.js';
import type { AccessClaims } from '../auth/tokens.js';
import { jsonBody } from './body.js';
import { requireRole, validate } from './validate.js';
import { assertQueryWellFormed } from './well-formed.js';

/** What a request carries through the middleware. */
export interface ApiState {
  user?: UserRecord;
  jwt?: AccessClaims;
  body?: unknown;
  /** This request's id, also in the X-Request-Id response header (request-id.ts). */
  requestId?: string;
}

export type ApiContext = ParameterizedContext<ApiState> & { params: Record<string, string> };

type Maybe<S> = S extends z.ZodType ? z.output<S> : undefined;

export interface RouteDef<P extends z.ZodType | undefined = undefined, Q extends z.ZodType | undefined = undefined, B extends z.ZodType | undefined = undefined> {
  method: 'get' | 'post' | 'patch' | 'put' | 'delete';
  /** Koa path with :params, e.g. /v1/conversations/:id. */
  path: string;
  summary: string;
  tag: string;
  /** Requires a valid access token (ctx.state.user is set). */
  auth: boolean;
  roles?: Role[];
  params?: P;
  query?: Q;
  body?: B;
  /**
   * The handler reads the request body itself (e.g. a multipart upload); no JSON body handling at all. Given
   * as a media type and schema, these describe that body in the OpenAPI document (the handler does the
   * checking, not the schema); `true` leaves it undescribed.
   */
  ownBody?: true | { contentType: string; schema: z.ZodType };
  /** Status → description and schema (no schema: empty body). */
  responses: Record<number, { description: string; schema?: z.ZodType }>;
  /** Error codes this route can answer with besides the generic ones. */
  errors?: ErrorCode[];
  handler: (ctx: ApiContext, input: { params: Maybe<P>; query: Maybe<Q>; body: Maybe<B> }) => unknown;
}

/** Errors any route may answer with. */
const COMMON_ERRORS: ErrorCode[] = ['VALIDATION_FAILED', 'INTERNAL'];
const BODY_ERRORS: ErrorCode[] = ['MALFORMED_JSON', 'JSON_TOO_DEEP', 'UNSUPPORTED_MEDIA_TYPE', 'PAYLOAD_TOO_LARGE'];

export class ApiRouter {
  readonly router = new Router<ApiState>();
  readonly routes: Array<RouteDef<z.ZodType | undefined, z.ZodType | undefined, z.ZodType | undefined>> = [];
  private readonly body: Middleware;

  constructor(private readonly deps: { authenticate: Middleware; bodyLimitBytes: number }) {
    this.body = jsonBody(deps.bodyLimitBytes);
  }

  /**
   * A route without a body schema (GET and HEAD included) still reads a body sent to it and refuses anything
   * but `{}`: a field the route does not take is an error, never silently ignored, and a body that is not
   * JSON is a 415 like anywhere else. Routes that read their own body (file uploads) say so with `ownBody`.
   */
  private readonly noBody: Middleware = async (ctx, next) => {
    await this.body(ctx, () => Promise.resolve());
    const body = (ctx.state as { body?: unknown }).body;
    if (body !== undefined) validate(NO_BODY, body, 'body'); // no body, the usual case: nothing to check
    return next();
  };

  add<P extends z.ZodType | undefined = undefined, Q extends z.ZodType | undefined = undefined, B extends z.ZodType | undefined = undefined>(
    def: RouteDef<P, Q, B>,
  ): this {
    this.routes.push(def as never);
    const chain: Middleware[] = [];
    if (def.auth) chain.push(this.deps.authenticate);
    if (def.roles?.length) chain.push(requireRole(...def.roles));
    if (def.body) chain.push(this.body);
    else if (!def.ownBody) chain.push(this.noBody);
    chain.push(async (ctx) => {
      const c = ctx as ApiContext;
      if (c.querystring) assertQueryWellFormed(c.querystring);
      // A route without a query schema takes no parameters: any it is sent is refused by name, like an unknown
      // field in a body, rather than ignored (a caller adding ?role=admin must not think it was honoured).
      if (!def.query && c.querystring) validate(NO_QUERY, { ...c.query }, 'query');
      const input = {
        params: (def.params ? validate(def.params, { ...c.params }, 'params') : undefined) as Maybe<P>,
        query: (def.query ? validate(def.query, { ...c.query }, 'query') : undefined) as Maybe<Q>,
        body: (def.body ? validate(def.body, c.state.body, 'body') : undefined) as Maybe<B>,
      };
      await def.handler(c, input);
    });
    this.router.register(def.path, [def.method.toUpperCase()], chain as never);
    return this;
  }
}

/** What a route that takes no body accepts when a body is sent: an empty object. */
const NO_BODY = z.strictObject({});
/** The query of a route that declares none: no parameters (an empty query string, `?`, is fine). */
const NO_QUERY = z.strictObject({});

const ErrorBody = z
  .object({
    error: z.object({
      code: z.enum(Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]]),
      message: z.string(),
      details: z.unknown().optional(),
    }),
  })
;

function jsonSchema(schema: z.ZodType, io: 'input' | 'output', override?: JsonOverride): Record<string, unknown> {
  const s = z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'draft-2020-12', ...(override ? { override } : {}) }) as Record<string, unknown>;
  delete s.$schema;
  return s;
}

type JsonOverride = (ctx: { zodSchema: unknown; jsonSchema: Record<string, unknown> }) => void;

/**
 * Query values arrive as text, and number parameters are parsed from it by a pipe into a number schema
 * (schemas.ts). As input, zod would describe only the text's pattern; the parameter is described by what it
 * is parsed into instead (`type: integer` with its range), which is what OpenAPI means by an integer query
 * parameter.
 */
const queryNumbers: JsonOverride = ({ zodSchema, jsonSchema: js }) => {
  const def = (zodSchema as z.ZodType)._zod.def;
  if (def.type !== 'pipe') return;
  const out = (def as unknown as { out: z.ZodType }).out;
  if (out._zod.def.type !== 'number') return;
  for (const key of Object.keys(js)) delete js[key];
  Object.assign(js, jsonSchema(out, 'output'));
};

function parametersOf(schema: z.ZodType | undefined, where: 'path' | 'query'): unknown[] {
  if (!schema) return [];
  const js = jsonSchema(schema, 'input', where === 'query' ? queryNumbers : undefined) as { properties?: Record<string, Record<string, unknown>>; required?: string[] };
  const shape = schema instanceof z.ZodObject ? (schema.shape as Record<string, z.ZodType>) : {};
  return Object.entries(js.properties ?? {}).map(([name, s]) => {
    // zod leaves out a default it cannot express as input (limit's 50 is the parsed number, not text).
    const absent = shape[name]?.safeParse(undefined);
    const fallback = absent?.success ? absent.data : undefined;
    return {
      name,
      in: where,
      required: where === 'path' || (js.required ?? []).includes(name),
      ...(typeof s.description === 'string' ? { description: s.description } : {}),
      schema: fallback !== undefined && s.default === undefined ? { ...s, default: fallback } : s,
    };
  });
}

/** The requestBody of a route: required unless the body schema accepts no body at all (logout). */
function requestBodyOf(r: ApiRouter['routes'][number]): Record<string, unknown> | undefined {
  if (r.ownBody) return r.ownBody === true ? undefined : { required: true, content: { [r.ownBody.contentType]: { schema: jsonSchema(r.ownBody.schema, 'input') } } };
  if (!r.body) return undefined;
  return { required: !r.body.safeParse(undefined).success, content: { 'application/json': { schema: jsonSchema(r.body, 'input') } } };
}

/** The OpenAPI 3.1 document for a set of declared routes. */
export function buildOpenApi(routes: ApiRouter['routes'], info: { title: string; version: string }): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const path = r.path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
    const responses: Record<string, unknown> = {};
    for (const [status, res] of Object.entries(r.responses)) {
      responses[status] = res.schema
        ? { description: res.description, content: { 'application/json': { schema: jsonSchema(res.schema, 'output') } } }
        : { description: res.description };
    }
    // Routes without a body schema still read (and refuse) a body sent to them, so they share these codes.
    const codes = new Set<ErrorCode>([...COMMON_ERRORS, ...(r.ownBody ? [] : BODY_ERRORS), ...(r.auth ? (['UNAUTHENTICATED'] as ErrorCode[]) : []), ...(r.errors ?? [])]);
    if (r.roles?.length) codes.add('FORBIDDEN');
    const byStatus = new Map<number, ErrorCode[]>();
    for (const code of codes) {
      const st = ERROR_CODES[code].status;
      byStatus.set(st, [...(byStatus.get(st) ?? []), code]);
    }
    for (const [st, list] of [...byStatus].sort((a, b) => a[0] - b[0])) {
      responses[String(st)] = {
        description: `Error: ${list.join(', ')}`,
        content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
      };
    }
    const requestBody = requestBodyOf(r);
    paths[path] ??= {};
    paths[path][r.method] = {
      summary: r.summary,
      tags: [r.tag],
      ...(r.auth ? { security: [{ bearer: [] }] } : {}),
      parameters: [...parametersOf(r.params, 'path'), ...parametersOf(r.query, 'query')],
      ...(requestBody ? { requestBody } : {}),
      responses,
    };
  }
  return {
    openapi: '3.1.0',
    info,
    paths,
    components: {
      schemas: { Error: jsonSchema(ErrorBody, 'output') },
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
    },
  };
}
