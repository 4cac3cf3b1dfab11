/**
 * What a peer that sends a large frame one byte at a time costs the receiver. The vsock addon hands over one
 * Buffer per kernel read; a decoder that kept every chunk until the frame completed held one Buffer object
 * (hundreds of bytes) per payload byte: ~20 MB for 100 kB, so a few connections with 1 MiB frames could exhaust
 * an enclave's memory (security review of the vsock addon). The decoder now assembles a frame in one buffer of
 * its announced length, so the cost is bounded by the frame limit.
 */
import { DEFAULT_MAX_FRAME_BYTES, FrameDecoder } from '../src/framing';
import { RpcServer } from '../src/rpc';
import { adoptVsockHandle } from '../src/transport/vsock';
import { captureLogger } from './helpers';
import { binding, closeTracked, gc, track } from './vsock-helpers';

afterEach(() => closeTracked());

const turn = () => new Promise((r) => setImmediate(r));

it('the decoder keeps none of the chunks it was given while a frame is incomplete', async () => {
  const decoder = new FrameDecoder(1024 * 1024);
  const header = Buffer.alloc(8);
  header.writeUInt32BE(1024, 0);
  decoder.push(header);
  /** Feeds one byte in a chunk of its own; returns a weak reference to that chunk and what push returned. */
  const feed = (i: number) => {
    const chunk = Buffer.from([i & 0xff]);
    return { ref: new WeakRef(chunk), frames: decoder.push(chunk).length };
  };
  const fed = Array.from({ length: 500 }, (_, i) => feed(i));
  expect(fed.reduce((n, f) => n + f.frames, 0)).toBe(0);
  const refs = fed.map((f) => f.ref);
  expect(decoder.bufferedBytes).toBe(500);
  await turn(); // a WeakRef keeps its target alive until the current job ends
  gc();
  expect(refs.filter((r) => r.deref() !== undefined).length).toBe(0);
});

it('a 1 MiB frame sent one byte per read over the addon costs about the frame, not ~200 bytes per byte', async () => {
  const server = new RpcServer({ name: 'enclave', methods: {}, logger: captureLogger('error').logger });
  const [peer, enclaveSide] = track(binding.socketpair());
  binding.attach(peer, () => {});
  server.attach(adoptVsockHandle(binding, enclaveSide, 'enclave#1'));

  gc();
  const before = process.memoryUsage();
  const header = Buffer.alloc(8);
  header.writeUInt32BE(DEFAULT_MAX_FRAME_BYTES, 0); // the enclave's default maxFrameBytes
  binding.write(peer, header);
  await turn();
  const N = 100_000;
  const one = Buffer.from(' ');
  for (let i = 0; i < N; i++) {
    binding.write(peer, one);
    await turn(); // the receiver reads once per loop turn: one 1-byte Buffer per byte
  }
  gc();
  const after = process.memoryUsage();
  const grown = after.heapUsed - before.heapUsed + (after.external - before.external);
  expect(server.stats.connections).toBe(1);
  // The announced 1 MiB plus slack; keeping the chunks grew this by ~20 MB.
  expect(grown).toBeLessThan(4 * 1024 * 1024);
  await server.close(100);
});
