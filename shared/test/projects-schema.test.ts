/**
 * The project settings schema (shared/src/projects-schema.ts), used by `POST /v1/projects` and the enclave's
 * `projects.create`: what review 17 found it let through (text a record cannot carry as it is, records larger
 * than anyone will verify, user claims that name no user), now refused with a message naming the problem.
 */
import { describeIssues } from '../src/schema';
import { RESERVED_USER_CLAIMS } from '../src/project-auth';
import { largestProjectRecordBytes, PROJECT_RECORD_MAX_BYTES, ProjectSettingsSchema } from '../src/projects-schema';
import { decodeProjectRecord, encodeRecord, MAX_RECORD_BYTES, type ProjectRecord } from '../src/records';
import { isEmptyPolicy, PoliciesSchema } from '../src/policy/schema';

const JWT = { type: 'jwt', issuer: 'https://login.example.com', audience: 'wallet-app', jwksUri: 'https://login.example.com/jwks' };

const problem = (raw: unknown): string => {
  const res = ProjectSettingsSchema.safeParse(raw);
  if (res.success) throw new Error(`expected ${JSON.stringify(raw)} to be refused`);
  return describeIssues(res.error, 'settings');
};

/** `n` distinct origins of `len` characters each. */
const origins = (n: number, len: number): string[] =>
  Array.from({ length: n }, (_, i) => {
    const head = `https://${String(i).padStart(2, '0')}`;
    return `${head}${'o'.repeat(len - head.length - '.example'.length)}.example`;
  });

/** The project's record at `seq` in `state`, as the enclave makes it from parsed settings. */
function recordOf(settings: ReturnType<typeof ProjectSettingsSchema.parse>, seq: number, state: 'active' | 'disabled'): ProjectRecord {
  return {
    v: 1,
    kind: 'project',
    projectId: `p_${'x'.repeat(22)}`,
    projectKey: `pk_${'y'.repeat(22)}`,
    auth: settings.auth,
    allowedRequestTypes: settings.allowedRequestTypes,
    allowedOrigins: settings.allowedOrigins,
    state,
    seq,
    prev: seq === 0 ? null : `0x${'ab'.repeat(32)}`,
    createdAt: 1_764_633_600_123,
    ...(settings.policies && !isEmptyPolicy(settings.policies) ? { policies: settings.policies } : {}),
  };
}

