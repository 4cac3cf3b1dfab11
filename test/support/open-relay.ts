/**
 * An egress relay that stands where a compromised parent would (shared/src/egress.ts): it listens at the
 * enclave's egress address (simulated vsock), reads the request frame `{host, port}` and, by default, connects
 * to exactly that (any host, any port: no allow-list, no address checks), answers EGRESS_OK and pipes bytes.
 * A test can make it do anything a parent could: refuse, hang, answer another first byte, connect somewhere
 * else, or change the bytes it pipes. The enclave must be safe whatever it does.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { DEFAULT_EGRESS_ADDRESS, EGRESS_MAX_REQUEST_BYTES, EGRESS_OK, parseEgressRequest, type EgressRequest } from '@nks/shared/egress';
import { FRAME_HEADER_BYTES, FrameDecoder } from '@nks/shared/framing';
import { simulatedSocketPath } from '@nks/shared/transport';

/**
 * What the relay does with a request: connect to a target (and pipe), `refuse` (close at once), `hang` (say
 * nothing, keep the connection open), or answer these bytes and close.
 */
export type RelayAction = { host: string; port: number } | 'refuse' | 'hang' | Buffer;

export interface OpenRelay {
  /** Every request the enclave sent, in order. */
  readonly requests: EgressRequest[];
  /** Decides each request's fate; default: connect where asked. */
  route: (req: EgressRequest) => RelayAction;
  /** Applied to each chunk from the server to the enclave, with the bytes passed before it; null: none. */
  tamper: ((chunk: Buffer, offset: number) => Buffer) | null;
  close(): Promise<void>;
}

export async function startOpenRelay(runDir: string, address = DEFAULT_EGRESS_ADDRESS): Promise<OpenRelay> {
  const file = simulatedSocketPath(runDir, address);
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  };
  const relay: OpenRelay = {
    requests: [],
    route: (req) => ({ host: req.host, port: req.port }),
    tamper: null,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };

  const serve = (enclave: net.Socket, req: EgressRequest, rest: Buffer) => {
    const action = relay.route(req);
    if (action === 'refuse') return void enclave.destroy();
    if (action === 'hang') return;
    if (Buffer.isBuffer(action)) return void enclave.end(action);
    const upstream = net.connect({ host: action.host, port: action.port });
    track(upstream);
    upstream.on('close', () => enclave.destroy());
    enclave.on('close', () => upstream.destroy());
    upstream.once('connect', () => {
      enclave.write(Buffer.from([EGRESS_OK]));
      if (rest.length) upstream.write(rest);
      enclave.on('data', (d: Buffer) => upstream.write(d));
      let offset = 0;
      upstream.on('data', (d: Buffer) => {
        const out = relay.tamper ? relay.tamper(d, offset) : d;
        offset += d.length;
        enclave.write(out);
      });
    });
  };

  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.rmSync(file, { force: true });
  const server = net.createServer((enclave) => {
    track(enclave);
    let held = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      held = Buffer.concat([held, d]);
      if (held.length < FRAME_HEADER_BYTES) return;
      const length = held.readUInt32BE(0);
      if (length > EGRESS_MAX_REQUEST_BYTES) return void enclave.destroy();
      if (held.length < FRAME_HEADER_BYTES + length) return;
      enclave.off('data', onData);
      let req: EgressRequest | null;
      try {
        const [payload] = new FrameDecoder(EGRESS_MAX_REQUEST_BYTES).push(held.subarray(0, FRAME_HEADER_BYTES + length));
        req = payload ? parseEgressRequest(payload) : null;
      } catch {
        req = null;
      }
      if (!req) return void enclave.destroy();
      relay.requests.push(req);
      serve(enclave, req, held.subarray(FRAME_HEADER_BYTES + length));
    };
    enclave.on('data', onData);
  });
  await new Promise<void>((resolve) => server.listen(file, resolve));
  return relay;
}
