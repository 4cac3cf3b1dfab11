/**
 * CBOR through cbor-x, configured once: maps decode to `Map` (attestation documents and NSM messages have
 * integer keys), no record extension, and map headers sized to their entry count so encodings are the
 * standard, shortest ones. `canonicalCbor` adds the deterministic key order of RFC 8949 §4.2.1.
 */
import { Decoder, Encoder } from 'cbor-x';

const decoder = new Decoder({ mapsAsObjects: false, useRecords: false });
const encoder = new Encoder({ useRecords: false, variableMapSize: true, mapsAsObjects: false, tagUint8Array: false });

export function decodeCbor(data: Uint8Array): unknown {
  return decoder.decode(data);
}

export function encodeCbor(value: unknown): Buffer {
  return encoder.encode(value);
}

/**
 * Deterministic encoding of a flat record: keys sorted by their encoded bytes (for text keys: shorter first,
 * then bytewise), so two parties that build the same record get the same bytes.
 */
export function canonicalCbor(record: Record<string, unknown>): Buffer {
  const keys = Object.keys(record).sort((a, b) => {
    const ka = encoder.encode(a);
    const kb = encoder.encode(b);
    return ka.length - kb.length || Buffer.compare(ka, kb);
  });
  return encoder.encode(new Map(keys.map((k) => [k, record[k]])));
}
