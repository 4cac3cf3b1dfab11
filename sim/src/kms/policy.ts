/**
 * Key policies in real KMS JSON, evaluated the way AWS does for the parts this project relies on: an explicit
 * Deny in any matching statement wins; then any matching Allow; else implicit deny (grants are consulted by the
 * emulator after an implicit deny, never after an explicit one). Principals (`"*"`, `{"AWS": "*"}`, ARNs,
 * account roots, and an assumed-role session matching its role), actions (with `*`/`?` wildcards, e.g.
 * `kms:ReEncrypt*`, case-insensitively), NotAction and resources are matched; conditions support the String*,
 * Null and Bool operators with ForAnyValue/ForAllValues set qualifiers, over the keys
 * `kms:RecipientAttestation:ImageSha384`, `kms:RecipientAttestation:PCR<n>`, `kms:EncryptionContext:<key>`,
 * `kms:EncryptionContextKeys`, `kms:EncryptionAlgorithm`, `kms:ReEncryptOnSameKey`,
 * `kms:BypassPolicyLockoutSafetyCheck`, the grant keys (`kms:GranteePrincipal`, `kms:GrantOperations`, ...),
 * `kms:CallerAccount` and `aws:PrincipalArn`. A key absent from the request fails every positive operator, so
 * a statement with an attestation condition never matches a request without an attestation document.
 *
 * Simplification: a principal naming the account (`arn:aws:iam::ACCOUNT:root` or `ACCOUNT`) matches any caller
 * of that account, as if IAM policies allowed it. IAM identity policies, SCPs and permission boundaries are not
 * modelled.
 */
import { z } from 'zod';
import { KmsError } from './errors';

const stringOrList = z.union([z.string(), z.array(z.string()).min(1)]);
const ConditionBlock = z.record(z.string(), z.record(z.string(), z.union([stringOrList, z.boolean()])));

const StatementSchema = z
  .object({
    Sid: z.string().optional(),
    Effect: z.enum(['Allow', 'Deny']),
    Principal: z.union([z.literal('*'), z.object({ AWS: stringOrList }).strict()]),
    Action: stringOrList.optional(),
    NotAction: stringOrList.optional(),
    Resource: stringOrList.optional(),
    Condition: ConditionBlock.optional(),
  })
  .strict()
  .refine((s) => (s.Action === undefined) !== (s.NotAction === undefined), 'a statement needs exactly one of Action and NotAction');

const PolicySchema = z
  .object({
    Version: z.enum(['2012-10-17', '2008-10-17']),
    Id: z.string().optional(),
    Statement: z.union([StatementSchema, z.array(StatementSchema).min(1)]),
  })
  .strict();

export type Statement = z.infer<typeof StatementSchema>;
export interface PolicyDocument {
  statements: Statement[];
}

const OPERATORS = new Set([
  'StringEquals',
  'StringNotEquals',
  'StringEqualsIgnoreCase',
  'StringNotEqualsIgnoreCase',
  'StringLike',
  'StringNotLike',
  'Null',
  'Bool',
]);

function splitOperator(op: string): { set?: 'ForAnyValue' | 'ForAllValues'; base: string } {
  const m = /^(ForAnyValue|ForAllValues):(.+)$/.exec(op);
  return m ? { set: m[1] as 'ForAnyValue' | 'ForAllValues', base: m[2] as string } : { base: op };
}

export function parsePolicy(text: string): PolicyDocument {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new KmsError('MalformedPolicyDocumentException', 'The policy is not valid JSON.', { cause: err });
  }
  const res = PolicySchema.safeParse(json);
  if (!res.success) {
    const issue = res.error.issues[0];
    throw new KmsError(
      'MalformedPolicyDocumentException',
      `The policy is malformed: ${issue?.path.join('.') || 'policy'}: ${issue?.message ?? 'invalid'}`,
    );
  }
  const statements = Array.isArray(res.data.Statement) ? res.data.Statement : [res.data.Statement];
  for (const s of statements) {
    for (const op of Object.keys(s.Condition ?? {})) {
      if (!OPERATORS.has(splitOperator(op).base)) {
        throw new KmsError('MalformedPolicyDocumentException', `The policy uses an unsupported condition operator: ${op}`);
      }
    }
  }
  return { statements };
}

export interface RequestContext {
  /** e.g. `kms:Decrypt`. */
  action: string;
  principalArn: string;
  account: string;
  keyArn: string;
  /** Condition keys (any case) and their values; arrays are multi-valued keys. */
  values: Record<string, string | string[]>;
}

export interface Decision {
  allowed: boolean;
  /** `ExplicitDeny` cannot be overridden by a grant; `ImplicitDeny` can. */
  effect: 'Allow' | 'ExplicitDeny' | 'ImplicitDeny';
  reason: string;
}

const list = (v: string | string[]): string[] => (Array.isArray(v) ? v : [v]);

