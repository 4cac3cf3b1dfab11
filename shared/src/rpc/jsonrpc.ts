/** JSON-RPC 2.0 envelopes as used on the parent <-> enclave link (docs/PROTOCOL.md, "Envelopes"). Batches are not used. */
import { z } from 'zod';
import type { RpcErrorObject } from '../errors';
import { REQUEST_ID_RE } from '../log';

export type RpcId = string | number;

const id = z.union([z.string().max(128), z.number().int().safe()]);

export const RequestEnvelopeSchema = z.strictObject({
  jsonrpc: z.literal('2.0'),
  id,
  method: z.string().min(1).max(128),
  // Passed on as received (not copied by a record schema, which would drop an own `__proto__` key), so each
  // method's strict schema sees, and refuses, every key the peer sent.
  params: z
    .custom<Record<string, unknown>>((v) => typeof v === 'object' && v !== null && !Array.isArray(v), 'expected params to be an object')
    .optional(),
  /**
   * The API request this call serves (its `x-request-id`), for log lines only: the peer chose it, so it is
   * validated here (1-128 of [A-Za-z0-9_.:-], else the request is refused INVALID_REQUEST) and never enters
   * anything a side signs, attests or stores.
   */
  requestId: z.string().regex(REQUEST_ID_RE, 'expected requestId to be 1-128 characters of [A-Za-z0-9_.:-]').optional(),
});
export type RequestEnvelope = z.infer<typeof RequestEnvelopeSchema>;

const ErrorObjectSchema = z.object({
  code: z.number().int(),
  message: z.string(),
  data: z.unknown().optional(),
});

export const ResponseEnvelopeSchema = z.union([
  z.strictObject({ jsonrpc: z.literal('2.0'), id, result: z.unknown() }),
  z.strictObject({ jsonrpc: z.literal('2.0'), id: id.nullable(), error: ErrorObjectSchema }),
]);

export interface SuccessResponse {
  jsonrpc: '2.0';
  id: RpcId;
  result: unknown;
}

export interface ErrorResponse {
  jsonrpc: '2.0';
  id: RpcId | null;
  error: RpcErrorObject;
}

export function successResponse(reqId: RpcId, result: unknown): SuccessResponse {
  return { jsonrpc: '2.0', id: reqId, result: result === undefined ? null : result };
}

export function errorResponse(reqId: RpcId | null, error: RpcErrorObject): ErrorResponse {
  return { jsonrpc: '2.0', id: reqId, error };
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isId = (v: unknown): v is RpcId => (typeof v === 'string' ? v.length <= 128 : Number.isSafeInteger(v));

/**
 * The hot path's check of a request envelope: true exactly when `RequestEnvelopeSchema` accepts `msg` (the same
 * rules, written out, so a well-formed request costs no zod parse; shared/test/jsonrpc-fast.test.ts holds the
 * two to the same answers). Nothing is copied: the envelope is used as received, as the schema's own output
 * would be for every field it keeps. Anything it refuses goes through the schema, for its error message.
 */
export function isRequestEnvelope(msg: unknown): msg is RequestEnvelope {
  if (!isPlainObject(msg)) return false;
  let n = 0;
  for (const k of Object.keys(msg)) {
    if (k !== 'jsonrpc' && k !== 'id' && k !== 'method' && k !== 'params' && k !== 'requestId') return false;
    n += 1;
  }
  const { jsonrpc, id: reqId, method, params, requestId } = msg;
  return (
    n >= 3 &&
    jsonrpc === '2.0' &&
    isId(reqId) &&
    typeof method === 'string' &&
    method.length >= 1 &&
    method.length <= 128 &&
    (params === undefined || isPlainObject(params)) &&
    (requestId === undefined || (typeof requestId === 'string' && REQUEST_ID_RE.test(requestId)))
  );
}

/**
 * The hot path's check of a response envelope: true exactly when `ResponseEnvelopeSchema` accepts `msg` with a
 * `result` (an error answer, rarer, goes through the schema). Held to the schema's answers by
 * shared/test/jsonrpc-fast.test.ts.
 */
export function isSuccessEnvelope(msg: unknown): msg is SuccessResponse {
  if (!isPlainObject(msg)) return false;
  const keys = Object.keys(msg);
  if (keys.length !== 3) return false;
  for (const k of keys) if (k !== 'jsonrpc' && k !== 'id' && k !== 'result') return false;
  // `result: undefined` cannot come out of JSON; the schema takes it (z.unknown) and so does this.
  return msg.jsonrpc === '2.0' && isId(msg.id);
}

/** The request id of a message that failed envelope validation, when one can be recovered. */
export function recoverId(msg: unknown): RpcId | null {
  if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) return null;
  const raw = (msg as { id?: unknown }).id;
  return id.safeParse(raw).success ? (raw as RpcId) : null;
}
