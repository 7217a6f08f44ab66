/* C-level tests of the core, driven by tests/test_c_core.py (also built with ASan/UBSan there).
 *
 *   hms_ctest selftest            run every C test against a forked server; exit 0 when all pass
 *   hms_ctest serve SPIN_NS       serve "ctest.echo"@1.0.0 until killed (used by Python cross tests)
 *   hms_ctest call SERVICE FN HEX [CT]   call a function once with content type CT (default raw) and
 *                                 print "OK CT HEX" or "ERROR STATUS message" (C client of other languages)
 *   hms_ctest bench SPIN_NS N     C<->C 64-byte echo round trip: prints "p50_ns p99_ns calls_per_s"
 *   hms_ctest bench-to SERVICE N  the same against SERVICE's `echo` (any language's server)
 *   hms_ctest bench-oneway SPIN_NS N B   one-way 64-byte messages in batches of B: prints "msgs_per_s count"
 *
 * The runtime directory comes from HMS_FFI_RUNTIME_DIR. */
#include <errno.h>
#include <stdint.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hms_ffi/hms_ffi.h"

static int failures = 0;
#define CHECK(cond, ...)                                           \
  do {                                                             \
    if (!(cond)) {                                                 \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                \
      fprintf(stderr, "\n");                                       \
      failures++;                                                  \
    }                                                              \
  } while (0)

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---------------------------------------------------------------- handlers */
static hms_status_t h_echo(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  return hms_call_reply(call, req->data, req->len, req->content_type, NULL);
}
static hms_status_t h_fail(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)req;
  (void)ud;
  hms_call_set_error(call, HMS_INVALID_ARGUMENT, "quantity must be positive", "{\"field\":\"qty\"}", 15,
                     HMS_CT_JSON);
  return HMS_INVALID_ARGUMENT;
}
static hms_status_t h_bare_status(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)call;
  (void)req;
  (void)ud;
  return HMS_PERMISSION_DENIED;
}
static hms_status_t h_sleep(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  int ms = 0;
  if (req->len >= sizeof ms) memcpy(&ms, req->data, sizeof ms);
  usleep((useconds_t)ms * 1000);
  return hms_call_reply(call, "late", 4, HMS_CT_RAW, NULL);
}
static hms_status_t h_peer(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)req;
  (void)ud;
  int32_t pid;
  uint32_t uid, gid;
  hms_call_peer(call, &pid, &uid, &gid);
  char buf[128];
  int n = snprintf(buf, sizeof buf, "%d %u %u %s %s", pid, uid, gid, hms_call_service_name(call),
                   hms_call_function_name(call));
  return hms_call_reply(call, buf, (size_t)n, HMS_CT_RAW, NULL);
}
static hms_status_t h_double_reply(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)req;
  (void)ud;
  hms_call_reply(call, "a", 1, HMS_CT_RAW, NULL);
  hms_error_t e;
  hms_status_t st = hms_call_reply(call, "b", 1, HMS_CT_RAW, &e);
  return st == HMS_FAILED_PRECONDITION ? HMS_OK : HMS_INTERNAL;
}

static long oneway_count = 0;
static hms_status_t h_count(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)req;
  (void)ud;
  if (hms_call_is_oneway(call)) {
    oneway_count++;
    return HMS_OK;
  }
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%ld", oneway_count);
  return hms_call_reply(call, buf, (size_t)n, HMS_CT_RAW, NULL);
}
/* "tally": one-way calls arrive in runs at the batch handler, which checks they come in order (each
 * payload is the 8-byte sequence number, starting at 0) and whole; a normal call reports
 * "items runs errors". */
static uint64_t tally_items = 0, tally_runs = 0, tally_errors = 0;
static void b_tally(const hms_batch_t *b, void *ud) {
  (void)ud;
  tally_runs++;
  if (b->count == 0 || b->count > HMS_BATCH_MAX_ITEMS || b->offsets[0] != 0) tally_errors++;
  for (size_t i = 0; i < b->count; i++) {
    uint64_t v;
    if (b->items[i].len != 8 || b->offsets[i + 1] - b->offsets[i] != 8 ||
        b->items[i].data != b->data + b->offsets[i] || b->items[i].content_type != HMS_CT_RAW) {
      tally_errors++;
      continue;
    }
    memcpy(&v, b->items[i].data, 8);
    if (v != tally_items) tally_errors++;
    tally_items++;
  }
  if (b->content_type != HMS_CT_RAW || b->peer_pid <= 0) tally_errors++;
}
static hms_status_t h_tally(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)req;
  (void)ud;
  if (hms_call_is_oneway(call)) {
    tally_errors++; /* one-way calls must go to the batch handler */
    return HMS_OK;
  }
  char buf[96];
  int n = snprintf(buf, sizeof buf, "%llu %llu %llu", (unsigned long long)tally_items,
                   (unsigned long long)tally_runs, (unsigned long long)tally_errors);
  return hms_call_reply(call, buf, (size_t)n, HMS_CT_RAW, NULL);
}
/* Waits up to 3 s for the caller to cancel; replies whether it saw the cancellation. */
static long cancels_seen = 0;
static hms_status_t h_wait_cancel(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)req;
  (void)ud;
  for (int i = 0; i < 300; i++) {
    if (hms_call_is_cancelled(call)) {
      cancels_seen++;
      return HMS_CANCELLED;
    }
    usleep(10000);
  }
  return hms_call_reply(call, "not cancelled", 13, HMS_CT_RAW, NULL);
}
static hms_status_t h_cancels(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)req;
  (void)ud;
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%ld", cancels_seen);
  return hms_call_reply(call, buf, (size_t)n, HMS_CT_RAW, NULL);
}

