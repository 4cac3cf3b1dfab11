/**
 * Schema validation helpers on top of zod. Every object schema in the project is a `z.strictObject`, so
 * unknown fields are rejected; `parseOrThrow` turns zod's issues into one precise INVALID_PARAMS message
 * (field paths and expectations only, never the offending values).
 */
import { z } from 'zod';
import { KeystoreError, type ErrorCode } from './errors';
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

export function describeIssues(error: z.ZodError, root = 'params'): string {
  const parts = error.issues.slice(0, 5).map((issue) => {
    const where = [root, ...issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p)))].join('.').replace(/\.\[/g, '[');
    if (issue.code === 'unrecognized_keys') return `${where}: unknown field(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
    return `${where}: ${issue.message}`;
  });
  if (error.issues.length > 5) parts.push(`and ${error.issues.length - 5} more`);
  return parts.join('; ');
}

export function parseOrThrow<S extends z.ZodType>(
  schema: S,
  value: unknown,
  root = 'params',
  reason: ErrorCode = 'INVALID_PARAMS',
): z.output<S> {
  const res = schema.safeParse(value);
  if (!res.success) throw new KeystoreError(reason, describeIssues(res.error, root));
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
