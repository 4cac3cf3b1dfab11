/**
 * TestRecoveryAccount on EntryPoint 0.7 with plain viem accounts (the keystore's part is test/chain/lifecycle):
 * user operations validated against the owner (EIP-191 over the userOpHash), ERC-1271, an owner change by the
 * owner (a user operation or a direct call), and guardian recovery with its time lock on chain time.
 */
import { encodeFunctionData, keccak256, parseEther, stringToHex, type Address } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import {
  deployEntryPoint,
  entryPointUserOpHash,
  handleOps,
  userOperationEvents,
  type AnyUserOperation,
  type EntryPointDeployment,
} from './account-abstraction';
import { startChain, type Artifact, type Chain } from './harness';
import { accountOperation, deployRecoveryAccount, RECOVERY_DELAY, recoveryAccountArtifact } from './recovery-account';

let chain: Chain;
let d: EntryPointDeployment;
let Account: Artifact;
const newAccount = () => privateKeyToAccount(generatePrivateKey());
const bundler = newAccount().address;
const [ownerA, ownerB, guardian1, guardian2, guardian3, stranger] = Array.from({ length: 6 }, newAccount) as [
  PrivateKeyAccount,
  PrivateKeyAccount,
  PrivateKeyAccount,
  PrivateKeyAccount,
  PrivateKeyAccount,
  PrivateKeyAccount,
];
const guardians = [guardian1, guardian2, guardian3];
const ERC1271_MAGIC = '0x1626ba7e';

beforeAll(async () => {
  [chain, Account] = await Promise.all([startChain(), recoveryAccountArtifact()]);
  d = await deployEntryPoint(chain, '0.7');
  for (const a of [ownerA, ownerB, ...guardians, stranger]) await chain.fund(a.address);
}, 60_000);

afterAll(() => chain?.close());

/** A fresh account of A with the three guardians, two of whom can recover it. */
const deployAccount = () =>
  deployRecoveryAccount(chain, d, Account, { owner: ownerA.address, guardians: guardians.map((g) => g.address), threshold: 2 });

const read = <T>(account: Address, functionName: string, args: readonly unknown[] = []) =>
  chain.read<T>({ address: account, abi: Account.abi, functionName, args });
const call = (account: Address, from: PrivateKeyAccount, functionName: string, args: readonly unknown[] = []) =>
  chain.write({ account: from, address: account, abi: Account.abi, functionName, args });

/** `op` signed by `signer` as the account checks it: EIP-191 over the EntryPoint's userOpHash. */
async function signOp(op: AnyUserOperation, signer: PrivateKeyAccount): Promise<AnyUserOperation> {
  return { ...op, signature: await signer.signMessage({ message: { raw: await entryPointUserOpHash(chain, d, op) } }) };
}

describe('ERC-4337 validation', () => {
  let account: Address;
  const payee = newAccount().address;
  const pay = () => accountOperation(chain, d, Account, account, 'execute', [payee, parseEther('0.1'), '0x']);

  beforeAll(async () => {
    account = await deployAccount();
  });

  test("an operation not signed by the owner is rejected (AA24), a guardian's included", async () => {
    for (const signer of [stranger, guardian1]) {
      await expect(chain.write(handleOps(d, await signOp(await pay(), signer), bundler))).rejects.toThrow(/AA24 signature error/);
    }
    expect(await chain.publicClient.getBalance({ address: payee })).toBe(0n);
  });

  test("the owner's operation is executed", async () => {
    const receipt = await chain.write(handleOps(d, await signOp(await pay(), ownerA), bundler));
    expect(userOperationEvents(d, receipt)).toEqual([expect.objectContaining({ sender: account, success: true })]);
    expect(await chain.publicClient.getBalance({ address: payee })).toBe(parseEther('0.1'));
  });

  test('a stranger can neither call execute nor validateUserOp', async () => {
    await expect(call(account, stranger, 'execute', [stranger.address, 1n, '0x'])).rejects.toThrow(/NotOwner/);
    await expect(
      chain.write({
        account: stranger,
        address: account,
        abi: Account.abi,
        functionName: 'validateUserOp',
        args: [fakePackedOp(account), keccak256('0x'), 0n],
      }),
    ).rejects.toThrow(/account: not from EntryPoint/);
  });
});

describe('ERC-1271', () => {
  let account: Address;
  const hash = keccak256(stringToHex('an order the account approves'));

  beforeAll(async () => {
    account = await deployAccount();
  });

  test("the owner's signature of a hash is valid, anyone else's or a malformed one is not (and nothing reverts)", async () => {
    expect(await read(account, 'isValidSignature', [hash, await ownerA.sign({ hash })])).toBe(ERC1271_MAGIC);
    expect(await read(account, 'isValidSignature', [hash, await stranger.sign({ hash })])).toBe('0xffffffff');
    expect(await read(account, 'isValidSignature', [keccak256(hash), await ownerA.sign({ hash })])).toBe('0xffffffff');
    expect(await read(account, 'isValidSignature', [hash, `0x${'00'.repeat(65)}`])).toBe('0xffffffff');
  });
});

