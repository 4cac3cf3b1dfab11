/**
 * A small pool of long-lived, multiplexed connections to the enclave. Calls go round-robin over the
 * connections that are up; when none is, they fail at once with a retryable UNAVAILABLE rather than waiting.
 * Each connection reconnects on its own with capped, jittered backoff, and opens with `enclave.hello` to agree
 * a protocol version (docs/PROTOCOL.md, "Versions"); a connection whose enclave speaks none this parent
 * accepts never counts as up.
 */
import { ACCEPTED_PROTOCOL_VERSIONS, PROTOCOL_VERSION, type EnclaveApi, type IdentityResult } from '@nks/shared/enclave-api';
import { KeystoreError } from '@nks/shared/errors';
import type { Logger } from '@nks/shared/log';
import { RpcClient, type HandshakeCall, type MethodName, type ParamsOf, type ResultOf } from '@nks/shared/rpc';
import type { Transport } from '@nks/shared/transport';
import { checkIdentityResult, type KnownIdentity } from './identity';

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
  /**
   * Called each time a connection comes up (its handshake done, so calls may use it): after the enclave
   * (re)started, what the parent keeps in the enclave's memory is given again (the wallet routes' TLS key).
   */
  onConnected?: () => void;
  /**
   * Learn the keystore identity on every connection (`identity.get` after the hello), and use only connections
   * whose enclave has it: the pinned one if given, else the first one learned. Absent for the genesis command,
   * which talks to an enclave that has no identity yet.
   */
  identity?: { pinned?: string | undefined; onLearned?: (identity: KnownIdentity) => void | Promise<void> };
}

export type EnclaveMethod = MethodName<EnclaveApi>;

/** Hello attempts on one connection while the enclave answers OVERLOADED. */
const HELLO_ATTEMPTS = 4;

export class EnclavePool {
  private readonly clients: RpcClient<EnclaveApi>[];
  /** The protocol version agreed on each connection (undefined until its handshake succeeds). */
  private readonly versions: Array<number | undefined>;
  /** Whether each connection's enclave takes a `requestId` on the envelope (its hello lists enclave.logs). */
  private readonly requestIds: boolean[] = [];
  private next = 0;
  private lastRefusal: string | undefined;
  private known: KnownIdentity | undefined;
  private learning: Promise<void> | undefined;

  constructor(private readonly options: PoolOptions) {
    this.clients = Array.from(
      { length: options.size },
      (_, i) =>
        new RpcClient<EnclaveApi>({
          name: `enclave#${i}`,
          transport: options.transport,
          address: options.address,
          logger: options.logger,
          connectTimeoutMs: options.connectTimeoutMs,
          defaultDeadlineMs: options.deadlineMs,
          maxInFlight: options.maxInFlightPerConnection,
          backoff: { initialMs: 50, maxMs: 1000 },
          onStateChange: (connected) => {
            // The client still reads as connected while it reports going down: up is then the others'.
            options.onStateChange?.(connected || this.clients.some((c, j) => j !== i && c.connected));
            if (connected) options.onConnected?.();
          },
          handshake: (call) => this.hello(call, i),
          // The API's request id rides on the envelope to enclaves that take it (those serving enclave.logs).
          sendRequestId: () => this.requestIds[i] === true,
        }),
    );
    this.versions = this.clients.map(() => undefined);
  }

  /** The protocol version spoken with the enclave (the lowest over connections that are up), if any is up. */
  get protocolVersion(): number | undefined {
    const spoken = this.clients.flatMap((c, i) => (c.connected && this.versions[i] !== undefined ? [this.versions[i]] : []));
    return spoken.length ? Math.min(...spoken) : undefined;
  }

  /** A version-1 enclave has no `enclave.hello` (METHOD_NOT_FOUND): it is spoken to in version 1. */
  private async hello(call: HandshakeCall<EnclaveApi>, i: number): Promise<void> {
    let version: number;
    for (let attempt = 1; ; attempt++) {
      try {
        const answer = await call('enclave.hello', { protocolVersion: PROTOCOL_VERSION });
        version = answer.protocolVersion;
        this.requestIds[i] = answer.features.includes('enclave.logs');
        break;
      } catch (err) {
        const code = err instanceof KeystoreError ? err.code : undefined;
        if (code === 'METHOD_NOT_FOUND') {
          version = 1;
          this.requestIds[i] = false;
          break;
        }
        // A busy enclave refuses the hello like any request: try again shortly rather than drop the connection
        // (the handshake as a whole still ends within connectTimeoutMs).
        if (code === 'OVERLOADED' && attempt < HELLO_ATTEMPTS) {
          await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
          continue;
        }
        if (code === 'UNSUPPORTED_VERSION') this.refused((err as KeystoreError).message);
        throw err;
      }
    }
    if (!ACCEPTED_PROTOCOL_VERSIONS.includes(version)) {
      const upgrade = version > PROTOCOL_VERSION ? 'the parent' : 'the enclave image';
      const message = `the enclave speaks protocol version ${String(version)}; this parent accepts ${ACCEPTED_PROTOCOL_VERSIONS.length === 1 ? 'version' : 'versions'} ${ACCEPTED_PROTOCOL_VERSIONS.join(' and ')}: upgrade ${upgrade}`;
      this.refused(message);
      throw new KeystoreError('UNSUPPORTED_VERSION', message);
    }
    if (this.options.identity) await this.learnIdentity(call);
    this.versions[i] = version;
    this.lastRefusal = undefined; // a later refusal (another image) is logged again
  }

