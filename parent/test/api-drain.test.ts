/**
 * Stopping on SIGTERM (parent/README.md, "Stopping"), over the real processes: `/readyz` turns 503 at once
 * (`shuttingDown`) while every other route is served for `api.preDrainMs`, so a load balancer stops sending;
 * then new connections are refused, and every request already received — in flight and held by KMS, pipelined
 * behind one that is, or sent on an open keep-alive connection just after the signal — gets its real answer,
 * the last one on each connection with `connection: close`; none is reset. KMS Decrypt is held by the emulator
 * for as long as the test needs: no timing bets beyond generous bounds in the safe direction.
 */
import { tempRunDir } from '@nks/shared-test/helpers';
import { startStack, waitReady, type Stack } from '../../test/support/stack';
import { RawConnection, tryConnect } from './raw-http';

// Long enough for the test to use the window after it reads the parent's "stopping" line on a busy machine.
const PRE_DRAIN_MS = 4000;

describe('SIGTERM drain', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-drain-'), {
      parentApi: { preDrainMs: PRE_DRAIN_MS, drainMs: 30_000, requestTimeoutMs: 60_000 },
      parentEnclave: { deadlineMs: 50_000 },
      parentKmsProxy: { deadlineMs: 40_000 },
      parent: { logLevel: 'info' },
      enclave: { limits: { kmsDeadlineMs: 45_000 } },
    });
    await waitReady(s);
  }, 90_000);
  afterAll(async () => {
    await s?.platform.setFaults({ hold: false }).catch(() => undefined);
    await s?.stop();
  });

  it('answers every request already received, pipelined and keep-alive ones included, and refuses new connections only after the pre-drain', async () => {
    const token = s.tokens.full;
    const keys: string[] = [];
    for (let i = 0; i < 3; i++) keys.push(String((await s.api('/v1/keys', { body: {} })).body.keyId));
    const [k1, k2, k3] = keys as [string, string, string];
    const sign = (c: RawConnection, keyId: string) =>
      c.send('POST', `/v1/keys/${keyId}/sign`, { token, body: { type: 'message', message: 'm' } });

    // C: a keep-alive connection, idle after one answer.
    const c = await RawConnection.open(s.url);
    c.send('GET', '/healthz');
    await c.answered(1);

    await s.platform.setFaults({ hold: true, ops: ['Decrypt'] });
    // A: a cold sign held by KMS with a read pipelined behind it; B: another held sign.
    const a = await RawConnection.open(s.url);
    sign(a, k1);
    a.send('GET', `/v1/keys/${k1}`, { token });
    const b = await RawConnection.open(s.url);
    sign(b, k2);
    await s.platform.waitHeld(2);

    s.parent.child.kill('SIGTERM');
    await s.parent.waitForLog((e) => e.msg === 'parent stopping: draining requests');
    // Right after the signal, on open connections: the idle keep-alive one, and one whose answer is held.
    c.send('GET', `/v1/keys/${k3}`, { token });
    b.send('GET', `/v1/keys/${k2}`, { token });
    // The pre-drain: /readyz says shutting down, everything else is served, on new connections too.
    const ready = await s.api('/readyz', { token: null });
    expect([ready.status, ready.body.status, ready.body.checks.shuttingDown]).toEqual([503, 'not ready', true]);
    const metricsReady = await fetch(`${s.metricsUrl}/readyz`);
    expect(metricsReady.status).toBe(503);
    expect((await s.api('/healthz', { token: null })).status).toBe(200);
    const read = await s.api(`/v1/keys/${k3}`);
    expect([read.status, read.headers.get('connection')]).toEqual([200, 'close']);
    expect((await c.answered(2))[1]).toMatchObject({ status: 200, headers: { connection: 'close' } });
    expect(JSON.parse(c.answers[1]?.body ?? '{}')).toMatchObject({ keyId: k3 });
    expect(await c.closed()).toBe('end');

    // Then no new connection (polled: the pre-drain ends on the parent's clock), while the held ones wait.
    const until = Date.now() + PRE_DRAIN_MS + 20_000;
    let outcome = await tryConnect(s.url);
    while (outcome === 'connected' && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 50));
      outcome = await tryConnect(s.url);
    }
    expect(outcome).toBe('ECONNREFUSED');
    expect([a.answers.length, b.answers.length, a.ended, b.ended]).toEqual([0, 0, undefined, undefined]);

    await s.platform.setFaults({ hold: false });
    const fromA = await a.answered(2);
    const fromB = await b.answered(2);
    expect(fromA.map((r) => r.status)).toEqual([200, 200]);
    expect(fromB.map((r) => r.status)).toEqual([200, 200]);
    expect(JSON.parse(fromA[0]?.body ?? '{}').signature).toMatch(/^0x[0-9a-f]{130}$/);
    expect(JSON.parse(fromA[1]?.body ?? '{}')).toMatchObject({ keyId: k1 });
    expect(JSON.parse(fromB[1]?.body ?? '{}')).toMatchObject({ keyId: k2 });
    // A's read was answered before the signal (written after the sign); B's last answer closes its connection, the
    // one before it leaves it open for that; A is closed once idle.
    expect([...fromA, ...fromB].map((r) => r.headers.connection)).toEqual(['keep-alive', 'keep-alive', 'keep-alive', 'close']);
    expect([await a.closed(), await b.closed()]).toEqual(['end', 'end']);
    expect(await s.parent.exited).toBe(0);
  }, 90_000);
});
