/**
 * The audit line of a signature (docs/OPERATIONS.md, "Logs"): one info line per sign request on the `audit`
 * logger, whatever its outcome, with the key, what was asked (request type, chain id, `to`, value), the hash the
 * enclave signed, the token's name and the request id. Never the token, never key material, never the request's
 * payload (a message, calldata, typed data).
 */
import { asKeystoreError } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import type { SignBatchItem, SignResult } from '@nks/shared/signing/schema';

export interface SignAuditFields {
  keyId: string;
  type: string;
  chainId?: string;
  to?: string | null;
  value?: string;
  /** userOperation: the account that sends it. */
  sender?: string;
}

const MAX = 80;
/** A scalar of the request as the caller sent it (already validated by the route's schema), bounded. */
function scalar(v: unknown): string | undefined {
  if (typeof v === 'string') return v.slice(0, MAX);
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return undefined;
}
const obj = (v: unknown): Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};

/** What the audit line says of a sign request (the body as sent). */
export function signAuditFields(keyId: string, body: unknown): SignAuditFields {
  const b = obj(body);
  const type = scalar(b.type) ?? 'unknown';
  const out: SignAuditFields = { keyId, type };
  const set = (k: 'chainId' | 'to' | 'value' | 'sender', v: unknown) => {
    const s = scalar(v);
    if (s !== undefined) out[k] = s;
  };
  switch (type) {
    case 'transaction': {
      const tx = obj(b.transaction);
      set('chainId', tx.chainId);
      // A contract creation has no `to`: said as null.
      if (tx.to === null || tx.to === undefined) out.to = null;
      else set('to', tx.to);
      set('value', tx.value ?? '0');
      break;
    }
    case 'typedData': {
      const domain = obj(obj(b.typedData).domain);
      set('chainId', domain.chainId);
      set('to', domain.verifyingContract);
      break;
    }
    case 'authorization': {
      const auth = obj(b.authorization);
      set('chainId', auth.chainId);
      set('to', auth.address);
      break;
    }
    case 'userOperation': {
      set('chainId', b.chainId);
      set('sender', obj(b.userOperation).sender);
      break;
    }
    default:
      break;
  }
  return out;
}

/** Runs the sign and writes its audit line (outcome `ok` and the signed hash, or the error code). */
export async function auditedSign(
  audit: Logger | undefined,
  who: { requestId: string; token: string },
  keyId: string,
  body: unknown,
  sign: () => Promise<SignResult>,
): Promise<SignResult> {
  if (!audit) return sign();
  // `tokenName`, not `token`: the logger redacts any field named token.
  const fields = { ...signAuditFields(keyId, body), tokenName: who.token, requestId: who.requestId };
  try {
    const result = await sign();
    audit.info(
      {
        ...fields,
        outcome: 'ok',
        hash: result.hash,
        address: result.address,
        ...(result.userOperationHash ? { userOperationHash: result.userOperationHash } : {}),
      },
      'signed',
    );
    return result;
  } catch (err) {
    audit.info({ ...fields, outcome: asKeystoreError(err).code }, 'sign refused');
    throw err;
  }
}

/**
 * A batch's audit lines: one per request, as a single sign writes it, with its place in the batch (`item`) and the
 * batch's request id; when the whole batch is refused, one line per request with that error's code.
 */
export async function auditedSignBatch(
  audit: Logger | undefined,
  who: { requestId: string; token: string },
  keyId: string,
  bodies: readonly unknown[],
  sign: () => Promise<SignBatchItem[]>,
): Promise<SignBatchItem[]> {
  if (!audit) return sign();
  const fields = (i: number) => ({ ...signAuditFields(keyId, bodies[i]), item: i, tokenName: who.token, requestId: who.requestId });
  let results: SignBatchItem[];
  try {
    results = await sign();
  } catch (err) {
    const outcome = asKeystoreError(err).code;
    bodies.forEach((_, i) => audit.info({ ...fields(i), outcome }, 'sign refused'));
    throw err;
  }
  results.forEach((item, i) => {
    if ('error' in item) audit.info({ ...fields(i), outcome: item.error.code }, 'sign refused');
    else {
      const { hash, address, userOperationHash } = item.result;
      audit.info({ ...fields(i), outcome: 'ok', hash, address, ...(userOperationHash ? { userOperationHash } : {}) }, 'signed');
    }
  });
  return results;
}
