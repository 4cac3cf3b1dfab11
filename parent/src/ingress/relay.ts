/**
 * The ingress relay (docs/TLS.md): how the public reaches the enclave's HTTPS server for the wallet routes. It
 * accepts TCP on `wallets.relay.host:port` (in production behind an NLB with TCP pass-through), connects to the
 * enclave's wallet listener over vsock, writes one preamble frame naming the client's address
 * (shared/src/ingress.ts), then pipes bytes both ways. TLS ends inside the enclave: what passes here is
 * ciphertext, and the relay never parses, keeps or logs it. It is the egress relay's mirror image
 * (parent/src/egress/relay.ts): backpressure both ways, an idle timeout and a byte cap per direction.
 *
 * Bounds: at most `maxConnections` open, and `maxPerAddress` per client address (an IPv6 client counts by its
 * /64, which one host usually holds whole); beyond either, the new connection is destroyed at once. So is a
 * connection whose enclave side cannot be reached within `connectTimeoutMs`. Metrics `nks_ingress_*`; log
 * lines name the client address, the reason and byte counts, never bytes.
 */
import net from 'node:net';
import client from 'prom-client';
import { encodeFrame } from '@nks/shared/framing';
import { encodeIngressPreamble } from '@nks/shared/ingress';
import type { Logger } from '@nks/shared/log';
import type { Connection, Transport } from '@nks/shared/transport';
import type { ParentConfig } from '../config';
import {
  createIngressMetrics,
  INGRESS_CLOSE_REASONS,
  INGRESS_REFUSAL_REASONS,
  type IngressCloseReason,
  type IngressMetrics,
  type IngressRefusalReason,
} from './metrics';

export {
  createIngressMetrics,
  INGRESS_CLOSE_REASONS,
  INGRESS_REFUSAL_REASONS,
  type IngressCloseReason,
  type IngressDirection,
  type IngressMetrics,
  type IngressRefusalReason,
} from './metrics';

export type IngressConfig = ParentConfig['wallets']['relay'];

export interface IngressRelayOptions {
  config: IngressConfig;
  transport: Transport;
  log: Logger;
  /** The metrics to update, or a registry to register `nks_ingress_*` on (createIngressMetrics). */
  metrics?: IngressMetrics | client.Registry;
}

export interface IngressRelayStats {
  /** Connections open now (what `maxConnections` bounds): connecting to the enclave or relaying. */
  open: number;
  /** Of those, connections piping bytes. */
  relaying: number;
  /** Relaying connections whose client is not read (the enclave has not taken what it sent), and the reverse. */
  clientsPaused: number;
  enclavesPaused: number;
  accepted: number;
  refusals: Record<IngressRefusalReason, number>;
  closes: Record<IngressCloseReason, number>;
  bytes: { inbound: number; outbound: number };
}

/** Bytes queued towards one side above which reading from the other pauses; it resumes at the low mark. */
const HIGH_WATER = 64 * 1024;
const LOW_WATER = 16 * 1024;
/** After one side closed, how long the other has to close too before both are destroyed. */
export const CLOSE_LINGER_MS = 1000;
/** A refusal of one kind is logged at most this often (a flood of refused connections is one line a second). */
const REFUSAL_LOG_INTERVAL_MS = 1000;

/** The client's IP address as a socket reports it, an IPv4-mapped IPv6 address as IPv4; "unknown" if gone. */
export function clientAddressOf(socket: net.Socket): string {
  const a = socket.remoteAddress;
  if (!a) return 'unknown';
  const mapped = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i.exec(a);
  return mapped ? (mapped[1] as string) : a;
}

