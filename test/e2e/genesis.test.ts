/**
 * `parent genesis` end to end (docs/OPERATIONS.md, "Genesis"): the real enclave bundle as the genesis image (a
 * configuration without identity) on the simulated platform, and the command as the operator runs it. What it
 * writes is the identity the enclave made (the identity blob, the default project signed by it, the document
 * binding the public key with the operator's nonce), owner-only; what it refuses is refused before anything
 * is written.
 */
import fs from 'node:fs';
import path from 'node:path';
import { decodeBlobBase64 } from '@nks/shared/blob';
import { taggedUserData, USER_DATA_TAGS } from '@nks/shared/attestation/user-data';
import { verifyAttestation } from '@nks/shared/attestation/verify';
import { decodeProjectRecord, identityPublicKey, verifySignedRecord } from '@nks/shared/records';
import { tempRunDir } from '@nks/shared-test/helpers';
import { enclaveConfigFor, startPlatform, writeJson, type Platform } from '../support/platform';
import { startProgram, type Running } from '../support/process';
import { parentConfigFor } from '../support/stack';

describe('parent genesis', () => {
  let runDir: string;
  let platform: Platform;
  let enclave: Running;
  let parentConfig: string;
  const NONCE = `0x${'a5'.repeat(32)}`;

  const genesis = async (args: string[]) => {
    const p = startProgram('parent', ['genesis', '--config', parentConfig, ...args]);
    const code = await p.exited;
    return { code, output: p.lines.join('\n') };
  };

  beforeAll(async () => {
    runDir = tempRunDir('nks-genesis-');
    platform = await startPlatform(runDir);
    parentConfig = writeJson(path.join(runDir, 'parent.json'), parentConfigFor(platform, runDir));
    const config = writeJson(path.join(runDir, 'enclave-genesis.json'), enclaveConfigFor(platform, runDir, { identity: undefined }));
    enclave = startProgram('enclave', ['--config', config]);
    await enclave.waitForLog((e) => e.msg === 'enclave ready');
  }, 60_000);

  afterAll(async () => {
    await enclave?.stop();
    await platform?.stop();
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  it('writes the identity the genesis image made, owner-only, after checking it', async () => {
    const out = path.join(runDir, 'genesis.json');
    const { code, output } = await genesis(['--nonce', NONCE, '--out', out, '--trusted-root', platform.rootPem]);
    expect({ code, output }).toEqual({ code: 0, output: expect.stringContaining('"msg":"genesis done"') });
    expect(fs.statSync(out).mode & 0o777).toBe(0o600);
    const g = JSON.parse(fs.readFileSync(out, 'utf8'));
    expect(Object.keys(g).sort()).toEqual(['attestation', 'blob', 'blobSignature', 'defaultProject', 'nonce', 'publicKey']);
    expect(g.nonce).toBe(NONCE);
    expect(g.publicKey).not.toBe(platform.identity.publicKey); // each genesis makes a new identity
    expect(decodeBlobBase64(g.blob)).toMatchObject({ v: 2, kind: 'identity', publicKey: g.publicKey, kmsKeyArn: platform.keyArn });
    const project = decodeProjectRecord(verifySignedRecord(g.defaultProject, identityPublicKey(g.publicKey)).bytes);
    expect(project).toMatchObject({ projectId: 'default', seq: 0, state: 'active', auth: { type: 'token' } });
    const doc = verifyAttestation(Buffer.from(g.attestation, 'base64'), {
      trustedRoots: [fs.readFileSync(platform.rootPem, 'utf8')],
      expectedNonce: Buffer.from(NONCE.slice(2), 'hex'),
      expectedUserData: taggedUserData(USER_DATA_TAGS.identity, Buffer.from(g.publicKey.slice(2), 'hex')),
      expectedPcrs: { 0: platform.pcr0 },
    });
    expect(doc.document.pcrs.get(0)?.toString('hex')).toBe(platform.pcr0);
  });

  it('refuses a document that does not verify against the trusted root (the AWS root by default), writing nothing', async () => {
    const out = path.join(runDir, 'untrusted.json');
    const { code, output } = await genesis(['--nonce', NONCE, '--out', out]);
    expect(code).toBe(1);
    expect(output).toMatch(/parent: genesis answer refused: the attestation document does not verify/);
    expect(fs.existsSync(out)).toBe(false);
  });

  it.each<[string, string[], RegExp]>([
    ['an existing output file', ['--nonce', NONCE, '--out', __filename], /exists: genesis does not replace an earlier identity's output/],
    [
      'a nonce that is not hex',
      ['--nonce', 'abc', '--out', '/tmp/nks-never-written.json'],
      /--nonce must be 1-512 bytes of 0x-prefixed hex/,
    ],
    ['no nonce', ['--out', '/tmp/nks-never-written.json'], /genesis needs --nonce HEX and --out FILE/],
    ['an unknown option', ['--nonce', NONCE, '--out', '/tmp/nks-never-written.json', '--force'], /Unknown option '--force'/],
  ])('refuses %s as bad usage (exit 2)', async (_name, args, message) => {
    const { code, output } = await genesis(args);
    expect(code).toBe(2);
    expect(output).toMatch(message);
    expect(output).toMatch(/usage: parent/);
    expect(fs.existsSync('/tmp/nks-never-written.json')).toBe(false);
  });
});