/* Server stream: N little-endian ints 0..N-1, then an error if N is negative (|N| items first). */
static hms_status_t h_numbers(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  int n = 0;
  if (req->len >= sizeof n) memcpy(&n, req->data, sizeof n);
  int count = n < 0 ? -n : n;
  for (int i = 0; i < count; i++) {
    hms_status_t st = hms_call_send(call, (const char *)&i, sizeof i, HMS_CT_RAW, NULL);
    if (st) return st; /* cancelled: stop producing */
  }
  if (n < 0) {
    hms_call_set_error(call, HMS_ABORTED, "stopped on purpose", NULL, 0, 0);
    return HMS_ABORTED;
  }
  return HMS_OK;
}
/* Client stream: sums the ints it receives. */
static hms_status_t h_sum(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)req;
  (void)ud;
  long sum = 0;
  for (;;) {
    hms_payload_t item;
    int end = 0;
    hms_status_t st = hms_call_recv(call, &item, &end, -1, NULL);
    if (st) return st;
    if (end) break;
    int v = 0;
    if (item.len == sizeof v) memcpy(&v, item.data, sizeof v);
    sum += v;
    hms_payload_release(&item);
  }
  return hms_call_reply(call, (const char *)&sum, sizeof sum, HMS_CT_RAW, NULL);
}
/* Bidirectional: echoes every item back, plus one. */
static hms_status_t h_plus_one(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)req;
  (void)ud;
  for (;;) {
    hms_payload_t item;
    int end = 0;
    hms_status_t st = hms_call_recv(call, &item, &end, -1, NULL);
    if (st) return st;
    if (end) return HMS_OK;
    int v = 0;
    if (item.len == sizeof v) memcpy(&v, item.data, sizeof v);
    hms_payload_release(&item);
    v++;
    st = hms_call_send(call, (const char *)&v, sizeof v, HMS_CT_RAW, NULL);
    if (st) return st;
  }
}

static int run_server(const char *service, int64_t spin_ns, int notify_fd) {
  hms_node_options_t o;
  hms_node_options_init(&o);
  o.name = "ctest-server";
  o.spin_ns = spin_ns;
  hms_node_t *node;
  hms_error_t e;
  if (hms_node_open(&o, &node, &e)) {
    fprintf(stderr, "node_open: %s\n", e.message);
    return 2;
  }
  hms_service_t *svc;
  if (hms_service_add(node, service, "1.0.0", &svc, &e)) {
    fprintf(stderr, "service_add: %s\n", e.message);
    return 2;
  }
  hms_function_add(svc, "echo", HMS_FN_IDEMPOTENT, h_echo, NULL, NULL);
  hms_function_add(svc, "fail", 0, h_fail, NULL, NULL);
  hms_function_add(svc, "bare", 0, h_bare_status, NULL, NULL);
  hms_function_add(svc, "sleep", 0, h_sleep, NULL, NULL);
  hms_function_add(svc, "peer", 0, h_peer, NULL, NULL);
  hms_function_add(svc, "double", 0, h_double_reply, NULL, NULL);
  hms_function_add(svc, "count", 0, h_count, NULL, NULL);
  hms_function_add(svc, "wait_cancel", 0, h_wait_cancel, NULL, NULL);
  hms_function_add(svc, "cancels", 0, h_cancels, NULL, NULL);
  hms_function_add(svc, "numbers", HMS_FN_STREAM, h_numbers, NULL, NULL);
  hms_function_add(svc, "sum", HMS_FN_CLIENT_STREAM, h_sum, NULL, NULL);
  hms_function_add(svc, "plus_one", HMS_FN_STREAM | HMS_FN_CLIENT_STREAM, h_plus_one, NULL, NULL);
  hms_function_add(svc, "tally", 0, h_tally, NULL, NULL);
  if (hms_function_set_batch_handler(svc, "tally", b_tally, NULL, &e) != HMS_OK) {
    fprintf(stderr, "set_batch_handler: %s\n", e.message);
    return 2;
  }
  if (hms_function_set_batch_handler(svc, "no_such_fn", b_tally, NULL, &e) != HMS_NOT_FOUND) {
    fprintf(stderr, "set_batch_handler accepted an unknown function\n");
    return 2;
  }
  if (notify_fd >= 0) {
    char c = 'r';
    if (write(notify_fd, &c, 1) != 1) return 2;
    close(notify_fd);
  } else {
    printf("ready\n");
    fflush(stdout);
  }
  hms_node_serve(node, -1, NULL);
  hms_node_close(node);
  return 0;
}

static pid_t fork_server(const char *service, int64_t spin_ns) {
  int p[2];
  if (pipe(p) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    _exit(run_server(service, spin_ns, p[1]));
  }
  close(p[1]);
  char c;
  ssize_t n = read(p[0], &c, 1);
  close(p[0]);
  return n == 1 ? pid : -1;
}

static hms_client_t *connect_or_die(hms_node_t *node, const char *service) {
  hms_client_t *cl = NULL;
  hms_error_t e;
  if (hms_connect(node, service, "^1", NULL, &cl, &e)) {
    fprintf(stderr, "connect %s: %s (%s)\n", service, e.message, hms_status_str(e.code));
    exit(3);
  }
  return cl;
}

static uint32_t fid(hms_client_t *cl, const char *name) {
  uint32_t id = 0;
  hms_client_function_id(cl, name, &id, NULL);
  return id;
}

/* ---------------------------------------------------------------- tests */
static void test_abi(void) {
  CHECK(hms_abi_version() == HMS_FFI_ABI_VERSION, "abi %u", hms_abi_version());
  char v[32];
  snprintf(v, sizeof v, "%d.%d.%d", HMS_FFI_VERSION_MAJOR, HMS_FFI_VERSION_MINOR, HMS_FFI_VERSION_PATCH);
  CHECK(strcmp(hms_version_string(), v) == 0, "version %s", hms_version_string());
  CHECK(strcmp(hms_status_str(HMS_NOT_FOUND), "NOT_FOUND") == 0, "status str");
  CHECK(strcmp(hms_status_str(HMS_UNAUTHENTICATED), "UNAUTHENTICATED") == 0, "status str");
  CHECK(strcmp(hms_status_str(99), "UNRECOGNIZED_STATUS") == 0, "status str unknown");
  CHECK(strcmp(hms_status_str(-1), "UNRECOGNIZED_STATUS") == 0, "status str negative");
  CHECK(hms_sizeof_error() == sizeof(hms_error_t), "sizeof error");
  CHECK(hms_sizeof_payload() == sizeof(hms_payload_t), "sizeof payload");
  hms_node_close(NULL);
  hms_client_close(NULL);
  hms_payload_release(NULL);
}

