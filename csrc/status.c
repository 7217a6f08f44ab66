/* Status codes, error filling, versions, payload release, size queries. */
#include <stdarg.h>

#include "internal/hms_internal.h"

#define HMS__STR(x) #x
#define HMS__XSTR(x) HMS__STR(x)

HMS_API uint32_t hms_abi_version(void) { return HMS_FFI_ABI_VERSION; }

HMS_API const char *hms_version_string(void) {
  return HMS__XSTR(HMS_FFI_VERSION_MAJOR) "." HMS__XSTR(HMS_FFI_VERSION_MINOR) "." HMS__XSTR(
      HMS_FFI_VERSION_PATCH);
}

static const char *const hms__status_names[] = {
    "OK",           "CANCELLED",         "UNKNOWN",  "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
    "NOT_FOUND",    "ALREADY_EXISTS",    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED",    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
    "UNAVAILABLE",  "DATA_LOSS",         "UNAUTHENTICATED",
};

HMS_API const char *hms_status_str(hms_status_t status) {
  if (status < 0 || (size_t)status >= sizeof(hms__status_names) / sizeof(hms__status_names[0]))
    return "UNRECOGNIZED_STATUS";
  return hms__status_names[status];
}

hms_status_t hms__fail(hms_error_t *err, hms_status_t code, int os_errno, const char *fmt, ...) {
  if (err) {
    err->code = code;
    err->os_errno = os_errno;
    err->origin = HMS_ORIGIN_LOCAL;
    err->reserved = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
  }
  return code;
}

hms_status_t hms__fail_remote(hms_error_t *err, hms_status_t code, const char *msg, size_t msg_len) {
  if (err) {
    err->code = code;
    err->os_errno = 0;
    err->origin = HMS_ORIGIN_REMOTE;
    err->reserved = 0;
    size_t n = msg_len < sizeof(err->message) - 1 ? msg_len : sizeof(err->message) - 1;
    if (n) memcpy(err->message, msg, n);
    err->message[n] = 0;
  }
  return code;
}

void hms__ok(hms_error_t *err) {
  if (err) {
    err->code = HMS_OK;
    err->os_errno = 0;
    err->origin = HMS_ORIGIN_LOCAL;
    err->reserved = 0;
    err->message[0] = 0;
  }
}

HMS_API void hms_payload_release(hms_payload_t *payload) {
  if (!payload) return;
  void (*rel)(hms_payload_t *) = payload->release;
  if (rel) rel(payload);
  payload->release = NULL;
  payload->data = NULL;
  payload->len = 0;
  payload->private_data = NULL;
}

size_t hms__strlcpy(char *dst, const char *src, size_t cap) {
  size_t n = strlen(src);
  if (cap) {
    size_t c = n < cap - 1 ? n : cap - 1;
    memcpy(dst, src, c);
    dst[c] = 0;
  }
  return n;
}

HMS_API size_t hms_sizeof_error(void) { return sizeof(hms_error_t); }
HMS_API size_t hms_sizeof_payload(void) { return sizeof(hms_payload_t); }
HMS_API size_t hms_sizeof_node_options(void) { return sizeof(hms_node_options_t); }
HMS_API size_t hms_sizeof_connect_options(void) { return sizeof(hms_connect_options_t); }
