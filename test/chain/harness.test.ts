/**
 * The chain harness against itself: an OpenZeppelin ERC-20 compiled by solc and deployed on EDR; transfers
 * prepared by the harness, put in the keystore's request form and parsed by its schema (as the enclave does),
 * then signed by a plain viem local account (standing where the keystore's key will) and mined in each
 * transaction type the chain supports; and transactions whose signature is wrong refused by the chain itself.
 */
import fs from 'node:fs';
import {
  encodeFunctionData,
  parseTransaction,
  serializeTransaction,
  type Address,
  type Hex,
  type TransactionSerializableEIP1559,
} from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { TransactionSchema } from '@nks/shared/signing/schema';
import {
  CACHE_DIR,
  compile,
  compileTestContracts,
  openZeppelinArtifact,
  startChain,
  toKeystoreTransaction,
  type Artifact,
  type Chain,
  type PreparedTransaction,
} from './harness';

const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

let chain: Chain;
let TestToken: Artifact;
let Delegate: Artifact;
let token: Address;

beforeAll(async () => {
  const artifacts = await compileTestContracts();
  TestToken = artifacts.TestToken!;
  Delegate = artifacts.Delegate!;
  chain = await startChain();
  token = (await chain.deploy(TestToken, ['Test USD', 'TUSD'])).address;
});
afterAll(() => chain.close());

const balanceOf = (holder: Address) =>
  chain.read<bigint>({ address: token, abi: TestToken.abi, functionName: 'balanceOf', args: [holder] });
const transferData = (to: Address, amount: bigint) =>
  encodeFunctionData({ abi: TestToken.abi, functionName: 'transfer', args: [to, amount] });

/** The transaction as the keystore gets it (the SDK's request) and parses it (the enclave's schema), to be signed. */
const asTheKeystoreParsesIt = (tx: PreparedTransaction) => TransactionSchema.parse(toKeystoreTransaction(tx));

/** A fresh user with ether for gas and `tokens` minted to it. */
async function newHolder(tokens: bigint) {
  const account = privateKeyToAccount(generatePrivateKey());
  await chain.fund(account.address);
  const minted = await chain.write({ address: token, abi: TestToken.abi, functionName: 'mint', args: [account.address, tokens] });
  expect(minted.status).toBe('success');
  return account;
}

test('the token is an OpenZeppelin ERC-20 compiled from npm sources, on a chain with the requested id', async () => {
  expect(await chain.publicClient.getChainId()).toBe(31337);
  expect(await chain.read({ address: token, abi: TestToken.abi, functionName: 'symbol' })).toBe('TUSD');
  expect(await chain.read({ address: token, abi: TestToken.abi, functionName: 'decimals' })).toBe(6);
  for (const a of chain.accounts) expect(await chain.publicClient.getBalance({ address: a.address })).toBeGreaterThan(0n);
});

describe.each(['legacy', 'eip1559'] as const)('%s: a transfer in the keystore request form, signed by a viem local account', (type) => {
  test('is mined and moves the tokens', async () => {
    const user = await newHolder(5_000_000n);
    const to = privateKeyToAccount(generatePrivateKey()).address;
    const tx = await chain.prepareTransaction(user.address, { to: token, data: transferData(to, 1_250_000n) }, type);
    const receipt = await chain.sendRawTransaction(await user.signTransaction(asTheKeystoreParsesIt(tx)));
    expect(receipt).toMatchObject({ status: 'success', from: user.address.toLowerCase(), to: token.toLowerCase(), type });
    expect(await balanceOf(user.address)).toBe(3_750_000n);
    expect(await balanceOf(to)).toBe(1_250_000n);
  });
});

test('an eip7702 transaction with a signed authorization is mined: the account then runs the delegate code', async () => {
  const { address: delegate } = await chain.deploy(Delegate);
  const user = await newHolder(0n);
  const nonce = await chain.publicClient.getTransactionCount({ address: user.address });
  // The account sends its own delegation, so the authorization's nonce is the one after the transaction's.
  const authorization = await user.signAuthorization({ chainId: chain.chainId, address: delegate, nonce: nonce + 1 });
  const ping = encodeFunctionData({ abi: Delegate.abi, functionName: 'ping' });
  const tx = await chain.prepareTransaction(user.address, { to: user.address, data: ping, authorizationList: [authorization] }, 'eip7702');
  const receipt = await chain.sendRawTransaction(await user.signTransaction(asTheKeystoreParsesIt(tx)));

  expect(receipt).toMatchObject({ status: 'success', type: 'eip7702' });
  expect(receipt.logs).toHaveLength(1);
  expect(receipt.logs[0]?.address).toBe(user.address.toLowerCase());
  expect(await chain.publicClient.getCode({ address: user.address })).toBe(`0xef0100${delegate.slice(2).toLowerCase()}`);
  expect(await chain.read({ address: user.address, abi: Delegate.abi, functionName: 'self' })).toBe(user.address);
});

