/**
 * Offline verification of what the keystore says, with nothing taken from the server on trust (docs/RECORDS.md,
 * "What a client pins"). A client pins two things: the keystore identity's public key (from the published genesis
 * document, checked once with `verifyGenesis` / `nks genesis verify`) and the PCR0s of the images it approves.
 *
 * - `verifyKey`: a key as the API shows it carries its signed record; the record must be signed by the pinned
 *   identity, be the record of the key the caller asked for (its key id, and the subject or project when the
 *   caller names them), and agree with everything the view says (key id, address, public key, project, subject,
 *   state, disabled: a view that leaves one out does not agree), and the birth attestation, when there is one,
 *   must verify with an approved PCR0.
 * - `verifyPolicies`: a project's signing policies as the API shows them (`GET /v1/projects/{id}/policies`) are
 *   those of a project record signed by the pinned identity, of the project asked for.
 * - `verifyIdentity`: `GET /v1/identity` — a fresh document of the running enclave that binds the identity's public
 *   key and the caller's nonce.
 * - `verifyGenesis`: the genesis output — its document (the genesis image's PCR0, the operator's nonce, user_data
 *   binding the public key), the identity blob with the new identity's signature over it, and the default project
 *   record the new identity signed.
 *
 * Every failure throws VerificationError with a code and a message that says what did not hold.
 */
import { createHash, verify, type KeyObject } from 'node:crypto';
import { keccak_256 } from '@noble/hashes/sha3.js';
import {
  AttestationError,
  decodeAttestationDocument,
  verifyBirthAttestation,
  type CheckTime,
  type VerifiedAttestation,
} from '@nks/shared/attestation';
import { verifyIdentityAttestation } from '@nks/shared/attestation/identity';
import { BLOB_VERSION, decodeBlobBase64 } from '@nks/shared/blob';
import { IDENTITY_PUBLIC_KEY_RE } from '@nks/shared/identifiers';
import {
  decodeKeyRecord,
  decodeProjectRecord,
  DEFAULT_PROJECT_ID,
  hex,
  identityBlobDigest,
  identityPublicKey,
  verifySignedRecord,
  type KeyRecord,
  type ProjectRecord,
  type SignedRecord,
} from '@nks/shared/records';
import { isDeepStrictEqual } from 'node:util';
import type { Policies } from '@nks/shared/policy/schema';
import { SIGN_REQUEST_TYPES } from '@nks/shared/signing/request-types';

export type VerificationErrorCode =
  /**
   * The input is not what the check needs (no record, not a key view, a public key that is not 0x + 64 hex, no
   * expected key id, a nonce that is not 1-512 bytes).
   */
  | 'MALFORMED'
  /** A record's signature does not verify with the pinned identity. */
  | 'RECORD_SIGNATURE'
  /** A record verifies but is not a well-formed record of the expected kind. */
  | 'RECORD_MALFORMED'
  /** The view says something the signed record does not, or leaves out something the record says. */
  | 'VIEW_MISMATCH'
  /** The signed record is genuine but of another key (or project) than the one expected (key id, subject or project). */
  | 'KEY_MISMATCH'
  /** A birth attestation was required and there is none. */
  | 'NO_BIRTH_ATTESTATION'
  /** An attestation document does not verify (its AttestationError code is in `attestationCode`). */
  | 'ATTESTATION'
  /** The identity is not the one pinned. */
  | 'IDENTITY_MISMATCH'
  /** The genesis output's blob, its signature or the default project is not what a genesis enclave makes. */
  | 'GENESIS_MISMATCH'
  /** No TLS connection the caller trusts (certificate, name, or the server did not answer): client/src/tls.ts. */
  | 'TLS_HANDSHAKE'
  /** The server's answer to `GET /v1/tls/attestation` is not a document. */
  | 'BAD_RESPONSE'
  /** A genuine TLS attestation that binds another key than the one the server presents. */
  | 'TLS_KEY_MISMATCH';

