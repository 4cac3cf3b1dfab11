/**
 * The enclave's curve, libsecp256k1 in the native addon (crypto/secp256k1.ts, enclave/native/secp256k1.c),
 * against @noble/secp256k1 as the independent reference: 10,000 random cases (1,000,000 in
 * `npm run test:differential`), the edge cases of keys and digests, the errors, and worker threads.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import * as secp from '@noble/secp256k1';
import { hexToBytes, recoverAddress } from 'viem';
import { privateKeyToAddress } from 'viem/accounts';
import {
  addressOf,
  curveAddonCandidates,
  generateSecret,
  isValidSecret,
  loadCurveAddon,
  publicKeyOf,
  signDigest,
} from '../src/crypto/secp256k1';
import { hex, nobleSign, runDifferential } from './curve-differential';

const N = secp.Point.CURVE().n;
const bytes32 = (v: bigint): Uint8Array => hexToBytes(`0x${v.toString(16).padStart(64, '0')}`);
const KEY = bytes32(0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690dn);

describe('libsecp256k1 against noble, differential', () => {
  it('10,000 random keys and digests: identical public keys, addresses, r, s and recovery ids', () => {
    const seed = process.env.NKS_CURVE_SEED ?? randomBytes(8).toString('hex');
    const result = runDifferential(10_000, seed);
    expect(result.mismatches).toEqual([]);
    expect(result.mismatchCount).toBe(0);
  });
});

describe('edge cases', () => {
  it("normalizes a high s to n - s and flips the recovery id, as noble's lowS does", () => {
    // Find digests whose raw RFC 6979 signature has s > n/2 (about half of them).
    let found = 0;
    for (let i = 0; found < 20 && i < 200; i++) {
      const d = bytes32(BigInt(i + 1) * 0x1234567890abcdefn);
      const raw = secp.Signature.fromBytes(secp.sign(d, KEY, { prehash: false, lowS: false, format: 'recovered' }), 'recovered');
      if (raw.s <= N / 2n) continue;
      found++;
      const ours = signDigest(d, KEY);
      expect(BigInt(ours.s)).toBe(N - raw.s);
      expect(BigInt(ours.r)).toBe(raw.r);
      expect(ours.yParity).toBe(1 - (raw.recovery as number));
      expect(ours).toEqual(nobleSign(d, KEY));
    }
    expect(found).toBe(20);
  });

  it.each([
    ['0', 0n],
    ['1', 1n],
    ['n - 1', N - 1n],
    ['n', N],
    ['n + 1', N + 1n],
    ['2^256 - 1', 2n ** 256n - 1n],
  ])('digest %s: signed as noble signs it (reduced modulo n as RFC 6979 says), recoverable to the address', async (_, value) => {
    const d = bytes32(value);
    const ours = signDigest(d, KEY);
    expect(ours).toEqual(nobleSign(d, KEY));
    expect(BigInt(ours.s) <= N / 2n).toBe(true);
    const address = await recoverAddress({ hash: `0x${hex(d)}`, signature: { r: ours.r, s: ours.s, yParity: ours.yParity } });
    expect(address).toBe(privateKeyToAddress(`0x${hex(KEY)}`));
  });

  it('a digest >= n signs the same as that digest minus n', () => {
    expect(signDigest(bytes32(N + 5n), KEY)).toEqual(signDigest(bytes32(5n), KEY));
    expect(signDigest(bytes32(2n ** 256n - 1n), KEY)).toEqual(signDigest(bytes32(2n ** 256n - 1n - N), KEY));
  });

  it.each([
    ['0', 0n],
    ['n', N],
    ['n + 1', N + 1n],
    ['2^256 - 1', 2n ** 256n - 1n],
  ])('secret key %s is refused everywhere, with an error that does not show it', (_, value) => {
    const secret = bytes32(value);
    expect(isValidSecret(secret)).toBe(false);
    const message = 'secp256k1: invalid secret key (zero or not below the curve order)';
    expect(() => publicKeyOf(secret)).toThrow(message);
    expect(() => signDigest(bytes32(7n), secret)).toThrow(message);
    try {
      signDigest(bytes32(7n), secret);
    } catch (err) {
      expect((err as Error).name).toBe('RangeError');
      expect((err as NodeJS.ErrnoException).code).toBe('ERR_INVALID_SECRET_KEY');
    }
  });

  it.each([
    ['1', 1n],
    ['n - 1', N - 1n],
  ])('secret key %s is accepted: same public key and signatures as noble', (_, value) => {
    const secret = bytes32(value);
    expect(isValidSecret(secret)).toBe(true);
    expect(hex(publicKeyOf(secret))).toBe(hex(secp.getPublicKey(secret, false)));
    for (const d of [bytes32(0n), bytes32(N - 1n), randomBytes(32)]) expect(signDigest(d, secret)).toEqual(nobleSign(d, secret));
  });

  it('leaves the caller’s digest and secret as they were', () => {
    const secret = new Uint8Array(KEY);
    const digest = new Uint8Array(randomBytes(32));
    const before = hex(digest);
    signDigest(digest, secret);
    publicKeyOf(secret);
    expect(hex(secret)).toBe(hex(KEY));
    expect(hex(digest)).toBe(before);
  });
});

describe('bad arguments', () => {
  const secretHex = hex(KEY);
  const noSecretIn = (fn: () => unknown): string => {
    try {
      fn();
    } catch (err) {
      const text = `${(err as Error).message} ${JSON.stringify(err)}`;
      expect(text).not.toContain(secretHex);
      return (err as Error).message;
    }
    throw new Error('did not throw');
  };

  it.each([0, 31, 33, 64])('a digest of %i bytes: RangeError naming the length', (len) => {
    expect(noSecretIn(() => signDigest(new Uint8Array(len), KEY))).toBe(`secp256k1: digest must be 32 bytes, got ${len}`);
  });

  it.each([0, 31, 33])('a secret of %i bytes: RangeError naming the length; isValidSecret is false', (len) => {
    const secret = new Uint8Array(len).fill(1);
    expect(noSecretIn(() => signDigest(new Uint8Array(32), secret))).toBe(`secp256k1: secret key must be 32 bytes, got ${len}`);
    expect(noSecretIn(() => publicKeyOf(secret))).toBe(`secp256k1: secret key must be 32 bytes, got ${len}`);
    expect(isValidSecret(secret)).toBe(false);
  });

  it('not a Uint8Array: TypeError or RangeError naming the expected type', () => {
    const wrong = [`0x${secretHex}`, new Uint16Array(16), [...KEY], new DataView(KEY.buffer), null, undefined];
    for (const value of wrong) {
      expect(noSecretIn(() => publicKeyOf(value as unknown as Uint8Array))).toBe('secp256k1: secret key must be a Uint8Array of 32 bytes');
      expect(noSecretIn(() => signDigest(value as unknown as Uint8Array, KEY))).toBe('secp256k1: digest must be a Uint8Array of 32 bytes');
    }
  });

  it('the addon refuses a wrong argument count', () => {
    const addon = loadCurveAddon() as unknown as Record<string, (...a: unknown[]) => unknown>;
    expect(() => addon.signRecoverable?.(new Uint8Array(32))).toThrow('secp256k1: expected 2 arguments, got 1');
    expect(() => addon.publicKeyCreate?.()).toThrow('secp256k1: expected 1 argument, got 0');
    expect(() => addon.seckeyVerify?.(KEY, KEY)).toThrow('secp256k1: expected 1 argument, got 2');
  });

  it('a missing addon names every place tried', () => {
    expect(() => loadCurveAddon(['/nonexistent/secp256k1.node'])).toThrow(
      /the secp256k1 addon \(enclave\/native, built by `npm run build`\) could not be loaded \(tried 1\):\n {2}\/nonexistent\/secp256k1\.node/,
    );
  });
});

describe('keys and threads', () => {
  it('generateSecret: valid 32-byte keys on their own ArrayBuffer, different each time, signing as noble does', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 50; i++) {
      const s = generateSecret();
      expect(s.byteLength).toBe(32);
      expect(s.buffer.byteLength).toBe(32);
      expect(secp.utils.isValidSecretKey(s)).toBe(true);
      seen.add(hex(s));
    }
    expect(seen.size).toBe(50);
    const s = generateSecret();
    expect(addressOf(publicKeyOf(s))).toBe(privateKeyToAddress(`0x${hex(s)}`));
    const d = randomBytes(32);
    expect(signDigest(d, s)).toEqual(nobleSign(d, s));
  });

  it('loads and signs in worker threads (one context per thread), the same signatures as the main thread', async () => {
    const addonPath = curveAddonCandidates().find((c) => c.endsWith(path.join('build', 'Release', 'secp256k1.node')) && existsSync(c));
    const digests = Array.from({ length: 8 }, () => hex(randomBytes(32)));
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      const addon = require(workerData.addonPath);
      const key = Buffer.from(workerData.key, 'hex');
      parentPort.postMessage(workerData.digests.map((d) => Buffer.from(addon.signRecoverable(Buffer.from(d, 'hex'), key)).toString('hex')));
    `;
    const run = () =>
      new Promise<string[]>((resolve, reject) => {
        const w = new Worker(code, { eval: true, workerData: { addonPath, key: hex(KEY), digests } });
        w.once('message', (m: string[]) => resolve(m));
        w.once('error', reject);
      });
    const results = await Promise.all([run(), run(), run()]);
    const expected = digests.map((d) => {
      const sig = signDigest(hexToBytes(`0x${d}`), KEY);
      return `${sig.r.slice(2)}${sig.s.slice(2)}0${sig.yParity}`;
    });
    for (const r of results) expect(r).toEqual(expected);
  });
});
