/**
 * The key lifecycle on the TrueWallet routes against the parent as the wallet store (wallet-store.ts, which lies
 * when told), over real HTTPS to the real enclave bundle (docs/SECURITY.md, "The key lifecycle"):
 *
 * 1. The store chooses which pending key it answers: activate names the address it activates (the one rotate
 *    answered), and a store answering another successor of the user's (one whose insert it "failed") is 404
 *    "no pending key at this address", with nothing changed; cancel may name the address too.
 * 2. An activate or cancel whose store.updateRecords is lost (a crash, a failed write) is repaired by asking it
 *    again: the store then holds the records the enclave made, and the user signs with the new key.
 * 3. The store answering the pending successor as the user's key is a lie (KEY_INTEGRITY, 500): get-address and
 *    sign never use a key before it is activated.
 * 4. After the user's rotate and activate, a flood of key marks does not let the store answer the retired key's
 *    old record on the user's next sign (no restart needed to see it refused).
 */
import { getBytes, verifyMessage } from 'ethers';
import { jwtSubject, type LifecycleAction } from '@nks/shared/project-auth';
import { decodeKeyRecord, type KeyRecord, type SignedRecord } from '@nks/shared/records';
import type { StoredUserKey } from '@nks/shared/enclave-api';
import { startWalletsRig, type Answer, type WalletsRig } from './wallets-setup';

const keyOf = (s: SignedRecord): KeyRecord => decodeKeyRecord(Buffer.from(s.record, 'base64'));
const INTERNAL = /^the keystore could not answer this request \(request id [\w-]+\)$/;

