/* Hostile-peer tests for the hms-ffi core: peers that write garbage into shared memory and the handshake.
 *
 * The core's promise is that a peer can only hurt itself: whatever a client writes into its request ring,
 * its control words or the handshake, the server drops that one connection and keeps serving everybody
 * else; whatever a server writes into the response ring or the welcome, the client returns an error
 * (mostly HMS_DATA_LOSS) within a bounded time and never crashes, hangs, over-reads or leaks.
 *
 * Part 1, evil CLIENT against a real server (a forked hms_node_serve() process serving
 * "evil.target"@1.0.0 with an "echo" function). A well-behaved client stays connected the whole time.
 * Each attack opens a raw connection by hand (socket, hello, welcome + SCM_RIGHTS, mmap of the memfd),
 * proves that the raw connection works with one valid echo, then corrupts a frame or an index and
 * rings the doorbell. Expected: the server hangs up on that raw socket within 1 s; the optional
 * DATA_LOSS frame (call_id 0) it leaves in the response ring names the problem; the server process is
 * still alive and the good client's echo still works. Then handshake attacks and a seeded fuzzer.
 *
 * Streams and deferred replies (part 1, test_stream_attacks): the target also serves "csum" (client
 * stream: counts the items it reads with hms_call_recv), "bidi" (echoes items with hms_call_send), "slow"
 * (hms_call_defer, answered from a thread after a delay) and "gen" (a server stream that sends until
 * cancelled); the handlers count what they see in a page shared with this process (tstats_t). Raw
 * clients then send DATA/END/CANCEL frames with wrong ids, for non-streams, twice, without an open, after
 * the end, corrupt ones inside hms_call_recv; flood the backlog of frames a client-stream handler sets
 * aside (HMS__MAX_DEFERRED); disconnect (close, or SIGKILL of a forked child) while a handler waits in
 * hms_call_recv, while a stream handler waits for ring space and while deferred replies are pending
 * (server descriptors back to the baseline, LeakSanitizer clean at the server's exit); mix
 * STREAM|CSTREAM|ONEWAY flags; cancel unknown ids; write garbage into the `cancels` hint. The fuzzer also
 * writes plausible stream conversations. Part 2 adds servers that send ITEM frames to plain calls, finals
 * for streams never opened and items after the final frame.
 *
 * Part 2, evil SERVER against a real client: a forked process registers "evil.server"@1.0.0 with the
 * real registry, then accepts and answers connections by hand on the service's listen fd, one attack
 * per connection (chosen by a command pipe). Expected: hms_connect / hms_call return the right error
 * status in bounded time; a client whose connection was corrupted fails every further call at once;
 * no descriptor is leaked (/proc/self/fd counted before and after); hms_client_close is clean.
 *
 * Build with every csrc .c file plus this one (see tests/test_c_core.py for the flags), e.g.
 *   gcc -std=gnu11 -O1 -g -Wall -Wextra -Wno-format-truncation -fsanitize=address,undefined
 *       -fno-omit-frame-pointer -DHMS_FFI_BUILDING=1 -D_GNU_SOURCE -Iinclude -Icsrc (csrc sources)
 *       tests/c/hms_evil.c -o /tmp/hms_evil -pthread
 *   HMS_FFI_RUNTIME_DIR=$(mktemp -d) UBSAN_OPTIONS=halt_on_error=1 /tmp/hms_evil
 * Environment: HMS_EVIL_SEED (fuzz seed, printed on every run), HMS_EVIL_ITERS (part-1 fuzz rounds,
 * default 3000), HMS_EVIL_CLIENT_ITERS (part-2 fuzz rounds, default 300), HMS_EVIL_VERBOSE=1.
 * Exit status 0 and "all hostile-peer tests passed" when every check holds.
 *
 * Two serve-loop bugs were found with this file (both since fixed in node.c): a connection that
 * hms__drain() marked dead was never dropped (the server busy-looped at 100% CPU, stopped accepting,
 * and kept the corrupt connection open), and a client that stopped reading its replies put the
 * server into the same busy loop. The ring attacks and test_stalled_consumer() are their regression
 * tests. Every check was also shown to fail against a core with the matching validation removed.
 *
 * Open core bugs found by the stream attacks, left as failing checks marked "CORE BUG":
 *  - node.c hms__drain: frames a client-stream handler set aside (the backlog) are only processed while
 *    the request ring has data; a request that arrived during the stream stays unanswered until the
 *    client sends something else.
 *  - node.c hms__defer: HMS__MAX_DEFERRED bounds frames, not bytes: up to 4096 copies of ring/4 bytes.
 *  - node.c hms__dispatch: one-way calls refused before their handler runs (client-stream function called
 *    plainly, unknown function id, expired deadline) are answered with a call_id-0 error frame, which the
 *    real client takes for the server's goodbye: hms_call_submit(..., HMS_CALL_ONEWAY, 1 ns, ...) kills
 *    the connection. */
#include "internal/hms_internal.h"

#include <dirent.h>
#include <stddef.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MS 1000000LL
#define RAW_RING 4096ull /* ring size the raw connections ask for: max frame 1024, easy to fill and wrap */

static int failures = 0, checks = 0, verbose = 0;
static const char *g_test = "";
#define CHECK(cond, ...)                                                          \
  do {                                                                            \
    checks++;                                                                     \
    if (!(cond)) {                                                                \
      fprintf(stderr, "FAIL %s:%d [%s]: %s: ", __FILE__, __LINE__, g_test, #cond); \
      fprintf(stderr, __VA_ARGS__);                                               \
      fprintf(stderr, "\n");                                                      \
      failures++;                                                                 \
    }                                                                             \
  } while (0)

/* ================================================================ helpers */
static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t rng_state;
static uint64_t rnd(void) { /* splitmix64: tiny, seedable, good enough to pick garbage */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Open descriptors of a process (0 = ourselves). Counting our own includes opendir's descriptor, which
 * is the same on every call, so differences are exact. */
static int count_fds(pid_t pid) {
  char path[64];
  if (pid)
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
  else
    snprintf(path, sizeof path, "/proc/self/fd");
  DIR *d = opendir(path);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static ssize_t send_msg_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  union {
    char b[CMSG_SPACE(sizeof(int) * 16)];
    struct cmsghdr align;
  } u;
  struct msghdr m;
  memset(&m, 0, sizeof m);
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  if (nfds > 0) {
    memset(&u, 0, sizeof u);
    m.msg_control = u.b;
    m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
  }
  ssize_t n;
  do {
    n = sendmsg(sock, &m, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n;
}

/* Waits up to timeout_ms for one message; keeps up to max_fds descriptors, closes the rest.
 * Returns the byte count (0 = the peer hung up), or -1 (errno ETIMEDOUT on timeout). */
static ssize_t recv_msg_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds, int timeout_ms) {
  *nfds = 0;
  struct pollfd p = {.fd = sock, .events = POLLIN};
  int pr;
  do {
    pr = poll(&p, 1, timeout_ms);
  } while (pr < 0 && errno == EINTR);
  if (pr <= 0) {
    errno = ETIMEDOUT;
    return -1;
  }
  struct iovec iov = {.iov_base = buf, .iov_len = len};
  union {
    char b[CMSG_SPACE(sizeof(int) * 32)];
    struct cmsghdr align;
  } u;
  struct msghdr m;
  memset(&m, 0, sizeof m);
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = u.b;
  m.msg_controllen = sizeof u.b;
  ssize_t n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0) return n;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (*nfds < max_fds)
        fds[(*nfds)++] = fd;
      else
        close(fd);
    }
  }
  return n;
}

static void close_fds(int *fds, int n) {
  for (int i = 0; i < n; i++) close(fds[i]);
}

/* True when the peer hung up within timeout_ms (POLLHUP/POLLRDHUP or recv() == 0). Data that arrives
 * meanwhile is read and ignored. */
static bool wait_closed(int sock, int timeout_ms) {
  int64_t end = now_ns() + (int64_t)timeout_ms * MS;
  for (;;) {
    int64_t left = end - now_ns();
    if (left < 0) left = 0;
    struct pollfd p = {.fd = sock, .events = POLLIN | POLLRDHUP};
    int pr = poll(&p, 1, (int)((left + MS - 1) / MS));
    if (pr < 0 && errno == EINTR) continue;
    if (pr > 0) {
      if (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) return true;
      char b[512];
      ssize_t r = recv(sock, b, sizeof b, MSG_DONTWAIT);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) return true;
      continue;
    }
    if (left == 0) return false;
  }
}

static hms__frame_hdr_t mkhdr(uint32_t len, uint16_t kind, uint32_t fn_id, uint64_t call_id, uint32_t payload_len) {
  hms__frame_hdr_t h;
  memset(&h, 0, sizeof h);
  h.len = len;
  h.kind = kind;
  h.fn_id = fn_id;
  h.content_type = HMS_CT_RAW;
  h.call_id = call_id;
  h.payload_len = payload_len;
  return h;
}

/* Error replies carry {u32 message length, message}: returns true and the bounded message when the
 * payload is well formed. */
static bool parse_error_payload(const uint8_t *p, uint32_t plen, char *msg, size_t cap) {
  uint32_t mlen;
  if (plen < 4) return false;
  memcpy(&mlen, p, 4);
  if (mlen > plen - 4) return false;
  size_t m = mlen < cap - 1 ? mlen : cap - 1;
  memcpy(msg, p + 4, m);
  msg[m] = 0;
  return true;
}

static hms_node_t *g_node; /* the test process's node (clients of both parts) */

/* ================================================================ part 1: evil client, real server */
#define TARGET_SVC "evil.target"
#define TARGET_VER "1.0.0"

static hms_node_t *g_target_node;
static volatile sig_atomic_t g_target_term;
static void target_on_term(int sig) {
  (void)sig;
  g_target_term = 1;
  hms_node_stop(g_target_node); /* an atomic store and a write(): async-signal-safe here */
}

static hms_status_t h_echo(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  return hms_call_reply(call, req->data, req->len, req->content_type, NULL);
}

/* The target's streaming and deferred functions (ids in registration order). Their handlers count what
 * they see in a page shared with the test process (mapped before the fork), so an attack can wait for
 * "the handler is inside hms_call_recv" and check how each handler ended. */
enum { FN_ECHO = 1, FN_CSUM, FN_BIDI, FN_SLOW, FN_GEN };
#define NSTATUS (HMS_UNAUTHENTICATED + 1)
typedef struct {
  _Atomic uint32_t csum_in, csum_out, csum_items; /* client stream: entered, returned, items received */
  _Atomic int32_t csum_last;                      /* status it returned last */
  _Atomic uint32_t recv_err[NSTATUS];             /* hms_call_recv failures by status (csum and bidi) */
  _Atomic uint32_t bidi_in, bidi_out, bidi_items;
  _Atomic uint32_t gen_in, gen_out;               /* server stream */
  _Atomic int32_t gen_last;
  _Atomic uint64_t gen_items;
  _Atomic uint32_t send_err[NSTATUS];             /* hms_call_send failures by status (gen and bidi) */
  _Atomic uint32_t slow_in, defer_refused;        /* deferred replies */
  _Atomic uint32_t def_ok, def_cancelled, def_other, def_live;
} tstats_t;
static tstats_t *S; /* MAP_SHARED: the target writes, the test process reads */

static void count_status(_Atomic uint32_t *by, hms_status_t st) {
  if (st >= 0 && st < NSTATUS) atomic_fetch_add(&by[st], 1);
}
static uint32_t req_u32(const hms_payload_t *p, uint32_t dflt) { /* the optional parameter of a call */
  uint32_t v;
  if (p->len < 4) return dflt;
  memcpy(&v, p->data, 4);
  return v;
}

/* "csum" (client stream): reads every item, replies with their count. Parameter: recv timeout in ms. */
static hms_status_t h_csum(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  atomic_fetch_add(&S->csum_in, 1);
  uint32_t tmo = req_u32(req, 1000);
  if (tmo == 0 || tmo > 3000) tmo = 3000;
  uint32_t n = 0;
  hms_status_t st;
  for (;;) {
    hms_payload_t it;
    int end;
    hms_error_t e;
    st = hms_call_recv(call, &it, &end, (int64_t)tmo * MS, &e);
    if (st != HMS_OK) {
      count_status(S->recv_err, st);
      hms_call_set_error(call, st, e.message, NULL, 0, 0);
      break;
    }
    if (end) break;
    n++;
    atomic_fetch_add(&S->csum_items, 1);
    hms_payload_release(&it);
  }
  if (st == HMS_OK) {
    char out[16];
    int len = snprintf(out, sizeof out, "%u", n);
    hms_call_reply(call, out, (size_t)len, HMS_CT_RAW, NULL); /* refused for odd flag mixes: fine */
  }
  atomic_store(&S->csum_last, st);
  atomic_fetch_add(&S->csum_out, 1);
  return st;
}

/* "bidi" (client + server stream): echoes every item back with hms_call_send. */
static hms_status_t h_bidi(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  atomic_fetch_add(&S->bidi_in, 1);
  uint32_t tmo = req_u32(req, 1000);
  if (tmo == 0 || tmo > 3000) tmo = 3000;
  hms_status_t st;
  for (;;) {
    hms_payload_t it;
    int end;
    hms_error_t e;
    st = hms_call_recv(call, &it, &end, (int64_t)tmo * MS, &e);
    if (st != HMS_OK) {
      count_status(S->recv_err, st);
      hms_call_set_error(call, st, e.message, NULL, 0, 0);
      break;
    }
    if (end) break;
    atomic_fetch_add(&S->bidi_items, 1);
    st = hms_call_send(call, it.data, it.len, it.content_type, &e);
    hms_payload_release(&it);
    if (st != HMS_OK) {
      count_status(S->send_err, st);
      hms_call_set_error(call, st, e.message, NULL, 0, 0);
      break;
    }
  }
  atomic_fetch_add(&S->bidi_out, 1);
  return st;
}

/* "slow": defers its reply and answers from a thread after a delay (parameter, ms; default 50) with the
 * request bytes. */
typedef struct {
  hms_deferred_t *d;
  uint32_t delay_ms;
  size_t len;
  char data[];
} slow_job_t;
static void *slow_thread(void *arg) {
  slow_job_t *j = arg;
  usleep(j->delay_ms * 1000u);
  hms_error_t e;
  hms_status_t st = hms_deferred_reply(j->d, j->data, j->len, HMS_CT_RAW, &e);
  if (st == HMS_OK)
    atomic_fetch_add(&S->def_ok, 1);
  else if (st == HMS_CANCELLED)
    atomic_fetch_add(&S->def_cancelled, 1);
  else
    atomic_fetch_add(&S->def_other, 1);
  free(j);
  atomic_fetch_sub(&S->def_live, 1);
  return NULL;
}
static hms_status_t h_slow(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  atomic_fetch_add(&S->slow_in, 1);
  uint32_t delay = req_u32(req, 50);
  if (delay > 300) delay = 300;
  hms_deferred_t *d;
  hms_error_t e;
  hms_status_t st = hms_call_defer(call, &d, &e);
  if (st != HMS_OK) { /* streams cannot be deferred: say so */
    atomic_fetch_add(&S->defer_refused, 1);
    hms_call_set_error(call, st, e.message, NULL, 0, 0);
    return st;
  }
  slow_job_t *j = malloc(sizeof *j + req->len + 1);
  if (!j) {
    hms_deferred_fail(d, HMS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0, 0);
    return HMS_OK;
  }
  j->d = d;
  j->delay_ms = delay;
  j->len = req->len;
  if (req->len) memcpy(j->data, req->data, req->len); /* req->data may point into the ring */
  atomic_fetch_add(&S->def_live, 1);
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  pthread_t t;
  if (pthread_create(&t, &a, slow_thread, j) != 0) {
    atomic_fetch_sub(&S->def_live, 1);
    hms_deferred_fail(d, HMS_RESOURCE_EXHAUSTED, "no thread", NULL, 0, 0);
    free(j);
  }
  pthread_attr_destroy(&a);
  return HMS_OK;
}

/* "gen" (server stream): sends items until cancelled, or `parameter` items (0 = a million). */
static hms_status_t h_gen(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  atomic_fetch_add(&S->gen_in, 1);
  uint32_t max = req_u32(req, 0);
  if (max == 0 || max > 1000000) max = 1000000;
  hms_status_t st = HMS_OK;
  char item[64];
  for (uint32_t i = 0; i < max; i++) {
    int len = snprintf(item, sizeof item, "item %u", i);
    hms_error_t e;
    st = hms_call_send(call, item, (size_t)len, HMS_CT_RAW, &e);
    if (st != HMS_OK) {
      count_status(S->send_err, st);
      hms_call_set_error(call, st, e.message, NULL, 0, 0);
      break;
    }
    atomic_fetch_add(&S->gen_items, 1);
  }
  atomic_store(&S->gen_last, st);
  atomic_fetch_add(&S->gen_out, 1);
  return st;
}

static int run_target(int notify_fd) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  hms_node_options_t o;
  hms_node_options_init(&o);
  o.name = "evil-target";
  hms_error_t e;
  if (hms_node_open(&o, &g_target_node, &e)) {
    fprintf(stderr, "target: node_open: %s\n", e.message);
    return 2;
  }
  hms_service_t *svc;
  if (hms_service_add(g_target_node, TARGET_SVC, TARGET_VER, &svc, &e) ||
      hms_function_add(svc, "echo", 0, h_echo, NULL, &e) ||
      hms_function_add(svc, "csum", HMS_FN_CLIENT_STREAM, h_csum, NULL, &e) ||
      hms_function_add(svc, "bidi", HMS_FN_STREAM | HMS_FN_CLIENT_STREAM, h_bidi, NULL, &e) ||
      hms_function_add(svc, "slow", 0, h_slow, NULL, &e) ||
      hms_function_add(svc, "gen", HMS_FN_STREAM, h_gen, NULL, &e)) {
    fprintf(stderr, "target: %s\n", e.message);
    return 2;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = target_on_term;
  sigaction(SIGTERM, &sa, NULL);
  char c = 'r';
  if (write(notify_fd, &c, 1) != 1) return 2;
  close(notify_fd);
  while (!g_target_term) hms_node_serve(g_target_node, -1, NULL);
  /* Closing the node while deferred replies are still out is allowed (connections are reference
   * counted); their threads then find the connection gone. Wait for them so LeakSanitizer judges a
   * quiet process. */
  hms_node_close(g_target_node);
  for (int i = 0; i < 300 && atomic_load(&S->def_live) > 0; i++) usleep(10000);
  return 0;
}

typedef struct {
  pid_t pid;
  bool reaped;
  int exit_status;
  hms_client_t *good; /* the well-behaved client, connected the whole time */
  uint32_t echo_id;
  int good_seq;
  int srv_fds; /* server descriptors with only the good client connected */
  int restarts;
  char sock_path[HMS__PATH_MAX];
} target_t;
static target_t T;

static pid_t fork_target(void) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return -1;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    exit(run_target(p[1])); /* exit(), not _exit(): LeakSanitizer checks the server on the way out */
  }
  close(p[1]);
  char c;
  ssize_t n = read(p[0], &c, 1);
  close(p[0]);
  return n == 1 ? pid : -1;
}

static bool target_start(void) {
  T.pid = fork_target();
  T.reaped = false;
  if (T.pid < 0) return false;
  hms_error_t e;
  if (hms_connect(g_node, TARGET_SVC, TARGET_VER, NULL, &T.good, &e) != HMS_OK) {
    fprintf(stderr, "connecting the good client: %s\n", e.message);
    return false;
  }
  if (hms_client_function_id(T.good, "echo", &T.echo_id, &e) != HMS_OK) return false;
  static const char *const names[] = {"echo", "csum", "bidi", "slow", "gen"};
  for (uint32_t i = 0; i < 5; i++) {
    uint32_t id = 0;
    if (hms_client_function_id(T.good, names[i], &id, &e) != HMS_OK || id != i + 1) {
      fprintf(stderr, "function %s has id %u, the raw attacks assume %u\n", names[i], id, i + 1);
      return false;
    }
  }
  snprintf(T.sock_path, sizeof T.sock_path, "%s/%s@%s.sock", hms_node_runtime_dir(g_node), TARGET_SVC, TARGET_VER);
  usleep(20000); /* let the server finish the handshake bookkeeping before counting its descriptors */
  T.srv_fds = count_fds(T.pid);
  return true;
}

