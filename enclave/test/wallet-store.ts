/**
 * The parent's wallet store as the wallet tests need it (WalletStoreApi, shared/src/enclave-api.ts): an RPC
 * server on the simulated vsock where the parent's would listen, backed by in-memory maps, standing where the
 * parent would. It keeps every call's params (to check no JWT or body ever reaches the parent), can be told to
 * lie (`lie`: any answer, malformed ones included, or never to answer), and to hold its answers (`delayMs`).
 *
 * The lifecycle (docs/PROTOCOL.md, "Key lifecycle"): a test double of the parent's store.pendingUserKey,
 * store.insertSuccessor and store.updateRecords (the real ones are parent/src/wallet-store/, which the enclave
 * tests never import): one active and one pending key per (project, subject), records replaced as they come.
 */
import {
  StoreInsertSuccessorParams,
  StoreInsertUserKeyParams,
  StorePendingUserKeyParams,
  StoreProjectParams,
  StoreUpdateRecordsParams,
  StoreUserKeyParams,
  type ProjectResult,
  type StoredUserKey,
} from '@nks/shared/enclave-api';
import { DEFAULT_WALLET_STORE_ADDRESS } from '@nks/shared/ingress';
import { silentLogger } from '@nks/shared/log';
import { decodeKeyRecord, decodeProjectRecord, type SignedRecord } from '@nks/shared/records';
import { RpcServer, rpcMethod } from '@nks/shared/rpc';
import type { Transport } from '@nks/shared/transport';

export type StoreMethod =
  'store.project' | 'store.userKey' | 'store.insertUserKey' | 'store.pendingUserKey' | 'store.insertSuccessor' | 'store.updateRecords';

/** What a lie answers instead of the truth: any value, or NEVER (no answer at all). */
export const NEVER = Symbol('never answers');

export interface WalletStore {
  /** Every call, in order: the method and its params as received. */
  readonly calls: Array<{ method: StoreMethod; params: unknown }>;
  /** Per method: return an answer to send instead of the truth (NEVER: no answer), or undefined for the truth. */
  lie: Partial<Record<StoreMethod, (params: any, truth: () => unknown) => unknown>>;
  /** Holds every answer this long first. */
  delayMs: number;
  /** Keeps (or replaces) a project's newest record, as the parent does after projects.create / setState. */
  putProject(p: ProjectResult | SignedRecord): void;
  /** Keeps (or replaces) a user's key, as the parent does after keys.setDisabled. */
  putUserKey(key: StoredUserKey): void;
  /** The stored key of (projectId, subject), if any. */
  userKey(projectId: string, subject: string): StoredUserKey | undefined;
  /** The pending successor of (projectId, subject), if any. */
  pendingKey(projectId: string, subject: string): StoredUserKey | undefined;
  /** Keys retired or cancelled (their last records), oldest first. */
  finished(): StoredUserKey[];
  /** Every stored user key. */
  keys(): StoredUserKey[];
  close(): Promise<void>;
}

