/* Metrics: the per-service counters block, the stats handshake and the reader.
 *
 * Writers. The serving thread is the only writer of the counters of calls it starts and finishes
 * (hms__stats_begin / hms__stats_end in hms_internal.h: a relaxed load and a relaxed store, so no
 * lock and no read-modify-write on the hot path). Deferred calls finish on other threads: they add
 * into a second set of completion counters with relaxed fetch_add. The block stays mapped while a
 * deferred call may still write into it (a reference per deferred call).
 *
 * Readers. A reader in another process sends a stats hello on the service's socket; the serving
 * thread answers it between calls with the block's memfd, sealed F_SEAL_FUTURE_WRITE so that the
 * reader can map it only read-only, and closes the connection. The reader validates the seals, the
 * size and the header, maps it, and every snapshot copies the counters out with relaxed loads and
 * validates what it copied (counts within capacity, names valid, ids in order): the block is hostile
 * input to the reader, as every shared mapping is. */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal/hms_internal.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

_Static_assert(sizeof(hms__stats_fn_t) % HMS__CACHELINE == 0, "stats entries are whole cache lines");

struct hms__stats_s {
  _Atomic int refs;
  int fd; /* sealed read-only for future mappings: what readers receive */
  void *map;
  size_t len;
};

static inline hms__stats_hdr_t *hms__stats_hdr(const hms__stats_t *st) { return (hms__stats_hdr_t *)st->map; }

static inline hms__stats_fn_t *hms__stats_entry(const hms__stats_t *st, uint32_t id) {
  return (hms__stats_fn_t *)((uint8_t *)st->map + HMS__STATS_HEADER_BYTES + (size_t)(id - 1) * sizeof(hms__stats_fn_t));
}

static uint64_t hms__stats_total_bytes(void) {
  return HMS__STATS_HEADER_BYTES + (uint64_t)HMS_MAX_FUNCTIONS * sizeof(hms__stats_fn_t);
}

/* ------------------------------------------------------------------ server side */
void hms__stats_create(hms_service_t *svc) {
  svc->stats = NULL;
  uint64_t total = hms__stats_total_bytes();
  int fd = memfd_create("hms-ffi-stats", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return;
  void *map = MAP_FAILED;
  if (ftruncate(fd, (off_t)total) != 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) goto fail;
  map = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) goto fail;
  /* From now on nobody can map it writable again: our mapping is the only writer there will be. */
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) != 0) goto fail;
  hms__stats_t *st = calloc(1, sizeof *st);
  if (!st) goto fail;
  atomic_init(&st->refs, 1);
  st->fd = fd;
  st->map = map;
  st->len = total;
  hms__stats_hdr_t *h = map; /* a fresh memfd reads as zeros */
  h->magic = HMS__STATS_MAGIC;
  h->layout = HMS__STATS_LAYOUT;
  h->header_bytes = HMS__STATS_HEADER_BYTES;
  h->fn_capacity = HMS_MAX_FUNCTIONS;
  h->fn_entry_bytes = sizeof(hms__stats_fn_t);
  h->total_bytes = total;
  h->pid = (int32_t)getpid();
  h->proc_starttime = hms__proc_starttime(getpid());
  h->created_ns = hms__now_ns();
  hms__strlcpy(h->service, svc->name, sizeof h->service);
  hms__strlcpy(h->version, svc->version, sizeof h->version);
  hms__strlcpy(h->node, svc->node->name, sizeof h->node);
  svc->stats = st;
  return;
fail:
  if (map != MAP_FAILED) munmap(map, total);
  close(fd);
}

void hms__stats_get(hms__stats_t *st) {
  if (st) atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
}

void hms__stats_put(hms__stats_t *st) {
  if (!st || atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) != 1) return;
  munmap(st->map, st->len);
  close(st->fd);
  free(st);
}

