{
  "targets": [
    {
      "target_name": "nsm",
      "sources": ["nsm.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-O2", "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
