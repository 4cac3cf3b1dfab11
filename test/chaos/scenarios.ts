/**
 * The chaos scenarios (docs/RELIABILITY.md): each injects one fault into the dev stack under load and removes
 * it, and names its expectations. Two are the suite's own and fail the run in every scenario (runner.ts): no
 * acknowledged write lost, no hung request. The others are per scenario, each `enforced` or only reported
 * (an expectation another change is still making true: set `enforced: true` once it holds).
 */
import net from 'node:net';
import type { Outcome, Request } from './load';
import type { ChaosStack } from './stack';

export interface Profile {
  name: 'short' | 'full';
  /** Load before the fault, the fault's length, and at most how long to wait for recovery after it (ms). */
  beforeMs: number;
  faultMs: number;
  afterMs: number;
  concurrency: number;
  stallMs: number;
  freezeMs: number;
  slowClients: number;
  /** Keys made at the start for cold signs in the KMS scenarios. */
  coldKeys: number;
  /** The KMS faults' length: longer than the SDK's retries (about 8 s), or a retry outlasts the fault. */
  kmsFaultMs: number;
}

export const PROFILES: Record<Profile['name'], Profile> = {
  short: {
    name: 'short',
    beforeMs: 1000,
    faultMs: 3000,
    afterMs: 15_000,
    concurrency: 8,
    stallMs: 6500,
    freezeMs: 6000,
    slowClients: 50,
    coldKeys: 3000,
    kmsFaultMs: 10_000,
  },
  full: {
    name: 'full',
    beforeMs: 3000,
    faultMs: 10_000,
    afterMs: 30_000,
    concurrency: 16,
    stallMs: 12_000,
    freezeMs: 12_000,
    slowClients: 300,
    coldKeys: 15000,
    kmsFaultMs: 20_000,
  },
};

export interface Ctx {
  stack: ChaosStack;
  profile: Profile;
  /** A key made and signed with before the scenarios (cached: warm signs need no disk and no KMS). */
  warmKeyId: string;
  /**
   * Keys made before the scenarios and never signed with: cold in an enclave started after they were made (the
   * kill scenarios restart the stack), so a sign with one unseals it through KMS. Each is used once.
   */
  coldKeys: string[];
  scenario: string;
  /** Notes for the table (what was observed beyond the counts). */
  note(text: string): void;
  /** When the fault was put on and taken off (ms since the epoch), set by the runner. */
  window: { on: number; off: number };
}

export interface Expectation {
  what: string;
  /** false: reported in the table only (being fixed elsewhere); true: fails the run. */
  enforced: boolean;
  holds(outcomes: Outcome[], ctx: Ctx): boolean;
}

export interface Scenario {
  name: string;
  description: string;
  concurrency?: (p: Profile) => number;
  /** The request worker `w` sends as its `n`th. */
  request(ctx: Ctx, w: number, n: number): Request;
  inject(ctx: Ctx): Promise<void>;
  /** Removes the fault; a killed program's stack is started again here. */
  clear(ctx: Ctx): Promise<void>;
  /** The fault's length (default: the profile's faultMs). */
  faultMs?: (p: Profile) => number;
  expectations?: Expectation[];
}

let seq = 0;
const create = (ctx: Ctx): Request => ({
  kind: 'create',
  method: 'POST',
  path: '/v1/keys',
  body: { externalId: `chaos-${ctx.scenario}-${++seq}` },
});
const sign = (ctx: Ctx): Request => ({
  kind: 'sign',
  method: 'POST',
  path: `/v1/keys/${ctx.warmKeyId}/sign`,
  body: { type: 'message', message: `chaos ${++seq}` },
});
/** A sign with a key the enclave has not unsealed since its start (KMS Decrypt), or a warm one when none are left. */
const coldSign = (ctx: Ctx): Request => {
  const keyId = ctx.coldKeys.shift();
  if (!keyId) return sign(ctx);
  return { kind: 'cold-sign', method: 'POST', path: `/v1/keys/${keyId}/sign`, body: { type: 'message', message: `chaos ${++seq}` } };
};
/** Creates, warm signs and cold signs: what KMS faults can reach. */
const kmsMix = (ctx: Ctx, _w: number, n: number) => [create, sign, coldSign][n % 3]?.(ctx) as Request;
const get = (kind: string, path: string): Request => ({ kind, method: 'GET', path, token: false });
const mixed = (ctx: Ctx, _w: number, n: number) => (n % 2 === 0 ? create(ctx) : sign(ctx));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Outcomes of `kind` in flight at some time while the fault was on (sent before its removal, answered after it went on). */
const during = (o: Outcome[], ctx: Ctx, kind?: string) =>
  o.filter((x) => x.at < ctx.window.off && x.end > ctx.window.on && (kind === undefined || x.kind === kind));

const signal = (pid: number, sig: NodeJS.Signals): void => {
  process.kill(pid, sig);
};

