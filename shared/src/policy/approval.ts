/**
 * Approving a policy change (docs/POLICIES.md, "Approvers"): when a project's policy names approvers, the enclave
 * makes the next record only with `threshold` distinct approvers' EIP-712 signatures over exactly this change —
 * the project, the record it replaces (its digest, so an approval is good for one change of one record and
 * cannot be replayed on a later one) and the new policies (their digest). The EIP-712 domain is this one's alone,
 * so no other signature of an approver's key (a transaction, a permit) is an approval, nor the reverse.
 */
import { createHash } from 'node:crypto';
import type { TypedDataDefinition } from 'viem';
import { canonicalCbor } from '../cbor';
import { isEmptyPolicy, type Policies } from './schema';

export const POLICY_APPROVAL_DOMAIN = { name: 'nitro-keystore policy change', version: '1' } as const;
/** An approval as it travels: a 65-byte secp256k1 signature (r ‖ s ‖ v), 0x hex. */
export const APPROVAL_SIGNATURE_RE = /^0x[0-9a-fA-F]{130}$/;
export const APPROVAL_SIGNATURE_EXPECTED = 'expected a 65-byte signature as 0x hex (130 hex digits)';
/** The domain's fields, as wallets (`eth_signTypedData_v4`) want them listed among the types: they hash what the enclave checks. */
export const POLICY_APPROVAL_DOMAIN_FIELDS = [
  { name: 'name', type: 'string' },
  { name: 'version', type: 'string' },
] as const;
export const POLICY_APPROVAL_TYPES = {
  PolicyChange: [
    { name: 'projectId', type: 'string' },
    { name: 'record', type: 'bytes32' },
    { name: 'policies', type: 'bytes32' },
  ],
} as const;

/** SHA-256 of the policies' canonical CBOR in normalized form (`{}` for none), 0x-hex: what an approval names. */
export function policiesDigest(policies: Policies | undefined): `0x${string}` {
  const value = isEmptyPolicy(policies) ? {} : { ...policies };
  return `0x${createHash('sha256').update(canonicalCbor(value)).digest('hex')}`;
}

/**
 * What an approver signs (EIP-712, e.g. `eth_signTypedData_v4` in a wallet, or `nks policies approve`): the
 * change of project `projectId` from the record whose digest is `recordDigest` (`recordSha256` of
 * `GET …/policies`) to `policies` (normalized by PoliciesSchema).
 */
export function policyChangeTypedData(
  projectId: string,
  recordDigest: `0x${string}`,
  policies: Policies | undefined,
): TypedDataDefinition<typeof POLICY_APPROVAL_TYPES, 'PolicyChange'> {
  return {
    domain: POLICY_APPROVAL_DOMAIN,
    types: POLICY_APPROVAL_TYPES,
    primaryType: 'PolicyChange',
    message: { projectId, record: recordDigest, policies: policiesDigest(policies) },
  };
}

/** `policyChangeTypedData` with `EIP712Domain` spelled out among the types, for a wallet to sign as it is. */
export function policyChangeTypedDataForWallet(projectId: string, recordDigest: `0x${string}`, policies: Policies | undefined) {
  const typed = policyChangeTypedData(projectId, recordDigest, policies);
  return { ...typed, types: { EIP712Domain: POLICY_APPROVAL_DOMAIN_FIELDS, ...typed.types } };
}
