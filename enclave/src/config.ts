/**
 * The enclave's configuration: a JSON file baked into the image (so it is covered by PCR0), validated at
 * start. An invalid file stops the enclave with a message naming every problem.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import os from 'node:os';
import { z } from 'zod';
import { ConfigError, readJsonConfig } from '@nks/shared/config-file';
import { DEFAULT_MAX_FRAME_BYTES } from '@nks/shared/framing';
import { DEFAULT_LOG_LEVEL, LOG_LEVELS } from '@nks/shared/log';
import { describeIssues, kmsKeyArn } from '@nks/shared/schema';
import { DEFAULT_ENCLAVE_ADDRESS, DEFAULT_KMS_PROXY_ADDRESS, TransportConfigSchema, VsockAddressSchema } from '@nks/shared/transport';
import { NSM_DEVICE_PATH } from './nsm/device';
import { DEFAULT_SIGNING_DEADLINE_MS } from './signing/pool';

/**
 * Signer threads: one per vCPU beyond the first, which the main thread keeps for I/O and request handling.
 * A 2-vCPU enclave signs on one thread while the other serves; a single vCPU signs on the main thread.
 */
function defaultWorkers(): number {
  return Math.max(0, Math.min(os.availableParallelism() - 1, 16));
}

/** Every default of the configuration, once: the schema below fills these in, and tests compare with them. */
export const ENCLAVE_CONFIG_DEFAULTS = {
  listen: DEFAULT_ENCLAVE_ADDRESS,
  kmsProxy: DEFAULT_KMS_PROXY_ADDRESS,
  transport: { kind: 'vsock' },
  nsm: { kind: 'device', path: NSM_DEVICE_PATH },
  cache: { ttlMs: 15 * 60_000, maxEntries: 100_000 },
  recipient: { rotateMs: 3600_000, documentMaxAgeMs: 60_000 },
  failedOpens: { maxFailures: 10, windowMs: 60_000, cooldownMs: 60_000 },
  // kmsDeadlineMs is shorter than the parent's deadline for a whole sign (its enclave.deadlineMs, 10 s), so a
  // slow KMS is answered as such before the parent gives up on the call.
  limits: { maxConcurrent: 4096, maxFrameBytes: DEFAULT_MAX_FRAME_BYTES, kmsDeadlineMs: 8_000 },
  signing: { workers: defaultWorkers(), deadlineMs: DEFAULT_SIGNING_DEADLINE_MS },
  logLevel: DEFAULT_LOG_LEVEL,
} as const;

const D = ENCLAVE_CONFIG_DEFAULTS;
const ms = (def: number, min: number, max: number) => z.number().int().min(min).max(max).default(def);

// Sections default with `prefault({})`: an absent section is parsed as an empty one, so it gets the fields'
// own defaults and no section restates them.
export const EnclaveConfigSchema = z.strictObject({
  /** The KMS key that seals every data key, and its public half (DER SubjectPublicKeyInfo, base64). */
  kmsKeyArn,
  kmsPublicKey: z.string().min(1),
  listen: VsockAddressSchema.default(D.listen),
  kmsProxy: VsockAddressSchema.default(D.kmsProxy),
  transport: TransportConfigSchema.default(D.transport),
  nsm: z
    .discriminatedUnion('kind', [
      z.strictObject({ kind: z.literal('device'), path: z.string().default(D.nsm.path) }),
      z.strictObject({ kind: z.literal('simulated'), socket: z.string().min(1) }),
    ])
    .prefault({ kind: D.nsm.kind }),
  cache: z
    .strictObject({
      /** How long a decrypted key stays usable without another KMS Decrypt. */
      ttlMs: ms(D.cache.ttlMs, 1_000, 24 * 3600_000),
      maxEntries: z.number().int().min(1).max(1_000_000).default(D.cache.maxEntries),
    })
    .prefault({}),
  recipient: z
    .strictObject({
      /** The ephemeral RSA-2048 key for KMS Recipient is replaced this often. */
      rotateMs: ms(D.recipient.rotateMs, 10_000, 24 * 3600_000),
      /** An attestation document is reused for at most this long (KMS may refuse old ones). */
      documentMaxAgeMs: ms(D.recipient.documentMaxAgeMs, 1_000, 3600_000),
    })
    .prefault({}),
  /**
   * Failed opens of KMS answers (each one a forged answer or a tampered blob): above `maxFailures` within
   * `windowMs`, cold signs are refused for `cooldownMs`. Warm signs are not affected.
   */
  failedOpens: z
    .strictObject({
      maxFailures: z.number().int().min(1).max(10_000).default(D.failedOpens.maxFailures),
      windowMs: ms(D.failedOpens.windowMs, 1_000, 24 * 3600_000),
      cooldownMs: ms(D.failedOpens.cooldownMs, 1_000, 24 * 3600_000),
    })
    .prefault({}),
  limits: z
    .strictObject({
      maxConcurrent: z.number().int().min(1).max(100_000).default(D.limits.maxConcurrent),
      maxFrameBytes: z
        .number()
        .int()
        .min(4096)
        .max(16 * 1024 * 1024)
        .default(D.limits.maxFrameBytes),
      kmsDeadlineMs: ms(D.limits.kmsDeadlineMs, 100, 120_000),
    })
    .prefault({}),
  signing: z
    .strictObject({
      /**
       * Signer threads. Default: the enclave's vCPUs minus one. 0 signs cheap requests on the main thread and
       * costly ones on one dedicated thread (typed data never runs on the main thread).
       */
      workers: z.number().int().min(0).max(64).default(D.signing.workers),
      /** A signing job still running after this long answers TIMEOUT and its thread is replaced. */
      deadlineMs: ms(D.signing.deadlineMs, 10, 60_000),
    })
    .prefault({}),
  logLevel: z.enum(LOG_LEVELS).default(D.logLevel),
});

export type EnclaveConfig = z.output<typeof EnclaveConfigSchema> & { kmsPublicKeyObject: KeyObject };

export { ConfigError };

export function parseEnclaveConfig(raw: unknown, source = 'configuration'): EnclaveConfig {
  const res = EnclaveConfigSchema.safeParse(raw);
  if (!res.success) throw new ConfigError(`invalid ${source}: ${describeIssues(res.error, 'config')}`);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(res.data.kmsPublicKey, 'base64'), format: 'der', type: 'spki' });
  } catch (err) {
    throw new ConfigError(`invalid ${source}: config.kmsPublicKey is not a base64 DER SubjectPublicKeyInfo`, { cause: err });
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (key.asymmetricKeyType !== 'rsa' || bits < 2048) {
    throw new ConfigError(
      `invalid ${source}: config.kmsPublicKey must be an RSA key of at least 2048 bits (the KMS key is RSA_2048/3072/4096)`,
    );
  }
  return { ...res.data, kmsPublicKeyObject: key };
}

export function loadEnclaveConfig(file: string): EnclaveConfig {
  return parseEnclaveConfig(readJsonConfig(file), `configuration ${file}`);
}
