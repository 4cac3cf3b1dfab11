/**
 * Request bodies: JSON of at most `api.maxBodyBytes`, read by the API itself rather than by Fastify's JSON
 * parser, so that every body answer stays what the API documents (parent/README.md): an empty body is no
 * body whatever its type; a body over the limit is 413 PAYLOAD_TOO_LARGE, checked on the declared length
 * first and then while reading (the rest is not read); a non-empty body that is not `application/json` is 415
 * UNSUPPORTED_MEDIA_TYPE; bytes that are not JSON are 400 INVALID_REQUEST. Keys are read as JSON.parse reads
 * them: a `__proto__` or `constructor` key is an ordinary field, refused by the strict schemas where it is
 * unknown (Fastify's parser would refuse the whole body, with its own error).
 */
import type http from 'node:http';
import type { Readable } from 'node:stream';
import type { FastifyRequest } from 'fastify';
import { KeystoreError } from '@nks/shared/errors';
import { JSON_NULL } from './validation';

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
  try {
    return JSON.parse((chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)).toString('utf8'));
  } catch {
    throw new KeystoreError('INVALID_REQUEST', 'request body is not valid JSON');
  }
}

/** The API's only content-type parser (registered for every type): the body for validation. */
export function bodyParser(maxBytes: number) {
  return async (request: FastifyRequest, payload: Readable): Promise<unknown> => {
    const body = await readJsonBody(payload, request.headers, maxBytes);
    return body === null ? JSON_NULL : body;
  };
}
