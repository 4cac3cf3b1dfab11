/**
 * Raw signing rates of the two secp256k1 implementations the project has, on one thread of this process, over
 * the same digests and key: @noble/secp256k1 (the tests' reference, configured as the enclave configured it
 * before docs/SIGNING-CURVE.md: node:crypto's SHA-256 and HMAC hooks) and libsecp256k1 through the enclave's
 * own addon, loaded as the enclave loads it (crypto/secp256k1.ts: beside the bundle in native/, or the
 * node-gyp build directory; `npm run build` first). Both produce byte-identical signatures
 * (enclave/test/secp256k1.test.ts).
 *
 *   import { measureRawCurves } from './bench-curve';
 *   const { nobleSignsPerSec, libsecp256k1SignsPerSec } = measureRawCurves({ seconds: 2 });
 *
 *   npm run build && node dist/bench-curve.js [--seconds N]     (prints the result as one JSON line)
 *
 * The two run alternately in rounds, so a machine that gets busier halfway through slows both alike.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import path from 'node:path';
import * as secp from '@noble/secp256k1';
import { loadCurveAddon, signDigest, type CurveAddon } from '../enclave/src/crypto/secp256k1';

export interface RawCurveOptions {
  /** Measuring time per implementation, in seconds (default 2), split into `rounds` (default 4). */
  seconds?: number;
  rounds?: number;
  /** Distinct digests signed in turn (default 256). */
  digests?: number;
  /** Candidates for the addon, as crypto/secp256k1.ts's loadCurveAddon takes them (default: the enclave's). */
  addonCandidates?: string[];
}

export interface RawCurveRates {
  nobleSignsPerSec: number;
  libsecp256k1SignsPerSec: number;
  /** The enclave's whole signDigest (the addon plus hex encoding of r and s), the same digests. */
  enclaveSignDigestPerSec: number;
  /**
   * CPU time of this process per signature (process.cpuUsage, user + system), less disturbed than the rates
   * when other work shares the machine.
   */
  nobleCpuMicrosPerSign: number;
  libsecp256k1CpuMicrosPerSign: number;
}

interface Tally {
  n: number;
  ms: number;
  cpuMicros: number;
}

function rate(sign: (digest: Uint8Array) => void, digests: Uint8Array[], ms: number): Tally {
  let n = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + ms;
  while (performance.now() < end) {
    for (let i = 0; i < 50; i++) sign(digests[(n + i) % digests.length] as Uint8Array);
    n += 50;
  }
  const cpu = process.cpuUsage(cpu0);
  return { n, ms: performance.now() - t0, cpuMicros: cpu.user + cpu.system };
}

export function measureRawCurves(opts: RawCurveOptions = {}): RawCurveRates {
  const seconds = opts.seconds ?? 2;
  const rounds = opts.rounds ?? 4;
  secp.hashes.sha256 = (m) => new Uint8Array(createHash('sha256').update(m).digest());
  secp.hashes.hmacSha256 = (k, m) => new Uint8Array(createHmac('sha256', k).update(m).digest());
  const addon: CurveAddon = opts.addonCandidates ? loadCurveAddon(opts.addonCandidates) : loadCurveAddon();
  const sk = secp.utils.randomSecretKey();
  const digests = Array.from({ length: opts.digests ?? 256 }, () => new Uint8Array(randomBytes(32)));
  const noble = (d: Uint8Array) => secp.sign(d, sk, { prehash: false, lowS: true, format: 'recovered' });
  const lib = (d: Uint8Array) => addon.signRecoverable(d, sk);
  const whole = (d: Uint8Array) => signDigest(d, sk);
  // Warm-up (JIT, the addon's first call) and a check that the two agree on what is measured.
  for (const d of digests) {
    const a = noble(d);
    const b = lib(d);
    if (!Buffer.from(a.subarray(1)).equals(b.subarray(0, 64)) || a[0] !== b[64]) throw new Error('noble and libsecp256k1 disagree');
    whole(d);
  }
  const total: Record<'noble' | 'lib' | 'whole', Tally> = {
    noble: { n: 0, ms: 0, cpuMicros: 0 },
    lib: { n: 0, ms: 0, cpuMicros: 0 },
    whole: { n: 0, ms: 0, cpuMicros: 0 },
  };
  const slice = (seconds * 1000) / rounds;
  for (let r = 0; r < rounds; r++) {
    for (const [name, fn] of [
      ['noble', noble],
      ['lib', lib],
      ['whole', whole],
    ] as const) {
      const got = rate(fn, digests, slice);
      total[name].n += got.n;
      total[name].ms += got.ms;
      total[name].cpuMicros += got.cpuMicros;
    }
  }
  const perSec = (t: Tally) => t.n / (t.ms / 1000);
  return {
    nobleSignsPerSec: perSec(total.noble),
    libsecp256k1SignsPerSec: perSec(total.lib),
    enclaveSignDigestPerSec: perSec(total.whole),
    nobleCpuMicrosPerSign: total.noble.cpuMicros / total.noble.n,
    libsecp256k1CpuMicrosPerSign: total.lib.cpuMicros / total.lib.n,
  };
}

// Only as its own program (dist/bench-curve.js): bundled into another program, `require.main === module` would
// hold there too.
if (path.basename(process.argv[1] ?? '') === 'bench-curve.js') {
  const i = process.argv.indexOf('--seconds');
  const seconds = i > 0 ? Number(process.argv[i + 1]) : 4;
  if (!(seconds > 0)) throw new Error('--seconds must be a positive number');
  console.log(JSON.stringify(measureRawCurves({ seconds })));
}
