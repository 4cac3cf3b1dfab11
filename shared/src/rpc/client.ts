/**
 * Multiplexed JSON-RPC 2.0 client over one long-lived connection.
 *
 * - Many requests in flight, matched by id; responses may arrive in any order.
 * - Every call has a deadline: when it passes the call fails with TIMEOUT and its handler is dropped.
 * - An in-flight cap answers OVERLOADED at once rather than queueing without bound; so does a cap on request
 *   bytes written and not yet taken by the peer (queued transports), and a connection whose peer takes none of
 *   them for a whole default deadline is dropped and re-made: a peer that accepts and never reads cannot make
 *   this process hold more than the cap.
 * - The connection is re-established with capped, jittered exponential backoff, counted over consecutive
 *   failures only: the first attempt after start, and the first after a connection that had been up for a while
 *   dropped, are made at once. While it is down, calls fail fast with a retryable UNAVAILABLE instead of
 *   waiting; calls made during a connection attempt wait for it (within their deadline).
 * - Liveness (the caller's to schedule): `probe` sends one request outside the in-flight cap and tells whether
 *   any answer came in time; `failPending` fails the calls waiting on a connection found dead without closing it.
 */
import { backoffDelay, type BackoffOptions } from '../backoff';
import { fromRpcError, KeystoreError } from '../errors';
import { currentRequestId, type Logger } from '../log';
import type { Transport } from '../transport/types';
import type { MethodName, ParamsOf, ResultOf, RpcApi } from './api';
import { FramedConnection } from './framed-connection';
import { isSuccessEnvelope, ResponseEnvelopeSchema, type RpcId } from './jsonrpc';

/** retryNow starts no attempt sooner than this after the last one. */
const RETRY_NOW_MIN_INTERVAL_MS = 50;

/** A call on a connection being set up, for the handshake. */
export type HandshakeCall<A extends RpcApi> = <M extends MethodName<A>>(method: M, params: ParamsOf<A, M>) => Promise<ResultOf<A, M>>;

export interface RpcClientOptions<A extends RpcApi = RpcApi> {
  name: string;
  transport: Transport;
  address: string;
  logger: Logger;
  maxInFlight?: number;
  defaultDeadlineMs?: number;
  connectTimeoutMs?: number;
  backoff?: BackoffOptions;
  maxFrameBytes?: number;
  /** Request bytes written and not yet taken by the peer above which calls answer OVERLOADED (default 4 MiB). */
  maxQueuedBytes?: number;
  /** Called whenever the connection comes up or goes down. */
  onStateChange?: (connected: boolean) => void;
  /**
   * When set, a call made while the connection is down starts a reconnect attempt at once and waits up to
   * this long (within its deadline) instead of failing fast. For links where a short wait beats an error.
   */
  waitForConnectionMs?: number;
  /**
   * Runs on every new connection before any call may use it, and must finish within `connectTimeoutMs`. If it
   * throws or runs out of time, the connection is closed, the error logged, and the client reconnects with
   * backoff as after a failed connect.
   */
  handshake?: (call: HandshakeCall<A>) => Promise<void>;
  /**
   * Whether the peer takes a `requestId` on the envelope (docs/PROTOCOL.md, "Envelopes"): when this returns
   * true, each call carries the current request id (shared/src/log.ts, `withRequestId`), if there is one. A
   * peer of an older release refuses the field, so it is sent only to peers known to take it.
   */
  sendRequestId?: () => boolean;
  /** Called when each call ends (not handshake calls): its method and outcome ('ok' or the error code). */
  onResult?: (method: string, outcome: string) => void;
}

export interface CallOptions {
  /** Milliseconds from now until the call fails with TIMEOUT. */
  deadlineMs?: number;
  /**
   * The request id to send (when the peer takes one), instead of the current one (shared/src/log.ts): a caller
   * that knows it passes it, so that no async context is needed on its hot path.
   */
  requestId?: string;
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: KeystoreError): void;
  timer: NodeJS.Timeout;
  method: string;
  /** A liveness probe: any answer, result or error, resolves it (true); `failPending` leaves it alone. */
  probe?: true;
}

type State = 'idle' | 'connecting' | 'connected' | 'backoff' | 'closed';

