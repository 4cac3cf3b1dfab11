/** The systemd units (parent daemon and enclave) pass `systemd-analyze verify` with no complaint at all. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const dir = path.resolve(__dirname, '../systemd');

describe('systemd units', () => {
  const units = fs.readdirSync(dir).filter((f) => f.endsWith('.service'));

  it('exist', () => {
    expect(units).toEqual(expect.arrayContaining(['nitro-keystore-parent.service', 'nitro-keystore-enclave.service']));
  });

  it.each(units)('%s passes systemd-analyze verify', (unit) => {
    const res = spawnSync('systemd-analyze', ['verify', path.join(dir, unit)], { encoding: 'utf8' });
    if (res.error) throw new Error(`systemd-analyze is needed for this test (apt-get install systemd): ${res.error.message}`);
    expect({ status: res.status, output: `${res.stdout}${res.stderr}`.trim() }).toEqual({ status: 0, output: '' });
  });

  it('runs the parent hardened, as a dedicated user, restarting on failure', () => {
    const text = fs.readFileSync(path.join(dir, 'nitro-keystore-parent.service'), 'utf8');
    for (const line of [
      'User=nitro-keystore',
      'NoNewPrivileges=yes',
      'ProtectSystem=strict',
      'Restart=on-failure',
      'CapabilityBoundingSet=',
      'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_VSOCK',
    ]) {
      expect(text.split('\n')).toContain(line);
    }
  });
});

describe('enclave unit', () => {
  const text = fs.readFileSync(path.join(dir, 'nitro-keystore-enclave.service'), 'utf8').split('\n');

  it('starts through the run script with monitoring, stops through the stop script, restarts on failure', () => {
    expect(text.find((l) => l.startsWith('ExecStart='))).toMatch(/scripts\/run-enclave\.sh .*--monitor/);
    expect(text.find((l) => l.startsWith('ExecStart='))).not.toMatch(/--debug-mode/);
    expect(text.find((l) => l.startsWith('ExecStop='))).toMatch(/scripts\/stop-enclave\.sh/);
    expect(text).toContain('Restart=on-failure');
  });

  it('runs as a dedicated user in group ne, without capabilities, network or other devices', () => {
    for (const line of [
      'User=nitro-keystore-enclave',
      'Group=ne',
      'CapabilityBoundingSet=',
      'NoNewPrivileges=yes',
      'ProtectSystem=strict',
      'ReadWritePaths=/var/log/nitro_enclaves /run/nitro_enclaves',
      'DevicePolicy=closed',
      'DeviceAllow=/dev/nitro_enclaves rw',
      'RestrictAddressFamilies=AF_UNIX AF_VSOCK',
      'IPAddressDeny=any',
      'SystemCallFilter=@system-service',
    ]) {
      expect(text).toContain(line);
    }
    expect(text.filter((l) => l.startsWith('User='))).toEqual(['User=nitro-keystore-enclave']);
  });

  it('comes up after the allocator and the parent (whose KMS proxy the enclave needs)', () => {
    expect(text.find((l) => l.startsWith('After='))).toMatch(/nitro-enclaves-allocator\.service.*nitro-keystore-parent\.service/);
  });
});
