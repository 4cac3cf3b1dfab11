/**
 * The viem and ethers adapters (client/src/adapters) on a real EVM, with the whole keystore stack behind them:
 * viem's `walletClient.sendTransaction` and ethers' `signer.sendTransaction` mine transactions whose sender is
 * the key; their message and typed-data signatures verify with each library's own recovery; a user operation
 * of permissionless's SimpleAccount owned by the keystore account passes `EntryPoint.handleOps` (0.6, 0.7 and
 * 0.8); a keystore refusal rejects with the keystore's code; and an answer that is not the key's signature over
 * what was asked (a parent that swapped the key or the request) is refused by the adapter. The sign result's
 * `transactionHash` is keccak-256 of its serialized transaction and the hash the chain mines it under.
 */
import {
  JsonRpcProvider,
  Signature,
  Transaction,
  verifyMessage as ethersVerifyMessage,
  verifyTypedData as ethersVerifyTypedData,
  Wallet,
} from 'ethers';
import { toSimpleSmartAccount } from 'permissionless/accounts';
import {
  BaseError,
  createPublicClient,
  createWalletClient,
  encodeFunctionData,
  http,
  keccak256,
  parseEther,
  recoverAddress,
  recoverTransactionAddress,
  serializeTransaction,
  verifyMessage,
  verifyTypedData,
  type Hex,
  type TransactionSerializable,
  type TransactionSerializedEIP4844,
} from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { KeystoreApiError, KeystoreClient, type Key } from '../../client/src/sdk';
import { KeystoreSigner } from '../../client/src/adapters/ethers';
import { KeystoreAdapterError, toKeystoreAccount, toKeystoreTransaction, type KeystoreAccount } from '../../client/src/adapters/viem';
import { deployEntryPoint, handleOps, userOperation, userOperationEvents, type EntryPointDeployment } from './account-abstraction';
import { compileTestContracts, ENTRY_POINT_VERSIONS, startChain, type Artifact, type Chain } from './harness';
import { startKeystore, type ChainKeystore } from './keystore';
import { serveRpc } from './rpc-server';

let chain: Chain;
let keystore: ChainKeystore;
let rpc: { url: string; close(): Promise<void> };
let Delegate: Artifact;
let key: Key;
let account: KeystoreAccount;

const SOMEONE = privateKeyToAccount(generatePrivateKey()).address;
const fresh = () => privateKeyToAccount(generatePrivateKey()).address;
const walletClient = (a: KeystoreAccount) => createWalletClient({ account: a, chain: chain.chain, transport: http(rpc.url) });
/** The KeystoreApiError somewhere in `err`'s cause chain (viem wraps what an account throws). */
function keystoreError(err: unknown): KeystoreApiError | undefined {
  for (let e: unknown = err; e; e = (e as { cause?: unknown }).cause) if (e instanceof KeystoreApiError) return e;
  return err instanceof BaseError ? (err.walk((e) => e instanceof KeystoreApiError) as KeystoreApiError | undefined) : undefined;
}

beforeAll(async () => {
  let artifacts: Record<string, Artifact>;
  [chain, keystore, artifacts] = await Promise.all([startChain(), startKeystore('adapters'), compileTestContracts()]);
  Delegate = artifacts.Delegate!;
  rpc = await serveRpc(chain);
  key = (await keystore.client.createKey()).key;
  await chain.fund(key.address);
  account = await toKeystoreAccount({ client: keystore.client, keyId: key.keyId });
}, 60_000);

afterAll(async () => {
  await rpc?.close();
  await keystore?.stop();
  await chain?.close();
});

