/* C-level tests of access control, limits and the audit log (include/hms_ffi/hms_ffi.h, "Access control,
 * limits and audit").
 *
 *   hms_access_test selftest AUDIT_PATH   forks a server with rules, limits and an audit log, checks what a
 *                                         client of the same uid sees, then the audit file; exit 0 when all pass
 *   hms_access_test call SERVICE FN       one call with an empty request (HMS_FFI_RUNTIME_DIR names the
 *                                         directory); prints "OK <len>" or "ERROR <STATUS> <message>"
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hms_ffi/hms_ffi.h>

static int failures = 0;
#define CHECK(cond, ...)                                        \
  do {                                                          \
    if (!(cond)) {                                              \
      failures++;                                               \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                             \
      fprintf(stderr, "\n");                                    \
    }                                                           \
  } while (0)

#define SVC "acl.ctest"

static hms_status_t h_echo(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  return hms_call_reply(call, req->data, req->len, req->content_type, NULL);
}

static hms_deferred_t *held[64];
static int nheld = 0;
static hms_status_t h_hold(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)req;
  (void)ud;
  if (nheld < 64 && hms_call_defer(call, &held[nheld], NULL) == HMS_OK) nheld++;
  return HMS_OK;
}
static hms_status_t h_release(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)req;
  (void)ud;
  int n = nheld;
  for (int i = 0; i < nheld; i++) hms_deferred_reply(held[i], "done", 4, HMS_CT_RAW, NULL);
  nheld = 0;
  char buf[16];
  int k = snprintf(buf, sizeof buf, "%d", n);
  return hms_call_reply(call, buf, (size_t)k, HMS_CT_RAW, NULL);
}
static hms_status_t h_stop(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)req;
  hms_node_stop((hms_node_t *)ud);
  return hms_call_reply(call, NULL, 0, HMS_CT_NONE, NULL);
}

static int serve(const char *audit_path, int notify) {
  hms_error_t e;
  hms_node_t *node;
  hms_service_t *svc;
  if (hms_node_open(NULL, &node, &e) || hms_service_add(node, SVC, "1.0.0", &svc, &e)) {
    fprintf(stderr, "server: %s\n", e.message);
    return 1;
  }
  hms_function_add(svc, "echo", 0, h_echo, NULL, NULL);
  hms_function_add(svc, "owner_only", 0, h_echo, NULL, NULL);
  hms_function_add(svc, "forbidden", 0, h_echo, NULL, NULL);
  hms_function_add(svc, "by_group", 0, h_echo, NULL, NULL);
  hms_function_add(svc, "hold", 0, h_hold, NULL, NULL);
  hms_function_add(svc, "release", 0, h_release, NULL, NULL);
  hms_function_add(svc, "stop", 0, h_stop, node, NULL);

  hms_access_t a;
  hms_access_init(&a);
  a.flags = HMS_ACCESS_OWNER;
  CHECK(hms_function_set_access(svc, "owner_only", &a, &e) == HMS_OK, "%s", e.message);
  uint32_t uids[2] = {4242, 4343}, gids[1] = {getgid()};
  hms_access_init(&a);
  a.flags = 0;
  a.uids = uids;
  a.n_uids = 2;
  a.roles = "auditors";
  a.audit = HMS_AUDIT_ALL;
  CHECK(hms_function_set_access(svc, "forbidden", &a, &e) == HMS_OK, "%s", e.message);
  hms_access_init(&a);
  a.flags = 0;
  a.gids = gids; /* our own primary group: allowed through the gid */
  a.n_gids = 1;
  CHECK(hms_function_set_access(svc, "by_group", &a, &e) == HMS_OK, "%s", e.message);
  /* bad arguments */
  CHECK(hms_function_set_access(svc, "nope", &a, &e) == HMS_NOT_FOUND, "unknown function: %d", e.code);
  a.version = 99;
  CHECK(hms_function_set_access(svc, "echo", &a, &e) == HMS_INVALID_ARGUMENT, "bad version: %d", e.code);
  hms_access_init(&a);
  a.n_uids = 3; /* uids NULL */
  CHECK(hms_function_set_access(svc, "echo", &a, &e) == HMS_INVALID_ARGUMENT, "NULL list: %d", e.code);

  hms_limits_t l;
  hms_limits_init(&l);
  l.max_ring_bytes = 3;
  CHECK(hms_service_set_limits(svc, &l, &e) == HMS_INVALID_ARGUMENT, "tiny ring quota accepted");
  hms_limits_init(&l);
  l.max_connections = 3;
  l.max_inflight = 2;
  l.max_ring_bytes = 1 << 16;
  l.max_message = 1000;
  CHECK(hms_service_set_limits(svc, &l, &e) == HMS_OK, "%s", e.message);

  hms_audit_options_t ao;
  hms_audit_options_init(&ao);
  ao.path = audit_path;
  ao.level = HMS_AUDIT_DENY; /* "forbidden" records everything (its own level) */
  CHECK(hms_node_set_audit(node, &ao, &e) == HMS_OK, "%s", e.message);
  CHECK(hms_node_set_audit(node, &ao, &e) == HMS_ALREADY_EXISTS, "second audit log accepted");

  char c = failures ? 'F' : 'R';
  if (write(notify, &c, 1) != 1) return 1;
  close(notify);
  hms_node_serve(node, 30LL * 1000000000LL, &e);
  hms_audit_stats_t as;
  hms_audit_stats_init(&as);
  hms_node_audit_stats(node, &as, NULL);
  hms_node_close(node); /* writes the queued records */
  printf("server: audit queued %llu written %llu dropped %llu\n", (unsigned long long)as.queued,
         (unsigned long long)as.written, (unsigned long long)as.dropped);
  return failures ? 1 : 0;
}

