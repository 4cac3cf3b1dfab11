/*
 * Node-API addon: non-blocking AF_VSOCK stream sockets driven by Node's own event loop (libuv). It replaces the
 * prebuilt node-vsock binding; every byte the enclave sends and receives passes through this file.
 *
 * Nothing here blocks and there are no threads: every socket is O_NONBLOCK and watched by a uv_poll_t on the
 * loop Node runs JavaScript on, and JavaScript is called back from that loop.
 *
 *   listen(port, backlog, onEvent) -> h      AF_VSOCK socket bound to VMADDR_CID_ANY:port, listening
 *   connect(cid, port, onEvent) -> h         non-blocking connect; then 'connect' or 'error'
 *   socketpair() -> [h, h]                   a connected AF_UNIX pair (for tests: same I/O code, no vsock)
 *   listenUnix(path, backlog, onEvent) -> h  an AF_UNIX listener (for tests: same accept code, no vsock)
 *   attach(h, onEvent)                       gives an accepted or socketpair handle its callback
 *   readStart(h) / readStop(h)               read when readable / stop reading from the kernel (listener: accept)
 *   write(h, buffer) -> n                    bytes the kernel took, 0 if it would block; when n < length, one
 *                                            'writable' event follows once the socket can take more
 *   shutdown(h)                              no more writes (SHUT_WR); the peer reads end-of-stream
 *   close(h)                                 idempotent
 *
 * onEvent(event, arg): 'connection' (a new handle, not yet attached), 'connect', 'data' (a Buffer, one read),
 * 'end' (the peer shut down its side; reading stops), 'writable', 'error' (an Error; a connection stops polling
 * and is to be closed, a listener keeps accepting).
 * Errors, thrown or passed, are Error objects with `code` (the errno name, e.g. 'EPIPE') and `syscall`.
 *
 * Lifetime (h is an opaque JS object wrapping a `sock_t`; only handles made here are accepted):
 * - A handle is closed by close(h), or by its finalizer when JavaScript drops the object without closing it,
 *   so no fd leaks. Closing drops the callback, stops the poll handle and uv_close()s it, and closes the fd.
 * - An attached handle holds its callback strongly until it is closed. The JS wrapper's callback refers to the
 *   wrapper, so, like a Node socket, an open connection or listener is not garbage: close() releases it.
 * - The sock_t is freed when both the JS object is finalized and libuv has finished closing the poll handle,
 *   whichever comes last; nothing touches it afterwards. A callback that closes its own handle is safe: the
 *   memory outlives the poll callback it runs in.
 * - If the Node environment ends with handles still open (a worker thread that exits), a cleanup hook closes
 *   them, so that its loop can be closed.
 * Each fd is closed exactly once, in sock_close() (or, before it is wrapped in a handle, where it was opened).
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/vm_sockets.h>
#include <node_api.h>
#include <uv.h>

/* One read's worth: the Buffer handed to JavaScript is at most this big. */
#define READ_CHUNK_BYTES 65536
/* Connections accepted per readiness event, so a flood of connections cannot starve other sockets. */
#define ACCEPT_BATCH 16
#define MAX_BACKLOG 4096

/* Marks the JS objects this addon made, so a stray object can never be taken for a sock_t. */
static const napi_type_tag HANDLE_TAG = {0x6e6b735f76736f63ULL, 0x6b5f68616e646c65ULL};

typedef enum { KIND_CONNECTION, KIND_LISTENER } sock_kind;

typedef struct {
  napi_env env;
  sock_kind kind;
  int fd;                                  /* -1 once closed */
  bool closed;                             /* close() happened: no more events, no more syscalls */
  bool reading;                            /* readStart in effect (a listener: accepting) */
  bool want_writable;                      /* a write came up short: report 'writable' once */
  bool connecting;                         /* connect() in progress: it completes when writable */
  bool poll_open;                          /* uv_poll_init done and its uv_close not yet completed */
  bool wrapper_alive;                      /* the JS object has not been finalized */
  int poll_events;                         /* what the poll handle watches now (0: stopped) */
  uv_poll_t poll;
  napi_ref callback;                       /* strong; NULL before attach and after close */
  napi_async_context async;                /* for napi_make_callback (async_hooks, microtasks) */
  napi_async_cleanup_hook_handle cleanup;  /* closes the handle if the environment ends first */
} sock_t;

