/** Helpers shared by the attestation tests. */
import { generateKeyPairSync } from 'node:crypto';
import type { DocumentFields } from '../../sim/src/nsm/document';
import { AttestationError } from '../src/attestation';
import { PCR_BYTES } from '../src/pcr';

/** The AttestationError `fn` throws; any other outcome fails the test. */
export function failureOf(fn: () => unknown): AttestationError {
  try {
    fn();
  } catch (e) {
    if (e instanceof AttestationError) return e;
    throw e;
  }
  throw new Error('expected an AttestationError');
}

/** PCR0 of the sample documents: an image's measurement, not debug mode's all-zero PCR0. */
export const SAMPLE_PCR0 = Buffer.alloc(PCR_BYTES, 0xa0);

/**
 * The fields of a test attestation document: 16 PCRs (PCR0 is SAMPLE_PCR0, PCRn for n > 0 is n repeated), an RSA
 * public key, nonce and user data.
 */
export function sampleDocumentFields() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pcrs = new Map<number, Buffer>(Array.from({ length: 16 }, (_, i) => [i, i === 0 ? SAMPLE_PCR0 : Buffer.alloc(PCR_BYTES, i)]));
  const fields = (over: Partial<DocumentFields> = {}): DocumentFields => ({
    moduleId: 'i-0123456789abcdef0-enc0123456789abcdef',
    timestamp: Date.now(),
    pcrs,
    publicKey: rsa.publicKey.export({ type: 'spki', format: 'der' }),
    nonce: Buffer.from('nonce-1'),
    userData: Buffer.from('user-data'),
    ...over,
  });
  return { rsa, fields };
}
