/** A PATH of chosen host tools, for tests that run the operations scripts (scripts/*.sh) with nothing else. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** What approve-image.sh, run-enclave.sh and the other scripts may call; no docker, no aws. */
export const OPS_SCRIPT_TOOLS = [
  'bash',
  'env',
  'dirname',
  'cat',
  'grep',
  'mktemp',
  'rm',
  'cp',
  'mkdir',
  'awk',
  'sleep',
  'git',
  'node',
  'jq',
] as const;

/** Links each tool found on this machine's PATH into `bin`; with `required`, a missing one fails the test. */
export function linkTools(bin: string, tools: readonly string[], { required = false } = {}): void {
  fs.mkdirSync(bin, { recursive: true });
  for (const tool of tools) {
    const found = spawnSync('bash', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
    if (found) fs.symlinkSync(found, path.join(bin, tool));
    else if (required) throw new Error(`${tool} is needed for this test`);
  }
}
