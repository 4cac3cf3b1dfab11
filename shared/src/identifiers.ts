/**
 * The formats of the identifiers that more than one layer checks, each written once: the zod schemas
 * (schema.ts), the sealed-blob decoder (blob.ts), both programs' configurations, the caller API's routes and
 * the CLI all use these. Plain regular expressions and no zod, so the CLI bundle can use them without it.
 */
import { randomBytes } from 'node:crypto';

/** A KMS key ARN, in any partition (aws, aws-cn, aws-us-gov): the key data keys are sealed under. */
export const KMS_KEY_ARN_RE = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[A-Za-z0-9-]+$/;
export const KMS_KEY_ARN_EXPECTED = 'expected a KMS key ARN';

/**
 * Key ids are chosen by the parent: short, URL-safe and free of path separators. The unanchored pattern is
 * for building URL patterns (`/v1/keys/(…)/sign`).
 */
export const KEY_ID_PATTERN = '[A-Za-z0-9_-]{1,64}';
export const KEY_ID_RE = new RegExp(`^${KEY_ID_PATTERN}$`);
export const KEY_ID_EXPECTED = 'expected 1-64 characters of [A-Za-z0-9_-]';

/** A new key id: `k_` and 16 random bytes (the parent's for token projects, the enclave's for wallet users). */
export function newKeyId(): string {
  return `k_${randomBytes(16).toString('base64url')}`;
}

/** A 20-byte EVM address as 0x-prefixed hex, in any case (the EIP-55 checksum is not checked here). */
export const ADDRESS_RE = /^0x[0-9a-fA-F]{40}$/;
export const ADDRESS_EXPECTED = 'expected a 20-byte 0x-prefixed address';

/**
 * Project ids are chosen by the enclave (`p_` + random, or `default` for the project made at genesis); the
 * unanchored pattern is for URL patterns.
 */
export const PROJECT_ID_PATTERN = '(?:default|p_[A-Za-z0-9_-]{16,43})';
export const PROJECT_ID_RE = new RegExp(`^${PROJECT_ID_PATTERN}$`);
export const PROJECT_ID_EXPECTED = 'expected "default" or p_ and 16-43 characters of [A-Za-z0-9_-]';

/** A key's subject within its project (an external id, or a JWT issuer and user): 1-1024 bytes of UTF-8. */
export const SUBJECT_MAX_BYTES = 1024;

/** The keystore identity's Ed25519 public key: 32 bytes as 0x-prefixed lower-case hex. */
export const IDENTITY_PUBLIC_KEY_RE = /^0x[0-9a-f]{64}$/;
export const IDENTITY_PUBLIC_KEY_EXPECTED = 'expected a 32-byte Ed25519 public key as 0x-prefixed lower-case hex';

/**
 * What a request id may be, on the API (`x-request-id`) and on the RPC envelope: 1-128 characters of
 * `[A-Za-z0-9_.:-]`, no control characters, quotes or JSON. The HTTP servers take an `x-request-id` by it
 * (http/request-id.ts); the SDK checks a caller's before sending it (here, not in log.ts: the SDK takes no logger).
 */
export const REQUEST_ID_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
