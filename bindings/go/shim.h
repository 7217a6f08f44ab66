// shim.h — the small amount of C the Go binding needs around the public header: trampolines for
// callbacks into Go (cgo cannot take the address of a Go function), loops that absorb EINTR from the
// Go runtime's preemption signals, and a cancellable wait for context-bound calls.
// Everything here uses only the public API of include/hms_ffi/hms_ffi.h.
#ifndef HMS_GO_SHIM_H
#define HMS_GO_SHIM_H
#include <stdint.h>
#include <hms_ffi/hms_ffi.h>

// Where a Go handler leaves a small reply: a buffer on the trampoline's C stack, so the reply is sent
// from C after the handler returns (one crossing per call instead of two). Bigger replies are sent
// by Go itself.
#define HMS_GO_INLINE_REPLY 512
typedef struct hms_go_reply_s {
  char *data;
  size_t cap;
  size_t len;
  uint32_t content_type;
  int set;
} hms_go_reply_t;

// Registers a function whose handler is the Go function behind cgo.Handle `handle`.
hms_status_t hms_go_function_add(hms_service_t *svc, const char *name, uint32_t flags, uintptr_t handle,
                                 hms_error_t *err);

// hms_node_serve(-1) that re-enters after EINTR (Go's runtime signals) until hms_node_stop().
hms_status_t hms_go_serve(hms_node_t *node, hms_error_t *err);

// A call whose wait can be cancelled from another thread (hms_go_waiter_cancel).
typedef struct hms_go_waiter_s hms_go_waiter_t;
hms_go_waiter_t *hms_go_waiter_get(void);
void hms_go_waiter_put(hms_go_waiter_t *w);
// Submits the call and waits for its completion (spin, then sleep on the client's event fd and the
// waiter's own eventfd). Fills resp (release it) and err like hms_call.
hms_status_t hms_go_call_wait(hms_go_waiter_t *w, hms_client_t *client, uint32_t fn_id, const char *data,
                              size_t len, uint32_t content_type, int64_t timeout_ns, int64_t spin_ns,
                              hms_payload_t *resp, hms_error_t *err);
// From any thread: cancels the waiter's call (now, or as soon as it is submitted).
void hms_go_waiter_cancel(hms_go_waiter_t *w, hms_client_t *client);

// Per-call scratch space in C memory (pooled by the Go side), so a call allocates nothing on the Go
// heap but its result and passes no Go pointers but the request.
#define HMS_GO_SMALL_REPLY 256
typedef struct hms_go_scratch_s {
  hms_payload_t resp;
  hms_error_t err;
  int copied;  // resp.len/content_type describe `small`, resp holds nothing to release
  char small[HMS_GO_SMALL_REPLY];
} hms_go_scratch_t;

// hms_call_bytes into `s`; a reply of at most HMS_GO_SMALL_REPLY bytes is copied into s->small and
// released, so the common small reply costs one crossing from Go instead of two.
hms_status_t hms_go_call(hms_client_t *client, uint32_t fn_id, const char *data, size_t len,
                         uint32_t content_type, hms_go_scratch_t *s);

// hms_subscription_recv that re-enters after EINTR, keeping the original deadline.
hms_status_t hms_go_sub_recv(hms_subscription_t *sub, hms_message_t *msg, int64_t timeout_ns, hms_error_t *err);
#endif
