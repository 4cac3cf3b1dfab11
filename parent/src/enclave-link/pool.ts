/**
 * A small pool of long-lived, multiplexed connections to the enclave. Calls go round-robin over the
 * connections that are up; when none is, they fail at once with a retryable UNAVAILABLE rather than waiting.
 * Each connection reconnects on its own with capped, jittered backoff (the first attempt after a drop at
 * once), and opens with `enclave.hello` to agree a protocol version (docs/PROTOCOL.md, "Versions"); a
 * connection whose enclave speaks none this parent accepts never counts as up.
 *
 * Liveness (docs/OPERATIONS.md, "A frozen enclave"): a connection can stay open to an enclave that answers
 * nothing (stopped, or its process hung). Each connection is probed with `enclave.health` (answered on the
 * enclave's main thread, which never runs long work) every `liveness.intervalMs`; after `liveness.misses`
 * probes in a row without an answer within `liveness.timeoutMs`, the connection counts as down: new calls
 * skip it (UNAVAILABLE when no other is up), and the calls waiting on it fail now with UNAVAILABLE instead of
 * waiting out their deadline. The connection itself is kept and probed on: the first answer puts it back in
 * use, without a new handshake (which would cost an attestation and the TLS key's re-install, a KMS call).
 *
 * At most `maxQueued` calls are in flight across the connections; beyond it a call fails at once with
 * OVERLOADED, before anything is written.
 */
