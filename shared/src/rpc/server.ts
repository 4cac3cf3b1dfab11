/**
 * JSON-RPC 2.0 server over framed connections. Requests on one connection run concurrently and are answered
 * in completion order. A bad frame or bad JSON closes only the connection it came on; every other connection
 * keeps being served.
 *
 * Everything a peer can make the server hold is bounded (the peer is untrusted: for the enclave it is the
 * parent):
 * - requests executing: at most `maxConcurrent` overall and `maxInFlightPerConnection` per connection, and at
 *   most `maxInFlightBytes` / `maxInFlightBytesPerConnection` of request payload; beyond any of these a request
 *   is answered OVERLOADED at once, without executing;
 * - answers written but not yet sent (a peer that does not read): above `unsentHighWaterBytes` on a connection
 *   (or above `unsentLowWaterBytes` while all connections together hold more than `maxUnsentBytes`), the server
 *   stops reading that connection until its backlog drains to `unsentLowWaterBytes`; a connection still
 *   paused after `unsentDrainTimeoutMs`, or whose backlog passes `maxUnsentBytesPerConnection` (answers of
 *   requests already executing when it paused), is closed and logged;
 * - connections: at most `maxConnections`; more are closed on arrival and logged.
 * The unsent-bytes rules need a transport that queues writes (`writeMode: 'queued'`): both the simulated
 * transport and the vsock addon (enclave/native/vsock.c) do. On a `'blocking'` transport nothing would be
 * queued in the process and a peer that does not read would stall the writer instead.
 */
import type { z } from 'zod';
import { KeystoreError, toRpcError } from '../errors';
import { withRequestId, type Logger } from '../log';
import { parseOrThrow, describeIssues } from '../schema';
import type { Connection, Listener, Transport } from '../transport/types';
import { DEFAULT_MAX_FRAME_BYTES } from '../framing';
import { FramedConnection } from './framed-connection';
import { errorResponse, isRequestEnvelope, recoverId, RequestEnvelopeSchema, successResponse } from './jsonrpc';

export interface RpcCallContext {
  method: string;
  connection: string;
  /** The envelope's `requestId` (validated), for log lines only; the handler runs with it as the current request id. */
  requestId?: string;
}

export interface RpcMethod<S extends z.ZodType = z.ZodType> {
  params: S;
  handler(params: z.output<S>, ctx: RpcCallContext): unknown;
}

/** Helps TypeScript infer the params type of each method from its schema. */
export function rpcMethod<S extends z.ZodType>(params: S, handler: (params: z.output<S>, ctx: RpcCallContext) => unknown): RpcMethod<S> {
  return { params, handler };
}

/** Per-connection and global bounds on what peers can make the server hold. Every field has a safe default. */
export interface RpcServerLimits {
  /** Requests executing at once on one connection; beyond it OVERLOADED. Default 2048 (the parent's pool sends up to 2048 per connection). */
  maxInFlightPerConnection?: number;
  /** Request payload bytes executing at once on one connection; beyond it OVERLOADED. Default 16 MiB (at least maxFrameBytes). */
  maxInFlightBytesPerConnection?: number;
  /** Request payload bytes executing at once across all connections; beyond it OVERLOADED. Default 64 MiB (at least maxFrameBytes). */
  maxInFlightBytes?: number;
  /** Unsent answer bytes on one connection above which the server stops reading it. Default 4 MiB. */
  unsentHighWaterBytes?: number;
  /** A paused connection is read again once its unsent bytes drain to this. Default 1 MiB. */
  unsentLowWaterBytes?: number;
  /** Unsent answer bytes on one connection beyond which it is closed at once. Default 16 MiB. */
  maxUnsentBytesPerConnection?: number;
  /** Unsent bytes of all connections together above which every connection with more than the low-water mark pauses. Default 64 MiB. */
  maxUnsentBytes?: number;
  /** A connection paused for its backlog that has not drained to the low-water mark within this is closed. Default 30 s. */
  unsentDrainTimeoutMs?: number;
  /** Open connections at once; more are closed on arrival. Default 64. */
  maxConnections?: number;
}

