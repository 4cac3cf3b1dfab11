/**
 * The nks commands. Each parses its own flags strictly (unknown flags are usage errors, exit 2) and prints
 * for people by default or JSON with --json.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { AttestationError, verifyAttestation, verifyBirthAttestation, type VerifyOptions } from '@nks/shared/attestation';
import { ADDRESS_RE } from '@nks/shared/identifiers';
import { SIGN_BATCH_MAX_REQUESTS, type SignRequestInput } from '@nks/shared/signing/schema';
import {
  generateKeyPolicy,
  measurementsFromNitroCliJson,
  normalizePcr,
  PolicyInputError,
  securityEpochOfPolicy,
  type ImageMeasurements,
} from '../policy';
import type { Key } from '../sdk';
import { clientFor, connectionOptions, parse, readInput, readJsonInput, readPem, UsageError } from './context';
import { keysVerifyCommand } from './verify-commands';
import { lifecycleCommand } from './lifecycle-commands';
import { fields, print } from './output';
import { devTokenCommand } from './dev-commands';

const keyRows = (k: Key): Array<[string, unknown]> => [
  ['keyId', k.keyId],
  ['address', k.address],
  ['externalId', k.externalId],
  [
    'labels',
    Object.keys(k.labels).length
      ? Object.entries(k.labels)
          .map(([a, b]) => `${a}=${b}`)
          .join(', ')
      : undefined,
  ],
  ['project', k.projectId ?? 'none: made before 0.4, not migrated yet'],
  ['state', k.state],
  ['createdAt', k.createdAt],
  ['disabled', k.disabled ? 'yes' : 'no'],
  ['publicKey', k.publicKey],
];

export async function keysCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'create': {
      const { values } = parse(rest, {
        ...connectionOptions,
        'external-id': { type: 'string' },
        label: { type: 'string', multiple: true },
        attest: { type: 'boolean' },
        project: { type: 'string' },
      });
      // No prototype: `--label __proto__=x` is sent as written (and refused by the server by name), not dropped here.
      const labels = Object.create(null) as Record<string, string>;
      for (const l of values.label ?? []) {
        const i = l.indexOf('=');
        if (i < 1) throw new UsageError(`--label takes name=value, got "${l}"`);
        labels[l.slice(0, i)] = l.slice(i + 1);
      }
      const { key, created } = await clientFor(values).createKey({
        ...(values['external-id'] ? { externalId: values['external-id'] } : {}),
        ...(Object.keys(labels).length ? { labels } : {}),
        ...(values.attest ? { attest: true } : {}),
        ...(values.project ? { projectId: values.project } : {}),
      });
      // A token without keys:read is told only the existing key's id (README.md, "Caller API").
      if (!created && (key as Partial<Key>).address === undefined) {
        print({ keyId: key.keyId, created }, values.json ?? false, () => `Existing key\n${fields([['keyId', key.keyId]])}`);
        return 0;
      }
      print(
        { ...key, created },
        values.json ?? false,
        () =>
          `${created ? 'Created' : 'Existing'} key\n${fields([...keyRows(key), ['attestation', key.attestation ? `${key.attestation.length} base64 chars (check the key and it with: nks keys verify)` : undefined]])}`,
      );
      return 0;
    }
    case 'get': {
      const { values, positionals } = parse(rest, connectionOptions, ['keyId']);
      const key = await clientFor(values).getKey(positionals[0] as string);
      print(key, values.json ?? false, () => fields(keyRows(key)));
      return 0;
    }
    case 'list': {
      const { values } = parse(rest, {
        ...connectionOptions,
        'external-id': { type: 'string' },
        limit: { type: 'string' },
        cursor: { type: 'string' },
        all: { type: 'boolean' },
      });
      const client = clientFor(values);
      let keys: Key[];
      let nextCursor: string | null = null;
      if (values.all) {
        keys = [];
        for await (const k of client.allKeys()) keys.push(k);
      } else {
        const limit = values.limit === undefined ? undefined : Number(values.limit);
        if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) throw new UsageError('--limit must be a positive integer');
        const page = await client.listKeys({
          ...(values['external-id'] ? { externalId: values['external-id'] } : {}),
          ...(limit ? { limit } : {}),
          ...(values.cursor ? { cursor: values.cursor } : {}),
        });
        keys = page.keys;
        nextCursor = page.nextCursor;
      }
      print({ keys, nextCursor }, values.json ?? false, () =>
        [
          `${keys.length} key(s)`,
          ...keys.map((k) => `${k.keyId}  ${k.address}${k.externalId ? `  ${k.externalId}` : ''}${k.disabled ? '  (disabled)' : ''}`),
          ...(nextCursor ? [`more: --cursor ${nextCursor}`] : []),
        ].join('\n'),
      );
      return 0;
    }
    case 'disable':
    case 'enable': {
      const { values, positionals } = parse(rest, connectionOptions, ['keyId']);
      const client = clientFor(values);
      const key = sub === 'disable' ? await client.disableKey(positionals[0] as string) : await client.enableKey(positionals[0] as string);
      print(key, values.json ?? false, () => `${key.keyId} is ${key.disabled ? 'disabled' : 'enabled'}`);
      return 0;
    }
    case 'verify':
      return keysVerifyCommand(rest);
    case 'successor':
    case 'activate':
    case 'cancel':
    case 'history':
      return lifecycleCommand(sub, rest);
    default:
      throw new UsageError('usage: nks keys create|get|list|verify|disable|enable|successor|activate|cancel|history ...');
  }
}

export async function signCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      ...connectionOptions,
      digest: { type: 'string' },
      message: { type: 'string' },
      'message-hex': { type: 'string' },
      'typed-data': { type: 'string' },
      transaction: { type: 'string' },
      authorization: { type: 'string' },
      'allow-all-chains': { type: 'boolean' },
      'user-operation': { type: 'string' },
      'entry-point': { type: 'string' },
      'chain-id': { type: 'string' },
      'ep-version': { type: 'string' },
      request: { type: 'string' },
    },
    ['keyId'],
  );
  const kinds = ['digest', 'message', 'message-hex', 'typed-data', 'transaction', 'authorization', 'user-operation', 'request'] as const;
  const chosen = kinds.filter((k) => values[k] !== undefined);
  if (chosen.length !== 1) throw new UsageError(`give exactly one of ${kinds.map((k) => `--${k}`).join(', ')}`);
  let request: SignRequestInput;
  switch (chosen[0]) {
    case 'digest':
      request = { type: 'digest', digest: values.digest as `0x${string}` };
      break;
    case 'message':
      request = { type: 'message', message: values.message as string };
      break;
    case 'message-hex':
      request = { type: 'message', message: { raw: values['message-hex'] as `0x${string}` } };
      break;
    case 'typed-data':
      request = { type: 'typedData', typedData: readJsonInput(values['typed-data'] as string) as never };
      break;
    case 'transaction':
      request = { type: 'transaction', transaction: readJsonInput(values.transaction as string) as never };
      break;
    case 'authorization':
      request = {
        type: 'authorization',
        authorization: readJsonInput(values.authorization as string) as never,
        ...(values['allow-all-chains'] ? { allowAllChains: true } : {}),
      };
      break;
    case 'user-operation': {
      if (!values['entry-point'] || !values['chain-id'] || !values['ep-version'])
        throw new UsageError('--user-operation needs --entry-point, --chain-id and --ep-version 0.6|0.7|0.8');
      request = {
        type: 'userOperation',
        version: values['ep-version'] as '0.6' | '0.7' | '0.8',
        chainId: values['chain-id'],
        entryPoint: values['entry-point'],
        userOperation: readJsonInput(values['user-operation'] as string) as never,
      };
      break;
    }
    default:
      request = readJsonInput(values.request as string) as SignRequestInput;
  }
  const res = await clientFor(values).sign(positionals[0] as string, request);
  print(res, values.json ?? false, () =>
    fields([
      ['signature', res.signature],
      ['address', res.address],
      ['r', res.r],
      ['s', res.s],
      ['yParity', res.yParity],
      ['v', res.v],
      ['hash', res.hash],
      ['userOperationHash', res.userOperationHash],
      ['serializedTransaction', res.serializedTransaction],
    ]),
  );
  return 0;
}

/**
 * `nks sign-batch <keyId> --file FILE`: the requests of FILE (a JSON array of sign requests, or `{"requests": [...]}`)
 * in one batch (README.md, "Batch signing"). One line per request, in order: its signature, or its error. Exit 1 when
 * any request was refused.
 */