void hms__stats_fn_added(hms_service_t *svc, hms__fn_t *f) {
  f->stats = NULL;
  hms__stats_t *st = svc->stats;
  if (!st || f->id == 0 || f->id > HMS_MAX_FUNCTIONS) return;
  hms__stats_fn_t *e = hms__stats_entry(st, f->id);
  hms__strlcpy(e->name, f->name, sizeof e->name);
  e->id = f->id;
  e->flags = f->flags;
  f->stats = e;
  atomic_store_explicit(&hms__stats_hdr(st)->nfns, f->id, memory_order_release);
}

void hms__stats_welcome(hms_service_t *svc, int sock) {
  hms__stats_welcome_t w;
  memset(&w, 0, sizeof w);
  w.magic = HMS__STATS_WELCOME_MAGIC;
  w.abi = HMS_FFI_ABI_VERSION;
  w.proto = HMS__PROTO_VERSION;
  hms__stats_t *st = svc->stats;
  if (!st) {
    w.status = HMS_UNAVAILABLE;
    snprintf(w.message, sizeof w.message, "%s@%s keeps no stats (the kernel refused it a memfd)", svc->name,
             svc->version);
    hms__send_fds(sock, &w, sizeof w, NULL, 0);
    return;
  }
  w.status = HMS_OK;
  w.total_bytes = st->len;
  hms__stat_inc(&hms__stats_hdr(st)->stats_reads, 1);
  hms__send_fds(sock, &w, sizeof w, &st->fd, 1);
}

static hms__stats_fn_t *hms__stats_fn_by_id(hms_service_t *svc, uint32_t fn_id) {
  uint32_t nf = atomic_load_explicit(&svc->nfns, memory_order_acquire);
  if (fn_id == 0 || fn_id > nf) return NULL;
  return svc->fns[fn_id - 1]->stats;
}

void hms__stats_refused(hms_service_t *svc, uint32_t fn_id, uint32_t frame_flags, uint64_t bytes_in,
                        hms_status_t status) {
  if (!svc->stats) return;
  hms__stats_fn_t *s = hms__stats_fn_by_id(svc, fn_id);
  if (!s) {
    hms__stat_inc(&hms__stats_hdr(svc->stats)->unknown_function, 1);
    return;
  }
  hms__stats_begin(s, frame_flags, bytes_in);
  hms__stats_end(s, status, 0, 0);
}

void hms__stats_cancel_skipped(hms_service_t *svc, uint32_t fn_id) {
  if (!svc->stats) return;
  hms__stats_fn_t *s = hms__stats_fn_by_id(svc, fn_id);
  if (s) hms__stat_inc(&s->cancels, 1);
}

void hms__stats_oneway_run(hms__stats_fn_t *s, uint64_t count, uint64_t dropped, uint64_t bytes_in, int64_t ns) {
  if (!s || count + dropped == 0) return;
  hms__stats_done_t *d = &s->done[0];
  hms__stat_inc(&s->calls, count + dropped);
  hms__stat_inc(&s->oneway, count + dropped);
  hms__stat_inc(&s->bytes_in, bytes_in);
  if (dropped) { /* refused before a handler ran: 0 ns, like every refusal */
    hms__stat_inc(&d->status[HMS_DEADLINE_EXCEEDED], dropped);
    hms__stat_inc(&d->buckets[0], dropped);
  }
  if (!count) return;
  uint64_t u = ns > 0 ? (uint64_t)ns : 0, each = u / count;
  hms__stat_inc(&d->status[HMS_OK], count);
  hms__stat_inc(&d->latency_sum_ns, u);
  if (each > atomic_load_explicit(&d->latency_max_ns, memory_order_relaxed))
    atomic_store_explicit(&d->latency_max_ns, each, memory_order_relaxed);
  hms__stat_inc(&d->buckets[hms__stats_bucket(each)], count);
}

