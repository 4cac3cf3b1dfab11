/**
 * Every signing type, with fixed test keys, against ethers v6 and viem: signature, hash and serialized
 * transaction must be identical, and every signature must recover to the key's address.
 */
import {
  AbiCoder,
  Signature,
  SigningKey,
  Transaction,
  TypedDataEncoder,
  Wallet,
  concat,
  getBytes,
  hashMessage as ethersHashMessage,
  keccak256 as ethersKeccak,
  recoverAddress,
  toBeHex,
  zeroPadValue,
  type TypedDataDomain,
} from 'ethers';
import {
  getAddress,
  hashMessage,
  hashTypedData,
  keccak256,
  parseTransaction,
  recoverAddress as viemRecoverAddress,
  recoverMessageAddress,
  recoverTransactionAddress,
  recoverTypedDataAddress,
  serializeTransaction,
  type Hex,
} from 'viem';
import { privateKeyToAccount, sign as viemSign } from 'viem/accounts';
import { getUserOperationHash, getUserOperationTypedData } from 'viem/account-abstraction';
import { hexToBytes } from 'viem';
import { SignRequestSchema, type SignRequestInput, type SignResult } from '@nks/shared/signing/schema';
import { KeystoreError } from '@nks/shared/errors';
import { signRequest } from '../src/signing/sign';
import { addressOf, publicKeyOf } from '../src/crypto/secp256k1';
import * as payloads from '@nks/shared-test/typed-data-payloads';

// Well-known development keys (Hardhat accounts 0 and 1). Test code only.
const KEYS = [
  '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
  '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
] as const;

function sign(key: Hex, input: SignRequestInput): SignResult {
  const secret = hexToBytes(key);
  return signRequest(SignRequestSchema.parse(input), secret, addressOf(publicKeyOf(secret)));
}

