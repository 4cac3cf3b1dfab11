/**
 * How the caller API turns a route's zod schemas into Fastify validation, and its path parameters into routing.
 *
 * Fastify runs `validatorCompiler` once per route and request part at startup; the function it returns is all
 * that runs per request. It is fastify-type-provider-zod's compiler with three differences the API needs:
 * - a failure is INVALID_PARAMS with `describeIssues`' message (shared/src/schema.ts: field paths and
 *   expectations, never the values), the same text as every other boundary of the system, and `issues`
 *   (`issuesOf`: path, expected, received for each problem; the answer's `details`). The provider's
 *   errors flatten paths to `/a/0/b`, which loses whether `0` was an index and where a label key containing
 *   `/` ends;
 * - a body schema can ask to be handed to the handler as sent rather than as parsed (`requestBody`);
 * - a query key given twice is refused (the query parser below marks it), not turned into an array;
 * - a reserved name (`__proto__`, `constructor`, `prototype`) as a query key or a map key (`stringMap`: labels)
 *   is 400 INVALID_REQUEST naming the field, not dropped or misread.
 */
import type { FastifySchemaCompiler } from 'fastify';
import { z } from 'zod';
import { KeystoreError } from '@nks/shared/errors';
import { KEY_ID_EXPECTED, KEY_ID_RE, PROJECT_ID_EXPECTED, PROJECT_ID_RE } from '@nks/shared/identifiers';
import { PROJECT_KEY_RE } from '@nks/shared/records';
import { keyId, validationError } from '@nks/shared/schema';
import { quote } from '../echo';

/**
 * A JSON body that is literally `null`. Fastify hands validators `null` for a request without a body, so the
 * body parser returns this instead, and a `null` body stays distinguishable from none (it is refused; none
 * is accepted where the body is optional).
 */
export const JSON_NULL: unique symbol = Symbol('JSON null body');

/** Set by the query parser on a query that names a key more than once: the first key seen again. */
const DUPLICATE_KEY = Symbol('duplicate query key');
/** Set by the query parser on a query that uses a reserved name (RESERVED_NAMES) as a key: the first one. */
const RESERVED_KEY = Symbol('reserved query key');

export type ParsedQuery = Record<string, string> & { [DUPLICATE_KEY]?: string; [RESERVED_KEY]?: string };

/**
 * Names that are never a query parameter, a label or any other caller-chosen map key: they name the prototype
 * machinery of JavaScript objects, so a map keyed by them is silently wrong somewhere (a `__proto__` label
 * disappears; `constructor` shadows a method). Refused with 400 INVALID_REQUEST, naming the field.
 */
export const RESERVED_NAMES: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/** The message for a reserved name used as a key at `where` (`query`, `body.labels`). */
export const reservedNameMessage = (where: string, name: string): string =>
  `${where}: "${name}" is a reserved name (${[...RESERVED_NAMES].join(', ')} are never keys)`;

/**
 * Query strings are read as URLSearchParams reads them (`+` is a space, malformed escapes are kept). A key
 * given twice is not folded into an array: it is remembered, and validation refuses the request; so is a
 * reserved name (RESERVED_NAMES). The object has no prototype, and is only ever read by its own keys.
 */
export function parseQuery(text: string): ParsedQuery {
  const query: ParsedQuery = Object.create(null) as ParsedQuery;
  if (text.length === 0) return query;
  for (const [k, v] of new URLSearchParams(text)) {
    if (RESERVED_NAMES.has(k)) query[RESERVED_KEY] ??= k;
    else if (Object.hasOwn(query, k)) query[DUPLICATE_KEY] ??= k;
    else query[k] = v;
  }
  return query;
}

/** The zod issue parameter that marks a reserved name (`stringMap`): the request is INVALID_REQUEST, not INVALID_PARAMS. */
const RESERVED_ISSUE = 'reservedName';

/**
 * A map from caller-chosen names to values (labels): its keys checked on the input as sent (z.record would
 * drop a `__proto__` key before any refinement saw it), reserved names refused (INVALID_REQUEST, naming the
 * field), and the output an object without prototype.
 */
export function stringMap<K extends z.ZodType<string>, V extends z.ZodType>(key: K, value: V) {
  return z
    .unknown()
    .superRefine((input, ctx) => {
      if (typeof input !== 'object' || input === null) return;
      for (const k of Object.keys(input)) {
        if (RESERVED_NAMES.has(k))
          ctx.addIssue({ code: 'custom', path: [k], message: `"${k}" is a reserved name`, params: { [RESERVED_ISSUE]: true } });
      }
    })
    .pipe(z.record(key, value))
    .transform((m) => Object.assign(Object.create(null) as Record<z.output<K>, z.output<V>>, m));
}

/** Whether a validation failure is a reserved name's (`stringMap`). */
const reservedIssue = (error: z.ZodError): z.core.$ZodIssue | undefined =>
  error.issues.find((i) => i.code === 'custom' && (i.params as Record<string, unknown> | undefined)?.[RESERVED_ISSUE] === true);

