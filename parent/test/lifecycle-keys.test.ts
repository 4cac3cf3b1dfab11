/**
 * The key lifecycle through the caller API (docs/LIFECYCLE.md), over the real processes (enclave bundle on the
 * simulated platform, real SQLite): successor, activate, cancel and history; transitions from the wrong state
 * are 409 KEY_STATE naming the state with nothing changed; one pending successor (SUCCESSOR_EXISTS); an
 * activation stored whole or not at all (a failed write repaired by asking again); the external id answers the
 * active key; a retired or cancelled key never signs again, also after a parent restart; a JWT project's keys
 * refused to operator tokens, and their user's rotate, activate and cancel on the enclave's wallet routes stored
 * by the parent's wallet store.
 */
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { recoverMessageAddress } from 'viem';
import { hex, identityPublicKey, openKeyRecord, recordDigest, type SignedRecord } from '@nks/shared/records';
import { tempRunDir } from '@nks/shared-test/helpers';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import { startStack, waitReady, type Stack, type TokenName } from '../../test/support/stack';
import { createProject, jwtProject, jwtStackOptions, walletApi } from '../../test/support/truewallet';

interface KeyAnswer {
  keyId: string;
  address: `0x${string}`;
  externalId: string | null;
  state: string;
  disabled: boolean;
  predecessor?: string;
  record: SignedRecord;
}