static hms_status_t call(hms_client_t *cl, const char *fn, size_t len, hms_error_t *e, char *out, size_t cap) {
  uint32_t id;
  hms_status_t st = hms_client_function_id(cl, fn, &id, e);
  if (st) return st;
  char *buf = calloc(1, len + 1);
  hms_payload_t resp;
  st = hms_call_bytes(cl, id, buf, len, HMS_CT_RAW, &resp, 5000000000LL, e);
  if (out && cap) {
    size_t n = resp.len < cap - 1 ? resp.len : cap - 1;
    if (resp.data) memcpy(out, resp.data, n);
    out[n] = 0;
  }
  hms_payload_release(&resp);
  free(buf);
  return st;
}

static hms_client_t *conn(hms_node_t *node, uint64_t ring, hms_status_t *st, hms_error_t *e) {
  hms_connect_options_t o;
  hms_connect_options_init(&o);
  o.ring_bytes = ring;
  hms_client_t *cl = NULL;
  *st = hms_connect(node, SVC, "*", &o, &cl, e);
  return cl;
}

static int count_lines(const char *path, const char *needle_a, const char *needle_b) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[1024];
  int n = 0;
  while (fgets(line, sizeof line, f))
    if (strstr(line, needle_a) && (!needle_b || strstr(line, needle_b))) n++;
  fclose(f);
  return n;
}