void hms__stats_deferred_done(hms__stats_fn_t *s, hms_status_t status, uint64_t bytes_out, int64_t ns) {
  if (!s) return;
  hms__stats_done_t *d = &s->done[1]; /* any thread: atomic adds */
  uint64_t u = ns > 0 ? (uint64_t)ns : 0;
  atomic_fetch_add_explicit(&d->status[hms__stats_status_index(status)], 1, memory_order_relaxed);
  if (bytes_out) atomic_fetch_add_explicit(&d->bytes_out, bytes_out, memory_order_relaxed);
  atomic_fetch_add_explicit(&d->latency_sum_ns, u, memory_order_relaxed);
  uint64_t m = atomic_load_explicit(&d->latency_max_ns, memory_order_relaxed);
  while (u > m && !atomic_compare_exchange_weak_explicit(&d->latency_max_ns, &m, u, memory_order_relaxed,
                                                         memory_order_relaxed)) {
  }
  atomic_fetch_add_explicit(&d->buckets[hms__stats_bucket(u)], 1, memory_order_relaxed);
}

void hms__stats_conn(hms_service_t *svc, int delta) {
  if (!svc->stats) return;
  hms__stats_hdr_t *h = hms__stats_hdr(svc->stats);
  if (delta > 0) {
    hms__stat_inc(&h->connections, 1);
    hms__stat_inc(&h->connections_total, 1);
  } else {
    uint64_t c = atomic_load_explicit(&h->connections, memory_order_relaxed);
    atomic_store_explicit(&h->connections, c ? c - 1 : 0, memory_order_relaxed);
  }
}

void hms__stats_handshake_refused(hms_service_t *svc) {
  if (svc->stats) hms__stat_inc(&hms__stats_hdr(svc->stats)->handshakes_refused, 1);
}

/* ------------------------------------------------------------------ snapshots (both sides) */
HMS_API void hms_service_stats_init(hms_service_stats_t *stats) {
  if (!stats) return;
  memset(stats, 0, sizeof *stats);
  stats->version = HMS_STATS_VERSION;
}

HMS_API size_t hms_sizeof_service_stats(void) { return sizeof(hms_service_stats_t); }
HMS_API size_t hms_sizeof_function_stats(void) { return sizeof(hms_function_stats_t); }

static void hms__snapshot_release(hms_service_stats_t *s) {
  if (!s) return;
  free(s->functions);
  s->functions = NULL;
  s->function_count = 0;
  s->release = NULL;
}

static inline uint64_t hms__ld(const _Atomic uint64_t *p) { return atomic_load_explicit(p, memory_order_relaxed); }

/* Copies a block (ours or a peer's read-only mapping of `len` bytes) into *out. Everything is read
 * once into locals, then checked: the writer may change anything at any moment. */
