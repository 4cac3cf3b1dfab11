/**
 * Approvals of a policy change (docs/POLICIES.md, "Approvers"). A project whose current policy names approvers
 * gets its next policy only with `threshold` distinct approvers' EIP-712 signatures over exactly that change
 * (the project, the digest of the record it replaces, the new policies): the parent, which holds every record,
 * holds no approver's key, so it can neither drop nor relax such a policy while the enclave runs.
 *
 * Bounded: at most POLICY_MAX_APPROVERS signatures (the method's schema), each distinct one recovered at most once
 * against one typed-data hash, none after the threshold is met. A signature that does not recover, or recovers to someone who is no approver,
 * counts for nothing and is not named in the refusal (the parent learns nothing from it).
 */
import { hashTypedData, recoverAddress, type Hex } from 'viem';
import { KeystoreError } from '@nks/shared/errors';
import { policyChangeTypedData } from '@nks/shared/policy/approval';
import { POLICY_MAX_APPROVERS, type Approvers, type Policies } from '@nks/shared/policy/schema';

export const NO_APPROVERS_MESSAGE =
  "approvals: this project's policy has no approvers (its policy changes are authorized by the admin token alone)";

export const approvalsMissing = (threshold: number, counted: number) =>
  `changing this project's policies needs ${threshold} approval${threshold === 1 ? '' : 's'} of its approvers, got ${counted}`;

/**
 * The distinct approvers whose signatures in `approvals` are over this change, stopping at `threshold`. A
 * recovery is about 3 ms of the main thread (viem; measured on a laptop), so at most about 50 ms for a change
 * with 16 signatures, an admin action.
 */
export async function approvedBy(
  approvers: Approvers,
  change: { projectId: string; recordDigest: Hex; policies: Policies | undefined },
  approvals: readonly string[],
): Promise<Set<string>> {
  // The method's schema caps the list; this is the enclave's own bound should it ever be called otherwise.
  if (approvals.length > POLICY_MAX_APPROVERS)
    throw new KeystoreError('INVALID_PARAMS', `approvals: expected at most ${POLICY_MAX_APPROVERS} signatures`);
  const allowed = new Set(approvers.addresses.map((a) => a.toLowerCase()));
  const hash = hashTypedData(policyChangeTypedData(change.projectId, change.recordDigest, change.policies));
  const found = new Set<string>();
  for (const signature of new Set(approvals.map((s) => s.toLowerCase()))) {
    let signer: string;
    try {
      signer = (await recoverAddress({ hash, signature: signature as Hex })).toLowerCase();
    } catch {
      continue; // not a signature of anyone: counts for nothing
    }
    if (allowed.has(signer)) found.add(signer);
    if (found.size >= approvers.threshold) break; // enough: the rest need not be recovered
  }
  return found;
}

/**
 * Refuses a change of a policy that has approvers unless `threshold` of them approved it (FORBIDDEN), and
 * approvals for a project whose policy has none (INVALID_PARAMS: they would authorize nothing, and a caller who
 * sends them believes they do). Answers how many approvers approved (0: no approvers).
 */
export async function checkApprovals(
  current: Policies | undefined,
  change: { projectId: string; recordDigest: Hex; policies: Policies | undefined },
  approvals: readonly string[] | undefined,
): Promise<number> {
  const approvers = current?.approvers;
  if (!approvers) {
    if (approvals && approvals.length > 0) throw new KeystoreError('INVALID_PARAMS', NO_APPROVERS_MESSAGE);
    return 0;
  }
  const found = await approvedBy(approvers, change, approvals ?? []);
  if (found.size < approvers.threshold) throw new KeystoreError('FORBIDDEN', approvalsMissing(approvers.threshold, found.size));
  return found.size;
}
