/* The client side of a connection: connect + handshake, synchronous calls, reply matching.
 *
 * Threads: any number of threads may call on one client. Senders serialize on send_lock (the request
 * ring has one producer). Replies are read by whichever waiting thread holds recv_lock (the "reader");
 * it hands replies that belong to other threads to their slots and wakes them, and leaves the role when
 * its own reply arrives. Nobody waits without a bound: every sleep is sliced so a dead server is
 * noticed (its socket hangs up) within a slice. */
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal/hms_internal.h"

#define HMS__SLOTS 1024 /* calls in flight per client */
#define HMS__SLOT_BITS 10
#define HMS__SLICE_NS 10000000LL /* liveness check period while sleeping: 10 ms */

__thread uint8_t hms__tls_trace_id[16];
__thread uint8_t hms__tls_span_id[8];
__thread uint8_t hms__tls_trace_flags;

enum { HMS__SLOT_FREE = 0, HMS__SLOT_WAITING = 1, HMS__SLOT_DONE = 2 };
/* Who collects a slot's result: a thread blocked in hms_call/hms_call_batch, hms_client_poll, or a
 * callback run by whichever thread reads the reply. */
enum { HMS__MODE_SYNC = 0, HMS__MODE_QUEUE = 1, HMS__MODE_CALLBACK = 2, HMS__MODE_STREAM = 3 };

/* A stream item or the stream's final result, queued when another thread read it for us. */
typedef struct hms__item_s {
  struct hms__item_s *next;
  int32_t status;
  int32_t origin;
  uint32_t ct;
  bool more;
  uint8_t *data;
  size_t len;
  hms_payload_t *aref; /* instead of data: an arena payload (zero copy) */
  char msg[256];
} hms__item_t;
#define HMS__NO_SLOT UINT32_MAX

typedef struct {
  uint64_t id;
  int state;
  int mode;
  int64_t deadline; /* async modes: when to complete with DEADLINE_EXCEEDED */
  hms_completion_fn cb;
  void *user_data;
  uint32_t next_done; /* queue of finished QUEUE-mode slots */
  hms_status_t status;
  int32_t origin;
  uint32_t ct;
  uint8_t *data;
  size_t len;
  hms_payload_t *aref; /* instead of data: an arena payload (zero copy) */
  char msg[256];
  hms__item_t *qhead, *qtail; /* STREAM mode: frames read by other threads, in order */
} hms__slot_t;

struct hms_client_s {
  hms_node_t *node;
  int sock;
  int bell;
  void *map;
  size_t map_len;
  hms__ring_t req, resp;
  size_t max_message; /* inline: larger payloads go through the arena */
  hms__arena_t *arena;
  pthread_mutex_t send_lock, recv_lock, slots_lock;
  uint64_t seq; /* under slots_lock */
  uint32_t free_top;
  uint32_t free_stack[HMS__SLOTS];
  hms__slot_t slots[HMS__SLOTS];
  uint32_t done_head, done_tail; /* finished QUEUE-mode slots, under slots_lock */
  uint32_t async_pending;        /* QUEUE/CALLBACK slots in flight, under slots_lock */
  int64_t next_deadline;         /* earliest async deadline, under slots_lock */
  int event_fd;                  /* ours: readable when hms_client_poll has work; the server rings it */
  int watch_fd;                  /* epoll over event_fd and sock: what hms_client_event_fd() hands out, so an
                                    event loop also wakes when the server dies (the kernel hangs up sock) */
  _Atomic uint32_t gen; /* bumped when a reply is handed over or the reader leaves */
  _Atomic int followers;
  _Atomic int dead;
  hms_status_t dead_code;
  char dead_msg[256];
  hms__spin_t spin; /* under recv_lock */
  uint32_t nfns;
  char **fn_names;
  uint32_t *fn_ids, *fn_flags;
  char service[HMS_NAME_MAX + 1];
  char version[HMS_VERSION_MAX + 1];
  pid_t server_pid;
};

HMS_API void hms_set_thread_trace(const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t flags) {
  if (!trace_id) {
    memset(hms__tls_trace_id, 0, 16);
    memset(hms__tls_span_id, 0, 8);
    hms__tls_trace_flags = 0;
    return;
  }
  memcpy(hms__tls_trace_id, trace_id, 16);
  if (span_id)
    memcpy(hms__tls_span_id, span_id, 8);
  else
    memset(hms__tls_span_id, 0, 8);
  hms__tls_trace_flags = flags;
}

HMS_API void hms_connect_options_init(hms_connect_options_t *opts) {
  if (!opts) return;
  memset(opts, 0, sizeof *opts);
  opts->version = HMS_CONNECT_OPTIONS_VERSION;
  opts->timeout_ns = -1;
  opts->spin_ns = -1;
}

static void hms__aref_drop(hms_payload_t **a) {
  if (!*a) return;
  hms_payload_release(*a);
  free(*a);
  *a = NULL;
}

static void hms__client_free(hms_client_t *c) {
  if (c->arena) { /* before the socket and the memory it names go */
    hms__arena_detach(c->arena);
    hms__arena_put(c->arena);
  }
  c->arena = NULL;
  if (c->watch_fd >= 0) close(c->watch_fd);
  if (c->event_fd >= 0) close(c->event_fd);
  if (c->sock >= 0) close(c->sock);
  if (c->bell >= 0) close(c->bell);
  if (c->map) munmap(c->map, c->map_len);
  for (uint32_t i = 0; i < c->nfns; i++) free(c->fn_names[i]);
  free(c->fn_names);
  free(c->fn_ids);
  free(c->fn_flags);
  for (uint32_t i = 0; i < HMS__SLOTS; i++) {
    free(c->slots[i].data);
    hms__aref_drop(&c->slots[i].aref);
  }
  pthread_mutex_destroy(&c->send_lock);
  pthread_mutex_destroy(&c->recv_lock);
  pthread_mutex_destroy(&c->slots_lock);
  free(c);
}

HMS_API void hms_client_close(hms_client_t *client) {
  if (!client) return;
  hms__client_free(client);
}

static void hms__signal_event(hms_client_t *c) {
  uint64_t one = 1;
  ssize_t w = write(c->event_fd, &one, sizeof one);
  (void)w;
}

/* Marks the connection dead (first reason wins) and wakes every waiter. Pending asynchronous calls
 * complete with the same status the next time someone polls. */
static void hms__client_kill(hms_client_t *c, hms_status_t code, const char *msg) {
  pthread_mutex_lock(&c->slots_lock);
  if (!atomic_load(&c->dead)) {
    c->dead_code = code;
    hms__strlcpy(c->dead_msg, msg, sizeof c->dead_msg);
    atomic_store(&c->dead, 1);
    shutdown(c->sock, SHUT_RDWR); /* the server drops its side at once */
    c->next_deadline = 0;         /* makes the next poll sweep every async slot */
  }
  pthread_mutex_unlock(&c->slots_lock);
  atomic_fetch_add(&c->gen, 1);
  hms__futex_wake(&c->gen, INT_MAX, 0);
  hms__signal_event(c);
}

static hms_status_t hms__client_dead_error(hms_client_t *c, hms_error_t *err) {
  pthread_mutex_lock(&c->slots_lock);
  hms_status_t code = c->dead_code;
  char msg[256];
  hms__strlcpy(msg, c->dead_msg, sizeof msg);
  pthread_mutex_unlock(&c->slots_lock);
  return hms__fail(err, code, 0, "%s", msg);
}

/* Polls the socket without blocking: a hang-up means the server process is gone. */
static void hms__client_check_alive(hms_client_t *c) {
  struct pollfd p = {.fd = c->sock, .events = POLLIN | POLLRDHUP};
  if (poll(&p, 1, 0) <= 0) return;
  if ((p.revents & POLLIN) && !(p.revents & (POLLHUP | POLLRDHUP | POLLERR)) && c->arena) {
    /* Arena traffic from the server (segment announcements, releases), not a hang-up. */
    char why[200];
    int rc = hms__arena_drain(c->arena, why, sizeof why);
    if (rc == 0) return;
    if (rc < 0) { /* the server broke the socket protocol: as good as gone */
      char msg[256];
      snprintf(msg, sizeof msg, "connection to %s@%s dropped: %s; reconnect", c->service, c->version, why);
      hms__client_kill(c, HMS_UNAVAILABLE, msg);
      return;
    }
  }
  if (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLIN)) {
    char msg[256];
    snprintf(msg, sizeof msg,
             "service %s@%s (pid %d) went away: the connection was closed (the process exited, crashed or "
             "dropped us); reconnect once it is back",
             c->service, c->version, (int)c->server_pid);
    hms__client_kill(c, HMS_UNAVAILABLE, msg);
  }
}

/* ------------------------------------------------------------------ connect */
/* The descriptor event loops watch: readable when the server rang our eventfd or when the kernel hung
 * up the connection (server death), so a loop waiting only on it never misses a dead server. */
static hms_status_t hms__watch_init(hms_client_t *c, hms_error_t *err) {
  c->watch_fd = epoll_create1(EPOLL_CLOEXEC);
  if (c->watch_fd < 0)
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, errno, "epoll_create1 failed: %s", strerror(errno));
  struct epoll_event ev = {.events = EPOLLIN};
  ev.data.fd = c->event_fd;
  if (epoll_ctl(c->watch_fd, EPOLL_CTL_ADD, c->event_fd, &ev) != 0)
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, errno, "epoll_ctl failed: %s", strerror(errno));
  ev.events = EPOLLRDHUP; /* EPOLLHUP/EPOLLERR are always reported; POLLIN is not our business here */
  ev.data.fd = c->sock;
  if (epoll_ctl(c->watch_fd, EPOLL_CTL_ADD, c->sock, &ev) != 0)
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, errno, "epoll_ctl failed: %s", strerror(errno));
  return HMS_OK;
}

