/**
 * The parent's side of protocol versions (docs/PROTOCOL.md, "Versions"): the enclave pool opens each
 * connection with `enclave.hello` and uses it only once a version it accepts is agreed. Enclaves of each kind
 * stand behind the pool: a version-3 enclave, a version-2 enclave (release 0.3.0: keys without signed records,
 * refused since version 3 is a cutover), a version-1 enclave (release 0.2.0: no hello), an enclave newer than
 * this parent, and one that refuses this parent's version.
 * The real enclave bundle's side is in enclave/test/protocol-version.test.ts.
 */
import fs from 'node:fs';
import { z } from 'zod';
import { ACCEPTED_PROTOCOL_VERSIONS, PROTOCOL_VERSION } from '@nks/shared/enclave-api';
import { KeystoreError, toRpcError } from '@nks/shared/errors';
import { FramedConnection, RpcServer, rpcMethod } from '@nks/shared/rpc';
import { SimulatedVsockTransport, type Listener } from '@nks/shared/transport';
import { captureLogger, rejection, tempRunDir, waitFor } from '@nks/shared-test/helpers';
import { EnclavePool } from '../src/enclave-link/pool';

const ADDRESS = 'vsock://16:5000';

describe('enclave pool protocol handshake', () => {
  let runDir: string;
  let transport: SimulatedVsockTransport;
  let pool: EnclavePool | undefined;
  let server: RpcServer | undefined;
  let listener: Listener | undefined;
  let log: ReturnType<typeof captureLogger>;

  beforeEach(() => {
    log = captureLogger('warn');
    runDir = tempRunDir('nks-pv-');
    transport = new SimulatedVsockTransport(runDir);
  });

  afterEach(async () => {
    await pool?.close();
    await server?.close(100);
    await listener?.close();
    pool = server = listener = undefined;
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  const startPool = () => {
    pool = new EnclavePool({
      transport,
      address: ADDRESS,
      size: 2,
      logger: log.logger,
      connectTimeoutMs: 1000,
      deadlineMs: 2000,
      maxInFlightPerConnection: 16,
    });
    pool.start();
    return pool;
  };

  /** An enclave serving `enclave.hello` with `hello` and `enclave.health`. */
  const enclaveWithHello = async (hello: (theirs: number) => unknown) => {
    const any = z.any();
    server = new RpcServer({
      name: 'fake-enclave',
      logger: log.logger,
      methods: {
        'enclave.hello': rpcMethod(z.strictObject({ protocolVersion: z.number() }), (p) => hello(p.protocolVersion)),
        'enclave.health': rpcMethod(any, () => ({ status: 'ok' })),
      },
    });
    await server.listen(transport, ADDRESS);
  };

  it('agrees version 3 with a version-3 enclave and then serves calls', async () => {
    const asked: number[] = [];
    await enclaveWithHello((theirs) => {
      asked.push(theirs);
      return { protocolVersion: 3, supportedVersions: [3], features: ['enclave.health', 'enclave.hello'], enclaveVersion: '0.4.0' };
    });
    const p = startPool();
    await waitFor(() => p.connectedCount === 2, 5000, 'both connections up');
    expect([p.protocolVersion, PROTOCOL_VERSION, ACCEPTED_PROTOCOL_VERSIONS]).toEqual([3, 3, [3]]);
    expect(asked).toEqual([3, 3]); // one hello per connection, asking for this parent's version
    expect(await p.call('enclave.health', {})).toEqual({ status: 'ok' });
  });

  it('refuses a version-2 enclave (0.3.0, keys without records): version 3 is a cutover', async () => {
    await enclaveWithHello(() => ({ protocolVersion: 2, supportedVersions: [1, 2], features: [], enclaveVersion: '0.3.0' }));
    const p = startPool();
    expect((await rejection(p.waitUp(1500))).code).toBe('UNAVAILABLE');
    expect([p.up, p.protocolVersion]).toEqual([false, undefined]);
    const refusals = log.lines().filter((l) => String(l.msg).startsWith('protocol version refused'));
    expect(refusals.map((l) => [l.level, l.msg])).toEqual([
      [50, 'protocol version refused: the enclave speaks protocol version 2; this parent accepts version 3: upgrade the enclave image'],
    ]);
  });

  it('refuses a version-1 enclave (no enclave.hello), reading its data.reason error', async () => {
    // A version-1 enclave as release 0.2.0 answers on the wire: errors carry `data.reason` and no `data.code`.
    const v1Error = (code: 'METHOD_NOT_FOUND', message: string) => {
      const { code: rpcCode } = toRpcError(new KeystoreError(code, message));
      return { code: rpcCode, message, data: { reason: code, retryable: false } };
    };
    let hellos = 0;
    listener = await transport.listen(ADDRESS, (raw) => {
      const framed: FramedConnection = new FramedConnection(raw, {
        message: (msg) => {
          const { id, method } = msg as { id: number; method: string };
          if (method === 'enclave.hello') hellos += 1;
          framed.send({ jsonrpc: '2.0', id, error: v1Error('METHOD_NOT_FOUND', `unknown method "${method}"`) });
        },
        close: () => undefined,
      });
    });
    const p = startPool();
    expect((await rejection(p.waitUp(1500))).code).toBe('UNAVAILABLE');
    expect(hellos).toBeGreaterThanOrEqual(2);
    expect(p.up).toBe(false);
    const refusals = log.lines().filter((l) => String(l.msg).startsWith('protocol version refused'));
    expect(refusals.map((l) => l.msg)).toEqual([
      'protocol version refused: the enclave speaks protocol version 1; this parent accepts version 3: upgrade the enclave image',
    ]);
  });

  it('refuses an enclave newer than it accepts: never up, one error naming both sides', async () => {
    await enclaveWithHello(() => ({ protocolVersion: 4, supportedVersions: [4], features: [], enclaveVersion: '9.0.0' }));
    const p = startPool();
    const down = await rejection(p.waitUp(1500));
    expect(down.code).toBe('UNAVAILABLE');
    expect([p.up, p.protocolVersion]).toEqual([false, undefined]);
    await waitFor(() => server !== undefined && server.stats.requests >= 4, 5000, 'the pool to retry the handshake');
    const refusals = log.lines().filter((l) => String(l.msg).startsWith('protocol version refused'));
    expect(refusals.map((l) => [l.level, l.msg])).toEqual([
      [50, 'protocol version refused: the enclave speaks protocol version 4; this parent accepts version 3: upgrade the parent'],
    ]);
    expect((await rejection(p.call('enclave.health', {}))).code).toBe('UNAVAILABLE');
  });

  it('stays down when the enclave refuses this parent version, logging the enclave message once', async () => {
    const message = 'protocol version 3 is not supported: this enclave speaks versions 4 and 5; upgrade the parent';
    await enclaveWithHello(() => {
      throw new KeystoreError('UNSUPPORTED_VERSION', message);
    });
    const p = startPool();
    expect((await rejection(p.waitUp(1500))).code).toBe('UNAVAILABLE');
    expect(p.up).toBe(false);
    const refusals = log.lines().filter((l) => String(l.msg).startsWith('protocol version refused'));
    expect(refusals.map((l) => l.msg)).toEqual([`protocol version refused: ${message}`]);
  });

  it('does not use a connection whose handshake has not answered yet', async () => {
    let answer: (() => void) | undefined;
    await enclaveWithHello(
      () =>
        new Promise((resolve) => {
          answer = () => resolve({ protocolVersion: 3, supportedVersions: [3], features: [], enclaveVersion: '0.4.0' });
        }),
    );
    const p = startPool();
    await waitFor(() => answer !== undefined, 5000, 'a hello to arrive');
    expect(p.up).toBe(false);
    expect((await rejection(p.call('enclave.health', {}))).code).toBe('UNAVAILABLE');
    answer?.();
    await p.waitUp(5000);
    expect(p.protocolVersion).toBe(3);
  });
});
