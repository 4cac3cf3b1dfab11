/**
 * Sign requests that are dangerous to sign, refused by the schema both the parent (caller API) and the enclave
 * validate with: EIP-7702 authorizations for every chain, and an EIP712Domain type that drops domain fields.
 */
import { hashTypedData } from 'viem';
import { SignRequestSchema } from '../src/signing/schema';
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
