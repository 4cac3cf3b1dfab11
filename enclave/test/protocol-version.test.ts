/**
 * Protocol versions against the real enclave bundle, with the test standing where parents of each version
 * would: a version-2 parent agrees its version with `enclave.hello`; a version-1 parent (release 0.2.0) sends
 * no hello and reads error codes from `data.reason` only, and is served as before; versions the enclave does
 * not accept are refused with a message naming both sides. The version chosen changes nothing the enclave
 * checks: the same bad request gets the same answer whatever was agreed.
 */
import { recoverAddress } from 'viem';
import {
  ACCEPTED_PROTOCOL_VERSIONS,
  EnclaveApi,
  PROTOCOL_VERSION,
  type CreateResult,
  type HelloResult,
  type SignResult,
} from '@nks/shared/enclave-api';
import { rejection, tempRunDir } from '../../shared/test/helpers';
import { RawPeer } from '../../test/support/raw-peer';
import { hello } from '../src/methods';
import { ENCLAVE_ADDRESS, startEnclaveHarness, type EnclaveHarness } from './harness';

const digest = `0x${'ab'.repeat(32)}` as const;

describe('parent <-> enclave protocol versions (real enclave bundle)', () => {
  let h: EnclaveHarness;
  let peer: RawPeer;

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-proto-'));
    peer = new RawPeer();
    await peer.connect(h.runDir, ENCLAVE_ADDRESS);
  }, 90_000);

  afterAll(async () => {
    peer?.close();
    await h?.stop();
  });

  it('speaks the current and the previous version and no other', () => {
    expect([PROTOCOL_VERSION, ACCEPTED_PROTOCOL_VERSIONS]).toEqual([2, [1, 2]]);
  });

  it('agrees version 2 with a version-2 parent, and names what it serves', async () => {
    const hello: HelloResult = await h.client.call('enclave.hello', { protocolVersion: 2 });
    expect(hello).toEqual({
      protocolVersion: 2,
      supportedVersions: [1, 2],
      features: Object.keys(EnclaveApi).sort(),
      enclaveVersion: expect.stringMatching(/^\d+\.\d+\.\d+$/),
    });
  });

  it('agrees version 1 with a parent that asks for it, and its own with a newer parent (which then decides)', async () => {
    expect((await h.client.call('enclave.hello', { protocolVersion: 1 })).protocolVersion).toBe(1);
    expect((await h.client.call('enclave.hello', { protocolVersion: 3 })).protocolVersion).toBe(2);
    expect((await h.client.call('enclave.hello', { protocolVersion: 999 })).protocolVersion).toBe(2);
  });

  it('refuses what is not a version at all (versions start at 1)', async () => {
    expect((await rejection(h.client.call('enclave.hello', { protocolVersion: 0 }))).code).toBe('INVALID_PARAMS');
    const fractional = await peer.callJson('enclave.hello', { protocolVersion: 1.5 });
    expect(fractional.error?.data?.code).toBe('INVALID_PARAMS');
  });

  it('serves a version-1 parent: no hello, create and sign as before, error codes in data.reason', async () => {
    // A version-1 parent never calls enclave.hello and reads `data.reason`.
    const made = (await peer.callJson('keys.create', { keyId: 'v1-parent' })).result as CreateResult;
    expect(made.address).toMatch(/^0x[0-9a-fA-F]{40}$/);
    const signed = (await peer.callJson('keys.sign', { keyId: 'v1-parent', blob: made.blob, request: { type: 'digest', digest } }))
      .result as SignResult;
    expect(await recoverAddress({ hash: digest, signature: signed.signature })).toBe(made.address);
    const bad = await peer.callJson('keys.sign', { keyId: 'v1-parent', blob: made.blob, request: { type: 'digest' } });
    expect(bad.error?.data).toEqual({ code: 'INVALID_PARAMS', reason: 'INVALID_PARAMS', retryable: false });
    const missing = await peer.callJson('keys.sign', { keyId: 'other-key', blob: made.blob, request: { type: 'digest', digest } });
    expect(missing.error?.data).toMatchObject({ code: 'KEY_INTEGRITY', reason: 'KEY_INTEGRITY' });
  });

  it('answers the same bytes to the same bad request whatever version was agreed', async () => {
    const ask = () => peer.call('keys.sign', { keyId: 'v1-parent', blob: 'AAAA', request: { type: 'digest', digest } });
    const before = await ask();
    await peer.callJson('enclave.hello', { protocolVersion: 1 });
    const afterV1 = await ask();
    await peer.callJson('enclave.hello', { protocolVersion: 2 });
    const afterV2 = await ask();
    expect(afterV1.equals(before) && afterV2.equals(before)).toBe(true);
  });
});

describe('the version check itself (in process)', () => {
  it('refuses a parent older than the previous version with a message naming both sides', () => {
    // Over the wire no such version exists yet (the previous one is 1, the lowest); once version 3 is current,
    // a version-1 parent lands here.
    expect(hello(3)).toMatchObject({ protocolVersion: 2, supportedVersions: [1, 2] });
    expect(() => hello(0)).toThrow('protocol version 0 is not supported: this enclave speaks versions 1 and 2; upgrade the parent');
  });
});