#define CHECK(env, call)                                   \
  do {                                                     \
    if ((call) != napi_ok) {                               \
      napi_throw_error((env), NULL, "N-API call failed");  \
      return NULL;                                         \
    }                                                      \
  } while (0)

/* ---- errors ---------------------------------------------------------------------------------------- */

/* An Error with `code` = the errno name and `syscall`, like Node's own socket errors. */
static napi_value errno_error(napi_env env, int err, const char *syscall) {
  char name[32], description[96], text[160];
  napi_value code, message, error = NULL, sys;
  /* The _r variants: the plain ones allocate (and never free) a string for an errno libuv does not know. */
  uv_err_name_r(-err, name, sizeof(name));
  uv_strerror_r(-err, description, sizeof(description));
  snprintf(text, sizeof(text), "%s %s: %s", syscall, name, description);
  if (napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message) != napi_ok ||
      napi_create_error(env, code, message, &error) != napi_ok) {
    return NULL;
  }
  if (napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sys) == napi_ok) {
    napi_set_named_property(env, error, "syscall", sys);
  }
  return error;
}

static napi_value throw_errno(napi_env env, int err, const char *syscall) {
  napi_value error = errno_error(env, err, syscall);
  if (error != NULL) napi_throw(env, error);
  else napi_throw_error(env, NULL, syscall);
  return NULL;
}

/* ---- the poll handle and events -------------------------------------------------------------------- */

static void on_poll(uv_poll_t *poll, int status, int events);

static void maybe_free(sock_t *s) {
  if (!s->wrapper_alive && !s->poll_open) free(s);
}

static void on_poll_closed(uv_handle_t *handle) {
  sock_t *s = (sock_t *)handle->data;
  s->poll_open = false;
  if (s->cleanup != NULL) {
    napi_remove_async_cleanup_hook(s->cleanup);
    s->cleanup = NULL;
  }
  maybe_free(s);
}

/* Idempotent. After it, no event is delivered and no syscall is made on the (closed) fd. */
static void sock_close(sock_t *s) {
  if (s->closed) return;
  s->closed = true;
  s->reading = s->want_writable = s->connecting = false;
  if (s->callback != NULL) {
    napi_delete_reference(s->env, s->callback);
    s->callback = NULL;
  }
  if (s->async != NULL) {
    napi_async_destroy(s->env, s->async);
    s->async = NULL;
  }
  /* uv_close stops the poll at once; the handle's memory is libuv's until on_poll_closed. */
  if (s->poll_open) uv_close((uv_handle_t *)&s->poll, on_poll_closed);
  /* Safe right after uv_close (libuv: "the fd can be safely closed immediately after uv_poll_stop() or
   * uv_close()"), and the peer learns of the close now rather than a loop turn later. close() is not retried:
   * on Linux the fd is released even when it reports EINTR. */
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
}

/* The environment is ending (e.g. a worker thread exits) with this handle open: close it, so that the loop
 * can be closed. The hook is removed in on_poll_closed, which is what tells Node the cleanup is done. */
static void on_env_cleanup(napi_async_cleanup_hook_handle hook, void *arg) {
  (void)hook;
  sock_close((sock_t *)arg);
}

/* Watches exactly what is wanted now; a socket nobody reads or waits on is not polled at all, so a paused
 * connection does not read from the kernel and its peer's sends block once the kernel's buffer is full. */
static void update_poll(sock_t *s) {
  if (s->closed || !s->poll_open) return;
  int events = 0;
  if (s->reading) events |= UV_READABLE;
  if (s->want_writable || s->connecting) events |= UV_WRITABLE;
  if (events == s->poll_events) return;
  s->poll_events = events;
  /* Both only fail for a closing handle or a bad event mask, neither possible here. */
  if (events != 0) (void)uv_poll_start(&s->poll, events, on_poll);
  else (void)uv_poll_stop(&s->poll);
}

/* Calls onEvent(event, arg). Must run inside a handle scope. The callback may close the handle: callers check
 * s->closed afterwards (the memory stays valid until on_poll_closed, which cannot run during this callback). */
