/**
 * A real EVM for tests: Hardhat's EDR (@nomicfoundation/edr, the Rust EVM Hardhat runs on; prebuilt napi
 * binaries from npm) behind viem clients. Each `startChain()` is a fresh chain in a child Node process of its own
 * (test/chain/edr-process.cjs), spoken to over IPC — Prague by default, so EIP-7702 transactions are accepted —
 * with funded dev accounts and automine: a transaction sent is mined in its own block before the call returns,
 * so `sendRawTransaction` hands back the receipt. Nothing listens on a port, nothing is fetched, and no timer
 * runs (viem's receipt polling is not used), so a test that awaits `close()` leaves no open handle.
 *
 * Typical use: `compileTestContracts()` (./compile.ts, cached), `chain.deploy(artifact,
 * args)`, sign a transaction anywhere (the keystore, a viem local account) with fields from
 * `chain.prepareTransaction`, then `chain.sendRawTransaction(serialized)` and read state with `chain.read`.
 */
import { fork } from 'node:child_process';
import path from 'node:path';
import {
  createPublicClient,
  createTestClient,
  createWalletClient,
  custom,
  defineChain,
  getAddress,
  keccak256,
  parseEther,
  stringToHex,
  type Abi,
  type Account,
  type AccessList,
  type Address,
  type Chain as ViemChain,
  type Hex,
  type PublicClient,
  type SignedAuthorizationList,
  type TestClient,
  type TransactionReceipt,
  type Transport,
} from 'viem';
import { privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import type { SignRequestInput } from '@nks/shared/signing/schema';
import type { Artifact } from './compile';

export {
  accountAbstractionArtifact,
  CACHE_DIR,
  compile,
  compileTestContracts,
  contractSources,
  ENTRY_POINT_VERSIONS,
  openZeppelinArtifact,
  type Artifact,
  type CompileOptions,
  type EntryPointVersion,
} from './compile';

export interface ChainOptions {
  /** Default 31337. */
  chainId?: number;
  /** Default `prague` (EIP-7702); `cancun` for a chain that refuses type-4 transactions. */
  hardfork?: 'cancun' | 'prague';
  /** Number of funded dev accounts; default 4. */
  accounts?: number;
  /** Each dev account's balance in wei; default 10,000 ether. */
  balance?: bigint;
}

/** A JSON-RPC error the chain answered, as viem expects a provider to throw it (code, message, data). */
export class ChainRpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message);
    this.name = 'ChainRpcError';
  }
}

/** The fields a signer needs besides to/data/value: what `prepareTransaction` answers. */
export type PreparedTransaction = {
  chainId: number;
  nonce: number;
  gas: bigint;
  to?: Address | null;
  data?: Hex;
  value?: bigint;
} & (
  | { type: 'legacy'; gasPrice: bigint }
  | { type: 'eip2930'; gasPrice: bigint; accessList: AccessList }
  | { type: 'eip1559'; maxFeePerGas: bigint; maxPriorityFeePerGas: bigint }
  | { type: 'eip7702'; maxFeePerGas: bigint; maxPriorityFeePerGas: bigint; authorizationList: SignedAuthorizationList }
);

export interface ReadParams {
  address: Address;
  abi: Abi;
  functionName: string;
  args?: readonly unknown[];
}

export interface WriteParams extends ReadParams {
  /** A dev account (default the first) or any viem local account with funds. */
  account?: Account;
  value?: bigint;
}

export interface Chain {
  readonly chainId: number;
  readonly chain: ViemChain;
  readonly publicClient: PublicClient<Transport, ViemChain>;
  /** hardhat_* / evm_* methods (setBalance, snapshot, revert, mine, impersonation...). */
  readonly testClient: TestClient<'hardhat', Transport, ViemChain>;
  /** Funded dev accounts (viem local accounts) and their private keys, same order. */
  readonly accounts: readonly PrivateKeyAccount[];
  readonly privateKeys: readonly Hex[];
  /** A raw JSON-RPC call to the chain; an error answer throws ChainRpcError. */
  request(method: string, params?: readonly unknown[]): Promise<unknown>;
  /** Deploys `artifact` from a dev account; throws if the deployment reverts. */
  deploy(
    artifact: Artifact,
    args?: readonly unknown[],
    options?: { account?: Account },
  ): Promise<{ address: Address; receipt: TransactionReceipt }>;
  /** Sends a signed transaction and returns its receipt (mined at once: automine). A reverted one is mined with status `reverted`; one the chain refuses throws. */
  sendRawTransaction(serialized: Hex): Promise<TransactionReceipt>;
  /** A contract call from a dev account (signed locally by viem), mined; returns the receipt. */
  write(params: WriteParams): Promise<TransactionReceipt>;
  /** eth_call of a view function, decoded. */
  read<T = unknown>(params: ReadParams): Promise<T>;
  /** Adds `amount` wei (default 10 ether) to the balance of `address`. */
  fund(address: Address, amount?: bigint): Promise<void>;
  /**
   * Nonce (pending), gas estimate and current fees for a transaction from `from`, typed for `type` (default
   * eip1559). `accessList` is for eip2930 (estimated with it; the other types leave it out).
   */
  prepareTransaction(
    from: Address,
    tx: { to?: Address | null; data?: Hex; value?: bigint; accessList?: AccessList; authorizationList?: SignedAuthorizationList },
    type?: PreparedTransaction['type'],
  ): Promise<PreparedTransaction>;
  /** Moves the chain's clock `seconds` ahead and mines a block, so `latest` (and the next transaction) sees it. */
  advanceTime(seconds: number): Promise<void>;
  /** Drops the chain; later calls throw. */
  close(): Promise<void>;
}

