/* Node, services, function tables and the server side of connections: accept, handshake, dispatch.
 *
 * One thread serves a node. It drains every connection's request ring while there is work, spins for
 * the configured budget when work stops, then sleeps in epoll_wait() on: the listening sockets (new
 * clients), every connection's socket (the kernel reports a dead peer as a hang-up) and every
 * connection's doorbell eventfd (a client rings it only when the ring says we are asleep). A doorbell
 * per connection means a hostile client can neither drain nor jam another client's wake-ups. */
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal/hms_internal.h"

#define HMS__HANDSHAKE_TIMEOUT_NS 5000000000LL
#define HMS__EVENT_POLL_NS 1000000LL /* while busy, look at sockets at least every 1 ms */
#define HMS__DRAIN_BATCH 64

typedef enum { HMS__CONN_HANDSHAKE = 0, HMS__CONN_ACTIVE = 1 } hms__conn_state_t;

/* A request-ring frame set aside (copied) while a client-stream handler read past it. */
typedef struct hms__deferred_s {
  struct hms__deferred_s *next;
  hms__frame_hdr_t hdr;
  uint8_t *payload;
} hms__deferred_t;
#define HMS__MAX_DEFERRED 4096

typedef struct hms__conn_s {
  hms_service_t *svc;
  hms__deferred_t *bl_head, *bl_tail; /* deferred frames, processed before the ring */
  uint32_t bl_count;
  uint64_t bl_bytes; /* payload bytes held in the backlog: bounded like the ring */
  hms__conn_state_t state;
  int sock;
  int bell;        /* eventfd the client rings when we sleep */
  int client_bell; /* the client's eventfd, rung when it waits in an event loop */
  uint64_t cancelled[64]; /* recently cancelled call ids (ring) */
  uint32_t ncancelled;    /* CANCEL frames consumed */
  void *map;
  size_t map_len;
  hms__ring_t req;  /* we consume */
  hms__ring_t resp; /* we produce */
  pid_t pid;
  uid_t uid;
  gid_t gid;
  int64_t handshake_deadline;
  hms__ep_tag_t sock_tag, bell_tag;
  /* Deferred replies may outlive the connection's place in the node: the memory stays mapped until
   * the last reference goes. While deferred replies are outstanding, writers of the reply ring take
   * resp_lock (only the dispatcher creates deferred calls, so when none are out it writes alone). */
  _Atomic int refs;
  _Atomic int deferred_out;
  _Atomic bool gone;
  pthread_mutex_t resp_lock;
  bool dead;
  bool blocked; /* its replies do not fit: wait for the client's doorbell, do not spin on it */
  hms__arena_t *arena; /* our replies too big for a ring frame; the client's requests we map */
  /* access control (access.c): the caller's groups and which functions it may call */
  uint32_t ngroups;
  gid_t groups[HMS__PEER_GROUPS_MAX];
  uint32_t acl_gen;   /* the service's acl_gen the bitmap was computed for (0 = not yet) */
  uint64_t *acl_bits; /* HMS__ACL_WORDS words, allocated when the service first has a rule */
} hms__conn_t;

/* ------------------------------------------------------------------ access control, limits, audit: hooks
 * The rules, limits and the audit writer live in access.c and audit.c; these are the dispatcher's side. */
static void hms__peer_groups(hms__conn_t *c) {
#ifdef SO_PEERGROUPS
  /* The caller's supplementary groups as of its connect(). More than we keep: the rest is not looked at
   * (a rule can then only refuse, never wrongly allow). */
  gid_t many[1024];
  socklen_t len = sizeof many;
  if (getsockopt(c->sock, SOL_SOCKET, SO_PEERGROUPS, many, &len) == 0) {
    uint32_t n = (uint32_t)(len / sizeof(gid_t));
    c->ngroups = n < HMS__PEER_GROUPS_MAX ? n : HMS__PEER_GROUPS_MAX;
    memcpy(c->groups, many, c->ngroups * sizeof(gid_t));
  }
#else
  (void)c;
#endif
}

/* Records a call (fn != NULL) or a refused connection (fn == NULL) when the audit level asks for it. */
static void hms__audit_call(hms__conn_t *c, const hms__fn_t *fn, const hms__frame_hdr_t *h, int32_t status,
                            bool allow, int64_t duration_ns) {
  hms__audit_t *a = atomic_load_explicit(&c->svc->node->audit, memory_order_acquire);
  if (HMS__LIKELY(!a)) return;
  uint32_t lvl = hms__audit_level(a, hms__audit_node_level(a), fn);
  if (lvl == HMS_AUDIT_ALL || (lvl == HMS_AUDIT_DENY && !allow))
    hms__audit_record(a, c->svc->name, fn ? fn->name : NULL, c->pid, c->uid, c->gid, status, allow, duration_ns,
                      h ? h->call_id : 0, h ? h->trace_id : NULL);
}

/* Start time of an allowed call the audit records (level ALL), else 0. */
static inline int64_t hms__audit_start(hms__conn_t *c, const hms__fn_t *fn) {
  hms__audit_t *a = atomic_load_explicit(&c->svc->node->audit, memory_order_acquire);
  if (HMS__LIKELY(!a) || hms__audit_level(a, hms__audit_node_level(a), fn) != HMS_AUDIT_ALL) return 0;
  int64_t t = hms__now_ns();
  return t ? t : 1;
}

/* True when the connection's caller may not call fn (one bit test once the bitmap is current). */
static bool hms__acl_denied(hms__conn_t *c, const hms__fn_t *fn) {
  uint32_t gen = atomic_load_explicit(&c->svc->acl_gen, memory_order_acquire);
  if (HMS__LIKELY(gen == 0)) return false; /* no rule anywhere in the service */
  if (c->acl_gen != gen || !c->acl_bits) {
    if (!c->acl_bits && !(c->acl_bits = malloc(HMS__ACL_WORDS * sizeof *c->acl_bits))) return true; /* fail closed */
    c->acl_gen = hms__access_bitmap(c->svc, c->uid, c->gid, c->groups, c->ngroups, c->acl_bits);
  }
  uint32_t i = fn->id - 1;
  return !((c->acl_bits[i / 64] >> (i % 64)) & 1);
}

HMS_API void hms_node_options_init(hms_node_options_t *opts) {
  if (!opts) return;
  memset(opts, 0, sizeof *opts);
  opts->version = HMS_NODE_OPTIONS_VERSION;
  opts->spin_ns = -1;
}

HMS_API hms_status_t hms_node_open(const hms_node_options_t *opts, hms_node_t **out, hms_error_t *err) {
  if (!out) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "out is NULL");
  *out = NULL;
  hms_node_options_t defaults;
  if (!opts) {
    hms_node_options_init(&defaults);
    opts = &defaults;
  }
  if (opts->version < 1 || opts->version > HMS_NODE_OPTIONS_VERSION)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "hms_node_options_t.version is %u; this library knows 1..%u (call hms_node_options_init)",
                     opts->version, HMS_NODE_OPTIONS_VERSION);
  if (opts->name && !hms__name_valid(opts->name))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "node name '%.64s' is invalid: use 1-%d characters of [A-Za-z0-9_.-]", opts->name,
                     HMS_NAME_MAX);
  uint64_t ring = opts->ring_bytes ? opts->ring_bytes : HMS_RING_DEFAULT_BYTES;
  if (!hms__is_pow2(ring) || ring < HMS_RING_MIN_BYTES || ring > HMS_RING_MAX_BYTES)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "ring_bytes %llu must be a power of two between %d and %d",
                     (unsigned long long)opts->ring_bytes, HMS_RING_MIN_BYTES, HMS_RING_MAX_BYTES);
  hms_node_t *n = calloc(1, sizeof *n);
  if (!n) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
  hms_status_t st = hms__runtime_dir_resolve(opts->runtime_dir, n->runtime_dir, sizeof n->runtime_dir, err);
  if (st) {
    free(n);
    return st;
  }
  if (opts->name)
    hms__strlcpy(n->name, opts->name, sizeof n->name);
  else
    snprintf(n->name, sizeof n->name, "node-%d", (int)getpid());
  n->spin_ns = opts->spin_ns < 0 ? hms__default_spin_ns() : opts->spin_ns;
  n->ring_bytes = ring;
  pthread_mutex_init(&n->lock, NULL);
  n->epfd = epoll_create1(EPOLL_CLOEXEC);
  n->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (n->epfd < 0 || n->stop_fd < 0) {
    int e = errno;
    if (n->epfd >= 0) close(n->epfd);
    if (n->stop_fd >= 0) close(n->stop_fd);
    free(n);
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, e, "epoll/eventfd creation failed: %s", strerror(e));
  }
  n->stop_tag.kind = HMS__EP_STOP;
  n->stop_tag.ptr = n;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &n->stop_tag};
  epoll_ctl(n->epfd, EPOLL_CTL_ADD, n->stop_fd, &ev);
  *out = n;
  hms__ok(err);
  return HMS_OK;
}

HMS_API const char *hms_node_runtime_dir(const hms_node_t *node) { return node ? node->runtime_dir : ""; }

static void hms__conn_unref(hms__conn_t *c) {
  if (atomic_fetch_sub(&c->refs, 1) != 1) return;
  if (c->bell >= 0) close(c->bell);
  if (c->client_bell >= 0) close(c->client_bell);
  if (c->sock >= 0) close(c->sock);
  if (c->map) munmap(c->map, c->map_len);
  hms__arena_put(c->arena);
  pthread_mutex_destroy(&c->resp_lock);
  free(c->acl_bits);
  free(c);
}

static void hms__conn_drop(hms_node_t *node, size_t idx) {
  hms__conn_t *c = node->conns[idx];
  while (c->bl_head) {
    hms__deferred_t *d = c->bl_head;
    c->bl_head = d->next;
    free(d->payload);
    free(d);
  }
  epoll_ctl(node->epfd, EPOLL_CTL_DEL, c->sock, NULL);
  if (c->bell >= 0) epoll_ctl(node->epfd, EPOLL_CTL_DEL, c->bell, NULL);
  if (c->state == HMS__CONN_ACTIVE) hms__stats_conn(c->svc, -1);
  /* Blocks the client held come back; views our handlers kept stay mapped until released. */
  hms__arena_detach(c->arena);
  /* Closing the socket is what tells the client (POLLHUP) that every pending call is lost. */
  close(c->sock);
  c->sock = -1;
  atomic_store(&c->gone, true);
  if (c->state == HMS__CONN_ACTIVE && c->svc->active_conns) c->svc->active_conns--;
  node->conns[idx] = node->conns[--node->nconns];
  hms__conn_unref(c);
}

HMS_API void hms_node_close(hms_node_t *node) {
  if (!node) return;
  hms_node_stop(node);
  while (node->nconns) hms__conn_drop(node, node->nconns - 1);
  free(node->conns);
  hms__audit_close(atomic_exchange(&node->audit, NULL)); /* writes what is queued: it names our services */
  hms_service_t *s = node->services;
  while (s) {
    hms_service_t *next = s->next;
    hms__registry_unregister(s);
    if (s->listen_fd >= 0) close(s->listen_fd);
    uint32_t nf = atomic_load(&s->nfns);
    for (uint32_t i = 0; i < nf; i++) free(s->fns[i]);
    hms__service_access_free(s);
    hms__stats_put(s->stats); /* deferred calls still out keep their own reference */
    free(s->tag);
    free(s);
    s = next;
  }
  close(node->epfd);
  close(node->stop_fd);
  pthread_mutex_destroy(&node->lock);
  free(node->batch_data);
  free(node->batch_items);
  free(node->batch_offsets);
  free(node);
}

