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

/** The request id of a message that failed envelope validation, when one can be recovered. */
export function recoverId(msg: unknown): RpcId | null {
  if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) return null;
  const raw = (msg as { id?: unknown }).id;
  return id.safeParse(raw).success ? (raw as RpcId) : null;
}
