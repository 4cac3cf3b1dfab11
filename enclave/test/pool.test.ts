/**
 * Signing on worker threads: the same results as on the calling thread; typed data never on the calling
 * thread, even with no signer threads configured; a deadline per job after which the thread is replaced; a
 * lost thread is replaced; the secret reaches a thread by transfer.
 */
import crypto from 'node:crypto';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { hexToBytes } from 'viem';
import { KeystoreError } from '@nks/shared/errors';
import { SignRequestSchema, type SignRequest } from '@nks/shared/signing/schema';
import { chainedTypes, permit2Batch, seaportBulkOrder } from '@nks/shared-test/typed-data-payloads';
import { addressOf, publicKeyOf, signDigest } from '../src/crypto/secp256k1';
import { SignerPool } from '../src/signing/pool';
import { signRequest } from '../src/signing/sign';
import { nobleSign } from './curve-differential';

// The workers run the built bundle (npm test builds it first), as in the enclave.
const BUNDLE = path.resolve(__dirname, '../../dist/enclave.js');
const KEY = hexToBytes('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d');
const ADDRESS = addressOf(publicKeyOf(KEY));

const digest = (n: number) => SignRequestSchema.parse({ type: 'digest', digest: `0x${n.toString(16).padStart(64, '0')}` });
const typed = SignRequestSchema.parse({ type: 'typedData', typedData: permit2Batch(5) });
/** A request that takes seconds to hash. The schema's budget refuses it; the pool trusts its caller to have validated, so it gets through here. */
const endless = { type: 'typedData', typedData: chainedTypes(250, 20_000) } as unknown as SignRequest;

type Slots = Array<{ worker: Worker; heavy: number; queue: number[] }>;
const slotsOf = (pool: SignerPool) => (pool as unknown as { slots: Slots }).slots;
const settle = <T>(p: Promise<T>) =>
  p.then(
    (v) => v as T | KeystoreError,
    (e: unknown) => e as KeystoreError,
  );

describe('signer pool with signer threads', () => {
  let pool: SignerPool;
  beforeAll(() => {
    pool = new SignerPool(2, BUNDLE);
  });
  afterAll(() => pool.close());

  it('signs every request exactly as the calling thread would, and zeroes nothing of the caller', async () => {
    const requests = [
      digest(0xab),
      SignRequestSchema.parse({ type: 'message', message: 'hello' }),
      SignRequestSchema.parse({
        type: 'transaction',
        transaction: {
          type: 'eip1559',
          chainId: 1,
          nonce: 0,
          to: ADDRESS,
          gas: '21000',
          maxFeePerGas: '2',
          maxPriorityFeePerGas: '1',
          value: '5',
        },
      }),
      typed,
    ];
    const secret = new Uint8Array(KEY);
    const results = await Promise.all(requests.map((r) => pool.sign(r, secret, ADDRESS)));
    expect(results).toEqual(requests.map((r) => signRequest(r, KEY, ADDRESS)));
    expect(secret).toEqual(KEY); // the worker zeroes its own copy, not the cache's
  });

  it('passes signing errors back with their reason', async () => {
    const bad = SignRequestSchema.parse({
      type: 'typedData',
      // A checksum the schema leaves to viem (it costs a keccak), which refuses it on the signer thread.
      typedData: {
        types: { M: [{ name: 'a', type: 'address' }] },
        primaryType: 'M',
        message: { a: '0x8ba1f109551bd432803012645Ac136ddd64DBA72' },
      },
    });
    await expect(pool.sign(bad, new Uint8Array(KEY), ADDRESS)).rejects.toMatchObject({ code: 'INVALID_PARAMS' });
  });

  it('sends a thread a transferred copy of the secret, leaving nothing readable behind on this thread', async () => {
    const post = jest.spyOn(Worker.prototype, 'postMessage');
    try {
      const secret = new Uint8Array(KEY);
      await pool.sign(digest(7), secret, ADDRESS);
      const [job, transfer] = post.mock.calls[0] as [{ secret: Uint8Array }, ArrayBuffer[]];
      expect(transfer).toEqual([job.secret.buffer]);
      expect(job.secret.byteLength).toBe(0); // detached: the bytes moved to the worker
      expect(secret).toEqual(KEY);
    } finally {
      post.mockRestore();
    }
  });

  it('fails the jobs of a thread that stops with a retryable error, replaces it with a new thread, and signs on that thread', async () => {
    const before = slotsOf(pool).map((s) => s.worker);
    const threadIdsBefore = before.map((w) => w.threadId);
    expect(threadIdsBefore.every((id) => id > 0)).toBe(true);
    // A long job occupies one thread, so that it certainly holds a job when it stops.
    const long = settle(pool.sign(endless, new Uint8Array(KEY), ADDRESS));
    const others = Promise.all(Array.from({ length: 20 }, (_, i) => settle(pool.sign(digest(i), new Uint8Array(KEY), ADDRESS))));
    const victim = slotsOf(pool).find((s) => s.heavy > 0);
    expect(victim).toBeDefined();
    const victimIndex = slotsOf(pool).indexOf(victim as Slots[number]);
    const victimThreadId = (victim as Slots[number]).worker.threadId;
    expect(victim?.queue.length).toBeGreaterThan(0);
    await victim?.worker.terminate();

    // The failure happened: the job the thread held failed, retryably, as soon as the thread was gone (its
    // exit is handled before any later event-loop turn, so it cannot be left hanging).
    const failed = await Promise.race([long, new Promise((r) => setImmediate(() => r('still pending after its thread exited')))]);
    expect(failed).toBeInstanceOf(KeystoreError);
    expect([(failed as KeystoreError).code, (failed as KeystoreError).retryable, (failed as KeystoreError).message]).toEqual([
      'UNAVAILABLE',
      true,
      'a signer thread stopped; retry',
    ]);
    // The others either failed the same way (queued behind on the stopped thread) or were signed correctly.
    const settled = await others;
    settled.forEach((o, i) => {
      if (o instanceof KeystoreError) expect([o.code, o.retryable]).toEqual(['UNAVAILABLE', true]);
      else expect(o).toEqual(signRequest(digest(i), KEY, ADDRESS));
    });

    // A new thread stands in the stopped one's slot: another Worker, another thread id; the other slot is untouched.
    const after = slotsOf(pool).map((s) => s.worker);
    const role = (w: Worker) => (w === victim?.worker ? 'the stopped thread' : before.includes(w) ? 'a thread kept' : 'a new thread');
    expect(after.map(role)).toEqual(before.map((_, i) => (i === victimIndex ? 'a new thread' : 'a thread kept')));
    const replacement = after[victimIndex] as Worker;
    expect(pool.replacements).toBe(1);
    if (replacement.threadId < 0) throw new Error('the replacement thread is not running');
    expect([...threadIdsBefore, victimThreadId]).not.toContain(replacement.threadId);
    expect(replacement.threadId).toBeGreaterThan(Math.max(...threadIdsBefore));

    // Costly requests are spread over both threads, so the new thread signs some of them; all are right.
    const post = jest.spyOn(Worker.prototype, 'postMessage');
    try {
      const requests = [typed, typed, typed, typed, digest(1), digest(2)];
      const again = await Promise.all(requests.map((r) => pool.sign(r, new Uint8Array(KEY), ADDRESS)));
      expect(again).toEqual(requests.map((r) => signRequest(r, KEY, ADDRESS)));
      const byReplacement = post.mock.contexts.filter((w) => w === replacement).length;
      expect(byReplacement).toBeGreaterThanOrEqual(2);
    } finally {
      post.mockRestore();
    }
    expect(slotsOf(pool)[victimIndex]?.worker).toBe(replacement); // and it is still there: it did not die too
    expect(pool.replacements).toBe(1);
  });
});