/* ------------------------------------------------------------------ services and functions */
HMS_API hms_status_t hms_service_add(hms_node_t *node, const char *name, const char *version,
                                     hms_service_t **out, hms_error_t *err) {
  if (!node || !name || !version || !out)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "node, name, version and out must not be NULL");
  *out = NULL;
  if (!hms__name_valid(name))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "service name '%.64s' is invalid: use 1-%d characters of [A-Za-z0-9_.-], not starting "
                     "with '.' or '-'",
                     name, HMS_NAME_MAX);
  hms__semver_t sv;
  if (!hms__semver_parse(version, &sv))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "service version '%.64s' is not MAJOR.MINOR.PATCH (for example \"1.2.0\")", version);
  pthread_mutex_lock(&node->lock);
  for (hms_service_t *s = node->services; s; s = s->next) {
    if (!strcmp(s->name, name) && !strcmp(s->version, version)) {
      pthread_mutex_unlock(&node->lock);
      return hms__fail(err, HMS_ALREADY_EXISTS, 0,
                       "this node already serves %s@%s; add functions to the existing service", name,
                       version);
    }
  }
  hms_status_t st = hms__runtime_dir_ensure(node->runtime_dir, err);
  hms_service_t *s = NULL;
  if (st == HMS_OK) {
    s = calloc(1, sizeof *s);
    if (s) s->tag = calloc(1, sizeof *s->tag);
    if (!s || !s->tag) {
      free(s);
      s = NULL;
      st = hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
    }
  }
  if (st == HMS_OK) {
    s->node = node;
    s->listen_fd = -1;
    hms__service_limits_default(s);
    hms__strlcpy(s->name, name, sizeof s->name);
    hms__strlcpy(s->version, version, sizeof s->version);
    s->semver = sv;
    hms__stats_create(s); /* metrics: a service without them (no memfd) still serves */
    snprintf(s->meta_path, sizeof s->meta_path, "%s/%s@%s.meta", node->runtime_dir, name, version);
    st = hms__registry_bind(node->runtime_dir, name, version, &s->listen_fd, s->sock_path,
                            sizeof s->sock_path, &s->sock_dev, &s->sock_ino, err);
  }
  if (st == HMS_OK) st = hms__registry_write_meta(s, err);
  if (st == HMS_OK) {
    s->tag->kind = HMS__EP_LISTEN;
    s->tag->ptr = s;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s->tag};
    if (epoll_ctl(node->epfd, EPOLL_CTL_ADD, s->listen_fd, &ev) != 0)
      st = hms__fail(err, HMS_INTERNAL, errno, "epoll_ctl failed: %s", strerror(errno));
  }
  if (st != HMS_OK) {
    if (s) {
      if (s->listen_fd >= 0) {
        hms__registry_unregister(s);
        close(s->listen_fd);
      }
      hms__stats_put(s->stats);
      free(s->tag);
      free(s);
    }
    pthread_mutex_unlock(&node->lock);
    return st;
  }
  s->next = node->services;
  node->services = s;
  pthread_mutex_unlock(&node->lock);
  *out = s;
  hms__ok(err);
  return HMS_OK;
}

HMS_API hms_status_t hms_function_add(hms_service_t *service, const char *name, uint32_t flags,
                                      hms_handler_fn fn, void *user_data, hms_error_t *err) {
  if (!service || !name || !fn)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "service, name and handler must not be NULL");
  if (!hms__name_valid(name))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "function name '%.64s' is invalid: use 1-%d characters of [A-Za-z0-9_.-]", name,
                     HMS_NAME_MAX);
  hms_node_t *node = service->node;
  pthread_mutex_lock(&node->lock);
  uint32_t n = atomic_load(&service->nfns);
  for (uint32_t i = 0; i < n; i++) {
    if (!strcmp(service->fns[i]->name, name)) {
      pthread_mutex_unlock(&node->lock);
      return hms__fail(err, HMS_ALREADY_EXISTS, 0, "function '%s' already exists in service %s@%s", name,
                       service->name, service->version);
    }
  }
  if (n >= HMS_MAX_FUNCTIONS) {
    pthread_mutex_unlock(&node->lock);
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, 0, "service %s@%s already has %d functions (the maximum)",
                     service->name, service->version, HMS_MAX_FUNCTIONS);
  }
  hms__fn_t *f = calloc(1, sizeof *f);
  if (!f) {
    pthread_mutex_unlock(&node->lock);
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
  }
  hms__strlcpy(f->name, name, sizeof f->name);
  f->id = n + 1;
  f->flags = flags;
  f->fn = fn;
  f->user_data = user_data;
  service->fns[n] = f;
  hms__stats_fn_added(service, f);
  atomic_store_explicit(&service->nfns, n + 1, memory_order_release); /* the dispatcher may be reading */
  uint32_t g = atomic_load(&service->acl_gen); /* connections with a bitmap re-evaluate for the new function */
  if (g) atomic_store_explicit(&service->acl_gen, g + 1 ? g + 1 : 1, memory_order_release);
  hms_status_t st = hms__registry_write_meta(service, err);
  pthread_mutex_unlock(&node->lock);
  if (st == HMS_OK) hms__ok(err);
  return st;
}

HMS_API hms_status_t hms_function_set_batch_handler(hms_service_t *service, const char *name,
                                                    hms_batch_handler_fn fn, void *user_data,
                                                    hms_error_t *err) {
  if (!service || !name || !fn)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "service, name and handler must not be NULL");
  hms_node_t *node = service->node;
  pthread_mutex_lock(&node->lock);
  uint32_t n = atomic_load(&service->nfns);
  for (uint32_t i = 0; i < n; i++) {
    hms__fn_t *f = service->fns[i];
    if (!strcmp(f->name, name)) {
      f->batch_user_data = user_data;
      atomic_store_explicit(&f->batch_fn, fn, memory_order_release); /* the dispatcher may be reading */
      pthread_mutex_unlock(&node->lock);
      hms__ok(err);
      return HMS_OK;
    }
  }
  pthread_mutex_unlock(&node->lock);
  return hms__fail(err, HMS_NOT_FOUND, 0, "service %s@%s has no function '%.64s'; add it with hms_function_add first",
                   service->name, service->version, name);
}

/* ------------------------------------------------------------------ handshake */
static void hms__conn_add(hms_node_t *node, hms__conn_t *c) {
  if (node->nconns == node->conns_cap) {
    size_t cap = node->conns_cap ? node->conns_cap * 2 : 16;
    hms__conn_t **nv = realloc(node->conns, cap * sizeof *nv);
    if (!nv) {
      close(c->sock);
      free(c);
      return;
    }
    node->conns = nv;
    node->conns_cap = cap;
  }
  node->conns[node->nconns++] = c;
}

static void hms__accept_all(hms_node_t *node, hms_service_t *svc) {
  for (;;) {
    int fd = accept4(svc->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return; /* EAGAIN, or EMFILE: the client sees its handshake time out */
    struct ucred cred;
    socklen_t cl = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0) {
      close(fd);
      continue;
    }
    hms__conn_t *c = calloc(1, sizeof *c);
    if (!c) {
      close(fd);
      continue;
    }
    c->svc = svc;
    c->sock = fd;
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->resp_lock, NULL);
    c->bell = -1;
    c->client_bell = -1;
    c->pid = cred.pid;
    c->uid = cred.uid;
    c->gid = cred.gid;
    hms__peer_groups(c);
    c->state = HMS__CONN_HANDSHAKE;
    c->handshake_deadline = hms__now_ns() + HMS__HANDSHAKE_TIMEOUT_NS;
    c->sock_tag.kind = HMS__EP_CONN_SOCK;
    c->sock_tag.ptr = c;
    c->bell_tag.kind = HMS__EP_CONN_BELL;
    c->bell_tag.ptr = c;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = &c->sock_tag};
    if (epoll_ctl(node->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      close(fd);
      free(c);
      continue;
    }
    hms__conn_add(node, c);
  }
}

static void hms__welcome_error(hms__conn_t *c, hms_status_t code, const char *fmt, const char *a,
                               const char *b) {
  hms__welcome_t w;
  memset(&w, 0, sizeof w);
  w.magic = HMS__WELCOME_MAGIC;
  w.abi = HMS_FFI_ABI_VERSION;
  w.proto = HMS__PROTO_VERSION;
  w.status = code;
  snprintf(w.message, sizeof w.message, fmt, a, b);
  hms__send_fds(c->sock, &w, sizeof w, NULL, 0);
  hms__stats_handshake_refused(c->svc);
}

/* Returns false when the connection must be dropped. */
static bool hms__handshake(hms_node_t *node, hms__conn_t *c) {
  hms__hello_t hello;
  int fds[2], nfds = 0;
  ssize_t n = hms__recv_fds(c->sock, &hello, sizeof hello, fds, 1, &nfds);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
  if (n == (ssize_t)sizeof hello && hello.magic == HMS__STATS_HELLO_MAGIC) { /* a metrics reader (stats.c) */
    for (int i = 0; i < nfds; i++) close(fds[i]);
    hms__stats_welcome(c->svc, c->sock);
    return false; /* one answer, then the connection goes */
  }
  if (nfds == 1) {
    /* The client's doorbell. It must be an eventfd: anything else (a pipe that blocks, a file we would
     * append to) is refused. */
    char link[64], path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fds[0]);
    ssize_t k = readlink(path, link, sizeof link - 1);
    if (k > 0) link[k] = 0;
    if (k <= 0 || strcmp(link, "anon_inode:[eventfd]") != 0) {
      close(fds[0]);
      return false;
    }
    int fl = fcntl(fds[0], F_GETFL);
    if (fl < 0 || fcntl(fds[0], F_SETFL, fl | O_NONBLOCK) != 0) {
      close(fds[0]);
      return false;
    }
    c->client_bell = fds[0];
  }
  if (n != (ssize_t)sizeof hello || hello.magic != HMS__HELLO_MAGIC) return false;
  hello.service[sizeof hello.service - 1] = 0;
  hello.version[sizeof hello.version - 1] = 0;
  hms_service_t *svc = c->svc;
  char abi[32], mine[32];
  if (hello.abi != HMS_FFI_ABI_VERSION || hello.proto != HMS__PROTO_VERSION) {
    snprintf(abi, sizeof abi, "%u/%u", hello.abi, hello.proto);
    snprintf(mine, sizeof mine, "%u/%u", HMS_FFI_ABI_VERSION, HMS__PROTO_VERSION);
    hms__welcome_error(c, HMS_FAILED_PRECONDITION,
                       "ABI/protocol mismatch: client %s, server %s; upgrade the older side", abi, mine);
    return false;
  }
  if (strcmp(hello.service, svc->name) != 0 || strcmp(hello.version, svc->version) != 0) {
    hms__welcome_error(c, HMS_NOT_FOUND, "this socket serves %s, not '%s'; re-resolve the service", svc->name,
                       hello.service);
    return false;
  }
  uint64_t ring = hello.ring_bytes ? hello.ring_bytes : node->ring_bytes;
  if (!hms__is_pow2(ring) || ring < HMS_RING_MIN_BYTES || ring > HMS_RING_MAX_BYTES) {
    snprintf(abi, sizeof abi, "%llu", (unsigned long long)hello.ring_bytes);
    hms__welcome_error(c, HMS_INVALID_ARGUMENT, "requested ring size %s is not a power of two in range%s", abi,
                       "");
    return false;
  }
  {
    /* Service limits (hms_service_set_limits): ring quota and connections. */
    char lim[224];
    uint64_t max_ring = atomic_load_explicit(&svc->max_ring_bytes, memory_order_relaxed);
    uint32_t max_conns = atomic_load_explicit(&svc->max_connections, memory_order_relaxed);
    if (max_ring && ring > max_ring && !hello.ring_bytes)
      while (ring > max_ring && ring > HMS_RING_MIN_BYTES) ring >>= 1; /* our default, shrunk to the quota */
    if (max_ring && ring > max_ring)
      snprintf(lim, sizeof lim, "requested ring of %llu bytes exceeds %s's ring quota of %llu bytes; connect with "
               "ring_bytes <= %llu", (unsigned long long)ring, svc->name, (unsigned long long)max_ring,
               (unsigned long long)max_ring);
    else if (max_conns && svc->active_conns >= max_conns)
      snprintf(lim, sizeof lim, "%s allows at most %u connections and has %u open; close one or raise "
               "max_connections", svc->name, max_conns, svc->active_conns);
    else
      lim[0] = 0;
    if (lim[0]) {
      hms__welcome_error(c, HMS_RESOURCE_EXHAUSTED, "%s%s", lim, "");
      hms__audit_call(c, NULL, NULL, HMS_RESOURCE_EXHAUSTED, false, 0);
      return false;
    }
  }
  /* Function table snapshot, written after the rings. */
  uint32_t nf = atomic_load_explicit(&svc->nfns, memory_order_acquire);
  uint64_t table = 0;
  for (uint32_t i = 0; i < nf; i++) table += 12 + ((strlen(svc->fns[i]->name) + 3) & ~(size_t)3);
  uint64_t total = hms__conn_total_bytes(ring, ring, table);
  char why[160];
  void *map = NULL;
  int memfd = hms__memfd_create_sealed(total, &map, why, sizeof why);
  if (memfd < 0) {
    hms__welcome_error(c, HMS_RESOURCE_EXHAUSTED, "server could not allocate connection memory: %s%s", why, "");
    return false;
  }
  int bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (bell < 0) {
    close(memfd);
    munmap(map, total);
    hms__welcome_error(c, HMS_RESOURCE_EXHAUSTED, "server could not create an eventfd: %s%s", strerror(errno),
                       "");
    return false;
  }
  hms__conn_hdr_t *h = map;
  h->magic = HMS__CONN_MAGIC;
  h->proto = HMS__PROTO_VERSION;
  h->header_bytes = HMS__CONN_HEADER_BYTES;
  h->req_cap = ring;
  h->resp_cap = ring;
  h->table_bytes = table;
  h->total_bytes = total;
  uint8_t *base = map;
  uint8_t *tp = base + HMS__CONN_HEADER_BYTES + 2 * ring;
  for (uint32_t i = 0; i < nf; i++) {
    uint32_t len = (uint32_t)strlen(svc->fns[i]->name);
    uint32_t rec[3] = {svc->fns[i]->id, svc->fns[i]->flags, len};
    memcpy(tp, rec, 12);
    memcpy(tp + 12, svc->fns[i]->name, len);
    tp += 12 + ((len + 3) & ~3u);
  }
  hms__ring_attach(&c->req, (hms__ring_ctl_t *)(base + HMS__REQ_CTL_OFFSET), base + HMS__CONN_HEADER_BYTES,
                   ring);
  hms__ring_attach(&c->resp, (hms__ring_ctl_t *)(base + HMS__RESP_CTL_OFFSET),
                   base + HMS__CONN_HEADER_BYTES + ring, ring);
  hms__welcome_t w;
  memset(&w, 0, sizeof w);
  w.magic = HMS__WELCOME_MAGIC;
  w.abi = HMS_FFI_ABI_VERSION;
  w.proto = HMS__PROTO_VERSION;
  w.status = HMS_OK;
  w.req_cap = ring;
  w.resp_cap = ring;
  w.table_bytes = table;
  w.total_bytes = total;
  w.function_count = nf;
  int sfds[2] = {memfd, bell};
  int rc = hms__send_fds(c->sock, &w, sizeof w, sfds, 2);
  close(memfd); /* the client holds its own reference now; our mapping keeps the memory alive */
  if (rc != 0) {
    close(bell);
    munmap(map, total);
    return false;
  }
  c->map = map;
  c->map_len = total;
  c->bell = bell;
  uint64_t svc_quota = atomic_load_explicit(&svc->arena_quota, memory_order_relaxed);
  c->arena = hms__arena_new(c->sock, (_Atomic uint32_t *)(base + HMS__ARENA_S2C_HINT_OFFSET),
                            (_Atomic uint32_t *)(base + HMS__ARENA_C2S_HINT_OFFSET),
                            svc_quota ? svc_quota : node->arena_quota);
  if (!c->arena) return false;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &c->bell_tag};
  epoll_ctl(node->epfd, EPOLL_CTL_ADD, bell, &ev);
  c->state = HMS__CONN_ACTIVE;
  svc->active_conns++;
  hms__stats_conn(c->svc, +1);
  return true;
}

