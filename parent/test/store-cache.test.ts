/**
 * The store's cache of keys and projects by id (parent/src/store/key-store.ts, docs/STORAGE.md "Coherence"), on
 * a real SQLite engine whose changes are also made by "another instance" (a second connection to the file). A
 * shared engine's notifications and its notification connection's state are driven by the test here: the
 * PostgreSQL engine's own LISTEN/NOTIFY is tested in store-postgres.test.ts and across instances in test/scale-out.
 */
import path from 'node:path';
import type { KeyRecord } from '@nks/shared/records';
import { tempRunDir } from '@nks/shared-test/helpers';
import { KeyStore } from '../src/store/key-store';
import { SqliteDatabase } from '../src/store/sqlite-db';
import { SqliteEngine } from '../src/store/sqlite-engine';
import type { StoreChange, StoreEngine } from '../src/store/types';
import { identity, keyRecord, PREV } from './store-fixtures';

const record = (over: Partial<KeyRecord> = {}) => keyRecord('k1', over);
const disabledAt = (seq: number) => record({ disabled: seq % 2 === 1, seq, prev: PREV });

/** The real engine, presented as one other instances write too: the test plays their notifications. */
class SharedForTest implements Partial<StoreEngine> {
  readonly shared = true;
  listener: ((c: StoreChange) => void) | undefined;
  coherence: ((live: boolean) => void) | undefined;
  /** Reads of a key by id that reached the database. */
  reads = 0;
  /** Holds the next read of a key by id until released (a read racing a change). */
  gate: Promise<void> | undefined;
  constructor(readonly inner: SqliteEngine) {}
  subscribe(listener: (c: StoreChange) => void, onCoherence: (live: boolean) => void) {
    this.listener = listener;
    this.coherence = onCoherence;
  }
  async get(keyId: string) {
    this.reads++;
    const value = await this.inner.get(keyId);
    if (this.gate) await this.gate;
    return value;
  }
}

function sharedEngine(inner: SqliteEngine): { engine: StoreEngine; test: SharedForTest } {
  const test = new SharedForTest(inner);
  const engine = new Proxy(test, {
    get: (t, prop) => (prop in t ? (t as never)[prop] : (inner as never)[prop]),
  }) as unknown as StoreEngine;
  return { engine, test };
}

describe('the store cache', () => {
  let file: string;
  let other: SqliteDatabase;
  let inner: SqliteEngine;
  beforeEach(async () => {
    file = path.join(tempRunDir('nks-cache-'), 'keys.db');
    inner = await SqliteEngine.open({ path: file });
    other = new SqliteDatabase(file);
    other.insert({
      keyId: 'k1',
      externalId: 'alice',
      address: record().address,
      publicKey: '0x04',
      blob: 'AAAA',
      labels: {},
      attestation: null,
      createdAt: 1,
      record: record(),
      signed: identity.sign(record()),
    });
  });
  afterEach(async () => {
    other.close();
    await inner.close();
  });
  /** "Another instance" stores the key's next record. */
  const changeElsewhere = (seq: number) => other.updateRecord('k1', identity.sign(disabledAt(seq)), disabledAt(seq));

  it('SQLite, one writer: reads once, and forgets what this store changes', async () => {
    const store = new KeyStore(inner);
    expect((await store.get('k1'))?.disabled).toBe(false);
    await store.updateRecord('k1', identity.sign(disabledAt(1)), disabledAt(1));
    expect((await store.get('k1'))?.disabled).toBe(true);
    expect(store.coherent).toBe(true);
  });

  it('shared and notified: keeps a row until its change is announced, then reads it again', async () => {
    const { engine, test } = sharedEngine(inner);
    const store = new KeyStore(engine, { staleAfterMs: 60_000 });
    expect(store.coherent).toBe(false); // until the notification connection says it listens
    test.coherence?.(true);
    expect(store.coherent).toBe(true);
    expect((await store.get('k1'))?.disabled).toBe(false);
    expect((await store.get('k1'))?.disabled).toBe(false);
    expect(test.reads).toBe(1);
    changeElsewhere(1);
    test.listener?.({ kind: 'key', id: 'k2' }); // another key's change: k1 stays cached
    expect((await store.get('k1'))?.disabled).toBe(false);
    test.listener?.({ kind: 'key', id: 'k1' });
    expect((await store.get('k1'))?.disabled).toBe(true);
    expect(test.reads).toBe(2);
  });

  it('shared, notifications lost: a cached row lives only staleAfterMs; back: everything is dropped', async () => {
    const { engine, test } = sharedEngine(inner);
    const store = new KeyStore(engine, { staleAfterMs: 200 });
    test.coherence?.(true);
    await store.get('k1');
    test.coherence?.(false);
    changeElsewhere(1); // missed: no notification arrives
    const until = Date.now() + 5000;
    while ((await store.get('k1'))?.disabled !== true) {
      if (Date.now() > until) throw new Error('the cached row outlived staleAfterMs');
      await new Promise((r) => setTimeout(r, 20));
    }
    test.coherence?.(true);
    await store.get('k1');
    changeElsewhere(2); // missed too, before the connection came back
    test.coherence?.(false);
    test.coherence?.(true); // a reconnect drops every row: it may have missed anything
    expect((await store.get('k1'))?.disabled).toBe(false);
  });

  it('does not keep a read that was under way when its row changed', async () => {
    const { engine, test } = sharedEngine(inner);
    const store = new KeyStore(engine, { staleAfterMs: 60_000 });
    test.coherence?.(true);
    let release = () => undefined as void;
    test.gate = new Promise<void>((r) => (release = r));
    const racing = store.get('k1'); // reads seq 0, then waits at the gate
    await new Promise((r) => setTimeout(r, 50));
    changeElsewhere(1);
    test.listener?.({ kind: 'key', id: 'k1' });
    test.gate = undefined;
    release();
    expect((await racing)?.disabled).toBe(false); // what it read: older than the change
    expect((await store.get('k1'))?.disabled).toBe(true); // not kept: read again
  });

  it('a write through this store forgets the row even if the write fails', async () => {
    const { engine, test } = sharedEngine(inner);
    const store = new KeyStore(engine, { staleAfterMs: 60_000 });
    test.coherence?.(true);
    await store.get('k1');
    changeElsewhere(1);
    await expect(store.updateRecord('k1', identity.sign(disabledAt(1)), disabledAt(1))).rejects.toMatchObject({ code: 'CONFLICT' });
    expect((await store.get('k1'))?.disabled).toBe(true);
  });
});
