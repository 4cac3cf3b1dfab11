/**
 * A peer that accepts the client's connection and never reads it (the parent, for the enclave's KMS-proxy
 * client). On a queued transport every request written stays in this process after its call timed out; the
 * in-flight cap frees up and new calls would queue more, without bound (security review of the vsock addon).
 * The client refuses calls above its queued-bytes cap and drops a connection whose peer takes nothing for a
 * whole default deadline.
 */
import { RpcClient } from '../src/rpc';
import type { Transport } from '../src/transport';
import { adoptVsockHandle } from '../src/transport/vsock';
import { captureLogger, waitFor } from './helpers';
import { binding, closeTracked, track } from './vsock-helpers';

afterEach(() => closeTracked());

/** A transport whose connections are the client's side of socketpairs whose other side never reads. */
function neverReadingPeer() {
  let connects = 0;
  const transport = {
    kind: 'vsock',
    connect: async () => {
      connects += 1;
      const [mine, theirs] = track(binding.socketpair());
      binding.attach(theirs, () => {}); // accepted, never read
      return adoptVsockHandle(binding, mine, `kms-proxy#${connects}`);
    },
    listen: async () => {
      throw new Error('unused');
    },
  } as unknown as Transport;
  return { transport, connects: () => connects };
}

const params = {
  kmsKeyArn: 'arn:aws:kms:us-east-1:111122223333:key/k',
  ciphertextBlob: 'A'.repeat(344),
  attestationDocument: 'B'.repeat(6000),
};

it('answers OVERLOADED once the unsent request bytes pass its cap, however many calls time out', async () => {
  const peer = neverReadingPeer();
  const log = captureLogger('warn');
  const maxQueuedBytes = 256 * 1024;
  // A long default deadline: the stall check must not be what bounds the queue here.
  const client = new RpcClient({
    name: 'kms-proxy',
    transport: peer.transport,
    address: 'vsock://3:8000',
    logger: log.logger,
    maxInFlight: 16,
    defaultDeadlineMs: 60_000,
    maxQueuedBytes,
  });
  try {
    await client.waitConnected(1000);
    const reasons: string[] = [];
    for (let wave = 0; wave < 40; wave++) {
      const settled = await Promise.allSettled(Array.from({ length: 16 }, () => client.call('kms.decrypt', params, { deadlineMs: 5 })));
      for (const r of settled) reasons.push(r.status === 'rejected' ? (r.reason as { code: string }).code : 'answered');
    }
    const queued = (client as unknown as { conn: { bufferedBytes: number } }).conn.bufferedBytes;
    // At most the cap plus the calls of one wave that passed the check before it was crossed.
    expect(queued).toBeLessThanOrEqual(maxQueuedBytes + 16 * 6600);
    expect(reasons.filter((r) => r === 'OVERLOADED').length).toBeGreaterThan(400);
    expect(new Set(reasons)).toEqual(new Set(['TIMEOUT', 'OVERLOADED']));
  } finally {
    await client.close();
  }
});

it('drops a connection whose peer takes no bytes for a default deadline, and connects again', async () => {
  const peer = neverReadingPeer();
  const log = captureLogger('warn');
  const client = new RpcClient({
    name: 'kms-proxy',
    transport: peer.transport,
    address: 'vsock://3:8000',
    logger: log.logger,
    defaultDeadlineMs: 100,
    backoff: { initialMs: 1, maxMs: 2 },
  });
  try {
    await client.waitConnected(1000);
    // Enough bytes to fill the socket buffers, so some stay queued here.
    await Promise.allSettled(Array.from({ length: 200 }, () => client.call('kms.decrypt', params, { deadlineMs: 50 })));
    const isDrop = (l: { msg?: unknown }) => /took no bytes for 100 ms; dropping the connection/.test(String(l.msg));
    await waitFor(() => log.lines().some(isDrop), 5000, 'the stalled connection dropped');
    expect(log.lines().find(isDrop)?.unsentBytes).toBeGreaterThan(0);
    await waitFor(() => peer.connects() === 2, 5000, 'a second connection');
    await client.waitConnected(5000);
    expect(peer.connects()).toBe(2);
  } finally {
    await client.close();
  }
});
