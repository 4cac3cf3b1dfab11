/**
 * A peer speaking raw frames on a simulated vsock port: one request at a time, always id 1, so answers can be
 * compared byte for byte, and no client library in between (it sends what a parent of any version might).
 */
import net from 'node:net';
import { encodeFrame, FrameDecoder } from '@nks/shared/framing';
import { simulatedSocketPath } from '@nks/shared/transport';

export class RawPeer {
  private socket!: net.Socket;
  private readonly decoder = new FrameDecoder();
  private waiting: ((payload: Buffer) => void) | null = null;

  async connect(runDir: string, address: string): Promise<void> {
    this.socket = net.connect(simulatedSocketPath(runDir, address));
    await new Promise<void>((resolve, reject) => this.socket.once('connect', resolve).once('error', reject));
    this.socket.on('data', (chunk) => {
      for (const payload of this.decoder.push(chunk)) this.waiting?.(payload);
    });
  }

  /** `envelope`: more fields of the request's envelope (a `requestId`, say), as a parent might send them. */
  call(method: string, params: unknown, envelope: Record<string, unknown> = {}): Promise<Buffer> {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.socket.write(encodeFrame(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method, params, ...envelope }))));
    });
  }

  /** The answer parsed as JSON. */
  async callJson(
    method: string,
    params: unknown,
    envelope: Record<string, unknown> = {},
  ): Promise<{ result?: unknown; error?: { code: number; message: string; data?: Record<string, unknown> } }> {
    return JSON.parse((await this.call(method, params, envelope)).toString('utf8'));
  }

  close(): void {
    this.socket.destroy();
  }
}
