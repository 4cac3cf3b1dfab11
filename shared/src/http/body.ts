/**
 * Request bodies: JSON of at most `api.maxBodyBytes`, read by the API itself rather than by Fastify's JSON
 * parser, so that every body answer stays what the API documents (parent/README.md): an empty body is no
 * body whatever its type; a body over the limit is 413 PAYLOAD_TOO_LARGE, checked on the declared length
 * first and then while reading (the rest is not read); a non-empty body that is not `application/json` is 415
 * UNSUPPORTED_MEDIA_TYPE; bytes that are not JSON are 400 INVALID_REQUEST. Keys are read as JSON.parse reads
 * them: a `constructor` key is an ordinary field, refused by the strict schemas where it is unknown and as a
 * map key (validation.ts, `stringMap`); a `__proto__` key, at any depth, is 400 INVALID_REQUEST naming where.
 */
import type http from 'node:http';
import type { Readable } from 'node:stream';
import type { FastifyRequest } from 'fastify';
import { KeystoreError } from '@nks/shared/errors';
import { JSON_NULL, reservedNameMessage } from './validation';

/**
 * The deepest nesting of arrays and objects a body may have. No route's schema needs more than a few dozen levels
 * (typed data's structs included); a deeper body is refused before it is parsed, which bounds the time
 * JSON.parse and the `__proto__` walk below spend on one request (a 256 KiB body can nest 100,000 levels).
 */
export const MAX_BODY_DEPTH = 128;

/** The deepest nesting of `[`/`{` outside strings in JSON text (UTF-8: those bytes never occur inside a multi-byte character). */
export function nestingDepth(bytes: Uint8Array): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (inString) {
      if (b === 0x5c)
        i++; // a backslash: the next byte is escaped
      else if (b === 0x22) inString = false;
    } else if (b === 0x22) inString = true;
    else if (b === 0x5b || b === 0x7b) {
      if (++depth > max) max = depth;
    } else if (b === 0x5d || b === 0x7d) depth--;
  }
  return max;
}

/** Whether the request says it has a body (a length above zero, or chunked). */
export function hasBody(req: http.IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** Reads a JSON body of at most `maxBytes`: `undefined` when it is empty. */
export async function readJsonBody(req: Readable, headers: http.IncomingHttpHeaders, maxBytes: number): Promise<unknown> {
  const declared = headers['content-length'];
  if (declared !== undefined && Number(declared) > maxBytes)
    throw new KeystoreError('PAYLOAD_TOO_LARGE', `request body of ${declared} bytes exceeds the ${maxBytes}-byte limit`);
  const chunks: Buffer[] = [];
  let size = 0;
  // Plain stream events: cheaper than an async iterator on the signing hot path.
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        req.off('data', onData);
        req.pause();
        reject(new KeystoreError('PAYLOAD_TOO_LARGE', `request body exceeds the ${maxBytes}-byte limit`));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', resolve);
    req.once('error', reject);
  });
  if (size === 0) return undefined;
  const type = String(headers['content-type'] ?? '');
  if (!/^application\/json\s*(;|$)/i.test(type)) throw new KeystoreError('UNSUPPORTED_MEDIA_TYPE', 'request body must be application/json');
  const bytes = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
  if (nestingDepth(bytes) > MAX_BODY_DEPTH)
    throw new KeystoreError('INVALID_REQUEST', `request body is nested more than ${MAX_BODY_DEPTH} levels deep`);
  const text = bytes.toString('utf8');
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new KeystoreError('INVALID_REQUEST', 'request body is not valid JSON');
  }
  // Only a body whose text could hold the key (spelled out, or escaped) is walked: the signing hot path is not.
  if (text.includes('__proto__') || text.includes('\\u')) {
    const at = protoKeyPath(body);
    if (at !== undefined) throw new KeystoreError('INVALID_REQUEST', reservedNameMessage(at, '__proto__'));
  }
  return body;
}

/**
 * Where a `__proto__` key is in a parsed JSON value (`body.labels`), if anywhere. JSON.parse makes it an own
 * field, but any copy of the object (a spread, z.record) drops it or sets a prototype with it, so no body may
 * hold one, at any depth. Walked without recursion: a deeply nested body cannot overflow the stack.
 */
function protoKeyPath(value: unknown): string | undefined {
  const stack: Array<{ v: unknown; path: string }> = [{ v: value, path: 'body' }];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    const { v, path } = item;
    if (typeof v !== 'object' || v === null) continue;
    if (Array.isArray(v)) {
      v.forEach((e, i) => stack.push({ v: e, path: `${path}[${i}]` }));
      continue;
    }
    // (A path deeper than a message should hold is cut: it names where, not every step.)
    if (Object.hasOwn(v, '__proto__')) return path.length > 200 ? `${path.slice(0, 200)}…` : path;
    for (const [k, e] of Object.entries(v)) stack.push({ v: e, path: `${path}.${k.slice(0, 64)}` });
  }
  return undefined;
}

/**
 * The API's only content-type parser (registered for every type): the body for validation. A route may set its
 * own limit in its config (`bodyLimit`: the batch sign route's 1 MiB); the others take `maxBytes`.
 */
export function bodyParser(maxBytes: number) {
  return async (request: FastifyRequest, payload: Readable): Promise<unknown> => {
    const own = (request.routeOptions.config as { bodyLimit?: unknown } | undefined)?.bodyLimit;
    const body = await readJsonBody(payload, request.headers, typeof own === 'number' ? own : maxBytes);
    return body === null ? JSON_NULL : body;
  };
}
