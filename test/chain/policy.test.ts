/**
 * A signing policy proven on a real EVM (docs/POLICIES.md): a project whose policy allows ERC-20 transfers of one
 * token, to one recipient, up to an amount, on this chain. A keystore key (real enclave bundle, NSM simulator,
 * KMS emulator, parent) signs an allowed transfer and the chain mines it from the key's address; a transfer the
 * policy denies (another recipient, too much, another chain) is refused by the enclave with POLICY_DENIED and
 * never signed: the chain sees nothing of it (the key's nonce and the balances stay).
 */
import { encodeFunctionData, type Address, type Hex } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { KeystoreApiError, KeystoreClient, type Key } from '../../client/src/sdk';
import { tempRunDir } from '@nks/shared-test/helpers';
import { startStack, waitReady, type Stack } from '../support/stack';
import { compileTestContracts, startChain, toKeystoreTransaction, type Artifact, type Chain } from './harness';

let chain: Chain;
let TestToken: Artifact;
let token: Address;
let s: Stack;
let signer: KeystoreClient;
let key: Key;
const friend = privateKeyToAccount(generatePrivateKey()).address;
const stranger = privateKeyToAccount(generatePrivateKey()).address;
const MAX = 1_000_000n;

beforeAll(async () => {
  TestToken = (await compileTestContracts()).TestToken!;
  chain = await startChain();
  token = (await chain.deploy(TestToken, ['Test USD', 'TUSD'])).address;

  s = await startStack(tempRunDir('nks-chain-policy-'));
  await waitReady(s);
  const admin = new KeystoreClient({ url: s.url, token: s.tokens.admin });
  signer = new KeystoreClient({ url: s.url, token: s.tokens.full });
  const project = await admin.createProject({
    name: 'payouts',
    auth: { type: 'token' },
    allowedRequestTypes: ['transaction'],
    policies: {
      rules: [
        {
          name: 'tusd to friend',
          effect: 'allow',
          when: {
            type: ['transaction'],
            chainId: [chain.chainId],
            to: [token],
            erc20: { function: ['transfer'], recipient: [friend], maxAmount: MAX.toString() },
          },
        },
      ],
    },
  });
  key = (await signer.createKey({ projectId: project.projectId })).key;
  await chain.fund(key.address);
  const minted = await chain.write({ address: token, abi: TestToken.abi, functionName: 'mint', args: [key.address, 10n * MAX] });
  expect(minted.status).toBe('success');
}, 120_000);

afterAll(async () => {
  await s?.stop();
  await chain?.close();
});

const balanceOf = (holder: string) => chain.read<bigint>({ address: token, abi: TestToken.abi, functionName: 'balanceOf', args: [holder] });
const transfer = (to: Address, amount: bigint) =>
  chain.prepareTransaction(
    key.address,
    { to: token, data: encodeFunctionData({ abi: TestToken.abi, functionName: 'transfer', args: [to, amount] }) },
    'eip1559',
  );

test('an allowed transfer is signed by the keystore and mined from the key', async () => {
  const signed = await signer.signTransaction(key.keyId, toKeystoreTransaction(await transfer(friend, MAX)));
  const receipt = await chain.sendRawTransaction(signed.serializedTransaction as Hex);
  expect(receipt).toMatchObject({ status: 'success', from: key.address.toLowerCase(), to: token.toLowerCase() });
  expect(await balanceOf(friend)).toBe(MAX);
  expect(await balanceOf(key.address)).toBe(9n * MAX);
}, 30_000);

test.each([
  ['another recipient', () => transfer(stranger, 1n), /recipient 0x[0-9a-f]{40} is not in the list/],
  ['more than the maximum', () => transfer(friend, MAX + 1n), /amount 1000001 is above the maximum 1000000/],
  ['another chain', async () => ({ ...(await transfer(friend, 1n)), chainId: 1 }), /chainId 1 is not in the list/],
])(
  'a transfer to %s is refused by the enclave and never reaches the chain',
  async (_what, prepare, reason) => {
    const nonce = await chain.publicClient.getTransactionCount({ address: key.address });
    const before = [await balanceOf(key.address), await balanceOf(friend), await balanceOf(stranger)];
    const err = await signer.signTransaction(key.keyId, toKeystoreTransaction(await prepare())).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(KeystoreApiError);
    expect((err as KeystoreApiError).code).toBe('POLICY_DENIED');
    expect((err as KeystoreApiError).status).toBe(403);
    expect((err as KeystoreApiError).details?.rule).toBeNull();
    expect((err as KeystoreApiError).message).toMatch(reason);
    expect(await chain.publicClient.getTransactionCount({ address: key.address })).toBe(nonce);
    expect([await balanceOf(key.address), await balanceOf(friend), await balanceOf(stranger)]).toEqual(before);
  },
  30_000,
);