static hms_status_t hms__attach(hms_client_t *c, const hms__welcome_t *w, int memfd, hms_error_t *err) {
  if (!hms__is_pow2(w->req_cap) || !hms__is_pow2(w->resp_cap) || w->req_cap < HMS_RING_MIN_BYTES ||
      w->resp_cap < HMS_RING_MIN_BYTES || w->req_cap > HMS_RING_MAX_BYTES || w->resp_cap > HMS_RING_MAX_BYTES ||
      w->table_bytes > (uint64_t)HMS_MAX_FUNCTIONS * (12 + HMS_NAME_MAX + 4) ||
      w->function_count > HMS_MAX_FUNCTIONS ||
      w->total_bytes != hms__conn_total_bytes(w->req_cap, w->resp_cap, w->table_bytes))
    return hms__fail(err, HMS_DATA_LOSS, 0, "server sent an invalid connection layout");
  struct stat st;
  int seals = fcntl(memfd, F_GET_SEALS);
  if (fstat(memfd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != w->total_bytes)
    return hms__fail(err, HMS_DATA_LOSS, 0, "server's connection memory does not match its announced size");
  /* Unsealed memory could be truncated under us, turning every read into SIGBUS. */
  if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
    return hms__fail(err, HMS_DATA_LOSS, 0, "server's connection memory is not sealed against resizing");
  void *map = mmap(NULL, w->total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (map == MAP_FAILED)
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, errno, "mmap of %llu bytes failed: %s",
                     (unsigned long long)w->total_bytes, strerror(errno));
  c->map = map;
  c->map_len = w->total_bytes;
  hms__conn_hdr_t h;
  memcpy(&h, map, sizeof h);
  if (h.magic != HMS__CONN_MAGIC || h.req_cap != w->req_cap || h.resp_cap != w->resp_cap ||
      h.table_bytes != w->table_bytes || h.total_bytes != w->total_bytes)
    return hms__fail(err, HMS_DATA_LOSS, 0, "server's connection header disagrees with its welcome");
  uint8_t *base = map;
  /* Offsets are computed here from validated sizes, never read from shared memory. */
  hms__ring_attach(&c->req, (hms__ring_ctl_t *)(base + HMS__REQ_CTL_OFFSET), base + HMS__CONN_HEADER_BYTES,
                   w->req_cap);
  hms__ring_attach(&c->resp, (hms__ring_ctl_t *)(base + HMS__RESP_CTL_OFFSET),
                   base + HMS__CONN_HEADER_BYTES + w->req_cap, w->resp_cap);
  uint64_t mreq = c->req.max_frame - HMS_FRAME_HEADER_BYTES, mresp = c->resp.max_frame - HMS_FRAME_HEADER_BYTES;
  c->max_message = mreq < mresp ? mreq : mresp;
  /* Function table: copy out, then validate each record. */
  uint64_t tb = w->table_bytes;
  uint8_t *tcopy = malloc(tb ? tb : 1);
  if (!tcopy) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
  memcpy(tcopy, base + HMS__CONN_HEADER_BYTES + w->req_cap + w->resp_cap, tb);
  uint32_t n = w->function_count;
  c->fn_names = calloc(n ? n : 1, sizeof(char *));
  c->fn_ids = calloc(n ? n : 1, sizeof(uint32_t));
  c->fn_flags = calloc(n ? n : 1, sizeof(uint32_t));
  hms_status_t rc = HMS_OK;
  if (!c->fn_names || !c->fn_ids || !c->fn_flags) rc = hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "oom");
  uint64_t off = 0;
  for (uint32_t i = 0; rc == HMS_OK && i < n; i++) {
    uint32_t rec[3];
    if (tb - off < 12) {
      rc = hms__fail(err, HMS_DATA_LOSS, 0, "server's function table is truncated");
      break;
    }
    memcpy(rec, tcopy + off, 12);
    uint64_t padded = ((uint64_t)rec[2] + 3) & ~(uint64_t)3;
    if (rec[2] == 0 || rec[2] > HMS_NAME_MAX || padded > tb - off - 12) {
      rc = hms__fail(err, HMS_DATA_LOSS, 0, "server's function table has a bad entry");
      break;
    }
    char name[HMS_NAME_MAX + 1];
    memcpy(name, tcopy + off + 12, rec[2]);
    name[rec[2]] = 0;
    if (!hms__name_valid(name)) {
      rc = hms__fail(err, HMS_DATA_LOSS, 0, "server's function table has an invalid name");
      break;
    }
    c->fn_names[i] = strdup(name);
    c->fn_ids[i] = rec[0];
    c->fn_flags[i] = rec[1];
    if (!c->fn_names[i]) rc = hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "oom");
    c->nfns = i + 1;
    off += 12 + padded;
  }
  free(tcopy);
  return rc;
}

static hms_status_t hms__connect_one(hms_node_t *node, hms_client_t *c, const char *path, const char *service,
                                     const char *version, const hms_connect_options_t *o, hms_error_t *err) {
  int64_t deadline = hms__deadline_from_timeout(o->timeout_ns < 0 ? 5000000000LL : o->timeout_ns);
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, errno, "socket() failed: %s", strerror(errno));
  c->sock = fd;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  hms__strlcpy(sa.sun_path, path, sizeof sa.sun_path);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int e = errno;
    if (e == EAGAIN)
      return hms__fail(err, HMS_UNAVAILABLE, e, "service %s@%s is not accepting connections (backlog full); retry",
                       service, version);
    return hms__fail(err, HMS_UNAVAILABLE, e, "cannot connect to %s@%s at '%s': %s", service, version, path,
                     strerror(e));
  }
  struct ucred cred;
  socklen_t cl = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0) c->server_pid = cred.pid;
  hms__hello_t hello;
  memset(&hello, 0, sizeof hello);
  hello.magic = HMS__HELLO_MAGIC;
  hello.abi = HMS_FFI_ABI_VERSION;
  hello.proto = HMS__PROTO_VERSION;
  hello.ring_bytes = o->ring_bytes;
  hms__strlcpy(hello.service, service, sizeof hello.service);
  hms__strlcpy(hello.version, version, sizeof hello.version);
  hms__strlcpy(hello.client_node, node->name, sizeof hello.client_node);
  if (hms__send_fds(fd, &hello, sizeof hello, &c->event_fd, 1) != 0)
    return hms__fail(err, HMS_UNAVAILABLE, errno, "sending the handshake to %s@%s failed: %s", service, version,
                     strerror(errno));
  hms__welcome_t w;
  int fds[2] = {-1, -1}, nfds = 0;
  for (;;) {
    int64_t left = deadline - hms__now_ns();
    if (left <= 0)
      return hms__fail(err, HMS_DEADLINE_EXCEEDED, 0,
                       "handshake with %s@%s (pid %d) timed out; is its node serving (node.serve()/start())?",
                       service, version, (int)c->server_pid);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ms = left > 100000000LL ? 100 : (int)((left + 999999) / 1000000);
    int pr = poll(&p, 1, ms);
    if (pr < 0 && errno != EINTR) return hms__fail(err, HMS_INTERNAL, errno, "poll failed: %s", strerror(errno));
    if (pr <= 0) continue;
    ssize_t n = hms__recv_fds(fd, &w, sizeof w, fds, 2, &nfds);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n == 0 || (n < 0 && errno != EMSGSIZE))
      return hms__fail(err, HMS_UNAVAILABLE, n < 0 ? errno : 0,
                       "%s@%s closed the connection during the handshake", service, version);
    if (n != (ssize_t)sizeof w || w.magic != HMS__WELCOME_MAGIC) {
      for (int i = 0; i < nfds; i++) close(fds[i]);
      return hms__fail(err, HMS_DATA_LOSS, 0, "%s@%s answered the handshake with a malformed message", service,
                       version);
    }
    break;
  }
  w.message[sizeof w.message - 1] = 0;
  if (w.status != HMS_OK) {
    for (int i = 0; i < nfds; i++) close(fds[i]);
    hms_status_t code = w.status > 0 && w.status <= HMS_UNAUTHENTICATED ? w.status : HMS_UNKNOWN;
    return hms__fail_remote(err, code, w.message, strlen(w.message));
  }
  if (w.abi != HMS_FFI_ABI_VERSION) {
    for (int i = 0; i < nfds; i++) close(fds[i]);
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0, "server ABI %u differs from ours (%u)", w.abi,
                     HMS_FFI_ABI_VERSION);
  }
  if (nfds != 2) {
    for (int i = 0; i < nfds; i++) close(fds[i]);
    return hms__fail(err, HMS_DATA_LOSS, 0, "server sent %d descriptors instead of 2", nfds);
  }
  c->bell = fds[1];
  int fl = fcntl(c->bell, F_GETFL);
  if (fl >= 0) fcntl(c->bell, F_SETFL, fl | O_NONBLOCK); /* a bogus doorbell must never block us */
  hms_status_t st = hms__attach(c, &w, fds[0], err);
  close(fds[0]);
  if (st) return st;
  hms__strlcpy(c->service, service, sizeof c->service);
  hms__strlcpy(c->version, version, sizeof c->version);
  uint8_t *base = c->map;
  c->arena = hms__arena_new(c->sock, (_Atomic uint32_t *)(base + HMS__ARENA_C2S_HINT_OFFSET),
                            (_Atomic uint32_t *)(base + HMS__ARENA_S2C_HINT_OFFSET), node->arena_quota);
  if (!c->arena) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
  return HMS_OK;
}

