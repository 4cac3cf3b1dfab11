/**
 * keys.signBatch (docs/PROTOCOL.md, "Batch signing") spoken straight over the RPC, as a parent that owns vsock
 * would: a batch must give it nothing a sequence of keys.sign calls with the same key would not. The records,
 * blob and project are checked once and bind the whole batch (one key, one project); the rules and limits of the
 * project's policy apply to each request in order; the count and the size are refused by the enclave itself; a
 * cold batch costs exactly one KMS Decrypt, and none when no request passes its rules.
 */
import net from 'node:net';
import { recoverAddress, recoverMessageAddress, recoverTypedDataAddress, type TypedDataDefinition } from 'viem';
import type { CreateResult, ProjectResult, SignBatchResult } from '@nks/shared/enclave-api';
import { encodeFrame } from '@nks/shared/framing';
import type { PoliciesInput } from '@nks/shared/policy/schema';
import type { SignedRecord } from '@nks/shared/records';
import { SIGN_BATCH_MAX_BYTES, SIGN_BATCH_MAX_REQUESTS, type SignResult } from '@nks/shared/signing/schema';
import { simulatedSocketPath } from '@nks/shared/transport';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { atLimitValues } from '@nks/shared-test/typed-data-payloads';
import { digestOf, ENCLAVE_ADDRESS, startEnclaveHarness, type EnclaveHarness } from './harness';

const ALL_TYPES = ['digest', 'message', 'typedData', 'transaction', 'authorization', 'userOperation'];
const digest = (i: number) => ({ type: 'digest', digest: digestOf(i) }) as const;
const message = (text: string) => ({ type: 'message', message: text }) as const;
const typedData = {
  domain: { name: 'Pay', version: '1', chainId: 1 },
  types: { Payment: [{ name: 'amount', type: 'uint256' }] },
  primaryType: 'Payment',
  message: { amount: '5' },
};
const tx = (over: Record<string, unknown> = {}) =>
  ({
    type: 'transaction',
    transaction: {
      type: 'eip1559',
      chainId: 1,
      nonce: 0,
      to: '0x000000000000000000000000000000000000dEaD',
      value: '1',
      gas: '21000',
      maxFeePerGas: '2',
      maxPriorityFeePerGas: '1',
      ...over,
    },
  }) as const;