import { ACCEPTED_PROTOCOL_VERSIONS, PROTOCOL_VERSION, type EnclaveApi, type IdentityResult } from '@nks/shared/enclave-api';
// (Its own line: the batch sign's frame limit, keys.signBatch.)
import { ENCLAVE_MAX_FRAME_BYTES } from '@nks/shared/enclave-api';
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
  /** Whether any connection is up (connected and answering its probes); called on every change of a connection. */
  onStateChange?: (up: boolean) => void;
  /** The liveness probe of each connection; absent, a connection is up while it is connected. */
  liveness?: { intervalMs: number; timeoutMs: number; misses: number };
  /** Called for each probe not answered in time. */
  onPingMiss?: () => void;
  /** Calls in flight across the connections; beyond it OVERLOADED at once (default: no bound but the connections'). */
  maxQueued?: number;
  /** Called for each call refused because `maxQueued` were in flight. */
  onQueueFull?: () => void;
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
  /**
   * The handshake's last step on every connection, given the methods its enclave serves (the parent's settings:
   * enclave-cache.ts). A refusal (INVALID_PARAMS) is logged once and the connection is not used.
   */
  configure?: (call: HandshakeCall<EnclaveApi>, features: readonly string[]) => Promise<void>;
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
  /** Per connection: connected (its handshake done), answering its probes, probes missed in a row. */
  private readonly linked: boolean[];
  private readonly alive: boolean[];
  private readonly misses: number[];
  /** Per connection: the pending probe timer, and a generation that ends a probe loop when the connection changes. */
  private readonly probeTimers: Array<NodeJS.Timeout | undefined>;
  private readonly generations: number[];
  private inFlight = 0;
  private closed = false;

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
          // A batch of signs and its answer (keys.signBatch), as the enclave's default.
          maxFrameBytes: ENCLAVE_MAX_FRAME_BYTES,
          backoff: { initialMs: 50, maxMs: 1000 },
          onStateChange: (connected) => {
            this.linked[i] = connected;
            this.alive[i] = true;
            this.misses[i] = 0;
            if (connected) this.startProbing(i);
            else this.stopProbing(i);
            options.onStateChange?.(this.up);
            if (connected) options.onConnected?.();
          },
          handshake: (call) => this.hello(call, i),
          // The API's request id rides on the envelope to enclaves that take it (those serving enclave.logs).
          sendRequestId: () => this.requestIds[i] === true,
        }),
    );
    this.versions = this.clients.map(() => undefined);
    this.linked = this.clients.map(() => false);
    this.alive = this.clients.map(() => true);
    this.misses = this.clients.map(() => 0);
    this.probeTimers = this.clients.map(() => undefined);
    this.generations = this.clients.map(() => 0);
  }

  /** Probes connection `i` every `liveness.intervalMs` until it goes down or the pool closes. */
  private startProbing(i: number): void {
    const liveness = this.options.liveness;
    this.stopProbing(i);
    if (!liveness || this.closed) return;
    const generation = this.generations[i] as number;
    const client = this.clients[i] as RpcClient<EnclaveApi>;
    const tick = async (): Promise<void> => {
      const started = Date.now();
      const answered = await client.probe('enclave.health', {}, liveness.timeoutMs);
      if (this.closed || this.generations[i] !== generation) return;
      this.probed(i, answered);
      const timer = setTimeout(() => void tick(), Math.max(0, liveness.intervalMs - (Date.now() - started)));
      timer.unref();
      this.probeTimers[i] = timer;
    };
    const first = setTimeout(() => void tick(), liveness.intervalMs);
    first.unref();
    this.probeTimers[i] = first;
  }

  private stopProbing(i: number): void {
    this.generations[i] = (this.generations[i] as number) + 1;
    clearTimeout(this.probeTimers[i]);
    this.probeTimers[i] = undefined;
  }

  /** One probe's outcome on connection `i`: marks it down after `misses` in a row, up again on an answer. */
  private probed(i: number, answered: boolean): void {
    const { liveness, logger, address } = this.options as PoolOptions & { liveness: NonNullable<PoolOptions['liveness']> };
    const name = `enclave#${i}`;
    if (answered) {
      this.misses[i] = 0;
      if (!this.alive[i]) {
        this.alive[i] = true;
        logger.info({ address, connection: name }, `${name} answers again: back in use`);
        this.options.onStateChange?.(this.up);
      }
      return;
    }
    const missed = (this.misses[i] as number) + 1;
    this.misses[i] = missed;
    this.options.onPingMiss?.();
    if (!this.alive[i] || missed < liveness.misses) return;
    this.alive[i] = false;
    const failed = (this.clients[i] as RpcClient<EnclaveApi>).failPending(
      `the enclave did not answer ${missed} liveness probes in a row (frozen or hung); retry shortly`,
    );
    logger.warn(
      { address, connection: name, missed, timeoutMs: liveness.timeoutMs, failedCalls: failed },
      `${name}: the enclave did not answer ${missed} liveness probes in a row; not used until it answers again`,
    );
    this.options.onStateChange?.(this.up);
  }
  /** The protocol version spoken with the enclave (the lowest over connections that are up), if any is up. */
  get protocolVersion(): number | undefined {
    const spoken = this.clients.flatMap((c, i) => (c.connected && this.versions[i] !== undefined ? [this.versions[i]] : []));
    return spoken.length ? Math.min(...spoken) : undefined;
  }

  /** A version-1 enclave has no `enclave.hello` (METHOD_NOT_FOUND): it is spoken to in version 1. */
  private async hello(call: HandshakeCall<EnclaveApi>, i: number): Promise<void> {
    let version: number;
    let features: readonly string[] = [];
    for (let attempt = 1; ; attempt++) {
      try {
        const answer = await call('enclave.hello', { protocolVersion: PROTOCOL_VERSION });
        version = answer.protocolVersion;
        if (Array.isArray(answer.features)) features = answer.features;
        this.requestIds[i] = Array.isArray(answer.features) && answer.features.includes('enclave.logs');
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
    if (this.options.configure) {
      try {
        await this.options.configure(call, features);
      } catch (err) {
        if (err instanceof KeystoreError && err.code === 'INVALID_PARAMS') this.refused(err.message, 'error', 'enclave not used');
        throw err;
      }
    }
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

  /** Connection `i` is usable: connected (handshake done) and answering its liveness probes. */
  private usable(i: number): boolean {
    return this.linked[i] === true && this.alive[i] === true && (this.clients[i] as RpcClient<EnclaveApi>).connected;
  }

  /** True when at least one connection is up (connected and answering its liveness probes). */
  get up(): boolean {
    return this.clients.some((_, i) => this.usable(i));
  }

  get connectedCount(): number {
    return this.clients.filter((_, i) => this.usable(i)).length;
  }

  /** Calls in flight now (what `maxQueued` bounds). */
  get queued(): number {
    return this.inFlight;
  }

  async call<M extends EnclaveMethod>(
    method: M,
    params: ParamsOf<EnclaveApi, M>,
    deadlineMs = this.options.deadlineMs,
    requestId?: string,
  ): Promise<ResultOf<EnclaveApi, M>> {
    const started = process.hrtime.bigint();
    let outcome = 'ok';
    let counted = false;
    try {
      const client = this.pick();
      const max = this.options.maxQueued;
      if (max !== undefined && this.inFlight >= max) {
        this.options.onQueueFull?.();
        throw new KeystoreError('OVERLOADED', `${max} enclave calls in flight (enclave.maxQueued); retry shortly`);
      }
      this.inFlight += 1;
      counted = true;
      return await client.call(method, params, requestId === undefined ? { deadlineMs } : { deadlineMs, requestId });
    } catch (err) {
      outcome = err instanceof KeystoreError ? err.code : 'INTERNAL';
      throw err;
    } finally {
      if (counted) this.inFlight -= 1;
      this.options.onCall?.(method, outcome, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  private pick(): RpcClient<EnclaveApi> {
    for (let i = 0; i < this.clients.length; i++) {
      const j = (this.next + i) % this.clients.length;
      if (this.usable(j)) {
        this.next = (j + 1) % this.clients.length;
        return this.clients[j] as RpcClient<EnclaveApi>;
      }
    }
    const frozen = this.clients.some((c, i) => c.connected && !this.alive[i]);
    throw new KeystoreError(
      'UNAVAILABLE',
      frozen ? 'the enclave does not answer (liveness probes missed); retry shortly' : 'the enclave is not reachable; retry shortly',
    );
  }

  async waitUp(timeoutMs: number): Promise<void> {
    await Promise.any(this.clients.map((c) => c.waitConnected(timeoutMs))).catch((err: unknown) => {
      throw new KeystoreError('UNAVAILABLE', `the enclave at ${this.options.address} did not answer within ${timeoutMs} ms`, {
        cause: err,
      });
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.clients.forEach((_, i) => this.stopProbing(i));
    await Promise.all(this.clients.map((c) => c.close()));
  }
}
