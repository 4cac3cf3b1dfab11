/**
 * Compile-time tests of the typed method tables (checked by `npm run typecheck`, never run): each
 * `@ts-expect-error` line must fail to compile, so if the types stopped catching that mistake the directive
 * itself would be an error. The positive lines pin the result types the tables promise.
 */
import { RpcClient, serveApi, type ResultOf } from '../src/rpc';
import {
  EnclaveApi,
  KmsProxyApi,
  type CreateResult,
  type EnclaveHealth,
  type GenesisResult,
  type HelloResult,
  type IdentityResult,
  type SetDisabledResult,
  type SignResult,
} from '../src/enclave-api';
import type { SimulatedVsockTransport } from '../src/transport';
import { silentLogger } from '../src/log';

/** True only when A and B are the same type. */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const same = <A, B>(ok: Equal<A, B>): Equal<A, B> => ok;

declare const transport: SimulatedVsockTransport;
const enclave = new RpcClient<EnclaveApi>({ name: 'types', transport, address: 'vsock://16:5000', logger: silentLogger() });
const kmsProxy = new RpcClient<KmsProxyApi>({ name: 'types', transport, address: 'vsock://3:8000', logger: silentLogger() });
const digest = `0x${'11'.repeat(32)}` as const;
const record = { record: 'AAAA', signature: `${'A'.repeat(86)}==` };
const project = record;

export async function callsAreChecked(): Promise<void> {
  // Each method returns its own result type.
  const signed = await enclave.call('keys.sign', { keyId: 'k1', blob: 'AAAA', record, project, request: { type: 'digest', digest } });
  same<typeof signed, SignResult>(true);
  void signed;
  same<ResultOf<EnclaveApi, 'keys.create'>, CreateResult>(true);
  same<ResultOf<EnclaveApi, 'enclave.health'>, EnclaveHealth>(true);
  same<ResultOf<EnclaveApi, 'enclave.hello'>, HelloResult>(true);
  const created: CreateResult = await enclave.call('keys.create', { keyId: 'k1', project, subject: null });
  void created;
  const disabled: SetDisabledResult = await enclave.call('keys.setDisabled', { record, project, disabled: true });
  void disabled;
  same<ResultOf<EnclaveApi, 'identity.genesis'>, GenesisResult>(true);
  same<ResultOf<EnclaveApi, 'identity.get'>, IdentityResult>(true);
  same<ResultOf<EnclaveApi, 'keys.migrate'>, CreateResult>(true);

  // @ts-expect-error an unknown method name
  await enclave.call('keys.sing', { keyId: 'k1' });
  // @ts-expect-error a method of the other direction's table
  await enclave.call('kms.decrypt', { kmsKeyArn: 'x', ciphertextBlob: 'x', attestationDocument: 'x' });
  // @ts-expect-error a missing required param
  await enclave.call('keys.sign', { keyId: 'k1', blob: 'AAAA', record, project });
  // @ts-expect-error keys.sign without the key's record (a version 2 parent's request)
  await enclave.call('keys.sign', { keyId: 'k1', blob: 'AAAA', project, request: { type: 'digest', digest } });
  // @ts-expect-error keys.create without a project
  await enclave.call('keys.create', { keyId: 'k1', subject: null });
  // @ts-expect-error a param of the wrong type
  await enclave.call('keys.create', { keyId: 7, project, subject: null });
  // @ts-expect-error a param the method does not take
  await enclave.call('keys.forget', { keyId: 'k1', everywhere: true });
  // @ts-expect-error a sign request of an unknown type
  await enclave.call('keys.sign', { keyId: 'k1', blob: 'AAAA', record, project, request: { type: 'blind', digest } });
  // @ts-expect-error the result is a SignResult, not a CreateResult
  const wrong: CreateResult = await enclave.call('keys.sign', {
    keyId: 'k1',
    blob: 'AAAA',
    record,
    project,
    request: { type: 'digest', digest },
  });
  void wrong;

  await kmsProxy.call('kms.decrypt', { kmsKeyArn: 'x', ciphertextBlob: 'x', attestationDocument: 'x', deadlineMs: 100 });
  // @ts-expect-error the proxy serves no enclave methods
  await kmsProxy.call('keys.create', { keyId: 'k1' });
}

const decrypted = { ciphertextForRecipient: 'x', keyId: 'arn' };

export const handlersAreChecked = [
  serveApi(KmsProxyApi, { 'kms.decrypt': () => decrypted }),
  serveApi(KmsProxyApi, { 'kms.decrypt': async (p) => ({ ciphertextForRecipient: p.ciphertextBlob, keyId: p.kmsKeyArn }) }),
  // @ts-expect-error a handler returning the wrong shape
  serveApi(KmsProxyApi, { 'kms.decrypt': () => ({ ciphertext: 'x' }) }),
  // @ts-expect-error a handler reading a param the method does not have
  serveApi(KmsProxyApi, { 'kms.decrypt': (p) => ({ ciphertextForRecipient: p.plaintext, keyId: p.kmsKeyArn }) }),
  // @ts-expect-error a method missing from the handler map
  serveApi(KmsProxyApi, {}),
  // @ts-expect-error a handler for a method not in the table
  serveApi(KmsProxyApi, { 'kms.decrypt': () => decrypted, 'kms.encrypt': () => decrypted }),
];
