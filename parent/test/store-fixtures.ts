/**
 * Fixtures of the store tests: key records as the enclave makes them, signed by a test identity, and what an
 * engine is given to store them.
 */
import type { KeyRecord } from '@nks/shared/records';
import type { NewKey } from '../src/store/types';
import { TestIdentity } from './fake-enclave';

export const identity = new TestIdentity();
export const ADDRESS = '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266';
export const PREV = `0x${'cd'.repeat(32)}`;

export const keyRecord = (keyId: string, over: Partial<KeyRecord> = {}): KeyRecord => ({
  v: 1,
  kind: 'key',
  keyId,
  address: ADDRESS,
  blobSha256: `0x${'ab'.repeat(32)}`,
  projectId: 'default',
  subject: 'alice',
  state: 'active',
  disabled: false,
  seq: 0,
  prev: null,
  origin: 'created',
  createdAt: 1,
  ...over,
});
export const newKey = (keyId: string, externalId: string | null, over: Partial<KeyRecord> = {}): NewKey => {
  const record = keyRecord(keyId, over);
  return {
    keyId,
    externalId,
    address: ADDRESS,
    publicKey: '0x04',
    blob: 'AAAA',
    labels: { tier: 'gold' },
    attestation: null,
    createdAt: 1_700_000_000_123,
    record,
    signed: identity.sign(record),
  };
};
export const next = (r: KeyRecord, state: KeyRecord['state'], over: Partial<KeyRecord> = {}): KeyRecord => ({
  ...r,
  state,
  seq: r.seq + 1,
  prev: PREV,
  ...over,
});
export const update = (r: KeyRecord) => ({ signed: identity.sign(r), record: r });
