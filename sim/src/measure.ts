/**
 * The simulated image measurement (PCR arithmetic itself, and PCR3/PCR4: shared/src/pcr.ts).
 *
 * Real Nitro: PCRn = SHA384(0^48 ‖ H) for the image parts (docs/NITRO-KMS.md, "PCRs"). The simulation has no
 * EIF, so it measures the files the enclave would run from (bundle and configuration, in a fixed order): any
 * byte that changes in them changes PCR0, as a rebuilt image would.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { extendPcr, ZERO_PCR } from '@nks/shared/pcr';

const sha384 = (...parts: Uint8Array[]) => {
  const h = createHash('sha384');
  for (const p of parts) h.update(p);
  return h.digest();
};

export interface Measurements {
  PCR0: string;
  PCR1: string;
  PCR2: string;
}

const KERNEL_DIGEST = sha384(Buffer.from('nitro-keystore-sim:kernel+ramfs'));

/** Digest of the application files: each as u64 BE length then bytes, in the given order. */
export function applicationDigest(contents: Uint8Array[]): Buffer {
  const h = createHash('sha384');
  for (const c of contents) {
    const len = Buffer.alloc(8);
    len.writeBigUInt64BE(BigInt(c.length));
    h.update(len).update(c);
  }
  return h.digest();
}

/** PCR0 (whole image), PCR1 (simulated kernel, constant), PCR2 (application) for the given files. */
export function measureContents(contents: Uint8Array[]): Measurements {
  const app = applicationDigest(contents);
  return {
    PCR0: extendPcr(ZERO_PCR, sha384(Buffer.from('nitro-keystore-sim:image'), KERNEL_DIGEST, app)).toString('hex'),
    PCR1: extendPcr(ZERO_PCR, KERNEL_DIGEST).toString('hex'),
    PCR2: extendPcr(ZERO_PCR, app).toString('hex'),
  };
}

export function measureImageFiles(files: string[]): Measurements {
  if (files.length === 0) throw new Error('no image files to measure');
  return measureContents(files.map((f) => readFileSync(f)));
}

/** nitro-cli's build-enclave output shape, so operators' tooling reads simulated measurements unchanged. */
export function asNitroCliJson(m: Measurements): { Measurements: { HashAlgorithm: string } & Measurements } {
  return { Measurements: { HashAlgorithm: 'Sha384 { ... }', ...m } };
}
