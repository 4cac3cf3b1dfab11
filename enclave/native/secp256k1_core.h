/*
 * The secp256k1 addon's secret-handling code without Node-API (docs/SIGNING-CURVE.md): what secp256k1.c calls
 * on its stack copies of the secret and digest, compiled into the addon (binding.gyp) and, with the addon's
 * own flags, into the valgrind constant-time harness (test/ctime/valgrind_ctime.c, npm run test:ctime).
 * Hidden visibility: these are not exported from secp256k1.node.
 */
#ifndef NKS_SECP256K1_CORE_H
#define NKS_SECP256K1_CORE_H

#include <stddef.h>

#include "libsecp256k1/include/secp256k1.h"
#include "libsecp256k1/include/secp256k1_recovery.h"

#define NKS_HIDDEN __attribute__((visibility("hidden")))

/* Zeroes memory in a way the compiler may not drop as a dead store. */
NKS_HIDDEN void nks_wipe(void *p, size_t n);

/* Randomizes the context's blinding with a 32-byte seed; 1 on success. */
NKS_HIDDEN int nks_context_randomize(secp256k1_context *ctx, const unsigned char seed[32]);

/* 1 when the secret is in [1, n-1], else 0. */
NKS_HIDDEN int nks_seckey_verify(const secp256k1_context *ctx, const unsigned char secret[32]);

/* Writes the uncompressed public key (0x04 || x || y) to out: 1; an invalid secret: 0; an unexpected length: -1. */
NKS_HIDDEN int nks_pubkey_create(const secp256k1_context *ctx, const unsigned char secret[32], unsigned char out[65]);

/*
 * Reduces the digest modulo n in place, then writes r || s || recid (RFC 6979 nonce, low S) to out: 1; an
 * invalid secret: 0; a recovery id out of 0..3: -1.
 */
NKS_HIDDEN int nks_sign_recoverable(const secp256k1_context *ctx, unsigned char digest[32], const unsigned char secret[32],
                                    unsigned char out[65]);

#endif
