/**
 * The signing rules end to end: the real enclave bundle over simulated vsock, configured as a one-vCPU
 * enclave (`signing.workers: 0`), with the test standing where the parent would. Typed data is hashed off the
 * main thread (health checks and digest signs are answered while it runs), dangerous or costly requests are
 * refused with INVALID_PARAMS, and a job past `signing.deadlineMs` answers TIMEOUT.
 */
import { recoverAddress, recoverTransactionAddress, recoverTypedDataAddress, type Hex } from 'viem';
import { getUserOperationHash } from 'viem/account-abstraction';
import type { CreateResult } from '@nks/shared/enclave-api';
import type { SignRequestInput } from '@nks/shared/signing/schema';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import * as payloads from '@nks/shared-test/typed-data-payloads';
import { startEnclaveHarness, type EnclaveHarness } from './harness';

describe('enclave signing with one vCPU (signing.workers 0)', () => {
  let h: EnclaveHarness;
  let key: CreateResult;

  const sign = (request: SignRequestInput) =>
    h.client.call('keys.sign', { keyId: 'signer-1', blob: key.blob, record: key.record, project: h.defaultProject, request });
  const digest = (n: number) => ({ type: 'digest', digest: `0x${n.toString(16).padStart(64, '0')}` }) as const;
  const health = () => h.client.call('enclave.health', {});

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-sig-'), { signing: { workers: 0 } });
    key = await h.create('signer-1');
    await sign(digest(1)); // unsealed and cached
  }, 90_000);

  afterAll(async () => {
    await h?.stop();
  });

  it.each([
    ['a Seaport order with 30 + 30 items', payloads.seaportOrder(30, 30)],
    ['a Permit2 PermitBatch', payloads.permit2Batch(20)],
    ['a UniswapX ExclusiveDutchOrder', payloads.uniswapXExclusiveDutchOrder(2)],
    ['a UniswapX V2DutchOrder', payloads.uniswapXV2DutchOrder(2)],
    ['a Safe transaction', payloads.safeTransaction(20)],
  ])('signs %s', async (_name, typedData) => {
    const res = await sign({ type: 'typedData', typedData });
    expect(await recoverTypedDataAddress(Object.assign({}, typedData, { signature: res.signature }) as never)).toBe(key.address);
  });

  it("answers health checks and signs digests while typed data at the budget's limit is being hashed", async () => {
    const order: string[] = [];
    const heavy = sign({ type: 'typedData', typedData: payloads.atLimitStructs() }).then((r) => (order.push('typed data'), r));
    const checked = health().then((r) => (order.push('health'), r));
    const signed = sign(digest(2)).then((r) => (order.push('digest'), r));
    const [typed, hh, d] = await Promise.all([heavy, checked, signed]);
    // Sent first, answered last: the main thread was never blocked by it. Not a race in practice: hashing this
    // takes about half a second of CPU, a health answer and a warm digest sign about a millisecond each, and a
    // main thread that hashed it itself would answer them only after it, however fast the machine.
    expect(order[2]).toBe('typed data');
    expect(hh.status).toBe('ok');
    expect(await recoverAddress({ hash: d.hash, signature: d.signature })).toBe(key.address);
    expect(await recoverAddress({ hash: typed.hash, signature: typed.signature })).toBe(key.address);
  });

  it('refuses an authorization for every chain unless asked, and signs it when asked', async () => {
    const authorization = { chainId: 0, address: '0x63c0c19a282a1B52b07dD5a65b58948A07DAE32B' as Hex, nonce: 0 };
    const err = await rejection(sign({ type: 'authorization', authorization }));
    expect([err.code, err.retryable]).toEqual(['INVALID_PARAMS', false]);
    expect(err.message).toBe(
      'params.request.authorization.chainId: chain id 0 makes the delegation valid on every chain; refused unless the request also says "allowAllChains": true',
    );
    const res = await sign({ type: 'authorization', authorization, allowAllChains: true });
    expect(await recoverAddress({ hash: res.hash, signature: res.signature })).toBe(key.address);
  });

  it('signs an EIP-4844 transaction and an EntryPoint 0.8 user operation; refuses a blob transaction without `to`', async () => {
    const transaction = {
      type: 'eip4844' as const,
      chainId: 1,
      nonce: 0,
      to: key.address,
      gas: '21000',
      maxFeePerGas: '2',
      maxPriorityFeePerGas: '1',
      maxFeePerBlobGas: '1',
      blobVersionedHashes: [`0x01${'ab'.repeat(31)}` as Hex],
    };
    const tx = await sign({ type: 'transaction', transaction });
    expect(await recoverTransactionAddress({ serializedTransaction: tx.serializedTransaction as never })).toBe(key.address);
    const err = await rejection(sign({ type: 'transaction', transaction: { ...transaction, to: null as never } }));
    expect([err.code, err.message]).toEqual([
      'INVALID_PARAMS',
      'params.request.transaction.to: an EIP-4844 transaction cannot create a contract: `to` must name the recipient',
    ]);

    const entryPoint = '0x4337084D9E255Ff0702461CF8895CE9E3b5Ff108' as const;
    const userOperation = { sender: key.address, nonce: 0, callData: '0x' as Hex, callGasLimit: 1, verificationGasLimit: 1 };
    const fees = { preVerificationGas: 1, maxFeePerGas: 1, maxPriorityFeePerGas: 1 };
    const op = await sign({ type: 'userOperation', version: '0.8', chainId: 1, entryPoint, userOperation: { ...userOperation, ...fees } });
    const userOpHash = getUserOperationHash({
      chainId: 1,
      entryPointAddress: entryPoint,
      entryPointVersion: '0.8',
      userOperation: {
        ...userOperation,
        nonce: 0n,
        callGasLimit: 1n,
        verificationGasLimit: 1n,
        preVerificationGas: 1n,
        maxFeePerGas: 1n,
        maxPriorityFeePerGas: 1n,
        signature: '0x',
      },
    });
    expect([op.userOperationHash, op.hash]).toEqual([userOpHash, userOpHash]);
    expect(await recoverAddress({ hash: userOpHash, signature: op.signature })).toBe(key.address);
  });

  it('refuses an EIP712Domain type that would leave domain fields out of the hash', async () => {
    const typedData = {
      ...payloads.permit2Batch(1),
      types: { ...payloads.permit2Batch(1).types, EIP712Domain: [{ name: 'name', type: 'string' }] },
    };
    const err = await rejection(sign({ type: 'typedData', typedData }));
    expect(err.code).toBe('INVALID_PARAMS');
    expect(err.message).toMatch(/^params\.request\.typedData\.types\.EIP712Domain: must list exactly the fields present in domain/);
  });

  it('refuses costly typed data before hashing it, and stays responsive', async () => {
    const signsBefore = (await health()).counters.signs;
    const cases: Array<[payloads.TypedDataInput, RegExp]> = [
      [payloads.chainedTypes(250, 4000), /\(maxTypes\)/],
      [payloads.emptyArrays(30, 1000), /\(maxValues\)/],
      [payloads.deepNesting(1000), /\(maxDepth\)/],
      [payloads.hugeArray(60_000), /\(maxArrayLength\)/],
    ];
    for (const [typedData, limit] of cases) {
      const err = await rejection(sign({ type: 'typedData', typedData }));
      expect(err.code).toBe('INVALID_PARAMS');
      expect(err.message).toMatch(limit);
    }
    expect((await health()).counters.signs).toBe(signsBefore);
    await expect(sign(digest(3))).resolves.toMatchObject({ address: key.address });
  });

  it('answers TIMEOUT for typed data that outlives signing.deadlineMs, then keeps signing', async () => {
    // 10 ms against about 500 ms of hashing: a slower machine only makes the timeout more certain.
    await h.restartEnclave({ signing: { workers: 0, deadlineMs: 10 } });
    try {
      await sign(digest(4)); // unsealed again after the restart
      const err = await rejection(sign({ type: 'typedData', typedData: payloads.atLimitStructs() }));
      expect([err.code, err.message]).toEqual(['TIMEOUT', 'signing did not finish within 10 ms']);
      expect((await health()).status).toBe('ok');
      await expect(sign(digest(5))).resolves.toMatchObject({ address: key.address });
      expect(h.enclave.lines.join('\n')).toMatch(/ran past its 10 ms deadline; replacing its signer thread/);
    } finally {
      // Back to the suite's configuration, so no other test depends on running before this one.
      await h.restartEnclave({ signing: { workers: 0 } });
    }
  }, 60_000);
});