/** A client for the method table `A`: `call` accepts only its methods, their params, and returns their results. */
export class RpcClient<A extends RpcApi = RpcApi> {
  private state: State = 'idle';
  private conn: FramedConnection | null = null;
  private readonly pending = new Map<RpcId, Pending>();
  private nextId = 1;
  /** Consecutive failed attempts (connects, handshakes, connections dropped soon after they came up). */
  private attempt = 0;
  /** When the current connection came up. */
  private upSince = 0;
  /** When the last connection attempt started (for retryNow's bound). */
  private lastAttemptAt = 0;
  private attempts = 0;
  private lastDelayMs: number | undefined;
  /** The attempt under way was made early by retryNow (logged with the reconnect). */
  private hinted = false;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private reconnectAt = 0;
  private connectWaiters: Array<(ok: boolean) => void> = [];
  private readonly maxInFlight: number;
  private readonly defaultDeadlineMs: number;
  private readonly backoff: BackoffOptions;
  private readonly maxQueuedBytes: number;
  /** Runs while the connection has unsent bytes and the peer has taken none of them for a while. */
  private stallTimer: NodeJS.Timeout | null = null;

  constructor(private readonly options: RpcClientOptions<A>) {
    this.maxInFlight = options.maxInFlight ?? 1024;
    this.maxQueuedBytes = options.maxQueuedBytes ?? 4 * 1024 * 1024;
    this.defaultDeadlineMs = options.defaultDeadlineMs ?? 5000;
    this.backoff = options.backoff ?? { initialMs: 50, maxMs: 2000 };
  }

  get connected(): boolean {
    return this.state === 'connected';
  }

  /** Read through a method so TypeScript does not narrow the state across awaits. */
  private isClosed(): boolean {
    return this.state === 'closed';
  }

  /**
   * Connection attempts made, and the delay before the last one that was scheduled after a failure or a drop
   * (0: made at once): what tests read to check the reconnect schedule without timing it.
   */
  get reconnects(): { attempts: number; lastDelayMs: number | undefined } {
    return { attempts: this.attempts, lastDelayMs: this.lastDelayMs };
  }

  /** Calls waiting for an answer (for tests and metrics: must return to 0, no leaked handlers). */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** Starts connecting; reconnects on its own until close(). */
  start(): void {
    if (this.state === 'idle') void this.connect();
  }