static hms_status_t hms__stats_read(const void *map, size_t len, hms_service_stats_t *out, hms_error_t *err) {
  if (len < HMS__STATS_HEADER_BYTES)
    return hms__fail(err, HMS_DATA_LOSS, 0, "stats block of %zu bytes is smaller than its header", len);
  const hms__stats_hdr_t *hp = map;
  hms__stats_hdr_t h;
  memcpy(&h, hp, offsetof(hms__stats_hdr_t, nfns)); /* the fields written once */
  h.service[sizeof h.service - 1] = 0;
  h.version[sizeof h.version - 1] = 0;
  h.node[sizeof h.node - 1] = 0;
  if (h.magic != HMS__STATS_MAGIC || h.layout != HMS__STATS_LAYOUT || h.header_bytes != HMS__STATS_HEADER_BYTES ||
      h.fn_entry_bytes != sizeof(hms__stats_fn_t) || h.fn_capacity == 0 || h.fn_capacity > HMS_MAX_FUNCTIONS ||
      h.total_bytes != HMS__STATS_HEADER_BYTES + (uint64_t)h.fn_capacity * sizeof(hms__stats_fn_t) ||
      h.total_bytes > len)
    return hms__fail(err, HMS_DATA_LOSS, 0,
                     "stats block header is corrupt or of another layout (magic 0x%llx, layout %u, %u entries of "
                     "%u bytes, %llu of %zu bytes)",
                     (unsigned long long)h.magic, h.layout, h.fn_capacity, h.fn_entry_bytes,
                     (unsigned long long)h.total_bytes, len);
  uint32_t nf = atomic_load_explicit(&hp->nfns, memory_order_acquire);
  if (nf > h.fn_capacity)
    return hms__fail(err, HMS_DATA_LOSS, 0, "stats block claims %u functions, more than its %u entries", nf,
                     h.fn_capacity);
  hms_function_stats_t *fns = nf ? calloc(nf, sizeof *fns) : NULL;
  if (nf && !fns) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory for %u function stats", nf);
  const uint8_t *base = (const uint8_t *)map + HMS__STATS_HEADER_BYTES;
  for (uint32_t i = 0; i < nf; i++) {
    const hms__stats_fn_t *e = (const hms__stats_fn_t *)(base + (size_t)i * sizeof(hms__stats_fn_t));
    hms_function_stats_t *f = &fns[i];
    memcpy(f->name, e->name, sizeof f->name);
    f->name[sizeof f->name - 1] = 0;
    f->id = e->id;
    f->flags = e->flags;
    if (f->id != i + 1 || !hms__name_valid(f->name)) {
      free(fns);
      return hms__fail(err, HMS_DATA_LOSS, 0, "stats entry %u is corrupt (id %u, name not valid)", i + 1, f->id);
    }
    /* Completions first, then starts: a call that finishes between the two reads is counted as
     * started, never as finished-but-not-started, so in_flight does not go negative. */
    uint64_t completed = 0;
    for (int k = 0; k < 2; k++) {
      const hms__stats_done_t *d = &e->done[k];
      for (int c = 0; c < HMS_STATS_STATUS_CODES; c++) f->status[c] += hms__ld(&d->status[c]);
      f->bytes_out += hms__ld(&d->bytes_out);
      f->latency_sum_ns += hms__ld(&d->latency_sum_ns);
      uint64_t m = hms__ld(&d->latency_max_ns);
      if (m > f->latency_max_ns) f->latency_max_ns = m;
      for (int b = 0; b < HMS_STATS_LATENCY_BUCKETS; b++) f->latency_buckets[b] += hms__ld(&d->buckets[b]);
    }
    for (int c = 0; c < HMS_STATS_STATUS_CODES; c++) completed += f->status[c];
    f->completed = completed;
    f->errors = completed - f->status[HMS_OK];
    f->calls = hms__ld(&e->calls);
    f->oneway = hms__ld(&e->oneway);
    f->streams = hms__ld(&e->streams);
    f->cancels = hms__ld(&e->cancels);
    f->deferred = hms__ld(&e->deferred);
    f->bytes_in = hms__ld(&e->bytes_in);
    f->in_flight = f->calls > completed ? f->calls - completed : 0;
  }
  out->function_count = nf;
  out->functions = fns;
  hms__strlcpy(out->service, hms__name_valid(h.service) ? h.service : "?", sizeof out->service);
  hms__semver_t sv;
  hms__strlcpy(out->service_version, hms__semver_parse(h.version, &sv) ? h.version : "?", sizeof out->service_version);
  hms__strlcpy(out->node, hms__name_valid(h.node) ? h.node : "?", sizeof out->node);
  out->pid = h.pid;
  out->alive = h.pid > 0 && hms__registry_alive(h.pid, h.proc_starttime) ? 1 : 0;
  int64_t up = hms__now_ns() - h.created_ns;
  out->uptime_ns = up > 0 ? up : 0;
  out->connections = hms__ld(&hp->connections);
  out->connections_total = hms__ld(&hp->connections_total);
  out->handshakes_refused = hms__ld(&hp->handshakes_refused);
  out->unknown_function_calls = hms__ld(&hp->unknown_function);
  out->stats_reads = hms__ld(&hp->stats_reads);
  out->release = hms__snapshot_release;
  out->private_data = NULL;
  hms__ok(err);
  return HMS_OK;
}

static hms_status_t hms__stats_check_out(hms_service_stats_t *stats, hms_error_t *err) {
  if (!stats) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "stats is NULL");
  if (stats->version < 1 || stats->version > HMS_STATS_VERSION)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "hms_service_stats_t.version is %u; this library knows 1..%u (call hms_service_stats_init)",
                     stats->version, HMS_STATS_VERSION);
  hms_service_stats_init(stats);
  return HMS_OK;
}