describe('keys.signBatch over the RPC', () => {
  let h: EnclaveHarness;
  let n = 0;

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-batch-'));
  }, 60_000);
  afterAll(async () => {
    await h?.stop();
  });

  const newProject = (policies?: PoliciesInput): Promise<ProjectResult> =>
    h.client.call('projects.create', {
      settings: { auth: { type: 'token' }, allowedRequestTypes: ALL_TYPES, ...(policies ? { policies } : {}) } as never,
    });
  const newKey = (project?: ProjectResult) => h.create(`batch-${++n}`, project ? { project: project.record } : {});
  const batch = (key: CreateResult, requests: unknown[], project: SignedRecord = h.defaultProject) =>
    h.client.call('keys.signBatch', { keyId: key.keyId, blob: key.blob, record: key.record, project, requests: requests as never });
  const sign = (key: CreateResult, request: unknown, project: SignedRecord = h.defaultProject) =>
    h.client.call('keys.sign', { keyId: key.keyId, blob: key.blob, record: key.record, project, request: request as never });
  const health = () => h.client.call('enclave.health', {});
  const refusal = async (p: Promise<unknown>) => {
    const err = await rejection(p);
    return { code: err.code, message: err.message };
  };
  const ok = (r: SignBatchResult['results'][number]): SignResult => {
    if (!('result' in r)) throw new Error(`expected a result, got ${JSON.stringify(r)}`);
    return r.result;
  };

  it('a cold batch: one Decrypt, each request signed as keys.sign signs it, in order', async () => {
    const key = await newKey();
    const requests = [digest(1), message('hello'), { type: 'typedData', typedData }, tx(), digest(2)];
    const [decrypts, before] = [await h.decryptCalls(), await health()];
    const { results } = await batch(key, requests);
    expect(await h.decryptCalls()).toBe(decrypts + 1);
    expect((await health()).counters.signs).toBe(before.counters.signs + requests.length);
    const got = results.map(ok);
    expect(await recoverAddress({ hash: digestOf(1) as `0x${string}`, signature: got[0]!.signature })).toBe(key.address);
    expect(await recoverMessageAddress({ message: 'hello', signature: got[1]!.signature })).toBe(key.address);
    const td = typedData as unknown as TypedDataDefinition;
    expect(await recoverTypedDataAddress({ ...td, signature: got[2]!.signature })).toBe(key.address);
    expect(got[3]!.serializedTransaction).toMatch(/^0x02/);
    // Exactly what single signs answer (RFC 6979: the same signatures), and the key is warm now: no Decrypt.
    for (const [i, request] of requests.entries()) expect(await sign(key, request)).toEqual(got[i]);
    expect(await h.decryptCalls()).toBe(decrypts + 1);
  });

  it("what concerns one request fails that request alone, with keys.sign's code and message", async () => {
    const key = await newKey();
    // viem refuses it while serializing (the schema cannot tell): INVALID_PARAMS, found on the signer.
    const badTx = tx({ maxFeePerGas: '1', maxPriorityFeePerGas: '2' });
    const single = await refusal(sign(key, badTx));
    expect(single.code).toBe('INVALID_PARAMS');
    const { results } = await batch(key, [digest(3), badTx, digest(4)]);
    expect(results[1]).toEqual({ error: { ...single, retryable: false } });
    expect([results[0], results[2]].map((r) => ok(r!).hash)).toEqual([digestOf(3), digestOf(4)]);
  });

  it("the policy's rules and limits apply to each request in order: the limit counts every one", async () => {
    const p = await newProject({
      rules: [{ name: 'texts', effect: 'allow', when: { type: ['message'] } }],
      limits: [{ name: 'three', scope: 'key', window: 'hour', maxCount: 3 }],
    });
    const key = await newKey(p);
    const decrypts = await h.decryptCalls();
    // Nothing passes the rules: no Decrypt, as for refused single signs.
    const deniedBefore = (await health()).counters.errors.POLICY_DENIED ?? 0;
    const refused = await batch(key, [digest(1), digest(2)], p.record);
    expect(refused.results.map((r) => 'error' in r && r.error.code)).toEqual(['POLICY_DENIED', 'POLICY_DENIED']);
    // Each refused request counts among the enclave's errors, as two refused single signs would.
    expect((await health()).counters.errors.POLICY_DENIED).toBe(deniedBefore + 2);
    expect(await h.decryptCalls()).toBe(decrypts);
    const { results } = await batch(key, [message('1'), digest(1), message('2'), message('3'), message('4')], p.record);
    expect(results.map((r) => ('error' in r ? r.error.code : 'ok'))).toEqual(['ok', 'POLICY_DENIED', 'ok', 'ok', 'POLICY_DENIED']);
    expect(await h.decryptCalls()).toBe(decrypts + 1);
    // The limit's refusal and the rule's are those of keys.sign, details included.
    const overLimit = await rejection(sign(key, message('5'), p.record));
    expect(results[4]).toEqual({
      error: { code: 'POLICY_DENIED', message: overLimit.message, retryable: overLimit.retryable, details: overLimit.details },
    });
    expect(overLimit.details?.limit).toBe('three');
    const notAllowed = await rejection(sign(key, digest(9), p.record));
    expect(results[1]).toMatchObject({ error: { message: notAllowed.message, details: notAllowed.details } });
    // A second batch gets no more than the limit gave: everything refused.
    const again = await batch(key, [message('6'), message('7')], p.record);
    expect(again.results.every((r) => 'error' in r && r.error.details?.limit === 'three')).toBe(true);
  });

  it('the count is refused by the enclave: 101 requests are INVALID_PARAMS, nothing signed', async () => {
    const key = await newKey();
    const before = (await health()).counters.signs;
    const over = Array.from({ length: SIGN_BATCH_MAX_REQUESTS + 1 }, (_, i) => digest(i + 1));
    expect((await refusal(batch(key, over))).code).toBe('INVALID_PARAMS');
    expect((await refusal(batch(key, []))).code).toBe('INVALID_PARAMS');
    // One invalid request: the whole batch is INVALID_PARAMS (the schema is keys.sign's), its path named.
    const bad = await refusal(batch(key, [digest(1), { type: 'digest', digest: '0x12' }]));
    expect(bad.code).toBe('INVALID_PARAMS');
    expect(bad.message).toContain('params.requests[1].digest');
    expect((await health()).counters.signs).toBe(before);
    // 100 is the most.
    const { results } = await batch(key, over.slice(0, SIGN_BATCH_MAX_REQUESTS));
    expect(results.filter((r) => 'result' in r)).toHaveLength(SIGN_BATCH_MAX_REQUESTS);
  });

  it('a batch over the frame limit is refused by the enclave: the connection is closed, nothing signed', async () => {
    const key = await newKey();
    const before = (await health()).counters.signs;
    // 1.5 MiB of messages: within keys.sign's limits each, over what the enclave takes in one frame.
    const text = 'x'.repeat(100 * 1024);
    const requests = Array.from({ length: Math.ceil((1.5 * SIGN_BATCH_MAX_BYTES) / text.length) }, () => message(text));
    const params = { keyId: key.keyId, blob: key.blob, record: key.record, project: h.defaultProject, requests };
    const payload = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'keys.signBatch', params }));
    const socket = net.connect(simulatedSocketPath(h.runDir, ENCLAVE_ADDRESS));
    const answered: Buffer[] = [];
    socket.on('data', (d) => answered.push(d));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.once('connect', () => socket.write(encodeFrame(payload, 4 * SIGN_BATCH_MAX_BYTES)));
    socket.on('error', () => undefined);
    await closed;
    expect(Buffer.concat(answered).toString('utf8')).not.toContain('"result"');
    expect((await health()).counters.signs).toBe(before);
  });

  it("one key, one project: another key's record, another project or a disabled key refuse the whole batch", async () => {
    const [a, b] = [await newKey(), await newKey()];
    const p = await newProject();
    const before = (await health()).counters.signs;
    const call = (params: Record<string, unknown>) =>
      refusal(
        h.client.call('keys.signBatch', {
          keyId: a.keyId,
          blob: a.blob,
          record: a.record,
          project: h.defaultProject,
          requests: [digest(1)],
          ...params,
        }),
      );
    expect((await call({ record: b.record })).code).toBe('KEY_INTEGRITY');
    expect((await call({ blob: b.blob })).code).toBe('KEY_INTEGRITY');
    expect((await call({ project: p.record })).code).toBe('KEY_INTEGRITY');
    expect((await call({ keyId: b.keyId, blob: b.blob })).code).toBe('KEY_INTEGRITY');
    const disabled = await h.client.call('keys.setDisabled', { record: a.record, project: h.defaultProject, disabled: true });
    expect(await call({ record: disabled.record })).toEqual(await refusal(sign({ ...a, record: disabled.record }, digest(1))));
    expect((await call({ record: disabled.record })).code).toBe('KEY_DISABLED');
    // The record before the disable is no longer the newest: refused as it is for keys.sign.
    expect((await call({})).code).toBe('KEY_INTEGRITY');
    // A JWT on a token project's batch, as for keys.sign.
    expect((await call({ keyId: b.keyId, blob: b.blob, record: b.record, jwt: 'a.b.c' })).code).toBe('INVALID_PARAMS');
    expect((await health()).counters.signs).toBe(before);
  });

  it("the enclave itself refuses a batch whose typed data together exceeds one request's budget", async () => {
    const key = await newKey();
    const requests = [
      { type: 'typedData', typedData: atLimitValues() },
      { type: 'typedData', typedData: atLimitValues() },
    ];
    const decrypts = await h.decryptCalls();
    const err = await rejection(batch(key, requests));
    expect(err.code).toBe('INVALID_PARAMS');
    expect(err.message).toMatch(/requests\[1\]\.typedData.*shares one request's budget/);
    expect(await h.decryptCalls()).toBe(decrypts);
  });

  it('typed data at the budget is hashed off the main thread: health is answered while the batch is signed', async () => {
    const key = await newKey();
    await sign(key, digest(1)); // warm
    // One request at the typed-data budget's value limit (about half a second of hashing here; a batch's typed data
    // shares one request's budget, so this is the costliest batch there is), and a digest behind it.
    const requests = [{ type: 'typedData', typedData: atLimitValues() }, digest(2)];
    const order: string[] = [];
    const done = batch(key, requests).then((r) => {
      order.push('batch');
      return r;
    });
    for (let i = 0; i < 3; i++) {
      await health();
      order.push('health');
    }
    const { results } = await done;
    expect(order).toEqual(['health', 'health', 'health', 'batch']);
    expect(results).toHaveLength(2);
    // Each signed, or (on a loaded machine) past its own job deadline: a retryable error in its place.
    for (const r of results) expect('result' in r || ['TIMEOUT', 'UNAVAILABLE'].includes(r.error.code)).toBe(true);
  });
});