export interface RpcServerOptions extends RpcServerLimits {
  name: string;
  methods: Record<string, RpcMethod>;
  logger: Logger;
  /** Requests executing at once across all connections; beyond it requests get OVERLOADED. */
  maxConcurrent?: number;
  maxFrameBytes?: number;
  /**
   * Log each error answer of a handler (method, error code and request id, never the message or params) at
   * the level this returns for its code (null: not logged). Errors that are not KeystoreErrors are always
   * logged as errors.
   */
  logRefusals?: (code: string) => 'info' | 'warn' | null;
  /** Run each handler with the envelope's request id as the current one (shared/src/log.ts `withRequestId`). */
  requestContext?: boolean;
}

const MiB = 1024 * 1024;

export const RPC_SERVER_LIMIT_DEFAULTS = {
  maxInFlightPerConnection: 2048,
  maxInFlightBytesPerConnection: 16 * MiB,
  maxInFlightBytes: 64 * MiB,
  unsentHighWaterBytes: 4 * MiB,
  unsentLowWaterBytes: 1 * MiB,
  maxUnsentBytesPerConnection: 16 * MiB,
  maxUnsentBytes: 64 * MiB,
  unsentDrainTimeoutMs: 30_000,
  maxConnections: 64,
} as const satisfies Required<RpcServerLimits>;

export interface RpcServerStats {
  connections: number;
  inFlight: number;
  /** Request payload bytes executing now. */
  inFlightBytes: number;
  /** Answer bytes written and not yet sent, all connections together (0 on a blocking transport). */
  unsentBytes: number;
  /** Connections whose reading is paused because of their unsent backlog. */
  pausedConnections: number;
  requests: number;
  overloaded: number;
  protocolErrors: number;
  /** Connections closed because their backlog did not drain in time or grew past the per-connection cap. */
  backlogClosed: number;
  /** Connections closed on arrival because `maxConnections` were open. */
  refusedConnections: number;
}

export interface RpcConnectionStats {
  connection: string;
  inFlight: number;
  inFlightBytes: number;
  unsentBytes: number;
  readingPaused: boolean;
}

/** What the server tracks for one connection. */
interface Served {
  framed: FramedConnection;
  inFlight: number;
  inFlightBytes: number;
  /** bufferedBytes as last seen, so the total can be kept without summing every connection. */
  unsent: number;
  paused: boolean;
  drainTimer: NodeJS.Timeout | null;
}

function resolveLimits(options: RpcServerOptions): Required<RpcServerLimits> {
  const frame = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  const d = RPC_SERVER_LIMIT_DEFAULTS;
  const l: Required<RpcServerLimits> = {
    maxInFlightPerConnection: options.maxInFlightPerConnection ?? d.maxInFlightPerConnection,
    maxInFlightBytesPerConnection: options.maxInFlightBytesPerConnection ?? Math.max(d.maxInFlightBytesPerConnection, frame),
    maxInFlightBytes: options.maxInFlightBytes ?? Math.max(d.maxInFlightBytes, frame),
    unsentHighWaterBytes: options.unsentHighWaterBytes ?? d.unsentHighWaterBytes,
    unsentLowWaterBytes: options.unsentLowWaterBytes ?? d.unsentLowWaterBytes,
    maxUnsentBytesPerConnection: options.maxUnsentBytesPerConnection ?? d.maxUnsentBytesPerConnection,
    maxUnsentBytes: options.maxUnsentBytes ?? d.maxUnsentBytes,
    unsentDrainTimeoutMs: options.unsentDrainTimeoutMs ?? d.unsentDrainTimeoutMs,
    maxConnections: options.maxConnections ?? d.maxConnections,
  };
  for (const [k, v] of Object.entries(l)) {
    if (!Number.isSafeInteger(v) || v < (k === 'unsentLowWaterBytes' ? 0 : 1))
      throw new TypeError(`RpcServer ${k} must be a positive integer, got ${v}`);
  }
  if (l.maxInFlightBytesPerConnection < frame || l.maxInFlightBytes < frame) {
    throw new TypeError(
      `RpcServer in-flight byte limits must be at least maxFrameBytes (${frame}), or no request of the maximum size could run`,
    );
  }
  if (!(l.unsentLowWaterBytes < l.unsentHighWaterBytes && l.unsentHighWaterBytes <= l.maxUnsentBytesPerConnection)) {
    throw new TypeError('RpcServer needs unsentLowWaterBytes < unsentHighWaterBytes <= maxUnsentBytesPerConnection');
  }
  return l;
}