/* ------------------------------------------------------------------ calls */
static uint64_t hms__conn_max_message(hms__conn_t *c) {
  uint64_t inl = c->resp.max_frame - HMS_FRAME_HEADER_BYTES, q = hms__arena_quota(c->arena);
  uint64_t m = q > inl ? q : inl, lim = atomic_load_explicit(&c->svc->max_message, memory_order_relaxed);
  return lim && lim < m ? lim : m; /* hms_service_set_limits */
}

static inline void hms__wake_client(hms__conn_t *c) {
  atomic_thread_fence(memory_order_seq_cst);
  uint32_t how = atomic_load_explicit(&c->resp.ctl->consumer_sleeping, memory_order_relaxed);
  if (HMS__LIKELY(how == 0)) return;
  if (how & HMS__SLEEP_FUTEX) {
    atomic_fetch_add_explicit(&c->resp.ctl->data_seq, 1, memory_order_release);
    hms__futex_wake(&c->resp.ctl->data_seq, INT_MAX, 1);
  }
  if ((how & HMS__SLEEP_EVENTFD) && c->client_bell >= 0) {
    uint64_t one = 1;
    ssize_t w = write(c->client_bell, &one, sizeof one);
    (void)w;
  }
}

static void hms__fill_response(hms__conn_t *c, uint8_t *f, const hms__frame_hdr_t *req, int32_t status,
                               uint16_t flags, uint32_t ct, const void *a, size_t alen, const void *b, size_t blen) {
  hms__frame_hdr_t h;
  memset(&h, 0, sizeof h);
  h.len = (uint32_t)hms__frame_bytes(alen + blen);
  h.kind = HMS__FRAME_RESPONSE;
  h.flags = flags;
  h.fn_id = req->fn_id;
  h.content_type = ct;
  h.call_id = req->call_id;
  h.status = status;
  h.payload_len = (uint32_t)(alen + blen);
  memcpy(f, &h, sizeof h);
  if (alen) memcpy(f + sizeof h, a, alen);
  if (blen) memcpy(f + sizeof h + alen, b, blen);
  hms__ring_publish(&c->resp, h.len);
  hms__wake_client(c);
}

/* The reply ring has one producer at a time: the dispatcher alone while no deferred reply is out,
 * else whoever holds resp_lock. Returns whether the lock was taken. */
static inline bool hms__resp_lock(hms__conn_t *c) {
  if (atomic_load_explicit(&c->deferred_out, memory_order_acquire) == 0) return false;
  pthread_mutex_lock(&c->resp_lock);
  return true;
}
static inline void hms__resp_unlock(hms__conn_t *c, bool locked) {
  if (locked) pthread_mutex_unlock(&c->resp_lock);
}

/* A reply too big for a ring frame: copied once into our arena; the frame carries the reference. */
static hms_status_t hms__arena_reply(hms__conn_t *c, const void **a, size_t *alen, const void **b, size_t *blen,
                                     uint16_t *flags, hms__aref_wire_t *wire, hms_error_t *err) {
  hms_status_t st = hms__arena_copy_in(c->arena, *a, *alen, *b, *blen, wire, err);
  if (st) return st;
  *a = wire;
  *alen = sizeof *wire;
  *b = NULL;
  *blen = 0;
  *flags |= HMS__FRAME_F_ARENA;
  return HMS_OK;
}

static bool hms__write_response_f(hms__conn_t *c, const hms__frame_hdr_t *req, int32_t status, uint16_t flags,
                                  uint32_t ct, const void *a, size_t alen, const void *b, size_t blen) {
  uint8_t *f;
  char why[160];
  hms__aref_wire_t wire;
  if (HMS__UNLIKELY(alen + blen > c->resp.max_frame - HMS_FRAME_HEADER_BYTES) && !(flags & HMS__FRAME_F_ARENA) &&
      hms__arena_reply(c, &a, &alen, &b, &blen, &flags, &wire, NULL) != HMS_OK)
    return false;
  bool locked = hms__resp_lock(c);
  bool ok = hms__ring_reserve(&c->resp, alen + blen, &f, why, sizeof why) == HMS__RING_OK;
  if (ok) hms__fill_response(c, f, req, status, flags, ct, a, alen, b, blen);
  hms__resp_unlock(c, locked);
  if (!ok && (flags & HMS__FRAME_F_ARENA)) hms__arena_unsend(c->arena, (const hms__aref_wire_t *)a);
  return ok;
}

static bool hms__write_response(hms__conn_t *c, const hms__frame_hdr_t *req, int32_t status, uint32_t ct,
                                const void *a, size_t alen, const void *b, size_t blen) {
  return hms__write_response_f(c, req, status, 0, ct, a, alen, b, blen);
}

HMS_API int hms_call_is_cancelled(hms_call_t *call);
static bool hms__cancel_requested(hms_call_t *call);

static hms_status_t hms__write_response_wait_x(hms_call_t *call, int32_t status, uint16_t flags, uint32_t ct,
                                               const void *a, size_t alen, const void *b, size_t blen);
/* Writes a response frame of a stream, waiting while the client's ring is full (flow control).
 * Returns HMS_OK, or HMS_CANCELLED when the caller cancelled, died, or its deadline passed;
 * HMS_RESOURCE_EXHAUSTED when a large payload found no room in the arena. */
static hms_status_t hms__write_response_wait(hms_call_t *call, int32_t status, uint16_t flags, uint32_t ct,
                                             const void *a, size_t alen, const void *b, size_t blen) {
  hms__conn_t *c = call->conn;
  hms__aref_wire_t wire;
  if (HMS__UNLIKELY(alen + blen > c->resp.max_frame - HMS_FRAME_HEADER_BYTES) && !(flags & HMS__FRAME_F_ARENA)) {
    if (hms__arena_reply(c, &a, &alen, &b, &blen, &flags, &wire, NULL) != HMS_OK) return HMS_RESOURCE_EXHAUSTED;
  }
  hms_status_t st = hms__write_response_wait_x(call, status, flags, ct, a, alen, b, blen);
  if (st != HMS_OK && (flags & HMS__FRAME_F_ARENA)) hms__arena_unsend(c->arena, (const hms__aref_wire_t *)a);
  return st;
}

static hms_status_t hms__write_response_wait_x(hms_call_t *call, int32_t status, uint16_t flags, uint32_t ct,
                                               const void *a, size_t alen, const void *b, size_t blen) {
  hms__conn_t *c = call->conn;
  for (;;) {
    if (atomic_load(&c->gone) || (!call->deferred && c->dead)) return HMS_CANCELLED;
    uint8_t *f;
    char why[160];
    bool locked = call->deferred ? (pthread_mutex_lock(&c->resp_lock), true) : hms__resp_lock(c);
    int rc = hms__ring_reserve(&c->resp, alen + blen, &f, why, sizeof why);
    if (rc == HMS__RING_OK) {
      hms__fill_response(c, f, &call->hdr, status, flags, ct, a, alen, b, blen);
      hms__resp_unlock(c, locked);
      return HMS_OK;
    }
    if (rc == HMS__RING_CORRUPT) {
      hms__resp_unlock(c, locked);
      if (!call->deferred) c->dead = true;
      return HMS_CANCELLED;
    }
    if (call->hdr.deadline_ns && hms__now_ns() >= call->hdr.deadline_ns) {
      hms__resp_unlock(c, locked);
      return HMS_CANCELLED;
    }
    uint32_t seq = atomic_load_explicit(&c->resp.ctl->space_seq, memory_order_acquire);
    atomic_store(&c->resp.ctl->producer_waiting, 1);
    atomic_thread_fence(memory_order_seq_cst);
    uint64_t fb;
    rc = hms__ring_free(&c->resp, &fb, why, sizeof why);
    hms__resp_unlock(c, locked);
    if (rc != HMS__RING_OK) {
      if (!call->deferred) c->dead = true;
      return HMS_CANCELLED;
    }
    if (fb >= hms__frame_bytes(alen + blen) * 2) continue;
    if (hms_call_is_cancelled(call)) return HMS_CANCELLED;
    hms__futex_wait(&c->resp.ctl->space_seq, seq, 10000000LL, 1);
  }
}

HMS_API hms_status_t hms_call_send(hms_call_t *call, const char *data, size_t len, uint32_t content_type,
                                   hms_error_t *err) {
  if (!call) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "call is NULL");
  if (!(call->hdr.flags & HMS__FRAME_F_STREAM))
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0,
                     "call %llu is not a stream; the caller must open it as one (hms_stream_open / client.stream)",
                     (unsigned long long)call->hdr.call_id);
  if (len && !data) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "data is NULL but len is %zu", len);
  uint64_t max = hms__conn_max_message(call->conn);
  if (len > max)
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, 0,
                     "stream item of %zu bytes exceeds the connection's max message (arena quota) of %llu bytes; "
                     "split it",
                     len, (unsigned long long)max);
  if (hms__cancel_requested(call) || (call->hdr.deadline_ns && hms__now_ns() >= call->hdr.deadline_ns))
    return hms__fail(err, HMS_CANCELLED, 0, "the caller cancelled the stream or went away; stop producing");
  hms_status_t wst = hms__write_response_wait(call, HMS_OK, HMS__FRAME_F_ITEM, content_type, data, len, NULL, 0);
  if (wst == HMS_OK) call->out_bytes += len;
  if (wst == HMS_RESOURCE_EXHAUSTED)
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, 0,
                     "no room in the arena for a stream item of %zu bytes: the caller holds too many blocks", len);
  if (wst != HMS_OK)
    return hms__fail(err, HMS_CANCELLED, 0, "the caller cancelled the stream or went away; stop producing");
  hms__ok(err);
  return HMS_OK;
}

