/**
 * Attacks on POST /v1/keys's Idempotency-Key, `mismatch` and the replay path (issue 23's review): a token racing
 * one Idempotency-Key against a victim's external id, an idempotency row the database alone wrote, a create-only
 * token guessing labels, a replay showing what changed since. Real parents against the fake enclave: SQLite (one
 * instance) and PostgreSQL (two instances on one database, as the application role).
 */
import { idempotencyDigest } from '../src/key-registry';
import { sql } from './shared-store-support';
import { apiOf, engines as keysEngines, idem, unique, stopInstances, stopPostgres, type Instance } from './keys-api-stack';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
afterAll(() => stopPostgres(), 30_000);

const engines = keysEngines();

describe.each(engines)('Idempotency-Key and create attacks: $name', ({ name, start }) => {
  let a: Instance;
  let b: Instance;
  let app: string | undefined;
  let otherProject: string;

  beforeAll(async () => {
    ({ a, b, app } = await start());
    const p = await api('admin', '/v1/projects', { body: { name: 'Other', auth: { type: 'token' } } });
    expect(p.status).toBe(201);
    otherProject = p.body.projectId;
  }, 120_000);
  afterAll(async () => {
    await stopInstances(a, b);
  });

  const api = apiOf(() => a);

  /**
   * A create by external id X that joins an in-flight create of X (KeyRegistry.creating) must not be answered that
   * create's insert result unchecked: when the in-flight create carried an Idempotency-Key whose entry another create
   * (same token, same key, another body) committed meanwhile, the insert answers THAT entry's key (`idempotent`).
   * On one instance the two creates of K run one after the other (the second is 422); on two, both reach the store.
   */
  it("answers a create by externalId only with that externalId's key, even when it joins a racing Idempotency-Key create", async () => {
    const X = unique('victim-user');
    const K = unique('attacker-idem');
    // Latency a loaded enclave has anyway: its create of X is slow.
    for (const i of new Set([a, b])) {
      const enclave = i.enclave as unknown as { create: (p: { subject: string | null }) => Promise<unknown> };
      const create = enclave.create.bind(i.enclave);
      enclave.create = async (p) => {
        if (p.subject === X) await sleep(800);
        return create(p);
      };
    }
    // The attacker (`other`, keys:create in default) sends one Idempotency-Key with two bodies at once: one for the
    // victim's external id X, one without. The victim (`full`) creates X meanwhile, a moment later.
    const r2 = api('other', '/v1/keys', { body: { externalId: X }, headers: idem(K), on: b });
    const r1 = api('other', '/v1/keys', { body: { labels: { mine: 'yes' } }, headers: idem(K), on: a });
    await sleep(400);
    const r3 = api('full', '/v1/keys', { body: { externalId: X }, on: b });
    const [one, two, victim] = await Promise.all([r1, r2, r3]);
    // One of the two bodies of K made a key; the other is 422 IDEMPOTENCY_KEY_REUSED.
    expect([one.status, two.status].sort()).toEqual([201, 422]);
    // The victim must be answered X's key (externalId X, its record's subject X), not the attacker's other key.
    expect(victim.status === 201 || victim.status === 200).toBe(true);
    const attackerKey = one.status === 201 ? one.body.keyId : undefined;
    expect({ keyId: victim.body.keyId === attackerKey ? 'the attacker key' : 'another', externalId: victim.body.externalId }).toEqual({
      keyId: 'another',
      externalId: X,
    });
    const found = await api('full', `/v1/keys?externalId=${X}`);
    expect(found.body.keys.map((k: { keyId: string }) => k.keyId)).toEqual([victim.body.keyId]);
  }, 30_000);

  /**
   * A create that joins another's in-flight create of its external id, which then fails, gets its own answer (it
   * creates again), not the other request's error (which may name another project or say what that request did).
   * Both requests go to one instance.
   */
  it("does not answer a joined create's failure to the request that joined it", async () => {
    const X = unique('joined');
    let failed = 0;
    for (const i of new Set([a, b])) {
      const enclave = i.enclave as unknown as { create: (p: { subject: string | null }) => Promise<unknown> };
      const create = enclave.create.bind(i.enclave);
      enclave.create = async (p) => {
        if (p.subject === X && failed++ === 0) {
          await sleep(600);
          throw new Error('the first create of X fails');
        }
        return create(p);
      };
    }
    const first = api('other', '/v1/keys', { body: { externalId: X } });
    await sleep(300);
    const joined = await api('full', '/v1/keys', { body: { externalId: X } });
    expect((await first).status).toBeGreaterThanOrEqual(500);
    expect([joined.status, joined.body.externalId]).toEqual([201, X]);
  }, 30_000);

  /**
   * PostgreSQL (the application role, or a compromised instance, writes `idempotency`): a replay answers only a key
   * its request could have made (its project, its external id as subject, made by a create), never a key the row
   * alone names.
   */
  (name.startsWith('PostgreSQL') ? it : it.skip)(
    "never replays a key of another project or subject than the request's (an idempotency row the database alone wrote)",
    async () => {
      // PostgreSQL only: on SQLite whoever writes the file owns everything anyway.
      if (!app) throw new Error('no application role URL');
      const theirs = await api('other', '/v1/keys', { body: { projectId: otherProject, labels: { owner: 'someone-else' } } });
      const someone = await api('full', '/v1/keys', { body: { externalId: unique('someone') } });
      expect([theirs.status, someone.status]).toEqual([201, 201]);
      for (const keyId of [theirs.body.keyId, someone.body.keyId]) {
        const K = unique('planted');
        const now = Date.now();
        // As the application role (what the parent connects as): no enclave, no record, one INSERT.
        await sql(
          app,
          `INSERT INTO idempotency (scope, idem_key, body_sha256, key_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)`,
          ['token:bound', K, idempotencyDigest({}), keyId, now, now + 3_600_000],
        );
        // The bound token (default only) retries a create of its own with K: refused, not answered that key.
        const res = await api('bound', '/v1/keys', { body: {}, headers: idem(K) });
        expect({ status: res.status, code: res.body.error?.code, keyId: res.body.keyId }).toEqual({
          status: 500,
          code: 'KEY_INTEGRITY',
          keyId: undefined,
        });
      }
    },
  );

  /**
   * `mismatch` is an equality oracle on the whole label map (and
   * on whether a birth attestation exists) for a token that may not read keys: it confirms guesses of labels it is
   * never shown (GET is 404/403 for it).
   */
  it('gives a create-only token no way to test guesses of an existing key’s labels or attestation', async () => {
    const X = unique('user');
    const made = await api('full', '/v1/keys', { body: { externalId: X, labels: { email: 'alice@example.com' } } });
    expect(made.status).toBe(201);
    const guess = async (labels: Record<string, string>, attest?: boolean) =>
      (await api('create', '/v1/keys', { body: { externalId: X, labels, ...(attest === undefined ? {} : { attest }) } })).body;
    const wrong = await guess({ email: 'bob@example.com' });
    const right = await guess({ email: 'alice@example.com' });
    // Same answer whatever the guess: nothing of the labels is learnt.
    expect(right).toEqual(wrong);
    expect(await guess({ email: 'alice@example.com' }, true)).toEqual(await guess({ email: 'alice@example.com' }, false));
  });

  /**
   * A replay to a token without keys:read answers the key as its create did: not its current `disabled` and `state`,
   * which GET refuses it.
   */
  it('replays to a create-only token what its create answered, not what an admin changed since (disabled)', async () => {
    const K = unique('replay-state');
    const made = await api('create', '/v1/keys', { body: {}, headers: idem(K) });
    expect(made.status).toBe(201);
    expect((await api('admin', `/v1/keys/${made.body.keyId}/disable`, { body: {} })).status).toBe(200);
    const again = await api('create', '/v1/keys', { body: {}, headers: idem(K) });
    expect(again.status).toBe(201);
    expect(again.body.disabled).toBe(made.body.disabled);
  });
});
