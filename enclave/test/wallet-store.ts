/**
 * The parent's wallet store as the wallet tests need it (WalletStoreApi, shared/src/enclave-api.ts): an RPC
 * server on the simulated vsock where the parent's would listen, backed by in-memory maps, standing where the
 * parent would. It keeps every call's params (to check no JWT or body ever reaches the parent), can be told to
 * lie (`lie`: any answer, malformed ones included, or never to answer), and to hold its answers (`delayMs`).
 */
import {
  StoreInsertUserKeyParams,
  StoreProjectParams,
  StoreUserKeyParams,
  type ProjectResult,
  type StoredUserKey,
} from '@nks/shared/enclave-api';
import { DEFAULT_WALLET_STORE_ADDRESS } from '@nks/shared/ingress';
import { silentLogger } from '@nks/shared/log';
import { decodeKeyRecord, decodeProjectRecord, type SignedRecord } from '@nks/shared/records';
import { RpcServer, rpcMethod } from '@nks/shared/rpc';
import type { Transport } from '@nks/shared/transport';

export type StoreMethod = 'store.project' | 'store.userKey' | 'store.insertUserKey';

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
  /** Every stored user key. */
  keys(): StoredUserKey[];
  close(): Promise<void>;
}

export async function startWalletStore(transport: Transport, address = DEFAULT_WALLET_STORE_ADDRESS): Promise<WalletStore> {
  const projects = new Map<string, SignedRecord>();
  const userKeys = new Map<string, StoredUserKey>();
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
    },
  });
  await server.listen(transport, address);
  return store;
}