static void hms__payload_free_fn(hms_payload_t *p) { free((void *)p->data); }
static void hms__req_consumed(hms__conn_t *c);
static bool hms__conn_cancelled(const hms__conn_t *c, uint64_t id);

/* Copies a frame out of the ring into the connection's backlog. */
static bool hms__defer(hms__conn_t *c, const hms__frame_hdr_t *h, const uint8_t *payload) {
  if (c->bl_count >= HMS__MAX_DEFERRED || c->bl_bytes + h->payload_len > 4 * c->req.cap) return false;
  c->bl_bytes += h->payload_len;
  hms__deferred_t *d = calloc(1, sizeof *d);
  uint8_t *p = d ? malloc(h->payload_len ? h->payload_len : 1) : NULL;
  if (!d || !p) {
    free(d);
    free(p);
    return false;
  }
  memcpy(p, payload, h->payload_len);
  d->hdr = *h;
  d->payload = p;
  if (c->bl_tail)
    c->bl_tail->next = d;
  else
    c->bl_head = d;
  c->bl_tail = d;
  c->bl_count++;
  return true;
}

HMS_API hms_status_t hms_call_recv(hms_call_t *call, hms_payload_t *item, int *end, int64_t timeout_ns,
                                   hms_error_t *err) {
  if (item) memset(item, 0, sizeof *item);
  if (end) *end = 0;
  if (!call || !item || !end) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "call, item and end must not be NULL");
  if (!(call->hdr.flags & HMS__FRAME_F_CSTREAM) || !call->consumed)
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0,
                     "call %llu is not a client stream; the caller must open it with HMS_STREAM_CLIENT",
                     (unsigned long long)call->hdr.call_id);
  if (call->in_ended) {
    *end = 1;
    hms__ok(err);
    return HMS_OK;
  }
  hms__conn_t *c = call->conn;
  uint64_t id = call->hdr.call_id;
  int64_t deadline = hms__deadline_from_timeout(timeout_ns);
  if (call->hdr.deadline_ns && call->hdr.deadline_ns < deadline) deadline = call->hdr.deadline_ns;
  char why[200];
  for (;;) {
    if (c->dead) return hms__fail(err, HMS_CANCELLED, 0, "the caller went away");
    /* Items set aside earlier come first (they are older than anything in the ring). */
    for (hms__deferred_t *d = c->bl_head, *prev = NULL; d; prev = d, d = d->next) {
      if (d->hdr.call_id != id || (d->hdr.kind != HMS__FRAME_DATA && d->hdr.kind != HMS__FRAME_END)) continue;
      if (prev)
        prev->next = d->next;
      else
        c->bl_head = d->next;
      if (c->bl_tail == d) c->bl_tail = prev;
      c->bl_count--;
      c->bl_bytes -= d->hdr.payload_len;
      if (d->hdr.kind == HMS__FRAME_END) {
        call->in_ended = true;
        *end = 1;
        free(d->payload);
      } else if (d->hdr.flags & HMS__FRAME_F_ARENA) {
        int bad = hms__arena_resolve(c->arena, d->payload, d->hdr.payload_len, d->hdr.content_type, item, why,
                                     sizeof why);
        free(d->payload);
        free(d);
        if (bad) {
          c->dead = true;
          return hms__fail(err, HMS_CANCELLED, 0, "the caller sent a bad arena reference (%s); dropped", why);
        }
        hms__ok(err);
        return HMS_OK;
      } else {
        item->data = d->payload;
        item->len = d->hdr.payload_len;
        item->content_type = d->hdr.content_type;
        item->release = hms__payload_free_fn;
      }
      free(d);
      hms__ok(err);
      return HMS_OK;
    }
    hms__frame_hdr_t h;
    const uint8_t *payload;
    int rc = hms__ring_peek(&c->req, &h, &payload, why, sizeof why);
    if (rc == HMS__RING_CORRUPT) {
      c->dead = true;
      return hms__fail(err, HMS_CANCELLED, 0, "the caller's ring is corrupt (%s); the connection is dropped", why);
    }
    if (rc == HMS__RING_OK) {
      bool mine = h.call_id == id;
      if (mine && h.kind == HMS__FRAME_DATA && (h.flags & HMS__FRAME_F_ARENA)) {
        int bad = hms__arena_resolve(c->arena, payload, h.payload_len, h.content_type, item, why, sizeof why);
        hms__ring_consume(&c->req, &h);
        hms__req_consumed(c);
        if (bad) {
          c->dead = true;
          return hms__fail(err, HMS_CANCELLED, 0, "the caller sent a bad arena reference (%s); dropped", why);
        }
        hms__ok(err);
        return HMS_OK;
      }
      if (mine && h.kind == HMS__FRAME_DATA) {
        uint8_t *p = malloc(h.payload_len ? h.payload_len : 1);
        if (!p) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory for a stream item");
        memcpy(p, payload, h.payload_len);
        hms__ring_consume(&c->req, &h);
        hms__req_consumed(c);
        item->data = p;
        item->len = h.payload_len;
        item->content_type = h.content_type;
        item->release = hms__payload_free_fn;
        hms__ok(err);
        return HMS_OK;
      }
      if (mine && h.kind == HMS__FRAME_END) {
        hms__ring_consume(&c->req, &h);
        hms__req_consumed(c);
        call->in_ended = true;
        *end = 1;
        hms__ok(err);
        return HMS_OK;
      }
      if (h.kind == HMS__FRAME_CANCEL) {
        c->cancelled[c->ncancelled++ % 64] = h.call_id;
        hms__ring_consume(&c->req, &h);
        hms__req_consumed(c);
        if (mine) return hms__fail(err, HMS_CANCELLED, 0, "the caller cancelled the stream");
        continue;
      }
      /* Someone else's frame (another thread's call on this connection): set it aside. */
      if (!hms__defer(c, &h, payload)) {
        c->dead = true;
        return hms__fail(err, HMS_RESOURCE_EXHAUSTED, 0,
                         "more than %d frames queued behind this client stream; the connection is dropped",
                         HMS__MAX_DEFERRED);
      }
      hms__ring_consume(&c->req, &h);
      hms__req_consumed(c);
      continue;
    }
    /* Empty: wait for the caller's next frame (its doorbell), a hang-up, or the deadline. */
    if (hms__conn_cancelled(c, id)) return hms__fail(err, HMS_CANCELLED, 0, "the caller cancelled the stream");
    int64_t now = hms__now_ns();
    if (now >= deadline) {
      if (call->hdr.deadline_ns && now >= call->hdr.deadline_ns)
        return hms__fail(err, HMS_DEADLINE_EXCEEDED, 0, "the call's deadline passed while waiting for items");
      return hms__fail(err, HMS_DEADLINE_EXCEEDED, 0, "no item within the timeout (the stream goes on)");
    }
    atomic_store_explicit(&c->req.ctl->consumer_sleeping, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    if (!hms__ring_has_data(&c->req)) {
      int64_t left = deadline - now;
      int ms = left > 10000000LL ? 10 : (int)((left + 999999) / 1000000);
      struct pollfd p[2] = {{.fd = c->bell, .events = POLLIN}, {.fd = c->sock, .events = POLLRDHUP}};
      if (poll(p, 2, ms) > 0) {
        uint64_t v;
        if (p[0].revents & POLLIN)
          while (read(c->bell, &v, sizeof v) > 0) {
          }
        if (p[1].revents & (POLLHUP | POLLRDHUP | POLLERR)) c->dead = true;
      }
    }
    atomic_store_explicit(&c->req.ctl->consumer_sleeping, 0, memory_order_relaxed);
  }
}

HMS_API int hms_call_is_stream(const hms_call_t *call) {
  return call && (call->hdr.flags & HMS__FRAME_F_STREAM) ? 1 : 0;
}

/* Error replies carry: u32 message length, message, details bytes (content type in the header). */
static bool hms__write_error(hms__conn_t *c, const hms__frame_hdr_t *req, int32_t status, const char *msg,
                             const void *details, size_t dlen, uint32_t dct) {
  /* A refused one-way call has nobody to tell; its id 0 would read as a goodbye to the client. */
  if ((req->flags & HMS__FRAME_F_ONEWAY) && req->call_id == 0) return true;
  size_t mlen = strlen(msg);
  uint64_t room = c->resp.max_frame - HMS_FRAME_HEADER_BYTES - 4;
  if (mlen > room) mlen = room;
  if (dlen > room - mlen) dlen = 0; /* details too big for one frame: drop them, keep the message */
  size_t blen = 4 + mlen + dlen;
  uint8_t stackbuf[512];
  uint8_t *buf = blen <= sizeof stackbuf ? stackbuf : malloc(blen);
  if (!buf) return hms__write_response(c, req, status, HMS_CT_NONE, NULL, 0, NULL, 0);
  uint32_t m32 = (uint32_t)mlen;
  memcpy(buf, &m32, 4);
  memcpy(buf + 4, msg, mlen);
  if (dlen) memcpy(buf + 4 + mlen, details, dlen);
  bool ok = hms__write_response(c, req, status, dlen ? dct : HMS_CT_NONE, buf, blen, NULL, 0);
  if (buf != stackbuf) free(buf);
  return ok;
}

HMS_API hms_status_t hms_call_reply(hms_call_t *call, const char *data, size_t len, uint32_t content_type,
                                    hms_error_t *err) {
  if (!call) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "call is NULL");
  if (call->replied)
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0, "call %llu was already answered",
                     (unsigned long long)call->hdr.call_id);
  if (len && !data) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "data is NULL but len is %zu", len);
  uint64_t max = hms__conn_max_message(call->conn);
  if (len > max)
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, 0,
                     "reply of %zu bytes exceeds the connection's max message (arena quota) of %llu bytes; raise "
                     "the server's arena quota or split the reply",
                     len, (unsigned long long)max);
  if (call->hdr.flags & HMS__FRAME_F_ONEWAY) { /* nobody waits for it */
    call->replied = true;
    hms__ok(err);
    return HMS_OK;
  }
  if (call->hdr.flags & HMS__FRAME_F_STREAM) return hms_call_send(call, data, len, content_type, err);
  hms_error_t aerr;
  aerr.message[0] = 0;
  if (len > call->conn->resp.max_frame - HMS_FRAME_HEADER_BYTES) {
    hms__aref_wire_t wire;
    hms_status_t ast = hms__arena_copy_in(call->conn->arena, data, len, NULL, 0, &wire, &aerr);
    if (ast) return hms__fail(err, ast, 0, "%s", aerr.message);
    if (!hms__write_response_f(call->conn, &call->hdr, HMS_OK, HMS__FRAME_F_ARENA, content_type, &wire,
                               sizeof wire, NULL, 0))
      return hms__fail(err, HMS_INTERNAL, 0, "response ring unexpectedly full");
  } else if (!hms__write_response(call->conn, &call->hdr, HMS_OK, content_type, data, len, NULL, 0)) {
    return hms__fail(err, HMS_INTERNAL, 0, "response ring unexpectedly full");
  }
  call->replied = true;
  call->out_bytes += len;
  hms__ok(err);
  return HMS_OK;
}

HMS_API void hms_call_set_error(hms_call_t *call, hms_status_t code, const char *message, const char *details,
                                size_t details_len, uint32_t details_content_type) {
  if (!call) return;
  call->err_code = code;
  hms__strlcpy(call->err_msg, message ? message : "", sizeof call->err_msg);
  free(call->err_details);
  call->err_details = NULL;
  call->err_details_len = 0;
  if (details && details_len) {
    call->err_details = malloc(details_len);
    if (call->err_details) {
      memcpy(call->err_details, details, details_len);
      call->err_details_len = details_len;
      call->err_details_ct = details_content_type;
    }
  }
}

static bool hms__conn_cancelled(const hms__conn_t *c, uint64_t id) {
  uint32_t n = c->ncancelled < 64 ? c->ncancelled : 64;
  for (uint32_t i = 0; i < n; i++)
    if (c->cancelled[i] == id) return true;
  return false;
}

