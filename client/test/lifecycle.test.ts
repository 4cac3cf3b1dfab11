/**
 * The key lifecycle in the SDK (`successor`, `activate`, `cancel`, `history`) and `nks keys
 * successor|activate|history` as a program (dist/cli.js: `npm run build`), against the real stack. The routes'
 * every case is tested in parent/test/lifecycle-keys.test.ts; here what the client sends, reads and prints.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { tempRunDir } from '@nks/shared-test/helpers';
import { startStack, waitReady, type Stack } from '../../test/support/stack';
import { KeystoreApiError, KeystoreClient, type Key } from '../src/sdk';

const CLI = path.resolve(__dirname, '../../dist/cli.js');
jest.setTimeout(120_000);

/** One CLI run (a Node start each: a few per test at most). */
const nks = (args: string[], env: NodeJS.ProcessEnv) =>
  new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, NKS_DEV_DIR: '/nonexistent', ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });

describe('key lifecycle in the SDK and the CLI', () => {
  let s: Stack;
  let admin: KeystoreClient;
  let full: KeystoreClient;

  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-client-lifecycle-'));
    await waitReady(s);
    admin = new KeystoreClient({ url: s.url, token: s.tokens.admin });
    full = new KeystoreClient({ url: s.url, token: s.tokens.full });
  }, 90_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('SDK: successor, cancel, successor, activate, history; errors carry code and state', async () => {
    const { key: a } = await full.createKey({ externalId: 'sdk-alice' });
    const b = await full.successor(a.keyId);
    expect([b.state, b.predecessor, b.externalId]).toEqual(['pending', a.keyId, 'sdk-alice']);
    const exists = (await full.successor(a.keyId).catch((e: unknown) => e)) as KeystoreApiError;
    expect([exists.status, exists.code, exists.retryable]).toEqual([409, 'SUCCESSOR_EXISTS', false]);
    // Activate and cancel need admin.
    expect(((await full.cancel(b.keyId).catch((e: unknown) => e)) as KeystoreApiError).code).toBe('FORBIDDEN');
    expect((await admin.cancel(b.keyId)).state).toBe('cancelled');
    const wrong = (await admin.activate(b.keyId).catch((e: unknown) => e)) as KeystoreApiError;
    expect([wrong.status, wrong.code, wrong.details]).toEqual([409, 'KEY_STATE', { state: 'cancelled' }]);

    const c = await full.successor(a.keyId, { attest: true });
    expect(c.attestation).toEqual(expect.any(String));
    const active: Key = await admin.activate(c.keyId);
    expect([active.keyId, active.state, active.predecessor]).toEqual([c.keyId, 'active', a.keyId]);
    expect((await full.findKeyByExternalId('sdk-alice'))?.keyId).toBe(c.keyId);
    expect((await full.history(c.keyId)).map((k) => [k.keyId, k.state, k.predecessor])).toEqual([
      [a.keyId, 'retired', null],
      [b.keyId, 'cancelled', a.keyId],
      [c.keyId, 'active', a.keyId],
    ]);
    const retired = (await full.signMessage(a.keyId, 'x').catch((e: unknown) => e)) as KeystoreApiError;
    expect(retired.code).toBe('KEY_RETIRED');
  });

  it('CLI: nks keys successor, activate and history print what was done; errors exit 1, usage 2', async () => {
    const { key: a } = await full.createKey({ externalId: 'cli-alice' });
    const env = { NKS_URL: s.url, NKS_TOKEN: s.tokens.admin };
    const made = await nks(['keys', 'successor', a.keyId, '--json'], env);
    expect({ status: made.status, stderr: made.stderr }).toEqual({ status: 0, stderr: '' });
    const b = JSON.parse(made.stdout) as Key;
    expect([b.state, b.predecessor]).toEqual(['pending', a.keyId]);

    const activated = await nks(['keys', 'activate', b.keyId], env);
    expect({ status: activated.status, stderr: activated.stderr }).toEqual({ status: 0, stderr: '' });
    expect(activated.stdout).toContain(`${b.keyId} is active; ${a.keyId} is retired and never signs again`);

    const history = await nks(['keys', 'history', a.keyId], env);
    expect(history.status).toBe(0);
    expect(history.stdout.trim().split('\n')).toEqual([
      '2 key(s), oldest first',
      expect.stringMatching(new RegExp(`^${a.keyId}  ${a.address}  retired  `)),
      expect.stringMatching(new RegExp(`^${b.keyId}  ${b.address}  active  .*  succeeds ${a.keyId}$`)),
    ]);

    const again = await nks(['keys', 'activate', b.keyId, '--bogus'], env);
    expect([again.status, again.stderr]).toEqual([2, expect.stringContaining('--bogus')]);
    const refused = await nks(['keys', 'cancel', b.keyId], env);
    expect([refused.status, refused.stderr]).toEqual([1, expect.stringContaining(`KEY_STATE (HTTP 409): key ${b.keyId} is active`)]);
  });
});