/** What `maxPerAddress` counts by: an IPv4 address, or an IPv6 address's /64 (`2001:db8:0:1::/64`). */
export function addressKey(address: string): string {
  if (!net.isIPv6(address)) return address;
  const bare = address.split('%')[0] as string;
  const [head = '', tail] = bare.split('::');
  const headGroups = head ? head.split(':') : [];
  const tailGroups = tail === undefined ? [] : tail ? tail.split(':') : [];
  // An embedded IPv4 address (only ever at the end) fills two groups.
  const width = (groups: string[]) => groups.reduce((w, g) => w + (g.includes('.') ? 2 : 1), 0);
  const zeros = tail === undefined ? 0 : 8 - width(headGroups) - width(tailGroups);
  const groups = [...headGroups, ...Array<string>(zeros).fill('0'), ...tailGroups];
  return `${groups
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}

export class IngressRelay {
  readonly config: IngressConfig;
  readonly log: Logger;
  readonly metrics: IngressMetrics;
  readonly transport: Transport;
  /** Sessions from admission to close: what `maxConnections` bounds. */
  readonly open = new Set<Session>();
  /** Open sessions per address key: what `maxPerAddress` bounds. */
  private readonly perAddress = new Map<string, number>();
  readonly counts = {
    accepted: 0,
    refusals: Object.fromEntries(INGRESS_REFUSAL_REASONS.map((r) => [r, 0])) as Record<IngressRefusalReason, number>,
    closes: Object.fromEntries(INGRESS_CLOSE_REASONS.map((r) => [r, 0])) as Record<IngressCloseReason, number>,
    bytes: { inbound: 0, outbound: 0 },
  };
  stopped = false;
  private server: net.Server | null = null;
  private readonly refusalLog = new Map<IngressRefusalReason, { at: number; suppressed: number }>();

  constructor(options: IngressRelayOptions) {
    this.config = options.config;
    this.log = options.log;
    this.transport = options.transport;
    const m = options.metrics;
    this.metrics = m instanceof client.Registry ? createIngressMetrics(m) : (m ?? createIngressMetrics(new client.Registry()));
  }

  /** Starts accepting; resolves with the port bound (the configured one, or the one chosen for port 0). */
  async listen(): Promise<number> {
    if (this.server) throw new Error('the ingress relay is already listening');
    // Paused until the enclave side is up: the client's first bytes (its TLS ClientHello) wait in the kernel.
    const server = net.createServer({ pauseOnConnect: true }, (socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.config.host, port: this.config.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.log.error({ err }, 'ingress relay: listener error'));
    const port = this.port as number;
    this.log.info(
      {
        host: this.config.host,
        port,
        enclave: this.config.enclave,
        maxConnections: this.config.maxConnections,
        maxPerAddress: this.config.maxPerAddress,
      },
      'wallet ingress relay listening',
    );
    return port;
  }

  /** The port bound, once listening. */
  get port(): number | null {
    const a = this.server?.address();
    return a && typeof a === 'object' ? a.port : null;
  }

  private accept(socket: net.Socket): void {
    // Errors are seen through 'close'; this keeps one from being an unhandled 'error' event.
    socket.on('error', () => undefined);
    this.counts.accepted += 1;
    this.metrics.accepted.inc();
    if (this.stopped) {
      socket.destroy();
      return;
    }
    const address = clientAddressOf(socket);
    const key = addressKey(address);
    if (this.open.size >= this.config.maxConnections) return this.refuse(socket, 'too_many_connections', address);
    if ((this.perAddress.get(key) ?? 0) >= this.config.maxPerAddress) return this.refuse(socket, 'too_many_from_address', address);
    const session = new Session(this, socket, address, key);
    this.open.add(session);
    this.perAddress.set(key, (this.perAddress.get(key) ?? 0) + 1);
    this.metrics.connections.inc();
    session.start();
  }

  /** Closes at once, counted and logged by reason (at most one line a second per reason). */
  refuse(socket: net.Socket, reason: IngressRefusalReason, address: string): void {
    socket.destroy();
    this.counts.refusals[reason] += 1;
    this.metrics.refusals.inc({ reason });
    const now = Date.now();
    const last = this.refusalLog.get(reason);
    if (last && now - last.at < REFUSAL_LOG_INTERVAL_MS) {
      last.suppressed += 1;
      return;
    }
    this.refusalLog.set(reason, { at: now, suppressed: 0 });
    const fields = { client: address, reason, ...(last?.suppressed ? { alsoRefusedSinceLastLine: last.suppressed } : {}) };
    if (reason === 'connect_failed' || reason === 'connect_timeout')
      this.log.warn({ ...fields, enclave: this.config.enclave }, `wallet ingress refused: ${reason} (the enclave's wallet listener)`);
    else this.log.info(fields, `wallet ingress refused: ${reason}`);
  }

  /** A session leaving `open` (closed or refused after admission): the gauge and the per-address count follow. */
  left(session: Session): void {
    if (!this.open.delete(session)) return;
    this.metrics.connections.dec();
    const n = (this.perAddress.get(session.key) ?? 1) - 1;
    if (n > 0) this.perAddress.set(session.key, n);
    else this.perAddress.delete(session.key);
  }

  closed(reason: IngressCloseReason): void {
    this.counts.closes[reason] += 1;
    this.metrics.closes.inc({ reason });
  }

  count(direction: 'inbound' | 'outbound', n: number): void {
    this.counts.bytes[direction] += n;
    this.metrics.bytes.inc({ direction }, n);
  }

  stats(): IngressRelayStats {
    let [relaying, clientsPaused, enclavesPaused] = [0, 0, 0];
    for (const s of this.open) {
      if (!s.relaying) continue;
      relaying += 1;
      if (s.clientReadingPaused) clientsPaused += 1;
      if (s.enclaveReadingPaused) enclavesPaused += 1;
    }
    const c = this.counts;
    return {
      open: this.open.size,
      relaying,
      clientsPaused,
      enclavesPaused,
      accepted: c.accepted,
      refusals: { ...c.refusals },
      closes: { ...c.closes },
      bytes: { ...c.bytes },
    };
  }

  /** Stops accepting and closes every connection at once. */
  async close(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const server = this.server;
    for (const s of [...this.open]) s.stop();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    this.log.info('wallet ingress relay stopped');
  }
}

