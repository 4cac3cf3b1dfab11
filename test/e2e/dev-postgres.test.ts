/**
 * `npm run dev -- --instances 2 --database postgres`: the dev stack starts a PostgreSQL of its own (embedded, in a
 * temporary directory) for two parent+enclave pairs, never prints its password, and Ctrl-C stops every process,
 * PostgreSQL included, and removes its data. (test/e2e/scale-out.test.ts drives a stack on a server of its own.)
 */
import fs from 'node:fs';
import path from 'node:path';
import { tempRunDir } from '@nks/shared-test/helpers';
import { processesUsing, startDevStack, type DevStack } from '../support/dev-stack';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('npm run dev -- --instances 2 --database postgres', () => {
  let dev: DevStack | undefined;
  let dir: string;
  afterAll(async () => {
    await dev?.stop().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('runs two pairs on an embedded PostgreSQL without printing its password; Ctrl-C stops it all, PostgreSQL too', async () => {
    dir = tempRunDir('nks-dev-pg-');
    dev = await startDevStack(dir, ['--instances', '2', '--database', 'postgres', '--api-port', '0'], { npm: true });
    const out = dev.output();
    const started = /^dev: PostgreSQL (postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:\d+\/nks) \(pid (\d+)\)/m.exec(out);
    expect(started).not.toBeNull();
    const [, redacted, pid] = started as RegExpExecArray;
    // No URL anywhere in the output with a password other than ***.
    expect(out).not.toMatch(/postgres(ql)?:\/\/[^\s:@/]+:(?!\*\*\*@)[^\s@]+@/);
    const dataDir = /-D\0([^\0]+)\0/.exec(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'))?.[1] as string;
    expect(fs.existsSync(dataDir)).toBe(true);

    expect(dev.instances.map((x) => x.index)).toEqual([0, 1]);
    const devJson = JSON.parse(fs.readFileSync(path.join(dir, 'dev.json'), 'utf8'));
    expect(devJson.database).toEqual({ kind: 'postgres', url: redacted, embedded: true });
    expect(devJson.instances).toHaveLength(2);
    for (const file of [path.join(dir, 'parent.json'), path.join(dir, 'parent-1.json')]) {
      expect(JSON.parse(fs.readFileSync(file, 'utf8')).database).toEqual({ kind: 'postgres', poolSize: 10 });
    }

    // One database: a key made on instance 1 is instance 0's too.
    const made = await dev.api(1, '/v1/keys', { body: { externalId: 'shared' } });
    expect(made.status).toBe(201);
    const listed = await dev.api(0, '/v1/keys?externalId=shared');
    expect(listed.body.keys.map((k: { keyId: string }) => k.keyId)).toEqual([made.body.keyId]);
    expect((await dev.api(0, `/v1/keys/${made.body.keyId}/sign`, { body: { type: 'message', message: 'hi' } })).status).toBe(200);

    expect(await dev.stop()).toBe(0);
    dev = undefined;
    expect(processesUsing(dir)).toEqual([]);
    expect(alive(Number(pid))).toBe(false);
    expect(fs.existsSync(path.dirname(dataDir))).toBe(false);
  }, 300_000);
});
