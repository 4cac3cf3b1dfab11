/**
 * A keystore key as an ethers v6 signer (README.md, "Use it from viem and ethers").
 *
 *   import { KeystoreClient } from 'nitro-keystore-client';
 *   import { KeystoreSigner } from 'nitro-keystore-client/ethers';
 *   const signer = new KeystoreSigner({ client: new KeystoreClient({ url, token }), keyId }, provider);
 *   await signer.sendTransaction({ to, value });
 *
 * ethers fills in transactions (`populateTransaction`: nonce, gas, fees, chain id from the provider) and
 * serializes them; the keystore signs. Each signature is checked before it is returned: over the digest ethers
 * computes from the input, by the key's address (`KeystoreAdapterError` SIGNATURE_MISMATCH otherwise). A
 * refusal by the keystore (disabled key, policy, token scope) rejects with the SDK's `KeystoreApiError` and
 * its code. Only this module of the client imports ethers.
 */
import {
  AbstractSigner,
  copyRequest,
  getAddress,
  getBigInt,
  hashAuthorization,
  hashMessage,
  hexlify,
  isAddress,
  recoverAddress,
  resolveAddress,
  resolveProperties,
  Signature,
  Transaction,
  TypedDataEncoder,
  type AuthorizationRequest,
  type Authorization,
  type Provider,
  type TransactionRequest as EthersTransactionRequest,
  type TypedDataDomain,
  type TypedDataField,
} from 'ethers';
import type { SignRequestInput, SignResult } from '@nks/shared/signing/schema';
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

export interface KeystoreSignerOptions {
  /** An SDK client whose token may sign with the key (`keys:sign`; `keys:read` to look its address up). */
  client: KeystoreClient;
  keyId: string;
  /**
   * The key's address, when the caller knows it already (a token with `keys:sign` only cannot read the key):
   * then nothing is looked up. A wrong address signs nothing: every answer is checked against it.
   */
  address?: string;
}

const TYPES: Record<number, TransactionRequest['type']> = { 0: 'legacy', 1: 'eip2930', 2: 'eip1559', 3: 'eip4844', 4: 'eip7702' };
const recover = (digest: string, signature: string) => recoverAddress(digest, signature);

/** An ethers transaction as the keystore's sign request takes it (README.md, "Caller API"). */
export function toKeystoreTransaction(tx: Transaction): TransactionRequest {
  const bad = (why: string) => new KeystoreAdapterError('INVALID_INPUT', `cannot sign this transaction: ${why}`);
  const type = TYPES[tx.type ?? tx.inferType()];
  if (!type) throw bad(`the keystore signs transaction types 0 to 4 (legacy to eip7702), not ${tx.type}`);
  if (tx.chainId === 0n) throw bad('chainId is required (the keystore signs only chain-bound transactions)');
  const out: Record<string, unknown> = { type, chainId: tx.chainId, nonce: tx.nonce, gas: tx.gasLimit, value: tx.value, data: tx.data };
  if (tx.to !== null) out.to = tx.to;
  else if (type === 'eip4844' || type === 'eip7702') throw bad(`an ${type} transaction needs \`to\``);
  if (type === 'legacy' || type === 'eip2930') out.gasPrice = tx.gasPrice ?? 0n;
  else Object.assign(out, { maxFeePerGas: tx.maxFeePerGas ?? 0n, maxPriorityFeePerGas: tx.maxPriorityFeePerGas ?? 0n });
  if (type !== 'legacy')
    out.accessList = (tx.accessList ?? []).map(({ address, storageKeys }) => ({ address, storageKeys: [...storageKeys] }));
  if (type === 'eip4844') {
    if (!tx.blobVersionedHashes?.length) throw bad('an eip4844 transaction needs blobVersionedHashes (or blobs to derive them from)');
    Object.assign(out, { maxFeePerBlobGas: tx.maxFeePerBlobGas ?? 0n, blobVersionedHashes: tx.blobVersionedHashes });
  }
  if (type === 'eip7702') {
    out.authorizationList = (tx.authorizationList ?? []).map((a) => ({
      address: a.address,
      chainId: a.chainId,
      nonce: a.nonce,
      r: a.signature.r,
      s: a.signature.s,
      yParity: a.signature.yParity,
    }));
  }
  return jsonInts(out) as TransactionRequest;
}

/**
 * The ethers signer of key `keyId`. Its address is read from the keystore on first use (`getAddress`) and
 * kept, unless given. `authorize` signs EIP-7702 authorizations (chain id 0, valid on every chain, is refused by the
 * keystore unless asked for through the SDK's `signAuthorization`).
 */
export class KeystoreSigner extends AbstractSigner {
  #address: Promise<string> | undefined;

