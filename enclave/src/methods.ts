/**
 * The handlers of the methods the enclave serves (`EnclaveApi`, docs/PROTOCOL.md), with health counters and
 * errors counted by code.
 */
import { USER_DATA_TAGS } from '@nks/shared/attestation/user-data';
import { RELEASE_VERSION } from '@nks/shared/release';
import { asKeystoreError, KeystoreError } from '@nks/shared/errors';
import {
  ACCEPTED_PROTOCOL_VERSIONS,
  EnclaveApi,
  PROTOCOL_VERSION,
  type EnclaveHealth,
  type HelloResult,
  type KmsProxyApi,
} from '@nks/shared/enclave-api';
import { serveApi, type RpcClient, type RpcMethod, type RpcServerStats } from '@nks/shared/rpc';
import type { KeyCache } from './keys/cache';
import type { KeyVault } from './keys/vault';
import type { FailedOpens } from './kms/failed-opens';
import type { SignerPool } from './signing/pool';
import type { RecipientKeys } from './kms/recipient';
import type { Unsealer } from './kms/unseal';
import type { NsmClient } from './nsm/client';

export const ENCLAVE_VERSION = RELEASE_VERSION;

export interface EnclaveParts {
  keys: KeyVault;
  cache: KeyCache;
  unsealer: Unsealer;
  recipient: RecipientKeys;
  failedOpens: FailedOpens;
  signers: SignerPool;
  nsm: NsmClient;
  kmsProxy: RpcClient<KmsProxyApi>;
  startedAt: number;
  /** The enclave's own RPC server (made after the methods), for its per-connection backlog. */
  rpcStats?: () => RpcServerStats | undefined;
}

const hexBytes = (h: string | undefined) => (h ? Buffer.from(h.slice(2), 'hex') : undefined);

/**
 * Agrees a protocol version with a parent that speaks `theirs`: theirs if this enclave accepts it; this
 * enclave's own if the parent is newer (the parent then decides whether it accepts it); otherwise refused.
 */
export function hello(theirs: number): HelloResult {
  const supportedVersions = [...ACCEPTED_PROTOCOL_VERSIONS];
  const ok = ACCEPTED_PROTOCOL_VERSIONS.includes(theirs) || theirs > PROTOCOL_VERSION;
  if (!ok) {
    throw new KeystoreError(
      'UNSUPPORTED_VERSION',
      `protocol version ${theirs} is not supported: this enclave speaks versions ${supportedVersions.join(' and ')}; upgrade the parent`,
    );
  }
  return {
    protocolVersion: Math.min(theirs, PROTOCOL_VERSION),
    supportedVersions,
    features: Object.keys(EnclaveApi).sort(),
    enclaveVersion: ENCLAVE_VERSION,
  };
}

export function enclaveMethods(parts: EnclaveParts): { methods: Record<string, RpcMethod>; errors: Record<string, number> } {
  const errors: Record<string, number> = {};
  /** Counts failures by code; the error itself goes back to the caller unchanged. */
  const counted =
    <P, R>(fn: (p: P) => R | Promise<R>) =>
    async (p: P): Promise<R> => {
      try {
        return await fn(p);
      } catch (err) {
        const code = asKeystoreError(err).code;
        errors[code] = (errors[code] ?? 0) + 1;
        throw err;
      }
    };

  const health = (): EnclaveHealth => {
    const c = parts.cache.stats;
    const rpc = parts.rpcStats?.();
    const mem = process.memoryUsage();
    return {
      status: 'ok',
      version: ENCLAVE_VERSION,
      nsm: parts.nsm.kind,
      kmsProxy: parts.kmsProxy.connected ? 'connected' : 'disconnected',
      uptimeMs: Date.now() - parts.startedAt,
      counters: {
        creates: parts.keys.creates,
        signs: parts.keys.signs,
        cacheHits: c.hits,
        cacheMisses: c.misses,
        cacheEvictions: c.evictions,
        cacheExpirations: c.expirations,
        cacheSize: c.size,
        kmsCalls: parts.unsealer.kmsCalls,
        kmsErrors: parts.unsealer.kmsErrors,
        failedOpens: parts.failedOpens.total,
        recipientKeyRotations: parts.recipient.rotations,
        attestationDocuments: parts.recipient.documents,
        signingTimeouts: parts.signers.timeouts,
        signerReplacements: parts.signers.replacements,
        rpcConnections: rpc?.connections ?? 0,
        rpcPausedConnections: rpc?.pausedConnections ?? 0,
        rpcUnsentBytes: rpc?.unsentBytes ?? 0,
        rpcInFlightBytes: rpc?.inFlightBytes ?? 0,
        errors: { ...errors },
      },
      memory: { rssBytes: mem.rss, heapUsedBytes: mem.heapUsed, externalBytes: mem.external },
    };
  };

  const methods = serveApi(EnclaveApi, {
    'enclave.hello': counted((p) => hello(p.protocolVersion)),
    'enclave.health': health,
    'keys.create': counted((p) => parts.keys.create(p.keyId, p.attest ?? false)),
    'keys.sign': counted((p) => parts.keys.sign(p.keyId, p.blob, p.request)),
    'keys.forget': counted((p) => ({ keyId: p.keyId, forgotten: parts.keys.forget(p.keyId) })),
    'attestation.get': counted(async (p) => {
      const nonce = hexBytes(p.nonce);
      // The caller's nonce goes in the `nonce` field; `user_data` is tagged so this document can never pass
      // as another path's evidence (a birth, the identity).
      const document = await parts.nsm.attest({ tag: USER_DATA_TAGS.attestation, content: nonce, nonce });
      return { document: document.toString('base64') };
    }),
  });
  return { methods, errors };
}