static void test_semver(void) {
  CHECK(hms_version_matches("1.2.3", "^1") == 1, "^1");
  CHECK(hms_version_matches("2.0.0", "^1") == 0, "^1 vs 2");
  CHECK(hms_version_matches("1.2.3", "~1.2") == 1, "~1.2");
  CHECK(hms_version_matches("1.3.0", "~1.2") == 0, "~1.2 vs 1.3");
  CHECK(hms_version_matches("1.2.3", "1.2.3") == 1, "exact");
  CHECK(hms_version_matches("1.2.4", "1.2.3") == 0, "exact miss");
  CHECK(hms_version_matches("0.2.5", "^0.2") == 1, "^0.2");
  CHECK(hms_version_matches("0.3.0", "^0.2") == 0, "^0.2 vs 0.3");
  CHECK(hms_version_matches("0.0.3", "^0.0.3") == 1, "^0.0.3");
  CHECK(hms_version_matches("0.0.4", "^0.0.3") == 0, "^0.0.3 vs 0.0.4");
  CHECK(hms_version_matches("9.9.9", "*") == 1, "*");
  CHECK(hms_version_matches("1.5.0", ">=1.2") == 1, ">=");
  CHECK(hms_version_matches("1.1.0", ">=1.2") == 0, ">= miss");
  CHECK(hms_version_matches("1.2", "*") == -1, "bad version");
  CHECK(hms_version_matches("1.2.3", "^x") == -1, "bad req");
  CHECK(hms_version_matches("1.2.3", "^1.2.3.4") == -1, "bad req 4 parts");
}

static void test_bad_input(hms_node_t *node) {
  hms_error_t e;
  hms_service_t *svc;
  CHECK(hms_service_add(node, "bad name", "1.0.0", &svc, &e) == HMS_INVALID_ARGUMENT, "%s", e.message);
  CHECK(hms_service_add(node, "ok.name", "1.0", &svc, &e) == HMS_INVALID_ARGUMENT, "%s", e.message);
  CHECK(hms_service_add(node, NULL, "1.0.0", &svc, &e) == HMS_INVALID_ARGUMENT, "%s", e.message);
  hms_client_t *cl;
  CHECK(hms_connect(node, "no.such.service", "*", NULL, &cl, &e) == HMS_NOT_FOUND, "%s", e.message);
  CHECK(strstr(e.message, "no.such.service") != NULL, "message names the service: %s", e.message);
  CHECK(hms_connect(node, "ctest.main", "^7", NULL, &cl, &e) == HMS_NOT_FOUND, "%s", e.message);
  CHECK(strstr(e.message, "1.0.0") != NULL, "message lists versions: %s", e.message);
  CHECK(hms_connect(node, "ctest.main", "^^", NULL, &cl, &e) == HMS_INVALID_ARGUMENT, "%s", e.message);
  hms_node_options_t o;
  hms_node_options_init(&o);
  o.version = 99;
  hms_node_t *n2;
  CHECK(hms_node_open(&o, &n2, &e) == HMS_INVALID_ARGUMENT, "%s", e.message);
  hms_node_options_init(&o);
  o.ring_bytes = 5000;
  CHECK(hms_node_open(&o, &n2, &e) == HMS_INVALID_ARGUMENT, "%s", e.message);
  /* Same name and version as a live service in another process. */
  CHECK(hms_service_add(node, "ctest.main", "1.0.0", &svc, &e) == HMS_ALREADY_EXISTS, "%s", e.message);
  CHECK(strstr(e.message, "pid") != NULL, "names the pid: %s", e.message);
}

static void test_calls(hms_node_t *node) {
  hms_client_t *cl = connect_or_die(node, "ctest.main");
  hms_error_t e;
  hms_payload_t resp;
  CHECK(hms_client_function_count(cl) == 13, "count %u", hms_client_function_count(cl));
  const char *name;
  uint32_t id, flags;
  CHECK(hms_client_function_at(cl, 0, &name, &id, &flags) == HMS_OK && !strcmp(name, "echo") && id == 1 &&
            flags == HMS_FN_IDEMPOTENT,
        "fn 0");
  CHECK(hms_client_function_at(cl, 99, &name, &id, &flags) == HMS_OUT_OF_RANGE, "fn oob");
  CHECK(hms_client_function_id(cl, "nope", &id, &e) == HMS_NOT_FOUND && strstr(e.message, "echo"), "%s",
        e.message);
  /* echo of many sizes, including the exact maximum carried inline (larger ones use the arena) */
  size_t max = hms_client_max_inline(cl);
  CHECK(max > 1000, "max %zu", max);
  uint8_t *buf = malloc(max + 1);
  for (size_t i = 0; i <= max; i++) buf[i] = (uint8_t)(i * 7 + 3);
  size_t sizes[] = {0, 1, 63, 64, 65, 1000, 4096, max - 1, max};
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
    hms_payload_t req = {.data = buf, .len = sizes[k], .content_type = HMS_CT_RAW};
    hms_status_t st = hms_call(cl, fid(cl, "echo"), &req, &resp, 2000000000LL, &e);
    CHECK(st == HMS_OK, "echo %zu: %s", sizes[k], e.message);
    CHECK(resp.len == sizes[k] && (sizes[k] == 0 || memcmp(resp.data, buf, sizes[k]) == 0), "echo data %zu",
          sizes[k]);
    CHECK(resp.content_type == HMS_CT_RAW, "ct %u", resp.content_type);
    hms_payload_release(&resp);
    CHECK(resp.data == NULL && resp.release == NULL, "released");
  }
  /* Many round trips through wrap-around of the ring. */
  for (int i = 0; i < 20000; i++) {
    hms_payload_t req = {.data = buf, .len = (size_t)(i % 3000), .content_type = HMS_CT_RAW};
    if (hms_call(cl, 1, &req, &resp, 2000000000LL, &e) != HMS_OK || resp.len != (size_t)(i % 3000)) {
      CHECK(0, "wrap echo %d: %s", i, e.message);
      break;
    }
    hms_payload_release(&resp);
  }
  /* oversize */
  hms_payload_t big = {.data = buf, .len = max + 1, .content_type = HMS_CT_RAW};
  hms_client_set_arena_quota(cl, 65536, NULL); /* beyond the inline maximum and the arena quota */
  CHECK(hms_call(cl, 1, &big, &resp, -1, &e) == HMS_RESOURCE_EXHAUSTED, "%s", e.message);
  hms_client_set_arena_quota(cl, 0, NULL);
  CHECK(strstr(e.message, "max message") != NULL, "%s", e.message);
  hms_payload_release(&resp);
  free(buf);
  /* handler errors with message and details */
  CHECK(hms_call(cl, fid(cl, "fail"), NULL, &resp, -1, &e) == HMS_INVALID_ARGUMENT, "fail code %d", e.code);
  CHECK(e.origin == HMS_ORIGIN_REMOTE && strcmp(e.message, "quantity must be positive") == 0, "%s", e.message);
  CHECK(resp.len == 15 && resp.content_type == HMS_CT_JSON && memcmp(resp.data, "{\"field\":\"qty\"}", 15) == 0,
        "details");
  hms_payload_release(&resp);
  CHECK(hms_call(cl, fid(cl, "bare"), NULL, &resp, -1, &e) == HMS_PERMISSION_DENIED, "bare");
  CHECK(strstr(e.message, "PERMISSION_DENIED") != NULL, "%s", e.message);
  hms_payload_release(&resp);
  CHECK(hms_call(cl, 999, NULL, &resp, -1, &e) == HMS_UNIMPLEMENTED, "unimplemented %s", e.message);
  hms_payload_release(&resp);
  CHECK(hms_call(cl, 0, NULL, &resp, -1, &e) == HMS_UNIMPLEMENTED, "fn 0");
  hms_payload_release(&resp);
  CHECK(hms_call(cl, fid(cl, "double"), NULL, &resp, -1, &e) == HMS_OK && resp.len == 1, "double reply");
  hms_payload_release(&resp);
  /* peer identity from the kernel */
  CHECK(hms_call(cl, fid(cl, "peer"), NULL, &resp, -1, &e) == HMS_OK, "peer");
  char expect[128];
  snprintf(expect, sizeof expect, "%d %u %u ctest.main peer", (int)getpid(), (unsigned)getuid(),
           (unsigned)getgid());
  CHECK(resp.len == strlen(expect) && memcmp(resp.data, expect, resp.len) == 0, "peer reply %.*s",
        (int)resp.len, (const char *)resp.data);
  hms_payload_release(&resp);
  /* deadline: handler sleeps 300 ms, we wait 50 ms; the next call still works (late reply dropped) */
  int ms = 300;
  hms_payload_t sreq = {.data = &ms, .len = sizeof ms, .content_type = HMS_CT_RAW};
  int64_t t0 = now_ns();
  CHECK(hms_call(cl, fid(cl, "sleep"), &sreq, &resp, 50000000LL, &e) == HMS_DEADLINE_EXCEEDED, "deadline %s",
        e.message);
  int64_t took = now_ns() - t0;
  CHECK(took >= 50000000LL && took < 250000000LL, "deadline took %lld ns", (long long)took);
  hms_payload_release(&resp);
  hms_payload_t ereq = {.data = "x", .len = 1, .content_type = HMS_CT_RAW};
  CHECK(hms_call(cl, 1, &ereq, &resp, 2000000000LL, &e) == HMS_OK && resp.len == 1 && ((char *)resp.data)[0] == 'x',
        "after timeout: %s", e.message);
  hms_payload_release(&resp);
  /* a deadline already past when the server looks: handler must not run */
  CHECK(hms_call(cl, fid(cl, "sleep"), &sreq, &resp, 0, &e) == HMS_DEADLINE_EXCEEDED, "zero timeout");
  hms_payload_release(&resp);
  hms_client_close(cl);
}