describe('viem', () => {
  test("toKeystoreAccount is a local account with the key's address", () => {
    expect(account).toMatchObject({ type: 'local', source: 'custom', address: key.address, keyId: key.keyId, publicKey: key.publicKey });
  });

  test('walletClient.sendTransaction mines a transfer whose sender is the key', async () => {
    const to = fresh();
    const hash = await walletClient(account).sendTransaction({ to, value: parseEther('0.5') });
    const mined = await chain.publicClient.getTransaction({ hash });
    expect(mined.from).toBe(key.address.toLowerCase());
    expect(await chain.publicClient.getBalance({ address: to })).toBe(parseEther('0.5'));
  });

  test.each(['legacy', 'eip2930'] as const)('a %s transaction from the wallet client is mined from the key', async (type) => {
    const request =
      type === 'legacy' ? ({ type, to: fresh(), value: 1n } as const) : ({ type, to: fresh(), value: 1n, accessList: [] } as const);
    const hash = await walletClient(account).sendTransaction(request);
    expect(await chain.publicClient.getTransaction({ hash })).toMatchObject({ from: key.address.toLowerCase(), type });
  });

  test('signAuthorization: a keystore-signed delegation in a type-4 transaction sent through viem takes effect', async () => {
    const { key: k } = await keystore.client.createKey();
    await chain.fund(k.address);
    const eoa = await toKeystoreAccount({ client: keystore.client, keyId: k.keyId });
    const { address: delegate } = await chain.deploy(Delegate);
    const wallet = walletClient(eoa);
    // 'self': the key sends its own delegation, so the authorization takes the transaction's nonce + 1.
    const authorization = await wallet.signAuthorization({ contractAddress: delegate, executor: 'self' });
    expect(authorization).toMatchObject({ address: delegate, chainId: chain.chainId, nonce: 1 });
    const data = encodeFunctionData({ abi: Delegate.abi, functionName: 'ping' });
    const hash = await wallet.sendTransaction({ to: k.address, data, authorizationList: [authorization] });
    expect(await chain.publicClient.getTransaction({ hash })).toMatchObject({ from: k.address.toLowerCase(), type: 'eip7702' });
    expect(await chain.publicClient.getCode({ address: k.address })).toBe(`0xef0100${delegate.slice(2).toLowerCase()}`);
  });

  test('signMessage (text and raw bytes) and signTypedData verify to the key with viem', async () => {
    for (const message of ['hello keystore', { raw: new Uint8Array([1, 2, 3]) }, { raw: '0xdeadbeef' as Hex }]) {
      const signature = await account.signMessage({ message });
      expect(await verifyMessage({ address: key.address, message, signature })).toBe(true);
    }
    const typedData = {
      domain: { name: 'Adapters', version: '1', chainId: BigInt(chain.chainId), verifyingContract: fresh() },
      types: {
        Order: [
          { name: 'amount', type: 'uint256' },
          { name: 'owner', type: 'address' },
          { name: 'tag', type: 'bytes' },
        ],
      },
      primaryType: 'Order',
      message: { amount: 2n ** 200n, owner: key.address, tag: '0x0102' },
    } as const;
    const signature = await account.signTypedData(typedData);
    expect(await verifyTypedData({ address: key.address, ...typedData, signature })).toBe(true);
  });

  test('sign({hash}) signs the bare digest', async () => {
    const hash = keccak256('0x1234');
    const signature = await account.sign!({ hash });
    expect(await recoverAddress({ hash, signature })).toBe(key.address);
  });

  test("the transaction's transactionHash is keccak-256 of its serialization and the hash it is mined under", async () => {
    const tx = await chain.prepareTransaction(key.address, { to: fresh(), value: 7n });
    const result = await keystore.client.signTransaction(key.keyId, toKeystoreTransaction(tx));
    expect(result.transactionHash).toBe(keccak256(result.serializedTransaction!));
    const receipt = await chain.sendRawTransaction(result.serializedTransaction!);
    expect(receipt.transactionHash).toBe(result.transactionHash);
  });

  test("viem's serializer is honoured when it serializes as the standard types, and refused when it does not", async () => {
    const tx = { ...(await chain.prepareTransaction(key.address, { to: fresh(), value: 1n })) } as TransactionSerializable;
    const marked = [] as string[];
    const standard = (t: TransactionSerializable, sig?: Parameters<typeof serializeTransaction>[1]) => {
      marked.push(sig ? 'signed' : 'unsigned');
      return serializeTransaction(t, sig);
    };
    const signed = await account.signTransaction(tx, { serializer: standard });
    expect(marked).toEqual(['unsigned', 'signed']);
    expect(signed).toBe((await keystore.client.signTransaction(key.keyId, toKeystoreTransaction(tx))).serializedTransaction);
    // A chain's own format (here: extra bytes) is not what the keystore signs: refused before anything is signed.
    const own = (t: TransactionSerializable, sig?: Parameters<typeof serializeTransaction>[1]) =>
      `${serializeTransaction(t, sig)}ff` as Hex;
    await expect(account.signTransaction(tx, { serializer: own })).rejects.toMatchObject({
      name: 'KeystoreAdapterError',
      code: 'INVALID_INPUT',
    });
  });

  test('an eip4844 transaction is signed over its blob versioned hashes and recovers to the key', async () => {
    const blobVersionedHashes = [`0x01${'ab'.repeat(31)}`] as const;
    const tx = {
      type: 'eip4844',
      chainId: chain.chainId,
      nonce: 0,
      to: SOMEONE,
      gas: 21_000n,
      maxFeePerGas: 2n,
      maxPriorityFeePerGas: 1n,
      maxFeePerBlobGas: 1n,
      blobVersionedHashes,
    } as const;
    const serialized = await account.signTransaction(tx);
    expect(await recoverTransactionAddress({ serializedTransaction: serialized as TransactionSerializedEIP4844 })).toBe(key.address);
    expect(serialized).toBe((await keystore.client.signTransaction(key.keyId, toKeystoreTransaction(tx))).serializedTransaction);
  });

  describe.each(ENTRY_POINT_VERSIONS)("as the owner of permissionless's SimpleAccount, EntryPoint %s", (version) => {
    let d: EntryPointDeployment;
    beforeAll(async () => {
      d = await deployEntryPoint(chain, version);
    });

    test('a user operation it signs passes handleOps, deploys the account and makes its call', async () => {
      const publicClient = createPublicClient({ chain: chain.chain, transport: http(rpc.url) });
      const smart = await toSimpleSmartAccount({
        client: publicClient,
        owner: account,
        entryPoint: { address: d.entryPoint, version },
        factoryAddress: d.factory,
      });
      const sender = await smart.getAddress();
      await chain.fund(sender, parseEther('1'));
      const recipient = fresh();
      const callData = await smart.encodeCalls([{ to: recipient, value: parseEther('0.25'), data: '0x' }]);
      const { factory, factoryData } = await smart.getFactoryArgs();
      const op = await userOperation(chain, d, sender, callData, { factory: factory!, factoryData: factoryData! });
      const signed = { ...op, signature: await smart.signUserOperation(op) };

      const receipt = await chain.write(handleOps(d, signed, fresh()));
      expect(userOperationEvents(d, receipt)).toEqual([expect.objectContaining({ sender, success: true })]);
      expect(await chain.read({ address: sender, abi: d.SimpleAccount.abi, functionName: 'owner' })).toBe(key.address);
      expect(await chain.publicClient.getBalance({ address: recipient })).toBe(parseEther('0.25'));
    });
  });

  describe('refusals and bad input', () => {
    test("a disabled key's signature is a rejected promise with the keystore's KEY_DISABLED, directly and through viem", async () => {
      const { key: k } = await keystore.client.createKey();
      await chain.fund(k.address);
      const a = await toKeystoreAccount({ client: keystore.client, keyId: k.keyId });
      await keystore.admin.disableKey(k.keyId);
      await expect(a.signMessage({ message: 'x' })).rejects.toMatchObject({ name: 'KeystoreApiError', code: 'KEY_DISABLED' });
      const err = await walletClient(a)
        .sendTransaction({ to: fresh(), value: 1n })
        .catch((e: unknown) => e);
      expect(keystoreError(err)?.code).toBe('KEY_DISABLED');
      expect(await chain.publicClient.getTransactionCount({ address: k.address })).toBe(0);
    });

    test('a token with keys:sign only: without the address the look-up is FORBIDDEN; given it, the account signs', async () => {
      const signOnly = new KeystoreClient({ url: keystore.stack.url, token: keystore.stack.tokens.sign });
      await expect(toKeystoreAccount({ client: signOnly, keyId: key.keyId })).rejects.toMatchObject({
        name: 'KeystoreApiError',
        code: 'FORBIDDEN',
      });
      const a = await toKeystoreAccount({ client: signOnly, keyId: key.keyId, address: key.address });
      const signature = await a.signMessage({ message: 'sign-only' });
      expect(await verifyMessage({ address: key.address, message: 'sign-only', signature })).toBe(true);
      // A wrong address signs nothing (every answer is checked against it); a malformed one is refused at once.
      const wrong = await toKeystoreAccount({ client: signOnly, keyId: key.keyId, address: SOMEONE });
      await expect(wrong.signMessage({ message: 'x' })).rejects.toMatchObject({ code: 'SIGNATURE_MISMATCH' });
      await expect(toKeystoreAccount({ client: signOnly, keyId: key.keyId, address: '0x1234' })).rejects.toMatchObject({
        name: 'KeystoreAdapterError',
        code: 'INVALID_INPUT',
      });
    });

    test('an unknown key id rejects toKeystoreAccount with KEY_NOT_FOUND', async () => {
      const unknown = key.keyId.replace(/.$/, (c) => (c === '0' ? '1' : '0'));
      await expect(toKeystoreAccount({ client: keystore.client, keyId: unknown })).rejects.toMatchObject({ code: 'KEY_NOT_FOUND' });
    });

    test.each([
      ['no chainId', { type: 'eip1559', nonce: 0, to: SOMEONE, maxFeePerGas: 1n, maxPriorityFeePerGas: 1n }, /chainId is required/],
      ['no nonce', { type: 'eip1559', chainId: 1, to: SOMEONE, maxFeePerGas: 1n, maxPriorityFeePerGas: 1n }, /nonce is required/],
      ['a type the keystore does not sign', { type: 'deposit', chainId: 1, nonce: 0 }, /not deposit/],
      [
        'an eip4844 without versioned hashes',
        { type: 'eip4844', chainId: 1, nonce: 0, to: SOMEONE, maxFeePerBlobGas: 1n },
        /blobVersionedHashes/,
      ],
    ])('%s is refused with INVALID_INPUT', async (_name, tx, message) => {
      const run = () => account.signTransaction(tx as unknown as TransactionSerializable);
      await expect(run()).rejects.toThrow(message);
      await expect(run()).rejects.toMatchObject({ name: 'KeystoreAdapterError', code: 'INVALID_INPUT' });
    });
  });

  describe('a parent that answers something else than what was asked', () => {
    /** An SDK client whose requests a man in the middle rewrites: `rewrite` gets the URL and body and returns new ones. */
    const tampering = (rewrite: (url: string, body: string) => [string, string]) =>
      new KeystoreClient({
        url: keystore.stack.url,
        token: keystore.stack.tokens.full,
        retries: 0,
        fetch: (input, init) => {
          const [url, body] = rewrite(String(input), String(init?.body ?? ''));
          return fetch(url, { ...init, ...(init?.body !== undefined ? { body } : {}) });
        },
      });

    test("another key's signature is refused (SIGNATURE_MISMATCH)", async () => {
      const { key: other } = await keystore.client.createKey();
      const swapped = tampering((url, body) => [url.replace(`/keys/${key.keyId}/sign`, `/keys/${other.keyId}/sign`), body]);
      const a = await toKeystoreAccount({ client: swapped, keyId: key.keyId });
      await expect(a.signMessage({ message: 'pay 1' })).rejects.toMatchObject({ name: 'KeystoreAdapterError', code: 'SIGNATURE_MISMATCH' });
    });

    test('a signature over another message is refused (SIGNATURE_MISMATCH)', async () => {
      const changed = tampering((url, body) => [url, body.replace('pay 1', 'pay 9')]);
      const a = await toKeystoreAccount({ client: changed, keyId: key.keyId });
      await expect(a.signMessage({ message: 'pay 1' })).rejects.toThrow(KeystoreAdapterError);
      await expect(a.signMessage({ message: 'pay 1' })).rejects.toMatchObject({ code: 'SIGNATURE_MISMATCH' });
    });
  });
});

