/**
 * Found by the attacker review of issue 24 (the parent as attacker): keys.signBatch's warm path skipped the
 * `cache.holds` re-check that keys.sign makes after `await this.reach(p)`. Frames that arrive in one chunk are dispatched synchronously one after another, so a
 * keys.forget (or a cache.configure that evicts) sent right behind a batch runs between the batch's cache lookup
 * and its signatures: the batch then signed with the zeroed secret of the dropped entry. keys.sign, in the same
 * situation, answers UNAVAILABLE (retryable) without touching the secret; the batch must answer the same.
 */
import net from 'node:net';
import type { CreateResult } from '@nks/shared/enclave-api';
import { encodeFrame, FrameDecoder } from '@nks/shared/framing';
import { simulatedSocketPath } from '@nks/shared/transport';
import { tempRunDir } from '@nks/shared-test/helpers';
import { digestOf, ENCLAVE_ADDRESS, startEnclaveHarness, type EnclaveHarness } from './harness';

type Answer = { id: number; result?: unknown; error?: { code: number; message: string; data?: Record<string, unknown> } };

/** Sends all `calls` in ONE socket write (several frames in one chunk) and collects the answers by id. */
async function burst(runDir: string, calls: Array<{ id: number; method: string; params: unknown }>): Promise<Map<number, Answer>> {
  const socket = net.connect(simulatedSocketPath(runDir, ENCLAVE_ADDRESS));
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const decoder = new FrameDecoder(8 * 1024 * 1024);
  const answers = new Map<number, Answer>();
  const done = new Promise<void>((resolve) => {
    socket.on('data', (chunk) => {
      for (const p of decoder.push(chunk)) {
        const a = JSON.parse(p.toString('utf8')) as Answer;
        answers.set(a.id, a);
      }
      if (answers.size === calls.length) resolve();
    });
  });
  socket.write(Buffer.concat(calls.map((c) => encodeFrame(Buffer.from(JSON.stringify({ jsonrpc: '2.0', ...c })), 8 * 1024 * 1024))));
  await done;
  socket.destroy();
  return answers;
}

describe('a batch racing a forget of its warm key', () => {
  let h: EnclaveHarness;
  let n = 0;
  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-rv-race-'));
  }, 60_000);
  afterAll(async () => {
    await h?.stop();
  });

  const warmKey = async (): Promise<CreateResult> => {
    const key = await h.create(`rv-race-${++n}`);
    await h.signDigest(key, 1); // unsealed and cached
    return key;
  };
  const base = (key: CreateResult) => ({ keyId: key.keyId, blob: key.blob, record: key.record, project: h.defaultProject });

  it('keys.sign followed in the same chunk by keys.forget: UNAVAILABLE, retryable (the reference behaviour)', async () => {
    const key = await warmKey();
    const a = await burst(h.runDir, [
      { id: 1, method: 'keys.sign', params: { ...base(key), request: { type: 'digest', digest: digestOf(7) } } },
      { id: 2, method: 'keys.forget', params: { keyId: key.keyId } },
    ]);
    expect(a.get(2)?.result).toEqual({ keyId: key.keyId, forgotten: true });
    expect(a.get(1)?.error?.data).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
  }, 30_000);

  it('keys.signBatch followed in the same chunk by keys.forget answers as keys.sign does (not INTERNAL per item)', async () => {
    const key = await warmKey();
    const a = await burst(h.runDir, [
      {
        id: 1,
        method: 'keys.signBatch',
        params: {
          ...base(key),
          requests: [
            { type: 'digest', digest: digestOf(7) },
            { type: 'digest', digest: digestOf(8) },
          ],
        },
      },
      { id: 2, method: 'keys.forget', params: { keyId: key.keyId } },
    ]);
    expect(a.get(2)?.result).toEqual({ keyId: key.keyId, forgotten: true });
    const batch = a.get(1)!;
    // What it answered before the fix: each item INTERNAL "signing failed" (libsecp256k1 refused the zeroed secret), i.e.
    // the batch went on to sign with a secret the cache had already zeroed.
    const items = (batch.result as { results?: Array<{ error?: { code: string; message: string } }> } | undefined)?.results;
    const itemCodes = items?.map((r) => r.error?.code ?? 'ok');
    expect(itemCodes).toBeUndefined(); // before the fix (review of issue 24): ['INTERNAL', 'INTERNAL']; the whole batch should be refused, as keys.sign is
    expect(batch.error?.data).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
  }, 30_000);

  it('a resize racing a batch: cache.configure {ttlMs: 1000} right behind it answers as keys.sign does', async () => {
    const [single, batched] = [await warmKey(), await warmKey()];
    // Both unsealed more than the image's minimum TTL ago: a parent's cache.configure at that minimum expires them.
    await new Promise((r) => setTimeout(r, 1_200));
    const s = await burst(h.runDir, [
      { id: 1, method: 'keys.sign', params: { ...base(single), request: { type: 'digest', digest: digestOf(9) } } },
      { id: 2, method: 'cache.configure', params: { ttlMs: 1_000 } },
    ]);
    expect(s.get(1)?.error?.data).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
    await h.client.call('cache.configure', {});
    await h.signDigest(batched, 2); // warm again
    await new Promise((r) => setTimeout(r, 1_200));
    const b = await burst(h.runDir, [
      { id: 1, method: 'keys.signBatch', params: { ...base(batched), requests: [{ type: 'digest', digest: digestOf(9) }] } },
      { id: 2, method: 'cache.configure', params: { ttlMs: 1_000 } },
    ]);
    await h.client.call('cache.configure', {});
    const items = (b.get(1)?.result as { results?: Array<{ error?: { code: string } }> } | undefined)?.results;
    expect(items?.map((r) => r.error?.code ?? 'ok')).toBeUndefined(); // before the fix (review of issue 24): ['INTERNAL']
    expect(b.get(1)?.error?.data).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
  }, 30_000);
});