describe.each(KEYS)('signing with key %s', (key) => {
  const wallet = new Wallet(key);
  const account = privateKeyToAccount(key);

  it('derives the same address as ethers and viem', () => {
    expect(addressOf(publicKeyOf(hexToBytes(key)))).toBe(wallet.address);
    expect(wallet.address).toBe(account.address);
  });

  it('signs a raw digest (low S, v 27/28)', async () => {
    const digest = keccak256('0x1234');
    const res = sign(key, { type: 'digest', digest });
    const e = new SigningKey(key).sign(digest);
    expect(res.signature).toBe(e.serialized);
    expect(await viemSign({ hash: digest, privateKey: key, to: 'hex' })).toBe(res.signature);
    expect([res.r, res.s, res.v, res.yParity, res.hash]).toEqual([e.r, e.s, e.v, e.yParity, digest]);
    expect(BigInt(res.s) <= 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0n).toBe(true);
    expect(recoverAddress(digest, res.signature)).toBe(wallet.address);
  });

  it.each([
    ['a string', 'hello nitro-keystore ✓'],
    ['an empty string', ''],
    ['raw bytes', { raw: '0xdeadbeef00' }],
  ] as const)('signs an EIP-191 message: %s', async (_name, message) => {
    const res = sign(key, { type: 'message', message });
    const ethersSig = await wallet.signMessage(typeof message === 'string' ? message : getBytes(message.raw));
    expect(res.signature).toBe(ethersSig);
    expect(await account.signMessage({ message })).toBe(res.signature);
    expect(res.hash).toBe(ethersHashMessage(typeof message === 'string' ? message : getBytes(message.raw)));
    expect(await recoverMessageAddress({ message, signature: res.signature })).toBe(account.address);
  });

  it('signs EIP-712 v4 typed data with nested structs and arrays', async () => {
    const domain = {
      name: 'Ether Mail',
      version: '1',
      chainId: 1,
      verifyingContract: '0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC' as const,
      salt: keccak256('0x01'),
    };
    const types = {
      Person: [
        { name: 'name', type: 'string' },
        { name: 'wallets', type: 'address[]' },
      ],
      Mail: [
        { name: 'from', type: 'Person' },
        { name: 'to', type: 'Person[]' },
        { name: 'contents', type: 'string' },
        { name: 'amounts', type: 'uint256[2]' },
        { name: 'attachment', type: 'bytes' },
        { name: 'flags', type: 'bool[]' },
      ],
    };
    const message = {
      from: { name: 'Cow', wallets: ['0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826', '0xDeaDbeefdEAdbeefdEadbEEFdeadbeEFdEaDbeeF'] },
      to: [
        { name: 'Bob', wallets: ['0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB'] },
        { name: 'Alice', wallets: [] },
      ],
      contents: 'Hello, Bob!',
      amounts: ['1', '0x10'],
      attachment: '0xcafe',
      flags: [true, false],
    };
    const withDomainType = {
      EIP712Domain: [
        { name: 'name', type: 'string' },
        { name: 'version', type: 'string' },
        { name: 'chainId', type: 'uint256' },
        { name: 'verifyingContract', type: 'address' },
        { name: 'salt', type: 'bytes32' },
      ],
      ...types,
    };
    const res = sign(key, { type: 'typedData', typedData: { domain, types: withDomainType, primaryType: 'Mail', message } });
    expect(res.signature).toBe(await wallet.signTypedData(domain, types, message));
    expect(res.hash).toBe(TypedDataEncoder.hash(domain, types, message));
    const viemMessage = { ...message, amounts: [1n, 16n] };
    expect(res.hash).toBe(hashTypedData({ domain, types, primaryType: 'Mail', message: viemMessage }));
    expect(await account.signTypedData({ domain, types, primaryType: 'Mail', message: viemMessage })).toBe(res.signature);
    // Without EIP712Domain in `types` the domain type is derived from the domain object, as viem and ethers do.
    expect(sign(key, { type: 'typedData', typedData: { domain, types, primaryType: 'Mail', message } }).signature).toBe(res.signature);
  });

  it.each([
    ['a Seaport order with 30 + 30 items', payloads.seaportOrder(30, 30)],
    ['a Seaport bulk order of 8 orders', payloads.seaportBulkOrder(3)],
    ['a Permit2 PermitBatch', payloads.permit2Batch(10)],
    ['a UniswapX ExclusiveDutchOrder', payloads.uniswapXExclusiveDutchOrder(2)],
    ['a UniswapX V2DutchOrder', payloads.uniswapXV2DutchOrder(2)],
    ['a Safe transaction', payloads.safeTransaction(5)],
  ])('signs %s identically to ethers', async (_name, typedData) => {
    const res = sign(key, { type: 'typedData', typedData });
    const { EIP712Domain: _domainType, ...types } = typedData.types as Record<string, Array<{ name: string; type: string }>>;
    const domain = (typedData.domain ?? {}) as TypedDataDomain;
    expect(res.signature).toBe(await wallet.signTypedData(domain, types, typedData.message));
    expect(res.hash).toBe(TypedDataEncoder.hash(domain, types, typedData.message));
    expect(await recoverTypedDataAddress(Object.assign({}, typedData, { signature: res.signature }) as never)).toBe(account.address);
  });

  const to = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8' as const;
  const txCases = [
    [
      'legacy with EIP-155',
      { type: 'legacy', chainId: 1, nonce: 7, to, value: '1000000000000000000', gas: '21000', gasPrice: '20000000000', data: '0x' },
    ],
    [
      'legacy contract creation',
      { type: 'legacy', chainId: 137, nonce: 0, gas: '0x100000', gasPrice: '0x3b9aca00', data: '0x6080604052348015600f57600080fd5b50' },
    ],
    [
      'EIP-2930',
      {
        type: 'eip2930',
        chainId: 10,
        nonce: '3',
        to,
        value: '0',
        gas: '50000',
        gasPrice: '1000',
        accessList: [{ address: to, storageKeys: [keccak256('0x01')] }],
        data: '0xa9059cbb',
      },
    ],
    [
      'EIP-1559',
      {
        type: 'eip1559',
        chainId: 8453,
        nonce: 12,
        to,
        value: '0x2386f26fc10000',
        gas: '21000',
        maxFeePerGas: '30000000000',
        maxPriorityFeePerGas: '1000000000',
      },
    ],
    [
      'EIP-1559 contract creation (to: null)',
      {
        type: 'eip1559',
        chainId: 1,
        nonce: 1,
        to: null,
        value: '0',
        gas: '900000',
        maxFeePerGas: '30000000000',
        maxPriorityFeePerGas: '1',
        data: '0x6080604052',
      },
    ],
  ] as const;

  it.each(txCases)('signs a %s transaction identically to ethers and viem', async (_name, transaction) => {
    const res = sign(key, { type: 'transaction', transaction: transaction as never });
    const tx = Transaction.from({
      type: { legacy: 0, eip2930: 1, eip1559: 2 }[transaction.type],
      chainId: transaction.chainId,
      nonce: Number(transaction.nonce),
      to: 'to' in transaction ? transaction.to : null,
      value: 'value' in transaction ? BigInt(transaction.value) : 0n,
      gasLimit: BigInt(transaction.gas),
      data: 'data' in transaction ? transaction.data : '0x',
      ...('gasPrice' in transaction ? { gasPrice: BigInt(transaction.gasPrice) } : {}),
      ...('maxFeePerGas' in transaction
        ? { maxFeePerGas: BigInt(transaction.maxFeePerGas), maxPriorityFeePerGas: BigInt(transaction.maxPriorityFeePerGas) }
        : {}),
      ...('accessList' in transaction ? { accessList: transaction.accessList as never } : {}),
    });
    expect(res.serializedTransaction).toBe(await wallet.signTransaction(tx));
    expect(res.hash).toBe(tx.unsignedHash);
    const viemTx = {
      ...transaction,
      nonce: Number(transaction.nonce),
      to: 'to' in transaction && transaction.to ? transaction.to : undefined,
      value: 'value' in transaction ? BigInt(transaction.value) : undefined,
      gas: BigInt(transaction.gas),
      ...('gasPrice' in transaction ? { gasPrice: BigInt(transaction.gasPrice) } : {}),
      ...('maxFeePerGas' in transaction
        ? { maxFeePerGas: BigInt(transaction.maxFeePerGas), maxPriorityFeePerGas: BigInt(transaction.maxPriorityFeePerGas) }
        : {}),
    };
    expect(await account.signTransaction(viemTx as never)).toBe(res.serializedTransaction);
    const parsed = Transaction.from(res.serializedTransaction);
    expect(parsed.from).toBe(wallet.address);
    expect(recoverAddress(res.hash, res.signature)).toBe(wallet.address);
  });

  it('signs an EIP-7702 authorization and a type-4 transaction carrying it', async () => {
    const auth = sign(key, { type: 'authorization', authorization: { chainId: 1, address: to, nonce: 5 } });
    const viemAuth = await account.signAuthorization({ chainId: 1, address: to, nonce: 5 });
    expect([auth.r, auth.s, auth.yParity]).toEqual([viemAuth.r, viemAuth.s, viemAuth.yParity]);
    const ethersAuth = wallet.authorizeSync({ address: to, nonce: 5, chainId: 1 });
    expect(ethersAuth.signature.serialized).toBe(auth.signature);
    expect(await viemRecoverAddress({ hash: auth.hash, signature: auth.signature })).toBe(account.address);

    const transaction = {
      type: 'eip7702' as const,
      chainId: 1,
      nonce: 6,
      to: account.address,
      gas: '100000',
      maxFeePerGas: '30000000000',
      maxPriorityFeePerGas: '1000000000',
      authorizationList: [{ address: to, chainId: 1, nonce: 5, r: auth.r, s: auth.s, yParity: auth.yParity }],
    };
    const res = sign(key, { type: 'transaction', transaction });
    const viemSigned = await account.signTransaction({
      ...transaction,
      gas: 100000n,
      maxFeePerGas: 30000000000n,
      maxPriorityFeePerGas: 1000000000n,
      authorizationList: [viemAuth],
    });
    expect(res.serializedTransaction).toBe(viemSigned);
    const ethersSigned = await wallet.signTransaction({
      type: 4,
      chainId: 1,
      nonce: 6,
      to: account.address,
      gasLimit: 100000n,
      maxFeePerGas: 30000000000n,
      maxPriorityFeePerGas: 1000000000n,
      authorizationList: [ethersAuth],
    });
    expect(res.serializedTransaction).toBe(ethersSigned);
  });

  it('signs an EIP-7702 authorization for every chain (chain id 0) only when the request says so', async () => {
    const authorization = { chainId: 0, address: to, nonce: 9 };
    expect(() => sign(key, { type: 'authorization', authorization })).toThrow(/allowAllChains/);
    const res = sign(key, { type: 'authorization', authorization, allowAllChains: true });
    const viemAuth = await account.signAuthorization(authorization);
    expect([res.r, res.s, res.yParity]).toEqual([viemAuth.r, viemAuth.s, viemAuth.yParity]);
    expect(wallet.authorizeSync({ address: to, nonce: 9, chainId: 0 }).signature.serialized).toBe(res.signature);
  });

  const entryPoint06 = '0x5FF137D4b0FDCD49DcA30c7CF57E578a026d2789' as const;
  const entryPoint07 = '0x0000000071727De22E5E9d8BAf0edAc6f37da032' as const;
  const abi = AbiCoder.defaultAbiCoder();

  it('signs a v0.6 UserOperation over the EIP-191-prefixed userOpHash', async () => {
    const userOperation = {
      sender: '0x1306b01bC3e4AD202612D3843387e94737673F53' as const,
      nonce: '0x5',
      initCode: '0x',
      callData: '0xb61d27f6',
      callGasLimit: '100000',
      verificationGasLimit: '200000',
      preVerificationGas: '50000',
      maxFeePerGas: '2000000000',
      maxPriorityFeePerGas: '1000000000',
      paymasterAndData: '0x',
      signature: '0xdeadbeef',
    };
    const res = sign(key, { type: 'userOperation', version: '0.6', chainId: 11155111, entryPoint: entryPoint06, userOperation });
    // Independent userOpHash with ethers' ABI coder.
    const packed = abi.encode(
      ['address', 'uint256', 'bytes32', 'bytes32', 'uint256', 'uint256', 'uint256', 'uint256', 'uint256', 'bytes32'],
      [
        userOperation.sender,
        userOperation.nonce,
        ethersKeccak('0x'),
        ethersKeccak(userOperation.callData),
        userOperation.callGasLimit,
        userOperation.verificationGasLimit,
        userOperation.preVerificationGas,
        userOperation.maxFeePerGas,
        userOperation.maxPriorityFeePerGas,
        ethersKeccak('0x'),
      ],
    );
    const userOpHash = ethersKeccak(abi.encode(['bytes32', 'address', 'uint256'], [ethersKeccak(packed), entryPoint06, 11155111]));
    expect(res.userOperationHash).toBe(userOpHash);
    expect(res.signature).toBe(await wallet.signMessage(getBytes(userOpHash)));
    expect(res.signature).toBe(await account.signMessage({ message: { raw: userOpHash as Hex } }));
    // The signature field of the input is ignored.
    expect(
      sign(key, {
        type: 'userOperation',
        version: '0.6',
        chainId: 11155111,
        entryPoint: entryPoint06,
        userOperation: { ...userOperation, signature: '0x' },
      }).signature,
    ).toBe(res.signature);
  });

  it('signs a v0.7 UserOperation (factory and paymaster fields packed as the EntryPoint does)', async () => {
    const userOperation = {
      sender: '0x1306b01bC3e4AD202612D3843387e94737673F53' as const,
      nonce: '0x0',
      factory: '0x9406Cc6185a346906296840746125a0E44976454' as const,
      factoryData: '0x5fbfb9cf' as Hex,
      callData: '0xb61d27f6' as Hex,
      callGasLimit: '100000',
      verificationGasLimit: '300000',
      preVerificationGas: '50000',
      maxFeePerGas: '2000000000',
      maxPriorityFeePerGas: '1000000000',
      paymaster: '0x00000000000000fB866DaAA79352cC568a005D96' as const,
      paymasterVerificationGasLimit: '60000',
      paymasterPostOpGasLimit: '10000',
      paymasterData: '0x1234' as Hex,
    };
    const res = sign(key, { type: 'userOperation', version: '0.7', chainId: 8453, entryPoint: entryPoint07, userOperation });
    const u128 = (v: string) => zeroPadValue(toBeHex(BigInt(v)), 16);
    const initCode = concat([userOperation.factory, userOperation.factoryData]);
    const accountGasLimits = concat([u128(userOperation.verificationGasLimit), u128(userOperation.callGasLimit)]);
    const gasFees = concat([u128(userOperation.maxPriorityFeePerGas), u128(userOperation.maxFeePerGas)]);
    const paymasterAndData = concat([
      userOperation.paymaster,
      u128(userOperation.paymasterVerificationGasLimit),
      u128(userOperation.paymasterPostOpGasLimit),
      userOperation.paymasterData,
    ]);
    const packed = abi.encode(
      ['address', 'uint256', 'bytes32', 'bytes32', 'bytes32', 'uint256', 'bytes32', 'bytes32'],
      [
        userOperation.sender,
        userOperation.nonce,
        ethersKeccak(initCode),
        ethersKeccak(userOperation.callData),
        accountGasLimits,
        userOperation.preVerificationGas,
        gasFees,
        ethersKeccak(paymasterAndData),
      ],
    );
    const userOpHash = ethersKeccak(abi.encode(['bytes32', 'address', 'uint256'], [ethersKeccak(packed), entryPoint07, 8453]));
    expect(res.userOperationHash).toBe(userOpHash);
    expect(
      getUserOperationHash({
        chainId: 8453,
        entryPointAddress: entryPoint07,
        entryPointVersion: '0.7',
        userOperation: {
          ...userOperation,
          nonce: 0n,
          callGasLimit: 100000n,
          verificationGasLimit: 300000n,
          preVerificationGas: 50000n,
          maxFeePerGas: 2000000000n,
          maxPriorityFeePerGas: 1000000000n,
          paymasterVerificationGasLimit: 60000n,
          paymasterPostOpGasLimit: 10000n,
          signature: '0x',
        },
      }),
    ).toBe(userOpHash);
    expect(res.signature).toBe(await wallet.signMessage(getBytes(userOpHash)));
    expect(Signature.from(res.signature).v).toBe(res.v);
    expect(await recoverMessageAddress({ message: { raw: userOpHash as Hex }, signature: res.signature })).toBe(getAddress(wallet.address));
  });
});

