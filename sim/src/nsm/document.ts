/**
 * Signing of attestation documents exactly as the NSM emits them (docs/NITRO-KMS.md, "Attestation documents"): an
 * untagged COSE_Sign1 with protected header {1: -35}, an empty unprotected map, a payload map with the nine
 * fields in NSM order (absent optional fields as CBOR null, timestamp as a 64-bit unsigned integer) and a raw r‖s
 * ES384 signature.
 */
import { sign } from 'node:crypto';
import { encodeCbor } from '@nks/shared/cbor';
import { sigStructure } from '@nks/shared/attestation';
import type { DocumentSigner } from './ca';

export interface DocumentFields {
  moduleId: string;
  timestamp: number;
  pcrs: Map<number, Buffer>;
  publicKey?: Buffer | undefined;
  userData?: Buffer | undefined;
  nonce?: Buffer | undefined;
}

export const PROTECTED_HEADER = encodeCbor(new Map([[1, -35]]));

export function signAttestationDocument(fields: DocumentFields, signer: DocumentSigner): Buffer {
  const payload = encodeCbor(
    new Map<string, unknown>([
      ['module_id', fields.moduleId],
      ['digest', 'SHA384'],
      ['timestamp', BigInt(fields.timestamp)],
      ['pcrs', fields.pcrs],
      ['certificate', signer.certificate],
      ['cabundle', signer.cabundle],
      ['public_key', fields.publicKey ?? null],
      ['user_data', fields.userData ?? null],
      ['nonce', fields.nonce ?? null],
    ]),
  );
  const cose = { protectedHeader: PROTECTED_HEADER, payload, signature: Buffer.alloc(0) };
  const signature = sign('sha384', sigStructure(cose), { key: signer.privateKey, dsaEncoding: 'ieee-p1363' });
  return encodeCbor([PROTECTED_HEADER, new Map(), payload, signature]);
}
