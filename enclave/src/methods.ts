/**
 * The RPC methods the enclave serves (DESIGN §4), with health counters and errors counted by reason.
 */
import { asKeystoreError } from '../../shared/src/errors';
import {
  AttestationParams,
  CreateParams,
  EnclaveMethods,
  ForgetParams,
  HealthParams,
  SignParams,
  type EnclaveHealth,
} from '../../shared/src/protocol';
import { rpcMethod, type RpcClient, type RpcMethod } from '../../shared/src/rpc';
import type { KeyCache } from './keys/cache';
import type { KeyService } from './keys/service';
import type { RecipientKeys } from './kms/recipient';
import type { Unsealer } from './kms/unseal';
import type { NsmClient } from './nsm/client';

export const ENCLAVE_VERSION = '0.1.0';

export interface EnclaveParts {
  keys: KeyService;
  cache: KeyCache;
  unsealer: Unsealer;
  recipient: RecipientKeys;
  nsm: NsmClient;
  kmsProxy: RpcClient;
  startedAt: number;
}

const hexBytes = (h: string | undefined) => (h ? Buffer.from(h.slice(2), 'hex') : undefined);

export function enclaveMethods(parts: EnclaveParts): { methods: Record<string, RpcMethod>; errors: Record<string, number> } {
  const errors: Record<string, number> = {};
  /** Counts failures by reason; the error itself goes back to the caller unchanged. */
  const counted =
    <P, R>(fn: (p: P) => R | Promise<R>) =>
    async (p: P): Promise<R> => {
      try {
        return await fn(p);
      } catch (err) {
        const reason = asKeystoreError(err).reason;
        errors[reason] = (errors[reason] ?? 0) + 1;
        throw err;
      }
    };

  const health = (): EnclaveHealth => {
    const c = parts.cache.stats;
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
        recipientKeyRotations: parts.recipient.rotations,
        attestationDocuments: parts.recipient.documents,
        errors: { ...errors },
      },
      memory: { rssBytes: mem.rss, heapUsedBytes: mem.heapUsed, externalBytes: mem.external },
    };
  };

  const methods: Record<string, RpcMethod> = {
    [EnclaveMethods.health]: rpcMethod(HealthParams, health),
    [EnclaveMethods.create]: rpcMethod(CreateParams, counted((p) => parts.keys.create(p.keyId, p.attest ?? false))),
    [EnclaveMethods.sign]: rpcMethod(SignParams, counted((p) => parts.keys.sign(p.keyId, p.blob, p.request))),
    [EnclaveMethods.forget]: rpcMethod(ForgetParams, counted((p) => ({ keyId: p.keyId, forgotten: parts.keys.forget(p.keyId) }))),
    [EnclaveMethods.attestation]: rpcMethod(
      AttestationParams,
      counted(async (p) => {
        const document = await parts.nsm.attest({ nonce: hexBytes(p.nonce), userData: hexBytes(p.userData) });
        return { document: document.toString('base64') };
      }),
    ),
  };
  return { methods, errors };
}