static bool target_alive(void) {
  if (T.reaped) return false;
  int st;
  pid_t r = waitpid(T.pid, &st, WNOHANG);
  if (r == T.pid) {
    T.reaped = true;
    T.exit_status = st;
    fprintf(stderr, "  target server died: %s %d\n", WIFSIGNALED(st) ? "signal" : "exit",
            WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    return false;
  }
  return true;
}

static void target_kill(void) {
  if (T.good) hms_client_close(T.good);
  T.good = NULL;
  if (T.pid > 0 && !T.reaped) {
    kill(T.pid, SIGKILL);
    waitpid(T.pid, NULL, 0);
  }
  T.reaped = true;
}

/* After a failure that leaves the server wedged, start a fresh one so the next attack is judged on its
 * own (each failure is reported once instead of cascading). */
static void target_restart(const char *why) {
  fprintf(stderr, "  (restarting the target server: %s)\n", why);
  T.restarts++;
  target_kill();
  if (!target_start()) {
    fprintf(stderr, "cannot restart the target server\n");
    exit(2);
  }
}

static bool good_echo(void) {
  char buf[64];
  int n = snprintf(buf, sizeof buf, "good-%d", ++T.good_seq);
  hms_payload_t req = {.data = buf, .len = (size_t)n, .content_type = HMS_CT_RAW}, resp;
  hms_error_t e;
  hms_status_t st = hms_call(T.good, T.echo_id, &req, &resp, 2000 * MS, &e);
  bool ok = st == HMS_OK && resp.len == (size_t)n && memcmp(resp.data, buf, (size_t)n) == 0;
  if (!ok) fprintf(stderr, "  good client echo failed: %s: %s\n", hms_status_str(st), st ? e.message : "wrong bytes");
  hms_payload_release(&resp);
  return ok;
}

/* The invariant after every attack: the server process lives and serves the well-behaved client. */
static void check_target(void) {
  bool alive = target_alive();
  CHECK(alive, "the server process died");
  bool echo = alive && good_echo();
  CHECK(echo, "the well-behaved client's echo failed after the attack");
  if (!alive || !echo) target_restart("unhealthy after an attack");
}

/* ---------------------------------------------------------------- raw connections */
typedef struct {
  int sock, bell, cbell;
  uint8_t *map;
  size_t map_len;
  hms__welcome_t w;
  hms__ring_ctl_t *reqc, *respc;
  uint8_t *reqd, *respd;
  uint64_t cap, rcap;
  uint64_t head;  /* our request-ring head (bytes published) */
  uint64_t rread; /* response bytes we have looked at */
  uint64_t next_id;
} raw_t;

static int raw_sock(void) {
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  hms__strlcpy(sa.sun_path, T.sock_path, sizeof sa.sun_path);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void hello_init(hms__hello_t *h, uint64_t ring) {
  memset(h, 0, sizeof *h);
  h->magic = HMS__HELLO_MAGIC;
  h->abi = HMS_FFI_ABI_VERSION;
  h->proto = HMS__PROTO_VERSION;
  h->ring_bytes = ring;
  hms__strlcpy(h->service, TARGET_SVC, sizeof h->service);
  hms__strlcpy(h->version, TARGET_VER, sizeof h->version);
  hms__strlcpy(h->client_node, "evil-raw", sizeof h->client_node);
}

static void raw_close(raw_t *r) {
  if (r->map) munmap(r->map, r->map_len);
  if (r->sock >= 0) close(r->sock);
  if (r->bell >= 0) close(r->bell);
  if (r->cbell >= 0) close(r->cbell);
  memset(r, 0, sizeof *r);
  r->sock = r->bell = r->cbell = -1;
}

/* The handshake done by hand. Returns 0 when the connection is mapped and ready. */
static int raw_connect(raw_t *r, uint64_t ring, bool with_client_bell) {
  memset(r, 0, sizeof *r);
  r->bell = r->cbell = -1;
  r->sock = raw_sock();
  if (r->sock < 0) return -1;
  hms__hello_t h;
  hello_init(&h, ring);
  if (with_client_bell) r->cbell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (send_msg_fds(r->sock, &h, sizeof h, &r->cbell, r->cbell >= 0 ? 1 : 0) != (ssize_t)sizeof h) goto fail;
  int fds[4], nfds;
  ssize_t n = recv_msg_fds(r->sock, &r->w, sizeof r->w, fds, 4, &nfds, 1000);
  if (n != (ssize_t)sizeof r->w || r->w.magic != HMS__WELCOME_MAGIC || r->w.status != HMS_OK || nfds != 2) {
    if (n > 0) fprintf(stderr, "  raw handshake refused: status %d '%.200s' nfds %d\n", r->w.status, r->w.message, nfds);
    close_fds(fds, nfds);
    goto fail;
  }
  r->bell = fds[1];
  r->cap = r->w.req_cap;
  r->rcap = r->w.resp_cap;
  if (!hms__is_pow2(r->cap) || !hms__is_pow2(r->rcap) ||
      r->w.total_bytes != hms__conn_total_bytes(r->cap, r->rcap, r->w.table_bytes)) {
    close(fds[0]);
    goto fail;
  }
  void *map = mmap(NULL, r->w.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
  close(fds[0]);
  if (map == MAP_FAILED) goto fail;
  r->map = map;
  r->map_len = r->w.total_bytes;
  r->reqc = (hms__ring_ctl_t *)(r->map + HMS__REQ_CTL_OFFSET);
  r->respc = (hms__ring_ctl_t *)(r->map + HMS__RESP_CTL_OFFSET);
  r->reqd = r->map + HMS__CONN_HEADER_BYTES;
  r->respd = r->map + HMS__CONN_HEADER_BYTES + r->cap;
  return 0;
fail:
  raw_close(r);
  return -1;
}

static void raw_put(raw_t *r, uint64_t at, const hms__frame_hdr_t *h, const void *payload, size_t plen) {
  uint64_t off = at & (r->cap - 1);
  memcpy(r->reqd + off, h, sizeof *h);
  if (plen && payload) memcpy(r->reqd + off + sizeof *h, payload, plen); /* NULL: leave the ring's bytes */
}
static void raw_publish(raw_t *r, uint64_t head) { atomic_store_explicit(&r->reqc->head, head, memory_order_release); }
static void raw_ring(raw_t *r) {
  uint64_t one = 1;
  ssize_t w = write(r->bell, &one, sizeof one);
  (void)w;
}
static void raw_consume_to(raw_t *r, uint64_t tail) {
  atomic_store_explicit(&r->respc->tail, tail, memory_order_release);
  if (atomic_exchange(&r->respc->producer_waiting, 0)) raw_ring(r); /* like hms__consumed_reply */
}

/* Next response frame (PAD frames skipped) within timeout_ms. Copies the header and up to pcap payload
 * bytes; advances rread. Returns false on timeout or a malformed frame. */
static bool raw_next_response(raw_t *r, hms__frame_hdr_t *h, uint8_t *payload, size_t pcap, int timeout_ms) {
  int64_t end = now_ns() + (int64_t)timeout_ms * MS;
  for (;;) {
    uint64_t head = atomic_load_explicit(&r->respc->head, memory_order_acquire);
    if (head == r->rread) {
      if (now_ns() > end) return false;
      usleep(20);
      continue;
    }
    if (head < r->rread || head - r->rread > r->rcap) return false;
    uint64_t off = r->rread & (r->rcap - 1);
    memcpy(h, r->respd + off, sizeof *h);
    if (h->len < 64 || (h->len & 63) || h->len > head - r->rread || h->len > r->rcap - off) return false;
    r->rread += h->len;
    if (h->kind == HMS__FRAME_PAD) continue;
    if (h->payload_len > h->len - 64) return false;
    size_t n = h->payload_len < pcap ? h->payload_len : pcap;
    memcpy(payload, r->respd + off + 64, n);
    return true;
  }
}

/* One valid echo call on a raw connection; consume=false leaves the reply in the ring (tail unmoved). */
static bool raw_echo(raw_t *r, uint32_t plen, bool consume) {
  uint8_t buf[1024], got[1024];
  if (plen > sizeof buf) plen = sizeof buf;
  uint64_t id = ++r->next_id;
  for (uint32_t i = 0; i < plen; i++) buf[i] = (uint8_t)(i * 7 + id);
  hms__frame_hdr_t h = mkhdr((uint32_t)hms__frame_bytes(plen), HMS__FRAME_REQUEST, 1, id, plen);
  if (hms__frame_bytes(plen) > r->cap - (r->head & (r->cap - 1))) { /* would wrap: pad to the end first */
    hms__frame_hdr_t pad = mkhdr((uint32_t)(r->cap - (r->head & (r->cap - 1))), HMS__FRAME_PAD, 0, 0, 0);
    raw_put(r, r->head, &pad, NULL, 0);
    r->head += pad.len;
  }
  raw_put(r, r->head, &h, buf, plen);
  r->head += h.len;
  raw_publish(r, r->head);
  raw_ring(r);
  hms__frame_hdr_t rh;
  if (!raw_next_response(r, &rh, got, sizeof got, 1000)) return false;
  bool ok = rh.kind == HMS__FRAME_RESPONSE && rh.call_id == id && rh.status == HMS_OK && rh.payload_len == plen &&
            memcmp(got, buf, plen) == 0;
  if (consume) raw_consume_to(r, r->rread);
  return ok;
}

/* ---------------------------------------------------------------- ring attacks */
/* Each arm function corrupts something on a raw connection that has just completed one valid echo
 * (head 64, response tail 64). Positions are relative so the attacks also work after a prelude. */
static uint64_t raw_new_id(raw_t *r) { return ++r->next_id; }

static void arm_len_unaligned(raw_t *r) {
  hms__frame_hdr_t h = mkhdr(100, HMS__FRAME_REQUEST, 1, raw_new_id(r), 0);
  raw_put(r, r->head, &h, NULL, 0);
  raw_publish(r, r->head + 128);
}
static void arm_len_zero(raw_t *r) { /* a zero length must not make the consumer loop in place */
  hms__frame_hdr_t h = mkhdr(0, HMS__FRAME_REQUEST, 1, raw_new_id(r), 0);
  raw_put(r, r->head, &h, NULL, 0);
  raw_publish(r, r->head + 64);
}
static void arm_len_over_published(raw_t *r) {
  hms__frame_hdr_t h = mkhdr(256, HMS__FRAME_REQUEST, 1, raw_new_id(r), 0);
  raw_put(r, r->head, &h, NULL, 0);
  raw_publish(r, r->head + 128);
}
static void arm_len_over_end(raw_t *r) {
  /* Three valid 1 KiB echoes move the position to 64 + 3072 = 3136: 960 bytes to the end of the ring.
   * The frame claims 1024 bytes, all of them published, so only the "fits before the end" rule is
   * violated (a consumer without it would read past the ring into the response ring). */
  for (int i = 0; i < 3; i++) CHECK(raw_echo(r, 960, true), "prelude echo %d", i);
  uint64_t contig = r->cap - (r->head & (r->cap - 1));
  CHECK(contig == 960, "prelude left %llu bytes to the end, expected 960", (unsigned long long)contig);
  hms__frame_hdr_t h = mkhdr((uint32_t)(contig + 64), HMS__FRAME_REQUEST, 1, raw_new_id(r), 0);
  raw_put(r, r->head, &h, NULL, 0);
  raw_publish(r, r->head + contig + 64);
}
static void arm_len_over_max(raw_t *r) { /* a frame larger than a quarter ring: no reply could ever fit */
  hms__frame_hdr_t h = mkhdr(2048, HMS__FRAME_REQUEST, 1, raw_new_id(r), 0);
  raw_put(r, r->head, &h, NULL, 0);
  raw_publish(r, r->head + 2048);
}
static void arm_payload_over_len(raw_t *r) { /* payload would extend one byte past the frame */
  hms__frame_hdr_t h = mkhdr(128, HMS__FRAME_REQUEST, 1, raw_new_id(r), 65);
  raw_put(r, r->head, &h, NULL, 0);
  raw_publish(r, r->head + 128);
}
static void arm_payload_huge(raw_t *r) { /* 4 GiB payload in a 64-byte frame: catches 32-bit overflow */
  hms__frame_hdr_t h = mkhdr(64, HMS__FRAME_REQUEST, 1, raw_new_id(r), UINT32_MAX);
  raw_put(r, r->head, &h, NULL, 0);
  raw_publish(r, r->head + 64);
}
static void valid_frame_at_head(raw_t *r) {
  hms__frame_hdr_t h = mkhdr(64, HMS__FRAME_REQUEST, 1, raw_new_id(r), 0);
  raw_put(r, r->head, &h, NULL, 0);
}
static void arm_head_past_capacity(raw_t *r) { /* more published than the ring can hold */
  valid_frame_at_head(r);
  raw_publish(r, r->head + r->cap + 64);
}
static void arm_head_unaligned(raw_t *r) {
  valid_frame_at_head(r);
  raw_publish(r, r->head + 100);
}
static void arm_head_backwards(raw_t *r) { /* head behind what the server already consumed */
  raw_publish(r, r->head - 64);
}
static void arm_head_huge(raw_t *r) { /* head near 2^64: "head - pos" style arithmetic must not wrap */
  valid_frame_at_head(r);
  raw_publish(r, UINT64_MAX & ~(uint64_t)63);
}
static void arm_kind(raw_t *r, uint16_t kind) {
  hms__frame_hdr_t h = mkhdr(64, kind, 1, raw_new_id(r), 0);
  raw_put(r, r->head, &h, NULL, 0);
  raw_publish(r, r->head + 64);
}
static void arm_kind_response(raw_t *r) { arm_kind(r, HMS__FRAME_RESPONSE); }
static void arm_kind_unknown(raw_t *r) { arm_kind(r, 77); }
static void arm_kind_zero(raw_t *r) { arm_kind(r, 0); }
static void arm_pad_short(raw_t *r) { /* a PAD must run exactly to the end of the ring */
  hms__frame_hdr_t h = mkhdr(128, HMS__FRAME_PAD, 0, 0, 0);
  raw_put(r, r->head, &h, NULL, 0);
  raw_publish(r, r->head + 128);
}
static void arm_pad_short_near_end(raw_t *r) {
  for (int i = 0; i < 3; i++) CHECK(raw_echo(r, 960, true), "prelude echo %d", i);
  hms__frame_hdr_t h = mkhdr(512, HMS__FRAME_PAD, 0, 0, 0); /* 960 bytes to the end */
  raw_put(r, r->head, &h, NULL, 0);
  raw_publish(r, r->head + 512);
}
/* Response-ring tail attacks. The server only re-reads the tail when its cached view says the ring is
 * nearly full, so three 1 KiB replies are left unread first (3136 bytes of a 4096-byte ring in use;
 * the third reply already made the server read and cache tail = 64). The next request then forces the
 * server to validate the corrupt tail before it may start the call. */
static void resp_tail_prelude(raw_t *r) {
  for (int i = 0; i < 3; i++) CHECK(raw_echo(r, 960, false), "prelude echo %d", i);
}
static void publish_valid_request(raw_t *r) {
  valid_frame_at_head(r);
  r->head += 64;
  raw_publish(r, r->head);
}
static void arm_resp_tail_beyond_head(raw_t *r) { /* claims to have consumed replies never written */
  resp_tail_prelude(r);
  atomic_store(&r->respc->tail, r->rread + 64);
  publish_valid_request(r);
}
static void arm_resp_tail_unaligned(raw_t *r) {
  resp_tail_prelude(r);
  atomic_store(&r->respc->tail, 100);
  publish_valid_request(r);
}
static void arm_resp_tail_backwards(raw_t *r) { /* tail 0 after the server saw 64 */
  resp_tail_prelude(r);
  atomic_store(&r->respc->tail, 0);
  publish_valid_request(r);
}
static void arm_socket_chatter(raw_t *r) { /* nothing may be sent on an active connection's socket */
  ssize_t w = send(r->sock, "evil", 4, MSG_NOSIGNAL);
  (void)w;
}

typedef struct {
  const char *name;
  void (*arm)(raw_t *r);
  const char *expect; /* substring of the DATA_LOSS message, when the server leaves one */
} ring_attack_t;

static const ring_attack_t ring_attacks[] = {
    {"frame len not a multiple of 64", arm_len_unaligned, "corrupt frame header"},
    {"frame len zero", arm_len_zero, "corrupt frame header"},
    {"frame len larger than the published bytes", arm_len_over_published, "corrupt frame header"},
    {"frame len larger than the bytes to the end of the ring", arm_len_over_end, "to end 960"},
    {"frame len larger than the max frame", arm_len_over_max, "max frame"},
    {"payload_len > len - 64", arm_payload_over_len, "payload length 65"},
    {"payload_len 4 GiB in a 64-byte frame", arm_payload_huge, "payload length 4294967295"},
    {"head moved past tail + capacity", arm_head_past_capacity, "ring head"},
    {"head not a multiple of 64", arm_head_unaligned, "ring head"},
    {"head moved backwards", arm_head_backwards, "ring head"},
    {"head near 2^64", arm_head_huge, "ring head"},
    {"frame kind RESPONSE in the request ring", arm_kind_response, "unexpected frame kind 2"},
    {"unknown frame kind 77", arm_kind_unknown, "unexpected frame kind 77"},
    {"frame kind 0", arm_kind_zero, "unexpected frame kind 0"},
    {"PAD frame shorter than the rest of the ring", arm_pad_short, "corrupt pad frame"},
    {"PAD frame near the end, not reaching it", arm_pad_short_near_end, "corrupt pad frame"},
    {"response tail moved beyond its head", arm_resp_tail_beyond_head, NULL},
    {"response tail not a multiple of 64", arm_resp_tail_unaligned, NULL},
    {"response tail moved backwards", arm_resp_tail_backwards, NULL},
    {"bytes sent on the socket after the handshake", arm_socket_chatter, NULL},
};

/* Looks for the server's parting DATA_LOSS frame (call_id 0) among the unread responses. */
static int raw_find_goodbye(raw_t *r, int32_t *status, char *msg, size_t cap) {
  hms__frame_hdr_t h;
  uint8_t p[512];
  while (raw_next_response(r, &h, p, sizeof p, 0)) {
    if (h.kind == HMS__FRAME_RESPONSE && h.call_id == 0) {
      *status = h.status;
      if (!parse_error_payload(p, h.payload_len < sizeof p ? h.payload_len : sizeof p, msg, cap)) msg[0] = 0;
      return 1;
    }
  }
  return 0;
}

static int goodbye_frames = 0;
static void run_ring_attack(const ring_attack_t *a) {
  g_test = a->name;
  raw_t r;
  if (raw_connect(&r, RAW_RING, true) != 0) {
    CHECK(0, "the server did not complete a raw handshake (stopped accepting connections?)");
    target_restart("no handshake");
    return;
  }
  /* Proves the hand-made connection works, so the hang-up below is caused by the attack alone. */
  CHECK(raw_echo(&r, 0, true), "baseline echo on the raw connection");
  a->arm(&r);
  raw_ring(&r);
  int64_t t0 = now_ns();
  bool closed = wait_closed(r.sock, 1000);
  /* Regression check for a serve-loop bug this test found: hms_node_serve() used to keep a connection
   * that hms__drain() had marked dead until the next hms__handle_events(), which its pre-sleep
   * "pending" scan never reached while the dead connection's unconsumed request data was there (a
   * busy loop that also stopped accepting), or which blocked in epoll_wait() without a timeout. */
  CHECK(closed, "the server did not close the corrupt connection within 1 s (if every ring attack fails this "
                "way: a dead connection is not dropped by hms_node_serve)");
  if (verbose) printf("    %-55s closed after %.2f ms\n", a->name, (now_ns() - t0) / 1e6);
  int32_t status = 0;
  char msg[300];
  if (raw_find_goodbye(&r, &status, msg, sizeof msg)) {
    goodbye_frames++;
    CHECK(status == HMS_DATA_LOSS, "goodbye frame status %d", status);
    if (a->expect) CHECK(strstr(msg, a->expect) != NULL, "goodbye message '%s' lacks '%s'", msg, a->expect);
    if (verbose) printf("      goodbye: %s\n", msg);
  }
  raw_close(&r);
  if (!closed) target_restart("wedged by a corrupt connection");
  check_target();
}

/* ---------------------------------------------------------------- handshake attacks */
/* Sends one message on a fresh socket and expects the server to hang up without a welcome. */
static void hs_expect_drop(const char *name, const void *buf, size_t len, const int *fds, int nfds) {
  g_test = name;
  int s = raw_sock();
  CHECK(s >= 0, "connect failed");
  if (s < 0) return;
  send_msg_fds(s, buf, len, fds, nfds);
  hms__welcome_t w;
  int got[8], ngot;
  ssize_t n = recv_msg_fds(s, &w, sizeof w, got, 8, &ngot, 1000);
  CHECK(n == 0, "expected a hang-up without a welcome, got %zd bytes (%s)", n, n < 0 ? strerror(errno) : "data");
  CHECK(ngot == 0, "the server sent %d descriptors to a bad hello", ngot);
  close_fds(got, ngot);
  close(s);
  check_target();
}

/* Expects a welcome with `status`, no descriptors, a NUL-terminated message containing both substrings,
 * then a hang-up. */
static void hs_expect_refusal(const char *name, const hms__hello_t *h, hms_status_t status, const char *s1,
                              const char *s2) {
  g_test = name;
  int s = raw_sock();
  CHECK(s >= 0, "connect failed");
  if (s < 0) return;
  send_msg_fds(s, h, sizeof *h, NULL, 0);
  hms__welcome_t w;
  memset(&w, 0, sizeof w);
  int got[8], ngot;
  ssize_t n = recv_msg_fds(s, &w, sizeof w, got, 8, &ngot, 1000);
  CHECK(n == (ssize_t)sizeof w, "welcome of %zd bytes", n);
  CHECK(w.magic == HMS__WELCOME_MAGIC, "welcome magic %#llx", (unsigned long long)w.magic);
  CHECK(w.status == status, "welcome status %d (%s), expected %s", w.status, hms_status_str(w.status),
        hms_status_str(status));
  CHECK(ngot == 0, "a refusal carried %d descriptors", ngot);
  close_fds(got, ngot);
  bool terminated = memchr(w.message, 0, sizeof w.message) != NULL;
  CHECK(terminated, "the refusal message is not NUL-terminated");
  if (terminated) {
    if (s1) CHECK(strstr(w.message, s1) != NULL, "message '%s' lacks '%s'", w.message, s1);
    if (s2) CHECK(strstr(w.message, s2) != NULL, "message '%s' lacks '%s'", w.message, s2);
    if (verbose) printf("    %-55s -> %s: %s\n", name, hms_status_str(w.status), w.message);
  }
  CHECK(wait_closed(s, 1000), "the server kept the refused connection open");
  close(s);
  check_target();
}

static void test_handshake_attacks(void) {
  hms__hello_t h;
  char a[64], b[64];

  /* Wrong magic: not our protocol at all; dropped without an answer. */
  hello_init(&h, 0);
  h.magic ^= 0x5a5a;
  hs_expect_drop("hello with a wrong magic", &h, sizeof h, NULL, 0);

  /* Wrong ABI / protocol: refused with FAILED_PRECONDITION naming both versions, then closed. */
  hello_init(&h, 0);
  h.abi = 99;
  snprintf(a, sizeof a, "client 99/%u", HMS__PROTO_VERSION);
  snprintf(b, sizeof b, "server %u/%u", HMS_FFI_ABI_VERSION, HMS__PROTO_VERSION);
  hs_expect_refusal("hello with a wrong ABI number", &h, HMS_FAILED_PRECONDITION, a, b);
  hello_init(&h, 0);
  h.proto = 77;
  snprintf(a, sizeof a, "client %u/77", HMS_FFI_ABI_VERSION);
  hs_expect_refusal("hello with a wrong protocol number", &h, HMS_FAILED_PRECONDITION, a, b);

  /* Wrong sizes: short, long (truncated by the server's recv) and empty messages are dropped. */
  uint8_t big[sizeof(hms__hello_t) + 64];
  hello_init(&h, 0);
  memset(big, 0, sizeof big);
  memcpy(big, &h, sizeof h);
  hs_expect_drop("hello 8 bytes too short", &h, sizeof h - 8, NULL, 0);
  hs_expect_drop("hello 64 bytes too long", big, sizeof big, NULL, 0);
  hs_expect_drop("empty hello message", &h, 0, NULL, 0);

  /* The client's doorbell must be an eventfd: a pipe (which could block the server) is refused. */
  int p[2];
  if (pipe(p) == 0) {
    hello_init(&h, 0);
    hs_expect_drop("hello whose doorbell is a pipe", &h, sizeof h, &p[1], 1);
    close(p[0]);
    close(p[1]);
  }

  /* Unterminated / wrong service names: NOT_FOUND, with the (bounded) name quoted back. Every string
   * field is filled to the end, so a server that strcmp()s or prints them without terminating them
   * first reads past the hello (ASan reports it). */
  hello_init(&h, 0);
  memset(h.service, 'A', sizeof h.service);
  memset(h.version, '9', sizeof h.version);
  memset(h.client_node, 'C', sizeof h.client_node);
  hs_expect_refusal("hello with unterminated service/version fields", &h, HMS_NOT_FOUND, TARGET_SVC, NULL);
  hello_init(&h, 0);
  hms__strlcpy(h.version, "9.9.9", sizeof h.version);
  hs_expect_refusal("hello for another version", &h, HMS_NOT_FOUND, TARGET_SVC, NULL);

  /* Ring sizes out of range: the server must not allocate what a client asks blindly. */
  hello_init(&h, 5000);
  hs_expect_refusal("hello asking for a 5000-byte ring", &h, HMS_INVALID_ARGUMENT, "5000", NULL);
  hello_init(&h, 2048);
  hs_expect_refusal("hello asking for a ring below the minimum", &h, HMS_INVALID_ARGUMENT, "2048", NULL);
  hello_init(&h, 1ull << 40);
  hs_expect_refusal("hello asking for a 1 TiB ring", &h, HMS_INVALID_ARGUMENT, "1099511627776", NULL);

  /* Extra descriptors in the hello are closed, the handshake itself proceeds (the server's descriptor
   * count is compared at the end of part 1). */
  g_test = "hello carrying 3 descriptors";
  {
    int s = raw_sock();
    int extra[3] = {eventfd(0, EFD_CLOEXEC), eventfd(0, EFD_CLOEXEC), eventfd(0, EFD_CLOEXEC)};
    hello_init(&h, RAW_RING);
    send_msg_fds(s, &h, sizeof h, extra, 3);
    hms__welcome_t w;
    int got[4], ngot;
    ssize_t n = recv_msg_fds(s, &w, sizeof w, got, 4, &ngot, 1000);
    CHECK(n == (ssize_t)sizeof w && w.status == HMS_OK && ngot == 2, "n %zd status %d fds %d", n, w.status, ngot);
    close_fds(got, ngot);
    close_fds(extra, 3);
    close(s);
    check_target();
  }

  /* Silent clients (connect, send nothing): the server keeps them in the handshake state without
   * blocking on them; everybody else is served meanwhile, new handshakes included. */
  g_test = "connect and send nothing";
  {
    int silent[8];
    for (int i = 0; i < 8; i++) silent[i] = raw_sock();
    CHECK(good_echo(), "good client blocked by silent handshakes");
    raw_t r;
    bool ok = raw_connect(&r, RAW_RING, false) == 0;
    CHECK(ok, "a new handshake was blocked by silent ones");
    if (ok) {
      CHECK(raw_echo(&r, 100, true), "echo on a raw connection next to silent ones");
      raw_close(&r);
    }
    for (int i = 0; i < 8; i++)
      if (silent[i] >= 0) close(silent[i]);
    check_target();
  }

  /* Connect and close at once, many times: accept must cope with peers that are already gone. */
  g_test = "connect and close immediately";
  for (int i = 0; i < 32; i++) {
    int s = raw_sock();
    if (s >= 0) close(s);
  }
  check_target();
  /* Half a handshake: hello sent, then gone before the welcome could be read. */
  for (int i = 0; i < 16; i++) {
    int s = raw_sock();
    hello_init(&h, RAW_RING);
    if (s >= 0) {
      send_msg_fds(s, &h, sizeof h, NULL, 0);
      close(s);
    }
  }
  check_target();
}

/* ---------------------------------------------------------------- non-fatal misbehaviour */
/* A request for a function that does not exist is answered (UNIMPLEMENTED), not a reason to drop. */
static void test_unknown_function(void) {
  g_test = "request for an unknown function id";
  raw_t r;
  if (raw_connect(&r, RAW_RING, false) != 0) {
    CHECK(0, "raw handshake failed");
    target_restart("no handshake");
    return;
  }
  uint64_t id = raw_new_id(&r);
  hms__frame_hdr_t h = mkhdr(64, HMS__FRAME_REQUEST, 999, id, 0);
  raw_put(&r, r.head, &h, NULL, 0);
  r.head += 64;
  raw_publish(&r, r.head);
  raw_ring(&r);
  hms__frame_hdr_t rh;
  uint8_t p[512];
  char msg[300] = "";
  bool got = raw_next_response(&r, &rh, p, sizeof p, 1000);
  CHECK(got, "no reply");
  if (got) {
    CHECK(rh.call_id == id && rh.status == HMS_UNIMPLEMENTED, "reply id %llu status %d",
          (unsigned long long)rh.call_id, rh.status);
    CHECK(parse_error_payload(p, rh.payload_len, msg, sizeof msg) && strstr(msg, "999"), "message '%s'", msg);
  }
  raw_consume_to(&r, r.rread);
  CHECK(raw_echo(&r, 32, true), "the connection stopped working after an unknown function id");
  CHECK(!wait_closed(r.sock, 20), "the server dropped a connection for an unknown function id");
  raw_close(&r);
  check_target();
}

/* A client that stops reading its replies stalls only itself: the server stops starting its calls
 * (never overwriting unread replies), keeps serving others and keeps accepting; once the client reads
 * and rings, every remaining request is answered. */
static void test_stalled_consumer(void) {
  g_test = "client that never reads its replies";
  raw_t r;
  if (raw_connect(&r, RAW_RING, false) != 0) {
    CHECK(0, "raw handshake failed");
    target_restart("no handshake");
    return;
  }
  enum { N = 48 };
  uint64_t first = r.next_id + 1;
  for (int i = 0; i < N; i++) {
    hms__frame_hdr_t h = mkhdr(64, HMS__FRAME_REQUEST, 1, raw_new_id(&r), 0);
    raw_put(&r, r.head, &h, NULL, 0);
    r.head += 64;
  }
  raw_publish(&r, r.head);
  raw_ring(&r);
  /* Wait until the server stops producing (nothing new for 50 ms). */
  uint64_t last = 0;
  int64_t stable_since = now_ns(), t_end = now_ns() + 1000 * MS;
  while (now_ns() < t_end) {
    uint64_t hd = atomic_load(&r.respc->head);
    if (hd != last) {
      last = hd;
      stable_since = now_ns();
    } else if (now_ns() - stable_since > 50 * MS) {
      break;
    }
    usleep(1000);
  }
  CHECK(last > 0 && last <= r.rcap, "server produced %llu reply bytes into a %llu-byte ring nobody reads",
        (unsigned long long)last, (unsigned long long)r.rcap);
  CHECK(last < (uint64_t)N * 64, "server answered all %d calls although the ring could not hold them", N);
  CHECK(good_echo(), "the good client was stalled by another client's full response ring");
  raw_t r2;
  bool ok2 = raw_connect(&r2, RAW_RING, false) == 0;
  /* Regression check: the serve loop used to count a connection blocked on its full response ring as
   * "pending", never slept and never handled events again (no accept, no hang-up detection). */
  CHECK(ok2, "the server stopped accepting connections while one client does not read its replies");
  if (ok2) {
    CHECK(raw_echo(&r2, 16, true), "echo on a second raw connection");
    raw_close(&r2);
  }
  /* Now read everything; each read publishes the tail and rings the server if it waits for space. */
  int got = 0;
  uint64_t expect = first;
  hms__frame_hdr_t h;
  uint8_t p[64];
  while (got < N && raw_next_response(&r, &h, p, sizeof p, 1000)) {
    CHECK(h.kind == HMS__FRAME_RESPONSE && h.call_id == expect && h.status == HMS_OK, "reply %d: id %llu status %d",
          got, (unsigned long long)h.call_id, h.status);
    expect++;
    got++;
    raw_consume_to(&r, r.rread);
  }
  CHECK(got == N, "only %d of %d replies arrived after the client caught up", got, N);
  raw_close(&r);
  if (!ok2) target_restart("wedged by a stalled consumer");
  check_target();
}

/* ---------------------------------------------------------------- streams and deferred replies */
/* Attacks on client streams (DATA/END/CANCEL frames read by hms_call_recv, and the backlog of frames
 * it sets aside), server streams (hms_call_send waiting for room), deferred replies answered from
 * another thread, flag mixes and the `cancels` hint. Each is followed by check_target(). */
#define WAIT_UNTIL(cond, ms)                                   \
  ({                                                           \
    int64_t wu_end_ = now_ns() + (int64_t)(ms) * MS;           \
    bool wu_ok_;                                               \
    while (!(wu_ok_ = (cond)) && now_ns() < wu_end_) usleep(200); \
    wu_ok_;                                                    \
  })

/* Waits (publishing what is written and ringing) until `total` bytes are free in the request ring. */
static bool raw_room(raw_t *r, uint64_t total, int timeout_ms) {
  int64_t end = now_ns() + (int64_t)timeout_ms * MS;
  for (;;) {
    uint64_t tail = atomic_load_explicit(&r->reqc->tail, memory_order_acquire);
    if (tail <= r->head && r->cap - (r->head - tail) >= total) return true;
    if (now_ns() > end) return false;
    struct pollfd pf = {.fd = r->sock, .events = POLLRDHUP};
    if (poll(&pf, 1, 0) > 0) return false; /* the server hung up: no room will come */
    raw_publish(r, r->head);
    raw_ring(r);
    usleep(20);
  }
}
/* Appends one frame like a correct client (PAD first when it would not fit before the end). payload
 * NULL with plen > 0 leaves whatever bytes the ring holds. publish: publish and ring at once. */
static bool raw_frame(raw_t *r, uint16_t kind, uint16_t flags, uint32_t fn, uint64_t id, const void *p,
                      uint32_t plen, bool publish) {
  uint64_t need = hms__frame_bytes(plen);
  uint64_t contig = r->cap - (r->head & (r->cap - 1));
  if (!raw_room(r, need <= contig ? need : contig + need, 1000)) return false;
  if (need > contig) {
    hms__frame_hdr_t pad = mkhdr((uint32_t)contig, HMS__FRAME_PAD, 0, 0, 0);
    raw_put(r, r->head, &pad, NULL, 0);
    r->head += contig;
  }
  hms__frame_hdr_t h = mkhdr((uint32_t)need, kind, fn, id, plen);
  h.flags = flags;
  raw_put(r, r->head, &h, p, plen);
  r->head += need;
  if (publish) {
    raw_publish(r, r->head);
    raw_ring(r);
  }
  return true;
}
static void raw_flush(raw_t *r) {
  raw_publish(r, r->head);
  raw_ring(r);
}
static bool raw_u32(raw_t *r, uint16_t kind, uint16_t flags, uint32_t fn, uint64_t id, uint32_t v) {
  return raw_frame(r, kind, flags, fn, id, &v, 4, false);
}

/* What came back for one call: its items and its final (non-ITEM) frame. */
typedef struct {
  uint64_t id;
  bool optional; /* raw_collect does not wait for it (it may never come) */
  bool got;      /* the final frame arrived */
  int items;     /* ITEM frames before it */
  int extra;     /* frames for this id after the final one */
  hms__frame_hdr_t h;
  char p[320];   /* the final frame's payload (NUL-terminated, bounded) */
  char msg[300]; /* error message of the final frame, when it is an error */
} want_t;
static void want_init(want_t *w, uint64_t id) {
  memset(w, 0, sizeof *w);
  w->id = id;
}
/* Reads (and consumes) replies until every wanted call has its final frame or timeout_ms passes.
 * Returns how many finals arrived; frames for other ids count in *strays (NULL: ignored). */
static int raw_collect(raw_t *r, want_t *w, int n, int timeout_ms, int *strays) {
  int64_t end = now_ns() + (int64_t)timeout_ms * MS;
  int got = 0, need = 0;
  for (int i = 0; i < n; i++) {
    got += w[i].got;
    need += !w[i].optional && !w[i].got;
  }
  while (need > 0) {
    int64_t left = (end - now_ns()) / MS;
    hms__frame_hdr_t h;
    uint8_t p[320];
    if (left < 0 || !raw_next_response(r, &h, p, sizeof p - 1, (int)left)) break;
    raw_consume_to(r, r->rread);
    int k = -1;
    for (int i = 0; i < n; i++)
      if (w[i].id == h.call_id) k = i;
    if (k < 0) {
      if (strays) (*strays)++;
      if (verbose) printf("      stray reply: id %llu status %d flags %#x\n", (unsigned long long)h.call_id, h.status, h.flags);
      continue;
    }
    if (w[k].got) {
      w[k].extra++;
      continue;
    }
    if ((h.flags & HMS__FRAME_F_ITEM) && h.status == HMS_OK) {
      w[k].items++;
      continue;
    }
    w[k].got = true;
    w[k].h = h;
    size_t m = h.payload_len < sizeof w[k].p - 1 ? h.payload_len : sizeof w[k].p - 1;
    memcpy(w[k].p, p, m);
    w[k].p[m] = 0;
    if (h.status != HMS_OK && !parse_error_payload(p, (uint32_t)m, w[k].msg, sizeof w[k].msg)) w[k].msg[0] = 0;
    got++;
    need -= !w[k].optional;
  }
  return got;
}
/* One call's final reply: status and (for OK) the payload text, or a substring of the error message. */
static bool expect_final(raw_t *r, uint64_t id, int32_t status, const char *text, int timeout_ms, const char *what) {
  want_t w;
  want_init(&w, id);
  raw_collect(r, &w, 1, timeout_ms, NULL);
  CHECK(w.got, "%s: no reply for call %llu within %d ms", what, (unsigned long long)id, timeout_ms);
  if (!w.got) return false;
  bool ok = w.h.status == status;
  if (ok && text) ok = status == HMS_OK ? strcmp(w.p, text) == 0 : strstr(w.msg, text) != NULL;
  CHECK(ok, "%s: reply status %d (%s) '%s', expected %s '%s'", what, w.h.status,
        hms_status_str(w.h.status >= 0 && w.h.status < NSTATUS ? w.h.status : HMS_UNKNOWN),
        status == HMS_OK ? w.p : w.msg, hms_status_str(status), text ? text : "");
  return ok;
}

static bool raw_begin(raw_t *r, uint64_t ring, const char *name) {
  g_test = name;
  if (raw_connect(r, ring, true) != 0) {
    CHECK(0, "raw handshake failed");
    target_restart("no handshake");
    return false;
  }
  return true;
}
/* The raw connection still works (a valid echo round trip) and the server has not hung up. */
static void raw_still_works(raw_t *r) {
  CHECK(!wait_closed(r->sock, 5), "the server dropped the connection");
  CHECK(raw_echo(r, 24, true), "the connection stopped working");
}
static void raw_end(raw_t *r) {
  raw_close(r);
  check_target();
}

/* Server descriptors back to the count with only the good client connected. */
static bool target_fds_settle(int timeout_ms) {
  int64_t end = now_ns() + (int64_t)timeout_ms * MS;
  int fds;
  while ((fds = count_fds(T.pid)) != T.srv_fds && now_ns() < end) {
    good_echo(); /* events make the server drop hung-up connections */
    usleep(2000);
  }
  CHECK(fds == T.srv_fds, "server has %d descriptors, %d with only the good client", fds, T.srv_fds);
  return fds == T.srv_fds;
}
static long rss_kib(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  long kb = -1;
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &kb) == 1) break;
  fclose(f);
  return kb;
}

/* The new functions work for a well-behaved client: the raw attacks below are judged against this. */
static void test_streams_baseline(void) {
  g_test = "baseline: real client streams and a deferred call";
  hms_error_t e;
  hms_stream_t *st;
  hms_payload_t it;
  int end;
  hms_status_t rc = hms_stream_open(T.good, FN_CSUM, NULL, 0, HMS_CT_NONE, HMS_STREAM_CLIENT, 2000 * MS, &st, &e);
  CHECK(rc == HMS_OK, "open csum: %s", e.message);
  if (rc == HMS_OK) {
    for (int i = 0; i < 3; i++) CHECK(hms_stream_send(st, "abc", 3, HMS_CT_RAW, &e) == HMS_OK, "send: %s", e.message);
    CHECK(hms_stream_finish(st, &e) == HMS_OK, "finish: %s", e.message);
    rc = hms_stream_next(st, &it, &end, -1, &e);
    CHECK(rc == HMS_OK && !end && it.len == 1 && memcmp(it.data, "3", 1) == 0, "csum reply: %s end %d len %zu",
          hms_status_str(rc), end, it.len);
    hms_payload_release(&it);
    rc = hms_stream_next(st, &it, &end, -1, &e);
    CHECK(rc == HMS_OK && end, "csum end: %s end %d", hms_status_str(rc), end);
    hms_stream_close(st);
  }
  rc = hms_stream_open(T.good, FN_BIDI, NULL, 0, HMS_CT_NONE, HMS_STREAM_CLIENT | HMS_STREAM_SERVER, 2000 * MS, &st, &e);
  CHECK(rc == HMS_OK, "open bidi: %s", e.message);
  if (rc == HMS_OK) {
    for (int i = 0; i < 3; i++) CHECK(hms_stream_send(st, "xy", 2, HMS_CT_RAW, &e) == HMS_OK, "send: %s", e.message);
    CHECK(hms_stream_finish(st, &e) == HMS_OK, "finish: %s", e.message);
    int items = 0;
    while ((rc = hms_stream_next(st, &it, &end, -1, &e)) == HMS_OK && !end) {
      items += it.len == 2 && memcmp(it.data, "xy", 2) == 0;
      hms_payload_release(&it);
    }
    CHECK(rc == HMS_OK && end && items == 3, "bidi: %s end %d, %d echoed items", hms_status_str(rc), end, items);
    hms_stream_close(st);
  }
  uint32_t delay = 20;
  hms_payload_t req = {.data = &delay, .len = 4, .content_type = HMS_CT_RAW}, resp;
  int64_t t0 = now_ns();
  rc = hms_call(T.good, FN_SLOW, &req, &resp, 2000 * MS, &e);
  CHECK(rc == HMS_OK && resp.len == 4 && now_ns() - t0 >= 15 * MS, "deferred call: %s (%s), %zu bytes after %lld ms",
        hms_status_str(rc), e.message, resp.len, (long long)((now_ns() - t0) / MS));
  hms_payload_release(&resp);
  uint32_t five = 5;
  rc = hms_stream_open(T.good, FN_GEN, (const char *)&five, 4, HMS_CT_RAW, HMS_STREAM_SERVER, 2000 * MS, &st, &e);
  CHECK(rc == HMS_OK, "open gen: %s", e.message);
  if (rc == HMS_OK) {
    int items = 0;
    while ((rc = hms_stream_next(st, &it, &end, -1, &e)) == HMS_OK && !end) {
      items++;
      hms_payload_release(&it);
    }
    CHECK(rc == HMS_OK && end && items == 5, "gen: %s end %d, %d items", hms_status_str(rc), end, items);
    hms_stream_close(st);
  }
  /* An endless stream cancelled by the consumer: the handler's hms_call_send reports CANCELLED. */
  uint32_t out0 = atomic_load(&S->gen_out), canc0 = atomic_load(&S->send_err[HMS_CANCELLED]);
  rc = hms_stream_open(T.good, FN_GEN, NULL, 0, HMS_CT_NONE, HMS_STREAM_SERVER, 2000 * MS, &st, &e);
  if (rc == HMS_OK) {
    for (int i = 0; i < 3; i++) {
      if (hms_stream_next(st, &it, &end, -1, &e) == HMS_OK) hms_payload_release(&it);
    }
    hms_stream_cancel(st);
    hms_stream_close(st);
    CHECK(WAIT_UNTIL(atomic_load(&S->gen_out) > out0, 1000) && atomic_load(&S->send_err[HMS_CANCELLED]) > canc0,
          "the stream handler did not see the cancel (gen_last %d)", atomic_load(&S->gen_last));
  }
  check_target();
}

/* 1. Client streams opened by hand, with DATA/END/CANCEL frames that lie. */
static void test_cstream_attacks(void) {
  raw_t r;
  uint64_t s;
  /* A correct client stream first: proves the hand-made framing. */
  if (!raw_begin(&r, RAW_RING, "client stream: a correct one by hand")) return;
  s = raw_new_id(&r);
  raw_frame(&r, HMS__FRAME_REQUEST, HMS__FRAME_F_CSTREAM, FN_CSUM, s, NULL, 0, false);
  for (int i = 0; i < 3; i++) raw_frame(&r, HMS__FRAME_DATA, 0, 0, s, "item", 4, false);
  raw_frame(&r, HMS__FRAME_END, 0, 0, s, NULL, 0, true);
  expect_final(&r, s, HMS_OK, "3", 1000, "3 items");
  raw_still_works(&r);
  raw_end(&r);

  /* DATA and END frames with ids that are not the stream's: set aside, never counted, dropped. */
  if (!raw_begin(&r, RAW_RING, "client stream: DATA/END with wrong call ids")) return;
  s = raw_new_id(&r);
  raw_frame(&r, HMS__FRAME_REQUEST, HMS__FRAME_F_CSTREAM, FN_CSUM, s, NULL, 0, false);
  uint64_t wrong[] = {s + 1024, 0, s ^ 1, UINT64_MAX, s + 1};
  for (int i = 0; i < 5; i++) {
    raw_frame(&r, HMS__FRAME_DATA, 0, 0, wrong[i], "bad", 3, false);
    if (i & 1) raw_frame(&r, HMS__FRAME_DATA, 0, 0, s, "ok", 2, false);
  }
  raw_frame(&r, HMS__FRAME_END, 0, 0, s + 1, NULL, 0, false);
  raw_frame(&r, HMS__FRAME_END, 0, 0, s, NULL, 0, true);
  expect_final(&r, s, HMS_OK, "2", 1000, "2 of 7 items were the stream's");
  raw_still_works(&r);
  raw_end(&r);

  /* DATA/END for calls that are not streams: a plain echo and a deferred call in flight. */
  if (!raw_begin(&r, RAW_RING, "client stream: DATA/END for non-stream calls")) return;
  uint64_t e1 = raw_new_id(&r), d1 = raw_new_id(&r);
  raw_frame(&r, HMS__FRAME_REQUEST, 0, FN_ECHO, e1, "plain", 5, false);
  raw_frame(&r, HMS__FRAME_DATA, 0, 0, e1, "zz", 2, false);
  raw_frame(&r, HMS__FRAME_END, 0, 0, e1, NULL, 0, false);
  uint32_t delay = 20;
  raw_frame(&r, HMS__FRAME_REQUEST, 0, FN_SLOW, d1, &delay, 4, false);
  raw_frame(&r, HMS__FRAME_DATA, 0, 0, d1, "zz", 2, false);
  raw_frame(&r, HMS__FRAME_END, 0, 0, d1, NULL, 0, true);
  {
    want_t w[2];
    want_init(&w[0], e1);
    want_init(&w[1], d1);
    int strays = 0;
    raw_collect(&r, w, 2, 1000, &strays);
    CHECK(w[0].got && w[0].h.status == HMS_OK && strcmp(w[0].p, "plain") == 0, "echo reply: got %d status %d",
          w[0].got, w[0].h.status);
    CHECK(w[1].got && w[1].h.status == HMS_OK && w[1].h.payload_len == 4, "deferred reply: got %d status %d",
          w[1].got, w[1].h.status);
    CHECK(!w[0].items && !w[1].items && !strays, "%d/%d items and %d strays for DATA frames of plain calls",
          w[0].items, w[1].items, strays);
  }
  raw_still_works(&r);
  raw_end(&r);

  /* END twice, END and DATA without an open, DATA after END. */
  if (!raw_begin(&r, RAW_RING, "client stream: END twice, END without open, DATA after END")) return;
  uint64_t ghost = r.next_id + 5000;
  raw_frame(&r, HMS__FRAME_END, 0, 0, ghost, NULL, 0, false);
  raw_frame(&r, HMS__FRAME_DATA, 0, 0, ghost, "boo", 3, false);
  s = raw_new_id(&r);
  raw_frame(&r, HMS__FRAME_REQUEST, HMS__FRAME_F_CSTREAM, FN_CSUM, s, NULL, 0, false);
  raw_frame(&r, HMS__FRAME_DATA, 0, 0, s, "one", 3, false);
  raw_frame(&r, HMS__FRAME_END, 0, 0, s, NULL, 0, false);
  raw_frame(&r, HMS__FRAME_END, 0, 0, s, NULL, 0, false);
  raw_frame(&r, HMS__FRAME_DATA, 0, 0, s, "late", 4, false);
  raw_frame(&r, HMS__FRAME_DATA, 0, 0, s, "later", 5, true);
  {
    want_t w;
    want_init(&w, s);
    int strays = 0;
    raw_collect(&r, &w, 1, 1000, &strays);
    CHECK(w.got && w.h.status == HMS_OK && strcmp(w.p, "1") == 0, "reply: got %d status %d '%s'", w.got, w.h.status,
          w.p);
    raw_still_works(&r); /* any reply to the extra frames would arrive before this echo's */
    CHECK(!strays && !w.extra, "%d stray replies, %d extra replies for the stream", strays, w.extra);
  }
  raw_end(&r);

  /* CANCEL in the middle: the handler, waiting in hms_call_recv, gets CANCELLED; the connection lives. */
  if (!raw_begin(&r, RAW_RING, "client stream: CANCEL in the middle")) return;
  {
    uint32_t items0 = atomic_load(&S->csum_items), out0 = atomic_load(&S->csum_out),
             canc0 = atomic_load(&S->recv_err[HMS_CANCELLED]);
    s = raw_new_id(&r);
    raw_u32(&r, HMS__FRAME_REQUEST, HMS__FRAME_F_CSTREAM, FN_CSUM, s, 2000);
    raw_frame(&r, HMS__FRAME_DATA, 0, 0, s, "a", 1, false);
    raw_frame(&r, HMS__FRAME_DATA, 0, 0, s, "b", 1, true);
    CHECK(WAIT_UNTIL(atomic_load(&S->csum_items) - items0 >= 2, 1000), "the handler did not receive 2 items");
    usleep(2000); /* let it go back to waiting */
    raw_frame(&r, HMS__FRAME_CANCEL, 0, 0, s, NULL, 0, false);
    atomic_fetch_add(&r.reqc->cancels, 1);
    raw_frame(&r, HMS__FRAME_DATA, 0, 0, s, "after", 5, true);
    expect_final(&r, s, HMS_CANCELLED, "cancel", 1000, "cancelled stream");
    CHECK(WAIT_UNTIL(atomic_load(&S->csum_out) > out0, 500) && atomic_load(&S->recv_err[HMS_CANCELLED]) == canc0 + 1,
          "the handler's hms_call_recv did not return CANCELLED (last status %d)", atomic_load(&S->csum_last));
    raw_still_works(&r);
  }
  raw_end(&r);

  /* A DATA frame whose payload_len runs past the frame, read by hms_call_recv: the connection is
   * dropped, the handler gets an error (not a crash or an over-read). */
  if (!raw_begin(&r, RAW_RING, "client stream: DATA with payload_len past the frame")) return;
  {
    uint32_t items0 = atomic_load(&S->csum_items), out0 = atomic_load(&S->csum_out);
    s = raw_new_id(&r);
    raw_u32(&r, HMS__FRAME_REQUEST, HMS__FRAME_F_CSTREAM, FN_CSUM, s, 2000);
    raw_frame(&r, HMS__FRAME_DATA, 0, 0, s, "a", 1, true);
    CHECK(WAIT_UNTIL(atomic_load(&S->csum_items) > items0, 1000), "the handler did not receive the item");
    hms__frame_hdr_t h = mkhdr(128, HMS__FRAME_DATA, 0, s, 65);
    raw_put(&r, r.head, &h, NULL, 0);
    r.head += 128;
    raw_flush(&r);
    CHECK(wait_closed(r.sock, 1000), "the server kept a connection with a corrupt DATA frame");
    CHECK(WAIT_UNTIL(atomic_load(&S->csum_out) > out0, 500) && atomic_load(&S->csum_last) != HMS_OK,
          "the handler did not end with an error (last status %d)", atomic_load(&S->csum_last));
    want_t w;
    want_init(&w, s);
    raw_collect(&r, &w, 1, 100, NULL);
    if (w.got) CHECK(w.h.status != HMS_OK, "the stream was answered OK after a corrupt frame");
    int32_t status = 0;
    char msg[300];
    if (raw_find_goodbye(&r, &status, msg, sizeof msg))
      CHECK(status == HMS_DATA_LOSS && strstr(msg, "payload length 65"), "goodbye %d '%s'", status, msg);
  }
  raw_end(&r);

  /* Frames of another call that arrive while a client-stream handler reads are set aside and must be
   * served after it returns. CORE BUG found here (node.c, hms__drain): the drain loop starts with
   * `if (!hms__ring_has_data(&c->req)) break;`, so frames in the backlog (c->bl_head) are only looked at
   * while the *ring* has data, and the serve loop's "pending" test ignores the backlog too. When the
   * stream's END was the last frame in the ring, the set-aside request stays unanswered until the
   * client happens to send something else (a real client's concurrent hms_call times out). */
  if (!raw_begin(&r, RAW_RING, "client stream: another call's request set aside while it runs")) return;
  {
    s = raw_new_id(&r);
    uint64_t side = raw_new_id(&r);
    raw_frame(&r, HMS__FRAME_REQUEST, HMS__FRAME_F_CSTREAM, FN_CSUM, s, NULL, 0, false);
    raw_frame(&r, HMS__FRAME_REQUEST, 0, FN_ECHO, side, "side", 4, false);
    raw_frame(&r, HMS__FRAME_DATA, 0, 0, s, "x", 1, false);
    raw_frame(&r, HMS__FRAME_END, 0, 0, s, NULL, 0, true);
    want_t w[2];
    want_init(&w[0], s);
    want_init(&w[1], side);
    raw_collect(&r, w, 2, 300, NULL);
    CHECK(w[0].got && strcmp(w[0].p, "1") == 0, "the stream's reply: got %d '%s'", w[0].got, w[0].p);
    CHECK(w[1].got, "CORE BUG (node.c hms__drain: the backlog is only drained while the request ring has data): "
                    "the echo request set aside during the client stream was not answered within 300 ms");
    if (!w[1].got) { /* any later frame unsticks it: shows the mechanism */
      uint64_t nudge = raw_new_id(&r);
      raw_frame(&r, HMS__FRAME_REQUEST, 0, FN_ECHO, nudge, "nudge", 5, true);
      want_t w2[2];
      want_init(&w2[0], side);
      want_init(&w2[1], nudge);
      raw_collect(&r, w2, 2, 1000, NULL);
      CHECK(w2[0].got && strcmp(w2[0].p, "side") == 0, "the set-aside request was not answered after a nudge either");
    } else {
      CHECK(strcmp(w[1].p, "side") == 0, "set-aside echo reply '%s'", w[1].p);
    }
    raw_still_works(&r);
  }
  raw_end(&r);
}

/* 2. A client-stream handler waits for items; the client sends thousands of other requests instead,
 * which the handler has to set aside. The backlog is bounded: the connection is dropped. */
static void test_backlog_flood(void) {
  raw_t r;
  if (!raw_begin(&r, 1u << 19, "backlog flood: 4200 requests behind a client stream")) return;
  long rss0 = rss_kib(T.pid);
  uint32_t re0 = atomic_load(&S->recv_err[HMS_RESOURCE_EXHAUSTED]);
  uint64_t s = raw_new_id(&r);
  raw_u32(&r, HMS__FRAME_REQUEST, HMS__FRAME_F_CSTREAM, FN_CSUM, s, 3000);
  bool room = true;
  for (int i = 0; i < 4200 && room; i++) {
    room = raw_frame(&r, HMS__FRAME_REQUEST, 0, FN_ECHO, raw_new_id(&r), NULL, 0, (i & 1023) == 1023);
    if (!room && wait_closed(r.sock, 0)) break; /* dropped before we were done: fine */
  }
  raw_flush(&r);
  int64_t t0 = now_ns();
  bool closed = wait_closed(r.sock, 2000);
  int64_t dt = now_ns() - t0;
  CHECK(closed, "the server kept a connection with more than %d frames set aside", 4096);
  long rss1 = rss_kib(T.pid);
  /* Its parting words: the stream's reply (RESOURCE_EXHAUSTED) or a goodbye frame (call_id 0). */
  hms__frame_hdr_t h;
  uint8_t p[512];
  char msg[300] = "";
  bool said = false;
  int replies_after = 0;
  while (raw_next_response(&r, &h, p, sizeof p, 0)) {
    if ((h.call_id == s || h.call_id == 0) && h.status == HMS_RESOURCE_EXHAUSTED) {
      said = true;
      parse_error_payload(p, h.payload_len < sizeof p ? h.payload_len : sizeof p, msg, sizeof msg);
    } else if (h.call_id != s && h.call_id != 0) {
      replies_after++;
    }
  }
  CHECK(said, "no RESOURCE_EXHAUSTED reply or goodbye for the flooded stream");
  CHECK(atomic_load(&S->recv_err[HMS_RESOURCE_EXHAUSTED]) == re0 + 1, "the handler's hms_call_recv did not fail with "
        "RESOURCE_EXHAUSTED");
  CHECK(rss0 > 0 && rss1 - rss0 < 64 * 1024, "server RSS grew by %ld KiB", rss1 - rss0);
  if (verbose)
    printf("    flood: dropped after %.1f ms, '%s'; %d requests served after the handler failed, RSS +%ld KiB\n",
           dt / 1e6, msg, replies_after, rss1 - rss0);
  raw_end(&r);

  /* The frame limit does not bound bytes: every set-aside frame is a malloc'ed copy of up to the max
   * frame (ring/4). CORE BUG (node.c hms__defer / HMS__MAX_DEFERRED counts frames, not bytes): a client
   * whose connection has 512 KiB of rings makes the server hold 4096 x 64 KiB = 256 MiB, and with a
   * 1 GiB ring up to 1 TiB; the README promises "nothing grows" beyond the ring. Here 1024 frames of
   * 64 KiB (64 MiB) are set aside; a server that limited the backlog's bytes (and dropped the
   * connection) would pass. */
  if (!raw_begin(&r, 1u << 18, "backlog flood: 1024 frames of 64 KiB behind a client stream")) return;
  rss0 = rss_kib(T.pid);
  uint32_t items_out0 = atomic_load(&S->csum_out);
  s = raw_new_id(&r);
  raw_u32(&r, HMS__FRAME_REQUEST, HMS__FRAME_F_CSTREAM, FN_CSUM, s, 3000);
  raw_flush(&r);
  uint32_t big = (uint32_t)(r.cap / 4 - 64);
  int sent = 0;
  for (; sent < 1024; sent++) {
    if (!raw_frame(&r, HMS__FRAME_REQUEST, 0, FN_ECHO, raw_new_id(&r), NULL, big, true)) break;
  }
  /* All consumed (= copied into the backlog) or the connection was dropped. */
  WAIT_UNTIL(atomic_load(&r.reqc->tail) == r.head || wait_closed(r.sock, 0), 1000);
  rss1 = rss_kib(T.pid);
  bool dropped = wait_closed(r.sock, 0);
  CHECK(rss1 - rss0 < 32 * 1024,
        "CORE BUG (node.c hms__defer: the backlog limit counts frames, not bytes): the server holds %ld MiB more "
        "after %d set-aside frames of %u bytes on a connection with %llu KiB of rings (connection %s)",
        (rss1 - rss0) / 1024, sent, big, (unsigned long long)(2 * r.cap / 1024), dropped ? "dropped" : "kept");
  if (!dropped) {
    raw_frame(&r, HMS__FRAME_END, 0, 0, s, NULL, 0, true);
    WAIT_UNTIL(atomic_load(&S->csum_out) > items_out0, 1000);
  }
  if (verbose) printf("    big flood: %d frames sent, RSS +%ld MiB, %s\n", sent, (rss1 - rss0) / 1024, dropped ? "dropped" : "kept");
  raw_end(&r);
}

/* A forked child that holds a raw connection, does `what` and then sleeps until it is killed. */
typedef void (*child_fn)(raw_t *r);
static pid_t raw_child(child_fn what) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return -1;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    raw_t r;
    char c = raw_connect(&r, RAW_RING, true) == 0 ? 'r' : 'x';
    if (c == 'r') what(&r);
    if (write(p[1], &c, 1) != 1) _exit(1);
    for (;;) pause();
  }
  close(p[1]);
  char c = 0;
  ssize_t n = read(p[0], &c, 1);
  close(p[0]);
  if (n != 1 || c != 'r') {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
    }
    return -1;
  }
  return pid;
}
static void child_open_gen(raw_t *r) { /* an endless server stream whose replies nobody reads */
  raw_frame(r, HMS__FRAME_REQUEST, HMS__FRAME_F_STREAM, FN_GEN, raw_new_id(r), NULL, 0, true);
}
static void child_defer_many(raw_t *r) { /* eight deferred calls, 80 ms each */
  for (int i = 0; i < 8; i++) raw_u32(r, HMS__FRAME_REQUEST, 0, FN_SLOW, raw_new_id(r), 80);
  raw_flush(r);
}
static void child_kill(pid_t pid) {
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

/* 3. Clients that go away while a handler waits for them. */
static void test_disconnects(void) {
  raw_t r;
  /* (a) A client-stream handler waits in hms_call_recv; the client closes its socket. */
  if (!raw_begin(&r, RAW_RING, "disconnect while the handler waits in hms_call_recv")) return;
  {
    uint32_t items0 = atomic_load(&S->csum_items), out0 = atomic_load(&S->csum_out);
    uint64_t s = raw_new_id(&r);
    raw_u32(&r, HMS__FRAME_REQUEST, HMS__FRAME_F_CSTREAM, FN_CSUM, s, 3000);
    raw_frame(&r, HMS__FRAME_DATA, 0, 0, s, "a", 1, true);
    CHECK(WAIT_UNTIL(atomic_load(&S->csum_items) > items0, 1000), "the handler did not receive the item");
    raw_close(&r);
    int64_t t0 = now_ns();
    bool ended = WAIT_UNTIL(atomic_load(&S->csum_out) > out0, 1000);
    CHECK(ended && atomic_load(&S->csum_last) == HMS_CANCELLED, "the handler %s (status %d)",
          ended ? "ended" : "still waits 1 s after the hang-up", atomic_load(&S->csum_last));
    if (verbose) printf("    hms_call_recv noticed the hang-up after %.1f ms\n", (now_ns() - t0) / 1e6);
    check_target();
    target_fds_settle(1000);
  }

  /* (b) A server-stream handler waits for room in a reply ring nobody reads; the client is killed. */
  g_test = "killed while the stream handler waits for ring space";
  {
    uint32_t in0 = atomic_load(&S->gen_in), out0 = atomic_load(&S->gen_out);
    pid_t child = raw_child(child_open_gen);
    CHECK(child > 0, "the child could not connect");
    if (child > 0) {
      CHECK(WAIT_UNTIL(atomic_load(&S->gen_in) > in0, 1000), "the stream handler did not start");
      uint64_t items = 0;
      WAIT_UNTIL((items = atomic_load(&S->gen_items), usleep(5000), items == atomic_load(&S->gen_items)), 1000);
      /* The handler runs on the node's only dispatcher thread, so while it waits for the ring, the node
       * serves nobody: a design limit (README: a slow handler delays the node), not checked here. */
      if (verbose) {
        hms_payload_t req = {.data = "stall", .len = 5, .content_type = HMS_CT_RAW}, resp;
        hms_error_t e;
        int64_t t0 = now_ns();
        hms_status_t st = hms_call(T.good, T.echo_id, &req, &resp, 100 * MS, &e);
        hms_payload_release(&resp);
        printf("  note: while a stream consumer stops reading, the node's other callers wait (a 100 ms call: %s "
               "after %.0f ms)\n", hms_status_str(st), (now_ns() - t0) / 1e6);
      }
      CHECK(atomic_load(&S->gen_out) == out0, "the stream handler ended before the client was killed");
      child_kill(child);
      bool ended = WAIT_UNTIL(atomic_load(&S->gen_out) > out0, 1000);
      CHECK(ended && atomic_load(&S->gen_last) == HMS_CANCELLED, "the stream handler %s (status %d)",
            ended ? "ended" : "still waits 1 s after the kill", atomic_load(&S->gen_last));
    }
    check_target();
    target_fds_settle(1000);
  }

  /* (c) A deferred reply is pending when the client closes: the reply thread finds the connection gone,
   * the connection's memory and descriptors are released when the last reference goes. */
  if (!raw_begin(&r, RAW_RING, "disconnect with a deferred reply pending")) return;
  {
    uint32_t in0 = atomic_load(&S->slow_in), canc0 = atomic_load(&S->def_cancelled), ok0 = atomic_load(&S->def_ok);
    raw_u32(&r, HMS__FRAME_REQUEST, 0, FN_SLOW, raw_new_id(&r), 80); /* margin: the drop must come first */
    raw_flush(&r);
    CHECK(WAIT_UNTIL(atomic_load(&S->slow_in) > in0, 1000), "the deferring handler did not run");
    raw_close(&r);
    CHECK(good_echo(), "the good client waits for someone else's deferred reply");
    CHECK(WAIT_UNTIL(atomic_load(&S->def_cancelled) > canc0, 1000), "the deferred reply to a gone client did not "
          "return CANCELLED (%u OK)", atomic_load(&S->def_ok) - ok0);
    check_target();
    target_fds_settle(1000);
  }

  /* (d) The same, with the reply waiting for room in a full reply ring when the client goes. */
  if (!raw_begin(&r, RAW_RING, "disconnect while a deferred reply waits for ring space")) return;
  {
    uint32_t canc0 = atomic_load(&S->def_cancelled), in0 = atomic_load(&S->slow_in), ok0 = atomic_load(&S->def_ok);
    uint8_t big[960];
    memset(big, 'd', sizeof big);
    CHECK(raw_echo(&r, 0, true), "baseline echo");
    uint32_t delay = 30;
    memcpy(big, &delay, 4);
    raw_frame(&r, HMS__FRAME_REQUEST, 0, FN_SLOW, raw_new_id(&r), big, sizeof big, true);
    CHECK(WAIT_UNTIL(atomic_load(&S->slow_in) > in0, 1000), "the deferring handler did not run");
    for (int i = 0; i < 3; i++) raw_frame(&r, HMS__FRAME_REQUEST, 0, FN_ECHO, raw_new_id(&r), big, sizeof big, true);
    uint64_t full = r.rread + 3 * 1024; /* 3 unread 1 KiB replies; the deferred one then needs a wrap */
    bool filled = WAIT_UNTIL(atomic_load(&r.respc->head) == full, 1000);
    if (!filled || atomic_load(&S->def_ok) != ok0) {
      printf("  note: the deferred reply came before the ring filled (a slow machine?): case skipped\n");
    } else {
      usleep(60000); /* the reply is due now, and does not fit */
      CHECK(atomic_load(&S->def_cancelled) == canc0 && atomic_load(&S->def_ok) == ok0 && atomic_load(&S->def_live) > 0,
            "the deferred reply did not wait for room");
    }
    raw_close(&r);
    CHECK(WAIT_UNTIL(atomic_load(&S->def_cancelled) > canc0, 1000), "the waiting deferred reply did not give up "
          "after the hang-up");
    check_target();
    target_fds_settle(1000);
  }

  /* (e) Eight deferred calls pending when the client process is killed. */
  g_test = "killed with eight deferred replies pending";
  {
    uint32_t canc0 = atomic_load(&S->def_cancelled), in0 = atomic_load(&S->slow_in);
    pid_t child = raw_child(child_defer_many);
    CHECK(child > 0, "the child could not connect");
    if (child > 0) {
      CHECK(WAIT_UNTIL(atomic_load(&S->slow_in) >= in0 + 8, 1000), "the deferring handlers did not run");
      child_kill(child);
      CHECK(WAIT_UNTIL(atomic_load(&S->def_cancelled) >= canc0 + 8, 1000), "%u of 8 deferred replies to a killed "
            "client returned CANCELLED", atomic_load(&S->def_cancelled) - canc0);
    }
    check_target();
    target_fds_settle(1000);
  }
}

/* 4. Flag mixes, a CANCEL for nothing, and garbage in the `cancels` hint. */
static void test_flag_attacks(void) {
  raw_t r;
  if (!raw_begin(&r, RAW_RING, "STREAM flag on a plain function")) return;
  {
    uint64_t id = raw_new_id(&r);
    raw_frame(&r, HMS__FRAME_REQUEST, HMS__FRAME_F_STREAM, FN_ECHO, id, "hello", 5, true);
    want_t w;
    want_init(&w, id);
    raw_collect(&r, &w, 1, 1000, NULL);
    CHECK(w.got, "no final frame for a plain function called as a stream");
    if (verbose) printf("    plain function as a stream: %d items, final status %d\n", w.items, w.h.status);
    raw_still_works(&r);
    /* ... and on a deferring function (a deferred stream: its deferred reply ends it, no hang). */
    id = raw_new_id(&r);
    raw_u32(&r, HMS__FRAME_REQUEST, HMS__FRAME_F_STREAM, FN_SLOW, id, 10);
    raw_flush(&r);
    want_init(&w, id);
    raw_collect(&r, &w, 1, 1000, NULL);
    CHECK(w.got && w.h.status == HMS_OK, "deferring function as a stream: got %d status %d", w.got, w.h.status);
    /* ... a server-stream function opened as a client stream only: refused. */
    id = raw_new_id(&r);
    raw_frame(&r, HMS__FRAME_REQUEST, HMS__FRAME_F_CSTREAM, FN_GEN, id, NULL, 0, true);
    expect_final(&r, id, HMS_FAILED_PRECONDITION, "streaming function", 1000, "gen opened with CSTREAM only");
    /* ... a client-stream function called plainly: refused. */
    id = raw_new_id(&r);
    raw_frame(&r, HMS__FRAME_REQUEST, 0, FN_CSUM, id, NULL, 0, true);
    expect_final(&r, id, HMS_FAILED_PRECONDITION, "client stream", 1000, "csum called plainly");
    raw_still_works(&r);
  }
  raw_end(&r);

  /* STREAM|CSTREAM|ONEWAY at once, on every function, each followed by DATA and END. */
  if (!raw_begin(&r, RAW_RING, "STREAM|CSTREAM|ONEWAY on every function")) return;
  for (uint32_t fn = FN_ECHO; fn <= FN_GEN; fn++) {
    uint64_t id = raw_new_id(&r);
    uint32_t param = fn == FN_GEN ? 3 : 10; /* gen: 3 items; csum/bidi: 10 ms; slow: 10 ms */
    raw_u32(&r, HMS__FRAME_REQUEST, HMS__FRAME_F_STREAM | HMS__FRAME_F_CSTREAM | HMS__FRAME_F_ONEWAY, fn, id, param);
    raw_frame(&r, HMS__FRAME_DATA, 0, 0, id, "d", 1, false);
    raw_frame(&r, HMS__FRAME_END, 0, 0, id, NULL, 0, false);
    uint64_t after = raw_new_id(&r);
    raw_frame(&r, HMS__FRAME_REQUEST, 0, FN_ECHO, after, "after", 5, true);
    want_t w[2];
    want_init(&w[0], id);
    w[0].optional = true; /* whatever it answers (one-way: maybe nothing), before the echo's reply */
    want_init(&w[1], after);
    raw_collect(&r, w, 2, 1000, NULL);
    CHECK(w[1].got && strcmp(w[1].p, "after") == 0, "no echo after the all-flags call to fn %u", fn);
    if (verbose) printf("    all flags on fn %u: final %d status %d, %d items\n", fn, w[0].got, w[0].h.status, w[0].items);
    raw_still_works(&r);
  }
  raw_end(&r);

  /* One-way requests (call_id 0, like the real client sends them) that the server refuses before a
   * handler runs: a client-stream function called plainly, an unknown function, an expired deadline.
   * Nobody waits for their answer, and a frame with call_id 0 and an error status is the server's
   * goodbye to a client. CORE BUG found here (node.c, hms__dispatch): the early refusals call
   * hms__write_error() without looking at HMS__FRAME_F_ONEWAY, so the server writes a call_id-0 error
   * frame; the real client (client.c, hms__read_one) takes it for a goodbye and kills the whole
   * connection. Trigger from the public API: hms_call_submit(cl, fn, ..., HMS_CALL_ONEWAY, 1 ns, ...)
   * or a one-way call to a client-stream function or to an id the server does not have. */
  if (!raw_begin(&r, RAW_RING, "one-way requests the server refuses")) return;
  {
    struct {
      uint32_t fn;
      int64_t deadline;
      const char *what;
    } ow[] = {{FN_CSUM, 0, "a client-stream function"}, {999, 0, "an unknown function"},
              {FN_ECHO, 1, "an expired deadline"}};
    for (int i = 0; i < 3; i++) {
      hms__frame_hdr_t h = mkhdr(64, HMS__FRAME_REQUEST, ow[i].fn, 0, 0);
      h.flags = HMS__FRAME_F_ONEWAY;
      h.deadline_ns = ow[i].deadline;
      CHECK(raw_room(&r, 64, 1000) && (r.cap - (r.head & (r.cap - 1))) >= 64, "room");
      raw_put(&r, r.head, &h, NULL, 0);
      r.head += 64;
      uint64_t id = raw_new_id(&r);
      raw_frame(&r, HMS__FRAME_REQUEST, 0, FN_ECHO, id, "after", 5, true);
      want_t w[2];
      want_init(&w[0], 0);
      w[0].optional = true; /* replies come in order: anything for the one-way call precedes the echo's */
      want_init(&w[1], id);
      raw_collect(&r, w, 2, 1000, NULL);
      CHECK(w[1].got, "no reply to the echo after a one-way call to %s", ow[i].what);
      CHECK(!w[0].got || w[0].h.status == HMS_OK,
            "CORE BUG (node.c hms__dispatch writes errors for one-way calls): a one-way call to %s was answered "
            "with a call_id-0 frame, status %d '%s' (a real client takes it for the server's goodbye)",
            ow[i].what, w[0].h.status, w[0].msg);
    }
    raw_still_works(&r);
  }
  raw_end(&r);
  g_test = "real client: one-way calls the server refuses";
  {
    hms_client_t *cl;
    hms_error_t e;
    CHECK(hms_connect(g_node, TARGET_SVC, TARGET_VER, NULL, &cl, &e) == HMS_OK, "connect: %s", e.message);
    struct {
      uint32_t fn;
      int64_t timeout;
      const char *what;
    } ow[] = {{FN_CSUM, 2000 * MS, "a client-stream function"}, {999, 2000 * MS, "an unknown function id"},
              {FN_ECHO, 1, "a 1 ns timeout"}};
    for (int i = 0; i < 3 && cl; i++) {
      hms_status_t st = hms_call_submit(cl, ow[i].fn, "x", 1, HMS_CT_RAW, HMS_CALL_ONEWAY, ow[i].timeout, NULL, NULL,
                                        NULL, &e);
      if (st != HMS_OK) continue; /* refused locally: fine */
      hms_payload_t req = {.data = "y", .len = 1, .content_type = HMS_CT_RAW}, resp;
      st = hms_call(cl, T.echo_id, &req, &resp, 2000 * MS, &e);
      hms_payload_release(&resp);
      CHECK(st == HMS_OK, "CORE BUG (see above): after a one-way call to %s, the client's next call fails: %s: %s",
            ow[i].what, hms_status_str(st), e.message);
      if (st != HMS_OK) { /* the client is dead: a fresh one for the next case */
        hms_client_close(cl);
        if (hms_connect(g_node, TARGET_SVC, TARGET_VER, NULL, &cl, &e) != HMS_OK) cl = NULL;
      }
    }
    if (cl) hms_client_close(cl);
    check_target();
  }

  /* A CANCEL for a call never sent (counted in `cancels`), and one not counted. */
  if (!raw_begin(&r, RAW_RING, "CANCEL for a call id never sent")) return;
  raw_frame(&r, HMS__FRAME_CANCEL, 0, 0, r.next_id + 777, NULL, 0, false);
  atomic_fetch_add(&r.reqc->cancels, 1);
  raw_frame(&r, HMS__FRAME_CANCEL, 0, 0, 0, NULL, 0, true);
  raw_still_works(&r);
  raw_still_works(&r);
  raw_end(&r);

  /* `cancels` is only a hint to look ahead for CANCEL frames: garbage must neither skip a request nor
   * stall the server. 3000 queued requests make every lookahead long (up to 4096 frames each). */
  if (!raw_begin(&r, 1u << 18, "garbage in the request ring's `cancels` counter")) return;
  {
    uint32_t garbage[] = {0xFFFFFFFFu, 12345, 0x80000000u, 1};
    int answered = 0, total = 0;
    int64_t t0 = now_ns();
    for (int g = 0; g < 4; g++) {
      atomic_store(&r.reqc->cancels, garbage[g]);
      enum { N = 750 };
      uint64_t first = r.next_id + 1;
      for (int i = 0; i < N; i++) raw_frame(&r, HMS__FRAME_REQUEST, 0, FN_ECHO, raw_new_id(&r), "c", 1, false);
      raw_flush(&r);
      total += N;
      hms__frame_hdr_t h;
      uint8_t p[64];
      uint64_t expect = first;
      while (expect < first + N && raw_next_response(&r, &h, p, sizeof p, 1000)) {
        raw_consume_to(&r, r.rread);
        if (h.call_id == expect && h.status == HMS_OK) answered++;
        expect++;
      }
      /* A stream handler consults the hint on every item too. */
      uint64_t id = raw_new_id(&r);
      raw_u32(&r, HMS__FRAME_REQUEST, HMS__FRAME_F_STREAM, FN_GEN, id, 20);
      raw_flush(&r);
      want_t w;
      want_init(&w, id);
      raw_collect(&r, &w, 1, 1000, NULL);
      CHECK(w.got && w.items == 20 && w.h.status == HMS_OK, "stream with cancels=%#x: %d items, status %d",
            garbage[g], w.items, w.h.status);
    }
    double ms = (now_ns() - t0) / 1e6;
    CHECK(answered == total, "%d of %d requests answered in order with a garbage `cancels`", answered, total);
    CHECK(ms < 2000, "answering %d requests with a garbage `cancels` took %.0f ms", total, ms);
    if (verbose) printf("    %d requests with garbage cancels in %.1f ms\n", total, ms);
    raw_still_works(&r);
  }
  raw_end(&r);
}

static void test_stream_attacks(void) {
  int64_t t0 = now_ns();
  void (*const tests[])(void) = {test_streams_baseline, test_cstream_attacks, test_backlog_flood, test_disconnects,
                                 test_flag_attacks};
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    int64_t t1 = now_ns();
    tests[i]();
    if (verbose) printf("    (stream attack group %zu: %.0f ms)\n", i + 1, (now_ns() - t1) / 1e6);
  }
  printf("  stream, backlog and deferred-reply attacks in %.2f s\n", (now_ns() - t0) / 1e9);
}