static void emit(sock_t *s, const char *event, napi_value arg) {
  napi_env env = s->env;
  napi_value cb, recv, argv[2], result;
  bool pending = false;
  if (s->closed || s->callback == NULL) return;
  /* `this` for the callback: make_callback needs an object; the callbacks do not use it. */
  if (napi_get_reference_value(env, s->callback, &cb) != napi_ok || cb == NULL || napi_get_global(env, &recv) != napi_ok ||
      napi_create_string_utf8(env, event, NAPI_AUTO_LENGTH, &argv[0]) != napi_ok) {
    return;
  }
  if (arg != NULL) argv[1] = arg;
  else if (napi_get_undefined(env, &argv[1]) != napi_ok) return;
  /* make_callback, not call_function: it runs queued microtasks and nextTicks afterwards, as any I/O
   * callback of Node does. An exception thrown by the callback is an uncaught exception, as in Node. */
  if (napi_make_callback(env, s->async, recv, cb, 2, argv, &result) != napi_ok &&
      napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value exception;
    if (napi_get_and_clear_last_exception(env, &exception) == napi_ok) napi_fatal_exception(env, exception);
  }
}

/* Stops all polling and reports an error; the JS side then closes the handle. */
static void fail(sock_t *s, int err, const char *syscall) {
  s->reading = s->want_writable = s->connecting = false;
  update_poll(s);
  emit(s, "error", errno_error(s->env, err, syscall));
}

static napi_status new_handle(napi_env env, int fd, sock_kind kind, napi_value *out, sock_t **out_sock);

static void accept_ready(sock_t *s) {
  for (int i = 0; i < ACCEPT_BATCH && !s->closed && s->reading; i++) {
    int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == EINTR || err == ECONNABORTED) continue; /* that connection is gone; try the next */
      if (err == EAGAIN || err == EWOULDBLOCK) return;   /* none left */
      /* EMFILE, ENFILE, ENOBUFS, ...: reported; the poll stays on (the JS side decides what to do). */
      emit(s, "error", errno_error(s->env, err, "accept"));
      return;
    }
    napi_value handle;
    sock_t *conn;
    if (new_handle(s->env, fd, KIND_CONNECTION, &handle, &conn) != napi_ok) {
      emit(s, "error", errno_error(s->env, ENOMEM, "accept"));
      return;
    }
    emit(s, "connection", handle);
  }
}

static void read_ready(sock_t *s) {
  char buf[READ_CHUNK_BYTES];
  ssize_t n;
  do n = read(s->fd, buf, sizeof(buf));
  while (n < 0 && errno == EINTR);
  if (n > 0) {
    napi_value data;
    napi_status st = napi_create_buffer_copy(s->env, (size_t)n, buf, NULL, &data);
    /* What passes here is the enclave's traffic: leave no copy on the stack. */
    explicit_bzero(buf, (size_t)n);
    if (st != napi_ok) fail(s, ENOMEM, "read");
    else emit(s, "data", data);
  } else if (n == 0) {
    s->reading = false; /* end of stream: nothing more to read */
    update_poll(s);
    emit(s, "end", NULL);
  } else {
    int err = errno;
    if (err != EAGAIN && err != EWOULDBLOCK) fail(s, err, "read");
  }
}

static void connect_ready(sock_t *s) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
  s->connecting = false;
  if (err != 0) {
    fail(s, err, "connect");
    return;
  }
  update_poll(s);
  emit(s, "connect", NULL);
}

static void on_poll(uv_poll_t *poll, int status, int events) {
  sock_t *s = (sock_t *)poll->data;
  napi_handle_scope scope;
  if (s->closed || napi_open_handle_scope(s->env, &scope) != napi_ok) return;
  if (status < 0) {
    /* libuv's codes are negative errnos. On a socket error (POLLERR) libuv reports UV_EBADF; the socket's own
     * pending error (SO_ERROR: ECONNRESET, ECONNREFUSED, ...) is the one worth reporting. */
    int err = -status;
    if (status == UV_EBADF) {
      int pending = 0;
      socklen_t len = sizeof(pending);
      if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &pending, &len) == 0 && pending != 0) err = pending;
    }
    fail(s, err, s->connecting ? "connect" : "poll");
  } else if (s->kind == KIND_LISTENER) {
    if (events & UV_READABLE) accept_ready(s);
  } else {
    if ((events & UV_WRITABLE) && s->connecting) {
      connect_ready(s);
    } else if ((events & UV_WRITABLE) && s->want_writable) {
      s->want_writable = false; /* one notification per short write */
      update_poll(s);
      emit(s, "writable", NULL);
    }
    /* Re-checked: the callback above may have paused reading or closed the handle. */
    if (!s->closed && s->reading && (events & UV_READABLE)) read_ready(s);
  }
  napi_close_handle_scope(s->env, scope);
}