describe.each(KEYS)('EIP-4844 and EntryPoint 0.8 with key %s', (key) => {
  const wallet = new Wallet(key);
  const account = privateKeyToAccount(key);
  const to = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8' as const;
  const versionedHash = (n: number): Hex => `0x01${n.toString(16).padStart(62, '0')}`;

  it('signs an EIP-4844 transaction over its blob versioned hashes, without sidecars, as ethers and viem do', async () => {
    const transaction = {
      type: 'eip4844' as const,
      chainId: 1,
      nonce: 4,
      to,
      value: '1',
      gas: '21000',
      data: '0x1234' as Hex,
      maxFeePerGas: '30000000000',
      maxPriorityFeePerGas: '1000000000',
      maxFeePerBlobGas: '7',
      accessList: [{ address: to, storageKeys: [keccak256('0x01')] }],
      blobVersionedHashes: [versionedHash(1), versionedHash(2)],
    };
    const res = sign(key, { type: 'transaction', transaction });
    const viemTx = {
      ...transaction,
      value: 1n,
      gas: 21000n,
      maxFeePerGas: 30000000000n,
      maxPriorityFeePerGas: 1000000000n,
      maxFeePerBlobGas: 7n,
    };
    expect(res.hash).toBe(keccak256(serializeTransaction(viemTx)));
    expect(await account.signTransaction(viemTx)).toBe(res.serializedTransaction);
    // ethers, independently: a type-3 transaction without blobs serializes to its canonical (block) form.
    const ethersTx = Transaction.from({
      type: 3,
      chainId: 1,
      nonce: 4,
      to,
      value: 1n,
      gasLimit: 21000n,
      data: transaction.data,
      maxFeePerGas: viemTx.maxFeePerGas,
      maxPriorityFeePerGas: viemTx.maxPriorityFeePerGas,
      maxFeePerBlobGas: 7n,
      accessList: transaction.accessList,
      blobVersionedHashes: transaction.blobVersionedHashes,
    });
    expect(res.hash).toBe(ethersTx.unsignedHash);
    expect(res.serializedTransaction).toBe(await wallet.signTransaction(ethersTx));
    // What a node recovers the sender from: the signed serialization, its versioned hashes covered.
    const serialized = res.serializedTransaction as Hex;
    expect(serialized.startsWith('0x03')).toBe(true);
    expect(parseTransaction(serialized)).toMatchObject({
      type: 'eip4844',
      to: to.toLowerCase(),
      blobVersionedHashes: transaction.blobVersionedHashes,
    });
    expect(await recoverTransactionAddress({ serializedTransaction: serialized as never })).toBe(account.address);
    expect(Transaction.from(serialized).from).toBe(wallet.address);
    const otherHashes = sign(key, { type: 'transaction', transaction: { ...transaction, blobVersionedHashes: [versionedHash(1)] } });
    expect(otherHashes.hash).not.toBe(res.hash);
  });

  const entryPoint08 = '0x4337084D9E255Ff0702461CF8895CE9E3b5Ff108' as const;
  const sender = '0x1306b01bC3e4AD202612D3843387e94737673F53' as const;
  const userOperation = {
    sender,
    nonce: '0x1',
    factory: '0x9406Cc6185a346906296840746125a0E44976454' as const,
    factoryData: '0x5fbfb9cf' as Hex,
    callData: '0xb61d27f6' as Hex,
    callGasLimit: '100000',
    verificationGasLimit: '300000',
    preVerificationGas: '50000',
    maxFeePerGas: '2000000000',
    maxPriorityFeePerGas: '1000000000',
    paymaster: '0x00000000000000fB866DaAA79352cC568a005D96' as const,
    paymasterVerificationGasLimit: '60000',
    paymasterPostOpGasLimit: '10000',
    paymasterData: '0x1234' as Hex,
    signature: '0xdeadbeef' as Hex,
  };
  const viemOp = {
    ...userOperation,
    nonce: 1n,
    callGasLimit: 100000n,
    verificationGasLimit: 300000n,
    preVerificationGas: 50000n,
    maxFeePerGas: 2000000000n,
    maxPriorityFeePerGas: 1000000000n,
    paymasterVerificationGasLimit: 60000n,
    paymasterPostOpGasLimit: 10000n,
    signature: '0x' as Hex,
  };
  /** EntryPoint 0.8's getUserOpHash, independently with ethers: EIP-712 over the packed fields (UserOperationLib). */
  const entryPointHash = (chainId: number, initCode: string) => {
    const u128 = (v: string) => zeroPadValue(toBeHex(BigInt(v)), 16);
    return TypedDataEncoder.hash(
      { name: 'ERC4337', version: '1', chainId, verifyingContract: entryPoint08 },
      {
        PackedUserOperation: [
          { name: 'sender', type: 'address' },
          { name: 'nonce', type: 'uint256' },
          { name: 'initCode', type: 'bytes' },
          { name: 'callData', type: 'bytes' },
          { name: 'accountGasLimits', type: 'bytes32' },
          { name: 'preVerificationGas', type: 'uint256' },
          { name: 'gasFees', type: 'bytes32' },
          { name: 'paymasterAndData', type: 'bytes' },
        ],
      },
      {
        sender,
        nonce: userOperation.nonce,
        initCode,
        callData: userOperation.callData,
        accountGasLimits: concat([u128(userOperation.verificationGasLimit), u128(userOperation.callGasLimit)]),
        preVerificationGas: userOperation.preVerificationGas,
        gasFees: concat([u128(userOperation.maxPriorityFeePerGas), u128(userOperation.maxFeePerGas)]),
        paymasterAndData: concat([
          userOperation.paymaster,
          u128(userOperation.paymasterVerificationGasLimit),
          u128(userOperation.paymasterPostOpGasLimit),
          userOperation.paymasterData,
        ]),
      },
    );
  };

  it('signs a v0.8 UserOperation over its EIP-712 userOpHash as is, as SimpleAccount 0.8 recovers it (not EIP-191)', async () => {
    const res = sign(key, { type: 'userOperation', version: '0.8', chainId: 8453, entryPoint: entryPoint08, userOperation });
    const userOpHash = getUserOperationHash({
      chainId: 8453,
      entryPointAddress: entryPoint08,
      entryPointVersion: '0.8',
      userOperation: viemOp,
    });
    expect(res.userOperationHash).toBe(userOpHash);
    expect(res.hash).toBe(userOpHash);
    expect(userOpHash).toBe(entryPointHash(8453, concat([userOperation.factory, userOperation.factoryData])));
    // SimpleAccount 0.8: owner == ECDSA.recover(userOpHash, signature).
    expect(recoverAddress(userOpHash, res.signature)).toBe(wallet.address);
    expect(recoverAddress(hashMessage({ raw: userOpHash }), res.signature)).not.toBe(wallet.address);
    // What viem's 0.8 accounts sign: the user operation's typed data.
    const typedData = getUserOperationTypedData({ chainId: 8453, entryPointAddress: entryPoint08, userOperation: viemOp });
    expect(await account.signTypedData(typedData)).toBe(res.signature);
    // The same operation for the 0.7 EntryPoint is another hash, signed EIP-191.
    const v07 = sign(key, { type: 'userOperation', version: '0.7', chainId: 8453, entryPoint: entryPoint08, userOperation });
    expect(v07.userOperationHash).not.toBe(userOpHash);
    expect(v07.hash).toBe(hashMessage({ raw: v07.userOperationHash as Hex }));
  });

  it("signs an EIP-7702 v0.8 UserOperation over its delegate, as the EntryPoint hashes it from the sender's code", async () => {
    const delegate = '0xe6Cae83BdE06E4c305530e199D7217f42808555B' as const;
    const authorization = { address: delegate, chainId: 8453, nonce: 3 };
    const { factory: _f, factoryData: _d, ...rest } = userOperation;
    const op = { ...rest, factory: '0x7702000000000000000000000000000000000000', factoryData: '0xabcd', authorization };
    const res = sign(key, { type: 'userOperation', version: '0.8', chainId: 8453, entryPoint: entryPoint08, userOperation: op });
    // EntryPoint 0.8 (Eip7702Support): initCode's hash is keccak(delegate ‖ initCode[20:]).
    expect(res.userOperationHash).toBe(entryPointHash(8453, concat([delegate, '0xabcd'])));
    expect(res.hash).toBe(res.userOperationHash);
    expect(recoverAddress(res.hash, res.signature)).toBe(wallet.address);
    // The authorization's own signature is not hashed: with it, the same signature.
    const signedAuth = await account.signAuthorization(authorization);
    const withSignature = { ...authorization, r: signedAuth.r, s: signedAuth.s, yParity: signedAuth.yParity as 0 | 1 };
    const again = sign(key, {
      type: 'userOperation',
      version: '0.8',
      chainId: 8453,
      entryPoint: entryPoint08,
      userOperation: { ...op, authorization: withSignature },
    });
    expect(again.signature).toBe(res.signature);
    expect(
      getUserOperationHash({
        chainId: 8453,
        entryPointAddress: entryPoint08,
        entryPointVersion: '0.8',
        userOperation: { ...viemOp, factory: '0x7702', factoryData: '0xabcd', authorization: signedAuth },
      }),
    ).toBe(res.userOperationHash);
  });
});

