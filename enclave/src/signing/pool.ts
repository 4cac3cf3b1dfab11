/**
 * Signing on worker threads, sized to the enclave's vCPUs, so the main thread keeps serving I/O while
 * signatures are computed and several are computed at once.
 *
 * The decrypted key stays in the main thread's cache (the one that bounds, expires and zeroes it). For each
 * request a worker receives a copy of the 32-byte secret with the parsed request, signs, zeroes its copy and
 * answers. The workers run this same bundle (entry `runSignerWorker`), so the image needs no extra file.
 */
import { Worker, parentPort, workerData, isMainThread } from 'node:worker_threads';
import { KeystoreError } from '../../../shared/src/errors';
import type { SignRequest, SignResult } from '../../../shared/src/signing/schema';
import { signRequest } from './sign';

interface Job {
  id: number;
  request: SignRequest;
  secret: Uint8Array;
  address: `0x${string}`;
}

type Answer = { id: number; result: SignResult } | { id: number; error: { reason: string; message: string } };

export const SIGNER_ROLE = 'nitro-keystore-signer';

/** True in a thread started by SignerPool: the bundle's entry point runs the signer loop instead of main. */
export function isSignerWorker(): boolean {
  return !isMainThread && (workerData as { role?: string } | null)?.role === SIGNER_ROLE;
}

export function runSignerWorker(): void {
  const port = parentPort;
  if (!port) throw new Error('runSignerWorker must run in a worker thread');
  port.on('message', (job: Job) => {
    let answer: Answer;
    try {
      answer = { id: job.id, result: signRequest(job.request, job.secret, job.address) };
    } catch (err) {
      const ke = err instanceof KeystoreError ? err : new KeystoreError('INTERNAL', 'signing failed');
      answer = { id: job.id, error: { reason: ke.reason, message: ke.message } };
    } finally {
      job.secret.fill(0);
    }
    port.postMessage(answer);
  });
}

interface Slot {
  worker: Worker;
  busy: number;
}

export class SignerPool {
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, { resolve(r: SignResult): void; reject(e: Error): void; slot: Slot }>();
  private nextId = 1;
  private closed = false;

  constructor(
    size: number,
    private readonly script: string,
    private readonly onError: (message: string) => void = () => undefined,
  ) {
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    const worker = new Worker(this.script, { workerData: { role: SIGNER_ROLE } });
    const slot: Slot = { worker, busy: 0 };
    worker.on('message', (a: Answer) => {
      const p = this.pending.get(a.id);
      if (!p) return;
      this.pending.delete(a.id);
      slot.busy -= 1;
      if ('result' in a) p.resolve(a.result);
      else p.reject(new KeystoreError(a.error.reason as never, a.error.message));
    });
    worker.on('error', (err) => this.onError(`signer thread failed: ${err.message}`));
    worker.on('exit', () => {
      // Fail what it held; replace it unless the pool is closing.
      for (const [id, p] of this.pending) {
        if (p.slot !== slot) continue;
        this.pending.delete(id);
        p.reject(new KeystoreError('INTERNAL', 'a signer thread stopped; retry', { retryable: true }));
      }
      const i = this.slots.indexOf(slot);
      if (i >= 0 && !this.closed) this.slots[i] = this.spawn();
    });
    worker.unref();
    return slot;
  }

  sign(request: SignRequest, secret: Uint8Array, address: `0x${string}`): Promise<SignResult> {
    if (this.closed) return Promise.reject(new KeystoreError('UNAVAILABLE', 'the enclave is shutting down'));
    let slot = this.slots[0] as Slot;
    for (const s of this.slots) if (s.busy < slot.busy) slot = s;
    const id = this.nextId++;
    slot.busy += 1;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, slot });
      // postMessage copies the secret into the worker, which zeroes its copy after signing.
      slot.worker.postMessage({ id, request, secret, address } satisfies Job);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
