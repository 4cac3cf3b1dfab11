/**
 * A small pool of long-lived, multiplexed connections to the enclave. Calls go round-robin over the
 * connections that are up; when none is, they fail at once with a retryable UNAVAILABLE rather than waiting.
 * Each connection reconnects on its own with capped, jittered backoff.
 */
import { KeystoreError } from '../../../shared/src/errors';
import type { Logger } from '../../../shared/src/log';
import { RpcClient } from '../../../shared/src/rpc';
import type { Transport } from '../../../shared/src/transport';

export interface PoolOptions {
  transport: Transport;
  address: string;
  size: number;
  logger: Logger;
  connectTimeoutMs: number;
  deadlineMs: number;
  maxInFlightPerConnection: number;
  onCall?: (method: string, outcome: string, seconds: number) => void;
  onStateChange?: (up: boolean) => void;
}

export class EnclavePool {
  private readonly clients: RpcClient[];
  private next = 0;

  constructor(private readonly options: PoolOptions) {
    this.clients = Array.from(
      { length: options.size },
      (_, i) =>
        new RpcClient({
          name: `enclave#${i}`,
          transport: options.transport,
          address: options.address,
          logger: options.logger,
          connectTimeoutMs: options.connectTimeoutMs,
          defaultDeadlineMs: options.deadlineMs,
          maxInFlight: options.maxInFlightPerConnection,
          backoff: { initialMs: 50, maxMs: 1000 },
          onStateChange: () => options.onStateChange?.(this.up),
        }),
    );
  }

  start(): void {
    for (const c of this.clients) c.start();
  }

  /** True when at least one connection is up. */
  get up(): boolean {
    return this.clients.some((c) => c.connected);
  }

  get connectedCount(): number {
    return this.clients.filter((c) => c.connected).length;
  }

  async call<T>(method: string, params: object, deadlineMs = this.options.deadlineMs): Promise<T> {
    const started = process.hrtime.bigint();
    let outcome = 'ok';
    try {
      const client = this.pick();
      return await client.call<T>(method, params, { deadlineMs });
    } catch (err) {
      outcome = err instanceof KeystoreError ? err.code : 'INTERNAL';
      throw err;
    } finally {
      this.options.onCall?.(method, outcome, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  private pick(): RpcClient {
    for (let i = 0; i < this.clients.length; i++) {
      const c = this.clients[(this.next + i) % this.clients.length] as RpcClient;
      if (c.connected) {
        this.next = (this.next + i + 1) % this.clients.length;
        return c;
      }
    }
    throw new KeystoreError('UNAVAILABLE', 'the enclave is not reachable; retry shortly');
  }

  async waitUp(timeoutMs: number): Promise<void> {
    await Promise.any(this.clients.map((c) => c.waitConnected(timeoutMs))).catch((err: unknown) => {
      throw new KeystoreError('UNAVAILABLE', `the enclave at ${this.options.address} did not answer within ${timeoutMs} ms`, { cause: err });
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.clients.map((c) => c.close()));
  }
}
