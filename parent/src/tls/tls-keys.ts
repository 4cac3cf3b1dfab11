/**
 * The wallet routes' TLS keys, as the operator manages them through the parent (docs/TLS.md): `create` asks the
 * enclave for a new key (`tls.create`: made and sealed inside, its blob signed by the keystore identity, a CSR
 * and an attestation) and stores it as pending; `install` finds the stored key a certificate chain is for,
 * has the enclave install it (`tls.install`) and marks it current; `status` says what is served. After every
 * enclave (re)connection the current key and chain are installed again (`onEnclaveConnected`), with back-off,
 * since an enclave that restarted serves nothing until told.
 *
 * The parent never holds a TLS private key: what it stores is sealed to KMS for the enclave, and the identity's
 * signature over it is what makes the enclave accept it (a key the parent sealed itself has none).
 */
import { createPublicKey, verify } from 'node:crypto';
import { backoffDelay, type BackoffOptions } from '@nks/shared/backoff';
import type { TlsStatus } from '@nks/shared/enclave-api';
import { KeystoreError } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import { checkChain, leafPublicKey } from '@nks/shared/tls-chain';
import { tlsBlobDigest } from '@nks/shared/tls-identity';
import type { RecordChecker } from '../enclave-link/identity';
import type { EnclavePool } from '../enclave-link/pool';
import type { KeyStore } from '../store/key-store';
import type { StoredTlsKey } from '../store/types';
import { fingerprintOf, leafOf } from './chain';

export interface TlsKeysOptions {
  store: KeyStore;
  pool: EnclavePool;
  /** The identity's record checker (KeyRegistry.records): the identity's key checks a new TLS blob's signature. */
  records: () => RecordChecker;
  logger: Logger;
  /** What the enclave serves, as the parent last learned it (metrics `nks_tls_*`). */
  onStatus?: (status: TlsStatus | null) => void;
  /** Re-installs after a connection wait this long between attempts (default 0.5 s doubling to 30 s). */
  retry?: BackoffOptions;
}

export interface TlsKeyCreated {
  publicKey: string;
  csr: string;
  attestation: string;
  names: string[];
  createdAt: string;
}

export interface TlsOverview {
  /** What the enclave serves now (its health's `tls`); null when the enclave does not answer. */
  status: TlsStatus | null;
  /** The key the enclave is told to serve after every start. */
  current: { publicKey: string; names: string[]; notAfter: string; installedAt: string } | null;
  /** Keys made and never installed, newest first. */
  pending: Array<{ publicKey: string; names: string[]; createdAt: string }>;
}

/** At most this many pending keys are listed. */
export const PENDING_LISTED = 100;
/** The one message for a `tls.*` answer that is not what was asked. */
export const BAD_TLS_ANSWER = 'the enclave answered with a TLS key or status that does not match the request';

const DEFAULT_RETRY: BackoffOptions = { initialMs: 500, maxMs: 30_000 };
const iso = (ms: number) => new Date(ms).toISOString();

export class TlsKeys {
  private running = false;
  /** A connection came up while a re-install ran: check once more when it ends. */
  private again = false;
  private stopped = false;
  private wake: (() => void) | null = null;

  constructor(private readonly options: TlsKeysOptions) {}

  /** Whether a re-install run (after an enclave connection) is going on. */
  get reinstalling(): boolean {
    return this.running;
  }

  /** A new key for `names`: made in the enclave, its answer checked, stored as pending. */
  async create(names: string[]): Promise<TlsKeyCreated> {
    const { pool, store, logger } = this.options;
    const checker = this.options.records();
    const made = await pool.call('tls.create', { names });
    const fail = (cause?: unknown) => new KeystoreError('KEY_INTEGRITY', BAD_TLS_ANSWER, { cause });
    if (typeof made?.blob !== 'string' || typeof made.csr !== 'string' || typeof made.attestation !== 'string') throw fail();
    try {
      const key = createPublicKey({ key: Buffer.from(made.publicKey, 'base64'), format: 'der', type: 'spki' });
      if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw fail();
      const digest = tlsBlobDigest(Buffer.from(made.blob, 'base64'));
      if (!verify(null, digest, checker.identity.key, Buffer.from(made.blobSignature, 'base64'))) throw fail();
    } catch (err) {
      throw err instanceof KeystoreError ? err : fail(err);
    }
    const stored = await store.insertTlsKey({
      publicKey: made.publicKey,
      blob: made.blob,
      blobSignature: made.blobSignature,
      names,
      csr: made.csr,
      createdAt: Date.now(),
    });
    logger.info({ publicKey: stored.publicKey, names }, 'made a TLS key for the wallet routes: waiting for its certificate');
    return { publicKey: stored.publicKey, csr: stored.csr, attestation: made.attestation, names, createdAt: iso(stored.createdAt) };
  }

