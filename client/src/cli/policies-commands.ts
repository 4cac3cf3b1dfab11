/**
 * `nks policies`: a project's signing policies (docs/POLICIES.md; an admin token) — what its keys may sign,
 * held in the project's signed record and enforced inside the enclave. Not `nks policy`, which writes the KMS
 * key policy (docs/KEY-POLICY.md).
 *
 *   nks policies get --project ID [--identity 0x…|FILE]
 *   nks policies set --project ID --file policy.json
 *   nks policies evaluate --project ID --request request.json [--key KEY] [--file policy.json]
 *   nks policies approve --project ID --file policy.json (--key-file FILE | --typed-data) [--record 0x…] [--identity …]
 *   nks policies set --project ID --file policy.json --approval 0x… [--approval 0x…]
 *
 * `approve` is an approver's side (docs/POLICIES.md, "Approvers"): the EIP-712 approval of changing the project's
 * current record (its digest read from the API and recomputed from the record itself, or `--record` offline) to
 * the policy in the file, as computed here from the file, not taken from the server — signed with a local
 * secp256k1 key, or printed as typed data for a wallet (`eth_signTypedData_v4`).
 *
 * Files are checked here against the same schemas the API uses, so a mistake is a usage error (exit 2) that
 * names the field, before anything is sent. A request is sent as written (the enclave reads exactly that).
 */
import { privateKeyToAccount } from 'viem/accounts';
import type { z } from 'zod';
import { KEY_ID_EXPECTED, KEY_ID_RE } from '@nks/shared/identifiers';
import { APPROVAL_SIGNATURE_RE, policiesDigest, policyChangeTypedData, policyChangeTypedDataForWallet } from '@nks/shared/policy/approval';
import type { LimitOutcome, PolicyDecision, RuleOutcome } from '@nks/shared/policy/decision';
import { PoliciesSchema, type Condition, type Limit, type Policies, type PoliciesInput, type Rule } from '@nks/shared/policy/schema';
import { hex, recordDigest } from '@nks/shared/records';
import { describeIssues } from '@nks/shared/schema';
import { SignRequestSchema, type SignRequestInput } from '@nks/shared/signing/schema';
import type { PoliciesView } from '../sdk';
import { VerificationError, verifyPolicies } from '../verify';
import { clientFor, connectionOptions, parse, readInput, readJsonInput, UsageError } from './context';
import { fields, print } from './output';
import { readIdentity } from './verify-commands';

const USAGE = 'usage: nks policies get|set|evaluate|approve --project ID ... (signing policies; the KMS key policy is "nks policy")';

/** A JSON file checked against `schema`: a usage error naming the field otherwise. */
function readChecked<S extends z.ZodType>(file: string, schema: S, what: string): { sent: unknown; parsed: z.output<S> } {
  const sent = readJsonInput(file);
  const res = schema.safeParse(sent);
  if (!res.success) throw new UsageError(`${file} is not ${what}: ${describeIssues(res.error, file)}`);
  return { sent, parsed: res.data };
}

const LIST_SHOWN = 4;
const list = (values: ReadonlyArray<string | number>) =>
  values.length <= LIST_SHOWN ? values.join(', ') : `${values.slice(0, LIST_SHOWN).join(', ')}, … (${values.length} in all)`;

/** A condition in words: each field that must hold, or "every request". */
export function describeCondition(when: Condition | undefined): string {
  const parts: string[] = [];
  const inList = (name: string, values: ReadonlyArray<string | number> | undefined) => {
    if (values) parts.push(`${name} in [${list(values)}]`);
  };
  if (!when) return 'every request';
  inList('type', when.type);
  inList('chainId', when.chainId);
  inList('to', when.to);
  if (when.maxValue !== undefined) parts.push(`value ≤ ${when.maxValue} wei`);
  inList('selector', when.selector);
  if (when.erc20) {
    inList('erc20.function', when.erc20.function);
    inList('erc20.recipient', when.erc20.recipient);
    if (when.erc20.maxAmount !== undefined) parts.push(`erc20.amount ≤ ${when.erc20.maxAmount}`);
    if (Object.keys(when.erc20).length === 0) parts.push('an ERC-20 transfer or approve');
  }
  if (when.typedData) {
    inList('typedData.name', when.typedData.name);
    inList('typedData.verifyingContract', when.typedData.verifyingContract);
    inList('typedData.primaryType', when.typedData.primaryType);
    if (Object.keys(when.typedData).length === 0) parts.push('typed data');
  }
  if (when.userOperation) {
    inList('userOperation.sender', when.userOperation.sender);
    inList('userOperation.entryPoint', when.userOperation.entryPoint);
    inList('userOperation.targets', when.userOperation.targets);
    if (Object.keys(when.userOperation).length === 0) parts.push('a user operation');
  }
  inList('delegate', when.delegate);
  if (when.maxGasPrice !== undefined) parts.push(`gasPrice ≤ ${when.maxGasPrice} wei`);
  return parts.length ? parts.join(', ') : 'every request';
}

