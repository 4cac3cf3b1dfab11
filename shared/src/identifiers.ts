/**
 * The formats of the identifiers that more than one layer checks, each written once: the zod schemas
 * (schema.ts), the sealed-blob decoder (blob.ts), both programs' configurations, the caller API's routes and
 * the CLI all use these. Plain regular expressions and no zod, so the CLI bundle can use them without it.
 */

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

/** A 20-byte EVM address as 0x-prefixed hex, in any case (the EIP-55 checksum is not checked here). */
export const ADDRESS_RE = /^0x[0-9a-fA-F]{40}$/;
export const ADDRESS_EXPECTED = 'expected a 20-byte 0x-prefixed address';
