/**
 * The parent's side of the enclave's log channel (enclave-link/logs.ts) over a real RPC connection to a server
 * that answers `enclave.logs` as the enclave does, and the audit line's fields (api/audit.ts) for every request
 * type. The whole path through the real processes is in test/e2e/audit-logs.test.ts.
 */
import fs from 'node:fs';
import { LogsParams, type EnclaveApi, type EnclaveLogLine, type EnclaveLogs } from '@nks/shared/enclave-api';
import { KeystoreError } from '@nks/shared/errors';
import { RpcClient, RpcServer, rpcMethod } from '@nks/shared/rpc';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { captureLogger, tempRunDir } from '@nks/shared-test/helpers';
import { auditedSign, signAuditFields } from '../src/api/audit';
import { EnclaveLogPuller } from '../src/enclave-link/logs';
import { Metrics } from '../src/metrics';

const ADDRESS = 'vsock://16:5200';

describe('the enclave log puller', () => {
  let runDir: string;
  let server: RpcServer;
  let client: RpcClient<EnclaveApi>;
  /** What the fake enclave holds: its lines (seq from 1) and whether it serves enclave.logs at all. */
  let held: EnclaveLogLine[] = [];
  let served = true;
  const asked: number[] = [];

  const line = (seq: number, level: number, msg: string, fields: EnclaveLogLine['fields'] = {}): EnclaveLogLine => ({
    seq,
    time: 1_700_000_000_000 + seq,
    level,
    msg,
    fields,
  });

  beforeAll(async () => {
    runDir = tempRunDir();
    const transport = new SimulatedVsockTransport(runDir);
    server = new RpcServer({
      name: 'fake-enclave',
      logger: captureLogger().logger,
      methods: {
        'enclave.logs': rpcMethod(LogsParams, (p): EnclaveLogs => {
          if (!served) throw new KeystoreError('METHOD_NOT_FOUND', 'unknown method "enclave.logs"');
          asked.push(p.after);
          const lines = held.filter((l) => l.seq > (p.after >= held.length + 1 ? 0 : p.after)).slice(0, p.max ?? 200);
          return { lines, nextSeq: held.length + 1, written: held.length, dropped: 3, counters: { signs: 42 } as EnclaveLogs['counters'] };
        }),
      },
    });
    await server.listen(transport, ADDRESS);
    client = new RpcClient<EnclaveApi>({ name: 'test', transport, address: ADDRESS, logger: captureLogger().logger });
    await client.waitConnected(5000);
  });
  afterAll(async () => {
    await client.close();
    await server.close(100);
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  const pool = {
    up: true,
    call: ((m: 'enclave.logs', p: { after: number }, d?: number) => client.call(m, p, { deadlineMs: d ?? 1000 })) as never,
  };

  it("re-logs each line at the enclave's level with source 'enclave', at most maxLines per pull, and counts them", async () => {
    held = [
      line(1, 30, 'enclave ready', { listen: 'vsock://16:5000' }),
      line(2, 40, 'request refused', { method: 'keys.sign', code: 'KEY_INTEGRITY', requestId: 'r1' }),
      line(3, 50, 'handler failed unexpectedly', { err: 'TypeError: x' }),
      line(4, 60, 'fatal thing'),
      line(5, 99, 'unknown level'),
      // A field named like the parent's own is overridden by the parent's (source, enclave).
      line(6, 30, 'spoofing', { source: 'parent', enclave: 'elsewhere' }),
    ];
    const log = captureLogger('trace');
    const metrics = new Metrics({
      keyCounts: async () => ({ total: 0, disabled: 0, withoutRecord: 0, pending: 0 }),
      enclaveHealth: async () => null,
    });
    const puller = new EnclaveLogPuller({
      pool,
      enclave: 'vsock://16:5000',
      logger: log.logger,
      maxLines: 4,
      onPull: (pulled, levels) => metrics.recordEnclaveLogs('vsock://16:5000', pulled, levels),
    });
    await puller.pullOnce();
    const relayed = () => log.lines().filter((l) => l.source === 'enclave');
    expect(relayed().map((l) => [l.level, l.msg, l.source, l.enclave, l.seq])).toEqual([
      [30, 'enclave ready', 'enclave', 'vsock://16:5000', 1],
      [40, 'request refused', 'enclave', 'vsock://16:5000', 2],
      [50, 'handler failed unexpectedly', 'enclave', 'vsock://16:5000', 3],
      [60, 'fatal thing', 'enclave', 'vsock://16:5000', 4],
    ]);
    expect(relayed()[1]).toMatchObject({ method: 'keys.sign', code: 'KEY_INTEGRITY', requestId: 'r1' });
    // The enclave's drops, said once per increase.
    const drops = () => log.lines().filter((l) => l.msg === 'enclave log lines were dropped before the parent pulled them');
    expect(drops()).toEqual([expect.objectContaining({ level: 40, dropped: 3, total: 3 })]);
    await puller.pullOnce();
    expect(asked).toEqual([0, 4]);
    expect(drops()).toHaveLength(1);
    const later = relayed().slice(4);
    expect(later.map((l) => [l.level, l.msg, l.source, l.enclave])).toEqual([
      [40, 'unknown level', 'enclave', 'vsock://16:5000'],
      [30, 'spoofing', 'enclave', 'vsock://16:5000'],
    ]);
    const text = await metrics.render();
    expect(text).toMatch(/^nks_enclave_log_lines_total\{enclave="vsock:\/\/16:5000",level="warn"\} 2$/m);
    expect(text).toMatch(/^nks_enclave_log_lines_total\{enclave="vsock:\/\/16:5000",level="info"\} 2$/m);
    expect(text).toMatch(/^nks_enclave_log_dropped\{enclave="vsock:\/\/16:5000"\} 3$/m);
    expect(text).toMatch(/^nks_enclave_counters\{enclave="vsock:\/\/16:5000",counter="signs"\} 42$/m);

    // A restarted enclave (fewer lines than the parent had seen): it answers from its oldest, and the parent follows.
    held = [line(1, 30, 'enclave listening')];
    await puller.pullOnce();
    expect(asked.at(-1)).toBe(6);
    expect(relayed().at(-1)).toMatchObject({ msg: 'enclave listening', seq: 1 });
    await puller.pullOnce();
    expect(asked.at(-1)).toBe(1);
    await puller.stop();
  });

  it('says once that an older enclave has no log channel, and skips pulls while the enclave is down', async () => {
    served = false;
    const log = captureLogger('info');
    const puller = new EnclaveLogPuller({ pool, enclave: 'e', logger: log.logger });
    await puller.pullOnce();
    await puller.pullOnce();
    expect(log.lines().map((l) => l.msg)).toEqual(['the enclave has no log channel (enclave.logs): its lines are not relayed']);
    served = true;
    const before = asked.length;
    const down = new EnclaveLogPuller({ pool: { ...pool, up: false }, enclave: 'e', logger: log.logger });
    await down.pullOnce();
    expect(asked.length).toBe(before);
  });
});

describe('the audit line of a signature', () => {
  const to = '0x70997970c51812dc3a010c7d01b50e0d17dc79c8';
  it('names the request type, chain, recipient and value of each kind of request, and nothing of its payload', () => {
    expect(signAuditFields('k1', { type: 'digest', digest: `0x${'11'.repeat(32)}` })).toEqual({ keyId: 'k1', type: 'digest' });
    expect(signAuditFields('k1', { type: 'message', message: 'secret-looking text' })).toEqual({ keyId: 'k1', type: 'message' });
    expect(
      signAuditFields('k1', { type: 'transaction', transaction: { type: 'eip1559', chainId: 1, to, value: '0x10', data: '0xdead' } }),
    ).toEqual({ keyId: 'k1', type: 'transaction', chainId: '1', to, value: '0x10' });
    // A contract creation: no `to`; no value: 0.
    expect(signAuditFields('k1', { type: 'transaction', transaction: { type: 'legacy', chainId: '137' } })).toEqual({
      keyId: 'k1',
      type: 'transaction',
      chainId: '137',
      to: null,
      value: '0',
    });
    expect(
      signAuditFields('k1', { type: 'typedData', typedData: { domain: { chainId: 10, verifyingContract: to }, message: { x: 1 } } }),
    ).toEqual({ keyId: 'k1', type: 'typedData', chainId: '10', to });
    expect(signAuditFields('k1', { type: 'authorization', authorization: { chainId: 0, address: to, nonce: 1 } })).toEqual({
      keyId: 'k1',
      type: 'authorization',
      chainId: '0',
      to,
    });
    expect(signAuditFields('k1', { type: 'userOperation', chainId: 8453, userOperation: { sender: to } })).toEqual({
      keyId: 'k1',
      type: 'userOperation',
      chainId: '8453',
      sender: to,
    });
    expect(signAuditFields('k1', null)).toEqual({ keyId: 'k1', type: 'unknown' });
  });

  it('writes one line per sign, signed or refused, with the token name and request id and never the token', async () => {
    const log = captureLogger();
    const who = { requestId: 'r-9', token: 'ops' };
    const result = { hash: `0x${'22'.repeat(32)}`, address: to } as never;
    await auditedSign(log.logger, who, 'k1', { type: 'digest' }, async () => result);
    await expect(
      auditedSign(log.logger, who, 'k1', { type: 'digest' }, async () => {
        throw new KeystoreError('KEY_DISABLED', 'key k1 is disabled');
      }),
    ).rejects.toMatchObject({ code: 'KEY_DISABLED' });
    expect(log.lines()).toEqual([
      expect.objectContaining({
        level: 30,
        msg: 'signed',
        keyId: 'k1',
        type: 'digest',
        tokenName: 'ops',
        requestId: 'r-9',
        outcome: 'ok',
        hash: `0x${'22'.repeat(32)}`,
      }),
      expect.objectContaining({ level: 30, msg: 'sign refused', keyId: 'k1', tokenName: 'ops', requestId: 'r-9', outcome: 'KEY_DISABLED' }),
    ]);
  });
});