export class RpcServer {
  private readonly connections = new Map<FramedConnection, Served>();
  private readonly listeners: Listener[] = [];
  private readonly maxConcurrent: number;
  private readonly limits: Required<RpcServerLimits>;
  private inFlight = 0;
  private inFlightBytes = 0;
  private unsentBytes = 0;
  private pausedConnections = 0;
  private requests = 0;
  private overloaded = 0;
  private protocolErrors = 0;
  private backlogClosed = 0;
  private refusedConnections = 0;
  private draining = false;
  private drainWaiters: Array<() => void> = [];

  constructor(private readonly options: RpcServerOptions) {
    this.maxConcurrent = options.maxConcurrent ?? 1024;
    this.limits = resolveLimits(options);
  }

  get stats(): RpcServerStats {
    return {
      connections: this.connections.size,
      inFlight: this.inFlight,
      inFlightBytes: this.inFlightBytes,
      unsentBytes: this.unsentBytes,
      pausedConnections: this.pausedConnections,
      requests: this.requests,
      overloaded: this.overloaded,
      protocolErrors: this.protocolErrors,
      backlogClosed: this.backlogClosed,
      refusedConnections: this.refusedConnections,
    };
  }

  /** The limits in effect (defaults filled in). */
  get effectiveLimits(): Readonly<Required<RpcServerLimits>> {
    return this.limits;
  }

  /** One entry per open connection (for tests and diagnostics; no payload). */
  connectionStats(): RpcConnectionStats[] {
    return [...this.connections.values()].map((s) => ({
      connection: s.framed.description,
      inFlight: s.inFlight,
      inFlightBytes: s.inFlightBytes,
      unsentBytes: s.framed.bufferedBytes,
      readingPaused: s.paused,
    }));
  }

  async listen(transport: Transport, address: string): Promise<Listener> {
    const listener = await transport.listen(address, (conn) => this.attach(conn));
    this.listeners.push(listener);
    this.options.logger.info({ address, transport: transport.kind }, `${this.options.name} listening`);
    return listener;
  }

  /** Serves one connection until it closes. */
  attach(conn: Connection): void {
    const log = this.options.logger;
    if (this.draining) {
      conn.destroy();
      return;
    }
    if (this.connections.size >= this.limits.maxConnections) {
      this.refusedConnections += 1;
      log.warn({ connection: conn.description, maxConnections: this.limits.maxConnections }, 'refused a connection: too many open');
      conn.destroy();
      return;
    }
    let served: Served;
    const framed: FramedConnection = new FramedConnection(
      conn,
      {
        message: (msg, bytes) => this.onMessage(served, msg, bytes),
        close: ({ protocolError, error }) => {
          this.forget(served);
          if (protocolError) {
            this.protocolErrors += 1;
            log.warn({ connection: conn.description, reason: protocolError }, 'closed connection on protocol error');
          } else {
            log.debug({ connection: conn.description, error: error?.message }, 'connection closed');
          }
        },
        flushed: (unsent) => this.onFlushed(served, unsent),
      },
      this.options.maxFrameBytes,
    );
    served = { framed, inFlight: 0, inFlightBytes: 0, unsent: 0, paused: false, drainTimer: null };
    this.connections.set(framed, served);
    log.debug({ connection: conn.description }, 'connection accepted');
  }