/* ---------------------------------------------------------------- part 1 fuzzer */
static uint64_t pick_u64(const uint64_t *v, int n) { return v[rnd() % (uint64_t)n]; }

/* A plausible stream conversation for the fuzzer: an open of a streaming (or any) function with stream
 * flags, then DATA/END/CANCEL/REQUEST frames whose call ids are mostly the stream's or its neighbours',
 * so hms_call_recv, its backlog and the cancel bookkeeping see them; sometimes one lying frame. */
static void fuzz_stream_conversation(raw_t *r) {
  uint64_t cap = r->cap;
  uint64_t sid = raw_new_id(r);
  static const uint32_t fns[] = {FN_CSUM, FN_BIDI, FN_CSUM, FN_BIDI, FN_GEN, FN_SLOW, FN_ECHO};
  static const uint16_t fl[] = {HMS__FRAME_F_CSTREAM, HMS__FRAME_F_CSTREAM | HMS__FRAME_F_STREAM,
                                HMS__FRAME_F_CSTREAM, HMS__FRAME_F_STREAM,
                                HMS__FRAME_F_CSTREAM | HMS__FRAME_F_ONEWAY,
                                HMS__FRAME_F_STREAM | HMS__FRAME_F_CSTREAM | HMS__FRAME_F_ONEWAY, 0};
  static const uint16_t kinds[] = {HMS__FRAME_DATA, HMS__FRAME_DATA, HMS__FRAME_DATA, HMS__FRAME_END,
                                   HMS__FRAME_CANCEL, HMS__FRAME_REQUEST, HMS__FRAME_END, HMS__FRAME_DATA};
  uint64_t pos = r->head;
  int nframes = 2 + (int)(rnd() % 14);
  for (int i = 0; i < nframes; i++) {
    hms__frame_hdr_t h;
    memset(&h, 0, sizeof h);
    uint8_t pl[96];
    uint32_t plen;
    if (i == 0) {
      h.kind = HMS__FRAME_REQUEST;
      h.fn_id = fns[rnd() % 7];
      h.flags = rnd() % 8 ? fl[rnd() % 7] : (uint16_t)(rnd() & 0x3f);
      h.call_id = sid;
      /* The parameter: csum/bidi recv timeout, gen item count, slow delay (all small). */
      uint32_t v = h.fn_id == FN_GEN ? 1 + (uint32_t)(rnd() % 16) : 1 + (uint32_t)(rnd() % 20);
      memcpy(pl, &v, 4);
      plen = 4;
    } else {
      h.kind = kinds[rnd() % 8];
      uint64_t ids[] = {sid, sid, sid, sid, sid + 1, sid ^ 1, 0, r->next_id + 1, rnd(), sid + 1024};
      h.call_id = ids[rnd() % 10];
      if (h.kind == HMS__FRAME_REQUEST) {
        h.fn_id = fns[rnd() % 7];
        h.flags = fl[rnd() % 7];
        if (h.call_id == sid) h.call_id = raw_new_id(r); /* a second stream or call, interleaved */
      }
      plen = (uint32_t)(rnd() % sizeof pl);
      for (uint32_t k = 0; k < plen; k++) pl[k] = (uint8_t)rnd();
      if (h.fn_id == FN_SLOW && plen >= 4) memcpy(pl, &(uint32_t){1 + (uint32_t)(rnd() % 20)}, 4);
      if (h.fn_id == FN_GEN && plen >= 4) memcpy(pl, &(uint32_t){1 + (uint32_t)(rnd() % 16)}, 4);
    }
    h.content_type = HMS_CT_RAW;
    h.payload_len = plen;
    h.len = (uint32_t)hms__frame_bytes(plen);
    switch (rnd() % 24) { /* now and then one frame lies */
      case 0: h.payload_len = h.len - 64 + 1 + (uint32_t)(rnd() % 64); break;
      case 1: h.len += 64 * (uint32_t)(1 + rnd() % 4); break;
      case 2: h.kind = (uint16_t)(7 + rnd() % 8); break;
      case 3: h.deadline_ns = rnd() & 1 ? 1 : (int64_t)(now_ns() + 5 * MS); break;
      default: break;
    }
    uint64_t contig = cap - (pos & (cap - 1));
    if (hms__frame_bytes(plen) > contig) {
      hms__frame_hdr_t pad = mkhdr((uint32_t)contig, HMS__FRAME_PAD, 0, 0, 0);
      raw_put(r, pos, &pad, NULL, 0);
      pos += contig;
    }
    raw_put(r, pos, &h, pl, plen);
    pos += hms__frame_bytes(plen);
    if (h.kind == HMS__FRAME_CANCEL && rnd() % 4) atomic_fetch_add(&r->reqc->cancels, 1);
    if (rnd() % 6 == 0) { /* publish part of it now: the handler may already be waiting for the rest */
      raw_publish(r, pos);
      raw_ring(r);
      if (rnd() & 1) usleep(50);
    }
  }
  if (rnd() % 8 == 0) atomic_store(&r->reqc->cancels, (uint32_t)rnd());
  r->head = pos;
  raw_publish(r, pos);
}

