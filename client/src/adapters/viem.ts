/**
 * A keystore key as a viem account (README.md, "Use it from viem and ethers").
 *
 *   import { KeystoreClient } from 'nitro-keystore-client';
 *   import { toKeystoreAccount } from 'nitro-keystore-client/viem';
 *   const account = await toKeystoreAccount({ client: new KeystoreClient({ url, token }), keyId });
 *   await createWalletClient({ account, chain, transport: http(rpcUrl) }).sendTransaction({ to, value });
 *
 * The account is a viem `LocalAccount` (`toAccount`): viem fills in and serializes transactions, the keystore
 * signs them. It works wherever viem takes a local account, including as the owner of viem's and
 * permissionless's smart accounts (their user operations are signed as the message or typed data the account
 * contract checks). Each signature is checked before it is returned: over the digest viem computes from the
 * input, by the key's address (`KeystoreAdapterError` SIGNATURE_MISMATCH otherwise). A refusal by the keystore
 * (disabled key, policy, token scope) rejects with the SDK's `KeystoreApiError` and its code; viem's actions
 * wrap it (`err.walk()` finds it).
 */
import {
  getAddress,
  getTransactionType,
  hashMessage,
  hashTypedData,
  isAddress,
  isHex,
  keccak256,
  recoverAddress,
  serializeTransaction,
  sidecarsToVersionedHashes,
  toHex,
  type Address,
  type Hex,
  type LocalAccount,
  type SerializeTransactionFn,
  type SignableMessage,
  type TransactionSerializable,
  type TypedDataDefinition,
} from 'viem';
import { toAccount } from 'viem/accounts';
import { hashAuthorization } from 'viem/utils';
import type { SignResult } from '@nks/shared/signing/schema';
import type { KeystoreClient } from '../sdk';
import {
  declaredFieldsOnly,
  jsonInts,
  KeystoreAdapterError,
  signBatchChecked,
  signChecked,
  type CheckedOutcome,
  type TransactionRequest,
  type TypedDataRequest,
} from './common';

export { KeystoreAdapterError, type AdapterErrorCode, type CheckedOutcome } from './common';

export interface KeystoreAccountOptions {
  /** An SDK client whose token may sign with the key (`keys:sign`; `keys:read` to look its address up). */
  client: KeystoreClient;
  keyId: string;
  /**
   * The key's address, when the caller knows it already (a token with `keys:sign` only cannot read the key):
   * then nothing is looked up. A wrong address signs nothing: every answer is checked against it.
   */
  address?: Address;
}

/**
 * A viem local account backed by a keystore key; `keyId` and `publicKey` (when the key was looked up) are the key's.
 * `signMessages` and `signTypedDataBatch` sign up to 100 at once (one `sign-batch` call), each answer checked as a
 * single signature is: `{value: signature}` or `{error}` (the keystore's refusal of that one) in each place.
 */
export type KeystoreAccount = LocalAccount<'custom'> & {
  keyId: string;
  signMessages(messages: readonly SignableMessage[]): Promise<Array<CheckedOutcome<Hex>>>;
  signTypedDataBatch(typedData: readonly TypedDataDefinition[]): Promise<Array<CheckedOutcome<Hex>>>;
};

const recover = (hash: Hex, signature: Hex) => recoverAddress({ hash, signature });
const signatureOf = (r: SignResult) => ({ r: r.r, s: r.s, v: BigInt(r.v), yParity: r.yParity });

/** viem's transaction as the keystore's sign request takes it (README.md, "Caller API"). */
export function toKeystoreTransaction(tx: TransactionSerializable): TransactionRequest {
  const bad = (why: string) => new KeystoreAdapterError('INVALID_INPUT', `cannot sign this transaction: ${why}`);
  let type: string;
  try {
    type = tx.type ?? getTransactionType(tx);
  } catch (err) {
    throw new KeystoreAdapterError('INVALID_INPUT', 'cannot sign this transaction: its type cannot be told from its fields', {
      cause: err,
    });
  }
  if (!['legacy', 'eip2930', 'eip1559', 'eip4844', 'eip7702'].includes(type))
    throw bad(`the keystore signs legacy, eip2930, eip1559, eip4844 and eip7702 transactions, not ${type}`);
  if (tx.chainId === undefined) throw bad('chainId is required (the keystore signs only chain-bound transactions)');
  if (tx.nonce === undefined) throw bad('nonce is required (viem fills it in when the account is given a client)');
  const t = tx as TransactionSerializable & Record<string, unknown>;
  const pick = (...names: string[]) => Object.fromEntries(names.filter((n) => t[n] !== undefined).map((n) => [n, t[n]]));
  const out: Record<string, unknown> = { type, ...pick('chainId', 'nonce', 'to', 'value', 'data', 'gas') };
  if (type === 'legacy') Object.assign(out, pick('gasPrice'));
  if (type === 'eip2930') Object.assign(out, pick('gasPrice', 'accessList'));
  if (type !== 'legacy' && type !== 'eip2930') Object.assign(out, pick('maxFeePerGas', 'maxPriorityFeePerGas', 'accessList'));
  if (type === 'eip7702') {
    const list = (t.authorizationList ?? []) as ReadonlyArray<{
      address: Address;
      chainId: number;
      nonce: number;
      r: Hex;
      s: Hex;
      v?: bigint;
      yParity?: number;
    }>;
    out.authorizationList = list.map(({ address, chainId, nonce, r, s, v, yParity }) => ({
      address,
      chainId,
      nonce,
      r,
      s,
      yParity: yParity ?? (v === 27n ? 0 : v === 28n ? 1 : undefined),
    }));
  }
  if (type === 'eip4844') {
    const sidecars = t.sidecars as Parameters<typeof sidecarsToVersionedHashes>[0]['sidecars'] | false | undefined;
    const hashes = t.blobVersionedHashes ?? (sidecars ? sidecarsToVersionedHashes({ sidecars }) : undefined);
    if (!hashes) throw bad('an eip4844 transaction needs blobVersionedHashes (or sidecars to derive them from)');
    Object.assign(out, pick('maxFeePerBlobGas'), { blobVersionedHashes: hashes });
  }
  return jsonInts(out) as TransactionRequest;
}

