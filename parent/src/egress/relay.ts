/**
 * The egress relay (docs/PROJECTS.md, "Egress relay"): the enclave's only way to the internet, used to fetch
 * the JWKS of JWT projects over TLS that ends inside the enclave. The enclave connects (vsock CID 3, port 8001),
 * sends one frame with `{host, port}` (shared/src/egress.ts) and waits; the relay checks the host and port,
 * resolves the name itself, checks every address it got (./address-policy.ts), connects to a checked address
 * (never to the name again, so a second DNS answer cannot differ from the checked one), answers EGRESS_OK
 * and pipes bytes both ways with backpressure, an idle timeout and a byte cap per direction.
 *
 * Every refusal is the same for the enclave: the connection is ended without a byte written. The reason goes
 * to the metrics and the log (host, port, reason, the offending address; never payload). A refused connection
 * is ended (FIN), its input read and dropped until the enclave closes, and destroyed after REFUSAL_LINGER_MS
 * if it does not, so the enclave sees the same clean close whatever it had sent.
 */
import dns from 'node:dns';
import net from 'node:net';
import client from 'prom-client';
import { EGRESS_MAX_REQUEST_BYTES, EGRESS_OK, parseEgressRequest, type EgressRequest } from '@nks/shared/egress';
import { FrameDecoder, FrameError } from '@nks/shared/framing';
import type { Logger } from '@nks/shared/log';
import type { Connection, Listener, Transport } from '@nks/shared/transport';
import { addressAllowed, classifyAddress, deniedList, type AddressCategory } from './address-policy';
import type { EgressConfig } from './config';
import {
  createEgressMetrics,
  EGRESS_CLOSE_REASONS,
  EGRESS_REFUSAL_REASONS,
  type EgressCloseReason,
  type EgressMetrics,
  type EgressRefusalReason,
} from './metrics';

export { EGRESS_CONFIG_DEFAULTS, EgressConfigSchema, type EgressConfig } from './config';
export {
  createEgressMetrics,
  EGRESS_CLOSE_REASONS,
  EGRESS_REFUSAL_REASONS,
  type EgressCloseReason,
  type EgressDirection,
  type EgressMetrics,
  type EgressRefusalReason,
} from './metrics';
export { classifyAddress, METADATA_ADDRESSES, type AddressCategory } from './address-policy';

/** What a DNS lookup gives: every address of the name, in the resolver's order. */
export type EgressLookup = (host: string) => Promise<ReadonlyArray<{ address: string; family: number }>>;

/** The system resolver (getaddrinfo: /etc/hosts, then DNS), every address, in the order it sorted them. */
export const systemLookup: EgressLookup = (host) => dns.promises.lookup(host, { all: true, verbatim: true });

export interface EgressRelayOptions {
  config: EgressConfig;
  transport: Transport;
  /** The `jwksUri` hosts of enabled JWT projects, read for every connection (a project disabled since is refused). */
  allowedHosts: () => Iterable<string> | Promise<Iterable<string>>;
  log: Logger;
  /** The metrics to update, or a registry to register `nks_egress_*` on (createEgressMetrics). */
  metrics?: EgressMetrics | client.Registry;
  /** Replaces the system resolver (tests: DNS answers they cannot otherwise control). */
  lookup?: EgressLookup;
}

export interface EgressRelayStats {
  /** Connections open now, in any phase (what `maxConnections` bounds); refused ones still closing excluded. */
  open: number;
  /** Of those, connections piping bytes. */
  relaying: number;
  /** Refused connections ended by the relay and waiting for the enclave to close its side. */
  closing: number;
  /** Connections accepted since start. */
  accepted: number;
  /** Connections that got EGRESS_OK since start. */
  relayed: number;
  refusals: Record<EgressRefusalReason, number>;
  closes: Record<EgressCloseReason, number>;
  bytes: { outbound: number; inbound: number };
}

export interface EgressRelay {
  /** The address it listens on (`vsock://3:8001` by default). */
  readonly address: string;
  stats(): EgressRelayStats;
  /** Stops accepting and closes every connection at once. */
  close(): Promise<void>;
}

