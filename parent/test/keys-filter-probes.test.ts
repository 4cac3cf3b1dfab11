/**
 * Probes of the list filters, PATCH and Idempotency-Key entries (issue 23's review), kept as regression tests.
 *
 * Stands up real parents against the fake enclave, as keys-find-tidy.test.ts does: SQLite (one instance) and
 * PostgreSQL (two instances on one database, as the application role).
 */
import { newKeyId } from '@nks/shared/identifiers';
import { type Answer } from './http-client';
import { sql } from './shared-store-support';
import { apiOf, engines as keysEngines, unique, stopInstances, stopPostgres, type Instance } from './keys-api-stack';

afterAll(() => stopPostgres(), 30_000);

const engines = keysEngines();

describe.each(engines)('key filter and PATCH probes: $name', ({ name, start }) => {
  let a: Instance;
  let b: Instance;
  let otherProject: string;
  let app: string | undefined;
  beforeAll(async () => {
    ({ a, b, app } = await start());
    const p = await api('admin', '/v1/projects', { body: { name: 'Other', auth: { type: 'token' } } });
    otherProject = p.body.projectId;
  }, 120_000);
  afterAll(async () => {
    await stopInstances(a, b);
  });
  const api = apiOf(() => a);
  const ids = (r: Answer) => (r.body.keys ?? []).map((k: { keyId: string }) => k.keyId);

  it('label filter: no wildcard, no injection; bound token learns nothing of other projects by any filter', async () => {
    const tag = unique('t');
    const ext = unique('x');
    const mine = await api('full', '/v1/keys', { body: { labels: { tag, tier: 'gold' } } });
    const theirs = await api('other', '/v1/keys', { body: { projectId: otherProject, externalId: ext, labels: { tag, tier: 'gold' } } });
    expect([mine.status, theirs.status]).toEqual([201, 201]);
    for (const v of ['%', '_old', 'g%', "gold' OR '1'='1", 'GOLD', 'gold ', '*'])
      expect(ids(await api('full', `/v1/keys?label=tier:${encodeURIComponent(v)}&limit=1000`))).not.toContain(mine.body.keyId);
    expect(ids(await api('full', `/v1/keys?label=${encodeURIComponent("tag' OR 1=1 --")}:x`))).toEqual([]);
    expect((await api('full', `/v1/keys?label=tier:a&label=tag:b`)).status).toBe(400);
    expect(ids(await api('bound', `/v1/keys?label=tag:${tag}`))).toEqual([mine.body.keyId]);
    expect(ids(await api('bound', `/v1/keys?externalId=${ext}`))).toEqual([]);
    expect(ids(await api('bound', `/v1/keys?address=${theirs.body.address}`))).toEqual([]);
    const missing = await api('bound', `/v1/keys/${newKeyId()}`, { method: 'PATCH', body: { labels: {} } });
    const other = await api('bound', `/v1/keys/${theirs.body.keyId}`, { method: 'PATCH', body: { labels: {} } });
    expect([other.status, other.body.error.code]).toEqual([missing.status, missing.body.error.code]);
    expect(other.body.error.message.replace(theirs.body.keyId, 'K')).toEqual(missing.body.error.message.replace(/k_\S+/, 'K'));
    expect((await api('other', `/v1/keys/${theirs.body.keyId}`)).body.labels).toEqual({ tag, tier: 'gold' });
    // A cursor that is not one the service issued, or points anywhere: 400 or a page of reachable keys only.
    expect((await api('bound', `/v1/keys?cursor=${Buffer.from("s1' OR 1=1").toString('base64url')}`)).status).toBe(400);
    const all = await api('bound', `/v1/keys?cursor=${Buffer.from('s0').toString('base64url')}&limit=1000`);
    expect(all.body.keys.every((k: { projectId: string }) => k.projectId === 'default')).toBe(true);
  });

  it('an Idempotency-Key is not remembered for a create that answered an existing external id', async () => {
    const ext = unique('e');
    expect((await api('full', '/v1/keys', { body: { externalId: ext } })).status).toBe(201);
    const k = unique('k');
    const first = await api('create', '/v1/keys', { body: { externalId: ext }, headers: { 'idempotency-key': k } });
    expect([first.status, first.body.created]).toEqual([200, false]);
    const again = await api('create', '/v1/keys', { body: { externalId: ext }, headers: { 'idempotency-key': k } });
    expect([again.status, again.headers['idempotent-replayed'], again.body.address]).toEqual([200, undefined, undefined]);
  });

  (name.startsWith('PostgreSQL') ? it : it.skip)(
    'the application role cannot get around schema 7 (guard, label index, trigger)',
    async () => {
      if (!app) throw new Error('no app URL');
      const k = await api('full', '/v1/keys', { body: { labels: { x: '1' } } });
      const id = k.body.keyId;
      const refused = async (text: string) =>
        expect(sql(app as string, text, [])).rejects.toThrow(/nks: |permission denied|must be owner|can only be called as trigger/);
      await refused(`UPDATE keys SET labels = '{"x":"2"}', disabled = 1 WHERE key_id = '${id}'`);
      // record_prev with labels: the guard puts the old value back (ignored, not stored).
      const prev = async () =>
        (await sql<{ record_prev: string | null }>(app as string, 'SELECT record_prev FROM keys WHERE key_id = $1', [id]))[0]?.record_prev;
      const before = await prev();
      await sql(app, `UPDATE keys SET labels = '{"x":"2"}', record_prev = 'zz' WHERE key_id = $1`, [id]);
      expect(await prev()).toBe(before);
      await refused(`UPDATE keys SET seq = seq + 1000000 WHERE key_id = '${id}'`);
      await refused(`DELETE FROM key_labels`);
      await refused(`UPDATE key_labels SET value = 'y'`);
      await refused(`SELECT nks_keys_labels()`);
      await refused(`ALTER TABLE keys DISABLE TRIGGER keys_guard`);
      await refused(`CREATE OR REPLACE FUNCTION nks_keys_guard() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$`);
      await refused(`DELETE FROM keys WHERE key_id = '${id}'`);
      // Labels alone: allowed (by design), and the index follows.
      await sql(app, `UPDATE keys SET labels = '{"x":"9"}' WHERE key_id = $1`, [id]);
      const byLabel = await api('full', '/v1/keys?label=x:9');
      expect(byLabel.body.keys.map((r: { keyId: string }) => r.keyId)).toEqual([id]);
    },
  );
});
