/*
 * Node-API addon: secp256k1 ECDSA through libsecp256k1 (bitcoin-core), compiled into this addon from the
 * hash-checked source that scripts/build.mjs copies into libsecp256k1/ (docs/SIGNING-CURVE.md). The calls into
 * the library on the secret, and the wiping after them, are in secp256k1_core.c (plain C, so that the valgrind
 * constant-time harness runs the same code: npm run test:ctime).
 *
 *   seckeyVerify(secret: Uint8Array): boolean                 secret in [1, n-1]
 *   publicKeyCreate(secret: Uint8Array): Buffer               65 bytes, uncompressed (0x04 || x || y)
 *   signRecoverable(digest: Uint8Array, secret: Uint8Array): Buffer
 *       65 bytes r || s || recid: RFC 6979 nonce (libsecp256k1's default nonce function, no extra data),
 *       s normalized to the lower half (libsecp256k1 always does), recid 0..3
 *
 * One signing context per Node environment (main thread and each worker thread), created on first load and
 * randomized (blinding of the constant-time generator multiplication) with 32 bytes from getrandom(2).
 *
 * The secret is copied from the caller's array into a stack buffer; that buffer, the digest copy, the
 * library's output structures and the stack the library ran on are wiped before returning. Errors name the
 * argument and the rule broken, never its bytes.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <node_api.h>

#include "secp256k1_core.h"

#define CHECK(env, call)                                   \
  do {                                                     \
    if ((call) != napi_ok) {                               \
      napi_throw_error((env), NULL, "N-API call failed");  \
      return NULL;                                         \
    }                                                      \
  } while (0)

typedef struct {
  secp256k1_context *ctx;
  /* Set by the library's callbacks: an illegal argument or an internal error (never expected). */
  int misuse;
} curve_env;

static void on_misuse(const char *message, void *data) {
  (void)message;
  ((curve_env *)data)->misuse = 1;
}

static void finalize_env(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  curve_env *ce = data;
  if (ce->ctx) secp256k1_context_destroy(ce->ctx);
  free(ce);
}

static curve_env *env_of(napi_env env) {
  void *data = NULL;
  if (napi_get_instance_data(env, &data) != napi_ok || data == NULL) {
    napi_throw_error(env, NULL, "secp256k1: the addon's context is missing");
    return NULL;
  }
  return data;
}

/* Fills out with n bytes from the kernel's CSPRNG; 0 on success. */
static int os_random(unsigned char *out, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t got = getrandom(out + done, n - done, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    done += (size_t)got;
  }
  return 0;
}

/*
 * Reads a Uint8Array argument of exactly `len` bytes into `out`; throws a TypeError naming `what` otherwise.
 * Returns 0 on success.
 */
static int read_bytes(napi_env env, napi_value value, const char *what, unsigned char *out, size_t len) {
  bool is_typed = false;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed) {
    char msg[128];
    snprintf(msg, sizeof msg, "secp256k1: %s must be a Uint8Array of %zu bytes", what, len);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return -1;
  }
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  if (napi_get_typedarray_info(env, value, &type, &length, &data, NULL, NULL) != napi_ok) {
    napi_throw_error(env, NULL, "N-API call failed");
    return -1;
  }
  if (type != napi_uint8_array || length != len) {
    char msg[160];
    if (type != napi_uint8_array) {
      snprintf(msg, sizeof msg, "secp256k1: %s must be a Uint8Array of %zu bytes", what, len);
    } else {
      snprintf(msg, sizeof msg, "secp256k1: %s must be %zu bytes, got %zu", what, len, length);
    }
    napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE", msg);
    return -1;
  }
  memcpy(out, data, len);
  return 0;
}

static napi_value get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != want) {
    char msg[64];
    snprintf(msg, sizeof msg, "secp256k1: expected %zu argument%s, got %zu", want, want == 1 ? "" : "s", argc);
    napi_throw_type_error(env, "ERR_INVALID_ARG_COUNT", msg);
    return NULL;
  }
  napi_value ok;
  napi_get_boolean(env, true, &ok);
  return ok;
}

static napi_value throw_invalid_key(napi_env env) {
  napi_throw_range_error(env, "ERR_INVALID_SECRET_KEY", "secp256k1: invalid secret key (zero or not below the curve order)");
  return NULL;
}

static napi_value throw_misuse(napi_env env, curve_env *ce) {
  ce->misuse = 0;
  napi_throw_error(env, NULL, "secp256k1: libsecp256k1 refused an argument (internal error)");
  return NULL;
}

