/**
 * Signing on worker threads, so the main thread keeps serving I/O while signatures are computed.
 *
 * - `size` ≥ 1 (`signing.workers`, default vCPUs − 1): every request is hashed and signed on one of `size`
 *   threads, the least loaded (costly requests are spread first), except that a cheap request is signed on
 *   the main thread when every thread holds costly work: it would otherwise wait behind that work (up to a
 *   few hundred milliseconds for typed data at the budget's limit), as it would with one thread, the default
 *   on a 2-vCPU enclave.
 * - `size` 0 (one vCPU): cheap requests (digests, authorizations, and messages, transactions and user
 *   operations of a few KiB; `needsSignerThread`) are signed inline on the main thread, and everything else,
 *   typed data always, goes to one dedicated thread. Typed data is never hashed on the main thread, so even a
 *   request at the complexity budget's limit cannot stall other callers or health checks; the OS shares the
 *   CPU between the two threads.
 *
 * Every job on a thread has a deadline (`signing.deadlineMs`), counted from when the thread starts it (a
 * thread runs its jobs one at a time, in order, once it has loaded the bundle). A job still running at its
 * deadline answers TIMEOUT; its thread is terminated and replaced, and the jobs queued behind it fail with a
 * retryable UNAVAILABLE rather than wait. A thread that dies on its own fails its jobs the same way and is
 * replaced.
 *
 * The decrypted key stays in the main thread's cache (the one that bounds, expires and zeroes it). For each
 * job a thread receives a fresh copy of the 32-byte secret, *transferred* (its memory moves to the worker and
 * the main thread keeps only a detached, empty view), and zeroes it after signing (see crypto/secp256k1.ts, signDigest, for what
 * cannot be zeroed). The workers run this same bundle (entry `runSignerWorker`), so the image needs no extra
 * file.
 */
import { Worker, parentPort, workerData, isMainThread } from 'node:worker_threads';
import { KeystoreError } from '@nks/shared/errors';
import type { SignRequest, SignResult } from '@nks/shared/signing/schema';
import { signRequest } from './sign';

interface Job {
  id: number;
  request: SignRequest;
  secret: Uint8Array;
  address: `0x${string}`;
}

type Answer = { id: number; result: SignResult } | { id: number; error: { code: string; message: string } };
/** A thread's first message: the bundle is loaded and jobs are being taken (deadlines start from here). */
type Ready = { ready: true };

export const SIGNER_ROLE = 'nitro-keystore-signer';
export const DEFAULT_SIGNING_DEADLINE_MS = 2000;

export interface SignerPoolOptions {
  /** How long one job may run on its thread before the thread is replaced and the job answers TIMEOUT. */
  deadlineMs?: number;
}

/** True in a thread started by SignerPool: the bundle's entry point runs the signer loop instead of main. */
export function isSignerWorker(): boolean {
  return !isMainThread && (workerData as { role?: string } | null)?.role === SIGNER_ROLE;
}

/**
 * Beyond these sizes a request takes more than a couple of milliseconds to hash (viem serializes a transaction
 * twice at ~6 µs per access-list entry; 128 KiB of message text takes ~12 ms here), so it goes to a thread too.
 */
const INLINE_MAX_BYTES = 16 * 1024;
const INLINE_MAX_ACCESS_LIST_ENTRIES = 64;

/**
 * Requests that must not be hashed on the main thread: typed data always (its cost is bounded by the budget,
 * not small), and messages, transactions and user operations carrying more than a few KiB or a long access
 * list. Digests and authorizations are always cheap.
 */
export function needsSignerThread(request: SignRequest): boolean {
  switch (request.type) {
    case 'digest':
    case 'authorization':
      return false;
    case 'typedData':
      return true;
    case 'message':
      return (typeof request.message === 'string' ? request.message.length : request.message.raw.length / 2) > INLINE_MAX_BYTES;
    case 'transaction': {
      const tx = request.transaction;
      const entries = ('accessList' in tx && tx.accessList ? tx.accessList : []).reduce((n, e) => n + 1 + e.storageKeys.length, 0);
      return (tx.data?.length ?? 0) / 2 > INLINE_MAX_BYTES || entries > INLINE_MAX_ACCESS_LIST_ENTRIES;
    }
    case 'userOperation': {
      const fields = Object.values(request.userOperation as Record<string, unknown>);
      return fields.reduce<number>((n, v) => n + (typeof v === 'string' ? v.length / 2 : 0), 0) > INLINE_MAX_BYTES;
    }
  }
}

