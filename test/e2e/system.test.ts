/**
 * The whole system over real processes (NSM simulator, KMS emulator, enclave, parent), driven through the
 * client SDK: creation with birth attestation, every signing type verified independently with ethers v6 and
 * viem, an enclave restart mid-run, a full restart, and a scan of everything the parent side holds or sees
 * for the private keys.
 */
import fs from 'node:fs';
import Database from 'better-sqlite3';
import {
  Transaction,
  TypedDataEncoder,
  getBytes,
  hashMessage as ethersHashMessage,
  recoverAddress as ethersRecover,
  verifyMessage,
  verifyTypedData,
} from 'ethers';
import {
  hashTypedData,
  keccak256,
  parseTransaction,
  recoverAddress,
  recoverMessageAddress,
  recoverTransactionAddress,
  recoverTypedDataAddress,
  type Hex,
} from 'viem';
import { getUserOperationHash } from 'viem/account-abstraction';
import { birthUserData } from '@nks/shared/attestation/user-data';
import { KeystoreApiError, KeystoreClient, verifyKeyBirth, type Key } from '../../client/src/sdk';
import { tempRunDir } from '@nks/shared-test/helpers';
import { findLeaks, recoverSecret } from '../support/secrets';
import { startStack, waitReady, type Stack } from '../support/stack';

