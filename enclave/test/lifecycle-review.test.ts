/**
 * The key lifecycle's "never again" against a parent that floods the key marks (records.maxSeqMarks; docs/SECURITY.md,
 * "The key lifecycle"), real bundle, the test in the parent seat. Ordinary key marks are an LRU: a parent that makes
 * that many other marks (create + setDisabled of its own token keys) pushes an ordinary mark out. The marks of retired
 * and cancelled keys are never dropped, so after such a flood, with no restart, a retired or cancelled key's older
 * record is still refused: it signs no more, is not activated, and a second successor of a key is not activated.
 * At the bound a new retired or cancelled key is OVERLOADED, and nothing changes (denied service, nothing else).
 *
 * Also: a disabled key's successor is born disabled (a rotation does not undo an operator's hold).
 *
 * The bound is set to its minimum (16) so the tests are quick; the default (200,000) only changes the flood's size.
 */
import { recoverAddress } from 'viem';
import type { ProjectResult } from '@nks/shared/enclave-api';
import type { KeystoreError } from '@nks/shared/errors';
import type { LifecycleAction } from '@nks/shared/project-auth';
import { decodeKeyRecord, type KeyRecord, type SignedRecord } from '@nks/shared/records';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import { startOpenRelay, type OpenRelay } from '../../test/support/open-relay';
import { INTEGRITY_REFUSED_MESSAGE } from '../src/records/verified';
import { digestOf, startEnclaveHarness, type EnclaveHarness } from './harness';

