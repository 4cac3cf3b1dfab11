/**
 * The key lifecycle on the TrueWallet routes (docs/PROTOCOL.md, "Key lifecycle"): `POST /v1/{projectKey}/wallets/
 * rotate | activate | cancel {jwt_token, address?}` (activate names its address) over real HTTPS to the real enclave
 * bundle, real JWTs from the simulated IdP, and the test in the parent's seat with the wallet store double
 * (wallet-store.ts), which may lie.
 *
 * What must hold: each route answers `{address}` of the key it made or changed and leaves the store holding the
 * enclave's records (activate's two together); a JWT that is not for exactly that change (an ordinary login token,
 * another action's, one living over 120 s) is refused as any bad JWT before the store is asked about the user's
 * keys; a second successor is SUCCESSOR_EXISTS (asked first, or decided by the store's insert); wrong states are
 * 409 naming the state; a missing key, or none pending at the address named, is 404; each outcome counted in health.
 * The attacks of a store that lies about which key is pending: lifecycle-review-wallets.test.ts.
 */
import { getBytes, verifyMessage } from 'ethers';
import { jwtSubject, LIFECYCLE_MAX_TOKEN_LIFETIME_S, type LifecycleAction } from '@nks/shared/project-auth';
import { decodeKeyRecord, type KeyRecord, type SignedRecord } from '@nks/shared/records';
import { LIFECYCLE_LIFETIME_MESSAGE, lifecycleActionMessage } from '../src/auth/jwt';
import { startWalletsRig, type Answer, type WalletsRig } from './wallets-setup';

const keyOf = (s: SignedRecord): KeyRecord => decodeKeyRecord(Buffer.from(s.record, 'base64'));
const expectDetail = (res: Answer, status: number, detail: unknown) =>
  expect({ status: res.status, body: res.body }).toEqual({ status, body: { detail } });