describe('owner change by the owner', () => {
  test('through a user operation: then only the new owner signs for the account', async () => {
    const account = await deployAccount();
    const receipt = await chain.write(
      handleOps(d, await signOp(await accountOperation(chain, d, Account, account, 'changeOwner', [ownerB.address]), ownerA), bundler),
    );
    expect(userOperationEvents(d, receipt)).toEqual([expect.objectContaining({ success: true })]);
    expect(await read(account, 'owner')).toBe(ownerB.address);

    const ping = () => accountOperation(chain, d, Account, account, 'execute', [stranger.address, 1n, '0x']);
    await expect(chain.write(handleOps(d, await signOp(await ping(), ownerA), bundler))).rejects.toThrow(/AA24 signature error/);
    expect((await chain.write(handleOps(d, await signOp(await ping(), ownerB), bundler))).status).toBe('success');
    const hash = keccak256('0x01');
    expect(await read(account, 'isValidSignature', [hash, await ownerA.sign({ hash })])).toBe('0xffffffff');
    expect(await read(account, 'isValidSignature', [hash, await ownerB.sign({ hash })])).toBe(ERC1271_MAGIC);
  });

  test('by a direct call; no one else can, and the zero address is no owner', async () => {
    const account = await deployAccount();
    await expect(call(account, stranger, 'changeOwner', [stranger.address])).rejects.toThrow(/NotOwner/);
    await expect(call(account, guardian1, 'changeOwner', [guardian1.address])).rejects.toThrow(/NotOwner/);
    await expect(call(account, ownerA, 'changeOwner', ['0x0000000000000000000000000000000000000000'])).rejects.toThrow(/InvalidOwner/);
    expect((await call(account, ownerA, 'changeOwner', [ownerB.address])).status).toBe('success');
    expect(await read(account, 'owner')).toBe(ownerB.address);
  });
});

describe('guardian recovery with a time lock', () => {
  test('two of three guardians approve B; it is final only after the delay, then anyone finalizes it', async () => {
    const account = await deployAccount();
    await expect(call(account, stranger, 'approveRecovery', [ownerB.address])).rejects.toThrow(/NotGuardian/);
    await call(account, guardian1, 'approveRecovery', [ownerB.address]);
    await expect(call(account, guardian1, 'approveRecovery', [ownerB.address])).rejects.toThrow(/AlreadyApproved/);
    // One approval of two: not ready at all.
    await expect(call(account, stranger, 'finalizeRecovery')).rejects.toThrow(/RecoveryNotReady\(uint256 readyAt\)\s+\(0\)/);

    const approved = await call(account, guardian2, 'approveRecovery', [ownerB.address]);
    const { timestamp } = await chain.publicClient.getBlock({ blockNumber: approved.blockNumber });
    expect(await read(account, 'recoveryReadyAt')).toBe(timestamp + BigInt(RECOVERY_DELAY));
    await expect(call(account, stranger, 'finalizeRecovery')).rejects.toThrow(/RecoveryNotReady/);
    expect(await read(account, 'owner')).toBe(ownerA.address);

    await chain.advanceTime(RECOVERY_DELAY);
    expect((await call(account, stranger, 'finalizeRecovery')).status).toBe('success');
    expect(await read(account, 'owner')).toBe(ownerB.address);
    expect(await read(account, 'proposedOwner')).toBe('0x0000000000000000000000000000000000000000');
    // Done: there is nothing left to finalize.
    await expect(call(account, stranger, 'finalizeRecovery')).rejects.toThrow(/RecoveryNotReady/);
  });

  test('the owner cancels a recovery during its time lock, and the approvals lapse with it', async () => {
    const account = await deployAccount();
    await call(account, guardian1, 'approveRecovery', [stranger.address]);
    await call(account, guardian2, 'approveRecovery', [stranger.address]);
    await expect(call(account, guardian3, 'cancelRecovery')).rejects.toThrow(/NotOwner/);
    await call(account, ownerA, 'cancelRecovery');
    await chain.advanceTime(RECOVERY_DELAY);
    await expect(call(account, stranger, 'finalizeRecovery')).rejects.toThrow(/RecoveryNotReady/);
    // A new approval of the same owner starts over: one is not enough.
    await call(account, guardian1, 'approveRecovery', [stranger.address]);
    expect(await read(account, 'approvals')).toBe(1n);
    await expect(call(account, stranger, 'finalizeRecovery')).rejects.toThrow(/RecoveryNotReady/);
    expect(await read(account, 'owner')).toBe(ownerA.address);
  });

  test('guardians approving different owners do not add up', async () => {
    const account = await deployAccount();
    await call(account, guardian1, 'approveRecovery', [ownerB.address]);
    await call(account, guardian2, 'approveRecovery', [stranger.address]);
    expect(await read(account, 'approvals')).toBe(1n);
    expect(await read(account, 'recoveryReadyAt')).toBe(0n);
  });
});

/** A well-formed PackedUserOperation for a direct validateUserOp call (which must fail before looking at it). */
function fakePackedOp(sender: Address) {
  const zero32 = `0x${'00'.repeat(32)}`;
  return {
    sender,
    nonce: 0n,
    initCode: '0x',
    callData: encodeFunctionData({ abi: Account.abi, functionName: 'cancelRecovery' }),
    accountGasLimits: zero32,
    preVerificationGas: 0n,
    gasFees: zero32,
    paymasterAndData: '0x',
    signature: '0x',
  };
}