const OK = Buffer.of(EGRESS_OK);
/** Bytes queued towards the enclave above which reading from the remote host pauses; it resumes below the low mark. */
const TRANSPORT_HIGH_WATER = 64 * 1024;
const TRANSPORT_LOW_WATER = 16 * 1024;
/** How long a refused connection may stay half-closed waiting for the enclave to close its side. */
export const REFUSAL_LINGER_MS = 1000;
/**
 * Addresses tried in turn when a connect fails (an IPv6 address without a route, a dead server), each given
 * its share of what is left of `connectTimeoutMs`, so one that never answers cannot take it all.
 */
export const MAX_CONNECT_ATTEMPTS = 3;

/** Refusals that mean a policy said no or the request was wrong: logged at warn. The others (failures) at info. */
const WARN_REASONS = new Set<EgressRefusalReason>([
  'bad_request',
  'request_too_large',
  'host_not_allowed',
  'port_not_allowed',
  'metadata_address',
  'address_not_allowed',
]);

export async function startEgressRelay(options: EgressRelayOptions): Promise<EgressRelay> {
  const relay = new Relay(options);
  await relay.listen();
  return relay;
}

class Relay implements EgressRelay {
  readonly config: EgressConfig;
  readonly log: Logger;
  readonly metrics: EgressMetrics;
  readonly lookup: EgressLookup;
  /** Sessions from accept to refusal or close; their count is what `maxConnections` bounds. */
  readonly open = new Set<Session>();
  /** Refused sessions waiting for the enclave to close (at most `maxConnections` of them; beyond, destroyed). */
  readonly refusing = new Set<Session>();
  readonly counts = {
    accepted: 0,
    relayed: 0,
    refusals: Object.fromEntries(EGRESS_REFUSAL_REASONS.map((r) => [r, 0])) as Record<EgressRefusalReason, number>,
    closes: Object.fromEntries(EGRESS_CLOSE_REASONS.map((r) => [r, 0])) as Record<EgressCloseReason, number>,
    bytes: { outbound: 0, inbound: 0 },
  };
  stopped = false;
  private listener: Listener | null = null;
  private readonly configHosts: ReadonlySet<string>;
  private readonly ports: ReadonlySet<number>;
  /** `egress.deniedCidrs`, matched like the special-purpose ranges. */
  readonly denied: net.BlockList;

  constructor(private readonly options: EgressRelayOptions) {
    this.config = options.config;
    this.log = options.log;
    const m = options.metrics;
    this.metrics = m instanceof client.Registry ? createEgressMetrics(m) : (m ?? createEgressMetrics(new client.Registry()));
    this.lookup = options.lookup ?? systemLookup;
    this.configHosts = new Set(this.config.allowedHosts.map((h) => h.toLowerCase()));
    this.ports = new Set(this.config.allowedPorts);
    this.denied = deniedList(this.config.deniedCidrs);
  }

  get address(): string {
    return this.listener?.address ?? this.config.listen;
  }

  async listen(): Promise<void> {
    this.listener = await this.options.transport.listen(this.config.listen, (conn) => this.accept(conn));
    this.log.info(
      {
        address: this.listener.address,
        allowedHosts: this.config.allowedHosts,
        allowedPorts: this.config.allowedPorts,
        allowLoopback: this.config.allowLoopback,
        deniedCidrs: this.config.deniedCidrs,
      },
      'egress relay listening',
    );
  }

  private accept(conn: Connection): void {
    this.counts.accepted += 1;
    if (this.stopped) {
      conn.destroy();
      return;
    }
    const session = new Session(this, conn);
    if (this.open.size >= this.config.maxConnections) {
      session.start(false);
      session.refuse('too_many_connections');
      return;
    }
    this.open.add(session);
    this.metrics.connections.inc();
    session.start(true);
  }

  /** The configured hosts, then the store's: exact, case-insensitive. A throwing source refuses (caller). */
  async hostAllowed(host: string): Promise<boolean> {
    if (this.configHosts.has(host)) return true;
    for (const h of await this.options.allowedHosts()) if (h.toLowerCase() === host) return true;
    return false;
  }

  portAllowed(port: number): boolean {
    return this.ports.has(port);
  }

  /** Called by a session leaving `open` (refused or closed): the gauge follows the set. */
  left(session: Session): void {
    if (this.open.delete(session)) this.metrics.connections.dec();
  }

  stats(): EgressRelayStats {
    let relaying = 0;
    for (const s of this.open) if (s.relaying) relaying += 1;
    const c = this.counts;
    return {
      open: this.open.size,
      relaying,
      closing: this.refusing.size,
      accepted: c.accepted,
      relayed: c.relayed,
      refusals: { ...c.refusals },
      closes: { ...c.closes },
      bytes: { ...c.bytes },
    };
  }

