/**
 * The NSM protocol as the enclave uses it: CBOR requests and responses (serde's externally tagged enums, as
 * nsm-api encodes them), over a transport that is either the real device or the simulator's socket.
 */
import { taggedUserData, type UserDataTag } from '@nks/shared/attestation/user-data';
import { decodeCbor, encodeCbor } from '@nks/shared/cbor';
import { KeystoreError } from '@nks/shared/errors';

/** Carries one raw request to the NSM and returns its raw response. */
export interface NsmTransport {
  readonly kind: 'real' | 'simulated';
  request(cbor: Buffer): Promise<Buffer>;
  close(): void;
}

/**
 * What a document is for. `user_data` is always SHA-256(tag ‖ content) with the tag chosen by the enclave's
 * code path: no caller can put bytes of its own choosing there (see shared/src/attestation/user-data.ts).
 */
export interface AttestationRequest {
  tag: UserDataTag;
  content?: Uint8Array | undefined;
  nonce?: Uint8Array | undefined;
  publicKey?: Uint8Array | undefined;
}

export class NsmClient {
  constructor(readonly transport: NsmTransport) {}

  get kind(): 'real' | 'simulated' {
    return this.transport.kind;
  }

  private async call(request: unknown, variant: string): Promise<unknown> {
    let raw: Buffer;
    try {
      raw = await this.transport.request(encodeCbor(request));
    } catch (err) {
      throw new KeystoreError('ATTESTATION_FAILED', `NSM ${variant} failed: ${(err as Error).message}`, { cause: err });
    }
    let res: unknown;
    try {
      res = decodeCbor(raw);
    } catch (err) {
      throw new KeystoreError('ATTESTATION_FAILED', `NSM ${variant}: response is not CBOR`, { cause: err });
    }
    if (res instanceof Map && res.has('Error')) {
      throw new KeystoreError('ATTESTATION_FAILED', `NSM ${variant} returned error ${String(res.get('Error'))}`);
    }
    if (res === variant) return null;
    if (!(res instanceof Map) || !res.has(variant)) throw new KeystoreError('ATTESTATION_FAILED', `NSM ${variant}: unexpected response`);
    return res.get(variant);
  }

  /** Returns the COSE_Sign1 attestation document. Fields are at most 1024 bytes each (keep them ≤ 512). */
  async attest(req: AttestationRequest): Promise<Buffer> {
    const field = (v: Uint8Array | undefined) => (v ? Buffer.from(v) : null);
    const body = new Map<string, Buffer | null>([
      ['user_data', taggedUserData(req.tag, req.content)],
      ['nonce', field(req.nonce)],
      ['public_key', field(req.publicKey)],
    ]);
    const res = await this.call(new Map([['Attestation', body]]), 'Attestation');
    const doc = res instanceof Map ? res.get('document') : undefined;
    if (!(doc instanceof Uint8Array) || doc.length === 0)
      throw new KeystoreError('ATTESTATION_FAILED', 'NSM Attestation: no document in the response');
    return Buffer.from(doc);
  }

  async getRandom(): Promise<Buffer> {
    const res = await this.call('GetRandom', 'GetRandom');
    const random = res instanceof Map ? res.get('random') : undefined;
    if (!(random instanceof Uint8Array)) throw new KeystoreError('ATTESTATION_FAILED', 'NSM GetRandom: no bytes in the response');
    return Buffer.from(random);
  }

  async describe(): Promise<{ moduleId: string; maxPcrs: number; lockedPcrs: number[]; digest: string }> {
    const res = await this.call('DescribeNSM', 'DescribeNSM');
    if (!(res instanceof Map)) throw new KeystoreError('ATTESTATION_FAILED', 'NSM DescribeNSM: unexpected response');
    return {
      moduleId: String(res.get('module_id')),
      maxPcrs: Number(res.get('max_pcrs')),
      lockedPcrs: (res.get('locked_pcrs') as number[]) ?? [],
      digest: String(res.get('digest')),
    };
  }
}
