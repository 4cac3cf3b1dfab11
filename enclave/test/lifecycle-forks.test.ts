/**
 * A retired or cancelled key's final record is the only one of it the enclave accepts (records/verified.ts),
 * the test in the parent seat against the real enclave bundle (from an attacker's review). The attack: the
 * parent has the enclave make a record of the key before its retirement (a disable, seq n+1) and keeps it,
 * pushes the key's evictable mark out (by disabling many keys of its own; records.maxSeqMarks at its minimum
 * here), has the key retired from its seq n record (retired at seq n+1), then hands back the kept record: not
 * older than the retirement, a fork of it. Refused: a retired key never signs or changes again, no second
 * successor is activated, a cancelled successor stays cancelled, and for a JWT user the operator's hold cannot
 * be turned into the user's retired key answering get-address.
 */
import type { ProjectResult } from '@nks/shared/enclave-api';
import type { LifecycleAction } from '@nks/shared/project-auth';
import { decodeKeyRecord, type KeyRecord, type SignedRecord } from '@nks/shared/records';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import { startOpenRelay, type OpenRelay } from '../../test/support/open-relay';
import { digestOf, startEnclaveHarness, type EnclaveHarness } from './harness';

const keyOf = (s: SignedRecord): KeyRecord => decodeKeyRecord(Buffer.from(s.record, 'base64'));
const MARKS = 16;

