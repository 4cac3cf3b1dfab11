/**
 * The real NSM: `/dev/nsm` through the small N-API addon in enclave/native (one raw ioctl per request, on a
 * worker thread). The addon is looked for beside the bundle (native/nsm.node, the image layout) and in the
 * node-gyp build directory (development).
 */
import path from 'node:path';
import { loadAddon, nativeDirCandidates } from '@nks/shared/native';
import type { NsmTransport } from './client';

interface NsmAddon {
  open(path: string): number;
  request(fd: number, req: Buffer): Promise<Buffer>;
  close(fd: number): void;
}

export const NSM_REQUEST_MAX_BYTES = 0x1000;

export function loadNsmAddon(candidates?: string[]): NsmAddon {
  return loadAddon<NsmAddon>(
    'the NSM addon (enclave/native, built by `npm run build`)',
    candidates ?? [
      ...(process.env.NKS_NSM_ADDON ? [process.env.NKS_NSM_ADDON] : []),
      ...nativeDirCandidates('nsm.node'),
      path.resolve(__dirname, '../enclave/native/build/Release/nsm.node'), // from dist/
      path.resolve(__dirname, '../../native/build/Release/nsm.node'), // from enclave/src/nsm (tests)
    ],
  );
}

/** Where the Nitro hypervisor exposes the NSM inside an enclave. */
export const NSM_DEVICE_PATH = '/dev/nsm';

export class DeviceNsmTransport implements NsmTransport {
  readonly kind = 'real' as const;
  private fd: number;

  /** Opens the device at once so a missing or wrong device stops the enclave at start, with the reason. */
  constructor(
    readonly devicePath = NSM_DEVICE_PATH,
    private readonly addon: NsmAddon = loadNsmAddon(),
  ) {
    this.fd = addon.open(devicePath);
  }

  async request(cbor: Buffer): Promise<Buffer> {
    if (cbor.length > NSM_REQUEST_MAX_BYTES) throw new Error(`NSM request of ${cbor.length} bytes exceeds ${NSM_REQUEST_MAX_BYTES}`);
    return this.addon.request(this.fd, cbor);
  }

  close(): void {
    if (this.fd >= 0) this.addon.close(this.fd);
    this.fd = -1;
  }
}
