/**
 * A request's id on the HTTP servers (the parent's caller API, the enclave's wallet routes): the caller's
 * `x-request-id` when it follows the one rule for request ids (shared/src/log.ts, REQUEST_ID_RE: it also goes
 * on the RPC envelope and into log lines), else a fresh UUID. Echoed in the answer's `x-request-id`.
 */
import { randomUUID } from 'node:crypto';
import type http from 'node:http';
import { REQUEST_ID_RE } from '../log';

export function requestIdOf(req: http.IncomingMessage): string {
  const incoming = req.headers['x-request-id'];
  return typeof incoming === 'string' && REQUEST_ID_RE.test(incoming) ? incoming : randomUUID();
}
