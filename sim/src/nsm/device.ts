/**
 * The simulated Nitro Secure Module: the CBOR request/response protocol that `/dev/nsm` carries
 * (docs/NITRO-KMS.md, "The NSM device": serde's externally tagged enums), with QEMU virtio-nsm's error semantics.
 *
 * PCRs 0..15 are locked at boot (0-4 set from configuration), 16..31 start unlocked at zero.
 */
import { randomBytes } from 'node:crypto';
import { decodeCbor, encodeCbor } from '@nks/shared/cbor';
import type { SimulatedNitroCa } from './ca';
import { signAttestationDocument } from './document';
import { extendPcr, PCR_BYTES, ZERO_PCR } from '@nks/shared/pcr';

export const NSM_REQUEST_MAX_BYTES = 0x1000;
export const NSM_RESPONSE_MAX_BYTES = 0x3000;
export const MAX_PCRS = 32;
const PLATFORM_LOCKED = 16;
const MAX_ATTESTATION_FIELD_BYTES = 1024;

export type NsmErrorCode =
  | 'InvalidArgument'
  | 'InvalidIndex'
  | 'InvalidResponse'
  | 'ReadOnlyIndex'
  | 'InvalidOperation'
  | 'BufferTooSmall'
  | 'InputTooLarge'
  | 'InternalError';

class NsmFailure extends Error {
  constructor(
    readonly code: NsmErrorCode,
    options?: ErrorOptions,
  ) {
    super(code, options);
  }
}

export interface NsmOptions {
  ca: SimulatedNitroCa;
  moduleId: string;
  /** Initial values of the platform PCRs (index -> 48 bytes); unset ones are zero. */
  pcrs: Map<number, Buffer>;
  now?: () => Date;
}

export class SimulatedNsm {
  private readonly pcrs: Buffer[] = Array.from({ length: MAX_PCRS }, () => Buffer.from(ZERO_PCR));
  private readonly locked = new Set<number>();
  readonly counters = { requests: 0, attestations: 0, errors: 0 };

  constructor(private readonly options: NsmOptions) {
    for (const [i, v] of options.pcrs) {
      if (i < 0 || i >= PLATFORM_LOCKED || v.length !== PCR_BYTES) throw new Error(`bad initial PCR${i}`);
      this.pcrs[i] = Buffer.from(v);
    }
    for (let i = 0; i < PLATFORM_LOCKED; i++) this.locked.add(i);
  }

  /** Answers one raw request with one raw response (both CBOR), as the ioctl does. */
  async handle(request: Uint8Array): Promise<Buffer> {
    this.counters.requests += 1;
    try {
      if (request.length > NSM_REQUEST_MAX_BYTES) throw new NsmFailure('InputTooLarge');
      let msg: unknown;
      try {
        msg = decodeCbor(request);
      } catch (err) {
        throw new NsmFailure('InvalidArgument', { cause: err });
      }
      const response = encodeCbor(await this.dispatch(msg));
      if (response.length > NSM_RESPONSE_MAX_BYTES) throw new NsmFailure('InternalError');
      return response;
    } catch (err) {
      this.counters.errors += 1;
      const code = err instanceof NsmFailure ? err.code : 'InternalError';
      return encodeCbor(new Map([['Error', code]]));
    }
  }

  private async dispatch(msg: unknown): Promise<unknown> {
    if (msg === 'GetRandom') return new Map([['GetRandom', new Map([['random', randomBytes(256)]])]]);
    if (msg === 'DescribeNSM') return this.describe();
    if (!(msg instanceof Map) || msg.size !== 1) throw new NsmFailure('InvalidOperation');
    const [[name, body]] = [...msg.entries()] as [[unknown, unknown]];
    const args = body instanceof Map ? body : new Map();
    switch (name) {
      case 'DescribePCR': {
        const i = this.index(args.get('index'));
        return new Map([
          [
            'DescribePCR',
            new Map<string, unknown>([
              ['lock', this.locked.has(i)],
              ['data', this.pcrs[i]],
            ]),
          ],
        ]);
      }
      case 'ExtendPCR': {
        const i = this.index(args.get('index'));
        const data = args.get('data');
        if (!(data instanceof Uint8Array)) throw new NsmFailure('InvalidArgument');
        if (this.locked.has(i)) throw new NsmFailure('ReadOnlyIndex');
        this.pcrs[i] = extendPcr(this.pcrs[i] as Buffer, data);
        return new Map([['ExtendPCR', new Map([['data', this.pcrs[i]]])]]);
      }
      case 'LockPCR': {
        const i = this.index(args.get('index'));
        if (i < PLATFORM_LOCKED) throw new NsmFailure('ReadOnlyIndex');
        this.locked.add(i);
        return 'LockPCR';
      }
      case 'LockPCRs': {
        const range = args.get('range');
        if (typeof range !== 'number' || !Number.isInteger(range) || range < 0) throw new NsmFailure('InvalidArgument');
        if (range > MAX_PCRS) throw new NsmFailure('InvalidIndex');
        for (let i = 0; i < range; i++) this.locked.add(i);
        return 'LockPCRs';
      }
      case 'Attestation':
        return this.attest(args);
      default:
        throw new NsmFailure('InvalidOperation');
    }
  }

  private index(v: unknown): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new NsmFailure('InvalidArgument');
    if (v >= MAX_PCRS) throw new NsmFailure('InvalidIndex');
    return v;
  }

  private describe(): Map<string, unknown> {
    return new Map([
      [
        'DescribeNSM',
        new Map<string, unknown>([
          ['version_major', 1],
          ['version_minor', 0],
          ['version_patch', 0],
          ['module_id', this.options.moduleId],
          ['max_pcrs', MAX_PCRS],
          ['locked_pcrs', [...this.locked].sort((a, b) => a - b)],
          ['digest', 'SHA384'],
        ]),
      ],
    ]);
  }

  private async attest(args: Map<unknown, unknown>): Promise<unknown> {
    const field = (key: string): Buffer | undefined => {
      const v = args.get(key);
      if (v === undefined || v === null) return undefined;
      if (!(v instanceof Uint8Array) || v.length > MAX_ATTESTATION_FIELD_BYTES) throw new NsmFailure('InvalidArgument');
      return Buffer.from(v);
    };
    const now = this.options.now?.() ?? new Date();
    const pcrs = new Map<number, Buffer>();
    for (const i of [...this.locked].sort((a, b) => a - b)) pcrs.set(i, this.pcrs[i] as Buffer);
    const document = signAttestationDocument(
      {
        moduleId: this.options.moduleId,
        timestamp: now.getTime(),
        pcrs,
        publicKey: field('public_key'),
        userData: field('user_data'),
        nonce: field('nonce'),
      },
      await this.options.ca.signer(now),
    );
    this.counters.attestations += 1;
    return new Map([['Attestation', new Map([['document', document]])]]);
  }
}
