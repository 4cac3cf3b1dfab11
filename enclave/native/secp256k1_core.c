/*
 * The secp256k1 addon's secret-handling code without Node-API (secp256k1_core.h, docs/SIGNING-CURVE.md).
 * Every entry point wipes the library's output structures it used and the stack the library ran on before
 * returning; the caller wipes its own copies of the secret and digest.
 */
#include <string.h>

#include "secp256k1_core.h"

void nks_wipe(void *p, size_t n) {
  explicit_bzero(p, n);
}

/*
 * Zeroes the stack below the caller's frame, where libsecp256k1's frames were (its scalars, nonce, HMAC-DRBG
 * state and the blinded point it clears itself, with plain memset a compiler may elide). 32 KiB is several
 * times the deepest call chain on the signing path.
 */
#define STACK_WIPE_BYTES (32 * 1024)
static void __attribute__((noinline)) wipe_stack(void) {
  unsigned char area[STACK_WIPE_BYTES];
  explicit_bzero(area, sizeof area);
  __asm__ __volatile__("" : : "r"(area) : "memory");
}

int nks_context_randomize(secp256k1_context *ctx, const unsigned char seed[32]) {
  int randomized = secp256k1_context_randomize(ctx, seed);
  wipe_stack();
  return randomized;
}

int nks_seckey_verify(const secp256k1_context *ctx, const unsigned char secret[32]) {
  int valid = secp256k1_ec_seckey_verify(ctx, secret);
  wipe_stack();
  return valid == 1;
}

int nks_pubkey_create(const secp256k1_context *ctx, const unsigned char secret[32], unsigned char out[65]) {
  secp256k1_pubkey pubkey;
  int ok = secp256k1_ec_pubkey_create(ctx, &pubkey, secret);
  size_t len = 65;
  if (ok) ok = secp256k1_ec_pubkey_serialize(ctx, out, &len, &pubkey, SECP256K1_EC_UNCOMPRESSED);
  nks_wipe(&pubkey, sizeof pubkey);
  wipe_stack();
  if (!ok) return 0;
  return len == 65 ? 1 : -1;
}

/* The group order n, big-endian. */
static const unsigned char ORDER[32] = {
  0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE,
  0xBA, 0xAE, 0xDC, 0xE6, 0xAF, 0x48, 0xA0, 0x3B, 0xBF, 0xD2, 0x5E, 0x8C, 0xD0, 0x36, 0x41, 0x41,
};

/*
 * RFC 6979 (section 2.4 and 3.2 step d: h1 = bits2octets(H(m)), i.e. the digest reduced modulo n) seeds its
 * nonce with the reduced digest; libsecp256k1's nonce function receives the digest as given. For a digest
 * >= n (probability about 2^-128 for a hash) the two would differ, so the digest is reduced here first: one
 * subtraction suffices since 2n > 2^256. The digest is public; this branch reveals nothing secret.
 */
static void reduce_digest(unsigned char d[32]) {
  int cmp = 0;
  for (int i = 0; i < 32 && cmp == 0; i++) cmp = (d[i] > ORDER[i]) - (d[i] < ORDER[i]);
  if (cmp < 0) return;
  int borrow = 0;
  for (int i = 31; i >= 0; i--) {
    int v = (int)d[i] - (int)ORDER[i] - borrow;
    borrow = v < 0;
    d[i] = (unsigned char)(v + (borrow ? 256 : 0));
  }
}

int nks_sign_recoverable(const secp256k1_context *ctx, unsigned char digest[32], const unsigned char secret[32],
                         unsigned char out[65]) {
  reduce_digest(digest);
  secp256k1_ecdsa_recoverable_signature sig;
  int recid = -1;
  /* NULL nonce function: secp256k1_nonce_function_default (RFC 6979 with HMAC-SHA256), no extra data. */
  int ok = secp256k1_ecdsa_sign_recoverable(ctx, &sig, digest, secret, NULL, NULL);
  if (ok) ok = secp256k1_ecdsa_recoverable_signature_serialize_compact(ctx, out, &recid, &sig);
  nks_wipe(&sig, sizeof sig);
  wipe_stack();
  if (!ok) return 0;
  if (recid < 0 || recid > 3) return -1;
  out[64] = (unsigned char)recid;
  return 1;
}