HMS_API hms_status_t hms_connect(hms_node_t *node, const char *service, const char *version_req,
                                 const hms_connect_options_t *opts, hms_client_t **out, hms_error_t *err) {
  if (!node || !service || !out) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "node, service and out must not be NULL");
  *out = NULL;
  if (!hms__name_valid(service))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "service name '%.64s' is invalid: use [A-Za-z0-9_.-]", service);
  hms_connect_options_t defaults;
  if (!opts) {
    hms_connect_options_init(&defaults);
    opts = &defaults;
  }
  if (opts->version < 1 || opts->version > HMS_CONNECT_OPTIONS_VERSION)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "hms_connect_options_t.version is %u; call hms_connect_options_init", opts->version);
  if (opts->ring_bytes &&
      (!hms__is_pow2(opts->ring_bytes) || opts->ring_bytes < HMS_RING_MIN_BYTES || opts->ring_bytes > HMS_RING_MAX_BYTES))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "ring_bytes %llu must be a power of two between %d and %d",
                     (unsigned long long)opts->ring_bytes, HMS_RING_MIN_BYTES, HMS_RING_MAX_BYTES);
  const char *req = version_req ? version_req : "*";
  char **paths = NULL, **versions = NULL;
  size_t n = 0;
  hms_status_t st = hms__registry_resolve(node->runtime_dir, service, req, &paths, &versions, &n, err);
  for (size_t i = 0; st == HMS_OK && i < n; i++) {
    hms_client_t *c = calloc(1, sizeof *c);
    if (!c) {
      st = hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
      break;
    }
    c->node = node;
    c->sock = c->bell = c->watch_fd = -1;
    c->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    c->done_head = c->done_tail = HMS__NO_SLOT;
    c->next_deadline = INT64_MAX;
    if (c->event_fd < 0) {
      hms__client_free(c);
      st = hms__fail(err, HMS_RESOURCE_EXHAUSTED, errno, "eventfd failed: %s", strerror(errno));
      break;
    }
    pthread_mutex_init(&c->send_lock, NULL);
    pthread_mutex_init(&c->recv_lock, NULL);
    pthread_mutex_init(&c->slots_lock, NULL);
    for (uint32_t k = 0; k < HMS__SLOTS; k++) c->free_stack[k] = HMS__SLOTS - 1 - k;
    c->free_top = HMS__SLOTS;
    hms__spin_init(&c->spin, opts->spin_ns < 0 ? node->spin_ns : opts->spin_ns);
    hms_status_t one = hms__connect_one(node, c, paths[i], service, versions[i], opts, err);
    if (one == HMS_OK) one = hms__watch_init(c, err);
    if (one == HMS_OK) {
      *out = c;
      break;
    }
    hms__client_free(c);
    /* A listener that vanished between listing and connecting: try the next candidate. */
    if (one == HMS_UNAVAILABLE && i + 1 < n) continue;
    st = one;
  }
  for (size_t i = 0; i < n; i++) {
    free(paths[i]);
    free(versions[i]);
  }
  free(paths);
  free(versions);
  if (st == HMS_OK && *out) hms__ok(err);
  return st;
}

/* ------------------------------------------------------------------ introspection */
HMS_API hms_status_t hms_client_function_id(const hms_client_t *client, const char *name, uint32_t *fn_id,
                                            hms_error_t *err) {
  if (!client || !name || !fn_id) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "client, name and fn_id must not be NULL");
  for (uint32_t i = 0; i < client->nfns; i++) {
    if (!strcmp(client->fn_names[i], name)) {
      *fn_id = client->fn_ids[i];
      hms__ok(err);
      return HMS_OK;
    }
  }
  char known[160] = "";
  for (uint32_t i = 0; i < client->nfns; i++) {
    size_t l = strlen(known);
    if (l + strlen(client->fn_names[i]) + 6 >= sizeof known) {
      snprintf(known + l, sizeof known - l, ", ...");
      break;
    }
    snprintf(known + l, sizeof known - l, "%s%s", l ? ", " : "", client->fn_names[i]);
  }
  return hms__fail(err, HMS_NOT_FOUND, 0, "%s@%s has no function '%.64s' (it has: %s)", client->service,
                   client->version, name, client->nfns ? known : "none");
}

HMS_API uint32_t hms_client_function_count(const hms_client_t *client) { return client ? client->nfns : 0; }
HMS_API hms_status_t hms_client_function_at(const hms_client_t *client, uint32_t index, const char **name,
                                            uint32_t *fn_id, uint32_t *flags) {
  if (!client || index >= client->nfns) return HMS_OUT_OF_RANGE;
  if (name) *name = client->fn_names[index];
  if (fn_id) *fn_id = client->fn_ids[index];
  if (flags) *flags = client->fn_flags[index];
  return HMS_OK;
}
HMS_API const char *hms_client_service_name(const hms_client_t *client) { return client ? client->service : ""; }
HMS_API const char *hms_client_service_version(const hms_client_t *client) { return client ? client->version : ""; }
HMS_API int32_t hms_client_server_pid(const hms_client_t *client) { return client ? client->server_pid : 0; }
HMS_API size_t hms_client_max_message(const hms_client_t *client) {
  if (!client) return 0;
  uint64_t q = hms__arena_quota(client->arena);
  return q > client->max_message ? (size_t)q : client->max_message;
}
HMS_API size_t hms_client_max_inline(const hms_client_t *client) { return client ? client->max_message : 0; }

/* ------------------------------------------------------------------ calls */
static void hms__payload_free(hms_payload_t *p) { free((void *)p->data); }

static void hms__payload_set(hms_payload_t *p, uint8_t *data, size_t len, uint32_t ct) {
  p->data = data;
  p->len = len;
  p->content_type = ct;
  p->flags = 0;
  p->release = data ? hms__payload_free : NULL;
  p->private_data = NULL;
}

/* A result's payload into the caller's: the private copy, or the arena view (moved, not copied). */
static void hms__payload_set_r(hms_payload_t *p, uint8_t *data, size_t len, uint32_t ct, hms_payload_t **aref) {
  if (*aref) {
    *p = **aref;
    p->content_type = ct;
    free(*aref);
    *aref = NULL;
    return;
  }
  hms__payload_set(p, data, len, ct);
}

typedef struct {
  hms_status_t status;
  int32_t origin;
  uint32_t ct;
  bool more; /* a stream item: more frames follow for this call */
  uint8_t *data;
  size_t len;
  hms_payload_t *aref; /* instead of data: an arena payload (zero copy) */
  char msg[256];
} hms__result_t;

static void hms__result_error(hms__result_t *r, hms_status_t code, int32_t origin, const char *msg) {
  memset(r, 0, sizeof *r);
  r->status = code;
  r->origin = origin;
  hms__strlcpy(r->msg, msg, sizeof r->msg);
}

/* Decodes a validated response frame into a private result (copying out of shared memory). An arena
 * reply becomes a view of the server's block instead (*bad set when its reference is invalid). */
static bool hms__decode_response(hms_client_t *c, const hms__frame_hdr_t *h, const uint8_t *payload,
                                 hms__result_t *r, char *bad, size_t bad_cap) {
  memset(r, 0, sizeof *r);
  if (HMS__UNLIKELY(h->flags & HMS__FRAME_F_ARENA)) {
    r->more = h->status == HMS_OK && (h->flags & HMS__FRAME_F_ITEM);
    r->status = HMS_OK;
    r->origin = HMS_ORIGIN_REMOTE;
    r->ct = h->content_type;
    hms_payload_t view;
    if (h->status != HMS_OK || hms__arena_resolve(c->arena, payload, h->payload_len, h->content_type, &view, bad,
                                                  bad_cap) != 0) {
      if (h->status != HMS_OK) snprintf(bad, bad_cap, "server sent an error reply through the arena");
      return true;
    }
    r->aref = malloc(sizeof *r->aref);
    if (!r->aref) {
      hms_payload_release(&view);
      return false;
    }
    *r->aref = view;
    r->len = view.len;
    return true;
  }
  r->more = h->status == HMS_OK && (h->flags & HMS__FRAME_F_ITEM);
  r->status = h->status;
  r->origin = HMS_ORIGIN_REMOTE;
  if (h->status < 0 || h->status > HMS_UNAUTHENTICATED) r->status = HMS_UNKNOWN;
  const uint8_t *body = payload;
  size_t blen = h->payload_len;
  if (h->status != HMS_OK) {
    uint32_t mlen = 0;
    if (blen >= 4) memcpy(&mlen, payload, 4);
    if (blen < 4 || mlen > blen - 4) {
      snprintf(r->msg, sizeof r->msg, "server sent a malformed error reply (status %d)", h->status);
      body = NULL;
      blen = 0;
    } else {
      size_t m = mlen < sizeof r->msg - 1 ? mlen : sizeof r->msg - 1;
      memcpy(r->msg, payload + 4, m);
      r->msg[m] = 0;
      body = payload + 4 + mlen;
      blen -= 4 + mlen;
    }
  }
  r->ct = h->status == HMS_OK || blen ? h->content_type : HMS_CT_NONE;
  if (blen) {
    r->data = malloc(blen);
    if (!r->data) return false;
    memcpy(r->data, body, blen);
    r->len = blen;
  }
  return true;
}

static void hms__completion_from(hms_completion_t *out, uint64_t id, void *ud, hms__result_t *r) {
  out->call_id = id;
  out->status = r->status;
  out->origin = r->origin;
  out->user_data = ud;
  hms__payload_set_r(&out->payload, r->data, r->len, r->ct, &r->aref);
  memcpy(out->message, r->msg, sizeof out->message);
  r->data = NULL;
}

/* Callbacks collected under slots_lock, run after it is released. */
typedef struct {
  hms_completion_fn cb;
  hms_completion_t comp;
} hms__pending_cb_t;

static void hms__slot_free_locked(hms_client_t *c, uint32_t idx) {
  hms__slot_t *s = &c->slots[idx];
  free(s->data);
  s->data = NULL;
  hms__aref_drop(&s->aref);
  while (s->qhead) {
    hms__item_t *it = s->qhead;
    s->qhead = it->next;
    free(it->data);
    hms__aref_drop(&it->aref);
    free(it);
  }
  s->qtail = NULL;
  s->state = HMS__SLOT_FREE;
  s->id = 0;
  c->free_stack[c->free_top++] = idx;
}

/* Finishes slot idx with result r (ownership of r->data moves). Called with slots_lock held.
 * Returns true when a callback must run (filled into *pcb) after unlocking. */
static bool hms__complete_locked(hms_client_t *c, uint32_t idx, hms__result_t *r, hms__pending_cb_t *pcb,
                                 bool *signal) {
  hms__slot_t *s = &c->slots[idx];
  if (s->mode == HMS__MODE_STREAM) {
    hms__item_t *it = calloc(1, sizeof *it);
    if (!it) return false; /* the item is lost; the consumer sees the stream end at its deadline */
    it->status = r->status;
    it->origin = r->origin;
    it->ct = r->ct;
    it->more = r->more;
    it->data = r->data;
    it->len = r->len;
    it->aref = r->aref;
    memcpy(it->msg, r->msg, sizeof it->msg);
    r->data = NULL;
    r->aref = NULL;
    if (s->qtail)
      s->qtail->next = it;
    else
      s->qhead = it;
    s->qtail = it;
    if (!it->more) s->state = HMS__SLOT_DONE; /* the final frame: nothing more will come */
    return false;
  }
  if (s->mode == HMS__MODE_CALLBACK) {
    pcb->cb = s->cb;
    hms__completion_from(&pcb->comp, s->id, s->user_data, r);
    c->async_pending--;
    hms__slot_free_locked(c, idx);
    return true;
  }
  s->status = r->status;
  s->origin = r->origin;
  s->ct = r->ct;
  s->data = r->data;
  s->len = r->len;
  s->aref = r->aref;
  r->data = NULL;
  r->aref = NULL;
  memcpy(s->msg, r->msg, sizeof s->msg);
  s->state = HMS__SLOT_DONE;
  if (s->mode == HMS__MODE_QUEUE) {
    c->async_pending--;
    s->next_done = HMS__NO_SLOT;
    if (c->done_tail == HMS__NO_SLOT) {
      c->done_head = idx;
      *signal = true; /* the queue went from empty to non-empty */
    } else {
      c->slots[c->done_tail].next_done = idx;
    }
    c->done_tail = idx;
  }
  return false;
}

