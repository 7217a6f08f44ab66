/* Audit log: calls recorded to an append-only JSON-lines file, off the dispatcher's path.
 *
 * Producers (the dispatcher, threads answering deferred calls) put fixed-size records into a bounded
 * lock-free queue (Vyukov's MPMC array queue, used with one consumer): a record costs a CAS and a copy,
 * never a system call and never a wait. A writer thread empties the queue into the file through a
 * buffer, rotating the file at a size. When the queue is full the record is counted as dropped; the
 * writer writes the count as a record of its own as soon as it has emptied the queue, and
 * hms_node_audit_stats() reports it: losses are never silent.
 *
 * The writer sleeps up to HMS__AUDIT_IDLE_NS between rounds and is woken early only when the queue is
 * a quarter full (or by a flush), so a steady stream of calls costs the dispatcher no wake-up syscalls. */
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal/hms_internal.h"

#define HMS__AUDIT_IDLE_NS 5000000LL
#define HMS__AUDIT_BUF 65536
#define HMS__AUDIT_LINE_MAX 640

typedef struct {
  _Atomic uint64_t seq;
  int64_t ts_ns; /* CLOCK_REALTIME */
  int64_t duration_ns;
  uint64_t call_id;
  const char *service;  /* names live as long as the node; the node closes the audit first */
  const char *function; /* NULL: a refused connection */
  int32_t pid;
  uint32_t uid, gid;
  int32_t status;
  uint8_t allow, has_trace;
  uint8_t trace[16];
} hms__audit_rec_t;

struct hms__audit_s {
  uint32_t level;
  hms__audit_rec_t *slots;
  uint64_t mask;
  _Alignas(HMS__CACHELINE) _Atomic uint64_t enq;
  _Alignas(HMS__CACHELINE) _Atomic uint64_t deq; /* written by the writer only; producers read it */
  _Alignas(HMS__CACHELINE) _Atomic uint64_t queued, dropped;
  _Alignas(HMS__CACHELINE) _Atomic uint32_t wake, writer_sleeping;
  _Atomic int stop;
  _Atomic uint64_t written, rotations, write_errors;
  /* writer thread only */
  pthread_t thread;
  int fd;
  char *path;
  uint64_t max_bytes, size, dropped_reported;
  uint32_t keep;
  size_t blen;
  char *buf;
  int last_errno;
  /* flush handshake */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t done; /* records dequeued and handed to write() (under mu) */
};

HMS_API void hms_audit_options_init(hms_audit_options_t *opts) {
  if (!opts) return;
  memset(opts, 0, sizeof *opts);
  opts->version = HMS_AUDIT_OPTIONS_VERSION;
  opts->level = HMS_AUDIT_DENY;
}

HMS_API void hms_audit_stats_init(hms_audit_stats_t *stats) {
  if (!stats) return;
  memset(stats, 0, sizeof *stats);
  stats->version = HMS_AUDIT_STATS_VERSION;
}

uint32_t hms__audit_node_level(const hms__audit_t *a) { return a ? a->level : HMS_AUDIT_NONE; }

static void hms__audit_wake(hms__audit_t *a) {
  atomic_store_explicit(&a->writer_sleeping, 0, memory_order_relaxed);
  atomic_fetch_add_explicit(&a->wake, 1, memory_order_release);
  hms__futex_wake(&a->wake, 1, 0);
}