HMS_API hms_status_t hms_service_stats(hms_service_t *service, hms_service_stats_t *stats, hms_error_t *err) {
  if (!service) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "service is NULL");
  hms_status_t st = hms__stats_check_out(stats, err);
  if (st) return st;
  if (!service->stats)
    return hms__fail(err, HMS_UNAVAILABLE, 0, "%s@%s keeps no stats (the kernel refused it a memfd)", service->name,
                     service->version);
  return hms__stats_read(service->stats->map, service->stats->len, stats, err);
}

/* ------------------------------------------------------------------ readers in other processes */
struct hms_stats_s {
  const void *map;
  size_t len;
};

HMS_API void hms_stats_close(hms_stats_t *stats_view) {
  if (!stats_view) return;
  munmap((void *)stats_view->map, stats_view->len);
  free(stats_view);
}

HMS_API hms_status_t hms_stats_snapshot(hms_stats_t *stats_view, hms_service_stats_t *stats, hms_error_t *err) {
  if (!stats_view) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "stats view is NULL");
  hms_status_t st = hms__stats_check_out(stats, err);
  if (st) return st;
  return hms__stats_read(stats_view->map, stats_view->len, stats, err);
}

/* One candidate: connect, stats hello, wait for the welcome and its memfd, validate, map. */
static hms_status_t hms__stats_open_one(const char *path, const char *service, const char *version,
                                        int64_t deadline, hms_stats_t **out, hms_error_t *err) {
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, errno, "socket() failed: %s", strerror(errno));
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  hms__strlcpy(sa.sun_path, path, sizeof sa.sun_path);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int e = errno;
    close(fd);
    return hms__fail(err, HMS_UNAVAILABLE, e, "cannot connect to %s@%s at '%s': %s", service, version, path,
                     strerror(e));
  }
  hms__hello_t hello;
  memset(&hello, 0, sizeof hello);
  hello.magic = HMS__STATS_HELLO_MAGIC;
  hello.abi = HMS_FFI_ABI_VERSION;
  hello.proto = HMS__PROTO_VERSION;
  hms__strlcpy(hello.service, service, sizeof hello.service);
  hms__strlcpy(hello.version, version, sizeof hello.version);
  snprintf(hello.client_node, sizeof hello.client_node, "stats-%d", (int)getpid());
  if (hms__send_fds(fd, &hello, sizeof hello, NULL, 0) != 0) {
    int e = errno;
    close(fd);
    return hms__fail(err, HMS_UNAVAILABLE, e, "sending the stats handshake to %s@%s failed: %s", service, version,
                     strerror(e));
  }
  hms__stats_welcome_t w;
  int mfd = -1, nfds = 0;
  for (;;) {
    int64_t left = deadline - hms__now_ns();
    if (left <= 0) {
      close(fd);
      return hms__fail(err, HMS_DEADLINE_EXCEEDED, 0,
                       "%s@%s did not answer the stats handshake in time; its serving thread is busy (a long "
                       "handler?) or it does not serve",
                       service, version);
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ms = left > 100000000LL ? 100 : (int)((left + 999999) / 1000000);
    int pr = poll(&p, 1, ms);
    if (pr < 0 && errno != EINTR) {
      int e = errno;
      close(fd);
      return hms__fail(err, HMS_INTERNAL, e, "poll failed: %s", strerror(e));
    }
    if (pr <= 0) continue;
    ssize_t n = hms__recv_fds(fd, &w, sizeof w, &mfd, 1, &nfds);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    close(fd);
    if (n == 0 || (n < 0 && errno != EMSGSIZE)) {
      if (nfds) close(mfd);
      return hms__fail(err, HMS_UNAVAILABLE, n < 0 ? errno : 0,
                       "%s@%s closed the connection instead of answering the stats handshake (a server built "
                       "before stats existed?)",
                       service, version);
    }
    if (n != (ssize_t)sizeof w || w.magic != HMS__STATS_WELCOME_MAGIC) {
      if (nfds) close(mfd);
      return hms__fail(err, HMS_DATA_LOSS, 0, "%s@%s answered the stats handshake with a malformed message", service,
                       version);
    }
    break;
  }
  w.message[sizeof w.message - 1] = 0;
  if (w.status != HMS_OK) {
    if (nfds) close(mfd);
    hms_status_t code = w.status > 0 && w.status <= HMS_UNAUTHENTICATED ? w.status : HMS_UNKNOWN;
    return hms__fail_remote(err, code, w.message, strlen(w.message));
  }
  if (nfds != 1)
    return hms__fail(err, HMS_DATA_LOSS, 0, "%s@%s sent %d descriptors with its stats instead of 1", service,
                     version, nfds);
  /* The block must be a memfd that can neither shrink under us (SIGBUS) nor be mapped writable. */
  int seals = fcntl(mfd, F_GET_SEALS);
  struct stat sb;
  const char *bad = NULL;
  if (seals < 0)
    bad = "is not a sealable memfd";
  else if ((seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
    bad = "is not sealed against shrinking and growing";
  else if (!(seals & (F_SEAL_FUTURE_WRITE | F_SEAL_WRITE)))
    bad = "is writable by readers";
  else if (fstat(mfd, &sb) != 0 || (uint64_t)sb.st_size != w.total_bytes || w.total_bytes < HMS__STATS_HEADER_BYTES ||
           w.total_bytes > hms__stats_total_bytes())
    bad = "has a size that does not match the welcome (or any stats layout)";
  if (bad) {
    close(mfd);
    return hms__fail(err, HMS_DATA_LOSS, 0, "the stats block of %s@%s %s", service, version, bad);
  }
  void *map = mmap(NULL, w.total_bytes, PROT_READ, MAP_SHARED, mfd, 0);
  int e = errno;
  close(mfd);
  if (map == MAP_FAILED)
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, e, "mapping the stats of %s@%s failed: %s", service, version,
                     strerror(e));
  hms_stats_t *v = calloc(1, sizeof *v);
  if (!v) {
    munmap(map, w.total_bytes);
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
  }
  v->map = map;
  v->len = w.total_bytes;
  /* Validate once now, so a broken block fails here rather than at the first snapshot. */
  hms_service_stats_t probe;
  hms_service_stats_init(&probe);
  hms_status_t st = hms__stats_read(map, w.total_bytes, &probe, err);
  if (st) {
    hms_stats_close(v);
    return st;
  }
  probe.release(&probe);
  *out = v;
  hms__ok(err);
  return HMS_OK;
}

HMS_API hms_status_t hms_stats_open(hms_node_t *node, const char *service, const char *version_req,
                                    int64_t timeout_ns, hms_stats_t **out, hms_error_t *err) {
  if (out) *out = NULL;
  if (!service || !out) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "service and out must not be NULL");
  if (!hms__name_valid(service))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "service name '%.64s' is invalid: use [A-Za-z0-9_.-]", service);
  char dir[HMS__PATH_MAX];
  if (node) {
    hms__strlcpy(dir, node->runtime_dir, sizeof dir);
  } else {
    hms_status_t st = hms__runtime_dir_resolve(NULL, dir, sizeof dir, err);
    if (st) return st;
  }
  int64_t deadline = hms__deadline_from_timeout(timeout_ns < 0 ? 5000000000LL : timeout_ns);
  char **paths = NULL, **versions = NULL;
  size_t n = 0;
  hms_status_t st = hms__registry_resolve(dir, service, version_req ? version_req : "*", &paths, &versions, &n, err);
  for (size_t i = 0; st == HMS_OK && i < n; i++) {
    st = hms__stats_open_one(paths[i], service, versions[i], deadline, out, err);
    if (st == HMS_UNAVAILABLE && i + 1 < n) st = HMS_OK; /* it went away meanwhile: the next candidate */
    if (*out) break;
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

/* ------------------------------------------------------------------ tracing */
HMS_API void hms_thread_trace(uint8_t trace_id[16], uint8_t span_id[8], uint8_t *flags) {
  if (trace_id) memcpy(trace_id, hms__tls_trace_id, 16);
  if (span_id) memcpy(span_id, hms__tls_span_id, 8);
  if (flags) *flags = hms__tls_trace_flags;
}
