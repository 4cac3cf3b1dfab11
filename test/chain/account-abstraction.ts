/**
 * ERC-4337 on the test chain: an EntryPoint and SimpleAccountFactory of a given @account-abstraction/contracts
 * release deployed from their published artifacts, user operations for an account of the caller's, in viem's
 * shape (to sign) and the keystore's request form, and `handleOps` as the EntryPoint of that version takes it
 * (0.6 the plain struct, 0.7/0.8 packed).
 */
import { concat, encodeFunctionData, parseEventLogs, type Address, type Hex, type TransactionReceipt } from 'viem';
import { toPackedUserOperation, type UserOperation } from 'viem/account-abstraction';
import type { SignRequestInput } from '@nks/shared/signing/schema';
import { accountAbstractionArtifact, type Artifact, type Chain, type EntryPointVersion } from './harness';

export interface EntryPointDeployment {
  version: EntryPointVersion;
  entryPoint: Address;
  /** The release's SimpleAccountFactory, bound to this EntryPoint. */
  factory: Address;
  EntryPoint: Artifact;
  SimpleAccountFactory: Artifact;
  SimpleAccount: Artifact;
}

export async function deployEntryPoint(chain: Chain, version: EntryPointVersion): Promise<EntryPointDeployment> {
  const EntryPoint = accountAbstractionArtifact(version, 'EntryPoint');
  const SimpleAccountFactory = accountAbstractionArtifact(version, 'SimpleAccountFactory');
  const SimpleAccount = accountAbstractionArtifact(version, 'SimpleAccount');
  const { address: entryPoint } = await chain.deploy(EntryPoint);
  const { address: factory } = await chain.deploy(SimpleAccountFactory, [entryPoint]);
  return { version, entryPoint, factory, EntryPoint, SimpleAccountFactory, SimpleAccount };
}

/** A user operation of any of the three versions, unsigned (`signature` 0x) or signed. */
export type AnyUserOperation = UserOperation<'0.6'> | UserOperation<'0.7'> | UserOperation<'0.8'>;

/** Enough gas for a SimpleAccount's deployment and one call; the account pays at most this times maxFeePerGas. */
const GAS_LIMITS = { callGasLimit: 200_000n, verificationGasLimit: 1_000_000n, preVerificationGas: 60_000n };

/**
 * A user operation from `sender` (nonce from the EntryPoint, fees the chain asks now) running `callData`;
 * with `deploy`, it also deploys the sender through that factory call (initCode, or factory + factoryData).
 */
export async function userOperation(
  chain: Chain,
  d: EntryPointDeployment,
  sender: Address,
  callData: Hex,
  deploy?: { factory: Address; factoryData: Hex },
): Promise<AnyUserOperation> {
  const nonce = await chain.read<bigint>({ address: d.entryPoint, abi: d.EntryPoint.abi, functionName: 'getNonce', args: [sender, 0n] });
  const { maxFeePerGas, maxPriorityFeePerGas } = await chain.publicClient.estimateFeesPerGas();
  const common = { sender, nonce, callData, ...GAS_LIMITS, maxFeePerGas, maxPriorityFeePerGas, signature: '0x' as Hex };
  if (d.version === '0.6') {
    return { ...common, initCode: deploy ? concat([deploy.factory, deploy.factoryData]) : '0x', paymasterAndData: '0x' };
  }
  return { ...common, ...(deploy ?? {}) };
}

/** The SimpleAccount of `owner` (salt 0): its counterfactual address and an operation that deploys it and makes one call. */
export async function simpleAccountOperation(
  chain: Chain,
  d: EntryPointDeployment,
  owner: Address,
  call: { to: Address; value: bigint; data?: Hex },
): Promise<{ sender: Address; userOperation: AnyUserOperation }> {
  const sender = await chain.read<Address>({
    address: d.factory,
    abi: d.SimpleAccountFactory.abi,
    functionName: 'getAddress',
    args: [owner, 0n],
  });
  const callData = encodeFunctionData({
    abi: d.SimpleAccount.abi,
    functionName: 'execute',
    args: [call.to, call.value, call.data ?? '0x'],
  });
  const deployed = (await chain.publicClient.getCode({ address: sender })) !== undefined;
  const factoryData = encodeFunctionData({ abi: d.SimpleAccountFactory.abi, functionName: 'createAccount', args: [owner, 0n] });
  const deploy = deployed ? undefined : { factory: d.factory, factoryData };
  return { sender, userOperation: await userOperation(chain, d, sender, callData, deploy) };
}

/** Integers as decimal strings, as JSON (and so the keystore's request) carries them. */
function jsonSafe(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)));
}

type UserOperationRequest = Extract<SignRequestInput, { type: 'userOperation' }>;

/** The keystore's `userOperation` sign request for `op`, integers as decimal strings and no signature. */
export function userOperationRequest(chain: Chain, d: EntryPointDeployment, op: AnyUserOperation): UserOperationRequest {
  const { signature: _signature, ...fields } = op;
  // The request schema (shared/src/signing/schema.ts) checks each field; jsonSafe only changes how integers are written.
  const userOperation = jsonSafe(fields) as UserOperationRequest['userOperation'];
  return {
    type: 'userOperation',
    version: d.version,
    chainId: chain.chainId,
    entryPoint: d.entryPoint,
    userOperation,
  };
}

/** The EntryPoint's own `getUserOpHash` of the (signed) operation. */
export function entryPointUserOpHash(chain: Chain, d: EntryPointDeployment, op: AnyUserOperation): Promise<Hex> {
  return chain.read<Hex>({ address: d.entryPoint, abi: d.EntryPoint.abi, functionName: 'getUserOpHash', args: [onChain(d, op)] });
}

/** The `handleOps([op], beneficiary)` call, for `chain.write` or a simulation. */
export function handleOps(d: EntryPointDeployment, op: AnyUserOperation, beneficiary: Address) {
  return { address: d.entryPoint, abi: d.EntryPoint.abi, functionName: 'handleOps', args: [[onChain(d, op)], beneficiary] as const };
}

/** The EntryPoint's UserOperationEvent(s) in a receipt. */
export function userOperationEvents(d: EntryPointDeployment, receipt: TransactionReceipt) {
  return parseEventLogs({ abi: d.EntryPoint.abi, logs: receipt.logs, eventName: 'UserOperationEvent' }).map(
    (e) => e.args as { userOpHash: Hex; sender: Address; nonce: bigint; success: boolean },
  );
}

function onChain(d: EntryPointDeployment, op: AnyUserOperation) {
  return d.version === '0.6' ? op : toPackedUserOperation(op);
}
