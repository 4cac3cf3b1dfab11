/**
 * PCR arithmetic as Nitro does it (SHA-384): extending a register and the values Nitro measures from strings,
 * PCR3 (the parent instance's IAM role ARN) and PCR4 (its instance id). The key policy generator pins PCR3
 * with this and the NSM simulator reports it, so what the policy demands is what an enclave shows.
 */
import { createHash } from 'node:crypto';

export const PCR_BYTES = 48;
export const ZERO_PCR: Readonly<Buffer> = Buffer.alloc(PCR_BYTES);
/** A PCR value as lowercase hex, as key policies and nitro-cli print it. */
export const PCR_HEX_RE = new RegExp(`^[0-9a-f]{${PCR_BYTES * 2}}$`);

/** extend(PCR, data) = SHA-384(PCR ‖ data). */
export function extendPcr(current: Uint8Array, data: Uint8Array): Buffer {
  return createHash('sha384').update(current).update(data).digest();
}

/** A PCR that starts at zero and is extended once with the UTF-8 of `value`, as hex (PCR3, PCR4). */
export function measureString(value: string): string {
  return extendPcr(ZERO_PCR, Buffer.from(value, 'utf8')).toString('hex');
}

/** PCR3: what an enclave on an instance with this IAM role reports. */
export function pcr3ForRole(roleArn: string): string {
  return measureString(roleArn);
}