/* ---- handles --------------------------------------------------------------------------------------- */

/* The JS object was garbage collected (or the environment is ending): close the handle if it is still open.
 * What sock_close does here runs no JavaScript (deleting a reference, ending an async context, uv_close). */
static void finalize_handle(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  sock_t *s = (sock_t *)data;
  s->wrapper_alive = false;
  sock_close(s);
  maybe_free(s);
}

/* Wraps an open fd in a new handle object, which owns it from then on. On failure the fd is closed. */
static napi_status new_handle(napi_env env, int fd, sock_kind kind, napi_value *out, sock_t **out_sock) {
  napi_value obj;
  napi_status st;
  sock_t *s = (sock_t *)calloc(1, sizeof(sock_t));
  if (s == NULL) {
    close(fd);
    return napi_generic_failure;
  }
  s->env = env;
  s->kind = kind;
  s->fd = fd;
  s->poll.data = s;
  if ((st = napi_create_object(env, &obj)) != napi_ok || (st = napi_type_tag_object(env, obj, &HANDLE_TAG)) != napi_ok ||
      (st = napi_wrap(env, obj, s, finalize_handle, NULL, NULL)) != napi_ok) {
    close(fd);
    free(s);
    return st;
  }
  s->wrapper_alive = true; /* from here on the finalizer owns s and closes fd */
  *out = obj;
  *out_sock = s;
  return napi_ok;
}

/* Gives a handle its callback and its poll handle. On failure the handle is closed and an exception thrown. */
static bool attach(napi_env env, sock_t *s, napi_value callback) {
  napi_value name;
  uv_loop_t *loop;
  int rc;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok ||
      napi_create_string_utf8(env, "VSOCK", NAPI_AUTO_LENGTH, &name) != napi_ok) {
    napi_throw_error(env, NULL, "N-API call failed");
    return false;
  }
  if ((rc = uv_poll_init(loop, &s->poll, s->fd)) != 0) {
    sock_close(s);
    throw_errno(env, -rc, "poll");
    return false;
  }
  s->poll.data = s;
  s->poll_open = true;
  if (napi_create_reference(env, callback, 1, &s->callback) != napi_ok ||
      napi_async_init(env, NULL, name, &s->async) != napi_ok ||
      napi_add_async_cleanup_hook(env, on_env_cleanup, s, &s->cleanup) != napi_ok) {
    sock_close(s); /* releases what was made so far */
    napi_throw_error(env, NULL, "could not attach the socket's callback");
    return false;
  }
  return true;
}

/* The sock_t of a handle argument; throws a TypeError for anything else, EBADF for a closed handle. */
static sock_t *handle_arg(napi_env env, napi_value value, const char *fn, bool must_be_open) {
  napi_valuetype type;
  bool tagged = false;
  void *data = NULL;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_object ||
      napi_check_object_type_tag(env, value, &HANDLE_TAG, &tagged) != napi_ok || !tagged ||
      napi_unwrap(env, value, &data) != napi_ok || data == NULL) {
    char text[96];
    snprintf(text, sizeof(text), "%s: expected a vsock handle", fn);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", text);
    return NULL;
  }
  sock_t *s = (sock_t *)data;
  if (must_be_open && s->closed) {
    throw_errno(env, EBADF, fn);
    return NULL;
  }
  return s;
}

/* An attached, open connection handle (what reads, writes and shutdown need). */
static sock_t *connection_arg(napi_env env, napi_value value, const char *fn) {
  sock_t *s = handle_arg(env, value, fn, true);
  if (s != NULL && s->callback == NULL) {
    napi_throw_error(env, "ERR_NOT_ATTACHED", "the handle has no callback yet: attach() it first");
    return NULL;
  }
  return s;
}