interface BodyRule {
  /** The message (after `body: `) for a request without a body; the body is then required. */
  whenMissing?: string;
  /** Hand the handler the body as the caller sent it, not the schema's output. */
  asSent?: boolean;
}

const bodyRules = new WeakMap<z.ZodType, BodyRule>();

/**
 * A body schema with rules zod does not express. With `asSent`, the route sees the body as sent (typed as the
 * schema's input): the sign route forwards the caller's request to the enclave, which validates it again and
 * hashes exactly what was sent, so the parent must not pass on its own parse (integers become bigints).
 */
export function requestBody<S extends z.ZodType>(schema: S, rule: BodyRule & { asSent: true }): z.ZodType<z.input<S>, z.input<S>>;
export function requestBody<S extends z.ZodType>(schema: S, rule: BodyRule): S;
export function requestBody(schema: z.ZodType, rule: BodyRule): z.ZodType {
  bodyRules.set(schema, rule);
  return schema;
}

const malformed = (message: string) => ({ error: new KeystoreError('INVALID_REQUEST', message) });

/**
 * The failure of `root` (`body`, `query`, `params`) for `input`: INVALID_REQUEST for a reserved name anywhere,
 * else INVALID_PARAMS naming the first problem, with every problem in `issues` (the answer's `details`).
 */
function failureOf(error: z.ZodError, root: string, input: unknown) {
  const reserved = reservedIssue(error);
  if (reserved) {
    const path = reserved.path.slice(0, -1).map(String);
    return malformed(reservedNameMessage([root, ...path].join('.'), String(reserved.path.at(-1))));
  }
  return { error: validationError(error, input, root) };
}

/** The failure of a part that is not there at all (`body: a JSON body is required`), with its one issue. */
const missingPart = (root: string, message: string) => ({
  error: new KeystoreError('INVALID_PARAMS', `${root}: ${message}`, { issues: [{ path: root, expected: message, received: 'missing' }] }),
});

export const validatorCompiler: FastifySchemaCompiler<z.ZodType> = ({ schema, httpPart }) => {
  if (httpPart === 'body') {
    const { whenMissing, asSent = false } = bodyRules.get(schema) ?? {};
    return (data: unknown) => {
      const body = data === null ? undefined : data === JSON_NULL ? null : data;
      if (body === undefined && whenMissing !== undefined) return missingPart('body', whenMissing);
      const res = schema.safeParse(body);
      if (!res.success) return failureOf(res.error, 'body', body);
      return { value: asSent ? body : res.data };
    };
  }
  if (httpPart === 'querystring') {
    return (data: ParsedQuery) => {
      const reserved = data[RESERVED_KEY];
      if (reserved !== undefined) return malformed(reservedNameMessage('query', reserved));
      const twice = data[DUPLICATE_KEY];
      if (twice !== undefined)
        return {
          error: new KeystoreError('INVALID_PARAMS', `query: "${twice}" is given more than once`, {
            issues: [{ path: `query.${twice.slice(0, 64)}`, expected: 'one value', received: 'more than one value' }],
          }),
        };
      const res = schema.safeParse(data);
      return res.success ? { value: res.data } : failureOf(res.error, 'query', data);
    };
  }
  const root = httpPart ?? 'params';
  return (data: unknown) => {
    const res = schema.safeParse(data);
    return res.success ? { value: res.data } : failureOf(res.error, root, data);
  };
};

/**
 * A 400 of the TrueWallet routes (api/wallets.ts): the reasons by field, as the SDK reads them
 * (`{detail: {field: ["reason"]}}`). Still INVALID_PARAMS, with the same text as any other boundary's.
 */
export class FieldErrors extends KeystoreError {
  constructor(
    readonly fields: Record<string, string[]>,
    code: 'INVALID_PARAMS' | 'INVALID_JWT' = 'INVALID_PARAMS',
  ) {
    super(
      code,
      Object.entries(fields)
        .map(([k, v]) => `${k}: ${v.join('; ')}`)
        .join('; '),
    );
  }
}

/**
 * A zod error as reasons by top-level field (an unknown field is its own entry; the whole body is `body`). The
 * object has no prototype: a caller's field named `constructor` or `toString` is a key like any other.
 */
export function fieldsOf(error: z.ZodError, root = 'body'): Record<string, string[]> {
  const fields = Object.create(null) as Record<string, string[]>;
  const add = (field: string, reason: string) => {
    const list = (fields[field] ??= []);
    if (list.length < 5) list.push(reason);
  };
  for (const issue of error.issues.slice(0, 20)) {
    const [head, ...rest] = issue.path;
    if (issue.code === 'unrecognized_keys' && head === undefined) {
      for (const k of issue.keys.slice(0, 10)) add(quote(k).slice(1, -1), 'unknown field');
      continue;
    }
    const where = rest.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('');
    const named = issue.code === 'unrecognized_keys' ? issue.keys.slice(0, 5).map(quote) : [];
    if (issue.code === 'unrecognized_keys' && issue.keys.length > 5) named.push(`and ${issue.keys.length - 5} more`);
    const reason = issue.code === 'unrecognized_keys' ? `unknown field(s) ${named.join(', ')}` : issue.message;
    add(head === undefined ? root : String(head), where ? `${where.replace(/^\./, '')}: ${reason}` : reason);
  }
  return fields;
}

