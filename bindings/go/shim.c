// shim.c — see shim.h. Compiled by cgo together with the Go package.
#define _GNU_SOURCE
#include "shim.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "_cgo_export.h"

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static hms_status_t go_trampoline(hms_call_t *call, const hms_payload_t *req, void *user_data) {
  // user_data carries a cgo.Handle (an integer), never a Go pointer.
  char buf[HMS_GO_INLINE_REPLY];
  hms_go_reply_t out = {.data = buf, .cap = sizeof buf};
  hms_status_t st = hmsGoDispatch(call, (hms_payload_t *)req, (uintptr_t)user_data, &out);
  if (st == HMS_OK && out.set) {
    hms_error_t e;
    st = hms_call_reply(call, buf, out.len, out.content_type, &e);
    if (st != HMS_OK) {
      char msg[300];
      snprintf(msg, sizeof msg, "handler reply not sent: %s", e.message);
      hms_call_set_error(call, st, msg, NULL, 0, 0);
    }
  }
  return st;
}

hms_status_t hms_go_function_add(hms_service_t *svc, const char *name, uint32_t flags, uintptr_t handle,
                                 hms_error_t *err) {
  return hms_function_add(svc, name, flags, go_trampoline, (void *)handle, err);
}

hms_status_t hms_go_serve(hms_node_t *node, hms_error_t *err) {
  for (;;) {
    hms_status_t st = hms_node_serve(node, -1, err);
    if (st != HMS_CANCELLED) return st;  // CANCELLED = a signal interrupted the sleep: serve again
  }
}