export class VerificationError extends Error {
  override readonly name = 'VerificationError';
  /** For ATTESTATION: the document's own failure code (PCR_MISMATCH, NONCE_MISMATCH, …). */
  readonly attestationCode: string | undefined;
  constructor(
    readonly code: VerificationErrorCode,
    message: string,
    options?: { cause?: unknown; attestationCode?: string },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.attestationCode = options?.attestationCode;
  }
}

/**
 * Expected PCR values by index. A list means "any one of these" (several approved images, e.g. the PCR0 a key was
 * born under and today's); PCR0 is required wherever a document is checked.
 */
export type ExpectedPcrs = Record<number, string | Uint8Array | ReadonlyArray<string | Uint8Array>>;

/** What `verifyKey` reads from a key view (`GET /v1/keys/{keyId}`, `nks keys get --json`). */
export interface KeyViewForVerification {
  keyId: string;
  address: string;
  publicKey?: string | undefined;
  externalId?: string | null | undefined;
  subject?: string | null | undefined;
  projectId?: string | null | undefined;
  state?: string | null | undefined;
  disabled?: boolean | undefined;
  record?: SignedRecord | null | undefined;
  attestation?: string | undefined;
}

/**
 * The key the caller means, compared with the signed record (not with the view, which the server writes): a
 * parent asked for one key can answer with the genuine, self-consistent view of another.
 */
export interface ExpectedKey {
  /** The key id the caller asked for (`GET /v1/keys/{keyId}`). */
  keyId: string;
  /** The caller's external id: the record must be of the `default` project, with this subject (null: none). */
  externalId?: string | null | undefined;
  /** The subject the key must belong to within its project (null: none). */
  subject?: string | null | undefined;
  /** The project the key must belong to. */
  projectId?: string | undefined;
}

export interface VerifyKeyOptions {
  /** The keystore identity's Ed25519 public key (0x + 64 hex), from the published genesis document. */
  identityPublicKey: string | KeyObject;
  /** The key asked for: at least its key id. The record must be this key's (KEY_MISMATCH otherwise). */
  expected: ExpectedKey;
  /** PCRs a birth attestation must show (PCR0 required: an image you approve, or the list of them). */
  expectedPcrs: ExpectedPcrs;
  /** Trust anchor for attestation documents (PEM or DER); default the AWS Nitro root G1. */
  rootCertificate?: string | Uint8Array;
  /** Fail when the key has no birth attestation. Default false: the signed record is the evidence, the birth a bonus. */
  requireBirthAttestation?: boolean;
  /**
   * Time at which the birth attestation's certificates must be valid. Default 'document' (its own timestamp): a
   * birth attestation is evidence kept from the key's creation, and its leaf certificate lives about 3 hours.
   */
  at?: CheckTime;
}

export interface VerifiedKey {
  record: KeyRecord;
  /** SHA-256("nks-record-v1" ‖ cbor) of the record, 0x hex: what the identity signed. */
  recordDigest: string;
  birth: VerifiedAttestation | null;
  /** What was checked, in order, for people. */
  checks: string[];
}

const lower = (s: string) => s.toLowerCase();

function pinnedIdentity(key: string | KeyObject): KeyObject {
  if (typeof key !== 'string') return key;
  if (!IDENTITY_PUBLIC_KEY_RE.test(key)) {
    throw new VerificationError('MALFORMED', `the identity public key must be 0x and 64 lower-case hex digits, got "${key.slice(0, 80)}"`);
  }
  return identityPublicKey(key);
}

