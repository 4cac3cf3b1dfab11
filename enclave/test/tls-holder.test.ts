/**
 * The wallet routes' TLS key in-process (tls/holder.ts, tls/chain.ts, tls/key.ts): what `tls.create` makes,
 * what `tls.install` checks and in which order (the blob's signature before anything, the chain before any
 * KMS call), where the private key comes from (memory, else one Decrypt), and that what is installed serves
 * TLS. The real bundle over simulated vsock is tls-enclave.test.ts; this file reaches the corners.
 */
import {
  constants,
  createPublicKey,
  generateKeyPairSync,
  privateDecrypt,
  randomBytes,
  verify,
  webcrypto,
  X509Certificate,
  type KeyObject,
} from 'node:crypto';
import tls from 'node:tls';
import { BLOB_ALG, decodeBlobBase64, decodeTlsBlob, encodeBlob, type TlsBlob } from '@nks/shared/blob';
import type { TlsCreateResult } from '@nks/shared/enclave-api';
import { KeystoreError } from '@nks/shared/errors';
import { identityPublicKey } from '@nks/shared/records';
import { TLS_CHAIN_MAX_BYTES, TLS_CHAIN_MAX_CERTS, tlsBlobDigest } from '@nks/shared/tls-identity';
import type { RpcClient } from '@nks/shared/rpc';
import { rejection } from '@nks/shared-test/helpers';
import { buildEnvelopedData } from '../../sim/src/kms/cms-writer';
import { x509 } from '../../sim/src/nsm/x509';
import { generateP256Secret, p256PrivateKey, p256PublicKeyOf, p256Spki } from '../src/crypto/p256';
import { KeystoreIdentity } from '../src/identity/keystore-identity';
import { sealBlob, sealSecret } from '../src/keys/seal';
import { FailedOpens } from '../src/kms/failed-opens';
import { RecipientKeys } from '../src/kms/recipient';
import { UNSEAL_REFUSED_MESSAGE, Unsealer } from '../src/kms/unseal';
import { checkChain } from '@nks/shared/tls-chain';
import { PENDING_KEYS, TlsHolder } from '../src/tls/holder';
import { fakeNsm } from './fake-nsm';
import { issueForCsr, issueLeaf, makeAuthority, ownKeyPair, SUBJECT_ALT_NAME, type TestAuthority } from './tls-ca';

const ARN = 'arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555';
const kms = generateKeyPairSync('rsa', { modulusLength: 2048 });
const DAY = 24 * 3600_000;

interface Setup {
  holder: TlsHolder;
  identity: KeystoreIdentity;
  unsealer: Unsealer;
  failedOpens: FailedOpens;
  /** Decrypts the (fake) KMS proxy was asked for. */
  calls: () => number;
  /** Integrity failures counted. */
  refusals: () => number;
  attests: () => number;
  forge: { on: boolean };
}

