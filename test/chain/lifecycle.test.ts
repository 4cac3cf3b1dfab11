/**
 * The key lifecycle (docs/LIFECYCLE.md) end to end on chain: keystore keys own TestRecoveryAccounts on EntryPoint
 * 0.7 (user operations signed by the keystore, `userOperation` 0.7 requests). Owner path: key A owns the account,
 * successor B is made, A signs the owner change, after it is mined B is activated; B's operations are accepted,
 * A is refused by the keystore (KEY_RETIRED) and by the chain (an operation A signed before). Recovery path:
 * guardians (viem accounts) move the account to the successor without the old key's signature, then it is
 * activated. Failure path: the owner cancels the guardians' recovery, the successor is cancelled, the old key
 * keeps the account.
 */
import { keccak256, parseEther, stringToHex, type Address } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { KeystoreApiError, type Key } from '../../client/src/sdk';
import {
  deployEntryPoint,
  handleOps,
  userOperationEvents,
  userOperationRequest,
  type AnyUserOperation,
  type EntryPointDeployment,
} from './account-abstraction';
import { startChain, type Artifact, type Chain } from './harness';
import { startKeystore, type ChainKeystore } from './keystore';
import { accountOperation, deployRecoveryAccount, RECOVERY_DELAY, recoveryAccountArtifact } from './recovery-account';

let chain: Chain;
let keystore: ChainKeystore;
let d: EntryPointDeployment;
let Account: Artifact;
const newAccount = () => privateKeyToAccount(generatePrivateKey());
const guardians = [newAccount(), newAccount(), newAccount()] as const;
const bundler = newAccount();
const AMOUNT = parseEther('0.01');
const ERC1271_MAGIC = '0x1626ba7e';

beforeAll(async () => {
  [chain, keystore, Account] = await Promise.all([startChain(), startKeystore('lifecycle'), recoveryAccountArtifact()]);
  d = await deployEntryPoint(chain, '0.7');
  for (const a of [...guardians, bundler]) await chain.fund(a.address);
}, 60_000);

afterAll(async () => {
  await keystore?.stop();
  await chain?.close();
});

/** A key of `subject` and an account it owns, with the three guardians (two of whom can recover it). */
async function ownedAccount(subject: string): Promise<{ key: Key; account: Address }> {
  const { key } = await keystore.client.createKey({ externalId: subject });
  const account = await deployRecoveryAccount(chain, d, Account, {
    owner: key.address,
    guardians: guardians.map((g) => g.address),
    threshold: 2,
  });
  return { key, account };
}

/** `op` signed by a keystore key: a `userOperation` 0.7 request. */
async function keystoreSigned(key: Key, op: AnyUserOperation): Promise<AnyUserOperation> {
  return { ...op, signature: (await keystore.client.sign(key.keyId, userOperationRequest(chain, d, op))).signature };
}

const payment = (account: Address, to: Address) => accountOperation(chain, d, Account, account, 'execute', [to, AMOUNT, '0x']);
const submit = (op: AnyUserOperation) => chain.write(handleOps(d, op, bundler.address));
const ownerOf = (account: Address) => chain.read<Address>({ address: account, abi: Account.abi, functionName: 'owner' });
const asAccount = (account: Address, functionName: string, args: readonly unknown[] = [], from = bundler) =>
  chain.write({ account: from, address: account, abi: Account.abi, functionName, args });

async function expectRetired(key: Key, op: AnyUserOperation): Promise<void> {
  const err = await keystore.client.sign(key.keyId, userOperationRequest(chain, d, op)).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(KeystoreApiError);
  expect(err).toMatchObject({ code: 'KEY_RETIRED', status: 409 });
}