void hms__audit_record(hms__audit_t *a, const char *service, const char *function, int32_t pid, uint32_t uid,
                       uint32_t gid, int32_t status, bool allow, int64_t duration_ns, uint64_t call_id,
                       const uint8_t *trace_id) {
  uint64_t pos = atomic_load_explicit(&a->enq, memory_order_relaxed);
  hms__audit_rec_t *r;
  for (;;) {
    r = &a->slots[pos & a->mask];
    uint64_t seq = atomic_load_explicit(&r->seq, memory_order_acquire);
    int64_t dif = (int64_t)(seq - pos);
    if (dif == 0) {
      if (atomic_compare_exchange_weak_explicit(&a->enq, &pos, pos + 1, memory_order_relaxed, memory_order_relaxed))
        break;
    } else if (dif < 0) {
      atomic_fetch_add_explicit(&a->dropped, 1, memory_order_relaxed); /* full: counted, reported later */
      if (atomic_load_explicit(&a->writer_sleeping, memory_order_relaxed)) hms__audit_wake(a);
      return;
    } else {
      pos = atomic_load_explicit(&a->enq, memory_order_relaxed);
    }
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  r->ts_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
  r->duration_ns = duration_ns;
  r->call_id = call_id;
  r->service = service;
  r->function = function;
  r->pid = pid;
  r->uid = uid;
  r->gid = gid;
  r->status = status;
  r->allow = allow;
  r->has_trace = 0;
  if (trace_id) {
    memcpy(r->trace, trace_id, 16);
    for (int i = 0; i < 16; i++) r->has_trace |= trace_id[i];
  }
  atomic_store_explicit(&r->seq, pos + 1, memory_order_release);
  atomic_fetch_add_explicit(&a->queued, 1, memory_order_relaxed);
  /* Wake a sleeping writer only when the queue fills up; otherwise it comes round within 5 ms. */
  atomic_thread_fence(memory_order_seq_cst);
  if (HMS__UNLIKELY(atomic_load_explicit(&a->writer_sleeping, memory_order_relaxed)) &&
      pos + 1 - atomic_load_explicit(&a->deq, memory_order_relaxed) >= (a->mask + 1) / 4)
    hms__audit_wake(a);
}

static bool hms__audit_pop(hms__audit_t *a, hms__audit_rec_t *out) {
  uint64_t pos = atomic_load_explicit(&a->deq, memory_order_relaxed);
  hms__audit_rec_t *r = &a->slots[pos & a->mask];
  if (atomic_load_explicit(&r->seq, memory_order_acquire) != pos + 1) return false;
  memcpy((char *)out + sizeof out->seq, (char *)r + sizeof r->seq, sizeof *r - sizeof r->seq);
  atomic_store_explicit(&r->seq, pos + a->mask + 1, memory_order_release);
  atomic_store_explicit(&a->deq, pos + 1, memory_order_release);
  return true;
}

static bool hms__audit_empty(hms__audit_t *a) {
  uint64_t pos = atomic_load_explicit(&a->deq, memory_order_relaxed);
  return atomic_load_explicit(&a->slots[pos & a->mask].seq, memory_order_acquire) != pos + 1;
}

static int hms__audit_open(hms__audit_t *a) {
  int fd = open(a->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
  if (fd < 0) return -1;
  struct stat st;
  a->size = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
  a->fd = fd;
  return 0;
}

/* Writes the buffer whole (a pipe or a slow disk may take it in parts; this is where the writer waits,
 * never the dispatcher). Returns the lines lost (0 when written). */
static void hms__audit_write_buf(hms__audit_t *a, uint64_t lines) {
  size_t off = 0;
  while (off < a->blen && a->fd >= 0) {
    ssize_t w = write(a->fd, a->buf + off, a->blen - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      a->last_errno = w < 0 ? errno : EIO;
      atomic_fetch_add(&a->write_errors, lines);
      break;
    }
    off += (size_t)w;
  }
  a->size += off;
  a->blen = 0;
}

static void hms__audit_rotate(hms__audit_t *a) {
  if (a->fd >= 0) close(a->fd);
  a->fd = -1;
  size_t n = strlen(a->path) + 16;
  char *from = malloc(n), *to = malloc(n);
  if (from && to) {
    for (uint32_t i = a->keep; i > 1; i--) {
      snprintf(from, n, "%s.%u", a->path, i - 1);
      snprintf(to, n, "%s.%u", a->path, i);
      rename(from, to); /* a missing older file is fine */
    }
    snprintf(to, n, "%s.1", a->path);
    if (rename(a->path, to) != 0) a->last_errno = errno;
  }
  free(from);
  free(to);
  if (hms__audit_open(a) != 0) a->last_errno = errno;
  atomic_fetch_add(&a->rotations, 1);
}

static size_t hms__audit_ts(char *buf, size_t cap, int64_t ns) {
  time_t sec = (time_t)(ns / 1000000000LL);
  struct tm tm;
  gmtime_r(&sec, &tm);
  size_t k = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
  k += (size_t)snprintf(buf + k, cap - k, ".%06ldZ", (long)((ns % 1000000000LL) / 1000));
  return k;
}

/* Appends one line; rotates first when the line would take the file past max_bytes. */
static void hms__audit_line(hms__audit_t *a, const char *line, size_t len, uint64_t *pending) {
  if (a->size + a->blen + len > a->max_bytes && a->size + a->blen > 0) {
    hms__audit_write_buf(a, *pending);
    *pending = 0;
    hms__audit_rotate(a);
  }
  if (a->blen + len > HMS__AUDIT_BUF) {
    hms__audit_write_buf(a, *pending);
    *pending = 0;
  }
  memcpy(a->buf + a->blen, line, len);
  a->blen += len;
}

static size_t hms__audit_format(const hms__audit_rec_t *r, char *line, size_t cap) {
  char ts[48], trace[40];
  hms__audit_ts(ts, sizeof ts, r->ts_ns);
  if (r->has_trace) {
    for (int i = 0; i < 16; i++) snprintf(trace + 2 * i, 3, "%02x", r->trace[i]);
  }
  char fn[HMS_NAME_MAX + 3];
  if (r->function)
    snprintf(fn, sizeof fn, "\"%s\"", r->function);
  else
    snprintf(fn, sizeof fn, "null");
  int k = snprintf(line, cap,
                   "{\"ts\":\"%s\",\"service\":\"%s\",\"function\":%s,\"pid\":%d,\"uid\":%u,\"gid\":%u,"
                   "\"status\":\"%s\",\"code\":%d,\"duration_us\":%lld,\"trace_id\":%s%s%s,\"call_id\":%llu,"
                   "\"decision\":\"%s\"}\n",
                   ts, r->service, fn, r->pid, r->uid, r->gid, hms_status_str(r->status), r->status,
                   (long long)(r->duration_ns / 1000), r->has_trace ? "\"" : "", r->has_trace ? trace : "null",
                   r->has_trace ? "\"" : "", (unsigned long long)r->call_id, r->allow ? "allow" : "deny");
  return k < 0 ? 0 : ((size_t)k < cap ? (size_t)k : cap - 1);
}

static void *hms__audit_main(void *arg) {
  hms__audit_t *a = arg;
  char line[HMS__AUDIT_LINE_MAX];
  hms__audit_rec_t r;
  for (;;) {
    uint64_t n = 0, pending = 0;
    while (hms__audit_pop(a, &r)) {
      hms__audit_line(a, line, hms__audit_format(&r, line, sizeof line), &pending);
      n++;
      pending++;
    }
    uint64_t dropped = atomic_load(&a->dropped);
    if (dropped != a->dropped_reported) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      char t[48];
      hms__audit_ts(t, sizeof t, (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec);
      int k = snprintf(line, sizeof line, "{\"ts\":\"%s\",\"event\":\"audit_dropped\",\"count\":%llu,\"total\":%llu}\n",
                       t, (unsigned long long)(dropped - a->dropped_reported), (unsigned long long)dropped);
      hms__audit_line(a, line, (size_t)k, &pending);
      a->dropped_reported = dropped;
    }
    uint64_t errs_before = atomic_load(&a->write_errors);
    if (a->blen) hms__audit_write_buf(a, pending);
    if (n) atomic_fetch_add(&a->written, n - (atomic_load(&a->write_errors) - errs_before));
    pthread_mutex_lock(&a->mu);
    a->done += n;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    if (n) continue;
    if (atomic_load(&a->stop) && hms__audit_empty(a)) break;
    uint32_t w = atomic_load_explicit(&a->wake, memory_order_acquire);
    atomic_store_explicit(&a->writer_sleeping, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    if (hms__audit_empty(a) && !atomic_load(&a->stop)) hms__futex_wait(&a->wake, w, HMS__AUDIT_IDLE_NS, 0);
    atomic_store_explicit(&a->writer_sleeping, 0, memory_order_relaxed);
  }
  return NULL;
}

static void hms__audit_free(hms__audit_t *a) {
  if (a->fd >= 0) close(a->fd);
  pthread_mutex_destroy(&a->mu);
  pthread_cond_destroy(&a->cv);
  free(a->slots);
  free(a->buf);
  free(a->path);
  free(a);
}

void hms__audit_close(hms__audit_t *a) {
  if (!a) return;
  atomic_store(&a->stop, 1);
  hms__audit_wake(a);
  pthread_join(a->thread, NULL);
  hms__audit_free(a);
}

HMS_API hms_status_t hms_node_set_audit(hms_node_t *node, const hms_audit_options_t *opts, hms_error_t *err) {
  if (!node || !opts || !opts->path)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "node, opts and opts->path must not be NULL");
  if (opts->version < 1 || opts->version > HMS_AUDIT_OPTIONS_VERSION)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "hms_audit_options_t.version is %u; call hms_audit_options_init",
                     opts->version);
  if (opts->level < HMS_AUDIT_NONE || opts->level > HMS_AUDIT_ALL)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "audit level %u is not HMS_AUDIT_NONE, _DENY or _ALL", opts->level);
  if (atomic_load(&node->audit))
    return hms__fail(err, HMS_ALREADY_EXISTS, 0, "node '%s' already has an audit log; set it once per node",
                     node->name);
  uint64_t cap = opts->queue ? opts->queue : 65536;
  if (cap < 16) cap = 16;
  if (cap > (1u << 24))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "audit queue of %u records is too large (at most %u)", opts->queue,
                     1u << 24);
  uint64_t q = 16;
  while (q < cap) q <<= 1;
  hms__audit_t *a = calloc(1, sizeof *a);
  if (!a) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
  a->fd = -1;
  a->level = opts->level;
  a->max_bytes = opts->max_bytes ? opts->max_bytes : (64ull << 20);
  a->keep = opts->keep ? opts->keep : 5;
  a->mask = q - 1;
  a->slots = calloc(q, sizeof *a->slots);
  a->buf = malloc(HMS__AUDIT_BUF);
  a->path = strdup(opts->path);
  pthread_mutex_init(&a->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&a->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (!a->slots || !a->buf || !a->path) {
    hms__audit_free(a);
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory for an audit queue of %llu records",
                     (unsigned long long)q);
  }
  for (uint64_t i = 0; i < q; i++) atomic_init(&a->slots[i].seq, i);
  if (hms__audit_open(a) != 0) {
    int e = errno;
    hms__audit_free(a);
    return hms__fail(err, HMS_FAILED_PRECONDITION, e,
                     "cannot open the audit log '%s': %s; check the directory exists and is writable", opts->path,
                     strerror(e));
  }
  int rc = pthread_create(&a->thread, NULL, hms__audit_main, a);
  if (rc != 0) {
    hms__audit_free(a);
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, rc, "cannot start the audit writer thread: %s", strerror(rc));
  }
  hms__audit_t *none = NULL;
  if (!atomic_compare_exchange_strong(&node->audit, &none, a)) {
    hms__audit_close(a);
    return hms__fail(err, HMS_ALREADY_EXISTS, 0, "node '%s' already has an audit log; set it once per node",
                     node->name);
  }
  hms__ok(err);
  return HMS_OK;
}