export async function signBatchCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { ...connectionOptions, file: { type: 'string' } }, ['keyId']);
  if (values.file === undefined) throw new UsageError('--file FILE is required: a JSON array of sign requests (or {"requests": [...]})');
  const doc = readJsonInput(values.file);
  const requests = Array.isArray(doc) ? doc : (doc as { requests?: unknown } | null)?.requests;
  if (!Array.isArray(requests) || requests.length < 1 || requests.length > SIGN_BATCH_MAX_REQUESTS)
    throw new UsageError(`${values.file}: expected 1 to ${SIGN_BATCH_MAX_REQUESTS} sign requests, as a JSON array or {"requests": [...]}`);
  const outcomes = await clientFor(values).signBatch(positionals[0] as string, requests as SignRequestInput[]);
  const results = outcomes.map((o) =>
    o.result
      ? { result: o.result }
      : {
          error: {
            code: o.error.code,
            message: o.error.message,
            retryable: o.error.retryable,
            ...(o.error.details ? { details: o.error.details } : {}),
          },
        },
  );
  print({ results }, values.json ?? false, () =>
    fields(outcomes.map((o, i) => [String(i), o.result ? o.result.signature : `error ${o.error.code}: ${o.error.message}`])),
  );
  return outcomes.every((o) => o.result) ? 0 : 1;
}