  /** Installs `chainText` with the stored key its leaf names, and makes that key current. */
  async install(chainText: string): Promise<TlsStatus> {
    const { store, logger } = this.options;
    const chain = asBodyChain(() => {
      const spki = leafPublicKey(chainText);
      return { spki, checked: checkChain(chainText, spki, Date.now()) };
    });
    const key = await store.tlsKey(chain.spki.toString('base64'));
    if (!key)
      throw new KeystoreError(
        'INVALID_PARAMS',
        "body.chain: the leaf certificate's public key is not a TLS key of this keystore: get the certificate for a CSR from POST /v1/tls/keys",
      );
    const status = await this.installInEnclave(key, chain.checked.pem);
    await store.setCurrentTlsKey(key.publicKey, chain.checked.pem, Date.now());
    logger.info(
      { publicKey: key.publicKey, names: status.names, notAfter: status.notAfter },
      'installed a TLS certificate for the wallet routes',
    );
    return status;
  }

  async status(): Promise<TlsOverview> {
    const { store, pool } = this.options;
    let status: TlsStatus | null = null;
    if (pool.up) {
      try {
        status = (await pool.call('enclave.health', {}, 2000)).tls ?? null;
      } catch {
        status = null;
      }
    }
    const current = await store.currentTlsKey();
    return {
      status,
      current:
        current?.chain && current.installedAt !== null
          ? {
              publicKey: current.publicKey,
              names: current.names,
              notAfter: iso(Date.parse(leafOf(current.chain).validTo)),
              installedAt: iso(current.installedAt),
            }
          : null,
      pending: (await store.pendingTlsKeys(PENDING_LISTED)).map((k) => ({
        publicKey: k.publicKey,
        names: k.names,
        createdAt: iso(k.createdAt),
      })),
    };
  }

  /** `tls.install`, its answer checked: the enclave must now serve this key. */
  private async installInEnclave(key: StoredTlsKey, chain: string): Promise<TlsStatus> {
    const status = await this.options.pool.call('tls.install', { blob: key.blob, blobSignature: key.blobSignature, chain });
    if (status?.state !== 'installed' || status.publicKey !== key.publicKey) {
      this.options.onStatus?.(null);
      throw new KeystoreError('KEY_INTEGRITY', BAD_TLS_ANSWER);
    }
    this.options.onStatus?.(status);
    return status;
  }

  /**
   * An enclave connection came up (the pool's `onConnected`): make sure the enclave serves the current key,
   * installing it again if it does not (it restarted). One run at a time; failures are retried with back-off
   * while the enclave is reachable, and the next connection starts a new run otherwise.
   */
  onEnclaveConnected(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void this.ensure().finally(() => {
      this.running = false;
    });
  }

  private async ensure(): Promise<void> {
    const { logger, pool } = this.options;
    for (let attempt = 0; !this.stopped;) {
      this.again = false;
      try {
        await this.ensureOnce();
        if (!this.again) return;
        attempt = 0; // another connection came up meanwhile (maybe a restarted enclave): look again
        continue;
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        if (!pool.up) {
          logger.warn({ reason }, 'could not install the wallet TLS key: the enclave is not reachable; retried when it is');
          return;
        }
        const delayMs = backoffDelay(attempt, this.options.retry ?? DEFAULT_RETRY);
        attempt += 1;
        logger.warn({ reason, attempt, retryInMs: delayMs }, 'could not install the wallet TLS key in the enclave; retrying');
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delayMs);
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wake = null;
      }
    }
  }

  /** Installs the current key unless the enclave already serves it with the stored chain. */
  private async ensureOnce(): Promise<void> {
    const { store, pool, logger } = this.options;
    const current = await store.currentTlsKey();
    if (!current?.chain) return;
    const health = await pool.call('enclave.health', {}, 2000);
    const served = health?.tls;
    if (
      served?.state === 'installed' &&
      served.publicKey === current.publicKey &&
      served.fingerprint256 === fingerprintOf(leafOf(current.chain))
    ) {
      this.options.onStatus?.(served);
      return;
    }
    const status = await this.installInEnclave(current, current.chain);
    logger.info({ publicKey: current.publicKey, notAfter: status.notAfter }, 'installed the wallet TLS key in the enclave again');
  }

  /** Stops re-installing (the parent is stopping). */
  stop(): void {
    this.stopped = true;
    this.wake?.();
  }
}

/** The shared chain check's refusal, named as the API names body fields (`body.chain: …`). */
function asBodyChain<T>(check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (err instanceof KeystoreError && err.code === 'INVALID_PARAMS')
      throw new KeystoreError('INVALID_PARAMS', `body.chain: ${err.message}`);
    throw err;
  }
}
