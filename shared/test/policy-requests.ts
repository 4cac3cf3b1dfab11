/**
 * Sign requests for policy tests, parsed by the request schema as the enclave parses them, with calldata built
 * by viem's encoder (ERC-20 transfer/approve, the account calls the facts reader decodes).
 */
import { encodeFunctionData, parseAbi, type Hex } from 'viem';
import { SignRequestSchema, type SignRequest, type SignRequestInput } from '../src/signing/schema';

export const USDC = '0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48';
export const DAI = '0x6B175474E89094C44Da98b954EedeAC495271d0F';
export const ALICE = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';
export const BOB = '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC';
export const MALLORY = '0x90F79bf6EB2c4f870365E785982E1f101E93b906';
export const SENDER = '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65';
export const ENTRY_POINT_06 = '0x5FF137D4b0FDCD49DcA30c7CF57E578a026d2789';
export const ENTRY_POINT_07 = '0x0000000071727De22E5E9d8BAf0edAc6f37da032';
export const ENTRY_POINT_08 = '0x4337084D9E255Ff0702461CF8895CE9E3b5Ff108';
export const DELEGATE = '0x63c0c19a282a1B52b07dD5a65b58948A07DAE32B';

export const ABI = parseAbi([
  'function transfer(address to, uint256 amount)',
  'function approve(address spender, uint256 amount)',
  'function execute(address dest, uint256 value, bytes func)',
  'function executeBatch(address[] dest, bytes[] func)',
  'function executeBatch(address[] dest, uint256[] value, bytes[] func)',
  'function executeBatch((address target, uint256 value, bytes data)[] calls)',
]);

const parse = (req: SignRequestInput): SignRequest => SignRequestSchema.parse(req);

export const transferData = (to: string, amount: bigint): Hex =>
  encodeFunctionData({ abi: ABI, functionName: 'transfer', args: [to as Hex, amount] });
export const approveData = (spender: string, amount: bigint): Hex =>
  encodeFunctionData({ abi: ABI, functionName: 'approve', args: [spender as Hex, amount] });
export const executeData = (target: string, value: bigint, data: Hex = '0x'): Hex =>
  encodeFunctionData({ abi: ABI, functionName: 'execute', args: [target as Hex, value, data] });
/** SimpleAccount 0.6: executeBatch(address[],bytes[]). */
export const batchV06Data = (targets: string[], datas: Hex[] = targets.map(() => '0x')): Hex =>
  encodeFunctionData({ abi: ABI, functionName: 'executeBatch', args: [targets as Hex[], datas] });
/** SimpleAccount 0.7: executeBatch(address[],uint256[],bytes[]). */
export const batchV07Data = (targets: string[], values: bigint[], datas: Hex[] = targets.map(() => '0x')): Hex =>
  encodeFunctionData({ abi: ABI, functionName: 'executeBatch', args: [targets as Hex[], values, datas] });
/** Coinbase Smart Wallet: executeBatch((address,uint256,bytes)[]). */
export const batchCallsData = (calls: Array<{ target: string; value: bigint; data?: Hex }>): Hex =>
  encodeFunctionData({
    abi: ABI,
    functionName: 'executeBatch',
    args: [calls.map((c) => ({ target: c.target as Hex, value: c.value, data: c.data ?? '0x' }))],
  });

export const digestRequest = (): SignRequest => parse({ type: 'digest', digest: `0x${'11'.repeat(32)}` });
export const messageRequest = (): SignRequest => parse({ type: 'message', message: 'hello' });
/** A raw message of `bytes` bytes: 32 is a `hash` (a userOpHash, say), any other length `raw`. */
export const rawMessageRequest = (bytes: number): SignRequest => parse({ type: 'message', message: { raw: `0x${'ab'.repeat(bytes)}` } });

export function typedDataRequest(domain: Record<string, unknown> = {}, primaryType = 'Permit'): SignRequest {
  return parse({
    type: 'typedData',
    typedData: {
      domain,
      types: { [primaryType]: [{ name: 'owner', type: 'address' }] },
      primaryType,
      message: { owner: ALICE },
    },
  });
}
/** An EIP-2612 permit's domain (USDC on mainnet). */
export const PERMIT_DOMAIN = { name: 'USD Coin', version: '2', chainId: 1, verifyingContract: USDC };

/** A blob versioned hash (version byte 0x01), the `n`th. */
export const blobVersionedHash = (n: number): Hex => `0x01${n.toString(16).padStart(62, '0')}`;

type TxType = 'legacy' | 'eip2930' | 'eip1559' | 'eip7702' | 'eip4844';
/** A transaction to BOB with 21,000 gas at 30 gwei; an eip4844 one carries one blob at a blob gas price of 1 gwei. */
export function transactionRequest(type: TxType, over: Record<string, unknown> = {}): SignRequest {
  const fees =
    type === 'legacy' || type === 'eip2930' ? { gasPrice: '30000000000' } : { maxFeePerGas: '30000000000', maxPriorityFeePerGas: '1' };
  const blobs = type === 'eip4844' ? { maxFeePerBlobGas: '1000000000', blobVersionedHashes: [blobVersionedHash(1)] } : {};
  const authorizationList =
    type === 'eip7702'
      ? {
          authorizationList: [
            { address: DELEGATE, chainId: 1, nonce: 0, r: `0x${'01'.repeat(32)}`, s: `0x${'02'.repeat(32)}`, yParity: 0 },
          ],
        }
      : {};
  return parse({
    type: 'transaction',
    transaction: { type, chainId: 1, nonce: 0, to: BOB, gas: 21000, ...fees, ...authorizationList, ...blobs, ...over },
  } as SignRequestInput);
}
/** A signed authorization for an EIP-7702 transaction's list. */
export const signedAuthorization = (address: string, chainId = 1) => ({
  address,
  chainId,
  nonce: 0,
  r: `0x${'01'.repeat(32)}`,
  s: `0x${'02'.repeat(32)}`,
  yParity: 0 as const,
});

export function authorizationRequest(address: string = DELEGATE, chainId = 1): SignRequest {
  return parse({
    type: 'authorization',
    authorization: { chainId, address, nonce: 0 },
    ...(chainId === 0 ? { allowAllChains: true } : {}),
  });
}

export function userOperationRequest(version: '0.6' | '0.7' | '0.8', callData: Hex, over: Record<string, unknown> = {}): SignRequest {
  return parse({
    type: 'userOperation',
    version,
    chainId: 1,
    entryPoint: { '0.6': ENTRY_POINT_06, '0.7': ENTRY_POINT_07, '0.8': ENTRY_POINT_08 }[version],
    userOperation: {
      sender: SENDER,
      nonce: 0,
      callData,
      callGasLimit: 100000,
      verificationGasLimit: 100000,
      preVerificationGas: 50000,
      maxFeePerGas: '30000000000',
      maxPriorityFeePerGas: '1',
      ...over,
    },
  });
}
