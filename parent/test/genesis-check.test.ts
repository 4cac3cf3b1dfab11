/**
 * `parent genesis` checks the genesis image's answer before writing it (parent/src/genesis.ts): here against a
 * genuine answer of the real enclave bundle (the platform's own genesis), and the same answer altered the way a
 * host could alter it.
 */
import fs from 'node:fs';
import { decodeBlobBase64, encodeBlob } from '@nks/shared/blob';
import { tempRunDir } from '@nks/shared-test/helpers';
import { startPlatform, type Platform } from '../../test/support/platform';
import { checkGenesis } from '../src/genesis';

jest.setTimeout(90_000);

describe('checkGenesis', () => {
  let platform: Platform;
  let runDir: string;
  beforeAll(async () => {
    runDir = tempRunDir('nks-genesis-check-');
    platform = await startPlatform(runDir);
  });
  afterAll(async () => {
    await platform?.stop();
    fs.rmSync(runDir, { recursive: true, force: true });
  });

  it('accepts the genesis image answer, and refuses another identity blob of the same public key (one the identity did not sign)', () => {
    const g = platform.genesis;
    const roots = [fs.readFileSync(platform.rootPem, 'utf8')];
    expect(() => checkGenesis(g, g.nonce, roots)).not.toThrow();
    // A host that keeps the real blob and hands over another (one that would never open) is caught here.
    const junk = decodeBlobBase64(g.blob);
    junk.ciphertext[0] = (junk.ciphertext[0] as number) ^ 1;
    expect(() => checkGenesis({ ...g, blob: encodeBlob(junk).toString('base64') }, g.nonce, roots)).toThrow(
      /genesis answer refused: the blob is not signed by the identity/,
    );
    expect(() => checkGenesis({ ...g, blobSignature: Buffer.alloc(64).toString('base64') }, g.nonce, roots)).toThrow(
      /genesis answer refused: the blob is not signed by the identity/,
    );
  });
});