/** viem's typed data as the keystore's `typedData` request takes it (only the declared fields; integers as JSON). */
function typedDataRequest(definition: TypedDataDefinition): TypedDataRequest {
  const request = jsonInts({
    domain: definition.domain,
    types: definition.types,
    primaryType: definition.primaryType,
    message: declaredFieldsOnly(definition.types as unknown as TypedDataRequest['types'], definition.primaryType, definition.message),
  }) as unknown as TypedDataRequest;
  if (request.domain === undefined) delete request.domain;
  return request;
}

/** viem's signable message as the keystore's `message` request takes it. */
function toKeystoreMessage(message: SignableMessage): string | { raw: Hex } {
  if (typeof message === 'string') return message;
  return { raw: isHex(message.raw) ? message.raw : toHex(message.raw) };
}

/**
 * The viem account of key `keyId`: its address is read once, here (`getKey`), so this is async, unless given. Sign with it
 * directly (`account.signMessage`, …) or give it to a wallet client.
 *
 * `signTransaction` honours viem's `serializer` (a chain's own, e.g. an OP Stack chain's) when it serializes
 * the standard transaction types as viem does: the keystore signs the standard serialization, and the
 * serializer then writes the signed transaction. A serializer whose unsigned bytes differ (a chain's own
 * transaction type) is refused (INVALID_INPUT) rather than signed blind. `sign({hash})` signs a bare 32-byte
 * digest (the keystore's `digest` request): a project can refuse that request type, and should where keys
 * only sign what they can show.
 */
export async function toKeystoreAccount({ client, keyId, address: known }: KeystoreAccountOptions): Promise<KeystoreAccount> {
  if (known !== undefined && !isAddress(known, { strict: false }))
    throw new KeystoreAdapterError('INVALID_INPUT', `address must be a 0x-prefixed 20-byte hex address, not ${String(known)}`);
  const key = known === undefined ? await client.getKey(keyId) : undefined;
  const address = key ? key.address : getAddress(known!);
  const signed = (request: Parameters<KeystoreClient['sign']>[1], digest: Hex) =>
    signChecked(client, keyId, address, request, digest, recover);

  const account = toAccount({
    address,
    async sign({ hash }) {
      return (await signed({ type: 'digest', digest: hash }, hash)).signature;
    },
    async signMessage({ message }) {
      return (await signed({ type: 'message', message: toKeystoreMessage(message) }, hashMessage(message))).signature;
    },
    async signTypedData(typedData) {
      const definition = typedData as TypedDataDefinition;
      return (await signed({ type: 'typedData', typedData: typedDataRequest(definition) }, hashTypedData(definition))).signature;
    },
    async signAuthorization(authorization) {
      const delegate = authorization.contractAddress ?? authorization.address;
      const { chainId, nonce } = authorization;
      const result = await signed(
        { type: 'authorization', authorization: { chainId, nonce, address: delegate } },
        hashAuthorization({ chainId, nonce, address: delegate }),
      );
      return { address: delegate, chainId, nonce, ...signatureOf(result) };
    },
    async signTransaction(transaction, options) {
      const serializer = (options?.serializer ?? serializeTransaction) as SerializeTransactionFn<TransactionSerializable>;
      const tx = transaction as TransactionSerializable;
      // As viem signs: EIP-4844 over the payload without its sidecars (the network wrapper), written with them.
      const signable = tx.type === 'eip4844' ? { ...tx, sidecars: false as const } : tx;
      const request = toKeystoreTransaction(signable);
      const digest = keccak256(await serializer(signable));
      const standard = keccak256(serializeTransaction(signable));
      if (digest !== standard) {
        throw new KeystoreAdapterError(
          'INVALID_INPUT',
          'cannot sign this transaction: the chain serializes it differently from the standard transaction types, the only ones the keystore signs',
        );
      }
      const result = await signed({ type: 'transaction', transaction: request }, digest);
      return (await serializer(tx, signatureOf(result))) as never;
    },
  });
  const signatures = async (items: Array<{ request: Parameters<KeystoreClient['sign']>[1]; digest: Hex }>) =>
    (await signBatchChecked(client, keyId, address, items, recover)).map((o) => (o.error ? o : { value: o.value.signature }));
  const batch = {
    signMessages: (messages: readonly SignableMessage[]) =>
      signatures(messages.map((m) => ({ request: { type: 'message', message: toKeystoreMessage(m) }, digest: hashMessage(m) }))),
    signTypedDataBatch: (list: readonly TypedDataDefinition[]) =>
      signatures(list.map((d) => ({ request: { type: 'typedData', typedData: typedDataRequest(d) }, digest: hashTypedData(d) }))),
  };
  return Object.assign(account as LocalAccount<'custom'>, { keyId }, batch, key ? { publicKey: key.publicKey } : {});
}