  constructor(
    readonly options: KeystoreSignerOptions,
    provider?: null | Provider,
  ) {
    super(provider ?? null);
    if (options.address !== undefined) {
      if (!isAddress(options.address))
        throw new KeystoreAdapterError(
          'INVALID_INPUT',
          `address must be a 0x-prefixed 20-byte hex address, not ${String(options.address)}`,
        );
      this.#address = Promise.resolve(getAddress(options.address));
    }
  }

  get keyId(): string {
    return this.options.keyId;
  }

  getAddress(): Promise<string> {
    this.#address ??= this.options.client.getKey(this.options.keyId).then(
      (key) => getAddress(key.address),
      (err: unknown) => {
        this.#address = undefined; // a failed look-up is tried again next time
        throw err;
      },
    );
    return this.#address;
  }

  connect(provider: null | Provider): KeystoreSigner {
    const signer = new KeystoreSigner(this.options, provider);
    signer.#address = this.#address;
    return signer;
  }

  private async signed(request: SignRequestInput, digest: string): Promise<SignResult> {
    return signChecked(this.options.client, this.options.keyId, await this.getAddress(), request, digest, recover);
  }

  /**
   * Up to 100 messages in one `sign-batch` call: `{value: signature}` or `{error}` (the keystore's refusal of that
   * one) in each place, every signature checked as `signMessage` checks it (SIGNATURE_MISMATCH thrown otherwise).
   */
  async signMessages(messages: ReadonlyArray<string | Uint8Array>): Promise<Array<CheckedOutcome<string>>> {
    const items = messages.map((m) => ({
      request: { type: 'message' as const, message: typeof m === 'string' ? m : { raw: hexlify(m) as `0x${string}` } },
      digest: hashMessage(m),
    }));
    const outcomes = await signBatchChecked(this.options.client, this.options.keyId, await this.getAddress(), items, recover);
    return outcomes.map((o) => (o.error ? o : { value: o.value.signature }));
  }

  async signMessage(message: string | Uint8Array): Promise<string> {
    const request = typeof message === 'string' ? message : { raw: hexlify(message) as `0x${string}` };
    return (await this.signed({ type: 'message', message: request }, hashMessage(message))).signature;
  }

  async signTypedData(domain: TypedDataDomain, types: Record<string, TypedDataField[]>, value: Record<string, unknown>): Promise<string> {
    // ENS names in the domain or the message are resolved first, as ethers' Wallet does.
    const populated = await TypedDataEncoder.resolveNames(domain, types, value, async (name) => {
      const address = await this.resolveName(name);
      if (address == null) throw new KeystoreAdapterError('INVALID_INPUT', `cannot resolve the ENS name ${name} in the typed data`);
      return address;
    });
    const digest = TypedDataEncoder.hash(populated.domain, types, populated.value);
    const primaryType = TypedDataEncoder.getPrimaryType(types);
    const typedData = jsonInts({
      domain: populated.domain,
      types,
      primaryType,
      message: declaredFieldsOnly(types, primaryType, populated.value),
    }) as unknown as TypedDataRequest;
    return (await this.signed({ type: 'typedData', typedData }, digest)).signature;
  }

  async signTransaction(request: EthersTransactionRequest): Promise<string> {
    // As ethers' Wallet: a copy (ethers' sendTransaction hands a Transaction, whose fields are getters), its
    // addresses and ENS names resolved, and `from`, when given, must be this key.
    const copy = copyRequest(request);
    const { to, from } = await resolveProperties({
      to: copy.to ? resolveAddress(copy.to, this.provider) : undefined,
      from: copy.from ? resolveAddress(copy.from, this.provider) : undefined,
    });
    const address = await this.getAddress();
    if (from != null && getAddress(from) !== address) {
      throw new KeystoreAdapterError(
        'INVALID_INPUT',
        `cannot sign this transaction: its from (${from}) is not this key's address (${address})`,
      );
    }
    delete copy.from;
    if (to != null) copy.to = to;
    const tx = Transaction.from(copy as Parameters<typeof Transaction.from>[0]);
    if (tx.type === null) tx.type = tx.inferType();
    const result = await this.signed({ type: 'transaction', transaction: toKeystoreTransaction(tx) }, tx.unsignedHash);
    tx.signature = Signature.from(result.signature);
    return tx.serialized;
  }

  override async authorize(authorization: AuthorizationRequest): Promise<Authorization> {
    const auth = await this.populateAuthorization({
      ...authorization,
      address: await resolveAddress(authorization.address, this.provider),
    });
    const fields = {
      address: getAddress(auth.address as string),
      chainId: getBigInt(auth.chainId ?? 0),
      nonce: getBigInt(auth.nonce ?? 0),
    };
    const result = await this.signed(
      { type: 'authorization', authorization: jsonInts(fields) as unknown as { address: `0x${string}`; chainId: string; nonce: string } },
      hashAuthorization(fields),
    );
    return { ...fields, signature: Signature.from(result.signature) };
  }
}
