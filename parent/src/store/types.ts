/**
 * What the parent stores, engine-neutral (docs/STORAGE.md): the row model both engines map their rows to, the
 * cursors they issue, and `StoreEngine`, the one interface the SQLite engine (embedded, one instance) and the
 * PostgreSQL engine (several instances on one database) implement. Keys are never deleted; they are disabled,
 * retired or cancelled by their records.
 *
 * The parent stores only what it may see: the sealed blob, the address and public key, the caller's
 * external id and labels, the birth attestation, and the records the enclave signed (docs/RECORDS.md). A
 * record's content is copied into columns (a key's project, subject, state, disabled, seq; a project's key,
 * state, auth type and JWKS host) for queries and views; the signed bytes are what counts, and the registries
 * verify them before they act on a row. A project's name is the parent's own label. A TLS key of the wallet
 * routes is likewise only its sealed blob, the identity's signature over it, its CSR and its public chain.
 */
import { KeystoreError } from '@nks/shared/errors';
import type { KeyRecord, KeyState, ProjectRecord, ProjectState, SignedRecord } from '@nks/shared/records';

export interface StoredKey {
  keyId: string;
  externalId: string | null;
  address: string;
  publicKey: string;
  blob: string;
  labels: Record<string, string>;
  attestation: string | null;
  /**
   * Whether the key refuses to sign: its record's `disabled`, or, for a key made before 0.4, the flag as it
   * was set then (carried over by the migration until the enclave has recorded it: `disablePending`).
   */
  disabled: boolean;
  /** From the key's record; null for a key made before 0.4 that is not migrated yet. */
  projectId: string | null;
  subject: string | null;
  state: KeyState | null;
  /** A successor's predecessor (key id), from its record; null for every other key. */
  predecessor: string | null;
  record: SignedRecord | null;
  recordSeq: number | null;
  /**
   * The digest of the record this row's record replaced, as the database computed it (PostgreSQL: its trigger, from
   * the row it replaced; docs/STORAGE.md, "Guards in the database"); null at seq 0. A reader requires the record's
   * own `prev` to be this, so a genuine record made from an older one (a fork) is refused.
   */
  recordPrev: string | null;
  /**
   * A key disabled before 0.4 and migrated since: the migration image records every key enabled, so the parent
   * keeps refusing it until a disable (or an enable) through the enclave records what the operator wants.
   */
  disablePending: boolean;
  /** Milliseconds since the epoch. */
  createdAt: number;
  updatedAt: number;
}

/** What `insert` stores: a key the enclave just made, with its first record (verified by the caller). */
export interface NewKey {
  keyId: string;
  externalId: string | null;
  address: string;
  publicKey: string;
  blob: string;
  labels: Record<string, string>;
  attestation: string | null;
  createdAt: number;
  signed: SignedRecord;
  record: KeyRecord;
}

export interface StoredProject {
  projectId: string;
  signed: SignedRecord;
  seq: number;
  updatedAt: number;
  /** The parent's label for the project (not in the record); null for a row from before schema 3 not filled yet. */
  name: string | null;
  /** Copies of the record's content, for queries (null if the record did not decode when copied). */
  projectKey: string | null;
  state: ProjectState | null;
  authType: 'token' | 'jwt' | null;
  /** The host of a JWT project's `jwksUri` (lower case), for the egress relay's allowed hosts. */
  jwksHost: string | null;
  createdAt: number | null;
  /** The digest of the record this row's record replaced (as a key's `recordPrev`); null at seq 0. */
  recordPrev: string | null;
}

/** A TLS key of the wallet routes (docs/TLS.md): what `tls.create` answered, and once installed its chain. */
export interface StoredTlsKey {
  /** The key's DER SubjectPublicKeyInfo, base64: its identity here. */
  publicKey: string;
  /** The sealed key (blob kind "tls") and the identity's signature over it, base64: what `tls.install` takes. */
  blob: string;
  blobSignature: string;
  names: string[];
  /** The PKCS#10 request the enclave made (PEM). */
  csr: string;
  createdAt: number;
  /** The certificate chain installed with it (PEM, leaf first); null until installed once. */
  chain: string | null;
  installedAt: number | null;
  /** The key the enclave is told to serve (after every start): at most one. */
  current: boolean;
}

