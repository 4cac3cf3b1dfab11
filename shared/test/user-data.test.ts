/** Attestation user_data: domain-tagged per code path, prefix-free tags, and 0.1-era births recognised. */
import { createHash } from 'node:crypto';
import { birthContent, birthUserData, checkBirthUserData, taggedUserData, USER_DATA_TAGS } from '../src/attestation/user-data';
import { canonicalCbor } from '../src/cbor';

const ADDRESS = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';

describe('attestation user_data', () => {
  it('is SHA-256(tag ‖ content), with tags no one of which is a prefix of another', () => {
    const tags = Object.values(USER_DATA_TAGS);
    expect(new Set(tags).size).toBe(tags.length);
    for (const a of tags) for (const b of tags) if (a !== b) expect(b.startsWith(a)).toBe(false);
    expect(taggedUserData(USER_DATA_TAGS.birth, Buffer.from('x'))).toEqual(createHash('sha256').update('nks-birth-v1x').digest());
    expect(birthUserData('k', ADDRESS)).toEqual(
      createHash('sha256')
        .update('nks-birth-v1')
        .update(canonicalCbor({ keyId: 'k', address: ADDRESS }))
        .digest(),
    );
  });

  it('gives the same content under different paths different values', () => {
    const content = birthContent('k', ADDRESS);
    const values = Object.values(USER_DATA_TAGS).map((t) => taggedUserData(t, content).toString('hex'));
    expect(new Set(values).size).toBe(values.length);
  });

  it('accepts only the tagged birth of this key id and address, and names a 0.1-era document', () => {
    expect(() => checkBirthUserData(birthUserData('k', ADDRESS), 'k', ADDRESS)).not.toThrow();
    expect(() => checkBirthUserData(birthUserData('k2', ADDRESS), 'k', ADDRESS)).toThrow(
      expect.objectContaining({ code: 'USER_DATA_MISMATCH' }),
    );
    expect(() => checkBirthUserData(undefined, 'k', ADDRESS)).toThrow(expect.objectContaining({ code: 'USER_DATA_MISMATCH' }));
    const legacy = createHash('sha256')
      .update(canonicalCbor({ keyId: 'k', address: ADDRESS }))
      .digest();
    expect(() => checkBirthUserData(legacy, 'k', ADDRESS)).toThrow(
      expect.objectContaining({ code: 'LEGACY_BIRTH', message: expect.stringMatching(/not evidence/) }),
    );
  });
});