/** No answer is a 500: a fault is a fault's code (503/502/504), never INTERNAL. */
const noInternal: Expectation = {
  what: 'no 500 INTERNAL',
  enforced: true,
  holds: (o) => !o.some((x) => x.code === 'INTERNAL' || x.status === 500),
};

export const SCENARIOS: Scenario[] = [
  {
    name: 'parent-kill9',
    description: 'kill -9 of the parent during creates; the one-instance dev stack stops with it and is started again on the same port',
    request: (ctx) => create(ctx),
    inject: async (ctx) => signal(ctx.stack.parentPid(), 'SIGKILL'),
    clear: (ctx) => ctx.stack.restart(),
    faultMs: () => 0,
  },
  {
    name: 'enclave-kill',
    description: 'kill -9 of the enclave during creates and signs; the dev stack stops with it and is started again',
    request: mixed,
    inject: async (ctx) => signal(ctx.stack.enclavePid(), 'SIGKILL'),
    clear: (ctx) => ctx.stack.restart(),
    faultMs: () => 0,
  },
  {
    name: 'enclave-freeze',
    description: 'SIGSTOP of the enclave, SIGCONT after the freeze',
    request: mixed,
    inject: async (ctx) => signal(ctx.stack.enclavePid(), 'SIGSTOP'),
    clear: async (ctx) => signal(ctx.stack.enclavePid(), 'SIGCONT'),
    faultMs: (p) => p.freezeMs,
    expectations: [
      {
        what: 'frozen enclave: requests answered 503 within 5 s (issue 22 item 4)',
        enforced: true,
        holds: (o, ctx) => during(o, ctx).every((x) => x.ms <= 5500),
      },
    ],
  },
  {
    name: 'kms-throttle',
    description: 'the KMS emulator throttles 30% of calls (ThrottlingException)',
    request: kmsMix,
    faultMs: (p) => p.kmsFaultMs,
    inject: async (ctx) => void (await ctx.stack.kmsFaults({ throttleRate: 0.3 })),
    clear: async (ctx) => void (await ctx.stack.kmsFaults({ throttleRate: 0 })),
    expectations: [
      noInternal,
      { what: 'throttling never answered as 504 TIMEOUT (item 6)', enforced: true, holds: (o) => !o.some((x) => x.code === 'TIMEOUT') },
    ],
  },
  {
    name: 'kms-5xx',
    description: 'every KMS call fails with KMSInternalException (HTTP 500)',
    request: kmsMix,
    faultMs: (p) => p.kmsFaultMs,
    inject: async (ctx) => void (await ctx.stack.kmsFaults({ errorRate: 1 })),
    clear: async (ctx) => void (await ctx.stack.kmsFaults({ errorRate: 0 })),
    expectations: [
      noInternal,
      {
        what: 'warm signs keep working without KMS',
        enforced: true,
        holds: (o, ctx) => during(o, ctx, 'sign').every((x) => x.status === 200),
      },
    ],
  },
  {
    name: 'kms-unreachable',
    description:
      "KMS unreachable: the emulator's `unreachable` fault mode if it has one, otherwise the emulator frozen (SIGSTOP: connections accepted, never answered)",
    request: kmsMix,
    faultMs: (p) => p.kmsFaultMs,
    inject: async (ctx) => {
      if ('unreachable' in (await ctx.stack.kmsFaults())) await ctx.stack.kmsFaults({ unreachable: 'reset' });
      else {
        ctx.note('emulator has no unreachable mode: frozen with SIGSTOP');
        signal(ctx.stack.kmsPid(), 'SIGSTOP');
      }
    },
    clear: async (ctx) => {
      if (ctx.stack.kmsPid()) signal(ctx.stack.kmsPid(), 'SIGCONT');
      const state = await ctx.stack.kmsFaults();
      if ('unreachable' in state) await ctx.stack.kmsFaults({ unreachable: 'none' });
    },
    expectations: [
      noInternal,
      {
        what: 'KMS outage answered within 10 s (item 5)',
        enforced: true,
        holds: (o, ctx) => during(o, ctx).every((x) => x.end - x.at <= 10_000),
      },
    ],
  },
  {
    name: 'disk-full',
    description: "the database's writes fail with ENOSPC (disk-fault shim): SQLITE_FULL",
    request: mixed,
    inject: async (ctx) => {
      ctx.stack.faults.full(true);
      await sleep(500);
      const r = await fetch(`${ctx.stack.target().url}/readyz`);
      const body = (await r.json()) as { checks?: { database?: boolean } };
      ctx.note(`/readyz during: ${r.status} database=${String(body.checks?.database)}`);
      readinessWhileFull = r.status === 503 && body.checks?.database === false;
    },
    clear: async (ctx) => ctx.stack.faults.full(false),
    expectations: [
      noInternal,
      {
        what: 'creates refused 503 STORAGE_UNAVAILABLE while full',
        enforced: true,
        holds: (o, ctx) => during(o, ctx, 'create').some((x) => x.code === 'STORAGE_UNAVAILABLE'),
      },
      { what: '/readyz not ready (database false) while full', enforced: true, holds: () => readinessWhileFull },
      {
        what: 'warm signs keep working while full',
        enforced: true,
        holds: (o, ctx) => during(o, ctx, 'sign').every((x) => x.status === 200),
      },
    ],
  },
  {
    name: 'fsync-stall',
    description: "the database's fsync stalls (disk-fault shim) longer than the store's 5 s deadline",
    // /metrics is on the parent's metrics listener, not the caller API.
    request: (ctx, w, n) =>
      [create(ctx), sign(ctx), get('healthz', '/healthz'), get('metrics', `${ctx.stack.metricsUrl()}/metrics`)][(w + n) % 4] as Request,
    inject: async (ctx) => ctx.stack.faults.stallFsync(true),
    clear: async (ctx) => ctx.stack.faults.stallFsync(false),
    faultMs: (p) => p.stallMs,
    expectations: [
      noInternal,
      {
        // /metrics waits up to 1 s for the key counts before showing the last ones (docs/STORAGE.md).
        what: 'warm signs, /healthz and /metrics answer 200 within 2 s during the stall',
        enforced: true,
        holds: (o, ctx) =>
          during(o, ctx)
            .filter((x) => x.kind !== 'create')
            .every((x) => x.status === 200 && x.end - x.at < 2000),
      },
      {
        what: 'creates during the stall: 503 STORAGE_UNAVAILABLE within the deadline (5 s + 1.5 s)',
        enforced: true,
        holds: (o, ctx) => {
          // Sent and answered while the disk stalled.
          const stalled = during(o, ctx, 'create').filter((x) => x.at >= ctx.window.on && x.end < ctx.window.off);
          return stalled.length > 0 && stalled.every((x) => x.code === 'STORAGE_UNAVAILABLE' && x.end - x.at <= 6500);
        },
      },
    ],
  },
  {
    name: 'connections-512',
    description: '512 concurrent keep-alive connections signing',
    concurrency: () => 512,
    request: sign,
    inject: async () => undefined,
    clear: async () => undefined,
    expectations: [
      {
        // Only when the in-flight cap (api.maxInFlight, 1024) is reached: 512 connections alone do not reach it.
        what: 'overload answered fast: OVERLOADED p99 < 5 ms, once the cap is reached (item 7)',
        enforced: false,
        holds: (o) => {
          const refused = o.filter((x) => x.code === 'OVERLOADED');
          return refused.length > 0 && p99(refused) < 5;
        },
      },
    ],
  },
  {
    name: 'slowloris',
    description: 'slow clients trickle request headers (one line a second) while others sign; the server must time them out',
    request: sign,
    // Long enough for the server's headers timeout (10 s) and its check of it (every second: api/server.ts) to show.
    faultMs: (p) => (p.name === 'short' ? 15_000 : 45_000),
    inject: async (ctx) => {
      slow = openSlowClients(ctx.stack.target().url, ctx.profile.slowClients);
    },
    clear: async (ctx) => {
      const s = slow;
      slow = undefined;
      if (!s) return;
      ctx.note(`slow clients closed by the server: ${s.closedByServer()}/${s.count}`);
      slowClosedAll = s.closedByServer() === s.count;
      s.end();
    },
    expectations: [
      {
        what: 'slow clients closed by the server within the attack (item 7: headers timeout)',
        enforced: true,
        holds: () => slowClosedAll,
      },
      {
        what: 'others keep signing: every sign during the attack 200',
        enforced: true,
        holds: (o, ctx) => during(o, ctx, 'sign').every((x) => x.status === 200),
      },
    ],
  },
];

let readinessWhileFull = false;
let slowClosedAll = false;
let slow: ReturnType<typeof openSlowClients> | undefined;

export function p99(o: Outcome[]): number {
  return percentile(
    o.map((x) => x.ms),
    0.99,
  );
}

export function percentile(values: number[], q: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number;
}

/** `count` connections that send a request line and then one header line a second, never finishing. */
function openSlowClients(url: string, count: number) {
  const { hostname, port } = new URL(url);
  let closed = 0;
  let ending = false;
  const sockets = Array.from({ length: count }, (_, i) => {
    const s = net.connect(Number(port), hostname);
    s.on('error', () => undefined);
    s.on('close', () => {
      if (!ending) closed++;
    });
    s.write(`POST /v1/keys HTTP/1.1\r\nHost: ${hostname}\r\n`);
    const timer = setInterval(() => s.writable && s.write(`x-slow-${i}: ${Date.now()}\r\n`), 1000);
    s.on('close', () => clearInterval(timer));
    return { s, timer };
  });
  return {
    count,
    closedByServer: () => closed,
    end() {
      ending = true;
      for (const { s, timer } of sockets) {
        clearInterval(timer);
        s.destroy();
      }
    },
  };
}
