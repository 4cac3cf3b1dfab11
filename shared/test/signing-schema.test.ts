/**
 * Sign requests that are dangerous to sign, refused by the schema both the parent (caller API) and the enclave
 * validate with: EIP-7702 authorizations for every chain, and an EIP712Domain type that drops domain fields.
 */
import { hashTypedData } from 'viem';
import { MAX_BLOBS_PER_TRANSACTION, SignRequestSchema } from '../src/signing/schema';
import { describeIssues } from '../src/schema';
import { CANONICAL_DOMAIN_FIELDS } from '../src/signing/typed-data-budget';

const verdict = (input: unknown): string => {
  const res = SignRequestSchema.safeParse(input);
  return res.success ? 'OK' : describeIssues(res.error);
};
const delegate = '0x63c0c19a282a1B52b07dD5a65b58948A07DAE32B';

describe('EIP-7702 authorizations with chain id 0', () => {
  it('are refused unless the request says allowAllChains: true', () => {
    const authorization = { chainId: 0, address: delegate, nonce: 3 };
    expect(verdict({ type: 'authorization', authorization })).toBe(
      'params.authorization.chainId: chain id 0 makes the delegation valid on every chain; refused unless the request also says "allowAllChains": true',
    );
    expect(verdict({ type: 'authorization', authorization, allowAllChains: false })).toMatch(/allowAllChains/);
    expect(verdict({ type: 'authorization', authorization, allowAllChains: 'yes' })).toMatch(/^params\.allowAllChains: /);
    expect(verdict({ type: 'authorization', authorization: { ...authorization, allowAllChains: true } })).toMatch(
      /unknown field\(s\) "allowAllChains"/,
    );
    const allowed = SignRequestSchema.parse({ type: 'authorization', authorization, allowAllChains: true });
    expect(allowed).toEqual({ type: 'authorization', authorization, allowAllChains: true });
  });

  it("leave authorizations for one chain, and a transaction's authorizationList, as they were", () => {
    expect(verdict({ type: 'authorization', authorization: { chainId: 1, address: delegate, nonce: 0 } })).toBe('OK');
    expect(verdict({ type: 'authorization', authorization: { chainId: 1, address: delegate, nonce: 0 }, allowAllChains: true })).toBe('OK');
    const signed = { address: delegate, chainId: 0, nonce: 0, r: `0x${'11'.repeat(32)}`, s: `0x${'22'.repeat(32)}`, yParity: 1 };
    const tx = {
      type: 'eip7702',
      chainId: 1,
      nonce: 0,
      to: delegate,
      gas: '100000',
      maxFeePerGas: '1',
      maxPriorityFeePerGas: '1',
      authorizationList: [signed],
    };
    expect(verdict({ type: 'transaction', transaction: tx })).toBe('OK');
  });
});