typedef struct {
  hms_client_t *cl;
  int tid;
  int errors;
} thr_arg_t;

static void *thr_main(void *p) {
  thr_arg_t *a = p;
  char msg[64];
  for (int i = 0; i < 3000; i++) {
    int n = snprintf(msg, sizeof msg, "t%d-%d", a->tid, i);
    hms_payload_t req = {.data = msg, .len = (size_t)n, .content_type = HMS_CT_RAW}, resp;
    hms_error_t e;
    if (hms_call(a->cl, 1, &req, &resp, 5000000000LL, &e) != HMS_OK || resp.len != (size_t)n ||
        memcmp(resp.data, msg, (size_t)n) != 0) {
      a->errors++;
      fprintf(stderr, "thread %d call %d: %s\n", a->tid, i, e.message);
    }
    hms_payload_release(&resp);
  }
  return NULL;
}

static void test_threads(hms_node_t *node) {
  hms_client_t *cl = connect_or_die(node, "ctest.main");
  pthread_t th[8];
  thr_arg_t args[8];
  for (int i = 0; i < 8; i++) {
    args[i] = (thr_arg_t){cl, i, 0};
    pthread_create(&th[i], NULL, thr_main, &args[i]);
  }
  int errs = 0;
  for (int i = 0; i < 8; i++) {
    pthread_join(th[i], NULL);
    errs += args[i].errors;
  }
  CHECK(errs == 0, "%d thread errors", errs);
  hms_client_close(cl);
}

static int cb_calls = 0;
static void on_done(hms_completion_t *c) {
  int *expect = c->user_data;
  if (c->status == HMS_OK && c->payload.len == sizeof(int) && memcmp(c->payload.data, expect, sizeof(int)) == 0)
    cb_calls++;
  hms_payload_release(&c->payload);
}