describe('project settings schema', () => {
  // Review 17, F3: Node's UTF-8 encoder writes U+FFFD for a lone surrogate, so the signed record would name
  // another issuer than the one the enclave held in memory.
  it.each([
    ['issuer', { auth: { ...JWT, issuer: 'https://login.example.com\ud800' } }, 'settings.auth.issuer'],
    ['audience', { auth: { ...JWT, audience: '\udc00wallet' } }, 'settings.auth.audience'],
  ])('refuses a lone surrogate in the %s, saying why', (_name, raw, field) => {
    expect(problem(raw)).toBe(`${field}: expected well-formed Unicode text (a lone surrogate cannot be encoded)`);
  });

  it('takes any well-formed text as issuer and audience, outside the BMP too', () => {
    expect(
      ProjectSettingsSchema.parse({ auth: { ...JWT, issuer: 'https://login.example.com/😀', audience: 'wållet' } }).auth,
    ).toMatchObject({
      issuer: 'https://login.example.com/😀',
      audience: 'wållet',
    });
  });

  // Review 17 (informational): a user claim every user shares (iss, aud) would give all of them one key.
  it.each(RESERVED_USER_CLAIMS.map((c) => [c]))('refuses the user claim %s, naming the reserved claims', (claim) => {
    expect(problem({ auth: { ...JWT, userClaim: claim } })).toBe(
      `settings.auth.userClaim: expected a claim that names the user, not one of ${RESERVED_USER_CLAIMS.join(', ')}`,
    );
  });

  it('takes sub (the default) and other claims', () => {
    expect(ProjectSettingsSchema.parse({ auth: JWT }).auth).toMatchObject({ userClaim: 'sub' });
    for (const c of ['email', 'oid', 'https:.example.com:uid', 'ISS']) {
      expect(ProjectSettingsSchema.parse({ auth: { ...JWT, userClaim: c } }).auth).toMatchObject({ userClaim: c });
    }
  });

  /** An allow rule per 200 characters of typed-data names (distinct), `chars` characters in all: grows one by one. */
  const policyOf = (chars: number) => {
    const names = Array.from({ length: Math.floor(chars / 200) }, (_, i) => `${String(i).padStart(3, '0')}${'n'.repeat(197)}`);
    if (chars % 200 > 0) names.push(`z${'n'.repeat((chars % 200) - 1)}`);
    const rules = [];
    for (let i = 0; i < names.length; i += 256)
      rules.push({ name: `r${i}`, effect: 'allow', when: { typedData: { name: names.slice(i, i + 256) } } });
    return { rules };
  };
  const LARGEST_AUTH = { ...JWT, issuer: 'i'.repeat(512), audience: 'a'.repeat(512), jwksUri: `https://a.example/${'x'.repeat(2030)}` };

  // Review 17, F4: 64 origins of ~261 characters made a 17 KB record the enclave signed, which nobody (the
  // enclave after a restart included) would ever verify. Records are 32 KiB now, for policies: the size error
  // names the policies, the one field that can grow that far.
  it("refuses settings whose record would exceed the record size limit, naming policies and the record's size", () => {
    expect(PROJECT_RECORD_MAX_BYTES).toBe(MAX_RECORD_BYTES);
    expect(MAX_RECORD_BYTES).toBe(32_768);
    const raw = { auth: { type: 'token' }, allowedOrigins: origins(64, 261), policies: policyOf(20_000) };
    const policies = PoliciesSchema.parse(raw.policies);
    const size = largestProjectRecordBytes({ ...ProjectSettingsSchema.parse({ ...raw, policies: undefined }), policies });
    expect(size).toBeGreaterThan(MAX_RECORD_BYTES);
    expect(problem(raw)).toBe(
      `settings.policies: the project's record would be ${size} bytes, over the 32768 a record may have: write fewer or shorter rules, limits or lists`,
    );
  });

  it('takes the longest origins beside the largest JWT auth: without policies, every record fits', () => {
    const settings = ProjectSettingsSchema.parse({ auth: LARGEST_AUTH, allowedOrigins: origins(64, 261) });
    expect(largestProjectRecordBytes(settings)).toBeGreaterThan(17_000);
    expect(largestProjectRecordBytes(settings)).toBeLessThanOrEqual(MAX_RECORD_BYTES);
    expect(decodeProjectRecord(encodeRecord(recordOf(settings, 1, 'disabled')))).toEqual(recordOf(settings, 1, 'disabled'));
  });

  it('takes settings with a policy up to the limit, and every record the project can ever have then fits', () => {
    // The largest policy that still fits beside the largest JWT auth and origins, found by bisection.
    const raw = (chars: number) => ({ auth: LARGEST_AUTH, allowedOrigins: origins(64, 261), policies: policyOf(chars) });
    let chars = 1;
    for (let hi = 32_768; hi - chars > 1;) {
      const mid = (chars + hi) >> 1;
      if (ProjectSettingsSchema.safeParse(raw(mid)).success) chars = mid;
      else hi = mid;
    }
    const settings = ProjectSettingsSchema.parse(raw(chars));
    expect(problem(raw(chars + 1))).toContain("settings.policies: the project's record would be");
    expect(largestProjectRecordBytes(settings)).toBeLessThanOrEqual(MAX_RECORD_BYTES);
    expect(largestProjectRecordBytes(settings)).toBeGreaterThan(MAX_RECORD_BYTES - 8);
    for (const [seq, state] of [
      [0, 'active'],
      [1, 'disabled'],
      [2 ** 32, 'active'],
      [Number.MAX_SAFE_INTEGER, 'disabled'],
    ] as const) {
      const record = recordOf(settings, seq, state);
      expect(encodeRecord(record).length).toBeLessThanOrEqual(largestProjectRecordBytes(settings));
      expect(decodeProjectRecord(encodeRecord(record))).toEqual(record);
    }
  });

  it('takes no policies, or an empty one, as a project without policies', () => {
    const none = ProjectSettingsSchema.parse({ auth: { type: 'token' } });
    const empty = ProjectSettingsSchema.parse({ auth: { type: 'token' }, policies: {} });
    expect(empty.policies).toEqual({ rules: [], limits: [] });
    expect(largestProjectRecordBytes(empty)).toBe(largestProjectRecordBytes(none));
    expect(encodeRecord(recordOf(empty, 0, 'active'))).toEqual(encodeRecord(recordOf(none, 0, 'active')));
  });

  it('refuses an invalid policy at creation, naming the field', () => {
    expect(problem({ auth: { type: 'token' }, policies: { rules: [{ name: 'a', effect: 'allow', when: { chain: [1] } }] } })).toBe(
      'settings.policies.rules[0].when: unknown field(s) "chain"',
    );
  });

  it('does not measure settings that are invalid field by field (their own issues are reported)', () => {
    expect(problem({ auth: { ...JWT, issuer: '\ud800' }, allowedOrigins: origins(64, 261) })).toBe(
      'settings.auth.issuer: expected well-formed Unicode text (a lone surrogate cannot be encoded)',
    );
  });
});

describe('allowed origins', () => {
  // Review 17b: origins no browser sends were accepted, and the app's own page was then refused without a word.
  it.each(['https://App.Example.com', 'https://app.example.com:443', 'http://app.example.com:80'])(
    'refuses %s, which no browser sends',
    (origin) => {
      expect(problem({ auth: { type: 'token' }, allowedOrigins: [origin] })).toBe(
        'settings.allowedOrigins[0]: expected the origin as a browser sends it: lower-case host, no default port (:443 for https, :80 for http)',
      );
    },
  );

  it.each(['https://app.example.com', 'https://app.example.com:8443', 'http://localhost:3000', 'http://127.0.0.1:5173'])(
    'takes %s',
    (origin) => {
      expect(ProjectSettingsSchema.parse({ auth: { type: 'token' }, allowedOrigins: [origin] }).allowedOrigins).toEqual([origin]);
    },
  );

  it.each(['*', 'null', 'https://app.example.com/', 'https://app.example.com/path'])('refuses %s', (origin) => {
    expect(problem({ auth: { type: 'token' }, allowedOrigins: [origin] })).toContain('settings.allowedOrigins[0]: expected an origin');
  });
});
