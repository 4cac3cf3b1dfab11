/**
 * The verification commands: `nks keys verify`, `nks identity`, `nks genesis verify`. Each prints what it checked
 * and exits 0, or prints INVALID with the reason and exits 1 (2 for usage). The checks themselves are the SDK's
 * (client/src/verify.ts); nothing here trusts what the server says.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { IDENTITY_PUBLIC_KEY_RE } from '@nks/shared/identifiers';
import { normalizePcr, PolicyInputError } from '../policy';
import {
  VerificationError,
  verifyGenesis,
  verifyIdentity,
  verifyKey,
  type ExpectedKey,
  type GenesisOutput,
  type IdentitySection,
  type KeyViewForVerification,
} from '../verify';
import { KeystoreClient } from '../sdk';
import { connectionOptions, parse, readJsonInput, readPem, resolveApiTarget, UsageError, type ApiTarget } from './context';
import { fields, print } from './output';

function pcr(value: string, flag: string): string {
  try {
    return normalizePcr(value, flag);
  } catch (err) {
    if (err instanceof PolicyInputError) throw new UsageError(err.message, { cause: err });
    throw err;
  }
}

function hexBytes(value: string, flag: string): Buffer {
  if (!/^(0x)?([0-9a-fA-F]{2}){1,512}$/.test(value)) throw new UsageError(`${flag} takes 1-512 bytes of hex`);
  return Buffer.from(value.replace(/^0x/, ''), 'hex');
}

/** `--identity`: the public key itself, or a file that names it (genesis output, identity.json, enclave configuration). */
export function readIdentity(value: string): { publicKey: string; source: string } {
  if (value.startsWith('0x')) {
    if (!IDENTITY_PUBLIC_KEY_RE.test(value)) throw new UsageError('--identity takes 0x and 64 lower-case hex digits, or a file');
    return { publicKey: value, source: 'given' };
  }
  const json = readJsonInput(value) as { publicKey?: unknown; identity?: { publicKey?: unknown } } | null;
  const publicKey = json?.identity?.publicKey ?? json?.publicKey;
  if (typeof publicKey !== 'string' || !IDENTITY_PUBLIC_KEY_RE.test(publicKey))
    throw new UsageError(`${value} names no identity public key (publicKey or identity.publicKey, 0x and 64 hex digits)`);
  return { publicKey, source: value };
}

function invalid(what: string, err: unknown, json: boolean): number {
  if (!(err instanceof VerificationError)) throw err;
  print(
    { valid: false, code: err.code, attestationCode: err.attestationCode, message: err.message },
    json,
    () => `INVALID ${what}: ${err.code}: ${err.message}`,
  );
  return 1;
}

/** What a verified document says, for --json output. */
const documentSummary = (b: { document: { timestamp: number; pcrs: Map<number, Buffer>; moduleId: string }; rootFingerprint: string }) => ({
  moduleId: b.document.moduleId,
  timestamp: new Date(b.document.timestamp).toISOString(),
  pcr0: b.document.pcrs.get(0)?.toString('hex'),
  rootFingerprint: b.rootFingerprint,
});

const clientOf = (target: ApiTarget) => new KeystoreClient({ url: target.url, token: target.token });

const checklist = (checks: string[]) => checks.map((c) => `  ok  ${c}`).join('\n');

/**
 * `nks keys verify <keyId> --identity 0x…|FILE --pcr0 HEX... [--external-id ID] [--subject S] [--project P] [--root PEM]
 * [--require-birth] [--view FILE]`. The key's signed record must be of `<keyId>` (and of the external id, subject and
 * project when given): the server answers what it likes to `GET /v1/keys/<keyId>`, the genuine view of another key
 * included.
 */
