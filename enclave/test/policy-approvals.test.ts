/**
 * Approvers of a project's policy (docs/POLICIES.md, "Approvers"), against the real enclave bundle with the test
 * where a compromised parent stands: it holds every record and calls projects.setPolicies directly, but no
 * approver's key. A policy with approvers changes (any change: rules, limits, approvers, removal) only with
 * `threshold` distinct approvers' EIP-712 signatures over exactly that change: project, replaced record, policies.
 */
import { hashTypedData, keccak256, recoverAddress, type Hex } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import type { CreateResult, ProjectResult } from '@nks/shared/enclave-api';
import { policyChangeTypedData } from '@nks/shared/policy/approval';
import { PoliciesSchema, type PoliciesInput } from '@nks/shared/policy/schema';
import { decodeProjectRecord, hex, recordDigest, type SignedRecord } from '@nks/shared/records';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { approvalsMissing, NO_APPROVERS_MESSAGE } from '../src/policy/approvals';
import { startEnclaveHarness, type EnclaveHarness } from './harness';

jest.setTimeout(120_000);

const ALL_TYPES = ['digest', 'message', 'typedData', 'transaction', 'authorization', 'userOperation'];
const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

const account = () => privateKeyToAccount(generatePrivateKey());
const [a1, a2, a3, o1] = [account(), account(), account(), account()];
const outsiders = [o1, account(), account()];
const approvers = (list: PrivateKeyAccount[], threshold: number) => ({ addresses: list.map((a) => a.address), threshold });

const NO_DIGESTS: PoliciesInput = {
  rules: [
    { name: 'no-blind-signing', effect: 'deny', when: { type: ['digest'] } },
    { name: 'rest', effect: 'allow' },
  ],
  approvers: approvers([a1, a2, a3], 2),
};
/** The same rules, and approvers, with digests allowed: a relaxation. */
const LAX: PoliciesInput = { rules: [{ name: 'no-blind-signing', effect: 'allow' }], approvers: approvers([a1, a2, a3], 2) };

const recordHash = (s: SignedRecord) => hex(recordDigest(Buffer.from(s.record, 'base64'))) as Hex;
const policiesOf = (s: SignedRecord) => decodeProjectRecord(Buffer.from(s.record, 'base64')).policies;
/** What an approver signs for changing `project`'s current record `from` to `policies`. */
const typedData = (projectId: string, from: SignedRecord, policies: PoliciesInput) =>
  policyChangeTypedData(projectId, recordHash(from), PoliciesSchema.parse(policies));
const approve = (signers: PrivateKeyAccount[], projectId: string, from: SignedRecord, policies: PoliciesInput) =>
  Promise.all(signers.map((s) => s.signTypedData(typedData(projectId, from, policies))));