static bool hms__is_cancel_for(const hms__frame_hdr_t *h, void *arg) {
  return h->kind == HMS__FRAME_CANCEL && h->call_id == *(const uint64_t *)arg;
}

/* Cheap check (one shared load unless the client sent cancels we have not consumed yet). */
static bool hms__cancel_requested(hms_call_t *call) {
  hms__conn_t *c = call->conn;
  uint64_t id = call->hdr.call_id;
  if (!id) return false;
  if (hms__conn_cancelled(c, id)) return true;
  if (atomic_load_explicit(&c->req.ctl->cancels, memory_order_acquire) == c->ncancelled) return false;
  /* The cancel, if any, sits behind this call in the request ring: look without consuming. */
  hms__frame_hdr_t cur = call->hdr;
  if (call->consumed) cur.len = 0; /* the call's own frame already left the ring */
  return hms__ring_scan_ahead(&c->req, &cur, hms__is_cancel_for, &id, 4096);
}

HMS_API int hms_call_is_cancelled(hms_call_t *call) {
  if (!call) return 0;
  hms__conn_t *c = call->conn;
  if (call->deferred) {
    /* Another thread: never touch the rings the dispatcher reads. Its CANCEL frame is consumed by the
     * dispatcher (this call's own frame is gone) and lands in the cancelled set. */
    if (atomic_load(&c->gone)) return 1;
    if (call->hdr.deadline_ns && hms__now_ns() >= call->hdr.deadline_ns) return 1;
    return hms__conn_cancelled(c, call->hdr.call_id) ? 1 : 0;
  }
  if (hms__cancel_requested(call)) return 1;
  if (call->hdr.deadline_ns && hms__now_ns() >= call->hdr.deadline_ns) return 1;
  /* A caller that died has given up too. */
  struct pollfd p = {.fd = c->sock, .events = POLLRDHUP};
  if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR))) return 1;
  return 0;
}

HMS_API int hms_call_is_oneway(const hms_call_t *call) {
  return call && (call->hdr.flags & HMS__FRAME_F_ONEWAY) ? 1 : 0;
}

HMS_API void hms_call_peer(const hms_call_t *call, int32_t *pid, uint32_t *uid, uint32_t *gid) {
  if (pid) *pid = call ? call->conn->pid : 0;
  if (uid) *uid = call ? call->conn->uid : 0;
  if (gid) *gid = call ? call->conn->gid : 0;
}

HMS_API int64_t hms_call_time_left_ns(const hms_call_t *call) {
  if (!call || call->hdr.deadline_ns == 0) return INT64_MAX;
  return call->hdr.deadline_ns - hms__now_ns();
}
HMS_API uint64_t hms_call_id(const hms_call_t *call) { return call ? call->hdr.call_id : 0; }
HMS_API uint32_t hms_call_function_id(const hms_call_t *call) { return call ? call->hdr.fn_id : 0; }
HMS_API const char *hms_call_function_name(const hms_call_t *call) {
  return call && call->fn ? call->fn->name : "";
}
HMS_API const char *hms_call_service_name(const hms_call_t *call) { return call ? call->conn->svc->name : ""; }
HMS_API void hms_call_trace(const hms_call_t *call, uint8_t trace_id[16], uint8_t span_id[8], uint8_t *flags) {
  if (!call) return;
  if (trace_id) memcpy(trace_id, call->hdr.trace_id, 16);
  if (span_id) memcpy(span_id, call->hdr.span_id, 8);
  if (flags) *flags = (call->hdr.flags & HMS__FRAME_F_TRACE_SAMPLED) ? 1 : 0;
}

/* A frame dropped without being handled: an arena block it names goes back to the client. */
static void hms__drop_payload(hms__conn_t *c, const hms__frame_hdr_t *hdr, const uint8_t *payload) {
  if (HMS__LIKELY(!(hdr->flags & HMS__FRAME_F_ARENA)) || hdr->payload_len != sizeof(hms__aref_wire_t)) return;
  hms__aref_wire_t w;
  memcpy(&w, payload, sizeof w);
  hms__arena_release_wire(c->arena, &w);
}

static void hms__dispatch_x(hms__conn_t *c, const hms__frame_hdr_t *hdr, const uint8_t *payload, bool consumed,
                            hms_payload_t *areq);

/* Policy and limits, before a handler runs: true when the call was refused (answered and audited). */
static bool hms__refuse(hms__conn_t *c, const hms__fn_t *fn, const hms__frame_hdr_t *hdr, size_t req_len) {
  hms_service_t *svc = c->svc;
  char msg[256];
  int32_t code;
  uint32_t max_in = atomic_load_explicit(&svc->max_inflight, memory_order_relaxed);
  uint64_t max_msg = atomic_load_explicit(&svc->max_message, memory_order_relaxed);
  if (HMS__UNLIKELY(hms__acl_denied(c, fn))) {
    code = HMS_PERMISSION_DENIED;
    hms__access_deny_message(svc, fn, c->uid, c->gid, msg, sizeof msg);
  } else if (HMS__UNLIKELY(max_in) && (uint32_t)atomic_load_explicit(&c->deferred_out, memory_order_acquire) >= max_in) {
    code = HMS_RESOURCE_EXHAUSTED;
    snprintf(msg, sizeof msg, "%s.%s refused: this connection has %u calls in flight and %s allows %u per "
             "connection; wait for replies before sending more", svc->name, fn->name,
             (unsigned)atomic_load(&c->deferred_out), svc->name, max_in);
  } else if (HMS__UNLIKELY(max_msg) && req_len > max_msg) {
    code = HMS_RESOURCE_EXHAUSTED;
    snprintf(msg, sizeof msg, "request of %zu bytes to %s.%s exceeds the service's max message of %llu bytes; "
             "split it", req_len, svc->name, fn->name, (unsigned long long)max_msg);
  } else {
    return false;
  }
  hms__audit_call(c, fn, hdr, code, false, 0); /* queued before the caller can see the refusal */
  hms__write_error(c, hdr, code, msg, NULL, 0, 0);
  hms__stats_refused(svc, hdr->fn_id, hdr->flags, req_len, code);
  return true;
}

/* Runs a request. An arena request is resolved into a view of the client's block first (an invalid
 * reference drops the connection) and the block goes back after the handler, unless it took it. */
static void hms__dispatch(hms__conn_t *c, const hms__frame_hdr_t *hdr, const uint8_t *payload, bool consumed) {
  if (HMS__LIKELY(!(hdr->flags & HMS__FRAME_F_ARENA))) {
    hms__dispatch_x(c, hdr, payload, consumed, NULL);
    return;
  }
  hms_payload_t areq;
  char why[200];
  if (hms__arena_resolve(c->arena, payload, hdr->payload_len, hdr->content_type, &areq, why, sizeof why) != 0) {
    hms__frame_hdr_t none;
    memset(&none, 0, sizeof none);
    char msg[256];
    snprintf(msg, sizeof msg, "server dropped the connection: %s", why);
    hms__write_error(c, &none, HMS_DATA_LOSS, msg, NULL, 0, 0);
    c->dead = true;
    return;
  }
  hms__dispatch_x(c, hdr, payload, consumed, &areq);
  hms_payload_release(&areq); /* no-op when the handler took it */
}

static void hms__dispatch_x(hms__conn_t *c, const hms__frame_hdr_t *hdr, const uint8_t *payload, bool consumed,
                            hms_payload_t *areq) {
  hms_service_t *svc = c->svc;
  char msg[256];
  uint64_t bytes_in = areq ? areq->len : hdr->payload_len;
  int64_t t0 = hms__now_ns(); /* metrics: the call's start (and the deadline check's clock) */
  if (hdr->deadline_ns != 0 && t0 >= hdr->deadline_ns) {
    hms__write_error(c, hdr, HMS_DEADLINE_EXCEEDED, "deadline expired before the server started the call",
                     NULL, 0, 0);
    hms__stats_refused(svc, hdr->fn_id, hdr->flags, bytes_in, HMS_DEADLINE_EXCEEDED);
    return;
  }
  uint32_t nf = atomic_load_explicit(&svc->nfns, memory_order_acquire);
  if (hdr->fn_id == 0 || hdr->fn_id > nf) {
    snprintf(msg, sizeof msg,
             "function id %u is not served by %s@%s (it has %u functions); reconnect to refresh the table",
             hdr->fn_id, svc->name, svc->version, nf);
    hms__write_error(c, hdr, HMS_UNIMPLEMENTED, msg, NULL, 0, 0);
    hms__stats_refused(svc, hdr->fn_id, hdr->flags, bytes_in, HMS_UNIMPLEMENTED);
    return;
  }
  if (HMS__UNLIKELY(hms__refuse(c, svc->fns[hdr->fn_id - 1], hdr, areq ? areq->len : hdr->payload_len))) return;
  hms_call_t call;
  /* Not memset: the struct carries a 256-byte message buffer that only errors use. */
  call.audit_t0 = hms__audit_start(c, svc->fns[hdr->fn_id - 1]);
  call.replied = false;
  call.err_code = HMS_OK;
  call.err_msg[0] = 0;
  call.err_details = NULL;
  call.err_details_len = 0;
  call.err_details_ct = 0;
  call.in_ended = false;
  call.deferred = false;
  call.arena_req = areq;
  call.conn = c;
  call.fn = svc->fns[hdr->fn_id - 1];
  call.hdr = *hdr;
  call.stats = call.fn->stats;
  call.t0 = t0;
  call.out_bytes = 0;
  call.handed_off = false;
  bool stream = (hdr->flags & HMS__FRAME_F_STREAM) != 0;
  call.consumed = consumed;
  if ((call.fn->flags & HMS_FN_CLIENT_STREAM) && !(hdr->flags & HMS__FRAME_F_CSTREAM)) {
    snprintf(msg, sizeof msg, "%s.%s reads a client stream: open it with HMS_STREAM_CLIENT (client_stream/bidi_stream)",
             svc->name, call.fn->name);
    hms__write_error(c, hdr, HMS_FAILED_PRECONDITION, msg, NULL, 0, 0);
    hms__stats_refused(svc, hdr->fn_id, hdr->flags, bytes_in, HMS_FAILED_PRECONDITION);
    return;
  }
  if ((call.fn->flags & HMS_FN_STREAM) && !stream && !(hdr->flags & HMS__FRAME_F_ONEWAY)) {
    snprintf(msg, sizeof msg, "%s.%s is a streaming function: open it as a stream (hms_stream_open, client.stream)",
             svc->name, call.fn->name);
    hms__write_error(c, hdr, HMS_FAILED_PRECONDITION, msg, NULL, 0, 0);
    hms__stats_refused(svc, hdr->fn_id, hdr->flags, bytes_in, HMS_FAILED_PRECONDITION);
    return;
  }
  hms_payload_t req = {.data = payload,
                       .len = hdr->payload_len,
                       .content_type = hdr->content_type};
  if (areq) {
    req.data = areq->data;
    req.len = areq->len;
  }
  if (call.stats) hms__stats_begin(call.stats, hdr->flags, bytes_in);
  hms__trace_save_t trace;
  hms__trace_enter(hdr, &trace);
  hms_status_t rc = call.fn->fn(&call, &req, call.fn->user_data);
  hms__trace_leave(&trace);
  /* metrics: what the caller gets (a reply sent by the handler is OK); deferred calls finish later */
  hms_status_t outcome = call.replied ? HMS_OK : (call.err_code ? call.err_code : rc);
  if (hdr->flags & HMS__FRAME_F_ONEWAY) call.replied = true; /* errors of one-way calls go nowhere */
  if (stream && !call.replied) { /* replied: deferred (hms_call_defer): the deferred call ends it */
    /* End of stream: a final frame with the handler's status (waiting for room, like the items). */
    hms_status_t code = call.err_code ? call.err_code : rc;
    if (code == HMS_OK) {
      hms__write_response_wait(&call, HMS_OK, 0, HMS_CT_NONE, NULL, 0, NULL, 0);
    } else {
      if (!call.err_msg[0])
        snprintf(call.err_msg, sizeof call.err_msg, "handler %s.%s returned %s", svc->name, call.fn->name,
                 hms_status_str(code));
      size_t mlen = strlen(call.err_msg);
      uint32_t m32 = (uint32_t)mlen;
      uint64_t room = c->resp.max_frame - HMS_FRAME_HEADER_BYTES - 4 - mlen;
      size_t dlen = call.err_details_len <= room ? call.err_details_len : 0;
      uint8_t *buf = malloc(4 + mlen + dlen);
      if (buf) {
        memcpy(buf, &m32, 4);
        memcpy(buf + 4, call.err_msg, mlen);
        if (dlen) memcpy(buf + 4 + mlen, call.err_details, dlen);
        hms__write_response_wait(&call, code, 0, dlen ? call.err_details_ct : HMS_CT_NONE, buf, 4 + mlen + dlen,
                                 NULL, 0);
        free(buf);
      }
    }
    call.replied = true;
  }
  if (!call.replied) {
    hms_status_t code = call.err_code ? call.err_code : rc;
    if (code == HMS_OK) {
      hms__write_response(c, hdr, HMS_OK, HMS_CT_NONE, NULL, 0, NULL, 0);
    } else {
      if (!call.err_msg[0])
        snprintf(call.err_msg, sizeof call.err_msg, "handler %s.%s returned %s", svc->name, call.fn->name,
                 hms_status_str(code));
      hms__write_error(c, hdr, code, call.err_msg, call.err_details, call.err_details_len, call.err_details_ct);
    }
  }
  if (call.audit_t0) { /* 0 when deferred: the deferred answer records it */
    int32_t code = call.err_code ? call.err_code : rc;
    hms__audit_call(c, call.fn, hdr, code, true, hms__now_ns() - call.audit_t0);
  }
  free(call.err_details);
  if (call.stats && !call.handed_off) hms__stats_end(call.stats, outcome, call.out_bytes, hms__now_ns() - t0);
}