describe('the key lifecycle on the wallet routes, over HTTPS', () => {
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
  /** A JWT for `sub`: for a lifecycle `action`, or an ordinary login token (none). */
  const jwtFor = (sub: string, action?: LifecycleAction, lifetimeS = 60) =>
    w.mint(sub, action === undefined ? {} : { nks_action: action }, { lifetimeS });
  const call = async (route: string, sub: string, action?: LifecycleAction, lifetimeS?: number, address?: string) =>
    w.wallet(projectKey, route, { jwt_token: await jwtFor(sub, action, lifetimeS), ...(address === undefined ? {} : { address }) });
  /** A lifecycle change; activate names the address it activates (cancel may). */
  const lifecycle = (action: LifecycleAction, sub: string, address?: string) => call(action, sub, action, undefined, address);
  /** Some address no key of these tests has. */
  const NOBODY = `0x${'12'.repeat(20)}`;
  const requests = async () => (await w.health()).wallets.requests;

  it('rotate → pending successor; activate → it is the user`s key, the old one retired; cancel → given up', async () => {
    const before = (await call('get-address', 'alice')).body.address as string;
    const rotated = await lifecycle('rotate', 'alice');
    expect(rotated.status).toBe(200);
    const b = rotated.body.address as string;
    expect(b).toMatch(/^0x[0-9a-fA-F]{40}$/);
    expect(b).not.toBe(before);
    const pending = w.store.pendingKey(projectId, subjectOf('alice'));
    expect(pending && [keyOf(pending.record).state, keyOf(pending.record).address]).toEqual(['pending', b]);
    // Until it is activated, the user's key is the one before.
    expect((await call('get-address', 'alice')).body).toEqual({ address: before });

    const activated = await lifecycle('activate', 'alice', b);
    expect([activated.status, activated.body]).toEqual([200, { address: b }]);
    expect((await call('get-address', 'alice')).body).toEqual({ address: b });
    expect(w.store.pendingKey(projectId, subjectOf('alice'))).toBeUndefined();
    const retired = w.store.finished().find((k) => keyOf(k.record).address === before);
    expect(retired && keyOf(retired.record).state).toBe('retired');
    // activate wrote both records in one update.
    const update = w.store.calls.filter((c) => c.method === 'store.updateRecords').pop()?.params as { records: SignedRecord[] };
    expect(update.records.map((r) => [keyOf(r).address, keyOf(r).state])).toEqual([
      [b, 'active'],
      [before, 'retired'],
    ]);
    // The user's signatures are the new key's now.
    const hash = `0x${'ab'.repeat(32)}`;
    const jwt = await jwtFor('alice');
    const signed = await w.wallet(projectKey, 'sign', { message: hash, jwt_token: jwt, message_type: 'hash', wallet_type: 'evm' });
    expect(verifyMessage(getBytes(hash), signed.body.signature)).toBe(b);

    const c = (await lifecycle('rotate', 'alice')).body.address as string;
    const cancelled = await lifecycle('cancel', 'alice');
    expect([cancelled.status, cancelled.body]).toEqual([200, { address: c }]);
    expect(w.store.pendingKey(projectId, subjectOf('alice'))).toBeUndefined();
    expect(keyOf((w.store.finished().pop() as { record: SignedRecord }).record)).toMatchObject({ address: c, state: 'cancelled' });
    expect((await call('get-address', 'alice')).body).toEqual({ address: b });
  });

  it('a second rotate while one is pending: 409 SUCCESSOR_EXISTS, whether the store says so first or on insert', async () => {
    await call('get-address', 'bob');
    const first = await lifecycle('rotate', 'bob');
    const kept = w.store.pendingKey(projectId, subjectOf('bob'));
    const counted = (await requests()).conflict ?? 0;
    const again = await lifecycle('rotate', 'bob');
    expectDetail(again, 409, 'this user has a pending key already: activate or cancel it first');
    // The store hides its pending key: the enclave makes one, and the store's insert keeps the first.
    w.store.lie['store.pendingUserKey'] = () => ({ key: null });
    const raced = await lifecycle('rotate', 'bob');
    expectDetail(raced, 409, 'this user has a pending key already: activate or cancel it first');
    expect(w.store.pendingKey(projectId, subjectOf('bob'))).toEqual(kept);
    expect(keyOf((kept as { record: SignedRecord }).record).address).toBe(first.body.address);
    expect(((await requests()).conflict ?? 0) - counted).toBe(2);
  });

  it('refuses a JWT not for exactly this change (400 jwt_token, counted invalid_jwt) before the store is asked about keys', async () => {
    await call('get-address', 'carol');
    const calls = w.store.calls.length;
    const counted = (await requests()).invalid_jwt ?? 0;
    // (activate names an address: the JWT is refused before it is looked at.)
    const cases: Array<[string, LifecycleAction | undefined, number, string]> = [
      ['rotate', undefined, 60, lifecycleActionMessage('rotate')],
      ['rotate', 'activate', 60, lifecycleActionMessage('rotate')],
      ['activate', 'rotate', 60, lifecycleActionMessage('activate')],
      ['cancel', 'activate', 60, lifecycleActionMessage('cancel')],
      ['rotate', 'rotate', LIFECYCLE_MAX_TOKEN_LIFETIME_S + 1, LIFECYCLE_LIFETIME_MESSAGE],
    ];
    for (const [route, action, lifetimeS, message] of cases) {
      const res = await call(route, 'carol', action, lifetimeS, route === 'activate' ? NOBODY : undefined);
      expect([route, action, res.status, res.body]).toEqual([route, action, 400, { detail: { jwt_token: [message] } }]);
    }
    expect(((await requests()).invalid_jwt ?? 0) - counted).toBe(cases.length);
    // Only the project was looked up (per request); nothing about the user's keys.
    expect(w.store.calls.slice(calls).map((c) => c.method)).toEqual(cases.map(() => 'store.project'));
    expect(w.store.pendingKey(projectId, subjectOf('carol'))).toBeUndefined();
    // A JWT for exactly 120 s is one.
    expect((await call('rotate', 'carol', 'rotate', LIFECYCLE_MAX_TOKEN_LIFETIME_S)).status).toBe(200);
  });

  it('404 without a key to change or at another address; 409 naming the state of a cancelled key the store answers', async () => {
    const counted = (await requests()).not_found ?? 0;
    expectDetail(await lifecycle('rotate', 'dave'), 404, 'this user has no key yet');
    await call('get-address', 'dave');
    expectDetail(await lifecycle('activate', 'dave', NOBODY), 404, 'this user has no pending key');
    expectDetail(await lifecycle('cancel', 'dave'), 404, 'this user has no pending key');
    // A pending key, but not at the address named.
    const p = (await lifecycle('rotate', 'dave')).body.address as string;
    expectDetail(await lifecycle('activate', 'dave', NOBODY), 404, 'this user has no pending key at this address');
    expectDetail(await lifecycle('cancel', 'dave', NOBODY), 404, 'this user has no pending key at this address');
    expect(((await requests()).not_found ?? 0) - counted).toBe(5);
    expect((await lifecycle('cancel', 'dave', p)).status).toBe(200);
    // The store answers the cancelled key as the pending one: the enclave decides from its record.
    const active = w.store.userKey(projectId, subjectOf('dave'));
    const cancelled = w.store.finished().pop();
    w.store.lie['store.pendingUserKey'] = () => ({ key: cancelled });
    expectDetail(await lifecycle('cancel', 'dave'), 409, 'the key is cancelled');
    expectDetail(await lifecycle('activate', 'dave', p), 409, 'the key is cancelled');
    // Nothing changed: the key is still the user's and usable.
    w.store.lie = {};
    expect(w.store.userKey(projectId, subjectOf('dave'))).toEqual(active);
    expect((await lifecycle('rotate', 'dave')).status).toBe(200);
  });

  it("a store's lie about the keys is KEY_INTEGRITY (500), never a change: another user's pending key, a pending key with no active one, the active key as pending", async () => {
    await call('get-address', 'erin');
    await call('get-address', 'frank');
    expect((await lifecycle('rotate', 'frank')).status).toBe(200);
    const franks = w.store.pendingKey(projectId, subjectOf('frank'));
    const erins = w.store.userKey(projectId, subjectOf('erin'));
    const errors = (await requests()).error ?? 0;
    const failures = (await w.health()).counters.integrityFailures;
    w.store.lie['store.pendingUserKey'] = () => ({ key: franks });
    expect((await lifecycle('cancel', 'erin')).status).toBe(500);
    w.store.lie = { 'store.userKey': () => ({ key: null }) };
    const franksAddress = keyOf((franks as { record: SignedRecord }).record).address;
    expect((await lifecycle('activate', 'frank', franksAddress)).status).toBe(500);
    // The user's active key answered as their pending one (a pending key's record says pending, or cancelled).
    w.store.lie = { 'store.pendingUserKey': () => ({ key: erins }) };
    expect((await lifecycle('cancel', 'erin')).status).toBe(500);
    const after = await w.health();
    expect([(after.wallets.requests.error ?? 0) - errors, after.counters.integrityFailures - failures]).toEqual([3, 3]);
    w.store.lie = {};
    // Nothing changed: frank's successor is still pending, erin's key still hers.
    expect([w.store.pendingKey(projectId, subjectOf('frank')), w.store.userKey(projectId, subjectOf('erin'))]).toEqual([franks, erins]);
    expect((await lifecycle('activate', 'frank', franksAddress)).status).toBe(200);
  });

  it('never hands the store a JWT', async () => {
    const jwts = await Promise.all(['rotate', 'activate', 'cancel'].map((a) => jwtFor('gina', a as LifecycleAction)));
    await call('get-address', 'gina');
    const rotated = await w.wallet(projectKey, 'rotate', { jwt_token: jwts[0] as string });
    const address = rotated.body.address as string;
    const statuses = [rotated.status];
    for (const [i, route] of (['activate', 'cancel'] as const).entries())
      statuses.push((await w.wallet(projectKey, route, { jwt_token: jwts[i + 1] as string, address })).status);
    // (Nothing is pending once activated.)
    expect(statuses).toEqual([200, 200, 404]);
    const seen = JSON.stringify(w.store.calls);
    expect(jwts.filter((j) => seen.includes(j.split('.')[1] as string))).toEqual([]);
  });
});