describe('a transaction with a bad signature is refused by the chain, and nothing is mined', () => {
  let user: ReturnType<typeof privateKeyToAccount>;
  let signed: Hex;
  let fields: TransactionSerializableEIP1559;
  const to = privateKeyToAccount(generatePrivateKey()).address;

  beforeAll(async () => {
    user = await newHolder(1_000_000n);
    const tx = await chain.prepareTransaction(user.address, { to: token, data: transferData(to, 400_000n) });
    signed = await user.signTransaction(asTheKeystoreParsesIt(tx));
    fields = parseTransaction(signed) as TransactionSerializableEIP1559;
  });

  const cases: Array<[string, () => Hex, RegExp]> = [
    // EIP-2: a high s is the same signature's malleable twin, and not accepted.
    [
      'its s is high (EIP-2)',
      () => serializeTransaction(fields, { r: fields.r!, s: toHex32(SECP256K1_N - BigInt(fields.s!)), yParity: 1 - fields.yParity! }),
      /signature/i,
    ],
    ['its r is zero', () => serializeTransaction(fields, { r: toHex32(0n), s: fields.s!, yParity: fields.yParity! }), /signature/i],
    // Signed over other content: it recovers to another address, which has nothing to pay the gas with.
    [
      'it was made for another amount',
      () => serializeTransaction({ ...fields, data: transferData(to, 900_000n) }, { r: fields.r!, s: fields.s!, yParity: fields.yParity! }),
      /funds/i,
    ],
  ];

  test.each(cases)('%s', async (_name, tamper, reason) => {
    const block = await chain.publicClient.getBlockNumber();
    await expect(chain.sendRawTransaction(tamper())).rejects.toThrow(reason);
    expect(await chain.publicClient.getBlockNumber()).toBe(block);
    expect(await chain.publicClient.getTransactionCount({ address: user.address })).toBe(0);
    expect(await balanceOf(to)).toBe(0n);
  });

  test('while the untampered transaction is mined (so the tampering is what was refused)', async () => {
    expect((await chain.sendRawTransaction(signed)).status).toBe('success');
    expect(await balanceOf(to)).toBe(400_000n);
  });
});

test('a transfer of more than the balance is mined, reverted, and moves nothing', async () => {
  const user = await newHolder(10n);
  const recipient = chain.accounts[1]!.address;
  // Gas estimation of a reverting call fails, as on any node: prepare the transfer that fits, sign the one that doesn't.
  const tx = await chain.prepareTransaction(user.address, { to: token, data: transferData(recipient, 10n) });
  const receipt = await chain.sendRawTransaction(await user.signTransaction({ ...tx, data: transferData(recipient, 11n), gas: 100_000n }));
  expect(receipt.status).toBe('reverted');
  expect(await balanceOf(user.address)).toBe(10n);
});

test("a reverting call answers as a node does (code 3, the revert bytes), so viem names the contract's error", async () => {
  const empty = privateKeyToAccount(generatePrivateKey());
  const call = { address: token, abi: TestToken.abi, functionName: 'transfer', args: [chain.accounts[1]!.address, 1n] } as const;
  await expect(chain.publicClient.simulateContract({ ...call, account: empty })).rejects.toThrow(
    new RegExp(`ERC20InsufficientBalance\\(address sender, uint256 balance, uint256 needed\\)\\s+\\(${empty.address}, 0, 1\\)`),
  );
  await expect(chain.write({ ...call, account: empty })).rejects.toThrow(/ERC20InsufficientBalance/);
});

test('a Cancun chain refuses an eip7702 transaction; a closed chain answers nothing', async () => {
  const cancun = await startChain({ hardfork: 'cancun', chainId: 5, accounts: 1 });
  const [sender] = cancun.accounts;
  const authorization = await sender!.signAuthorization({ chainId: 5, address: token, nonce: 1 });
  const tx = {
    type: 'eip7702',
    chainId: 5,
    nonce: 0,
    to: sender!.address,
    gas: 100_000n,
    maxFeePerGas: 10n ** 10n,
    maxPriorityFeePerGas: 1n,
    authorizationList: [authorization],
  } as const;
  await expect(cancun.sendRawTransaction(await sender!.signTransaction(tx))).rejects.toThrow(
    /EIP-7702 parameters, but they are not supported by the current hardfork: CANCUN/,
  );
  await cancun.close();
  await expect(cancun.publicClient.getBlockNumber()).rejects.toThrow(/closed/);
});

test('a chain that cannot start says why (and its process is ended)', async () => {
  await expect(startChain({ hardfork: 'london' as 'prague' })).rejects.toThrow(/the chain did not start: .*unknown hardfork london/);
});

test('compile: cached by source hash, and a compiler error names the problem', async () => {
  const cacheFiles = () => fs.readdirSync(CACHE_DIR).filter((f) => f.endsWith('.json'));
  const files = cacheFiles();
  expect(files.length).toBeGreaterThan(0);
  const again = await compileTestContracts();
  expect(again.TestToken?.bytecode).toBe(TestToken.bytecode);
  expect(cacheFiles()).toEqual(files);

  const broken = {
    'Broken.sol': 'pragma solidity ^0.8.24; contract Broken { uint x = ; }',
    'Missing.sol': 'import "@openzeppelin/contracts/NoSuchFile.sol";',
  };
  for (let run = 0; run < 2; run++) {
    const error = await compile(broken).catch((e: unknown) => (e instanceof Error ? e.message : String(e)));
    expect(error).toMatch(/^solc: /);
    expect(error).toMatch(/ParserError.*--> Broken\.sol/s);
    expect(error).toMatch(/NoSuchFile\.sol not found under/);
  }
});

test('OpenZeppelin artifacts published compiled on npm deploy as they are', async () => {
  const forwarder = openZeppelinArtifact('ERC2771Forwarder');
  const { address } = await chain.deploy(forwarder, ['nks forwarder']);
  const domain = await chain.read<readonly unknown[]>({ address, abi: forwarder.abi, functionName: 'eip712Domain' });
  expect(domain.slice(1, 5)).toEqual(['nks forwarder', '1', 31337n, address]);
  expect(() => openZeppelinArtifact('../ERC20')).toThrow(/not a contract name/);
});

function toHex32(n: bigint): Hex {
  return `0x${n.toString(16).padStart(64, '0')}`;
}
