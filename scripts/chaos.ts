/**
 * `npm run chaos [-- --profile short|full] [--json] [--only a,b]`: the dev stack under faults (docs/RELIABILITY.md).
 * Starts one dev stack (dist/dev.js, temp state directory, `--api-port 0`, the disk-fault shim built with `cc`),
 * runs each scenario of test/chaos/scenarios.ts under a bounded load, and prints one table (or, with --json, one
 * JSON document). Exits 1 if any scenario lost an acknowledged write, had a hung request or missed an enforced
 * expectation; 2 on a usage error.
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { table } from '../test/chaos/report';
import { coldKeys, lostOf, runScenario, warmKey, type Row } from '../test/chaos/runner';
import { PROFILES, SCENARIOS, type Profile } from '../test/chaos/scenarios';
import { startChaosStack } from '../test/chaos/stack';
import type { Ack } from '../test/chaos/load';

const USAGE = `usage: chaos [--profile short|full] [--json] [--only ${SCENARIOS.map((s) => s.name).join(',')}]`;

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: { profile: { type: 'string', default: 'short' }, json: { type: 'boolean' }, only: { type: 'string' } },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const profile = PROFILES[values.profile as Profile['name']] as Profile | undefined;
  const only = values.only?.split(',');
  const unknown = (only ?? []).filter((n) => !SCENARIOS.some((s) => s.name === n));
  if (!profile || unknown.length > 0) {
    process.stderr.write(`${profile ? `unknown scenario(s): ${unknown.join(', ')}` : `unknown profile: ${values.profile}`}\n${USAGE}\n`);
    return 2;
  }
  const log = (line: string) => process.stderr.write(`chaos: ${line}\n`);
  const started = Date.now();
  log(`profile ${profile.name}: starting the dev stack`);
  const stack = await startChaosStack();
  const rows: Row[] = [];
  const acks: Ack[] = [];
  try {
    const warm = await warmKey(stack);
    // Cold after the kill scenarios' restarts: the KMS scenarios' cold signs unseal them through KMS.
    const cold = await coldKeys(stack, profile.coldKeys);
    for (const scenario of SCENARIOS.filter((s) => !only || only.includes(s.name))) {
      log(`${scenario.name}: ${scenario.description}`);
      const t = Date.now();
      const { row, acks: made } = await runScenario(stack, scenario, profile, { warm, cold });
      rows.push(row);
      acks.push(...made);
      log(`${scenario.name}: ${row.pass ? 'PASS' : 'FAIL'} (${((Date.now() - t) / 1000).toFixed(1)} s)`);
    }
    // Every scenario's acknowledged keys again, at the end: a later fault must not have lost an earlier write.
    const lost = await lostOf(stack, acks, { sign: false });
    rows.push({
      scenario: 'all (end)',
      requests: 0,
      ok: 0,
      errors: {},
      p50: 0,
      p99: 0,
      acked: new Set(acks.map((a) => a.keyId)).size,
      lost: lost.length,
      hung: 0,
      recoverMs: 0,
      expectations: [],
      notes: ['every acknowledged key of every scenario read back at the end'],
      pass: lost.length === 0,
    });
  } finally {
    await stack.stop();
  }
  const machine = `${os.cpus().length} × ${os.cpus()[0]?.model.trim() ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.platform()} ${os.release()}, node ${process.version}`;
  const seconds = Math.round((Date.now() - started) / 1000);
  const pass = rows.every((r) => r.pass);
  if (values.json)
    process.stdout.write(
      `${JSON.stringify({ profile: profile.name, date: new Date().toISOString(), machine, seconds, pass, rows }, null, 2)}\n`,
    );
  else
    process.stdout.write(
      `${table(rows)}\n\nprofile ${profile.name}, ${new Date().toISOString()}, ${machine}, ${seconds} s: ${pass ? 'PASS' : 'FAIL'}\n`,
    );
  return pass ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`chaos: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