  /** Resolves once connected, or rejects with UNAVAILABLE after `timeoutMs`. */
  async waitConnected(timeoutMs: number): Promise<void> {
    this.start();
    const until = Date.now() + timeoutMs;
    while (!this.connected) {
      if (this.state === 'closed') throw this.unavailable('client is closed');
      const left = until - Date.now();
      if (left <= 0) throw this.unavailable(`not connected after ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 50));
        this.connectWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async call<M extends MethodName<A>>(method: M, params: ParamsOf<A, M>, options: CallOptions = {}): Promise<ResultOf<A, M>> {
    const deadlineMs = options.deadlineMs ?? this.defaultDeadlineMs;
    const startedAt = Date.now();
    if (this.state === 'idle') this.start();
    const waitMs = this.options.waitForConnectionMs ?? 0;
    if (this.state === 'backoff' && waitMs > 0) this.reconnectNow();
    if (this.state === 'connecting') {
      const ok = await this.waitForAttempt(Math.min(deadlineMs, waitMs > 0 ? waitMs : deadlineMs));
      if (!ok && this.state === 'connecting') throw this.timeout(method, deadlineMs);
    }
    const conn = this.conn;
    if (this.state !== 'connected' || !conn) {
      throw this.unavailable(this.state === 'closed' ? 'client is closed' : `not connected to ${this.options.address}; reconnecting`);
    }
    if (this.pending.size >= this.maxInFlight) {
      throw new KeystoreError('OVERLOADED', `${this.options.name}: more than ${this.maxInFlight} requests in flight`);
    }
    if (conn.bufferedBytes > this.maxQueuedBytes) {
      throw new KeystoreError(
        'OVERLOADED',
        `${this.options.name}: ${conn.bufferedBytes} request bytes not yet taken by ${this.options.address}`,
      );
    }
    const remaining = deadlineMs - (Date.now() - startedAt);
    if (remaining <= 0) throw this.timeout(method, deadlineMs);
    const requestId = this.options.sendRequestId?.() ? (options.requestId ?? currentRequestId()) : undefined;
    const answer = this.request(conn, method, params, remaining, deadlineMs, requestId) as Promise<ResultOf<A, M>>;
    const onResult = this.options.onResult;
    if (!onResult) return answer;
    return answer.then(
      (result) => {
        onResult(method, 'ok');
        return result;
      },
      (err: unknown) => {
        onResult(method, err instanceof KeystoreError ? err.code : 'INTERNAL');
        throw err;
      },
    );
  }

  /** Sends one request on `conn` and waits up to `remainingMs` for its answer. */
  private request(
    conn: FramedConnection,
    method: string,
    params: unknown,
    remainingMs: number,
    deadlineMs = remainingMs,
    requestId?: string,
  ): Promise<unknown> {
    const id = this.nextId++;
    return new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) reject(this.timeout(method, deadlineMs));
      }, remainingMs);
      this.pending.set(id, { resolve, reject, timer, method });
      try {
        conn.send({ jsonrpc: '2.0', id, method, params, ...(requestId ? { requestId } : {}) });
        if (conn.bufferedBytes > 0) this.watchStall(conn);
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new KeystoreError('INVALID_PARAMS', `${method}: request could not be framed (${(err as Error).message})`, { cause: err }));
      }
    });
  }

  /**
   * A liveness probe: sends `method` on the connection, outside the in-flight and queued-bytes caps, and
   * resolves true when the peer answers it (a result or an error: either proves the peer reads and answers)
   * within `timeoutMs`, false when it does not or the connection is not up. Never rejects.
   */
  probe<M extends MethodName<A>>(method: M, params: ParamsOf<A, M>, timeoutMs: number): Promise<boolean> {
    const conn = this.conn;
    if (this.state !== 'connected' || !conn) return Promise.resolve(false);
    const id = this.nextId++;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) resolve(false);
      }, timeoutMs);
      this.pending.set(id, { resolve: () => resolve(true), reject: () => resolve(false), timer, method, probe: true });
      try {
        conn.send({ jsonrpc: '2.0', id, method, params });
      } catch {
        clearTimeout(timer);
        this.pending.delete(id);
        resolve(false);
      }
    });
  }

  /**
   * Fails every call waiting for an answer (probes aside) with UNAVAILABLE now, keeping the connection: for a
   * peer found unresponsive, whose callers would otherwise wait out their deadlines. An answer that arrives
   * later is dropped, like one after its deadline. Returns how many calls were failed.
   */
  failPending(why: string): number {
    let failed = 0;
    for (const [id, p] of this.pending) {
      if (p.probe) continue;
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(this.unavailable(`${p.method}: ${why}`));
      failed += 1;
    }
    return failed;
  }

  /**
   * While waiting to reconnect, tries now instead (the peer is known to be back), or as soon as
   * RETRY_NOW_MIN_INTERVAL_MS have passed since the last attempt: a flood of hints cannot turn into a flood of
   * connects. Returns whether it moved the next attempt earlier.
   */
  retryNow(): boolean {
    if (this.state !== 'backoff') return false;
    const wait = Math.max(0, RETRY_NOW_MIN_INTERVAL_MS - (Date.now() - this.lastAttemptAt));
    if (this.reconnectTimer && this.reconnectAt <= Date.now() + wait) return false;
    this.hinted = true;
    if (wait === 0) this.reconnectNow();
    else this.armReconnect(wait);
    return true;
  }

  /** Stops reconnecting, fails pending calls with UNAVAILABLE and closes the connection. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.clearStall();
    this.failAll('client closed');
    this.conn?.destroy();
    this.conn = null;
    this.notifyWaiters(false);
  }

  private waitForAttempt(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.connectWaiters.push((ok) => {
        clearTimeout(timer);
        resolve(ok);
      });
    });
  }

  private notifyWaiters(ok: boolean): void {
    for (const w of this.connectWaiters.splice(0)) w(ok);
  }

  private async connect(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'connecting';
    this.attempts += 1;
    this.lastAttemptAt = Date.now();
    const hinted = this.hinted;
    this.hinted = false;
    const { transport, address, logger, name } = this.options;
    try {
      const raw = await transport.connect(address, { timeoutMs: this.options.connectTimeoutMs ?? 2000 });
      if (this.isClosed()) {
        raw.destroy();
        return;
      }
      const framed: FramedConnection = new FramedConnection(
        raw,
        {
          message: (msg) => this.onMessage(msg),
          close: ({ protocolError, error }) => this.onClose(framed, protocolError ?? error?.message),
          // The peer took bytes: restart the stall clock, or stop it once everything is sent.
          flushed: (unsent) => {
            this.clearStall();
            if (unsent > 0) this.watchStall(framed);
          },
        },
        this.options.maxFrameBytes,
      );
      this.conn = framed;
      if (this.options.handshake) {
        // Still 'connecting': calls wait for the handshake, and a close now fails only its own requests. The
        // whole handshake, however many calls it makes, ends within connectTimeoutMs.
        const timeoutMs = this.options.connectTimeoutMs ?? 2000;
        const until = Date.now() + timeoutMs;
        const call = ((method: string, params: unknown) =>
          this.request(framed, method, params, Math.max(1, until - Date.now()), timeoutMs)) as HandshakeCall<A>;
        let timer: NodeJS.Timeout | undefined;
        const expired = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new KeystoreError('TIMEOUT', `${name}: handshake not done within ${timeoutMs} ms`)), timeoutMs);
        });
        try {
          await Promise.race([this.options.handshake(call), expired]);
        } catch (err) {
          if (this.conn === framed) this.conn = null;
          framed.destroy();
          throw err;
        } finally {
          clearTimeout(timer);
        }
        if (this.isClosed() || this.conn !== framed) {
          framed.destroy();
          if (!this.isClosed()) throw new Error('the connection closed during the handshake');
          return;
        }
      }
      this.state = 'connected';
      this.upSince = Date.now();
      if (this.attempt > 0 || hinted)
        logger.info({ address, attempts: this.attempt, ...(hinted ? { early: true } : {}) }, `${name} reconnected`);
      else logger.debug({ address }, `${name} connected`);
      // `attempt` is cleared once the connection has stayed up (onClose): one that drops at once keeps backing off.
      this.options.onStateChange?.(true);
      this.notifyWaiters(true);
    } catch (err) {
      if (this.isClosed()) return;
      const level = this.attempt === 0 ? 'warn' : 'debug';
      logger[level]({ address, attempt: this.attempt, error: (err as Error).message }, `${name} connect failed`);
      this.scheduleReconnect();
      this.notifyWaiters(false);
    }
  }

  private reconnectNow(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    void this.connect();
  }

  /** Reconnects after `backoffDelay` of the failures so far, or at once with `now` (not counted as a failure). */
  private scheduleReconnect(now = false): void {
    this.state = 'backoff';
    const delay = now ? 0 : backoffDelay(this.attempt, this.backoff);
    if (!now) this.attempt += 1;
    this.lastDelayMs = delay;
    this.armReconnect(delay);
  }

  private armReconnect(delay: number): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectAt = Date.now() + delay;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.connect();
    }, delay);
    this.reconnectTimer.unref();
  }

  /** Drops `conn` if its peer takes none of its unsent bytes within a default deadline. */
  private watchStall(conn: FramedConnection): void {
    if (this.stallTimer) return;
    this.stallTimer = setTimeout(() => {
      this.stallTimer = null;
      if (this.conn !== conn || conn.bufferedBytes === 0) return;
      this.options.logger.warn(
        { address: this.options.address, unsentBytes: conn.bufferedBytes },
        `${this.options.name}: the peer took no bytes for ${this.defaultDeadlineMs} ms; dropping the connection`,
      );
      conn.destroy();
    }, this.defaultDeadlineMs);
    this.stallTimer.unref();
  }

  private clearStall(): void {
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = null;
  }

  private onClose(framed: FramedConnection, why: string | undefined): void {
    if (this.conn !== framed) return;
    this.conn = null;
    this.clearStall();
    this.failAll(`connection to ${this.options.address} lost${why ? ` (${why})` : ''}`);
    // During a handshake the failed handshake reconnects; the connection never counted as up.
    if (this.state === 'closed' || this.state === 'connecting') return;
    this.options.logger.warn({ address: this.options.address, why }, `${this.options.name} connection closed; reconnecting`);
    this.options.onStateChange?.(false);
    // A connection that stayed up for a while (at least the longest backoff) ends the run of failures: the
    // first attempt after it is made at once (the peer restarted, or a connection was dropped on purpose). One
    // that drops soon after it came up counts as a failure, so a peer that accepts and closes is not hammered.
    const stable = Date.now() - this.upSince >= this.backoff.maxMs;
    if (stable) this.attempt = 0;
    this.scheduleReconnect(stable);
  }

  private onMessage(msg: unknown): void {
    // A result answer is checked without zod (isSuccessEnvelope: the schema's rules); anything else goes through the schema.
    const parsed = isSuccessEnvelope(msg) ? { success: true as const, data: msg } : ResponseEnvelopeSchema.safeParse(msg);
    if (!parsed.success) {
      this.options.logger.warn({ address: this.options.address }, `${this.options.name}: ignored a malformed response`);
      return;
    }
    const res = parsed.data;
    if (res.id === null) {
      this.options.logger.warn(
        { error: 'error' in res ? res.error.message : undefined },
        `${this.options.name}: peer reported an error for an unidentifiable request`,
      );
      return;
    }
    const p = this.pending.get(res.id);
    if (!p) return; // answered after its deadline: the caller already has TIMEOUT
    this.pending.delete(res.id);
    clearTimeout(p.timer);
    if (p.probe) p.resolve(true);
    else if ('error' in res) p.reject(fromRpcError(res.error));
    else p.resolve(res.result);
  }

  private failAll(why: string): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(this.unavailable(`${p.method}: ${why}`));
    }
  }

  private unavailable(why: string): KeystoreError {
    return new KeystoreError('UNAVAILABLE', `${this.options.name}: ${why}`);
  }

  private timeout(method: string, deadlineMs: number): KeystoreError {
    return new KeystoreError('TIMEOUT', `${this.options.name}: ${method} got no answer within ${deadlineMs} ms`);
  }
}