describe('the lifecycle on the wallet routes against the parent as the store', () => {
  let w: WalletsRig;
  let projectKey: string;
  let projectId: string;

  beforeAll(async () => {
    w = await startWalletsRig({
      wallets: { rateLimits: { perAddress: 1000, failuresPerAddress: 1000, perProject: 1000, perUser: 1000 } },
    });
    const p = await w.newProject();
    projectKey = p.projectKey;
    projectId = p.projectId;
  }, 120_000);
  afterAll(async () => {
    await w?.stop();
  });
  beforeEach(() => {
    w.store.lie = {};
  });

  const subjectOf = (sub: string) => jwtSubject(w.idp.issuer, sub) as string;
  const jwtFor = (sub: string, action?: LifecycleAction, lifetimeS = 60) =>
    w.mint(sub, action === undefined ? {} : { nks_action: action }, { lifetimeS });
  const call = async (route: string, sub: string, action?: LifecycleAction, extra: Record<string, unknown> = {}) =>
    w.wallet(projectKey, route, { jwt_token: await jwtFor(sub, action), ...extra });
  const lifecycle = (action: LifecycleAction, sub: string, address?: string) =>
    call(action, sub, action, address === undefined ? {} : { address });
  const signHash = async (sub: string, hash = `0x${'ab'.repeat(32)}`) =>
    w.wallet(projectKey, 'sign', { message: hash, jwt_token: await jwtFor(sub), message_type: 'hash', wallet_type: 'evm' });
  const updates = () => w.store.calls.filter((c) => c.method === 'store.updateRecords').length;
  const lastUpdate = () =>
    (w.store.calls.filter((c) => c.method === 'store.updateRecords').pop()?.params as { records: SignedRecord[] }).records;
  const states = (records: SignedRecord[]) => records.map((r) => [keyOf(r).address, keyOf(r).state]);
  /** A refusal with no address in it and no signature made. */
  async function refusedWithNothing(res: Promise<Answer>, status: number): Promise<Answer> {
    const signs = (await w.health()).counters.signs;
    const answer = await res;
    expect(answer.status).toBe(status);
    expect(JSON.stringify(answer.body)).not.toMatch(/0x[0-9a-fA-F]{40}/);
    expect((await w.health()).counters.signs).toBe(signs);
    return answer;
  }

  it('1. activate names its address: the store answering another successor (one it said had failed) activates nothing', async () => {
    const a = (await call('get-address', 'alice')).body.address as string;
    // First rotate: the enclave makes P1 and hands it to the store, which keeps it and answers nonsense.
    let p1: StoredUserKey | undefined;
    w.store.lie['store.insertSuccessor'] = (params) => {
      p1 = { keyId: params.keyId, blob: params.blob, record: params.record };
      return { nonsense: true };
    };
    expect((await lifecycle('rotate', 'alice')).status).toBe(503);
    w.store.lie = {};
    // The user retries and is answered P2, which they register on chain.
    const retried = await lifecycle('rotate', 'alice');
    expect(retried.status).toBe(200);
    const p2 = retried.body.address as string;
    const p1Address = keyOf((p1 as StoredUserKey).record).address;
    expect([keyOf((p1 as StoredUserKey).record).state, p1Address === p2]).toEqual(['pending', false]);

    // The store answers P1 as the pending key: the user's activate (of P2) and cancel (of P2) change nothing.
    const written = updates();
    w.store.lie['store.pendingUserKey'] = () => ({ key: p1 });
    for (const action of ['activate', 'cancel'] as const) {
      const res = await lifecycle(action, 'alice', p2);
      expect([action, res.status, res.body]).toEqual([action, 404, { detail: 'this user has no pending key at this address' }]);
    }
    expect(updates()).toBe(written);
    w.store.lie = {};
    expect((await call('get-address', 'alice')).body).toEqual({ address: a });

    // An activate that names no address is not taken (400).
    const unnamed = await lifecycle('activate', 'alice');
    expect([unnamed.status, Object.keys(unnamed.body.detail)]).toEqual([400, ['address']]);
    // Nor one that names something other than an address, on activate or cancel.
    for (const action of ['activate', 'cancel'] as const) {
      const malformed = await lifecycle(action, 'alice', '0x1234');
      expect([action, malformed.status, malformed.body]).toEqual([
        action,
        400,
        { detail: { address: ['expected an address, 0x and 40 hex digits'] } },
      ]);
    }
    expect(updates()).toBe(written);
    // With the truth, P2 is activated (its address in any case: lower case here).
    const activated = await lifecycle('activate', 'alice', p2.toLowerCase());
    expect([activated.status, activated.body]).toEqual([200, { address: p2 }]);
    expect(states(lastUpdate())).toEqual([
      [p2, 'active'],
      [a, 'retired'],
    ]);
  });

  it('2. activate answered, store.updateRecords lost: the user asks again, the store then holds the new records', async () => {
    const a = (await call('get-address', 'bob')).body.address as string;
    const b = (await lifecycle('rotate', 'bob')).body.address as string;
    w.store.lie['store.updateRecords'] = () => ({ nonsense: true }); // a crash / a lost write
    expect((await lifecycle('activate', 'bob', b)).status).toBe(503);
    const lost = lastUpdate();
    expect(states(lost)).toEqual([
      [b, 'active'],
      [a, 'retired'],
    ]);
    w.store.lie = {};
    // Until then the store holds only the records the enclave now refuses as older.
    expect((await call('get-address', 'bob')).status).toBe(500);

    const again = await lifecycle('activate', 'bob', b);
    expect([again.status, again.body]).toEqual([200, { address: b }]);
    // The records made the first time, nothing new.
    expect(lastUpdate()).toEqual(lost);
    expect(keyOf((w.store.userKey(projectId, subjectOf('bob')) as StoredUserKey).record)).toMatchObject({ address: b, state: 'active' });
    expect(w.store.pendingKey(projectId, subjectOf('bob'))).toBeUndefined();
    expect((await call('get-address', 'bob')).body).toEqual({ address: b });
    const hash = `0x${'cd'.repeat(32)}`;
    const signed = await signHash('bob', hash);
    expect([signed.status, verifyMessage(getBytes(hash), signed.body.signature)]).toEqual([200, b]);
    // The same for a cancel whose write is lost.
    const c = (await lifecycle('rotate', 'bob')).body.address as string;
    w.store.lie['store.updateRecords'] = () => ({ nonsense: true });
    expect((await lifecycle('cancel', 'bob')).status).toBe(503);
    w.store.lie = {};
    const cancelled = await lifecycle('cancel', 'bob');
    expect([cancelled.status, cancelled.body]).toEqual([200, { address: c }]);
    expect(w.store.pendingKey(projectId, subjectOf('bob'))).toBeUndefined();
    expect(states(lastUpdate())).toEqual([[c, 'cancelled']]);
    expect((await lifecycle('rotate', 'bob')).status).toBe(200);
  });

  it('3. the store answering the pending successor as the user`s key: KEY_INTEGRITY, no address, no signature', async () => {
    const a = (await call('get-address', 'carol')).body.address as string;
    expect((await lifecycle('rotate', 'carol')).status).toBe(200);
    const pending = w.store.pendingKey(projectId, subjectOf('carol'));
    const failures = (await w.health()).counters.integrityFailures;
    w.store.lie['store.userKey'] = () => ({ key: pending });
    expect((await refusedWithNothing(call('get-address', 'carol'), 500)).body.detail).toMatch(INTERNAL);
    expect((await refusedWithNothing(signHash('carol'), 500)).body.detail).toMatch(INTERNAL);
    expect((await w.health()).counters.integrityFailures - failures).toBe(2);
    w.store.lie = {};
    expect((await call('get-address', 'carol')).body).toEqual({ address: a });
  });

  it('4. a flood of key marks does not let the store answer the retired key on the user`s next sign', async () => {
    // Same enclave, smallest mark bound (the default only changes the flood's size).
    await w.h.restartEnclave({ records: { maxSeqMarks: 16 } });
    await w.installTls();
    await call('get-address', 'dora');
    const old = w.store.userKey(projectId, subjectOf('dora')) as StoredUserKey;
    const b = (await lifecycle('rotate', 'dora')).body.address as string;
    expect((await lifecycle('activate', 'dora', b)).status).toBe(200);
    // The store answers the retired key's old (active) record: refused while the mark is there.
    w.store.lie['store.userKey'] = () => ({ key: old });
    expect((await refusedWithNothing(signHash('dora'), 500)).body.detail).toMatch(INTERNAL);
    // The parent's flood over its own RPC: token keys, each given a second record.
    for (let i = 0; i < 18; i++) {
      const k = await w.h.client.call('keys.create', { keyId: `fl-${i}`, project: w.h.defaultProject, subject: `f${i}` });
      await w.h.client.call('keys.setDisabled', { record: k.record, project: w.h.defaultProject, disabled: true });
    }
    expect((await refusedWithNothing(signHash('dora'), 500)).body.detail).toMatch(INTERNAL);
    w.store.lie = {};
    const hash = `0x${'ef'.repeat(32)}`;
    const signed = await signHash('dora', hash);
    expect([signed.status, verifyMessage(getBytes(hash), signed.body.signature)]).toEqual([200, b]);
  }, 60_000);
});