static void fuzz_mutate(raw_t *r) {
  uint64_t cap = r->cap;
  switch (rnd() % 13) {
    case 10:
    case 11:
    case 12:
      fuzz_stream_conversation(r);
      break;
    case 0: { /* a random request head */
      uint64_t v[] = {r->head + 64 * (rnd() % 80), r->head + rnd() % 5000, rnd(), r->head - 64 * (1 + rnd() % 4),
                      UINT64_MAX - rnd() % 128, r->head + cap, r->head + cap + 64};
      raw_publish(r, pick_u64(v, 7));
      break;
    }
    case 1:
    case 9: { /* one plausible frame with random fields, then a plausible or random head */
      uint32_t lens[] = {64, 128, (uint32_t)(64 * (1 + rnd() % 40)), (uint32_t)rnd(), (uint32_t)(rnd() % 8192),
                         (uint32_t)(cap - (r->head & (cap - 1)))};
      uint16_t kinds[] = {HMS__FRAME_REQUEST, HMS__FRAME_RESPONSE, HMS__FRAME_PAD, HMS__FRAME_CANCEL,
                          HMS__FRAME_CANCEL + 1, HMS__FRAME_CANCEL + 2, (uint16_t)rnd()}; /* + stream DATA/END */
      hms__frame_hdr_t h;
      for (size_t i = 0; i < sizeof h; i++) ((uint8_t *)&h)[i] = (uint8_t)rnd();
      h.len = lens[rnd() % 6];
      h.kind = kinds[rnd() % 7];
      uint32_t fns[] = {FN_ECHO, 0, FN_CSUM, FN_BIDI, FN_SLOW, FN_GEN, (uint32_t)rnd()};
      h.fn_id = fns[rnd() % 7];
      uint64_t ids[] = {h.call_id, raw_new_id(r), r->next_id, r->next_id + 1, 0}; /* random or plausible */
      h.call_id = ids[rnd() % 5];
      uint32_t pls[] = {0, h.len >= 64 ? h.len - 64 : 0, (uint32_t)(rnd() % 2048), (uint32_t)rnd()};
      h.payload_len = pls[rnd() % 4];
      int64_t dls[] = {0, (int64_t)rnd(), now_ns() + 1000 * MS, 1};
      h.deadline_ns = dls[rnd() % 4];
      h.flags = (uint16_t)(rnd() & 0x3f); /* one-way, stream, item, client-stream and unknown bits */
      raw_put(r, r->head, &h, NULL, 0);
      uint64_t heads[] = {r->head + ((h.len + 63ull) & ~63ull), r->head + h.len, r->head + 64, rnd()};
      raw_publish(r, heads[rnd() % 4]);
      break;
    }
    case 2: { /* random bytes anywhere in the request data */
      uint64_t off = rnd() % cap, n = 1 + rnd() % 64;
      if (off + n > cap) n = cap - off;
      for (uint64_t i = 0; i < n; i++) r->reqd[off + i] = (uint8_t)rnd();
      break;
    }
    case 3: { /* flip bits in the frame at the head and publish it */
      uint64_t off = r->head & (cap - 1);
      for (int k = 0; k < 1 + (int)(rnd() % 4); k++) r->reqd[off + rnd() % 64] ^= (uint8_t)(1u << (rnd() % 8));
      raw_publish(r, r->head + 64 * (1 + rnd() % 4));
      break;
    }
    case 4: { /* the response tail */
      uint64_t v[] = {rnd(), r->rread + 64 * (1 + rnd() % 8), r->rread + 1 + rnd() % 63, r->rread - 64, 0};
      atomic_store(&r->respc->tail, pick_u64(v, 5));
      break;
    }
    case 5: /* the other request-ring control words */
      switch (rnd() % 5) {
        case 0: atomic_store(&r->reqc->data_seq, (uint32_t)rnd()); break;
        case 1: atomic_store(&r->reqc->consumer_sleeping, (uint32_t)rnd()); break;
        case 2: atomic_store(&r->reqc->producer_waiting, (uint32_t)rnd()); break;
        case 3: atomic_store(&r->reqc->space_seq, (uint32_t)rnd()); break;
        default: atomic_store(&r->reqc->tail, rnd()); break;
      }
      break;
    case 6: /* the response-ring control words the server reads or writes */
      switch (rnd() % 4) {
        case 0: atomic_store(&r->respc->consumer_sleeping, (uint32_t)rnd()); break;
        case 1: atomic_store(&r->respc->producer_waiting, (uint32_t)rnd()); break;
        case 2: atomic_store(&r->respc->head, rnd()); break;
        default: atomic_store(&r->respc->data_seq, (uint32_t)rnd()); break;
      }
      break;
    case 7: { /* the connection header (sizes, magic) */
      uint64_t off = rnd() % HMS__REQ_CTL_OFFSET;
      r->map[off] = (uint8_t)rnd();
      break;
    }
    default: { /* response data */
      uint64_t off = rnd() % r->rcap;
      r->respd[off] = (uint8_t)rnd();
      break;
    }
  }
}

