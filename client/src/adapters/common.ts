/**
 * What the viem and ethers adapters share (./viem.ts, ./ethers.ts): their error, integers as the caller API
 * takes them, and the check that a signature the server answers is the key's, over the digest the adapter
 * computed itself from what it was asked to sign. No viem or ethers import here.
 */
import type { SignRequestInput, SignResult } from '@nks/shared/signing/schema';
import type { KeystoreApiError, KeystoreClient, WithBigint } from '../sdk';

export type AdapterErrorCode =
  /** The input cannot be signed by the keystore as given (the message says what to change). */
  | 'INVALID_INPUT'
  /** The server's answer is not the key's signature over what was asked: never returned to the caller. */
  | 'SIGNATURE_MISMATCH';

/**
 * An error of the adapter itself. The keystore's own refusals (a disabled key, a policy, a bad token) are the
 * SDK's `KeystoreApiError`, with the API's code, and pass through unchanged.
 */
export class KeystoreAdapterError extends Error {
  override readonly name = 'KeystoreAdapterError';
  constructor(
    readonly code: AdapterErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export type TransactionRequest = Extract<SignRequestInput, { type: 'transaction' }>['transaction'];
export type TypedDataRequest = Extract<SignRequestInput, { type: 'typedData' }>['typedData'];

/** `value` with every bigint as a decimal string and every byte array as 0x hex, as JSON carries them. */
export function jsonInts<T>(value: T): T {
  const walk = (v: unknown): unknown => {
    if (typeof v === 'bigint') return v.toString();
    if (v instanceof Uint8Array) return `0x${Buffer.from(v).toString('hex')}`;
    if (Array.isArray(v)) return v.map(walk);
    if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return walk(value) as T;
}

/**
 * `message` with only the fields its types declare, recursively (structs, arrays of them). viem and ethers hash a
 * struct by its declared fields and ignore any others, and callers rely on it (permissionless signs a whole
 * PackedUserOperation, `signature` included, as typed data); the keystore refuses undeclared fields rather than
 * sign what it would not hash. Dropping them changes no digest: the adapters compute theirs from the caller's
 * input and check the keystore's against it.
 */
export function declaredFieldsOnly(
  types: Readonly<Record<string, readonly { name: string; type: string }[]>>,
  primaryType: string,
  message: unknown,
): unknown {
  const prune = (type: string, value: unknown): unknown => {
    const array = /^(.*)\[\d*\]$/.exec(type);
    if (array) return Array.isArray(value) ? value.map((v) => prune(array[1] as string, v)) : value;
    const fields = Object.hasOwn(types, type) ? types[type] : undefined;
    if (!fields || value === null || typeof value !== 'object' || Array.isArray(value)) return value;
    const v = value as Record<string, unknown>;
    return Object.fromEntries(fields.filter((f) => Object.hasOwn(v, f.name)).map((f) => [f.name, prune(f.type, v[f.name])]));
  };
  return prune(primaryType, message);
}

/**
 * Signs `request` with the key and checks the answer before anyone uses it: the digest signed must be
 * `expectedDigest` (computed by the adapter from its input, with the library's own hashing) and the signature
 * must recover to the key's address. A server that answered another key's signature, or one over other bytes,
 * is caught here rather than on chain.
 */
export async function signChecked(
  client: KeystoreClient,
  keyId: string,
  address: string,
  request: WithBigint<SignRequestInput>,
  expectedDigest: string,
  recover: (digest: `0x${string}`, signature: `0x${string}`) => string | Promise<string>,
): Promise<SignResult> {
  const result = await client.sign(keyId, request);
  const expected = expectedDigest.toLowerCase();
  if (result.hash?.toLowerCase() !== expected) {
    throw new KeystoreAdapterError(
      'SIGNATURE_MISMATCH',
      `the keystore signed digest ${String(result.hash)} for key ${keyId}, not ${expected}, the digest of what was asked`,
    );
  }
  const signer = await recover(result.hash, result.signature);
  if (signer.toLowerCase() !== address.toLowerCase()) {
    throw new KeystoreAdapterError(
      'SIGNATURE_MISMATCH',
      `the keystore's signature recovers to ${signer}, not to key ${keyId} (${address})`,
    );
  }
  return result;
}

/** One answer of a checked batch, in its request's place: the checked signature, or the keystore's refusal of it. */
export type CheckedOutcome<T> = { value: T; error?: undefined } | { error: KeystoreApiError; value?: undefined };

/**
 * `signChecked` for a batch (`client.signBatch`): every signature answered is checked as a single one is, in its
 * place, so an answer swapped with another's or moved to another place is SIGNATURE_MISMATCH (thrown: nothing of
 * a batch with a forged answer is returned). Refusals of single requests come back in their places.
 */
export async function signBatchChecked(
  client: KeystoreClient,
  keyId: string,
  address: string,
  items: ReadonlyArray<{ request: WithBigint<SignRequestInput>; digest: string }>,
  recover: (digest: `0x${string}`, signature: `0x${string}`) => string | Promise<string>,
): Promise<Array<CheckedOutcome<SignResult>>> {
  const outcomes = await client.signBatch(
    keyId,
    items.map((i) => i.request),
  );
  return Promise.all(
    outcomes.map(async (o, i) => {
      if (o.error) return { error: o.error };
      const expected = (items[i] as { digest: string }).digest.toLowerCase();
      if (o.result.hash?.toLowerCase() !== expected)
        throw new KeystoreAdapterError(
          'SIGNATURE_MISMATCH',
          `the keystore signed digest ${String(o.result.hash)} for request ${i} of a batch of key ${keyId}, not ${expected}, the digest of what was asked`,
        );
      const signer = await recover(o.result.hash, o.result.signature);
      if (signer.toLowerCase() !== address.toLowerCase())
        throw new KeystoreAdapterError(
          'SIGNATURE_MISMATCH',
          `the keystore's signature of request ${i} of a batch recovers to ${signer}, not to key ${keyId} (${address})`,
        );
      return { value: o.result };
    }),
  );
}
