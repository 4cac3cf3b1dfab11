/**
 * `npm run check:ops` stops before any test when a system tool it needs is missing, naming each missing tool and
 * the Debian packages to install (test/ops/tools-present.js).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { linkTools } from './support/tools';

const { checkTools } = require('./ops/tools-present.js') as { checkTools: (env: NodeJS.ProcessEnv) => void };

describe('check:ops tool check', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nks-ops-tools-'));
  });
  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });
  /** Stand-ins: only their presence on PATH is checked, so the test needs none of the real tools. */
  const standIns = (...tools: string[]) => {
    for (const tool of tools) fs.writeFileSync(path.join(dir, tool), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  };

  it('names every missing tool and its Debian package', () => {
    linkTools(dir, ['sh'], { required: true });
    standIns('bash', 'git');
    expect(() => checkTools({ PATH: dir })).toThrow(
      'npm run check:ops needs shellcheck, systemd-analyze, jq, openssl, not found on PATH. On Debian or Ubuntu: apt-get install shellcheck systemd jq openssl',
    );
  });

  it('passes when every tool is there', () => {
    linkTools(dir, ['sh'], { required: true });
    standIns('bash', 'git', 'shellcheck', 'systemd-analyze', 'jq', 'openssl');
    expect(() => checkTools({ PATH: dir })).not.toThrow();
  });
});
