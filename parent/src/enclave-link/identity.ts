/**
 * The keystore identity as the parent knows it (docs/RECORDS.md): learned from the enclave's `identity.get`
 * after each connection's handshake, optionally pinned by the configuration, and then used to verify every
 * record the parent reads from its database or receives from the enclave.
 *
 * The parent is not trusted, so none of this protects keys from it: the enclave checks every record again
 * before it signs. What it does is make a database that was altered (or belongs to another identity) fail
 * here, with KEY_INTEGRITY, before the enclave is asked, and keep an enclave of another identity out of the
 * pool.
 */
import type { KeyObject } from 'node:crypto';
import { KeystoreError } from '@nks/shared/errors';
import type { IdentityResult } from '@nks/shared/enclave-api';
import { IDENTITY_PUBLIC_KEY_RE } from '@nks/shared/identifiers';
import {
  DEFAULT_PROJECT_ID,
  decodeKeyRecord,
  decodeProjectRecord,
  identityPublicKey,
  recordDigest,
  verifySignedRecord,
  type KeyRecord,
  type ProjectRecord,
  type SignedRecord,
} from '@nks/shared/records';

export interface KnownIdentity {
  /** 0x-hex of the raw Ed25519 public key. */
  publicKey: string;
  key: KeyObject;
  /** The genesis document (base64 COSE_Sign1) from the enclave's configuration. */
  genesisDocument: string;
  /** The `default` project's record as the enclave's configuration holds it (checked: signed, seq 0). */
  defaultProject: SignedRecord;
}

const isSigned = (v: unknown): v is SignedRecord =>
  typeof v === 'object' &&
  v !== null &&
  typeof (v as SignedRecord).record === 'string' &&
  typeof (v as SignedRecord).signature === 'string';

/**
 * Checks an `identity.get` answer: a well-formed public key, optionally the pinned one, and a default project
 * record that this key signed. Throws IDENTITY_UNAVAILABLE with the reason.
 */
export function checkIdentityResult(res: IdentityResult, pinned?: string): KnownIdentity {
  const publicKey: unknown = res?.publicKey;
  if (typeof publicKey !== 'string' || !IDENTITY_PUBLIC_KEY_RE.test(publicKey)) {
    throw new KeystoreError('IDENTITY_UNAVAILABLE', 'the enclave answered identity.get without a well-formed public key');
  }
  if (pinned !== undefined && publicKey !== pinned) {
    throw new KeystoreError(
      'IDENTITY_UNAVAILABLE',
      `the enclave's keystore identity ${publicKey} is not the one this parent is configured for (identity.publicKey ${pinned})`,
    );
  }
  if (typeof res.genesisDocument !== 'string' || !isSigned(res.defaultProject)) {
    throw new KeystoreError('IDENTITY_UNAVAILABLE', 'the enclave answered identity.get without its genesis document or default project');
  }
  const key = identityPublicKey(publicKey);
  let project: ProjectRecord;
  try {
    project = decodeProjectRecord(verifySignedRecord(res.defaultProject, key).bytes);
  } catch (err) {
    throw new KeystoreError('IDENTITY_UNAVAILABLE', `the enclave's default project record is not signed by its identity ${publicKey}`, {
      cause: err,
    });
  }
  if (project.projectId !== DEFAULT_PROJECT_ID || project.seq !== 0) {
    throw new KeystoreError('IDENTITY_UNAVAILABLE', `the enclave's default project record is not the default project's first record`);
  }
  return { publicKey, key, genesisDocument: res.genesisDocument, defaultProject: res.defaultProject };
}

/**
 * Verifies signed records with the identity, remembering the ones already verified (by the digest of their
 * bytes and their signature), so a warm sign costs a hash rather than an Ed25519 verification and a decode, and
 * by the record object itself (a cached row's), so a warm sign of a cached row costs neither. Every failure is
 * KEY_INTEGRITY.
 */
export class RecordChecker {
  private readonly verified = new Map<string, { signature: string; record: KeyRecord | ProjectRecord }>();
  /**
   * Per record object (the store hands out the same object for a cached row): its texts when opened and what
   * they opened to. A hit costs no decode and no hash; the texts are compared, so an object changed since is
   * opened again. Held weakly: it lives as long as the row does.
   */
  private readonly opened = new WeakMap<
    SignedRecord,
    { text: string; signature: string; record: KeyRecord | ProjectRecord; digest: Buffer }
  >();

  constructor(
    readonly identity: KnownIdentity,
    private readonly maxEntries = 20_000,
  ) {}

  key(signed: SignedRecord): { record: KeyRecord; digest: Buffer } {
    const { record, digest } = this.open(signed, 'key');
    return { record: record as KeyRecord, digest };
  }

  project(signed: SignedRecord): { record: ProjectRecord; digest: Buffer } {
    const { record, digest } = this.open(signed, 'project');
    return { record: record as ProjectRecord, digest };
  }

  private open(signed: SignedRecord, kind: 'key' | 'project'): { record: KeyRecord | ProjectRecord; digest: Buffer } {
    // The same object as last time (a row the store keeps cached) with the very texts it had then: opened already.
    const seen = this.opened.get(signed);
    if (seen && seen.text === signed.record && seen.signature === signed.signature && seen.record.kind === kind)
      return { record: seen.record, digest: seen.digest };
    const opened = this.openUncached(signed, kind);
    if (typeof signed.record === 'string' && typeof signed.signature === 'string')
      this.opened.set(signed, { text: signed.record, signature: signed.signature, ...opened });
    return opened;
  }

  private openUncached(signed: SignedRecord, kind: 'key' | 'project'): { record: KeyRecord | ProjectRecord; digest: Buffer } {
    const { bytes, digest, cached } = this.verify(signed);
    const id = digest.toString('hex');
    let record = cached;
    if (!record) {
      record = kind === 'key' ? decodeKeyRecord(bytes) : decodeProjectRecord(bytes);
      if (this.verified.size >= this.maxEntries) this.verified.delete(this.verified.keys().next().value as string);
      this.verified.set(id, { signature: signed.signature, record });
    }
    if (record.kind !== kind) throw new KeystoreError('KEY_INTEGRITY', `record is malformed: kind is not ${kind}`);
    return { record, digest };
  }

  private verify(signed: SignedRecord): { bytes: Buffer; digest: Buffer; cached?: KeyRecord | ProjectRecord } {
    if (!isSigned(signed)) throw new KeystoreError('KEY_INTEGRITY', 'record signature does not verify');
    const bytes = Buffer.from(signed.record, 'base64');
    const digest = recordDigest(bytes);
    const hit = this.verified.get(digest.toString('hex'));
    if (hit && hit.signature === signed.signature) return { bytes, digest, cached: hit.record };
    return verifySignedRecord(signed, this.identity.key);
  }
}