/* Hands a reply to whoever waits for it; drops it when nobody does (the call timed out or was
 * cancelled, and the slot may already serve another call: the full id must match). */
static void hms__deposit(hms_client_t *c, uint64_t id, hms__result_t *r) {
  uint32_t idx = (uint32_t)(id & (HMS__SLOTS - 1));
  hms__pending_cb_t pcb;
  bool run = false, signal = false;
  pthread_mutex_lock(&c->slots_lock);
  hms__slot_t *s = &c->slots[idx];
  if (id != 0 && s->id == id && s->state == HMS__SLOT_WAITING) run = hms__complete_locked(c, idx, r, &pcb, &signal);
  pthread_mutex_unlock(&c->slots_lock);
  free(r->data);
  r->data = NULL;
  hms__aref_drop(&r->aref); /* nobody waits for it: the block goes back to the server */
  if (signal) hms__signal_event(c);
  if (run) pcb.cb(&pcb.comp);
}

/* Completes async calls whose deadline passed, and every pending call once the connection is dead. */
static void hms__sweep(hms_client_t *c, int64_t now) {
  if (now < c->next_deadline) return; /* racy read: a missed sweep happens on the next poll */
  hms__pending_cb_t cbs[16];
  int ncb;
  bool signal = false;
  do {
    ncb = 0;
    pthread_mutex_lock(&c->slots_lock);
    bool dead = atomic_load(&c->dead);
    int64_t next = INT64_MAX;
    for (uint32_t i = 0; i < HMS__SLOTS && ncb < 16; i++) {
      hms__slot_t *s = &c->slots[i];
      if (s->state != HMS__SLOT_WAITING) continue;
      if (s->mode == HMS__MODE_SYNC || s->mode == HMS__MODE_STREAM) continue; /* they time themselves out */
      hms__result_t r;
      if (dead) {
        hms__result_error(&r, c->dead_code, HMS_ORIGIN_LOCAL, c->dead_msg);
      } else if (s->deadline <= now) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s@%s did not answer call %llu in time", c->service, c->version,
                 (unsigned long long)s->id);
        hms__result_error(&r, HMS_DEADLINE_EXCEEDED, HMS_ORIGIN_LOCAL, msg);
      } else {
        if (s->deadline < next) next = s->deadline;
        continue;
      }
      if (hms__complete_locked(c, i, &r, &cbs[ncb], &signal)) ncb++;
    }
    c->next_deadline = ncb == 16 ? 0 : (dead ? INT64_MAX : next);
    pthread_mutex_unlock(&c->slots_lock);
    for (int k = 0; k < ncb; k++) cbs[k].cb(&cbs[k].comp);
  } while (ncb == 16);
  if (signal) hms__signal_event(c);
}

enum { HMS__WAIT_GOT = 0, HMS__WAIT_TIMEOUT = 1, HMS__WAIT_DEAD = 2, HMS__WAIT_EMPTY = 3 };

/* After consuming replies: wake a server that waits for room, whether it sleeps in epoll (between
 * calls) or on the ring's futex (a stream handler producing faster than we consume). */
static void hms__consumed_reply(hms_client_t *c) {
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&c->resp.ctl->producer_waiting, memory_order_relaxed)) {
    atomic_store(&c->resp.ctl->producer_waiting, 0);
    atomic_fetch_add_explicit(&c->resp.ctl->space_seq, 1, memory_order_release);
    hms__futex_wake(&c->resp.ctl->space_seq, INT_MAX, 1);
    uint64_t one = 1;
    ssize_t wr = write(c->bell, &one, sizeof one);
    (void)wr;
  }
}

/* Reads one frame if there is one. Returns HMS__WAIT_GOT when it was my_id's reply (into *mine),
 * HMS__WAIT_TIMEOUT when it handled someone else's (call again), HMS__WAIT_EMPTY, or HMS__WAIT_DEAD.
 * Called with recv_lock held. */
static int hms__read_one(hms_client_t *c, uint64_t my_id, hms__result_t *mine) {
  hms__frame_hdr_t h;
  const uint8_t *payload;
  char why[200];
  int rc = hms__ring_peek(&c->resp, &h, &payload, why, sizeof why);
  if (rc == HMS__RING_EMPTY) return HMS__WAIT_EMPTY;
  if (rc == HMS__RING_OK && h.kind != HMS__FRAME_RESPONSE) {
    snprintf(why, sizeof why, "unexpected frame kind %u in the response ring", h.kind);
    rc = HMS__RING_CORRUPT;
  }
  if (rc == HMS__RING_CORRUPT) {
    char msg[256];
    snprintf(msg, sizeof msg, "connection to %s@%s dropped: %s", c->service, c->version, why);
    hms__client_kill(c, HMS_DATA_LOSS, msg);
    return HMS__WAIT_DEAD;
  }
  hms__result_t r;
  why[0] = 0;
  bool ok = hms__decode_response(c, &h, payload, &r, why, sizeof why);
  hms__ring_consume(&c->resp, &h);
  hms__consumed_reply(c);
  if (HMS__UNLIKELY(why[0])) { /* an arena reference we must not use */
    char msg[256];
    snprintf(msg, sizeof msg, "connection to %s@%s dropped: %s", c->service, c->version, why);
    hms__client_kill(c, HMS_DATA_LOSS, msg);
    return HMS__WAIT_DEAD;
  }
  if (!ok) {
    hms__result_error(&r, HMS_RESOURCE_EXHAUSTED, HMS_ORIGIN_LOCAL, "out of memory copying a reply");
  }
  if (h.call_id == 0 && h.status != HMS_OK) { /* the server is dropping us and says why */
    free(r.data);
    hms__aref_drop(&r.aref);
    hms__client_kill(c, r.status, r.msg);
    return HMS__WAIT_DEAD;
  }
  if (my_id != 0 && h.call_id == my_id) {
    *mine = r;
    return HMS__WAIT_GOT;
  }
  hms__deposit(c, h.call_id, &r);
  atomic_fetch_add(&c->gen, 1);
  if (atomic_load(&c->followers)) hms__futex_wake(&c->gen, INT_MAX, 0);
  return HMS__WAIT_TIMEOUT;
}

/* Reader role: read replies until our own arrives. Called with recv_lock held. */
static int hms__read_until(hms_client_t *c, uint64_t my_id, hms__result_t *mine, int64_t deadline) {
  int64_t start = hms__now_ns();
  int64_t spin_until = start + c->spin.limit_ns;
  bool slept = c->spin.limit_ns <= 0;
  uint32_t spins = 0;
  for (;;) {
    int rc = hms__read_one(c, my_id, mine);
    if (rc == HMS__WAIT_GOT) {
      if (c->spin.budget_ns > 0) hms__spin_feedback(&c->spin, !slept);
      return rc;
    }
    if (rc == HMS__WAIT_DEAD) return rc;
    if (rc == HMS__WAIT_TIMEOUT) continue; /* someone else's reply: look again at once */
    /* Empty. Spin with one pause per look (a pause is ~30 ns here; batching them only adds
     * latency) and read the clock every 32 looks. */
    if (!slept && ++spins & 31) {
      hms__cpu_relax();
      continue;
    }
    if (atomic_load_explicit(&c->dead, memory_order_acquire)) return HMS__WAIT_DEAD;
    int64_t now = hms__now_ns();
    if (now >= deadline) return HMS__WAIT_TIMEOUT;
    if (c->async_pending) hms__sweep(c, now);
    if (!slept && now < spin_until) continue;
    slept = true;
    uint32_t seq = atomic_load_explicit(&c->resp.ctl->data_seq, memory_order_acquire);
    atomic_fetch_or_explicit(&c->resp.ctl->consumer_sleeping, HMS__SLEEP_FUTEX, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    if (hms__ring_has_data(&c->resp)) {
      atomic_fetch_and_explicit(&c->resp.ctl->consumer_sleeping, ~(uint32_t)HMS__SLEEP_FUTEX, memory_order_relaxed);
      continue;
    }
    int64_t slice = deadline - now < HMS__SLICE_NS ? deadline - now : HMS__SLICE_NS;
    if (c->next_deadline - now < slice && c->next_deadline > now) slice = c->next_deadline - now;
    int wr = hms__futex_wait(&c->resp.ctl->data_seq, seq, slice, 1);
    atomic_fetch_and_explicit(&c->resp.ctl->consumer_sleeping, ~(uint32_t)HMS__SLEEP_FUTEX, memory_order_relaxed);
    if (wr == ETIMEDOUT) hms__client_check_alive(c);
  }
}

static hms_status_t hms__finish(hms__result_t *r, hms_payload_t *resp, hms_error_t *err) {
  hms__payload_set_r(resp, r->data, r->len, r->ct, &r->aref);
  r->data = NULL;
  if (r->status == HMS_OK) {
    hms__ok(err);
    return HMS_OK;
  }
  if (r->origin == HMS_ORIGIN_LOCAL) return hms__fail(err, r->status, 0, "%s", r->msg);
  return hms__fail_remote(err, r->status, r->msg, strlen(r->msg));
}

/* Reserves a slot. Returns HMS__NO_SLOT when 1024 calls are in flight. */
static uint32_t hms__slot_take(hms_client_t *c, int mode, int64_t deadline, hms_completion_fn cb, void *ud,
                               uint64_t *id_out) {
  pthread_mutex_lock(&c->slots_lock);
  if (c->free_top == 0) {
    pthread_mutex_unlock(&c->slots_lock);
    return HMS__NO_SLOT;
  }
  uint32_t idx = c->free_stack[--c->free_top];
  uint64_t id = (++c->seq << HMS__SLOT_BITS) | idx;
  hms__slot_t *s = &c->slots[idx];
  s->id = id;
  s->state = HMS__SLOT_WAITING;
  s->mode = mode;
  s->deadline = deadline;
  s->cb = cb;
  s->user_data = ud;
  s->qhead = s->qtail = NULL;
  if (mode == HMS__MODE_QUEUE || mode == HMS__MODE_CALLBACK) {
    c->async_pending++;
    if (deadline < c->next_deadline) c->next_deadline = deadline;
  }
  pthread_mutex_unlock(&c->slots_lock);
  *id_out = id;
  return idx;
}

static void hms__slot_release(hms_client_t *c, uint32_t idx) {
  pthread_mutex_lock(&c->slots_lock);
  int mode = c->slots[idx].mode;
  if ((mode == HMS__MODE_QUEUE || mode == HMS__MODE_CALLBACK) && c->slots[idx].state == HMS__SLOT_WAITING)
    c->async_pending--;
  hms__slot_free_locked(c, idx);
  pthread_mutex_unlock(&c->slots_lock);
}

static void hms__ring_server(hms_client_t *c) {
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&c->req.ctl->consumer_sleeping, memory_order_relaxed)) {
    uint64_t one = 1;
    ssize_t wr = write(c->bell, &one, sizeof one);
    (void)wr;
  }
}

