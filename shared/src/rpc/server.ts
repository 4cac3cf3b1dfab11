/**
 * JSON-RPC 2.0 server over framed connections. Requests on one connection run concurrently and are answered
 * in completion order. A global concurrency cap answers OVERLOADED instead of queueing without bound. A bad
 * frame or bad JSON closes only the connection it came on; every other connection keeps being served.
 */
import type { z } from 'zod';
import { KeystoreError, toRpcError } from '../errors';
import type { Logger } from '../log';
import { parseOrThrow, describeIssues } from '../schema';
import type { Connection, Listener, Transport } from '../transport/types';
import { FramedConnection } from './framed-connection';
import { errorResponse, recoverId, RequestEnvelopeSchema, successResponse } from './protocol';

export interface RpcCallContext {
  method: string;
  connection: string;
}

export interface RpcMethod<S extends z.ZodType = z.ZodType> {
  params: S;
  handler(params: z.output<S>, ctx: RpcCallContext): unknown;
}

/** Helps TypeScript infer the params type of each method from its schema. */
export function rpcMethod<S extends z.ZodType>(params: S, handler: (params: z.output<S>, ctx: RpcCallContext) => unknown): RpcMethod<S> {
  return { params, handler };
}

export interface RpcServerOptions {
  name: string;
  methods: Record<string, RpcMethod>;
  logger: Logger;
  /** Requests executing at once across all connections; beyond it requests get OVERLOADED. */
  maxConcurrent?: number;
  maxFrameBytes?: number;
}

export interface RpcServerStats {
  connections: number;
  inFlight: number;
  requests: number;
  overloaded: number;
  protocolErrors: number;
}

export class RpcServer {
  private readonly connections = new Set<FramedConnection>();
  private readonly listeners: Listener[] = [];
  private readonly maxConcurrent: number;
  private inFlight = 0;
  private requests = 0;
  private overloaded = 0;
  private protocolErrors = 0;
  private draining = false;
  private drainWaiters: Array<() => void> = [];

  constructor(private readonly options: RpcServerOptions) {
    this.maxConcurrent = options.maxConcurrent ?? 1024;
  }

  get stats(): RpcServerStats {
    return {
      connections: this.connections.size,
      inFlight: this.inFlight,
      requests: this.requests,
      overloaded: this.overloaded,
      protocolErrors: this.protocolErrors,
    };
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
    const framed: FramedConnection = new FramedConnection(
      conn,
      {
        message: (msg) => this.onMessage(framed, msg),
        close: ({ protocolError, error }) => {
          this.connections.delete(framed);
          if (protocolError) {
            this.protocolErrors += 1;
            log.warn({ connection: conn.description, reason: protocolError }, 'closed connection on protocol error');
          } else {
            log.debug({ connection: conn.description, error: error?.message }, 'connection closed');
          }
        },
      },
      this.options.maxFrameBytes,
    );
    this.connections.add(framed);
    log.debug({ connection: conn.description }, 'connection accepted');
  }

  private onMessage(framed: FramedConnection, msg: unknown): void {
    const log = this.options.logger;
    const env = RequestEnvelopeSchema.safeParse(msg);
    if (!env.success) {
      const id = recoverId(msg);
      const why = Array.isArray(msg) ? 'batch requests are not supported' : describeIssues(env.error, 'request');
      if (id === null && typeof msg === 'object' && msg !== null && !Array.isArray(msg) && !('id' in msg)) {
        log.warn({ connection: framed.description }, 'dropped a notification (requests must carry an id)');
        return;
      }
      this.reply(framed, errorResponse(id, toRpcError(new KeystoreError('INVALID_REQUEST', why))));
      return;
    }
    const { id, method, params } = env.data;
    this.requests += 1;
    const spec = Object.prototype.hasOwnProperty.call(this.options.methods, method) ? this.options.methods[method] : undefined;
    if (!spec) {
      this.reply(framed, errorResponse(id, toRpcError(new KeystoreError('METHOD_NOT_FOUND', `unknown method "${method.slice(0, 64)}"`))));
      return;
    }
    if (this.inFlight >= this.maxConcurrent || this.draining) {
      this.overloaded += 1;
      const why = this.draining ? 'server is shutting down' : `more than ${this.maxConcurrent} requests in flight`;
      this.reply(framed, errorResponse(id, toRpcError(new KeystoreError('OVERLOADED', why))));
      return;
    }
    this.inFlight += 1;
    const ctx: RpcCallContext = { method, connection: framed.description };
    void this.execute(spec, params ?? {}, ctx).then(
      (result) => this.reply(framed, successResponse(id, result)),
      (err: unknown) => {
        if (!(err instanceof KeystoreError)) log.error({ err, method }, 'handler failed unexpectedly');
        this.reply(framed, errorResponse(id, toRpcError(err)));
      },
    ).finally(() => {
      this.inFlight -= 1;
      if (this.inFlight === 0) for (const w of this.drainWaiters.splice(0)) w();
    });
  }

  private async execute(spec: RpcMethod, rawParams: unknown, ctx: RpcCallContext): Promise<unknown> {
    const params = parseOrThrow(spec.params, rawParams);
    return spec.handler(params, ctx);
  }

  private reply(framed: FramedConnection, response: object): void {
    try {
      framed.send(response);
    } catch (err) {
      // The result did not fit in a frame: answer with an error the peer can read instead.
      const id = (response as { id: unknown }).id as string | number | null;
      this.options.logger.error({ err: (err as Error).message }, 'response could not be framed');
      framed.send(errorResponse(id, toRpcError(new KeystoreError('INTERNAL', 'response exceeds the frame size limit'))));
    }
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
    for (const framed of this.connections) framed.end();
    this.connections.clear();
  }
}