/* ---------------------------------------------------------------- cancellable calls */
struct hms_go_waiter_s {
  struct hms_go_waiter_s *next;  // free list
  int efd;                       // created on first sleep, kept for the waiter's life
  _Atomic int done;              // the completion was stored
  _Atomic int cancel;            // cancellation requested
  _Atomic uint64_t call_id;      // 0 until submitted
  _Atomic int sleeping;          // the waiter may be asleep on efd
  hms_completion_t comp;
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static hms_go_waiter_t *pool;

hms_go_waiter_t *hms_go_waiter_get(void) {
  pthread_mutex_lock(&pool_lock);
  hms_go_waiter_t *w = pool;
  if (w) pool = w->next;
  pthread_mutex_unlock(&pool_lock);
  if (!w) {
    w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->efd = -1;
  }
  atomic_store(&w->done, 0);
  atomic_store(&w->cancel, 0);
  atomic_store(&w->call_id, 0);
  atomic_store(&w->sleeping, 0);
  w->next = NULL;
  return w;
}

void hms_go_waiter_put(hms_go_waiter_t *w) {
  if (!w) return;
  // A completion callback may still be about to write efd after setting done: harmless, the next
  // user drains it. Waiters are never freed, so that late write never hits a closed descriptor.
  pthread_mutex_lock(&pool_lock);
  w->next = pool;
  pool = w;
  pthread_mutex_unlock(&pool_lock);
}

static void go_complete(hms_completion_t *c) {
  hms_go_waiter_t *w = c->user_data;
  w->comp = *c;  // the payload's ownership moves to the waiter
  atomic_store(&w->done, 1);
  if (atomic_load(&w->sleeping) && w->efd >= 0) {
    uint64_t one = 1;
    ssize_t r = write(w->efd, &one, sizeof one);
    (void)r;
  }
}

static void wake(hms_go_waiter_t *w) {
  if (w->efd >= 0) {
    uint64_t one = 1;
    ssize_t r = write(w->efd, &one, sizeof one);
    (void)r;
  }
}

void hms_go_waiter_cancel(hms_go_waiter_t *w, hms_client_t *client) {
  atomic_store(&w->cancel, 1);
  uint64_t id = atomic_load(&w->call_id);
  if (id) hms_call_cancel(client, id, NULL);  // NOT_FOUND when it completed meanwhile: fine
  if (atomic_load(&w->sleeping)) wake(w);
}

hms_status_t hms_go_call_wait(hms_go_waiter_t *w, hms_client_t *client, uint32_t fn_id, const char *data,
                              size_t len, uint32_t content_type, int64_t timeout_ns, int64_t spin_ns,
                              hms_payload_t *resp, hms_error_t *err) {
  memset(resp, 0, sizeof *resp);
  if (atomic_load(&w->cancel)) {
    if (err) {
      memset(err, 0, sizeof *err);
      err->code = HMS_CANCELLED;
      strcpy(err->message, "call cancelled by the caller before it was sent");
    }
    return HMS_CANCELLED;
  }
  uint64_t id = 0;
  hms_status_t st =
      hms_call_submit(client, fn_id, data, len, content_type, 0, timeout_ns, go_complete, w, &id, err);
  if (st) return st;
  atomic_store(&w->call_id, id);
  if (atomic_load(&w->cancel)) hms_call_cancel(client, id, NULL);  // cancel raced the submit

  int64_t start = now_ns();
  int64_t deadline = timeout_ns < 0 ? INT64_MAX : start + timeout_ns;
  size_t n;
  uint32_t k = 0;
  // Spin: drive the client (someone must read replies) and look for our completion.
  while (!atomic_load(&w->done)) {
    hms_client_poll(client, NULL, 0, &n, 0, NULL);
    if (atomic_load(&w->done)) break;
    if ((++k & 7) == 0 && now_ns() - start >= spin_ns) break;
  }
  if (!atomic_load(&w->done)) {
    if (w->efd < 0) w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int cfd = hms_client_event_fd(client);
    for (;;) {
      atomic_store(&w->sleeping, 1);
      // Arms the client's event fd (and sweeps deadlines); then re-check after announcing sleep.
      hms_client_poll(client, NULL, 0, &n, 0, NULL);
      if (atomic_load(&w->done)) break;
      int64_t now = now_ns();
      int64_t left = deadline == INT64_MAX ? 10000000LL : deadline - now;
      if (left > 10000000LL) left = 10000000LL;  // bounded slices: deadlines are swept by polls
      if (left < 0) left = 0;
      struct pollfd p[2] = {{.fd = cfd, .events = POLLIN}, {.fd = w->efd, .events = POLLIN}};
      int ms = (int)((left + 999999) / 1000000);
      poll(p, w->efd >= 0 ? 2 : 1, ms);
      if (w->efd >= 0) {
        uint64_t drain;
        while (read(w->efd, &drain, sizeof drain) > 0) {
        }
      }
      if (atomic_load(&w->done)) break;
    }
    atomic_store(&w->sleeping, 0);
  }
  *resp = w->comp.payload;
  st = w->comp.status;
  if (err) {
    memset(err, 0, sizeof *err);
    err->code = st;
    err->origin = w->comp.origin;
    memcpy(err->message, w->comp.message, sizeof err->message);
    err->message[sizeof err->message - 1] = 0;
  }
  return st;
}

hms_status_t hms_go_call(hms_client_t *client, uint32_t fn_id, const char *data, size_t len,
                         uint32_t content_type, hms_go_scratch_t *s) {
  s->copied = 0;
  s->err.message[0] = 0;
  hms_status_t st = hms_call_bytes(client, fn_id, data, len, content_type, &s->resp, -1, &s->err);
  if (s->resp.len <= sizeof s->small) {
    if (s->resp.len) memcpy(s->small, s->resp.data, s->resp.len);
    size_t n = s->resp.len;
    uint32_t ct = s->resp.content_type;
    hms_payload_release(&s->resp);
    s->resp.len = n;  // what was copied, and its content type
    s->resp.content_type = ct;
    s->copied = 1;
  }
  return st;
}

/* ---------------------------------------------------------------- EINTR-tolerant receives */
hms_status_t hms_go_sub_recv(hms_subscription_t *sub, hms_message_t *msg, int64_t timeout_ns, hms_error_t *err) {
  int64_t deadline = timeout_ns < 0 ? INT64_MAX : now_ns() + timeout_ns;
  hms_error_t local;
  if (!err) err = &local;
  for (;;) {
    hms_status_t st = hms_subscription_recv(sub, msg, timeout_ns, err);
    if (st != HMS_CANCELLED || err->os_errno != EINTR) return st;
    if (deadline != INT64_MAX) {
      timeout_ns = deadline - now_ns();
      if (timeout_ns < 0) timeout_ns = 0;
    }
  }
}