/** A document given as a file of raw bytes, hex or base64 text, or the JSON `{document}` the API returns. */
export function readDocument(file: string): Buffer {
  const raw = readInput(file);
  const text = raw.toString('utf8').trim();
  if (text.startsWith('{')) {
    try {
      const doc = (JSON.parse(text) as { document?: unknown }).document;
      if (typeof doc === 'string') return Buffer.from(doc, 'base64');
    } catch {
      /* not JSON after all */
    }
  }
  if (/^(0x)?([0-9a-fA-F]{2})+$/.test(text)) return Buffer.from(text.replace(/^0x/, ''), 'hex');
  if (/^[A-Za-z0-9+/=\s]+$/.test(text) && text.length >= 16) return Buffer.from(text.replace(/\s/g, ''), 'base64');
  return raw;
}

const AT_BASIS_TEXT = { now: 'now', document: "the document's own time, --at document", explicit: '--at' } as const;

export async function attestationCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'get') {
    const { values } = parse(rest, { ...connectionOptions, nonce: { type: 'string' }, out: { type: 'string' } });
    if (values.nonce !== undefined && !/^0x([0-9a-fA-F]{2}){1,512}$/.test(values.nonce))
      throw new UsageError('--nonce takes 1-512 bytes of 0x-prefixed hex');
    const res = await clientFor(values).attestation(values.nonce as `0x${string}` | undefined);
    if (values.out) fs.writeFileSync(values.out, Buffer.from(res.document, 'base64'));
    print(res, values.json ?? false, () =>
      values.out ? `wrote ${Buffer.from(res.document, 'base64').length} bytes to ${values.out}` : res.document,
    );
    return 0;
  }
  if (sub !== 'verify') throw new UsageError('usage: nks attestation get|verify ...');
  const { values, positionals } = parse(
    rest,
    {
      root: { type: 'string' },
      at: { type: 'string' },
      'max-age': { type: 'string' },
      pcr: { type: 'string', multiple: true },
      pcr0: { type: 'string' },
      'allow-unpinned': { type: 'boolean' },
      'allow-debug': { type: 'boolean' },
      nonce: { type: 'string' },
      'user-data': { type: 'string' },
      'key-id': { type: 'string' },
      address: { type: 'string' },
      json: { type: 'boolean' },
    },
    ['file'],
  );
  // The chain is checked at the current time unless asked otherwise: a document meant to be fresh must not
  // verify with certificates that have expired since. A document kept as evidence (a birth or genesis document)
  // is checked at its own time with --at document, or at an explicit time.
  const opts: VerifyOptions = { at: 'now', allowUnpinned: true, allowDebug: values['allow-debug'] ?? false };
  if (values.root) opts.trustedRoots = [readPem(values.root, '--root')];
  if (values.at !== undefined && values.at !== 'now') {
    if (values.at === 'document') opts.at = 'document';
    else {
      const at = /^\d{4}-\d{2}-\d{2}T/.test(values.at) ? new Date(values.at) : new Date(NaN);
      if (Number.isNaN(at.getTime())) throw new UsageError('--at takes now, document or an ISO time, e.g. 2026-01-31T12:00:00Z');
      opts.at = at;
    }
  }
  if (values['max-age'] !== undefined) {
    const s = Number(values['max-age']);
    if (!Number.isFinite(s) || s <= 0) throw new UsageError('--max-age takes a number of seconds');
    opts.maxAgeMs = s * 1000;
  }
  const hex = (v: string, flag: string) => {
    if (!/^(0x)?([0-9a-fA-F]{2})+$/.test(v)) throw new UsageError(`${flag} takes hex bytes`);
    return Buffer.from(v.replace(/^0x/, ''), 'hex');
  };
  if (values.nonce) opts.expectedNonce = hex(values.nonce, '--nonce');
  if (values['user-data']) opts.expectedUserData = hex(values['user-data'], '--user-data');
  for (const p of values.pcr ?? []) {
    const m = /^(\d{1,2})=(.+)$/.exec(p);
    if (!m || Number(m[1]) > 31) throw new UsageError(`--pcr takes N=HEX with N in 0..31, got "${p}"`);
    let value: string;
    try {
      value = normalizePcr(m[2] as string, `PCR${m[1]}`);
    } catch (err) {
      throw new UsageError((err as Error).message, { cause: err });
    }
    (opts.expectedPcrs ??= {})[Number(m[1])] = value;
  }
  if (values.pcr0 !== undefined) {
    let value: string;
    try {
      value = normalizePcr(values.pcr0, '--pcr0');
    } catch (err) {
      throw new UsageError((err as Error).message, { cause: err });
    }
    const other = opts.expectedPcrs?.[0];
    if (other !== undefined && other !== value) throw new UsageError('--pcr0 and --pcr 0=… name different values');
    (opts.expectedPcrs ??= {})[0] = value;
  }
  const pinned = opts.expectedPcrs?.[0] !== undefined;
  const allowUnpinned = values['allow-unpinned'] ?? false;
  // A birth attestation: user_data must bind this key id and address (and not be a 0.1-era document).
  const birth = values['key-id'] !== undefined || values.address !== undefined;
  if (birth) {
    if (!values['key-id'] || !values.address || !ADDRESS_RE.test(values.address))
      throw new UsageError("a birth attestation needs both --key-id ID and --address 0x… (the key's 20-byte address)");
    if (opts.expectedUserData) throw new UsageError('--user-data cannot be combined with --key-id/--address (they determine user_data)');
    if (!pinned)
      throw new UsageError('a birth attestation needs --pcr0 HEX, the PCR0 of an image you approve (any image can ask for any user_data)');
  }
  const document = readDocument(positionals[0] as string);
  try {
    const v = birth
      ? verifyBirthAttestation(
          document,
          { keyId: values['key-id'] as string, address: values.address as string },
          { ...opts, expectedPcrs: opts.expectedPcrs ?? {} },
        )
      : verifyAttestation(document, opts);
    const d = v.document;
    // Without a pinned PCR0 the document proves only that some enclave made it: the verdict says so, and it is
    // a failure unless the caller accepts that (--allow-unpinned).
    const verdict = pinned ? 'VALID' : allowUnpinned ? 'VALID (UNPINNED)' : 'UNPINNED';
    const checkedAt = { time: v.checkedAt.time.toISOString(), basis: v.checkedAt.basis };
    const summary = {
      valid: verdict !== 'UNPINNED',
      verdict,
      pinned,
      debug: v.debug,
      checkedAt,
      moduleId: d.moduleId,
      timestamp: new Date(d.timestamp).toISOString(),
      pcrs: Object.fromEntries([...d.pcrs].map(([i, b]) => [i, b.toString('hex')])),
      publicKey: d.publicKey?.toString('base64'),
      userData: d.userData?.toString('hex'),
      nonce: d.nonce?.toString('hex'),
      rootFingerprint: v.rootFingerprint,
      chain: v.chainSubjects,
    };
    print(
      summary,
      values.json ?? false,
      () =>
        `${verdict} attestation document${
          pinned
            ? ''
            : allowUnpinned
              ? ': PCR0 not checked (--allow-unpinned)'
              : ': genuine, but no PCR0 was pinned, so nothing shows which code made it (--pcr0 HEX, or --allow-unpinned)'
        }\n${fields([
          ['checked at', `${checkedAt.time} (${AT_BASIS_TEXT[checkedAt.basis]})`],
          ['module', d.moduleId],
          ['timestamp', summary.timestamp],
          ['debug mode', v.debug ? 'yes (PCR0 all zeros, accepted with --allow-debug)' : undefined],
          ['root sha256', v.rootFingerprint],
          ...[0, 1, 2, 3, 4, 8].filter((i) => d.pcrs.has(i)).map((i): [string, unknown] => [`PCR${i}`, d.pcrs.get(i)?.toString('hex')]),
          ['user_data', summary.userData],
          ['nonce', summary.nonce],
          ['public_key', d.publicKey ? `${d.publicKey.length} bytes` : undefined],
        ])}`,
    );
    return verdict === 'UNPINNED' ? 1 : 0;
  } catch (err) {
    if (!(err instanceof AttestationError)) throw err;
    print(
      { valid: false, code: err.code, message: err.message },
      values.json ?? false,
      () => `INVALID attestation document: ${err.code}: ${err.message}`,
    );
    return 1;
  }
}

