/** The parent's systemd unit passes `systemd-analyze verify` with no complaint at all. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const dir = path.resolve(__dirname, '../systemd');

describe('systemd units', () => {
  const units = fs.readdirSync(dir).filter((f) => f.endsWith('.service'));

  it('exist', () => {
    expect(units).toContain('nitro-keystore-parent.service');
  });

  it.each(units)('%s passes systemd-analyze verify', (unit) => {
    const res = spawnSync('systemd-analyze', ['verify', path.join(dir, unit)], { encoding: 'utf8' });
    if (res.error) throw new Error(`systemd-analyze is needed for this test (apt-get install systemd): ${res.error.message}`);
    expect({ status: res.status, output: `${res.stdout}${res.stderr}`.trim() }).toEqual({ status: 0, output: '' });
  });

  it('runs the parent hardened, as a dedicated user, restarting on failure', () => {
    const text = fs.readFileSync(path.join(dir, 'nitro-keystore-parent.service'), 'utf8');
    for (const line of ['User=nitro-keystore', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'Restart=on-failure', 'CapabilityBoundingSet=', 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_VSOCK']) {
      expect(text.split('\n')).toContain(line);
    }
  });
});