export type NewTlsKey = Pick<StoredTlsKey, 'publicKey' | 'blob' | 'blobSignature' | 'names' | 'csr' | 'createdAt'>;

export interface TlsKeyRow {
  public_key: string;
  blob: string;
  blob_signature: string;
  names: string;
  csr: string;
  created_at: number;
  chain: string | null;
  installed_at: number | null;
  current: number;
}

export const toTlsKey = (r: TlsKeyRow): StoredTlsKey => ({
  publicKey: r.public_key,
  blob: r.blob,
  blobSignature: r.blob_signature,
  names: JSON.parse(r.names) as string[],
  csr: r.csr,
  createdAt: r.created_at,
  chain: r.chain,
  installedAt: r.installed_at,
  current: r.current === 1,
});

export interface ProjectPage {
  projects: StoredProject[];
  nextCursor: string | null;
}

export interface KeyRow {
  seq: number;
  key_id: string;
  external_id: string | null;
  address: string;
  public_key: string;
  blob: string;
  labels: string;
  attestation: string | null;
  disabled: number;
  created_at: number;
  updated_at: number;
  project_id: string | null;
  subject: string | null;
  state: string | null;
  record: string | null;
  record_signature: string | null;
  record_seq: number | null;
  record_prev: string | null;
  disable_pending: number;
  predecessor: string | null;
}

export interface ProjectRow {
  project_id: string;
  record: string;
  signature: string;
  seq: number;
  updated_at: number;
  project_key: string | null;
  name: string | null;
  state: string | null;
  auth_type: string | null;
  jwks_host: string | null;
  created_at: number | null;
  record_prev: string | null;
}

/** The columns a project record's content fills (the host of a JWT project's JWKS URI in lower case, as URL gives it). */
export function projectColumns(record: ProjectRecord) {
  return {
    projectKey: record.projectKey,
    state: record.state,
    authType: record.auth.type,
    jwksHost: record.auth.type === 'jwt' ? new URL(record.auth.jwksUri).hostname : null,
    createdAt: record.createdAt,
  };
}

