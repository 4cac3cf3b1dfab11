/**
 * Each identifier format has one definition (shared/src/identifiers.ts). These checks run every validator
 * that uses one over the same samples, so a copy that drifts from the definition fails here.
 */
import { BLOB_ALG, decodeBlob, encodeBlob, type KeyBlob } from '../src/blob';
import { canonicalCbor } from '../src/cbor';
import { CreateParams, KmsDecryptParams } from '../src/enclave-api';
import { ADDRESS_RE, IDENTITY_PUBLIC_KEY_RE, KEY_ID_RE, KMS_KEY_ARN_RE, PROJECT_ID_RE } from '../src/identifiers';
import { decodeKeyRecord, decodeProjectRecord, identityPublicKey } from '../src/records';
import { address, hex32, identityPublicKey as identityPublicKeySchema, keyId, kmsKeyArn } from '../src/schema';
import { address as signingAddress, bytes32 } from '../src/signing/schema';
import { IDENTIFIER_SAMPLES } from './identifier-samples';

const blob: KeyBlob = {
  v: 2,
  kind: 'key',
  alg: 'RSAES_OAEP_SHA_256/A256GCM',
  kmsKeyArn: IDENTIFIER_SAMPLES.kmsKeyArn.good[0],
  keyId: 'k1',
  address: IDENTIFIER_SAMPLES.address.good[0],
  projectId: 'default',
  subject: null,
  createdAt: 1_795_000_000_000,
  wrappedKey: Buffer.alloc(256, 1),
  iv: Buffer.alloc(12, 2),
  ciphertext: Buffer.alloc(48, 3),
};
const decodes = (over: Partial<KeyBlob>) => {
  try {
    decodeBlob(encodeBlob({ ...blob, ...over }));
    return true;
  } catch {
    return false;
  }
};

const SIGNED = { record: 'AAAA', signature: `${'A'.repeat(86)}==` };
const KEY_RECORD = {
  v: 1,
  kind: 'key',
  keyId: 'k1',
  address: IDENTIFIER_SAMPLES.address.good[0],
  blobSha256: `0x${'11'.repeat(32)}`,
  projectId: 'default',
  subject: null,
  state: 'active',
  disabled: false,
  seq: 0,
  prev: null,
  origin: 'created',
  createdAt: 1,
};
const PROJECT_RECORD = {
  v: 1,
  kind: 'project',
  projectId: 'default',
  projectKey: 'default',
  auth: { type: 'token' },
  allowedRequestTypes: ['digest'],
  allowedOrigins: [],
  state: 'active',
  seq: 0,
  prev: null,
  createdAt: 1,
};
const accepts = (fn: () => unknown) => {
  try {
    fn();
    return true;
  } catch {
    return false;
  }
};
const recordDecodes = (over: Record<string, unknown>) => accepts(() => decodeKeyRecord(canonicalCbor({ ...KEY_RECORD, ...over })));
const projectDecodes = (over: Record<string, unknown>) => accepts(() => decodeProjectRecord(canonicalCbor({ ...PROJECT_RECORD, ...over })));
const identityDecodes = (publicKey: string) =>
  accepts(() =>
    decodeBlob(
      encodeBlob({
        v: 2,
        kind: 'identity',
        alg: BLOB_ALG,
        kmsKeyArn: blob.kmsKeyArn,
        publicKey,
        createdAt: blob.createdAt,
        wrappedKey: blob.wrappedKey,
        iv: blob.iv,
        ciphertext: blob.ciphertext,
      }),
    ),
  );

type Samples = { good: readonly string[]; bad: readonly string[] };

/** Where a validator's verdict on a sample differs from the definition's. */
function disagreements(samples: Samples, re: RegExp, validators: Record<string, (s: string) => boolean>): string[] {
  return [...samples.good, ...samples.bad].flatMap((s) =>
    Object.entries(validators)
      .filter(([, ok]) => ok(s) !== re.test(s))
      .map(([name]) => `${name} ${re.test(s) ? 'refuses' : 'accepts'} ${JSON.stringify(s)}`),
  );
}

