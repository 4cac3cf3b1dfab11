/**
 * HTTP plumbing for the caller API: bounded JSON bodies, JSON responses, and the error envelope
 * `{"error": {"code", "message", "requestId"}}` with the status the error reason maps to.
 */
import type http from 'node:http';
import { asKeystoreError, KeystoreError } from '../../../shared/src/errors';

export function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

export function sendError(res: http.ServerResponse, err: unknown, requestId: string): KeystoreError {
  const ke = asKeystoreError(err);
  const headers: Record<string, string> = {};
  if (ke.httpStatus === 503) headers['retry-after'] = '1';
  if (ke.code === 'UNAUTHORIZED') headers['www-authenticate'] = 'Bearer';
  sendJson(res, ke.httpStatus, { error: { code: ke.code, message: ke.message, requestId } }, headers);
  return ke;
}

/**
 * Reads a JSON body of at most `maxBytes`. An empty body is `undefined`. A declared or actual size over the
 * limit is PAYLOAD_TOO_LARGE (the rest is not read); a body that is not `application/json` is
 * UNSUPPORTED_MEDIA_TYPE; bytes that are not JSON are INVALID_REQUEST.
 */
export async function readJsonBody(req: http.IncomingMessage, maxBytes: number): Promise<unknown> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > maxBytes) throw new KeystoreError('PAYLOAD_TOO_LARGE', `request body of ${declared} bytes exceeds the ${maxBytes}-byte limit`);
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
  const type = String(req.headers['content-type'] ?? '');
  if (!/^application\/json\s*(;|$)/i.test(type)) throw new KeystoreError('UNSUPPORTED_MEDIA_TYPE', 'request body must be application/json');
  try {
    return JSON.parse((chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)).toString('utf8'));
  } catch {
    throw new KeystoreError('INVALID_REQUEST', 'request body is not valid JSON');
  }
}