describe('a caller-supplied EIP712Domain type', () => {
  const types = { Mail: [{ name: 'contents', type: 'string' }] };
  const message = { contents: 'hello' };
  const fullDomain = {
    name: 'Ether Mail',
    version: '1',
    chainId: 1,
    verifyingContract: '0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC',
    salt: `0x${'ab'.repeat(32)}`,
  } as const;
  const request = (domain: Record<string, unknown>, EIP712Domain?: Array<{ name: string; type: string }>) => ({
    type: 'typedData',
    typedData: { domain, types: EIP712Domain ? { EIP712Domain, ...types } : types, primaryType: 'Mail', message },
  });

  it('would silently drop domain fields from the hash (why it is checked)', () => {
    const domain = { name: 'Ether Mail', chainId: 1, verifyingContract: fullDomain.verifyingContract };
    const dropped = hashTypedData({
      domain,
      types: { EIP712Domain: [{ name: 'name', type: 'string' }], ...types },
      primaryType: 'Mail',
      message,
    });
    expect(dropped).toBe(hashTypedData({ domain: { name: 'Ether Mail' }, types, primaryType: 'Mail', message }));
    expect(dropped).not.toBe(hashTypedData({ domain, types, primaryType: 'Mail', message }));
  });

  it("is refused unless it lists exactly the domain's fields, in canonical order, with canonical types", () => {
    const domain = { name: 'Ether Mail', chainId: 1, verifyingContract: fullDomain.verifyingContract };
    const expected =
      'params.typedData.types.EIP712Domain: must list exactly the fields present in domain, in the canonical order (name, version, chainId, verifyingContract, salt) with their canonical types: EIP712Domain(string name,uint256 chainId,address verifyingContract); or leave EIP712Domain out of types';
    const name = { name: 'name', type: 'string' };
    const chainId = { name: 'chainId', type: 'uint256' };
    const verifyingContract = { name: 'verifyingContract', type: 'address' };
    expect(verdict(request(domain, [name]))).toBe(expected); // chainId and verifyingContract left out of the hash
    expect(verdict(request(domain, [name, chainId]))).toBe(expected);
    expect(verdict(request(domain, [name, verifyingContract, chainId]))).toBe(expected); // order
    expect(verdict(request(domain, [name, { name: 'chainId', type: 'uint64' }, verifyingContract]))).toBe(expected); // type
    expect(verdict(request(domain, [name, chainId, verifyingContract, { name: 'salt', type: 'bytes32' }]))).toBe(expected); // a field not in domain
    expect(verdict(request(domain, []))).toBe(expected);
    expect(verdict(request({}, [name]))).toMatch(/EIP712Domain\(\); or leave/);
    expect(verdict(request(domain, [name, chainId, verifyingContract]))).toBe('OK');
    expect(verdict(request(domain))).toBe('OK'); // derived from the domain, as viem and ethers do
  });

  it('is accepted in its canonical form for every combination of domain fields', () => {
    for (let mask = 0; mask < 32; mask++) {
      const present = CANONICAL_DOMAIN_FIELDS.filter((_, i) => mask & (1 << i));
      const domain = Object.fromEntries(present.map((f) => [f.name, fullDomain[f.name as keyof typeof fullDomain]]));
      expect(
        verdict(
          request(
            domain,
            present.map((f) => ({ ...f })),
          ),
        ),
      ).toBe('OK');
      if (present.length > 1) expect(verdict(request(domain, [...present].reverse()))).not.toBe('OK');
      if (present.length > 0) expect(verdict(request(domain, present.slice(1)))).not.toBe('OK');
    }
  });
});

describe('EIP-4844 transactions', () => {
  const versionedHash = (n: number, version = '01'): string => `0x${version}${n.toString(16).padStart(62, '0')}`;
  const blobTx = (over: Record<string, unknown> = {}) => ({
    type: 'transaction',
    transaction: {
      type: 'eip4844',
      chainId: 1,
      nonce: 0,
      to: delegate,
      gas: '21000',
      maxFeePerGas: '1',
      maxPriorityFeePerGas: '1',
      maxFeePerBlobGas: '1',
      blobVersionedHashes: [versionedHash(1)],
      ...over,
    },
  });

  it('are accepted with 1 to MAX_BLOBS_PER_TRANSACTION versioned hashes', () => {
    expect(verdict(blobTx())).toBe('OK');
    expect(verdict(blobTx({ blobVersionedHashes: Array.from({ length: MAX_BLOBS_PER_TRANSACTION }, (_, i) => versionedHash(i)) }))).toBe(
      'OK',
    );
    expect(verdict(blobTx({ accessList: [{ address: delegate, storageKeys: [] }], value: '5', data: '0x12' }))).toBe('OK');
  });

  it('cannot create a contract: a null or absent `to` is refused', () => {
    const message = 'params.transaction.to: an EIP-4844 transaction cannot create a contract: `to` must name the recipient';
    expect(verdict(blobTx({ to: null }))).toBe(message);
    expect(verdict(blobTx({ to: undefined }))).toBe(message);
    expect(verdict(blobTx({ to: '0x1234' }))).toMatch(/^params\.transaction\.to: expected/);
  });

  it('refuses versioned hashes of another version or size, none, or too many', () => {
    expect(verdict(blobTx({ blobVersionedHashes: [versionedHash(1), versionedHash(2, '02')] }))).toBe(
      'params.transaction.blobVersionedHashes[1]: expected a blob versioned hash: 32 bytes whose first byte is the version 0x01 (VERSIONED_HASH_VERSION_KZG, EIP-4844)',
    );
    expect(verdict(blobTx({ blobVersionedHashes: [versionedHash(1, '00')] }))).toMatch(/version 0x01/);
    expect(verdict(blobTx({ blobVersionedHashes: [`0x01${'00'.repeat(30)}`] }))).toMatch(/expected 32 bytes/);
    expect(verdict(blobTx({ blobVersionedHashes: [] }))).toBe(
      'params.transaction.blobVersionedHashes: a blob transaction carries at least one blob: expected its versioned hashes',
    );
    expect(verdict(blobTx({ blobVersionedHashes: undefined }))).toMatch(/^params\.transaction\.blobVersionedHashes: /);
    const tooMany = Array.from({ length: MAX_BLOBS_PER_TRANSACTION + 1 }, (_, i) => versionedHash(i));
    expect(verdict(blobTx({ blobVersionedHashes: tooMany }))).toBe(
      'params.transaction.blobVersionedHashes: a transaction carries at most 6 blobs (EIP-7594)',
    );
  });

  it('takes no blobs or sidecars (they are not signed), and needs maxFeePerBlobGas', () => {
    expect(verdict(blobTx({ sidecars: [] }))).toBe('params.transaction: unknown field(s) "sidecars"');
    expect(verdict(blobTx({ blobs: ['0x00'] }))).toBe('params.transaction: unknown field(s) "blobs"');
    expect(verdict(blobTx({ maxFeePerBlobGas: undefined }))).toMatch(/^params\.transaction\.maxFeePerBlobGas: /);
  });
});

