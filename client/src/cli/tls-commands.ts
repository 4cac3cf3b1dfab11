/**
 * `nks tls`: the wallet routes' TLS key (docs/TLS.md). `create` has the enclave make a key and answers its CSR,
 * `install` serves with it once a CA signed it, `status` shows what is served (an admin token each), and `verify`
 * checks, as any client can, that a server's TLS key lives in an approved enclave (no token).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { AttestationError, verifyAttestation } from '@nks/shared/attestation';
import { tlsUserData } from '@nks/shared/attestation/user-data';
import type { TlsStatus } from '@nks/shared/enclave-api';
import { TLS_CHAIN_MAX_BYTES, TLS_MAX_NAMES, TLS_NAME_EXPECTED, TLS_NAME_RE } from '@nks/shared/tls-identity';
import { normalizePcr, PolicyInputError } from '../policy';
import { fetchTlsEvidence, parseTlsOrigin, verifyTlsEvidence } from '../tls';
import { resolvePcrs, VerificationError } from '../verify';
import { clientFor, connectionOptions, devWallets, parse, readPem, resolveApiTarget, UsageError } from './context';
import { fields, print } from './output';

const USAGE = `usage: nks tls create --name NAME [--name NAME]... [--csr-out FILE] [--pcr0 HEX]... [--root PEM]
       nks tls install --chain FILE
       nks tls status
       nks tls verify [--url https://HOST[:PORT]] [--ca PEM] [--pcr0 HEX]... [--root PEM] [--max-age S]`;

function pcr(value: string): string {
  try {
    return normalizePcr(value, '--pcr0');
  } catch (err) {
    if (err instanceof PolicyInputError) throw new UsageError(err.message, { cause: err });
    throw err;
  }
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

export const statusRows = (s: TlsStatus): Array<[string, unknown]> => [
  [
    'state',
    s.state === 'installed'
      ? 'installed: the enclave serves the wallet routes with this key'
      : 'none: the wallet routes have no TLS key yet',
  ],
  ['names', s.names.length ? s.names.join(', ') : undefined],
  ['notBefore', s.notBefore],
  ['notAfter', s.notAfter],
  ['spki sha256', s.publicKey ? sha256(Buffer.from(s.publicKey, 'base64')) : undefined],
  ['certificate sha256', s.fingerprint256],
];

export async function tlsCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'create':
      return createCommand(rest);
    case 'install':
      return installCommand(rest);
    case 'status':
      return statusCommand(rest);
    case 'verify':
      return verifyCommand(rest);
    default:
      throw new UsageError(sub === undefined ? USAGE : `unknown tls command "${sub}"\n${USAGE}`);
  }
}

async function createCommand(args: string[]): Promise<number> {
  const { values } = parse(args, {
    ...connectionOptions,
    name: { type: 'string', multiple: true },
    'csr-out': { type: 'string' },
    pcr0: { type: 'string', multiple: true },
    root: { type: 'string' },
  });
  const names = values.name ?? [];
  if (names.length === 0) throw new UsageError('--name is required: the DNS name(s) the certificate will be for (the first is its CN)');
  if (names.length > TLS_MAX_NAMES) throw new UsageError(`at most ${TLS_MAX_NAMES} --name`);
  for (const n of names) if (!TLS_NAME_RE.test(n)) throw new UsageError(`--name ${JSON.stringify(n)}: ${TLS_NAME_EXPECTED}`);
  if (new Set(names).size !== names.length) throw new UsageError('each --name once');
  const target = resolveApiTarget(values);
  const pcr0s = (values.pcr0 ?? (target.dev?.pcr0 ? [target.dev.pcr0] : [])).map(pcr);
  const rootFile = values.root ?? target.dev?.rootFile;
  const root = rootFile ? readPem(rootFile, '--root') : undefined;

  const created = await clientFor(values).tls.createKey(names);
  const spki = Buffer.from(created.publicKey, 'base64');
  if (values['csr-out']) {
    try {
      fs.writeFileSync(values['csr-out'], created.csr.endsWith('\n') ? created.csr : `${created.csr}\n`);
    } catch (err) {
      throw new UsageError(`cannot write ${values['csr-out']}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
        cause: err,
      });
    }
  }
  // The document that came with the key: not fresh (no nonce), but it shows the key was made by an approved image.
  let attested: { ok: boolean; text: string };
  if (pcr0s.length === 0) {
    attested = { ok: false, text: 'the creation attestation is not checked (--pcr0 HEX: the PCR0 of an image you approve)' };
  } else {
    const document = Buffer.from(created.attestation, 'base64');
    try {
      const v = verifyAttestation(document, {
        expectedPcrs: resolvePcrs(document, { 0: pcr0s }),
        expectedUserData: tlsUserData(spki),
        at: 'now', // made with the key, just now
        ...(root !== undefined ? { trustedRoots: [root] } : {}),
      });
      attested = { ok: true, text: `the creation attestation binds this key (PCR0 ${v.document.pcrs.get(0)?.toString('hex')})` };
    } catch (err) {
      if (!(err instanceof AttestationError)) throw err;
      print(
        { valid: false, code: 'ATTESTATION', attestationCode: err.code, message: err.message, ...created },
        values.json ?? false,
        () =>
          `INVALID the new TLS key's creation attestation: ${err.code}: ${err.message}\n(the key stays pending; do not get a certificate for it)`,
      );
      return 1;
    }
  }
  const first = names[0] as string;
  print(
    { ...created, spkiSha256: sha256(spki), attestationChecked: attested.ok, ...(values['csr-out'] ? { csrOut: values['csr-out'] } : {}) },
    values.json ?? false,
    () =>
      [
        'Created a TLS key in the enclave (pending: served only once installed)',
        fields([
          ['names', names.join(', ')],
          ['publicKey', created.publicKey],
          ['spki sha256', sha256(spki)],
          ['createdAt', created.createdAt],
          ['csr', values['csr-out'] ? `written to ${values['csr-out']}` : 'below'],
        ]),
        `  ${attested.ok ? 'ok' : '--'}  ${attested.text}`,
        ...(values['csr-out'] ? [] : [created.csr.trimEnd()]),
        'Next: have a CA sign the CSR (CN and subjectAltName are the names above), then install the chain, leaf first:',
        '  nks tls install --chain fullchain.pem',
        'Once it is served, anyone can check that the key lives in an approved enclave:',
        `  nks tls verify --url https://${first} --pcr0 <approved PCR0>`,
      ].join('\n'),
  );
  return 0;
}

async function installCommand(args: string[]): Promise<number> {
  const { values } = parse(args, { ...connectionOptions, chain: { type: 'string' } });
  if (!values.chain) throw new UsageError('--chain FILE is required: the PEM chain, leaf first, then intermediates');
  const chain = readPem(values.chain, '--chain');
  if (Buffer.byteLength(chain) > TLS_CHAIN_MAX_BYTES) throw new UsageError(`${values.chain} is larger than ${TLS_CHAIN_MAX_BYTES} bytes`);
  const status = await clientFor(values).tls.install(chain);
  print(status, values.json ?? false, () => `Installed the TLS certificate\n${fields(statusRows(status))}`);
  return 0;
}

async function statusCommand(args: string[]): Promise<number> {
  const { values } = parse(args, connectionOptions);
  const view = await clientFor(values).tls.status();
  const spkiSha = (b64: string) => sha256(Buffer.from(b64, 'base64'));
  print(view, values.json ?? false, () =>
    [
      fields(statusRows(view.status)),
      ...(view.current && view.current.publicKey !== view.status.publicKey
        ? [`current key (the parent installs it after every enclave start): spki sha256 ${spkiSha(view.current.publicKey)}`]
        : []),
      ...view.pending.map(
        (k) => `pending key (made, not installed): ${k.names.join(', ')}, created ${k.createdAt}, spki sha256 ${spkiSha(k.publicKey)}`,
      ),
    ].join('\n'),
  );
  return 0;
}

async function verifyCommand(args: string[]): Promise<number> {
  const { values } = parse(args, {
    url: { type: 'string' },
    ca: { type: 'string' },
    pcr0: { type: 'string', multiple: true },
    root: { type: 'string' },
    'max-age': { type: 'string' },
    'dev-dir': { type: 'string' },
    json: { type: 'boolean' },
  });
  // The dev stack's URL, CA, PCR0 and root are defaults only when the URL is the dev stack's.
  const dev = values.url === undefined ? devWallets(values) : undefined;
  const url = values.url ?? dev?.url;
  if (!url) throw new UsageError('--url https://HOST[:PORT] is required: the wallet routes to check (or run the dev stack, npm run dev)');
  try {
    parseTlsOrigin(url);
  } catch (err) {
    throw new UsageError(`--url: ${(err as Error).message}`, { cause: err });
  }
  const pcr0s = (values.pcr0 ?? (dev?.pcr0 ? [dev.pcr0] : [])).map(pcr);
  if (pcr0s.length === 0)
    throw new UsageError('--pcr0 is required: the PCR0 of each image you approve (without it the document proves nothing about the code)');
  const caFile = values.ca ?? dev?.caFile;
  const ca = caFile ? readPem(caFile, '--ca') : undefined;
  const rootFile = values.root ?? dev?.rootFile;
  const root = rootFile ? readPem(rootFile, '--root') : undefined;
  let maxAgeMs: number | undefined;
  if (values['max-age'] !== undefined) {
    const s = Number(values['max-age']);
    if (!Number.isFinite(s) || s <= 0) throw new UsageError('--max-age takes a number of seconds');
    maxAgeMs = s * 1000;
  }
  const json = values.json ?? false;
  try {
    const evidence = await fetchTlsEvidence(url, ca !== undefined ? { ca } : {});
    const v = verifyTlsEvidence(evidence, {
      expectedPcrs: { 0: pcr0s },
      ...(root !== undefined ? { rootCertificate: root } : {}),
      ...(maxAgeMs !== undefined ? { maxAgeMs } : {}),
    });
    const cert = evidence.certificate;
    print(
      {
        valid: true,
        url: evidence.url,
        spkiSha256: v.spkiSha256,
        certificateSha256: v.fingerprint256,
        subject: cert.subject,
        subjectAltName: cert.subjectAltName ?? null,
        issuer: cert.issuer,
        notAfter: new Date(cert.validTo).toISOString(),
        nonce: evidence.nonce,
        pcr0: v.attestation.document.pcrs.get(0)?.toString('hex'),
        timestamp: new Date(v.attestation.document.timestamp).toISOString(),
        rootFingerprint: v.attestation.rootFingerprint,
        checks: v.checks,
      },
      json,
      () =>
        `VALID TLS key of ${evidence.url}: the connection ends in an attested enclave\n${v.checks.map((c) => `  ok  ${c}`).join('\n')}\n${fields(
          [
            ['names', cert.subjectAltName],
            ['issuer', cert.issuer.replace(/\n/g, ', ')],
            ['notAfter', new Date(cert.validTo).toISOString()],
            ['spki sha256', v.spkiSha256],
            ['certificate sha256', v.fingerprint256],
            ['nonce', evidence.nonce],
            ['PCR0', v.attestation.document.pcrs.get(0)?.toString('hex')],
            ['root sha256', v.attestation.rootFingerprint],
          ],
        )}`,
    );
    return 0;
  } catch (err) {
    if (!(err instanceof VerificationError)) throw err;
    print(
      { valid: false, url, code: err.code, attestationCode: err.attestationCode, message: err.message },
      json,
      () => `INVALID TLS key of ${url}: ${err.code}: ${err.message}`,
    );
    return 1;
  }
}