static inline bool hms__oversize(const hms__conn_t *c, const hms__frame_hdr_t *h) {
  uint64_t m = atomic_load_explicit(&c->svc->max_message, memory_order_relaxed);
  return m && h->payload_len > m;
}

/* The batch handler for a request frame, or NULL: only plain one-way requests of a function that has one. */
static hms_batch_handler_fn hms__batch_fn_for(const hms__conn_t *c, const hms__frame_hdr_t *h, void **ud) {
  if (h->kind != HMS__FRAME_REQUEST ||
      (h->flags & (HMS__FRAME_F_ONEWAY | HMS__FRAME_F_STREAM | HMS__FRAME_F_CSTREAM | HMS__FRAME_F_ARENA)) !=
          HMS__FRAME_F_ONEWAY) /* arena payloads go through hms__dispatch (zero copy) */
    return NULL;
  uint32_t nf = atomic_load_explicit(&c->svc->nfns, memory_order_acquire);
  if (h->fn_id == 0 || h->fn_id > nf) return NULL;
  hms__fn_t *f = c->svc->fns[h->fn_id - 1];
  hms_batch_handler_fn fn = atomic_load_explicit(&f->batch_fn, memory_order_acquire);
  if (fn && (hms__acl_denied((hms__conn_t *)c, f) || hms__oversize(c, h))) return NULL; /* refused one by one */
  if (fn) *ud = f->batch_user_data;
  return fn;
}

/* Hands a run of one-way requests (the peeked frame `first` and the matching frames right behind it)
 * to the function's batch handler. Payloads are copied out of the ring first (a hostile client may
 * rewrite the ring while the handler runs), and each frame is consumed as it is copied. Returns the
 * number of frames consumed (>= 1), or -1 when out of memory (nothing consumed). */
static int hms__dispatch_oneway_batch(hms__conn_t *c, const hms__frame_hdr_t *first, const uint8_t *payload,
                                      hms_batch_handler_fn fn, void *ud, int max_frames) {
  hms_node_t *node = c->svc->node;
  if (!node->batch_items) {
    node->batch_items = malloc(sizeof(hms_payload_t) * HMS_BATCH_MAX_ITEMS);
    node->batch_offsets = malloc(sizeof(uint32_t) * (HMS_BATCH_MAX_ITEMS + 1));
    if (!node->batch_items || !node->batch_offsets) {
      free(node->batch_items);
      free(node->batch_offsets);
      node->batch_items = NULL;
      node->batch_offsets = NULL;
      return -1;
    }
  }
  if (max_frames > HMS_BATCH_MAX_ITEMS) max_frames = HMS_BATCH_MAX_ITEMS;
  hms__frame_hdr_t h = *first;
  const uint8_t *p = payload;
  size_t used = 0, n = 0;
  int consumed = 0;
  bool uniform = true;
  int64_t now = hms__now_ns();
  char why[200];
  for (;;) {
    /* allocated on the first run even when its payloads are empty: memcpy into NULL + 0 is undefined
     * (UBSan, found by tests/c/fuzz_server_ring.c) */
    if (!node->batch_data || used + h.payload_len > node->batch_cap) {
      if (used + h.payload_len > HMS_BATCH_MAX_BYTES && consumed > 0) break; /* next run takes it */
      size_t cap = node->batch_cap ? node->batch_cap : 65536;
      while (cap < used + h.payload_len) cap *= 2;
      uint8_t *grown = realloc(node->batch_data, cap);
      if (!grown) {
        if (consumed > 0) break;
        return -1;
      }
      node->batch_data = grown;
      node->batch_cap = cap;
    }
    if (h.deadline_ns == 0 || now < h.deadline_ns) { /* expired one-way calls are dropped */
      memcpy(node->batch_data + used, p, h.payload_len);
      node->batch_offsets[n] = (uint32_t)used;
      node->batch_items[n].len = h.payload_len;
      node->batch_items[n].content_type = h.content_type;
      if (h.content_type != first->content_type) uniform = false;
      used += h.payload_len;
      n++;
    }
    hms__ring_consume(&c->req, &h);
    if (++consumed >= max_frames) break;
    /* The next frame joins the run only if it is another plain one-way call of the same function. */
    if (hms__ring_peek(&c->req, &h, &p, why, sizeof why) != HMS__RING_OK) break; /* the drain loop reports corruption */
    if (h.kind != HMS__FRAME_REQUEST || h.fn_id != first->fn_id ||
        (h.flags & (HMS__FRAME_F_ONEWAY | HMS__FRAME_F_STREAM | HMS__FRAME_F_CSTREAM | HMS__FRAME_F_ARENA)) !=
            HMS__FRAME_F_ONEWAY || hms__oversize(c, &h))
      break;
  }
  hms__stats_fn_t *stats = c->svc->fns[first->fn_id - 1]->stats; /* fn_id checked by hms__batch_fn_for */
  if (n == 0) {
    if (stats) hms__stats_oneway_run(stats, 0, (uint64_t)consumed, 0, 0); /* all expired */
    return consumed;
  }
  node->batch_offsets[n] = (uint32_t)used;
  for (size_t i = 0; i < n; i++) {
    node->batch_items[i].data = node->batch_data + node->batch_offsets[i];
    node->batch_items[i].release = NULL;
  }
  hms__req_consumed(c); /* the run is copied out: let a waiting sender refill while the handler runs */
  hms_batch_t b = {.count = n,
                   .items = node->batch_items,
                   .data = node->batch_data,
                   .offsets = node->batch_offsets,
                   .content_type = uniform ? first->content_type : UINT32_MAX,
                   .peer_pid = c->pid,
                   .peer_uid = c->uid,
                   .peer_gid = c->gid};
  int64_t st0 = stats ? hms__now_ns() : 0;
  const hms__fn_t *afn = c->svc->fns[first->fn_id - 1];
  int64_t t0 = hms__audit_start(c, afn);
  fn(&b, ud);
  if (t0) { /* every one-way call of the run, each with the run's duration */
    int64_t dur = hms__now_ns() - t0;
    for (size_t i = 0; i < n; i++) hms__audit_call(c, afn, NULL, HMS_OK, true, dur);
  }
  if (stats) hms__stats_oneway_run(stats, n, (uint64_t)consumed - n, used, hms__now_ns() - st0);
  return consumed;
}

/* After consuming request frames: wake a client that waits for space in its request ring. */
static void hms__req_consumed(hms__conn_t *c) {
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&c->req.ctl->producer_waiting, memory_order_relaxed)) {
    atomic_store(&c->req.ctl->producer_waiting, 0);
    atomic_fetch_add_explicit(&c->req.ctl->space_seq, 1, memory_order_release);
    hms__futex_wake(&c->req.ctl->space_seq, INT_MAX, 1);
  }
}

/* Drains up to HMS__DRAIN_BATCH requests of one connection. Returns the number handled, or -1 when
 * the connection must be dropped. */
static int hms__drain(hms__conn_t *c) {
  int done = 0;
  bool consumed_any = false; /* wake a client waiting for space once per batch, not per frame */
  char why[200];
  while (done < HMS__DRAIN_BATCH) {
    if (c->dead) return -1;
    if (!c->bl_head && !hms__ring_has_data(&c->req)) break;
    /* Only start a call when its reply is sure to fit: a client that stops reading its replies
     * stalls itself, never the dispatcher. */
    bool locked = hms__resp_lock(c);
    uint64_t free_bytes = c->resp.cap - (c->resp.pos - c->resp.peer_cache); /* cached tail first */
    int frc = HMS__RING_OK;
    if (free_bytes < 2 * c->resp.max_frame) frc = hms__ring_free(&c->resp, &free_bytes, why, sizeof why);
    if (frc == HMS__RING_OK && free_bytes < 2 * c->resp.max_frame) {
      atomic_store(&c->resp.ctl->producer_waiting, 1);
      atomic_thread_fence(memory_order_seq_cst);
      frc = hms__ring_free(&c->resp, &free_bytes, why, sizeof why);
      if (frc == HMS__RING_OK && free_bytes < 2 * c->resp.max_frame) {
        hms__resp_unlock(c, locked);
        c->blocked = true;
        break;
      }
      atomic_store(&c->resp.ctl->producer_waiting, 0);
    }
    hms__resp_unlock(c, locked);
    if (frc != HMS__RING_OK) return -1;
    c->blocked = false;
    hms__frame_hdr_t hdr;
    const uint8_t *payload;
    hms__deferred_t *d = c->bl_head; /* frames set aside by a client-stream handler come first */
    int rc = HMS__RING_OK;
    if (d) {
      c->bl_head = d->next;
      if (!c->bl_head) c->bl_tail = NULL;
      c->bl_count--;
      c->bl_bytes -= d->hdr.payload_len;
      hdr = d->hdr;
      payload = d->payload;
    } else {
      rc = hms__ring_peek(&c->req, &hdr, &payload, why, sizeof why);
      if (rc == HMS__RING_EMPTY) break;
    }
    bool from_ring = d == NULL;
#define HMS__RELEASE_FRAME()                  \
  do {                                       \
    if (from_ring) {                         \
      hms__ring_consume(&c->req, &hdr);      \
      consumed_any = true;                   \
    } else {                                 \
      free(d->payload);                      \
      free(d);                               \
    }                                        \
  } while (0)
    if (rc == HMS__RING_OK && hdr.kind == HMS__FRAME_CANCEL) {
      c->cancelled[c->ncancelled++ % 64] = hdr.call_id;
      HMS__RELEASE_FRAME();
      continue;
    }
    if (rc == HMS__RING_OK && (hdr.kind == HMS__FRAME_DATA || hdr.kind == HMS__FRAME_END)) {
      hms__drop_payload(c, &hdr, payload);
      HMS__RELEASE_FRAME(); /* items of a client stream whose handler already returned */
      continue;
    }
    /* A cancelled request that has not started is skipped. Its CANCEL frame is usually still behind
     * it in the ring: look ahead, but only when the client says it sent cancels we have not seen. */
    if (rc == HMS__RING_OK && hdr.kind == HMS__FRAME_REQUEST && hdr.call_id) {
      hms__frame_hdr_t scan = hdr;
      if (!from_ring) scan.len = 0;
      if (hms__conn_cancelled(c, hdr.call_id) ||
          (atomic_load_explicit(&c->req.ctl->cancels, memory_order_acquire) != c->ncancelled &&
           hms__ring_scan_ahead(&c->req, &scan, hms__is_cancel_for, &hdr.call_id, 4096))) {
        hms__stats_cancel_skipped(c->svc, hdr.fn_id);
        hms__drop_payload(c, &hdr, payload);
        HMS__RELEASE_FRAME();
        continue;
      }
    }
    if (rc == HMS__RING_CORRUPT || hdr.kind != HMS__FRAME_REQUEST) {
      /* The client corrupted its own ring: tell it why if we can, then drop only this connection. */
      if (rc != HMS__RING_CORRUPT) snprintf(why, sizeof why, "unexpected frame kind %u in request ring", hdr.kind);
      if (!from_ring) {
        free(d->payload);
        free(d);
      }
      hms__frame_hdr_t none;
      memset(&none, 0, sizeof none);
      char msg[256];
      snprintf(msg, sizeof msg, "server dropped the connection: %s", why);
      hms__write_error(c, &none, HMS_DATA_LOSS, msg, NULL, 0, 0);
      return -1;
    }
    if (from_ring && (hdr.flags & HMS__FRAME_F_CSTREAM)) {
      /* A client stream: its handler reads the frames behind this one, so this one must leave the
       * ring first. Copy its payload out and consume it. */
      uint8_t *copy = malloc(hdr.payload_len ? hdr.payload_len : 1);
      if (!copy) return -1;
      memcpy(copy, payload, hdr.payload_len);
      hms__ring_consume(&c->req, &hdr);
      hms__req_consumed(c); /* the handler will wait for the frames behind: let the client write them */
      hms__dispatch(c, &hdr, copy, true);
      free(copy);
    } else {
      void *bud = NULL;
      hms_batch_handler_fn bfn = from_ring ? hms__batch_fn_for(c, &hdr, &bud) : NULL;
      int k = bfn ? hms__dispatch_oneway_batch(c, &hdr, payload, bfn, bud, HMS_BATCH_MAX_ITEMS) : -1;
      if (k > 0) {
        consumed_any = true;
        done += k;
        continue;
      }
      hms__dispatch(c, &hdr, payload, !from_ring);
      HMS__RELEASE_FRAME();
    }
#undef HMS__RELEASE_FRAME
    done++;
  }
  if (consumed_any) hms__req_consumed(c);
  return done;
}

