/**
 * The parent's per-object memory of opened records (parent/src/enclave-link/identity.ts, RecordChecker): a warm
 * sign of a cached row opens its record once. The memory must never answer for anything but the exact texts it
 * opened: an object whose record or signature was changed in place is opened again (and refused if it does not
 * verify), and a record opened as one kind is not answered as the other.
 */
import { KeystoreError } from '@nks/shared/errors';
import type { KeyRecord, SignedRecord } from '@nks/shared/records';
import { rejection } from '@nks/shared-test/helpers';
import { RecordChecker } from '../src/enclave-link/identity';
import { TestIdentity } from './fake-enclave';

const identity = new TestIdentity();
const checker = () =>
  new RecordChecker({
    publicKey: identity.publicKey,
    key: identity.publicKeyObject,
    genesisDocument: '',
    defaultProject: identity.sign(identity.project()),
  });

const keyRecord = (keyId: string, over: Partial<KeyRecord> = {}): KeyRecord => ({
  v: 1,
  kind: 'key',
  keyId,
  address: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8',
  blobSha256: `0x${'ab'.repeat(32)}`,
  projectId: 'default',
  subject: null,
  state: 'active',
  disabled: false,
  seq: 0,
  prev: null,
  origin: 'created',
  createdAt: 1_700_000_000_000,
  ...over,
});

const refused = async (f: () => unknown) => {
  const err = await rejection((async () => f())());
  expect(err).toBeInstanceOf(KeystoreError);
  expect(err.code).toBe('KEY_INTEGRITY');
};

describe('RecordChecker: what it remembers of a record object', () => {
  it('opens the same object to the same record and digest', () => {
    const c = checker();
    const signed = identity.sign(keyRecord('k_a'));
    const first = c.key(signed);
    const second = c.key(signed);
    expect(second.record).toEqual(keyRecord('k_a'));
    expect(second.record).toBe(first.record);
    expect(second.digest.equals(first.digest)).toBe(true);
  });

  it('an object whose record text is replaced in place by another genuine record opens to that record', () => {
    const c = checker();
    const signed: SignedRecord = { ...identity.sign(keyRecord('k_a')) };
    c.key(signed);
    const other = identity.sign(keyRecord('k_a', { disabled: true, seq: 1, prev: `0x${'cd'.repeat(32)}` }));
    signed.record = other.record;
    signed.signature = other.signature;
    expect(c.key(signed).record).toMatchObject({ disabled: true, seq: 1 });
  });

  it('an object whose record text is edited in place (signature kept) is refused', async () => {
    const c = checker();
    const signed: SignedRecord = { ...identity.sign(keyRecord('k_a')) };
    c.key(signed);
    signed.record = identity.sign(keyRecord('k_a', { subject: 'mallory' })).record;
    await refused(() => c.key(signed));
  });

  it('an object whose signature is replaced in place by another record’s is refused', async () => {
    const c = checker();
    const signed: SignedRecord = { ...identity.sign(keyRecord('k_a')) };
    c.key(signed);
    signed.signature = identity.sign(keyRecord('k_b')).signature;
    await refused(() => c.key(signed));
  });

  it('a key record opened once is not answered as a project record, nor a project record as a key record', async () => {
    const c = checker();
    const key = identity.sign(keyRecord('k_a'));
    c.key(key);
    await refused(() => c.project(key));
    const project = identity.sign(identity.project());
    c.project(project);
    await refused(() => c.key(project));
  });

  it('a record signed by another identity is refused every time, never remembered', async () => {
    const c = checker();
    const forged = new TestIdentity().sign(keyRecord('k_a'));
    await refused(() => c.key(forged));
    await refused(() => c.key(forged));
  });
});