HMS_API hms_status_t hms_node_audit_stats(hms_node_t *node, hms_audit_stats_t *stats, hms_error_t *err) {
  if (!node || !stats) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "node and stats must not be NULL");
  if (stats->version < 1 || stats->version > HMS_AUDIT_STATS_VERSION)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "hms_audit_stats_t.version is %u; call hms_audit_stats_init",
                     stats->version);
  hms__audit_t *a = atomic_load(&node->audit);
  if (!a) return hms__fail(err, HMS_FAILED_PRECONDITION, 0, "node '%s' has no audit log (hms_node_set_audit)", node->name);
  hms_audit_stats_init(stats);
  stats->queued = atomic_load(&a->queued);
  stats->written = atomic_load(&a->written);
  stats->dropped = atomic_load(&a->dropped);
  stats->rotations = atomic_load(&a->rotations);
  stats->write_errors = atomic_load(&a->write_errors);
  hms__ok(err);
  return HMS_OK;
}

HMS_API hms_status_t hms_node_audit_flush(hms_node_t *node, int64_t timeout_ns, hms_error_t *err) {
  if (!node) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "node is NULL");
  hms__audit_t *a = atomic_load(&node->audit);
  if (!a) return hms__fail(err, HMS_FAILED_PRECONDITION, 0, "node '%s' has no audit log (hms_node_set_audit)", node->name);
  uint64_t target = atomic_load(&a->queued);
  int64_t deadline = hms__deadline_from_timeout(timeout_ns);
  hms_status_t st = HMS_OK;
  pthread_mutex_lock(&a->mu);
  while (a->done < target) {
    pthread_mutex_unlock(&a->mu);
    hms__audit_wake(a);
    pthread_mutex_lock(&a->mu);
    if (a->done >= target) break;
    int64_t now = hms__now_ns();
    if (now >= deadline) {
      st = HMS_DEADLINE_EXCEEDED;
      break;
    }
    int64_t until = now + 10000000LL < deadline ? now + 10000000LL : deadline;
    struct timespec ts = {.tv_sec = until / 1000000000LL, .tv_nsec = until % 1000000000LL};
    pthread_cond_timedwait(&a->cv, &a->mu, &ts);
  }
  uint64_t done = a->done;
  int e = a->last_errno;
  pthread_mutex_unlock(&a->mu);
  if (st)
    return hms__fail(err, st, 0, "the audit writer wrote %llu of %llu records in time (is the disk or pipe stalled?)",
                     (unsigned long long)done, (unsigned long long)target);
  if (atomic_load(&a->write_errors))
    return hms__fail(err, HMS_DATA_LOSS, e, "%llu audit records could not be written to '%s': %s",
                     (unsigned long long)atomic_load(&a->write_errors), a->path, strerror(e));
  hms__ok(err);
  return HMS_OK;
}