/**
 * Signs, turning any failure into a KeystoreError whose message is safe to pass on; the original is only its
 * `cause`, never sent (a signer thread passes on code and message alone).
 */
function signSafely(request: SignRequest, secret: Uint8Array, address: `0x${string}`): SignResult {
  try {
    return signRequest(request, secret, address);
  } catch (err) {
    throw err instanceof KeystoreError ? err : new KeystoreError('INTERNAL', 'signing failed', { cause: err });
  }
}

export function runSignerWorker(): void {
  const port = parentPort;
  if (!port) throw new Error('runSignerWorker must run in a worker thread');
  port.on('message', (job: Job) => {
    let answer: Answer;
    try {
      answer = { id: job.id, result: signSafely(job.request, job.secret, job.address) };
    } catch (err) {
      const ke = err as KeystoreError;
      answer = { id: job.id, error: { code: ke.code, message: ke.message } };
    } finally {
      // The transferred copy: its memory now belongs to this thread only.
      job.secret.fill(0);
    }
    port.postMessage(answer);
  });
  port.postMessage({ ready: true } satisfies Ready);
}

interface Slot {
  worker: Worker;
  /** Ids of the jobs sent to this thread, in the order it runs them; the first is running. */
  queue: number[];
  /** Costly jobs (typed data, large payloads) among them. */
  heavy: number;
  /** The thread has loaded the bundle and takes jobs. */
  online: boolean;
  /** The running job's deadline. */
  timer: NodeJS.Timeout | undefined;
  /** Set once the slot's jobs were failed and a replacement spawned (timeout, exit or close). */
  retired: boolean;
}

interface Pending {
  resolve(r: SignResult): void;
  reject(e: Error): void;
  slot: Slot;
  heavy: boolean;
}

export class SignerPool {
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, Pending>();
  /** With no signer threads configured, cheap requests are signed on the calling thread. */
  private readonly inline: boolean;
  private readonly deadlineMs: number;
  private nextId = 1;
  private closed = false;
  /** Jobs that ran past the deadline, and threads replaced for any reason. */
  timeouts = 0;
  replacements = 0;

  constructor(
    size: number,
    private readonly script: string,
    private readonly onError: (message: string, err?: Error) => void = () => undefined,
    options: SignerPoolOptions = {},
  ) {
    if (!Number.isInteger(size) || size < 0) throw new Error('signer pool size must be a non-negative integer');
    this.deadlineMs = options.deadlineMs ?? DEFAULT_SIGNING_DEADLINE_MS;
    if (!(this.deadlineMs > 0)) throw new Error('signing deadline must be positive');
    this.inline = size === 0;
    // With size 0, one thread for the costly requests (typed data always).
    for (let i = 0; i < Math.max(1, size); i++) this.slots.push(this.spawn());
  }

  /** Signer threads running (for tests and health). */
  get threads(): number {
    return this.slots.length;
  }

  private spawn(): Slot {
    const worker = new Worker(this.script, { workerData: { role: SIGNER_ROLE } });
    const slot: Slot = { worker, queue: [], heavy: 0, online: false, timer: undefined, retired: false };
    worker.on('message', (m: Answer | Ready) => {
      if ('ready' in m) {
        slot.online = true;
        this.armDeadline(slot);
      } else this.answered(slot, m);
    });
    worker.on('error', (err) => this.onError(`signer thread failed: ${err.message}`, err));
    worker.on('exit', () => {
      if (slot.retired) return;
      this.retire(
        slot,
        undefined,
        new KeystoreError('UNAVAILABLE', this.closed ? 'the enclave is shutting down' : 'a signer thread stopped; retry', {
          retryable: true,
        }),
      );
    });
    worker.unref();
    return slot;
  }