function glob(pattern: string, value: string, ignoreCase: boolean): boolean {
  const re = new RegExp(
    `^${pattern
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
    ignoreCase ? 'i' : '',
  );
  return re.test(value);
}

/**
 * The IAM role an assumed-role session belongs to: `arn:aws:sts::A:assumed-role/NAME/session` is matched by a
 * policy naming `arn:aws:iam::A:role/NAME` (with any path), as IAM does.
 */
function sessionRole(principalArn: string): { account: string; name: string } | undefined {
  const m = /^arn:aws[a-z-]*:sts::(\d{12}):assumed-role\/([^/]+)\/.+$/.exec(principalArn);
  return m ? { account: m[1] as string, name: m[2] as string } : undefined;
}

/** Whether one principal entry of a policy (or a grant's grantee) names the caller. */
export function principalEntryMatches(entry: string, principalArn: string, account: string): boolean {
  if (entry === '*' || entry === principalArn || entry === account || entry === `arn:aws:iam::${account}:root`) return true;
  const session = sessionRole(principalArn);
  const role = /^arn:aws[a-z-]*:iam::(\d{12}):role\/(?:.*\/)?([^/]+)$/.exec(entry);
  return !!session && !!role && role[1] === session.account && role[2] === session.name;
}

function principalMatches(p: Statement['Principal'], ctx: RequestContext): boolean {
  if (p === '*') return true;
  return list(p.AWS).some((entry) => principalEntryMatches(entry, ctx.principalArn, ctx.account));
}

function actionMatches(s: Statement, action: string): boolean {
  if (s.Action !== undefined) return list(s.Action).some((a) => glob(a, action, true));
  return !list(s.NotAction as string | string[]).some((a) => glob(a, action, true));
}

function compare(base: string, actual: string, expected: string): boolean {
  switch (base) {
    case 'StringEquals':
    case 'StringNotEquals':
      return actual === expected;
    case 'StringEqualsIgnoreCase':
    case 'StringNotEqualsIgnoreCase':
      return actual.toLowerCase() === expected.toLowerCase();
    case 'StringLike':
    case 'StringNotLike':
      return glob(expected, actual, false);
    case 'Bool':
      return actual.toLowerCase() === expected.toLowerCase();
    default:
      return false;
  }
}

function conditionHolds(
  op: string,
  key: string,
  expectedRaw: string | string[] | boolean,
  values: Record<string, string | string[]>,
): boolean {
  const { set, base } = splitOperator(op);
  const expected = list(typeof expectedRaw === 'boolean' ? String(expectedRaw) : expectedRaw);
  const actual = values[key.toLowerCase()];
  if (base === 'Null') return (expected[0]?.toLowerCase() === 'true') === (actual === undefined);
  const negated = base.includes('Not');
  if (actual === undefined) return negated || set === 'ForAllValues';
  const actuals = list(actual);
  const matchesOne = (a: string) => expected.some((e) => compare(base, a, e));
  if (set === 'ForAllValues') return actuals.every((a) => (negated ? !matchesOne(a) : matchesOne(a)));
  return negated ? !actuals.some(matchesOne) : actuals.some(matchesOne);
}

function conditionsHold(s: Statement, values: Record<string, string | string[]>): boolean {
  for (const [op, block] of Object.entries(s.Condition ?? {})) {
    for (const [key, expected] of Object.entries(block)) {
      if (!conditionHolds(op, key, expected, values)) return false;
    }
  }
  return true;
}

export function evaluatePolicy(policy: PolicyDocument, ctx: RequestContext): Decision {
  const values = Object.fromEntries(Object.entries(ctx.values).map(([k, v]) => [k.toLowerCase(), v]));
  values['kms:calleraccount'] ??= ctx.account;
  values['aws:principalarn'] ??= ctx.principalArn;
  const applies = (s: Statement) =>
    principalMatches(s.Principal, ctx) &&
    actionMatches(s, ctx.action) &&
    (s.Resource === undefined || list(s.Resource).some((r) => glob(r, ctx.keyArn, false))) &&
    conditionsHold(s, values);

  // Every statement is evaluated; one matching Deny decides, whatever the order of the statements.
  const deny = policy.statements.find((s) => s.Effect === 'Deny' && applies(s));
  if (deny) return { allowed: false, effect: 'ExplicitDeny', reason: `explicitly denied by statement ${deny.Sid ?? '(no Sid)'}` };
  const allow = policy.statements.find((s) => s.Effect === 'Allow' && applies(s));
  if (allow) return { allowed: true, effect: 'Allow', reason: `allowed by statement ${allow.Sid ?? '(no Sid)'}` };
  return { allowed: false, effect: 'ImplicitDeny', reason: 'no statement in the key policy allows it' };
}

/** The policy KMS gives a key created without one: the account may do everything. */
export function defaultKeyPolicy(account: string): string {
  return JSON.stringify(
    {
      Version: '2012-10-17',
      Id: 'key-default-1',
      Statement: [
        {
          Sid: 'Enable IAM User Permissions',
          Effect: 'Allow',
          Principal: { AWS: `arn:aws:iam::${account}:root` },
          Action: 'kms:*',
          Resource: '*',
        },
      ],
    },
    null,
    2,
  );
}
