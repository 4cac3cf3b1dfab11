/**
 * Review 19, F6, against the real enclave bundle (dist/, `npm run build` first), the test standing where the
 * parent would: one project's callers fill the limit counters; before, every other project's first signature was
 * refused ("limit tracking is full") for up to a day. Now each project holds at most its share
 * (`policy.maxTrackedCountersPerProject`): a full project refuses only its own requests.
 */
import { generateKeyPairSync } from 'node:crypto';
import { recoverMessageAddress } from 'viem';
import type { CreateResult, ProjectResult } from '@nks/shared/enclave-api';
import type { PoliciesInput } from '@nks/shared/policy/schema';
import type { SignedRecord } from '@nks/shared/records';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { parseEnclaveConfig } from '../src/config';
import { TRACKING_FULL, TRACKING_FULL_PROJECT } from '../src/policy/limits';
import { startEnclaveHarness, type EnclaveHarness } from './harness';

jest.setTimeout(120_000);

const PER_KEY: PoliciesInput = { limits: [{ name: 'per key', scope: 'key', window: 'day', maxCount: 100 }] };
const HOURLY: PoliciesInput = { limits: [{ name: 'hourly', scope: 'project', window: 'hour', maxCount: 1000 }] };

describe('review 19 F6: the limit counters are shared fairly between projects (real enclave bundle)', () => {
  let h: EnclaveHarness;
  let n = 0;

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-r19-limits-'), { policy: { maxTrackedCounters: 7, maxTrackedCountersPerProject: 4 } });
  }, 90_000);
  afterAll(async () => {
    await h?.stop();
  });

  const newProject = (policies: PoliciesInput): Promise<ProjectResult> =>
    h.client.call('projects.create', { settings: { auth: { type: 'token' }, allowedRequestTypes: ['message'], policies } as never });
  const newKey = (project: ProjectResult) => h.create(`r19-limits-${++n}`, { project: project.record });
  const sign = (key: CreateResult, project: SignedRecord, message: string) =>
    h.client.call('keys.sign', {
      keyId: key.keyId,
      blob: key.blob,
      record: key.record,
      project,
      request: { type: 'message', message } as never,
    });
  const reason = async (p: Promise<unknown>) => {
    const err = await rejection(p);
    return [err.code, (err.details as { reason?: string } | undefined)?.reason];
  };
  const tracked = async () => (await h.client.call('enclave.health', {})).policy.trackedCounters;

  it("a project that fills its share refuses only its own new counters; another project signs, until the enclave's bound", async () => {
    const tenantA = await newProject(PER_KEY);
    const keysA: CreateResult[] = [];
    for (let i = 0; i < 4; i++) {
      keysA.push(await newKey(tenantA));
      await sign(keysA[i] as CreateResult, tenantA.record, `a${i}`);
    }
    // A's fifth key needs a fifth counter: refused, naming the project's share.
    const fifth = await newKey(tenantA);
    expect(await reason(sign(fifth, tenantA.record, 'a4'))).toEqual(['POLICY_DENIED', TRACKING_FULL_PROJECT]);
    // A's keys that have a counter still sign (no new counter needed).
    await sign(keysA[0] as CreateResult, tenantA.record, 'a0 again');

    // Tenant B never signed before: its first signature is made (the attack of review 19 refused it).
    const tenantB = await newProject(HOURLY);
    const keyB = await newKey(tenantB);
    const sig = await sign(keyB, tenantB.record, 'b');
    expect(await recoverMessageAddress({ message: 'b', signature: sig.signature })).toBe(keyB.address);
    expect(await tracked()).toBe(5);

    // The enclave's bound (7) still holds over the shares: fail closed, no live counter evicted.
    const tenantC = await newProject(PER_KEY);
    for (let i = 0; i < 2; i++) await sign(await newKey(tenantC), tenantC.record, `c${i}`);
    expect(await reason(sign(await newKey(tenantC), tenantC.record, 'c2'))).toEqual(['POLICY_DENIED', TRACKING_FULL]);
    expect(await tracked()).toBe(7);
    // Every counter kept its count: A's first key has signed twice.
    const decision = await h.client.call('projects.evaluatePolicy', {
      project: tenantA.record,
      record: (keysA[0] as CreateResult).record,
      request: { type: 'message', message: 'dry run' } as never,
    });
    expect(decision.limits[0]?.count).toEqual({ used: 2, max: 100 });
  });

  it('the share is configuration: a positive integer, like the enclave-wide bound', () => {
    const valid = {
      kmsKeyArn: 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab',
      kmsPublicKey: generateKeyPairSync('rsa', { modulusLength: 2048 })
        .publicKey.export({ type: 'spki', format: 'der' })
        .toString('base64'),
    };
    expect(parseEnclaveConfig(valid).policy).toEqual({ maxTrackedCounters: 40_000, maxTrackedCountersPerProject: 10_000 });
    for (const bad of [0, -1, 1.5, '10', 10_000_001]) {
      expect(() => parseEnclaveConfig({ ...valid, policy: { maxTrackedCountersPerProject: bad } })).toThrow(
        /policy\.maxTrackedCountersPerProject/,
      );
    }
    expect(() => parseEnclaveConfig({ ...valid, policy: { maxTrackedCountersPerProjet: 5 } })).toThrow(/maxTrackedCountersPerProjet/);
  });
});
