/* C-level tests of the core, driven by tests/test_c_core.py (also built with ASan/UBSan there).
 *
 *   hms_ctest selftest            run every C test against a forked server; exit 0 when all pass
 *   hms_ctest serve SPIN_NS       serve "ctest.echo"@1.0.0 until killed (used by Python cross tests)
 *   hms_ctest call SERVICE FN HEX call a function once and print the reply as hex (C client of Python)
 *   hms_ctest bench SPIN_NS N     C<->C 64-byte echo round trip: prints "p50_ns p99_ns calls_per_s"
 *
 * The runtime directory comes from HMS_FFI_RUNTIME_DIR. */
#include <errno.h>
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
  CHECK(hms_client_function_count(cl) == 6, "count %u", hms_client_function_count(cl));
  const char *name;
  uint32_t id, flags;
  CHECK(hms_client_function_at(cl, 0, &name, &id, &flags) == HMS_OK && !strcmp(name, "echo") && id == 1 &&
            flags == HMS_FN_IDEMPOTENT,
        "fn 0");
  CHECK(hms_client_function_at(cl, 99, &name, &id, &flags) == HMS_OUT_OF_RANGE, "fn oob");
  CHECK(hms_client_function_id(cl, "nope", &id, &e) == HMS_NOT_FOUND && strstr(e.message, "echo"), "%s",
        e.message);
  /* echo of many sizes, including the exact maximum */
  size_t max = hms_client_max_message(cl);
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
  CHECK(hms_call(cl, 1, &big, &resp, -1, &e) == HMS_RESOURCE_EXHAUSTED, "%s", e.message);
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

static void test_list(void) {
  hms_service_list_t list;
  hms_error_t e;
  CHECK(hms_list_services(NULL, &list, &e) == HMS_OK, "%s", e.message);
  int found = 0;
  for (size_t i = 0; i < list.count; i++)
    if (!strcmp(list.items[i].name, "ctest.main")) {
      found = 1;
      CHECK(list.items[i].function_count == 6, "fns %u", list.items[i].function_count);
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

static int bench(int64_t spin_ns, int n) {
  pid_t srv = fork_server("ctest.bench", spin_ns);
  if (srv <= 0) return 2;
  hms_node_options_t o;
  hms_node_options_init(&o);
  o.spin_ns = spin_ns;
  hms_node_t *node;
  hms_node_open(&o, &node, NULL);
  hms_client_t *cl = connect_or_die(node, "ctest.bench");
  uint8_t msg[64];
  memset(msg, 'x', sizeof msg);
  hms_payload_t req = {.data = msg, .len = 64, .content_type = HMS_CT_RAW}, resp;
  int64_t *lat = malloc(sizeof(int64_t) * (size_t)n);
  for (int i = 0; i < n / 10 + 100; i++) {
    hms_call(cl, 1, &req, &resp, -1, NULL);
    hms_payload_release(&resp);
  }
  int64_t start = now_ns();
  for (int i = 0; i < n; i++) {
    int64_t t0 = now_ns();
    hms_call(cl, 1, &req, &resp, -1, NULL);
    lat[i] = now_ns() - t0;
    hms_payload_release(&resp);
  }
  int64_t total = now_ns() - start;
  qsort(lat, (size_t)n, sizeof *lat, cmp_i64);
  printf("%lld %lld %.0f\n", (long long)lat[n / 2], (long long)lat[(int)(n * 0.99)], n / (total / 1e9));
  hms_client_close(cl);
  hms_node_close(node);
  kill(srv, SIGTERM);
  waitpid(srv, NULL, 0);
  free(lat);
  return 0;
}

static int call_once(const char *service, const char *fn, const char *hex) {
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
  hms_payload_t req = {.data = buf, .len = n, .content_type = HMS_CT_RAW}, resp;
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
  if (argc >= 5 && !strcmp(argv[1], "call")) return call_once(argv[2], argv[3], argv[4]);
  if (argc >= 4 && !strcmp(argv[1], "bench")) return bench(atoll(argv[2]), atoi(argv[3]));
  fprintf(stderr, "usage: hms_ctest selftest | serve SPIN_NS | call SERVICE FN HEX | bench SPIN_NS N\n");
  return 64;
}
