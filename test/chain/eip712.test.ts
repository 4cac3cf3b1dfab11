/**
 * A keystore typed-data signature (EIP-712) checked by a contract: TypedMail (test/chain/contracts, OpenZeppelin
 * EIP712 + ECDSA, compiled by solc) computes the digest of EIP-712's nested Mail example in its own domain and
 * recovers the signer. The keystore's digest is the contract's; a changed message, or the signature shown to
 * another contract (another domain), does not recover to the key.
 */
import type { Address, Hex } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import type { Key } from '../../client/src/sdk';
import { compileTestContracts, startChain, type Artifact, type Chain } from './harness';
import { startKeystore, type ChainKeystore } from './keystore';

let chain: Chain;
let keystore: ChainKeystore;
let TypedMail: Artifact;
let mailbox: Address;
let key: Key;
let mail: { from: { name: string; wallet: Address }; to: { name: string; wallet: Address }; contents: string };
let signed: { signature: Hex; hash: Hex };

const typedDataFor = (verifyingContract: Address, message: typeof mail) => ({
  domain: { name: 'TypedMail', version: '1', chainId: chain.chainId, verifyingContract },
  types: {
    Person: [
      { name: 'name', type: 'string' },
      { name: 'wallet', type: 'address' },
    ],
    Mail: [
      { name: 'from', type: 'Person' },
      { name: 'to', type: 'Person' },
      { name: 'contents', type: 'string' },
    ],
  },
  primaryType: 'Mail',
  message,
});

beforeAll(async () => {
  let artifacts: Record<string, Artifact>;
  [chain, keystore, artifacts] = await Promise.all([startChain(), startKeystore('eip712'), compileTestContracts()]);
  TypedMail = artifacts.TypedMail!;
  mailbox = (await chain.deploy(TypedMail)).address;
  key = (await keystore.client.createKey()).key;
  mail = {
    from: { name: 'Cow', wallet: key.address },
    to: { name: 'Bob', wallet: privateKeyToAccount(generatePrivateKey()).address },
    contents: 'Hello, Bob!',
  };
  signed = await keystore.client.signTypedData(key.keyId, typedDataFor(mailbox, mail));
}, 60_000);

afterAll(async () => {
  await keystore?.stop();
  await chain?.close();
});

const call = <T>(functionName: string, args: readonly unknown[], address = mailbox) =>
  chain.read<T>({ address, abi: TypedMail.abi, functionName, args });

test("the keystore signed the contract's digest, and the contract recovers the key", async () => {
  expect(await call<Hex>('digest', [mail])).toBe(signed.hash);
  expect(await call<Address>('signerOf', [mail, signed.signature])).toBe(key.address);
  expect(await call<boolean>('verify', [mail, signed.signature])).toBe(true);
});

test('a changed message does not recover to the key', async () => {
  const tampered = { ...mail, contents: 'Hello, Bob! Send 1000 ETH.' };
  const signer = await call<Address>('signerOf', [tampered, signed.signature]);
  expect(signer).not.toBe(key.address);
  expect(signer).not.toBe('0x0000000000000000000000000000000000000000');
  expect(await call<boolean>('verify', [tampered, signed.signature])).toBe(false);
});

test('the signature shown to another contract (another EIP-712 domain) does not recover to the key', async () => {
  const other = (await chain.deploy(TypedMail)).address;
  expect(await call<boolean>('verify', [mail, signed.signature], other)).toBe(false);
  // While a signature made for that contract does.
  const forOther = await keystore.client.signTypedData(key.keyId, typedDataFor(other, mail));
  expect(await call<boolean>('verify', [mail, forOther.signature], other)).toBe(true);
});
