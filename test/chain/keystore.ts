/**
 * The keystore for a chain test file: the whole stack (real enclave bundle over simulated vsock, NSM simulator,
 * KMS emulator, parent with SQLite; test/support/stack.ts) and SDK clients with the `full` token, whose keys live
 * in the default project (every request type allowed), and the `admin` token. One per test file: it takes a few
 * seconds to start.
 */
import type { Address, SignedAuthorization } from 'viem';
import { tempRunDir } from '@nks/shared-test/helpers';
import type { SignResult } from '@nks/shared/signing/schema';
import { KeystoreClient } from '../../client/src/sdk';
import { startStack, waitReady, type Stack } from '../support/stack';

export interface ChainKeystore {
  stack: Stack;
  client: KeystoreClient;
  admin: KeystoreClient;
  stop(): Promise<void>;
}

export async function startKeystore(name: string): Promise<ChainKeystore> {
  const stack = await startStack(tempRunDir(`nks-chain-${name}-`));
  try {
    await waitReady(stack);
  } catch (e) {
    await stack.stop();
    throw e;
  }
  const client = (token: string) => new KeystoreClient({ url: stack.url, token });
  return { stack, client: client(stack.tokens.full), admin: client(stack.tokens.admin), stop: () => stack.stop() };
}

/** A keystore `authorization` signature as the signed authorization a type-4 transaction carries (viem's shape). */
export function signedAuthorization(
  authorization: { chainId: number; address: Address; nonce: number },
  signed: SignResult,
): SignedAuthorization {
  return { ...authorization, r: signed.r, s: signed.s, yParity: signed.yParity };
}