  private answered(slot: Slot, a: Answer): void {
    const p = this.pending.get(a.id);
    if (!p || p.slot !== slot) return; // already failed (deadline or shutdown)
    this.pending.delete(a.id);
    const i = slot.queue.indexOf(a.id);
    if (i >= 0) slot.queue.splice(i, 1);
    if (p.heavy) slot.heavy -= 1;
    if (i === 0) {
      clearTimeout(slot.timer);
      slot.timer = undefined;
      this.armDeadline(slot);
    }
    if ('result' in a) p.resolve(a.result);
    else p.reject(new KeystoreError(a.error.code as never, a.error.message));
  }

  /** Starts the deadline of the job the thread is running now, if any and not already started. */
  private armDeadline(slot: Slot): void {
    if (!slot.online || slot.retired || slot.timer !== undefined) return;
    const running = slot.queue[0];
    if (running === undefined) return;
    slot.timer = setTimeout(() => {
      slot.timer = undefined;
      if (slot.retired || slot.queue[0] !== running) return;
      this.timeouts += 1;
      this.onError(`a signing job ran past its ${this.deadlineMs} ms deadline; replacing its signer thread`);
      this.retire(slot, running, new KeystoreError('UNAVAILABLE', 'a signer thread was replaced; retry', { retryable: true }));
    }, this.deadlineMs);
    slot.timer.unref();
  }

  /**
   * Fails every job the slot holds (`timedOut` with TIMEOUT, the others with `others`), terminates its
   * thread and puts a fresh one in its place unless the pool is closing.
   */
  private retire(slot: Slot, timedOut: number | undefined, others: KeystoreError): void {
    slot.retired = true;
    clearTimeout(slot.timer);
    slot.timer = undefined;
    for (const id of slot.queue) {
      const p = this.pending.get(id);
      if (!p) continue;
      this.pending.delete(id);
      p.reject(id === timedOut ? new KeystoreError('TIMEOUT', `signing did not finish within ${this.deadlineMs} ms`) : others);
    }
    slot.queue = [];
    slot.heavy = 0;
    void slot.worker.terminate().catch(() => undefined);
    const i = this.slots.indexOf(slot);
    if (i >= 0 && !this.closed) {
      this.slots[i] = this.spawn();
      this.replacements += 1;
    }
  }

  sign(request: SignRequest, secret: Uint8Array, address: `0x${string}`): Promise<SignResult> {
    if (this.closed) return Promise.reject(new KeystoreError('UNAVAILABLE', 'the enclave is shutting down'));
    const heavy = needsSignerThread(request);
    // The thread holding the fewest costly jobs, then the fewest jobs.
    let slot = this.slots[0] as Slot;
    for (const s of this.slots) if (s.heavy < slot.heavy || (s.heavy === slot.heavy && s.queue.length < slot.queue.length)) slot = s;
    // A cheap request is signed here when there are no signer threads, or when every thread is busy with
    // costly work it would otherwise wait behind (with one signer thread, the default on a 2-vCPU enclave).
    if (!heavy && (this.inline || slot.heavy > 0)) {
      try {
        return Promise.resolve(signSafely(request, secret, address));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    const id = this.nextId++;
    // A fresh copy on its own ArrayBuffer (off the V8 heap), moved to the worker, which zeroes it.
    const copy = new Uint8Array(new ArrayBuffer(secret.length));
    copy.set(secret);
    return new Promise<SignResult>((resolve, reject) => {
      try {
        slot.worker.postMessage({ id, request, secret: copy, address } satisfies Job, [copy.buffer]);
      } catch (err) {
        copy.fill(0);
        reject(new KeystoreError('INTERNAL', 'could not hand the request to a signer thread', { cause: err }));
        return;
      }
      this.pending.set(id, { resolve, reject, slot, heavy });
      slot.queue.push(id);
      if (heavy) slot.heavy += 1;
      this.armDeadline(slot);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const slots = [...this.slots];
    for (const slot of slots)
      if (!slot.retired) this.retire(slot, undefined, new KeystoreError('UNAVAILABLE', 'the enclave is shutting down'));
    await Promise.all(slots.map((s) => s.worker.terminate().catch(() => undefined)));
  }
}
