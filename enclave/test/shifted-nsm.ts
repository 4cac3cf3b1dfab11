/**
 * The platform's simulated NSM, served in the test's process with a clock the test shifts: the same CA (its
 * state file, so KMS accepts its documents) and the same PCRs as the platform's nsm-sim process, on a socket of
 * its own that an enclave configuration can name (`nsm.socket`). For the clock check of the real enclave
 * bundle: an NSM whose time differs from the enclave's is an enclave clock that drifted.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { encodeFrame, FrameDecoder } from '@nks/shared/framing';
import { measureString, pcr3ForRole } from '@nks/shared/pcr';
import { SimulatedNitroCa } from '../../sim/src/nsm/ca';
import { NSM_RESPONSE_MAX_BYTES, SimulatedNsm } from '../../sim/src/nsm/device';
import { PARENT_ROLE, type Platform } from '../../test/support/platform';

/** nsm-sim's default instance id, which the platform's NSM measures into PCR4. */
const INSTANCE_ID = 'i-0123456789abcdef0';

export interface ShiftedNsm {
  socket: string;
  /** Added to this process's clock for every document's timestamp. */
  offsetMs: number;
  close(): Promise<void>;
}

export async function startShiftedNsm(platform: Platform, socket: string): Promise<ShiftedNsm> {
  const ca = await SimulatedNitroCa.open(path.join(platform.runDir, 'nsm', 'nsm-ca.json'), { instanceId: INSTANCE_ID });
  const shifted: ShiftedNsm = { socket, offsetMs: 0, close: async () => undefined };
  const nsm = new SimulatedNsm({
    ca,
    moduleId: `${INSTANCE_ID}-enc-shifted`,
    pcrs: new Map([
      [0, Buffer.from(platform.pcr0, 'hex')],
      [3, Buffer.from(pcr3ForRole(PARENT_ROLE), 'hex')],
      [4, Buffer.from(measureString(INSTANCE_ID), 'hex')],
    ]),
    now: () => new Date(Date.now() + shifted.offsetMs),
  });
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    const decoder = new FrameDecoder(NSM_RESPONSE_MAX_BYTES * 2);
    let chain = Promise.resolve();
    sock.on('data', (chunk) => {
      for (const req of decoder.push(chunk)) {
        chain = chain.then(async () => {
          const res = await nsm.handle(req);
          if (!sock.destroyed) sock.write(encodeFrame(res));
        });
      }
    });
  });
  fs.rmSync(socket, { force: true });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  shifted.close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return shifted;
}