export async function keysVerifyCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      ...connectionOptions,
      identity: { type: 'string' },
      pcr0: { type: 'string', multiple: true },
      root: { type: 'string' },
      'require-birth': { type: 'boolean' },
      view: { type: 'string' },
      'external-id': { type: 'string' },
      subject: { type: 'string' },
      project: { type: 'string' },
    },
    ['keyId'],
  );
  const keyId = positionals[0] as string;
  const expected: ExpectedKey = {
    keyId,
    ...(values['external-id'] !== undefined ? { externalId: values['external-id'] } : {}),
    ...(values.subject !== undefined ? { subject: values.subject } : {}),
    ...(values.project !== undefined ? { projectId: values.project } : {}),
  };
  // The dev stack's own identity, PCR0 and root are defaults only when the key comes from the dev stack.
  const target = values.view ? undefined : resolveApiTarget(values);
  const identityArg = values.identity ?? target?.dev?.identity;
  if (!identityArg)
    throw new UsageError(
      '--identity is required: the keystore identity public key (0x…) you pinned, or the genesis/identity file it is in',
    );
  const identity = readIdentity(identityArg);
  const pcr0s = (values.pcr0 ?? (target?.dev?.pcr0 ? [target.dev.pcr0] : [])).map((p) => pcr(p, '--pcr0'));
  if (pcr0s.length === 0)
    throw new UsageError('--pcr0 is required: the PCR0 of each image you approve (a birth attestation must show one)');
  const rootFile = values.root ?? target?.dev?.rootFile;
  const root = rootFile ? readPem(rootFile, '--root') : undefined;

  let view: KeyViewForVerification;
  if (values.view) {
    view = readJsonInput(values.view) as KeyViewForVerification;
    if (view?.keyId !== keyId) throw new UsageError(`${values.view} is the view of key ${String(view?.keyId)}, not ${keyId}`);
  } else {
    view = await clientOf(target as ApiTarget).getKey(keyId);
  }
  const json = values.json ?? false;
  try {
    const v = verifyKey(view, {
      identityPublicKey: identity.publicKey,
      expected,
      expectedPcrs: { 0: pcr0s },
      ...(root !== undefined ? { rootCertificate: root } : {}),
      requireBirthAttestation: values['require-birth'] ?? false,
    });
    const r = v.record;
    print(
      {
        valid: true,
        identity: identity.publicKey,
        record: r,
        recordDigest: v.recordDigest,
        birth: v.birth ? documentSummary(v.birth) : null,
        checks: v.checks,
      },
      json,
      () =>
        `VALID key ${r.keyId}\n${checklist(v.checks)}\n${fields([
          ['identity', identity.publicKey],
          ['keyId', r.keyId],
          ['address', r.address],
          ['project', r.projectId],
          ['subject', r.subject],
          ['state', r.state],
          ['disabled', r.disabled ? 'yes' : 'no'],
          ['origin', r.origin],
          ['seq', r.seq],
          ['recordCreatedAt', new Date(r.createdAt).toISOString()],
        ])}`,
    );
    return 0;
  } catch (err) {
    return invalid(`key ${keyId}`, err, json);
  }
}

/** `nks identity [--pcr0 HEX]... [--identity 0x…|FILE] [--genesis-pcr0 HEX] [--root PEM] [--max-age S]` */
export async function identityCommand(args: string[]): Promise<number> {
  const { values } = parse(args, {
    ...connectionOptions,
    pcr0: { type: 'string', multiple: true },
    identity: { type: 'string' },
    'genesis-pcr0': { type: 'string' },
    root: { type: 'string' },
    'max-age': { type: 'string' },
  });
  const target = resolveApiTarget(values, process.env, { tokenOptional: true });
  const pcr0s = (values.pcr0 ?? (target.dev?.pcr0 ? [target.dev.pcr0] : [])).map((p) => pcr(p, '--pcr0'));
  if (pcr0s.length === 0)
    throw new UsageError('--pcr0 is required: the PCR0 of each image you approve (without it the document proves nothing about the code)');
  const pinned = values.identity ? readIdentity(values.identity).publicKey : target.dev?.identity;
  const rootFile = values.root ?? target.dev?.rootFile;
  const root = rootFile ? readPem(rootFile, '--root') : undefined;
  let maxAgeMs: number | undefined;
  if (values['max-age'] !== undefined) {
    const s = Number(values['max-age']);
    if (!Number.isFinite(s) || s <= 0) throw new UsageError('--max-age takes a number of seconds');
    maxAgeMs = s * 1000;
  }
  const genesisPcr0 = values['genesis-pcr0'] !== undefined ? pcr(values['genesis-pcr0'], '--genesis-pcr0') : undefined;

  const nonce = `0x${randomBytes(16).toString('hex')}` as const;
  const answer = await clientOf(target).identity(nonce);
  const json = values.json ?? false;
  try {
    const v = verifyIdentity(answer, {
      nonce,
      expectedPcrs: { 0: pcr0s },
      ...(pinned !== undefined ? { identityPublicKey: pinned } : {}),
      ...(genesisPcr0 !== undefined ? { genesisPcr0 } : {}),
      ...(root !== undefined ? { rootCertificate: root } : {}),
      ...(maxAgeMs !== undefined ? { maxAgeMs } : {}),
    });
    const unchecked = [
      ...(pinned === undefined ? ['the public key is not compared with a pinned one (--identity)'] : []),
      ...(genesisPcr0 === undefined ? ['the genesis document is not checked (--genesis-pcr0)'] : []),
    ];
    print(
      {
        valid: true,
        publicKey: v.publicKey,
        nonce,
        attestation: documentSummary(v.attestation),
        genesis: v.genesis ? documentSummary(v.genesis) : null,
        checks: v.checks,
        notChecked: unchecked,
      },
      json,
      () =>
        `VALID keystore identity ${v.publicKey}\n${checklist(v.checks)}${unchecked.map((u) => `\n  --  ${u}`).join('')}\n${fields([
          ['nonce', nonce],
          ['PCR0', v.attestation.document.pcrs.get(0)?.toString('hex')],
          ['root sha256', v.attestation.rootFingerprint],
        ])}`,
    );
    return 0;
  } catch (err) {
    return invalid('keystore identity', err, json);
  }
}