/* Writes one frame into the request ring, waiting for space until the deadline. Called with
 * send_lock held; rings the server's doorbell before waiting so a sleeping server drains the ring. */
static hms_status_t hms__send_frame_x(hms_client_t *c, uint16_t kind, uint16_t flags, uint32_t fn_id, uint32_t ct,
                                      uint64_t id, int64_t deadline, const void *data, size_t len, bool flush,
                                      hms_error_t *err) {
  uint8_t *f = NULL;
  char why[200];
  int rr;
  hms__aref_wire_t wire;
  bool copied = false;
  if (HMS__UNLIKELY(len > c->max_message && !(flags & HMS__FRAME_F_ARENA))) {
    /* Too big for a ring frame: one copy into our arena, the frame carries the reference. */
    hms_status_t ast = hms__arena_copy_in(c->arena, data, len, NULL, 0, &wire, err);
    if (ast) return ast;
    data = &wire;
    len = sizeof wire;
    flags |= HMS__FRAME_F_ARENA;
    copied = true;
  }
  for (;;) {
    rr = hms__ring_reserve(&c->req, len, &f, why, sizeof why);
    if (rr != HMS__RING_FULL) break;
    hms__ring_flush(&c->req); /* frames written but not yet published must reach the server first */
    if (atomic_load(&c->dead) || hms__now_ns() >= deadline) break;
    uint32_t seq = atomic_load_explicit(&c->req.ctl->space_seq, memory_order_acquire);
    atomic_store(&c->req.ctl->producer_waiting, 1);
    hms__ring_server(c); /* includes the fence that orders producer_waiting before the re-check */
    uint64_t fb;
    if (hms__ring_free(&c->req, &fb, why, sizeof why) == HMS__RING_OK && fb >= 2 * c->req.max_frame) continue;
    int64_t left = deadline - hms__now_ns();
    if (hms__futex_wait(&c->req.ctl->space_seq, seq, left < HMS__SLICE_NS ? left : HMS__SLICE_NS, 1) == ETIMEDOUT)
      hms__client_check_alive(c);
  }
  if (rr != HMS__RING_OK) {
    if (copied) hms__arena_unsend(c->arena, &wire); /* never reached the server */
    if (rr == HMS__RING_CORRUPT) {
      char msg[256];
      snprintf(msg, sizeof msg, "connection to %s@%s dropped: %s", c->service, c->version, why);
      hms__client_kill(c, HMS_DATA_LOSS, msg);
    }
    if (atomic_load(&c->dead)) return hms__client_dead_error(c, err);
    return hms__fail(err, HMS_DEADLINE_EXCEEDED, 0, "deadline expired while the request ring of %s@%s was full",
                     c->service, c->version);
  }
  hms__frame_hdr_t h;
  h.len = (uint32_t)hms__frame_bytes(len);
  h.kind = kind;
  h.flags = flags | (hms__tls_trace_flags ? HMS__FRAME_F_TRACE_SAMPLED : 0);
  h.fn_id = fn_id;
  h.content_type = ct;
  h.call_id = id;
  h.deadline_ns = deadline == INT64_MAX ? 0 : deadline;
  h.status = 0;
  h.payload_len = (uint32_t)len;
  memcpy(h.trace_id, hms__tls_trace_id, 16);
  memcpy(h.span_id, hms__tls_span_id, 8);
  memcpy(f, &h, sizeof h);
  if (len) memcpy(f + sizeof h, data, len);
  if (flush)
    hms__ring_publish(&c->req, h.len);
  else
    c->req.pos += h.len; /* published by the caller's hms__ring_flush, once for many frames */
  return HMS_OK;
}

static hms_status_t hms__send_frame(hms_client_t *c, uint16_t kind, uint16_t flags, uint32_t fn_id, uint32_t ct,
                                    uint64_t id, int64_t deadline, const void *data, size_t len, hms_error_t *err) {
  return hms__send_frame_x(c, kind, flags, fn_id, ct, id, deadline, data, len, true, err);
}

static hms_status_t hms__check_request(hms_client_t *c, const char *data, size_t len, hms_error_t *err) {
  if (len && !data) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "request data is NULL but len is %zu", len);
  if (len > c->max_message && len > hms_client_max_message(c))
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, 0,
                     "request of %zu bytes exceeds this connection's max message (its arena quota) of %zu bytes; "
                     "raise the quota (hms_client_set_arena_quota / arena_quota=) or split the payload",
                     len, hms_client_max_message(c));
  if (atomic_load_explicit(&c->dead, memory_order_acquire)) return hms__client_dead_error(c, err);
  return HMS_OK;
}

/* Waits for the reply of a SYNC slot: be the reader if nobody is, else wait for the reader to hand
 * the reply over. Frees the slot. */
static hms_status_t hms__wait_slot(hms_client_t *c, uint32_t idx, uint64_t id, int64_t deadline,
                                   hms__result_t *out) {
  for (;;) {
    uint32_t g = atomic_load_explicit(&c->gen, memory_order_acquire);
    pthread_mutex_lock(&c->slots_lock);
    hms__slot_t *s = &c->slots[idx];
    if (s->state == HMS__SLOT_DONE) {
      memset(out, 0, sizeof *out);
      out->status = s->status;
      out->origin = s->origin;
      out->ct = s->ct;
      out->data = s->data;
      out->len = s->len;
      out->aref = s->aref;
      memcpy(out->msg, s->msg, sizeof out->msg);
      s->data = NULL;
      s->aref = NULL;
      hms__slot_free_locked(c, idx);
      pthread_mutex_unlock(&c->slots_lock);
      return HMS_OK;
    }
    pthread_mutex_unlock(&c->slots_lock);
    if (pthread_mutex_trylock(&c->recv_lock) == 0) {
      int w = hms__read_until(c, id, out, deadline);
      pthread_mutex_unlock(&c->recv_lock);
      atomic_fetch_add(&c->gen, 1);
      if (atomic_load(&c->followers)) hms__futex_wake(&c->gen, INT_MAX, 0);
      if (w == HMS__WAIT_GOT) {
        hms__slot_release(c, idx);
        return HMS_OK;
      }
      if (w == HMS__WAIT_DEAD) {
        hms__slot_release(c, idx);
        hms__result_error(out, c->dead_code, HMS_ORIGIN_LOCAL, c->dead_msg);
        return HMS_OK;
      }
      /* Timeout: our reply may have been handed to the slot by an earlier reader; check once more. */
      pthread_mutex_lock(&c->slots_lock);
      bool done = c->slots[idx].state == HMS__SLOT_DONE;
      pthread_mutex_unlock(&c->slots_lock);
      if (done) continue;
      hms__slot_release(c, idx);
      char msg[256];
      snprintf(msg, sizeof msg, "%s@%s did not answer call %llu in time", c->service, c->version,
               (unsigned long long)id);
      hms__result_error(out, HMS_DEADLINE_EXCEEDED, HMS_ORIGIN_LOCAL, msg);
      return HMS_OK;
    }
    if (atomic_load_explicit(&c->dead, memory_order_acquire)) {
      hms__slot_release(c, idx);
      hms__result_error(out, c->dead_code, HMS_ORIGIN_LOCAL, c->dead_msg);
      return HMS_OK;
    }
    int64_t now = hms__now_ns();
    if (now >= deadline) {
      hms__slot_release(c, idx);
      char msg[256];
      snprintf(msg, sizeof msg, "%s@%s did not answer call %llu in time", c->service, c->version,
               (unsigned long long)id);
      hms__result_error(out, HMS_DEADLINE_EXCEEDED, HMS_ORIGIN_LOCAL, msg);
      return HMS_OK;
    }
    atomic_fetch_add(&c->followers, 1);
    int64_t left = deadline - now;
    hms__futex_wait(&c->gen, g, left < HMS__SLICE_NS ? left : HMS__SLICE_NS, 0);
    atomic_fetch_sub(&c->followers, 1);
  }
}

HMS_API hms_status_t hms_call(hms_client_t *client, uint32_t fn_id, const hms_payload_t *req,
                              hms_payload_t *resp, int64_t timeout_ns, hms_error_t *err) {
  if (resp) hms__payload_set(resp, NULL, 0, HMS_CT_NONE);
  if (!client || !resp) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "client and resp must not be NULL");
  hms_client_t *c = client;
  const char *data = req ? req->data : NULL;
  size_t len = req ? req->len : 0;
  uint32_t ct = req ? req->content_type : HMS_CT_NONE;
  hms_status_t st = hms__check_request(c, data, len, err);
  if (st) return st;
  int64_t deadline = hms__deadline_from_timeout(timeout_ns);
  uint64_t id;
  uint16_t flags = 0;
  hms__aref_wire_t wire;
  if (HMS__UNLIKELY(len > c->max_message)) {
    /* The one copy into the arena happens before send_lock: other threads' sends do not wait for it. */
    st = hms__arena_copy_in(c->arena, data, len, NULL, 0, &wire, err);
    if (st) return st;
    data = (const char *)&wire;
    len = sizeof wire;
    flags = HMS__FRAME_F_ARENA;
  }
  uint32_t idx = hms__slot_take(c, HMS__MODE_SYNC, deadline, NULL, NULL, &id);
  if (idx == HMS__NO_SLOT) {
    if (flags) hms__arena_unsend(c->arena, &wire);
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, 0, "more than %d calls in flight on one client", HMS__SLOTS);
  }
  pthread_mutex_lock(&c->send_lock);
  st = hms__send_frame(c, HMS__FRAME_REQUEST, flags, fn_id, ct, id, deadline, data, len, err);
  if (st == HMS_OK) hms__ring_server(c);
  pthread_mutex_unlock(&c->send_lock);
  if (st) {
    if (flags) hms__arena_unsend(c->arena, &wire);
    hms__slot_release(c, idx);
    return st;
  }
  hms__result_t r;
  hms__wait_slot(c, idx, id, deadline, &r);
  return hms__finish(&r, resp, err);
}

