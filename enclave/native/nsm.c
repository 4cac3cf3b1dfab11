/*
 * Node-API addon for the Nitro Secure Module: one raw ioctl on /dev/nsm, exactly as the Linux driver
 * (drivers/misc/nsm.c) and aws-nitro-enclaves-nsm-api define it. The request and response are the CBOR bytes
 * of the NSM protocol; encoding and decoding stay in JavaScript.
 *
 *   open(path: string): number              opens the device (O_RDWR | O_CLOEXEC)
 *   request(fd: number, req: Buffer): Promise<Buffer>   ioctl on a worker thread (the device may block)
 *   close(fd: number): void
 *
 * Errors carry a `code` (the errno name) and say what it means for an NSM.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <node_api.h>

#define NSM_IOCTL_MAGIC 0x0A
#define NSM_REQUEST_MAX_SIZE 0x1000
#define NSM_RESPONSE_MAX_SIZE 0x3000

struct nsm_iovec {
  uint64_t addr;
  uint64_t len;
};

struct nsm_raw {
  struct nsm_iovec request;
  struct nsm_iovec response;
};

#define NSM_IOCTL_RAW _IOWR(NSM_IOCTL_MAGIC, 0x0, struct nsm_raw)

_Static_assert(sizeof(struct nsm_raw) == 32, "struct nsm_raw must be 32 bytes");
_Static_assert(NSM_IOCTL_RAW == 0xC0200A00u, "NSM_IOCTL_RAW must be 0xC0200A00");

#define CHECK(env, call)                                   \
  do {                                                     \
    if ((call) != napi_ok) {                               \
      napi_throw_error((env), NULL, "N-API call failed");  \
      return NULL;                                         \
    }                                                      \
  } while (0)

static const char *errno_name(int err) {
  switch (err) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case ENOTTY: return "ENOTTY";
    case EINVAL: return "EINVAL";
    case EMSGSIZE: return "EMSGSIZE";
    case EFAULT: return "EFAULT";
    case EIO: return "EIO";
    case EBADF: return "EBADF";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ENODEV: return "ENODEV";
    case ENXIO: return "ENXIO";
    default: return "EUNKNOWN";
  }
}

static napi_value make_error(napi_env env, int err, const char *message) {
  napi_value code, msg, error;
  napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, code, msg, &error);
  return error;
}

static void describe_open_error(int err, const char *path, char *out, size_t n) {
  if (err == ENOENT || err == ENODEV || err == ENXIO) {
    snprintf(out, n, "NSM device %s does not exist: this is not a Nitro Enclave (use the simulated NSM for development)", path);
  } else if (err == EACCES) {
    snprintf(out, n, "NSM device %s: permission denied", path);
  } else {
    snprintf(out, n, "NSM device %s could not be opened: %s", path, strerror(err));
  }
}

static void describe_ioctl_error(int err, char *out, size_t n) {
  if (err == ENOTTY || err == EINVAL) {
    snprintf(out, n, "the device is not an NSM: it rejected the NSM ioctl (%s)", strerror(err));
  } else if (err == EMSGSIZE) {
    snprintf(out, n, "NSM request too large (limit %d bytes)", NSM_REQUEST_MAX_SIZE);
  } else {
    snprintf(out, n, "NSM ioctl failed: %s", strerror(err));
  }
}

static napi_value nsm_open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char path[4096];
  size_t len = 0;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, sizeof(path), &len) != napi_ok || len == 0 || len >= sizeof(path) - 1) {
    napi_throw_type_error(env, NULL, "open(path): path must be a non-empty string");
    return NULL;
  }
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    char message[4300];
    describe_open_error(err, path, message, sizeof(message));
    napi_throw(env, make_error(env, err, message));
    return NULL;
  }
  napi_value result;
  CHECK(env, napi_create_int32(env, fd, &result));
  return result;
}

static napi_value nsm_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "close(fd): fd must be a non-negative integer");
    return NULL;
  }
  close(fd);
  return NULL;
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  uint8_t request[NSM_REQUEST_MAX_SIZE];
  size_t request_len;
  uint8_t response[NSM_RESPONSE_MAX_SIZE];
  size_t response_len;
  int err;
} request_t;

static void execute_request(napi_env env, void *data) {
  (void)env;
  request_t *r = (request_t *)data;
  struct nsm_raw raw;
  memset(&raw, 0, sizeof(raw));
  raw.request.addr = (uint64_t)(uintptr_t)r->request;
  raw.request.len = r->request_len;
  raw.response.addr = (uint64_t)(uintptr_t)r->response;
  raw.response.len = sizeof(r->response);
  if (ioctl(r->fd, NSM_IOCTL_RAW, &raw) < 0) {
    r->err = errno;
    return;
  }
  /* The driver rewrites response.len to the length it wrote. */
  r->response_len = raw.response.len > sizeof(r->response) ? sizeof(r->response) : (size_t)raw.response.len;
}

static void complete_request(napi_env env, napi_status status, void *data) {
  request_t *r = (request_t *)data;
  if (status != napi_ok) {
    napi_reject_deferred(env, r->deferred, make_error(env, EIO, "NSM request was cancelled"));
  } else if (r->err != 0) {
    char message[256];
    describe_ioctl_error(r->err, message, sizeof(message));
    napi_reject_deferred(env, r->deferred, make_error(env, r->err, message));
  } else {
    napi_value buffer;
    void *copy = NULL;
    if (napi_create_buffer_copy(env, r->response_len, r->response, &copy, &buffer) == napi_ok) {
      napi_resolve_deferred(env, r->deferred, buffer);
    } else {
      napi_reject_deferred(env, r->deferred, make_error(env, EIO, "could not allocate the NSM response buffer"));
    }
  }
  napi_delete_async_work(env, r->work);
  /* Responses can hold random bytes handed to the caller; do not leave copies in freed memory. */
  memset(r, 0, sizeof(*r));
  free(r);
}

static napi_value nsm_request(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd = -1;
  void *req_data = NULL;
  size_t req_len = 0;
  bool is_buffer = false;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "request(fd, request): fd must be a non-negative integer");
    return NULL;
  }
  if (napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer) {
    napi_throw_type_error(env, NULL, "request(fd, request): request must be a Buffer");
    return NULL;
  }
  CHECK(env, napi_get_buffer_info(env, argv[1], &req_data, &req_len));
  if (req_len == 0 || req_len > NSM_REQUEST_MAX_SIZE) {
    napi_throw(env, make_error(env, EMSGSIZE, "NSM request must be 1 to 4096 bytes"));
    return NULL;
  }
  request_t *r = (request_t *)calloc(1, sizeof(request_t));
  if (r == NULL) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  r->fd = fd;
  memcpy(r->request, req_data, req_len);
  r->request_len = req_len;
  napi_value promise, name;
  if (napi_create_promise(env, &r->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "nsm_request", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute_request, complete_request, r, &r->work) != napi_ok ||
      napi_queue_async_work(env, r->work) != napi_ok) {
    free(r);
    napi_throw_error(env, NULL, "could not queue the NSM request");
    return NULL;
  }
  return promise;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, nsm_open, NULL, NULL, NULL, napi_default, NULL},
      {"request", NULL, nsm_request, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, nsm_close, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
