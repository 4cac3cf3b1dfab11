/**
 * The key lifecycle in the enclave (keys.successor, keys.activate, keys.cancel; docs/PROTOCOL.md, "Key
 * lifecycle"), against the real enclave bundle over simulated vsock, the test standing where the parent would:
 * it hands the enclave whatever records it likes, genuine old ones included.
 *
 * What must hold: each transition is one new signed record per key (seq + 1, prev = the digest before), made
 * only from the state that allows it (KEY_STATE naming the state otherwise, nothing changed); a successor is
 * made with no KMS call and names its predecessor in all its records; a pending key signs, a retired or
 * cancelled one never again (KEY_RETIRED, from the cache too), and the records from before a change are refused
 * (KEY_INTEGRITY) while the enclave runs; records that do not fit together are KEY_INTEGRITY; a JWT project's
 * key changes only with its user's JWT for exactly that change, living at most 120 s (no operator can).
 */
import { createHash } from 'node:crypto';
import { recoverAddress } from 'viem';
import type { CreateResult, EnclaveHealth, ProjectResult } from '@nks/shared/enclave-api';
import type { KeystoreError } from '@nks/shared/errors';
import { jwtSubject, LIFECYCLE_MAX_TOKEN_LIFETIME_S, type LifecycleAction } from '@nks/shared/project-auth';
import { decodeKeyRecord, hex, recordDigest, type KeyRecord, type SignedRecord } from '@nks/shared/records';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import { startOpenRelay, type OpenRelay } from '../../test/support/open-relay';
import { LIFECYCLE_LIFETIME_MESSAGE, lifecycleActionMessage } from '../src/auth/jwt';
import { LIFECYCLE_WITHOUT_JWT_MESSAGE, NOT_THIS_USER_MESSAGE, TOKEN_PROJECT_JWT_MESSAGE } from '../src/keys/vault';
import { INTEGRITY_REFUSED_MESSAGE } from '../src/records/verified';
import { digestOf, startEnclaveHarness, type EnclaveHarness } from './harness';

