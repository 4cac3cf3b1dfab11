/*
 * disk-faults.so: an LD_PRELOAD shim that makes one path's disk misbehave on demand, for the chaos suite
 * (docs/RELIABILITY.md) and the store tests. Real faults at the system-call boundary, no privileges needed.
 *
 *   NKS_FAULT_PATH   files whose path starts with this (e.g. /tmp/x/keys.db: the database, its WAL and
 *                    journal; its -shm file is never touched) are the ones affected; unset: the shim does nothing
 *   NKS_FAULT_FULL   while this file exists, write/pwrite/writev on those files fail with ENOSPC (a full disk:
 *                    SQLite answers SQLITE_FULL)
 *   NKS_FAULT_EIO    while this file exists, fsync/fdatasync on those files fail with EIO (SQLITE_IOERR_FSYNC)
 *   NKS_FAULT_STALL  while this file exists, fsync/fdatasync on those files wait (a stalled disk), and return
 *                    normally once it is removed
 *
 * The control files are checked on every call (one access(2)); a file descriptor's path is read from
 * /proc/self/fd only while a control file exists, so the shim costs next to nothing when no fault is on.
 * Build: cc -shared -fPIC -O2 -o disk-faults.so disk-faults.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

static int on(const char *control) {
  const char *f = env(control);
  return f && env("NKS_FAULT_PATH") && access(f, F_OK) == 0;
}

/* Whether fd is a file under NKS_FAULT_PATH (its -shm file excepted: SQLite maps it, and never syncs it). */
static int targeted(int fd) {
  const char *prefix = env("NKS_FAULT_PATH");
  char link[64], target[4096];
  if (!prefix) return 0;
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, target, sizeof target - 1);
  if (n <= 0) return 0;
  target[n] = 0;
  size_t len = strlen(prefix);
  if (strncmp(target, prefix, len) != 0) return 0;
  return n < 4 || strcmp(target + n - 4, "-shm") != 0;
}

static int full(int fd) { return on("NKS_FAULT_FULL") && targeted(fd); }

static int sync_fault(int fd) {
  if (on("NKS_FAULT_STALL") && targeted(fd)) {
    struct timespec ten_ms = {0, 10 * 1000 * 1000};
    while (on("NKS_FAULT_STALL")) nanosleep(&ten_ms, NULL);
  }
  if (on("NKS_FAULT_EIO") && targeted(fd)) {
    errno = EIO;
    return -1;
  }
  return 0;
}

#define REAL(ret, name, ...)                                  \
  static ret (*real_##name)(__VA_ARGS__);                     \
  static ret (*get_##name(void))(__VA_ARGS__) {               \
    if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name);  \
    return real_##name;                                       \
  }

REAL(ssize_t, write, int, const void *, size_t)
REAL(ssize_t, pwrite, int, const void *, size_t, off_t)
REAL(ssize_t, pwrite64, int, const void *, size_t, off_t)
REAL(ssize_t, writev, int, const struct iovec *, int)
REAL(int, fsync, int)
REAL(int, fdatasync, int)

ssize_t write(int fd, const void *buf, size_t count) {
  if (full(fd)) return errno = ENOSPC, -1;
  return get_write()(fd, buf, count);
}
ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
  if (full(fd)) return errno = ENOSPC, -1;
  return get_pwrite()(fd, buf, count, offset);
}
ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
  if (full(fd)) return errno = ENOSPC, -1;
  return get_pwrite64()(fd, buf, count, offset);
}
ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
  if (full(fd)) return errno = ENOSPC, -1;
  return get_writev()(fd, iov, iovcnt);
}
int fsync(int fd) {
  if (sync_fault(fd) != 0) return -1;
  return get_fsync()(fd);
}
int fdatasync(int fd) {
  if (sync_fault(fd) != 0) return -1;
  return get_fdatasync()(fd);
}