static bool get_u32(napi_env env, napi_value value, uint32_t max, uint32_t *out) {
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok || !(d >= 0 && d <= max) || d != (double)(uint32_t)d) return false;
  *out = (uint32_t)d;
  return true;
}

static bool is_function(napi_env env, napi_value value) {
  napi_valuetype type;
  return napi_typeof(env, value, &type) == napi_ok && type == napi_function;
}

/* ---- exported functions ---------------------------------------------------------------------------- */

/* Binds an unbound socket, listens, and returns its handle, accepting from now on. Owns fd. */
static napi_value listen_on(napi_env env, int fd, const struct sockaddr *addr, socklen_t len, int backlog, napi_value cb) {
  napi_value handle;
  sock_t *s;
  const char *failed = bind(fd, addr, len) < 0 ? "bind" : listen(fd, backlog) < 0 ? "listen" : NULL;
  if (failed != NULL) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, failed);
  }
  CHECK(env, new_handle(env, fd, KIND_LISTENER, &handle, &s));
  if (!attach(env, s, cb)) return NULL;
  s->reading = true;
  update_poll(s);
  return handle;
}

static napi_value js_listen(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  uint32_t port, backlog;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3 || !get_u32(env, argv[0], VMADDR_PORT_ANY - 1, &port) || !get_u32(env, argv[1], MAX_BACKLOG, &backlog) ||
      backlog < 1 || !is_function(env, argv[2])) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "listen(port, backlog, onEvent): port a u32 below 0xFFFFFFFF, backlog 1-4096");
    return NULL;
  }
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  struct sockaddr_vm addr;
  memset(&addr, 0, sizeof(addr));
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = VMADDR_CID_ANY;
  addr.svm_port = port;
  return listen_on(env, fd, (const struct sockaddr *)&addr, sizeof(addr), (int)backlog, argv[2]);
}

static napi_value js_listen_unix(napi_env env, napi_callback_info info) {
  size_t argc = 3, len = 0;
  napi_value argv[3];
  uint32_t backlog;
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3 || napi_get_value_string_utf8(env, argv[0], addr.sun_path, sizeof(addr.sun_path), &len) != napi_ok ||
      len == 0 || len >= sizeof(addr.sun_path) - 1 || !get_u32(env, argv[1], MAX_BACKLOG, &backlog) || backlog < 1 ||
      !is_function(env, argv[2])) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "listenUnix(path, backlog, onEvent): path of 1-106 bytes, backlog 1-4096");
    return NULL;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  return listen_on(env, fd, (const struct sockaddr *)&addr, sizeof(addr), (int)backlog, argv[2]);
}

static napi_value js_connect(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], handle;
  uint32_t cid, port;
  sock_t *s;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3 || !get_u32(env, argv[0], VMADDR_CID_ANY - 1, &cid) || !get_u32(env, argv[1], VMADDR_PORT_ANY - 1, &port) ||
      !is_function(env, argv[2])) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "connect(cid, port, onEvent): cid and port u32 below 0xFFFFFFFF");
    return NULL;
  }
  /* 0 is the hypervisor, 1 this VM, 2 the host of this machine: never a Nitro parent or enclave, and on a
   * development machine CID 2 is the real host. Refused here too, before any syscall, whatever JS checked. */
  if (cid <= VMADDR_CID_HOST) {
    napi_throw_range_error(env, "ERR_FORBIDDEN_CID", "connect: CIDs 0, 1 and 2 are never a Nitro parent or enclave");
    return NULL;
  }
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  struct sockaddr_vm addr;
  memset(&addr, 0, sizeof(addr));
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = cid;
  addr.svm_port = port;
  /* Non-blocking: EINPROGRESS (or EINTR) means it goes on; the result is read with SO_ERROR once writable. */
  if (connect(fd, (const struct sockaddr *)&addr, sizeof(addr)) < 0 && errno != EINPROGRESS && errno != EINTR) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "connect");
  }
  CHECK(env, new_handle(env, fd, KIND_CONNECTION, &handle, &s));
  if (!attach(env, s, argv[2])) return NULL;
  s->connecting = true;
  update_poll(s);
  return handle;
}