static napi_value make_buffer(napi_env env, const unsigned char *bytes, size_t len) {
  void *data = NULL;
  napi_value out;
  CHECK(env, napi_create_buffer_copy(env, len, bytes, &data, &out));
  return out;
}

static napi_value seckey_verify(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  curve_env *ce = env_of(env);
  if (!ce) return NULL;
  unsigned char secret[32];
  if (read_bytes(env, argv[0], "secret key", secret, 32)) return NULL;
  int valid = nks_seckey_verify(ce->ctx, secret);
  nks_wipe(secret, sizeof secret);
  if (ce->misuse) return throw_misuse(env, ce);
  napi_value out;
  CHECK(env, napi_get_boolean(env, valid, &out));
  return out;
}

/*
 * The answer of a call that produced `n` public bytes: the library's own refusal of an argument, an invalid
 * secret key (ok 0), an impossible output (ok < 0, `unexpected`), or the bytes.
 */
static napi_value answer(napi_env env, curve_env *ce, int ok, const unsigned char *bytes, size_t n, const char *unexpected) {
  if (ce->misuse) return throw_misuse(env, ce);
  if (ok == 0) return throw_invalid_key(env);
  if (ok < 0) {
    napi_throw_error(env, NULL, unexpected);
    return NULL;
  }
  return make_buffer(env, bytes, n);
}

static napi_value pubkey_create(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  curve_env *ce = env_of(env);
  if (!ce) return NULL;
  unsigned char secret[32];
  if (read_bytes(env, argv[0], "secret key", secret, 32)) return NULL;
  unsigned char serialized[65];
  int ok = nks_pubkey_create(ce->ctx, secret, serialized);
  nks_wipe(secret, sizeof secret);
  return answer(env, ce, ok, serialized, sizeof serialized, "secp256k1: unexpected public key length");
}

static napi_value sign_recoverable(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  curve_env *ce = env_of(env);
  if (!ce) return NULL;
  unsigned char digest[32];
  unsigned char secret[32];
  if (read_bytes(env, argv[0], "digest", digest, 32)) return NULL;
  if (read_bytes(env, argv[1], "secret key", secret, 32)) return NULL;
  unsigned char out[65];
  int ok = nks_sign_recoverable(ce->ctx, digest, secret, out);
  nks_wipe(secret, sizeof secret);
  nks_wipe(digest, sizeof digest);
  return answer(env, ce, ok, out, sizeof out, "secp256k1: unexpected recovery id");
}

static napi_value init(napi_env env, napi_value exports) {
  curve_env *ce = calloc(1, sizeof *ce);
  if (!ce) {
    napi_throw_error(env, NULL, "secp256k1: out of memory");
    return NULL;
  }
  ce->ctx = secp256k1_context_create(SECP256K1_CONTEXT_SIGN);
  if (!ce->ctx) {
    free(ce);
    napi_throw_error(env, NULL, "secp256k1: context creation failed");
    return NULL;
  }
  secp256k1_context_set_illegal_callback(ce->ctx, on_misuse, ce);
  secp256k1_context_set_error_callback(ce->ctx, on_misuse, ce);
  unsigned char seed[32];
  if (os_random(seed, sizeof seed) != 0) {
    secp256k1_context_destroy(ce->ctx);
    free(ce);
    napi_throw_error(env, NULL, "secp256k1: getrandom failed, the context cannot be randomized");
    return NULL;
  }
  int randomized = nks_context_randomize(ce->ctx, seed);
  nks_wipe(seed, sizeof seed);
  if (!randomized || ce->misuse) {
    secp256k1_context_destroy(ce->ctx);
    free(ce);
    napi_throw_error(env, NULL, "secp256k1: context randomization failed");
    return NULL;
  }
  if (napi_set_instance_data(env, ce, finalize_env, NULL) != napi_ok) {
    secp256k1_context_destroy(ce->ctx);
    free(ce);
    napi_throw_error(env, NULL, "N-API call failed");
    return NULL;
  }
  napi_property_descriptor props[] = {
    {"seckeyVerify", NULL, seckey_verify, NULL, NULL, NULL, napi_enumerable, NULL},
    {"publicKeyCreate", NULL, pubkey_create, NULL, NULL, NULL, napi_enumerable, NULL},
    {"signRecoverable", NULL, sign_recoverable, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