describe('a fork of a retired or cancelled key, kept by the parent, is refused (real bundle, parent seat)', () => {
  let h: EnclaveHarness;
  let idp: SimulatedIdp;
  let relay: OpenRelay;
  let jp: ProjectResult;
  let n = 0;
  const nextId = () => `fork-${++n}`;

  beforeAll(async () => {
    idp = await startSimulatedIdp();
    const runDir = tempRunDir('nks-forks-');
    h = await startEnclaveHarness(runDir, {
      jwt: { trustedCas: [idp.caPem], jwks: { fetchTimeoutMs: 2_000, failureRetryMs: 0 } },
      // The smallest bound the schema allows; the default (200,000) only means more disables of the parent's own keys.
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

  const jwtFor = (sub: string, action?: LifecycleAction, lifetimeS = 60) =>
    idp.mint({ sub, ...(action === undefined ? {} : { nks_action: action }) }, { lifetimeS });
  const setDisabled = (record: SignedRecord, project: SignedRecord, disabled: boolean) =>
    h.client.call('keys.setDisabled', { record, project, disabled });
  const sign = (key: { keyId: string; blob: string }, record: SignedRecord, project: SignedRecord, jwt?: string) =>
    h.client.call('keys.sign', {
      keyId: key.keyId,
      blob: key.blob,
      record,
      project,
      request: { type: 'digest', digest: digestOf(7) },
      ...(jwt === undefined ? {} : { jwt }),
    });

  /** Pushes every evictable key mark out: MARKS + 1 keys of the parent's own (default project), each disabled. */
  async function evictKeyMarks(): Promise<void> {
    for (let i = 0; i <= MARKS; i++) {
      const k = await h.client.call('keys.create', { keyId: nextId(), project: h.defaultProject, subject: `filler-${n}` });
      await setDisabled(k.record, h.defaultProject, true);
    }
  }

  const INTEGRITY = 'KEY_INTEGRITY';
  const codeOf = async (p: Promise<unknown>) => (await rejection(p)).code;

  it('token project: a disabled record kept from before the retirement neither signs, nor is re-enabled, nor gets a successor', async () => {
    const p = h.defaultProject;
    const a = await h.client.call('keys.create', { keyId: nextId(), project: p, subject: 'victim' });
    const b = await h.client.call('keys.successor', { keyId: nextId(), record: a.record, project: p });
    const fork = await setDisabled(a.record, p, true);
    await evictKeyMarks();
    const { record: bActive, predecessor: aRetired } = await h.client.call('keys.activate', {
      record: b.record,
      predecessor: a.record,
      project: p,
    });
    expect([keyOf(bActive).state, keyOf(aRetired).state, keyOf(aRetired).seq]).toEqual(['active', 'retired', 1]);
    expect(await codeOf(sign(a, aRetired, p))).toBe('KEY_RETIRED');
    // The fork has the retirement's seq: refused for everything.
    expect(keyOf(fork.record).seq).toBe(1);
    expect(await codeOf(setDisabled(fork.record, p, false))).toBe(INTEGRITY);
    expect(await codeOf(sign(a, fork.record, p))).toBe(INTEGRITY);
    expect(await codeOf(h.client.call('keys.successor', { keyId: nextId(), record: fork.record, project: p }))).toBe(INTEGRITY);
    // Flooding the evictable marks again changes nothing: the final record is kept.
    await evictKeyMarks();
    expect(await codeOf(setDisabled(fork.record, p, false))).toBe(INTEGRITY);
    expect(await codeOf(sign(a, a.record, p))).toBe(INTEGRITY);
    expect(await codeOf(sign(a, aRetired, p))).toBe('KEY_RETIRED');
  });

  it('token project: a second successor is not activated over a kept fork, and a cancelled successor stays cancelled', async () => {
    const p = h.defaultProject;
    const a = await h.client.call('keys.create', { keyId: nextId(), project: p, subject: 'victim-2' });
    const b = await h.client.call('keys.successor', { keyId: nextId(), record: a.record, project: p });
    const c = await h.client.call('keys.successor', { keyId: nextId(), record: a.record, project: p });
    const aFork = await setDisabled(a.record, p, true);
    await evictKeyMarks();
    const first = await h.client.call('keys.activate', { record: b.record, predecessor: a.record, project: p });
    expect(keyOf(first.predecessor).state).toBe('retired');
    expect(await codeOf(h.client.call('keys.activate', { record: c.record, predecessor: aFork.record, project: p }))).toBe(INTEGRITY);
    const d = await h.client.call('keys.successor', { keyId: nextId(), record: first.record, project: p });
    const dFork = await setDisabled(d.record, p, true);
    await evictKeyMarks();
    const cancelled = await h.client.call('keys.cancel', { record: d.record, project: p });
    expect(keyOf(cancelled.record).state).toBe('cancelled');
    expect(await codeOf(sign(d, cancelled.record, p))).toBe('KEY_RETIRED');
    expect(await codeOf(setDisabled(dFork.record, p, false))).toBe(INTEGRITY);
    expect(await codeOf(sign(d, dFork.record, p))).toBe(INTEGRITY);
  });

  it("JWT project: the operator's hold kept from before the user's activation does not bring the retired key back", async () => {
    const sub = `user-${nextId()}`;
    const a = await h.client.call('keys.create', { keyId: nextId(), project: jp.record, subject: null, jwt: await jwtFor(sub) });
    const b = await h.client.call('keys.successor', {
      keyId: nextId(),
      record: a.record,
      project: jp.record,
      jwt: await jwtFor(sub, 'rotate'),
    });
    const fork = await setDisabled(a.record, jp.record, true);
    await evictKeyMarks();
    const { predecessor: aRetired } = await h.client.call('keys.activate', {
      record: b.record,
      predecessor: a.record,
      project: jp.record,
      jwt: await jwtFor(sub, 'activate'),
    });
    expect(keyOf(aRetired).state).toBe('retired');
    expect(await codeOf(setDisabled(fork.record, jp.record, false))).toBe(INTEGRITY);
    const login = await jwtFor(sub);
    expect(await codeOf(h.client.call('keys.lookup', { record: fork.record, project: jp.record, jwt: login }))).toBe(INTEGRITY);
    expect(await codeOf(h.client.call('keys.lookup', { record: aRetired, project: jp.record, jwt: login }))).toBe('KEY_RETIRED');
    expect(await codeOf(sign(a, fork.record, jp.record, login))).toBe(INTEGRITY);
  });
});