static void fuzz_target(int iters, uint64_t seed) {
  g_test = "fuzz: random garbage from a client";
  tstats_t s0;
  memcpy(&s0, S, sizeof s0); /* a racy snapshot is fine for a report */
  rng_state = seed;
  printf("  part 1 fuzz: seed 0x%016llx, %d rounds (HMS_EVIL_SEED / HMS_EVIL_ITERS to change)\n",
         (unsigned long long)seed, iters);
  int lost = 0, closed_rounds = 0;
  int64_t t0 = now_ns();
  for (int i = 0; i < iters; i++) {
    raw_t r;
    if (raw_connect(&r, RAW_RING, rnd() & 1) != 0) {
      CHECK(0, "round %d: the server no longer completes handshakes", i);
      target_restart("no handshake while fuzzing");
      if (++lost >= 3) {
        CHECK(0, "fuzzing abandoned after %d restarts", lost);
        return;
      }
      continue;
    }
    if (rnd() % 3 == 0) CHECK(raw_echo(&r, (uint32_t)(rnd() % 900), rnd() & 1), "round %d: valid echo", i);
    int muts = 1 + (int)(rnd() % 6);
    for (int m = 0; m < muts; m++) fuzz_mutate(&r);
    raw_ring(&r);
    /* Give the server the time to look at it: until it hangs up, or consumed everything published. */
    int64_t end = now_ns() + 3 * MS;
    for (;;) {
      struct pollfd pf = {.fd = r.sock, .events = POLLRDHUP};
      if (poll(&pf, 1, 0) > 0) {
        closed_rounds++;
        break;
      }
      if (atomic_load(&r.reqc->tail) == atomic_load(&r.reqc->head) || now_ns() > end) break;
      usleep(50);
    }
    raw_close(&r);
    if (i % 64 == 63) check_target();
  }
  check_target();
  printf("  part 1 fuzz: %d rounds in %.2f s, %d hung up on by the server, %d restarts\n", iters,
         (now_ns() - t0) / 1e9, closed_rounds, lost);
  if (verbose) {
    printf("    handlers reached: csum %u (%u items), bidi %u (%u items), gen %u (%llu items), slow %u (%u refused)\n",
           S->csum_in - s0.csum_in, S->csum_items - s0.csum_items, S->bidi_in - s0.bidi_in,
           S->bidi_items - s0.bidi_items, S->gen_in - s0.gen_in, (unsigned long long)(S->gen_items - s0.gen_items),
           S->slow_in - s0.slow_in, S->defer_refused - s0.defer_refused);
    printf("    hms_call_recv errors:");
    for (int i = 0; i < NSTATUS; i++)
      if (S->recv_err[i] != s0.recv_err[i]) printf(" %s=%u", hms_status_str(i), S->recv_err[i] - s0.recv_err[i]);
    printf("; hms_call_send errors:");
    for (int i = 0; i < NSTATUS; i++)
      if (S->send_err[i] != s0.send_err[i]) printf(" %s=%u", hms_status_str(i), S->send_err[i] - s0.send_err[i]);
    printf("; deferred replies OK %u, CANCELLED %u\n", S->def_ok - s0.def_ok, S->def_cancelled - s0.def_cancelled);
  }
}