describe('end to end', () => {
  let s: Stack;
  let ks: KeystoreClient;
  const responses: string[] = [];
  const keys: Key[] = [];

  /** A client whose every HTTP response body is kept for the leak scan. */
  const recordingClient = () =>
    new KeystoreClient({
      url: s.url,
      token: s.tokens.full,
      fetch: async (input, init) => {
        const res = await fetch(input, init);
        const text = await res.text();
        responses.push(text);
        return new Response(text, { status: res.status, headers: res.headers });
      },
    });

  beforeAll(async () => {
    s = await startStack(tempRunDir('nks-e2e-'), { capture: true });
    await waitReady(s);
    ks = recordingClient();
  }, 90_000);

  afterAll(async () => {
    await s?.stop();
  });

  it('creates keys with and without an external id, with a birth attestation that verifies', async () => {
    const plain = await ks.createKey();
    expect(plain.created).toBe(true);
    const withExternal = await ks.createKey({ externalId: 'wallet:alice', labels: { plan: 'pro' }, attest: true });
    expect(withExternal.created).toBe(true);
    expect((await ks.createKey({ externalId: 'wallet:alice' })).key.keyId).toBe(withExternal.key.keyId);
    keys.push(plain.key, withExternal.key);

    const options = {
      trustedRoots: [fs.readFileSync(s.platform.rootPem, 'utf8')],
      at: new Date(),
      maxAgeMs: 60_000,
      expectedPcrs: { 0: s.platform.pcr0 },
    };
    const v = verifyKeyBirth(withExternal.key, options);
    expect(v.document.pcrs.get(0)?.toString('hex')).toBe(s.platform.pcr0);
    expect(v.document.userData).toEqual(birthUserData(withExternal.key.keyId, withExternal.key.address));
    // The birth binds this key id and address: another key's address does not pass.
    expect(() => verifyKeyBirth({ ...withExternal.key, address: plain.key.address }, options)).toThrow(
      expect.objectContaining({ code: 'USER_DATA_MISMATCH' }),
    );
  });

  it('signs every type; ethers v6 and viem each verify every result', async () => {
    const key = keys[1] as Key;
    const addr = key.address;

    const digest = keccak256('0xabcdef');
    const d = await ks.signDigest(key.keyId, digest);
    expect(await recoverAddress({ hash: digest, signature: d.signature })).toBe(addr);
    expect(ethersRecover(digest, d.signature)).toBe(addr);

    for (const message of ['gm from the enclave', { raw: '0x00ff10' as Hex }]) {
      const m = await ks.signMessage(key.keyId, message);
      expect(await recoverMessageAddress({ message, signature: m.signature })).toBe(addr);
      expect(verifyMessage(typeof message === 'string' ? message : getBytes(message.raw), m.signature)).toBe(addr);
      expect(m.hash).toBe(ethersHashMessage(typeof message === 'string' ? message : getBytes(message.raw)));
    }

    const domain = { name: 'Permit2', version: '1', chainId: 1, verifyingContract: '0x000000000022D473030F116dDEE9F6B43aC78BA3' as const };
    const types = {
      Item: [
        { name: 'token', type: 'address' },
        { name: 'amount', type: 'uint160' },
      ],
      Batch: [
        { name: 'items', type: 'Item[]' },
        { name: 'nonce', type: 'uint48' },
        { name: 'memo', type: 'string' },
      ],
    };
    const message = {
      items: [
        { token: '0x6B175474E89094C44Da98b954EedeAC495271d0F', amount: '1000' },
        { token: '0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48', amount: '0x10' },
      ],
      nonce: '7',
      memo: 'batch',
    };
    const t = await ks.signTypedData(key.keyId, { domain, types, primaryType: 'Batch', message });
    const viemMessage = { items: message.items.map((i) => ({ token: i.token as Hex, amount: BigInt(i.amount) })), nonce: 7, memo: 'batch' };
    expect(await recoverTypedDataAddress({ domain, types, primaryType: 'Batch', message: viemMessage, signature: t.signature })).toBe(addr);
    expect(verifyTypedData(domain, types, message, t.signature)).toBe(addr);
    expect(t.hash).toBe(hashTypedData({ domain, types, primaryType: 'Batch', message: viemMessage }));
    expect(t.hash).toBe(TypedDataEncoder.hash(domain, types, message));

    const to = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8' as const;
    const txs = [
      { type: 'legacy' as const, chainId: 1, nonce: 0, to, value: '1', gas: '21000', gasPrice: '1000000000' },
      {
        type: 'eip2930' as const,
        chainId: 10,
        nonce: 1,
        to,
        gas: '30000',
        gasPrice: '1000',
        accessList: [{ address: to, storageKeys: [keccak256('0x01')] }],
      },
      {
        type: 'eip1559' as const,
        chainId: 8453,
        nonce: 2,
        to: null,
        gas: '500000',
        maxFeePerGas: '2000000000',
        maxPriorityFeePerGas: '1000000',
        data: '0x6080' as Hex,
      },
    ];
    for (const tx of txs) {
      const res = await ks.signTransaction(key.keyId, tx);
      const serialized = res.serializedTransaction as Hex;
      expect(await recoverTransactionAddress({ serializedTransaction: serialized as never })).toBe(addr);
      expect(Transaction.from(serialized).from).toBe(addr);
      expect(parseTransaction(serialized).chainId).toBe(tx.chainId);
    }

    const auth = await ks.signAuthorization(key.keyId, { chainId: 1, address: to, nonce: 3 });
    expect(await recoverAddress({ hash: auth.hash, signature: auth.signature })).toBe(addr);
    const t7702 = await ks.signTransaction(key.keyId, {
      type: 'eip7702',
      chainId: 1,
      nonce: 4,
      to: addr,
      gas: '100000',
      maxFeePerGas: '1000000000',
      maxPriorityFeePerGas: '1',
      authorizationList: [{ address: to, chainId: 1, nonce: 3, r: auth.r, s: auth.s, yParity: auth.yParity }],
    });
    expect(Transaction.from(t7702.serializedTransaction as string).from).toBe(addr);
    expect(await recoverTransactionAddress({ serializedTransaction: t7702.serializedTransaction as never })).toBe(addr);

    const entryPoint = '0x0000000071727De22E5E9d8BAf0edAc6f37da032' as const;
    const userOperation = {
      sender: addr,
      nonce: '0x1',
      callData: '0x' as Hex,
      callGasLimit: '50000',
      verificationGasLimit: '100000',
      preVerificationGas: '21000',
      maxFeePerGas: '1000',
      maxPriorityFeePerGas: '10',
    };
    const uo = await ks.signUserOperation(key.keyId, { version: '0.7', chainId: 1, entryPoint, userOperation });
    const userOpHash = getUserOperationHash({
      chainId: 1,
      entryPointAddress: entryPoint,
      entryPointVersion: '0.7',
      userOperation: {
        ...userOperation,
        nonce: 1n,
        callGasLimit: 50000n,
        verificationGasLimit: 100000n,
        preVerificationGas: 21000n,
        maxFeePerGas: 1000n,
        maxPriorityFeePerGas: 10n,
        signature: '0x',
      },
    });
    expect(uo.userOperationHash).toBe(userOpHash);
    expect(await recoverMessageAddress({ message: { raw: userOpHash }, signature: uo.signature })).toBe(addr);
    expect(verifyMessage(getBytes(userOpHash), uo.signature)).toBe(addr);
    const uo6 = await ks.signUserOperation(key.keyId, {
      version: '0.6',
      chainId: 1,
      entryPoint: '0x5FF137D4b0FDCD49DcA30c7CF57E578a026d2789',
      userOperation: { ...userOperation, initCode: '0x', paymasterAndData: '0x' },
    });
    expect(verifyMessage(getBytes(uo6.userOperationHash as string), uo6.signature)).toBe(addr);

    // Negative controls, so that the recoveries above mean something: another key of this keystore signs the
    // same digest and message, and the verifiers recover that key's (different) address from its signatures;
    // and a signature above, checked against a changed payload, recovers some other address.
    const other = keys[0] as Key;
    expect(other.address).not.toBe(addr);
    const d0 = await ks.signDigest(other.keyId, digest);
    expect(d0.signature).not.toBe(d.signature);
    expect([await recoverAddress({ hash: digest, signature: d0.signature }), ethersRecover(digest, d0.signature)]).toEqual([
      other.address,
      other.address,
    ]);
    const m0 = await ks.signMessage(other.keyId, 'gm from the enclave');
    expect([
      await recoverMessageAddress({ message: 'gm from the enclave', signature: m0.signature }),
      verifyMessage('gm from the enclave', m0.signature),
    ]).toEqual([other.address, other.address]);
    const m1 = await ks.signMessage(key.keyId, 'gm from the enclave');
    for (const recovered of [
      await recoverMessageAddress({ message: 'gm from the enclave!', signature: m1.signature }),
      verifyMessage('gm from the enclave!', m1.signature),
    ]) {
      expect([addr, other.address]).not.toContain(recovered);
    }
    expect([addr, other.address]).not.toContain(verifyTypedData(domain, types, { ...message, nonce: '8' }, t.signature));
  });

  it('keeps signing across an enclave restart (keys re-decrypted on demand)', async () => {
    const key = keys[0] as Key;
    await ks.signMessage(key.keyId, 'before');
    await s.stopEnclave();
    const during = await ks.signMessage(key.keyId, 'during').catch((e: unknown) => e);
    expect(during).toBeInstanceOf(KeystoreApiError);
    expect((during as KeystoreApiError).retryable).toBe(true);
    await s.startEnclave();
    await waitReady(s);
    const after = await ks.signMessage(key.keyId, 'after');
    expect(await recoverMessageAddress({ message: 'after', signature: after.signature })).toBe(key.address);
  });

  it('signs with old keys after the whole stack restarts', async () => {
    await s.restartAll();
    await waitReady(s);
    ks = recordingClient();
    for (const key of keys) {
      expect((await ks.getKey(key.keyId)).address).toBe(key.address);
      const res = await ks.signMessage(key.keyId, 'after restart');
      expect(await recoverMessageAddress({ message: 'after restart', signature: res.signature })).toBe(key.address);
    }
    const more = await ks.createKey({ externalId: 'wallet:bob' });
    keys.push(more.key);
    await ks.signMessage(more.key.keyId, 'new key after restart');
  });

  it('leaves no private key in anything the parent side holds or sees', async () => {
    // The secrets, recovered the only way possible outside the enclave: with the KMS emulator's key material.
    const db = new Database(s.dbPath, { readonly: true });
    const secrets = keys.map((k) =>
      recoverSecret((db.prepare('SELECT blob FROM keys WHERE key_id = ?').get(k.keyId) as { blob: string }).blob, s.platform.kmsStateFile),
    );
    db.close();
    const wal = `${s.dbPath}-wal`;
    const haystacks: Record<string, Buffer | string> = {
      'parent <-> enclave traffic (RPC and KMS proxy)': s.capturedTraffic(),
      'parent logs': s.parentLogs(),
      'database file': fs.readFileSync(s.dbPath),
      ...(fs.existsSync(wal) ? { 'database WAL': fs.readFileSync(wal) } : {}),
      'HTTP responses': responses.join('\n'),
    };
    expect(s.capturedTraffic().length).toBeGreaterThan(10_000);
    expect(responses.length).toBeGreaterThan(10);
    // The scan finds a planted key, so an empty result means something.
    expect(findLeaks([secrets[0] as Buffer], { planted: `…${(secrets[0] as Buffer).toString('hex')}…` })).toEqual(['secret #0 in planted']);
    expect(findLeaks(secrets, haystacks)).toEqual([]);
  });
});
