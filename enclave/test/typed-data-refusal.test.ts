/**
 * The enclave's own check of a typed-data message against its types (shared/src/signing/schema.ts, the schema both
 * sides validate with), reached straight over the RPC as a compromised parent would, past the parent's validation.
 * A message with a field its type does not have would otherwise be signed over a hash that silently leaves it out;
 * the refusal names the field and is the same bytes whatever the key: it says what the request was, nothing of the key.
 */
import { hashTypedData, recoverAddress, recoverTypedDataAddress, type TypedDataDefinition } from 'viem';
import type { CreateResult } from '@nks/shared/enclave-api';
import { tempRunDir } from '@nks/shared-test/helpers';
import { RawPeer } from '../../test/support/raw-peer';
import { ENCLAVE_ADDRESS, startEnclaveHarness, type EnclaveHarness } from './harness';

const BOB = '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC';
const typedData = (message: Record<string, unknown>) => ({
  domain: { name: 'Pay', version: '1', chainId: 1 },
  types: {
    Payee: [
      { name: 'wallet', type: 'address' },
      { name: 'share', type: 'uint8' },
    ],
    Payment: [
      { name: 'to', type: 'Payee[]' },
      { name: 'amount', type: 'uint256' },
    ],
  },
  primaryType: 'Payment',
  message,
});

describe('the enclave refuses typed data whose message does not match its types', () => {
  let h: EnclaveHarness;
  let peer: RawPeer;
  const keys: CreateResult[] = [];

  beforeAll(async () => {
    h = await startEnclaveHarness(tempRunDir('nks-tdr-'));
    keys.push(await h.create('payer-1'), await h.create('payer-2'));
    peer = new RawPeer();
    await peer.connect(h.runDir, ENCLAVE_ADDRESS);
  }, 60_000);
  afterAll(async () => {
    peer?.close();
    await h?.stop();
  });

  const params = (key: CreateResult, message: Record<string, unknown>) => ({
    keyId: key.keyId,
    blob: key.blob,
    record: key.record,
    project: h.defaultProject,
    request: { type: 'typedData', typedData: typedData(message) },
  });

  it('signs a message that matches (so what follows is refused for its field alone)', async () => {
    const [key] = keys as [CreateResult];
    const message = { to: [{ wallet: BOB, share: 100 }], amount: '5' };
    const answer = await peer.callJson('keys.sign', params(key, message));
    const { signature } = answer.result as { signature: `0x${string}` };
    const signer = await recoverTypedDataAddress({ ...(typedData(message) as unknown as TypedDataDefinition), signature });
    expect(signer).toBe(key.address);
  });

  const refusals: Array<[string, Record<string, unknown>, string]> = [
    [
      'an extra field of the message',
      { to: [{ wallet: BOB, share: 100 }], amount: '5', fee: '1' },
      'params.request.typedData.message.fee: unknown field: "Payment" has no field "fee" (its fields: "to", "amount")',
    ],
    [
      'an extra field of a struct in an array',
      { to: [{ wallet: BOB, share: 100, bonus: 1 }], amount: '5' },
      'params.request.typedData.message.to[0].bonus: unknown field: "Payee" has no field "bonus" (its fields: "wallet", "share")',
    ],
    [
      'a missing field',
      { to: [{ wallet: BOB }], amount: '5' },
      'params.request.typedData.message.to[0].share is required ("uint8", a field of "Payee")',
    ],
    [
      'a value out of its type',
      { to: [{ wallet: BOB, share: 256 }], amount: '5' },
      'params.request.typedData.message.to[0].share: expected uint8: an integer from 0 to 2^8-1, as a decimal string, 0x hex or a safe JSON integer',
    ],
  ];

  it.each(refusals)('refuses %s over the RPC, naming it, with the same bytes for every key', async (_name, message, text) => {
    const answers = [];
    for (const key of keys) answers.push((await peer.call('keys.sign', params(key, message))).toString('utf8'));
    // Byte for byte the same for both keys: the answer is about the request, not about the key.
    expect(answers[1]).toBe(answers[0]);
    expect(JSON.parse(answers[0] as string)).toEqual({
      jsonrpc: '2.0',
      id: 1,
      error: { code: -32602, message: text, data: { code: 'INVALID_PARAMS', retryable: false, reason: 'INVALID_PARAMS' } },
    });
  });

  it('primaryType EIP712Domain (viem hashes the domain alone): a message with fields is refused, only {} is signed', async () => {
    const [key] = keys as [CreateResult];
    const domainOnly = (message: Record<string, unknown>) => ({ ...typedData(message), primaryType: 'EIP712Domain' });
    const request = (message: Record<string, unknown>) => ({
      ...params(key, {}),
      request: { type: 'typedData', typedData: domainOnly(message) },
    });
    // Fields a caller (or a UI showing `message`) believes were signed, none of them in the hash.
    const refused = await peer.callJson('keys.sign', request({ to: [{ wallet: BOB, share: 100 }], amount: '1000' }));
    expect(refused.result).toBeUndefined();
    expect(refused.error).toMatchObject({
      message: 'params.request.typedData.message: with primaryType "EIP712Domain" only the domain is signed: message must be {}',
      data: { code: 'INVALID_PARAMS' },
    });
    const signed = await peer.callJson('keys.sign', request({}));
    const { signature } = signed.result as { signature: `0x${string}` };
    const hash = hashTypedData(domainOnly({}) as unknown as TypedDataDefinition);
    expect(await recoverAddress({ hash, signature })).toBe(key.address);
  });
});
