/** Transport selection by configuration: real AF_VSOCK in production, Unix sockets in development and tests. */
import { z } from 'zod';
import { SimulatedVsockTransport } from './simulated';
import { RealVsockTransport } from './vsock';
import { parseVsockAddress, type Transport } from './types';

export * from './types';
export { SimulatedVsockTransport, simulatedSocketPath } from './simulated';
export { RealVsockTransport, loadVsockBinding } from './vsock';

export const TransportConfigSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('vsock') }),
  z.strictObject({ kind: z.literal('simulated'), runDir: z.string().min(1) }),
]);
export type TransportConfig = z.infer<typeof TransportConfigSchema>;

/** A `vsock://CID:PORT` setting, accepted exactly when the transports can use it (parseVsockAddress). */
export const VsockAddressSchema = z.string().refine((s) => {
  try {
    parseVsockAddress(s);
    return true;
  } catch {
    return false;
  }
}, 'expected vsock://CID:PORT');

export function createTransport(config: TransportConfig): Transport {
  return config.kind === 'vsock' ? new RealVsockTransport() : new SimulatedVsockTransport(config.runDir);
}