/** The record's signature with the identity, then its decoding: two different failures. */
function openRecord<R>(signed: SignedRecord | null | undefined, identity: KeyObject, decode: (b: Buffer) => R, what: string) {
  if (signed === null) {
    throw new VerificationError('MALFORMED', `${what} has no signed record: it was made before 0.4 and is not migrated yet`);
  }
  if (!signed || typeof signed.record !== 'string' || typeof signed.signature !== 'string') {
    throw new VerificationError('MALFORMED', `${what} has no signed record ({record, signature})`);
  }
  let verified;
  try {
    verified = verifySignedRecord(signed, identity);
  } catch (err) {
    throw new VerificationError(
      'RECORD_SIGNATURE',
      `${what}: the record's signature does not verify with the pinned identity (not made by this keystore, or altered)`,
      { cause: err },
    );
  }
  try {
    return { record: decode(verified.bytes), digest: hex(verified.digest) };
  } catch (err) {
    throw new VerificationError('RECORD_MALFORMED', `${what}: the signed record is not a well-formed record (${(err as Error).message})`, {
      cause: err,
    });
  }
}

/** The EIP-55-agnostic address of an uncompressed secp256k1 public key (0x04 ‖ x ‖ y). */
export function addressOfPublicKey(publicKey: string): string | undefined {
  if (!/^0x04[0-9a-fA-F]{128}$/.test(publicKey)) return undefined;
  return `0x${Buffer.from(keccak_256(Buffer.from(publicKey.slice(4), 'hex')))
    .subarray(12)
    .toString('hex')}`;
}

/** Picks, for each index given as a list, the listed value the document shows (or the first, which then fails). */
export function resolvePcrs(document: Uint8Array, expected: ExpectedPcrs): Record<number, string | Uint8Array> {
  let shown: Map<number, Buffer> | undefined;
  const out: Record<number, string | Uint8Array> = {};
  for (const [index, value] of Object.entries(expected)) {
    if (typeof value === 'string' || value instanceof Uint8Array) {
      out[Number(index)] = value;
      continue;
    }
    const list = value as ReadonlyArray<string | Uint8Array>;
    if (list.length === 0) continue;
    try {
      shown ??= decodeAttestationDocument(document).document.pcrs;
    } catch {
      shown = new Map(); // verification below reports the malformed document
    }
    const actual = shown.get(Number(index));
    const bytes = (v: string | Uint8Array) => (typeof v === 'string' ? Buffer.from(v.replace(/^0x/i, ''), 'hex') : Buffer.from(v));
    out[Number(index)] = list.find((v) => actual?.equals(bytes(v))) ?? (list[0] as string | Uint8Array);
  }
  return out;
}

function attestationFailure(what: string, err: unknown): never {
  if (err instanceof AttestationError) {
    throw new VerificationError('ATTESTATION', `${what}: ${err.code}: ${err.message}`, { cause: err, attestationCode: err.code });
  }
  throw err;
}

const pcr0Of = (v: VerifiedAttestation) => v.document.pcrs.get(0)?.toString('hex');

/** "2026-…Z, the document's own time": when a document's chain was checked, and why then. */
export const checkedAtText = (v: VerifiedAttestation): string =>
  `${v.checkedAt.time.toISOString()}, ${{ now: 'now', document: "the document's own time", explicit: 'the time asked for' }[v.checkedAt.basis]}`;

const show = (v: unknown) => (v === undefined ? 'nothing' : JSON.stringify(v));

/** The signed record is the one of the key the caller asked for: its key id, and the subject and project it names. */
function checkExpected(record: KeyRecord, expected: ExpectedKey): string {
  const wrong: string[] = [];
  const checked: string[] = [];
  const want = (field: string, asked: unknown, signed: unknown, label = `${field} ${JSON.stringify(asked)}`) => {
    if (asked === undefined || checked.includes(label)) return;
    checked.push(label);
    if (asked !== signed) wrong.push(`${field}: you asked for ${JSON.stringify(asked)}, the record is of ${JSON.stringify(signed)}`);
  };
  want('keyId', expected.keyId, record.keyId, `keyId ${expected.keyId}`);
  if (expected.externalId !== undefined) {
    // The external id is the subject of the default (token) project: a key of another project is not that caller's.
    want('projectId', DEFAULT_PROJECT_ID, record.projectId, `project ${DEFAULT_PROJECT_ID}`);
    want('externalId', expected.externalId, record.subject);
  }
  want('subject', expected.subject, record.subject);
  if (expected.projectId !== undefined) want('projectId', expected.projectId, record.projectId, `project ${expected.projectId}`);
  if (wrong.length) {
    throw new VerificationError(
      'KEY_MISMATCH',
      `the signed record is of key ${record.keyId} (address ${record.address}, project ${record.projectId}, subject ${JSON.stringify(record.subject)}), not the key you asked for: ${wrong.join('; ')}`,
    );
  }
  return `the record is of the key asked for: ${checked.join(', ')}`;
}