const ruleLine = (r: Rule, i: number) => `  ${i + 1}. ${r.effect.padEnd(5)} "${r.name}" when ${describeCondition(r.when)}`;
const limitLine = (l: Limit) => {
  const max = [
    ...(l.maxCount !== undefined ? [`${l.maxCount} signature(s)`] : []),
    ...(l.maxValue !== undefined ? [`${l.maxValue} wei`] : []),
  ].join(' and ');
  return `  "${l.name}": at most ${max} per ${l.scope} per ${l.window}${l.when ? `, counting ${describeCondition(l.when)}` : ''}`;
};

/** A policy for people: rules in order (deny wins, then the first allow), then limits. */
export function describePolicies(p: Policies): string {
  if (p.rules.length === 0 && p.limits.length === 0 && !p.approvers) return 'no policies: every request the project allows is signed';
  return [
    ...(p.approvers
      ? [`approvers: ${p.approvers.threshold} of [${p.approvers.addresses.join(', ')}] must approve a change of these policies`]
      : []),
    p.rules.length
      ? `rules (${p.rules.length}; a matching deny rule refuses, else a matching allow rule allows, else refused):`
      : 'rules: none (only the limits apply)',
    ...p.rules.map(ruleLine),
    p.limits.length ? `limits (${p.limits.length}):` : 'limits: none',
    ...p.limits.map(limitLine),
  ].join('\n');
}

const ruleOutcome = (r: RuleOutcome) => `  ${r.effect.padEnd(5)} "${r.name}": ${r.matched ? 'matches' : `no match: ${r.failed ?? '?'}`}`;
const limitOutcome = (l: LimitOutcome) => {
  const usage = [
    ...(l.count ? [`count ${l.count.used}/${l.count.max}`] : []),
    ...(l.value ? [`value ${l.value.used}/${l.value.max} wei`] : []),
  ].join(', ');
  const state = !l.applies ? 'does not apply' : l.exceeded ? `EXCEEDED: ${l.exceeded}` : 'within';
  return `  "${l.name}" (per ${l.scope}, ${l.window}): ${state}${usage ? ` (${usage} used before this request)` : ''}`;
};

/** A decision for people: the verdict and why, then every rule's and limit's outcome. */
export function describeDecision(d: PolicyDecision): string {
  const by = d.limit !== null ? `limit "${d.limit}"` : d.rule !== null ? `rule "${d.rule}"` : null;
  return [
    `${d.allowed ? 'ALLOWED' : 'DENIED'}${by ? ` by ${by}` : ''}: ${d.reason}`,
    ...(d.rules.length ? ['rules:', ...d.rules.map(ruleOutcome)] : []),
    ...(d.limits.length ? ['limits:', ...d.limits.map(limitOutcome)] : []),
  ].join('\n');
}

const viewText = (v: PoliciesView, verified?: string[]) =>
  [
    fields([
      ['projectId', v.projectId],
      ['seq', v.seq],
      ['recordSha256', v.recordSha256],
    ]),
    ...(verified ? verified.map((c) => `  ok  ${c}`) : []),
    describePolicies(v.policies),
  ].join('\n');

const needProject = (project: string | undefined): string => {
  if (!project) throw new UsageError('--project is required (the project id, p_… or default)');
  return project;
};

const RECORD_DIGEST_RE = /^0x[0-9a-fA-F]{64}$/;

/** A secp256k1 private key from a file (32 bytes as hex, 0x optional); the key itself never appears in an error. */
function readPrivateKey(file: string) {
  const text = readInput(file).toString('utf8').trim();
  const key = (text.startsWith('0x') ? text : `0x${text}`) as `0x${string}`;
  if (!/^0x[0-9a-fA-F]{64}$/.test(key)) throw new UsageError(`${file} is not a secp256k1 private key (32 bytes as hex, 0x optional)`);
  try {
    return privateKeyToAccount(key);
  } catch (err) {
    throw new UsageError(`${file} is not a valid secp256k1 private key (out of range)`, { cause: err });
  }
}

/** The project's current record digest and approvers: read from the API (checked against the record it sends), or `--record`. */
async function currentRecord(
  values: Parameters<typeof clientFor>[0] & { record?: string; identity?: string },
  projectId: string,
): Promise<{ recordSha256: `0x${string}`; approvers: string[] | null }> {
  if (values.record !== undefined) {
    if (!RECORD_DIGEST_RE.test(values.record))
      throw new UsageError(`--record ${values.record}: expected a record digest (0x and 64 hex digits)`);
    return { recordSha256: values.record.toLowerCase() as `0x${string}`, approvers: null };
  }
  const view = await clientFor(values).getPolicies(projectId);
  if (values.identity !== undefined) verifyPolicies(view, { identityPublicKey: readIdentity(values.identity).publicKey, projectId });
  const recordSha256 = hex(recordDigest(Buffer.from(view.record.record, 'base64'))) as `0x${string}`;
  if (view.projectId !== projectId || recordSha256 !== view.recordSha256)
    throw new VerificationError('VIEW_MISMATCH', "the API's answer names another project or record than the one it sends: not approved");
  return { recordSha256, approvers: view.policies.approvers?.addresses ?? null };
}