  /**
   * The connection's enclave must have the keystore identity: the pinned one, or the one this pool learned
   * first (records in the database are signed by it). An enclave without one yet (a genesis image, or one
   * still unsealing it) or with another is not used; the connection retries like after any failed handshake.
   */
  private async learnIdentity(call: HandshakeCall<EnclaveApi>): Promise<void> {
    const { pinned, onLearned } = this.options.identity ?? {};
    let answer: IdentityResult;
    try {
      answer = await call('identity.get', {});
    } catch (err) {
      if (err instanceof KeystoreError && err.code === 'IDENTITY_UNAVAILABLE') {
        // The enclave's own answer says only "not ready": a genesis image, or one still unsealing its identity.
        this.refused(`the enclave has no keystore identity ready: ${err.message}`, 'warn', 'enclave not used');
      }
      throw err;
    }
    let identity: KnownIdentity;
    try {
      identity = checkIdentityResult(answer, pinned);
    } catch (err) {
      this.refused((err as Error).message, 'error', 'enclave refused');
      throw err;
    }
    if (this.known && identity.publicKey !== this.known.publicKey) {
      const message = `the enclave's keystore identity ${identity.publicKey} is not ${this.known.publicKey}, the one this parent learned first; restart the parent to use the new one`;
      this.refused(message, 'error', 'enclave refused');
      throw new KeystoreError('IDENTITY_UNAVAILABLE', message);
    }
    if (!this.known) {
      // What depends on the identity (the default project seeded into the store) is done once, before the first
      // connection is used; if it fails (the database is down), the connections wait for it fail and the next tries again.
      this.learning ??= (async () => {
        await onLearned?.(identity);
        this.known = identity;
        this.options.logger.info({ address: this.options.address, identity: identity.publicKey }, 'learned the keystore identity');
      })().finally(() => (this.learning = undefined));
      await this.learning;
      if ((this.known as KnownIdentity | undefined)?.publicKey !== identity.publicKey)
        throw new KeystoreError('IDENTITY_UNAVAILABLE', 'the enclave changed its keystore identity');
    }
  }

  /** The keystore identity learned from the enclave (with `identity` in the options), once a connection had it. */
  get identity(): KnownIdentity | undefined {
    return this.known;
  }

  /**
   * Logged once per distinct refusal: every connection retries it about once a second. A successful handshake
   * ends the episode, so the same refusal later is logged again.
   */
  private refused(message: string, level: 'warn' | 'error' = 'error', prefix = 'protocol version refused'): void {
    if (message === this.lastRefusal) return;
    this.lastRefusal = message;
    this.options.logger[level]({ address: this.options.address }, `${prefix}: ${message}`);
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

  async call<M extends EnclaveMethod>(
    method: M,
    params: ParamsOf<EnclaveApi, M>,
    deadlineMs = this.options.deadlineMs,
  ): Promise<ResultOf<EnclaveApi, M>> {
    const started = process.hrtime.bigint();
    let outcome = 'ok';
    try {
      const client = this.pick();
      return await client.call(method, params, { deadlineMs });
    } catch (err) {
      outcome = err instanceof KeystoreError ? err.code : 'INTERNAL';
      throw err;
    } finally {
      this.options.onCall?.(method, outcome, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  private pick(): RpcClient<EnclaveApi> {
    for (let i = 0; i < this.clients.length; i++) {
      const c = this.clients[(this.next + i) % this.clients.length] as RpcClient<EnclaveApi>;
      if (c.connected) {
        this.next = (this.next + i + 1) % this.clients.length;
        return c;
      }
    }
    throw new KeystoreError('UNAVAILABLE', 'the enclave is not reachable; retry shortly');
  }

  async waitUp(timeoutMs: number): Promise<void> {
    await Promise.any(this.clients.map((c) => c.waitConnected(timeoutMs))).catch((err: unknown) => {
      throw new KeystoreError('UNAVAILABLE', `the enclave at ${this.options.address} did not answer within ${timeoutMs} ms`, {
        cause: err,
      });
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.clients.map((c) => c.close()));
  }
}