static void test_async(hms_node_t *node) {
  hms_client_t *cl = connect_or_die(node, "ctest.main");
  hms_error_t e;
  /* 1000 in flight, harvested by poll */
  enum { N = 1000 };
  static uint64_t ids[N];
  for (int i = 0; i < N; i++) {
    CHECK(hms_call_submit(cl, fid(cl, "echo"), (const char *)&i, sizeof i, HMS_CT_RAW, 0, 5000000000LL, NULL,
                          (void *)(intptr_t)(i + 1), &ids[i], &e) == HMS_OK,
          "submit %d: %s", i, e.message);
  }
  int got = 0, bad = 0;
  hms_completion_t comp[64];
  while (got < N) {
    size_t n = 0;
    hms_status_t st = hms_client_poll(cl, comp, 64, &n, 2000000000LL, &e);
    if (st != HMS_OK || n == 0) {
      CHECK(0, "poll: %s n=%zu", e.message, n);
      break;
    }
    for (size_t k = 0; k < n; k++) {
      int i = (int)(intptr_t)comp[k].user_data - 1;
      if (comp[k].status != HMS_OK || i < 0 || i >= N || comp[k].call_id != ids[i] || comp[k].payload.len != sizeof i ||
          memcmp(comp[k].payload.data, &i, sizeof i) != 0)
        bad++;
      hms_payload_release(&comp[k].payload);
    }
    got += (int)n;
  }
  CHECK(got == N && bad == 0, "async got %d bad %d", got, bad);
  size_t n = 0;
  CHECK(hms_client_poll(cl, comp, 64, &n, 0, &e) == HMS_OK && n == 0, "nothing left");
  CHECK(hms_client_event_fd(cl) >= 0, "event fd");
  /* callbacks, driven by a synchronous call on the same client */
  static int vals[10];
  for (int i = 0; i < 10; i++) {
    vals[i] = i * 11;
    hms_call_submit(cl, 1, (const char *)&vals[i], sizeof(int), HMS_CT_RAW, 0, -1, on_done, &vals[i], NULL, NULL);
  }
  hms_payload_t resp;
  hms_call(cl, 1, NULL, &resp, -1, NULL);
  hms_payload_release(&resp);
  for (int k = 0; k < 100 && cb_calls < 10; k++) hms_client_poll(cl, NULL, 0, &n, 10000000LL, NULL);
  CHECK(cb_calls == 10, "callbacks %d", cb_calls);
  /* an async deadline */
  int ms = 300;
  uint64_t id;
  hms_call_submit(cl, fid(cl, "sleep"), (const char *)&ms, sizeof ms, HMS_CT_RAW, 0, 30000000LL, NULL, NULL, &id, NULL);
  int64_t t0 = now_ns();
  CHECK(hms_client_poll(cl, comp, 1, &n, 2000000000LL, &e) == HMS_OK && n == 1, "deadline poll");
  CHECK(comp[0].status == HMS_DEADLINE_EXCEEDED && comp[0].call_id == id, "async deadline %d", comp[0].status);
  CHECK(now_ns() - t0 < 200000000LL, "async deadline on time");
  hms_payload_release(&comp[0].payload);
  /* cancel: completes at once, and the running handler sees it */
  hms_call_submit(cl, fid(cl, "wait_cancel"), NULL, 0, HMS_CT_NONE, 0, -1, NULL, NULL, &id, NULL);
  usleep(300000); /* let the handler start (after the sleeping call above finishes) */
  CHECK(hms_call_cancel(cl, id, &e) == HMS_OK, "cancel: %s", e.message);
  CHECK(hms_call_cancel(cl, id, &e) == HMS_NOT_FOUND, "second cancel");
  CHECK(hms_client_poll(cl, comp, 1, &n, 1000000000LL, &e) == HMS_OK && n == 1 && comp[0].status == HMS_CANCELLED,
        "cancelled completion");
  hms_payload_release(&comp[0].payload);
  CHECK(hms_call(cl, fid(cl, "cancels"), NULL, &resp, 5000000000LL, &e) == HMS_OK && resp.len == 1 &&
            ((const char *)resp.data)[0] == '1',
        "handler observed the cancel: %.*s", (int)resp.len, (const char *)resp.data);
  hms_payload_release(&resp);
  /* batch: results in order, each with its own status */
  int a = 1, b = 2;
  hms_batch_item_t items[4] = {{fid(cl, "echo"), HMS_CT_RAW, (const char *)&a, sizeof a},
                               {fid(cl, "fail"), HMS_CT_NONE, NULL, 0},
                               {4000, HMS_CT_NONE, NULL, 0},
                               {fid(cl, "echo"), HMS_CT_RAW, (const char *)&b, sizeof b}};
  hms_completion_t outs[4];
  CHECK(hms_call_batch(cl, items, 4, 0, outs, 5000000000LL, &e) == HMS_OK, "batch: %s", e.message);
  CHECK(outs[0].status == HMS_OK && outs[0].payload.len == 4 && memcmp(outs[0].payload.data, &a, 4) == 0, "b0");
  CHECK(outs[1].status == HMS_INVALID_ARGUMENT && !strcmp(outs[1].message, "quantity must be positive"), "b1");
  CHECK(outs[2].status == HMS_UNIMPLEMENTED, "b2 %d", outs[2].status);
  CHECK(outs[3].status == HMS_OK && memcmp(outs[3].payload.data, &b, 4) == 0, "b3");
  for (int i = 0; i < 4; i++) hms_payload_release(&outs[i].payload);
  /* a big batch, larger than the ring and the slot table */
  enum { M = 3000 };
  static hms_batch_item_t big[M];
  static hms_completion_t bigout[M];
  static int bv[M];
  for (int i = 0; i < M; i++) {
    bv[i] = i;
    big[i] = (hms_batch_item_t){1, HMS_CT_RAW, (const char *)&bv[i], sizeof(int)};
  }
  CHECK(hms_call_batch(cl, big, M, 0, bigout, 10000000000LL, &e) == HMS_OK, "big batch: %s", e.message);
  int okc = 0;
  for (int i = 0; i < M; i++) {
    if (bigout[i].status == HMS_OK && bigout[i].payload.len == 4 && memcmp(bigout[i].payload.data, &i, 4) == 0) okc++;
    hms_payload_release(&bigout[i].payload);
  }
  CHECK(okc == M, "big batch ok %d", okc);
  /* one-way: 20000 messages, nothing comes back, the server saw them all */
  uint32_t cnt = fid(cl, "count");
  for (int i = 0; i < 10000; i++)
    hms_call_submit(cl, cnt, "x", 1, HMS_CT_RAW, HMS_CALL_ONEWAY, -1, NULL, NULL, NULL, NULL);
  CHECK(hms_call_batch(cl, big, M, HMS_CALL_ONEWAY, NULL, -1, &e) == HMS_OK, "oneway batch");
  for (int i = 0; i < M; i++) big[i].fn_id = cnt;
  CHECK(hms_call_batch(cl, big, M, HMS_CALL_ONEWAY, NULL, -1, &e) == HMS_OK, "oneway batch");
  CHECK(hms_call(cl, cnt, NULL, &resp, 5000000000LL, &e) == HMS_OK, "count");
  char want[32];
  snprintf(want, sizeof want, "%d", 10000 + M);
  CHECK(resp.len == strlen(want) && memcmp(resp.data, want, resp.len) == 0, "oneway count %.*s want %s",
        (int)resp.len, (const char *)resp.data, want);
  hms_payload_release(&resp);
  CHECK(hms_client_poll(cl, comp, 64, &n, 0, &e) == HMS_OK && n == 0, "no completions from one-way");
  /* one-way calls to a function with a batch handler: in order, whole, in runs */
  uint32_t tal = fid(cl, "tally");
  const int T = 30000;
  uint64_t seq = 0;
  for (int i = 0; i < 1000; i++, seq++)
    hms_call_submit(cl, tal, (const char *)&seq, 8, HMS_CT_RAW, HMS_CALL_ONEWAY, -1, NULL, NULL, NULL, NULL);
  uint64_t *seqs = malloc(sizeof(uint64_t) * (size_t)(T - 1000));
  hms_batch_item_t *titems = calloc((size_t)(T - 1000), sizeof *titems);
  for (int i = 0; i < T - 1000; i++) {
    seqs[i] = seq++;
    titems[i].fn_id = tal;
    titems[i].content_type = HMS_CT_RAW;
    titems[i].data = (const char *)&seqs[i];
    titems[i].len = 8;
  }
  CHECK(hms_call_batch(cl, titems, (size_t)(T - 1000), HMS_CALL_ONEWAY, NULL, -1, &e) == HMS_OK, "tally batch: %s",
        e.message);
  CHECK(hms_call(cl, tal, NULL, &resp, 5000000000LL, &e) == HMS_OK, "tally: %s", e.message);
  unsigned long long tgot = 0, runs = 0, errs = 1;
  char tbuf[96] = "";
  memcpy(tbuf, resp.data, resp.len < sizeof tbuf - 1 ? resp.len : sizeof tbuf - 1);
  sscanf(tbuf, "%llu %llu %llu", &tgot, &runs, &errs);
  CHECK(tgot == (unsigned long long)T && errs == 0, "tally: %s (want %d items, 0 errors)", tbuf, T);
  CHECK(runs >= 1 && runs < (unsigned long long)T / 8, "tally ran in %llu runs for %d items", runs, T);
  hms_payload_release(&resp);
  free(seqs);
  free(titems);
  hms_client_close(cl);
}