/**
 * The validator of the TrueWallet routes: as `validatorCompiler`, but a failure names its fields
 * (`FieldErrors`), and the body is handed over as sent (the sign-request route forwards the request to the
 * enclave as the caller sent it; the others use only strings).
 */
export const fieldValidatorCompiler: FastifySchemaCompiler<z.ZodType> = ({ schema, httpPart }) => {
  if (httpPart === 'body') {
    return (data: unknown) => {
      const body = data === null ? undefined : data === JSON_NULL ? null : data;
      if (body === undefined) return { error: new FieldErrors({ body: ['a JSON body is required'] }) };
      const res = schema.safeParse(body);
      return res.success ? { value: body } : { error: new FieldErrors(fieldsOf(res.error)) };
    };
  }
  const root = httpPart === 'querystring' ? 'query' : (httpPart ?? 'params');
  return (data: ParsedQuery) => {
    const reserved = data[RESERVED_KEY];
    if (reserved !== undefined) return { error: new FieldErrors({ [root]: [`"${reserved}" is a reserved name`] }) };
    const twice = data[DUPLICATE_KEY];
    if (twice !== undefined) return { error: new FieldErrors({ [root]: [`"${twice}" is given more than once`] }) };
    const res = schema.safeParse(data);
    return res.success ? { value: res.data } : { error: new FieldErrors(fieldsOf(res.error, root)) };
  };
};

/**
 * Path parameters, each with the shared schema that says what it may hold. The router matches a project id or
 * project key only when its shape is right (else 404 NOT_FOUND, no such route, before any token or body is
 * looked at). A key id is routed whatever it holds (one path segment) and checked by the params schema: a
 * malformed one is 400 INVALID_PARAMS saying what a key id is (after the token, like any other validation), a
 * well-formed unknown one 404 KEY_NOT_FOUND.
 */
export const projectId = z.string().regex(PROJECT_ID_RE, PROJECT_ID_EXPECTED);
export const projectKey = z.string().regex(PROJECT_KEY_RE, 'expected "default" or pk_ and 16-43 characters of [A-Za-z0-9_-]');
const PATH_PARAMS: Record<string, z.ZodString> = { keyId, projectId, projectKey };
/**
 * Parameters routed on any one non-empty path segment, their schema checked at validation (400, not 404). The
 * router tests its pattern on the decoded segment (which may hold a `/`, sent as %2F); the 404/405 table on the
 * path as sent, where a segment ends at a `/`.
 */
const ANY_SEGMENT: ReadonlySet<string> = new Set(['keyId']);

function patternOf(name: string, decoded = true): string {
  if (ANY_SEGMENT.has(name)) return decoded ? '^.+$' : '^[^/]+$';
  const schema = PATH_PARAMS[name];
  const pattern = schema && (z.toJSONSchema(schema) as { pattern?: unknown }).pattern;
  if (typeof pattern !== 'string') throw new Error(`path parameter {${name}} has no single pattern`);
  return pattern;
}

const PARAM = /\{(\w+)\}/g;

/** Documented paths by the Fastify URL made of them, to name routes registered under a prefix by plugins. */
const documented = new Map<string, string>();

/** The Fastify URL of a documented route path: `/v1/keys/{keyId}` → `/v1/keys/:keyId(^…$)`. */
export function routeUrl(path: string): string {
  const url = path.replace(PARAM, (_, name: string) => `:${name}(${patternOf(name)})`);
  documented.set(url, path);
  return url;
}

/**
 * The documented path of a Fastify URL made by `routeUrl`, or of one under such a prefix (`<prefix>*`, the
 * preflight route @fastify/cors registers in the TrueWallet routes' scope); undefined for any other.
 */
export function documentedPath(url: string): string | undefined {
  for (const [prefix, path] of documented) if (url.startsWith(prefix)) return path + url.slice(prefix.length);
  return undefined;
}

/** Whether a request path is one of a documented route path's (the 404/405 decision). */
export function pathMatcher(path: string): RegExp {
  const escaped = path
    .split(PARAM)
    .map((part, i) =>
      i % 2 === 1 ? `(?:${patternOf(part, false).replace(/^\^|\$$/g, '')})` : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'),
    );
  return new RegExp(`^${escaped.join('')}$`);
}

/** The params schema of a route whose path names `{keyId}`. */
export const KeyParams = z.strictObject({ keyId: z.string().regex(KEY_ID_RE, `malformed key id: ${KEY_ID_EXPECTED}`) });
/** The params schema of a route whose path names `{projectId}`. */
export const ProjectParams = z.strictObject({ projectId });
/** The params schema of the TrueWallet routes (`/v1/{projectKey}/wallets/…`). */
export const ProjectKeyParams = z.strictObject({ projectKey });
