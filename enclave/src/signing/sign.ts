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
import { signDigest, type RawSignature } from '../crypto/secp256k1';

type TransactionRequest = Extract<SignRequest, { type: 'transaction' }>['transaction'];

interface Prepared {
  digest: Hex;
  extra?: (sig: RawSignature) => Pick<SignResult, 'serializedTransaction' | 'transactionHash' | 'userOperationHash'>;
}

/** viem's errors explain what is wrong with the input; pass their short message on as INVALID_PARAMS. */
function invalid(err: unknown, what: string): KeystoreError {
  const detail = err instanceof BaseError ? err.shortMessage : err instanceof Error ? err.message.split('\n')[0] : 'invalid';
  return new KeystoreError('INVALID_PARAMS', `${what}: ${detail}`, { cause: err });
}

function toViemTransaction(tx: TransactionRequest): TransactionSerializable {
  // A blob transaction always names `to` (schema.ts); its sidecars are not taken, so none is serialized.
  if (tx.type === 'eip4844') return tx;
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
        extra: (sig) => {
          const serializedTransaction = serializeTransaction(tx, {
            r: sig.r,
            s: sig.s,
            yParity: sig.yParity,
            v: 27n + BigInt(sig.yParity),
          });
          // The hash the chain knows the transaction by (EIP-4844: of the form without sidecars, as here).
          return { serializedTransaction, transactionHash: keccak256(serializedTransaction) };
        },
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
        userOperationHash = userOperationHashOf(req);
      } catch (err) {
        throw invalid(err, 'userOperation');
      }
      // SimpleAccount 0.6 and 0.7 check an EIP-191 signature over the userOpHash; from 0.8 the userOpHash is an
      // EIP-712 digest, and SimpleAccount and Simple7702Account 0.8 recover the signer from it as is.
      const digest = req.version === '0.8' ? userOperationHash : hashMessage({ raw: userOperationHash });
      return { digest, extra: () => ({ userOperationHash }) };
    }
  }
}

/** The EntryPoint's userOpHash (viem's getUserOperationHash); the signature field is never part of it. */
function userOperationHashOf(req: Extract<SignRequest, { type: 'userOperation' }>): Hex {
  const { chainId, entryPoint: entryPointAddress } = req;
  switch (req.version) {
    case '0.6':
      return getUserOperationHash({
        chainId,
        entryPointAddress,
        entryPointVersion: '0.6',
        userOperation: { initCode: '0x', paymasterAndData: '0x', ...req.userOperation, signature: '0x' },
      });
    case '0.7':
      return getUserOperationHash({
        chainId,
        entryPointAddress,
        entryPointVersion: '0.7',
        userOperation: { ...req.userOperation, signature: '0x' },
      });
    case '0.8': {
      // The authorization's signature is not hashed (the schema lets the caller leave it out): only its address is.
      const { authorization, ...op } = req.userOperation;
      return getUserOperationHash({
        chainId,
        entryPointAddress,
        entryPointVersion: '0.8',
        userOperation: {
          ...op,
          ...(authorization ? { authorization: { r: '0x', s: '0x', yParity: 0, ...authorization } } : {}),
          signature: '0x',
        },
      });
    }
  }
}

export function signRequest(req: SignRequest, secret: Uint8Array, address: Address): SignResult {
  const { digest, extra } = prepare(req);
  const sig = signDigest(hexToBytes(digest), secret);
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
