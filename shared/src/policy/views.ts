/**
 * What the caller API answers about a project's policies (docs/POLICIES.md, "Managing policies"), one definition
 * for the parent that builds these answers and the SDK that reads them.
 */
import type { SignedRecord } from '../records';
import type { policyChangeTypedDataForWallet } from './approval';
import type { Approvers, Policies } from './schema';

/** `GET` and `PUT /v1/projects/{projectId}/policies`: the policies of the project's current record, and that record. */
export interface PoliciesView {
  projectId: string;
  /** The record's seq: every change of the policies is a new record, seq + 1. */
  seq: number;
  /** The record's digest, SHA-256("nks-record-v1" ‖ record), 0x hex: what the next record's `prev` names (docs/RECORDS.md). */
  recordSha256: string;
  /** Normalized (EIP-55 addresses, lower-case selectors, decimal amounts); empty lists when the project has none. */
  policies: Policies;
  /** The record, signed by the keystore identity: the policies are what it says (a client checks it: `verifyPolicies`). */
  record: SignedRecord;
}

/**
 * `POST …/policies:approval`: the EIP-712 typed data (`eth_signTypedData_v4`, viem's `signTypedData`) an approver
 * signs for one change of the current record (docs/POLICIES.md, "Approvers").
 */
export interface PolicyApprovalView {
  projectId: string;
  seq: number;
  /** The current record's digest: the record the change replaces, which the approval names. */
  recordSha256: `0x${string}`;
  /** Who must approve the change (null: nobody; the admin token authorizes it). */
  approvers: Approvers | null;
  typedData: ReturnType<typeof policyChangeTypedDataForWallet>;
}
