/**
 * The wallet routes' TLS identity (docs/TLS.md): a P-256 key made in the enclave and sealed like a user key
 * (blob kind "tls", shared/src/blob.ts), whose blob the keystore identity signs so that the enclave only ever
 * serves with a key it made itself (the KMS public key is public: anyone can seal a key of their own). The
 * operator gets a certificate for the enclave's CSR and installs the chain through the parent; the enclave
 * serves only a chain whose leaf names its key. Anyone can ask `GET /v1/tls/attestation?nonce=` for a document
 * whose user_data is `tlsUserData(SPKI)` (attestation/user-data.ts) to check the key lives in an approved enclave.
 */
import { createHash } from 'node:crypto';

/** The domain tag of the identity's signature over a TLS blob. Prefix-free with "nks-identity-blob-v1". */
export const TLS_BLOB_TAG = 'nks-tls-blob-v1';

/** What the identity signs (Ed25519) to say a TLS blob is the enclave's own: SHA-256(TLS_BLOB_TAG ‖ blob bytes). */
export function tlsBlobDigest(blob: Uint8Array): Buffer {
  return createHash('sha256').update(TLS_BLOB_TAG, 'utf8').update(blob).digest();
}

/**
 * A DNS name a wallet certificate may be requested for: lower case, 1-253 characters, labels of letters,
 * digits and hyphens, the last starting with a letter (as every top-level domain does), so that nothing a
 * browser reads as an IPv4 address (127.0.0.1, 0x7f000001, 1.2.3.0x4) passes; no wildcard (one name, one
 * enclave fleet).
 */
export const TLS_NAME_RE = /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
export const TLS_NAME_EXPECTED = 'expected a lower-case DNS name (no wildcard, no IP address)';
/** At most this many names per key (the CSR's subjectAltName). */
export const TLS_MAX_NAMES = 10;
/** An installed chain (PEM, leaf first, then intermediates; the root may be left out) is at most this long. */
export const TLS_CHAIN_MAX_BYTES = 64 * 1024;
/** At most this many certificates in a chain. */
export const TLS_CHAIN_MAX_CERTS = 8;

/** The public HTTPS paths the enclave serves beside the wallet routes. */
export const WALLETS_HEALTH_PATH = '/v1/health';
export const TLS_ATTESTATION_PATH = '/v1/tls/attestation';
/** The wallet routes' documented prefix (the enclave serves them; the parent answers 421 there). */
export const WALLETS_PREFIX = '/v1/{projectKey}/wallets';
/** The caller's nonce for a TLS attestation: 8-64 bytes as hex (no 0x), so documents are fresh. */
export const TLS_NONCE_RE = /^(?:[0-9a-fA-F]{2}){8,64}$/;
