/**
 * A recording relay between two simulated vsock addresses: every byte that passes, in both directions, is
 * kept, so a test can scan what the parent sent to and received from the enclave.
 */
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { simulatedSocketPath } from '@nks/shared/transport';

export interface Relay {
  bytes(): Buffer;
  close(): Promise<void>;
}

export async function startRelay(runDir: string, listenAddress: string, targetAddress: string): Promise<Relay> {
  const from = simulatedSocketPath(runDir, listenAddress);
  const to = simulatedSocketPath(runDir, targetAddress);
  const seen: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  fs.mkdirSync(path.dirname(from), { recursive: true });
  fs.rmSync(from, { force: true });
  const server = net.createServer((a) => {
    const b = net.connect(to);
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
  await new Promise<void>((resolve) => server.listen(from, resolve));
  return {
    bytes: () => Buffer.concat(seen),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