static void test_streams(hms_node_t *node) {
  hms_client_t *cl = connect_or_die(node, "ctest.main");
  hms_error_t e;
  hms_stream_t *s;
  hms_payload_t item;
  int end = 0;
  /* server stream: 100000 items in order, then the end */
  int n = 100000;
  CHECK(hms_stream_open(cl, fid(cl, "numbers"), (const char *)&n, sizeof n, HMS_CT_RAW, HMS_STREAM_SERVER, -1, &s,
                        &e) == HMS_OK,
        "open: %s", e.message);
  int got = 0, bad = 0;
  while (hms_stream_next(s, &item, &end, 5000000000LL, &e) == HMS_OK && !end) {
    int v;
    memcpy(&v, item.data, sizeof v);
    if (v != got) bad++;
    got++;
    hms_payload_release(&item);
  }
  CHECK(end == 1 && got == n && bad == 0, "server stream end=%d got=%d bad=%d (%s)", end, got, bad, e.message);
  hms_stream_close(s);
  /* error after items is distinct from the end */
  n = -3;
  hms_stream_open(cl, fid(cl, "numbers"), (const char *)&n, sizeof n, HMS_CT_RAW, HMS_STREAM_SERVER, -1, &s, &e);
  got = 0;
  hms_status_t st;
  while ((st = hms_stream_next(s, &item, &end, 5000000000LL, &e)) == HMS_OK && !end) {
    got++;
    hms_payload_release(&item);
  }
  hms_payload_release(&item);
  CHECK(st == HMS_ABORTED && got == 3 && !strcmp(e.message, "stopped on purpose"), "stream error %d got %d %s", st,
        got, e.message);
  hms_stream_close(s);
  /* cancel mid-stream: the producer stops, the connection stays usable */
  n = 100000000;
  hms_stream_open(cl, fid(cl, "numbers"), (const char *)&n, sizeof n, HMS_CT_RAW, HMS_STREAM_SERVER, -1, &s, &e);
  CHECK(hms_stream_next(s, &item, &end, 5000000000LL, &e) == HMS_OK && !end, "first item");
  hms_payload_release(&item);
  hms_stream_cancel(s);
  CHECK(hms_stream_next(s, &item, &end, 5000000000LL, &e) == HMS_CANCELLED, "after cancel: %s", e.message);
  hms_stream_close(s);
  hms_payload_t resp;
  CHECK(hms_call(cl, 1, NULL, &resp, 5000000000LL, &e) == HMS_OK, "call after cancelled stream: %s", e.message);
  hms_payload_release(&resp);
  /* a streaming function called plainly, and a plain function's stream */
  CHECK(hms_call(cl, fid(cl, "numbers"), NULL, &resp, 5000000000LL, &e) == HMS_FAILED_PRECONDITION, "plain call");
  hms_payload_release(&resp);
  CHECK(hms_call(cl, fid(cl, "sum"), NULL, &resp, 5000000000LL, &e) == HMS_FAILED_PRECONDITION, "plain call 2");
  hms_payload_release(&resp);
  /* client stream: 50000 ints summed */
  CHECK(hms_stream_open(cl, fid(cl, "sum"), NULL, 0, HMS_CT_NONE, HMS_STREAM_CLIENT, 10000000000LL, &s, &e) == HMS_OK,
        "open sum");
  long want = 0;
  for (int i = 0; i < 50000; i++) {
    want += i;
    if (hms_stream_send(s, (const char *)&i, sizeof i, HMS_CT_RAW, &e) != HMS_OK) {
      CHECK(0, "send %d: %s", i, e.message);
      break;
    }
  }
  CHECK(hms_stream_finish(s, &e) == HMS_OK, "finish");
  CHECK(hms_stream_send(s, "x", 1, HMS_CT_RAW, &e) == HMS_FAILED_PRECONDITION, "send after finish");
  CHECK(hms_stream_next(s, &item, &end, -1, &e) == HMS_OK && !end && item.len == sizeof(long) &&
            memcmp(item.data, &want, sizeof want) == 0,
        "sum reply: %s", e.message);
  hms_payload_release(&item);
  CHECK(hms_stream_next(s, &item, &end, -1, &e) == HMS_OK && end == 1, "sum end");
  hms_stream_close(s);
  /* bidirectional: send and receive interleaved on one thread, in lock step */
  CHECK(hms_stream_open(cl, fid(cl, "plus_one"), NULL, 0, HMS_CT_NONE, HMS_STREAM_CLIENT | HMS_STREAM_SERVER,
                        10000000000LL, &s, &e) == HMS_OK,
        "open bidi");
  bad = 0;
  for (int i = 0; i < 2000; i++) {
    hms_stream_send(s, (const char *)&i, sizeof i, HMS_CT_RAW, &e);
    if (hms_stream_next(s, &item, &end, 5000000000LL, &e) != HMS_OK || end || item.len != sizeof(int)) {
      bad++;
      break;
    }
    int v;
    memcpy(&v, item.data, sizeof v);
    if (v != i + 1) bad++;
    hms_payload_release(&item);
  }
  hms_stream_finish(s, &e);
  CHECK(hms_stream_next(s, &item, &end, 5000000000LL, &e) == HMS_OK && end == 1, "bidi end");
  CHECK(bad == 0, "bidi bad %d", bad);
  hms_stream_close(s);
  CHECK(hms_stream_open(cl, 1, NULL, 0, HMS_CT_NONE, 0, -1, &s, &e) == HMS_INVALID_ARGUMENT, "bad flags");
  hms_client_close(cl);
}