HMS_API hms_status_t hms_call_bytes(hms_client_t *client, uint32_t fn_id, const char *data, size_t len,
                                    uint32_t content_type, hms_payload_t *resp, int64_t timeout_ns,
                                    hms_error_t *err) {
  hms_payload_t req = {.data = data, .len = len, .content_type = content_type};
  return hms_call(client, fn_id, &req, resp, timeout_ns, err);
}

HMS_API hms_status_t hms_call_submit(hms_client_t *client, uint32_t fn_id, const char *data, size_t len,
                                     uint32_t content_type, uint32_t flags, int64_t timeout_ns,
                                     hms_completion_fn callback, void *user_data, uint64_t *call_id,
                                     hms_error_t *err) {
  if (call_id) *call_id = 0;
  if (!client) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "client is NULL");
  hms_client_t *c = client;
  hms_status_t st = hms__check_request(c, data, len, err);
  if (st) return st;
  int64_t deadline = hms__deadline_from_timeout(timeout_ns);
  bool oneway = (flags & HMS_CALL_ONEWAY) != 0;
  uint64_t id = 0;
  uint32_t idx = HMS__NO_SLOT;
  if (!oneway) {
    idx = hms__slot_take(c, callback ? HMS__MODE_CALLBACK : HMS__MODE_QUEUE, deadline, callback, user_data, &id);
    if (idx == HMS__NO_SLOT)
      return hms__fail(err, HMS_RESOURCE_EXHAUSTED, 0,
                       "more than %d calls in flight on one client; harvest completions first", HMS__SLOTS);
  }
  pthread_mutex_lock(&c->send_lock);
  st = hms__send_frame(c, HMS__FRAME_REQUEST, oneway ? HMS__FRAME_F_ONEWAY : 0, fn_id, content_type, id, deadline,
                       data, len, err);
  if (st == HMS_OK) hms__ring_server(c);
  pthread_mutex_unlock(&c->send_lock);
  if (st) {
    if (idx != HMS__NO_SLOT) hms__slot_release(c, idx);
    return st;
  }
  if (call_id) *call_id = id;
  hms__ok(err);
  return HMS_OK;
}

HMS_API int hms_client_event_fd(const hms_client_t *client) { return client ? client->watch_fd : -1; }

/* Pops up to max finished QUEUE-mode completions. */
static size_t hms__harvest(hms_client_t *c, hms_completion_t *out, size_t max) {
  size_t n = 0;
  pthread_mutex_lock(&c->slots_lock);
  while (n < max && c->done_head != HMS__NO_SLOT) {
    uint32_t idx = c->done_head;
    hms__slot_t *s = &c->slots[idx];
    c->done_head = s->next_done;
    if (c->done_head == HMS__NO_SLOT) c->done_tail = HMS__NO_SLOT;
    hms__result_t r = {.status = s->status, .origin = s->origin, .ct = s->ct, .data = s->data, .len = s->len,
                       .aref = s->aref};
    memcpy(r.msg, s->msg, sizeof r.msg);
    s->data = NULL;
    s->aref = NULL;
    hms__completion_from(&out[n++], s->id, s->user_data, &r);
    hms__slot_free_locked(c, idx);
  }
  pthread_mutex_unlock(&c->slots_lock);
  return n;
}

HMS_API hms_status_t hms_client_poll(hms_client_t *client, hms_completion_t *out, size_t max, size_t *count,
                                     int64_t timeout_ns, hms_error_t *err) {
  if (count) *count = 0;
  if (!client || !count || (max && !out))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "client, count and out must not be NULL");
  hms_client_t *c = client;
  int64_t deadline = hms__deadline_from_timeout(timeout_ns);
  uint64_t drain;
  bool spun = false;
  while (read(c->event_fd, &drain, sizeof drain) > 0) {
  }
  for (;;) {
    /* Clear our eventfd request first: the server only writes it while we are about to sleep. */
    atomic_fetch_and_explicit(&c->resp.ctl->consumer_sleeping, ~(uint32_t)HMS__SLEEP_EVENTFD, memory_order_relaxed);
    if (pthread_mutex_trylock(&c->recv_lock) == 0) {
      int rc;
      int budget = 4096;
      do {
        rc = hms__read_one(c, 0, NULL);
      } while (rc == HMS__WAIT_TIMEOUT && --budget);
      pthread_mutex_unlock(&c->recv_lock);
      atomic_fetch_add(&c->gen, 1);
      if (atomic_load(&c->followers)) hms__futex_wake(&c->gen, INT_MAX, 0);
    }
    int64_t now = hms__now_ns();
    hms__sweep(c, now);
    size_t n = max ? hms__harvest(c, out, max) : 0;
    if (n) {
      *count = n;
      pthread_mutex_lock(&c->slots_lock);
      bool more = c->done_head != HMS__NO_SLOT;
      pthread_mutex_unlock(&c->slots_lock);
      if (more) hms__signal_event(c); /* keep the event fd readable while completions wait */
      hms__ok(err);
      return HMS_OK;
    }
    if (atomic_load(&c->dead)) {
      pthread_mutex_lock(&c->slots_lock);
      uint32_t pending = c->async_pending;
      pthread_mutex_unlock(&c->slots_lock);
      if (!pending) return hms__client_dead_error(c, err);
      pthread_mutex_lock(&c->slots_lock);
      c->next_deadline = 0; /* the sweep completes them */
      pthread_mutex_unlock(&c->slots_lock);
      continue;
    }
    /* Nothing yet. Spin first (bounded by the client's spin budget): a reply that is microseconds
     * away costs no wake-up at all. */
    if (!spun && timeout_ns != 0 && c->spin.limit_ns > 0) {
      spun = true;
      int64_t until = now + (deadline - now < c->spin.limit_ns ? deadline - now : c->spin.limit_ns);
      uint32_t k = 0;
      while (!hms__ring_has_data(&c->resp) && c->done_head == HMS__NO_SLOT && !atomic_load(&c->dead)) {
        hms__cpu_relax();
        if ((++k & 31) == 0 && hms__now_ns() >= until) break;
      }
      continue;
    }
    /* Nothing yet: ask the server to ring our eventfd, then look once more. */
    atomic_fetch_or_explicit(&c->resp.ctl->consumer_sleeping, HMS__SLEEP_EVENTFD, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    if (hms__ring_has_data(&c->resp)) continue;
    if (now >= deadline) {
      /* About to leave the caller waiting on the event fd: if it is readable because the server hung
       * up, fail the pending calls now instead of leaving the loop to spin on a level-triggered fd. */
      if (!atomic_load(&c->dead)) hms__client_check_alive(c);
      if (atomic_load(&c->dead)) continue;
      hms__ok(err);
      return HMS_OK; /* armed: the event fd fires on the next reply */
    }
    int64_t wait = deadline - now;
    if (wait > HMS__SLICE_NS) wait = HMS__SLICE_NS;
    if (c->next_deadline > now && c->next_deadline - now < wait) wait = c->next_deadline - now;
    struct pollfd p = {.fd = c->event_fd, .events = POLLIN};
    int ms = (int)((wait + 999999) / 1000000);
    int pr = poll(&p, 1, ms);
    if (pr > 0)
      while (read(c->event_fd, &drain, sizeof drain) > 0) {
      }
    else if (pr == 0)
      hms__client_check_alive(c);
  }
}

HMS_API hms_status_t hms_call_cancel(hms_client_t *client, uint64_t call_id, hms_error_t *err) {
  if (!client) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "client is NULL");
  hms_client_t *c = client;
  uint32_t idx = (uint32_t)(call_id & (HMS__SLOTS - 1));
  hms__pending_cb_t pcb;
  bool run = false, signal = false, found = false;
  pthread_mutex_lock(&c->slots_lock);
  hms__slot_t *s = &c->slots[idx];
  if (call_id != 0 && s->id == call_id && s->state == HMS__SLOT_WAITING && s->mode != HMS__MODE_SYNC) {
    hms__result_t r;
    hms__result_error(&r, HMS_CANCELLED, HMS_ORIGIN_LOCAL, "call cancelled by the caller");
    run = hms__complete_locked(c, idx, &r, &pcb, &signal);
    found = true;
  }
  pthread_mutex_unlock(&c->slots_lock);
  if (signal) hms__signal_event(c);
  if (run) pcb.cb(&pcb.comp);
  if (!found)
    return hms__fail(err, HMS_NOT_FOUND, 0, "call %llu is not in flight (already completed?)",
                     (unsigned long long)call_id);
  /* Tell the server; if the ring is full, the cancel is best effort (the reply is dropped anyway). */
  if (!atomic_load(&c->dead)) {
    hms_error_t e2;
    pthread_mutex_lock(&c->send_lock);
    if (hms__send_frame(c, HMS__FRAME_CANCEL, 0, 0, HMS_CT_NONE, call_id, hms__now_ns() + 100000000LL, NULL, 0,
                        &e2) == HMS_OK) {
      atomic_fetch_add_explicit(&c->req.ctl->cancels, 1, memory_order_release); /* tells the server to look */
      hms__ring_server(c);
    }
    pthread_mutex_unlock(&c->send_lock);
  }
  hms__ok(err);
  return HMS_OK;
}