describe('EntryPoint 0.8 user operations', () => {
  const marker = '0x7702000000000000000000000000000000000000';
  const op08 = (over: Record<string, unknown> = {}) => ({
    type: 'userOperation',
    version: '0.8',
    chainId: 1,
    entryPoint: delegate,
    userOperation: {
      sender: delegate,
      nonce: 0,
      callData: '0x',
      callGasLimit: 1,
      verificationGasLimit: 1,
      preVerificationGas: 1,
      maxFeePerGas: 1,
      maxPriorityFeePerGas: 1,
      ...over,
    },
  });
  const authorization = { address: delegate, chainId: 1, nonce: 0 };

  it('take the 0.7 fields, and an authorization exactly when the factory is the EIP-7702 marker', () => {
    expect(verdict(op08())).toBe('OK');
    expect(verdict(op08({ factory: delegate, factoryData: '0x12', paymaster: delegate, paymasterData: '0x' }))).toBe('OK');
    expect(verdict(op08({ factory: marker, authorization }))).toBe('OK');
    const signed = { ...authorization, r: `0x${'11'.repeat(32)}`, s: `0x${'22'.repeat(32)}`, yParity: 1 };
    expect(verdict(op08({ factory: marker, factoryData: '0xabcd', authorization: signed }))).toBe('OK');
  });

  it('refuse an EIP-7702 marker without its authorization, and an authorization without the marker', () => {
    expect(verdict(op08({ factory: marker }))).toBe(
      `params.userOperation.authorization: an EIP-7702 user operation (factory ${marker}) needs the sender's authorization: its delegate address is part of the userOpHash`,
    );
    expect(verdict(op08({ authorization }))).toBe(
      `params.userOperation.authorization: an authorization applies only to an EIP-7702 user operation, whose factory is ${marker}`,
    );
    expect(verdict(op08({ factory: delegate, authorization }))).toMatch(/applies only to an EIP-7702 user operation/);
    expect(verdict(op08({ factory: marker, authorization: { ...authorization, yParity: 2 } }))).toMatch(
      /^params\.userOperation\.authorization\.yParity: /,
    );
  });

  it('refuse fields of other versions, and other versions', () => {
    expect(verdict(op08({ initCode: '0x' }))).toBe('params.userOperation: unknown field(s) "initCode"');
    expect(verdict(op08({ paymasterSignature: '0x' }))).toBe('params.userOperation: unknown field(s) "paymasterSignature"');
    expect(verdict({ ...op08(), version: '0.9' })).toMatch(/^params\.version: /);
    // 0.7 has no EIP-7702 support: its schema takes no authorization.
    expect(verdict({ ...op08({ factory: marker, authorization }), version: '0.7' })).toBe(
      'params.userOperation: unknown field(s) "authorization"',
    );
  });
});
