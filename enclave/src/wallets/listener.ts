/**
 * The wallet listener (docs/TLS.md): where the parent's ingress relay connects, one connection per public TCP
 * connection (shared/src/ingress.ts). Each must first send one preamble frame, `{client}`, within
 * `preambleTimeoutMs`; the bytes after it are the client's TLS, handed to the HTTPS server (server.ts) as a
 * stream. At most `maxConnections` are open at once: one more is closed at once. A connection over the limit,
 * or with a late or malformed preamble, is counted as refused and closed without a byte answered.
 *
 * The preamble is the parent's word: a lie about `client` only moves which address a limit counts.
 */
import type { Duplex } from 'node:stream';
import { FRAME_HEADER_BYTES, FrameDecoder } from '@nks/shared/framing';
import { INGRESS_PREAMBLE_MAX_BYTES, parseIngressPreamble } from '@nks/shared/ingress';
import type { Logger } from '@nks/shared/log';
import type { Connection, Listener, Transport } from '@nks/shared/transport';
import { ConnectionStream } from '../net/connection-stream';
import type { WalletCounters } from './server';

export interface WalletListenerOptions {
  transport: Transport;
  address: string;
  maxConnections: number;
  preambleTimeoutMs: number;
  counters: WalletCounters;
  /** Takes a connection past its preamble (WalletsServer.accept). */
  accept(stream: Duplex, client: string): void;
  logger: Logger;
}

export class WalletListener {
  private listener: Listener | null = null;
  private readonly open = new Set<Connection>();

  constructor(private readonly options: WalletListenerOptions) {}

  async listen(): Promise<void> {
    this.listener = await this.options.transport.listen(this.options.address, (conn) => this.connection(conn));
  }

  /** Stops accepting and closes every connection. */
  async close(): Promise<void> {
    await this.listener?.close();
    this.listener = null;
    for (const conn of this.open) conn.destroy();
  }

  private connection(conn: Connection): void {
    const { counters } = this.options;
    if (this.open.size >= this.options.maxConnections) {
      counters.connectionsRefused += 1;
      this.options.logger.debug({ open: this.open.size }, 'wallet connection refused: over wallets.maxConnections');
      conn.destroy();
      return;
    }
    this.open.add(conn);
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
        clearTimeout(timer);
        stream = new ConnectionStream(conn);
        const rest = head.subarray(end);
        head = Buffer.alloc(0);
        stream.received(rest);
        this.options.accept(stream, preamble.client);
      },
      close: (error) => {
        clearTimeout(timer);
        this.open.delete(conn);
        counters.connections = this.open.size;
        stream?.gone(error);
      },
      flushed: (buffered) => stream?.flushed(buffered),
    });
  }
}
