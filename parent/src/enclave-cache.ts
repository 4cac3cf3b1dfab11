/**
 * The enclave's key-cache settings (config.enclave.cache, docs/OPERATIONS.md "Sizing the key cache"), sent on
 * every connection's start-up (the pool's handshake: enclave-link/pool.ts), so a restarted enclave, which starts
 * with its image's values, gets them again before it serves this parent. The enclave checks them against its
 * image's bounds: a refusal names the bound, and the connection is not used (the parent is not ready) until the
 * setting or the image changes.
 */
import type { CacheSettings, EnclaveApi } from '@nks/shared/enclave-api';
import { KeystoreError } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import type { HandshakeCall } from '@nks/shared/rpc';

export interface WantedCacheSettings {
  ttlMs?: number | undefined;
  maxEntries?: number | undefined;
}

export class EnclaveCacheSettings {
  private applied: CacheSettings | undefined;
  private warnedOld = false;

  constructor(
    private readonly wanted: WantedCacheSettings,
    private readonly logger: Logger,
  ) {}

  /** What the enclave last answered (the settings in force and its image's bounds), once one did. */
  get effective(): CacheSettings | undefined {
    return this.applied;
  }

  /** The handshake step: sends the wanted settings (absent fields: the image's) to an enclave that serves cache.configure. */
  readonly configure = async (call: HandshakeCall<EnclaveApi>, features: readonly string[]): Promise<void> => {
    const { ttlMs, maxEntries } = this.wanted;
    if (!features.includes('cache.configure')) {
      // An image of an earlier release: its own values stay in force (health shows no cacheTtlMs).
      if ((ttlMs !== undefined || maxEntries !== undefined) && !this.warnedOld) {
        this.warnedOld = true;
        this.logger.warn('the enclave image does not take cache settings (an earlier release): config.enclave.cache is not applied');
      }
      return;
    }
    let answer: CacheSettings;
    try {
      answer = await call('cache.configure', {
        ...(ttlMs !== undefined ? { ttlMs } : {}),
        ...(maxEntries !== undefined ? { maxEntries } : {}),
      });
    } catch (err) {
      if (err instanceof KeystoreError && err.code === 'INVALID_PARAMS') {
        throw new KeystoreError(
          'INVALID_PARAMS',
          `the enclave refused config.enclave.cache: ${err.message}; set it within the image's bounds, or build an image with other cache.bounds`,
        );
      }
      throw err;
    }
    const before = this.applied;
    this.applied = answer;
    if (before?.ttlMs !== answer.ttlMs || before.maxEntries !== answer.maxEntries) {
      this.logger.info(
        { ttlMs: answer.ttlMs, maxEntries: answer.maxEntries, bounds: answer.bounds },
        'enclave key cache settings in force',
      );
    }
  };
}
