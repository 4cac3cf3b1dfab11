/**
 * The enclave's configuration: a JSON file baked into the image (so it is covered by PCR0), validated at
 * start. An invalid file stops the enclave with a message naming every problem.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import os from 'node:os';
import { z } from 'zod';
import { ConfigError, readJsonConfig } from '../../shared/src/config-file';
import { describeIssues, kmsKeyArn } from '../../shared/src/schema';
import { TransportConfigSchema } from '../../shared/src/transport';

/**
 * Signer threads: one per vCPU beyond the first, which the main thread keeps for I/O and request handling.
 * A 2-vCPU enclave signs on one thread while the other serves; a single vCPU signs on the main thread.
 */
function defaultWorkers(): number {
  return Math.max(0, Math.min(os.availableParallelism() - 1, 16));
}

const vsockAddress = z.string().regex(/^vsock:\/\/\d+:\d+$/, 'expected vsock://CID:PORT');
const ms = (def: number, min: number, max: number) => z.number().int().min(min).max(max).default(def);

export const EnclaveConfigSchema = z.strictObject({
  /** The KMS key that seals every data key, and its public half (DER SubjectPublicKeyInfo, base64). */
  kmsKeyArn,
  kmsPublicKey: z.string().min(1),
  listen: vsockAddress.default('vsock://16:5000'),
  kmsProxy: vsockAddress.default('vsock://3:8000'),
  transport: TransportConfigSchema.default({ kind: 'vsock' }),
  nsm: z
    .discriminatedUnion('kind', [
      z.strictObject({ kind: z.literal('device'), path: z.string().default('/dev/nsm') }),
      z.strictObject({ kind: z.literal('simulated'), socket: z.string().min(1) }),
    ])
    .default({ kind: 'device', path: '/dev/nsm' }),
  cache: z
    .strictObject({
      /** How long a decrypted key stays usable without another KMS Decrypt. */
      ttlMs: ms(15 * 60_000, 1_000, 24 * 3600_000),
      maxEntries: z.number().int().min(1).max(1_000_000).default(100_000),
    })
    .default({ ttlMs: 15 * 60_000, maxEntries: 100_000 }),
  recipient: z
    .strictObject({
      /** The ephemeral RSA-2048 key for KMS Recipient is replaced this often. */
      rotateMs: ms(3600_000, 10_000, 24 * 3600_000),
      /** An attestation document is reused for at most this long (KMS may refuse old ones). */
      documentMaxAgeMs: ms(60_000, 1_000, 3600_000),
    })
    .default({ rotateMs: 3600_000, documentMaxAgeMs: 60_000 }),
  /**
   * Failed opens of KMS answers (each one a forged answer or a tampered blob): above `maxFailures` within
   * `windowMs`, cold signs are refused for `cooldownMs`. Warm signs are not affected.
   */
  failedOpens: z
    .strictObject({
      maxFailures: z.number().int().min(1).max(10_000).default(10),
      windowMs: ms(60_000, 1_000, 24 * 3600_000),
      cooldownMs: ms(60_000, 1_000, 24 * 3600_000),
    })
    .default({ maxFailures: 10, windowMs: 60_000, cooldownMs: 60_000 }),
  limits: z
    .strictObject({
      maxConcurrent: z.number().int().min(1).max(100_000).default(4096),
      maxFrameBytes: z.number().int().min(4096).max(16 * 1024 * 1024).default(1024 * 1024),
      // Shorter than the parent's deadline for a whole sign (enclave.deadlineMs, 10 s), so a slow KMS is
      // answered as such before the parent gives up on the call.
      kmsDeadlineMs: ms(8_000, 100, 120_000),
    })
    .default({ maxConcurrent: 4096, maxFrameBytes: 1024 * 1024, kmsDeadlineMs: 8_000 }),
  signing: z
    .strictObject({
      /**
       * Signer threads. Default: the enclave's vCPUs minus one. 0 signs cheap requests on the main thread and
       * costly ones on one dedicated thread (typed data never runs on the main thread).
       */
      workers: z.number().int().min(0).max(64).default(defaultWorkers()),
      /** A signing job still running after this long answers TIMEOUT and its thread is replaced. */
      deadlineMs: ms(2000, 10, 60_000),
    })
    .default({ workers: defaultWorkers(), deadlineMs: 2000 }),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type EnclaveConfig = z.output<typeof EnclaveConfigSchema> & { kmsPublicKeyObject: KeyObject };

export { ConfigError };

export function parseEnclaveConfig(raw: unknown, source = 'configuration'): EnclaveConfig {
  const res = EnclaveConfigSchema.safeParse(raw);
  if (!res.success) throw new ConfigError(`invalid ${source}: ${describeIssues(res.error, 'config')}`);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(res.data.kmsPublicKey, 'base64'), format: 'der', type: 'spki' });
  } catch {
    throw new ConfigError(`invalid ${source}: config.kmsPublicKey is not a base64 DER SubjectPublicKeyInfo`);
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (key.asymmetricKeyType !== 'rsa' || bits < 2048) {
    throw new ConfigError(`invalid ${source}: config.kmsPublicKey must be an RSA key of at least 2048 bits (the KMS key is RSA_2048/3072/4096)`);
  }
  return { ...res.data, kmsPublicKeyObject: key };
}

export function loadEnclaveConfig(file: string): EnclaveConfig {
  return parseEnclaveConfig(readJsonConfig(file), `configuration ${file}`);
}
