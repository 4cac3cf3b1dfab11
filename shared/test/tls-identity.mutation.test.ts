/**
 * The wallet routes' TLS identity constants and digests (tls-identity.ts) and the TLS attestation's user_data
 * (attestation/user-data.ts, `tlsUserData`): the exact tag bytes, domain separation from every other thing the
 * identity signs and every other user_data path, and the limits and patterns the parent's input is held to.
 * Named *.mutation.test.ts so mutation testing (npm run test:mutation) runs it against user-data.ts.
 */
import { createHash } from 'node:crypto';
import { taggedUserData, tlsUserData, USER_DATA_TAGS } from '../src/attestation/user-data';
import { IDENTITY_BLOB_SIGNATURE_TAG, identityBlobDigest, RECORD_SIGNATURE_TAG, recordDigest } from '../src/records';
import {
  TLS_ATTESTATION_PATH,
  TLS_BLOB_TAG,
  TLS_CHAIN_MAX_BYTES,
  TLS_CHAIN_MAX_CERTS,
  TLS_MAX_NAMES,
  TLS_NAME_RE,
  TLS_NONCE_RE,
  tlsBlobDigest,
  WALLETS_HEALTH_PATH,
  WALLETS_PREFIX,
} from '../src/tls-identity';

const sha256 = (...parts: (string | Uint8Array)[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};

describe('tlsBlobDigest: what the identity signs to say a tls blob is its own', () => {
  const blob = Buffer.from('a2016174627473', 'hex');

  it('is SHA-256("nks-tls-blob-v1" ‖ blob)', () => {
    expect(TLS_BLOB_TAG).toBe('nks-tls-blob-v1');
    expect(tlsBlobDigest(blob)).toEqual(sha256('nks-tls-blob-v1', blob));
    expect(tlsBlobDigest(new Uint8Array(0))).toEqual(sha256('nks-tls-blob-v1'));
  });

  it("is prefix-free with the identity's other signing tags, so no signature serves two purposes", () => {
    const tags = [TLS_BLOB_TAG, IDENTITY_BLOB_SIGNATURE_TAG, RECORD_SIGNATURE_TAG];
    expect(new Set(tags).size).toBe(3);
    for (const a of tags) for (const b of tags) if (a !== b) expect(b.startsWith(a)).toBe(false);
    // The same bytes give three different digests.
    const digests = [tlsBlobDigest(blob), identityBlobDigest(blob), recordDigest(blob)].map((d) => d.toString('hex'));
    expect(new Set(digests).size).toBe(3);
  });
});

describe('tlsUserData: the TLS attestation binds the key’s SPKI under its own tag', () => {
  const spki = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');

  it('is SHA-256("nks-tls-v1" ‖ SPKI)', () => {
    expect(USER_DATA_TAGS.tls).toBe('nks-tls-v1');
    expect(tlsUserData(spki)).toEqual(sha256('nks-tls-v1', spki));
    expect(tlsUserData(spki)).toEqual(taggedUserData(USER_DATA_TAGS.tls, spki));
    expect(tlsUserData(Buffer.concat([spki, Buffer.from([1])]))).not.toEqual(tlsUserData(spki));
  });

  it('is prefix-free with every other user_data tag: no other path yields the same value for any content', () => {
    const tags = Object.values(USER_DATA_TAGS);
    for (const other of tags.filter((t) => t !== USER_DATA_TAGS.tls)) {
      expect([other, USER_DATA_TAGS.tls.startsWith(other), other.startsWith(USER_DATA_TAGS.tls)]).toEqual([other, false, false]);
      expect(taggedUserData(other, spki)).not.toEqual(tlsUserData(spki));
    }
    // Nor with the blob-signature tag (a different key signs, but the tags stay apart anyway).
    expect(TLS_BLOB_TAG.startsWith(USER_DATA_TAGS.tls)).toBe(false);
  });
});

describe('limits and patterns', () => {
  it('pins the limits and the public paths', () => {
    expect([TLS_MAX_NAMES, TLS_CHAIN_MAX_BYTES, TLS_CHAIN_MAX_CERTS]).toEqual([10, 65536, 8]);
    expect([WALLETS_HEALTH_PATH, TLS_ATTESTATION_PATH, WALLETS_PREFIX]).toEqual([
      '/v1/health',
      '/v1/tls/attestation',
      '/v1/{projectKey}/wallets',
    ]);
  });

  it('TLS_NAME_RE: lower-case DNS names of 1-253 characters and labels of 1-63, no wildcard or IP literal', () => {
    const label63 = `a${'b'.repeat(61)}c`;
    const long = [label63, label63, label63, `${'d'.repeat(61)}`].join('.'); // 253 characters
    expect(long).toHaveLength(253);
    for (const ok of [
      'a',
      'localhost',
      'wallets.example.com',
      'x-1.example',
      '1.example',
      label63,
      long,
      'a.b.c.d',
      '127.0.0.a1',
      'xn--bcher-kva.example',
    ]) {
      expect([ok, TLS_NAME_RE.test(ok)]).toEqual([ok, true]);
    }
    for (const bad of [
      '',
      '*.example.com',
      'Wallets.example.com',
      '-a.example',
      'a-.example',
      'a..example',
      '.example',
      'example.',
      `${label63}d.example`,
      `${long}e`,
      'a_b.example',
      'a.example,O=x',
      'a b',
      'a.example\n',
      'é.example',
      '::1',
      '127.0.0.1',
      '10.0.0.12',
      '1234',
      '0x7f000001',
      '0x7f.0.0.1',
      '1.2.3.0x4',
      'wallets.123',
      '127.0.0.1x',
    ]) {
      expect([bad, TLS_NAME_RE.test(bad)]).toEqual([bad, false]);
    }
  });

  it('TLS_NONCE_RE: 8-64 bytes of hex without 0x', () => {
    for (const ok of ['00'.repeat(8), 'aB'.repeat(64), 'ff'.repeat(20)]) expect(TLS_NONCE_RE.test(ok)).toBe(true);
    for (const bad of [
      '00'.repeat(7),
      'ab'.repeat(65),
      `0x${'00'.repeat(8)}`,
      `${'00'.repeat(8)}0`,
      'zz'.repeat(8),
      `${'00'.repeat(8)}\n`,
    ]) {
      expect([bad, TLS_NONCE_RE.test(bad)]).toEqual([bad, false]);
    }
  });
});
