/**
 * A request's deadline and the parent's graceful stop, over the real processes. A cold sign waits on KMS
 * Decrypt, which the emulator holds until the test releases it: the request stays in flight exactly as long
 * as the test needs, with no timing bets beyond generous bounds in the safe direction.
 */
import net from 'node:net';
import { recoverMessageAddress } from 'viem';
import { tempRunDir } from '@nks/shared-test/helpers';
import { startStack, waitReady, type Stack } from '../../test/support/stack';

// Every hop waits far longer than a request needs: only a drain or a deadline ends a held request. The
// deadlines nest (shared/src/deadlines.ts), the API's the outermost.
const LONG_HOPS = {
  parentApi: { requestTimeoutMs: 60_000 },
  parentEnclave: { deadlineMs: 50_000 },
  parentKmsProxy: { deadlineMs: 40_000 },
  enclave: { limits: { kmsDeadlineMs: 45_000 } },
};
// Short nested deadlines: a held Decrypt ends at the innermost layer, the KMS proxy, whose fault (TIMEOUT) the
// caller is told before any outer layer gives up.
const SHORT_HOPS = {
  parentEnclave: { deadlineMs: 1200 },
  parentKmsProxy: { deadlineMs: 900 },
  enclave: { limits: { kmsDeadlineMs: 1000 } },
};

const sign = (s: Stack, keyId: string, message = 'x') => s.api(`/v1/keys/${keyId}/sign`, { body: { type: 'message', message } });

describe('request deadline', () => {
  const DEADLINE_MS = 1500;
  let s: Stack;
  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-deadline-'), { parentApi: { requestTimeoutMs: DEADLINE_MS }, ...SHORT_HOPS });
    await waitReady(s);
  }, 90_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('answers 504 TIMEOUT from the innermost deadline when KMS holds a Decrypt, and no longer counts it in flight', async () => {
    const key = (await s.api('/v1/keys', { body: {} })).body as { keyId: string; address: string };
    await s.platform.setFaults({ hold: true, ops: ['Decrypt'] });
    try {
      const res = await sign(s, key.keyId);
      expect([res.status, res.body.error.code]).toEqual([504, 'TIMEOUT']);
      expect(res.body.error.message).toMatch(/^KMS did not answer within \d+ ms$/);
      expect(res.body.error.requestId).toBe(res.headers.get('x-request-id'));
      const metrics = await s.metrics();
      expect(metrics).toMatch(/^nks_http_in_flight 0$/m); // the scrape is on the metrics listener, not an API request
      expect(metrics).toMatch(/nks_http_requests_total\{route="\/v1\/keys\/\{keyId\}\/sign",method="POST",status="504"\} 1/);
    } finally {
      await s.platform.setFaults({ hold: false });
    }
    const again = await sign(s, key.keyId, 'after');
    expect(again.status).toBe(200);
    expect(await recoverMessageAddress({ message: 'after', signature: again.body.signature })).toBe(key.address);
    // The access log is flushed every second: wait for the line rather than read the logs now.
    expect(await s.parent.waitForLog((e) => e.msg === 'request' && e.status === 504)).toMatchObject({
      route: '/v1/keys/{keyId}/sign',
      code: 'TIMEOUT',
      principal: 'full',
    });
  }, 60_000);
});

describe('graceful stop', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-stop-'), LONG_HOPS);
    await waitReady(s);
  }, 90_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('finishes a request in flight, accepts no new connection meanwhile, then exits', async () => {
    const key = (await s.api('/v1/keys', { body: {} })).body as { keyId: string; address: string };
    const port = Number(new URL(s.url).port);
    await s.platform.setFaults({ hold: true, ops: ['Decrypt'] });
    let inFlight: ReturnType<typeof sign> | undefined;
    try {
      inFlight = sign(s, key.keyId, 'in flight');
      await s.platform.waitHeld(1);
      s.parent.child.kill('SIGTERM');
      await s.parent.waitForLog((e) => e.msg === 'parent stopping: draining requests');
      const attempt = () =>
        new Promise<string>((resolve) => {
          const socket = net.connect(port, '127.0.0.1', () => {
            socket.destroy();
            resolve('connected');
          });
          socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
        });
      // The listener closes a moment after the "stopping" line (the ingress relay closes first): a connection
      // made in between is reset, not served. Within a second it is refused, while the request above is held.
      let refused = await attempt();
      const until = Date.now() + 1000;
      while (refused !== 'ECONNREFUSED' && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 20));
        refused = await attempt();
      }
      expect(refused).toBe('ECONNREFUSED');
      expect((await s.platform.faults()).held).toBe(1); // the request in flight is still held: refused meanwhile
    } finally {
      await s.platform.setFaults({ hold: false });
    }
    const res = await inFlight;
    expect(res?.status).toBe(200);
    expect(await recoverMessageAddress({ message: 'in flight', signature: res?.body.signature })).toBe(key.address);
    expect(await s.parent.exited).toBe(0); // main.ts exits 0 only once the API, proxy, pool and database are closed
  }, 60_000);
});
