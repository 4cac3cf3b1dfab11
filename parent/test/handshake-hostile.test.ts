/**
 * The client-side handshake hook (RpcClient `handshake`, used by the parent's EnclavePool) against peers that
 * never answer, close mid-handshake, answer late or answer garbage; and the pool's version logic. Written by an
 * independent attacker's review of the change.
 */
import fs from 'node:fs';
import { KeystoreError } from '@nks/shared/errors';
import type { EnclaveApi } from '@nks/shared/enclave-api';
import { FramedConnection, RpcClient } from '@nks/shared/rpc';
import { SimulatedVsockTransport, type Connection, type Listener } from '@nks/shared/transport';
import { EnclavePool } from '../src/enclave-link/pool';
import { captureLogger, rejection, sleep, tempRunDir, waitFor } from '@nks/shared-test/helpers';

const ADDRESS = 'vsock://16:5000';
type Msg = { id: number; method: string; params: unknown };
const timeouts = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

describe('RpcClient handshake hook vs. hostile peers', () => {
  let runDir: string;
  let transport: SimulatedVsockTransport;
  let listener: Listener | undefined;
  let client: RpcClient<EnclaveApi> | undefined;
  let pool: EnclavePool | undefined;
  const seen: Msg[] = [];
  let accepted = 0;

  /** A raw peer: `onMsg` decides what to do with each request (send raw answers, close, or nothing). */
  const serve = async (onMsg: (m: Msg, framed: FramedConnection, raw: Connection) => void) => {
    listener = await transport.listen(ADDRESS, (raw) => {
      accepted += 1;
      const framed: FramedConnection = new FramedConnection(raw, {
        message: (m) => {
          seen.push(m as Msg);
          onMsg(m as Msg, framed, raw);
        },
        close: () => undefined,
      });
    });
  };

  const hsClient = (handshake: ConstructorParameters<typeof RpcClient<EnclaveApi>>[0]['handshake']) => {
    client = new RpcClient<EnclaveApi>({
      name: 'hs',
      transport,
      address: ADDRESS,
      logger: captureLogger('silent').logger,
      connectTimeoutMs: 150,
      defaultDeadlineMs: 1000,
      backoff: { initialMs: 20, maxMs: 40 },
      handshake,
    });
    return client;
  };

  beforeEach(() => {
    runDir = tempRunDir('nks-hs-');
    transport = new SimulatedVsockTransport(runDir);
    seen.length = 0;
    accepted = 0;
  });

  afterEach(async () => {
    await pool?.close();
    await client?.close();
    await listener?.close();
    pool = client = listener = undefined;
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  it('a peer that never answers: the hello times out, the client retries with backoff, nothing accumulates, and close() ends it all', async () => {
    await serve(() => undefined);
    const base = timeouts();
    const c = hsClient(async (call) => {
      await call('enclave.hello', { protocolVersion: 2 });
    });
    c.start();
    await waitFor(() => accepted >= 4, 5000, 'several handshake attempts');
    expect(c.connected).toBe(false);
    expect(c.pendingCount).toBeLessThanOrEqual(1); // at most the hello of the attempt in progress
    // A call made meanwhile waits at most its own deadline and is never sent on an unagreed connection.
    const err = await rejection(c.call('enclave.health', {}, { deadlineMs: 300 }));
    expect(['TIMEOUT', 'UNAVAILABLE']).toContain(err.code);
    expect(seen.every((m) => m.method === 'enclave.hello')).toBe(true);
    await c.close();
    expect(c.pendingCount).toBe(0);
    const after = accepted;
    await sleep(300);
    expect(accepted).toBe(after); // no reconnect after close
    expect(timeouts()).toBeLessThanOrEqual(base);
  });

  it('a peer that closes mid-handshake: the hello fails at once (not at its timeout), no pending left, reconnects', async () => {
    await serve((_m, framed) => framed.destroy());
    const failures: Array<[string, number]> = [];
    const c = hsClient(async (call) => {
      const t0 = Date.now();
      try {
        await call('enclave.hello', { protocolVersion: 2 });
      } catch (e) {
        failures.push([(e as KeystoreError).code, Date.now() - t0]);
        throw e;
      }
    });
    c.start();
    await waitFor(() => failures.length >= 3, 5000, 'several closed handshakes');
    expect(c.connected).toBe(false);
    expect(failures.every(([code, ms]) => code === 'UNAVAILABLE' && ms < 150)).toBe(true);
    await c.close();
    expect(c.pendingCount).toBe(0);
  });

  it('close() during a handshake: waitConnected rejects, the hello is failed, no reconnect afterwards', async () => {
    await serve(() => undefined);
    const c = hsClient(async (call) => {
      await call('enclave.hello', { protocolVersion: 2 });
    });
    const waiting = rejection(c.waitConnected(5000));
    await waitFor(() => seen.length >= 1, 2000, 'the hello to arrive');
    await c.close();
    expect((await waiting).code).toBe('UNAVAILABLE');
    expect(c.pendingCount).toBe(0);
    const after = accepted;
    await sleep(300);
    expect(accepted).toBe(after);
  });

  it('a late answer to a timed-out hello is ignored; the connection it came on is not used', async () => {
    await serve((m, framed) => {
      setTimeout(
        () =>
          framed.send({
            jsonrpc: '2.0',
            id: m.id,
            result: { protocolVersion: 2, supportedVersions: [1, 2], features: [], enclaveVersion: 'x' },
          }),
        250,
      );
    });
    const c = hsClient(async (call) => {
      await call('enclave.hello', { protocolVersion: 2 });
    });
    c.start();
    await sleep(800);
    expect(c.connected).toBe(false);
    await c.close();
  });

  it('EnclavePool: garbage hello results never bring a connection up (no crash, no unhandled rejection)', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      const answers = [
        null,
        'x',
        [],
        { protocolVersion: '2' },
        { protocolVersion: 2.5 },
        { protocolVersion: 0 },
        { protocolVersion: 2 }, // 0.3.0: no longer accepted
        { protocolVersion: 4 },
        JSON.parse('{"__proto__":{"protocolVersion":3}}'),
      ];
      let n = 0;
      await serve((m, framed) => {
        if (m.method === 'enclave.hello') framed.send({ jsonrpc: '2.0', id: m.id, result: answers[n++ % answers.length] });
      });
      const log = captureLogger('warn');
      pool = new EnclavePool({
        transport,
        address: ADDRESS,
        size: 1,
        logger: log.logger,
        connectTimeoutMs: 150,
        deadlineMs: 500,
        maxInFlightPerConnection: 4,
      });
      pool.start();
      await waitFor(() => n >= answers.length * 2, 15_000, 'every garbage answer twice');
      expect(pool.up).toBe(false);
      expect(pool.protocolVersion).toBeUndefined();
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  }, 20_000);

  it('EnclavePool: METHOD_NOT_FOUND (a v1 enclave) is the only error read as version 1 (refused); a TIMEOUT or OVERLOADED hello is not', async () => {
    let mode: 'overloaded' | 'timeout' | 'v1' = 'overloaded';
    await serve((m, framed) => {
      if (m.method !== 'enclave.hello') {
        framed.send({ jsonrpc: '2.0', id: m.id, result: { ok: true } });
      } else if (mode !== 'timeout') {
        const code = mode === 'v1' ? 'METHOD_NOT_FOUND' : 'OVERLOADED';
        framed.send({ jsonrpc: '2.0', id: m.id, error: { code: -1, message: 'x', data: { reason: code } } });
      }
    });
    const log = captureLogger('error');
    const refusals = () => log.lines().map((l) => String(l.msg));
    pool = new EnclavePool({
      transport,
      address: ADDRESS,
      size: 1,
      logger: log.logger,
      connectTimeoutMs: 150,
      deadlineMs: 500,
      maxInFlightPerConnection: 4,
    });
    pool.start();
    await sleep(500);
    expect(pool.up).toBe(false);
    mode = 'timeout';
    await sleep(500);
    expect([pool.up, refusals()]).toEqual([false, []]);
    mode = 'v1';
    await waitFor(() => refusals().length > 0, 3000, 'the version-1 refusal');
    expect(refusals()).toEqual([
      'protocol version refused: the enclave speaks protocol version 1; this parent accepts version 3: upgrade the enclave image',
    ]);
    expect(pool.up).toBe(false);
  });

  it('bounds the whole handshake by connectTimeoutMs: a hook that never ends is given up and the client retries', async () => {
    await serve(() => undefined);
    const stuck = hsClient(() => new Promise<void>(() => undefined));
    stuck.start();
    await waitFor(() => accepted >= 3, 5000, 'the stuck handshakes to be given up and retried');
    expect(stuck.connected).toBe(false);
    expect((await rejection(stuck.call('enclave.health', {}, { deadlineMs: 200 }))).code).toMatch(/^(TIMEOUT|UNAVAILABLE)$/);
  });

  it('EnclavePool: an OVERLOADED hello is tried again on the same connection, which then comes up', async () => {
    let overloadedLeft = 2;
    await serve((m, framed) => {
      if (m.method === 'enclave.hello' && overloadedLeft-- > 0) {
        framed.send({ jsonrpc: '2.0', id: m.id, error: { code: -32020, message: 'busy', data: { code: 'OVERLOADED', retryable: true } } });
      } else if (m.method === 'enclave.hello') {
        framed.send({
          jsonrpc: '2.0',
          id: m.id,
          result: { protocolVersion: 3, supportedVersions: [3], features: [], enclaveVersion: 'x' },
        });
      }
    });
    pool = new EnclavePool({
      transport,
      address: ADDRESS,
      size: 1,
      logger: captureLogger('silent').logger,
      connectTimeoutMs: 2000,
      deadlineMs: 500,
      maxInFlightPerConnection: 4,
    });
    pool.start();
    await pool.waitUp(5000);
    expect([pool.protocolVersion, accepted, seen.filter((m) => m.method === 'enclave.hello').length]).toEqual([3, 1, 3]);
  });

  it('EnclavePool logs a refusal once per episode: again after a good enclave was seen in between', async () => {
    let refuse = true;
    const conns: FramedConnection[] = [];
    await serve((m, framed) => {
      conns.push(framed);
      if (refuse)
        framed.send({
          jsonrpc: '2.0',
          id: m.id,
          error: { code: -32004, message: 'protocol version 3 is not supported', data: { code: 'UNSUPPORTED_VERSION' } },
        });
      else
        framed.send({
          jsonrpc: '2.0',
          id: m.id,
          result: { protocolVersion: 3, supportedVersions: [3], features: [], enclaveVersion: 'x' },
        });
    });
    const log = captureLogger('error');
    const refusals = () => log.lines().filter((l) => String(l.msg).startsWith('protocol version refused')).length;
    pool = new EnclavePool({
      transport,
      address: ADDRESS,
      size: 1,
      logger: log.logger,
      connectTimeoutMs: 150,
      deadlineMs: 500,
      maxInFlightPerConnection: 4,
    });
    pool.start();
    await waitFor(() => seen.length >= 2, 5000, 'refusals');
    expect(refusals()).toBe(1);
    refuse = false;
    await pool.waitUp(5000); // the enclave was fixed
    refuse = true; // ... and a bad image is deployed again later
    const n = seen.length;
    for (const c of conns) c.destroy();
    await waitFor(() => seen.length >= n + 2, 5000, 'new refusals');
    expect(pool.up).toBe(false);
    expect(refusals()).toBe(2); // the second episode is logged again
  });
});
