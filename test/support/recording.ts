/**
 * A transport that records every byte it receives, so a test can hold everything a peer process sent over
 * (simulated) vsock and scan it.
 */
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