/** A transaction as the keystore's sign request takes it (the SDK's `signTransaction`). */
export type KeystoreTransaction = Extract<SignRequestInput, { type: 'transaction' }>['transaction'];

/**
 * `prepareTransaction`'s answer as the keystore takes it: integers as decimal strings, and each authorization
 * reduced to the fields its strict schema allows (viem's also carry `v`).
 */
export function toKeystoreTransaction(tx: PreparedTransaction): KeystoreTransaction {
  const common = {
    chainId: tx.chainId,
    nonce: tx.nonce,
    gas: tx.gas.toString(),
    ...(tx.to !== undefined ? { to: tx.to } : {}),
    ...(tx.data !== undefined ? { data: tx.data } : {}),
    ...(tx.value !== undefined ? { value: tx.value.toString() } : {}),
  };
  if (tx.type === 'legacy') return { type: 'legacy', ...common, gasPrice: tx.gasPrice.toString() };
  if (tx.type === 'eip2930') {
    const accessList = tx.accessList.map(({ address, storageKeys }) => ({ address, storageKeys: [...storageKeys] }));
    return { type: 'eip2930', ...common, gasPrice: tx.gasPrice.toString(), accessList };
  }
  const fees = { maxFeePerGas: tx.maxFeePerGas.toString(), maxPriorityFeePerGas: tx.maxPriorityFeePerGas.toString() };
  if (tx.type === 'eip1559') return { type: 'eip1559', ...common, ...fees };
  const authorizationList = tx.authorizationList.map(({ address, chainId, nonce, r, s, yParity }) => ({
    address,
    chainId,
    nonce,
    r,
    s,
    yParity: yParity as 0 | 1,
  }));
  return { type: 'eip7702', ...common, ...fees, authorizationList };
}

/** Deterministic dev keys, so addresses are stable across runs (and can never hold value elsewhere by chance). */
export function devPrivateKey(i: number): Hex {
  return keccak256(stringToHex(`nks-chain dev account ${i}`));
}

type RpcBody = { result?: unknown; error?: { code: number; message: string; data?: unknown } };
type FromChain = { ready: true } | { startError: string } | { id: number; data: string | RpcBody };