export function policyCommand(args: string[]): number {
  // `nks policy get|set|evaluate`: signing policies are `nks policies`.
  if (['get', 'set', 'evaluate'].includes(args[0] ?? ''))
    throw new UsageError(`nks policy writes the KMS key policy; a project's signing policies are "nks policies ${args[0]}"`);
  const { values } = parse(args, {
    measurements: { type: 'string', multiple: true },
    pcr0: { type: 'string', multiple: true },
    'security-epoch': { type: 'string' },
    'current-policy': { type: 'string' },
    'migration-window': { type: 'boolean' },
    'parent-role-arn': { type: 'string' },
    admin: { type: 'string', multiple: true },
    'image-approver-role-arn': { type: 'string' },
    'break-glass-role-arn': { type: 'string' },
    'pin-pcr8': { type: 'boolean' },
    out: { type: 'string' },
  });
  const images: ImageMeasurements[] = [];
  try {
    for (const f of values.measurements ?? []) images.push(measurementsFromNitroCliJson(readJsonInput(f), f));
    // A bare PCR0 says nothing about its image's epoch: the operator states it.
    let epoch: number | undefined;
    if (values['security-epoch'] !== undefined) {
      epoch = Number(values['security-epoch']);
      if (!/^[1-9][0-9]{0,8}$/.test(values['security-epoch'])) throw new UsageError('--security-epoch takes a positive integer');
    }
    if (values.pcr0?.length && epoch === undefined)
      throw new UsageError(
        "--pcr0 needs --security-epoch N (the securityEpoch of that image's enclave configuration); a measurements file from scripts/build-eif.sh carries it",
      );
    for (const p of values.pcr0 ?? []) images.push({ PCR0: normalizePcr(p, '--pcr0'), securityEpoch: epoch });
    let currentSecurityEpoch: number | undefined;
    if (values['current-policy'] !== undefined) {
      try {
        currentSecurityEpoch = securityEpochOfPolicy(readInput(values['current-policy']).toString('utf8'));
      } catch (err) {
        if (err instanceof PolicyInputError) throw err;
        throw new UsageError(`${values['current-policy']} is not a key policy (JSON)`, { cause: err });
      }
      if (currentSecurityEpoch === undefined)
        process.stderr.write(
          `nks: the current policy in ${values['current-policy']} was not made by nks policy: no security epoch to keep (first approval)\n`,
        );
    }
    if (!values['parent-role-arn']) throw new UsageError('--parent-role-arn is required (the IAM role of the parent instance)');
    if (!values['image-approver-role-arn'])
      throw new UsageError(
        '--image-approver-role-arn is required (the only role allowed to change the key policy, i.e. to approve images)',
      );
    if (!values['break-glass-role-arn'])
      throw new UsageError('--break-glass-role-arn is required (the role allowed to disable the key or schedule its deletion)');
    const policy = generateKeyPolicy({
      images,
      parentRoleArn: values['parent-role-arn'],
      keyAdministrators: values.admin ?? [],
      imageApproverRoleArn: values['image-approver-role-arn'],
      breakGlassRoleArn: values['break-glass-role-arn'],
      pinSigningCertificate: values['pin-pcr8'] ?? false,
      currentSecurityEpoch,
      allowMigrationImage: values['migration-window'] ?? false,
    });
    if (values.out) fs.writeFileSync(values.out, `${policy}\n`);
    else process.stdout.write(`${policy}\n`);
    return 0;
  } catch (err) {
    if (err instanceof PolicyInputError) throw new UsageError(err.message, { cause: err });
    throw err;
  }
}

