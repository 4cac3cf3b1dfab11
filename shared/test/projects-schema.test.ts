/**
 * The project settings schema (shared/src/projects-schema.ts), used by `POST /v1/projects` and the enclave's
 * `projects.create`: what review 17 found it let through (text a record cannot carry as it is, records larger
 * than anyone will verify, user claims that name no user), now refused with a message naming the problem.
 */
import { describeIssues } from '../src/schema';
import { RESERVED_USER_CLAIMS } from '../src/project-auth';
import { largestProjectRecordBytes, PROJECT_RECORD_MAX_BYTES, ProjectSettingsSchema } from '../src/projects-schema';
import { encodeRecord, MAX_RECORD_BYTES, type ProjectRecord } from '../src/records';

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
    createdAt: Date.now(),
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

  // Review 17, F4: 64 origins of ~261 characters made a 17 KB record the enclave signed, which nobody (the
  // enclave after a restart included) would ever verify.
  it("refuses settings whose record would exceed the record size limit, saying the record's size", () => {
    expect(PROJECT_RECORD_MAX_BYTES).toBe(MAX_RECORD_BYTES);
    const allowedOrigins = origins(64, 261);
    const size = largestProjectRecordBytes({
      auth: { type: 'token' },
      allowedOrigins,
      allowedRequestTypes: ['message', 'userOperation', 'typedData'],
    });
    expect(size).toBeGreaterThan(17_000);
    expect(problem({ auth: { type: 'token' }, allowedOrigins })).toBe(
      `settings.allowedOrigins: the project's record would be ${size} bytes, over the 8192 a record may have: list fewer or shorter origins`,
    );
  });

  it('takes settings up to the limit, and every record the project can ever have then fits', () => {
    // The longest origins that still fit beside the largest JWT auth, found by growing them.
    const auth = { ...JWT, issuer: 'i'.repeat(512), audience: 'a'.repeat(512), jwksUri: `https://a.example/${'x'.repeat(2030)}` };
    let len = 20;
    while (ProjectSettingsSchema.safeParse({ auth, allowedOrigins: origins(64, len + 1) }).success) len += 1;
    const settings = ProjectSettingsSchema.parse({ auth, allowedOrigins: origins(64, len) });
    expect(problem({ auth, allowedOrigins: origins(64, len + 1) })).toContain('settings.allowedOrigins: the project');
    expect(largestProjectRecordBytes(settings)).toBeLessThanOrEqual(MAX_RECORD_BYTES);
    expect(largestProjectRecordBytes(settings)).toBeGreaterThan(MAX_RECORD_BYTES - 64);
    for (const [seq, state] of [
      [0, 'active'],
      [1, 'disabled'],
      [2 ** 32, 'active'],
      [Number.MAX_SAFE_INTEGER, 'disabled'],
    ] as const) {
      expect(encodeRecord(recordOf(settings, seq, state)).length).toBeLessThanOrEqual(largestProjectRecordBytes(settings));
    }
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