HMS_API hms_status_t hms_call_batch(hms_client_t *client, const hms_batch_item_t *items, size_t count,
                                    uint32_t flags, hms_completion_t *out, int64_t timeout_ns,
                                    hms_error_t *err) {
  bool oneway = (flags & HMS_CALL_ONEWAY) != 0;
  if (!client || (count && !items) || (!oneway && count && !out))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "client, items and out must not be NULL");
  hms_client_t *c = client;
  int64_t deadline = hms__deadline_from_timeout(timeout_ns);
  for (size_t i = 0; i < count; i++) {
    hms_status_t st = hms__check_request(c, items[i].data, items[i].len, err);
    if (st) return st;
  }
  enum { CHUNK = 512 }; /* slots are finite: send and collect in chunks */
  uint32_t idx[CHUNK];
  uint64_t ids[CHUNK];
  hms_status_t failure = HMS_OK;
  hms_error_t ferr;
  memset(&ferr, 0, sizeof ferr);
  for (size_t base = 0; base < count; base += CHUNK) {
    size_t n = count - base < CHUNK ? count - base : CHUNK;
    size_t sent = 0;
    pthread_mutex_lock(&c->send_lock);
    for (; sent < n && failure == HMS_OK; sent++) {
      const hms_batch_item_t *it = &items[base + sent];
      ids[sent] = 0;
      idx[sent] = HMS__NO_SLOT;
      if (!oneway) {
        idx[sent] = hms__slot_take(c, HMS__MODE_SYNC, deadline, NULL, NULL, &ids[sent]);
        if (idx[sent] == HMS__NO_SLOT) {
          failure = hms__fail(&ferr, HMS_RESOURCE_EXHAUSTED, 0, "more than %d calls in flight on one client",
                              HMS__SLOTS);
          break;
        }
      }
      hms_status_t st = hms__send_frame_x(c, HMS__FRAME_REQUEST, oneway ? HMS__FRAME_F_ONEWAY : 0, it->fn_id,
                                          it->content_type, ids[sent], deadline, it->data, it->len, false, &ferr);
      if (st) {
        if (idx[sent] != HMS__NO_SLOT) hms__slot_release(c, idx[sent]);
        failure = st;
        break;
      }
    }
    hms__ring_flush(&c->req);
    hms__ring_server(c); /* one publication and one wake-up for the whole chunk */
    pthread_mutex_unlock(&c->send_lock);
    if (!oneway) {
      for (size_t k = 0; k < n; k++) {
        hms__result_t r;
        if (k < sent)
          hms__wait_slot(c, idx[k], ids[k], deadline, &r);
        else
          hms__result_error(&r, failure, HMS_ORIGIN_LOCAL, ferr.message);
        hms__completion_from(&out[base + k], ids[k], NULL, &r);
      }
    }
    if (failure) {
      for (size_t k = base + n; !oneway && k < count; k++) {
        hms__result_t r;
        hms__result_error(&r, failure, HMS_ORIGIN_LOCAL, ferr.message);
        hms__completion_from(&out[k], 0, NULL, &r);
      }
      if (err) *err = ferr;
      return failure;
    }
  }
  hms__ok(err);
  return HMS_OK;
}

HMS_API hms_status_t hms_call_batch_packed(hms_client_t *client, uint32_t fn_id, uint32_t content_type,
                                           const char *data, const size_t *lens, size_t count, uint32_t flags,
                                           hms_completion_t *out, int64_t timeout_ns, hms_error_t *err) {
  if (count && (!lens || !data)) {
    bool any = false;
    for (size_t i = 0; lens && i < count; i++) any |= lens[i] != 0;
    if (!lens || any) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "data and lens must not be NULL");
  }
  hms_batch_item_t *items = malloc((count ? count : 1) * sizeof *items);
  if (!items) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory for %zu batch items", count);
  size_t off = 0;
  for (size_t i = 0; i < count; i++) {
    items[i] = (hms_batch_item_t){fn_id, content_type, data ? data + off : NULL, lens[i]};
    off += lens[i];
  }
  hms_status_t st = hms_call_batch(client, items, count, flags, out, timeout_ns, err);
  free(items);
  return st;
}

/* ------------------------------------------------------------------ server streams (consumer side) */
struct hms_stream_s {
  hms_client_t *client;
  uint32_t idx;
  uint64_t id;
  int64_t deadline;
  uint32_t flags;    /* HMS_STREAM_* */
  bool ended;        /* the final frame was seen */
  hms_status_t final;
  _Atomic bool cancelled;
  _Atomic bool finished; /* client side: END sent */
  /* hms_stream_next_many: a result taken from the stream but not handed out yet (an item too big for
   * the caller's buffer or in an arena block, the end, or an error); the next read returns it first. */
  bool has_held;
  hms_status_t held_status;
  int held_end;
  hms_payload_t held_item;
  hms_error_t held_err;
};

HMS_API hms_status_t hms_stream_open(hms_client_t *client, uint32_t fn_id, const char *data, size_t len,
                                     uint32_t content_type, uint32_t flags, int64_t timeout_ns,
                                     hms_stream_t **out, hms_error_t *err) {
  if (out) *out = NULL;
  if (!client || !out) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "client and out must not be NULL");
  if (!(flags & (HMS_STREAM_SERVER | HMS_STREAM_CLIENT)) || (flags & ~(uint32_t)(HMS_STREAM_SERVER | HMS_STREAM_CLIENT)))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "stream flags %#x: use HMS_STREAM_SERVER, HMS_STREAM_CLIENT or both", flags);
  hms_client_t *c = client;
  hms_status_t st = hms__check_request(c, data, len, err);
  if (st) return st;
  hms_stream_t *s = calloc(1, sizeof *s);
  if (!s) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
  s->client = c;
  s->flags = flags;
  s->deadline = hms__deadline_from_timeout(timeout_ns);
  s->idx = hms__slot_take(c, HMS__MODE_STREAM, s->deadline, NULL, NULL, &s->id);
  if (s->idx == HMS__NO_SLOT) {
    free(s);
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, 0, "more than %d calls in flight on one client", HMS__SLOTS);
  }
  pthread_mutex_lock(&c->send_lock);
  uint16_t fflags = (flags & HMS_STREAM_SERVER ? HMS__FRAME_F_STREAM : 0) |
                    (flags & HMS_STREAM_CLIENT ? HMS__FRAME_F_CSTREAM : 0);
  st = hms__send_frame(c, HMS__FRAME_REQUEST, fflags, fn_id, content_type, s->id, s->deadline, data, len, err);
  if (st == HMS_OK) hms__ring_server(c);
  pthread_mutex_unlock(&c->send_lock);
  if (st) {
    hms__slot_release(c, s->idx);
    free(s);
    return st;
  }
  *out = s;
  hms__ok(err);
  return HMS_OK;
}

static hms_status_t hms__stream_deliver(hms_stream_t *s, hms__result_t *r, hms_payload_t *item, int *end,
                                        hms_error_t *err) {
  if (r->more) {
    hms__payload_set_r(item, r->data, r->len, r->ct, &r->aref);
    r->data = NULL;
    hms__ok(err);
    return HMS_OK;
  }
  s->ended = true;
  s->final = r->status;
  if (r->status == HMS_OK && (r->len || r->ct != HMS_CT_NONE)) {
    /* The single reply of a client stream: an item now, the end on the next call. */
    hms__payload_set_r(item, r->data, r->len, r->ct, &r->aref);
    r->data = NULL;
    hms__ok(err);
    return HMS_OK;
  }
  if (r->status == HMS_OK) {
    free(r->data);
    r->data = NULL;
    hms__aref_drop(&r->aref);
    *end = 1;
    hms__ok(err);
    return HMS_OK;
  }
  return hms__finish(r, item, err);
}

HMS_API hms_status_t hms_stream_next(hms_stream_t *stream, hms_payload_t *item, int *end, int64_t timeout_ns,
                                     hms_error_t *err) {
  if (item) hms__payload_set(item, NULL, 0, HMS_CT_NONE);
  if (end) *end = 0;
  if (!stream || !item || !end) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "stream, item and end must not be NULL");
  hms_stream_t *s = stream;
  hms_client_t *c = s->client;
  if (s->has_held) {
    s->has_held = false;
    *item = s->held_item;
    *end = s->held_end;
    if (err) *err = s->held_err;
    return s->held_status;
  }
  if (s->ended) {
    if (s->final == HMS_OK) {
      *end = 1;
      hms__ok(err);
      return HMS_OK;
    }
    return hms__fail(err, s->final, 0, "the stream already ended with %s", hms_status_str(s->final));
  }
  if (s->deadline != INT64_MAX && hms__now_ns() >= s->deadline) {
    /* The stream's deadline holds even while items keep coming. */
    hms_stream_cancel(s);
    s->final = HMS_DEADLINE_EXCEEDED;
    return hms__fail(err, HMS_DEADLINE_EXCEEDED, 0, "stream %llu of %s@%s passed its deadline",
                     (unsigned long long)s->id, c->service, c->version);
  }
  int64_t deadline = hms__deadline_from_timeout(timeout_ns);
  bool whole = deadline >= s->deadline;
  if (whole) deadline = s->deadline;
  for (;;) {
    uint32_t g = atomic_load_explicit(&c->gen, memory_order_acquire);
    pthread_mutex_lock(&c->slots_lock);
    hms__slot_t *sl = &c->slots[s->idx];
    hms__item_t *it = sl->qhead;
    if (it) {
      sl->qhead = it->next;
      if (!sl->qhead) sl->qtail = NULL;
    }
    pthread_mutex_unlock(&c->slots_lock);
    if (it) {
      hms__result_t r = {.status = it->status, .origin = it->origin, .ct = it->ct, .more = it->more,
                         .data = it->data, .len = it->len, .aref = it->aref};
      memcpy(r.msg, it->msg, sizeof r.msg);
      free(it);
      return hms__stream_deliver(s, &r, item, end, err);
    }
    if (pthread_mutex_trylock(&c->recv_lock) == 0) {
      /* Only the reader queues items, so with recv_lock held the queue cannot grow: re-check it, or
       * an item read directly could overtake one queued just before. */
      pthread_mutex_lock(&c->slots_lock);
      bool early = c->slots[s->idx].qhead != NULL;
      pthread_mutex_unlock(&c->slots_lock);
      if (early) {
        pthread_mutex_unlock(&c->recv_lock);
        continue;
      }
      hms__result_t r;
      int w = hms__read_until(c, s->id, &r, deadline);
      pthread_mutex_unlock(&c->recv_lock);
      atomic_fetch_add(&c->gen, 1);
      if (atomic_load(&c->followers)) hms__futex_wake(&c->gen, INT_MAX, 0);
      if (w == HMS__WAIT_GOT) return hms__stream_deliver(s, &r, item, end, err);
      if (w == HMS__WAIT_DEAD) {
        s->ended = true;
        s->final = c->dead_code;
        return hms__client_dead_error(c, err);
      }
      pthread_mutex_lock(&c->slots_lock);
      bool queued = c->slots[s->idx].qhead != NULL;
      pthread_mutex_unlock(&c->slots_lock);
      if (queued) continue;
    } else {
      if (atomic_load_explicit(&c->dead, memory_order_acquire)) {
        s->ended = true;
        s->final = c->dead_code;
        return hms__client_dead_error(c, err);
      }
      int64_t now = hms__now_ns();
      if (now < deadline) {
        atomic_fetch_add(&c->followers, 1);
        int64_t left = deadline - now;
        hms__futex_wait(&c->gen, g, left < HMS__SLICE_NS ? left : HMS__SLICE_NS, 0);
        atomic_fetch_sub(&c->followers, 1);
        continue;
      }
    }
    if (hms__now_ns() < deadline) continue;
    if (whole) { /* the stream's own deadline: it is over */
      s->ended = true;
      s->final = HMS_DEADLINE_EXCEEDED;
      hms_stream_cancel(s);
      return hms__fail(err, HMS_DEADLINE_EXCEEDED, 0, "stream %llu of %s@%s passed its deadline",
                       (unsigned long long)s->id, c->service, c->version);
    }
    return hms__fail(err, HMS_DEADLINE_EXCEEDED, 0, "no stream item within the timeout (the stream goes on)");
  }
}