static void part1(uint64_t seed, int iters) {
  printf("part 1: evil clients against a real server\n");
  if (!target_start()) {
    fprintf(stderr, "cannot start the target server\n");
    exit(2);
  }
  g_test = "setup";
  CHECK(good_echo(), "the good client works before any attack");
  int64_t t0 = now_ns();
  for (size_t i = 0; i < sizeof ring_attacks / sizeof ring_attacks[0]; i++) run_ring_attack(&ring_attacks[i]);
  printf("  %zu ring attacks (%d left a DATA_LOSS goodbye frame) in %.2f s\n",
         sizeof ring_attacks / sizeof ring_attacks[0], goodbye_frames, (now_ns() - t0) / 1e9);
  t0 = now_ns();
  test_handshake_attacks();
  test_unknown_function();
  test_stalled_consumer();
  printf("  handshake and misbehaviour tests in %.2f s\n", (now_ns() - t0) / 1e9);
  test_stream_attacks();
  fuzz_target(iters, seed);

  /* Every raw connection is closed now: the server must be back to its initial descriptors (a leaked
   * connection, doorbell or client eventfd would show here). */
  g_test = "server descriptors after the attacks";
  int fds = -1;
  for (int i = 0; i < 100; i++) {
    fds = count_fds(T.pid);
    if (fds == T.srv_fds) break;
    good_echo(); /* events make the server drop hung-up connections */
    usleep(10000);
  }
  CHECK(fds == T.srv_fds, "server has %d descriptors, %d before the attacks", fds, T.srv_fds);

  g_test = "server shutdown";
  hms_client_close(T.good);
  T.good = NULL;
  bool alive = target_alive();
  CHECK(alive, "server died");
  if (alive) {
    kill(T.pid, SIGTERM);
    int st = 0;
    int64_t end = now_ns() + 5000 * MS;
    pid_t w = 0;
    while ((w = waitpid(T.pid, &st, WNOHANG)) == 0 && now_ns() < end) usleep(5000);
    if (w == 0) {
      CHECK(0, "server did not stop on SIGTERM within 5 s");
      kill(T.pid, SIGKILL);
      waitpid(T.pid, &st, 0);
    } else {
      /* Exit 0 also means ASan/UBSan/LSan found nothing in the server process. */
      CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "server exit status %d (signal %d)",
            WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    }
    T.reaped = true;
  }
  if (T.restarts) printf("  the target server had to be restarted %d time(s)\n", T.restarts);
}

/* ================================================================ part 2: evil server, real client */
#define EVIL_SVC "evil.server"
#define EVIL_VER "1.0.0"
#define EVIL_CAP 4096ull

enum {
  EV_QUIT = 0,
  /* handshake attacks */
  EV_HS_BAD_MAGIC,
  EV_HS_SHORT_WELCOME,
  EV_HS_ERR_NO_NUL,
  EV_HS_ERR_BAD_STATUS,
  EV_HS_WRONG_ABI,
  EV_HS_NO_FDS,
  EV_HS_ONE_FD,
  EV_HS_THREE_FDS,
  EV_HS_MANY_FDS,
  EV_HS_UNSEALED,
  EV_HS_SIZE_SMALLER,
  EV_HS_NOT_MEMFD,
  EV_HS_CAP_NOT_POW2,
  EV_HS_CAP_TOO_SMALL,
  EV_HS_TOTAL_LIE,
  EV_HS_HDR_DISAGREES,
  EV_HS_FN_COUNT_HUGE,
  EV_HS_TABLE_HUGE,
  EV_HS_FN_NAME_TOO_LONG,
  EV_HS_FN_NAME_ZERO,
  EV_HS_FN_PAST_TABLE,
  EV_HS_FN_TRUNCATED,
  EV_HS_FN_BAD_CHARS,
  EV_HS_FN_NAME_SLASH,
  EV_HS_CLOSE,
  EV_HS_SILENT,
  /* after a valid handshake */
  EV_R_VALID,
  EV_R_LEN_UNALIGNED,
  EV_R_LEN_ZERO,
  EV_R_LEN_OVER_AVAIL,
  EV_R_LEN_OVER_END,
  EV_R_LEN_OVER_MAX,
  EV_R_PAYLOAD_OVER,
  EV_R_PAYLOAD_HUGE,
  EV_R_HEAD_BEYOND,
  EV_R_HEAD_UNALIGNED,
  EV_R_HEAD_BACKWARDS,
  EV_R_HEAD_HUGE,
  EV_R_KIND_REQUEST,
  EV_R_KIND_UNKNOWN,
  EV_R_KIND_CANCEL,
  EV_R_PAD_SHORT,
  EV_R_ERR_MLEN,
  EV_R_ERR_MLEN_WRAP,
  EV_R_ERR_SHORT,
  EV_R_STATUS_12345,
  EV_R_STATUS_NEG,
  EV_R_UNKNOWN_ID,
  EV_R_CALLID0_BYE,
  EV_R_REQ_TAIL,
  EV_R_SILENT,
  EV_R_CLOSE,
  EV_R_CHATTER,
  /* stream frames where they do not belong */
  EV_S_ITEM_PLAIN,      /* plain call: an ITEM frame with the reply, a final frame, one more item */
  EV_S_ITEM_ERR_PLAIN,  /* plain call: an ITEM-flagged frame with an error status */
  EV_S_FINAL_UNOPENED,  /* plain call: finals and items for call ids nobody opened, then the reply */
  EV_S_AFTER_FINAL,     /* stream: items, the final frame, more items and a second final */
  EV_S_ERR_FIRST,       /* stream: an ITEM-flagged error first, then items and an OK final */
  EV_S_FOREIGN,         /* stream: finals and items for other ids between the stream's own */
  EV_S_CSTREAM_EARLY,   /* client stream: the reply before the client sent its items */
  EV_R_FUZZ,
};

typedef struct {
  int32_t mode;
  uint32_t nvalid; /* valid replies to serve before the attack */
  uint64_t arg;    /* fuzz seed */
} evil_cmd_t;

typedef struct {
  int sock, bell, cmd_fd;
  uint8_t *map;
  size_t map_len;
  uint64_t cap;
  hms__ring_ctl_t *reqc, *respc;
  uint8_t *reqd, *respd;
  uint64_t req_pos, resp_pos;
} evil_t;

typedef struct {
  uint64_t id;
  uint32_t fn_id, plen;
  uint8_t payload[1024];
} evil_req_t;

static int evil_errors = 0;
#define EVIL_ERR(...)                          \
  do {                                         \
    fprintf(stderr, "evil server: " __VA_ARGS__); \
    fprintf(stderr, "\n");                     \
    evil_errors++;                             \
  } while (0)

static void evil_reset(evil_t *ev) {
  if (ev->sock >= 0) close(ev->sock);
  if (ev->bell >= 0) close(ev->bell);
  if (ev->map) munmap(ev->map, ev->map_len);
  int cmd = ev->cmd_fd;
  memset(ev, 0, sizeof *ev);
  ev->sock = ev->bell = -1;
  ev->cmd_fd = cmd;
}

/* The function table for {"f"}: {u32 id, u32 flags, u32 name_len, name padded to 4}. */
static size_t table_one(uint8_t *t, const char *name, uint32_t name_len, uint32_t pad_to) {
  uint32_t rec[3] = {1, 0, name_len};
  memcpy(t, rec, 12);
  size_t n = strlen(name);
  memcpy(t + 12, name, n);
  size_t padded = (pad_to + 3) & ~(size_t)3;
  if (padded > n) memset(t + 12 + n, 0, padded - n);
  return 12 + padded;
}

/* Creates the connection memory (sealed memfd) with a correct header and the given function table,
 * and fills the matching welcome. Returns the memfd; the mapping stays in ev. */
static int evil_layout(evil_t *ev, uint64_t cap, const uint8_t *table, uint64_t tbytes, uint32_t fcount,
                       hms__welcome_t *w) {
  uint64_t total = hms__conn_total_bytes(cap, cap, tbytes);
  void *map = NULL;
  char why[160];
  int memfd = hms__memfd_create_sealed(total, &map, why, sizeof why);
  if (memfd < 0) {
    EVIL_ERR("memfd: %s", why);
    return -1;
  }
  ev->map = map;
  ev->map_len = total;
  ev->cap = cap;
  hms__conn_hdr_t *h = map;
  h->magic = HMS__CONN_MAGIC;
  h->proto = HMS__PROTO_VERSION;
  h->header_bytes = HMS__CONN_HEADER_BYTES;
  h->req_cap = cap;
  h->resp_cap = cap;
  h->table_bytes = tbytes;
  h->total_bytes = total;
  ev->reqc = (hms__ring_ctl_t *)(ev->map + HMS__REQ_CTL_OFFSET);
  ev->respc = (hms__ring_ctl_t *)(ev->map + HMS__RESP_CTL_OFFSET);
  ev->reqd = ev->map + HMS__CONN_HEADER_BYTES;
  ev->respd = ev->map + HMS__CONN_HEADER_BYTES + cap;
  if (tbytes && table) memcpy(ev->map + HMS__CONN_HEADER_BYTES + 2 * cap, table, tbytes);
  /* Ask the client to ring our eventfd on every request, so we need not poll the ring. */
  atomic_store(&ev->reqc->consumer_sleeping, 1);
  memset(w, 0, sizeof *w);
  w->magic = HMS__WELCOME_MAGIC;
  w->abi = HMS_FFI_ABI_VERSION;
  w->proto = HMS__PROTO_VERSION;
  w->status = HMS_OK;
  w->req_cap = cap;
  w->resp_cap = cap;
  w->table_bytes = tbytes;
  w->total_bytes = total;
  w->function_count = fcount;
  ev->bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  return memfd;
}

/* Sends a welcome with {memfd, bell} plus `extra` more descriptors. */
static bool evil_send_welcome(evil_t *ev, const hms__welcome_t *w, size_t wlen, int memfd, int extra) {
  int fds[16];
  int n = 0;
  fds[n++] = memfd;
  fds[n++] = ev->bell;
  int made[16], nmade = 0;
  for (int i = 0; i < extra && n < 16; i++) {
    made[nmade] = eventfd(0, EFD_CLOEXEC);
    fds[n++] = made[nmade++];
  }
  bool ok = send_msg_fds(ev->sock, w, wlen, fds, n) == (ssize_t)wlen;
  close_fds(made, nmade);
  return ok;
}

static bool evil_valid_handshake(evil_t *ev, int extra_fds) {
  uint8_t t[64];
  size_t tb = table_one(t, "f", 1, 1);
  hms__welcome_t w;
  int memfd = evil_layout(ev, EVIL_CAP, t, tb, 1, &w);
  if (memfd < 0) return false;
  bool ok = evil_send_welcome(ev, &w, sizeof w, memfd, extra_fds);
  close(memfd);
  return ok;
}

static void evil_wake(evil_t *ev) {
  atomic_fetch_add_explicit(&ev->respc->data_seq, 1, memory_order_release);
  hms__futex_wake(&ev->respc->data_seq, INT_MAX, 1);
}
static void evil_publish(evil_t *ev, uint64_t head) {
  atomic_store_explicit(&ev->respc->head, head, memory_order_release);
  evil_wake(ev);
}
static void evil_put(evil_t *ev, uint64_t at, const hms__frame_hdr_t *h, const void *p, size_t plen) {
  uint64_t off = at & (ev->cap - 1);
  memcpy(ev->respd + off, h, sizeof *h);
  if (plen) memcpy(ev->respd + off + sizeof *h, p, plen);
}
/* Appends a frame like a correct server (PAD to the end first when it would not fit). */
static void evil_append(evil_t *ev, const hms__frame_hdr_t *h, const void *p, size_t plen) {
  uint64_t contig = ev->cap - (ev->resp_pos & (ev->cap - 1));
  if (h->len > contig) {
    hms__frame_hdr_t pad = mkhdr((uint32_t)contig, HMS__FRAME_PAD, 0, 0, 0);
    evil_put(ev, ev->resp_pos, &pad, NULL, 0);
    ev->resp_pos += contig;
  }
  evil_put(ev, ev->resp_pos, h, p, plen);
  ev->resp_pos += h->len;
}
static hms__frame_hdr_t resp_hdr(const evil_req_t *rq, uint32_t plen, int32_t status) {
  hms__frame_hdr_t h = mkhdr((uint32_t)hms__frame_bytes(plen), HMS__FRAME_RESPONSE, rq->fn_id, rq->id, plen);
  h.status = status;
  return h;
}
static void evil_reply_valid(evil_t *ev, const evil_req_t *rq) {
  hms__frame_hdr_t h = resp_hdr(rq, rq->plen, HMS_OK);
  evil_append(ev, &h, rq->payload, rq->plen);
  evil_publish(ev, ev->resp_pos);
}
/* Appends (does not publish) one response frame for any id: OK frames carry `text`, errors the
 * {u32 length, message} form. */
static void evil_frame(evil_t *ev, uint64_t id, uint32_t fn, uint16_t flags, int32_t status, const char *text) {
  uint8_t p[160];
  uint32_t m = (uint32_t)strlen(text), n;
  if (status != HMS_OK) {
    memcpy(p, &m, 4);
    memcpy(p + 4, text, m);
    n = 4 + m;
  } else {
    memcpy(p, text, m);
    n = m;
  }
  hms__frame_hdr_t h = mkhdr((uint32_t)hms__frame_bytes(n), HMS__FRAME_RESPONSE, fn, id, n);
  h.flags = flags;
  h.status = status;
  if (n == 0 || status != HMS_OK) h.content_type = HMS_CT_NONE; /* like the real server's final frames (an OK
                                                                  * final with a content type is a reply item) */
  evil_append(ev, &h, p, n);
}
static void evil_reply_error(evil_t *ev, const evil_req_t *rq, int32_t status, const char *msg) {
  uint8_t p[256];
  uint32_t m = (uint32_t)strlen(msg);
  memcpy(p, &m, 4);
  memcpy(p + 4, msg, m);
  hms__frame_hdr_t h = resp_hdr(rq, 4 + m, status);
  evil_append(ev, &h, p, 4 + m);
  evil_publish(ev, ev->resp_pos);
}

/* Waits for the client's next request (a well-formed one: the real client is not under test for what it
 * writes here, but a bad frame would be a client bug worth reporting). Gives up when the parent sends
 * its next command, when the client hangs up, or after 3 s. */
static bool evil_wait_request(evil_t *ev, evil_req_t *out) {
  int64_t end = now_ns() + 3000 * MS;
  for (;;) {
    uint64_t head = atomic_load_explicit(&ev->reqc->head, memory_order_acquire);
    if (head != ev->req_pos) {
      if (head < ev->req_pos || head - ev->req_pos > ev->cap || (head & 63)) {
        EVIL_ERR("client published a bad request head %llu", (unsigned long long)head);
        return false;
      }
      uint64_t off = ev->req_pos & (ev->cap - 1);
      hms__frame_hdr_t h;
      memcpy(&h, ev->reqd + off, sizeof h);
      if (h.len < 64 || (h.len & 63) || h.len > head - ev->req_pos || h.len > ev->cap - off) {
        EVIL_ERR("client wrote a bad request frame (len %u)", h.len);
        return false;
      }
      ev->req_pos += h.len;
      atomic_store_explicit(&ev->reqc->tail, ev->req_pos, memory_order_release);
      if (h.kind == HMS__FRAME_PAD || h.kind == HMS__FRAME_CANCEL || h.kind == HMS__FRAME_DATA ||
          h.kind == HMS__FRAME_END)
        continue; /* cancels and client-stream items: not answered by this server */
      if (h.kind != HMS__FRAME_REQUEST || h.payload_len > h.len - 64 || h.payload_len > sizeof out->payload) {
        EVIL_ERR("client wrote an unexpected request frame (kind %u, payload %u)", h.kind, h.payload_len);
        return false;
      }
      out->id = h.call_id;
      out->fn_id = h.fn_id;
      out->plen = h.payload_len;
      memcpy(out->payload, ev->reqd + off + 64, h.payload_len);
      return true;
    }
    if (now_ns() > end) return false;
    struct pollfd p[3] = {{.fd = ev->bell, .events = POLLIN},
                          {.fd = ev->cmd_fd, .events = POLLIN},
                          {.fd = ev->sock, .events = POLLRDHUP}};
    int pr = poll(p, 3, 10);
    if (pr > 0) {
      if (p[1].revents || p[2].revents) return false; /* the parent moved on / the client left */
      uint64_t v;
      while (read(ev->bell, &v, sizeof v) > 0) {
      }
    }
  }
}

/* Random garbage into the response side (part-2 fuzzer). */
static void evil_fuzz(evil_t *ev, const evil_req_t *rq) {
  int frames = 1 + (int)(rnd() % 3);
  uint64_t pos = ev->resp_pos;
  for (int i = 0; i < frames; i++) {
    hms__frame_hdr_t h;
    for (size_t k = 0; k < sizeof h; k++) ((uint8_t *)&h)[k] = (uint8_t)rnd();
    uint32_t lens[] = {64, 128, (uint32_t)(64 * (1 + rnd() % 40)), (uint32_t)rnd(), (uint32_t)(rnd() % 8192)};
    h.len = lens[rnd() % 5];
    uint16_t kinds[] = {HMS__FRAME_RESPONSE, HMS__FRAME_RESPONSE, HMS__FRAME_PAD, HMS__FRAME_REQUEST, (uint16_t)rnd()};
    h.kind = kinds[rnd() % 5];
    uint64_t ids[] = {rq->id, rq->id, 0, rnd(), rq->id ^ (1ull << 20)};
    h.call_id = ids[rnd() % 5];
    int32_t sts[] = {0, 0, HMS_INVALID_ARGUMENT, (int32_t)rnd(), -1};
    h.status = sts[rnd() % 5];
    uint32_t pls[] = {0, h.len >= 64 ? h.len - 64 : 0, (uint32_t)(rnd() % 2048), (uint32_t)rnd()};
    h.payload_len = pls[rnd() % 4];
    uint16_t fls[] = {0, HMS__FRAME_F_ITEM, HMS__FRAME_F_ITEM, h.flags}; /* stream items where none belong */
    h.flags = fls[rnd() % 4];
    evil_put(ev, pos, &h, NULL, 0);
    for (int k = 0; k < (int)(rnd() % 4); k++) ev->respd[(pos + 64 + rnd() % 256) & (ev->cap - 1)] = (uint8_t)rnd();
    pos += (h.len + 63ull) & ~63ull;
  }
  if (rnd() % 4 == 0) atomic_store(&ev->reqc->tail, rnd());
  if (rnd() % 4 == 0) ev->map[rnd() % 1024] = (uint8_t)rnd(); /* the header, after the client validated it */
  uint64_t heads[] = {pos, ev->resp_pos + 64, rnd(), ev->resp_pos + ev->cap + 64, pos + 1 + rnd() % 63};
  evil_publish(ev, heads[rnd() % 5]);
}

static void evil_handshake_attack(evil_t *ev, int mode) {
  uint8_t t[512];
  size_t tb = table_one(t, "f", 1, 1);
  uint32_t fcount = 1;
  hms__welcome_t w;
  int memfd;
  switch (mode) {
    case EV_HS_CLOSE:
      close(ev->sock);
      ev->sock = -1;
      return;
    case EV_HS_SILENT:
      return;
    case EV_HS_ERR_NO_NUL:
    case EV_HS_ERR_BAD_STATUS:
      memfd = evil_layout(ev, EVIL_CAP, t, tb, fcount, &w);
      if (memfd < 0) return;
      w.status = mode == EV_HS_ERR_NO_NUL ? HMS_PERMISSION_DENIED : 999;
      /* No NUL in the message, nor in any field after it: a client that strlen()s the message without
       * terminating it first runs off the end of its welcome buffer (ASan reports it). */
      memset(w.message, 'Z', sizeof w.message);
      memset((char *)&w + offsetof(hms__welcome_t, req_cap), 0x5a, sizeof w - offsetof(hms__welcome_t, req_cap));
      evil_send_welcome(ev, &w, sizeof w, memfd, 0); /* with descriptors the client must close */
      close(memfd);
      return;
    case EV_HS_NO_FDS:
      memfd = evil_layout(ev, EVIL_CAP, t, tb, fcount, &w);
      if (memfd < 0) return;
      send_msg_fds(ev->sock, &w, sizeof w, NULL, 0);
      close(memfd);
      return;
    case EV_HS_ONE_FD:
      memfd = evil_layout(ev, EVIL_CAP, t, tb, fcount, &w);
      if (memfd < 0) return;
      send_msg_fds(ev->sock, &w, sizeof w, &memfd, 1);
      close(memfd);
      return;
    case EV_HS_MANY_FDS:
      memfd = evil_layout(ev, EVIL_CAP, t, tb, fcount, &w);
      if (memfd < 0) return;
      evil_send_welcome(ev, &w, sizeof w, memfd, 12); /* 14 in all: more than the client's control buffer */
      close(memfd);
      return;
    case EV_HS_UNSEALED: {
      memfd = evil_layout(ev, EVIL_CAP, t, tb, fcount, &w); /* a correct layout in an unsealed memfd */
      if (memfd < 0) return;
      int fd = memfd_create("evil-unsealed", MFD_CLOEXEC);
      if (fd < 0 || ftruncate(fd, (off_t)ev->map_len) != 0 || pwrite(fd, ev->map, ev->map_len, 0) != (ssize_t)ev->map_len)
        EVIL_ERR("unsealed memfd: %s", strerror(errno));
      evil_send_welcome(ev, &w, sizeof w, fd, 0);
      close(fd);
      close(memfd);
      return;
    }
    case EV_HS_SIZE_SMALLER: { /* sealed, but one page short of total_bytes: reads there would SIGBUS */
      memfd = evil_layout(ev, EVIL_CAP, t, tb, fcount, &w);
      if (memfd < 0) return;
      void *m2;
      char why[160];
      int fd = hms__memfd_create_sealed(ev->map_len - 4096, &m2, why, sizeof why);
      if (fd < 0) {
        EVIL_ERR("%s", why);
        close(memfd);
        return;
      }
      memcpy(m2, ev->map, ev->map_len - 4096);
      munmap(m2, ev->map_len - 4096);
      evil_send_welcome(ev, &w, sizeof w, fd, 0);
      close(fd);
      close(memfd);
      return;
    }
    case EV_HS_NOT_MEMFD: { /* a pipe where the memfd should be */
      memfd = evil_layout(ev, EVIL_CAP, t, tb, fcount, &w);
      if (memfd < 0) return;
      int p[2];
      if (pipe2(p, O_CLOEXEC) != 0) {
        close(memfd);
        return;
      }
      evil_send_welcome(ev, &w, sizeof w, p[0], 0);
      close(p[0]);
      close(p[1]);
      close(memfd);
      return;
    }
    default:
      break;
  }
  /* The remaining modes send a (mostly) correct memfd with a lie in the welcome, header or table. */
  switch (mode) {
    case EV_HS_FN_NAME_TOO_LONG: /* 200 > HMS_NAME_MAX, and the table really has 200 bytes */
      memset(t, 'a', sizeof t);
      tb = table_one(t, "a", 200, 200);
      memset(t + 12, 'a', 200);
      break;
    case EV_HS_FN_NAME_ZERO:
      tb = table_one(t, "", 0, 4);
      break;
    case EV_HS_FN_PAST_TABLE: /* name_len 100 but only 4 name bytes in the table */
      tb = table_one(t, "f", 100, 1);
      break;
    case EV_HS_FN_TRUNCATED: /* two functions announced, one record present */
      fcount = 2;
      break;
    case EV_HS_FN_BAD_CHARS:
      tb = table_one(t, "bad name!", 9, 9);
      break;
    case EV_HS_FN_NAME_SLASH:
      tb = table_one(t, "../../etc", 9, 9);
      break;
    default:
      break;
  }
  uint64_t cap = mode == EV_HS_CAP_NOT_POW2 ? 6000 : mode == EV_HS_CAP_TOO_SMALL ? 1024 : EVIL_CAP;
  memfd = evil_layout(ev, cap, t, tb, fcount, &w);
  if (memfd < 0) return;
  hms__conn_hdr_t *h = (hms__conn_hdr_t *)ev->map;
  size_t wlen = sizeof w;
  switch (mode) {
    case EV_HS_BAD_MAGIC:
      w.magic ^= 0xff;
      break;
    case EV_HS_SHORT_WELCOME:
      wlen = sizeof w / 2;
      break;
    case EV_HS_WRONG_ABI:
      w.abi = 99;
      break;
    case EV_HS_TOTAL_LIE: /* total_bytes that does not follow from the sizes (the memfd matches it) */
      w.total_bytes += 4096;
      h->total_bytes = w.total_bytes;
      break;
    case EV_HS_HDR_DISAGREES:
      h->magic = 0x4c495645; /* "EVIL" */
      break;
    case EV_HS_FN_COUNT_HUGE:
      w.function_count = HMS_MAX_FUNCTIONS + 1;
      break;
    case EV_HS_TABLE_HUGE: /* a 1 GiB table: announced, not mapped */
      w.table_bytes = 1ull << 30;
      w.total_bytes = hms__conn_total_bytes(w.req_cap, w.resp_cap, w.table_bytes);
      break;
    default:
      break;
  }
  evil_send_welcome(ev, &w, wlen, memfd, mode == EV_HS_THREE_FDS ? 1 : 0);
  close(memfd);
}

