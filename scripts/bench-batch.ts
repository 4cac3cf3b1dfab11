/**
 * Warm batched signing through the caller API (`POST /v1/keys/{keyId}/sign-batch`), for the benchmark
 * (scripts/bench.ts calls `measureBatchedWarm`): `concurrency` callers each send batches of `batchSize` distinct
 * digests of one warm key, back to back, for `durationMs`. A batch counts when it is answered 200 with every
 * request signed; any other answer (or a request of it refused) counts as an error, and its time is not in the
 * latencies. Latencies are per batch.
 */
import { Pool } from 'undici';

export interface BatchedWarmOptions {
  /** The caller API, `http://127.0.0.1:PORT`. */
  baseUrl: string;
  /** A token with `keys:sign`. */
  token: string;
  keyId: string;
  /** Requests per batch, 1-100. */
  batchSize: number;
  /** Batches in flight at once (one connection each). */
  concurrency: number;
  durationMs: number;
}

export interface BatchedWarmStats {
  signsPerSec: number;
  batchesPerSec: number;
  /** Per batch, of the batches answered in full. */
  p50Ms: number;
  p99Ms: number;
  /** Batches not answered 200 with every request signed. */
  errors: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

export async function measureBatchedWarm(opts: BatchedWarmOptions): Promise<BatchedWarmStats> {
  if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1 || opts.batchSize > 100) throw new RangeError('batchSize must be 1-100');
  if (!Number.isInteger(opts.concurrency) || opts.concurrency < 1) throw new RangeError('concurrency must be a positive integer');
  if (!(opts.durationMs > 0)) throw new RangeError('durationMs must be positive');
  const pool = new Pool(opts.baseUrl, { connections: opts.concurrency, pipelining: 1 });
  const headers = { authorization: `Bearer ${opts.token}`, 'content-type': 'application/json' };
  const path = `/v1/keys/${encodeURIComponent(opts.keyId)}/sign-batch`;
  const latencies: number[] = [];
  let errors = 0;
  let seq = 0;
  const body = () => {
    const requests = Array.from({ length: opts.batchSize }, () => ({
      type: 'digest',
      digest: `0x${(++seq).toString(16).padStart(64, '0')}`,
    }));
    return JSON.stringify({ requests });
  };
  const started = performance.now();
  const end = started + opts.durationMs;
  const worker = async () => {
    while (performance.now() < end) {
      const payload = body();
      const t = performance.now();
      let ok: boolean;
      try {
        const res = await pool.request({ path, method: 'POST', headers, body: payload });
        const answer = (await res.body.json()) as { results?: Array<{ result?: unknown }> };
        ok = res.statusCode === 200 && answer.results?.length === opts.batchSize && answer.results.every((r) => r.result !== undefined);
      } catch {
        ok = false;
      }
      if (ok) latencies.push(performance.now() - t);
      else errors += 1;
    }
  };
  try {
    await Promise.all(Array.from({ length: opts.concurrency }, worker));
  } finally {
    await pool.close();
  }
  const seconds = (performance.now() - started) / 1000;
  const sorted = latencies.sort((a, b) => a - b);
  return {
    signsPerSec: (latencies.length * opts.batchSize) / seconds,
    batchesPerSec: latencies.length / seconds,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    errors,
  };
}
