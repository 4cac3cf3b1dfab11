/**
 * The parent <-> enclave RPC surface (DESIGN §4): method names, their params schemas and result shapes.
 * Both sides import this; each validates what it receives.
 */
import { z } from 'zod';
import { base64, keyId } from './schema';
import { SignRequestSchema, type SignResult } from './signing/schema';

const hexUpTo = (bytes: number) => z.string().regex(/^0x(?:[0-9a-fA-F]{2})*$/, 'expected 0x-prefixed hex bytes').max(2 + 2 * bytes, `expected at most ${bytes} bytes`);
const blob = base64.max(8192, 'expected a key blob of at most 6 KiB');
const arn = z.string().regex(/^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[A-Za-z0-9-]+$/, 'expected a KMS key ARN');

export const EnclaveMethods = {
  health: 'enclave.health',
  create: 'keys.create',
  sign: 'keys.sign',
  forget: 'keys.forget',
  attestation: 'attestation.get',
} as const;

export const HealthParams = z.strictObject({});
export const CreateParams = z.strictObject({ keyId, attest: z.boolean().optional() });
export const SignParams = z.strictObject({ keyId, blob, request: SignRequestSchema });
export const ForgetParams = z.strictObject({ keyId });
/** No `userData`: the parent never chooses bytes of the enclave's evidence (see attestation/user-data.ts). */
export const AttestationParams = z.strictObject({ nonce: hexUpTo(512).optional() });

export interface EnclaveHealth {
  status: 'ok';
  version: string;
  nsm: 'real' | 'simulated';
  /** The enclave's link to the parent's KMS proxy (needed for cold signs). */
  kmsProxy: 'connected' | 'disconnected';
  uptimeMs: number;
  counters: {
    creates: number;
    signs: number;
    cacheHits: number;
    cacheMisses: number;
    cacheEvictions: number;
    cacheExpirations: number;
    cacheSize: number;
    kmsCalls: number;
    kmsErrors: number;
    /**
     * KMS answers that did not open (forged, or for a tampered blob), plus cold signs refused during the
     * cool-down that follows too many. A total only: there is deliberately no count by failing step.
     */
    failedOpens: number;
    /** Recipient key pairs made: scheduled rotations and replacements of keys retired after a failed open. */
    recipientKeyRotations: number;
    attestationDocuments: number;
    /** Signing jobs that passed signing.deadlineMs, and signer threads replaced (after a timeout or a crash). */
    signingTimeouts: number;
    signerReplacements: number;
    /** The enclave's RPC server: open connections, those paused for unread answers, and their backlog. */
    rpcConnections: number;
    rpcPausedConnections: number;
    rpcUnsentBytes: number;
    rpcInFlightBytes: number;
    errors: Record<string, number>;
  };
  memory: { rssBytes: number; heapUsedBytes: number; externalBytes: number };
}

export interface CreateResult {
  keyId: string;
  address: `0x${string}`;
  /** Uncompressed secp256k1 public key, 0x04-prefixed hex. */
  publicKey: `0x${string}`;
  /** The sealed blob, base64. */
  blob: string;
  /** Birth attestation (base64 COSE_Sign1) whose user_data is `birthUserData(keyId, address)`. */
  attestation?: string;
}

export type { SignResult };

export const KmsProxyMethods = { decrypt: 'kms.decrypt' } as const;

/**
 * Asked of the parent's KMS proxy by the enclave: an attested Decrypt. `deadlineMs` is how long the enclave
 * waits for the answer; the proxy finishes its retries well inside it, so the enclave hears KMS's real reason.
 */
export const KmsDecryptParams = z.strictObject({
  kmsKeyArn: arn,
  ciphertextBlob: base64.max(8192),
  attestationDocument: base64.max(349_528),
  deadlineMs: z.number().int().min(1).max(600_000).optional(),
});

export interface KmsDecryptResult {
  /** CMS EnvelopedData for the enclave's recipient key, base64. */
  ciphertextForRecipient: string;
  /** The key ARN KMS reports. */
  keyId: string;
}