static void evil_attack(evil_t *ev, const evil_cmd_t *cmd) {
  int mode = cmd->mode;
  if (mode < EV_R_VALID && mode != EV_HS_THREE_FDS) {
    evil_handshake_attack(ev, mode);
    return;
  }
  if (!evil_valid_handshake(ev, mode == EV_HS_THREE_FDS ? 1 : 0)) {
    EVIL_ERR("could not send a welcome");
    return;
  }
  if (mode == EV_R_REQ_TAIL) { /* claims to have consumed far more than the client ever published */
    atomic_store(&ev->reqc->tail, 1ull << 40);
    return;
  }
  evil_req_t rq;
  for (uint32_t i = 0; i < cmd->nvalid; i++) {
    if (!evil_wait_request(ev, &rq)) return;
    evil_reply_valid(ev, &rq);
  }
  if (!evil_wait_request(ev, &rq)) return;
  hms__frame_hdr_t h = resp_hdr(&rq, 0, HMS_OK);
  uint64_t at = ev->resp_pos;
  bool follow_up = false; /* serve one more valid reply: the connection must have survived */
  switch (mode) {
    case EV_HS_THREE_FDS:
    case EV_R_VALID:
      evil_reply_valid(ev, &rq);
      follow_up = true;
      break;
    case EV_R_LEN_UNALIGNED:
      h.len = 100;
      evil_put(ev, at, &h, NULL, 0);
      evil_publish(ev, at + 128);
      break;
    case EV_R_LEN_ZERO:
      h.len = 0;
      evil_put(ev, at, &h, NULL, 0);
      evil_publish(ev, at + 64);
      break;
    case EV_R_LEN_OVER_AVAIL:
      h.len = 256;
      evil_put(ev, at, &h, NULL, 0);
      evil_publish(ev, at + 128);
      break;
    case EV_R_LEN_OVER_END: { /* after three 1 KiB replies: 1024 bytes to the end, frame claims 1088 */
      uint64_t contig = ev->cap - (at & (ev->cap - 1));
      h.len = (uint32_t)(contig + 64);
      evil_put(ev, at, &h, NULL, 0);
      evil_publish(ev, at + h.len);
      break;
    }
    case EV_R_LEN_OVER_MAX:
      h.len = 2048;
      evil_put(ev, at, &h, NULL, 0);
      evil_publish(ev, at + 2048);
      break;
    case EV_R_PAYLOAD_OVER:
      h.len = 128;
      h.payload_len = 65;
      evil_put(ev, at, &h, NULL, 0);
      evil_publish(ev, at + 128);
      break;
    case EV_R_PAYLOAD_HUGE:
      h.payload_len = UINT32_MAX;
      evil_put(ev, at, &h, NULL, 0);
      evil_publish(ev, at + 64);
      break;
    case EV_R_HEAD_BEYOND:
      evil_put(ev, at, &h, NULL, 0);
      evil_publish(ev, at + ev->cap + 64);
      break;
    case EV_R_HEAD_UNALIGNED:
      evil_put(ev, at, &h, NULL, 0);
      evil_publish(ev, at + 100);
      break;
    case EV_R_HEAD_BACKWARDS:
      evil_publish(ev, at - 64);
      break;
    case EV_R_HEAD_HUGE:
      evil_put(ev, at, &h, NULL, 0);
      evil_publish(ev, UINT64_MAX & ~(uint64_t)63);
      break;
    case EV_R_KIND_REQUEST:
    case EV_R_KIND_UNKNOWN:
    case EV_R_KIND_CANCEL:
      h.kind = mode == EV_R_KIND_REQUEST ? HMS__FRAME_REQUEST : mode == EV_R_KIND_CANCEL ? HMS__FRAME_CANCEL : 99;
      evil_put(ev, at, &h, NULL, 0);
      evil_publish(ev, at + 64);
      break;
    case EV_R_PAD_SHORT:
      h = mkhdr(64, HMS__FRAME_PAD, 0, 0, 0);
      evil_put(ev, at, &h, NULL, 0);
      evil_publish(ev, at + 64);
      break;
    case EV_R_ERR_MLEN:
    case EV_R_ERR_MLEN_WRAP:
    case EV_R_ERR_SHORT: { /* error replies whose message length lies */
      uint8_t p[8];
      uint32_t mlen = mode == EV_R_ERR_MLEN ? 1000 : 0xFFFFFFFDu;
      memcpy(p, &mlen, 4);
      memcpy(p + 4, "evil", 4);
      h = resp_hdr(&rq, mode == EV_R_ERR_SHORT ? 2 : 8, HMS_INVALID_ARGUMENT);
      evil_append(ev, &h, p, h.payload_len);
      evil_publish(ev, ev->resp_pos);
      follow_up = true;
      break;
    }
    case EV_R_STATUS_12345:
    case EV_R_STATUS_NEG:
      evil_reply_error(ev, &rq, mode == EV_R_STATUS_12345 ? 12345 : -3, "evil status");
      follow_up = true;
      break;
    case EV_R_UNKNOWN_ID: { /* replies for calls nobody waits for, then the right one */
      hms__frame_hdr_t a = resp_hdr(&rq, 5, HMS_OK);
      a.call_id = rq.id + (1000ull << 10); /* same slot, other sequence number */
      evil_append(ev, &a, "wrong", 5);
      a.call_id = rq.id ^ 1; /* another slot */
      evil_append(ev, &a, "wrong", 5);
      a.call_id = 0; /* "nobody", with an OK status: must be dropped, not treated as goodbye */
      evil_append(ev, &a, "zero!", 5);
      hms__frame_hdr_t b = resp_hdr(&rq, rq.plen, HMS_OK);
      evil_append(ev, &b, rq.payload, rq.plen);
      evil_publish(ev, ev->resp_pos);
      follow_up = true;
      break;
    }
    case EV_R_CALLID0_BYE: {
      evil_req_t none = rq;
      none.id = 0;
      evil_reply_error(ev, &none, HMS_DATA_LOSS, "evil server drops you");
      break;
    }
    case EV_R_SILENT:
      break;
    case EV_R_CLOSE:
      close(ev->sock);
      ev->sock = -1;
      break;
    case EV_R_CHATTER: {
      ssize_t wr = send(ev->sock, "evil", 4, MSG_NOSIGNAL);
      (void)wr;
      break;
    }
    case EV_S_ITEM_PLAIN: {
      hms__frame_hdr_t a = resp_hdr(&rq, rq.plen, HMS_OK);
      a.flags = HMS__FRAME_F_ITEM;
      evil_append(ev, &a, rq.payload, rq.plen);
      evil_frame(ev, rq.id, rq.fn_id, 0, HMS_OK, "");
      evil_append(ev, &a, rq.payload, rq.plen);
      evil_publish(ev, ev->resp_pos);
      follow_up = true;
      break;
    }
    case EV_S_ITEM_ERR_PLAIN:
      evil_frame(ev, rq.id, rq.fn_id, HMS__FRAME_F_ITEM, HMS_NOT_FOUND, "evil item error");
      evil_frame(ev, rq.id, rq.fn_id, HMS__FRAME_F_ITEM, HMS_OK, "more");
      evil_publish(ev, ev->resp_pos);
      follow_up = true;
      break;
    case EV_S_FINAL_UNOPENED: { /* the next ids the client will use for this slot, a neighbour, 0 */
      uint64_t ids[] = {rq.id + (1ull << 10), rq.id ^ 1, rq.id + (2ull << 10), 0};
      for (int i = 0; i < 4; i++) {
        evil_frame(ev, ids[i], rq.fn_id, HMS__FRAME_F_ITEM, HMS_OK, "ghost item");
        evil_frame(ev, ids[i], rq.fn_id, 0, i ? HMS_OK : HMS_ABORTED, "ghost final");
        if (i == 3) break; /* call_id 0 with an error is the goodbye: only OK frames for "nobody" */
      }
      evil_reply_valid(ev, &rq);
      follow_up = true;
      break;
    }
    case EV_S_AFTER_FINAL:
      evil_frame(ev, rq.id, rq.fn_id, HMS__FRAME_F_ITEM, HMS_OK, "a");
      evil_frame(ev, rq.id, rq.fn_id, HMS__FRAME_F_ITEM, HMS_OK, "b");
      evil_frame(ev, rq.id, rq.fn_id, 0, HMS_OK, "");
      evil_frame(ev, rq.id, rq.fn_id, HMS__FRAME_F_ITEM, HMS_OK, "c");
      evil_frame(ev, rq.id, rq.fn_id, HMS__FRAME_F_ITEM, HMS_OK, "d");
      evil_frame(ev, rq.id, rq.fn_id, 0, HMS_NOT_FOUND, "late final");
      evil_frame(ev, rq.id, rq.fn_id, HMS__FRAME_F_ITEM, HMS_OK, "e");
      evil_publish(ev, ev->resp_pos);
      follow_up = true;
      break;
    case EV_S_ERR_FIRST:
      evil_frame(ev, rq.id, rq.fn_id, HMS__FRAME_F_ITEM, HMS_NOT_FOUND, "evil item error");
      evil_frame(ev, rq.id, rq.fn_id, HMS__FRAME_F_ITEM, HMS_OK, "x");
      evil_frame(ev, rq.id, rq.fn_id, 0, HMS_OK, "");
      evil_publish(ev, ev->resp_pos);
      follow_up = true;
      break;
    case EV_S_FOREIGN:
      evil_frame(ev, rq.id ^ 1, rq.fn_id, 0, HMS_OK, "");
      evil_frame(ev, rq.id + (1ull << 10), rq.fn_id, HMS__FRAME_F_ITEM, HMS_OK, "ghost");
      evil_frame(ev, rq.id + (1ull << 10), rq.fn_id, 0, HMS_INTERNAL, "ghost final");
      evil_frame(ev, 0, rq.fn_id, HMS__FRAME_F_ITEM, HMS_OK, "nobody");
      evil_frame(ev, rq.id, rq.fn_id, HMS__FRAME_F_ITEM, HMS_OK, "a");
      evil_frame(ev, rq.id - (1ull << 10), rq.fn_id, 0, HMS_OK, "old");
      evil_frame(ev, rq.id, rq.fn_id, HMS__FRAME_F_ITEM, HMS_OK, "b");
      evil_frame(ev, rq.id, rq.fn_id, 0, HMS_OK, "");
      evil_publish(ev, ev->resp_pos);
      follow_up = true;
      break;
    case EV_S_CSTREAM_EARLY:
      evil_frame(ev, rq.id, rq.fn_id, 0, HMS_OK, "early");
      evil_publish(ev, ev->resp_pos);
      follow_up = true;
      break;
    case EV_R_FUZZ:
      rng_state = cmd->arg;
      evil_fuzz(ev, &rq);
      break;
    default:
      EVIL_ERR("unknown mode %d", mode);
  }
  if (follow_up && evil_wait_request(ev, &rq)) evil_reply_valid(ev, &rq);
}

static hms_status_t h_never(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)call;
  (void)req;
  (void)ud;
  return HMS_INTERNAL;
}

static int run_evil_server(int cmd_fd, int notify_fd) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  hms_node_options_t o;
  hms_node_options_init(&o);
  o.name = "evil-server";
  hms_node_t *node;
  hms_service_t *svc;
  hms_error_t e;
  if (hms_node_open(&o, &node, &e) || hms_service_add(node, EVIL_SVC, EVIL_VER, &svc, &e) ||
      hms_function_add(svc, "f", 0, h_never, NULL, &e)) {
    fprintf(stderr, "evil server setup: %s\n", e.message);
    return 2;
  }
  int lfd = svc->listen_fd; /* registered and discoverable; we answer by hand instead of serving */
  char c = 'r';
  if (write(notify_fd, &c, 1) != 1) return 2;
  close(notify_fd);
  evil_t ev;
  memset(&ev, 0, sizeof ev);
  ev.sock = ev.bell = -1;
  ev.cmd_fd = cmd_fd;
  for (;;) {
    evil_cmd_t cmd;
    ssize_t n = read(cmd_fd, &cmd, sizeof cmd);
    evil_reset(&ev);
    if (n != (ssize_t)sizeof cmd || cmd.mode == EV_QUIT) break;
    /* Accept the parent's connection; skip any that hang up before saying hello. */
    hms__hello_t hello;
    int fds[4], nfds = 0;
    bool have = false;
    int64_t end = now_ns() + 3000 * MS;
    while (!have && now_ns() < end) {
      struct pollfd p = {.fd = lfd, .events = POLLIN};
      if (poll(&p, 1, 100) <= 0) continue;
      int s = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (s < 0) continue;
      ssize_t k = recv_msg_fds(s, &hello, sizeof hello, fds, 4, &nfds, 2000);
      close_fds(fds, nfds); /* the client's eventfd: not needed here */
      if (k == (ssize_t)sizeof hello && hello.magic == HMS__HELLO_MAGIC) {
        ev.sock = s;
        have = true;
      } else {
        close(s);
      }
    }
    if (!have) {
      EVIL_ERR("mode %d: no client connected", cmd.mode);
      continue;
    }
    evil_attack(&ev, &cmd);
  }
  evil_reset(&ev);
  hms_node_close(node);
  return evil_errors ? 3 : 0;
}

/* ---------------------------------------------------------------- part 2, the client side */
enum {
  ST_CONNECT_FAILS, /* hms_connect must return `expect` */
  ST_FATAL,         /* the call returns `expect`; the client is dead: further calls fail at once */
  ST_SURVIVES,      /* the call returns `expect`; the next call on the same client succeeds */
  ST_TIMEOUT,       /* the call times out (300 ms) with DEADLINE_EXCEEDED, no sooner and not much later */
};

typedef struct {
  const char *name;
  int mode;
  int stage;
  hms_status_t expect;
  int origin;      /* HMS_ORIGIN_* or -1 for either */
  const char *msg; /* substring of the error message, or NULL */
  uint32_t nvalid; /* valid calls before the attack */
  uint32_t valid_len;
} evil_case_t;

static const evil_case_t evil_cases[] = {
    /* Handshake: each must fail hms_connect fast with the right code, closing every descriptor. */
    {"welcome with a wrong magic", EV_HS_BAD_MAGIC, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "malformed", 0, 0},
    {"welcome cut in half", EV_HS_SHORT_WELCOME, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "malformed", 0, 0},
    {"refusal whose message has no NUL", EV_HS_ERR_NO_NUL, ST_CONNECT_FAILS, HMS_PERMISSION_DENIED, HMS_ORIGIN_REMOTE,
     "ZZZZ", 0, 0},
    {"refusal with status 999", EV_HS_ERR_BAD_STATUS, ST_CONNECT_FAILS, HMS_UNKNOWN, HMS_ORIGIN_REMOTE, "ZZZZ", 0, 0},
    {"welcome with a wrong ABI", EV_HS_WRONG_ABI, ST_CONNECT_FAILS, HMS_FAILED_PRECONDITION, HMS_ORIGIN_LOCAL, "ABI 99",
     0, 0},
    {"welcome OK without descriptors", EV_HS_NO_FDS, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "0 descriptors",
     0, 0},
    {"welcome OK with one descriptor", EV_HS_ONE_FD, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL,
     "1 descriptors", 0, 0},
    {"welcome with 14 descriptors", EV_HS_MANY_FDS, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, NULL, 0, 0},
    {"memfd not sealed", EV_HS_UNSEALED, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "sealed", 0, 0},
    {"memfd smaller than total_bytes", EV_HS_SIZE_SMALLER, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "size", 0,
     0},
    {"pipe instead of a memfd", EV_HS_NOT_MEMFD, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "size", 0, 0},
    {"req_cap not a power of two", EV_HS_CAP_NOT_POW2, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "layout", 0,
     0},
    {"req_cap below the minimum", EV_HS_CAP_TOO_SMALL, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "layout", 0,
     0},
    {"total_bytes inconsistent with the sizes", EV_HS_TOTAL_LIE, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL,
     "layout", 0, 0},
    {"memfd header disagrees with the welcome", EV_HS_HDR_DISAGREES, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL,
     "disagrees", 0, 0},
    {"function_count above HMS_MAX_FUNCTIONS", EV_HS_FN_COUNT_HUGE, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL,
     "layout", 0, 0},
    {"1 GiB function table", EV_HS_TABLE_HUGE, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "layout", 0, 0},
    {"function name length > HMS_NAME_MAX", EV_HS_FN_NAME_TOO_LONG, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL,
     "bad entry", 0, 0},
    {"function name length 0", EV_HS_FN_NAME_ZERO, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "bad entry", 0, 0},
    {"function name running past the table", EV_HS_FN_PAST_TABLE, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL,
     "bad entry", 0, 0},
    {"function table shorter than function_count", EV_HS_FN_TRUNCATED, ST_CONNECT_FAILS, HMS_DATA_LOSS,
     HMS_ORIGIN_LOCAL, "truncated", 0, 0},
    {"function name with invalid characters", EV_HS_FN_BAD_CHARS, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL,
     "invalid name", 0, 0},
    {"function name with a path", EV_HS_FN_NAME_SLASH, ST_CONNECT_FAILS, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL,
     "invalid name", 0, 0},
    {"server closes before the welcome", EV_HS_CLOSE, ST_CONNECT_FAILS, HMS_UNAVAILABLE, HMS_ORIGIN_LOCAL, NULL, 0, 0},
    {"server never answers the hello", EV_HS_SILENT, ST_CONNECT_FAILS, HMS_DEADLINE_EXCEEDED, HMS_ORIGIN_LOCAL,
     "timed out", 0, 0},
    /* Valid handshakes: the harness itself must be able to produce correct replies. */
    {"baseline: a correct hand-made server", EV_R_VALID, ST_SURVIVES, HMS_OK, -1, NULL, 0, 0},
    {"baseline after three 1 KiB replies", EV_R_VALID, ST_SURVIVES, HMS_OK, -1, NULL, 3, 960},
    {"welcome with 3 descriptors (extra one closed)", EV_HS_THREE_FDS, ST_SURVIVES, HMS_OK, -1, NULL, 0, 0},
    /* Corrupt responses: DATA_LOSS, and the client is finished. */
    {"response len not a multiple of 64", EV_R_LEN_UNALIGNED, ST_FATAL, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL,
     "corrupt frame header", 0, 0},
    {"response len zero", EV_R_LEN_ZERO, ST_FATAL, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "corrupt frame header", 0, 0},
    {"response len beyond the published bytes", EV_R_LEN_OVER_AVAIL, ST_FATAL, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL,
     "corrupt frame header", 0, 0},
    {"response len beyond the end of the ring", EV_R_LEN_OVER_END, ST_FATAL, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL,
     "to end 1024", 3, 960},
    {"response len beyond the max frame", EV_R_LEN_OVER_MAX, ST_FATAL, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "max frame", 0,
     0},
    {"response payload_len > len - 64", EV_R_PAYLOAD_OVER, ST_FATAL, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL,
     "payload length 65", 0, 0},
    {"response payload_len 4 GiB", EV_R_PAYLOAD_HUGE, ST_FATAL, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "payload length", 0,
     0},
    {"response head beyond the capacity", EV_R_HEAD_BEYOND, ST_FATAL, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "ring head", 0,
     0},
    {"response head not a multiple of 64", EV_R_HEAD_UNALIGNED, ST_FATAL, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "ring head",
     0, 0},
    {"response head moved backwards", EV_R_HEAD_BACKWARDS, ST_FATAL, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "ring head", 1,
     16},
    {"response head near 2^64", EV_R_HEAD_HUGE, ST_FATAL, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "ring head", 0, 0},
    {"frame kind REQUEST in the response ring", EV_R_KIND_REQUEST, ST_FATAL, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL,
     "unexpected frame kind 1", 0, 0},
    {"frame kind CANCEL in the response ring", EV_R_KIND_CANCEL, ST_FATAL, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL,
     "unexpected frame kind 4", 0, 0},
    {"unknown frame kind 99", EV_R_KIND_UNKNOWN, ST_FATAL, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "unexpected frame kind 99",
     0, 0},
    {"PAD frame not reaching the end", EV_R_PAD_SHORT, ST_FATAL, HMS_DATA_LOSS, HMS_ORIGIN_LOCAL, "corrupt pad frame", 0,
     0},
    {"goodbye frame (call_id 0, DATA_LOSS)", EV_R_CALLID0_BYE, ST_FATAL, HMS_DATA_LOSS, -1, "evil server drops you", 0,
     0},
    {"server closes the socket with a call pending", EV_R_CLOSE, ST_FATAL, HMS_UNAVAILABLE, HMS_ORIGIN_LOCAL,
     "went away", 0, 0},
    {"server sends bytes on the socket", EV_R_CHATTER, ST_FATAL, HMS_UNAVAILABLE, HMS_ORIGIN_LOCAL, NULL, 0, 0},
    /* Lying error replies are the peer's business: bounded, mapped, and the connection lives on. */
    {"error reply whose message length exceeds the payload", EV_R_ERR_MLEN, ST_SURVIVES, HMS_INVALID_ARGUMENT,
     HMS_ORIGIN_REMOTE, "malformed error reply", 0, 0},
    {"error reply with message length 0xFFFFFFFD", EV_R_ERR_MLEN_WRAP, ST_SURVIVES, HMS_INVALID_ARGUMENT,
     HMS_ORIGIN_REMOTE, "malformed error reply", 0, 0},
    {"error reply shorter than its length word", EV_R_ERR_SHORT, ST_SURVIVES, HMS_INVALID_ARGUMENT, HMS_ORIGIN_REMOTE,
     "malformed error reply", 0, 0},
    {"status 12345", EV_R_STATUS_12345, ST_SURVIVES, HMS_UNKNOWN, HMS_ORIGIN_REMOTE, "evil status", 0, 0},
    {"negative status", EV_R_STATUS_NEG, ST_SURVIVES, HMS_UNKNOWN, HMS_ORIGIN_REMOTE, "evil status", 0, 0},
    {"replies for call ids nobody waits for, then the right one", EV_R_UNKNOWN_ID, ST_SURVIVES, HMS_OK, -1, NULL, 0, 0},
    {"server never replies", EV_R_SILENT, ST_TIMEOUT, HMS_DEADLINE_EXCEEDED, HMS_ORIGIN_LOCAL, NULL, 0, 0},
    /* Stream frames answering a plain call: the first frame for the id answers it, the rest is dropped. */
    {"plain call answered with an ITEM, a final frame and another ITEM", EV_S_ITEM_PLAIN, ST_SURVIVES, HMS_OK, -1,
     NULL, 0, 0},
    {"plain call answered with an ITEM-flagged error", EV_S_ITEM_ERR_PLAIN, ST_SURVIVES, HMS_NOT_FOUND,
     HMS_ORIGIN_REMOTE, "evil item error", 0, 0},
    {"finals and items for streams never opened, then the reply", EV_S_FINAL_UNOPENED, ST_SURVIVES, HMS_OK, -1, NULL,
     1, 16},
};

