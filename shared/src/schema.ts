/**
 * Schema validation helpers on top of zod. Every object schema in the project is a `z.strictObject`, so
 * unknown fields are rejected; `parseOrThrow` turns zod's issues into one precise INVALID_PARAMS message
 * (field paths and expectations only, never the offending values).
 */
import { z } from 'zod';
import { cut, escapeName, quote } from './echo';
import { KeystoreError, type ErrorCode, type ValidationIssue } from './errors';
import {
  ADDRESS_EXPECTED,
  ADDRESS_RE,
  IDENTITY_PUBLIC_KEY_EXPECTED,
  IDENTITY_PUBLIC_KEY_RE,
  KEY_ID_EXPECTED,
  KEY_ID_RE,
  KMS_KEY_ARN_EXPECTED,
  KMS_KEY_ARN_RE,
} from './identifiers';

/** Issues reported in `details` at most (the message names up to 5, then says how many more). */
export const MAX_ISSUES = 20;
const MAX_PATH_CHARS = 256;
const MAX_EXPECTED_CHARS = 256;

/** Unknown fields a message names at most (then "and N more"); `details` lists up to MAX_ISSUES. */
const NAMED_UNKNOWN_FIELDS = 5;

/** `s` cut to `max` whole code points (the last one `…`): never half of a surrogate pair. */
const clip = (s: string, max: number): string => cut(s, max - 1);

/**
 * `body.transaction.accessList[0].address`; caller-chosen names (unknown fields, map keys) cut to ECHO_MAX_CHARS
 * code points and escaped as in a JSON string (shared/src/echo.ts).
 */
function pathText(root: string, path: readonly PropertyKey[]): string {
  const steps = path.map((p) => (typeof p === 'number' ? `[${p}]` : escapeName(String(p))));
  return [root, ...steps].join('.').replace(/\.\[/g, '[');
}

/** Marks a call that has no input to look into (`describeIssues` without one): nothing is taken as missing. */
const NO_INPUT: unique symbol = Symbol('no input');

/** The value at `path` in `input`, through own properties only; `present` is false when any step is absent. */
function valueAt(input: unknown, path: readonly PropertyKey[]): { present: boolean; value: unknown } {
  let value = input;
  for (const step of path) {
    if (typeof value !== 'object' || value === null || !Object.hasOwn(value, step)) return { present: false, value: undefined };
    value = (value as Record<PropertyKey, unknown>)[step];
  }
  return { present: value !== undefined, value };
}

/**
 * What a value is, for `received`: its JSON type and size, never its content (a request may carry a secret, and
 * answers and logs must not echo it): `missing`, `null`, `string (12 characters)`, `array (3 items)`, `object`,
 * `number`, `boolean`.
 */
export function receivedOf(present: boolean, value: unknown): string {
  if (!present) return 'missing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return `array (${value.length} items)`;
  if (typeof value === 'string') return `string (${value.length} characters)`;
  return typeof value;
}

/** What a message says was expected: the text after its `expected ` (`malformed key id: expected 1-64 …`), else all of it. */
function expectation(message: string): string {
  const text = message.replace(/^Invalid input: /, '');
  if (text.startsWith('expected ')) return text.slice('expected '.length);
  const at = text.indexOf(': expected ');
  return at >= 0 ? text.slice(at + ': expected '.length) : text;
}

/** The types a union's options expected of the value itself (`string or object`), when they say. */
function unionExpectation(issue: z.core.$ZodIssueInvalidUnion): string | undefined {
  const options = (issue as { options?: unknown }).options;
  if (Array.isArray(options) && options.length > 0) return `one of ${options.map((o) => JSON.stringify(String(o))).join(', ')}`;
  const types = new Set<string>();
  for (const branch of issue.errors) {
    const own = branch.find((i) => i.path.length === 0 && i.code === 'invalid_type');
    if (!own || own.code !== 'invalid_type') return undefined;
    types.add(own.expected);
  }
  return types.size > 0 ? [...types].join(' or ') : undefined;
}

function expectedOf(issue: z.core.$ZodIssue): string {
  const declared = issue.code === 'custom' ? (issue.params as { expected?: unknown } | undefined)?.expected : undefined;
  if (typeof declared === 'string') return declared;
  switch (issue.code) {
    case 'invalid_type':
      return issue.expected;
    case 'invalid_value':
      return `one of ${issue.values.map((v) => JSON.stringify(String(v))).join(', ')}`;
    case 'invalid_union':
      return unionExpectation(issue) ?? 'one of the accepted shapes';
    case 'unrecognized_keys':
      return 'no such field';
    default:
      return expectation(issue.message);
  }
}

/**
 * A validation failure as a list of problems for programs (`details` on the caller API): each one's path
 * (`body.typedData.message.to`), what was expected and what was received (`receivedOf`: a type, never the
 * value). An unknown field is one problem per field. At most MAX_ISSUES, in the order zod found them.
 */
export function issuesOf(error: z.ZodError, input: unknown, root = 'params'): ValidationIssue[] {
  const out: ValidationIssue[] = [];
  for (const issue of error.issues) {
    if (out.length >= MAX_ISSUES) break;
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        if (out.length >= MAX_ISSUES) break;
        const { present, value } = valueAt(input, [...issue.path, key]);
        out.push({
          path: clip(pathText(root, [...issue.path, key]), MAX_PATH_CHARS),
          expected: 'no such field',
          received: receivedOf(present, value),
        });
      }
      continue;
    }
    const { present, value } = valueAt(input, issue.path);
    out.push({
      path: clip(pathText(root, issue.path), MAX_PATH_CHARS),
      expected: clip(expectedOf(issue), MAX_EXPECTED_CHARS),
      received: receivedOf(present, value),
    });
  }
  return out;
}