  private onMessage(served: Served, msg: unknown, bytes: number): void {
    const log = this.options.logger;
    const framed = served.framed;
    // A well-formed envelope is checked without zod (isRequestEnvelope: the schema's rules); anything else goes
    // through the schema for its error message.
    const env = isRequestEnvelope(msg) ? { success: true as const, data: msg } : RequestEnvelopeSchema.safeParse(msg);
    if (!env.success) {
      const id = recoverId(msg);
      const why = Array.isArray(msg) ? 'batch requests are not supported' : describeIssues(env.error, 'request');
      if (id === null && typeof msg === 'object' && msg !== null && !Array.isArray(msg) && !('id' in msg)) {
        log.warn({ connection: framed.description }, 'dropped a notification (requests must carry an id)');
        return;
      }
      this.reply(served, errorResponse(id, toRpcError(new KeystoreError('INVALID_REQUEST', why))));
      return;
    }
    const { id, method, params, requestId } = env.data;
    this.requests += 1;
    const spec = Object.prototype.hasOwnProperty.call(this.options.methods, method) ? this.options.methods[method] : undefined;
    if (!spec) {
      this.reply(served, errorResponse(id, toRpcError(new KeystoreError('METHOD_NOT_FOUND', `unknown method "${method.slice(0, 64)}"`))));
      return;
    }
    const refusal = this.admission(served, bytes);
    if (refusal) {
      this.overloaded += 1;
      this.reply(served, errorResponse(id, toRpcError(new KeystoreError('OVERLOADED', refusal))));
      return;
    }
    this.inFlight += 1;
    this.inFlightBytes += bytes;
    served.inFlight += 1;
    served.inFlightBytes += bytes;
    const ctx: RpcCallContext = { method, connection: framed.description, ...(requestId ? { requestId } : {}) };
    // The handler gets the id in `ctx`; with `requestContext` it also runs with it as the current request id (an
    // AsyncLocalStorage, whose cost on Node 20 is every promise's: the enclave's, where the id must reach its
    // own KMS calls deep in the call; the parent's servers log it from `ctx`).
    const run = () => this.execute(spec, params ?? {}, ctx);
    void (this.options.requestContext ? withRequestId(requestId, run) : run())
      .then(
        (result) => this.reply(served, successResponse(id, result)),
        (err: unknown) => {
          const rid = requestId ? { requestId } : {};
          if (!(err instanceof KeystoreError)) log.error({ err, method, ...rid }, 'handler failed unexpectedly');
          else {
            const level = this.options.logRefusals?.(err.code) ?? null;
            if (level) log[level]({ method, code: err.code, ...rid }, 'request refused');
          }
          this.reply(served, errorResponse(id, toRpcError(err)));
        },
      )
      .finally(() => {
        this.inFlight -= 1;
        this.inFlightBytes -= bytes;
        served.inFlight -= 1;
        served.inFlightBytes -= bytes;
        if (this.inFlight === 0) for (const w of this.drainWaiters.splice(0)) w();
      });
  }

  /** Why a request of `bytes` may not run now, or null when it may. */
  private admission(served: Served, bytes: number): string | null {
    const l = this.limits;
    if (this.draining) return 'server is shutting down';
    if (this.inFlight >= this.maxConcurrent) return `more than ${this.maxConcurrent} requests in flight`;
    if (served.inFlight >= l.maxInFlightPerConnection)
      return `more than ${l.maxInFlightPerConnection} requests in flight on this connection`;
    if (served.inFlightBytes + bytes > l.maxInFlightBytesPerConnection)
      return `more than ${l.maxInFlightBytesPerConnection} bytes of requests in flight on this connection`;
    if (this.inFlightBytes + bytes > l.maxInFlightBytes) return `more than ${l.maxInFlightBytes} bytes of requests in flight`;
    return null;
  }

  private async execute(spec: RpcMethod, rawParams: unknown, ctx: RpcCallContext): Promise<unknown> {
    const params = parseOrThrow(spec.params, rawParams);
    return spec.handler(params, ctx);
  }