/* Drops dead connections and expired handshakes. */
static void hms__reap(hms_node_t *node) {
  int64_t now = node->nconns ? hms__now_ns() : 0;
  for (size_t i = node->nconns; i-- > 0;) {
    hms__conn_t *c = node->conns[i];
    if (c->dead || (c->state == HMS__CONN_HANDSHAKE && now > c->handshake_deadline)) hms__conn_drop(node, i);
  }
}

/* Handles epoll events; returns true when a stop was requested. Sets *interrupted on EINTR. */
static bool hms__handle_events(hms_node_t *node, int timeout_ms, bool *interrupted) {
  struct epoll_event evs[64];
  int n = epoll_wait(node->epfd, evs, 64, timeout_ms);
  if (n < 0 && errno == EINTR && interrupted) *interrupted = true;
  bool stop = false;
  for (int i = 0; i < n; i++) {
    hms__ep_tag_t *tag = evs[i].data.ptr;
    uint64_t v;
    switch (tag->kind) {
      case HMS__EP_STOP:
        /* The eventfd only wakes us; the flag says whether a stop is pending. A write that lost the
         * race with a loop that had already seen the flag (and returned) is stale: ignore it. */
        while (read(node->stop_fd, &v, sizeof v) > 0) {
        }
        if (atomic_load_explicit(&node->stop_requested, memory_order_acquire)) stop = true;
        break;
      case HMS__EP_LISTEN:
        hms__accept_all(node, tag->ptr);
        break;
      case HMS__EP_CONN_BELL: {
        hms__conn_t *c = tag->ptr;
        if (!c->dead)
          while (read(c->bell, &v, sizeof v) > 0) {
          }
        break;
      }
      case HMS__EP_CONN_SOCK: {
        hms__conn_t *c = tag->ptr;
        if (c->dead) break;
        if (evs[i].events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)) {
          c->dead = true;
        } else if (c->state == HMS__CONN_HANDSHAKE) {
          if (!hms__handshake(node, c)) c->dead = true;
        } else {
          /* Only arena traffic (segment announcements, releases) is expected on an active connection's
           * socket; anything else is a protocol error. */
          char why[200];
          if (hms__arena_drain(c->arena, why, sizeof why) != 0) c->dead = true;
        }
        break;
      }
    }
  }
  /* Drop dead connections and expired handshakes after the loop: tags above may point at them. */
  hms__reap(node);
  return stop;
}

static int hms__epoll_timeout_ms(hms_node_t *node, int64_t deadline) {
  int64_t now = hms__now_ns();
  int64_t until = deadline;
  for (size_t i = 0; i < node->nconns; i++)
    if (node->conns[i]->state == HMS__CONN_HANDSHAKE && node->conns[i]->handshake_deadline < until)
      until = node->conns[i]->handshake_deadline;
  if (until == INT64_MAX) return -1;
  int64_t ms = (until - now + 999999) / 1000000;
  if (ms < 0) ms = 0;
  if (ms > INT_MAX) ms = INT_MAX;
  return (int)ms;
}

static void hms__set_sleeping(hms_node_t *node, uint32_t v) {
  for (size_t i = 0; i < node->nconns; i++)
    if (node->conns[i]->state == HMS__CONN_ACTIVE)
      atomic_store_explicit(&node->conns[i]->req.ctl->consumer_sleeping, v, memory_order_relaxed);
}

/* One pass of every active connection's requests. Returns how many were handled. */
static int hms__drain_all(hms_node_t *node) {
  int work = 0;
  for (size_t i = 0; i < node->nconns; i++) {
    hms__conn_t *c = node->conns[i];
    if (c->state != HMS__CONN_ACTIVE || c->dead) continue;
    int r = hms__drain(c);
    if (r < 0)
      c->dead = true;
    else
      work += r;
  }
  return work;
}

/* About to sleep: tell every client to ring its doorbell, then look once more (a request that raced
 * with the flag would otherwise sleep with us). Returns whether work is pending; *dead whether a
 * connection died (to be dropped now, not after the next event). A connection blocked on its reply
 * ring is not pending: its client rings when it has read. */
static bool hms__arm(hms_node_t *node, bool *dead) {
  hms__set_sleeping(node, 1);
  atomic_thread_fence(memory_order_seq_cst);
  bool pending = false;
  *dead = false;
  for (size_t i = 0; i < node->nconns; i++) {
    hms__conn_t *c = node->conns[i];
    *dead |= c->dead;
    if (c->state == HMS__CONN_ACTIVE && !c->dead && !c->blocked && (c->bl_head || hms__ring_has_data(&c->req)))
      pending = true;
  }
  return pending;
}

HMS_API hms_status_t hms_node_serve(hms_node_t *node, int64_t timeout_ns, hms_error_t *err) {
  if (!node) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "node is NULL");
  int expected = 0;
  if (!atomic_compare_exchange_strong(&node->serving, &expected, 1))
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0,
                     "node '%s' is already being served by another thread; one serving thread per node",
                     node->name);
  int64_t deadline = hms__deadline_from_timeout(timeout_ns);
  int64_t last_work = hms__now_ns();
  int64_t last_events = last_work;
  bool stop = false, interrupted = false;
  while (!stop && !interrupted) {
    if (atomic_load_explicit(&node->stop_requested, memory_order_relaxed)) break;
    int work = hms__drain_all(node);
    int64_t now = hms__now_ns();
    if (now >= deadline) break;
    if (work) {
      last_work = now;
      if (now - last_events >= HMS__EVENT_POLL_NS) {
        stop = hms__handle_events(node, 0, NULL);
        last_events = now;
      }
      continue;
    }
    if (now - last_work < node->spin_ns) {
      hms__cpu_relax();
      if (now - last_events >= HMS__EVENT_POLL_NS) {
        stop = hms__handle_events(node, 0, NULL);
        last_events = now;
      }
      continue;
    }
    /* Going to sleep. */
    bool dead;
    bool pending = hms__arm(node, &dead);
    if (!pending) {
      stop = hms__handle_events(node, dead ? 0 : hms__epoll_timeout_ms(node, deadline), &interrupted);
      last_events = hms__now_ns();
    }
    hms__set_sleeping(node, 0);
    last_work = hms__now_ns();
  }
  bool stopped = stop || atomic_load(&node->stop_requested);
  if (stopped) {
    uint64_t v;
    while (read(node->stop_fd, &v, sizeof v) > 0) {
    }
    atomic_store(&node->stop_requested, 0);
  }
  atomic_store(&node->serving, 0);
  /* A stop requested while a signal interrupted the sleep is a stop (HMS_OK): a caller that retries
   * on HMS_CANCELLED must not miss it. */
  if (interrupted && !stopped) return hms__fail(err, HMS_CANCELLED, EINTR, "interrupted by a signal");
  hms__ok(err);
  return HMS_OK;
}


HMS_API int hms_node_event_fd(const hms_node_t *node) { return node ? node->epfd : -1; }

HMS_API hms_status_t hms_node_poll(hms_node_t *node, uint32_t *served, int *again, hms_error_t *err) {
  if (served) *served = 0;
  if (again) *again = 0;
  if (!node) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "node is NULL");
  int expected = 0;
  if (!atomic_compare_exchange_strong(&node->serving, &expected, 1))
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0,
                     "node '%s' is already being served by another thread; one serving thread per node",
                     node->name);
  hms__set_sleeping(node, 0); /* awake: clients need not ring while we look */
  hms__handle_events(node, 0, NULL);
  uint32_t total = 0;
  for (int round = 0; round < 4; round++) {
    int work = hms__drain_all(node);
    total += (uint32_t)work;
    if (!work) break;
  }
  /* Arm: from now on a client that sends rings its doorbell, which makes the epoll fd readable. */
  bool dead;
  bool pending = hms__arm(node, &dead);
  if (dead) hms__reap(node);
  if (pending) hms__set_sleeping(node, 0);
  atomic_store(&node->serving, 0);
  if (served) *served = total;
  if (again) *again = pending ? 1 : 0;
  hms__ok(err);
  return HMS_OK;
}

static void *hms__serve_thread(void *arg) {
  hms_node_t *node = arg;
  /* HMS_CANCELLED means an interrupted sleep (a signal handler ran on this thread, or a stop/continue
   * or ptrace stop: Ctrl-Z + fg, a debugger, LeakSanitizer); it is not a stop. Returning on it left the
   * node silently unserved (found by tests/c/fuzz_server_ring.c). A requested stop returns HMS_OK. */
  while (hms_node_serve(node, -1, NULL) == HMS_CANCELLED) {
  }
  return NULL;
}

HMS_API hms_status_t hms_node_start(hms_node_t *node, hms_error_t *err) {
  if (!node) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "node is NULL");
  if (node->thread_running || atomic_load(&node->serving))
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0, "node '%s' is already serving", node->name);
  int rc = pthread_create(&node->thread, NULL, hms__serve_thread, node);
  if (rc != 0) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, rc, "pthread_create failed: %s", strerror(rc));
  node->thread_running = true;
  hms__ok(err);
  return HMS_OK;
}

HMS_API void hms_node_stop(hms_node_t *node) {
  if (!node) return;
  atomic_store(&node->stop_requested, 1);
  uint64_t one = 1;
  ssize_t w = write(node->stop_fd, &one, sizeof one);
  (void)w;
  if (node->thread_running && !pthread_equal(pthread_self(), node->thread)) {
    pthread_join(node->thread, NULL);
    node->thread_running = false;
  }
}

/* ------------------------------------------------------------------ deferred replies */
struct hms_deferred_s {
  hms_call_t call; /* a copy: conn (referenced), function, header */
  hms__stats_t *stats_ref; /* keeps call.stats mapped until the reply (the node may close first) */
};

HMS_API hms_status_t hms_call_defer(hms_call_t *call, hms_deferred_t **out, hms_error_t *err) {
  if (out) *out = NULL;
  if (!call || !out) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "call and out must not be NULL");
  if (call->deferred || call->replied)
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0, "call %llu was already answered or deferred",
                     (unsigned long long)call->hdr.call_id);
  if (call->hdr.flags & HMS__FRAME_F_CSTREAM)
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0,
                     "client streams cannot be deferred (their items are read by the handler); serve them from it");
  hms_deferred_t *d = calloc(1, sizeof *d);
  if (!d) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
  hms__conn_t *c = call->conn;
  atomic_fetch_add(&c->refs, 1);
  atomic_fetch_add_explicit(&c->deferred_out, 1, memory_order_acq_rel);
  if (call->stats) {
    hms__stat_inc(&call->stats->deferred, 1);
    d->stats_ref = c->svc->stats;
    hms__stats_get(d->stats_ref);
  }
  call->handed_off = true; /* the deferred copy records the call's end */
  d->call = *call;
  d->call.arena_req = NULL; /* the request is not kept (the dispatcher releases it) */
  d->call.deferred = true;
  d->call.replied = false;
  d->call.err_details = NULL;
  d->call.consumed = true;
  call->replied = true; /* the dispatcher must not answer it */
  call->audit_t0 = 0;   /* nor record it: the deferred answer does */
  *out = d;
  hms__ok(err);
  return HMS_OK;
}