describe('ethers', () => {
  let provider: JsonRpcProvider;
  let signer: KeystoreSigner;
  beforeAll(() => {
    provider = new JsonRpcProvider(rpc.url, chain.chainId, { staticNetwork: true, cacheTimeout: -1, pollingInterval: 50 });
    signer = new KeystoreSigner({ client: keystore.client, keyId: key.keyId }, provider);
  });
  afterAll(() => provider?.destroy());

  test("getAddress is the key's address, also after connect", async () => {
    expect(await signer.getAddress()).toBe(key.address);
    const other = signer.connect(null);
    expect(other.provider).toBeNull();
    expect(await other.getAddress()).toBe(key.address);
  });

  test.each([undefined, 0, 1, 2] as const)('signer.sendTransaction (type %s) mines a transfer whose sender is the key', async (type) => {
    const to = fresh();
    const response = await signer.sendTransaction({ to, value: 12345n, ...(type !== undefined ? { type } : {}) });
    const receipt = await response.wait();
    expect(receipt).toMatchObject({ status: 1, from: key.address, hash: response.hash });
    expect(await provider.getBalance(to)).toBe(12345n);
  });

  test('authorize: a keystore-signed delegation in a type-4 transaction sent through ethers takes effect', async () => {
    const { key: k } = await keystore.client.createKey();
    await chain.fund(k.address);
    const s = new KeystoreSigner({ client: keystore.client, keyId: k.keyId }, provider);
    const { address: delegate } = await chain.deploy(Delegate);
    // The key sends its own delegation: the authorization takes the transaction's nonce + 1.
    const auth = await s.authorize({ address: delegate, nonce: (await s.getNonce()) + 1 });
    expect(auth).toMatchObject({ address: delegate, chainId: BigInt(chain.chainId), nonce: 1n });
    const data = encodeFunctionData({ abi: Delegate.abi, functionName: 'ping' });
    const receipt = await (await s.sendTransaction({ type: 4, to: k.address, data, authorizationList: [auth] })).wait();
    expect(receipt).toMatchObject({ status: 1, from: k.address, type: 4 });
    expect(await provider.getCode(k.address)).toBe(`0xef0100${delegate.slice(2).toLowerCase()}`);
  });

  test('signMessage (text and bytes) and signTypedData recover to the key with ethers', async () => {
    for (const message of ['hello keystore', new Uint8Array([0, 1, 2, 255])]) {
      expect(ethersVerifyMessage(message, await signer.signMessage(message))).toBe(key.address);
    }
    const domain = { name: 'Adapters', version: '1', chainId: chain.chainId, verifyingContract: fresh() };
    const types = {
      Order: [
        { name: 'amount', type: 'uint256' },
        { name: 'owner', type: 'address' },
        { name: 'tag', type: 'bytes' },
      ],
    };
    const value = { amount: 2n ** 200n, owner: key.address, tag: new Uint8Array([1, 2]) };
    const signature = await signer.signTypedData(domain, types, value);
    expect(ethersVerifyTypedData(domain, types, value, signature)).toBe(key.address);
    // The same digest viem computes: ethers and viem agree, so the keystore's check is the library's.
    expect(Signature.from(signature).serialized).toBe(await account.signTypedData({ domain, types, primaryType: 'Order', message: value }));
  });

  test('a signed transaction equals what a local ethers Wallet of the same fields would carry, signature aside', async () => {
    const tx = {
      type: 2,
      chainId: chain.chainId,
      nonce: 0,
      to: fresh(),
      value: 1n,
      gasLimit: 21000n,
      maxFeePerGas: 2n,
      maxPriorityFeePerGas: 1n,
    };
    const serialized = await signer.signTransaction(tx);
    const local = await Wallet.createRandom().signTransaction(tx);
    const strip = (raw: string) => Transaction.from(raw).unsignedSerialized;
    expect(strip(serialized)).toBe(strip(local));
  });

  test("a disabled key's sendTransaction is a rejected promise with the keystore's KEY_DISABLED", async () => {
    const { key: k } = await keystore.client.createKey();
    await chain.fund(k.address);
    const s = new KeystoreSigner({ client: keystore.client, keyId: k.keyId }, provider);
    await keystore.admin.disableKey(k.keyId);
    await expect(s.sendTransaction({ to: fresh(), value: 1n })).rejects.toMatchObject({ name: 'KeystoreApiError', code: 'KEY_DISABLED' });
    await expect(s.signMessage('x')).rejects.toMatchObject({ name: 'KeystoreApiError', code: 'KEY_DISABLED' });
    expect(await provider.getTransactionCount(k.address)).toBe(0);
  });

  test('a transaction from another address, or without a chain id, is refused with INVALID_INPUT', async () => {
    const base = { type: 2, nonce: 0, to: fresh(), gasLimit: 21000n, maxFeePerGas: 2n, maxPriorityFeePerGas: 1n };
    await expect(signer.signTransaction({ ...base, chainId: chain.chainId, from: fresh() })).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringMatching(/is not this key's address/),
    });
    await expect(signer.signTransaction(base)).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringMatching(/chainId is required/),
    });
  });

  test('a token with keys:sign only signs given the address; a malformed address is refused', async () => {
    const signOnly = new KeystoreClient({ url: keystore.stack.url, token: keystore.stack.tokens.sign });
    const s = new KeystoreSigner({ client: signOnly, keyId: key.keyId, address: key.address.toLowerCase() }, provider);
    expect(await s.getAddress()).toBe(key.address);
    expect(ethersVerifyMessage('sign-only', await s.signMessage('sign-only'))).toBe(key.address);
    await expect(new KeystoreSigner({ client: signOnly, keyId: key.keyId }).getAddress()).rejects.toMatchObject({ code: 'FORBIDDEN' });
    expect(() => new KeystoreSigner({ client: signOnly, keyId: key.keyId, address: 'nope' })).toThrow(
      expect.objectContaining({ name: 'KeystoreAdapterError', code: 'INVALID_INPUT' }),
    );
  });

  test("a parent that swaps the key is caught: another key's signature is refused (SIGNATURE_MISMATCH)", async () => {
    const { key: other } = await keystore.client.createKey();
    const swapped = new KeystoreClient({
      url: keystore.stack.url,
      token: keystore.stack.tokens.full,
      retries: 0,
      fetch: (input, init) => fetch(String(input).replace(`/keys/${key.keyId}/sign`, `/keys/${other.keyId}/sign`), init),
    });
    const s = new KeystoreSigner({ client: swapped, keyId: key.keyId }, provider);
    await expect(s.signMessage('pay 1')).rejects.toMatchObject({ name: 'KeystoreAdapterError', code: 'SIGNATURE_MISMATCH' });
  });
});