static napi_value js_socketpair(napi_env env, napi_callback_info info) {
  (void)info;
  int fds[2];
  napi_value pair, a, b;
  sock_t *sa, *sb;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0) return throw_errno(env, errno, "socketpair");
  if (new_handle(env, fds[0], KIND_CONNECTION, &a, &sa) != napi_ok) {
    close(fds[1]);
    napi_throw_error(env, NULL, "could not create the handles");
    return NULL;
  }
  /* From here fds[0] belongs to handle a (its finalizer closes it if anything below fails). */
  CHECK(env, new_handle(env, fds[1], KIND_CONNECTION, &b, &sb));
  CHECK(env, napi_create_array_with_length(env, 2, &pair));
  CHECK(env, napi_set_element(env, pair, 0, a));
  CHECK(env, napi_set_element(env, pair, 1, b));
  return pair;
}

static napi_value js_attach(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  sock_t *s = handle_arg(env, argc > 0 ? argv[0] : NULL, "attach", true);
  if (s == NULL) return NULL;
  if (argc < 2 || !is_function(env, argv[1])) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "attach(handle, onEvent): onEvent must be a function");
    return NULL;
  }
  if (s->callback != NULL) {
    napi_throw_error(env, "ERR_ALREADY_ATTACHED", "attach: the handle already has a callback");
    return NULL;
  }
  attach(env, s, argv[1]);
  return NULL;
}

static sock_t *one_handle(napi_env env, napi_callback_info info, const char *fn, napi_value *second) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (second != NULL) *second = argc > 1 ? argv[1] : NULL;
  if (argc < 1) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "expected a vsock handle");
    return NULL;
  }
  return connection_arg(env, argv[0], fn);
}

static napi_value js_read_start(napi_env env, napi_callback_info info) {
  sock_t *s = one_handle(env, info, "readStart", NULL);
  if (s == NULL) return NULL;
  s->reading = true;
  update_poll(s);
  return NULL;
}

static napi_value js_read_stop(napi_env env, napi_callback_info info) {
  sock_t *s = one_handle(env, info, "readStop", NULL);
  if (s == NULL) return NULL;
  s->reading = false;
  update_poll(s);
  return NULL;
}

static napi_value js_write(napi_env env, napi_callback_info info) {
  napi_value arg, result;
  void *data = NULL;
  size_t len = 0;
  bool is_buffer = false;
  sock_t *s = one_handle(env, info, "write", &arg);
  if (s == NULL) return NULL;
  if (s->kind != KIND_CONNECTION || arg == NULL || napi_is_buffer(env, arg, &is_buffer) != napi_ok || !is_buffer) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "write(handle, data): a connection and a Buffer");
    return NULL;
  }
  CHECK(env, napi_get_buffer_info(env, arg, &data, &len));
  ssize_t n = 0;
  if (len > 0) {
    /* MSG_NOSIGNAL: a closed peer is an EPIPE error here, not a SIGPIPE. */
    do n = send(s->fd, data, len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) return throw_errno(env, errno, "write");
      n = 0; /* would block */
    }
    if ((size_t)n < len) {
      s->want_writable = true;
      update_poll(s);
    }
  }
  CHECK(env, napi_create_double(env, (double)n, &result));
  return result;
}

static napi_value js_shutdown(napi_env env, napi_callback_info info) {
  sock_t *s = one_handle(env, info, "shutdown", NULL);
  if (s == NULL) return NULL;
  /* ENOTCONN: the peer is already gone, which is what shutting down asks for anyway. */
  if (shutdown(s->fd, SHUT_WR) < 0 && errno != ENOTCONN) return throw_errno(env, errno, "shutdown");
  return NULL;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  sock_t *s = handle_arg(env, argc > 0 ? argv[0] : NULL, "close", false);
  if (s != NULL) sock_close(s);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"listen", NULL, js_listen, NULL, NULL, NULL, napi_enumerable, NULL},
      {"connect", NULL, js_connect, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketpair", NULL, js_socketpair, NULL, NULL, NULL, napi_enumerable, NULL},
      {"listenUnix", NULL, js_listen_unix, NULL, NULL, NULL, napi_enumerable, NULL},
      {"attach", NULL, js_attach, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readStart", NULL, js_read_start, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readStop", NULL, js_read_stop, NULL, NULL, NULL, napi_enumerable, NULL},
      {"write", NULL, js_write, NULL, NULL, NULL, napi_enumerable, NULL},
      {"shutdown", NULL, js_shutdown, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