static int selftest(const char *audit_path) {
  unlink(audit_path);
  int p[2];
  if (pipe(p) != 0) return 2;
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    _exit(serve(audit_path, p[1]));
  }
  close(p[1]);
  char ready = 0;
  if (read(p[0], &ready, 1) != 1 || ready != 'R') {
    fprintf(stderr, "server did not start (%c)\n", ready);
    return 1;
  }
  close(p[0]);
  hms_error_t e;
  hms_node_t *node;
  hms_status_t st;
  if (hms_node_open(NULL, &node, &e)) return 2;
  hms_client_t *a = conn(node, 0, &st, &e);
  CHECK(st == HMS_OK, "connect: %s", e.message);
  if (!a) return 1;
  char out[64];
  CHECK(call(a, "echo", 10, &e, out, sizeof out) == HMS_OK, "echo: %s", e.message);
  CHECK(call(a, "owner_only", 10, &e, out, sizeof out) == HMS_OK, "owner_only as the owner: %s", e.message);
  CHECK(call(a, "by_group", 10, &e, out, sizeof out) == HMS_OK, "by_group with our gid: %s", e.message);
  st = call(a, "forbidden", 10, &e, out, sizeof out);
  CHECK(st == HMS_PERMISSION_DENIED, "forbidden: %d %s", st, e.message);
  char want[160];
  snprintf(want, sizeof want, "uid %u (gid %u) may not call " SVC ".forbidden; the policy allows uids [4242, 4343], "
           "gids [], roles [auditors]", (unsigned)getuid(), (unsigned)getgid());
  CHECK(strcmp(e.message, want) == 0, "deny message: '%s' (wanted '%s')", e.message, want);
  CHECK(e.origin == HMS_ORIGIN_REMOTE, "origin %d", e.origin);
  /* the connection goes on after a refusal */
  CHECK(call(a, "echo", 10, &e, out, sizeof out) == HMS_OK, "echo after a refusal: %s", e.message);
  /* max message */
  st = call(a, "echo", 1001, &e, out, sizeof out);
  CHECK(st == HMS_RESOURCE_EXHAUSTED && strstr(e.message, "max message of 1000"), "1001 bytes: %d %s", st, e.message);
  CHECK(call(a, "echo", 1000, &e, out, sizeof out) == HMS_OK, "1000 bytes: %s", e.message);
  /* ring quota: asking for more is refused at the handshake; the default shrinks to the quota */
  hms_client_t *big = conn(node, 1 << 20, &st, &e);
  CHECK(!big && st == HMS_RESOURCE_EXHAUSTED && strstr(e.message, "ring quota of 65536"), "big ring: %d %s", st,
        e.message);
  hms_client_close(big);
  /* max in flight: "hold" defers; the third concurrent one on this connection is refused */
  uint32_t hold;
  hms_client_function_id(a, "hold", &hold, NULL);
  uint64_t ids[3];
  for (int i = 0; i < 3; i++)
    CHECK(hms_call_submit(a, hold, "", 0, HMS_CT_RAW, 0, 5000000000LL, NULL, NULL, &ids[i], &e) == HMS_OK, "%s",
          e.message);
  hms_completion_t comp[4];
  size_t got = 0, n;
  int64_t until = time(NULL) + 5;
  while (got < 1 && time(NULL) < until) {
    hms_client_poll(a, comp + got, 4 - got, &n, 100000000LL, &e);
    got += n;
  }
  CHECK(got == 1 && comp[0].status == HMS_RESOURCE_EXHAUSTED && comp[0].call_id == ids[2] &&
            strstr(comp[0].message, "2 calls in flight"),
        "in flight: got %zu, status %d '%s'", got, got ? comp[0].status : -1, got ? comp[0].message : "");
  for (size_t i = 0; i < got; i++) hms_payload_release(&comp[i].payload);
  /* another connection is not affected; it releases the held calls */
  hms_client_t *b = conn(node, 0, &st, &e);
  CHECK(st == HMS_OK, "second connection: %s", e.message);
  CHECK(call(b, "release", 0, &e, out, sizeof out) == HMS_OK && !strcmp(out, "2"), "release: %s '%s'", e.message, out);
  got = 0;
  until = time(NULL) + 5;
  while (got < 2 && time(NULL) < until) {
    hms_client_poll(a, comp + got, 4 - got, &n, 100000000LL, &e);
    got += n;
  }
  CHECK(got == 2 && comp[0].status == HMS_OK && comp[1].status == HMS_OK, "held calls answered: %zu", got);
  for (size_t i = 0; i < got; i++) hms_payload_release(&comp[i].payload);
  /* max connections (3): a, b, c; the fourth is refused, the others go on */
  hms_client_t *c = conn(node, 0, &st, &e);
  CHECK(st == HMS_OK, "third connection: %s", e.message);
  hms_client_t *d = conn(node, 0, &st, &e);
  CHECK(!d && st == HMS_RESOURCE_EXHAUSTED && strstr(e.message, "at most 3 connections"), "fourth: %d %s", st,
        e.message);
  hms_client_close(d);
  CHECK(call(c, "echo", 1, &e, out, sizeof out) == HMS_OK, "third still works: %s", e.message);
  hms_client_close(c);
  /* the server notices the close: a new connection gets in */
  d = NULL;
  for (int i = 0; i < 100 && !d; i++) {
    d = conn(node, 0, &st, &e);
    if (!d) usleep(20000);
  }
  CHECK(d != NULL, "a connection after one closed: %s", e.message);
  hms_client_close(d);
  call(b, "stop", 0, &e, NULL, 0);
  hms_client_close(b);
  hms_client_close(a);
  hms_node_close(node);
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "server exit status %d", status);
  /* audit: level DENY for the node, ALL for "forbidden" */
  CHECK(count_lines(audit_path, "\"function\":\"forbidden\"", "\"decision\":\"deny\"") == 1, "forbidden record");
  CHECK(count_lines(audit_path, "\"status\":\"PERMISSION_DENIED\"", "\"code\":7") == 1, "one PERMISSION_DENIED");
  CHECK(count_lines(audit_path, "\"decision\":\"allow\"", NULL) == 0, "no allowed call recorded at level deny");
  CHECK(count_lines(audit_path, "\"max message", NULL) == 0, "messages are not in the log");
  CHECK(count_lines(audit_path, "\"status\":\"RESOURCE_EXHAUSTED\"", "\"function\":\"echo\"") == 1, "max message record");
  CHECK(count_lines(audit_path, "\"status\":\"RESOURCE_EXHAUSTED\"", "\"function\":\"hold\"") == 1, "in-flight record");
  CHECK(count_lines(audit_path, "\"function\":null", "\"decision\":\"deny\"") == 2, "refused connections (ring, max)");
  char uidtxt[32];
  snprintf(uidtxt, sizeof uidtxt, "\"uid\":%u,", (unsigned)getuid());
  CHECK(count_lines(audit_path, uidtxt, NULL) == 5, "every record names the caller's uid");
  if (failures) {
    fprintf(stderr, "%d access tests failed\n", failures);
    return 1;
  }
  printf("all access tests passed\n");
  return 0;
}