typedef struct {
  pid_t pid;
  int cmd_fd;
} evil_proc_t;
static evil_proc_t E;

static void evil_send_cmd(int mode, uint32_t nvalid, uint64_t arg) {
  evil_cmd_t c = {.mode = mode, .nvalid = nvalid, .arg = arg};
  if (write(E.cmd_fd, &c, sizeof c) != (ssize_t)sizeof c) {
    fprintf(stderr, "cannot command the evil server: %s\n", strerror(errno));
    exit(2);
  }
}

static hms_status_t evil_connect(hms_client_t **cl, hms_error_t *e, int64_t timeout_ns) {
  hms_connect_options_t o;
  hms_connect_options_init(&o);
  o.timeout_ns = timeout_ns;
  return hms_connect(g_node, EVIL_SVC, EVIL_VER, &o, cl, e);
}

static void fill_payload(char *buf, uint32_t len, uint32_t salt) {
  for (uint32_t i = 0; i < len; i++) buf[i] = (char)('a' + (i * 13 + salt) % 26);
}

/* One valid round trip; returns the status (and checks the bytes when OK). */
static hms_status_t client_echo(hms_client_t *cl, uint32_t len, int64_t timeout_ns, hms_error_t *e, bool *bytes_ok) {
  char buf[1024];
  fill_payload(buf, len, (uint32_t)now_ns());
  hms_payload_t req = {.data = buf, .len = len, .content_type = HMS_CT_RAW}, resp;
  hms_status_t st = hms_call(cl, 1, &req, &resp, timeout_ns, e);
  if (bytes_ok) *bytes_ok = st == HMS_OK && resp.len == len && (len == 0 || memcmp(resp.data, buf, len) == 0);
  hms_payload_release(&resp);
  return st;
}

static void check_error(const evil_case_t *k, hms_status_t st, const hms_error_t *e) {
  CHECK(st == k->expect, "status %s (%s), expected %s", hms_status_str(st), e->message, hms_status_str(k->expect));
  if (st != HMS_OK) {
    CHECK(e->code == st, "err.code %d != status %d", e->code, st);
    CHECK(memchr(e->message, 0, sizeof e->message) != NULL, "error message not terminated");
    if (k->origin >= 0) CHECK(e->origin == k->origin, "origin %d, expected %d", e->origin, k->origin);
    if (k->msg) CHECK(strstr(e->message, k->msg) != NULL, "message '%s' lacks '%s'", e->message, k->msg);
  }
  if (verbose) printf("    %-58s -> %s: %s\n", k->name, hms_status_str(st), st ? e->message : "");
}

static void run_evil_case(const evil_case_t *k) {
  g_test = k->name;
  int fds0 = count_fds(0);
  evil_send_cmd(k->mode, k->nvalid, 0);
  hms_client_t *cl = NULL;
  hms_error_t e;
  memset(&e, 0, sizeof e);
  int64_t conn_timeout = k->mode == EV_HS_SILENT ? 300 * MS : 2000 * MS;
  int64_t t0 = now_ns();
  hms_status_t st = evil_connect(&cl, &e, conn_timeout);
  int64_t dt = now_ns() - t0;
  if (k->stage == ST_CONNECT_FAILS) {
    check_error(k, st, &e);
    if (k->mode == EV_HS_ERR_NO_NUL || k->mode == EV_HS_ERR_BAD_STATUS)
      CHECK(strlen(e.message) == 255 && strspn(e.message, "Z") == 255,
            "the unterminated refusal message was not bounded to 255 bytes of the server's text (%zu)",
            strlen(e.message));
    CHECK(st == HMS_OK || cl == NULL, "a failed connect returned a client");
    if (k->mode == EV_HS_SILENT)
      CHECK(dt >= 250 * MS && dt < 1000 * MS, "handshake timeout after %lld ms (timeout 300 ms)", (long long)(dt / MS));
    else
      CHECK(dt < 1000 * MS, "connect took %lld ms to fail", (long long)(dt / MS));
    if (st == HMS_OK) hms_client_close(cl);
  } else {
    CHECK(st == HMS_OK, "connect: %s: %s", hms_status_str(st), e.message);
    if (st != HMS_OK) goto out;
    /* A connected client holds exactly its socket, the server's doorbell, its own eventfd and the epoll
     * fd event loops watch: an extra descriptor from the welcome must have been closed, and the memfd
     * too (the mapping stays). */
    CHECK(count_fds(0) == fds0 + 4, "connected client holds %d descriptors, expected 4", count_fds(0) - fds0);
    bool bytes_ok;
    for (uint32_t i = 0; i < k->nvalid; i++) {
      st = client_echo(cl, k->valid_len, 2000 * MS, &e, &bytes_ok);
      CHECK(st == HMS_OK && bytes_ok, "prelude call %u: %s: %s", i, hms_status_str(st), e.message);
    }
    int64_t timeout = k->stage == ST_TIMEOUT ? 300 * MS : 2000 * MS;
    t0 = now_ns();
    st = client_echo(cl, 16, timeout, &e, &bytes_ok);
    dt = now_ns() - t0;
    check_error(k, st, &e);
    if (st == HMS_OK) CHECK(bytes_ok, "wrong reply bytes");
    if (k->stage == ST_TIMEOUT)
      CHECK(dt >= 250 * MS && dt < 1000 * MS, "call timed out after %lld ms (timeout 300 ms)", (long long)(dt / MS));
    else
      CHECK(dt < 1000 * MS, "the call took %lld ms", (long long)(dt / MS));
    if (k->stage == ST_FATAL) {
      /* The client is finished: the next call fails at once with the same error, without sending. */
      t0 = now_ns();
      hms_status_t st2 = client_echo(cl, 16, 2000 * MS, &e, NULL);
      dt = now_ns() - t0;
      CHECK(st2 == k->expect, "second call: %s (%s), expected %s", hms_status_str(st2), e.message,
            hms_status_str(k->expect));
      CHECK(dt < 100 * MS, "second call on a dead client took %lld ms", (long long)(dt / MS));
    } else if (k->stage == ST_SURVIVES) {
      st = client_echo(cl, 32, 2000 * MS, &e, &bytes_ok);
      CHECK(st == HMS_OK && bytes_ok, "the connection did not survive: %s: %s", hms_status_str(st), e.message);
    }
    hms_client_close(cl);
  }
out:
  CHECK(count_fds(0) == fds0, "descriptor leak: %d before, %d after", fds0, count_fds(0));
}

/* A server that claims to have consumed 2^40 request bytes: the client must notice when it next needs
 * the tail (ring full) and fail every pending call, not overwrite unread requests or wait forever. */
static void test_evil_req_tail(void) {
  g_test = "request tail moved far beyond the head by the server";
  int fds0 = count_fds(0);
  evil_send_cmd(EV_R_REQ_TAIL, 0, 0);
  hms_client_t *cl;
  hms_error_t e;
  hms_status_t st = evil_connect(&cl, &e, 2000 * MS);
  CHECK(st == HMS_OK, "connect: %s", e.message);
  if (st != HMS_OK) return;
  char buf[960];
  fill_payload(buf, sizeof buf, 1);
  int submitted = 0;
  int64_t t0 = now_ns();
  for (int i = 0; i < 8; i++) {
    uint64_t id;
    st = hms_call_submit(cl, 1, buf, sizeof buf, HMS_CT_RAW, 0, 2000 * MS, NULL, NULL, &id, &e);
    if (st != HMS_OK) break;
    submitted++;
  }
  CHECK(st == HMS_DATA_LOSS, "submit after %d calls: %s (%s)", submitted, hms_status_str(st), e.message);
  CHECK(submitted == 4, "%d 1 KiB frames fitted in a 4 KiB ring", submitted);
  CHECK(strstr(e.message, "tail") != NULL, "message '%s'", e.message);
  /* The pending calls complete with the connection's error. */
  int done = 0, lost = 0;
  hms_completion_t comp[8];
  while (done < submitted && now_ns() - t0 < 1000 * MS) {
    size_t n = 0;
    if (hms_client_poll(cl, comp, 8, &n, 100 * MS, &e) != HMS_OK) break;
    for (size_t i = 0; i < n; i++) {
      if (comp[i].status == HMS_DATA_LOSS) lost++;
      hms_payload_release(&comp[i].payload);
    }
    done += (int)n;
  }
  CHECK(lost == submitted, "%d of %d pending calls completed with DATA_LOSS", lost, submitted);
  size_t n;
  CHECK(hms_client_poll(cl, comp, 8, &n, 0, &e) == HMS_DATA_LOSS, "poll on the dead client");
  hms_client_close(cl);
  CHECK(count_fds(0) == fds0, "descriptor leak: %d before, %d after", fds0, count_fds(0));
}

/* A stream against the evil server: the next item (text), the end (text NULL, want_end), or an error. */
static void stream_expect(hms_stream_t *st, hms_status_t status, const char *text, int want_end, const char *what) {
  hms_payload_t it;
  int end = 0;
  hms_error_t e;
  memset(&e, 0, sizeof e);
  int64_t t0 = now_ns();
  hms_status_t rc = hms_stream_next(st, &it, &end, 1000 * MS, &e);
  int64_t dt = now_ns() - t0;
  bool ok = rc == status && end == want_end;
  if (ok && rc == HMS_OK && !want_end && text) ok = it.len == strlen(text) && memcmp(it.data, text, it.len) == 0;
  if (ok && rc != HMS_OK && text) ok = strstr(e.message, text) != NULL;
  CHECK(ok, "%s: %s end %d item '%.*s' (%s); expected %s end %d '%s'", what, hms_status_str(rc), end,
        rc == HMS_OK ? (int)(it.len < 40 ? it.len : 40) : 0, rc == HMS_OK && it.data ? (const char *)it.data : "",
        rc == HMS_OK ? "" : e.message, hms_status_str(status), want_end, text ? text : "");
  CHECK(dt < 1000 * MS, "%s took %lld ms", what, (long long)(dt / MS));
  hms_payload_release(&it);
}

static void evil_stream_case(const char *name, int mode) {
  g_test = name;
  int fds0 = count_fds(0);
  evil_send_cmd(mode, 0, 0);
  hms_client_t *cl;
  hms_error_t e;
  hms_status_t rc = evil_connect(&cl, &e, 2000 * MS);
  CHECK(rc == HMS_OK, "connect: %s", e.message);
  if (rc != HMS_OK) return;
  uint32_t flags = mode == EV_S_CSTREAM_EARLY ? HMS_STREAM_CLIENT : HMS_STREAM_SERVER;
  hms_stream_t *st = NULL;
  int64_t t0 = now_ns();
  rc = hms_stream_open(cl, 1, "go", 2, HMS_CT_RAW, flags, 2000 * MS, &st, &e);
  CHECK(rc == HMS_OK, "stream open: %s", e.message);
  if (rc != HMS_OK) {
    hms_client_close(cl);
    return;
  }
  bool echo_before_close = false;
  switch (mode) {
    case EV_S_AFTER_FINAL:
      stream_expect(st, HMS_OK, "a", 0, "item 1");
      stream_expect(st, HMS_OK, "b", 0, "item 2");
      stream_expect(st, HMS_OK, NULL, 1, "the end");
      stream_expect(st, HMS_OK, NULL, 1, "the end, asked again");
      /* The frames after the final one are read by the next call while the stream is still open: they
       * land in (or are dropped from) the stream's queue, freed when it is closed (LeakSanitizer). */
      echo_before_close = true;
      break;
    case EV_S_ERR_FIRST:
      stream_expect(st, HMS_NOT_FOUND, "evil item error", 0, "ITEM-flagged error");
      stream_expect(st, HMS_NOT_FOUND, NULL, 0, "after the error, asked again");
      break;
    case EV_S_FOREIGN:
      stream_expect(st, HMS_OK, "a", 0, "item 1");
      stream_expect(st, HMS_OK, "b", 0, "item 2");
      stream_expect(st, HMS_OK, NULL, 1, "the end");
      break;
    case EV_S_CSTREAM_EARLY:
      CHECK(hms_stream_send(st, "1", 1, HMS_CT_RAW, &e) == HMS_OK, "send 1: %s", e.message);
      CHECK(hms_stream_send(st, "2", 1, HMS_CT_RAW, &e) == HMS_OK, "send 2: %s", e.message);
      stream_expect(st, HMS_OK, "early", 0, "the early reply");
      stream_expect(st, HMS_OK, NULL, 1, "the end");
      rc = hms_stream_send(st, "3", 1, HMS_CT_RAW, &e); /* after the reply: OK or refused, not stuck */
      CHECK(rc == HMS_OK || rc == HMS_CANCELLED || rc == HMS_FAILED_PRECONDITION, "send after the reply: %s",
            hms_status_str(rc));
      rc = hms_stream_finish(st, &e);
      CHECK(rc == HMS_OK || rc == HMS_CANCELLED || rc == HMS_FAILED_PRECONDITION, "finish after the reply: %s",
            hms_status_str(rc));
      break;
    default:
      break;
  }
  CHECK(now_ns() - t0 < 1000 * MS, "the stream took %lld ms", (long long)((now_ns() - t0) / MS));
  if (!echo_before_close) hms_stream_close(st);
  bool bytes_ok;
  rc = client_echo(cl, 32, 2000 * MS, &e, &bytes_ok);
  CHECK(rc == HMS_OK && bytes_ok, "the connection did not survive: %s: %s", hms_status_str(rc), e.message);
  if (echo_before_close) hms_stream_close(st);
  hms_client_close(cl);
  CHECK(count_fds(0) == fds0, "descriptor leak: %d before, %d after", fds0, count_fds(0));
}

static void test_evil_streams(void) {
  evil_stream_case("stream: items after the final frame, and a second final", EV_S_AFTER_FINAL);
  evil_stream_case("stream: an ITEM-flagged error first", EV_S_ERR_FIRST);
  evil_stream_case("stream: finals and items for other ids in between", EV_S_FOREIGN);
  evil_stream_case("client stream: the reply before the items", EV_S_CSTREAM_EARLY);
}

static void fuzz_evil_server(int iters, uint64_t seed) {
  g_test = "fuzz: random garbage from a server";
  printf("  part 2 fuzz: seed 0x%016llx, %d rounds (HMS_EVIL_CLIENT_ITERS to change)\n", (unsigned long long)seed,
         iters);
  rng_state = seed;
  int fds0 = count_fds(0);
  int by_status[HMS_UNAUTHENTICATED + 1] = {0};
  int64_t t0 = now_ns();
  for (int i = 0; i < iters; i++) {
    uint64_t round_seed = rnd();
    evil_send_cmd(EV_R_FUZZ, 0, round_seed);
    hms_client_t *cl;
    hms_error_t e;
    hms_status_t st = evil_connect(&cl, &e, 2000 * MS);
    CHECK(st == HMS_OK, "round %d: connect: %s", i, e.message);
    if (st != HMS_OK) continue;
    int64_t t1 = now_ns();
    if (round_seed % 3 == 0) { /* a server stream instead of a call: hms_stream_next on garbage */
      hms_stream_t *sm = NULL;
      st = hms_stream_open(cl, 1, "s", 1, HMS_CT_RAW, HMS_STREAM_SERVER, 200 * MS, &sm, &e);
      for (int k = 0; st == HMS_OK && k < 8; k++) {
        hms_payload_t it;
        int end;
        st = hms_stream_next(sm, &it, &end, 30 * MS, &e);
        hms_payload_release(&it);
        if (end) break;
      }
      hms_stream_close(sm); /* NULL when the open failed */
    } else {
      st = client_echo(cl, (uint32_t)(round_seed % 200), 30 * MS, &e, NULL);
    }
    int64_t dt = now_ns() - t1;
    CHECK(dt < 1000 * MS, "round %d (seed %#llx): the call took %lld ms", i, (unsigned long long)round_seed,
          (long long)(dt / MS));
    CHECK(st >= 0 && st <= HMS_UNAUTHENTICATED, "round %d: status %d", i, st);
    if (st >= 0 && st <= HMS_UNAUTHENTICATED) by_status[st]++;
    /* Whatever happened, a second call returns in bounded time too. */
    t1 = now_ns();
    client_echo(cl, 8, 30 * MS, &e, NULL);
    dt = now_ns() - t1;
    CHECK(dt < 1000 * MS, "round %d (seed %#llx): the second call took %lld ms", i, (unsigned long long)round_seed,
          (long long)(dt / MS));
    hms_client_close(cl);
  }
  CHECK(count_fds(0) == fds0, "descriptor leak over the fuzz rounds: %d before, %d after", fds0, count_fds(0));
  printf("  part 2 fuzz: %d rounds in %.2f s; outcomes:", iters, (now_ns() - t0) / 1e9);
  for (int s = 0; s <= HMS_UNAUTHENTICATED; s++)
    if (by_status[s]) printf(" %s=%d", hms_status_str(s), by_status[s]);
  printf("\n");
}

static void part2(uint64_t seed, int iters) {
  printf("part 2: evil servers against a real client\n");
  int cmd[2], ready[2];
  if (pipe2(cmd, O_CLOEXEC) != 0 || pipe2(ready, O_CLOEXEC) != 0) exit(2);
  fflush(stdout);
  fflush(stderr);
  E.pid = fork();
  if (E.pid == 0) {
    close(cmd[1]);
    close(ready[0]);
    exit(run_evil_server(cmd[0], ready[1]));
  }
  close(cmd[0]);
  close(ready[1]);
  E.cmd_fd = cmd[1];
  char c;
  if (read(ready[0], &c, 1) != 1) {
    fprintf(stderr, "the evil server did not start\n");
    exit(2);
  }
  close(ready[0]);
  int64_t t0 = now_ns();
  for (size_t i = 0; i < sizeof evil_cases / sizeof evil_cases[0]; i++) run_evil_case(&evil_cases[i]);
  test_evil_req_tail();
  test_evil_streams();
  printf("  %zu evil-server cases in %.2f s\n", sizeof evil_cases / sizeof evil_cases[0] + 5, (now_ns() - t0) / 1e9);
  fuzz_evil_server(iters, seed ^ 0xA5A5A5A5A5A5A5A5ull);
  g_test = "evil server shutdown";
  evil_send_cmd(EV_QUIT, 0, 0);
  int st = 0;
  int64_t end = now_ns() + 5000 * MS;
  pid_t w;
  while ((w = waitpid(E.pid, &st, WNOHANG)) == 0 && now_ns() < end) usleep(5000);
  if (w == 0) {
    kill(E.pid, SIGKILL);
    waitpid(E.pid, &st, 0);
  }
  /* Exit 0: the hand-made server saw only well-formed requests from the real client, and its sanitizers
   * found nothing. */
  CHECK(w != 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "evil server exit status %d (signal %d)",
        WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  close(E.cmd_fd);
}

/* ================================================================ main */
/* A hang is a failure too: the children die with us (PR_SET_PDEATHSIG). */
static void on_watchdog(int sig) {
  (void)sig;
  static const char m[] = "FAIL: watchdog: hms_evil hung (a peer made the core loop or block)\n";
  ssize_t w = write(2, m, sizeof m - 1);
  (void)w;
  _exit(1);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  if (!getenv("HMS_FFI_RUNTIME_DIR")) {
    fprintf(stderr, "set HMS_FFI_RUNTIME_DIR to a private temporary directory\n");
    return 2;
  }
  verbose = getenv("HMS_EVIL_VERBOSE") && atoi(getenv("HMS_EVIL_VERBOSE")) > 0;
  uint64_t seed = getenv("HMS_EVIL_SEED") ? strtoull(getenv("HMS_EVIL_SEED"), NULL, 0)
                                          : ((uint64_t)now_ns() ^ ((uint64_t)getpid() << 32));
  int iters = getenv("HMS_EVIL_ITERS") ? atoi(getenv("HMS_EVIL_ITERS")) : 3000;
  int citers = getenv("HMS_EVIL_CLIENT_ITERS") ? atoi(getenv("HMS_EVIL_CLIENT_ITERS")) : 300;
  signal(SIGALRM, on_watchdog);
  alarm(60 + (unsigned)(iters / 500 + citers / 200)); /* the defaults take ~2 s */
  printf("hms_evil: seed 0x%016llx\n", (unsigned long long)seed);
  int64_t t0 = now_ns();
  S = mmap(NULL, sizeof *S, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (S == MAP_FAILED) return 2;
  hms_node_options_t o;
  hms_node_options_init(&o);
  o.name = "evil-tests";
  hms_error_t e;
  if (hms_node_open(&o, &g_node, &e)) {
    fprintf(stderr, "node_open: %s\n", e.message);
    return 2;
  }
  part1(seed, iters);
  part2(seed, citers);
  hms_node_close(g_node);
  double secs = (now_ns() - t0) / 1e9;
  if (failures) {
    fprintf(stderr, "%d of %d checks FAILED (%.1f s, seed 0x%016llx)\n", failures, checks, secs,
            (unsigned long long)seed);
    return 1;
  }
  printf("all hostile-peer tests passed (%d checks, %.1f s)\n", checks, secs);
  return 0;
}