export async function startChain(options: ChainOptions = {}): Promise<Chain> {
  const chainId = options.chainId ?? 31337;
  const balance = options.balance ?? parseEther('10000');
  const privateKeys = Array.from({ length: options.accounts ?? 4 }, (_, i) => devPrivateKey(i));
  const accounts = privateKeys.map((k) => privateKeyToAccount(k));

  // The chain runs in a process of its own (see test/chain/edr-process.cjs for why), spoken to over IPC.
  const child = fork(path.join(__dirname, 'edr-process.cjs'), [], { execArgv: [], stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  let output = '';
  const keep = (c: Buffer) => void (output = (output + c.toString('utf8')).slice(-4096));
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  let gone: string | null = null;
  let nextId = 1;
  const pending = new Map<number, { resolve: (body: RpcBody) => void; reject: (e: Error) => void }>();
  let started: { resolve: () => void; reject: (e: Error) => void } | null = null;
  const ready = new Promise<void>((resolve, reject) => (started = { resolve, reject }));

  child.on('message', (msg: FromChain) => {
    if ('ready' in msg) return started?.resolve();
    if ('startError' in msg) return started?.reject(new Error(`the chain did not start: ${msg.startError}`));
    const call = pending.get(msg.id);
    pending.delete(msg.id);
    call?.resolve((typeof msg.data === 'string' ? JSON.parse(msg.data) : msg.data) as RpcBody);
  });
  const fail = (why: string) => {
    gone ??= why;
    const error = new Error(gone);
    started?.reject(error);
    for (const call of pending.values()) call.reject(error);
    pending.clear();
  };
  child.on('exit', (code, signal) => fail(`the chain process exited (${signal ?? code})${output ? `: ${output}` : ''}`));
  child.on('error', (e) => fail(`the chain process failed: ${e.message}`));
  child.send({ start: { chainId, hardfork: options.hardfork ?? 'prague', privateKeys, balance: balance.toString() } });
  try {
    await ready;
  } catch (e) {
    child.kill();
    await closed;
    throw e;
  }

  async function request(method: string, params: readonly unknown[] = []): Promise<unknown> {
    if (gone) throw new Error(`chain ${chainId}: ${gone} (${method})`);
    const id = nextId++;
    const body = await new Promise<RpcBody>((resolve, reject) => {
      pending.set(id, { resolve, reject });
      child.send({ id, request: { jsonrpc: '2.0', id, method, params } });
    });
    if (body.error) {
      // EDR answers a revert as Hardhat does (-32000, data {data: revert bytes}); a node answers code 3 with the
      // bytes as data (EIP-1474), which is what viem decodes into the contract's custom error.
      const { code, message, data } = body.error;
      const reverted = (data as { data?: unknown } | undefined)?.data;
      if (typeof reverted === 'string' && reverted.startsWith('0x')) throw new ChainRpcError(3, message, reverted);
      throw new ChainRpcError(code, message, data);
    }
    return body.result;
  }

  const chain = defineChain({
    id: chainId,
    name: `nks-chain ${chainId}`,
    nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
    rpcUrls: { default: { http: [] } },
  });
  // No retries: an error is the chain's answer, and a retry would only wait on a timer.
  const transport = custom(
    { request: ({ method, params }: { method: string; params?: unknown }) => request(method, (params ?? []) as unknown[]) },
    { retryCount: 0 },
  );
  // No caching (viem keeps a block number for 4 s by default): each read is the chain's state now.
  const publicClient = createPublicClient({ chain, transport, cacheTime: 0 });
  const testClient = createTestClient({ chain, transport, mode: 'hardhat', cacheTime: 0 });
  const walletFor = (account: Account) => createWalletClient({ chain, transport, account, cacheTime: 0 });
  const defaultAccount = accounts[0];

  const receiptOf = async (hash: Hex): Promise<TransactionReceipt> => publicClient.getTransactionReceipt({ hash });

  return {
    chainId,
    chain,
    publicClient,
    testClient,
    accounts,
    privateKeys,
    request,
    async deploy(artifact, args = [], { account = defaultAccount } = {}) {
      if (!account) throw new Error('no dev account to deploy from');
      if (artifact.bytecode === '0x') throw new Error(`${artifact.contractName} has no bytecode (abstract or an interface)`);
      const hash = await walletFor(account).deployContract({ abi: artifact.abi, bytecode: artifact.bytecode, args, chain, account });
      const receipt = await receiptOf(hash);
      if (receipt.status !== 'success' || !receipt.contractAddress)
        throw new Error(`deploying ${artifact.contractName} reverted (tx ${hash})`);
      return { address: getAddress(receipt.contractAddress), receipt };
    },
    async sendRawTransaction(serializedTransaction) {
      return receiptOf(await publicClient.sendRawTransaction({ serializedTransaction }));
    },
    async write({ account = defaultAccount, address, abi, functionName, args = [], value }) {
      if (!account) throw new Error('no dev account to send from');
      const hash = await walletFor(account).writeContract({ address, abi, functionName, args, value, chain, account });
      return receiptOf(hash);
    },
    async read<T>({ address, abi, functionName, args = [] }: ReadParams): Promise<T> {
      return (await publicClient.readContract({ address, abi, functionName, args })) as T;
    },
    async fund(address, amount = parseEther('10')) {
      const current = await publicClient.getBalance({ address });
      await testClient.setBalance({ address, value: current + amount });
    },
    async prepareTransaction(from, tx, type = 'eip1559') {
      const [nonce, gas, fees] = await Promise.all([
        publicClient.getTransactionCount({ address: from, blockTag: 'pending' }),
        publicClient.estimateGas({
          account: from,
          to: tx.to ?? undefined,
          data: tx.data,
          value: tx.value,
          accessList: tx.accessList,
          authorizationList: tx.authorizationList,
        }),
        publicClient.estimateFeesPerGas({ type: type === 'legacy' || type === 'eip2930' ? 'legacy' : 'eip1559' }),
      ]);
      const { authorizationList, accessList, ...call } = tx;
      const base = { chainId, nonce, gas, ...call };
      if (type === 'legacy') return { ...base, type, gasPrice: fees.gasPrice ?? 0n };
      if (type === 'eip2930') return { ...base, type, gasPrice: fees.gasPrice ?? 0n, accessList: accessList ?? [] };
      const eip1559 = { maxFeePerGas: fees.maxFeePerGas ?? 0n, maxPriorityFeePerGas: fees.maxPriorityFeePerGas ?? 0n };
      if (type === 'eip1559') return { ...base, type, ...eip1559 };
      if (!authorizationList?.length) throw new Error('an eip7702 transaction needs a signed authorizationList');
      return { ...base, type, ...eip1559, authorizationList };
    },
    async advanceTime(seconds) {
      await testClient.increaseTime({ seconds });
      await testClient.mine({ blocks: 1 });
    },
    async close() {
      if (!gone) {
        gone = 'the chain is closed';
        // The chain process exits by itself, so its end of the IPC channel closes and 'close' is emitted (after
        // a disconnect() from this side, Node never emits it).
        child.send({ exit: true });
      }
      await closed;
    },
  };
}