describe('policy approvers (real enclave bundle, the test in the parent seat)', () => {
  let h: EnclaveHarness;
  let n = 0;

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-appr-'));
  }, 90_000);
  afterAll(async () => {
    await h?.stop();
  });

  const newProject = (policies?: PoliciesInput): Promise<ProjectResult> =>
    h.client.call('projects.create', {
      settings: { auth: { type: 'token' }, allowedRequestTypes: ALL_TYPES, ...(policies ? { policies } : {}) } as never,
    });
  const newKey = (project: ProjectResult) => h.create(`appr-${++n}`, { project: project.record });
  const sign = (key: CreateResult, project: SignedRecord, request: unknown) =>
    h.client.call('keys.sign', { keyId: key.keyId, blob: key.blob, record: key.record, project, request: request as never });
  const setPolicies = (project: SignedRecord, policies: PoliciesInput, approvals?: string[]) =>
    h.client.call('projects.setPolicies', { project, policies: policies, ...(approvals ? { approvals } : {}) });
  const refusal = async (p: Promise<unknown>) => {
    const err = await rejection(p);
    return { code: err.code, message: err.message };
  };
  const forbidden = (threshold: number, got: number) => ({ code: 'FORBIDDEN', message: approvalsMissing(threshold, got) });
  const digestRequest = (i: number) => ({ type: 'digest', digest: keccak256(`0x${i.toString(16).padStart(4, '0')}`) });

  it('review F1 (regression): the parent can neither drop nor relax a policy with approvers, and still cannot sign what it refuses', async () => {
    const p = await newProject(NO_DIGESTS);
    const key = await newKey(p);
    expect((await refusal(sign(key, p.record, digestRequest(1)))).code).toBe('POLICY_DENIED');
    expect(await refusal(setPolicies(p.record, {}))).toEqual(forbidden(2, 0));
    expect(await refusal(setPolicies(p.record, LAX))).toEqual(forbidden(2, 0));
    // Keeping the approvers but dropping the rules, or dropping only the approvers: changes too.
    expect(await refusal(setPolicies(p.record, { approvers: NO_DIGESTS.approvers }))).toEqual(forbidden(2, 0));
    expect(await refusal(setPolicies(p.record, { rules: NO_DIGESTS.rules }))).toEqual(forbidden(2, 0));
    // The record is still the current one and still refuses digests.
    expect((await refusal(sign(key, p.record, digestRequest(2)))).code).toBe('POLICY_DENIED');
  });

  it('refuses too few, foreign, duplicated and invalid approvals, counting only distinct approvers, naming none', async () => {
    const p = await newProject(NO_DIGESTS);
    const id = p.projectId;
    const [one] = await approve([a1], id, p.record, LAX);
    expect(await refusal(setPolicies(p.record, LAX, [one!]))).toEqual(forbidden(2, 1));
    const foreign = await approve(outsiders, id, p.record, LAX);
    const refused = await refusal(setPolicies(p.record, LAX, [one!, ...foreign]));
    expect(refused).toEqual(forbidden(2, 1));
    for (const o of outsiders) expect(refused.message.toLowerCase()).not.toContain(o.address.slice(2).toLowerCase());
    // The same signature twice (in another case), and the same approver's other signature (s → n - s, v flipped).
    const r = one!.slice(0, 66);
    const s = BigInt(`0x${one!.slice(66, 130)}`);
    const v = parseInt(one!.slice(130), 16);
    const malleated = `${r}${(SECP256K1_N - s).toString(16).padStart(64, '0')}${(v === 27 ? 28 : 27).toString(16)}`;
    expect(await recoverAddress({ hash: hashTypedData(typedData(id, p.record, LAX)), signature: malleated as Hex })).toBe(a1.address);
    expect(await refusal(setPolicies(p.record, LAX, [one!, one!.toUpperCase().replace('0X', '0x'), malleated]))).toEqual(forbidden(2, 1));
    // Not signatures of anyone (r = s = 0, v out of range): counted as nothing, never an error of another kind.
    const junk = [`0x${'00'.repeat(65)}`, `0x${'ff'.repeat(65)}`, `0x${'11'.repeat(64)}05`];
    expect(await refusal(setPolicies(p.record, LAX, [one!, ...junk]))).toEqual(forbidden(2, 1));
    // Two distinct approvers: the change is made.
    const two = await approve([a1, a3], id, p.record, LAX);
    const next = await setPolicies(p.record, LAX, [...junk, ...foreign, ...two]);
    expect(policiesOf(next.record)).toEqual(PoliciesSchema.parse(LAX));
  });

  it('an approval is good for one change: not for other policies, another project, or a later record', async () => {
    const p = await newProject(NO_DIGESTS);
    const q = await newProject(NO_DIGESTS);
    const key = await newKey(p);
    const strict = { ...NO_DIGESTS, limits: [{ name: 'hourly', scope: 'key', window: 'hour', maxCount: 10 }] } as PoliciesInput;
    // Signed for a stricter policy, sent with a laxer one.
    const forStrict = await approve([a1, a2], p.projectId, p.record, strict);
    expect(await refusal(setPolicies(p.record, LAX, forStrict))).toEqual(forbidden(2, 0));
    // Signed for the same change of another project (same approvers).
    const forQ = await approve([a1, a2], q.projectId, q.record, LAX);
    expect(await refusal(setPolicies(p.record, LAX, forQ))).toEqual(forbidden(2, 0));
    // Approved changes go through: p0 → strict → back to NO_DIGESTS.
    const p1 = await setPolicies(p.record, strict, forStrict);
    const p2 = await setPolicies(p1.record, NO_DIGESTS, await approve([a2, a3], p.projectId, p1.record, NO_DIGESTS));
    expect(policiesOf(p2.record)).toEqual(PoliciesSchema.parse(NO_DIGESTS));
    // The parent replays the first approvals on the newest record (same policies as p0 had, so the same "from"):
    // they name record p0, which is replaced.
    expect(await refusal(setPolicies(p2.record, strict, forStrict))).toEqual(forbidden(2, 0));
    // And the approved record p0 itself is no longer current: refused as any replay.
    expect((await refusal(setPolicies(p.record, strict, forStrict))).code).toBe('KEY_INTEGRITY');
    expect((await refusal(sign(key, p2.record, digestRequest(3)))).code).toBe('POLICY_DENIED');
  });

  it('changing the approvers needs the old approvers; the new ones decide the next change', async () => {
    const p = await newProject({ ...NO_DIGESTS, approvers: approvers([a1], 1) });
    const moved = { ...NO_DIGESTS, approvers: approvers([o1], 1) };
    // The new approver alone cannot take over.
    expect(await refusal(setPolicies(p.record, moved, await approve([o1], p.projectId, p.record, moved)))).toEqual(forbidden(1, 0));
    const p1 = await setPolicies(p.record, moved, await approve([a1], p.projectId, p.record, moved));
    expect(policiesOf(p1.record)?.approvers).toEqual({ addresses: [o1.address], threshold: 1 });
    // Removing the policy now needs the new approver, not the old one.
    expect(await refusal(setPolicies(p1.record, {}, await approve([a1], p.projectId, p1.record, {})))).toEqual(forbidden(1, 0));
    const p2 = await setPolicies(p1.record, {}, await approve([o1], p.projectId, p1.record, {}));
    expect(policiesOf(p2.record)).toBeUndefined();
    // No approvers any more: the admin's call alone changes it, and approvals sent anyway are refused as meaningless.
    expect(await refusal(setPolicies(p2.record, LAX, await approve([a1], p.projectId, p2.record, LAX)))).toEqual({
      code: 'INVALID_PARAMS',
      message: NO_APPROVERS_MESSAGE,
    });
    const p3 = await setPolicies(p2.record, NO_DIGESTS);
    expect(policiesOf(p3.record)?.approvers?.threshold).toBe(2);
  });

  it('a project made with approvers needs no approval to be made; approvals are bounded and well-formed', async () => {
    const p = await newProject(NO_DIGESTS);
    expect(policiesOf(p.record)?.approvers).toEqual(PoliciesSchema.parse(NO_DIGESTS).approvers);
    // Approvers alone are a policy (guarding the project's future policy) that restricts no signature.
    const guardOnly = await newProject({ approvers: approvers([a1], 1) });
    const key = await newKey(guardOnly);
    expect((await sign(key, guardOnly.record, digestRequest(4))).address).toBe(key.address);
    expect(await refusal(setPolicies(guardOnly.record, {}))).toEqual(forbidden(1, 0));
    const tooMany = Array.from({ length: 17 }, (_, i) => `0x${(i + 1).toString(16).padStart(130, '0')}`);
    expect((await refusal(setPolicies(p.record, LAX, tooMany))).code).toBe('INVALID_PARAMS');
    expect((await refusal(setPolicies(p.record, LAX, ['0x1234']))).code).toBe('INVALID_PARAMS');
    // A state change is not a policy change: no approvals (docs/SECURITY.md); it makes a new record, so an
    // approval given for the one before no longer applies.
    const given = await approve([a1, a2], p.projectId, p.record, LAX);
    const disabled = await h.client.call('projects.setState', { project: p.record, state: 'disabled' });
    expect(await refusal(setPolicies(disabled.record, LAX, given))).toEqual(forbidden(2, 0));
    const changed = await setPolicies(disabled.record, LAX, await approve([a1, a2], p.projectId, disabled.record, LAX));
    expect(decodeProjectRecord(Buffer.from(changed.record.record, 'base64')).state).toBe('disabled');
  });
});
