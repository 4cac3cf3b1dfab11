/**
 * The second review of approvers (docs/POLICIES.md, "Approvers"), as regression tests from the parent's seat
 * against the real enclave bundle:
 * - a keystore key cannot be made to sign a policy-change approval as typed data (a blind digest of it cannot be
 *   told apart: approvers must be keys held outside the keystore, as the docs say);
 * - a project's high-water mark is never pushed out by changing many other projects while the enclave runs:
 *   the record from before the approvers stays refused, and at the bound a new project change is OVERLOADED;
 * (The SDK's check of the parent's approval typed data is in client/test/policies.test.ts.)
 */
import { hashTypedData, keccak256, type Hex } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import type { CreateResult, ProjectResult } from '@nks/shared/enclave-api';
import { policyChangeTypedData } from '@nks/shared/policy/approval';
import { PoliciesSchema, type PoliciesInput } from '@nks/shared/policy/schema';
import { decodeProjectRecord, hex, recordDigest, type SignedRecord } from '@nks/shared/records';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { startEnclaveHarness, type EnclaveHarness } from './harness';

jest.setTimeout(180_000);

const ALL_TYPES = ['digest', 'message', 'typedData', 'transaction', 'authorization', 'userOperation'];
const MARKS = 16;
const recordHash = (s: SignedRecord) => hex(recordDigest(Buffer.from(s.record, 'base64'))) as Hex;
const policiesOf = (s: SignedRecord) => decodeProjectRecord(Buffer.from(s.record, 'base64')).policies;
const digestRequest = (i: number) => ({ type: 'digest', digest: keccak256(`0x${i.toString(16).padStart(4, '0')}`) });
const STRICT_RULES: PoliciesInput['rules'] = [
  { name: 'no-blind-signing', effect: 'deny', when: { type: ['digest'] } },
  { name: 'rest', effect: 'allow' },
];

describe('approvers after the second review', () => {
  let h: EnclaveHarness;
  let n = 0;
  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-approvals-review-'), { records: { maxVerified: 16, maxSeqMarks: MARKS } });
  }, 90_000);
  afterAll(async () => {
    await h?.stop();
  });

  const newProject = (policies?: PoliciesInput): Promise<ProjectResult> =>
    h.client.call('projects.create', {
      settings: { auth: { type: 'token' }, allowedRequestTypes: ALL_TYPES, ...(policies ? { policies } : {}) } as never,
    });
  const sign = (key: CreateResult, project: SignedRecord, request: unknown) =>
    h.client.call('keys.sign', { keyId: key.keyId, blob: key.blob, record: key.record, project, request: request as never });
  const setPolicies = (project: SignedRecord, policies: PoliciesInput, approvals?: string[]) =>
    h.client.call('projects.setPolicies', { project, policies, ...(approvals ? { approvals } : {}) });

  it('a keystore key does not sign a policy-change approval as typed data', async () => {
    const officer = await h.create(`officer-${++n}`);
    const p = await newProject({ rules: STRICT_RULES, approvers: { addresses: [officer.address], threshold: 1 } });
    const td = policyChangeTypedData(p.projectId, recordHash(p.record), PoliciesSchema.parse({}));
    const err = await rejection(sign(officer, h.defaultProject, { type: 'typedData', typedData: td }));
    expect([err.code, err.message]).toEqual(['FORBIDDEN', 'keys of this keystore do not sign policy-change approvals']);
    // Other typed data still signs (the refusal is the approval domain only).
    const other = { ...td, domain: { name: 'something else', version: '1' } };
    expect((await sign(officer, h.defaultProject, { type: 'typedData', typedData: other })).address).toBe(officer.address);
    // The documented limit: a blind digest of the same hash is any digest. The project's own policy still stands.
    const viaDigest = await sign(officer, h.defaultProject, { type: 'digest', digest: hashTypedData(td) });
    expect(viaDigest.address).toBe(officer.address);
  });

  it("changing many other projects does not push a project's mark out: the record from before the approvers stays refused", async () => {
    const a1 = privateKeyToAccount(generatePrivateKey());
    const p0 = await newProject();
    const key = await h.create(`k-${++n}`, { project: p0.record });
    const p1 = await setPolicies(p0.record, { rules: STRICT_RULES, approvers: { addresses: [a1.address], threshold: 1 } });
    expect((await rejection(sign(key, p0.record, digestRequest(1)))).code).toBe('KEY_INTEGRITY');
    // Other projects' changes up to the bound, then past it: OVERLOADED, never an evicted mark.
    let overloaded = 0;
    for (let i = 0; i < MARKS + 4; i++) {
      const q = await newProject();
      const answer = await h.client.call('projects.setState', { project: q.record, state: 'disabled' }).then(
        () => undefined,
        (e: unknown) => e as { code?: string; message?: string },
      );
      if (answer) {
        expect(answer.code).toBe('OVERLOADED');
        expect(answer.message).toMatch(/at most 16 changed projects \(records\.maxSeqMarks\)/);
        overloaded += 1;
      }
    }
    expect(overloaded).toBeGreaterThan(0);
    expect((await rejection(sign(key, p0.record, digestRequest(2)))).code).toBe('KEY_INTEGRITY');
    expect((await rejection(setPolicies(p0.record, {}))).code).toBe('KEY_INTEGRITY');
    expect((await rejection(sign(key, p1.record, digestRequest(3)))).code).toBe('POLICY_DENIED');
    // The project itself keeps working: its mark is there.
    const approval = await a1.signTypedData(policyChangeTypedData(p1.projectId, recordHash(p1.record), PoliciesSchema.parse({})));
    expect(policiesOf((await setPolicies(p1.record, {}, [approval])).record)).toBeUndefined();
  });
});
