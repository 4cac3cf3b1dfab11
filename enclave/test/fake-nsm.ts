/**
 * A fake NSM for recipient-key tests: every request is answered as an Attestation whose document is
 * `doc-N` (N counts the requests), so a test sees how many documents were made and which one it holds.
 */
import { encodeCbor } from '@nks/shared/cbor';
import { NsmClient, type NsmTransport } from '../src/nsm/client';

export interface FakeNsm {
  client: NsmClient;
  transport: NsmTransport;
  /** Attestation requests so far. */
  attests(): number;
  /** Requests waiting to be answered (with `hold`). */
  held(): number;
  /** Answers every held request. */
  release(): void;
}

/** `hold`: requests wait for `release()`; `onRequest(n)` runs as request n arrives. */
export function fakeNsm(opts: { hold?: boolean; onRequest?: (n: number) => void } = {}): FakeNsm {
  let attests = 0;
  const held: Array<() => void> = [];
  const transport: NsmTransport = {
    kind: 'simulated',
    request: async () => {
      attests += 1;
      const n = attests;
      opts.onRequest?.(n);
      if (opts.hold) await new Promise<void>((r) => held.push(r));
      return encodeCbor(new Map([['Attestation', new Map([['document', Buffer.from(`doc-${n}`)]])]]));
    },
    close: () => undefined,
  };
  return {
    client: new NsmClient(transport),
    transport,
    attests: () => attests,
    held: () => held.length,
    release: () => held.splice(0).forEach((r) => r()),
  };
}
