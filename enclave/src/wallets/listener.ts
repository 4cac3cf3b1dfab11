/**
 * The wallet listener (docs/TLS.md): where the parent's ingress relay connects, one connection per public TCP
 * connection (shared/src/ingress.ts). Each must first send one preamble frame, `{client}`, within
 * `preambleTimeoutMs`; the bytes after it are the client's TLS, handed to the HTTPS server (server.ts) as a
 * stream. At most `maxConnections` are open at once: one more closes the keep-alive connection idle the longest
 * (the server's choice: past its handshake, a request answered and none in flight), so that a few idle
 * connections kept open cannot lock everyone out, or is itself closed when there is none (all are busy, or still
 * in their handshake, which `handshakeTimeoutMs` bounds). At most `maxConnectionsPerAddress` are open per client
 * address of the preambles (IPv6 by /64, as the rate limits count). A connection over a limit, or with a late or
 * malformed preamble, is counted as refused and closed without a byte answered.
 *
 * The preamble is the parent's word: a lie about `client` only moves which address a limit counts.
 */
import type { Duplex } from 'node:stream';
import { FRAME_HEADER_BYTES, FrameDecoder } from '@nks/shared/framing';
import { INGRESS_PREAMBLE_MAX_BYTES, parseIngressPreamble } from '@nks/shared/ingress';
import type { Logger } from '@nks/shared/log';
import type { Connection, Listener, Transport } from '@nks/shared/transport';
import { ConnectionStream } from '../net/connection-stream';
import { addressKey, type WalletCounters } from './server';

export interface WalletListenerOptions {
  transport: Transport;
  address: string;
  maxConnections: number;
  maxConnectionsPerAddress: number;
  preambleTimeoutMs: number;
  counters: WalletCounters;
  /** Takes a connection past its preamble (WalletsServer.accept). */
  accept(stream: Duplex, client: string): void;
  /** The stream of the connection idle the longest, given up by the server (WalletsServer.takeIdlest), or null. */
  takeIdlest(): Duplex | null;
  logger: Logger;
}

export class WalletListener {
  private listener: Listener | null = null;
  /** Every open connection, with its address key once its preamble is read. */
  private readonly open = new Map<Connection, { key: string | null }>();
  private readonly perAddress = new Map<string, number>();
  /** The connection under each stream handed to the server (what `takeIdlest` answers). */
  private readonly connections = new WeakMap<Duplex, Connection>();

  constructor(private readonly options: WalletListenerOptions) {}

  async listen(): Promise<void> {
    this.listener = await this.options.transport.listen(this.options.address, (conn) => this.connection(conn));
  }

  /** Stops accepting and closes every connection. */
  async close(): Promise<void> {
    await this.listener?.close();
    this.listener = null;
    for (const conn of this.open.keys()) conn.destroy();
  }

  /** Counts a connection closed; idempotent (a connection given up is forgotten before its close arrives). */
  private forget(conn: Connection): void {
    const entry = this.open.get(conn);
    if (!entry) return;
    this.open.delete(conn);
    this.options.counters.connections = this.open.size;
    if (entry.key === null) return;
    const n = (this.perAddress.get(entry.key) ?? 1) - 1;
    if (n > 0) this.perAddress.set(entry.key, n);
    else this.perAddress.delete(entry.key);
  }

  /** At maxConnections: closes the connection idle the longest, if the server has one. */
  private makeRoom(): boolean {
    const stream = this.options.takeIdlest();
    const idle = stream && this.connections.get(stream);
    if (!idle || !this.open.has(idle)) return false;
    this.forget(idle);
    idle.destroy();
    this.options.counters.connectionsEvicted += 1;
    this.options.logger.debug('closed the wallet connection idle the longest: at wallets.maxConnections');
    return true;
  }

  private connection(conn: Connection): void {
    const { counters } = this.options;
    if (this.open.size >= this.options.maxConnections && !this.makeRoom()) {
      counters.connectionsRefused += 1;
      this.options.logger.debug({ open: this.open.size }, 'wallet connection refused: over wallets.maxConnections');
      conn.destroy();
      return;
    }
    const entry: { key: string | null } = { key: null };
    this.open.set(conn, entry);
    counters.connections = this.open.size;

    let stream: ConnectionStream | null = null;
    // The preamble's bytes until its frame is whole: at most a header and INGRESS_PREAMBLE_MAX_BYTES, plus the
    // rest of the chunk that completes it.
    let head: Buffer = Buffer.alloc(0);
    const refuse = (why: string) => {
      if (stream || conn.closed) return;
      clearTimeout(timer);
      counters.connectionsRefused += 1;
      this.options.logger.debug(`wallet connection refused: ${why}`);
      conn.destroy();
    };
    const timer = setTimeout(() => refuse('no preamble in time'), this.options.preambleTimeoutMs);
    conn.start({
      data: (chunk) => {
        if (stream) return stream.received(chunk);
        head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
        if (head.length < FRAME_HEADER_BYTES) return;
        const length = head.readUInt32BE(0);
        if (length > INGRESS_PREAMBLE_MAX_BYTES) return refuse('malformed preamble');
        const end = FRAME_HEADER_BYTES + length;
        if (head.length < end) return;
        let preamble;
        try {
          const [payload] = new FrameDecoder(INGRESS_PREAMBLE_MAX_BYTES).push(head.subarray(0, end));
          preamble = payload && parseIngressPreamble(payload);
        } catch {
          preamble = null; // a bad CRC
        }
        if (!preamble) return refuse('malformed preamble');
        const key = addressKey(preamble.client);
        const n = this.perAddress.get(key) ?? 0;
        if (n >= this.options.maxConnectionsPerAddress) return refuse('over wallets.maxConnectionsPerAddress');
        this.perAddress.set(key, n + 1);
        entry.key = key;
        clearTimeout(timer);
        stream = new ConnectionStream(conn);
        this.connections.set(stream, conn);
        const rest = head.subarray(end);
        head = Buffer.alloc(0);
        stream.received(rest);
        this.options.accept(stream, preamble.client);
      },
      close: (error) => {
        clearTimeout(timer);
        this.forget(conn);
        stream?.gone(error);
      },
      flushed: (buffered) => stream?.flushed(buffered),
    });
  }
}