describe('key lifecycle over the caller API', () => {
  let idp: SimulatedIdp;
  let s: Stack;
  let identity: ReturnType<typeof identityPublicKey>;

  beforeAll(async () => {
    idp = await startSimulatedIdp({ audience: 'lifecycle' });
    s = await startStack(tempRunDir('nks-lifecycle-keys-'), { ...jwtStackOptions([idp]), walletsTls: true });
    await waitReady(s);
    identity = identityPublicKey((await s.api(`/v1/identity?nonce=0x${'01'.repeat(16)}`, { token: null })).body.publicKey);
  }, 120_000);
  afterAll(async () => {
    await s?.stop();
    await idp?.close();
  });

  const post = (path: string, token: TokenName = 'admin', body: unknown = {}) => s.api(path, { token, body });
  const create = async (externalId?: string) => {
    const res = await post('/v1/keys', 'full', externalId === undefined ? {} : { externalId });
    expect([res.status, res.body?.error]).toEqual([201, undefined]);
    return res.body as KeyAnswer;
  };
  const successor = async (keyId: string) => {
    const res = await post(`/v1/keys/${keyId}/successor`, 'full');
    expect([res.status, res.body?.error]).toEqual([201, undefined]);
    return res.body as KeyAnswer;
  };
  const get = async (keyId: string) => (await s.api(`/v1/keys/${keyId}`, { token: 'read' })).body as KeyAnswer;
  const sign = (keyId: string, message = 'hello') => post(`/v1/keys/${keyId}/sign`, 'sign', { type: 'message', message });
  const history = async (keyId: string) => {
    const res = await s.api(`/v1/keys/${keyId}/history`, { token: 'read' });
    expect(res.status).toBe(200);
    return (res.body as { keys: Array<Record<string, unknown>> }).keys;
  };
  const byExternalId = async (externalId: string) =>
    ((await s.api(`/v1/keys?externalId=${externalId}`, { token: 'read' })).body as { keys: KeyAnswer[] }).keys.map((k) => k.keyId);
  const expectKeyState = (res: { status: number; body: any }, keyId: string, state: string) => {
    expect([res.status, res.body.error.code, res.body.error.details]).toEqual([409, 'KEY_STATE', { state }]);
    expect(res.body.error.message).toContain(`key ${keyId} is ${state}`);
  };
  const metric = async (pattern: RegExp) => (await s.metrics()).match(pattern)?.[0];
  /** How many lifecycle calls the parent made to the enclave (its RPC latency histogram's counts). */
  const lifecycleCalls = async () =>
    [
      ...(await s.metrics()).matchAll(
        /^nks_enclave_rpc_duration_seconds_count\{method="keys\.(?:successor|activate|cancel)",[^}]*\} (\d+)$/gm,
      ),
    ]
      .map((m) => Number(m[1]))
      .reduce((a, b) => a + b, 0);
  const alice = () => `alice-${randomBytes(4).toString('hex')}`;

  it('makes a successor, activates it (the predecessor retired), and the external id then answers the new key', async () => {
    const externalId = alice();
    const a = await create(externalId);
    const b = await successor(a.keyId);
    const rb = openKeyRecord(b.record, identity).record;
    expect([b.state, b.predecessor, b.externalId, rb.state, rb.predecessor, rb.subject, rb.seq]).toEqual([
      'pending',
      a.keyId,
      externalId,
      'pending',
      a.keyId,
      externalId,
      0,
    ]);
    expect(b.address).not.toBe(a.address);
    // A pending key signs, with its own address; the subject's key is still the first.
    const signed = await sign(b.keyId, 'recovery');
    expect(signed.status).toBe(200);
    expect(await recoverMessageAddress({ message: 'recovery', signature: signed.body.signature })).toBe(b.address);
    expect(await byExternalId(externalId)).toEqual([a.keyId]);
    expect((await post('/v1/keys', 'full', { externalId })).body.keyId).toBe(a.keyId);

    // A second successor while one is pending: nothing made.
    const again = await post(`/v1/keys/${a.keyId}/successor`, 'create');
    expect([again.status, again.body.error.code]).toEqual([409, 'SUCCESSOR_EXISTS']);
    expect((await history(a.keyId)).map((k) => k.keyId)).toEqual([a.keyId, b.keyId]);

    const activated = await post(`/v1/keys/${b.keyId}/activate`);
    expect([activated.status, activated.body.state, activated.body.keyId]).toEqual([200, 'active', b.keyId]);
    const ra = openKeyRecord((await get(a.keyId)).record, identity).record;
    expect([(await get(a.keyId)).state, ra.state, ra.seq, ra.prev]).toEqual([
      'retired',
      'retired',
      1,
      hex(recordDigest(Buffer.from(a.record.record, 'base64'))),
    ]);
    expect(openKeyRecord(activated.body.record, identity).record).toMatchObject({ state: 'active', seq: 1, predecessor: a.keyId });
    expect(await byExternalId(externalId)).toEqual([b.keyId]);
    const existing = await post('/v1/keys', 'full', { externalId });
    expect([existing.status, existing.body.keyId]).toEqual([200, b.keyId]);

    // The retired key never signs again; the active one does.
    const refused = await sign(a.keyId);
    expect([refused.status, refused.body.error.code]).toEqual([409, 'KEY_RETIRED']);
    expect((await sign(b.keyId)).status).toBe(200);

    const h = await history(b.keyId);
    expect(h).toEqual([
      expect.objectContaining({ keyId: a.keyId, address: a.address, state: 'retired', disabled: false, predecessor: null }),
      expect.objectContaining({ keyId: b.keyId, address: b.address, state: 'active', disabled: false, predecessor: a.keyId }),
    ]);
    expect(Object.keys(h[0] as object).sort()).toEqual(['address', 'createdAt', 'disabled', 'keyId', 'predecessor', 'state', 'updatedAt']);
    expect(await history(a.keyId)).toEqual(h);

    // Logged with both keys' record hashes; counted.
    const line = await s.parent.waitForLog((e) => e.msg === 'key activated, its predecessor retired' && e.keyId === b.keyId);
    expect(line).toMatchObject({
      predecessor: a.keyId,
      oldRecordSha256: hex(recordDigest(Buffer.from(b.record.record, 'base64'))),
      newRecordSha256: hex(recordDigest(Buffer.from(activated.body.record.record, 'base64'))),
      predecessorOldRecordSha256: hex(recordDigest(Buffer.from(a.record.record, 'base64'))),
    });
    expect(await metric(/^nks_key_transitions_total\{transition="activate"\} \d+$/m)).toBeDefined();

    // After a parent restart: what was committed, and the retired key still refused.
    await s.restartParent();
    await waitReady(s);
    expect(await history(a.keyId)).toEqual(h);
    expect((await sign(a.keyId)).body.error.code).toBe('KEY_RETIRED');
    expect(await byExternalId(externalId)).toEqual([b.keyId]);
  }, 60_000);

  it('answers 409 KEY_STATE naming the state, and changes nothing, for every transition from the wrong state', async () => {
    const a = await create(alice());
    const b = await successor(a.keyId);
    expectKeyState(await post(`/v1/keys/${a.keyId}/activate`), a.keyId, 'active');
    expectKeyState(await post(`/v1/keys/${a.keyId}/cancel`), a.keyId, 'active');
    expectKeyState(await post(`/v1/keys/${b.keyId}/successor`, 'create'), b.keyId, 'pending');
    expect([(await get(a.keyId)).record, (await get(b.keyId)).record]).toEqual([a.record, b.record]);

    const cancelled = await post(`/v1/keys/${b.keyId}/cancel`);
    expect([cancelled.status, cancelled.body.state]).toEqual([200, 'cancelled']);
    expect((await sign(b.keyId)).body.error.code).toBe('KEY_RETIRED');
    for (const action of ['activate', 'cancel'] as const) expectKeyState(await post(`/v1/keys/${b.keyId}/${action}`), b.keyId, 'cancelled');
    expectKeyState(await post(`/v1/keys/${b.keyId}/successor`, 'create'), b.keyId, 'cancelled');
    expect((await get(b.keyId)).record).toEqual(cancelled.body.record);
    // The subject may have a new successor once the pending one is cancelled; activating it retires a.
    const c = await successor(a.keyId);
    expect((await post(`/v1/keys/${c.keyId}/activate`)).status).toBe(200);
    expectKeyState(await post(`/v1/keys/${a.keyId}/successor`, 'create'), a.keyId, 'retired');
    expectKeyState(await post(`/v1/keys/${c.keyId}/activate`), c.keyId, 'active');
    expect((await history(a.keyId)).map((k) => [k.keyId, k.state])).toEqual([
      [a.keyId, 'retired'],
      [b.keyId, 'cancelled'],
      [c.keyId, 'active'],
    ]);
  }, 60_000);

  it('needs keys:create for a successor and admin to activate or cancel; keys:read for history', async () => {
    const a = await create(alice());
    for (const token of ['read', 'sign'] as const) expect((await post(`/v1/keys/${a.keyId}/successor`, token)).status).toBe(403);
    const b = await successor(a.keyId);
    for (const action of ['activate', 'cancel']) {
      const res = await post(`/v1/keys/${b.keyId}/${action}`, 'full');
      expect([res.status, res.body.error.code]).toEqual([403, 'FORBIDDEN']);
    }
    expect((await s.api(`/v1/keys/${a.keyId}/history`, { token: 'sign' })).status).toBe(403);
    expect((await get(b.keyId)).state).toBe('pending');
    // Unknown keys, and bodies the routes do not take.
    expect((await post('/v1/keys/k_doesnotexist0000000000/activate')).body.error.code).toBe('KEY_NOT_FOUND');
    expect((await s.api('/v1/keys/k_doesnotexist0000000000/history', { token: 'read' })).body.error.code).toBe('KEY_NOT_FOUND');
    expect((await post(`/v1/keys/${b.keyId}/cancel`, 'admin', { now: true })).body.error.code).toBe('INVALID_PARAMS');
    expect((await post(`/v1/keys/${a.keyId}/successor`, 'create', { externalId: 'x' })).body.error.code).toBe('INVALID_PARAMS');
  }, 60_000);

  it('a disabled key`s successor starts disabled (a rotation is not an enable), and is enabled as any key', async () => {
    const a = await create(alice());
    expect((await post(`/v1/keys/${a.keyId}/disable`)).body.disabled).toBe(true);
    const b = await successor(a.keyId);
    expect([b.state, openKeyRecord(b.record, identity).record.disabled, (await get(b.keyId)).disabled]).toEqual(['pending', true, true]);
    const refused = await sign(b.keyId);
    expect([refused.status, refused.body.error.code]).toEqual([409, 'KEY_DISABLED']);
    expect((await post(`/v1/keys/${b.keyId}/enable`)).body.disabled).toBe(false);
    expect((await sign(b.keyId)).status).toBe(200);
  });

  it('a key without subject has no successor, and is its own history', async () => {
    const k = await create();
    const res = await post(`/v1/keys/${k.keyId}/successor`, 'create');
    expect([res.status, res.body.error.code]).toEqual([400, 'INVALID_PARAMS']);
    expect((await history(k.keyId)).map((e) => [e.keyId, e.state, e.predecessor])).toEqual([[k.keyId, 'active', null]]);
  });

  it('stores an activation whole or not at all: the second write fails, both keys stay as they were; asked again, it is stored', async () => {
    const a = await create(alice());
    const b = await successor(a.keyId);
    // Standing where the host is: the database refuses the second write of the transaction (the activated key's).
    const db = new Database(s.dbPath);
    try {
      db.exec(`CREATE TRIGGER fail_activation BEFORE UPDATE ON keys WHEN NEW.key_id = '${b.keyId}'
               BEGIN SELECT RAISE(ABORT, 'disk full'); END;`);
      const res = await post(`/v1/keys/${b.keyId}/activate`);
      expect(res.status).toBe(500);
      expect([(await get(a.keyId)).record, (await get(b.keyId)).record]).toEqual([a.record, b.record]);
      expect(await history(a.keyId)).toEqual([
        expect.objectContaining({ keyId: a.keyId, state: 'active' }),
        expect.objectContaining({ keyId: b.keyId, state: 'pending' }),
      ]);
    } finally {
      db.exec('DROP TRIGGER IF EXISTS fail_activation');
      db.close();
    }
    // The enclave remembers the records it made, so the stored ones are now older than the newest it has seen:
    // the key signs no more with them until the records are stored (docs/LIFECYCLE.md, "Limits").
    expect((await sign(a.keyId)).body.error.code).toBe('KEY_INTEGRITY');
    // The same activate asked again is answered the records made the first time, and stored: repaired, with no
    // enclave restart.
    const activated = await post(`/v1/keys/${b.keyId}/activate`);
    expect([activated.status, activated.body.state, (await get(a.keyId)).state]).toEqual([200, 'active', 'retired']);
    const ra = openKeyRecord((await get(a.keyId)).record, identity).record;
    expect([ra.state, ra.seq, ra.prev]).toEqual(['retired', 1, hex(recordDigest(Buffer.from(a.record.record, 'base64')))]);
    expect(await history(a.keyId)).toEqual([
      expect.objectContaining({ keyId: a.keyId, state: 'retired' }),
      expect.objectContaining({ keyId: b.keyId, state: 'active' }),
    ]);
    expect((await sign(b.keyId)).status).toBe(200);
    expect((await sign(a.keyId)).body.error.code).toBe('KEY_RETIRED');
  }, 90_000);

  it("refuses every lifecycle change of a JWT project's key to operator tokens, before asking the enclave", async () => {
    const project = await createProject(s, jwtProject(idp));
    const got = await walletApi(s, project.projectKey).getAddress(await idp.mint({ sub: 'user-1' }));
    expect(got.status).toBe(200);
    const listed = (await s.api('/v1/keys?limit=1000', { token: 'admin' })).body as { keys: Array<KeyAnswer & { projectId: string }> };
    const key = listed.keys.find((k) => k.projectId === project.projectId) as KeyAnswer;
    expect(key.address).toBe(got.body.address);
    const asked = await lifecycleCalls();
    for (const action of ['successor', 'activate', 'cancel']) {
      const res = await post(`/v1/keys/${key.keyId}/${action}`, 'admin');
      expect([res.status, res.body.error.code]).toEqual([403, 'FORBIDDEN']);
      expect(res.body.error.message).toContain('nks_action');
    }
    // A successor asked with keys:create (below admin): the key does not exist for it, as on the read routes.
    const below = await post(`/v1/keys/${key.keyId}/successor`, 'create');
    expect([below.status, below.body.error.code]).toEqual([404, 'KEY_NOT_FOUND']);
    expect(await lifecycleCalls()).toBe(asked);
    // History: the admin sees it; a token below admin is told the key does not exist.
    expect((await s.api(`/v1/keys/${key.keyId}/history`, { token: 'admin' })).body.keys.map((k: KeyAnswer) => k.keyId)).toEqual([
      key.keyId,
    ]);
    expect((await s.api(`/v1/keys/${key.keyId}/history`, { token: 'read' })).body.error.code).toBe('KEY_NOT_FOUND');
    expect((await get(key.keyId)).keyId).toBeUndefined();
  }, 60_000);

  it("a JWT user's rotate, activate and cancel on the wallet routes are stored by the parent's wallet store", async () => {
    const project = await createProject(s, jwtProject(idp));
    const wallet = walletApi(s, project.projectKey);
    const jwt = (action?: string) => idp.mint({ sub: 'walt', ...(action ? { nks_action: action } : {}) }, { lifetimeS: 60 });
    const lifecycle = async (action: string, token?: string, address?: string) =>
      wallet.post(action, { jwt_token: token ?? (await jwt(action)), ...(address === undefined ? {} : { address }) });
    const a = (await wallet.getAddress(await jwt())).body.address as string;
    const keyIdOf = async (address: string) =>
      ((await s.api('/v1/keys?limit=1000', { token: 'admin' })).body as { keys: KeyAnswer[] }).keys.find((k) => k.address === address)
        ?.keyId as string;
    const states = async () =>
      (
        (await s.api(`/v1/keys/${await keyIdOf(a)}/history`, { token: 'admin' })).body as {
          keys: Array<{ address: string; state: string }>;
        }
      ).keys.map((k) => [k.address, k.state]);

    // An ordinary login token cannot rotate: nothing is made.
    expect((await lifecycle('rotate', await jwt())).status).not.toBe(200);
    expect(await states()).toEqual([[a, 'active']]);

    const rotated = await lifecycle('rotate');
    expect(rotated.status).toBe(200);
    const b = rotated.body.address as string;
    expect(await states()).toEqual([
      [a, 'active'],
      [b, 'pending'],
    ]);
    expect((await s.api(`/v1/keys/${await keyIdOf(b)}`, { token: 'admin' })).body.predecessor).toBe(await keyIdOf(a));
    const twice = await lifecycle('rotate');
    expect([twice.status, twice.body.detail]).toEqual([409, expect.stringContaining('pending key already')]);

    // Activate names the address rotate answered (the one the user registered).
    const activated = await lifecycle('activate', undefined, b);
    expect([activated.status, activated.body.address]).toEqual([200, b]);
    expect(await states()).toEqual([
      [a, 'retired'],
      [b, 'active'],
    ]);
    expect((await wallet.getAddress(await jwt())).body.address).toBe(b);
    await s.parent.waitForLog((e) => e.msg === 'stored the next records of JWT user keys');

    // A user whose key the operator disabled rotates: the successor is stored, disabled as its predecessor.
    const other = walletApi(s, (await createProject(s, jwtProject(idp))).projectKey);
    const dora = (action?: string) => idp.mint({ sub: 'dora', ...(action ? { nks_action: action } : {}) }, { lifetimeS: 60 });
    const d = (await other.getAddress(await dora())).body.address as string;
    expect((await post(`/v1/keys/${await keyIdOf(d)}/disable`)).body.disabled).toBe(true);
    const rotatedOff = await other.post('rotate', { jwt_token: await dora('rotate') });
    expect(rotatedOff.status).toBe(200);
    expect((await s.api(`/v1/keys/${await keyIdOf(rotatedOff.body.address)}`, { token: 'admin' })).body).toMatchObject({
      state: 'pending',
      disabled: true,
    });

    const c = (await lifecycle('rotate')).body.address as string;
    const cancelled = await lifecycle('cancel', undefined, c);
    expect([cancelled.status, cancelled.body.address]).toEqual([200, c]);
    // Stored, so a parent restart changes nothing: the user's key is b.
    await s.restartParent();
    await waitReady(s);
    expect(await states()).toEqual([
      [a, 'retired'],
      [b, 'active'],
      [c, 'cancelled'],
    ]);
    expect((await wallet.getAddress(await jwt())).body.address).toBe(b);
  }, 90_000);
});
