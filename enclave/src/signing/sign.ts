/**
 * From a validated sign request to a signature (README.md, "Caller API"; docs/SECURITY.md, "Requests that are
 * dangerous to sign"). The digest is always derived here, inside the enclave, from the structured input with
 * viem's hashing and serialization; nothing is hand-encoded.
 *
 * Typed data is bounded by the schema's complexity budget (shared/src/signing/typed-data-budget.ts) before
 * it gets here, and is only ever hashed on a signer thread (pool.ts), never on the enclave's main thread.
 */
import {
  BaseError,
  concatHex,
  hashMessage,
  hashTypedData,
  hexToBytes,
  keccak256,
  serializeTransaction,
  validateTypedData,
  type Address,
  type Hex,
  type TransactionSerializable,
  type TypedDataDefinition,
} from 'viem';
import { getUserOperationHash } from 'viem/account-abstraction';
import { hashAuthorization } from 'viem/utils';
import { KeystoreError } from '@nks/shared/errors';
import type { SignRequest, SignResult } from '@nks/shared/signing/schema';
import type { RawSignature } from '../crypto/secp256k1';
import { signDigestScrubbed } from './scrub';

type TransactionRequest = Extract<SignRequest, { type: 'transaction' }>['transaction'];

interface Prepared {
  digest: Hex;
  extra?: (sig: RawSignature) => Pick<SignResult, 'serializedTransaction' | 'userOperationHash'>;
}

/** viem's errors explain what is wrong with the input; pass their short message on as INVALID_PARAMS. */
function invalid(err: unknown, what: string): KeystoreError {
  const detail = err instanceof BaseError ? err.shortMessage : err instanceof Error ? err.message.split('\n')[0] : 'invalid';
  return new KeystoreError('INVALID_PARAMS', `${what}: ${detail}`, { cause: err });
}

function toViemTransaction(tx: TransactionRequest): TransactionSerializable {
  const { to, ...rest } = tx;
  // A null or absent `to` is a contract creation.
  return to ? { ...rest, to } : rest;
}

function prepare(req: SignRequest): Prepared {
  switch (req.type) {
    case 'digest':
      return { digest: req.digest };
    case 'message':
      return { digest: hashMessage(req.message) };
    case 'typedData': {
      const td = req.typedData as unknown as TypedDataDefinition;
      try {
        validateTypedData(td);
        return { digest: hashTypedData(td) };
      } catch (err) {
        throw invalid(err, 'typedData');
      }
    }
    case 'transaction': {
      const tx = toViemTransaction(req.transaction);
      let unsigned: Hex;
      try {
        unsigned = serializeTransaction(tx);
      } catch (err) {
        throw invalid(err, 'transaction');
      }
      return {
        digest: keccak256(unsigned),
        extra: (sig) => ({
          serializedTransaction: serializeTransaction(tx, { r: sig.r, s: sig.s, yParity: sig.yParity, v: 27n + BigInt(sig.yParity) }),
        }),
      };
    }
    case 'authorization':
      return {
        digest: hashAuthorization({
          chainId: req.authorization.chainId,
          address: req.authorization.address,
          nonce: req.authorization.nonce,
        }),
      };
    case 'userOperation': {
      let userOperationHash: Hex;
      try {
        userOperationHash =
          req.version === '0.6'
            ? getUserOperationHash({
                chainId: req.chainId,
                entryPointAddress: req.entryPoint,
                entryPointVersion: '0.6',
                userOperation: { initCode: '0x', paymasterAndData: '0x', ...req.userOperation, signature: '0x' },
              })
            : getUserOperationHash({
                chainId: req.chainId,
                entryPointAddress: req.entryPoint,
                entryPointVersion: '0.7',
                userOperation: { ...req.userOperation, signature: '0x' },
              });
      } catch (err) {
        throw invalid(err, 'userOperation');
      }
      // SimpleAccount-style accounts check an EIP-191 signature over the userOpHash.
      return { digest: hashMessage({ raw: userOperationHash }), extra: () => ({ userOperationHash }) };
    }
  }
}

export function signRequest(req: SignRequest, secret: Uint8Array, address: Address): SignResult {
  const { digest, extra } = prepare(req);
  const sig = signDigestScrubbed(hexToBytes(digest), secret);
  const v = sig.yParity === 0 ? 27 : 28;
  return {
    signature: concatHex([sig.r, sig.s, v === 27 ? '0x1b' : '0x1c']),
    r: sig.r,
    s: sig.s,
    v,
    yParity: sig.yParity,
    hash: digest,
    address,
    ...extra?.(sig),
  };
}