test("owner path: A signs the owner change to its successor B; once mined B is activated, B's operations are accepted, A is refused by the keystore and the chain", async () => {
  const { key: a, account } = await ownedAccount('wallet:alice');
  const payee = newAccount().address;
  expect((await submit(await keystoreSigned(a, await payment(account, payee)))).status).toBe('success');

  const b = await keystore.client.successor(a.keyId);
  expect(b).toMatchObject({ state: 'pending', predecessor: a.keyId, externalId: 'wallet:alice' });
  // B signs while pending, but the chain does not take its operations: A still owns the account.
  await expect(submit(await keystoreSigned(b, await payment(account, payee)))).rejects.toThrow(/AA24 signature error/);

  const change = await keystoreSigned(a, await accountOperation(chain, d, Account, account, 'changeOwner', [b.address]));
  // A also signs its next operation now, kept back: the chain must refuse it once B owns the account.
  const heldBack = await keystoreSigned(a, { ...(await payment(account, payee)), nonce: change.nonce + 1n });
  const hash = keccak256(stringToHex('an order'));
  const aApproves = (await keystore.client.signDigest(a.keyId, hash)).signature;
  expect(await chain.read({ address: account, abi: Account.abi, functionName: 'isValidSignature', args: [hash, aApproves] })).toBe(
    ERC1271_MAGIC,
  );

  expect(userOperationEvents(d, await submit(change))).toEqual([expect.objectContaining({ success: true })]);
  expect(await ownerOf(account)).toBe(b.address);
  expect(await keystore.admin.activate(b.keyId)).toMatchObject({ keyId: b.keyId, state: 'active' });
  expect((await keystore.client.history(b.keyId)).map((k) => [k.keyId, k.state])).toEqual([
    [a.keyId, 'retired'],
    [b.keyId, 'active'],
  ]);

  await expectRetired(a, await payment(account, payee));
  await expect(submit(heldBack)).rejects.toThrow(/AA24 signature error/);
  expect(await chain.read({ address: account, abi: Account.abi, functionName: 'isValidSignature', args: [hash, aApproves] })).toBe(
    '0xffffffff',
  );
  expect((await submit(await keystoreSigned(b, await payment(account, payee)))).status).toBe('success');
  expect(await chain.publicClient.getBalance({ address: payee })).toBe(2n * AMOUNT);
});

test('recovery path: guardians move the account to the successor without the old key; it is activated and signs, the old key is refused', async () => {
  const { key: c, account } = await ownedAccount('wallet:carol');
  const d2 = await keystore.client.successor(c.keyId);

  await asAccount(account, 'approveRecovery', [d2.address], guardians[0]);
  await asAccount(account, 'approveRecovery', [d2.address], guardians[1]);
  await chain.advanceTime(RECOVERY_DELAY);
  await asAccount(account, 'finalizeRecovery');
  expect(await ownerOf(account)).toBe(d2.address);

  expect(await keystore.admin.activate(d2.keyId)).toMatchObject({ state: 'active' });
  const payee = newAccount().address;
  expect((await submit(await keystoreSigned(d2, await payment(account, payee)))).status).toBe('success');
  expect(await chain.publicClient.getBalance({ address: payee })).toBe(AMOUNT);
  await expectRetired(c, await payment(account, payee));
});

test('the on-chain change fails (the owner cancels the recovery): the successor is cancelled and the old key keeps the account', async () => {
  const { key: e, account } = await ownedAccount('wallet:erin');
  const f = await keystore.client.successor(e.keyId);
  await asAccount(account, 'approveRecovery', [f.address], guardians[0]);
  await asAccount(account, 'approveRecovery', [f.address], guardians[1]);
  // The owner, still in control, cancels through a user operation during the time lock.
  expect((await submit(await keystoreSigned(e, await accountOperation(chain, d, Account, account, 'cancelRecovery', [])))).status).toBe(
    'success',
  );
  await chain.advanceTime(RECOVERY_DELAY);
  await expect(asAccount(account, 'finalizeRecovery')).rejects.toThrow(/RecoveryNotReady/);

  expect(await keystore.admin.cancel(f.keyId)).toMatchObject({ state: 'cancelled' });
  await expectRetired(f, await payment(account, bundler.address));
  expect(await ownerOf(account)).toBe(e.address);
  const payee = newAccount().address;
  expect((await submit(await keystoreSigned(e, await payment(account, payee)))).status).toBe('success');
  expect(await chain.publicClient.getBalance({ address: payee })).toBe(AMOUNT);
});