/**
 * One message for a validation failure, the first problem first: `body.message is required`,
 * `body.transaction.gas: expected a uint64 …`, `body: unknown field(s) "x"`; up to 5, then how many more. Field
 * paths and expectations only, never the values. With `input` (what was validated), a field that is absent is
 * said to be required.
 */
export function describeIssues(error: z.ZodError, root = 'params', input: unknown = NO_INPUT): string {
  const parts = error.issues.slice(0, 5).map((issue) => {
    const where = pathText(root, issue.path);
    if (issue.code === 'unrecognized_keys') {
      const named = issue.keys.slice(0, NAMED_UNKNOWN_FIELDS).map(quote);
      if (issue.keys.length > NAMED_UNKNOWN_FIELDS) named.push(`and ${issue.keys.length - NAMED_UNKNOWN_FIELDS} more`);
      return `${where}: unknown field(s) ${named.join(', ')}`;
    }
    const missing =
      input !== NO_INPUT && (issue.code === 'invalid_type' || issue.code === 'invalid_union') && !valueAt(input, issue.path).present;
    if (missing) return `${where} is required`;
    if (issue.code === 'custom' && (issue.params as { required?: unknown } | undefined)?.required === true)
      return `${where} is required (${issue.message})`;
    if (issue.code === 'invalid_union' && issue.message === 'Invalid input') {
      const expected = unionExpectation(issue);
      if (expected) return `${where}: expected ${expected}`;
    }
    return `${where}: ${issue.message}`;
  });
  if (error.issues.length > 5) parts.push(`and ${error.issues.length - 5} more`);
  return parts.join('; ');
}

/** A validation failure as INVALID_PARAMS (or `reason`), with its message and its `issues`. */
export function validationError(error: z.ZodError, input: unknown, root = 'params', reason: ErrorCode = 'INVALID_PARAMS'): KeystoreError {
  return new KeystoreError(reason, describeIssues(error, root, input), { issues: issuesOf(error, input, root) });
}

export function parseOrThrow<S extends z.ZodType>(
  schema: S,
  value: unknown,
  root = 'params',
  reason: ErrorCode = 'INVALID_PARAMS',
): z.output<S> {
  const res = schema.safeParse(value);
  if (!res.success) throw validationError(res.error, value, root, reason);
  return res.data;
}

/** Common field shapes shared by the wire protocol and the caller API. */
export const hexBytes = z.string().regex(/^0x(?:[0-9a-fA-F]{2})*$/, 'expected 0x-prefixed hex bytes');
export const hex32 = z.string().regex(/^0x[0-9a-fA-F]{64}$/, 'expected 32 bytes as 0x-prefixed hex');
export const address = z.string().regex(ADDRESS_RE, ADDRESS_EXPECTED);
export const base64 = z
  .string()
  .regex(/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/, 'expected standard padded base64');
/** Key ids are chosen by the parent: short, URL-safe and free of path separators. */
export const keyId = z.string().regex(KEY_ID_RE, KEY_ID_EXPECTED);
export const kmsKeyArn = z.string().regex(KMS_KEY_ARN_RE, KMS_KEY_ARN_EXPECTED);
export const identityPublicKey = z.string().regex(IDENTITY_PUBLIC_KEY_RE, IDENTITY_PUBLIC_KEY_EXPECTED);
