import { evaluatePolicy, parsePolicy, type RequestContext } from '../src/kms/policy';

const ACCOUNT = '111122223333';
const ROLE = `arn:aws:iam::${ACCOUNT}:role/parent`;
const KEY = `arn:aws:kms:us-east-1:${ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab`;
const ctx = (over: Partial<RequestContext> = {}): RequestContext => ({
  action: 'kms:Decrypt',
  principalArn: ROLE,
  account: ACCOUNT,
  keyArn: KEY,
  values: {},
  ...over,
});
const policy = (...Statement: object[]) => parsePolicy(JSON.stringify({ Version: '2012-10-17', Statement }));
const allow = (extra: object = {}) => ({ Effect: 'Allow', Principal: { AWS: ROLE }, Action: 'kms:Decrypt', Resource: '*', ...extra });

describe('key policy evaluation', () => {
  it('allows a matching statement and denies implicitly otherwise', () => {
    const p = policy(allow());
    expect(evaluatePolicy(p, ctx()).allowed).toBe(true);
    expect(evaluatePolicy(p, ctx({ action: 'kms:Encrypt' }))).toEqual({
      allowed: false,
      effect: 'ImplicitDeny',
      reason: 'no statement in the key policy allows it',
    });
    expect(evaluatePolicy(p, ctx({ principalArn: `arn:aws:iam::${ACCOUNT}:role/other` })).allowed).toBe(false);
  });

  it('lets an explicit Deny win over any Allow', () => {
    const p = policy(allow(), { Sid: 'NoDecrypt', Effect: 'Deny', Principal: '*', Action: 'kms:*', Resource: '*' });
    expect(evaluatePolicy(p, ctx())).toEqual({
      allowed: false,
      effect: 'ExplicitDeny',
      reason: 'explicitly denied by statement NoDecrypt',
    });
    // Whatever the order of the statements.
    const denyFirst = policy({ Sid: 'NoDecrypt', Effect: 'Deny', Principal: { AWS: '*' }, Action: 'kms:Decrypt', Resource: '*' }, allow());
    expect(evaluatePolicy(denyFirst, ctx()).effect).toBe('ExplicitDeny');
    expect(evaluatePolicy(denyFirst, ctx({ action: 'kms:Encrypt' })).effect).toBe('ImplicitDeny'); // the Deny names Decrypt only
  });

  it('matches {"AWS": "*"} as every AWS principal, and kms:ReEncrypt* as both ReEncrypt actions only', () => {
    const p = policy(
      { Effect: 'Allow', Principal: { AWS: ROLE }, Action: 'kms:*', Resource: '*' },
      { Sid: 'DenyReEncrypt', Effect: 'Deny', Principal: { AWS: '*' }, Action: 'kms:ReEncrypt*', Resource: '*' },
    );
    for (const principalArn of [ROLE, `arn:aws:iam::${ACCOUNT}:user/alice`, 'arn:aws:iam::999999999999:role/elsewhere']) {
      for (const action of ['kms:ReEncryptFrom', 'kms:ReEncryptTo', 'KMS:reencryptfrom']) {
        expect(evaluatePolicy(p, ctx({ principalArn, action }))).toEqual({
          allowed: false,
          effect: 'ExplicitDeny',
          reason: 'explicitly denied by statement DenyReEncrypt',
        });
      }
    }
    expect(evaluatePolicy(p, ctx({ action: 'kms:Decrypt' })).allowed).toBe(true);
    expect(evaluatePolicy(p, ctx({ action: 'kms:Re' })).allowed).toBe(true); // a prefix of the pattern is not a match
  });

  it('matches an assumed-role session against its role (any path), not against another role', () => {
    const session = `arn:aws:sts::${ACCOUNT}:assumed-role/parent/i-0123456789abcdef0`;
    expect(evaluatePolicy(policy(allow()), ctx({ principalArn: session })).allowed).toBe(true);
    expect(
      evaluatePolicy(policy(allow({ Principal: { AWS: `arn:aws:iam::${ACCOUNT}:role/ops/parent` } })), ctx({ principalArn: session }))
        .allowed,
    ).toBe(true);
    expect(
      evaluatePolicy(policy(allow({ Principal: { AWS: `arn:aws:iam::${ACCOUNT}:role/parent2` } })), ctx({ principalArn: session })).allowed,
    ).toBe(false);
    expect(
      evaluatePolicy(policy(allow({ Principal: { AWS: 'arn:aws:iam::999999999999:role/parent' } })), ctx({ principalArn: session }))
        .allowed,
    ).toBe(false);
  });

  it('evaluates Bool over kms:BypassPolicyLockoutSafetyCheck only when the request carries it', () => {
    const p = policy(
      { Effect: 'Allow', Principal: { AWS: ROLE }, Action: 'kms:PutKeyPolicy', Resource: '*' },
      {
        Sid: 'NoBypass',
        Effect: 'Deny',
        Principal: { AWS: '*' },
        Action: 'kms:PutKeyPolicy',
        Resource: '*',
        Condition: { Bool: { 'kms:BypassPolicyLockoutSafetyCheck': true } },
      },
    );
    const put = (values: Record<string, string>) => evaluatePolicy(p, ctx({ action: 'kms:PutKeyPolicy', values })).effect;
    expect(put({})).toBe('Allow');
    expect(put({ 'kms:BypassPolicyLockoutSafetyCheck': 'false' })).toBe('Allow');
    expect(put({ 'kms:BypassPolicyLockoutSafetyCheck': 'true' })).toBe('ExplicitDeny');
  });

  it('matches action wildcards case-insensitively, NotAction, resources and account principals', () => {
    expect(evaluatePolicy(policy(allow({ Action: 'KMS:Decr*' })), ctx()).allowed).toBe(true);
    expect(evaluatePolicy(policy(allow({ Action: undefined, NotAction: 'kms:Encrypt' })), ctx()).allowed).toBe(true);
    expect(evaluatePolicy(policy(allow({ Action: undefined, NotAction: 'kms:Decrypt' })), ctx()).allowed).toBe(false);
    expect(evaluatePolicy(policy(allow({ Resource: KEY })), ctx()).allowed).toBe(true);
    expect(evaluatePolicy(policy(allow({ Resource: 'arn:aws:kms:*:*:key/other' })), ctx()).allowed).toBe(false);
    expect(evaluatePolicy(policy(allow({ Principal: { AWS: `arn:aws:iam::${ACCOUNT}:root` } })), ctx()).allowed).toBe(true);
    expect(evaluatePolicy(policy(allow({ Principal: { AWS: 'arn:aws:iam::999999999999:root' } })), ctx()).allowed).toBe(false);
  });

  it('requires attestation values when the statement names them (absent keys fail positive operators)', () => {
    const pcr0 = 'ab'.repeat(48);
    const p = policy(
      allow({
        Condition: {
          StringEqualsIgnoreCase: { 'kms:RecipientAttestation:ImageSha384': pcr0, 'kms:RecipientAttestation:PCR3': 'cd'.repeat(48) },
        },
      }),
    );
    expect(evaluatePolicy(p, ctx()).allowed).toBe(false);
    const attested = { 'kms:RecipientAttestation:ImageSha384': pcr0.toUpperCase(), 'kms:RecipientAttestation:PCR3': 'cd'.repeat(48) };
    expect(evaluatePolicy(p, ctx({ values: attested })).allowed).toBe(true);
    expect(evaluatePolicy(p, ctx({ values: { ...attested, 'kms:RecipientAttestation:PCR3': 'ce'.repeat(48) } })).allowed).toBe(false);
    // Case-sensitive operator: an upper-case value no longer matches.
    const strict = policy(allow({ Condition: { StringEquals: { 'KMS:RECIPIENTATTESTATION:IMAGESHA384': pcr0 } } }));
    expect(evaluatePolicy(strict, ctx({ values: attested })).allowed).toBe(false);
    expect(evaluatePolicy(strict, ctx({ values: { 'kms:RecipientAttestation:ImageSha384': pcr0 } })).allowed).toBe(true);
  });

  it('evaluates Null, negated operators, and set qualifiers over encryption context keys', () => {
    const needsDoc = policy(allow({ Condition: { Null: { 'kms:RecipientAttestation:ImageSha384': 'false' } } }));
    expect(evaluatePolicy(needsDoc, ctx()).allowed).toBe(false);
    expect(evaluatePolicy(needsDoc, ctx({ values: { 'kms:RecipientAttestation:ImageSha384': 'x' } })).allowed).toBe(true);

    const notOther = policy(allow({ Condition: { StringNotEquals: { 'kms:EncryptionContext:wallet': 'w2' } } }));
    expect(evaluatePolicy(notOther, ctx()).allowed).toBe(true); // absent key: negated operator holds
    expect(evaluatePolicy(notOther, ctx({ values: { 'kms:EncryptionContext:wallet': 'w2' } })).allowed).toBe(false);

    const onlyWallet = policy(allow({ Condition: { 'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': ['wallet'] } } }));
    expect(evaluatePolicy(onlyWallet, ctx({ values: { 'kms:EncryptionContextKeys': ['wallet'] } })).allowed).toBe(true);
    expect(evaluatePolicy(onlyWallet, ctx({ values: { 'kms:EncryptionContextKeys': ['wallet', 'x'] } })).allowed).toBe(false);
    const anyWallet = policy(allow({ Condition: { 'ForAnyValue:StringLike': { 'kms:EncryptionContextKeys': 'wal*' } } }));
    expect(evaluatePolicy(anyWallet, ctx({ values: { 'kms:EncryptionContextKeys': ['x', 'wallet'] } })).allowed).toBe(true);
    expect(evaluatePolicy(anyWallet, ctx({ values: { 'kms:EncryptionContextKeys': ['x'] } })).allowed).toBe(false);
  });

  const statement = (st: Record<string, unknown>) =>
    JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Principal: '*', Action: 'a', ...st }] });
  it.each<[string, string, string, string | null]>([
    ['not JSON', '{', 'The policy is not valid JSON.', null],
    ['no Statement', JSON.stringify({ Version: '2012-10-17' }), 'The policy is malformed: Statement: Invalid input', null],
    // The statement list is a union (one statement or an array), so zod reports the whole of it, not Effect.
    ['bad Effect', statement({ Effect: 'Perhaps' }), 'The policy is malformed: Statement: Invalid input', statement({ Effect: 'Deny' })],
    [
      'Action and NotAction',
      statement({ NotAction: 'b' }),
      'The policy is malformed: Statement.0: a statement needs exactly one of Action and NotAction',
      statement({}),
    ],
    [
      'unknown operator',
      statement({ Condition: { NumericLessThan: { x: '1' } } }),
      'The policy uses an unsupported condition operator: NumericLessThan',
      statement({ Condition: { StringEquals: { x: '1' } } }),
    ],
    ['unknown field', statement({ Extra: 1 }), 'The policy is malformed: Statement.0: Unrecognized key: "Extra"', statement({})],
  ])('rejects a malformed policy: %s, naming what is wrong', (_name, text, message, fixed) => {
    expect(() => parsePolicy(text)).toThrow(expect.objectContaining({ code: 'MalformedPolicyDocumentException', message }));
    // The same policy without that one defect is accepted: the defect named is what was refused.
    if (fixed) expect(() => parsePolicy(fixed)).not.toThrow();
  });
});