/** `nks genesis verify <genesis.json> --pcr0 HEX --nonce HEX [--root PEM] [--out FILE]` */
export function genesisCommand(args: string[]): number {
  const [sub, ...rest] = args;
  if (sub !== 'verify') throw new UsageError('usage: nks genesis verify <genesis.json> --pcr0 HEX --nonce HEX [--root PEM] [--out FILE]');
  const { values, positionals } = parse(
    rest,
    { pcr0: { type: 'string' }, nonce: { type: 'string' }, root: { type: 'string' }, out: { type: 'string' }, json: { type: 'boolean' } },
    ['genesis.json'],
  );
  if (!values.pcr0) throw new UsageError("--pcr0 is required: the genesis image's PCR0, from measurements you reproduced yourself");
  if (!values.nonce) throw new UsageError('--nonce is required: the nonce you gave the genesis run');
  const pcr0 = pcr(values.pcr0, '--pcr0');
  const nonce = hexBytes(values.nonce, '--nonce');
  const root = values.root ? readPem(values.root, '--root') : undefined;
  const file = positionals[0] as string;
  const output = readJsonInput(file) as GenesisOutput;
  const json = values.json ?? false;
  let section: IdentitySection;
  try {
    const v = verifyGenesis(output, { pcr0, nonce, ...(root !== undefined ? { rootCertificate: root } : {}) });
    section = v.identity;
    if (values.out) {
      try {
        // Never over another file: it could be the configuration of an identity already in use.
        fs.writeFileSync(values.out, `${JSON.stringify({ identity: section }, null, 2)}\n`, { flag: 'wx' });
      } catch (err) {
        throw new UsageError(`cannot write ${values.out}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
          cause: err,
        });
      }
    }
    print(
      {
        valid: true,
        publicKey: section.publicKey,
        kmsKeyArn: v.kmsKeyArn,
        attestation: documentSummary(v.attestation),
        defaultProject: v.defaultProject,
        checks: v.checks,
        ...(values.out ? { out: values.out } : {}),
      },
      json,
      () =>
        `VALID genesis of keystore identity ${section.publicKey}\n${checklist(v.checks)}\n${fields([
          ['kmsKeyArn', v.kmsKeyArn],
          ['made at', new Date(v.attestation.document.timestamp).toISOString()],
          ['root sha256', v.attestation.rootFingerprint],
        ])}${
          values.out
            ? `\nwrote the enclave configuration's identity section to ${values.out}: merge it into the normal image's configuration (jq -s '.[0] * .[1]' enclave.json ${values.out})`
            : '\n(--out FILE writes the identity section for the enclave configuration)'
        }`,
    );
    return 0;
  } catch (err) {
    return invalid('genesis', err, json);
  }
}