describe('sign request validation', () => {
  const key = KEYS[0];
  const bad = (input: unknown): KeystoreError | string => {
    const parsed = SignRequestSchema.safeParse(input);
    if (!parsed.success) return parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    try {
      signRequest(parsed.data, hexToBytes(key), addressOf(publicKeyOf(hexToBytes(key))));
    } catch (e) {
      return e as KeystoreError;
    }
    return 'OK';
  };

  it.each([
    ['an unknown type', { type: 'psbt', digest: '0x' }],
    ['a short digest', { type: 'digest', digest: '0x1234' }],
    ['an unknown field', { type: 'digest', digest: `0x${'00'.repeat(32)}`, extra: 1 }],
    [
      'a transaction without chain id',
      { type: 'transaction', transaction: { type: 'eip1559', nonce: 0, maxFeePerGas: '1', maxPriorityFeePerGas: '1' } },
    ],
    ...(
      [
        ['an EIP-4844 transaction creating a contract', { to: null }],
        ['an EIP-4844 transaction with a versioned hash of version 0x00', { blobVersionedHashes: [`0x00${'ab'.repeat(31)}`] }],
        ['an EIP-4844 transaction with 7 blobs', { blobVersionedHashes: Array(7).fill(`0x01${'ab'.repeat(31)}`) }],
        ['an EIP-4844 transaction with its sidecars', { sidecars: [] }],
      ] as const
    ).map(([name, over]): [string, unknown] => [
      name,
      {
        type: 'transaction',
        transaction: {
          type: 'eip4844',
          chainId: 1,
          nonce: 0,
          to: `0x${'11'.repeat(20)}`,
          maxFeePerGas: '1',
          maxPriorityFeePerGas: '1',
          maxFeePerBlobGas: '1',
          blobVersionedHashes: [`0x01${'ab'.repeat(31)}`],
          ...over,
        },
      },
    ]),
    [
      'an EIP-7702 v0.8 user operation without its authorization',
      {
        type: 'userOperation',
        version: '0.8',
        chainId: 1,
        entryPoint: `0x${'11'.repeat(20)}`,
        userOperation: {
          sender: `0x${'22'.repeat(20)}`,
          nonce: 0,
          factory: '0x7702000000000000000000000000000000000000',
          callData: '0x',
          callGasLimit: 1,
          verificationGasLimit: 1,
          preVerificationGas: 1,
          maxFeePerGas: 1,
          maxPriorityFeePerGas: 1,
        },
      },
    ],
    ['a negative value', { type: 'transaction', transaction: { type: 'legacy', chainId: 1, nonce: 0, gasPrice: '1', value: '-1' } }],
    [
      'a value above uint256',
      { type: 'transaction', transaction: { type: 'legacy', chainId: 1, nonce: 0, gasPrice: '1', value: `0x1${'0'.repeat(64)}` } },
    ],
    ['a float nonce', { type: 'transaction', transaction: { type: 'legacy', chainId: 1, nonce: 1.5, gasPrice: '1' } }],
    ['a bad address', { type: 'authorization', authorization: { chainId: 1, address: '0x1234', nonce: 0 } }],
    ['odd-length hex', { type: 'message', message: { raw: '0xabc' } }],
    [
      'a user operation of an unknown version',
      { type: 'userOperation', version: '0.9', chainId: 1, entryPoint: `0x${'11'.repeat(20)}`, userOperation: {} },
    ],
    [
      'an authorization for every chain without allowAllChains',
      { type: 'authorization', authorization: { chainId: 0, address: `0x${'11'.repeat(20)}`, nonce: 0 } },
    ],
    [
      'an EIP712Domain type that leaves out domain fields',
      {
        type: 'typedData',
        typedData: {
          domain: { name: 'x', chainId: 1 },
          types: { EIP712Domain: [{ name: 'name', type: 'string' }], M: [] },
          primaryType: 'M',
          message: {},
        },
      },
    ],
    ['typed data over its complexity budget', { type: 'typedData', typedData: payloads.chainedTypes(250, 1000) }],
  ])('rejects %s at the schema', (_name, input) => {
    const res = bad(input);
    expect(typeof res).toBe('string');
    expect(res).not.toBe('OK');
  });

  it('rejects typed data that does not match its types with a clear INVALID_PARAMS', () => {
    // The schema checks the message against its types (shared/test/validation-details.test.ts)...
    expect(
      bad({
        type: 'typedData',
        typedData: { types: { M: [{ name: 'a', type: 'address' }] }, primaryType: 'M', message: { a: 'not-an-address' } },
      }),
    ).toBe('typedData.message.a: expected address: 20 bytes as 0x-prefixed hex');
    expect(
      bad({
        type: 'typedData',
        typedData: { types: { M: [{ name: 'a', type: 'Missing' }] }, primaryType: 'M', message: { a: {} } },
      }),
    ).toMatch(/^typedData\.types\.M\.0\.type: type "Missing" is neither a struct/);
    // ...and viem, when hashing, what the schema leaves to it: an address's checksum.
    const res = bad({
      type: 'typedData',
      typedData: {
        types: { M: [{ name: 'a', type: 'address' }] },
        primaryType: 'M',
        message: { a: '0x8ba1f109551bd432803012645Ac136ddd64DBA72' },
      },
    });
    expect(res).toBeInstanceOf(KeystoreError);
    expect((res as KeystoreError).code).toBe('INVALID_PARAMS');
    expect((res as KeystoreError).message).toMatch(/^typedData: Address ".*" is invalid/);
  });
});
