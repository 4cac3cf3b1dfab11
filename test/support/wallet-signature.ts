/** The checks of a TrueWallet signature the SDK relies on, for Jest tests (ethers `verifyMessage`, v 27/28, low s). */
import { getBytes, Signature, verifyMessage } from 'ethers';

/** secp256k1's order: a low-s signature has s ≤ n/2. */
const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

/**
 * Checks a TrueWallet signature as the SDK uses it: 65 bytes hex (r ‖ s ‖ v), v 27 or 28, low s, and EIP-191
 * over `message` (the 32 raw bytes of a hash, or the text) recovering to `address`.
 */
export function expectWalletSignature(signature: string, message: { hash: string } | { text: string }, address: string): void {
  expect(signature).toMatch(/^0x[0-9a-f]{130}$/);
  const v = parseInt(signature.slice(130), 16);
  expect([27, 28]).toContain(v);
  const sig = Signature.from(signature);
  expect(BigInt(sig.s) <= N / 2n).toBe(true);
  const recovered = 'hash' in message ? verifyMessage(getBytes(message.hash), signature) : verifyMessage(message.text, signature);
  expect(recovered).toBe(address);
}