static void test_async_server_death(void) {
  pid_t srv = fork_server("ctest.adeath", 0);
  hms_node_t *node;
  hms_node_open(NULL, &node, NULL);
  hms_client_t *cl = connect_or_die(node, "ctest.adeath");
  int ms = 5000;
  uint64_t ids[5];
  for (int i = 0; i < 5; i++)
    hms_call_submit(cl, fid(cl, "sleep"), (const char *)&ms, sizeof ms, HMS_CT_RAW, 0, -1, NULL, NULL, &ids[i], NULL);
  usleep(50000);
  kill(srv, SIGKILL);
  waitpid(srv, NULL, 0);
  int64_t t0 = now_ns();
  int unavailable = 0;
  hms_completion_t comp[8];
  hms_error_t e;
  while (unavailable < 5 && now_ns() - t0 < 2000000000LL) {
    size_t n = 0;
    if (hms_client_poll(cl, comp, 8, &n, 500000000LL, &e) != HMS_OK) break;
    for (size_t k = 0; k < n; k++) {
      if (comp[k].status == HMS_UNAVAILABLE) unavailable++;
      hms_payload_release(&comp[k].payload);
    }
  }
  CHECK(unavailable == 5, "async calls on a dead server: %d unavailable", unavailable);
  CHECK(now_ns() - t0 < 100000000LL, "async death detected in %lld ms", (long long)((now_ns() - t0) / 1000000));
  size_t n;
  CHECK(hms_client_poll(cl, comp, 8, &n, 0, &e) == HMS_UNAVAILABLE, "poll after death");
  hms_client_close(cl);
  hms_node_close(node);
}

static void test_list(void) {
  hms_service_list_t list;
  hms_error_t e;
  CHECK(hms_list_services(NULL, &list, &e) == HMS_OK, "%s", e.message);
  int found = 0;
  for (size_t i = 0; i < list.count; i++)
    if (!strcmp(list.items[i].name, "ctest.main")) {
      found = 1;
      CHECK(list.items[i].function_count == 13, "fns %u", list.items[i].function_count);
      CHECK(strcmp(list.items[i].function_names[0], "echo") == 0, "fn0");
      CHECK(strcmp(list.items[i].version, "1.0.0") == 0, "version");
      CHECK(list.items[i].pid > 0, "pid");
    }
  CHECK(found, "ctest.main listed");
  list.release(&list);
  CHECK(list.release == NULL, "list released");
  CHECK(hms_list_services("/nonexistent/dir/for/hms", &list, &e) == HMS_OK && list.count == 0, "missing dir");
  list.release(&list);
}

static void test_crash(hms_node_t *node) {
  /* Server killed while a call is in flight: the caller gets UNAVAILABLE within 100 ms. */
  pid_t srv = fork_server("ctest.crash", 0);
  CHECK(srv > 0, "fork crash server");
  hms_client_t *cl = connect_or_die(node, "ctest.crash");
  int ms = 5000;
  hms_payload_t sreq = {.data = &ms, .len = sizeof ms, .content_type = HMS_CT_RAW}, resp;
  hms_error_t e;
  pid_t killer = fork();
  if (killer == 0) {
    usleep(100000);
    kill(srv, SIGKILL);
    _exit(0);
  }
  int64_t t0 = now_ns();
  hms_status_t st = hms_call(cl, fid(cl, "sleep"), &sreq, &resp, 10000000000LL, &e);
  int64_t took = now_ns() - t0;
  CHECK(st == HMS_UNAVAILABLE, "in-flight call after kill: %s %s", hms_status_str(st), e.message);
  CHECK(took < 100000000LL + 100000000LL, "detected after %lld ms (kill at 100 ms)", (long long)(took / 1000000));
  hms_payload_release(&resp);
  waitpid(killer, NULL, 0);
  waitpid(srv, NULL, 0);
  /* Future calls fail at once. */
  t0 = now_ns();
  CHECK(hms_call(cl, 1, NULL, &resp, -1, &e) == HMS_UNAVAILABLE, "future call %s", e.message);
  CHECK(now_ns() - t0 < 100000000LL, "future call fast");
  hms_payload_release(&resp);
  hms_client_close(cl);
  /* Stale entry is cleaned and a restarted service is found again. */
  srv = fork_server("ctest.crash", 0);
  CHECK(srv > 0, "restart");
  cl = connect_or_die(node, "ctest.crash");
  hms_payload_t req = {.data = "again", .len = 5, .content_type = HMS_CT_RAW};
  CHECK(hms_call(cl, 1, &req, &resp, 2000000000LL, &e) == HMS_OK && resp.len == 5, "after restart: %s", e.message);
  hms_payload_release(&resp);
  /* Killed with no call in flight: the next call fails within 100 ms. */
  kill(srv, SIGKILL);
  waitpid(srv, NULL, 0);
  t0 = now_ns();
  CHECK(hms_call(cl, 1, &req, &resp, 10000000000LL, &e) == HMS_UNAVAILABLE, "idle kill: %s", e.message);
  took = now_ns() - t0;
  CHECK(took < 100000000LL, "idle kill detected after %lld ms", (long long)(took / 1000000));
  hms_payload_release(&resp);
  hms_client_close(cl);
  /* The dead process's entry is gone from listings. */
  hms_service_list_t list;
  hms_list_services(NULL, &list, NULL);
  for (size_t i = 0; i < list.count; i++) CHECK(strcmp(list.items[i].name, "ctest.crash") != 0, "stale listed");
  list.release(&list);
}