describe('signer pool with one signer thread (a 2-vCPU enclave)', () => {
  it('signs cheap requests on the calling thread rather than behind costly work on its only thread', async () => {
    const pool = new SignerPool(1, BUNDLE, undefined, { deadlineMs: 1000 });
    try {
      await pool.sign(digest(1), new Uint8Array(KEY), ADDRESS); // the thread is up
      let typedDone = false;
      const busy = settle(pool.sign(endless, new Uint8Array(KEY), ADDRESS)).finally(() => (typedDone = true));
      const results = await Promise.all(
        [digest(2), SignRequestSchema.parse({ type: 'message', message: 'hi' })].map((r) => pool.sign(r, new Uint8Array(KEY), ADDRESS)),
      );
      expect(typedDone).toBe(false); // answered while the thread was still hashing
      expect(results).toEqual(
        [digest(2), SignRequestSchema.parse({ type: 'message', message: 'hi' })].map((r) => signRequest(r, KEY, ADDRESS)),
      );
      expect(await busy).toMatchObject({ code: 'TIMEOUT' });
      // With nothing costly in hand, the thread signs everything again.
      const post = jest.spyOn(Worker.prototype, 'postMessage');
      try {
        await pool.sign(digest(3), new Uint8Array(KEY), ADDRESS);
        expect(post).toHaveBeenCalledTimes(1);
      } finally {
        post.mockRestore();
      }
    } finally {
      await pool.close();
    }
  });
});

describe('signer pool deadline', () => {
  it('answers TIMEOUT for a job past its deadline, fails the jobs queued behind it as retryable, and replaces the thread', async () => {
    const errors: string[] = [];
    const pool = new SignerPool(1, BUNDLE, (m) => errors.push(m), { deadlineMs: 1000 });
    try {
      await pool.sign(digest(1), new Uint8Array(KEY), ADDRESS); // the thread is up
      const [worker] = slotsOf(pool).map((s) => s.worker);
      const slow = settle(pool.sign(endless, new Uint8Array(KEY), ADDRESS));
      const bigMessage = SignRequestSchema.parse({ type: 'message', message: 'x'.repeat(100_000) });
      const queued = [settle(pool.sign(typed, new Uint8Array(KEY), ADDRESS)), settle(pool.sign(bigMessage, new Uint8Array(KEY), ADDRESS))];
      const err = await slow;
      expect(err).toBeInstanceOf(KeystoreError);
      expect([(err as KeystoreError).code, (err as KeystoreError).message]).toEqual(['TIMEOUT', 'signing did not finish within 1000 ms']);
      for (const q of await Promise.all(queued)) {
        expect(q).toBeInstanceOf(KeystoreError);
        expect([(q as KeystoreError).code, (q as KeystoreError).retryable]).toEqual(['UNAVAILABLE', true]);
      }
      expect([pool.timeouts, pool.replacements]).toEqual([1, 1]);
      expect(errors).toEqual(['a signing job ran past its 1000 ms deadline; replacing its signer thread']);
      expect(slotsOf(pool)[0]?.worker).not.toBe(worker);
      expect(await pool.sign(typed, new Uint8Array(KEY), ADDRESS)).toEqual(signRequest(typed, KEY, ADDRESS));
    } finally {
      await pool.close();
    }
  });
});

