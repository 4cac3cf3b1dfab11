/**
 * Protocol versions against the real enclave bundle, with the test standing where parents of each version
 * would. Version 3 (release 0.4.0) is a cutover: every key operation carries signed records, which parents of
 * versions 1 and 2 never send, so the enclave accepts version 3 only. A version-3 parent agrees it with
 * `enclave.hello` and learns what this image serves; older parents are refused with a message naming both
 * sides, and the requests they would send without a hello are refused as invalid. The version chosen changes
 * nothing the enclave checks: the same bad request gets the same answer whatever was agreed.
 */
import { recoverAddress } from 'viem';
import { ACCEPTED_PROTOCOL_VERSIONS, EnclaveApi, PROTOCOL_VERSION, type HelloResult, type SignResult } from '@nks/shared/enclave-api';
import { rejection, tempRunDir } from '@nks/shared-test/helpers';
import { RawPeer } from '../../test/support/raw-peer';
import { hello, SERVED_METHODS } from '../src/methods';
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

  it('speaks version 3 only (the signed-records cutover)', () => {
    expect([PROTOCOL_VERSION, ACCEPTED_PROTOCOL_VERSIONS]).toEqual([3, [3]]);
  });

  it('agrees version 3 with a version-3 parent, and names what a normal image serves', async () => {
    const agreed: HelloResult = await h.client.call('enclave.hello', { protocolVersion: 3 });
    expect(agreed).toEqual({
      protocolVersion: 3,
      supportedVersions: [3],
      features: [
        'attestation.get',
        'cache.configure',
        'enclave.health',
        'enclave.hello',
        'enclave.logs',
        'identity.get',
        'keys.activate',
        'keys.cancel',
        'keys.create',
        'keys.forget',
        'keys.lookup',
        'keys.setDisabled',
        'keys.sign',
        'keys.signBatch',
        'keys.successor',
        'projects.create',
        'projects.evaluatePolicy',
        'projects.setPolicies',
        'projects.setState',
        'tls.create',
        'tls.install',
      ],
      enclaveVersion: expect.stringMatching(/^\d+\.\d+\.\d+$/),
    });
    // Neither the genesis method nor the migration method: those are other images'.
    expect(agreed.features).not.toContain('identity.genesis');
    expect(agreed.features).not.toContain('keys.migrate');
  });

  it('answers a newer parent with its own version (the parent then decides)', async () => {
    expect((await h.client.call('enclave.hello', { protocolVersion: 4 })).protocolVersion).toBe(3);
    expect((await h.client.call('enclave.hello', { protocolVersion: 999 })).protocolVersion).toBe(3);
  });

  it('refuses parents of versions 1 and 2, naming both sides, and what is not a version at all', async () => {
    for (const v of [1, 2]) {
      const err = await rejection(h.client.call('enclave.hello', { protocolVersion: v }));
      expect([err.code, err.message]).toEqual([
        'UNSUPPORTED_VERSION',
        `protocol version ${v} is not supported: this enclave speaks version 3; upgrade the parent`,
      ]);
    }
    expect((await rejection(h.client.call('enclave.hello', { protocolVersion: 0 }))).code).toBe('INVALID_PARAMS');
    const fractional = await peer.callJson('enclave.hello', { protocolVersion: 1.5 });
    expect(fractional.error?.data?.code).toBe('INVALID_PARAMS');
  });

  it("refuses an old parent's requests (no records): create and sign as version 1 and 2 sent them", async () => {
    const made = await h.create('v3-key');
    const create = await peer.callJson('keys.create', { keyId: 'old-parent' });
    expect(create.error?.data).toEqual({ code: 'INVALID_PARAMS', reason: 'INVALID_PARAMS', retryable: false });
    const sign = await peer.callJson('keys.sign', { keyId: 'v3-key', blob: made.blob, request: { type: 'digest', digest } });
    expect(sign.error?.data).toEqual({ code: 'INVALID_PARAMS', reason: 'INVALID_PARAMS', retryable: false });
    expect(sign.error?.message).toMatch(/params\.record/);
    // With its records the same key signs.
    const signed = (
      await peer.callJson('keys.sign', {
        keyId: 'v3-key',
        blob: made.blob,
        record: made.record,
        project: h.defaultProject,
        request: { type: 'digest', digest },
      })
    ).result as SignResult;
    expect(await recoverAddress({ hash: digest, signature: signed.signature })).toBe(made.address);
  });

  it('answers the same bytes to the same bad request whatever version was agreed', async () => {
    const made = await h.create('v3-same');
    const ask = () =>
      peer.call('keys.sign', {
        keyId: 'v3-same',
        blob: 'AAAA',
        record: made.record,
        project: h.defaultProject,
        request: { type: 'digest', digest },
      });
    const before = await ask();
    expect(JSON.parse(before.toString()).error.data.code).toBe('KEY_INTEGRITY');
    await peer.callJson('enclave.hello', { protocolVersion: 2 });
    const afterRefused = await ask();
    await peer.callJson('enclave.hello', { protocolVersion: 3 });
    const afterV3 = await ask();
    expect(afterRefused.equals(before) && afterV3.equals(before)).toBe(true);
  });
});

describe('the version check itself (in process)', () => {
  it('refuses a parent older than the accepted versions with a message naming both sides', () => {
    expect(hello(4)).toMatchObject({ protocolVersion: 3, supportedVersions: [3] });
    expect(() => hello(2)).toThrow('protocol version 2 is not supported: this enclave speaks version 3; upgrade the parent');
    expect(() => hello(0)).toThrow('protocol version 0 is not supported: this enclave speaks version 3; upgrade the parent');
  });

  it('names as features exactly the methods an image serves, and every method is served by some image', () => {
    expect(hello(3, SERVED_METHODS.genesis).features).toEqual(['enclave.health', 'enclave.hello', 'enclave.logs', 'identity.genesis']);
    expect(hello(3, SERVED_METHODS.migration).features).toEqual([
      'enclave.health',
      'enclave.hello',
      'enclave.logs',
      'identity.get',
      'keys.migrate',
    ]);
    const served = new Set(Object.values(SERVED_METHODS).flat());
    expect([...served].sort()).toEqual(Object.keys(EnclaveApi).sort());
  });
});