export function toStored(r: KeyRow): StoredKey {
  const record = r.record !== null && r.record_signature !== null ? { record: r.record, signature: r.record_signature } : null;
  return {
    keyId: r.key_id,
    externalId: r.external_id,
    address: r.address,
    publicKey: r.public_key,
    blob: r.blob,
    labels: JSON.parse(r.labels) as Record<string, string>,
    attestation: r.attestation,
    disabled: r.disabled === 1 || r.disable_pending === 1,
    projectId: record ? r.project_id : null,
    subject: record ? r.subject : null,
    state: record ? (r.state as KeyState) : null,
    predecessor: record ? r.predecessor : null,
    record,
    recordSeq: record ? r.record_seq : null,
    recordPrev: record ? (r.record_prev ?? null) : null,
    disablePending: r.disable_pending === 1,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export const toProject = (r: ProjectRow): StoredProject => ({
  projectId: r.project_id,
  signed: { record: r.record, signature: r.signature },
  seq: r.seq,
  updatedAt: r.updated_at,
  name: r.name,
  projectKey: r.project_key,
  state: r.state as ProjectState | null,
  authType: r.auth_type as 'token' | 'jwt' | null,
  jwksHost: r.jwks_host,
  createdAt: r.created_at,
  recordPrev: r.record_prev ?? null,
});

/**
 * Whether a stored row's record is the one that replaced the record its row held before: its `prev` is the digest
 * the database kept of that record (`recordPrev`), and a first record replaced none. False for a fork: a genuine
 * record made from an older one, which the guards let in at the next seq (docs/STORAGE.md, "Guards in the database").
 */
export function chained(record: { seq: number; prev: string | null }, recordPrev: string | null): boolean {
  return record.seq === 0 ? recordPrev === null && record.prev === null : record.prev === recordPrev;
}

/** The columns a key record's content fills. */
export const recordColumns = (signed: SignedRecord, record: KeyRecord) => ({
  projectId: record.projectId,
  subject: record.subject,
  state: record.state,
  disabled: record.disabled ? 1 : 0,
  record: signed.record,
  recordSignature: signed.signature,
  recordSeq: record.seq,
  predecessor: record.predecessor ?? null,
});

/**
 * A lifecycle transition asked of a key in a state that does not allow it (docs/LIFECYCLE.md): 409 KEY_STATE,
 * the state named in the message and in `details.state`.
 */
export function keyStateError(keyId: string, state: KeyState | null, needed: KeyState): KeystoreError {
  return new KeystoreError('KEY_STATE', `key ${keyId} is ${state ?? 'without a record'}: this needs it ${needed}`, { details: { state } });
}

export interface Page {
  keys: StoredKey[];
  nextCursor: string | null;
}

export const encodeCursor = (seq: number) => Buffer.from(`s${seq}`).toString('base64url');
export function decodeCursor(cursor: string): number {
  const m = /^s(\d{1,15})$/.exec(Buffer.from(cursor, 'base64url').toString());
  if (!m) throw new KeystoreError('INVALID_PARAMS', 'cursor is not one this service issued');
  return Number(m[1]);
}
/**
 * What a page of keys leaves out: `withJwtKeys: false`, the keys of JWT projects (a token below admin);
 * `projects`, the keys of every project not listed (a bound token; a key without a record is `default`'s).
 */
export interface ListOptions {
  withJwtKeys?: boolean;
  projects?: readonly string[] | undefined;
  /** What the keys listed must match, all of it (GET /v1/keys's query): in the query, so pages stay full. */
  filter?: KeyFilter | undefined;
}

/**
 * A listing's filters: `address` as stored (EIP-55 checksummed: the caller normalizes it), every label of `labels`
 * (name and value exactly), `disabled` (a key that refuses to sign, or not), `externalId` (the subject's key it
 * names, as `getByExternalId` answers).
 */
export interface KeyFilter {
  address?: string | undefined;
  labels?: ReadonlyArray<readonly [string, string]> | undefined;
  disabled?: boolean | undefined;
  externalId?: string | undefined;
}

/**
 * A page of keys: the SQL of both engines, which differ only in placeholders and in how a list of project ids is
 * passed (`dialect`). `param` adds a value and answers its placeholder. Every filter is a condition on an indexed
 * column (address, disabled, the label index `key_labels`, the external id) beside the seq order the cursor needs.
 */
export function keyPageSql(
  dialect: 'sqlite' | 'postgres',
  after: number,
  limit: number,
  options: ListOptions,
  param: (value: unknown) => string,
): string {
  const where = [`k.seq > ${param(after)}`];
  if (options.projects) {
    where.push(
      dialect === 'sqlite'
        ? `COALESCE(k.project_id, 'default') IN (SELECT value FROM json_each(${param(JSON.stringify(options.projects))}))`
        : `COALESCE(k.project_id, 'default') = ANY(${param([...options.projects])}::text[])`,
    );
  }
  if (options.withJwtKeys === false)
    where.push("NOT EXISTS (SELECT 1 FROM projects p WHERE p.project_id = k.project_id AND p.auth_type = 'jwt')");
  const f = options.filter ?? {};
  if (f.address !== undefined) where.push(`k.address = ${param(f.address)}`);
  if (f.disabled === true) where.push('(k.disabled = 1 OR k.disable_pending = 1)');
  if (f.disabled === false) where.push('k.disabled = 0 AND k.disable_pending = 0');
  for (const [name, value] of f.labels ?? [])
    where.push(`k.seq IN (SELECT l.key_seq FROM key_labels l WHERE l.name = ${param(name)} AND l.value = ${param(value)})`);
  if (f.externalId !== undefined) {
    // The key `getByExternalId` answers: the subject's active key, else the external id's first key.
    const first = `(SELECT f.key_id FROM keys f WHERE f.external_id = ${param(f.externalId)} AND f.predecessor IS NULL)`;
    const active = `(SELECT a.key_id FROM keys f, keys a WHERE f.external_id = ${param(f.externalId)} AND f.predecessor IS NULL
                       AND f.subject IS NOT NULL AND a.project_id = f.project_id AND a.subject = f.subject AND a.state = 'active')`;
    where.push(`k.key_id = COALESCE(${active}, ${first})`);
  }
  return `SELECT * FROM keys k WHERE ${where.join(' AND ')} ORDER BY k.seq LIMIT ${param(limit)}`;
}

/**
 * What a create remembers of its Idempotency-Key (docs/SECURITY.md, "Idempotency keys"): the caller's namespace
 * (`scope`: its token), the key, the digest of the request's normalized body, and until when (ms since the epoch).
 */
export interface IdempotencyClaim {
  scope: string;
  key: string;
  bodySha256: string;
  now: number;
  expiresAt: number;
}

/** An Idempotency-Key's entry: the key its create answered, and the digest of that request's body. */
export interface IdempotencyEntry {
  keyId: string;
  bodySha256: string;
}

/** Expired idempotency entries deleted by one insert at most (each insert adds one: storage stays bounded). */
export const IDEMPOTENCY_PURGE_BATCH = 100;

/** Projects are listed in project id order (`default` first, then `p_…`): the cursor is the last id listed. */
export const encodeProjectCursor = (projectId: string) => Buffer.from(`p${projectId}`).toString('base64url');
export function decodeProjectCursor(cursor: string): string {
  const m = /^p([A-Za-z0-9_-]{1,64})$/.exec(Buffer.from(cursor, 'base64url').toString());
  if (!m) throw new KeystoreError('INVALID_PARAMS', 'query.cursor: not a cursor this service issued');
  return m[1] as string;
}

/**
 * Which row changed, committed by any instance: a key's record or flag and a project's record (what caches must
 * forget; a new row counts too), or the wallet routes' current TLS key (`id` its public key: every instance's
 * enclave must serve it).
 */
export type StoreChange = { kind: 'key' | 'project' | 'tls'; id: string };

export interface StoreStatus {
  engine: 'sqlite' | 'postgres';
  /** Where (a file path, or a URL without its password). */
  location: string;
  /** The schema version the database is at, and the one this build writes. */
  schemaVersion: number;
  latestVersion: number;
}

/**
 * One storage engine. Every method is asynchronous: the SQLite engine runs its statements in a worker thread
 * (a write stuck in fsync must not stop the event loop), the PostgreSQL one over a pool. An engine that cannot
 * answer within its deadline, or whose database is unreachable or full, throws STORAGE_UNAVAILABLE (503,
 * retryable); rules the database enforces throw the KeystoreError each method names.
 */
export interface StoreEngine {
  readonly kind: 'sqlite' | 'postgres';
  /**
   * Whether another process may write the same database (PostgreSQL): cached rows then need `onChange`
   * notifications, or must be re-read once older than the coherence bound.
   */
  readonly shared: boolean;
  /**
   * Calls `listener` for every change committed by any instance, this one included (PostgreSQL LISTEN/NOTIFY),
   * and `onCoherence(true)` each time the notification connection listens (the first time too; everything
   * cached before must then be dropped), `onCoherence(false)` while changes may be missed (it is down, or never
   * connected). Absent on an engine that is not shared.
   */
  subscribe?(listener: (change: StoreChange) => void, onCoherence: (live: boolean) => void): void;
  /**
   * The time (ms since the epoch) before which every change committed by any instance has been delivered to
   * `subscribe`'s listener: what a cached row may be trusted back to. A shared engine only; it stops advancing
   * while the notification connection is down or silent.
   */
  deliveredThrough?(): number;
  /**
   * Runs `fn` holding the database's exclusive locks named `names` (key ids), so that no instance asks its enclave
   * for a change of those keys meanwhile (an enclave remembers lifecycle records it made: two instances making
   * rival ones would leave one enclave pinned to a record never stored). Waits at most the engine's deadline
   * (STORAGE_UNAVAILABLE past it). An engine with one writer (SQLite) just runs `fn`.
   */
  withLocks<T>(names: readonly string[], fn: () => Promise<T>): Promise<T>;
  status(): Promise<StoreStatus>;
  /** A cheap round trip within `timeoutMs`: false if the database cannot answer (readiness). */
  ping(timeoutMs: number): Promise<boolean>;
  /**
   * A write that changes no row but reaches the disk (a committed transaction): whether writes work again after
   * one failed for the storage's sake (key-store.ts). Within the engine's deadline, as every call.
   */
  probeWrite(): Promise<void>;

  /**
   * Inserts a new key with its first record, committed when this resolves. If the external id already
   * exists, or the project already has an active key for the record's subject, that key is returned instead
   * and nothing is written (under concurrency too: the database's unique indexes decide).
   */
  insert(key: NewKey, idempotency?: IdempotencyClaim): Promise<InsertResult>;
  /** The unexpired entry of an Idempotency-Key in its scope, if any. */
  idempotency(scope: string, key: string, now: number): Promise<IdempotencyEntry | undefined>;
  /** A key's labels replaced (they are in no record); undefined if no such key. */
  setLabels(keyId: string, labels: Record<string, string>): Promise<StoredKey | undefined>;
  get(keyId: string): Promise<StoredKey | undefined>;
  /** The active key of the subject the external id names (or the only key of it, before 0.4). */
  getByExternalId(externalId: string): Promise<StoredKey | undefined>;
  activeKeyFor(projectId: string, subject: string): Promise<StoredKey | undefined>;
  pendingKeyFor(projectId: string, subject: string): Promise<StoredKey | undefined>;
  /** A key's subject's keys, oldest first (a key without subject: itself). KEY_NOT_FOUND if it does not exist. */
  history(keyId: string): Promise<StoredKey[]>;
  /**
   * A successor (state pending, naming a stored active key of the same subject: KEY_NOT_FOUND / KEY_STATE
   * otherwise). If the subject has a pending key already, that one is returned and nothing is written.
   */
  insertSuccessor(key: NewKey): Promise<{ record: StoredKey; created: boolean }>;
  list(limit: number, cursor?: string, options?: ListOptions): Promise<Page>;
  /**
   * Next records of keys in one transaction, all or none: each `seq` must be its key's stored one + 1
   * (compare-and-set: CONFLICT if another write got there first; KEY_NOT_FOUND if a key does not exist).
   * Records leaving `active` are written first, so the one-active-key index holds after every statement.
   */
  updateRecords(updates: ReadonlyArray<{ signed: SignedRecord; record: KeyRecord }>): Promise<StoredKey[]>;
  /** The `disabled` flag of a key made before 0.4 (it has no record to carry it); undefined if no such key. */
  setLegacyDisabled(keyId: string, disabled: boolean): Promise<StoredKey | undefined>;
  keysWithoutRecord(afterSeq: number, limit: number): Promise<Array<StoredKey & { rowSeq: number }>>;
  /** A key made before 0.4 re-sealed: its version 2 blob and first record. False if it already has a record. */
  migrateKey(keyId: string, blob: string, signed: SignedRecord, record: KeyRecord): Promise<boolean>;
  keysPendingDisable(): Promise<string[]>;

  getProject(projectId: string): Promise<StoredProject | undefined>;
  getProjectByKey(projectKey: string): Promise<StoredProject | undefined>;
  listProjects(limit: number, cursor?: string): Promise<ProjectPage>;
  activeJwtProjects(): Promise<StoredProject[]>;
  /** Stores a project's record if the project is not stored yet; returns what is stored. */
  seedProject(signed: SignedRecord, record: ProjectRecord, name?: string): Promise<StoredProject>;
  /** A new project's first record with its name; CONFLICT if its id or key is stored. */
  insertProject(signed: SignedRecord, record: ProjectRecord, name: string): Promise<StoredProject>;
  /** A project's next record: seq must be the stored one + 1 (CONFLICT otherwise). */
  updateProjectRecord(projectId: string, signed: SignedRecord, record: ProjectRecord): Promise<StoredProject>;

  insertTlsKey(key: NewTlsKey): Promise<StoredTlsKey>;
  tlsKey(publicKey: string): Promise<StoredTlsKey | undefined>;
  currentTlsKey(): Promise<StoredTlsKey | undefined>;
  pendingTlsKeys(limit: number): Promise<StoredTlsKey[]>;
  setCurrentTlsKey(publicKey: string, chain: string, installedAt: number): Promise<StoredTlsKey>;

  counts(): Promise<KeyCounts>;
  close(): Promise<void>;
}

/**
 * What an insert did: stored the key (`created`), or answers the key it yields to (the external id's or the
 * subject's), or, with an Idempotency-Key whose unexpired entry another create stored first, that entry's key
 * and body digest (`idempotent`: nothing was written).
 */
export interface InsertResult {
  record: StoredKey;
  created: boolean;
  idempotent?: IdempotencyEntry;
}

export interface KeyCounts {
  total: number;
  disabled: number;
  withoutRecord: number;
  pending: number;
}
