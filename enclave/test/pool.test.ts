/** Signing on worker threads: the same results as on the calling thread, and a lost worker is replaced. */
import path from 'node:path';
import { hexToBytes } from 'viem';
import { KeystoreError } from '../../shared/src/errors';
import { SignRequestSchema } from '../../shared/src/signing/schema';
import { addressOf, publicKeyOf } from '../src/crypto/secp256k1';
import { SignerPool } from '../src/signing/pool';
import { signRequest } from '../src/signing/sign';

// The workers run the built bundle (npm test builds it first), as in the enclave.
const BUNDLE = path.resolve(__dirname, '../../dist/enclave.js');
const KEY = hexToBytes('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d');
const ADDRESS = addressOf(publicKeyOf(KEY));

describe('signer pool', () => {
  let pool: SignerPool;
  beforeAll(() => {
    pool = new SignerPool(2, BUNDLE);
  });
  afterAll(() => pool.close());

  it('signs every request exactly as the calling thread would, and zeroes nothing of the caller', async () => {
    const requests = [
      { type: 'digest', digest: `0x${'ab'.repeat(32)}` },
      { type: 'message', message: 'hello' },
      { type: 'transaction', transaction: { type: 'eip1559', chainId: 1, nonce: 0, to: ADDRESS, gas: '21000', maxFeePerGas: '2', maxPriorityFeePerGas: '1', value: '5' } },
    ].map((r) => SignRequestSchema.parse(r));
    const secret = new Uint8Array(KEY);
    const results = await Promise.all(requests.map((r) => pool.sign(r, secret, ADDRESS)));
    expect(results).toEqual(requests.map((r) => signRequest(r, KEY, ADDRESS)));
    expect(secret).toEqual(KEY); // the worker zeroes its own copy, not the cache's
  });

  it('passes signing errors back with their reason', async () => {
    const bad = SignRequestSchema.parse({ type: 'typedData', typedData: { types: { M: [{ name: 'a', type: 'address' }] }, primaryType: 'M', message: { a: 'x' } } });
    await expect(pool.sign(bad, new Uint8Array(KEY), ADDRESS)).rejects.toMatchObject({ reason: 'INVALID_PARAMS' });
  });

  it('fails requests held by a worker that stops with a retryable error, then replaces the worker', async () => {
    const req = SignRequestSchema.parse({ type: 'digest', digest: `0x${'cd'.repeat(32)}` });
    const slots = (pool as unknown as { slots: Array<{ worker: { terminate(): Promise<number> } }> }).slots;
    const inflight = Promise.all(Array.from({ length: 20 }, () => pool.sign(req, new Uint8Array(KEY), ADDRESS).catch((e: unknown) => e)));
    await (slots[0] as { worker: { terminate(): Promise<number> } }).worker.terminate();
    const outcomes = await inflight;
    const failures = outcomes.filter((o) => o instanceof KeystoreError) as KeystoreError[];
    for (const f of failures) expect([f.reason, f.retryable]).toEqual(['INTERNAL', true]);
    await new Promise((r) => setTimeout(r, 50));
    const again = await Promise.all(Array.from({ length: 4 }, () => pool.sign(req, new Uint8Array(KEY), ADDRESS)));
    expect(new Set(again.map((r) => r.signature)).size).toBe(1);
  });
});
