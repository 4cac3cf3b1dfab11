/**
 * The parent <-> enclave RPC surface, one table per direction (docs/PROTOCOL.md): `EnclaveApi` is what the
 * enclave serves to the parent, `KmsProxyApi` what the parent's KMS proxy serves to the enclave. Each entry
 * is a method's params schema and result type; the servers' handler maps and the clients' calls are typed
 * from these tables (shared/src/rpc/api.ts). Each side validates what it receives.
 */
import { z } from 'zod';
import { defineMethod } from './rpc/api';
import { base64, hexBytes, keyId, kmsKeyArn } from './schema';
import { SignRequestSchema, type SignResult } from './signing/schema';

const hexUpTo = (bytes: number) => hexBytes.max(2 + 2 * bytes, `expected at most ${bytes} bytes`);
const blob = base64.max(8192, 'expected a key blob of at most 6 KiB');

/**
 * The protocol version this build speaks, and the versions it accepts: its own and the one before, so a
 * rolling upgrade can run an old parent with a new enclave and the reverse (docs/PROTOCOL.md, "Versions").
 * Version 1 (release 0.2.0) has no `enclave.hello` and carries error codes in `data.reason` only.
 * The version selects wire details only: the enclave's checks are the same whatever version is spoken.
 */
export const PROTOCOL_VERSION = 2;
export const ACCEPTED_PROTOCOL_VERSIONS: readonly number[] = [PROTOCOL_VERSION - 1, PROTOCOL_VERSION];

export const HelloParams = z.strictObject({ protocolVersion: z.number().int().min(1).max(1_000_000) });

export interface HelloResult {
  /** The version both sides speak on this connection. */
  protocolVersion: number;
  supportedVersions: number[];
  /** The methods this enclave serves, so a parent can tell what it may call. */
  features: string[];
  enclaveVersion: string;
}

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

export interface ForgetResult {
  keyId: string;
  /** Whether the key was in the enclave's cache. */
  forgotten: boolean;
}

export interface AttestationResult {
  /** COSE_Sign1 attestation document, base64; `user_data` is tagged (shared/src/attestation/user-data.ts). */
  document: string;
}

/** What the enclave serves to the parent. */
export const EnclaveApi = {
  'enclave.hello': defineMethod<HelloResult>()(HelloParams),
  'enclave.health': defineMethod<EnclaveHealth>()(HealthParams),
  'keys.create': defineMethod<CreateResult>()(CreateParams),
  'keys.sign': defineMethod<SignResult>()(SignParams),
  'keys.forget': defineMethod<ForgetResult>()(ForgetParams),
  'attestation.get': defineMethod<AttestationResult>()(AttestationParams),
};
export type EnclaveApi = typeof EnclaveApi;

/**
 * Asked of the parent's KMS proxy by the enclave: an attested Decrypt. `deadlineMs` is how long the enclave
 * waits for the answer; the proxy finishes its retries well inside it, so the enclave hears KMS's real reason.
 */
export const KmsDecryptParams = z.strictObject({
  kmsKeyArn,
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

/** What the parent's KMS proxy serves to the enclave. */
export const KmsProxyApi = {
  'kms.decrypt': defineMethod<KmsDecryptResult>()(KmsDecryptParams),
};
export type KmsProxyApi = typeof KmsProxyApi;
