/**
 * Every transaction type the keystore signs, mined on a real EVM with the sender the chain recovers from the
 * signature being the key: legacy (EIP-155: the chain id in v), EIP-2930 (with an access list), EIP-1559 and
 * EIP-7702 (a keystore-signed authorization in a keystore-signed type-4 transaction, on Prague: the key's
 * account then runs the delegate's code). EIP-4844: EDR takes no blob transactions (its raw-transaction decoder
 * refuses type 3), so the blob transaction the keystore signs over its blob versioned hashes is checked as a node
 * checks its sender: recovered from the serialized transaction (viem), which must give the key, and another key
 * for the same transaction with one hash changed.
 */
import {
  commitmentToVersionedHash,
  encodeFunctionData,
  keccak256,
  parseEther,
  parseTransaction,
  recoverTransactionAddress,
  serializeTransaction,
  stringToHex,
  type Address,
  type Hex,
  type TransactionSerializableEIP4844,
  type TransactionSerializedEIP4844,
} from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import type { Key } from '../../client/src/sdk';
import { compileTestContracts, startChain, toKeystoreTransaction, type Artifact, type Chain, type PreparedTransaction } from './harness';
import { signedAuthorization, startKeystore, type ChainKeystore } from './keystore';

let chain: Chain;
let keystore: ChainKeystore;
let Delegate: Artifact;

beforeAll(async () => {
  let artifacts: Record<string, Artifact>;
  [chain, keystore, artifacts] = await Promise.all([startChain(), startKeystore('transactions'), compileTestContracts()]);
  Delegate = artifacts.Delegate!;
}, 60_000);

afterAll(async () => {
  await keystore?.stop();
  await chain?.close();
});

/** A fresh keystore key with ether for gas. */
async function fundedKey(): Promise<Key> {
  const { key } = await keystore.client.createKey();
  await chain.fund(key.address);
  return key;
}

/** The keystore signs `tx` for `key`; the chain mines it. Returns the receipt and the transaction as mined. */
async function signAndSend(key: Key, tx: PreparedTransaction) {
  const signed = await keystore.client.signTransaction(key.keyId, toKeystoreTransaction(tx));
  const receipt = await chain.sendRawTransaction(signed.serializedTransaction as Hex);
  const mined = await chain.publicClient.getTransaction({ hash: receipt.transactionHash });
  return { receipt, mined };
}

describe.each(['legacy', 'eip2930', 'eip1559'] as const)('%s', (type) => {
  test("a keystore-signed transfer is mined from the key's address", async () => {
    const key = await fundedKey();
    const to = privateKeyToAccount(generatePrivateKey()).address;
    // The access list names the recipient: the chain charges for it, so it is part of what was signed and mined.
    const accessList = type === 'eip2930' ? [{ address: to, storageKeys: [] }] : undefined;
    const tx = await chain.prepareTransaction(key.address, { to, value: parseEther('1.5'), accessList }, type);
    const { receipt, mined } = await signAndSend(key, tx);

    expect(receipt).toMatchObject({ status: 'success', type, from: key.address.toLowerCase() });
    expect(mined.from).toBe(key.address.toLowerCase());
    expect(await chain.publicClient.getBalance({ address: to })).toBe(parseEther('1.5'));
    if (mined.type === 'legacy') {
      // EIP-155: v = chainId * 2 + 35 + yParity, so the signature holds only on this chain.
      expect([BigInt(chain.chainId * 2 + 35), BigInt(chain.chainId * 2 + 36)]).toContain(mined.v);
    }
    if (mined.type === 'eip2930') expect(mined.accessList).toEqual([{ address: to.toLowerCase(), storageKeys: [] }]);
  });
});

test('eip7702: a keystore-signed authorization in a keystore-signed type-4 transaction delegates the key to the code', async () => {
  const key = await fundedKey();
  const { address: delegate } = await chain.deploy(Delegate);
  const nonce = await chain.publicClient.getTransactionCount({ address: key.address });
  // The key sends its own delegation: the transaction takes `nonce`, so the authorization is checked at nonce + 1.
  const authorization = { chainId: chain.chainId, address: delegate, nonce: nonce + 1 };
  const signed = signedAuthorization(authorization, await keystore.client.signAuthorization(key.keyId, authorization));
  const ping = encodeFunctionData({ abi: Delegate.abi, functionName: 'ping' });
  const tx = await chain.prepareTransaction(key.address, { to: key.address, data: ping, authorizationList: [signed] }, 'eip7702');
  const { receipt, mined } = await signAndSend(key, tx);

  expect(receipt).toMatchObject({ status: 'success', type: 'eip7702', from: key.address.toLowerCase() });
  expect(mined.type === 'eip7702' && mined.authorizationList).toEqual([expect.objectContaining({ address: delegate.toLowerCase() })]);
  // The delegation took effect: the key's account holds the designator and runs the delegate's code as itself.
  expect(await chain.publicClient.getCode({ address: key.address })).toBe(`0xef0100${delegate.slice(2).toLowerCase()}`);
  expect(receipt.logs.map((l) => l.address)).toEqual([key.address.toLowerCase()]);
  expect(await chain.read<Address>({ address: key.address, abi: Delegate.abi, functionName: 'self' })).toBe(key.address);
});

test('eip4844: a keystore-signed blob transaction recovers to the key, and commits to its blob versioned hashes', async () => {
  const key = await fundedKey();
  // Versioned hashes of two (made-up) KZG commitments: 0x01 || sha256(commitment)[1:].
  const blobVersionedHashes = ['one', 'two'].map((b) =>
    commitmentToVersionedHash({ commitment: `${keccak256(stringToHex(b))}${'00'.repeat(16)}` as Hex }),
  );
  const to = privateKeyToAccount(generatePrivateKey()).address;
  const { maxFeePerGas, maxPriorityFeePerGas } = await chain.publicClient.estimateFeesPerGas();
  const fields = {
    chainId: chain.chainId,
    nonce: 0,
    to,
    value: 1n,
    gas: 21_000n,
    maxFeePerGas,
    maxPriorityFeePerGas,
    maxFeePerBlobGas: 10n ** 9n,
  };
  const request = {
    type: 'eip4844',
    ...fields,
    value: '1',
    gas: '21000',
    maxFeePerGas: maxFeePerGas.toString(),
    maxPriorityFeePerGas: maxPriorityFeePerGas.toString(),
    maxFeePerBlobGas: '1000000000',
    blobVersionedHashes,
  } as const;
  const serialized = (await keystore.client.signTransaction(key.keyId, request)).serializedTransaction as TransactionSerializedEIP4844;

  const parsed = parseTransaction(serialized) as TransactionSerializableEIP4844;
  expect(parsed).toMatchObject({ type: 'eip4844', ...fields, to: to.toLowerCase(), blobVersionedHashes });
  expect(await recoverTransactionAddress({ serializedTransaction: serialized })).toBe(key.address);

  // The same signature over the transaction with one blob swapped is some other address's.
  const { r, s, yParity } = parsed as Required<Pick<TransactionSerializableEIP4844, 'r' | 's' | 'yParity'>>;
  const swapped = serializeTransaction(
    { ...parsed, blobVersionedHashes: [blobVersionedHashes[0]!, blobVersionedHashes[0]!] },
    { r, s, yParity },
  );
  expect(await recoverTransactionAddress({ serializedTransaction: swapped })).not.toBe(key.address);
});
