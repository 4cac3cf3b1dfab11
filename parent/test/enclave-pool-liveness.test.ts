/**
 * The enclave pool's liveness probe and bounded queue (issue 22, items 4 and 7), in-process against a raw peer
 * on the simulated transport that stands for the enclave: it answers hello and health, holds `keys.sign` while
 * told to (a slow request), and can freeze (read and answer nothing, as a SIGSTOPped process). The real
 * processes are in enclave-liveness.test.ts.
 */
import fs from 'node:fs';
import { FramedConnection } from '@nks/shared/rpc';
import { SimulatedVsockTransport, type Listener } from '@nks/shared/transport';
import { EnclavePool } from '../src/enclave-link/pool';
import { ConfigError, parseParentConfig, PARENT_CONFIG_DEFAULTS } from '../src/config';
import { captureLogger, rejection, tempRunDir, waitFor } from '@nks/shared-test/helpers';

const ADDRESS = 'vsock://16:5100';
type Msg = { id: number; method: string };

describe('EnclavePool liveness and queue', () => {
  let runDir: string;
  let transport: SimulatedVsockTransport;
  let listener: Listener;
  let pool: EnclavePool | undefined;
  let accepted = 0;
  let frozen = false;
  let holdSigns = false;
  /** Requests read while frozen, answered on thaw (as a process that is stopped, then continued). */
  let backlog: Array<() => void> = [];
  let heldSigns: Array<() => void> = [];
  const seen: Record<string, number> = {};

  beforeEach(async () => {
    runDir = tempRunDir('nks-pool-live-');
    transport = new SimulatedVsockTransport(runDir);
    accepted = 0;
    frozen = holdSigns = false;
    backlog = [];
    heldSigns = [];
    for (const k of Object.keys(seen)) delete seen[k];
    listener = await transport.listen(ADDRESS, (raw) => {
      accepted += 1;
      const framed: FramedConnection = new FramedConnection(raw, {
        message: (m) => {
          const msg = m as Msg;
          const answer = () => {
            seen[msg.method] = (seen[msg.method] ?? 0) + 1;
            const reply = () =>
              framed.send({ jsonrpc: '2.0', id: msg.id, result: msg.method === 'enclave.hello' ? { protocolVersion: 3 } : {} });
            if (msg.method === 'keys.sign' && holdSigns) heldSigns.push(reply);
            else reply();
          };
          if (frozen) backlog.push(answer);
          else answer();
        },
        close: () => undefined,
      });
    });
  });
  afterEach(async () => {
    for (const r of [...backlog.splice(0), ...heldSigns.splice(0)]) r();
    await pool?.close();
    pool = undefined;
    await listener.close();
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  const thaw = () => {
    frozen = false;
    for (const r of backlog.splice(0)) r();
  };

  const makePool = (extra: Partial<ConstructorParameters<typeof EnclavePool>[0]> = {}) => {
    const events = { states: [] as boolean[], misses: 0, queueFull: 0 };
    const log = captureLogger('info');
    pool = new EnclavePool({
      transport,
      address: ADDRESS,
      size: 1,
      logger: log.logger,
      connectTimeoutMs: 2000,
      deadlineMs: 30_000,
      maxInFlightPerConnection: 2048,
      liveness: { intervalMs: 50, timeoutMs: 50, misses: 3 },
      onStateChange: (up) => events.states.push(up),
      onPingMiss: () => (events.misses += 1),
      onQueueFull: () => (events.queueFull += 1),
      ...extra,
    });
    pool.start();
    return { pool, events, log };
  };
  const sign = (p: EnclavePool) => p.call('keys.sign', {} as never);

  it('marks a frozen enclave down, fails the calls waiting on it at once, and takes it back on its first answer', async () => {
    const { pool: p, events, log } = makePool();
    await waitFor(() => p.up, 5000, 'the pool up');
    frozen = true;
    const started = Date.now();
    const waiting = rejection(sign(p)); // sent to the frozen enclave: would wait its 30 s deadline
    await waitFor(() => !p.up, 5000, 'the frozen enclave marked down');
    const err = await waiting;
    expect([err.code, err.message]).toEqual(['UNAVAILABLE', expect.stringContaining('liveness probes')]);
    expect(Date.now() - started).toBeLessThan(5000); // well before the deadline
    expect(events.misses).toBeGreaterThanOrEqual(3);
    expect(events.states.at(-1)).toBe(false);
    // New calls fail at once, nothing sent.
    const newCall = await rejection(sign(p));
    expect([newCall.code, newCall.message]).toEqual(['UNAVAILABLE', expect.stringContaining('does not answer')]);
    expect(log.lines().some((l) => String(l.msg).includes('did not answer 3 liveness probes in a row'))).toBe(true);

    thaw(); // SIGCONT: the enclave answers what it read, probes included
    await waitFor(() => p.up, 5000, 'the enclave back in use');
    expect(events.states.at(-1)).toBe(true);
    expect(await sign(p)).toEqual({});
    expect(accepted).toBe(1); // the same connection: no new handshake
    expect(seen['enclave.hello']).toBe(1);
  });

  it('does not mark down an enclave that is busy with slow requests but answers its probes', async () => {
    const { pool: p, events } = makePool();
    await waitFor(() => p.up, 5000, 'the pool up');
    holdSigns = true;
    const slow = Array.from({ length: 20 }, () => sign(p));
    await waitFor(() => heldSigns.length === 20, 5000, 'twenty slow signs');
    const probesBefore = seen['enclave.health'] ?? 0;
    await waitFor(() => (seen['enclave.health'] ?? 0) >= probesBefore + 10, 10_000, 'ten more probes');
    // Never down (a loaded test machine may miss a probe now and then, never three in a row here).
    expect([p.up, events.states]).toEqual([true, [true]]);
    expect(events.misses).toBeLessThan(3);
    for (const r of heldSigns.splice(0)) r();
    expect(await Promise.all(slow)).toEqual(Array(20).fill({}));
  });

  it('refuses calls beyond maxQueued at once with OVERLOADED, without sending them', async () => {
    const { pool: p, events } = makePool({ maxQueued: 3, size: 2 });
    await waitFor(() => p.connectedCount === 2, 5000, 'both connections up');
    holdSigns = true;
    const first = Array.from({ length: 3 }, () => sign(p));
    await waitFor(() => heldSigns.length === 3, 5000, 'three signs at the enclave');
    expect(p.queued).toBe(3);
    const beyond = await Promise.all(Array.from({ length: 5 }, () => rejection(sign(p))));
    expect(beyond.map((e) => e.code)).toEqual(Array(5).fill('OVERLOADED'));
    expect(beyond[0]?.message).toContain('enclave.maxQueued');
    expect(events.queueFull).toBe(5);
    await new Promise((r) => setImmediate(r));
    expect(heldSigns.length).toBe(3); // nothing more reached the enclave
    for (const r of heldSigns.splice(0)) r();
    expect(await Promise.all(first)).toEqual([{}, {}, {}]);
    expect(p.queued).toBe(0);
    holdSigns = false;
    expect(await sign(p)).toEqual({}); // room again
  });
});

describe('enclave liveness and queue configuration', () => {
  const base = {
    api: { listen: { host: '127.0.0.1', port: 0 } },
    tokens: [{ name: 'a', sha256: 'a'.repeat(64), scopes: ['admin'] }],
    database: { kind: 'sqlite', path: '/tmp/x.db' },
    kmsProxy: { allowedKeyArns: ['arn:aws:kms:us-east-1:111122223333:key/k'], region: 'us-east-1' },
  };
  const parse = (enclave: Record<string, unknown>) => parseParentConfig({ ...base, enclave });

  it('has defaults that notice a frozen enclave within 5 s and queue no more than one connection takes', () => {
    const e = parse({}).enclave;
    expect(e).toMatchObject({ maxQueued: 2048, pingIntervalMs: 1000, pingTimeoutMs: 500, pingMisses: 3 });
    expect(e.pingIntervalMs * e.pingMisses + e.pingTimeoutMs).toBeLessThan(5000);
    expect(e.maxQueued).toBeGreaterThanOrEqual(PARENT_CONFIG_DEFAULTS.api.maxInFlight);
    expect(e.maxQueued).toBeLessThanOrEqual(e.maxInFlightPerConnection);
  });

  it.each([
    [
      { pingTimeoutMs: 1500, pingIntervalMs: 1000 },
      'config.enclave.pingTimeoutMs: enclave.pingTimeoutMs must not exceed enclave.pingIntervalMs',
    ],
    [{ pingIntervalMs: 10 }, 'config.enclave.pingIntervalMs'],
    [{ pingMisses: 0 }, 'config.enclave.pingMisses'],
    [{ maxQueued: 0 }, 'config.enclave.maxQueued'],
    [{ maxQueued: 1.5 }, 'config.enclave.maxQueued'],
  ])('refuses %j with a clear error', (enclave, message) => {
    expect(() => parse(enclave)).toThrow(ConfigError);
    expect(() => parse(enclave)).toThrow(message);
  });
});