/** A holder with a real unsealer whose KMS proxy answers genuinely (or forges, when told to). */
function setup(identity = KeystoreIdentity.fromSeed(randomBytes(32)), now?: () => number): Setup {
  const nsm = fakeNsm();
  const recipient = new RecipientKeys(nsm.client, { rotateMs: 3_600_000, documentMaxAgeMs: 60_000 });
  const failedOpens = new FailedOpens({ maxFailures: 100, windowMs: 60_000, cooldownMs: 60_000 });
  let calls = 0;
  let refusals = 0;
  const forge = { on: false };
  const proxy = {
    call: async (_method: string, p: { kmsKeyArn: string; ciphertextBlob: string }) => {
      calls += 1;
      const lease = await recipient.current();
      const dek = forge.on
        ? randomBytes(32)
        : privateDecrypt(
            { key: kms.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
            Buffer.from(p.ciphertextBlob, 'base64'),
          );
      const to = createPublicKey(lease.privateKey as KeyObject);
      return { ciphertextForRecipient: buildEnvelopedData(dek, to).toString('base64'), keyId: p.kmsKeyArn };
    },
  } as unknown as RpcClient;
  const unsealer = new Unsealer(proxy, recipient, failedOpens, { kmsKeyArn: ARN, deadlineMs: 60_000 });
  const holder = new TlsHolder({
    nsm: nsm.client,
    unsealer,
    identity: () => identity,
    kmsKeyArn: ARN,
    kmsPublicKey: kms.publicKey,
    refused: () => {
      refusals += 1;
      return new KeystoreError('KEY_INTEGRITY', 'refused');
    },
    ...(now ? { now } : {}),
  });
  return { holder, identity, unsealer, failedOpens, calls: () => calls, refusals: () => refusals, attests: () => nsm.attests(), forge };
}

const spkiOf = (created: TlsCreateResult) => Buffer.from(created.publicKey, 'base64');

let root: TestAuthority;
let intermediate: TestAuthority;
beforeAll(async () => {
  root = await makeAuthority('TLS test root');
  intermediate = await makeAuthority('TLS test intermediate', root);
});

/** The full chain a CA hands back for a CSR: leaf, intermediate (the root left out, as usual). */
const chainFor = async (created: TlsCreateResult, v = {}) => (await issueForCsr(intermediate, created.csr, v)) + intermediate.pem;

describe('tls.create', () => {
  it('makes a P-256 key sealed as a tls blob the identity signed, its CSR for the names, and an attestation; no KMS call', async () => {
    const s = setup();
    const created = await s.holder.create(['wallets.example.com', 'w2.example.com']);
    expect(s.calls()).toBe(0);
    expect(s.attests()).toBe(1);
    expect(created.attestation).toBe(Buffer.from('doc-1').toString('base64'));

    const spki = spkiOf(created);
    const publicKey = createPublicKey({ key: spki, format: 'der', type: 'spki' });
    expect(publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');

    const blob = decodeTlsBlob(created.blob);
    expect(blob).toMatchObject({ v: 2, kind: 'tls', alg: BLOB_ALG, kmsKeyArn: ARN });
    expect(p256Spki(Buffer.from(blob.publicKey.slice(2), 'hex'))).toEqual(spki);
    const digest = tlsBlobDigest(Buffer.from(created.blob, 'base64'));
    expect(verify(null, digest, identityPublicKey(s.identity.publicKey), Buffer.from(created.blobSignature, 'base64'))).toBe(true);

    const csr = new x509.Pkcs10CertificateRequest(created.csr);
    expect(created.csr).toMatch(/^-----BEGIN CERTIFICATE REQUEST-----/);
    expect(await csr.verify()).toBe(true);
    expect(Buffer.from(csr.publicKey.rawData)).toEqual(spki);
    expect(csr.subject).toBe('CN=wallets.example.com');
    const san = csr.getExtension(SUBJECT_ALT_NAME) as x509.SubjectAlternativeNameExtension | null;
    expect(san?.names.items.map((n) => [n.type, n.value])).toEqual([
      ['dns', 'wallets.example.com'],
      ['dns', 'w2.example.com'],
    ]);
    // Nothing is installed by a create.
    expect(s.holder.status().state).toBe('none');
    expect(s.holder.current()).toBeNull();
    expect(s.holder.publicKeyDer()).toBeNull();
  });

  it('makes a new key each time', async () => {
    const s = setup();
    const [a, b] = [await s.holder.create(['a.example']), await s.holder.create(['a.example'])];
    expect(a.publicKey).not.toBe(b.publicKey);
    expect(a.blob).not.toBe(b.blob);
  });

  it.each<[string, string[], string]>([
    ['no name', [], 'names: expected at least one name'],
    ['too many names', Array.from({ length: 11 }, (_, i) => `n${i}.example`), 'names: expected at most 10 names'],
    ['a name twice', ['a.example', 'a.example'], 'names: expected each name once'],
    ['a wildcard', ['*.example.com'], 'names: expected a lower-case DNS name (no wildcard, no IP address)'],
    ['upper case', ['Wallets.example.com'], 'names: expected a lower-case DNS name (no wildcard, no IP address)'],
    ['a DN injection', ['a.example,O=evil'], 'names: expected a lower-case DNS name (no wildcard, no IP address)'],
  ])('refuses %s', async (_what, names, message) => {
    const s = setup();
    const err = await rejection(s.holder.create(names));
    expect([err.code, err.message]).toEqual(['INVALID_PARAMS', message]);
    expect(s.attests()).toBe(0);
  });
});

describe('tls.install', () => {
  it('installs a key it just made with no KMS call, and the credentials serve TLS for its names', async () => {
    const s = setup();
    const created = await s.holder.create(['wallets.example.com']);
    const seen: string[] = [];
    s.holder.onChange((c) => seen.push(c.cert));
    const chain = await chainFor(created);
    const status = await s.holder.install({ blob: created.blob, blobSignature: created.blobSignature, chain });
    expect(s.calls()).toBe(0);
    const leaf = new x509.X509Certificate(chain.split(/(?<=-----END CERTIFICATE-----)/)[0]);
    expect(status).toEqual({
      state: 'installed',
      publicKey: created.publicKey,
      names: ['wallets.example.com'],
      notBefore: leaf.notBefore.toISOString(),
      notAfter: leaf.notAfter.toISOString(),
      fingerprint256: Buffer.from(await leaf.getThumbprint('SHA-256')).toString('hex'),
    });
    expect(s.holder.status()).toEqual(status);
    expect(s.holder.publicKeyDer()).toEqual(spkiOf(created));
    const current = s.holder.current();
    expect(current?.key).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(seen).toEqual([current?.cert]);
    expect(current?.cert).toBe(chain.replace(/\r/g, ''));

    // A real handshake with those credentials: a client trusting only the root accepts the name and the key.
    const server = tls.createServer({ key: current?.key, cert: current?.cert }, (socket) => socket.end('ok'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as { port: number }).port;
      const peer = await new Promise<tls.PeerCertificate>((resolve, reject) => {
        const c = tls.connect({ host: '127.0.0.1', port, servername: 'wallets.example.com', ca: root.pem }, () => {
          resolve(c.getPeerCertificate());
          c.end();
        });
        c.on('error', reject);
      });
      const served = new X509Certificate(peer.raw).publicKey.export({ type: 'spki', format: 'der' });
      expect(served.equals(spkiOf(created))).toBe(true);
    } finally {
      server.close();
    }
  });

  it(`keeps the last ${PENDING_KEYS} created keys: an older one is unsealed (one KMS call); the installed one is kept`, async () => {
    const s = setup();
    const made: TlsCreateResult[] = [];
    for (let i = 0; i <= PENDING_KEYS; i++) made.push(await s.holder.create([`k${i}.example`]));
    const [oldest, newest] = [made[0] as TlsCreateResult, made[PENDING_KEYS] as TlsCreateResult];
    await s.holder.install({ blob: newest.blob, blobSignature: newest.blobSignature, chain: await chainFor(newest) });
    expect([s.calls(), s.unsealer.identityKmsCalls, s.unsealer.kmsCalls]).toEqual([0, 0, 0]);
    await s.holder.install({ blob: oldest.blob, blobSignature: oldest.blobSignature, chain: await chainFor(oldest) });
    expect([s.calls(), s.unsealer.identityKmsCalls, s.unsealer.kmsCalls]).toEqual([1, 1, 0]);
    expect(s.holder.status().publicKey).toBe(oldest.publicKey);
    // The installed key again (a renewed certificate, or the parent's install after a reconnect): from memory.
    const renewed = await chainFor(oldest);
    await s.holder.install({ blob: oldest.blob, blobSignature: oldest.blobSignature, chain: renewed });
    expect(s.calls()).toBe(1);
    expect(s.holder.current()?.cert).toBe(renewed);
    // Another of the last creates, never installed: still held, no call.
    const second = made[1] as TlsCreateResult;
    await s.holder.install({ blob: second.blob, blobSignature: second.blobSignature, chain: await chainFor(second) });
    expect(s.calls()).toBe(1);
    // A key leaves the pending ones once installed; replaced since, it is unsealed again (the second call).
    await s.holder.install({ blob: newest.blob, blobSignature: newest.blobSignature, chain: await chainFor(newest) });
    expect(s.calls()).toBe(2);
  });

  it('after a restart (a new holder, same identity), installs from the blob with one Decrypt', async () => {
    const first = setup();
    const created = await first.holder.create(['wallets.example.com']);
    const chain = await chainFor(created);
    const restarted = setup(first.identity);
    const status = await restarted.holder.install({ blob: created.blob, blobSignature: created.blobSignature, chain });
    expect(status.publicKey).toBe(created.publicKey);
    expect([restarted.calls(), restarted.unsealer.identityKmsCalls, restarted.unsealer.kmsCalls]).toEqual([1, 1, 0]);
    await restarted.holder.install({ blob: created.blob, blobSignature: created.blobSignature, chain });
    expect(restarted.calls()).toBe(1);
  });

  it('keeps a key it unsealed when the install then fails: a retry of the blob costs no second Decrypt', async () => {
    const first = setup();
    const created = await first.holder.create(['wallets.example.com']);
    const p = { blob: created.blob, blobSignature: created.blobSignature, chain: await chainFor(created) };
    const restarted = setup(first.identity);
    // OpenSSL refusing the key with its leaf once: checkChain made sure it cannot, so only a stand-in does.
    const real = tls.createSecureContext;
    const spy = jest.spyOn(tls, 'createSecureContext').mockImplementation((o) => {
      if (o?.key) throw new Error('refused with the key');
      return real(o);
    });
    let err: KeystoreError;
    try {
      err = await rejection(restarted.holder.install(p));
    } finally {
      spy.mockRestore();
    }
    expect([err.code, err.message]).toEqual(['INVALID_PARAMS', 'the certificate chain is not usable for TLS with this key']);
    expect([restarted.calls(), restarted.holder.status().state]).toEqual([1, 'none']);
    expect((await restarted.holder.install(p)).publicKey).toBe(created.publicKey);
    expect(restarted.calls()).toBe(1);
  });

  it('answers a forged KMS answer with the unsealer’s one refusal, and keeps what was installed', async () => {
    const first = setup();
    const [a, b] = [await first.holder.create(['a.example']), await first.holder.create(['b.example'])];
    const restarted = setup(first.identity);
    await restarted.holder.install({ blob: a.blob, blobSignature: a.blobSignature, chain: await chainFor(a) });
    restarted.forge.on = true;
    const err = await rejection(restarted.holder.install({ blob: b.blob, blobSignature: b.blobSignature, chain: await chainFor(b) }));
    expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', UNSEAL_REFUSED_MESSAGE]);
    expect(restarted.failedOpens.total).toBe(1);
    expect(restarted.holder.status().publicKey).toBe(a.publicKey);
  });

  describe('refuses, with the one integrity refusal and before any KMS call or chain check', () => {
    let s: Setup;
    let created: TlsCreateResult;
    let chain: string;
    beforeAll(async () => {
      s = setup();
      created = await s.holder.create(['wallets.example.com']);
      chain = await chainFor(created);
    });

    /** Seals a key of the parent's own to the (public) KMS key as a tls blob. */
    const parentsOwnBlob = () => {
      const secret = generateP256Secret();
      const point = p256PublicKeyOf(secret) as Buffer;
      const blob = sealBlob(
        secret,
        { v: 2, kind: 'tls', alg: BLOB_ALG, kmsKeyArn: ARN, publicKey: `0x${point.toString('hex')}` },
        { kmsPublicKey: kms.publicKey },
      );
      return { blob: encodeBlob(blob), secret, spki: p256Spki(point) };
    };

    it.each<[string, () => Promise<{ blob: string; blobSignature: string; chain: string }>]>([
      [
        'a blob the parent sealed with a key it knows, signed by a key of its own',
        async () => {
          const own = parentsOwnBlob();
          const mallory = KeystoreIdentity.fromSeed(randomBytes(32));
          return {
            blob: own.blob.toString('base64'),
            blobSignature: mallory.signTlsBlob(own.blob),
            chain: await issueLeaf(root, own.spki, ['wallets.example.com']),
          };
        },
      ],
      [
        "a blob the parent sealed, with the identity's signature of another blob",
        async () => {
          const own = parentsOwnBlob();
          return {
            blob: own.blob.toString('base64'),
            blobSignature: created.blobSignature,
            chain: await issueLeaf(root, own.spki, ['wallets.example.com']),
          };
        },
      ],
      [
        'a genuine blob with one byte changed',
        async () => {
          const bytes = Buffer.from(created.blob, 'base64');
          const blob = decodeBlobBase64(created.blob) as TlsBlob;
          const ciphertext = Buffer.from(blob.ciphertext);
          ciphertext[0] = (ciphertext[0] as number) ^ 1;
          expect(bytes.equals(encodeBlob(blob))).toBe(true);
          return { blob: encodeBlob({ ...blob, ciphertext }).toString('base64'), blobSignature: created.blobSignature, chain };
        },
      ],
      [
        "a key blob, with the identity's signature over it as a tls blob",
        async () => {
          const secret = randomBytes(32);
          secret[0] = 1;
          const key = encodeBlob(
            sealSecret(secret, {
              keyId: 'k1',
              address: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8',
              projectId: 'default',
              subject: null,
              kmsKeyArn: ARN,
              kmsPublicKey: kms.publicKey,
            }),
          );
          return { blob: key.toString('base64'), blobSignature: s.identity.signTlsBlob(key), chain };
        },
      ],
      [
        "an identity blob with the identity's own signature of it (another domain tag)",
        async () => {
          const identityBlob = encodeBlob(
            sealBlob(
              randomBytes(32),
              { v: 2, kind: 'identity', alg: BLOB_ALG, kmsKeyArn: ARN, publicKey: s.identity.publicKey },
              { kmsPublicKey: kms.publicKey },
            ),
          );
          return { blob: identityBlob.toString('base64'), blobSignature: s.identity.signOwnBlob(identityBlob), chain };
        },
      ],
      [
        'a genuine blob whose signature is made over the identity-blob tag',
        async () => ({ blob: created.blob, blobSignature: s.identity.signOwnBlob(Buffer.from(created.blob, 'base64')), chain }),
      ],
      [
        'a genuine blob with a signature of 63 bytes',
        async () => ({ blob: created.blob, blobSignature: randomBytes(63).toString('base64'), chain }),
      ],
      [
        'a genuine blob with a zero signature',
        async () => ({ blob: created.blob, blobSignature: Buffer.alloc(64).toString('base64'), chain }),
      ],
      ['garbage for a blob', async () => ({ blob: randomBytes(300).toString('base64'), blobSignature: created.blobSignature, chain })],
    ])('%s', async (_what, make) => {
      const p = await make();
      const [calls, refusals] = [s.calls(), s.refusals()];
      const err = await rejection(s.holder.install({ ...p, chain: p.chain }));
      expect([err.code, err.message]).toEqual(['KEY_INTEGRITY', 'refused']);
      expect([s.calls() - calls, s.refusals() - refusals]).toEqual([0, 1]);
      expect(s.holder.status().state).toBe('none');
    });

    it('checks the blob before the chain: garbage chain and a forged blob is KEY_INTEGRITY', async () => {
      const own = parentsOwnBlob();
      const err = await rejection(
        s.holder.install({ blob: own.blob.toString('base64'), blobSignature: created.blobSignature, chain: 'x' }),
      );
      expect(err.code).toBe('KEY_INTEGRITY');
    });

    it('and the genuine blob with its chain is then installed', async () => {
      await s.holder.install({ blob: created.blob, blobSignature: created.blobSignature, chain });
      expect([s.holder.status().state, s.calls()]).toEqual(['installed', 0]);
    });
  });

  it('refuses a bad chain before any KMS call (even for a key it must unseal), keeping what was installed', async () => {
    const first = setup();
    const [a, b] = [await first.holder.create(['a.example']), await first.holder.create(['b.example'])];
    const restarted = setup(first.identity);
    await restarted.holder.install({ blob: a.blob, blobSignature: a.blobSignature, chain: await chainFor(a) });
    expect(restarted.calls()).toBe(1);
    const err = await rejection(restarted.holder.install({ blob: b.blob, blobSignature: b.blobSignature, chain: await chainFor(a) }));
    expect(err.code).toBe('INVALID_PARAMS');
    expect(err.message).toMatch(/^the certificate chain starts with a certificate for another key/);
    expect(restarted.calls()).toBe(1);
    expect(restarted.holder.status().publicKey).toBe(a.publicKey);
  });

  it('runs installs one at a time, in the order asked: the last one asked stays installed', async () => {
    const s = setup();
    const made = [await s.holder.create(['a.example']), await s.holder.create(['b.example']), await s.holder.create(['c.example'])];
    const chains = await Promise.all(made.map((m) => chainFor(m)));
    const order: string[] = [];
    s.holder.onChange((c) => order.push(c.cert));
    await Promise.all(made.map((m, i) => s.holder.install({ blob: m.blob, blobSignature: m.blobSignature, chain: chains[i] as string })));
    expect(order).toEqual(chains);
    expect(s.holder.status().publicKey).toBe(made[2]?.publicKey);
    // A failed install in the queue does not stop the ones after it.
    const bad = s.holder.install({ blob: made[0]?.blob as string, blobSignature: made[0]?.blobSignature as string, chain: 'nope' });
    const good = s.holder.install({
      blob: made[0]?.blob as string,
      blobSignature: made[0]?.blobSignature as string,
      chain: chains[0] as string,
    });
    expect((await rejection(bad)).code).toBe('INVALID_PARAMS');
    expect((await good).publicKey).toBe(made[0]?.publicKey);
  });
});

describe('checkChain', () => {
  let key: KeyObject;
  let spki: Buffer;
  let leaf: string;
  const NAMES = ['wallets.example.com', 'api.example.com'];
  beforeAll(async () => {
    key = p256PrivateKey(generateP256Secret());
    spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
    leaf = await issueLeaf(intermediate, spki, NAMES);
  });
  const now = () => Date.now();
  const refusal = (pem: string, at = now(), which = spki) => {
    try {
      checkChain(pem, which, at);
      return 'accepted';
    } catch (err) {
      expect(err).toBeInstanceOf(KeystoreError);
      return [(err as KeystoreError).code, (err as KeystoreError).message];
    }
  };
  const invalid = (why: string) => ['INVALID_PARAMS', `the certificate chain ${why}`];

  it('accepts the leaf alone, leaf + intermediate, and leaf + intermediate + root; CRLF and blank lines too', () => {
    for (const pem of [leaf, leaf + intermediate.pem, leaf + intermediate.pem + root.pem, `\n${leaf}\n\n${intermediate.pem}\n`]) {
      expect(refusal(pem)).toBe('accepted');
    }
    const crlf = (leaf + intermediate.pem).replace(/\n/g, '\r\n');
    const checked = checkChain(crlf, spki, now());
    expect(checked.pem).toBe(leaf + intermediate.pem);
    expect(checked.names).toEqual(NAMES);
    const parsed = new x509.X509Certificate(leaf);
    expect([checked.notBefore, checked.notAfter]).toEqual([parsed.notBefore, parsed.notAfter]);
    expect(checked.fingerprint256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('serves only the certificates, re-encoded: text around them is refused, not passed on', () => {
    expect(refusal(`hello\n${leaf}`)).toEqual(invalid('holds text that is not a PEM CERTIFICATE block'));
    expect(refusal(`${leaf}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n`)).toEqual(
      invalid('holds a private key: send only the certificates (the enclave made the key, which never leaves it)'),
    );
    expect(refusal(leaf.replace('-----END CERTIFICATE-----', '-----END CERTIFICATE REQUEST-----'))).toEqual(
      invalid('holds text that is not a PEM CERTIFICATE block'),
    );
  });

  it.each<[string, string, unknown[]]>([
    ['empty', '', invalid('holds no certificate (expected PEM, leaf first)')],
    ['only whitespace', ' \n\t\n', invalid('holds no certificate (expected PEM, leaf first)')],
    ['garbage', 'not a certificate at all', invalid('holds text that is not a PEM CERTIFICATE block')],
    [
      'a block whose body is not a certificate',
      `-----BEGIN CERTIFICATE-----\n${randomBytes(300).toString('base64')}\n-----END CERTIFICATE-----\n`,
      ['INVALID_PARAMS', 'the certificate chain: certificate 1 is not an X.509 certificate'],
    ],
  ])('refuses %s', (_what, pem, expected) => {
    expect(refusal(pem)).toEqual(expected);
  });

  it(`refuses more than ${TLS_CHAIN_MAX_CERTS} certificates, and more than ${TLS_CHAIN_MAX_BYTES} bytes`, () => {
    const max = leaf + intermediate.pem.repeat(TLS_CHAIN_MAX_CERTS - 1);
    // (Eight certificates: the same intermediate repeated is not issued by itself, which is the next check.)
    expect(refusal(max)).toEqual(
      invalid('is out of order or incomplete: certificate 2 is not issued by certificate 3 (expected leaf first, then each issuer)'),
    );
    expect(refusal(max + intermediate.pem)).toEqual(invalid(`has ${TLS_CHAIN_MAX_CERTS + 1} certificates, more than the 8 allowed`));
    const big = leaf + ' '.repeat(TLS_CHAIN_MAX_BYTES - leaf.length);
    expect(refusal(big)).toBe('accepted');
    expect(refusal(`${big} `)).toEqual(invalid(`is ${TLS_CHAIN_MAX_BYTES + 1} bytes, over the ${TLS_CHAIN_MAX_BYTES} allowed`));
    expect(refusal(`${big.slice(1)}é`)).toEqual(invalid(`is ${TLS_CHAIN_MAX_BYTES + 1} bytes, over the ${TLS_CHAIN_MAX_BYTES} allowed`));
  });

  it('refuses a leaf for another key, or a chain that does not start with the leaf', async () => {
    const other = await ownKeyPair();
    const foreign = await issueLeaf(intermediate, other.spki, NAMES);
    const why = "starts with a certificate for another key: the leaf's public key is not this TLS key's (is the chain leaf first?)";
    expect(refusal(foreign + intermediate.pem)).toEqual(invalid(why));
    expect(refusal(intermediate.pem + leaf)).toEqual(invalid(why));
    // The key the leaf names must be this one, whatever the chain: the same leaf refused for another SPKI.
    expect(refusal(leaf, now(), other.spki)).toEqual(invalid(why));
  });

  it('refuses a leaf that is not for an EC P-256 key', async () => {
    const p384 = await globalThis.crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify']);
    expect(refusal(await issueLeaf(intermediate, p384.publicKey, NAMES))).toEqual(
      invalid('starts with a certificate for a key of type ec (secp384r1): the leaf must be for this TLS key (EC P-256)'),
    );
    const ed = (await globalThis.crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    expect(refusal(await issueLeaf(intermediate, ed.publicKey, NAMES))).toEqual(
      invalid('starts with a certificate for a key of type ed25519: the leaf must be for this TLS key (EC P-256)'),
    );
  });

  it('refuses a leaf that has expired or is not valid yet, at the exact edges', async () => {
    const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - DAY);
    const notAfter = new Date(notBefore.getTime() + 2 * DAY);
    const pem = await issueLeaf(intermediate, spki, NAMES, { notBefore, notAfter });
    expect(refusal(pem, notBefore.getTime())).toBe('accepted');
    expect(refusal(pem, notAfter.getTime())).toBe('accepted');
    expect(refusal(pem, notBefore.getTime() - 1)).toEqual(invalid(`has a leaf that is not valid before ${notBefore.toISOString()}`));
    expect(refusal(pem, notAfter.getTime() + 1)).toEqual(invalid(`has a leaf that expired at ${notAfter.toISOString()}`));
    // Only the leaf's validity is checked: an expired cross-signed root at the end does not matter.
    const expiredRoot = await makeAuthority('expired root', undefined, { notBefore: new Date(0), notAfter: new Date(1000) });
    const under = await makeAuthority('under expired', expiredRoot);
    expect(refusal((await issueLeaf(under, spki, NAMES)) + under.pem + expiredRoot.pem)).toBe('accepted');
  });

  it("reads a validity after 2049 (GeneralizedTime) as OpenSSL prints it; a day's date has a space before it", async () => {
    const notBefore = new Date('2024-03-05T09:07:01Z');
    const notAfter = new Date('2051-12-31T23:59:59Z');
    const pem = await issueLeaf(intermediate, spki, NAMES, { notBefore, notAfter });
    expect(new X509Certificate(pem).validFrom).toBe('Mar  5 09:07:01 2024 GMT');
    const checked = checkChain(pem, spki, now());
    expect([checked.notBefore, checked.notAfter]).toEqual([notBefore, notAfter]);
  });

  it('refuses a leaf with no DNS name', async () => {
    expect(refusal(await issueLeaf(intermediate, spki, []))).toEqual(invalid('has a leaf with no DNS name in its subjectAltName'));
  });

  it('refuses a chain out of order, with a gap, or with an issuer that is not a CA or did not sign', async () => {
    const other = await makeAuthority('another intermediate', root);
    const underRoot = await issueLeaf(root, spki, NAMES);
    expect(refusal(underRoot + root.pem)).toBe('accepted');
    // The intermediate is missing between leaf and root.
    expect(refusal(leaf + root.pem)).toEqual(
      invalid('is out of order or incomplete: certificate 1 is not issued by certificate 2 (expected leaf first, then each issuer)'),
    );
    // Root before the intermediate.
    expect(refusal(leaf + root.pem + intermediate.pem)).toEqual(
      invalid('is out of order or incomplete: certificate 1 is not issued by certificate 2 (expected leaf first, then each issuer)'),
    );
    expect(refusal(leaf + other.pem)).toEqual(
      invalid('is out of order or incomplete: certificate 1 is not issued by certificate 2 (expected leaf first, then each issuer)'),
    );
    // A certificate that is not a CA after the leaf.
    const otherLeaf = await issueLeaf(intermediate, (await ownKeyPair()).spki, NAMES);
    expect(refusal(leaf + otherLeaf)).toEqual(
      invalid('is out of order or incomplete: certificate 2 is not a CA, so it cannot issue certificate 1'),
    );
    // An impostor CA with the intermediate's name and key identifier but another key: names match, signature does not.
    const impostor = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: '02',
      name: intermediate.cert.subject,
      notBefore: new Date(Date.now() - DAY),
      notAfter: new Date(Date.now() + DAY),
      keys: other.keys,
      signingAlgorithm: { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' },
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.SubjectKeyIdentifierExtension(
          (intermediate.cert.getExtension(x509.SubjectKeyIdentifierExtension) as x509.SubjectKeyIdentifierExtension).keyId,
        ),
      ],
    });
    expect(refusal(leaf + impostor.toString('pem'))).toEqual(
      invalid('is out of order or incomplete: certificate 1 is not issued by certificate 2 (expected leaf first, then each issuer)'),
    );
  });
});