describe('signer pool with no signer threads configured (one vCPU)', () => {
  let pool: SignerPool;
  beforeAll(() => {
    pool = new SignerPool(0, BUNDLE, undefined, { deadlineMs: 1000 });
  });
  afterAll(() => pool.close());

  it('signs cheap requests on the calling thread', async () => {
    const p = pool.sign(digest(3), new Uint8Array(KEY), ADDRESS);
    let turned = false;
    setImmediate(() => (turned = true));
    expect(await p).toEqual(signRequest(digest(3), KEY, ADDRESS));
    expect(turned).toBe(false); // answered without an event-loop turn: no thread involved
    expect(pool.threads).toBe(1); // the typed-data thread
  });

  it('hashes and signs typed data on its thread, never on the calling one', async () => {
    const bulk = SignRequestSchema.parse({ type: 'typedData', typedData: seaportBulkOrder(6) });
    const p = pool.sign(bulk, new Uint8Array(KEY), ADDRESS);
    let turned = false;
    setImmediate(() => (turned = true));
    expect(await p).toEqual(signRequest(bulk, KEY, ADDRESS));
    expect(turned).toBe(true); // the calling thread kept turning while the request was hashed
    // Only a thread can be stopped mid-hash: a request past the deadline answers TIMEOUT.
    await expect(pool.sign(endless, new Uint8Array(KEY), ADDRESS)).rejects.toMatchObject({ code: 'TIMEOUT' });
    expect(await pool.sign(typed, new Uint8Array(KEY), ADDRESS)).toEqual(signRequest(typed, KEY, ADDRESS));
    expect(await pool.sign(digest(4), new Uint8Array(KEY), ADDRESS)).toEqual(signRequest(digest(4), KEY, ADDRESS));
  });

  it('sends messages, transactions and user operations of more than a few KiB to its thread too', async () => {
    const large = [
      SignRequestSchema.parse({ type: 'message', message: 'x'.repeat(100_000) }),
      SignRequestSchema.parse({
        type: 'transaction',
        transaction: {
          type: 'eip2930',
          chainId: 1,
          nonce: 0,
          to: ADDRESS,
          gas: '1',
          gasPrice: '1',
          accessList: [{ address: ADDRESS, storageKeys: Array.from({ length: 500 }, (_, i) => `0x${i.toString(16).padStart(64, '0')}`) }],
        },
      }),
    ];
    const small = [
      SignRequestSchema.parse({ type: 'message', message: 'x'.repeat(1000) }),
      SignRequestSchema.parse({ type: 'authorization', authorization: { chainId: 1, address: ADDRESS, nonce: 0 } }),
    ];
    const post = jest.spyOn(Worker.prototype, 'postMessage');
    try {
      for (const r of [...large, ...small]) expect(await pool.sign(r, new Uint8Array(KEY), ADDRESS)).toEqual(signRequest(r, KEY, ADDRESS));
      expect(post.mock.calls.map(([job]) => (job as { request: SignRequest }).request)).toEqual(large);
    } finally {
      post.mockRestore();
    }
  });

  it('refuses work once closed, and fails what it held', async () => {
    const p = new SignerPool(0, BUNDLE);
    const held = settle(p.sign(endless, new Uint8Array(KEY), ADDRESS));
    await p.close();
    expect(await held).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
    await expect(p.sign(digest(5), new Uint8Array(KEY), ADDRESS)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});

describe('signing a digest', () => {
  it("hands the secret to libsecp256k1 only: no JavaScript HMAC or hash sees it, the caller's array is unchanged, and it signs the same", () => {
    const d = hexToBytes(`0x${'5a'.repeat(32)}`);
    const hmac = jest.spyOn(crypto, 'createHmac');
    const hash = jest.spyOn(crypto, 'createHash');
    let sig: unknown;
    try {
      sig = signDigest(d, KEY);
    } finally {
      hmac.mockRestore();
      hash.mockRestore();
    }
    expect(hmac).not.toHaveBeenCalled(); // (noble's RFC 6979 DRBG ran through node:crypto's HMAC)
    expect(hash).not.toHaveBeenCalled();
    expect(sig).toEqual(signDigest(d, KEY));
    expect(sig).toEqual(nobleSign(d, KEY)); // the independent reference
    expect(KEY).toEqual(hexToBytes('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d'));
  });
});
