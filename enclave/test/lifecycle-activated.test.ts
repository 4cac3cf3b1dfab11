/**
 * An activated successor is never pending again (records/verified.ts, the activation pin), the test in the
 * parent seat against the real bundle over the enclave's wallet routes (from an attacker's review). The attack:
 * the store (the parent) keeps a successor's pending record; after the user activates it, the parent pushes the
 * key's evictable mark out (disabling keys of its own; records.maxSeqMarks at its minimum here) and answers that
 * old pending record as "the user's pending key" to the user's cancel of a later successor (no address named).
 * Refused: the user's cancel JWT cannot end their active key (their account's on-chain owner).
 */
import { getBytes, verifyMessage } from 'ethers';
import { jwtSubject, type LifecycleAction } from '@nks/shared/project-auth';
import { decodeKeyRecord, type KeyRecord, type SignedRecord } from '@nks/shared/records';
import type { StoredUserKey } from '@nks/shared/enclave-api';
import { startWalletsRig, type WalletsRig } from './wallets-setup';

const keyOf = (s: SignedRecord): KeyRecord => decodeKeyRecord(Buffer.from(s.record, 'base64'));

describe('an activated successor`s pending record, handed back after a mark flood, is refused', () => {
  let w: WalletsRig;
  let projectKey: string;
  let projectId: string;
  beforeAll(async () => {
    w = await startWalletsRig({
      wallets: { rateLimits: { perAddress: 1000, failuresPerAddress: 1000, perProject: 1000, perUser: 1000 } },
    });
    await w.h.restartEnclave({ records: { maxSeqMarks: 16 } });
    await w.installTls();
    const p = await w.newProject();
    projectKey = p.projectKey;
    projectId = p.projectId;
  }, 120_000);
  afterAll(async () => {
    await w?.stop();
  });
  const subjectOf = (sub: string) => jwtSubject(w.idp.issuer, sub) as string;
  const jwtFor = (sub: string, action?: LifecycleAction) =>
    w.mint(sub, action === undefined ? {} : { nks_action: action }, { lifetimeS: 60 });
  const call = async (route: string, sub: string, action?: LifecycleAction, extra: Record<string, unknown> = {}) =>
    w.wallet(projectKey, route, { jwt_token: await jwtFor(sub, action), ...extra });
  const signHash = async (sub: string, hash: string) =>
    w.wallet(projectKey, 'sign', { message: hash, jwt_token: await jwtFor(sub), message_type: 'hash', wallet_type: 'evm' });
  let filler = 0;
  /** Pushes every evictable key mark out: more keys of the parent's own than the bound, each disabled. */
  async function flood(): Promise<void> {
    for (let i = 0; i < 18; i++) {
      const k = await w.h.client.call('keys.create', { keyId: `fl-${++filler}`, project: w.h.defaultProject, subject: `f${filler}` });
      await w.h.client.call('keys.setDisabled', { record: k.record, project: w.h.defaultProject, disabled: true });
    }
  }
  const lastUpdate = () => w.store.calls.filter((x) => x.method === 'store.updateRecords').length;

  it("the user's cancel of a later successor does not end their active key", async () => {
    await call('get-address', 'erin');
    const b = (await call('rotate', 'erin', 'rotate')).body.address as string;
    const bPending = w.store.pendingKey(projectId, subjectOf('erin')) as StoredUserKey; // kept by the parent
    expect((await call('activate', 'erin', 'activate', { address: b })).status).toBe(200);
    const c = (await call('rotate', 'erin', 'rotate')).body.address as string;
    await flood();
    const updates = lastUpdate();
    w.store.lie['store.pendingUserKey'] = () => ({ key: bPending });
    const cancelled = await call('cancel', 'erin', 'cancel');
    w.store.lie = {};
    expect([cancelled.status, cancelled.body]).toEqual([500, { detail: expect.stringMatching(/could not answer/) }]);
    expect(lastUpdate()).toBe(updates);
    // B is still the user's key and signs; C is still pending, and the user's cancel of it works.
    const h = `0x${'22'.repeat(32)}`;
    const signed = await signHash('erin', h);
    expect([signed.status, verifyMessage(getBytes(h), signed.body.signature as string)]).toEqual([200, b]);
    expect(keyOf((w.store.pendingKey(projectId, subjectOf('erin')) as StoredUserKey).record).address).toBe(c);
    expect((await call('cancel', 'erin', 'cancel', { address: c })).body).toEqual({ address: c });
  }, 90_000);
});
