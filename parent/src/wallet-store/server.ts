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
 * - The key lifecycle (docs/LIFECYCLE.md): `store.pendingUserKey`, the user's pending successor;
 *   `store.insertSuccessor`, a successor checked as a first key is (state pending, naming a stored key of the
 *   same user as its predecessor), stored unless the user has a pending key (then that one, `inserted: false`);
 *   `store.updateRecords`, the next records of stored keys, each genuine, seq = stored + 1 and prev = the stored
 *   record's digest, stored together or not at all (an activation's two).
 */
import { publicKeyToAddress } from 'viem/accounts';
import { WalletStoreApi, type CreateResult, type StoredUserKey } from '@nks/shared/enclave-api';
import { KeystoreError } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import { decodeKeyRecord, decodeProjectRecord, hex, recordDigest, type KeyRecord, type SignedRecord } from '@nks/shared/records';
import { RpcServer, serveApi, type ValidParamsOf } from '@nks/shared/rpc';
import type { Listener, Transport } from '@nks/shared/transport';
import type { RecordChecker } from '../enclave-link/identity';
import { checkNewKey } from '../key-registry';
import type { KeyStore } from '../store/key-store';
import { chained, type NewKey, type StoredKey } from '../store/types';

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
/** The message of an update whose record is not genuine or not the next one of the key it names. */
export const NOT_THE_NEXT = 'a record does not verify, or is not the next record (seq + 1, prev) of the stored key it names';

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
        'store.pendingUserKey': (p) => this.pendingUserKey(p),
        'store.insertSuccessor': (p) => this.insertSuccessor(p),
        'store.updateRecords': (p) => this.updateRecords(p),
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
  async project({ projectKey }: Params<'store.project'>): Promise<{ project: StoredUserKey['record'] | null }> {
    const stored = await this.options.store.getProjectByKey(projectKey);
    if (stored) this.checkChained(stored.projectId, stored.signed, stored.recordPrev, 'project');
    return { project: stored?.signed ?? null };
  }

  async userKey({ projectId, subject }: Params<'store.userKey'>): Promise<{ key: StoredUserKey | null }> {
    const k = await this.options.store.activeKeyFor(projectId, subject);
    if (k?.record) this.checkChained(k.keyId, k.record, k.recordPrev, 'key');
    return { key: k?.record ? userKeyOf(k) : null };
  }

  async pendingUserKey({ projectId, subject }: Params<'store.pendingUserKey'>): Promise<{ key: StoredUserKey | null }> {
    const k = await this.options.store.pendingKeyFor(projectId, subject);
    if (k?.record) this.checkChained(k.keyId, k.record, k.recordPrev, 'key');
    return { key: k?.record ? userKeyOf(k) : null };
  }

  /**
   * A row's record must be the one that replaced its row's record before (docs/STORAGE.md, "Guards in the
   * database"): the enclave decides from the records it is given, and one that never saw a newer record would
   * take a fork made from an older one. Signatures are the enclave's to check; this checks the chain only.
   */
  private checkChained(id: string, signed: SignedRecord, recordPrev: string | null, kind: 'key' | 'project'): void {
    let record: { seq: number; prev: string | null };
    try {
      record =
        kind === 'key' ? decodeKeyRecord(Buffer.from(signed.record, 'base64')) : decodeProjectRecord(Buffer.from(signed.record, 'base64'));
    } catch {
      return; // not a record at all: the enclave refuses it
    }
    if (chained(record, recordPrev)) return;
    this.options.logger.warn(
      { id },
      `wallet store: refused a stored ${kind}: its record is not the one that replaced the record before it`,
    );
    throw new KeystoreError('KEY_INTEGRITY', kind === 'key' ? NOT_THE_KEY : 'the stored project record is not the current one');
  }

  async insertUserKey(p: Params<'store.insertUserKey'>): Promise<{ inserted: boolean; key: StoredUserKey }> {
    const record = await this.checkNewUserKey(p);
    const result = await this.insert(p, record, (key) => this.options.store.insert(key));
    this.logInsert(result, p.keyId, record, 'stored a key for a JWT user', 'a JWT user already has an active key: answered it instead');
    return { inserted: result.created, key: userKeyOf(result.record) };
  }

  async insertSuccessor(p: Params<'store.insertSuccessor'>): Promise<{ inserted: boolean; key: StoredUserKey }> {
    const record = await this.checkNewUserKey(p, true);
    const result = await this.insert(p, record, (key) => this.options.store.insertSuccessor(key));
    this.logInsert(
      result,
      p.keyId,
      record,
      'stored a successor for a JWT user',
      'a JWT user already has a pending successor: answered it instead',
    );
    return { inserted: result.created, key: userKeyOf(result.record) };
  }

  /**
   * A new key of a wallet user, checked as the parent checks every new key (`checkNewKey`) for a JWT project:
   * its first record, active, or (`successor`) pending and naming a key of the same user. KEY_INTEGRITY otherwise.
   */
  private async checkNewUserKey(p: Params<'store.insertUserKey'>, successor = false): Promise<KeyRecord> {
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
    const stored = await store.getProject(record.projectId);
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
    if (successor && record.predecessor === undefined) return refuse('the record names no predecessor (not a successor)');
    const made = { keyId: p.keyId, address: p.address, publicKey: p.publicKey, blob: p.blob, record: p.record } as CreateResult;
    try {
      checkNewKey(checker, made, {
        keyId: p.keyId,
        projectId: record.projectId,
        subject: record.subject,
        origin: 'created',
        // A successor starts disabled if its predecessor was (the enclave's decision, from the predecessor's record).
        ...(successor ? { predecessor: record.predecessor, disabled: record.disabled } : {}),
      });
    } catch (err) {
      return refuse(
        `the record is not the first (seq 0, ${successor ? 'pending' : 'active'}, made) of this key id, address, subject and blob`,
        err,
      );
    }
    return record;
  }

  private async insert(
    p: Params<'store.insertUserKey'>,
    record: KeyRecord,
    insert: (key: NewKey) => Promise<{ record: StoredKey; created: boolean }>,
  ): Promise<{ record: StoredKey; created: boolean }> {
    try {
      return await insert({
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
      if (err instanceof KeystoreError && err.code === 'CONFLICT') {
        this.options.logger.warn({ keyId: p.keyId }, 'wallet store: refused a user key: the key id is already stored');
        throw new KeystoreError('KEY_INTEGRITY', NOT_THE_KEY, { cause: err });
      }
      throw err;
    }
  }

  private logInsert(result: { record: StoredKey; created: boolean }, keyId: string, record: KeyRecord, stored: string, existing: string) {
    const { logger } = this.options;
    if (result.created) logger.info({ projectId: record.projectId, keyId, predecessor: record.predecessor }, stored);
    else logger.info({ projectId: record.projectId, keyId, existing: result.record.keyId }, existing);
  }

  /**
   * The next records of stored keys (an activation's two, a cancel's one), all or none: each genuine, of a
   * stored key with a record, seq = its stored seq + 1 and prev = its stored record's digest (KEY_INTEGRITY
   * otherwise, nothing written); stored with a compare-and-set on seq (CONFLICT if the key changed meanwhile).
   */
  async updateRecords({ records }: Params<'store.updateRecords'>): Promise<{ updated: true }> {
    const { store, logger } = this.options;
    const checker = this.options.records();
    const refuse = (keyId: string | undefined, why: string, cause?: unknown): never => {
      logger.warn({ keyId, why }, `wallet store: refused a record update: ${why}`);
      throw new KeystoreError('KEY_INTEGRITY', NOT_THE_NEXT, { cause });
    };
    const updates: Array<{ signed: SignedRecord; record: KeyRecord; log: Record<string, unknown> }> = [];
    for (const signed of records as SignedRecord[]) {
      let opened: { record: KeyRecord; digest: Buffer };
      try {
        opened = checker.key(signed);
      } catch (err) {
        return refuse(undefined, 'a record is not signed by the keystore identity', err);
      }
      const { record, digest } = opened;
      const k = await store.engine.get(record.keyId);
      if (!k) throw new KeystoreError('KEY_NOT_FOUND', `key ${record.keyId} does not exist`);
      if (!k.record || k.recordSeq === null) return refuse(record.keyId, 'the stored key has no record');
      const old = hex(recordDigest(Buffer.from(k.record.record, 'base64')));
      if (record.seq !== k.recordSeq + 1 || record.prev !== old)
        return refuse(record.keyId, `the record (seq ${record.seq}) is not the next one of the stored record (seq ${k.recordSeq})`);
      updates.push({
        signed,
        record,
        log: { keyId: record.keyId, state: record.state, oldRecordSha256: old, newRecordSha256: hex(digest) },
      });
    }
    if (new Set(updates.map((u) => u.record.keyId)).size !== updates.length)
      throw new KeystoreError('INVALID_PARAMS', 'records: expected at most one record per key');
    await store.updateRecords(updates);
    logger.info({ records: updates.map((u) => u.log) }, 'stored the next records of JWT user keys');
    return { updated: true };
  }
}