const keyOf = (s: SignedRecord): KeyRecord => decodeKeyRecord(Buffer.from(s.record, 'base64'));
const digestHex = (s: SignedRecord) => hex(recordDigest(Buffer.from(s.record, 'base64')));
const codeAndMessage = (e: KeystoreError) => [e.code, e.message];
const stateError = (e: KeystoreError) => [e.code, e.message, e.details];
const INTEGRITY = ['KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE];

describe('the key lifecycle in the enclave (real bundle; the test in the parent seat)', () => {
  let h: EnclaveHarness;
  let idp: SimulatedIdp;
  /** The parent's egress relay, honest here: the enclave fetches the IdP's JWKS through it. */
  let relay: OpenRelay;
  /** A JWT project on the IdP (maxTokenLifetime 600 s: an ordinary login token passes its own check). */
  let jp: ProjectResult;

  beforeAll(async () => {
    idp = await startSimulatedIdp();
    const runDir = tempRunDir('nks-life-');
    h = await startEnclaveHarness(runDir, {
      jwt: { trustedCas: [idp.caPem], jwks: { fetchTimeoutMs: 2_000, failureRetryMs: 0 } },
    });
    relay = await startOpenRelay(runDir);
    jp = await newJwtProject();
  }, 120_000);
  afterAll(async () => {
    await relay?.close();
    await h?.stop();
    await idp?.close();
  });

  const health = (): Promise<EnclaveHealth> => h.client.call('enclave.health', {});
  const newJwtProject = (): Promise<ProjectResult> =>
    h.client.call('projects.create', {
      settings: { auth: { type: 'jwt', issuer: idp.issuer, audience: idp.audience, jwksUri: idp.jwksUri } },
    });
  const newTokenProject = (): Promise<ProjectResult> => h.client.call('projects.create', { settings: { auth: { type: 'token' } } });
  let n = 0;
  const nextId = () => `life-${++n}`;
  /** A key of the default (token) project, or of `project`. */
  const create = (project: SignedRecord = h.defaultProject, subject: string | null = 'sam') =>
    h.client.call('keys.create', { keyId: nextId(), project, subject });
  const successor = (key: { record: SignedRecord }, project: SignedRecord = h.defaultProject, jwt?: string, keyId = nextId()) =>
    h.client.call('keys.successor', { keyId, record: key.record, project, ...(jwt === undefined ? {} : { jwt }) });
  const activate = (key: { record: SignedRecord }, before: { record: SignedRecord }, project = h.defaultProject, jwt?: string) =>
    h.client.call('keys.activate', {
      record: key.record,
      predecessor: before.record,
      project,
      ...(jwt === undefined ? {} : { jwt }),
    });
  const cancel = (key: { record: SignedRecord }, project = h.defaultProject, jwt?: string) =>
    h.client.call('keys.cancel', { record: key.record, project, ...(jwt === undefined ? {} : { jwt }) });
  const sign = (key: { keyId: string; blob: string }, record: SignedRecord, project = h.defaultProject, jwt?: string) =>
    h.client.call('keys.sign', {
      keyId: key.keyId,
      blob: key.blob,
      record,
      project,
      request: { type: 'digest', digest: digestOf(7) },
      ...(jwt === undefined ? {} : { jwt }),
    });
  /** A JWT of the IdP for `sub`, for a lifecycle `action` (none: an ordinary login token), living `lifetimeS`. */
  const jwtFor = (sub: string, action?: LifecycleAction, lifetimeS = 60) =>
    idp.mint({ sub, ...(action === undefined ? {} : { nks_action: action }) }, { lifetimeS });

  /** The refusal `call` ends with, after which no key, record or signature was made and KMS was not asked. */
  async function refused(call: () => Promise<unknown>): Promise<KeystoreError> {
    const before = (await health()).counters;
    const asked = h.proxyRequests.length;
    const err = await rejection(call());
    const after = (await health()).counters;
    expect({ creates: after.creates - before.creates, signs: after.signs - before.signs, kms: h.proxyRequests.length - asked }).toEqual({
      creates: 0,
      signs: 0,
      kms: 0,
    });
    return err;
  }

  describe('transitions', () => {
    it('successor: a new pending key, same project and subject, naming its predecessor, made with no KMS call', async () => {
      const a = await create();
      const before = (await health()).counters;
      const decrypts = await h.decryptCalls();
      const asked = h.proxyRequests.length;
      const b = await successor(a);
      expect({ kms: h.proxyRequests.length - asked, decrypts: (await h.decryptCalls()) - decrypts }).toEqual({ kms: 0, decrypts: 0 });
      expect((await health()).counters.creates - before.creates).toBe(1);
      const r = keyOf(b.record);
      expect(r).toEqual({
        ...keyOf(a.record),
        keyId: b.keyId,
        address: b.address,
        blobSha256: hex(createHash('sha256').update(Buffer.from(b.blob, 'base64')).digest()),
        state: 'pending',
        predecessor: a.keyId,
        createdAt: expect.any(Number),
      });
      expect([r.seq, r.prev, r.origin, r.disabled, r.subject]).toEqual([0, null, 'created', false, 'sam']);
      expect(b.address).not.toBe(a.address);
      // A birth attestation, as keys.create gives one.
      const attested = await h.client.call('keys.successor', {
        keyId: nextId(),
        record: a.record,
        project: h.defaultProject,
        attest: true,
      });
      expect(attested.attestation).toEqual(expect.any(String));
    });

    it('a pending key signs (a recovery may need it before it is activated)', async () => {
      const a = await create();
      const b = await successor(a);
      const signed = await sign(b, b.record);
      expect(await recoverAddress({ hash: digestOf(7) as `0x${string}`, signature: signed.signature })).toBe(b.address);
    });

    it('activate: the successor active, its predecessor retired, each one record on (seq + 1, prev), predecessor kept', async () => {
      const a = await create();
      const b = await successor(a);
      const { record, predecessor } = await activate(b, a);
      expect(keyOf(record)).toEqual({
        ...keyOf(b.record),
        state: 'active',
        seq: 1,
        prev: digestHex(b.record),
        createdAt: expect.any(Number),
      });
      expect(keyOf(record).predecessor).toBe(a.keyId);
      expect(keyOf(predecessor)).toEqual({
        ...keyOf(a.record),
        state: 'retired',
        seq: 1,
        prev: digestHex(a.record),
        createdAt: expect.any(Number),
      });
      expect('predecessor' in keyOf(predecessor)).toBe(false);
      // The new key signs with its new record; the old one never again.
      await expect(sign(b, record)).resolves.toMatchObject({ address: b.address });
      expect(codeAndMessage(await refused(() => sign(a, predecessor)))).toEqual(['KEY_RETIRED', 'the key is retired']);
    });

    it('cancel: the pending key cancelled, one record on; it never signs again', async () => {
      const a = await create();
      const b = await successor(a);
      await sign(b, b.record); // warm in the cache
      const { record } = await cancel(b);
      expect(keyOf(record)).toEqual({
        ...keyOf(b.record),
        state: 'cancelled',
        seq: 1,
        prev: digestHex(b.record),
        createdAt: expect.any(Number),
      });
      expect(codeAndMessage(await refused(() => sign(b, record)))).toEqual(['KEY_RETIRED', 'the key is cancelled']);
      // The parent replaying the pending record: older than the newest seen.
      expect(codeAndMessage(await refused(() => sign(b, b.record)))).toEqual(INTEGRITY);
      // Its predecessor is untouched, and may have another successor.
      await expect(sign(a, a.record)).resolves.toMatchObject({ address: a.address });
      await expect(successor(a)).resolves.toMatchObject({ address: expect.any(String) });
    });

    it('setDisabled keeps a successor`s predecessor and state; retired and cancelled keys are not re-enabled (KEY_RETIRED)', async () => {
      const a = await create();
      const b = await successor(a);
      const { record: off } = await h.client.call('keys.setDisabled', { record: b.record, project: h.defaultProject, disabled: true });
      expect([keyOf(off).state, keyOf(off).predecessor, keyOf(off).disabled]).toEqual(['pending', a.keyId, true]);
      expect(codeAndMessage(await rejection(sign(b, off)))).toEqual(['KEY_DISABLED', 'the key is disabled']);
      // A disabled pending key is activated all the same, and stays disabled (the flag is separate).
      const { record, predecessor } = await activate({ record: off }, a);
      expect([keyOf(record).state, keyOf(record).disabled]).toEqual(['active', true]);
      expect(
        codeAndMessage(
          await rejection(h.client.call('keys.setDisabled', { record: predecessor, project: h.defaultProject, disabled: false })),
        ),
      ).toEqual(['KEY_RETIRED', 'the key is retired']);
      const c = await successor({ record });
      const { record: cancelled } = await cancel(c);
      expect(
        codeAndMessage(
          await rejection(h.client.call('keys.setDisabled', { record: cancelled, project: h.defaultProject, disabled: false })),
        ),
      ).toEqual(['KEY_RETIRED', 'the key is cancelled']);
    });

    it('a disabled key may have a successor (its owner may well want to replace it)', async () => {
      const a = await create();
      const { record: off } = await h.client.call('keys.setDisabled', { record: a.record, project: h.defaultProject, disabled: true });
      const b = await successor({ record: off });
      expect([keyOf(b.record).state, keyOf(b.record).predecessor]).toEqual(['pending', a.keyId]);
      const { predecessor } = await activate(b, { record: off });
      expect([keyOf(predecessor).state, keyOf(predecessor).disabled]).toEqual(['retired', true]);
    });
  });

  describe('wrong states: KEY_STATE naming the state, nothing changed', () => {
    it('successor of a pending, retired or cancelled key', async () => {
      const a = await create();
      const b = await successor(a);
      expect(stateError(await refused(() => successor(b)))).toEqual(['KEY_STATE', 'the key is pending', { state: 'pending' }]);
      const c = await successor(a);
      const { record: cancelled } = await cancel(c);
      expect(stateError(await refused(() => successor({ record: cancelled })))).toEqual([
        'KEY_STATE',
        'the key is cancelled',
        { state: 'cancelled' },
      ]);
      const { predecessor: retired } = await activate(b, a);
      expect(stateError(await refused(() => successor({ record: retired })))).toEqual([
        'KEY_STATE',
        'the key is retired',
        { state: 'retired' },
      ]);
    });

    it('activate of an active or cancelled key, or with a retired predecessor; cancel of an active or cancelled key', async () => {
      const a = await create();
      const b = await successor(a);
      // The key before any change: nothing below changes it (its record stays the newest, it still signs).
      expect(stateError(await refused(() => cancel(a)))).toEqual(['KEY_STATE', 'the key is active', { state: 'active' }]);
      // A compromised parent made two successors (the store's one-pending rule is the parent's): only one is activated.
      const c = await successor(a);
      const { record: bActive, predecessor: aRetired } = await activate(b, a);
      expect(stateError(await refused(() => activate(c, { record: aRetired })))).toEqual([
        'KEY_STATE',
        'the predecessor is retired',
        { state: 'retired' },
      ]);
      expect(stateError(await refused(() => activate({ record: bActive }, { record: aRetired })))).toEqual([
        'KEY_STATE',
        'the key is active',
        { state: 'active' },
      ]);
      expect(stateError(await refused(() => cancel({ record: bActive })))).toEqual(['KEY_STATE', 'the key is active', { state: 'active' }]);
      const { record: cCancelled } = await cancel(c);
      expect(stateError(await refused(() => cancel({ record: cCancelled })))).toEqual([
        'KEY_STATE',
        'the key is cancelled',
        { state: 'cancelled' },
      ]);
      expect(stateError(await refused(() => activate({ record: cCancelled }, { record: aRetired })))).toEqual([
        'KEY_STATE',
        'the key is cancelled',
        { state: 'cancelled' },
      ]);
      // Nothing changed: the records refused above are still the newest, and work.
      await expect(sign(b, bActive)).resolves.toMatchObject({ address: b.address });
      await expect(successor({ record: bActive })).resolves.toMatchObject({ address: expect.any(String) });
    });

    it('keys are not made or activated in a disabled project (KEY_DISABLED); a successor is still cancelled there', async () => {
      const p = await newTokenProject();
      const a = await create(p.record);
      const b = await successor(a, p.record);
      const { record: off } = await h.client.call('projects.setState', { project: p.record, state: 'disabled' });
      expect(codeAndMessage(await refused(() => successor(a, off)))).toEqual(['KEY_DISABLED', 'the project is disabled']);
      expect(codeAndMessage(await refused(() => activate(b, a, off)))).toEqual(['KEY_DISABLED', 'the project is disabled']);
      await expect(cancel(b, off)).resolves.toMatchObject({ record: expect.any(Object) });
    });
  });

  describe('the parent replaying, swapping and mixing records (KEY_INTEGRITY)', () => {
    it('a warm key retired: its next sign is refused, with the retired record (KEY_RETIRED) or the active one replayed (KEY_INTEGRITY)', async () => {
      const a = await create();
      await sign(a, a.record); // warm: the cache holds the unsealed key
      const kms = h.proxyRequests.length;
      await sign(a, a.record);
      expect(h.proxyRequests.length).toBe(kms); // a cache hit
      const b = await successor(a);
      const { record, predecessor } = await activate(b, a);
      expect(codeAndMessage(await refused(() => sign(a, predecessor)))).toEqual(['KEY_RETIRED', 'the key is retired']);
      expect(codeAndMessage(await refused(() => sign(a, a.record)))).toEqual(INTEGRITY);
      // The successor's pending record, replayed after its activation: refused too.
      expect(codeAndMessage(await refused(() => sign(b, b.record)))).toEqual(INTEGRITY);
      // The replayed older records cannot drive transitions either.
      expect(codeAndMessage(await refused(() => successor(a)))).toEqual(INTEGRITY);
      expect(codeAndMessage(await refused(() => cancel(b)))).toEqual(INTEGRITY);
      expect(codeAndMessage(await refused(() => activate(b, a)))).toEqual(INTEGRITY);
      await expect(sign(b, record)).resolves.toMatchObject({ address: b.address });
    });

    it('activate with a predecessor that is not the one the successor names, or of another subject or project', async () => {
      const a = await create();
      const other = await create();
      const b = await successor(a);
      const failures = (await health()).counters.integrityFailures;
      expect(codeAndMessage(await refused(() => activate(b, other)))).toEqual(INTEGRITY);
      // A key that is no successor at all, "activated" over another.
      expect(codeAndMessage(await refused(() => activate(other, a)))).toEqual(INTEGRITY);
      // The successor's own record as its predecessor.
      expect(codeAndMessage(await refused(() => activate(b, b)))).toEqual(INTEGRITY);
      expect((await health()).counters.integrityFailures - failures).toBe(3);
      // Nothing changed: both keys sign, and the real pair still activates.
      await expect(sign(other, other.record)).resolves.toMatchObject({ address: other.address });
      await expect(activate(b, a)).resolves.toMatchObject({ record: expect.any(Object) });
    });

    it('cross-project: a key with another project`s record, for each method', async () => {
      const p = await newTokenProject();
      const a = await create();
      const b = await successor(a);
      const inP = await create(p.record);
      const bInP = await successor(inP, p.record);
      expect(codeAndMessage(await refused(() => successor(a, p.record)))).toEqual(INTEGRITY);
      expect(codeAndMessage(await refused(() => activate(b, a, p.record)))).toEqual(INTEGRITY);
      // The successor in one project, the predecessor in another (and the project of either).
      expect(codeAndMessage(await refused(() => activate(bInP, a, p.record)))).toEqual(INTEGRITY);
      expect(codeAndMessage(await refused(() => activate(bInP, a)))).toEqual(INTEGRITY);
      expect(codeAndMessage(await refused(() => cancel(b, p.record)))).toEqual(INTEGRITY);
    });

    it('a successor under its predecessor`s own key id is refused (INVALID_PARAMS)', async () => {
      const a = await create();
      expect(codeAndMessage(await refused(() => successor(a, h.defaultProject, undefined, a.keyId)))).toEqual([
        'INVALID_PARAMS',
        'a successor needs a key id of its own',
      ]);
    });

    it('two activations racing for one predecessor: exactly one is made', async () => {
      const jwtA = await jwtFor('race', undefined);
      const a = await h.client.call('keys.create', { keyId: nextId(), project: jp.record, subject: null, jwt: jwtA });
      const b = await successor(a, jp.record, await jwtFor('race', 'rotate'));
      const c = await successor(a, jp.record, await jwtFor('race', 'rotate'));
      const go = await jwtFor('race', 'activate');
      const settled = await Promise.allSettled([activate(b, a, jp.record, go), activate(c, a, jp.record, go)]);
      expect(settled.map((s) => s.status).sort()).toEqual(['fulfilled', 'rejected']);
      const lost = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected')?.reason as KeystoreError;
      // Refused before (KEY_STATE: already retired) or after (KEY_INTEGRITY: superseded meanwhile) its JWT check.
      expect(['KEY_INTEGRITY', 'KEY_STATE']).toContain(lost.code);
    });
  });

  describe('JWT projects: only the key`s user, with a JWT for exactly the change', () => {
    let alice: CreateResult;
    beforeAll(async () => {
      alice = await h.client.call('keys.create', { keyId: nextId(), project: jp.record, subject: null, jwt: await jwtFor('alice') });
    });

    it('successor, activate and cancel with the user`s JWT for each; the subject carried over', async () => {
      const b = await successor(alice, jp.record, await jwtFor('alice', 'rotate'));
      expect([keyOf(b.record).subject, keyOf(b.record).predecessor]).toEqual([jwtSubject(idp.issuer, 'alice'), alice.keyId]);
      const c = await h.client.call('keys.create', { keyId: nextId(), project: jp.record, subject: null, jwt: await jwtFor('carl') });
      const d = await successor(c, jp.record, await jwtFor('carl', 'rotate', LIFECYCLE_MAX_TOKEN_LIFETIME_S));
      await expect(cancel(d, jp.record, await jwtFor('carl', 'cancel'))).resolves.toMatchObject({ record: expect.any(Object) });
      const { record, predecessor } = await activate(b, alice, jp.record, await jwtFor('alice', 'activate'));
      expect([keyOf(record).state, keyOf(predecessor).state]).toEqual(['active', 'retired']);
      const jwt = await jwtFor('alice');
      expect(codeAndMessage(await refused(() => sign(alice, predecessor, jp.record, jwt)))).toEqual(['KEY_RETIRED', 'the key is retired']);
      // A retired key is not looked up either.
      expect(codeAndMessage(await rejection(h.client.call('keys.lookup', { record: predecessor, project: jp.record, jwt })))).toEqual([
        'KEY_RETIRED',
        'the key is retired',
      ]);
      alice = { ...b, record };
    });

    it('refuses an ordinary login token, another action`s token, one living 121 s, and another user`s (INVALID_JWT, FORBIDDEN)', async () => {
      const cases: Array<[string, () => Promise<string>, [string, string]]> = [
        ['no nks_action', () => jwtFor('alice'), ['INVALID_JWT', lifecycleActionMessage('rotate')]],
        ['activate for rotate', () => jwtFor('alice', 'activate'), ['INVALID_JWT', lifecycleActionMessage('rotate')]],
        [
          'nks_action not a string',
          () => idp.mint({ sub: 'alice', nks_action: ['rotate'] }, { lifetimeS: 60 }),
          ['INVALID_JWT', lifecycleActionMessage('rotate')],
        ],
        ['121 s', () => jwtFor('alice', 'rotate', LIFECYCLE_MAX_TOKEN_LIFETIME_S + 1), ['INVALID_JWT', LIFECYCLE_LIFETIME_MESSAGE]],
        ["another user's", () => jwtFor('mallory', 'rotate'), ['FORBIDDEN', NOT_THIS_USER_MESSAGE]],
      ];
      for (const [what, token, expected] of cases) {
        const jwt = await token();
        expect([what, codeAndMessage(await refused(() => successor(alice, jp.record, jwt)))]).toEqual([what, expected]);
      }
      const b = await successor(alice, jp.record, await jwtFor('alice', 'rotate'));
      // A rotate token does not activate or cancel, an activate token does not cancel.
      const rotate = await jwtFor('alice', 'rotate');
      expect(codeAndMessage(await refused(() => activate(b, alice, jp.record, rotate)))).toEqual([
        'INVALID_JWT',
        lifecycleActionMessage('activate'),
      ]);
      expect(codeAndMessage(await refused(() => cancel(b, jp.record, rotate)))).toEqual(['INVALID_JWT', lifecycleActionMessage('cancel')]);
      const go = await jwtFor('alice', 'activate');
      expect(codeAndMessage(await refused(() => cancel(b, jp.record, go)))).toEqual(['INVALID_JWT', lifecycleActionMessage('cancel')]);
      const long = await jwtFor('alice', 'activate', LIFECYCLE_MAX_TOKEN_LIFETIME_S + 1);
      expect(codeAndMessage(await refused(() => activate(b, alice, jp.record, long)))).toEqual(['INVALID_JWT', LIFECYCLE_LIFETIME_MESSAGE]);
      expect(codeAndMessage(await refused(async () => cancel(b, jp.record, await jwtFor('mallory', 'cancel'))))).toEqual([
        'FORBIDDEN',
        NOT_THIS_USER_MESSAGE,
      ]);
      // Nothing changed: the pending key is still cancelled by its user.
      await expect(cancel(b, jp.record, await jwtFor('alice', 'cancel'))).resolves.toMatchObject({ record: expect.any(Object) });
    });

    it('the operator cannot: a JWT project`s key without a JWT is FORBIDDEN for each method', async () => {
      const b = await successor(alice, jp.record, await jwtFor('alice', 'rotate'));
      expect(codeAndMessage(await refused(() => successor(alice, jp.record)))).toEqual(['FORBIDDEN', LIFECYCLE_WITHOUT_JWT_MESSAGE]);
      expect(codeAndMessage(await refused(() => activate(b, alice, jp.record)))).toEqual(['FORBIDDEN', LIFECYCLE_WITHOUT_JWT_MESSAGE]);
      expect(codeAndMessage(await refused(() => cancel(b, jp.record)))).toEqual(['FORBIDDEN', LIFECYCLE_WITHOUT_JWT_MESSAGE]);
      await cancel(b, jp.record, await jwtFor('alice', 'cancel'));
    });

    it('a token project`s key takes no JWT (INVALID_PARAMS)', async () => {
      const a = await create();
      const b = await successor(a);
      const jwt = await jwtFor('sam', 'rotate');
      expect(codeAndMessage(await refused(() => successor(a, h.defaultProject, jwt)))).toEqual([
        'INVALID_PARAMS',
        TOKEN_PROJECT_JWT_MESSAGE,
      ]);
      expect(codeAndMessage(await refused(() => activate(b, a, h.defaultProject, jwt)))).toEqual([
        'INVALID_PARAMS',
        TOKEN_PROJECT_JWT_MESSAGE,
      ]);
      expect(codeAndMessage(await refused(() => cancel(b, h.defaultProject, jwt)))).toEqual(['INVALID_PARAMS', TOKEN_PROJECT_JWT_MESSAGE]);
    });
  });
});
