{
  # The enclave's two addons, built by scripts/build.mjs with node-gyp: nsm.node (/dev/nsm) and vsock.node
  # (AF_VSOCK sockets). Both go into the enclave image, so their bytes are part of PCR0 and must not depend on
  # where they were built (scripts/check-reproducible.mjs builds twice in different directories and
  # environments and compares):
  # - node-gyp's Release build has no -g, so there is no DWARF; with -g the objects record the build
  #   directory (DW_AT_comp_dir) and differ per checkout. -ffile-prefix-map rewrites that directory to "." in
  #   debug info and __FILE__, so the output stays path-independent even if -g is added (checked: with -g and
  #   without this flag, two checkouts give different vsock.node bytes; with it, identical ones).
  # - --build-id=sha1: the build ID note is a hash of the linked contents, never random (uuid), whatever the
  #   linker's default.
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
    { "target_name": "vsock", "sources": ["vsock.c"] }
  ]
}
