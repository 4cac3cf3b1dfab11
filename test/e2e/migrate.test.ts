/**
 * `parent migrate` end to end (docs/OPERATIONS.md, "Migration"): a database as 0.3 left it (schema version 1,
 * version 1 blobs sealed to the platform's KMS key), the real enclave bundle as the migration image, the
 * migrate command as the operator runs it; then the normal image and the parent daemon, which sign with every
 * migrated key (the signatures recover to the addresses 0.3 made), keep a key that was disabled disabled, and
 * refuse a database row altered afterwards before the enclave is asked.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { recoverMessageAddress } from 'viem';
import { decodeBlobBase64 } from '@nks/shared/blob';
import { identityPublicKey, openKeyRecord } from '@nks/shared/records';
import { tempRunDir } from '@nks/shared-test/helpers';
import { legacyKey, writeLegacyDatabase, type LegacyKey } from '../support/legacy';
import { enclaveConfigFor, startPlatform, writeJson, type Platform } from '../support/platform';
import { startProgram, type Running } from '../support/process';
import { PARENT_AWS_ENV, parentConfigFor, stackDbPath, startStack, waitReady, type Stack } from '../support/stack';
import { dropGuards } from '../support/tamper';

describe('parent migrate', () => {
  let runDir: string;
  let platform: Platform;
  let stack: Stack | undefined;
  const running: Running[] = [];
  let keys: LegacyKey[];
  let parentConfig: string;
  let migrationConfig: string;
  let normalConfig: string;

  const run = (name: string, args: string[], env: NodeJS.ProcessEnv = {}) => {
    const p = startProgram(name, args, env);
    running.push(p);
    return p;
  };

  /** The migrate command against an enclave started with `enclaveConfig`; its exit code, summary and output. */
  const migrate = async (enclaveConfig: string, extra: string[] = []) => {
    // The command first: the migration image unseals its identity through the command's KMS proxy.
    const cmd = run('parent', ['migrate', '--config', parentConfig, '--concurrency', '2', ...extra], PARENT_AWS_ENV);
    const enclave = run('enclave', ['--config', enclaveConfig]);
    try {
      const code = await cmd.exited;
      const summary = cmd.lines.flatMap((l) => {
        try {
          const j = JSON.parse(l) as Record<string, unknown>;
          return 'total' in j && !('msg' in j) && !('progress' in j) ? [j] : [];
        } catch {
          return [];
        }
      })[0];
      return { code, summary, output: cmd.lines.join('\n') };
    } finally {
      await enclave.stop();
    }
  };

  beforeAll(async () => {
    runDir = tempRunDir('nks-migrate-');
    platform = await startPlatform(runDir);
    keys = [
      legacyKey('k_alice', platform, { externalId: 'alice' }),
      legacyKey('k_bob', platform, { externalId: 'bob', disabled: true }),
      legacyKey('k_plain1', platform),
      legacyKey('k_plain2', platform),
      legacyKey('k_plain3', platform),
    ];
    writeLegacyDatabase(stackDbPath(runDir), keys);
    parentConfig = writeJson(path.join(runDir, 'migrate-parent.json'), parentConfigFor(platform, runDir));
    migrationConfig = writeJson(path.join(runDir, 'enclave-migration.json'), enclaveConfigFor(platform, runDir, { mode: 'migration' }));
    normalConfig = writeJson(path.join(runDir, 'enclave-normal.json'), enclaveConfigFor(platform, runDir));
  }, 60_000);

  afterAll(async () => {
    await Promise.all(running.map((p) => p.stop()));
    if (stack) await stack.stop();
    else {
      await platform?.stop();
      fs.rmSync(runDir, { recursive: true, force: true });
    }
  });

  it('says how many keys are left, without an enclave', async () => {
    const p = run('parent', ['migrate', '--pending', '--config', parentConfig]);
    expect(await p.exited).toBe(0);
    expect(JSON.parse(p.lines.find((l) => l.startsWith('{"keysWithoutRecord"')) as string)).toEqual({ keysWithoutRecord: 5 });
  });

  it('refuses to run against a normal image, and changes nothing', async () => {
    const { code, output } = await migrate(normalConfig);
    expect(code).toBe(1);
    expect(output).toMatch(/the enclave is not running the migration image \(its mode is normal\)/);
    const db = new Database(stackDbPath(runDir), { readonly: true });
    expect((db.prepare('SELECT COUNT(*) AS n FROM keys WHERE record IS NULL').get() as { n: number }).n).toBe(5);
    db.close();
  }, 60_000);

  it('re-seals every key with the migration image, one transaction per key, and is idempotent', async () => {
    const first = await migrate(migrationConfig);
    expect({ code: first.code, summary: first.summary }).toEqual({ code: 0, summary: { total: 5, migrated: 5, failed: 0, remaining: 0 } });
    expect(first.output).toMatch(/"msg":"migrating keys made before 0.4"/);
    expect(first.output).toMatch(/"msg":"migration finished"/);
    // Its steps and a count of the keys, as plain lines on stderr (piped here: no bar redrawn in place).
    expect(first.output).toMatch(/^\[1\/3\] waiting for the migration image/m);
    expect(first.output).toMatch(/^\[3\/3\] migrating 5 key\(s\) made before 0\.4…$/m);
    expect(first.output).toMatch(/^ {2}keys \[-+\] 0\/5$/m);
    expect(first.output).toMatch(/^ {2}keys \[#+\] 5\/5 \(5 migrated, 0 failed, 0 left\)$/m);
    expect(first.output).not.toMatch(/\r|\u001b/);

    const identity = identityPublicKey(platform.identity.publicKey);
    const db = new Database(stackDbPath(runDir), { readonly: true });
    for (const k of keys) {
      const row = db.prepare('SELECT blob, record, record_signature FROM keys WHERE key_id = ?').get(k.keyId) as {
        blob: string;
        record: string;
        record_signature: string;
      };
      const blob = decodeBlobBase64(row.blob);
      expect(blob).toMatchObject({ v: 2, kind: 'key', keyId: k.keyId, address: k.address, projectId: 'default', subject: k.externalId });
      const { record } = openKeyRecord({ record: row.record, signature: row.record_signature }, identity);
      expect(record).toMatchObject({
        keyId: k.keyId,
        address: k.address,
        subject: k.externalId,
        seq: 0,
        origin: 'migrated',
        disabled: false,
      });
    }
    db.close();

    // Again: nothing left, nothing changed.
    const again = await migrate(migrationConfig);
    expect({ code: again.code, summary: again.summary }).toEqual({ code: 0, summary: { total: 0, migrated: 0, failed: 0, remaining: 0 } });
    expect(again.output).toMatch(/"msg":"no key to migrate"/);

    // A key still left from 0.3 (an interrupted run, or one restored from a backup) is picked up by the next run.
    const late = legacyKey('k_late', platform, { externalId: 'late' });
    writeLegacyDatabase(stackDbPath(runDir), [late]);
    keys.push(late);
    const third = await migrate(migrationConfig, ['--json']);
    expect({ code: third.code, summary: third.summary }).toEqual({ code: 0, summary: { total: 1, migrated: 1, failed: 0, remaining: 0 } });
    // --json: the progress as JSON lines, the count last.
    const progress = third.output
      .split('\n')
      .filter((l) => l.startsWith('{"source":"migrate"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(progress.filter((j) => j.progress === 'step').map((j) => j.step)).toEqual([1, 2, 3]);
    expect(progress[progress.length - 1]).toEqual({
      source: 'migrate',
      progress: 'count',
      step: 3,
      label: 'keys',
      done: 1,
      total: 1,
      finished: true,
      note: '1 migrated, 0 failed, 0 left',
    });
    expect(third.output).not.toMatch(/^\[\d\/3\]/m);
  }, 120_000);

  it('then the normal image signs with every migrated key, keeps the disabled one disabled, and refuses an altered row', async () => {
    stack = await startStack(runDir, { platform });
    await waitReady(stack);
    const s = stack;
    for (const k of keys.filter((k) => !k.disabled)) {
      const res = await s.api(`/v1/keys/${k.keyId}/sign`, { body: { type: 'message', message: `migrated ${k.keyId}` } });
      expect([k.keyId, res.status]).toEqual([k.keyId, 200]);
      expect(await recoverMessageAddress({ message: `migrated ${k.keyId}`, signature: res.body.signature })).toBe(k.address);
      const view = (await s.api(`/v1/keys/${k.keyId}`)).body;
      expect(view).toMatchObject({
        keyId: k.keyId,
        address: k.address,
        externalId: k.externalId,
        projectId: 'default',
        state: 'active',
        disabled: false,
      });
    }
    // bob was disabled in 0.3: the parent had the enclave record it at start.
    const identity = identityPublicKey(platform.identity.publicKey);
    let bob = (await s.api('/v1/keys/k_bob')).body;
    for (let i = 0; i < 100 && bob.record && openKeyRecord(bob.record, identity).record.seq === 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      bob = (await s.api('/v1/keys/k_bob')).body;
    }
    expect(bob.disabled).toBe(true);
    expect(openKeyRecord(bob.record, identity).record).toMatchObject({ seq: 1, disabled: true, origin: 'migrated' });
    expect((await s.api('/v1/keys/k_bob/sign', { body: { type: 'message', message: 'no' } })).body.error.code).toBe('KEY_DISABLED');
    const enabled = await s.api('/v1/keys/k_bob/enable', { method: 'POST', token: 'admin' });
    expect(openKeyRecord(enabled.body.record, identity).record).toMatchObject({ seq: 2, disabled: false });
    const bobSig = await s.api('/v1/keys/k_bob/sign', { body: { type: 'message', message: 'yes' } });
    expect(await recoverMessageAddress({ message: 'yes', signature: bobSig.body.signature })).toBe(keys[1]?.address);

    // An altered row (alice's record given to plain1) is refused by the parent: the enclave signs nothing and
    // counts no integrity failure, because it is never asked.
    const counters = async () => {
      const text = await s.metrics();
      const of = (name: string) => Number(new RegExp(`nks_enclave_counter\\{counter="${name}"\\} (\\d+)`).exec(text)?.[1]);
      return { signs: of('signs'), integrityFailures: of('integrityFailures') };
    };
    const db = new Database(s.dbPath);
    dropGuards(db);
    // (The record only: its subject column copied too would collide with alice's row in the index of one active
    // key per project and subject, which the database enforces.)
    const alice = db.prepare("SELECT record, record_signature FROM keys WHERE key_id = 'k_alice'").get() as Record<string, string>;
    db.prepare("UPDATE keys SET record = ?, record_signature = ? WHERE key_id = 'k_plain1'").run(alice.record, alice.record_signature);
    db.close();
    await s.restartParent(); // a new parent reads the row from the database (the old one had it cached)
    await waitReady(s);
    const before = await counters();
    const refused = await s.api('/v1/keys/k_plain1/sign', { body: { type: 'message', message: 'altered' } });
    expect([refused.status, refused.body.error.code]).toEqual([500, 'KEY_INTEGRITY']);
    expect(await counters()).toEqual(before);
    expect((await s.api('/v1/keys/k_alice/sign', { body: { type: 'message', message: 'fine' } })).status).toBe(200);
  }, 120_000);
});
