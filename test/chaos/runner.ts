/**
 * Runs one scenario: load, fault on, fault off, load until the stack answers again, then every acknowledged
 * create checked (it exists with its address, and signs for it). The suite's own criteria, in every scenario:
 * 0 acknowledged writes lost and 0 hung requests; each scenario's expectations are checked here too.
 */
import http from 'node:http';
import { recoverMessageAddress } from 'viem';
import { send, startLoad, type Ack, type Outcome } from './load';
import { percentile, type Ctx, type Profile, type Scenario } from './scenarios';
import type { ChaosStack } from './stack';

/** Longer than any deadline of the API (15 s): a request without an answer by then is hung. */
export const CLIENT_TIMEOUT_MS = 20_000;

export interface Row {
  scenario: string;
  requests: number;
  ok: number;
  errors: Record<string, number>;
  p50: number;
  p99: number;
  acked: number;
  lost: number;
  hung: number;
  /** From the fault's removal (a killed program: the kill) to the first success sent after it, ms; null: never. */
  recoverMs: number | null;
  expectations: Array<{ what: string; enforced: boolean; holds: boolean }>;
  notes: string[];
  pass: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The acknowledged keys that no longer exist with their address or no longer sign (after a few tries each). */
export async function lostOf(stack: ChaosStack, acks: Ack[], opts: { sign: boolean } = { sign: true }): Promise<Ack[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const unique = [...new Map(acks.map((a) => [a.keyId, a])).values()];
  const lost: Ack[] = [];
  const check = async (a: Ack): Promise<boolean> => {
    const got = await send(agent, stack.target(), { kind: 'get', method: 'GET', path: `/v1/keys/${a.keyId}` }, CLIENT_TIMEOUT_MS);
    if (got.status !== 200 || got.body?.address !== a.address) return false;
    if (!opts.sign) return true;
    const message = `verify ${a.keyId}`;
    const body = { type: 'message', message };
    const signed = await send(
      agent,
      stack.target(),
      { kind: 'sign', method: 'POST', path: `/v1/keys/${a.keyId}/sign`, body },
      CLIENT_TIMEOUT_MS,
    );
    return signed.status === 200 && (await recoverMessageAddress({ message, signature: signed.body.signature })) === a.address;
  };
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < unique.length) {
        const a = unique[next++] as Ack;
        let ok = false;
        for (let attempt = 0; attempt < 5 && !ok; attempt++) {
          ok = await check(a).catch(() => false);
          if (!ok) await sleep(200 * (attempt + 1));
        }
        if (!ok) lost.push(a);
      }
    }),
  );
  agent.destroy();
  return lost;
}

/** Per kind of request in flight while the fault was on: how many succeeded, and the slowest answer. */
function duringNote(outcomes: Outcome[], ctx: Ctx): string {
  const kinds = new Map<string, Outcome[]>();
  for (const o of outcomes) if (o.at < ctx.window.off && o.end > ctx.window.on) kinds.set(o.kind, [...(kinds.get(o.kind) ?? []), o]);
  const parts = [...kinds].map(
    ([k, os]) =>
      `${k} ${os.filter((o) => o.status >= 200 && o.status < 300).length}/${os.length} ok (max ${Math.max(...os.map((o) => o.ms))} ms)`,
  );
  return `during the fault: ${parts.join(', ') || 'nothing sent'}`;
}