/**
 * Checks a key view offline: its record is signed by the pinned identity and is the record of the key `expected`
 * names (its key id; its external id, subject and project when given); the record and the view agree on the key
 * id, address, project, subject (for the default token project the view's external id), state and disabled flag,
 * and a view that leaves one of them out does not agree; the view's public key, when shown, belongs to the
 * address; the birth attestation, when present (or required), verifies at its own time with the expected PCRs and
 * binds this key id and address. `checks` lists what was compared, and only that.
 */
export function verifyKey(view: KeyViewForVerification, options: VerifyKeyOptions): VerifiedKey {
  if (!view || typeof view.keyId !== 'string' || typeof view.address !== 'string') {
    throw new VerificationError('MALFORMED', 'not a key view (keyId and address are missing)');
  }
  if (!options?.expected || typeof options.expected.keyId !== 'string' || options.expected.keyId === '') {
    throw new VerificationError('MALFORMED', 'expected.keyId is required: the key id you asked for, which the signed record must name');
  }
  const identity = pinnedIdentity(options.identityPublicKey);
  const checks: string[] = [];
  const { record, digest } = openRecord(view.record, identity, decodeKeyRecord, `key ${view.keyId}`);
  checks.push(`record signature verifies with the pinned identity (record ${digest}, seq ${record.seq})`);
  checks.push(checkExpected(record, options.expected));

  // Every field the record has a say in must be in the view and agree with it: a view that leaves a field out
  // could be the view of another subject's key, and a check left out would not be one.
  const mismatches: string[] = [];
  const agreed: string[] = [];
  const agree = (field: string, shown: unknown, signed: unknown, label = field) => {
    if (shown === signed) agreed.push(label);
    else mismatches.push(`${field}: the view says ${show(shown)}, the record ${JSON.stringify(signed)}`);
  };
  agree('keyId', view.keyId, record.keyId);
  agree('address', lower(view.address), lower(record.address));
  if (view.publicKey !== undefined) {
    const derived = addressOfPublicKey(view.publicKey);
    if (derived === lower(record.address)) agreed.push('publicKey');
    else mismatches.push(`publicKey: it is not the public key of ${record.address}`);
  }
  agree('projectId', view.projectId, record.projectId, `project ${record.projectId}`);
  // Who the key belongs to: the view's subject, and in the default project its external id, which is the subject.
  const ofDefault = record.projectId === DEFAULT_PROJECT_ID;
  if (view.subject !== undefined) agree('subject', view.subject, record.subject, `subject ${JSON.stringify(record.subject)}`);
  if (ofDefault && (view.externalId !== undefined || view.subject === undefined)) {
    agree('externalId', view.externalId, record.subject, `externalId ${JSON.stringify(record.subject)}`);
  } else if (view.subject === undefined) {
    mismatches.push(
      `subject: the view says nothing (outside the default project its externalId is not the subject), the record ${JSON.stringify(record.subject)}`,
    );
  }
  agree('state', view.state, record.state, `state ${record.state}`);
  agree('disabled', view.disabled, record.disabled, `disabled ${record.disabled}`);
  if (mismatches.length) {
    throw new VerificationError(
      'VIEW_MISMATCH',
      `key ${view.keyId}: the view does not agree with its signed record: ${mismatches.join('; ')}`,
    );
  }
  checks.push(`the view agrees with the record: ${agreed.join(', ')}`);

  let birth: VerifiedAttestation | null = null;
  if (view.attestation) {
    const document = Buffer.from(view.attestation, 'base64');
    try {
      birth = verifyBirthAttestation(
        document,
        { keyId: record.keyId, address: record.address },
        {
          expectedPcrs: resolvePcrs(document, options.expectedPcrs),
          ...(options.rootCertificate !== undefined ? { trustedRoots: [options.rootCertificate] } : {}),
          at: options.at ?? 'document',
        },
      );
    } catch (err) {
      attestationFailure(`key ${view.keyId}: birth attestation`, err);
    }
    checks.push(`birth attestation verifies (chain at ${checkedAtText(birth)}, PCR0 ${pcr0Of(birth)}) and binds this key id and address`);
  } else if (options.requireBirthAttestation) {
    throw new VerificationError('NO_BIRTH_ATTESTATION', `key ${view.keyId} has no birth attestation`);
  } else {
    checks.push('no birth attestation (the key was created without attest: true)');
  }
  return { record, recordDigest: digest, birth, checks };
}