static int selftest(void) {
  test_abi();
  test_semver();
  pid_t srv = fork_server("ctest.main", -1);
  if (srv <= 0) {
    fprintf(stderr, "could not start server\n");
    return 2;
  }
  hms_node_t *node;
  hms_error_t e;
  if (hms_node_open(NULL, &node, &e)) {
    fprintf(stderr, "%s\n", e.message);
    return 2;
  }
  test_bad_input(node);
  test_calls(node);
  test_threads(node);
  test_async(node);
  test_streams(node);
  test_async_server_death();
  test_list();
  test_crash(node);
  hms_node_close(node);
  kill(srv, SIGTERM);
  waitpid(srv, NULL, 0);
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("all C tests passed\n");
  return 0;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* n timed 64-byte raw round trips to function fn_id (after n/10 + 100 untimed ones); prints
 * "p50_ns p99_ns calls_per_s". */
static void bench_calls(hms_client_t *cl, uint32_t fn_id, int n) {
  uint8_t msg[64];
  memset(msg, 'x', sizeof msg);
  hms_payload_t req = {.data = msg, .len = 64, .content_type = HMS_CT_RAW}, resp;
  int64_t *lat = malloc(sizeof(int64_t) * (size_t)n);
  for (int i = 0; i < n / 10 + 100; i++) {
    hms_call(cl, fn_id, &req, &resp, -1, NULL);
    hms_payload_release(&resp);
  }
  int64_t start = now_ns();
  for (int i = 0; i < n; i++) {
    int64_t t0 = now_ns();
    hms_call(cl, fn_id, &req, &resp, -1, NULL);
    lat[i] = now_ns() - t0;
    hms_payload_release(&resp);
  }
  int64_t total = now_ns() - start;
  qsort(lat, (size_t)n, sizeof *lat, cmp_i64);
  printf("%lld %lld %.0f\n", (long long)lat[n / 2], (long long)lat[(int)(n * 0.99)], n / (total / 1e9));
  free(lat);
}

static int bench(int64_t spin_ns, int n) {
  pid_t srv = fork_server("ctest.bench", spin_ns);
  if (srv <= 0) return 2;
  hms_node_options_t o;
  hms_node_options_init(&o);
  o.spin_ns = spin_ns;
  hms_node_t *node;
  hms_node_open(&o, &node, NULL);
  hms_client_t *cl = connect_or_die(node, "ctest.bench");
  bench_calls(cl, 1, n);
  hms_client_close(cl);
  hms_node_close(node);
  kill(srv, SIGTERM);
  waitpid(srv, NULL, 0);
  return 0;
}

/* The C client of the cross-language bench: 64-byte raw echo round trips to SERVICE's `echo`. */
static int bench_to(const char *service, int n) {
  hms_node_t *node;
  hms_error_t e;
  if (hms_node_open(NULL, &node, &e)) {
    fprintf(stderr, "node_open: %s\n", e.message);
    return 2;
  }
  hms_client_t *cl = connect_or_die(node, service);
  uint32_t id;
  if (hms_client_function_id(cl, "echo", &id, &e)) {
    fprintf(stderr, "%s\n", e.message);
    return 4;
  }
  bench_calls(cl, id, n);
  hms_client_close(cl);
  hms_node_close(node);
  return 0;
}

/* One-way throughput: N 64-byte messages to a counting handler, sent in batches of B, measured until
 * a synchronous call returns the count (the receiver has handled them all). Prints msgs/s. */
static int bench_oneway(int64_t spin_ns, long n, int b) {
  pid_t srv = fork_server("ctest.ow", spin_ns);
  if (srv <= 0) return 2;
  hms_node_options_t o;
  hms_node_options_init(&o);
  o.spin_ns = spin_ns;
  hms_node_t *node;
  hms_node_open(&o, &node, NULL);
  hms_client_t *cl = connect_or_die(node, "ctest.ow");
  uint32_t cnt = fid(cl, "count");
  char *data = calloc((size_t)b, 64);
  size_t *lens = malloc(sizeof(size_t) * (size_t)b);
  for (int i = 0; i < b; i++) lens[i] = 64;
  int64_t t0 = now_ns();
  for (long sent = 0; sent < n; sent += b)
    hms_call_batch_packed(cl, cnt, HMS_CT_RAW, data, lens, (size_t)b, HMS_CALL_ONEWAY, NULL, -1, NULL);
  hms_payload_t resp;
  hms_call(cl, cnt, NULL, &resp, -1, NULL);
  int64_t dt = now_ns() - t0;
  long got = resp.len ? strtol((const char *)resp.data, NULL, 10) : -1;
  hms_payload_release(&resp);
  printf("%.0f %ld\n", (double)got / (dt / 1e9), got);
  free(data);
  free(lens);
  hms_client_close(cl);
  hms_node_close(node);
  kill(srv, SIGTERM);
  waitpid(srv, NULL, 0);
  return got == (n + b - 1) / b * b ? 0 : 1;
}

static int call_once(const char *service, const char *fn, const char *hex, uint32_t ct) {
  hms_node_t *node;
  hms_error_t e;
  if (hms_node_open(NULL, &node, &e)) return 2;
  hms_client_t *cl = connect_or_die(node, service);
  uint32_t id;
  if (hms_client_function_id(cl, fn, &id, &e)) {
    fprintf(stderr, "%s\n", e.message);
    return 4;
  }
  size_t n = strlen(hex) / 2;
  uint8_t *buf = malloc(n + 1);
  for (size_t i = 0; i < n; i++) sscanf(hex + 2 * i, "%2hhx", &buf[i]);
  hms_payload_t req = {.data = buf, .len = n, .content_type = ct}, resp;
  hms_status_t st = hms_call(cl, id, &req, &resp, 5000000000LL, &e);
  if (st) {
    printf("ERROR %s %s\n", hms_status_str(st), e.message);
  } else {
    printf("OK %u ", resp.content_type);
    for (size_t i = 0; i < resp.len; i++) printf("%02x", ((const uint8_t *)resp.data)[i]);
    printf("\n");
  }
  hms_payload_release(&resp);
  free(buf);
  hms_client_close(cl);
  hms_node_close(node);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 2 && !strcmp(argv[1], "selftest")) return selftest();
  if (argc >= 3 && !strcmp(argv[1], "serve")) return run_server("ctest.echo", atoll(argv[2]), -1);
  if (argc >= 5 && !strcmp(argv[1], "call"))
    return call_once(argv[2], argv[3], argv[4], argc >= 6 ? (uint32_t)atoi(argv[5]) : HMS_CT_RAW);
  if (argc >= 4 && !strcmp(argv[1], "bench")) return bench(atoll(argv[2]), atoi(argv[3]));
  if (argc >= 4 && !strcmp(argv[1], "bench-to")) return bench_to(argv[2], atoi(argv[3]));
  if (argc >= 5 && !strcmp(argv[1], "bench-oneway")) return bench_oneway(atoll(argv[2]), atol(argv[3]), atoi(argv[4]));
  fprintf(stderr, "usage: hms_ctest selftest | serve SPIN_NS | call SERVICE FN HEX [CONTENT_TYPE] | bench SPIN_NS N | "
                  "bench-to SERVICE N | bench-oneway SPIN_NS N B\n");
  return 64;
}