/** Runs a host program beside this bundle (dist/dev.js, dist/parent.js) with `args`, its output and exit code ours. */
function hostProgram(program: string, args: string[], hint: string): Promise<number> {
  const file = path.join(path.dirname(process.argv[1] ?? '.'), program);
  if (!fs.existsSync(file)) throw new UsageError(`${file} not found: ${hint}`);
  const child = spawn(process.execPath, [file, ...args], { stdio: 'inherit' });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => child.kill(sig));
  return new Promise((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
}

/**
 * `nks dev ...`: runs the local stack (dist/dev.js beside this bundle) with the same arguments; `nks dev token
 * create ...` adds a caller token to the running one (dev-commands.ts).
 */
export function devCommand(args: string[]): Promise<number> {
  if (args[0] === 'token') return Promise.resolve(devTokenCommand(args.slice(1)));
  return hostProgram('dev.js', args, 'run "npm run build" first (or use "npm run dev")');
}

/** `nks store status|migrate ...`: the parent's database (`parent store`, dist/parent.js beside this bundle), on the host. */
export function storeCommand(args: string[]): Promise<number> {
  if (args[0] !== 'status' && args[0] !== 'migrate') throw new UsageError('nks store needs status or migrate');
  return hostProgram('parent.js', ['store', ...args], 'nks store runs on the parent host, beside the parent (npm run build)');
}