/** What `verifyPolicies` reads: `GET /v1/projects/{projectId}/policies` (`nks policies get --json`). */
export interface PoliciesViewForVerification {
  projectId: string;
  seq?: number | undefined;
  recordSha256?: string | undefined;
  policies: Policies;
  record: SignedRecord;
}

export interface VerifiedPolicies {
  record: ProjectRecord;
  /** The record's digest, 0x hex (the view's recordSha256). */
  recordDigest: string;
  /** The record's policies (empty lists when it has none). */
  policies: Policies;
  checks: string[];
}

/**
 * Checks a project's policies view offline: its record is signed by the pinned identity, is a record of the
 * project asked for, and says exactly the policies the view shows (empty lists: a record without policies),
 * at the seq and digest the view shows. It proves what that record says, not that it is the project's newest
 * (the enclave refuses records older than the newest it has seen: docs/SECURITY.md).
 */
export function verifyPolicies(
  view: PoliciesViewForVerification,
  options: { identityPublicKey: string | KeyObject; projectId: string },
): VerifiedPolicies {
  if (!view || typeof view.projectId !== 'string' || typeof view.policies !== 'object' || view.policies === null) {
    throw new VerificationError('MALFORMED', 'not a policies view (projectId and policies are missing)');
  }
  if (typeof options?.projectId !== 'string' || options.projectId === '')
    throw new VerificationError('MALFORMED', 'projectId is required: the project you asked for, which the signed record must name');
  const identity = pinnedIdentity(options.identityPublicKey);
  const { record, digest } = openRecord(view.record, identity, decodeProjectRecord, `project ${view.projectId}`);
  const checks = [`record signature verifies with the pinned identity (record ${digest}, seq ${record.seq})`];
  if (record.projectId !== options.projectId)
    throw new VerificationError(
      'KEY_MISMATCH',
      `the signed record is of project ${record.projectId}, not project ${options.projectId} you asked for`,
    );
  checks.push(`the record is of project ${record.projectId}`);
  const policies: Policies = record.policies ?? { rules: [], limits: [] };
  const mismatches: string[] = [];
  if (view.projectId !== record.projectId) mismatches.push(`projectId: the view says ${show(view.projectId)}`);
  if (view.seq !== undefined && view.seq !== record.seq) mismatches.push(`seq: the view says ${show(view.seq)}, the record ${record.seq}`);
  if (view.recordSha256 !== undefined && view.recordSha256 !== digest)
    mismatches.push(`recordSha256: the view says ${show(view.recordSha256)}, the record's is ${digest}`);
  const plain = (v: unknown): unknown => JSON.parse(JSON.stringify(v));
  if (!isDeepStrictEqual(plain(view.policies), plain(policies)))
    mismatches.push('policies: the view shows other rules or limits than the record holds');
  if (mismatches.length)
    throw new VerificationError(
      'VIEW_MISMATCH',
      `project ${record.projectId}: the view does not agree with its signed record: ${mismatches.join('; ')}`,
    );
  checks.push(
    `the view's policies are the record's: ${policies.rules.length} rule(s), ${policies.limits.length} limit(s)${view.seq !== undefined ? ', seq' : ''}${view.recordSha256 !== undefined ? ', recordSha256' : ''}`,
  );
  return { record, recordDigest: digest, policies, checks };
}

