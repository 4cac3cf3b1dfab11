/**
 * Keystore-signed ERC-4337 user operations on the published EntryPoints (@account-abstraction/contracts 0.6.0,
 * 0.7.0, 0.8.0, their own compiled artifacts): an operation signed by a keystore key deploys that key's
 * SimpleAccount through `handleOps` (initCode, or factory + factoryData) and makes its call; the same operation
 * with one field changed after signing is rejected by the EntryPoint (AA24, the account's signature check).
 * The keystore signs the 0.6 and 0.7 userOpHash under EIP-191 and 0.8's, an EIP-712 digest, as it is: what each
 * release's SimpleAccount recovers.
 */
import { encodeFunctionData, parseEther, type Address, type Hex } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import type { Key } from '../../client/src/sdk';
import {
  deployEntryPoint,
  entryPointUserOpHash,
  handleOps,
  simpleAccountOperation,
  userOperationEvents,
  userOperationRequest,
  type AnyUserOperation,
  type EntryPointDeployment,
} from './account-abstraction';
import { ENTRY_POINT_VERSIONS, startChain, type Chain, type EntryPointVersion } from './harness';
import { startKeystore, type ChainKeystore } from './keystore';

let chain: Chain;
let keystore: ChainKeystore;
let key: Key;
const deployments = {} as Record<EntryPointVersion, EntryPointDeployment>;
const beneficiary = privateKeyToAccount(generatePrivateKey()).address;
const AMOUNT = parseEther('0.25');

beforeAll(async () => {
  [chain, keystore] = await Promise.all([startChain(), startKeystore('entrypoint')]);
  for (const version of ENTRY_POINT_VERSIONS) deployments[version] = await deployEntryPoint(chain, version);
  key = (await keystore.client.createKey()).key;
}, 60_000);

afterAll(async () => {
  await keystore?.stop();
  await chain?.close();
});

/** The keystore's signature of `op` and the userOpHash it says it signed. */
async function keystoreSign(d: EntryPointDeployment, op: AnyUserOperation): Promise<{ signature: Hex; userOpHash: Hex }> {
  const signed = await keystore.client.sign(key.keyId, userOperationRequest(chain, d, op));
  return { signature: signed.signature, userOpHash: signed.userOperationHash! };
}

describe.each(ENTRY_POINT_VERSIONS)('EntryPoint %s', (version) => {
  let d: EntryPointDeployment;
  let sender: Address;
  let op: AnyUserOperation;
  const recipient = privateKeyToAccount(generatePrivateKey()).address;
  const thief = privateKeyToAccount(generatePrivateKey()).address;

  beforeAll(async () => {
    d = deployments[version];
    ({ sender, userOperation: op } = await simpleAccountOperation(chain, d, key.address, { to: recipient, value: AMOUNT }));
    // The counterfactual account pays for its own operation.
    await chain.fund(sender, parseEther('1'));
  });

  test('an operation changed after the keystore signed it is rejected (AA24) and changes nothing', async () => {
    const { signature } = await keystoreSign(d, op);
    const redirected = encodeFunctionData({ abi: d.SimpleAccount.abi, functionName: 'execute', args: [thief, AMOUNT, '0x'] });
    const tampered = { ...op, callData: redirected, signature };
    await expect(chain.write(handleOps(d, tampered, beneficiary))).rejects.toThrow(/AA24 signature error/);
    expect(await chain.publicClient.getCode({ address: sender })).toBeUndefined();
    expect(await chain.publicClient.getBalance({ address: thief })).toBe(0n);
  });

  test("the keystore-signed operation deploys the key's SimpleAccount and makes its call", async () => {
    const { signature, userOpHash } = await keystoreSign(d, op);
    const signed = { ...op, signature };
    expect(await entryPointUserOpHash(chain, d, signed)).toBe(userOpHash);

    const receipt = await chain.write(handleOps(d, signed, beneficiary));
    expect(receipt.status).toBe('success');
    expect(userOperationEvents(d, receipt)).toEqual([expect.objectContaining({ userOpHash, sender, nonce: 0n, success: true })]);
    expect(await chain.read({ address: sender, abi: d.SimpleAccount.abi, functionName: 'owner' })).toBe(key.address);
    expect(await chain.publicClient.getBalance({ address: recipient })).toBe(AMOUNT);
    // The bundler was paid from the account's prefund.
    expect(await chain.publicClient.getBalance({ address: beneficiary })).toBeGreaterThan(0n);
  });
});
