/**
 * The restore drill (docs/OPERATIONS.md, "Several instances on PostgreSQL"; docs/DEPLOY.md, "8. Backup and
 * disaster recovery"): what a recovery after losing an instance's disk does, end to end on the dev stack. A key is
 * made and signs; the database is backed up online (SQLite's backup API, as `sqlite3 .backup` does, while the stack
 * runs) and the keystore identity's files are kept as docs/OPERATIONS.md, "Identity backup", lists them; the state
 * directory is then lost entirely, a fresh one is restored from those backups alone (plus what AWS keeps: the KMS
 * key, here the emulator's state, and the Nitro hardware, here the simulator's CA), and the restored key signs the
 * same message with the same signature.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { recoverMessageAddress } from 'viem';
import { tempRunDir } from '@nks/shared-test/helpers';
import { startProgram, type Running } from '../support/process';

const READY_WITHIN_MS = 120_000;

async function startDev(dir: string): Promise<{ dev: Running; url: string }> {
  const dev = startProgram('dev', ['--dir', dir, '--api-port', '0'], {}, { keepLines: true });
  const until = Date.now() + READY_WITHIN_MS;
  for (;;) {
    const ready = dev.lines.map((l) => /^READY (http:\/\/\S+)$/.exec(l)).find(Boolean);
    if (ready) return { dev, url: ready[1] as string };
    if (dev.child.exitCode !== null || Date.now() > until) throw new Error(`dev did not reach READY:\n${dev.lines.join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function api(url: string, dir: string, pathname: string, body?: unknown): Promise<{ status: number; body: any }> {
  const token = fs.readFileSync(path.join(dir, 'token'), 'utf8').trim();
  const res = await fetch(`${url}${pathname}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: await res.json() };
}

/** What a backup keeps: the identity's files (docs/OPERATIONS.md, "Identity backup") and the operator's configuration. */
const IDENTITY_AND_CONFIG = ['enclave.json', 'genesis.json', 'measurements.json', 'provision.json', 'key-policy.json', 'token', 'tls'];
/** What AWS keeps whatever happens to the instance: the KMS key (the emulator's state) and the Nitro root (the simulator's CA). */
const AWS = ['kms-state.json', 'nsm'];

describe('restore drill', () => {
  let running: Running | undefined;
  afterEach(async () => {
    await running?.stop('SIGINT');
  });

  it('signs with a key restored from an online database backup and the identity backup onto a fresh state directory', async () => {
    const dir = path.join(tempRunDir('nks-drill-'), 'state');
    const backup = tempRunDir('nks-drill-backup-');
    const message = 'restored and still mine';

    const first = await startDev(dir);
    running = first.dev;
    const made = await api(first.url, dir, '/v1/keys', { externalId: 'drill-user' });
    expect(made.status).toBe(201);
    const before = await api(first.url, dir, `/v1/keys/${made.body.keyId}/sign`, { type: 'message', message });
    expect(before.status).toBe(200);
    // Online, while the stack runs and can write.
    const live = new Database(path.join(dir, 'keys.db'), { readonly: true });
    await live.backup(path.join(backup, 'keys.db'));
    live.close();
    for (const f of [...IDENTITY_AND_CONFIG, ...AWS]) fs.cpSync(path.join(dir, f), path.join(backup, f), { recursive: true });
    await first.dev.stop('SIGINT');
    running = undefined;

    // The disk is gone. A fresh state directory at the same place (a replacement instance), restored from the backups.
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const f of ['keys.db', ...IDENTITY_AND_CONFIG, ...AWS]) fs.cpSync(path.join(backup, f), path.join(dir, f), { recursive: true });

    const restored = await startDev(dir);
    running = restored.dev;
    expect(restored.dev.lines.join('\n')).not.toMatch(/first start: provisioning/); // nothing was made anew
    const found = await api(restored.url, dir, '/v1/keys?externalId=drill-user');
    expect(found.body.keys.map((k: { keyId: string }) => k.keyId)).toEqual([made.body.keyId]);
    const after = await api(restored.url, dir, `/v1/keys/${made.body.keyId}/sign`, { type: 'message', message });
    expect(after.status).toBe(200);
    expect(after.body.signature).toBe(before.body.signature); // RFC 6979: the same key signs the same message alike
    expect(await recoverMessageAddress({ message, signature: after.body.signature })).toBe(made.body.address);
  }, 300_000);
});