type Phase = 'connecting' | 'relaying' | 'closed';

/** One client connection: the enclave connection it waits for, then the pipe between the two. */
class Session {
  private phase: Phase = 'connecting';
  private conn: Connection | null = null;
  private clientClosed = false;
  private enclaveClosed = false;
  /** The client is not read because the enclave side holds too much unsent. */
  private clientPaused = false;
  private inbound = 0;
  private outbound = 0;
  private readonly openedAt = Date.now();
  /** The idle timer while relaying, then the linger once one side has closed. */
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly relay: IngressRelay,
    private readonly socket: net.Socket,
    readonly address: string,
    readonly key: string,
  ) {}

  get relaying(): boolean {
    return this.phase === 'relaying';
  }

  get clientReadingPaused(): boolean {
    return this.clientPaused;
  }

  get enclaveReadingPaused(): boolean {
    return this.conn?.readingPaused ?? false;
  }

  start(): void {
    const { relay, socket } = this;
    socket.setNoDelay(true);
    socket.once('close', () => this.onClientClose());
    const started = Date.now();
    const timeoutMs = relay.config.connectTimeoutMs;
    relay.transport.connect(relay.config.enclave, { timeoutMs }).then(
      (conn) => this.onEnclave(conn),
      (err: unknown) => {
        if (this.phase !== 'connecting') return;
        this.phase = 'closed';
        relay.left(this);
        const reason = Date.now() - started >= timeoutMs ? 'connect_timeout' : 'connect_failed';
        relay.log.debug({ client: this.address, error: (err as Error).message }, 'wallet ingress: enclave connect failed');
        relay.refuse(socket, reason, this.address);
      },
    );
  }

  private onEnclave(conn: Connection): void {
    if (this.phase !== 'connecting') {
      conn.destroy(); // the client left or the relay stopped meanwhile
      return;
    }
    const { relay, socket } = this;
    this.conn = conn;
    this.phase = 'relaying';
    conn.start({
      data: (chunk) => this.toClient(chunk),
      close: () => this.onEnclaveClose(),
      flushed: (buffered) => this.onEnclaveFlushed(buffered),
    });
    // The preamble first (the enclave reads it before its TLS server sees a byte), then the client's bytes.
    conn.write(encodeFrame(encodeIngressPreamble({ client: this.address })));
    socket.on('data', (chunk: Buffer) => this.toEnclave(chunk));
    socket.on('drain', () => {
      if (this.phase === 'relaying' && !this.enclaveClosed) conn.resumeReading();
    });
    socket.once('end', () => this.onClientEnd());
    this.timer = setTimeout(() => this.finish('idle_timeout'), relay.config.idleTimeoutMs);
    socket.resume();
    relay.log.debug({ client: this.address }, 'wallet ingress connection opened');
  }

  /** Client -> enclave. */
  private toEnclave(chunk: Buffer): void {
    const conn = this.conn as Connection;
    if (this.phase !== 'relaying' || this.enclaveClosed) return; // nothing can reach the enclave any more
    if (this.inbound + chunk.length > this.relay.config.maxBytesPerConnection) return this.finish('byte_cap');
    this.inbound += chunk.length;
    this.relay.count('inbound', chunk.length);
    this.timer?.refresh();
    conn.write(chunk);
    if (conn.bufferedBytes > HIGH_WATER && !this.clientPaused) {
      this.clientPaused = true;
      this.socket.pause(); // resumed when the enclave has taken enough (onEnclaveFlushed)
    }
  }

  private onEnclaveFlushed(buffered: number): void {
    if (this.clientPaused && buffered <= LOW_WATER && this.phase === 'relaying') {
      this.clientPaused = false;
      this.socket.resume();
    }
  }

  /** Enclave -> client. */
  private toClient(chunk: Buffer): void {
    const conn = this.conn as Connection;
    if (this.phase !== 'relaying' || this.clientClosed) return;
    if (this.outbound + chunk.length > this.relay.config.maxBytesPerConnection) return this.finish('byte_cap');
    this.outbound += chunk.length;
    this.relay.count('outbound', chunk.length);
    this.timer?.refresh();
    if (!this.socket.write(chunk)) conn.pauseReading(); // resumed on 'drain'
  }

  /** The client sent FIN: pass it on (the enclave then answers its close), and give both sides a moment. */
  private onClientEnd(): void {
    if (this.phase !== 'relaying') return;
    this.conn?.end();
    this.linger();
  }

  private onClientClose(): void {
    this.clientClosed = true;
    if (this.phase === 'connecting') {
      // Gone before the enclave side was up (a paused socket sees this only on an error).
      this.phase = 'closed';
      this.relay.left(this);
      this.relay.closed('closed');
      return;
    }
    if (this.phase !== 'relaying') return;
    if (this.enclaveClosed) return this.finish('closed');
    // What the client sent last (a TLS close_notify) is flushed, then the enclave's close ends the session.
    this.conn?.end();
    this.conn?.resumeReading();
    this.linger();
  }

  private onEnclaveClose(): void {
    if (this.phase !== 'relaying') return;
    this.enclaveClosed = true;
    if (this.clientClosed) return this.finish('closed');
    // Deliver what the enclave wrote last, then FIN; the client's close ends the session.
    this.socket.end();
    if (this.clientPaused) {
      this.clientPaused = false;
      this.socket.resume();
    }
    this.linger();
  }

  /** One side is done: the other has CLOSE_LINGER_MS to close too, then both are destroyed. */
  private linger(): void {
    this.clearTimer();
    this.timer = setTimeout(() => this.finish('closed'), CLOSE_LINGER_MS);
  }

  /** Ends the session: both sides destroyed, counted and logged by reason. */
  private finish(reason: IngressCloseReason): void {
    if (this.phase === 'closed') return;
    const wasRelaying = this.phase === 'relaying';
    this.phase = 'closed';
    this.clearTimer();
    this.socket.destroy();
    this.conn?.destroy();
    this.relay.left(this);
    this.relay.closed(reason);
    const fields = {
      client: this.address,
      reason,
      inboundBytes: this.inbound,
      outboundBytes: this.outbound,
      durationMs: Date.now() - this.openedAt,
    };
    if (reason === 'byte_cap') this.relay.log.warn(fields, 'wallet ingress connection closed: byte cap reached');
    else this.relay.log.debug({ ...fields, relayed: wasRelaying }, 'wallet ingress connection closed');
  }

  /** The relay is stopping: everything closes now. */
  stop(): void {
    this.finish('relay_stopped');
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}

/** Starts the relay of `options.config`; resolves once it listens. */
export async function startIngressRelay(options: IngressRelayOptions): Promise<IngressRelay> {
  const relay = new IngressRelay(options);
  await relay.listen();
  return relay;
}