const keyOf = (s: SignedRecord): KeyRecord => decodeKeyRecord(Buffer.from(s.record, 'base64'));
const codeAndMessage = (e: KeystoreError) => [e.code, e.message];
const INTEGRITY = ['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE];
const MARKS = 16;
const FINAL_BOUND = /^the enclave keeps the newest record of at most 16 retired, cancelled or activated keys \(records\.maxSeqMarks\)$/;

/** The calls of the parent seat on one enclave harness. */
function parentSeat(h: () => EnclaveHarness, prefix: string) {
  let n = 0;
  const nextId = () => `${prefix}-${++n}`;
  const project = () => h().defaultProject;
  const withJwt = (jwt?: string) => (jwt === undefined ? {} : { jwt });
  return {
    create: (p: SignedRecord = project(), subject: string | null = 'sam', jwt?: string) =>
      h().client.call('keys.create', { keyId: nextId(), project: p, subject, ...withJwt(jwt) }),
    successor: (key: { record: SignedRecord }, p: SignedRecord = project(), jwt?: string) =>
      h().client.call('keys.successor', { keyId: nextId(), record: key.record, project: p, ...withJwt(jwt) }),
    activate: (key: { record: SignedRecord }, before: { record: SignedRecord }, p: SignedRecord = project(), jwt?: string) =>
      h().client.call('keys.activate', { record: key.record, predecessor: before.record, project: p, ...withJwt(jwt) }),
    cancel: (key: { record: SignedRecord }, p: SignedRecord = project(), jwt?: string) =>
      h().client.call('keys.cancel', { record: key.record, project: p, ...withJwt(jwt) }),
    setDisabled: (key: { record: SignedRecord }, disabled: boolean) =>
      h().client.call('keys.setDisabled', { record: key.record, project: project(), disabled }),
    sign: (key: { keyId: string; blob: string }, record: SignedRecord, p: SignedRecord = project(), d = 7) =>
      h().client.call('keys.sign', {
        keyId: key.keyId,
        blob: key.blob,
        record,
        project: p,
        request: { type: 'digest', digest: digestOf(d) },
      }),
    /** The parent's flood: `count` keys of its own (default token project), each given a second record (a mark). */
    async flood(count = MARKS + 2): Promise<void> {
      for (let i = 0; i < count; i++) {
        const k = await h().client.call('keys.create', { keyId: nextId(), project: project(), subject: `flood-${i}` });
        await h().client.call('keys.setDisabled', { record: k.record, project: project(), disabled: true });
      }
    },
  };
}

/** Who signed digest `d` (digestOf). */
const signer = async (signed: { signature: `0x${string}` }, d = 7) =>
  recoverAddress({ hash: digestOf(d) as `0x${string}`, signature: signed.signature });

describe('lifecycle finality against a flood of key marks (real bundle, parent seat)', () => {
  let h: EnclaveHarness;
  let idp: SimulatedIdp;
  let relay: OpenRelay;
  let jp: ProjectResult;
  const { create, successor, activate, cancel, setDisabled, sign, flood } = parentSeat(() => h, 'lr');
  const jwtFor = (sub: string, action?: LifecycleAction, lifetimeS = 60) =>
    idp.mint({ sub, ...(action === undefined ? {} : { nks_action: action }) }, { lifetimeS });

  beforeAll(async () => {
    idp = await startSimulatedIdp();
    const runDir = tempRunDir('nks-lr-');
    h = await startEnclaveHarness(runDir, {
      jwt: { trustedCas: [idp.caPem], jwks: { fetchTimeoutMs: 2_000, failureRetryMs: 0 } },
      records: { maxSeqMarks: MARKS },
    });
    relay = await startOpenRelay(runDir);
    jp = await h.client.call('projects.create', {
      settings: { auth: { type: 'jwt', issuer: idp.issuer, audience: idp.audience, jwksUri: idp.jwksUri } },
    });
  }, 120_000);
  afterAll(async () => {
    await relay?.close();
    await h?.stop();
    await idp?.close();
  });

  it('a retired key never signs again: its active record replayed after the flood is still refused', async () => {
    const a = await create();
    const p = await successor(a);
    const { predecessor: retired } = await activate(p, a);
    expect(keyOf(retired).state).toBe('retired');
    expect(codeAndMessage(await rejection(sign(a, a.record)))).toEqual(INTEGRITY);
    await flood();
    expect(codeAndMessage(await rejection(sign(a, a.record)))).toEqual(INTEGRITY);
    expect(codeAndMessage(await rejection(sign(a, retired)))).toEqual(['KEY_RETIRED', 'the key is retired']);
  });

  it('a cancelled successor neither signs nor is activated after the flood (its pending record refused)', async () => {
    const a = await create();
    const p = await successor(a);
    const { record: cancelled } = await cancel(p);
    expect(keyOf(cancelled).state).toBe('cancelled');
    await flood();
    expect(codeAndMessage(await rejection(sign(p, p.record)))).toEqual(INTEGRITY);
    expect(codeAndMessage(await rejection(activate(p, a)))).toEqual(INTEGRITY);
    // The predecessor is untouched: still active, still signing.
    expect(await signer(await sign(a, a.record))).toBe(a.address);
  });

  it('a second successor of one key is not activated after the flood: one active key per subject', async () => {
    const a = await create();
    const s1 = await successor(a);
    const s2 = await successor(a); // the enclave does not refuse a second pending successor (the store does)
    await activate(s1, a);
    expect(codeAndMessage(await rejection(activate(s2, a)))).toEqual(INTEGRITY);
    await flood();
    expect(codeAndMessage(await rejection(activate(s2, a)))).toEqual(INTEGRITY);
    expect(codeAndMessage(await rejection(sign(a, a.record)))).toEqual(INTEGRITY);
  });

  it('JWT project: the retired key is not used with the user`s next login JWT after the flood', async () => {
    const a = await create(jp.record, null, await jwtFor('alice'));
    const p = await successor(a, jp.record, await jwtFor('alice', 'rotate'));
    const { predecessor: retired } = await activate(p, a, jp.record, await jwtFor('alice', 'activate'));
    expect(keyOf(retired).state).toBe('retired');
    // The user's ordinary sign JWT (on the wallet routes the parent picks the record: it answers a's old one).
    const login = await jwtFor('alice');
    const msg = (record: SignedRecord) =>
      h.client.call('keys.sign', {
        keyId: a.keyId,
        blob: a.blob,
        record,
        project: jp.record,
        request: { type: 'message', message: 'hi' },
        jwt: login,
      });
    expect(codeAndMessage(await rejection(msg(a.record)))).toEqual(INTEGRITY);
    await flood(); // the parent's own token-project keys: no JWT needed
    expect(codeAndMessage(await rejection(msg(a.record)))).toEqual(INTEGRITY);
  });

  it('a disabled key`s successor is born disabled: a rotation does not undo an operator`s hold', async () => {
    const a = await create();
    const { record: off } = await setDisabled(a, true);
    expect(codeAndMessage(await rejection(sign(a, off)))).toEqual(['KEY_DISABLED', 'the key is disabled']);
    const p = await successor({ record: off });
    expect([keyOf(p.record).state, keyOf(p.record).disabled]).toEqual(['pending', true]);
    expect(codeAndMessage(await rejection(sign(p, p.record)))).toEqual(['KEY_DISABLED', 'the key is disabled']);
    const { record } = await activate(p, { record: off });
    expect([keyOf(record).state, keyOf(record).disabled]).toEqual(['active', true]);
    expect(codeAndMessage(await rejection(sign(p, record)))).toEqual(['KEY_DISABLED', 'the key is disabled']);
    // Enabled by the operator, as any disabled key.
    const { record: on } = await setDisabled({ record }, false);
    expect(await signer(await sign(p, on))).toBe(p.address);
  });
});

describe('the bound on the marks of retired and cancelled keys (records.maxSeqMarks at its minimum)', () => {
  let h: EnclaveHarness;
  const { create, successor, activate, cancel, setDisabled, sign, flood } = parentSeat(() => h, 'lb');

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-lb-'), { records: { maxSeqMarks: MARKS } });
  }, 120_000);
  afterAll(async () => {
    await h?.stop();
  });

  it('once that many keys are retired, cancelled or activated, the next such change is OVERLOADED and nothing changes', async () => {
    // MARKS keys pinned: each round an activation (its predecessor retired, the successor activated: two pins)
    // and a cancel (one); then one more cancel.
    const retired: Array<{ key: Awaited<ReturnType<typeof create>>; active: SignedRecord }> = [];
    const cancelled: Array<Awaited<ReturnType<typeof create>>> = [];
    for (let i = 0; i < Math.floor(MARKS / 3); i++) {
      const a = await create();
      const { record: active } = await activate(await successor(a), a);
      retired.push({ key: a, active });
      const p = await successor({ record: active });
      await cancel(p);
      cancelled.push(p);
    }
    const last = await successor(await create());
    await cancel(last);
    cancelled.push(last);

    // One more cancel: OVERLOADED, and the successor is still pending (it signs, its record current).
    const a = await create();
    const p = await successor(a);
    const overCancel = await rejection(cancel(p));
    expect([overCancel.code, overCancel.message]).toEqual(['OVERLOADED', expect.stringMatching(FINAL_BOUND)]);
    expect(await signer(await sign(p, p.record))).toBe(p.address);
    // One more activation (its predecessor would be retired): OVERLOADED, and both keys are as they were.
    const overActivate = await rejection(activate(p, a));
    expect([overActivate.code, overActivate.message]).toEqual(['OVERLOADED', expect.stringMatching(FINAL_BOUND)]);
    expect(await signer(await sign(a, a.record, undefined, 8), 8)).toBe(a.address);
    expect(await signer(await sign(p, p.record, undefined, 9), 9)).toBe(p.address);

    // Ordinary changes are not held back: a key is still disabled and enabled.
    const { record: off } = await setDisabled(a, true);
    expect(keyOf((await setDisabled({ record: off }, false)).record)).toMatchObject({ seq: 2, disabled: false });

    // The flood pushes out ordinary marks only: the final keys' older records are still refused.
    await flood();
    for (const { key } of retired) expect(codeAndMessage(await rejection(sign(key, key.record)))).toEqual(INTEGRITY);
    for (const k of cancelled) expect(codeAndMessage(await rejection(sign(k, k.record)))).toEqual(INTEGRITY);
  });
});