HMS_API hms_call_t *hms_deferred_call(hms_deferred_t *deferred) { return deferred ? &deferred->call : NULL; }

/* The audit record of a deferred call, when it is answered (any thread: the queue takes many producers). */
static void hms__audit_deferred(hms_deferred_t *d, int32_t status) {
  hms__conn_t *c = d->call.conn;
  if (d->call.audit_t0 && !atomic_load(&c->gone))
    hms__audit_call(c, d->call.fn, &d->call.hdr, status, true, hms__now_ns() - d->call.audit_t0);
}

/* metrics: a deferred call ends (any thread) */
static void hms__deferred_stats(hms_deferred_t *d, hms_status_t status) {
  if (!d->call.stats) return;
  hms__stats_deferred_done(d->call.stats, status, d->call.out_bytes, hms__now_ns() - d->call.t0);
  hms__stats_put(d->stats_ref);
}

static void hms__deferred_free(hms_deferred_t *d) {
  hms__conn_t *c = d->call.conn;
  atomic_fetch_sub_explicit(&c->deferred_out, 1, memory_order_acq_rel);
  hms__conn_unref(c);
  free(d);
}

HMS_API hms_status_t hms_deferred_reply(hms_deferred_t *deferred, const char *data, size_t len,
                                        uint32_t content_type, hms_error_t *err) {
  if (!deferred) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "deferred is NULL");
  hms_call_t *call = &deferred->call;
  hms__conn_t *c = call->conn;
  uint64_t max = hms__conn_max_message(c);
  hms_status_t st = HMS_OK;
  if (len && !data) {
    st = hms__fail(err, HMS_INVALID_ARGUMENT, 0, "data is NULL but len is %zu", len);
  } else if (len > max) {
    char msg[256];
    snprintf(msg, sizeof msg, "reply of %zu bytes exceeds the connection's max message of %llu bytes", len,
             (unsigned long long)max);
    hms_deferred_fail(deferred, HMS_RESOURCE_EXHAUSTED, msg, NULL, 0, 0); /* records it */
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, 0, "%s", msg);
  } else if (call->hdr.flags & HMS__FRAME_F_STREAM) {
    /* A server stream: `data` (if any) is its last item, then the end of the stream. */
    if ((len && hms__write_response_wait(call, HMS_OK, HMS__FRAME_F_ITEM, content_type, data, len, NULL, 0) != HMS_OK) ||
        hms__write_response_wait(call, HMS_OK, 0, HMS_CT_NONE, NULL, 0, NULL, 0) != HMS_OK)
      st = hms__fail(err, HMS_CANCELLED, 0, "the caller went away or gave up; the end of the stream was dropped");
  } else if (!(call->hdr.flags & HMS__FRAME_F_ONEWAY)) {
    hms_status_t wst = hms__write_response_wait(call, HMS_OK, 0, content_type, data, len, NULL, 0);
    if (wst == HMS_RESOURCE_EXHAUSTED) {
      char msg[256];
      int ml = snprintf(msg + 4, sizeof msg - 4, "no room in the arena for a reply of %zu bytes: the caller holds "
                        "too many blocks", len);
      uint32_t m32 = ml < 0 ? 0 : (uint32_t)(ml < (int)sizeof msg - 4 ? ml : (int)sizeof msg - 5);
      memcpy(msg, &m32, 4);
      hms__write_response_wait(call, HMS_RESOURCE_EXHAUSTED, 0, HMS_CT_NONE, msg, 4 + m32, NULL, 0);
      st = hms__fail(err, HMS_RESOURCE_EXHAUSTED, 0, "%s", msg + 4);
    } else if (wst != HMS_OK) {
      st = hms__fail(err, HMS_CANCELLED, 0, "the caller went away or gave up; the reply was dropped");
    }
  }
  hms__audit_deferred(deferred, st);
  if (st == HMS_OK) call->out_bytes += len;
  hms__deferred_stats(deferred, st);
  hms__deferred_free(deferred);
  if (st == HMS_OK) hms__ok(err);
  return st;
}

HMS_API hms_status_t hms_deferred_send(hms_deferred_t *deferred, const char *data, size_t len,
                                       uint32_t content_type, int wait, int *sent, hms_error_t *err) {
  if (sent) *sent = 0;
  if (!deferred || !sent) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "deferred and sent must not be NULL");
  hms_call_t *call = &deferred->call;
  hms__conn_t *c = call->conn;
  if (!(call->hdr.flags & HMS__FRAME_F_STREAM))
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0,
                     "call %llu is not a stream; the caller must open it as one (hms_stream_open / client.stream)",
                     (unsigned long long)call->hdr.call_id);
  if (len && !data) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "data is NULL but len is %zu", len);
  uint64_t max = c->resp.max_frame - HMS_FRAME_HEADER_BYTES;
  if (len > max)
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, 0,
                     "stream item of %zu bytes exceeds the connection's max message of %llu bytes; split it", len,
                     (unsigned long long)max);
  if (atomic_load(&c->gone) || hms_call_is_cancelled(call) ||
      (call->hdr.deadline_ns && hms__now_ns() >= call->hdr.deadline_ns))
    return hms__fail(err, HMS_CANCELLED, 0, "the caller cancelled, went away or passed its deadline");
  if (wait) {
    if (hms__write_response_wait(call, HMS_OK, HMS__FRAME_F_ITEM, content_type, data, len, NULL, 0) != HMS_OK)
      return hms__fail(err, HMS_CANCELLED, 0, "the caller cancelled, went away or passed its deadline");
    *sent = 1;
    call->out_bytes += len;
    hms__ok(err);
    return HMS_OK;
  }
  uint8_t *f;
  char why[160];
  pthread_mutex_lock(&c->resp_lock);
  int rc = hms__ring_reserve(&c->resp, len, &f, why, sizeof why);
  if (rc == HMS__RING_OK) {
    hms__fill_response(c, f, &call->hdr, HMS_OK, HMS__FRAME_F_ITEM, content_type, data, len, NULL, 0);
    *sent = 1;
    call->out_bytes += len;
  }
  pthread_mutex_unlock(&c->resp_lock);
  if (rc == HMS__RING_CORRUPT)
    return hms__fail(err, HMS_CANCELLED, 0, "the caller corrupted its reply ring: %s", why);
  hms__ok(err);
  return HMS_OK;
}

HMS_API void hms_deferred_fail(hms_deferred_t *deferred, hms_status_t code, const char *message,
                               const char *details, size_t details_len, uint32_t details_content_type) {
  if (!deferred) return;
  hms_call_t *call = &deferred->call;
  hms__conn_t *c = call->conn;
  if (!(call->hdr.flags & HMS__FRAME_F_ONEWAY)) {
    if (code == HMS_OK) code = HMS_UNKNOWN;
    const char *msg = message ? message : "";
    size_t mlen = strlen(msg);
    uint64_t room = c->resp.max_frame - HMS_FRAME_HEADER_BYTES - 4;
    if (mlen > 255) mlen = 255;
    if (details_len > room - mlen) details_len = 0;
    uint8_t *buf = malloc(4 + mlen + details_len);
    if (buf) {
      uint32_t m32 = (uint32_t)mlen;
      memcpy(buf, &m32, 4);
      memcpy(buf + 4, msg, mlen);
      if (details_len) memcpy(buf + 4 + mlen, details, details_len);
      hms__write_response_wait(call, code, 0, details_len ? details_content_type : HMS_CT_NONE, buf,
                               4 + mlen + details_len, NULL, 0);
      free(buf);
    }
  }
  hms__audit_deferred(deferred, code == HMS_OK ? HMS_UNKNOWN : code);
  hms__deferred_stats(deferred, code == HMS_OK ? HMS_UNKNOWN : code);
  hms__deferred_free(deferred);
}

/* ------------------------------------------------------------------ arena: loans, taking requests, stats */
HMS_API hms_status_t hms_call_loan(hms_call_t *call, size_t size, hms_block_t *block, hms_error_t *err) {
  if (!call || !block) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "call and block must not be NULL");
  return hms__block_loan(call->conn->arena, size, block, err);
}

HMS_API hms_status_t hms_call_reply_block(hms_call_t *call, hms_block_t *block, size_t len, uint32_t content_type,
                                          hms_error_t *err) {
  if (!call) {
    hms_block_release(block);
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "call is NULL");
  }
  if (call->replied || call->deferred) {
    hms_block_release(block);
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0, "call %llu was already answered or is deferred",
                     (unsigned long long)call->hdr.call_id);
  }
  hms__conn_t *c = call->conn;
  hms__aref_wire_t wire;
  hms__arena_t *a = NULL;
  hms_status_t st = hms__block_take(block, len, c->arena, &wire, &a, err);
  if (st) {
    hms_block_release(block);
    return st;
  }
  if (call->hdr.flags & HMS__FRAME_F_ONEWAY) { /* nobody waits for it */
    hms__arena_unsend(a, &wire);
    hms__arena_put(a);
    call->replied = true;
    hms__ok(err);
    return HMS_OK;
  }
  bool stream = (call->hdr.flags & HMS__FRAME_F_STREAM) != 0;
  bool ok;
  if (stream)
    ok = hms__write_response_wait(call, HMS_OK, HMS__FRAME_F_ITEM | HMS__FRAME_F_ARENA, content_type, &wire,
                                  sizeof wire, NULL, 0) == HMS_OK;
  else
    ok = hms__write_response_f(c, &call->hdr, HMS_OK, HMS__FRAME_F_ARENA, content_type, &wire, sizeof wire, NULL,
                               0); /* frees the block itself when it fails */
  hms__arena_put(a);
  if (!ok) return hms__fail(err, stream ? HMS_CANCELLED : HMS_INTERNAL, 0,
                            stream ? "the caller cancelled the stream or went away" : "response ring unexpectedly full");
  if (!stream) call->replied = true;
  call->out_bytes += len;
  hms__ok(err);
  return HMS_OK;
}

HMS_API hms_status_t hms_call_take_request(hms_call_t *call, hms_payload_t *out, hms_error_t *err) {
  if (out) memset(out, 0, sizeof *out);
  if (!call || !out) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "call and out must not be NULL");
  if (call->deferred) return hms__fail(err, HMS_FAILED_PRECONDITION, 0, "take the request in the handler, before deferring");
  if (call->arena_req) {
    if (!call->arena_req->release)
      return hms__fail(err, HMS_FAILED_PRECONDITION, 0, "the request of call %llu was already taken",
                       (unsigned long long)call->hdr.call_id);
    *out = *call->arena_req;
    call->arena_req->release = NULL; /* the dispatcher's release becomes a no-op */
    call->arena_req->private_data = NULL;
    hms__ok(err);
    return HMS_OK;
  }
  return hms__fail(err, HMS_FAILED_PRECONDITION, 0,
                   "the request of call %llu arrived inline in the ring, not in the arena: copy it instead",
                   (unsigned long long)call->hdr.call_id);
}

HMS_API hms_status_t hms_node_set_arena_quota(hms_node_t *node, uint64_t bytes, hms_error_t *err) {
  if (!node) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "node is NULL");
  node->arena_quota = bytes;
  hms__ok(err);
  return HMS_OK;
}

HMS_API hms_status_t hms_node_arena_stats(hms_node_t *node, hms_arena_stats_t *stats, hms_error_t *err) {
  if (!node || !stats) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "node and stats must not be NULL");
  if (stats->version < 1 || stats->version > HMS_ARENA_STATS_VERSION)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "hms_arena_stats_t.version is %u; call hms_arena_stats_init",
                     stats->version);
  hms_arena_stats_init(stats);
  char why[200];
  for (size_t i = 0; i < node->nconns; i++) {
    hms__conn_t *c = node->conns[i];
    if (!c->arena) continue;
    if (!c->dead && hms__arena_drain(c->arena, why, sizeof why) < 0) c->dead = true; /* releases in flight */
    hms__arena_stats_add(c->arena, stats);
  }
  if (!stats->quota) stats->quota = node->arena_quota ? node->arena_quota : HMS_ARENA_DEFAULT_QUOTA;
  hms__ok(err);
  return HMS_OK;
}
