/**
 * The simulated NSM's socket (development and tests): the same CBOR bytes the ioctl carries, one per frame of
 * the shared frame codec, answered in order on one connection.
 */
import net from 'node:net';
import { encodeFrame, FrameDecoder } from '@nks/shared/framing';
import type { NsmTransport } from './client';

const RESPONSE_MAX_BYTES = 0x3000;

export class SocketNsmTransport implements NsmTransport {
  readonly kind = 'simulated' as const;
  private socket: net.Socket | null = null;
  private decoder = new FrameDecoder(RESPONSE_MAX_BYTES);
  private waiting: Array<{ resolve(b: Buffer): void; reject(e: Error): void }> = [];

  constructor(
    readonly socketPath: string,
    private readonly timeoutMs = 10_000,
  ) {}

  private connect(): net.Socket {
    if (this.socket && !this.socket.destroyed) return this.socket;
    this.decoder = new FrameDecoder(RESPONSE_MAX_BYTES);
    const sock = net.connect(this.socketPath);
    sock.on('data', (chunk) => {
      let frames: Buffer[];
      try {
        frames = this.decoder.push(chunk);
      } catch (err) {
        sock.destroy(err as Error);
        return;
      }
      for (const f of frames) this.waiting.shift()?.resolve(f);
    });
    const fail = (err?: Error) => {
      const e = new Error(`simulated NSM at ${this.socketPath}: ${err?.message ?? 'connection closed'}`, err ? { cause: err } : undefined);
      for (const w of this.waiting.splice(0)) w.reject(e);
      if (this.socket === sock) this.socket = null;
    };
    sock.on('error', (err) => fail(err));
    sock.on('close', () => fail());
    this.socket = sock;
    return sock;
  }

  request(cbor: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiting.indexOf(entry);
        if (i >= 0) this.waiting.splice(i, 1);
        this.socket?.destroy(); // later answers would be out of step
        reject(new Error(`simulated NSM did not answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      const entry = {
        resolve: (b: Buffer) => {
          clearTimeout(timer);
          resolve(b);
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.waiting.push(entry);
      this.connect().write(encodeFrame(cbor));
    });
  }

  close(): void {
    this.socket?.destroy();
    this.socket = null;
  }
}
