/**
 * The wallet store (docs/TLS.md): what the enclave's HTTPS server for the wallet routes asks the parent, on
 * `wallets.store.listen` (`WalletStoreApi`, shared/src/enclave-api.ts). The parent keeps storing the records
 * and blobs of JWT users' keys, which it can read but not forge: the enclave verifies every record it gets here
 * (a lie is refused, an older genuine record is a replay it also refuses, docs/SECURITY.md), so this server
 * can deny service and nothing else.
 *
 * - `store.project`: a project's stored record by its project key, whatever its state (the enclave decides).
 * - `store.userKey`: the active key of (project, subject).
 * - `store.insertUserKey`: a key the enclave just made for a wallet user, checked as the parent checks every new
 *   key (key-registry.ts `checkNewKey`: the identity's record, seq 0, origin "created", binding this key id,
 *   address and blob), of a JWT project, its public key that address's; then stored, unless the user already
 *   has an active key (the unique index): that key is answered instead, `inserted: false`.
 */
import { publicKeyToAddress } from 'viem/accounts';
import { WalletStoreApi, type CreateResult, type StoredUserKey } from '@nks/shared/enclave-api';
import { KeystoreError } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import type { KeyRecord } from '@nks/shared/records';
import { RpcServer, serveApi, type ValidParamsOf } from '@nks/shared/rpc';
import type { Listener, Transport } from '@nks/shared/transport';
import type { RecordChecker } from '../enclave-link/identity';
import { checkNewKey } from '../key-registry';
import type { KeyStore, StoredKey } from '../store/key-store';

export interface WalletStoreOptions {
  store: KeyStore;
  /** The identity's record checker (KeyRegistry.records): IDENTITY_UNAVAILABLE until the pool has learned it. */
  records: () => RecordChecker;
  logger: Logger;
  /** Requests handled at once; beyond it OVERLOADED (config.wallets.store.maxConcurrent). */
  maxConcurrent: number;
}

/** An uncompressed secp256k1 public key, as `keys.create` answers it. */
const UNCOMPRESSED_PUBLIC_KEY = /^0x04[0-9a-fA-F]{128}$/;

/** The message of an insert whose record, blob or public key does not bind the key it names. */
export const NOT_THE_KEY = 'the record does not verify, or does not bind this key, its address, public key and blob';

type Params<M extends keyof WalletStoreApi> = ValidParamsOf<WalletStoreApi, M>;

function userKeyOf(k: StoredKey): StoredUserKey {
  if (!k.record) throw new KeystoreError('KEY_INTEGRITY', `key ${k.keyId} has no signed record`);
  return { keyId: k.keyId, blob: k.blob, record: k.record };
}

export class WalletStore {
  readonly server: RpcServer;

  constructor(private readonly options: WalletStoreOptions) {
    this.server = new RpcServer({
      name: 'wallet-store',
      logger: options.logger,
      maxConcurrent: options.maxConcurrent,
      methods: serveApi(WalletStoreApi, {
        'store.project': (p) => this.project(p),
        'store.userKey': (p) => this.userKey(p),
        'store.insertUserKey': (p) => this.insertUserKey(p),
      }),
    });
  }

  listen(transport: Transport, address: string): Promise<Listener> {
    return this.server.listen(transport, address);
  }

  close(drainMs: number): Promise<void> {
    return this.server.close(drainMs);
  }

  /** The project's newest stored record (any state), or null for a key no project has. */
  project({ projectKey }: Params<'store.project'>): { project: StoredUserKey['record'] | null } {
    return { project: this.options.store.getProjectByKey(projectKey)?.signed ?? null };
  }

  userKey({ projectId, subject }: Params<'store.userKey'>): { key: StoredUserKey | null } {
    const k = this.options.store.activeKeyFor(projectId, subject);
    return { key: k?.record ? userKeyOf(k) : null };
  }

  insertUserKey(p: Params<'store.insertUserKey'>): { inserted: boolean; key: StoredUserKey } {
    const { store, logger } = this.options;
    const checker = this.options.records();
    if (!UNCOMPRESSED_PUBLIC_KEY.test(p.publicKey))
      throw new KeystoreError('INVALID_PARAMS', 'publicKey: expected an uncompressed secp256k1 public key (0x04 and 64 bytes)');
    const refuse = (why: string, cause?: unknown): never => {
      logger.warn({ keyId: p.keyId, why }, `wallet store: refused a user key: ${why}`);
      throw new KeystoreError('KEY_INTEGRITY', NOT_THE_KEY, { cause });
    };
    let record: KeyRecord;
    try {
      record = checker.key(p.record).record;
    } catch (err) {
      return refuse('the record is not signed by the keystore identity', err);
    }
    if (record.subject === null) return refuse('the record names no subject (not a JWT user key)');
    if (publicKeyToAddress(p.publicKey as `0x${string}`).toLowerCase() !== p.address.toLowerCase())
      return refuse('the public key is not the address');
    const stored = store.getProject(record.projectId);
    if (!stored) return refuse(`project ${record.projectId} is not stored`);
    let projectAuth: string;
    try {
      const project = checker.project(stored.signed).record;
      if (project.projectId !== record.projectId) return refuse(`the stored record of project ${record.projectId} is another project's`);
      projectAuth = project.auth.type;
    } catch (err) {
      return refuse(`the stored record of project ${record.projectId} does not verify`, err);
    }
    if (projectAuth !== 'jwt') return refuse(`project ${record.projectId} does not take JWTs`);
    const made = { keyId: p.keyId, address: p.address, publicKey: p.publicKey, blob: p.blob, record: p.record } as CreateResult;
    try {
      checkNewKey(checker, made, { keyId: p.keyId, projectId: record.projectId, subject: record.subject, origin: 'created' });
    } catch (err) {
      return refuse('the record is not the first (seq 0, active, made) of this key id, address, subject and blob', err);
    }

    let result: { record: StoredKey; created: boolean };
    try {
      result = store.insert({
        keyId: p.keyId,
        externalId: null,
        address: p.address,
        publicKey: p.publicKey,
        blob: p.blob,
        labels: {},
        attestation: null,
        createdAt: Date.now(),
        signed: p.record,
        record,
      });
    } catch (err) {
      // The key id is another key's (random 128-bit ids do not repeat: not what an enclave sends).
      if ((err as { code?: unknown }).code === 'SQLITE_CONSTRAINT_UNIQUE') return refuse('the key id is already stored', err);
      throw err;
    }
    if (result.created) logger.info({ projectId: record.projectId, keyId: p.keyId }, 'stored a key for a JWT user');
    else
      logger.info(
        { projectId: record.projectId, keyId: p.keyId, existing: result.record.keyId },
        'a JWT user already has an active key: answered it instead',
      );
    return { inserted: result.created, key: userKeyOf(result.record) };
  }
}
