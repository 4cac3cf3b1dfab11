/**
 * Following one call end to end, and the enclave's own log lines and counters, through the real stack
 * (docs/OPERATIONS.md, "Logs"): the parent's audit line for every signature; the API's request id in the
 * parent's, the KMS proxy's and the enclave's lines of a cold sign; a hostile request id replaced at the API and
 * never logged; an enclave warning relayed into the parent's log (`source: 'enclave'`); the enclave's counters
 * in /metrics under its address.
 */
import type { EnclaveApi } from '@nks/shared/enclave-api';
import { silentLogger } from '@nks/shared/log';
import { RpcClient } from '@nks/shared/rpc';
import { SimulatedVsockTransport } from '@nks/shared/transport';
import { tempRunDir, waitFor } from '@nks/shared-test/helpers';
import { ENCLAVE_ADDRESS, startStack, waitReady, type Stack } from '../support/stack';

type Line = Record<string, unknown>;
const isLine = (o: unknown): o is Line => typeof o === 'object' && o !== null;
const json = (lines: string[]): Line[] =>
  lines.flatMap((l) => {
    try {
      const o: unknown = JSON.parse(l);
      return isLine(o) ? [o] : [];
    } catch {
      return [];
    }
  });

describe('audit lines, request ids end to end, and the enclave log channel', () => {
  let s: Stack;
  let enclaveRpc: RpcClient<EnclaveApi>;
  const parentLines = () => json(s.parentLogs().split('\n'));
  const enclaveLines = () => json(s.enclave.lines);
  let key: { keyId: string; address: string };

  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-audit-'));
    await waitReady(s);
    // A second connection to the enclave, as any process on the host could open: to empty its cache and to
    // send it a request it refuses.
    enclaveRpc = new RpcClient<EnclaveApi>({
      name: 'test-host',
      transport: new SimulatedVsockTransport(s.runDir),
      address: ENCLAVE_ADDRESS,
      logger: silentLogger(),
    });
    await enclaveRpc.waitConnected(5000);
    const made = await s.api('/v1/keys', { body: {} });
    expect(made.status).toBe(201);
    key = made.body;
  }, 90_000);

  afterAll(async () => {
    await enclaveRpc?.close();
    await s?.stop();
  });

  it('writes one audit line per signature and carries the request id through the KMS proxy and the enclave (cold sign)', async () => {
    await enclaveRpc.call('keys.forget', { keyId: key.keyId }); // the next sign unseals: one KMS call
    const requestId = 'audit-e2e:cold_1';
    const to = '0x70997970c51812dc3a010c7d01b50e0d17dc79c8';
    const signed = await s.api(`/v1/keys/${key.keyId}/sign`, {
      token: 'sign',
      headers: { 'x-request-id': requestId },
      body: {
        type: 'transaction',
        transaction: { type: 'eip1559', chainId: 8453, nonce: 0, to, value: '1000', maxFeePerGas: '1', maxPriorityFeePerGas: '1' },
      },
    });
    expect(signed.status).toBe(200);
    expect(signed.headers.get('x-request-id')).toBe(requestId);

    await waitFor(() => parentLines().some((l) => l.component === 'audit' && l.requestId === requestId), 10_000, 'the audit line');
    const audit = parentLines().filter((l) => l.component === 'audit' && l.requestId === requestId);
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({
      level: 30,
      msg: 'signed',
      keyId: key.keyId,
      type: 'transaction',
      chainId: '8453',
      to,
      value: '1000',
      hash: signed.body.hash,
      address: key.address,
      tokenName: 'sign',
      requestId,
      outcome: 'ok',
    });
    // Never the token itself (nor, under any name, anything that is not a listed field).
    expect(s.parentLogs()).not.toContain(s.tokens.sign);

    // The KMS proxy's line and the enclave's own line of the same call.
    await waitFor(() => enclaveLines().some((l) => l.requestId === requestId && l.msg === 'KMS proxy call'), 10_000, 'the enclave line');
    expect(enclaveLines().find((l) => l.requestId === requestId && l.msg === 'KMS proxy call')).toMatchObject({
      method: 'kms.decrypt',
      outcome: 'ok',
    });
    const proxy = parentLines().filter((l) => l.component === 'kms-proxy' && l.requestId === requestId);
    expect(proxy).toEqual([expect.objectContaining({ msg: 'KMS decrypt', outcome: 'ok' })]);
    // And the enclave's line relayed into the parent's log through the channel.
    await waitFor(
      () => parentLines().some((l) => l.source === 'enclave' && l.requestId === requestId && l.msg === 'KMS proxy call'),
      10_000,
      'the relayed enclave line',
    );

    // A refused sign gets its audit line too, with its outcome.
    const other = (await s.api('/v1/keys', { body: {} })).body as { keyId: string };
    expect((await s.api(`/v1/keys/${other.keyId}/disable`, { token: 'admin', body: {} })).status).toBe(200);
    const refused = await s.api(`/v1/keys/${other.keyId}/sign`, {
      token: 'sign',
      headers: { 'x-request-id': 'audit-e2e-refused' },
      body: { type: 'message', message: 'hello' },
    });
    expect(refused.body.error.code).toBe('KEY_DISABLED');
    await waitFor(() => parentLines().some((l) => l.requestId === 'audit-e2e-refused' && l.component === 'audit'), 10_000, 'the line');
    expect(parentLines().find((l) => l.requestId === 'audit-e2e-refused' && l.component === 'audit')).toMatchObject({
      msg: 'sign refused',
      keyId: other.keyId,
      type: 'message',
      tokenName: 'sign',
      outcome: 'KEY_DISABLED',
    });
  }, 60_000);

  it('replaces a hostile request id at the API (never logged, never sent on)', async () => {
    const hostile = ['x'.repeat(129), '{"level":60,"msg":"forged"}', 'a b', 'semi;colon'];
    for (const id of hostile) {
      const signed = await s.api(`/v1/keys/${key.keyId}/sign`, {
        token: 'sign',
        headers: { 'x-request-id': id },
        body: { type: 'digest', digest: `0x${'ab'.repeat(32)}` },
      });
      expect(signed.status).toBe(200);
      const given = signed.headers.get('x-request-id') as string;
      expect(given).not.toBe(id);
      expect(given).toMatch(/^[0-9a-f-]{36}$/);
      await waitFor(() => parentLines().some((l) => l.component === 'audit' && l.requestId === given), 10_000, 'the audit line');
    }
    for (const id of hostile) {
      expect(s.parentLogs()).not.toContain(id);
      expect(s.enclave.lines.join('\n')).not.toContain(id);
    }
  }, 60_000);

  it("relays an enclave warning into the parent's log and the enclave's counters into /metrics", async () => {
    await expect(enclaveRpc.call('keys.forget', { keyId: 'not a key id!' })).rejects.toMatchObject({ code: 'INVALID_PARAMS' });
    await waitFor(
      () =>
        parentLines().some((l) => l.source === 'enclave' && l.level === 40 && l.msg === 'request refused' && l.code === 'INVALID_PARAMS'),
      10_000,
      'the relayed enclave warning',
    );
    const relayed = parentLines().find((l) => l.source === 'enclave' && l.msg === 'request refused' && l.code === 'INVALID_PARAMS');
    expect(relayed).toMatchObject({ component: 'enclave-log', enclave: ENCLAVE_ADDRESS, method: 'keys.forget' });

    const label = `enclave="${ENCLAVE_ADDRESS}"`;
    let text = '';
    const metric = (name: string, labels: string) =>
      Number(new RegExp(`^${name}\\{${labels.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    const deadline = Date.now() + 10_000;
    do {
      text = await s.metrics();
      if (metric('nks_enclave_log_lines_total', `${label},level="warn"`) >= 1) break;
      await new Promise((r) => setTimeout(r, 100));
    } while (Date.now() < deadline);
    expect(metric('nks_enclave_log_lines_total', `${label},level="warn"`)).toBeGreaterThanOrEqual(1);
    expect(metric('nks_enclave_counters', `${label},counter="signs"`)).toBeGreaterThanOrEqual(5);
    expect(metric('nks_enclave_counters', `${label},counter="kmsCalls"`)).toBeGreaterThanOrEqual(1);
    expect(metric('nks_enclave_log_dropped', label)).toBe(0);
  }, 60_000);
});