  async close(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.listener?.close();
    for (const s of [...this.open, ...this.refusing]) s.stop();
    this.log.info('egress relay stopped');
  }
}

type Phase = 'handshake' | 'checking' | 'relaying' | 'refused' | 'closed';

/** One connection from the enclave: its request, the checks, then the pipe to the remote host. */
class Session {
  private phase: Phase = 'handshake';
  private readonly decoder = new FrameDecoder(EGRESS_MAX_REQUEST_BYTES);
  private request: EgressRequest | null = null;
  /** The checked address connected to (or being connected to). */
  private address: string | undefined;
  private target: net.Socket | null = null;
  private targetPaused = false;
  private targetClosed = false;
  private enclaveClosed = false;
  private outbound = 0;
  private inbound = 0;
  private openedAt = 0;
  /** Handshake deadline, then the idle timer while relaying, then the linger of a refusal. */
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly relay: Relay,
    private readonly conn: Connection,
  ) {}

  get relaying(): boolean {
    return this.phase === 'relaying';
  }

  /** Whether the session is still waiting for its checks and connect (not refused, closed or stopped since). */
  private get checking(): boolean {
    return this.phase === 'checking';
  }

  start(withHandshakeTimer: boolean): void {
    this.conn.start({
      data: (chunk) => this.onEnclaveData(chunk),
      close: () => this.onEnclaveClose(),
      flushed: (buffered) => this.onEnclaveFlushed(buffered),
    });
    if (withHandshakeTimer) this.timer = setTimeout(() => this.refuse('handshake_timeout'), this.relay.config.handshakeTimeoutMs);
  }

  private onEnclaveData(chunk: Buffer): void {
    switch (this.phase) {
      case 'handshake':
        return this.onRequestBytes(chunk);
      case 'checking':
        // The enclave must wait for EGRESS_OK (shared/src/egress.ts): bytes before it are a bad request.
        return this.refuse('bad_request');
      case 'relaying':
        return this.toTarget(chunk);
      default:
        return; // refused or closed: dropped
    }
  }

  private onRequestBytes(chunk: Buffer): void {
    let payloads: Buffer[];
    try {
      payloads = this.decoder.push(chunk);
    } catch (err) {
      return this.refuse(err instanceof FrameError && err.code === 'FRAME_TOO_LARGE' ? 'request_too_large' : 'bad_request');
    }
    if (payloads.length === 0) return;
    // One frame and nothing after it: the enclave waits for the answer before sending anything else.
    const request = payloads.length === 1 && this.decoder.bufferedBytes === 0 ? parseEgressRequest(payloads[0] as Buffer) : null;
    if (!request) return this.refuse('bad_request');
    this.clearTimer();
    this.request = request;
    // Reading goes on while the checks run, so a byte sent before EGRESS_OK is seen (and refused) whenever
    // it arrives, not only when it shares a chunk with the frame.
    this.phase = 'checking';
    void this.check(request);
  }

  /** Host, port, DNS, every address, then connect. Never throws: every failure is a refusal. */
  private async check({ host, port }: EgressRequest): Promise<void> {
    const relay = this.relay;
    const { config } = relay;
    try {
      if (!(await relay.hostAllowed(host))) return this.refuse('host_not_allowed');
    } catch (err) {
      relay.log.error({ err, host, port }, 'egress relay: the allowed hosts could not be read');
      return this.refuse('internal_error');
    }
    if (!relay.portAllowed(port)) return this.refuse('port_not_allowed');

    let answers: ReadonlyArray<{ address: string }>;
    try {
      answers = await withTimeout(relay.lookup(host), config.connectTimeoutMs, 'ETIMEOUT');
    } catch (err) {
      if (this.checking) this.refuse('dns_failed', { code: errorCode(err) });
      return;
    }
    if (!this.checking) return;
    if (answers.length === 0) return this.refuse('dns_failed', { code: 'NODATA' });
    // Every address, not just the one connected to: a name that has any address inside is not a public host.
    // A metadata address is reported as such wherever it is in the answer.
    const ranges = answers.map(({ address }) => ({ address, range: classifyAddress(address, relay.denied) }));
    const metadata = ranges.find((a) => a.range === 'metadata');
    if (metadata) return this.refuse('metadata_address', metadata);
    const refused = ranges.find((a) => !addressAllowed(a.range, config.allowLoopback));
    if (refused) return this.refuse('address_not_allowed', refused);

    const candidates = [...new Set(answers.map((a) => a.address))].slice(0, MAX_CONNECT_ATTEMPTS);
    const deadline = Date.now() + config.connectTimeoutMs;
    let failure: { reason: 'connect_failed' | 'connect_timeout'; code: string } = { reason: 'connect_timeout', code: 'ETIMEDOUT' };
    for (let i = 0; i < candidates.length; i++) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      const address = candidates[i] as string;
      this.address = address;
      const result = await this.connect(address, port, Math.max(1, Math.floor(left / (candidates.length - i))));
      if (!this.checking) {
        result.socket?.destroy();
        return;
      }
      if (result.socket) return this.startRelaying(result.socket);
      failure = result.timedOut
        ? { reason: 'connect_timeout', code: 'ETIMEDOUT' }
        : { reason: 'connect_failed', code: result.code ?? 'ERROR' };
      relay.log.debug({ host, port, address, code: failure.code }, 'egress connect attempt failed');
    }
    this.refuse(failure.reason, { address: this.address, code: failure.code });
  }

  /** One TCP connect to an IP address (no name, so no second lookup), within `timeoutMs`. */
  private connect(address: string, port: number, timeoutMs: number): Promise<{ socket?: net.Socket; timedOut?: boolean; code?: string }> {
    return new Promise((resolve) => {
      const socket = net.connect({ host: address, port, family: net.isIP(address) });
      this.target = socket;
      // Errors after the connect are handled through 'close'; this listener keeps any from being unhandled.
      socket.on('error', () => undefined);
      const timer = setTimeout(() => {
        socket.destroy();
        resolve({ timedOut: true });
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve({ socket });
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        resolve({ code: err.code ?? err.message });
      });
      // Destroyed by the session meanwhile (the enclave left, the relay stopped).
      socket.once('close', () => {
        clearTimeout(timer);
        resolve({ code: 'ECANCELED' });
      });
    });
  }

  private startRelaying(target: net.Socket): void {
    const relay = this.relay;
    this.phase = 'relaying';
    this.openedAt = Date.now();
    relay.counts.relayed += 1;
    target.setNoDelay(true);
    target.on('data', (chunk: Buffer) => this.toEnclave(chunk));
    target.on('drain', () => {
      if (this.phase === 'relaying' && !this.enclaveClosed) this.conn.resumeReading();
    });
    target.once('close', () => this.onTargetClose());
    this.timer = setTimeout(() => this.finish('idle_timeout'), relay.config.idleTimeoutMs);
    this.conn.write(OK);
    relay.log.info({ host: this.request?.host, port: this.request?.port, address: this.address }, 'egress connection opened');
  }

  /** Enclave -> remote host. */
  private toTarget(chunk: Buffer): void {
    const target = this.target as net.Socket;
    if (this.targetClosed) return; // the remote host is gone: nothing more can reach it
    if (this.outbound + chunk.length > this.relay.config.maxBytesPerConnection) return this.finish('byte_cap');
    this.count('outbound', chunk.length);
    if (!target.write(chunk)) this.conn.pauseReading(); // resumed on 'drain'
  }

  /** Remote host -> enclave. */
  private toEnclave(chunk: Buffer): void {
    const target = this.target as net.Socket;
    if (this.phase !== 'relaying') return;
    if (this.enclaveClosed) {
      target.destroy(); // nothing can reach the enclave any more
      return;
    }
    if (this.inbound + chunk.length > this.relay.config.maxBytesPerConnection) return this.finish('byte_cap');
    this.count('inbound', chunk.length);
    this.conn.write(chunk);
    if (this.conn.bufferedBytes > TRANSPORT_HIGH_WATER && !this.targetPaused) {
      this.targetPaused = true;
      target.pause(); // resumed when the enclave has read enough (onEnclaveFlushed)
    }
  }

  private onEnclaveFlushed(buffered: number): void {
    if (this.targetPaused && buffered <= TRANSPORT_LOW_WATER && this.phase === 'relaying') {
      this.targetPaused = false;
      this.target?.resume();
    }
  }

  private count(direction: 'outbound' | 'inbound', n: number): void {
    if (direction === 'outbound') this.outbound += n;
    else this.inbound += n;
    this.relay.counts.bytes[direction] += n;
    this.relay.metrics.bytes.inc({ direction }, n);
    this.timer?.refresh();
  }

  private onEnclaveClose(): void {
    switch (this.phase) {
      case 'relaying':
        this.enclaveClosed = true;
        if (this.targetClosed) return this.finish('closed');
        // Send what the enclave wrote last (a TLS close_notify), then FIN; the remote's close ends the session.
        this.target?.end();
        if (this.targetPaused) {
          this.targetPaused = false;
          this.target?.resume();
        }
        return;
      case 'refused':
        this.clearTimer();
        this.relay.refusing.delete(this);
        this.phase = 'closed';
        return;
      case 'handshake':
      case 'checking':
        // The enclave left before an answer: not a refusal.
        this.relay.log.debug(
          { host: this.request?.host, port: this.request?.port },
          'egress connection closed by the enclave before the answer',
        );
        this.discard();
        return;
      default:
        return;
    }
  }

  private onTargetClose(): void {
    if (this.phase !== 'relaying') return;
    this.targetClosed = true;
    if (this.enclaveClosed) return this.finish('closed');
    // Deliver what the remote host sent, then close towards the enclave; its close ends the session (reading
    // resumes, in case it was paused for a remote host that no longer reads, so that close is seen).
    this.conn.end();
    this.conn.resumeReading();
  }

  /**
   * Closes without a byte written: counted and logged by reason. The connection is ended and what the
   * enclave still sends is dropped until it closes (or REFUSAL_LINGER_MS passes).
   */
  refuse(reason: EgressRefusalReason, detail: { address?: string; range?: AddressCategory | null; code?: string } = {}): void {
    if (this.phase === 'refused' || this.phase === 'closed' || this.phase === 'relaying') return;
    const relay = this.relay;
    this.phase = 'refused';
    this.clearTimer();
    this.target?.destroy();
    this.target = null;
    relay.left(this);
    relay.counts.refusals[reason] += 1;
    relay.metrics.refusals.inc({ reason });
    const fields = { host: this.request?.host, port: this.request?.port, reason, ...detail };
    if (WARN_REASONS.has(reason)) relay.log.warn(fields, `egress refused: ${reason}`);
    else relay.log.info(fields, `egress refused: ${reason}`);

    if (this.conn.closed) {
      this.phase = 'closed';
      return;
    }
    if (relay.refusing.size >= relay.config.maxConnections || relay.stopped) {
      this.phase = 'closed';
      this.conn.destroy();
      return;
    }
    relay.refusing.add(this);
    this.conn.resumeReading(); // to see the enclave's close
    this.conn.end();
    this.timer = setTimeout(() => this.conn.destroy(), REFUSAL_LINGER_MS);
  }

  /** Ends a relayed connection: both sides destroyed, counted and logged by reason. */
  private finish(reason: EgressCloseReason): void {
    if (this.phase !== 'relaying') return;
    const relay = this.relay;
    this.phase = 'closed';
    this.clearTimer();
    this.target?.destroy();
    this.conn.destroy();
    relay.left(this);
    relay.counts.closes[reason] += 1;
    relay.metrics.closes?.inc({ reason });
    relay.log.info(
      {
        host: this.request?.host,
        port: this.request?.port,
        address: this.address,
        reason,
        outboundBytes: this.outbound,
        inboundBytes: this.inbound,
        durationMs: Date.now() - this.openedAt,
      },
      'egress connection closed',
    );
  }

  /** A session that ends before an answer without being refused (the enclave left, the relay stopped). */
  private discard(): void {
    this.phase = 'closed';
    this.clearTimer();
    this.target?.destroy();
    this.target = null;
    this.relay.left(this);
    this.conn.destroy();
  }

  /** The relay is stopping: everything closes now. */
  stop(): void {
    switch (this.phase) {
      case 'relaying':
        return this.finish('relay_stopped');
      case 'refused':
        this.relay.refusing.delete(this);
        this.clearTimer();
        this.phase = 'closed';
        this.conn.destroy();
        return;
      case 'handshake':
      case 'checking':
        return this.discard();
      default:
        return;
    }
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, code: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`no answer within ${ms} ms`), { code })), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function errorCode(err: unknown): string {
  const e = err as NodeJS.ErrnoException | undefined;
  return e?.code ?? e?.message ?? String(err);
}