static int call_once(const char *service, const char *fn) {
  hms_error_t e;
  hms_node_t *node;
  hms_client_t *cl;
  if (hms_node_open(NULL, &node, &e)) {
    printf("ERROR %s %s\n", hms_status_str(e.code), e.message);
    return 0;
  }
  hms_status_t st = hms_connect(node, service, "*", NULL, &cl, &e);
  if (st) {
    printf("ERROR %s %s\n", hms_status_str(st), e.message);
    hms_node_close(node);
    return 0;
  }
  uint32_t id;
  hms_payload_t resp = {0};
  st = hms_client_function_id(cl, fn, &id, &e);
  if (st == HMS_OK) st = hms_call_bytes(cl, id, "", 0, HMS_CT_RAW, &resp, 5000000000LL, &e);
  if (st)
    printf("ERROR %s %s\n", hms_status_str(st), e.message);
  else
    printf("OK %zu\n", resp.len);
  hms_payload_release(&resp);
  hms_client_close(cl);
  hms_node_close(node);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc == 3 && !strcmp(argv[1], "selftest")) return selftest(argv[2]);
  if (argc == 4 && !strcmp(argv[1], "call")) return call_once(argv[2], argv[3]);
  fprintf(stderr, "usage: hms_access_test selftest AUDIT_PATH | call SERVICE FN\n");
  return 2;
}