HMS_API void hms_stream_cancel(hms_stream_t *stream) {
  if (!stream || atomic_exchange(&stream->cancelled, true)) return;
  hms_client_t *c = stream->client;
  if (!stream->ended) {
    stream->ended = true;
    stream->final = HMS_CANCELLED;
  }
  if (atomic_load(&c->dead)) return;
  hms_error_t e2;
  pthread_mutex_lock(&c->send_lock);
  if (hms__send_frame(c, HMS__FRAME_CANCEL, 0, 0, HMS_CT_NONE, stream->id, hms__now_ns() + 100000000LL, NULL, 0,
                      &e2) == HMS_OK) {
    atomic_fetch_add_explicit(&c->req.ctl->cancels, 1, memory_order_release);
    hms__ring_server(c);
  }
  pthread_mutex_unlock(&c->send_lock);
}

/* A payload that is a view of an arena block (not a private copy this file allocated). */
static inline bool hms__payload_is_arena(const hms_payload_t *p) {
  return p->release != NULL && p->release != hms__payload_free;
}

HMS_API hms_status_t hms_stream_next_many(hms_stream_t *stream, uint8_t *buf, size_t cap, uint32_t *offsets,
                                          uint32_t *content_types, size_t max, size_t *n, int *end,
                                          int64_t timeout_ns, hms_error_t *err) {
  if (n) *n = 0;
  if (end) *end = 0;
  if (!stream || !buf || !offsets || !content_types || !n || !end || max == 0 || cap > UINT32_MAX)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "stream, buf, offsets, content_types, n and end must be set, max >= 1 and cap < 4 GiB");
  hms_stream_t *s = stream;
  size_t used = 0, k = 0;
  offsets[0] = 0;
  for (;;) {
    hms_payload_t item;
    int e = 0;
    hms_error_t e2;
    /* The first item may wait (timeout_ns); the rest are only what is there already. */
    hms_status_t st = hms_stream_next(s, &item, &e, k == 0 ? timeout_ns : 0, &e2);
    if (k > 0 && st == HMS_DEADLINE_EXCEEDED && !s->ended) break; /* nothing more right now */
    bool fits = st == HMS_OK && !e && !hms__payload_is_arena(&item) && item.len <= cap - used;
    if (!fits) {
      if (k == 0 && st == HMS_OK && e) { /* the end, with nothing collected: report it now */
        *end = 1;
        hms__ok(err);
        return HMS_OK;
      }
      /* Hand it out on the next call (hms_stream_next or hms_stream_next_many returns it first):
       * an item that does not fit, lives in an arena block (a zero-copy view is better than a
       * copy), or an error (its message and details travel in an item). */
      s->has_held = true;
      s->held_status = st;
      s->held_end = e;
      s->held_item = item;
      s->held_err = e2;
      break;
    }
    if (item.len) memcpy(buf + used, item.data, item.len);
    used += item.len;
    content_types[k] = item.content_type;
    offsets[++k] = (uint32_t)used;
    hms_payload_release(&item);
    if (k == max) break;
  }
  *n = k;
  hms__ok(err);
  return HMS_OK;
}

HMS_API void hms_stream_close(hms_stream_t *stream) {
  if (!stream) return;
  if (stream->has_held) hms_payload_release(&stream->held_item);
  bool was_ended = stream->ended && !stream->cancelled;
  if (!was_ended) hms_stream_cancel(stream);
  /* Later frames of this stream find no waiting slot and are dropped by whoever reads them. */
  hms__slot_release(stream->client, stream->idx);
  free(stream);
}

static hms_status_t hms__stream_frame(hms_stream_t *s, uint16_t kind, const char *data, size_t len, uint32_t ct,
                                      hms_error_t *err) {
  hms_client_t *c = s->client;
  if (!(s->flags & HMS_STREAM_CLIENT))
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0, "this stream was opened without HMS_STREAM_CLIENT");
  if (atomic_load(&s->finished))
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0, "this stream was already finished (hms_stream_finish)");
  if (atomic_load(&s->cancelled))
    return hms__fail(err, HMS_CANCELLED, 0, "this stream was cancelled");
  hms_status_t st = hms__check_request(c, data, len, err);
  if (st) return st;
  pthread_mutex_lock(&c->send_lock);
  st = hms__send_frame(c, kind, 0, 0, ct, s->id, s->deadline, data, len, err);
  if (st == HMS_OK) hms__ring_server(c);
  pthread_mutex_unlock(&c->send_lock);
  if (st == HMS_OK) hms__ok(err);
  return st;
}

HMS_API hms_status_t hms_stream_send(hms_stream_t *stream, const char *data, size_t len, uint32_t content_type,
                                     hms_error_t *err) {
  if (!stream) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "stream is NULL");
  return hms__stream_frame(stream, HMS__FRAME_DATA, data, len, content_type, err);
}

HMS_API hms_status_t hms_stream_finish(hms_stream_t *stream, hms_error_t *err) {
  if (!stream) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "stream is NULL");
  hms_status_t st = hms__stream_frame(stream, HMS__FRAME_END, NULL, 0, HMS_CT_NONE, err);
  if (st == HMS_OK) atomic_store(&stream->finished, true);
  return st;
}

/* ------------------------------------------------------------------ arena: loans and stats */
HMS_API hms_status_t hms_loan(hms_client_t *client, size_t size, hms_block_t *block, hms_error_t *err) {
  if (!client || !block) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "client and block must not be NULL");
  if (atomic_load_explicit(&client->dead, memory_order_acquire)) {
    memset(block, 0, sizeof *block);
    return hms__client_dead_error(client, err);
  }
  return hms__block_loan(client->arena, size, block, err);
}

HMS_API hms_status_t hms_call_block(hms_client_t *client, uint32_t fn_id, hms_block_t *block, size_t len,
                                    uint32_t content_type, hms_payload_t *resp, int64_t timeout_ns,
                                    hms_error_t *err) {
  if (resp) hms__payload_set(resp, NULL, 0, HMS_CT_NONE);
  if (!client || !resp) {
    hms_block_release(block);
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "client and resp must not be NULL");
  }
  hms_client_t *c = client;
  hms__aref_wire_t wire;
  hms__arena_t *a = NULL;
  hms_status_t st = hms__block_take(block, len, c->arena, &wire, &a, err);
  if (st) {
    hms_block_release(block);
    return st;
  }
  if (atomic_load_explicit(&c->dead, memory_order_acquire)) st = hms__client_dead_error(c, err);
  int64_t deadline = hms__deadline_from_timeout(timeout_ns);
  uint64_t id = 0;
  uint32_t idx = HMS__NO_SLOT;
  if (st == HMS_OK) {
    idx = hms__slot_take(c, HMS__MODE_SYNC, deadline, NULL, NULL, &id);
    if (idx == HMS__NO_SLOT)
      st = hms__fail(err, HMS_RESOURCE_EXHAUSTED, 0, "more than %d calls in flight on one client", HMS__SLOTS);
  }
  if (st == HMS_OK) {
    pthread_mutex_lock(&c->send_lock);
    st = hms__send_frame(c, HMS__FRAME_REQUEST, HMS__FRAME_F_ARENA, fn_id, content_type, id, deadline, &wire,
                         sizeof wire, err);
    if (st == HMS_OK) hms__ring_server(c);
    pthread_mutex_unlock(&c->send_lock);
    if (st) hms__slot_release(c, idx);
  }
  if (st) {
    hms__arena_unsend(a, &wire);
    hms__arena_put(a);
    return st;
  }
  hms__arena_put(a);
  hms__result_t r;
  hms__wait_slot(c, idx, id, deadline, &r);
  return hms__finish(&r, resp, err);
}

HMS_API hms_status_t hms_client_set_arena_quota(hms_client_t *client, uint64_t bytes, hms_error_t *err) {
  if (!client) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "client is NULL");
  hms__arena_set_quota(client->arena, bytes);
  hms__ok(err);
  return HMS_OK;
}

HMS_API hms_status_t hms_client_arena_stats(hms_client_t *client, hms_arena_stats_t *stats, hms_error_t *err) {
  if (!client || !stats) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "client and stats must not be NULL");
  if (stats->version < 1 || stats->version > HMS_ARENA_STATS_VERSION)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "hms_arena_stats_t.version is %u; call hms_arena_stats_init",
                     stats->version);
  hms_arena_stats_init(stats);
  char why[200];
  if (client->arena && !atomic_load(&client->dead)) hms__arena_drain(client->arena, why, sizeof why);
  hms__arena_stats_add(client->arena, stats);
  hms__ok(err);
  return HMS_OK;
}
