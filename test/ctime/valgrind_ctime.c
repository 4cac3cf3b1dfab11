/*
 * Constant-time check of the enclave's signing code under valgrind (npm run test:ctime, scripts/ctime.mjs,
 * docs/SIGNING-CURVE.md "Checked with valgrind"), in the manner of libsecp256k1's own valgrind_ctime_test.c:
 * the secret key and the context randomization seed are marked undefined with VALGRIND_MAKE_MEM_UNDEFINED, so
 * memcheck reports every conditional jump and every memory address that depends on them. Only what is public
 * by design is marked defined again after each call, each with the reason.
 *
 * It calls the addon's own plain-C entry points (enclave/native/secp256k1_core.c), linked with libsecp256k1,
 * both compiled with the flags node-gyp uses for the addon (scripts/ctime.mjs reads them from the generated
 * makefiles and checks the code is byte-identical to the addon's).
 *
 * NKS_CTIME_INJECT=1 adds a branch on the secret, NKS_CTIME_INJECT=2 a table lookup indexed by it: the script
 * builds those too and requires valgrind to report them, so the check is shown able to fail on every run.
 */
#include <stdio.h>
#include <string.h>
#include <valgrind/memcheck.h>

#include "secp256k1_core.h"

#define ROUNDS 4

#if defined(NKS_CTIME_INJECT)
static volatile unsigned sink;
#if NKS_CTIME_INJECT == 1
static void __attribute__((noinline)) bump(void) {
  sink++;
}
#else
static const unsigned char table[256] = {1};
#endif
/* Deliberately not constant time: must be reported (scripts/ctime.mjs fails if it is not). */
static void __attribute__((noinline)) inject_leak(const unsigned char *secret) {
#if NKS_CTIME_INJECT == 1
  if (secret[0] & 1) bump(); /* a call: the compiler cannot turn it into a conditional move */
#else
  sink += table[secret[0]];
#endif
}
#endif

static int failed(const char *what) {
  fprintf(stderr, "valgrind_ctime: %s\n", what);
  return 2;
}

int main(void) {
  if (!RUNNING_ON_VALGRIND) return failed("must run under valgrind (scripts/ctime.mjs runs it)");
  unsigned char seed[32], secret[32], digest[32], out[65];
  secp256k1_context *ctx = secp256k1_context_create(SECP256K1_CONTEXT_SIGN);
  if (!ctx) return failed("context creation failed");

  for (int i = 0; i < 32; i++) seed[i] = (unsigned char)(i * 37 + 11);
  VALGRIND_MAKE_MEM_UNDEFINED(seed, sizeof seed);
  int ret = nks_context_randomize(ctx, seed);
  /* Public: whether randomization succeeded (the addon refuses to load otherwise). */
  VALGRIND_MAKE_MEM_DEFINED(&ret, sizeof ret);
  if (ret != 1) return failed("context randomization failed");

  for (int round = 0; round < ROUNDS; round++) {
    /* Different keys and digests each round, among them a digest above the curve order (public either way). */
    for (int i = 0; i < 32; i++) {
      secret[i] = (unsigned char)(i * 29 + round * 101 + 1);
      digest[i] = (unsigned char)(round == 3 ? 0xff : i * 13 + round * 7);
    }
    VALGRIND_MAKE_MEM_UNDEFINED(secret, sizeof secret);

    ret = nks_seckey_verify(ctx, secret);
    /* Public: a key's validity (the enclave only holds valid keys and refuses others with an error). */
    VALGRIND_MAKE_MEM_DEFINED(&ret, sizeof ret);
    if (ret != 1) return failed("seckey verify refused a valid key");

    ret = nks_pubkey_create(ctx, secret, out);
    /* Public: success (key validity, as above) and the public key itself. */
    VALGRIND_MAKE_MEM_DEFINED(&ret, sizeof ret);
    VALGRIND_MAKE_MEM_DEFINED(out, sizeof out);
    if (ret != 1 || out[0] != 0x04) return failed("public key creation failed");

    ret = nks_sign_recoverable(ctx, digest, secret, out);
    /* Public: success (key validity) and r || s || recid, the signature the enclave returns. */
    VALGRIND_MAKE_MEM_DEFINED(&ret, sizeof ret);
    VALGRIND_MAKE_MEM_DEFINED(out, sizeof out);
    if (ret != 1 || out[64] > 3) return failed("signing failed");

#if defined(NKS_CTIME_INJECT)
    inject_leak(secret);
#endif
    VALGRIND_MAKE_MEM_DEFINED(secret, sizeof secret);
  }
  secp256k1_context_destroy(ctx);
  printf("valgrind_ctime: %d rounds done\n", ROUNDS);
  return 0;
}