export async function startWalletStore(transport: Transport, address = DEFAULT_WALLET_STORE_ADDRESS): Promise<WalletStore> {
  const projects = new Map<string, SignedRecord>();
  const userKeys = new Map<string, StoredUserKey>();
  const pendingKeys = new Map<string, StoredUserKey>();
  const finished: StoredUserKey[] = [];
  const userOf = (projectId: string, subject: string) => `${projectId}\n${subject}`;
  const pending = new Set<() => void>();

  const store: WalletStore = {
    calls: [],
    lie: {},
    delayMs: 0,
    putProject(p) {
      const signed = 'record' in p && typeof p.record !== 'string' ? p.record : (p as SignedRecord);
      projects.set(decodeProjectRecord(Buffer.from(signed.record, 'base64')).projectKey, signed);
    },
    putUserKey(key) {
      const record = decodeKeyRecord(Buffer.from(key.record.record, 'base64'));
      userKeys.set(userOf(record.projectId, record.subject ?? ''), key);
    },
    userKey: (projectId, subject) => userKeys.get(userOf(projectId, subject)),
    pendingKey: (projectId, subject) => pendingKeys.get(userOf(projectId, subject)),
    finished: () => [...finished],
    keys: () => [...userKeys.values()],
    close: async () => {
      for (const p of pending) p();
      await server.close(100);
    },
  };

  const answer = async (method: StoreMethod, params: unknown, truth: () => unknown): Promise<unknown> => {
    store.calls.push({ method, params });
    if (store.delayMs > 0) await new Promise((r) => setTimeout(r, store.delayMs));
    const lie = store.lie[method];
    const said = lie ? lie(params, truth) : undefined;
    if (said === NEVER) {
      // Held until the test ends: the enclave's deadline is what ends the call.
      await new Promise<void>((resolve) => pending.add(resolve));
      return null;
    }
    return said === undefined ? truth() : said;
  };

  const server = new RpcServer({
    name: 'test-wallet-store',
    logger: silentLogger(),
    methods: {
      'store.project': rpcMethod(StoreProjectParams, (p) =>
        answer('store.project', p, () => ({ project: projects.get(p.projectKey) ?? null })),
      ),
      'store.userKey': rpcMethod(StoreUserKeyParams, (p) =>
        answer('store.userKey', p, () => ({ key: userKeys.get(userOf(p.projectId, p.subject)) ?? null })),
      ),
      'store.insertUserKey': rpcMethod(StoreInsertUserKeyParams, (p) =>
        answer('store.insertUserKey', p, () => {
          // As the parent: the record says whose key it is; one active key per (project, subject).
          const record = decodeKeyRecord(Buffer.from(p.record.record, 'base64'));
          const who = userOf(record.projectId, record.subject ?? '');
          const existing = userKeys.get(who);
          if (existing) return { inserted: false, key: existing };
          const key = { keyId: p.keyId, blob: p.blob, record: p.record };
          userKeys.set(who, key);
          return { inserted: true, key };
        }),
      ),
      'store.pendingUserKey': rpcMethod(StorePendingUserKeyParams, (p) =>
        answer('store.pendingUserKey', p, () => ({ key: pendingKeys.get(userOf(p.projectId, p.subject)) ?? null })),
      ),
      'store.insertSuccessor': rpcMethod(StoreInsertSuccessorParams, (p) =>
        answer('store.insertSuccessor', p, () => {
          const record = decodeKeyRecord(Buffer.from(p.record.record, 'base64'));
          const who = userOf(record.projectId, record.subject ?? '');
          const existing = pendingKeys.get(who);
          if (existing) return { inserted: false, key: existing };
          const key = { keyId: p.keyId, blob: p.blob, record: p.record };
          pendingKeys.set(who, key);
          return { inserted: true, key };
        }),
      ),
      'store.updateRecords': rpcMethod(StoreUpdateRecordsParams, (p) =>
        answer('store.updateRecords', p, () => {
          // All or none: every record must be of a key kept now (the parent also checks seq and prev).
          const updates = p.records.map((signed) => {
            const record = decodeKeyRecord(Buffer.from(signed.record, 'base64'));
            const who = userOf(record.projectId, record.subject ?? '');
            const kept = [userKeys.get(who), pendingKeys.get(who)].find((k) => k?.keyId === record.keyId);
            if (!kept) throw new Error(`no key ${record.keyId} is kept`);
            return { who, record, key: { ...kept, record: signed } };
          });
          for (const { who, record, key } of updates) {
            if (record.state === 'active') {
              if (pendingKeys.get(who)?.keyId === record.keyId) pendingKeys.delete(who);
              userKeys.set(who, key);
            } else if (record.state === 'pending') {
              pendingKeys.set(who, key);
            } else {
              if (userKeys.get(who)?.keyId === record.keyId) userKeys.delete(who);
              if (pendingKeys.get(who)?.keyId === record.keyId) pendingKeys.delete(who);
              finished.push(key);
            }
          }
          return { updated: true as const };
        }),
      ),
    },
  });
  await server.listen(transport, address);
  return store;
}
