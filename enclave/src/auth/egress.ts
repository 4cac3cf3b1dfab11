/**
 * The enclave's way out to the internet (docs/PROTOCOL.md; shared/src/egress.ts): a connection to the parent's
 * egress relay, one request frame `{host, port}`, then the relay's one byte EGRESS_OK and raw bytes both ways.
 * The relay is the parent's: it may refuse, connect anywhere, or change any byte. So nothing read here is
 * trusted; TLS, which runs over this stream and ends in the enclave (https-get.ts), is what authenticates
 * the server.
 *
 * `openEgress` answers a Node Duplex over the transport's Connection (net/connection-stream.ts), so
 * `tls.connect({socket})` runs on it.
 */
import type { Duplex } from 'node:stream';
import { EGRESS_OK, encodeEgressRequest, type EgressRequest } from '@nks/shared/egress';
import { encodeFrame } from '@nks/shared/framing';
import type { Connection, Transport } from '@nks/shared/transport';
import { ConnectionStream } from '../net/connection-stream';

/** Why an egress connection did not open; the message never carries bytes the relay sent. */
export class EgressError extends Error {
  override readonly name = 'EgressError';
}

/**
 * Opens a byte stream to `target` through the relay at `address`: connects, sends the request frame and waits
 * for EGRESS_OK, all within `timeoutMs`. A close, any other first byte, or the time running out is an
 * EgressError (the relay answers every refusal with the same close, so there is nothing more to say).
 */
export async function openEgress(transport: Transport, address: string, target: EgressRequest, timeoutMs: number): Promise<Duplex> {
  const started = Date.now();
  let conn: Connection;
  try {
    conn = await transport.connect(address, { timeoutMs });
  } catch (err) {
    throw new EgressError('the egress relay is not reachable', { cause: err });
  }
  return new Promise<Duplex>((resolve, reject) => {
    let stream: ConnectionStream | null = null;
    const fail = (message: string) => {
      clearTimeout(timer);
      conn.destroy();
      reject(new EgressError(message));
    };
    const timer = setTimeout(() => fail('the egress relay did not answer in time'), Math.max(1, timeoutMs - (Date.now() - started)));
    conn.start({
      data(chunk) {
        if (stream) {
          stream.received(chunk);
          return;
        }
        if (chunk[0] !== EGRESS_OK) {
          fail('the egress relay refused the connection');
          return;
        }
        clearTimeout(timer);
        stream = new ConnectionStream(conn, () => new EgressError('the egress connection is closed'));
        // Bytes that followed EGRESS_OK in the same chunk are the stream's first.
        stream.received(chunk.subarray(1));
        resolve(stream);
      },
      close(error) {
        if (stream) stream.gone(error);
        else fail('the egress relay refused the connection');
      },
      flushed(buffered) {
        stream?.flushed(buffered);
      },
    });
    conn.write(encodeFrame(encodeEgressRequest(target)));
  });
}