  private reply(served: Served, response: object): void {
    const framed = served.framed;
    if (framed.closed) return;
    try {
      framed.send(response);
    } catch (err) {
      // The result did not fit in a frame: answer with an error the peer can read instead.
      const id = (response as { id: unknown }).id as string | number | null;
      this.options.logger.error({ err }, 'response could not be framed');
      framed.send(errorResponse(id, toRpcError(new KeystoreError('INTERNAL', 'response exceeds the frame size limit', { cause: err }))));
    }
    this.checkBacklog(served);
  }

  /** Keeps the total of unsent bytes current from one connection's latest figure. */
  private track(served: Served, unsent: number): void {
    this.unsentBytes += unsent - served.unsent;
    served.unsent = unsent;
  }

  /** After a write: closes a connection past the hard cap, pauses one past the high-water mark. */
  private checkBacklog(served: Served): void {
    const framed = served.framed;
    if (!this.connections.has(framed)) return;
    const unsent = framed.bufferedBytes;
    this.track(served, unsent);
    if (unsent === 0 || framed.closed) return;
    const l = this.limits;
    if (unsent > l.maxUnsentBytesPerConnection) {
      this.closeForBacklog(served, `its unsent answers passed ${l.maxUnsentBytesPerConnection} bytes`);
      return;
    }
    if (served.paused) return;
    const overall = this.unsentBytes > l.maxUnsentBytes && unsent > l.unsentLowWaterBytes;
    if (unsent > l.unsentHighWaterBytes || overall) {
      served.paused = true;
      this.pausedConnections += 1;
      framed.pauseReading();
      this.options.logger.warn(
        { connection: framed.description, unsentBytes: unsent, totalUnsentBytes: this.unsentBytes, inFlight: served.inFlight },
        'stopped reading a connection whose peer does not read its answers',
      );
      served.drainTimer = setTimeout(() => {
        served.drainTimer = null;
        if (served.paused) this.closeForBacklog(served, `its unsent answers did not drain within ${l.unsentDrainTimeoutMs} ms`);
      }, l.unsentDrainTimeoutMs);
      served.drainTimer.unref();
    }
  }

  private onFlushed(served: Served, unsent: number): void {
    if (!this.connections.has(served.framed)) return;
    this.track(served, unsent);
    if (served.paused && unsent <= this.limits.unsentLowWaterBytes) {
      this.unpause(served);
      this.options.logger.info(
        { connection: served.framed.description, unsentBytes: unsent },
        'resumed reading a connection whose backlog drained',
      );
      served.framed.resumeReading();
    }
  }

  private unpause(served: Served): void {
    if (!served.paused) return;
    served.paused = false;
    this.pausedConnections -= 1;
    if (served.drainTimer) clearTimeout(served.drainTimer);
    served.drainTimer = null;
  }

  private closeForBacklog(served: Served, why: string): void {
    this.backlogClosed += 1;
    this.options.logger.warn(
      { connection: served.framed.description, unsentBytes: served.framed.bufferedBytes, inFlight: served.inFlight },
      `closed a connection: ${why}`,
    );
    this.forget(served);
    served.framed.destroy();
  }

  /** Drops a connection's bookkeeping (idempotent); its in-flight requests finish and their answers are dropped. */
  private forget(served: Served): void {
    if (!this.connections.delete(served.framed)) return;
    this.unpause(served);
    this.unsentBytes -= served.unsent;
    served.unsent = 0;
  }

  /**
   * Stops accepting connections and new requests, waits up to `drainMs` for running requests to finish and
   * their answers to be written, then closes every connection.
   */
  async close(drainMs = 5000): Promise<void> {
    this.draining = true;
    await Promise.all(this.listeners.splice(0).map((l) => l.close()));
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, drainMs);
        this.drainWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    await new Promise((resolve) => setImmediate(resolve));
    for (const served of [...this.connections.values()]) {
      const stuck = served.paused; // its peer does not read: an orderly end would never finish
      this.forget(served);
      if (stuck) served.framed.destroy();
      else served.framed.end();
    }
  }
}