export async function policiesCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'get': {
      const { values } = parse(rest, { ...connectionOptions, project: { type: 'string' }, identity: { type: 'string' } });
      const projectId = needProject(values.project);
      const identity = values.identity !== undefined ? readIdentity(values.identity) : undefined;
      const view = await clientFor(values).getPolicies(projectId);
      let checks: string[] | undefined;
      if (identity) {
        try {
          checks = verifyPolicies(view, { identityPublicKey: identity.publicKey, projectId }).checks;
        } catch (err) {
          if (!(err instanceof VerificationError)) throw err;
          print(
            { valid: false, code: err.code, message: err.message },
            values.json ?? false,
            () => `INVALID policies: ${err.code}: ${err.message}`,
          );
          return 1;
        }
      }
      print(checks ? { ...view, verified: checks } : view, values.json ?? false, () => viewText(view, checks));
      return 0;
    }
    case 'set': {
      const { values } = parse(rest, {
        ...connectionOptions,
        project: { type: 'string' },
        file: { type: 'string' },
        approval: { type: 'string', multiple: true },
      });
      const projectId = needProject(values.project);
      if (!values.file)
        throw new UsageError('--file is required: the whole policy as JSON ({"rules": [...], "limits": [...]}; {} removes it)');
      const { parsed } = readChecked(values.file, PoliciesSchema, 'a policy');
      const approvals = values.approval ?? [];
      for (const a of approvals)
        if (!APPROVAL_SIGNATURE_RE.test(a)) throw new UsageError(`--approval ${a}: expected a 65-byte signature (0x and 130 hex digits)`);
      const view = await clientFor(values).setPolicies(projectId, parsed, approvals.length ? { approvals } : {});
      print(view, values.json ?? false, () => `Set the signing policies of project ${view.projectId}\n${viewText(view)}`);
      return 0;
    }
    case 'evaluate': {
      const { values } = parse(rest, {
        ...connectionOptions,
        project: { type: 'string' },
        request: { type: 'string' },
        key: { type: 'string' },
        file: { type: 'string' },
      });
      const projectId = needProject(values.project);
      if (!values.request) throw new UsageError('--request is required: a sign request as JSON (what POST /v1/keys/{keyId}/sign takes)');
      if (values.key !== undefined && !KEY_ID_RE.test(values.key)) throw new UsageError(`--key ${values.key}: ${KEY_ID_EXPECTED}`);
      const request = readChecked(values.request, SignRequestSchema, 'a sign request').sent as SignRequestInput;
      const policies = values.file ? (readChecked(values.file, PoliciesSchema, 'a policy').parsed as PoliciesInput) : undefined;
      const decision = await clientFor(values).evaluatePolicy(projectId, {
        request,
        ...(values.key !== undefined ? { keyId: values.key } : {}),
        ...(policies ? { policies } : {}),
      });
      print(decision, values.json ?? false, () => describeDecision(decision));
      return 0;
    }
    case 'approve': {
      const { values } = parse(rest, {
        ...connectionOptions,
        project: { type: 'string' },
        file: { type: 'string' },
        'key-file': { type: 'string' },
        'typed-data': { type: 'boolean' },
        record: { type: 'string' },
        identity: { type: 'string' },
      });
      const projectId = needProject(values.project);
      if (!values.file) throw new UsageError('--file is required: the whole policy to approve, as JSON (what "nks policies set" sends)');
      if ((values['key-file'] === undefined) === (values['typed-data'] !== true))
        throw new UsageError('give either --key-file FILE (sign here) or --typed-data (print the typed data for a wallet)');
      const { parsed } = readChecked(values.file, PoliciesSchema, 'a policy');
      const account = values['key-file'] !== undefined ? readPrivateKey(values['key-file']) : undefined;
      const current = await currentRecord(values, projectId);
      if (!account) {
        print(policyChangeTypedDataForWallet(projectId, current.recordSha256, parsed), true, () => '');
        return 0;
      }
      const signature = await account.signTypedData(policyChangeTypedData(projectId, current.recordSha256, parsed));
      const answer = {
        projectId,
        recordSha256: current.recordSha256,
        policiesSha256: policiesDigest(parsed),
        approver: account.address,
        signature,
      };
      if (current.approvers && !current.approvers.includes(account.address))
        process.stderr.write(
          `nks: warning: ${account.address} is not one of this project's approvers: the enclave will not count this approval\n`,
        );
      print(answer, values.json ?? false, () =>
        [
          `Approved the change of project ${projectId} from record ${current.recordSha256} to:`,
          describePolicies(parsed),
          fields([
            ['approver', account.address],
            ['signature', signature],
          ]),
        ].join('\n'),
      );
      return 0;
    }
    default:
      throw new UsageError(USAGE);
  }
}
