/**
 * Decoding of a Nitro attestation document: a COSE_Sign1 (untagged as the NSM emits it, tagged 18 accepted)
 * whose payload is a CBOR map (definite or indefinite length) with the fields of nsm-api's
 * attestation_process.md. Absent optional fields are CBOR null in real documents; both null and missing mean
 * "absent". Every structural problem raises AttestationError('MALFORMED') naming the field.
 */
import { decodeCbor, encodeCbor } from '../cbor';
import { AttestationError } from './errors';

export interface AttestationDocument {
  moduleId: string;
  digest: 'SHA384';
  /** Milliseconds since the UNIX epoch. */
  timestamp: number;
  /** PCR index -> value (48 bytes for SHA-384). */
  pcrs: Map<number, Buffer>;
  certificate: Buffer;
  /** Root first: [ROOT, INTERM_1, ..., INTERM_N]. */
  cabundle: Buffer[];
  publicKey?: Buffer;
  userData?: Buffer;
  nonce?: Buffer;
}

export interface CoseSign1 {
  protectedHeader: Buffer;
  payload: Buffer;
  signature: Buffer;
}

/** COSE algorithm -35 (ES384): the only one Nitro uses. */
export const COSE_ALG_ES384 = -35;
export const MAX_USER_DATA_BYTES = 1024;

const malformed = (what: string, cause?: unknown) => new AttestationError('MALFORMED', `attestation document: ${what}`, { cause });

function isBytes(v: unknown): v is Uint8Array {
  return v instanceof Uint8Array;
}

function decode(data: Uint8Array, what: string): unknown {
  try {
    return decodeCbor(data);
  } catch (err) {
    throw malformed(`${what} is not valid CBOR`, err);
  }
}

export function decodeCoseSign1(data: Uint8Array): CoseSign1 {
  if (!isBytes(data) || data.length === 0) throw malformed('empty input');
  let top = decode(data, 'COSE_Sign1');
  if (top && typeof top === 'object' && 'tag' in top && 'value' in top) {
    const tagged = top as { tag: number; value: unknown };
    if (tagged.tag !== 18) throw malformed(`CBOR tag ${tagged.tag} is not COSE_Sign1 (18)`);
    top = tagged.value;
  }
  if (!Array.isArray(top) || top.length !== 4) throw malformed('COSE_Sign1 is not a 4-element array');
  const [protectedHeader, unprotected, payload, signature] = top as unknown[];
  if (!isBytes(protectedHeader)) throw malformed('protected header is not a byte string');
  if (!(unprotected instanceof Map)) throw malformed('unprotected header is not a map');
  if (!isBytes(payload) || payload.length === 0) throw malformed('payload is not a non-empty byte string');
  if (!isBytes(signature)) throw malformed('signature is not a byte string');
  const header = decode(protectedHeader, 'protected header');
  if (!(header instanceof Map) || header.get(1) !== COSE_ALG_ES384) {
    throw new AttestationError('UNSUPPORTED_ALGORITHM', 'attestation document: protected header does not name ES384 (alg -35)');
  }
  if (signature.length !== 96) throw malformed(`ES384 signature is ${signature.length} bytes, expected 96`);
  return { protectedHeader: Buffer.from(protectedHeader), payload: Buffer.from(payload), signature: Buffer.from(signature) };
}

/** The bytes the ES384 signature covers: Sig_structure = ["Signature1", protected, h'', payload]. */
export function sigStructure(cose: CoseSign1): Buffer {
  return encodeCbor(['Signature1', cose.protectedHeader, Buffer.alloc(0), cose.payload]);
}

function optionalBytes(map: Map<unknown, unknown>, key: string, max: number): Buffer | undefined {
  const v = map.get(key);
  if (v === undefined || v === null) return undefined;
  if (!isBytes(v) || v.length > max) throw malformed(`${key} is not a byte string of at most ${max} bytes`);
  return Buffer.from(v);
}

function certBytes(v: unknown, what: string): Buffer {
  if (!isBytes(v) || v.length < 1 || v.length > 1024) throw malformed(`${what} is not a DER certificate of 1..1024 bytes`);
  return Buffer.from(v);
}

export function decodeAttestationPayload(payload: Uint8Array): AttestationDocument {
  const map = decode(payload, 'payload');
  if (!(map instanceof Map)) throw malformed('payload is not a map');

  const moduleId = map.get('module_id');
  if (typeof moduleId !== 'string' || moduleId.length === 0) throw malformed('module_id is missing or empty');
  if (map.get('digest') !== 'SHA384') throw malformed('digest is not "SHA384"');

  const ts = map.get('timestamp');
  const timestamp = typeof ts === 'bigint' ? Number(ts) : ts;
  if (typeof timestamp !== 'number' || !Number.isSafeInteger(timestamp) || timestamp <= 0)
    throw malformed('timestamp is not a positive integer');

  const rawPcrs = map.get('pcrs');
  if (!(rawPcrs instanceof Map) || rawPcrs.size < 1 || rawPcrs.size > 32) throw malformed('pcrs is not a map of 1..32 entries');
  const pcrs = new Map<number, Buffer>();
  for (const [k, v] of rawPcrs) {
    if (typeof k !== 'number' || !Number.isInteger(k) || k < 0 || k > 31) throw malformed('a PCR index is not an integer in 0..31');
    if (!isBytes(v) || ![32, 48, 64].includes(v.length)) throw malformed(`PCR${k} is not 32, 48 or 64 bytes`);
    pcrs.set(k, Buffer.from(v));
  }

  const certificate = certBytes(map.get('certificate'), 'certificate');
  const rawBundle = map.get('cabundle');
  if (!Array.isArray(rawBundle) || rawBundle.length < 1) throw malformed('cabundle is not a non-empty array');
  const cabundle = rawBundle.map((c, i) => certBytes(c, `cabundle[${i}]`));

  const doc: AttestationDocument = { moduleId, digest: 'SHA384', timestamp, pcrs, certificate, cabundle };
  const publicKey = optionalBytes(map, 'public_key', 1024);
  const userData = optionalBytes(map, 'user_data', MAX_USER_DATA_BYTES);
  const nonce = optionalBytes(map, 'nonce', MAX_USER_DATA_BYTES);
  if (publicKey) doc.publicKey = publicKey;
  if (userData) doc.userData = userData;
  if (nonce) doc.nonce = nonce;
  return doc;
}

/** Decodes without verifying anything (for display); use `verifyAttestation` to trust the contents. */
export function decodeAttestationDocument(data: Uint8Array): { cose: CoseSign1; document: AttestationDocument } {
  const cose = decodeCoseSign1(data);
  return { cose, document: decodeAttestationPayload(cose.payload) };
}