describe('identifier formats, one definition each', () => {
  it('the definitions accept the well-formed samples and refuse the rest', () => {
    for (const [name, re] of [
      ['kmsKeyArn', KMS_KEY_ARN_RE],
      ['keyId', KEY_ID_RE],
      ['address', ADDRESS_RE],
      ['projectId', PROJECT_ID_RE],
      ['identityPublicKey', IDENTITY_PUBLIC_KEY_RE],
    ] as const) {
      const { good, bad } = IDENTIFIER_SAMPLES[name];
      expect([name, good.filter((s) => !re.test(s)), bad.filter((s) => re.test(s))]).toEqual([name, [], []]);
    }
  });

  it('KMS key ARN: the blob decoder, the zod schema and the KMS proxy params agree with the definition', () => {
    const validators = {
      blob: (s: string) => decodes({ kmsKeyArn: s }),
      schema: (s: string) => kmsKeyArn.safeParse(s).success,
      kmsDecryptParams: (s: string) =>
        KmsDecryptParams.safeParse({ kmsKeyArn: s, ciphertextBlob: 'AAAA', attestationDocument: 'AAAA' }).success,
    };
    expect(disagreements(IDENTIFIER_SAMPLES.kmsKeyArn, KMS_KEY_ARN_RE, validators)).toEqual([]);
  });

  it('key id: the blob decoder, the zod schema and the enclave RPC params agree with the definition', () => {
    const validators = {
      blob: (s: string) => decodes({ keyId: s }),
      schema: (s: string) => keyId.safeParse(s).success,
      createParams: (s: string) => CreateParams.safeParse({ keyId: s, project: SIGNED, subject: null }).success,
      keyRecord: (s: string) => recordDecodes({ keyId: s }),
    };
    expect(disagreements(IDENTIFIER_SAMPLES.keyId, KEY_ID_RE, validators)).toEqual([]);
  });

  it('address: the blob decoder and both zod schemas (caller API and signing requests) agree with the definition', () => {
    const validators = {
      blob: (s: string) => decodes({ address: s }),
      keyRecord: (s: string) => recordDecodes({ address: s }),
      schema: (s: string) => address.safeParse(s).success,
      signingSchema: (s: string) => signingAddress.safeParse(s).success,
    };
    expect(disagreements(IDENTIFIER_SAMPLES.address, ADDRESS_RE, validators)).toEqual([]);
  });

  it('project id: the blob decoder and both record decoders agree with the definition', () => {
    const validators = {
      blob: (s: string) => decodes({ projectId: s }),
      keyRecord: (s: string) => recordDecodes({ projectId: s }),
      projectRecord: (s: string) => projectDecodes({ projectId: s }),
    };
    expect(disagreements(IDENTIFIER_SAMPLES.projectId, PROJECT_ID_RE, validators)).toEqual([]);
  });

  it('identity public key: the identity blob decoder, the zod schema and identityPublicKey() agree with the definition', () => {
    const validators = {
      blob: (s: string) => identityDecodes(s),
      schema: (s: string) => identityPublicKeySchema.safeParse(s).success,
      keyObject: (s: string) => {
        try {
          identityPublicKey(s);
          return true;
        } catch {
          return false;
        }
      },
    };
    expect(disagreements(IDENTIFIER_SAMPLES.identityPublicKey, IDENTITY_PUBLIC_KEY_RE, validators)).toEqual([]);
  });

  it('32-byte hex: the signing schema uses the shared shape', () => {
    for (const s of [`0x${'ab'.repeat(32)}`, `0x${'ab'.repeat(31)}`, `0x${'ab'.repeat(33)}`, 'ab'.repeat(32), `0x${'zz'.repeat(32)}`]) {
      expect([s, bytes32.safeParse(s).success]).toEqual([s, hex32.safeParse(s).success]);
    }
  });
});