/** `GET /v1/identity` as the API answers it. */
export interface IdentityView {
  publicKey: string;
  genesisDocument: string;
  attestation: string;
}

export interface VerifyIdentityOptions {
  /** The nonce the request carried, 1-512 bytes (bytes, or 0x and hex digits): the fresh document must carry it. */
  nonce: string | Uint8Array;
  /** PCRs the fresh document must show (PCR0 required: an image you approve). */
  expectedPcrs: ExpectedPcrs;
  /** The identity public key you pinned: the enclave must hold exactly this one. */
  identityPublicKey?: string;
  /** The genesis image's PCR0: when given, the genesis document is checked too (it binds the same public key). */
  genesisPcr0?: string;
  rootCertificate?: string | Uint8Array;
  /** Refuse a fresh document older than this. */
  maxAgeMs?: number;
}

export interface VerifiedIdentity {
  publicKey: string;
  attestation: VerifiedAttestation;
  genesis: VerifiedAttestation | null;
  checks: string[];
}

/** What an NSM takes as a nonce. */
const NONCE_MAX_BYTES = 512;
const NONCE_HEX_RE = new RegExp(`^0x(?:[0-9a-fA-F]{2}){1,${NONCE_MAX_BYTES}}$`);

/**
 * The caller's nonce as bytes: 1-512 bytes, given as bytes or as 0x and hex digits. Anything else is refused
 * rather than read as no nonce: a document with an empty nonce is one anybody could have kept and replayed.
 */
function nonceBytes(nonce: unknown, what: string): Buffer {
  let shown: string;
  if (nonce instanceof Uint8Array) {
    if (nonce.length >= 1 && nonce.length <= NONCE_MAX_BYTES) return Buffer.from(nonce);
    shown = `${nonce.length} bytes`;
  } else if (typeof nonce === 'string') {
    if (NONCE_HEX_RE.test(nonce)) return Buffer.from(nonce.slice(2), 'hex');
    shown = JSON.stringify(nonce.length > 80 ? `${nonce.slice(0, 80)}…` : nonce);
  } else {
    shown = nonce === null ? 'null' : typeof nonce;
  }
  throw new VerificationError(
    'MALFORMED',
    `${what} must be 1-${NONCE_MAX_BYTES} bytes, given as bytes or as 0x and hex digits, not ${shown}: a document without a nonce of yours may be a replay`,
  );
}

