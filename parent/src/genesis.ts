/**
 * `parent genesis` (docs/OPERATIONS.md, "Genesis"): asks an enclave running the genesis image (a configuration
 * without `identity`) to make the keystore identity, checks what it answers, and writes it to a file for the
 * operator to put in the enclave configuration of the normal image:
 *
 *   {publicKey, blob, blobSignature, attestation, defaultProject, nonce}
 *
 * The attestation document is verified here (its certificate chain up to the trusted root, the operator's
 * nonce, and user_data binding the public key under the identity tag); the operator still checks its PCR0
 * is the genesis image's, since only they know which image that is.
 */
import { verify } from 'node:crypto';
import fs from 'node:fs';
import { decodeBlobBase64 } from '@nks/shared/blob';
import { USER_DATA_TAGS, taggedUserData } from '@nks/shared/attestation/user-data';
import { verifyAttestation, type VerifiedAttestation } from '@nks/shared/attestation/verify';
import type { GenesisResult } from '@nks/shared/enclave-api';
import { KeystoreError } from '@nks/shared/errors';
import { IDENTITY_PUBLIC_KEY_RE } from '@nks/shared/identifiers';
import type { Logger } from '@nks/shared/log';
import {
  DEFAULT_PROJECT_ID,
  decodeProjectRecord,
  identityBlobDigest,
  identityPublicKey,
  verifySignedRecord,
  type SignedRecord,
} from '@nks/shared/records';
import { createTransport } from '@nks/shared/transport';
import { enclavePoolFor } from './app';
import type { ParentConfig } from './config';

/** What `parent genesis --out` writes. */
export interface GenesisOutput {
  publicKey: string;
  /** The sealed identity seed (blob kind "identity"), base64. */
  blob: string;
  /** The identity's signature over its blob (`identityBlobDigest`), base64: the blob is the one the enclave sealed. */
  blobSignature: string;
  /** The genesis attestation document, base64 COSE_Sign1: the `genesisDocument` of the enclave configuration. */
  attestation: string;
  defaultProject: SignedRecord;
  /** The nonce the document carries, 0x-hex. */
  nonce: string;
}

/** The nonce of a genesis: 1-512 bytes of 0x-prefixed hex (the operator's, so the document is fresh). */
export const GENESIS_NONCE_RE = /^0x(?:[0-9a-fA-F]{2}){1,512}$/;

/**
 * Checks a genesis answer: the public key, the identity blob for it, the default project record (signed by
 * it, the first record of `default`), and the attestation document (chain, nonce, user_data).
 */
export function checkGenesis(res: GenesisResult, nonce: string, trustedRoots?: Array<string | Uint8Array>): VerifiedAttestation {
  const fail = (what: string, cause?: unknown) => new KeystoreError('ATTESTATION_FAILED', `genesis answer refused: ${what}`, { cause });
  if (typeof res?.publicKey !== 'string' || !IDENTITY_PUBLIC_KEY_RE.test(res.publicKey)) throw fail('no well-formed public key');
  const key = identityPublicKey(res.publicKey);
  try {
    const blob = decodeBlobBase64(res.blob);
    if (blob.v !== 2 || blob.kind !== 'identity' || blob.publicKey !== res.publicKey)
      throw new Error('not the identity blob of this public key');
  } catch (err) {
    throw fail('the blob is not the identity blob of the public key', err);
  }
  let blobSigned: boolean;
  try {
    blobSigned = verify(null, identityBlobDigest(Buffer.from(res.blob, 'base64')), key, Buffer.from(res.blobSignature, 'base64'));
  } catch {
    blobSigned = false;
  }
  if (!blobSigned) throw fail('the blob is not signed by the identity (not the blob the enclave sealed)');
  try {
    const project = decodeProjectRecord(verifySignedRecord(res.defaultProject, key).bytes);
    if (project.projectId !== DEFAULT_PROJECT_ID || project.seq !== 0 || project.state !== 'active')
      throw new Error('not the first default project record');
  } catch (err) {
    throw fail('the default project record is not signed by the identity', err);
  }
  try {
    return verifyAttestation(Buffer.from(res.attestation, 'base64'), {
      ...(trustedRoots ? { trustedRoots } : {}),
      expectedNonce: Buffer.from(nonce.slice(2), 'hex'),
      expectedUserData: taggedUserData(USER_DATA_TAGS.identity, Buffer.from(res.publicKey.slice(2), 'hex')),
      // The document was made just now (the chain is checked at the current time). The parent does not know which
      // image it talks to: the operator pins the genesis image's PCR0 off-host (`nks genesis verify --pcr0`).
      allowUnpinned: true,
    });
  } catch (err) {
    throw fail(`the attestation document does not verify: ${(err as Error).message}`, err);
  }
}

/** Connects to the genesis image, makes the identity, checks it and returns what `--out` gets. */
export async function runGenesis(
  config: ParentConfig,
  opts: { nonce: string; trustedRoots?: Array<string | Uint8Array>; waitMs?: number },
  logger: Logger,
): Promise<{ output: GenesisOutput; verified: VerifiedAttestation }> {
  if (!GENESIS_NONCE_RE.test(opts.nonce)) throw new KeystoreError('INVALID_PARAMS', '--nonce must be 1-512 bytes of 0x-prefixed hex');
  const nonce = opts.nonce.toLowerCase();
  const pool = enclavePoolFor(config, createTransport(config.transport), logger, { learnIdentity: false, size: 1 });
  pool.start();
  try {
    await pool.waitUp(opts.waitMs ?? 30_000);
    const res = await pool.call('identity.genesis', { nonce });
    const verified = checkGenesis(res, nonce, opts.trustedRoots);
    return {
      output: {
        publicKey: res.publicKey,
        blob: res.blob,
        blobSignature: res.blobSignature,
        attestation: res.attestation,
        defaultProject: res.defaultProject,
        nonce,
      },
      verified,
    };
  } finally {
    await pool.close();
  }
}

/** Writes the genesis output, readable by its owner only; refuses to replace an existing file. */
export function writeGenesisOutput(file: string, output: GenesisOutput): void {
  fs.writeFileSync(file, `${JSON.stringify(output, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
}
