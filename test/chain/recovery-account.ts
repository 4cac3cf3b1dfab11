/**
 * TestRecoveryAccount (test/chain/contracts): compiled with the other test contracts (cached by source hash), deployed for an owner and
 * guardians on EntryPoint 0.7, and the calls its tests make through user operations.
 */
import { encodeFunctionData, parseEther, type Address } from 'viem';
import { userOperation, type AnyUserOperation, type EntryPointDeployment } from './account-abstraction';
import { compileTestContracts, type Artifact, type Chain } from './harness';

/** The guardians' time lock in the tests: a day of chain time (moved by `chain.advanceTime`). */
export const RECOVERY_DELAY = 86_400;

export async function recoveryAccountArtifact(): Promise<Artifact> {
  return (await compileTestContracts()).TestRecoveryAccount!;
}

/** A funded TestRecoveryAccount of `owner` with `guardians`, `threshold` of whom can recover it after RECOVERY_DELAY. */
export async function deployRecoveryAccount(
  chain: Chain,
  d: EntryPointDeployment,
  artifact: Artifact,
  { owner, guardians, threshold }: { owner: Address; guardians: readonly Address[]; threshold: number },
): Promise<Address> {
  if (d.version !== '0.7') throw new Error('TestRecoveryAccount implements the EntryPoint 0.7 account interface');
  const { address } = await chain.deploy(artifact, [d.entryPoint, owner, guardians, BigInt(threshold), BigInt(RECOVERY_DELAY)]);
  await chain.fund(address, parseEther('1'));
  return address;
}

/** An unsigned user operation of `account` calling itself with `functionName(args)` (changeOwner, execute...). */
export function accountOperation(
  chain: Chain,
  d: EntryPointDeployment,
  artifact: Artifact,
  account: Address,
  functionName: string,
  args: readonly unknown[],
): Promise<AnyUserOperation> {
  return userOperation(chain, d, account, encodeFunctionData({ abi: artifact.abi, functionName, args }));
}