/** Checks `GET /v1/identity`: the running enclave attests, with the caller's nonce, that it holds this identity. */
export function verifyIdentity(view: IdentityView, options: VerifyIdentityOptions): VerifiedIdentity {
  if (!view || typeof view.publicKey !== 'string' || !IDENTITY_PUBLIC_KEY_RE.test(view.publicKey) || typeof view.attestation !== 'string') {
    throw new VerificationError('MALFORMED', 'not an identity answer ({publicKey, genesisDocument, attestation})');
  }
  const expectedNonce = nonceBytes(options.nonce, 'the nonce');
  const checks: string[] = [];
  if (options.identityPublicKey !== undefined && options.identityPublicKey !== view.publicKey) {
    throw new VerificationError(
      'IDENTITY_MISMATCH',
      `the enclave's identity is ${view.publicKey}, not the pinned ${options.identityPublicKey}`,
    );
  }
  if (options.identityPublicKey !== undefined) checks.push('the identity is the pinned one');
  const roots = options.rootCertificate !== undefined ? { trustedRoots: [options.rootCertificate] } : {};
  const document = Buffer.from(view.attestation, 'base64');
  let attestation: VerifiedAttestation;
  try {
    attestation = verifyIdentityAttestation(document, view.publicKey, {
      expectedPcrs: resolvePcrs(document, options.expectedPcrs),
      expectedNonce,
      ...(options.maxAgeMs !== undefined ? { maxAgeMs: options.maxAgeMs } : {}),
      ...roots,
      at: 'now', // a document just asked for, with our nonce
    });
  } catch (err) {
    attestationFailure('fresh identity attestation', err);
  }
  checks.push(
    `fresh attestation verifies (chain at ${checkedAtText(attestation)}, PCR0 ${pcr0Of(attestation)}), carries the nonce and binds the public key`,
  );
  let genesis: VerifiedAttestation | null = null;
  if (options.genesisPcr0 !== undefined) {
    if (typeof view.genesisDocument !== 'string') throw new VerificationError('MALFORMED', 'the answer has no genesis document');
    try {
      genesis = verifyIdentityAttestation(Buffer.from(view.genesisDocument, 'base64'), view.publicKey, {
        expectedPcrs: { 0: options.genesisPcr0 },
        ...roots,
        at: 'document', // evidence kept since genesis
      });
    } catch (err) {
      attestationFailure('genesis document', err);
    }
    checks.push(
      `genesis document verifies (made ${new Date(genesis.document.timestamp).toISOString()} by the genesis image, chain at ${checkedAtText(genesis)}) and binds the same public key`,
    );
  }
  return { publicKey: view.publicKey, attestation, genesis, checks };
}

/** What `node dist/parent.js genesis` writes: the enclave's `identity.genesis` answer. */
export interface GenesisOutput {
  publicKey: string;
  blob: string;
  /**
   * The identity's Ed25519 signature (base64) over `identityBlobDigest(blob bytes)`, SHA-256("nks-identity-blob-v1"
   * ‖ blob): made by the genesis enclave, it shows the blob is the one it sealed, not one the parent made for the
   * same public key. An output without it (or with a wrong one) is refused.
   */
  blobSignature: string;
  /** The genesis document (base64 COSE_Sign1); `genesisDocument` is accepted as its name too. */
  attestation?: string;
  genesisDocument?: string;
  defaultProject: SignedRecord;
}

/** The enclave configuration's `identity` section, as the normal and migration images read it. */
export interface IdentitySection {
  publicKey: string;
  blob: string;
  genesisDocument: string;
  defaultProject: SignedRecord;
}

export interface VerifyGenesisOptions {
  /** The genesis image's PCR0 (from its measurements, reproduced off-host). */
  pcr0: string;
  /** The nonce the operator chose for this genesis, 1-512 bytes (bytes, or 0x and hex digits). */
  nonce: string | Uint8Array;
  rootCertificate?: string | Uint8Array;
  /**
   * Time for the document's certificates. Default 'document' (its own timestamp): the genesis output is evidence
   * kept and checked again long after genesis; the operator's nonce shows it was made for this genesis run.
   */
  at?: CheckTime;
}

export interface VerifiedGenesis {
  identity: IdentitySection;
  attestation: VerifiedAttestation;
  defaultProject: ProjectRecord;
  /** The KMS key the identity blob is sealed under. */
  kmsKeyArn: string;
  checks: string[];
}

/**
 * Checks a genesis output off-host, before its identity goes into an image: the document verifies with the genesis
 * image's PCR0 and the operator's nonce and binds the public key; the blob is an identity blob for that key, and
 * that key signed it (`blobSignature`); the default project record is signed by that key and is exactly the record
 * genesis makes.
 */
