/**
 * The recipient key's lifetime rules (recipient.ts) and the failed-open limit (failed-opens.ts) at their
 * boundaries, with a fake clock that does not start at zero (so `now - t` and `now + t` differ) and an NSM whose
 * answers the test releases. Written for mutation testing (npm run test:mutation): each test pins a comparison
 * or a branch that the broader tests in units.test.ts pass through without distinguishing.
 */
import { KeystoreError } from '@nks/shared/errors';
import { rejection } from '@nks/shared-test/helpers';
import { FailedOpens } from '../src/kms/failed-opens';
import { RecipientKeys, RecipientLease } from '../src/kms/recipient';
import { fakeNsm } from './fake-nsm';

const T0 = 1_800_000_000_000;

/** Waits (in real time, briefly) until `cond` holds: RSA key generation runs on libuv's pool. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 2000 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  if (!cond()) throw new Error('condition never held');
}

describe('RecipientKeys lifetimes (fake clock)', () => {
  it('rotates the key at exactly rotateMs even when the document could still be reused', async () => {
    let now = T0;
    const nsm = fakeNsm();
    const r = new RecipientKeys(nsm.client, { rotateMs: 1_000, documentMaxAgeMs: 60_000, now: () => now });
    const first = await r.current();
    now = T0 + 999;
    expect((await r.current()).sameKey(first)).toBe(true);
    expect([r.rotations, nsm.attests()]).toEqual([1, 1]);
    now = T0 + 1_000;
    const second = await r.current();
    expect(second.sameKey(first)).toBe(false);
    expect(second.document.toString()).toBe('doc-2');
    expect([r.rotations, r.documents, nsm.attests()]).toEqual([2, 2, 2]);
  });

  it('reuses a document until exactly documentMaxAgeMs, then asks for a new one for the same key', async () => {
    let now = T0;
    const nsm = fakeNsm();
    const r = new RecipientKeys(nsm.client, { rotateMs: 3_600_000, documentMaxAgeMs: 1_000, now: () => now });
    const first = await r.current();
    now = T0 + 999;
    expect((await r.current()).document.toString()).toBe('doc-1');
    now = T0 + 1_000;
    const next = await r.current();
    expect(next.document.toString()).toBe('doc-2');
    expect(next.sameKey(first)).toBe(true);
    expect([r.rotations, r.documents]).toEqual([1, 2]);
  });

  it('shares one refresh among callers that arrive while the document is being made', async () => {
    const nsm = fakeNsm({ hold: true });
    const r = new RecipientKeys(nsm.client, { rotateMs: 3_600_000, documentMaxAgeMs: 60_000, now: () => T0 });
    const a = r.current();
    await until(() => nsm.held() === 1); // the key exists, its document does not yet
    const b = r.current();
    nsm.release();
    const [la, lb] = await Promise.all([a, b]);
    expect(la.sameKey(lb)).toBe(true);
    expect([r.rotations, r.documents, nsm.attests()]).toEqual([1, 1, 1]);
  });

  it('retiring an older key leaves the current key and its document alone', async () => {
    let now = T0;
    const nsm = fakeNsm();
    const r = new RecipientKeys(nsm.client, { rotateMs: 1_000, documentMaxAgeMs: 60_000, now: () => now });
    const old = await r.current();
    now = T0 + 1_000;
    const current = await r.current();
    expect(current.sameKey(old)).toBe(false);
    expect(r.retire(old)).toBe(true);
    expect(old.privateKey).toBeNull();
    expect(current.privateKey).not.toBeNull();
    const again = await r.current();
    expect(again.sameKey(current)).toBe(true);
    expect(again.document).toEqual(current.document);
    expect([r.rotations, r.documents, r.retirements, nsm.attests()]).toEqual([2, 2, 1, 2]);
  });

  it('retiring an older key while the current one is being replaced does not fail', async () => {
    let now = T0;
    const nsm = fakeNsm();
    const r = new RecipientKeys(nsm.client, { rotateMs: 1_000, documentMaxAgeMs: 60_000, now: () => now });
    const old = await r.current();
    now = T0 + 1_000;
    const current = await r.current();
    expect(r.retire(current)).toBe(true); // no current document now; a replacement is being prepared
    expect(r.retire(old)).toBe(true);
    const next = await r.current();
    expect(next.sameKey(current) || next.sameKey(old)).toBe(false);
    expect(r.retirements).toBe(2);
  });

  it('gives up after three rounds when every new key is retired while its document is made', async () => {
    let r: RecipientKeys | undefined;
    // Each attestation retires the key it is for (another call's failed open, every time).
    const nsm = fakeNsm({
      onRequest: () => {
        const key = (r as unknown as { key: ConstructorParameters<typeof RecipientLease>[0] }).key;
        r?.retire(new RecipientLease(key, Buffer.alloc(0)));
      },
    });
    r = new RecipientKeys(nsm.client, { rotateMs: 3_600_000, documentMaxAgeMs: 60_000, now: () => T0 });
    const err = await rejection<KeystoreError>(r.current());
    expect([err.code, err.message]).toEqual(['UNAVAILABLE', 'the KMS recipient key keeps being retired; try again later']);
    expect(nsm.attests()).toBe(3);
    expect([r.rotations, r.documents]).toEqual([3, 0]);
  });
});

describe('FailedOpens boundaries (fake clock)', () => {
  it('is not cooling down before any failure, and stops exactly at the end of the cool-down', () => {
    let now = T0;
    const f = new FailedOpens({ maxFailures: 1, windowMs: 10_000, cooldownMs: 500 }, () => now);
    expect([f.coolingDown, f.refusing(), f.total]).toEqual([false, false, 0]);
    f.record();
    expect(f.coolingDown).toBe(false);
    f.record();
    expect(f.coolingDown).toBe(true);
    now = T0 + 499;
    expect([f.coolingDown, f.refusing()]).toEqual([true, true]);
    now = T0 + 500;
    expect([f.coolingDown, f.refusing(), f.total]).toEqual([false, false, 3]);
  });

  it('forgets a failure exactly windowMs later', () => {
    let now = T0;
    const f = new FailedOpens({ maxFailures: 1, windowMs: 1_000, cooldownMs: 500 }, () => now);
    f.record();
    now = T0 + 1_000; // the first failure is now outside the window: one in the window, not above the limit
    f.record();
    expect(f.coolingDown).toBe(false);
    now = T0 + 1_999;
    f.record(); // two within the window
    expect(f.coolingDown).toBe(true);
  });

  it('starts counting afresh after a cool-down', () => {
    let now = T0;
    const f = new FailedOpens({ maxFailures: 1, windowMs: 10_000, cooldownMs: 500 }, () => now);
    f.record();
    f.record();
    now = T0 + 500;
    expect(f.coolingDown).toBe(false);
    f.record(); // the two before the cool-down no longer count
    expect(f.coolingDown).toBe(false);
    f.record();
    expect(f.coolingDown).toBe(true);
  });
});
