/**
 * A stand-in for the parent's egress relay in tests of the TrueWallet API (docs/PROJECTS.md, "JWKS"), for a
 * parent that does not run its own: it listens on the simulated vsock address the enclave dials, reads the one
 * request frame of the handshake (shared/src/egress.ts), and connects to 127.0.0.1 at the port asked for when
 * the host is `localhost` (the simulated IdP's); anything else is closed, as the real relay's refusals are. It
 * checks nothing else: the relay's own rules are tested with it (parent/test/egress*). Loopback only.
 */
import net from 'node:net';
import { DEFAULT_EGRESS_ADDRESS, EGRESS_MAX_REQUEST_BYTES, EGRESS_OK, parseEgressRequest, type EgressRequest } from '@nks/shared/egress';
import { FrameDecoder } from '@nks/shared/framing';
import { SimulatedVsockTransport, type Connection } from '@nks/shared/transport';

export interface OpenRelay {
  /** Every request the enclave made, in order (refused ones included). */
  readonly requests: EgressRequest[];
  close(): Promise<void>;
}

export async function startOpenRelay(runDir: string, address = DEFAULT_EGRESS_ADDRESS): Promise<OpenRelay> {
  const requests: EgressRequest[] = [];
  const open = new Set<{ conn: Connection; upstream: net.Socket | null }>();
  const listener = await new SimulatedVsockTransport(runDir).listen(address, (conn) => {
    const state = { conn, upstream: null as net.Socket | null };
    open.add(state);
    const decoder = new FrameDecoder(EGRESS_MAX_REQUEST_BYTES);
    let asked = false;
    conn.start({
      data(chunk) {
        if (state.upstream) {
          state.upstream.write(chunk);
          return;
        }
        if (asked) return;
        let frames: Buffer[];
        try {
          frames = decoder.push(chunk);
        } catch {
          conn.destroy();
          return;
        }
        const frame = frames[0];
        if (!frame) return;
        asked = true;
        const req = parseEgressRequest(frame);
        if (req) requests.push(req);
        if (!req || req.host !== 'localhost') {
          conn.destroy();
          return;
        }
        const upstream = net.connect(req.port, '127.0.0.1');
        upstream.once('connect', () => {
          state.upstream = upstream;
          conn.write(Buffer.from([EGRESS_OK]));
        });
        upstream.on('data', (d: Buffer) => conn.write(d));
        upstream.on('error', () => conn.destroy());
        upstream.on('close', () => conn.end());
      },
      close() {
        state.upstream?.destroy();
        open.delete(state);
      },
    });
  });
  return {
    requests,
    async close() {
      await listener.close();
      for (const s of open) {
        s.upstream?.destroy();
        s.conn.destroy();
      }
    },
  };
}