export function verifyGenesis(output: GenesisOutput, options: VerifyGenesisOptions): VerifiedGenesis {
  const document = output?.attestation ?? output?.genesisDocument;
  if (!output || typeof output.publicKey !== 'string' || typeof output.blob !== 'string' || typeof document !== 'string') {
    throw new VerificationError('MALFORMED', 'not a genesis output ({publicKey, blob, attestation, defaultProject})');
  }
  const expectedNonce = nonceBytes(options.nonce, "the genesis run's nonce");
  const identity = pinnedIdentity(output.publicKey);
  const checks: string[] = [];
  let attestation: VerifiedAttestation;
  try {
    attestation = verifyIdentityAttestation(Buffer.from(document, 'base64'), output.publicKey, {
      expectedPcrs: { 0: options.pcr0 },
      expectedNonce,
      ...(options.rootCertificate !== undefined ? { trustedRoots: [options.rootCertificate] } : {}),
      at: options.at ?? 'document',
    });
  } catch (err) {
    attestationFailure('genesis document', err);
  }
  checks.push(
    `genesis document verifies (chain at ${checkedAtText(attestation)}, the genesis image's PCR0, your nonce) and binds the public key`,
  );

  let kmsKeyArn: string;
  try {
    const blob = decodeBlobBase64(output.blob);
    if (blob.v !== BLOB_VERSION || blob.kind !== 'identity') throw new Error('not an identity blob');
    if (blob.publicKey !== output.publicKey) throw new Error('sealed for another public key');
    kmsKeyArn = blob.kmsKeyArn;
  } catch (err) {
    throw new VerificationError('GENESIS_MISMATCH', `the identity blob is not this identity's: ${(err as Error).message}`, { cause: err });
  }
  checks.push(`the blob is an identity blob (version 2) for this public key, sealed under ${kmsKeyArn}`);

  // The header above is public: anybody can write one for this public key around junk. Only the identity's
  // signature shows the blob is the one genesis sealed (and so one the image will be able to open).
  if (typeof output.blobSignature !== 'string' || output.blobSignature === '') {
    throw new VerificationError(
      'GENESIS_MISMATCH',
      "the genesis output has no blobSignature (the identity's signature over its blob): nothing shows the blob is the one genesis sealed",
    );
  }
  const blobSignature = Buffer.from(output.blobSignature, 'base64');
  const blobDigest = identityBlobDigest(Buffer.from(output.blob, 'base64'));
  let signed: boolean;
  try {
    signed = blobSignature.length === 64 && verify(null, blobDigest, identity, blobSignature);
  } catch {
    signed = false;
  }
  if (!signed) {
    throw new VerificationError(
      'GENESIS_MISMATCH',
      "the identity blob's signature (blobSignature) does not verify with this public key: the blob is not the one genesis sealed, or was altered",
    );
  }
  checks.push('the identity signed this blob (blobSignature over SHA-256("nks-identity-blob-v1" ‖ blob))');

  const { record, digest } = openRecord(output.defaultProject, identity, decodeProjectRecord, 'the default project');
  const expectedTypes = [...SIGN_REQUEST_TYPES].sort();
  const wrong = [
    record.projectId !== DEFAULT_PROJECT_ID && `projectId is ${record.projectId}`,
    record.projectKey !== DEFAULT_PROJECT_ID && `projectKey is ${record.projectKey}`,
    record.seq !== 0 && `seq is ${record.seq}`,
    record.state !== 'active' && `state is ${record.state}`,
    record.auth.type !== 'token' && 'auth is not token',
    [...record.allowedRequestTypes].sort().join() !== expectedTypes.join() && 'it does not allow every request type',
    record.allowedOrigins.length !== 0 && 'it allows browser origins',
  ].filter((x): x is string => typeof x === 'string');
  if (wrong.length)
    throw new VerificationError('GENESIS_MISMATCH', `the default project record is not the one genesis makes: ${wrong.join('; ')}`);
  checks.push(
    `the default project record is signed by this identity (record ${digest}) and is the genesis one: token auth, every request type`,
  );

  return {
    identity: { publicKey: output.publicKey, blob: output.blob, genesisDocument: document, defaultProject: output.defaultProject },
    attestation,
    defaultProject: record,
    kmsKeyArn,
    checks,
  };
}

/** SHA-256 of a base64 string's bytes, hex: a short name for a document in output. */
export const sha256OfBase64 = (b64: string): string => createHash('sha256').update(Buffer.from(b64, 'base64')).digest('hex');