export async function runScenario(
  stack: ChaosStack,
  scenario: Scenario,
  profile: Profile,
  keys: { warm: string; cold: string[] },
): Promise<{ row: Row; acks: Ack[] }> {
  const notes: string[] = [];
  const ctx: Ctx = {
    stack,
    profile,
    warmKeyId: keys.warm,
    coldKeys: keys.cold,
    scenario: scenario.name,
    note: (t) => notes.push(t),
    window: { on: 0, off: 0 },
  };
  const load = startLoad({
    target: () => stack.target(),
    concurrency: scenario.concurrency?.(profile) ?? profile.concurrency,
    next: (w, n) => scenario.request(ctx, w, n),
    clientTimeoutMs: CLIENT_TIMEOUT_MS,
  });
  await sleep(profile.beforeMs);
  ctx.window.on = Date.now();
  // A fault that cannot be put on or taken off is a failed scenario, not the end of the run.
  let broken: string | undefined;
  await scenario.inject(ctx).catch((err: unknown) => (broken = `inject failed: ${(err as Error).message}`));
  await sleep(scenario.faultMs?.(profile) ?? profile.faultMs);
  const off = Date.now();
  await scenario.clear(ctx).catch((err: unknown) => (broken ??= `clear failed: ${(err as Error).message}`));
  ctx.window.off = Date.now();
  if (broken) notes.push(broken);
  const window = { ...ctx.window };
  // Load goes on until a request sent after the fault's removal succeeds (and at least a second), at most afterMs.
  const recovered = () => load.outcomes.find((o) => o.at >= off && o.status >= 200 && o.status < 300);
  const until = Date.now() + profile.afterMs;
  while (Date.now() < until && !(recovered() && Date.now() - ctx.window.off > 1000)) await sleep(50);
  await load.stop();
  const lost = await lostOf(stack, load.acks);

  const outcomes: Outcome[] = load.outcomes;
  const errors: Record<string, number> = {};
  for (const o of outcomes)
    if (o.status < 200 || o.status >= 300) errors[o.code ?? String(o.status)] = (errors[o.code ?? String(o.status)] ?? 0) + 1;
  const first = recovered();
  notes.unshift(duringNote(outcomes, { ...ctx, window }));
  const expectations = (scenario.expectations ?? []).map((e) => ({ what: e.what, enforced: e.enforced, holds: e.holds(outcomes, ctx) }));
  const hung = outcomes.filter((o) => o.code === 'HUNG').length;
  const row: Row = {
    scenario: scenario.name,
    requests: outcomes.length,
    ok: outcomes.filter((o) => o.status >= 200 && o.status < 300).length,
    errors,
    p50: percentile(
      outcomes.map((o) => o.ms),
      0.5,
    ),
    p99: percentile(
      outcomes.map((o) => o.ms),
      0.99,
    ),
    acked: new Set(load.acks.map((a) => a.keyId)).size,
    lost: lost.length,
    hung,
    recoverMs: first ? first.end - off : null,
    expectations,
    notes,
    pass: !broken && lost.length === 0 && hung === 0 && expectations.every((e) => e.holds || !e.enforced),
  };
  if (lost.length > 0)
    notes.push(
      `lost: ${lost
        .slice(0, 5)
        .map((a) => a.keyId)
        .join(', ')}${lost.length > 5 ? ', …' : ''}`,
    );
  return { row, acks: load.acks };
}

/** `count` keys made (8 at a time) and never signed with: cold once the enclave has restarted. */
export async function coldKeys(stack: ChaosStack, count: number): Promise<string[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const made: string[] = [];
  let n = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (n < count) {
        const r = await send(
          agent,
          stack.target(),
          { kind: 'create', method: 'POST', path: '/v1/keys', body: { externalId: `chaos-cold-${n++}` } },
          CLIENT_TIMEOUT_MS,
        );
        if (r.status === 201 || r.status === 200) made.push(r.body.keyId as string);
      }
    }),
  );
  agent.destroy();
  return made;
}

/** Makes a key and signs once with it, so that signs with it are warm (cached key, unsealed in the enclave). */
export async function warmKey(stack: ChaosStack): Promise<string> {
  const agent = new http.Agent({ keepAlive: false });
  const made = await send(
    agent,
    stack.target(),
    { kind: 'create', method: 'POST', path: '/v1/keys', body: { externalId: 'chaos-warm' } },
    CLIENT_TIMEOUT_MS,
  );
  if (made.status !== 201 && made.status !== 200) throw new Error(`cannot make the warm key: ${made.status} ${made.code}`);
  const keyId = made.body.keyId as string;
  const signed = await send(
    agent,
    stack.target(),
    { kind: 'sign', method: 'POST', path: `/v1/keys/${keyId}/sign`, body: { type: 'message', message: 'warm' } },
    CLIENT_TIMEOUT_MS,
  );
  if (signed.status !== 200) throw new Error(`cannot sign with the warm key: ${signed.status} ${signed.code}`);
  return keyId;
}
