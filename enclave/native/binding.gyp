{
  # The enclave's three addons, built by scripts/build.mjs with node-gyp: nsm.node (/dev/nsm), vsock.node
  # (AF_VSOCK sockets) and secp256k1.node (signing with libsecp256k1, docs/SIGNING-CURVE.md). All go into the enclave image, so their bytes are part of PCR0 and must not depend on
  # where they were built (scripts/check-reproducible.mjs builds twice in different directories and
  # environments and compares):
  # - node-gyp's Release build has no -g, so there is no DWARF; with -g the objects record the build
  #   directory (DW_AT_comp_dir) and differ per checkout. -ffile-prefix-map rewrites that directory to "." in
  #   debug info and __FILE__, so the output stays path-independent even if -g is added (checked: with -g and
  #   without this flag, two checkouts give different vsock.node bytes; with it, identical ones).
  # - --build-id=sha1: the build ID note is a hash of the linked contents, never random (uuid), whatever the
  #   linker's default.
  # node-gyp appends Node's own Release flags after these (-O3 -fno-omit-frame-pointer, common.gypi): the last -O
  # wins, so the code is compiled at -O3. npm run test:ctime reads the flags from the makefiles node-gyp generates
  # from this file and checks the code under valgrind (docs/SIGNING-CURVE.md, "Checked with valgrind").
  "target_defaults": {
    "cflags": [
      "-Wall", "-Wextra", "-Werror", "-O2", "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2",
      "-ffile-prefix-map=<(module_root_dir)=."
    ],
    "ldflags": ["-Wl,--build-id=sha1"],
    "defines": ["NAPI_VERSION=8"]
  },
  "targets": [
    { "target_name": "nsm", "sources": ["nsm.c"] },
    { "target_name": "vsock", "sources": ["vsock.c"] },
    # libsecp256k1 as one translation unit, from libsecp256k1/: the hash-checked copy scripts/build.mjs makes of
    # the source the npm package secp256k1 bundles (libsecp256k1.sha256). The configuration is upstream's
    # default for a 64-bit desktop build of that version (its configure script's choices), with only the
    # recovery module: 52-bit limbs with __int128 (x86-64 and arm64 both have it), x86-64 assembly on x64,
    # no GMP, an ecmult_gen table of 4-bit windows computed when a context is created.
    {
      "target_name": "libsecp256k1",
      "type": "static_library",
      "sources": ["libsecp256k1/src/secp256k1.c"],
      "include_dirs": ["libsecp256k1", "libsecp256k1/src"],
      # Upstream's code of that version compiles with these two warnings under GCC 12 (functions of modules
      # not enabled; ARG_CHECK's NULL tests of parameters declared nonnull), so they are not errors here.
      "cflags": ["-Wno-unused-function", "-Wno-nonnull-compare"],
      "defines": [
        "ECMULT_GEN_PREC_BITS=4", "ECMULT_WINDOW_SIZE=15", "ENABLE_MODULE_RECOVERY=1",
        "USE_NUM_NONE=1", "USE_FIELD_INV_BUILTIN=1", "USE_SCALAR_INV_BUILTIN=1", "HAVE___INT128=1",
        "USE_FIELD_5X52=1", "USE_SCALAR_4X64=1"
      ],
      "conditions": [["target_arch=='x64'", { "defines": ["USE_ASM_X86_64=1"] }]]
    },
    { "target_name": "secp256k1", "sources": ["secp256k1.c", "secp256k1_core.c"], "dependencies": ["libsecp256k1"] }
  ]
}
