/**
 * A transport that records every byte it receives, so a test can hold everything a peer process sent over
 * (simulated) vsock and scan it; and a recording TCP proxy, for what passes between a client and a TCP port.
 */
import net from 'node:net';
import type { Connection, ConnectionHandlers, Listener, Transport } from '@nks/shared/transport';

class RecordingConnection implements Connection {
  constructor(
    private readonly inner: Connection,
    private readonly sink: Buffer[],
  ) {}
  get description() {
    return this.inner.description;
  }
  get closed() {
    return this.inner.closed;
  }
  get writeMode() {
    return this.inner.writeMode;
  }
  get bufferedBytes() {
    return this.inner.bufferedBytes;
  }
  get readingPaused() {
    return this.inner.readingPaused;
  }
  start(h: ConnectionHandlers): void {
    this.inner.start({
      data: (chunk) => {
        this.sink.push(Buffer.from(chunk));
        h.data(chunk);
      },
      close: (e) => h.close(e),
      ...(h.flushed ? { flushed: (n: number) => h.flushed?.(n) } : {}),
    });
  }
  write(chunk: Buffer): void {
    this.inner.write(chunk);
  }
  pauseReading(): void {
    this.inner.pauseReading();
  }
  resumeReading(): void {
    this.inner.resumeReading();
  }
  end(): void {
    this.inner.end();
  }
  destroy(): void {
    this.inner.destroy();
  }
}

export class RecordingTransport implements Transport {
  readonly received: Buffer[] = [];
  constructor(private readonly inner: Transport) {}
  get kind() {
    return this.inner.kind;
  }
  async connect(address: string, options?: { timeoutMs?: number }): Promise<Connection> {
    return new RecordingConnection(await this.inner.connect(address, options), this.received);
  }
  listen(address: string, onConnection: (conn: Connection) => void): Promise<Listener> {
    return this.inner.listen(address, (c) => onConnection(new RecordingConnection(c, this.received)));
  }
  bytes(): Buffer {
    return Buffer.concat(this.received);
  }
}

export interface RecordingProxy {
  /** The port on 127.0.0.1 to connect to instead of the target. */
  port: number;
  /** Every byte that passed, both directions, in order of arrival. */
  bytes(): Buffer;
  close(): Promise<void>;
}

/**
 * A TCP proxy on 127.0.0.1 that forwards to `targetPort` and keeps every byte that passes, both ways: what anyone
 * on the path between a client and the parent's ingress relay, the parent included, can see.
 */
export async function startRecordingProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<RecordingProxy> {
  const seen: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((a) => {
    const b = net.connect(targetPort, targetHost);
    for (const s of [a, b]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        sockets.delete(s);
        a.destroy();
        b.destroy();
      });
    }
    a.on('data', (d: Buffer) => {
      seen.push(Buffer.from(d));
      b.write(d);
    });
    b.on('data', (d: Buffer) => {
      seen.push(Buffer.from(d));
      a.write(d);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    bytes: () => Buffer.concat(seen),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
