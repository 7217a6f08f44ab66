/* Topics: publish/subscribe over broadcast rings in shared memory.
 *
 * A publisher owns one ring in a memfd: a header page, an index of `slots` 64-byte entries and a data
 * area of `data_bytes`. Message s (sequence numbers count from 1) lives in index entry s % slots and
 * in data bytes [data_pos, data_pos + len) (never wrapping). The publisher raises `tail_seq` (the
 * oldest intact message) *before* it overwrites an entry or data bytes, then publishes by storing the
 * entry's `seq` and `head_seq`. A reader copies entry and payload out and then re-reads `tail_seq`:
 * still <= s means the copy is whole; otherwise the message was overwritten while it was copied and is
 * counted as missed (a seqlock over a byte ring, so lapped readers resynchronise in O(1) and know
 * exactly how many messages they lost).
 *
 * Subscribers map the ring read-only: it is sealed with F_SEAL_FUTURE_WRITE after the publisher mapped
 * it, so no subscriber can write it, grow it, shrink it or map it writable. Each subscriber gets its
 * own small page (created by the publisher, mapped read-write by both) holding its cursor and its
 * "I sleep" flag, plus its own eventfd doorbell. After publishing, the publisher looks at every
 * subscriber's flag (one load each, no system call while they are awake) and rings only sleepers.
 * Per-subscriber pages and bells mean one hostile subscriber can neither corrupt the ring nor drain or
 * jam another subscriber's wake-ups.
 *
 * A subscriber sleeps in epoll_wait() on every publisher's bell *and* socket, plus an inotify watch on
 * the runtime directory: one sleep covers many rings, a dead publisher is a hang-up seen at once, and
 * a publisher appearing later is seen at once too (with a 100 ms rescan when inotify is unavailable).
 *
 * Each publisher has a small background thread (poll + accept + handshake + hang-up detection), so
 * subscribers can connect to a publisher that is idle, without any help from the node's serving loop.
 * The thread never takes the publish path's lock except with trylock, to free a departed subscriber's
 * page once the publisher is not using it. */
#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal/hms_internal.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

#define HMS__TOPIC_HANDSHAKE_NS 1000000000LL /* default per-publisher handshake timeout */
#define HMS__TOPIC_RESCAN_NS 100000000LL     /* without inotify: look for new publishers every 100 ms */
#define HMS__TOPIC_BLOCK_SLICE_NS 10000000LL /* blocking publisher re-checks subscribers at least this often */
#define HMS__TOPIC_RECLAIM_MS 10             /* accept thread retries freeing departed subscribers */
#define HMS__TOPIC_META_MAX 8192
#define HMS__TOPIC_MAX_ERRORS 8
#define HMS__TOPIC_MAX_IGNORED 1024
#define HMS__TOPIC_READ_RETRIES 16
#define HMS__TOPIC_MAX_PENDING 64
#define HMS__TOPIC_SEQ_LIMIT (1ull << 62) /* sequence numbers beyond this are corrupt */

enum { HMS__SLOT_FREE = 0, HMS__SLOT_ACTIVE = 1, HMS__SLOT_DEAD = 2 };

/* ================================================================== names and patterns */
static bool hms__name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '-';
}

bool hms__topic_pattern_valid(const char *s, bool *exact) {
  size_t n = 0;
  bool glob = false;
  for (const char *p = s; *p; p++, n++) {
    char c = *p;
    if (hms__name_char(c)) continue;
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '!' || c == '^') {
      glob = true;
      continue;
    }
    return false;
  }
  if (n == 0 || n > HMS_NAME_MAX) return false;
  *exact = !glob;
  return glob ? true : hms__name_valid(s);
}

static bool hms__topic_matches(const char *pattern, bool exact, const char *topic) {
  return exact ? strcmp(pattern, topic) == 0 : fnmatch(pattern, topic, 0) == 0;
}

static bool hms__ends_with(const char *s, const char *suf) {
  size_t n = strlen(s), k = strlen(suf);
  return n >= k && strcmp(s + n - k, suf) == 0;
}

/* ================================================================== registry entries
 *   <dir>/<topic>@<pid>-<n>.tmeta   who publishes (pid + start time), which socket
 *   <dir>/<topic>@<pid>-<n>.topic   the publisher's listening socket (or t@<pid>-<n>.topic when the
 *                                   long form would not fit a sockaddr_un) */
typedef struct {
  char topic[HMS_NAME_MAX + 1];
  char node[HMS_NAME_MAX + 1];
  char sock[256]; /* basename in the runtime directory */
  int32_t pid;
  uint32_t uid;
  uint64_t starttime;
} hms__tmeta_t;

static bool hms__sock_basename_valid(const char *s) {
  size_t n = strlen(s);
  if (n < 7 || n > 200 || s[0] == '.' || !hms__ends_with(s, ".topic")) return false;
  for (const char *p = s; *p; p++)
    if (!hms__name_char(*p) && *p != '@') return false;
  return true;
}

/* Metadata files come from processes of our own user but are still parsed defensively. */
static bool hms__tmeta_read(const char *path, hms__tmeta_t *m) {
  memset(m, 0, sizeof *m);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return false;
  char buf[HMS__TOPIC_META_MAX + 1];
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fd, buf + len, HMS__TOPIC_META_MAX - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += (size_t)n;
    if (len == HMS__TOPIC_META_MAX) break;
  }
  close(fd);
  buf[len] = 0;
  if (strncmp(buf, "hms-ffi-topic 1\n", 16) != 0) return false;
  for (char *line = buf, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = 0;
    char *eq = strchr(line, '=');
    if (!eq) continue;
    *eq = 0;
    const char *k = line, *v = eq + 1;
    if (!strcmp(k, "topic"))
      hms__strlcpy(m->topic, v, sizeof m->topic);
    else if (!strcmp(k, "node"))
      hms__strlcpy(m->node, v, sizeof m->node);
    else if (!strcmp(k, "sock"))
      hms__strlcpy(m->sock, v, sizeof m->sock);
    else if (!strcmp(k, "pid"))
      m->pid = (int32_t)strtol(v, NULL, 10);
    else if (!strcmp(k, "uid"))
      m->uid = (uint32_t)strtoul(v, NULL, 10);
    else if (!strcmp(k, "starttime"))
      m->starttime = strtoull(v, NULL, 10);
  }
  return hms__name_valid(m->topic) && m->pid > 0 && hms__sock_basename_valid(m->sock);
}

/* Removes a dead publisher's entry, unless a new process took the name over meanwhile. */
static void hms__tmeta_cleanup(const char *dir, const char *meta_name, const hms__tmeta_t *seen) {
  char path[HMS__PATH_MAX], sock[HMS__PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", dir, meta_name);
  int lk = hms__registry_lock(dir);
  hms__tmeta_t again;
  if (hms__tmeta_read(path, &again) && again.pid == seen->pid && again.starttime == seen->starttime) {
    snprintf(sock, sizeof sock, "%s/%s", dir, again.sock);
    unlink(sock);
    unlink(path);
  }
  hms__registry_unlock(lk);
}

/* A socket without metadata whose process is gone: a crash between bind and the metadata write. */
static void hms__tsock_cleanup(const char *dir, const char *name) {
  const char *at = strrchr(name, '@');
  if (!at) return;
  long pid = strtol(at + 1, NULL, 10);
  if (pid <= 0 || hms__registry_alive((pid_t)pid, 0)) return;
  char path[HMS__PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int lk = hms__registry_lock(dir);
  if (!hms__registry_alive((pid_t)pid, 0)) unlink(path);
  hms__registry_unlock(lk);
}

/* ================================================================== publisher */
typedef struct {
  _Atomic int state; /* HMS__SLOT_*; FREE->ACTIVE and ACTIVE->DEAD by the accept thread, DEAD->FREE by it
                      * too but only while holding the publish lock (so hms_publish never sees a page
                      * being unmapped) */
  hms__subpage_t *page;
  int bell; /* eventfd we write when the subscriber sleeps */
  int sock;
  pid_t pid;
} hms__tsub_t;

typedef struct {
  int fd;
  int64_t deadline;
} hms__tpending_t;

enum { HMS__TEV_STOP = 1, HMS__TEV_LISTEN = 2, HMS__TEV_PENDING = 3, HMS__TEV_SUB = 4 };

struct hms_publisher_s {
  hms_node_t *node;
  char topic[HMS_NAME_MAX + 1];
  char dir[HMS__PATH_MAX];
  char meta_path[HMS__PATH_MAX];
  char sock_path[HMS__PATH_MAX];
  uint64_t sock_dev, sock_ino, starttime;
  int listen_fd;
  int ring_fd;
  uint8_t *map;
  size_t map_len;
  hms__topic_ctl_t *ctl;
  hms__topic_entry_t *index;
  uint8_t *data;
  uint32_t slots;
  uint32_t flags;
  uint64_t data_bytes;
  uint64_t max_payload;
  int64_t spin_ns;
  /* publishing state: private copies, guarded by mu */
  pthread_mutex_t mu;
  uint64_t head, tail, data_head;
  uint64_t min_cursor; /* blocking mode: every live subscriber had read everything below this */
  /* subscribers */
  hms__tsub_t *subs;
  uint32_t max_subs;
  _Atomic uint32_t hwm;     /* slots [0, hwm) may be in use */
  _Atomic uint32_t nactive; /* ACTIVE slots */
  uint32_t ndead;           /* accept thread only: DEAD slots waiting to be freed */
  /* accept thread */
  int epfd, stop_fd;
  pthread_t thread;
  bool thread_started;
  hms__tpending_t pending[HMS__TOPIC_MAX_PENDING];
  size_t npending;
};

HMS_API void hms_publisher_options_init(hms_publisher_options_t *opts) {
  if (!opts) return;
  memset(opts, 0, sizeof *opts);
  opts->version = HMS_PUBLISHER_OPTIONS_VERSION;
  opts->spin_ns = -1;
}

static inline uint64_t hms__ev(int kind, uint32_t v) { return ((uint64_t)kind << 32) | v; }

/* The ring's memfd: sized, sealed against shrinking/growing, mapped writable by us, then sealed
 * against any *future* write access, so every descriptor we hand out can only be mapped read-only. */
static int hms__ring_memfd(uint64_t size, void **map, hms_error_t *err) {
  int fd = memfd_create("hms-ffi-topic", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    hms__fail(err, HMS_RESOURCE_EXHAUSTED, errno, "memfd_create failed: %s", strerror(errno));
    return -1;
  }
  if (ftruncate(fd, (off_t)size) != 0) {
    hms__fail(err, HMS_RESOURCE_EXHAUSTED, errno, "ftruncate(memfd, %llu) failed: %s", (unsigned long long)size,
              strerror(errno));
    close(fd);
    return -1;
  }
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
    hms__fail(err, HMS_FAILED_PRECONDITION, errno, "sealing the topic memfd failed: %s", strerror(errno));
    close(fd);
    return -1;
  }
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    hms__fail(err, HMS_RESOURCE_EXHAUSTED, errno, "mmap of %llu bytes failed: %s", (unsigned long long)size,
              strerror(errno));
    close(fd);
    return -1;
  }
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) != 0) {
    int e = errno;
    hms__fail(err, HMS_FAILED_PRECONDITION, e,
              "cannot seal the topic ring read-only for subscribers (F_SEAL_FUTURE_WRITE: %s); topics need "
              "Linux >= 5.1",
              strerror(e));
    munmap(p, size);
    close(fd);
    return -1;
  }
  *map = p;
  return fd;
}

static hms_status_t hms__publisher_register(hms_publisher_t *p, hms_error_t *err) {
  static _Atomic uint32_t counter;
  uint32_t n = atomic_fetch_add(&counter, 1) + 1;
  int pid = (int)getpid();
  char base[HMS_NAME_MAX + 64], sname[HMS_NAME_MAX + 80];
  snprintf(base, sizeof base, "%s@%d-%u", p->topic, pid, n);
  snprintf(p->meta_path, sizeof p->meta_path, "%s/%s.tmeta", p->dir, base);
  struct sockaddr_un sa;
  snprintf(sname, sizeof sname, "%s.topic", base);
  if (strlen(p->dir) + 1 + strlen(sname) >= sizeof sa.sun_path) snprintf(sname, sizeof sname, "t@%d-%u.topic", pid, n);
  snprintf(p->sock_path, sizeof p->sock_path, "%s/%s", p->dir, sname);
  if (strlen(p->sock_path) >= sizeof sa.sun_path)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "socket path '%s' is too long; use a shorter runtime directory",
                     p->sock_path);
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, errno, "socket(AF_UNIX) failed: %s", strerror(errno));
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  hms__strlcpy(sa.sun_path, p->sock_path, sizeof sa.sun_path);
  int lk = hms__registry_lock(p->dir);
  if (lk < 0) {
    int e = errno;
    close(fd);
    return hms__fail(err, HMS_FAILED_PRECONDITION, e, "cannot lock runtime directory '%s': %s", p->dir, strerror(e));
  }
  hms_status_t st = HMS_OK;
  mode_t old = umask(0077);
  int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
  if (rc != 0 && errno == EADDRINUSE) {
    /* Our pid and counter: the leftover of a dead process that had our pid. */
    unlink(p->sock_path);
    unlink(p->meta_path);
    rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
  }
  umask(old);
  if (rc != 0) st = hms__fail(err, HMS_UNAVAILABLE, errno, "bind('%s') failed: %s", p->sock_path, strerror(errno));
  if (st == HMS_OK && listen(fd, 128) != 0) {
    st = hms__fail(err, HMS_UNAVAILABLE, errno, "listen('%s') failed: %s", p->sock_path, strerror(errno));
    unlink(p->sock_path);
  }
  struct stat sst;
  if (st == HMS_OK && stat(p->sock_path, &sst) == 0) {
    p->sock_dev = (uint64_t)sst.st_dev;
    p->sock_ino = (uint64_t)sst.st_ino;
  }
  if (st == HMS_OK) {
    /* Written to a temporary name and renamed: subscribers (inotify IN_MOVED_TO) see it complete. */
    char tmp[HMS__PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", p->meta_path, pid);
    FILE *f = fopen(tmp, "we");
    bool ok = f != NULL;
    if (f) {
      fprintf(f, "hms-ffi-topic 1\ntopic=%s\nnode=%s\npid=%d\nuid=%u\nstarttime=%llu\nsock=%s\n", p->topic,
              p->node->name, pid, (unsigned)getuid(), (unsigned long long)p->starttime, sname);
      ok = fflush(f) == 0;
      ok = (fclose(f) == 0) && ok;
    }
    if (!ok || rename(tmp, p->meta_path) != 0) {
      int e = errno;
      unlink(tmp);
      unlink(p->sock_path);
      st = hms__fail(err, HMS_FAILED_PRECONDITION, e, "cannot write '%s': %s", p->meta_path, strerror(e));
    }
  }
  hms__registry_unlock(lk);
  if (st != HMS_OK) {
    close(fd);
    return st;
  }
  p->listen_fd = fd;
  return HMS_OK;
}

static void hms__publisher_unregister(hms_publisher_t *p) {
  int lk = hms__registry_lock(p->dir);
  hms__tmeta_t m;
  if (hms__tmeta_read(p->meta_path, &m) && m.pid == (int32_t)getpid() && m.starttime == p->starttime)
    unlink(p->meta_path);
  struct stat b;
  if (stat(p->sock_path, &b) == 0 && (uint64_t)b.st_ino == p->sock_ino && (uint64_t)b.st_dev == p->sock_dev)
    unlink(p->sock_path);
  hms__registry_unlock(lk);
}

/* ------------------------------------------------------------------ accept thread */
static void hms__pub_send_refusal(int fd, hms_status_t code, const char *msg) {
  hms__topic_welcome_t w;
  memset(&w, 0, sizeof w);
  w.magic = HMS__TOPIC_WELCOME_MAGIC;
  w.abi = HMS_FFI_ABI_VERSION;
  w.proto = HMS__TOPIC_PROTO;
  w.status = code;
  hms__strlcpy(w.message, msg, sizeof w.message);
  hms__send_fds(fd, &w, sizeof w, NULL, 0);
}

/* Frees departed subscribers' pages once hms_publish is not running (trylock: never waits for it). */
static void hms__pub_reclaim(hms_publisher_t *p) {
  if (!p->ndead || pthread_mutex_trylock(&p->mu) != 0) return;
  uint32_t hwm = atomic_load_explicit(&p->hwm, memory_order_relaxed);
  for (uint32_t i = 0; i < hwm; i++) {
    hms__tsub_t *s = &p->subs[i];
    if (atomic_load_explicit(&s->state, memory_order_relaxed) != HMS__SLOT_DEAD) continue;
    munmap(s->page, HMS__SUBPAGE_BYTES);
    close(s->bell);
    s->page = NULL;
    s->bell = -1;
    atomic_store_explicit(&s->state, HMS__SLOT_FREE, memory_order_release);
  }
  p->ndead = 0;
  pthread_mutex_unlock(&p->mu);
}

static void hms__pub_drop(hms_publisher_t *p, uint32_t i) {
  hms__tsub_t *s = &p->subs[i];
  if (atomic_load_explicit(&s->state, memory_order_relaxed) != HMS__SLOT_ACTIVE) return;
  epoll_ctl(p->epfd, EPOLL_CTL_DEL, s->sock, NULL);
  close(s->sock);
  s->sock = -1;
  atomic_store_explicit(&s->state, HMS__SLOT_DEAD, memory_order_seq_cst);
  atomic_fetch_sub_explicit(&p->nactive, 1, memory_order_relaxed);
  /* A publisher blocked on this subscriber must stop waiting for it now. */
  atomic_fetch_add_explicit(&s->page->pub_wake, 1, memory_order_release);
  hms__futex_wake(&s->page->pub_wake, INT_MAX, 1);
  p->ndead++;
  hms__pub_reclaim(p);
}

static void hms__pub_pending_remove(hms_publisher_t *p, size_t k, bool close_fd) {
  if (close_fd) {
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, p->pending[k].fd, NULL);
    close(p->pending[k].fd);
  }
  p->pending[k] = p->pending[--p->npending];
}

static void hms__pub_accept(hms_publisher_t *p) {
  for (;;) {
    int fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return; /* EAGAIN, or EMFILE: that subscriber's handshake times out */
    struct ucred cred;
    socklen_t cl = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 || cred.uid != geteuid() ||
        p->npending == HMS__TOPIC_MAX_PENDING) {
      close(fd);
      continue;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = hms__ev(HMS__TEV_PENDING, (uint32_t)fd)};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      close(fd);
      continue;
    }
    p->pending[p->npending].fd = fd;
    p->pending[p->npending].deadline = hms__now_ns() + HMS__TOPIC_HANDSHAKE_NS;
    p->npending++;
  }
}

/* Returns false while the hello has not arrived yet (keep waiting). */
static bool hms__pub_handshake(hms_publisher_t *p, int fd) {
  hms__topic_hello_t h;
  int nofds[1], nfds = 0;
  ssize_t n = hms__recv_fds(fd, &h, sizeof h, nofds, 0, &nfds); /* any descriptor sent is closed */
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
  epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
  if (n != (ssize_t)sizeof h || h.magic != HMS__TOPIC_HELLO_MAGIC) {
    close(fd);
    return true;
  }
  h.topic[sizeof h.topic - 1] = 0;
  char msg[256];
  if (h.abi != HMS_FFI_ABI_VERSION || h.proto != HMS__TOPIC_PROTO) {
    snprintf(msg, sizeof msg, "ABI/protocol mismatch: subscriber %u/%u, publisher %u/%u; upgrade the older side",
             h.abi, h.proto, HMS_FFI_ABI_VERSION, HMS__TOPIC_PROTO);
    hms__pub_send_refusal(fd, HMS_FAILED_PRECONDITION, msg);
    close(fd);
    return true;
  }
  if (strcmp(h.topic, p->topic) != 0) {
    snprintf(msg, sizeof msg, "this socket publishes '%s', not '%.100s'", p->topic, h.topic);
    hms__pub_send_refusal(fd, HMS_NOT_FOUND, msg);
    close(fd);
    return true;
  }
  uint32_t slot = UINT32_MAX;
  for (uint32_t i = 0; i < p->max_subs; i++) {
    if (atomic_load_explicit(&p->subs[i].state, memory_order_relaxed) == HMS__SLOT_FREE) {
      slot = i;
      break;
    }
  }
  if (slot == UINT32_MAX) {
    snprintf(msg, sizeof msg, "the publisher of '%s' (pid %d) already has %u subscribers (its max_subscribers)",
             p->topic, (int)getpid(), p->max_subs);
    hms__pub_send_refusal(fd, HMS_RESOURCE_EXHAUSTED, msg);
    close(fd);
    return true;
  }
  char why[160];
  void *pmap = NULL;
  int pfd = hms__memfd_create_sealed(HMS__SUBPAGE_BYTES, &pmap, why, sizeof why);
  int bell = pfd >= 0 ? eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) : -1;
  if (pfd < 0 || bell < 0) {
    if (pfd >= 0) {
      close(pfd);
      munmap(pmap, HMS__SUBPAGE_BYTES);
    }
    snprintf(msg, sizeof msg, "the publisher could not allocate a subscriber page: %s",
             pfd < 0 ? why : strerror(errno));
    hms__pub_send_refusal(fd, HMS_RESOURCE_EXHAUSTED, msg);
    close(fd);
    return true;
  }
  struct ucred cred;
  socklen_t cl = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0) cred.pid = 0;
  hms__subpage_t *pg = pmap;
  pg->magic = HMS__SUBPAGE_MAGIC;
  pg->layout = HMS__TOPIC_LAYOUT;
  pg->slot = slot;
  atomic_store_explicit(&pg->cursor, atomic_load_explicit(&p->ctl->head_seq, memory_order_acquire) + 1,
                        memory_order_relaxed);
  hms__tsub_t *s = &p->subs[slot];
  s->page = pg;
  s->bell = bell;
  s->sock = fd;
  s->pid = cred.pid;
  /* Active before the welcome goes out: from the moment the subscriber can read, a blocking publisher
   * already counts it (and its cursor starts at "everything after now"). */
  if (slot >= atomic_load_explicit(&p->hwm, memory_order_relaxed))
    atomic_store_explicit(&p->hwm, slot + 1, memory_order_release);
  atomic_fetch_add_explicit(&p->nactive, 1, memory_order_relaxed);
  atomic_store_explicit(&s->state, HMS__SLOT_ACTIVE, memory_order_release);
  hms__topic_welcome_t w;
  memset(&w, 0, sizeof w);
  w.magic = HMS__TOPIC_WELCOME_MAGIC;
  w.abi = HMS_FFI_ABI_VERSION;
  w.proto = HMS__TOPIC_PROTO;
  w.status = HMS_OK;
  w.slot = slot;
  w.ring_bytes = p->map_len;
  w.subpage_bytes = HMS__SUBPAGE_BYTES;
  int fds[3] = {p->ring_fd, pfd, bell};
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = hms__ev(HMS__TEV_SUB, slot)};
  int rc = epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev);
  if (rc == 0) rc = hms__send_fds(fd, &w, sizeof w, fds, 3);
  close(pfd); /* the subscriber has its own reference; our mapping keeps the page alive */
  if (rc != 0) hms__pub_drop(p, slot);
  return true;
}

static void *hms__pub_thread(void *arg) {
  hms_publisher_t *p = arg;
  struct epoll_event evs[32];
  for (;;) {
    int timeout = -1;
    int64_t now = hms__now_ns();
    for (size_t k = 0; k < p->npending;) {
      if (p->pending[k].deadline <= now) {
        hms__pub_pending_remove(p, k, true); /* a connection that never said hello */
        continue;
      }
      int ms = (int)((p->pending[k].deadline - now + 999999) / 1000000);
      if (timeout < 0 || ms < timeout) timeout = ms;
      k++;
    }
    if (p->ndead && (timeout < 0 || timeout > HMS__TOPIC_RECLAIM_MS)) timeout = HMS__TOPIC_RECLAIM_MS;
    int n = epoll_wait(p->epfd, evs, 32, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      return NULL; /* cannot happen with a valid epoll fd */
    }
    for (int i = 0; i < n; i++) {
      int kind = (int)(evs[i].data.u64 >> 32);
      uint32_t v = (uint32_t)evs[i].data.u64;
      if (kind == HMS__TEV_STOP) {
        return NULL;
      } else if (kind == HMS__TEV_LISTEN) {
        hms__pub_accept(p);
      } else if (kind == HMS__TEV_PENDING) {
        for (size_t k = 0; k < p->npending; k++) {
          if (p->pending[k].fd != (int)v) continue;
          if (evs[i].events & (EPOLLHUP | EPOLLERR)) {
            hms__pub_pending_remove(p, k, true);
          } else if (hms__pub_handshake(p, (int)v)) {
            hms__pub_pending_remove(p, k, false); /* the handshake took or closed the socket */
          }
          break;
        }
      } else if (kind == HMS__TEV_SUB && v < p->max_subs) {
        /* A subscriber never sends anything after its hello: data, EOF or an error all mean it left. */
        hms__pub_drop(p, v);
      }
    }
    hms__pub_reclaim(p);
  }
}

static void hms__publisher_free(hms_publisher_t *p) {
  if (p->listen_fd >= 0) hms__publisher_unregister(p);
  if (p->thread_started) {
    uint64_t one = 1;
    ssize_t w = write(p->stop_fd, &one, sizeof one);
    (void)w;
    pthread_join(p->thread, NULL);
  }
  if (p->listen_fd >= 0) close(p->listen_fd);
  for (size_t k = 0; k < p->npending; k++) close(p->pending[k].fd);
  if (p->subs) {
    for (uint32_t i = 0; i < p->max_subs; i++) {
      hms__tsub_t *s = &p->subs[i];
      int st = atomic_load(&s->state);
      if (st == HMS__SLOT_FREE) continue;
      if (s->sock >= 0) close(s->sock); /* the subscriber sees the hang-up and drains what is left */
      if (s->page) munmap(s->page, HMS__SUBPAGE_BYTES);
      if (s->bell >= 0) close(s->bell);
    }
    free(p->subs);
  }
  if (p->map) munmap(p->map, p->map_len);
  if (p->ring_fd >= 0) close(p->ring_fd);
  if (p->epfd >= 0) close(p->epfd);
  if (p->stop_fd >= 0) close(p->stop_fd);
  pthread_mutex_destroy(&p->mu);
  free(p);
}

static uint32_t hms__pow2_ceil(uint32_t v) {
  uint32_t r = 1;
  while (r < v) r <<= 1;
  return r;
}

HMS_API hms_status_t hms_publisher_open(hms_node_t *node, const char *topic, const hms_publisher_options_t *opts,
                                        hms_publisher_t **out, hms_error_t *err) {
  if (!out) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "out is NULL");
  *out = NULL;
  if (!node || !topic) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "node and topic must not be NULL");
  hms_publisher_options_t defaults;
  if (!opts) {
    hms_publisher_options_init(&defaults);
    opts = &defaults;
  }
  if (opts->version < 1 || opts->version > HMS_PUBLISHER_OPTIONS_VERSION)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "hms_publisher_options_t.version is %u; this library knows 1..%u (call "
                     "hms_publisher_options_init)",
                     opts->version, HMS_PUBLISHER_OPTIONS_VERSION);
  if (!hms__name_valid(topic))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "topic name '%.64s' is invalid: use 1-%d characters of [A-Za-z0-9_.-], not starting with "
                     "'.' or '-' (wildcards are for subscribing)",
                     topic, HMS_NAME_MAX);
  if (opts->flags & ~(uint32_t)HMS_PUBLISHER_BLOCK)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "unknown publisher flags 0x%x", opts->flags);
  uint32_t cap = opts->capacity ? opts->capacity : HMS_TOPIC_DEFAULT_CAPACITY;
  if (cap > HMS_TOPIC_MAX_CAPACITY)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "capacity %u exceeds the maximum of %d messages", cap,
                     HMS_TOPIC_MAX_CAPACITY);
  cap = hms__pow2_ceil(cap < 2 ? 2 : cap);
  uint64_t ring = opts->ring_bytes ? opts->ring_bytes : HMS_TOPIC_DEFAULT_RING_BYTES;
  if (!hms__is_pow2(ring) || ring < HMS_RING_MIN_BYTES || ring > HMS_RING_MAX_BYTES)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "ring_bytes %llu must be a power of two between %d and %d",
                     (unsigned long long)opts->ring_bytes, HMS_RING_MIN_BYTES, HMS_RING_MAX_BYTES);
  uint32_t maxs = opts->max_subscribers ? opts->max_subscribers : HMS_TOPIC_DEFAULT_MAX_SUBSCRIBERS;
  if (maxs > HMS_TOPIC_MAX_SUBSCRIBERS)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "max_subscribers %u exceeds the maximum of %d", maxs,
                     HMS_TOPIC_MAX_SUBSCRIBERS);
  hms_status_t st = hms__runtime_dir_ensure(node->runtime_dir, err);
  if (st) return st;
  hms_publisher_t *p = calloc(1, sizeof *p);
  if (!p) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
  pthread_mutex_init(&p->mu, NULL);
  p->node = node;
  p->listen_fd = p->ring_fd = p->epfd = p->stop_fd = -1;
  hms__strlcpy(p->topic, topic, sizeof p->topic);
  hms__strlcpy(p->dir, node->runtime_dir, sizeof p->dir);
  p->slots = cap;
  p->flags = opts->flags;
  p->data_bytes = ring;
  p->max_payload = ring / 4;
  p->spin_ns = opts->spin_ns < 0 ? node->spin_ns : opts->spin_ns;
  p->max_subs = maxs;
  p->starttime = hms__proc_starttime(getpid());
  p->subs = calloc(maxs, sizeof *p->subs);
  if (!p->subs) {
    hms__publisher_free(p);
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
  }
  for (uint32_t i = 0; i < maxs; i++) p->subs[i].sock = p->subs[i].bell = -1;
  uint64_t index_bytes = (uint64_t)cap * HMS__TOPIC_ENTRY_BYTES;
  p->map_len = HMS__TOPIC_HEADER_BYTES + index_bytes + ring;
  void *map = NULL;
  p->ring_fd = hms__ring_memfd(p->map_len, &map, err);
  if (p->ring_fd < 0) {
    p->map_len = 0;
    hms__publisher_free(p);
    return err ? err->code : HMS_RESOURCE_EXHAUSTED;
  }
  p->map = map;
  hms__topic_hdr_t *h = map;
  h->magic = HMS__TOPIC_MAGIC;
  h->layout = HMS__TOPIC_LAYOUT;
  h->header_bytes = HMS__TOPIC_HEADER_BYTES;
  h->slots = cap;
  h->flags = opts->flags;
  h->data_bytes = ring;
  h->index_offset = HMS__TOPIC_HEADER_BYTES;
  h->data_offset = HMS__TOPIC_HEADER_BYTES + index_bytes;
  h->total_bytes = p->map_len;
  h->max_payload = p->max_payload;
  h->created_ns = hms__now_ns();
  h->pid = (int32_t)getpid();
  if (getrandom(&h->publisher_id, sizeof h->publisher_id, GRND_NONBLOCK) != (ssize_t)sizeof h->publisher_id)
    h->publisher_id = ((uint64_t)getpid() << 32) ^ (uint64_t)h->created_ns;
  hms__strlcpy(h->topic, topic, sizeof h->topic);
  p->ctl = (hms__topic_ctl_t *)(p->map + HMS__TOPIC_CTL_OFFSET);
  p->index = (hms__topic_entry_t *)(p->map + HMS__TOPIC_HEADER_BYTES);
  p->data = p->map + HMS__TOPIC_HEADER_BYTES + index_bytes;
  atomic_store(&p->ctl->head_seq, 0);
  atomic_store(&p->ctl->tail_seq, 1);
  p->head = 0;
  p->tail = 1;
  p->data_head = 0;
  p->epfd = epoll_create1(EPOLL_CLOEXEC);
  p->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (p->epfd < 0 || p->stop_fd < 0) {
    int e = errno;
    hms__publisher_free(p);
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, e, "epoll/eventfd creation failed: %s", strerror(e));
  }
  st = hms__publisher_register(p, err);
  if (st) {
    hms__publisher_free(p);
    return st;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = hms__ev(HMS__TEV_STOP, 0)};
  epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->stop_fd, &ev);
  ev.data.u64 = hms__ev(HMS__TEV_LISTEN, 0);
  epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->listen_fd, &ev);
  /* The thread blocks every signal, so that signals (Ctrl-C) reach the application's threads and
   * interrupt their waits instead of landing here. */
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&p->thread, &attr, hms__pub_thread, p);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    hms__publisher_free(p);
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, rc, "cannot start the publisher's accept thread: %s", strerror(rc));
  }
  p->thread_started = true;
  *out = p;
  hms__ok(err);
  return HMS_OK;
}

HMS_API void hms_publisher_close(hms_publisher_t *pub) {
  if (!pub) return;
  atomic_store_explicit(&pub->ctl->closed, 1, memory_order_release);
  hms__publisher_free(pub);
}

/* Blocking mode: waits until every live subscriber has read everything below `need`. Cursors only
 * grow (one that a hostile subscriber moves back only hurts that subscriber), and a new subscriber
 * starts at the newest message, so the minimum seen stays a valid lower bound: most publishes of a
 * full ring need no look at the subscribers at all. */
static hms_status_t hms__pub_wait(hms_publisher_t *p, uint64_t need, uint64_t next, int64_t timeout_ns,
                                  hms_error_t *err) {
  if (need <= p->min_cursor) return HMS_OK;
  int64_t deadline = hms__deadline_from_timeout(timeout_ns);
  int64_t spin_until = -1;
  for (;;) {
    hms__tsub_t *lag = NULL;
    uint64_t lag_cursor = 0, min = next;
    uint32_t hwm = atomic_load_explicit(&p->hwm, memory_order_acquire);
    for (uint32_t i = 0; i < hwm; i++) {
      hms__tsub_t *s = &p->subs[i];
      if (atomic_load_explicit(&s->state, memory_order_acquire) != HMS__SLOT_ACTIVE) continue;
      /* The subscriber writes its cursor; it can claim anything. Ahead of what exists = caught up. */
      uint64_t c = atomic_load_explicit(&s->page->cursor, memory_order_seq_cst);
      if (c > next) c = next;
      if (c < min) min = c;
      if (c < need && !lag) {
        lag = s;
        lag_cursor = c;
      }
    }
    if (!lag) {
      p->min_cursor = min;
      return HMS_OK;
    }
    int64_t now = hms__now_ns();
    if (spin_until < 0) spin_until = now + p->spin_ns;
    if (now >= deadline)
      return hms__fail(err, HMS_DEADLINE_EXCEEDED, 0,
                       "subscriber pid %d of topic '%s' is %llu messages behind and the ring holds %u; nothing "
                       "was published (blocking publisher)",
                       (int)lag->pid, p->topic, (unsigned long long)(next - lag_cursor), p->slots);
    if (now < spin_until) {
      for (int k = 0; k < 16; k++) hms__cpu_relax();
      continue;
    }
    hms__subpage_t *pg = lag->page;
    /* Ask to be woken once a quarter of the ring is free again, not at every message: a reader that
     * keeps up one message at a time would otherwise cost a wake-up per message on both sides. */
    uint64_t at = need + p->slots / 4;
    atomic_store_explicit(&pg->pub_wake_at, at < next ? at : next, memory_order_relaxed);
    atomic_store_explicit(&pg->pub_waiting, 1, memory_order_seq_cst);
    uint32_t w = atomic_load_explicit(&pg->pub_wake, memory_order_seq_cst);
    uint64_t c = atomic_load_explicit(&pg->cursor, memory_order_seq_cst);
    if (c < need && atomic_load_explicit(&lag->state, memory_order_seq_cst) == HMS__SLOT_ACTIVE) {
      int64_t left = deadline - now;
      hms__futex_wait(&pg->pub_wake, w, left < HMS__TOPIC_BLOCK_SLICE_NS ? left : HMS__TOPIC_BLOCK_SLICE_NS, 1);
    }
    atomic_store_explicit(&pg->pub_waiting, 0, memory_order_relaxed);
  }
}

HMS_API hms_status_t hms_publish(hms_publisher_t *p, const char *data, size_t len, uint32_t content_type,
                                 uint32_t flags, int64_t timeout_ns, uint64_t *seq, hms_error_t *err) {
  if (HMS__UNLIKELY(!p)) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "publisher is NULL");
  if (HMS__UNLIKELY(len && !data)) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "data is NULL but len is %zu", len);
  if (HMS__UNLIKELY(flags & ~(uint32_t)HMS_MSG_EVENT))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "unknown message flags 0x%x", flags);
  if (HMS__UNLIKELY(len > p->max_payload))
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, 0,
                     "message of %zu bytes exceeds the max message of topic '%s' (%llu bytes = ring_bytes/4); "
                     "open the publisher with a larger ring_bytes (up to 1 GiB) or split the payload (the "
                     "shared-memory arena for large payloads is not there yet)",
                     len, p->topic, (unsigned long long)p->max_payload);
  pthread_mutex_lock(&p->mu);
  uint64_t s = p->head + 1;
  uint64_t pad = ((uint64_t)len + (HMS__CACHELINE - 1)) & ~(uint64_t)(HMS__CACHELINE - 1);
  uint64_t pos = p->data_head;
  uint64_t off = pos & (p->data_bytes - 1);
  if (off + pad > p->data_bytes) { /* payloads never wrap: skip to the start */
    pos += p->data_bytes - off;
    off = 0;
  }
  uint64_t new_head = pos + pad;
  uint64_t reclaim = new_head > p->data_bytes ? new_head - p->data_bytes : 0;
  uint64_t min_tail = s > p->slots ? s - p->slots + 1 : 1;
  uint64_t t = p->tail;
  /* Our own index (nobody else can write it): the oldest message whose entry and bytes survive. */
  while (t < s && (t < min_tail || p->index[t & (p->slots - 1)].data_pos < reclaim)) t++;
  if (t != p->tail) {
    if (p->flags & HMS_PUBLISHER_BLOCK) {
      hms_status_t st = hms__pub_wait(p, t, s, timeout_ns, err);
      if (st) {
        pthread_mutex_unlock(&p->mu);
        return st;
      }
    }
    atomic_store_explicit(&p->ctl->tail_seq, t, memory_order_relaxed);
    atomic_store_explicit(&p->ctl->data_tail, reclaim, memory_order_relaxed);
    atomic_thread_fence(memory_order_release); /* the raised tail is visible before any overwrite */
  }
  if (len) memcpy(p->data + off, data, len);
  hms__topic_entry_t *e = &p->index[s & (p->slots - 1)];
  e->data_pos = pos;
  e->len = (uint32_t)len;
  e->content_type = content_type;
  e->flags = flags;
  e->publish_ns = hms__now_ns();
  atomic_store_explicit(&e->seq, s, memory_order_release);
  atomic_store_explicit(&p->ctl->head_seq, s, memory_order_release);
  p->head = s;
  p->tail = t;
  p->data_head = new_head;
  /* Ring the subscribers that said they sleep (each flag is read before it is cleared, so an awake
   * subscriber costs one load and no system call). Pairs with the subscriber's flag store + re-check. */
  atomic_thread_fence(memory_order_seq_cst);
  uint32_t hwm = atomic_load_explicit(&p->hwm, memory_order_acquire);
  for (uint32_t i = 0; i < hwm; i++) {
    hms__tsub_t *sl = &p->subs[i];
    if (atomic_load_explicit(&sl->state, memory_order_acquire) != HMS__SLOT_ACTIVE) continue;
    if (atomic_load_explicit(&sl->page->sub_sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&sl->page->sub_sleeping, 0, memory_order_relaxed)) {
      uint64_t one = 1;
      ssize_t w = write(sl->bell, &one, sizeof one);
      (void)w;
    }
  }
  pthread_mutex_unlock(&p->mu);
  if (seq) *seq = s;
  hms__ok(err);
  return HMS_OK;
}

HMS_API const char *hms_publisher_topic(const hms_publisher_t *pub) { return pub ? pub->topic : ""; }
HMS_API uint32_t hms_publisher_capacity(const hms_publisher_t *pub) { return pub ? pub->slots : 0; }
HMS_API size_t hms_publisher_max_message(const hms_publisher_t *pub) { return pub ? (size_t)pub->max_payload : 0; }
HMS_API uint32_t hms_publisher_subscriber_count(const hms_publisher_t *pub) {
  return pub ? atomic_load_explicit(&((hms_publisher_t *)pub)->nactive, memory_order_relaxed) : 0;
}
HMS_API uint64_t hms_publisher_last_seq(const hms_publisher_t *pub) {
  return pub ? atomic_load_explicit(&pub->ctl->head_seq, memory_order_relaxed) : 0;
}

/* ================================================================== subscriber */
enum { HMS__SEV_INTR = 1, HMS__SEV_INOTIFY = 2, HMS__SEV_SOCK = 3, HMS__SEV_BELL = 4 };

typedef struct hms__tconn_s {
  char key[256]; /* the .tmeta file name */
  uint64_t starttime;
  char topic[HMS_NAME_MAX + 1];
  size_t topic_len;
  int sock, bell;
  pid_t pid;
  uint8_t *map;
  size_t map_len;
  hms__topic_ctl_t *ctl;
  hms__topic_entry_t *index;
  uint8_t *data;
  uint32_t slots;
  uint32_t flags;
  uint64_t data_bytes, max_payload, publisher_id;
  hms__subpage_t *page;
  uint64_t cursor;    /* next sequence number to read (private: the page copy is for the publisher) */
  uint64_t last_head; /* validated: head never goes backwards */
  uint64_t pending_missed;
  bool held;    /* blocking ring: `cursor` moved in a batch but not yet shown to the publisher */
  bool gone;    /* the publisher hung up: drain, then drop */
  bool drained;
  hms__ep_tag_t sock_tag, bell_tag;
} hms__tconn_t;

typedef struct {
  hms_status_t code;
  char message[256];
} hms__terr_t;

typedef struct {
  char key[256];
  uint64_t starttime;
} hms__tignored_t;

struct hms_subscription_s {
  char node_name[HMS_NAME_MAX + 1]; /* copied: the subscription never touches the node after open */
  char pattern[HMS_NAME_MAX + 1];
  bool exact;
  uint32_t flags;
  char dir[HMS__PATH_MAX];
  int64_t start_ns;
  int64_t handshake_ns;
  hms__spin_t spin;
  pthread_mutex_t mu;
  int epfd, ifd, intr_fd;
  _Atomic int interrupted;
  hms__ep_tag_t intr_tag, inotify_tag;
  hms__tconn_t **conns;
  size_t nconns, conns_cap;
  _Atomic uint32_t nconns_pub;
  size_t rr;
  bool rescan;
  int64_t next_rescan;
  bool had_publishers;
  int32_t last_gone_pid;
  hms__terr_t errs[HMS__TOPIC_MAX_ERRORS];
  size_t nerrs;
  hms__tignored_t *ignored;
  size_t nignored, ignored_next;
  _Atomic uint64_t missed_total;
  bool holding; /* a recv_batch call is taking messages: blocking rings' cursors are held */
  bool held;    /* some connection has a held cursor (see hms__sub_release) */
};

HMS_API void hms_subscribe_options_init(hms_subscribe_options_t *opts) {
  if (!opts) return;
  memset(opts, 0, sizeof *opts);
  opts->version = HMS_SUBSCRIBE_OPTIONS_VERSION;
  opts->spin_ns = -1;
  opts->handshake_timeout_ns = -1;
}

static void hms__sub_error(hms_subscription_t *sub, hms_status_t code, const char *msg) {
  if (sub->nerrs == HMS__TOPIC_MAX_ERRORS) return; /* the first ones tell the story */
  sub->errs[sub->nerrs].code = code;
  hms__strlcpy(sub->errs[sub->nerrs].message, msg, sizeof sub->errs[0].message);
  sub->nerrs++;
}

static void hms__sub_ignore(hms_subscription_t *sub, const char *key, uint64_t starttime) {
  if (!sub->ignored) {
    sub->ignored = calloc(HMS__TOPIC_MAX_IGNORED, sizeof *sub->ignored);
    if (!sub->ignored) return;
  }
  hms__tignored_t *ig = &sub->ignored[sub->ignored_next];
  hms__strlcpy(ig->key, key, sizeof ig->key);
  ig->starttime = starttime;
  sub->ignored_next = (sub->ignored_next + 1) % HMS__TOPIC_MAX_IGNORED;
  if (sub->nignored < HMS__TOPIC_MAX_IGNORED) sub->nignored++;
}

static bool hms__sub_known(const hms_subscription_t *sub, const char *key, uint64_t starttime) {
  for (size_t i = 0; i < sub->nconns; i++)
    if (sub->conns[i]->starttime == starttime && !strcmp(sub->conns[i]->key, key)) return true;
  for (size_t i = 0; i < sub->nignored; i++)
    if (sub->ignored[i].starttime == starttime && !strcmp(sub->ignored[i].key, key)) return true;
  return false;
}

static void hms__tconn_free(hms_subscription_t *sub, hms__tconn_t *c) {
  if (c->sock >= 0) {
    epoll_ctl(sub->epfd, EPOLL_CTL_DEL, c->sock, NULL);
    close(c->sock); /* the publisher sees the hang-up and forgets us */
  }
  if (c->bell >= 0) {
    epoll_ctl(sub->epfd, EPOLL_CTL_DEL, c->bell, NULL);
    close(c->bell);
  }
  if (c->map) munmap(c->map, c->map_len);
  if (c->page) munmap(c->page, HMS__SUBPAGE_BYTES);
  free(c);
}

static void hms__sub_remove(hms_subscription_t *sub, size_t i) {
  hms__tconn_t *c = sub->conns[i];
  sub->last_gone_pid = c->pid;
  hms__tconn_free(sub, c);
  sub->conns[i] = sub->conns[--sub->nconns];
  atomic_store_explicit(&sub->nconns_pub, (uint32_t)sub->nconns, memory_order_relaxed);
}

/* A publisher that broke the protocol: dropped, reported once, never reconnected. */
static void hms__sub_corrupt(hms_subscription_t *sub, size_t i, const char *why) {
  hms__tconn_t *c = sub->conns[i];
  char msg[256];
  snprintf(msg, sizeof msg, "dropped the publisher of '%s' (pid %d): %s", c->topic, (int)c->pid, why);
  hms__sub_error(sub, HMS_DATA_LOSS, msg);
  hms__sub_ignore(sub, c->key, c->starttime);
  hms__sub_remove(sub, i);
}

static bool hms__fd_is_eventfd(int fd) {
  char link[64], path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  ssize_t k = readlink(path, link, sizeof link - 1);
  if (k <= 0) return false;
  link[k] = 0;
  return strcmp(link, "anon_inode:[eventfd]") == 0;
}

static void hms__tconn_set_cursor(hms__tconn_t *c) {
  if (c->flags & HMS_PUBLISHER_BLOCK) {
    atomic_store_explicit(&c->page->cursor, c->cursor, memory_order_seq_cst);
    if (atomic_load_explicit(&c->page->pub_waiting, memory_order_seq_cst) &&
        c->cursor >= atomic_load_explicit(&c->page->pub_wake_at, memory_order_relaxed)) {
      atomic_fetch_add_explicit(&c->page->pub_wake, 1, memory_order_seq_cst);
      hms__futex_wake(&c->page->pub_wake, INT_MAX, 1);
    }
  } else {
    atomic_store_explicit(&c->page->cursor, c->cursor, memory_order_relaxed);
  }
}

/* Moves a connection's cursor (already stored in c->cursor) after a read or a skip. For a blocking
 * ring inside a batch, the page copy the publisher waits on is *held* instead: the messages of a batch
 * count as taken only when the caller comes back for more (hms__sub_release at the start of the next
 * receive call). A batch is handed out after the call returns (Python's Subscription keeps it in a
 * local queue and gives it to the application message by message), so showing the publisher the
 * cursor at once would let it run up to a whole batch beyond `capacity` messages ahead of what the
 * application has; worse, a batch that keeps finding messages while a spinning publisher keeps
 * refilling the freed slots chases it without bound, and "blocking" no longer blocks at all. Held,
 * a blocking publisher is never more than `capacity` messages ahead of what the slowest subscriber's
 * application has taken, and one batch takes at most `capacity` messages of a blocking ring. */
static void hms__tconn_advance(hms_subscription_t *sub, hms__tconn_t *c) {
  if (sub->holding && (c->flags & HMS_PUBLISHER_BLOCK)) {
    c->held = true;
    sub->held = true;
  } else {
    hms__tconn_set_cursor(c);
  }
}

/* Shows blocking publishers the cursors held by the previous batch (its messages are taken now), or by
 * this call before it waits or returns without a message (a held cursor must never wait with us). */
static void hms__sub_release(hms_subscription_t *sub) {
  if (!sub->held) return;
  for (size_t i = 0; i < sub->nconns; i++) {
    hms__tconn_t *c = sub->conns[i];
    if (c->held) {
      c->held = false;
      hms__tconn_set_cursor(c);
    }
  }
  sub->held = false;
}

/* Validates the welcome's descriptors and maps them. On failure returns a status with `why`. */
static hms_status_t hms__tconn_attach(hms_subscription_t *sub, hms__tconn_t *c, const hms__topic_welcome_t *w,
                                      const int fds[3], char *why, size_t cap) {
  struct stat st;
  memset(&st, 0, sizeof st);
  /* The ring: a memfd that can neither shrink (SIGBUS for us) nor be written through our descriptor. */
  int seals = fcntl(fds[0], F_GET_SEALS);
  if (seals < 0) {
    snprintf(why, cap, "its ring is not a sealable memfd");
    return HMS_DATA_LOSS;
  }
  if ((seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW)) {
    snprintf(why, cap, "its ring memfd is not sealed against shrinking/growing (seals 0x%x)", seals);
    return HMS_DATA_LOSS;
  }
  if (!(seals & (F_SEAL_FUTURE_WRITE | F_SEAL_WRITE))) {
    snprintf(why, cap, "its ring memfd is writable by subscribers (seals 0x%x)", seals);
    return HMS_DATA_LOSS;
  }
  uint64_t max_total = HMS__TOPIC_HEADER_BYTES + (uint64_t)HMS_TOPIC_MAX_CAPACITY * HMS__TOPIC_ENTRY_BYTES +
                       (uint64_t)HMS_RING_MAX_BYTES;
  if (fstat(fds[0], &st) != 0 || (uint64_t)st.st_size != w->ring_bytes || w->ring_bytes < HMS__TOPIC_HEADER_BYTES ||
      w->ring_bytes > max_total) {
    snprintf(why, cap, "its ring size %llu does not match the memfd (%lld bytes)", (unsigned long long)w->ring_bytes,
             (long long)st.st_size);
    return HMS_DATA_LOSS;
  }
  void *map = mmap(NULL, w->ring_bytes, PROT_READ, MAP_SHARED, fds[0], 0);
  if (map == MAP_FAILED) {
    snprintf(why, cap, "mapping its ring failed: %s", strerror(errno));
    return HMS_RESOURCE_EXHAUSTED;
  }
  c->map = map;
  c->map_len = w->ring_bytes;
  hms__topic_hdr_t h;
  memcpy(&h, map, sizeof h); /* copied out, then validated: the publisher may rewrite it any time */
  h.topic[sizeof h.topic - 1] = 0;
  uint64_t index_bytes = (uint64_t)h.slots * HMS__TOPIC_ENTRY_BYTES;
  if (h.magic != HMS__TOPIC_MAGIC || h.layout != HMS__TOPIC_LAYOUT || h.header_bytes != HMS__TOPIC_HEADER_BYTES ||
      !hms__is_pow2(h.slots) || h.slots < 2 || h.slots > HMS_TOPIC_MAX_CAPACITY || !hms__is_pow2(h.data_bytes) ||
      h.data_bytes < HMS_RING_MIN_BYTES || h.data_bytes > HMS_RING_MAX_BYTES ||
      h.index_offset != HMS__TOPIC_HEADER_BYTES || h.data_offset != HMS__TOPIC_HEADER_BYTES + index_bytes ||
      h.total_bytes != h.data_offset + h.data_bytes || h.total_bytes != w->ring_bytes ||
      h.max_payload > h.data_bytes / 4) {
    snprintf(why, cap, "its ring header is corrupt (magic 0x%llx, slots %u, data %llu, total %llu of %llu)",
             (unsigned long long)h.magic, h.slots, (unsigned long long)h.data_bytes,
             (unsigned long long)h.total_bytes, (unsigned long long)w->ring_bytes);
    return HMS_DATA_LOSS;
  }
  if (!hms__name_valid(h.topic) || strcmp(h.topic, c->topic) != 0) {
    snprintf(why, cap, "its ring is for topic '%.64s', not '%s'", h.topic, c->topic);
    return HMS_DATA_LOSS;
  }
  c->ctl = (hms__topic_ctl_t *)(c->map + HMS__TOPIC_CTL_OFFSET);
  c->index = (hms__topic_entry_t *)(c->map + HMS__TOPIC_HEADER_BYTES);
  c->data = c->map + h.data_offset;
  c->slots = h.slots;
  c->flags = h.flags;
  c->data_bytes = h.data_bytes;
  c->max_payload = h.max_payload;
  c->publisher_id = h.publisher_id;
  /* The subscriber page: ours to write, so it must not be shrinkable under us either. */
  seals = fcntl(fds[1], F_GET_SEALS);
  if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW) ||
      fstat(fds[1], &st) != 0 || (uint64_t)st.st_size != HMS__SUBPAGE_BYTES || w->subpage_bytes != HMS__SUBPAGE_BYTES) {
    snprintf(why, cap, "its subscriber page is not a sealed memfd of %d bytes", HMS__SUBPAGE_BYTES);
    return HMS_DATA_LOSS;
  }
  void *pm = mmap(NULL, HMS__SUBPAGE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
  if (pm == MAP_FAILED) {
    snprintf(why, cap, "mapping its subscriber page failed: %s", strerror(errno));
    return HMS_DATA_LOSS;
  }
  c->page = pm;
  uint64_t pmagic;
  memcpy(&pmagic, pm, sizeof pmagic);
  if (pmagic != HMS__SUBPAGE_MAGIC) {
    snprintf(why, cap, "its subscriber page has a bad magic number");
    return HMS_DATA_LOSS;
  }
  /* The bell: must be an eventfd (a pipe could block us, a file would be appended to). */
  int fl = fcntl(fds[2], F_GETFL);
  if (!hms__fd_is_eventfd(fds[2]) || fl < 0 || fcntl(fds[2], F_SETFL, fl | O_NONBLOCK) != 0) {
    snprintf(why, cap, "its doorbell is not an eventfd");
    return HMS_DATA_LOSS;
  }
  /* Where to start: only messages published after hms_subscribe() began. A ring created after that
   * is read from its first message; an older one from its newest message back to the first one
   * published after we began (messages carry their publish time). */
  uint64_t tail = atomic_load_explicit(&c->ctl->tail_seq, memory_order_acquire);
  uint64_t head = atomic_load_explicit(&c->ctl->head_seq, memory_order_acquire); /* after the tail: see read */
  if (head >= HMS__TOPIC_SEQ_LIMIT || tail == 0 || tail > head + 1) {
    snprintf(why, cap, "its ring counters are corrupt (head %llu, tail %llu)", (unsigned long long)head,
             (unsigned long long)tail);
    return HMS_DATA_LOSS;
  }
  uint64_t start;
  if (h.created_ns >= sub->start_ns) {
    start = 1;
  } else {
    start = head + 1;
    while (start > tail && head + 1 - start < c->slots) {
      hms__topic_entry_t *e = &c->index[(start - 1) & (c->slots - 1)];
      uint64_t es = atomic_load_explicit(&e->seq, memory_order_acquire);
      int64_t pns;
      memcpy(&pns, (const uint8_t *)e + offsetof(hms__topic_entry_t, publish_ns), sizeof pns);
      if (es != start - 1 || pns < sub->start_ns) break;
      start--;
    }
  }
  c->cursor = start;
  c->last_head = head;
  hms__tconn_set_cursor(c);
  return HMS_OK;
}

/* Connects to one publisher; on success adds it to the subscription. */
static hms_status_t hms__sub_connect(hms_subscription_t *sub, const char *key, const hms__tmeta_t *m,
                                     hms_error_t *err) {
  hms__tconn_t *c = calloc(1, sizeof *c);
  if (!c) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
  c->sock = c->bell = -1;
  hms__strlcpy(c->key, key, sizeof c->key);
  hms__strlcpy(c->topic, m->topic, sizeof c->topic);
  c->topic_len = strlen(c->topic);
  c->starttime = m->starttime;
  c->pid = m->pid;
  hms_status_t st = HMS_OK;
  char why[200] = "";
  int fds[3] = {-1, -1, -1}, nfds = 0;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", sub->dir, m->sock);
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  c->sock = fd;
  if (fd < 0) {
    st = hms__fail(err, HMS_RESOURCE_EXHAUSTED, errno, "socket() failed: %s", strerror(errno));
    goto out;
  }
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    st = hms__fail(err, HMS_UNAVAILABLE, errno, "cannot connect to the publisher of '%s' (pid %d): %s", m->topic,
                   (int)m->pid, strerror(errno));
    goto out;
  }
  struct ucred cred;
  socklen_t cl = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 || cred.uid != geteuid()) {
    st = hms__fail(err, HMS_PERMISSION_DENIED, 0,
                   "the publisher socket of '%s' belongs to another user (uid %u); ignoring it", m->topic,
                   (unsigned)cred.uid);
    goto out;
  }
  c->pid = cred.pid; /* the kernel's word, not the metadata's */
  hms__topic_hello_t hello;
  memset(&hello, 0, sizeof hello);
  hello.magic = HMS__TOPIC_HELLO_MAGIC;
  hello.abi = HMS_FFI_ABI_VERSION;
  hello.proto = HMS__TOPIC_PROTO;
  hms__strlcpy(hello.topic, m->topic, sizeof hello.topic);
  hms__strlcpy(hello.node, sub->node_name, sizeof hello.node);
  if (hms__send_fds(fd, &hello, sizeof hello, NULL, 0) != 0) {
    st = hms__fail(err, HMS_UNAVAILABLE, errno, "sending the handshake to the publisher of '%s' failed: %s",
                   m->topic, strerror(errno));
    goto out;
  }
  hms__topic_welcome_t w;
  int64_t deadline = hms__now_ns() + sub->handshake_ns;
  for (;;) {
    int64_t left = deadline - hms__now_ns();
    if (left <= 0) {
      st = hms__fail(err, HMS_UNAVAILABLE, ETIMEDOUT, "the publisher of '%s' (pid %d) did not answer the handshake",
                     m->topic, (int)c->pid);
      goto out;
    }
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int pr = poll(&pf, 1, (int)((left + 999999) / 1000000));
    if (pr <= 0) continue;
    ssize_t n = hms__recv_fds(fd, &w, sizeof w, fds, 3, &nfds);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n == 0 || (n < 0 && errno != EMSGSIZE)) {
      st = hms__fail(err, HMS_UNAVAILABLE, n < 0 ? errno : 0,
                     "the publisher of '%s' (pid %d) closed the connection during the handshake", m->topic,
                     (int)c->pid);
      goto out;
    }
    if (n != (ssize_t)sizeof w || w.magic != HMS__TOPIC_WELCOME_MAGIC) {
      st = hms__fail(err, HMS_DATA_LOSS, 0, "the publisher of '%s' (pid %d) answered the handshake with a "
                     "malformed message", m->topic, (int)c->pid);
      goto out;
    }
    break;
  }
  w.message[sizeof w.message - 1] = 0;
  if (w.status != HMS_OK) {
    /* Only refusals that make sense are passed on; anything else is a publisher out of protocol. */
    if (w.status == HMS_RESOURCE_EXHAUSTED || w.status == HMS_FAILED_PRECONDITION ||
        w.status == HMS_PERMISSION_DENIED)
      st = hms__fail_remote(err, w.status, w.message, strlen(w.message));
    else
      st = hms__fail(err, HMS_DATA_LOSS, 0, "the publisher of '%s' (pid %d) refused us with status %d: %.120s",
                     m->topic, (int)c->pid, (int)w.status, w.message);
    goto out;
  }
  if (w.abi != HMS_FFI_ABI_VERSION || w.proto != HMS__TOPIC_PROTO) {
    st = hms__fail(err, HMS_FAILED_PRECONDITION, 0, "the publisher of '%s' speaks ABI/protocol %u/%u, we %u/%u",
                   m->topic, w.abi, w.proto, HMS_FFI_ABI_VERSION, HMS__TOPIC_PROTO);
    goto out;
  }
  if (nfds != 3) {
    st = hms__fail(err, HMS_DATA_LOSS, 0, "the publisher of '%s' (pid %d) sent %d descriptors instead of 3",
                   m->topic, (int)c->pid, nfds);
    goto out;
  }
  st = hms__tconn_attach(sub, c, &w, fds, why, sizeof why);
  if (st) {
    hms__fail(err, st, 0, "the publisher of '%s' (pid %d) is unusable: %s", m->topic, (int)c->pid, why);
    goto out;
  }
  c->bell = fds[2];
  fds[2] = -1;
  c->sock_tag.kind = HMS__SEV_SOCK;
  c->sock_tag.ptr = c;
  c->bell_tag.kind = HMS__SEV_BELL;
  c->bell_tag.ptr = c;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = &c->sock_tag};
  struct epoll_event ev2 = {.events = EPOLLIN, .data.ptr = &c->bell_tag};
  if (epoll_ctl(sub->epfd, EPOLL_CTL_ADD, fd, &ev) != 0 || epoll_ctl(sub->epfd, EPOLL_CTL_ADD, c->bell, &ev2) != 0) {
    st = hms__fail(err, HMS_RESOURCE_EXHAUSTED, errno, "epoll_ctl failed: %s", strerror(errno));
    goto out;
  }
  if (sub->nconns == sub->conns_cap) {
    size_t ncap = sub->conns_cap ? sub->conns_cap * 2 : 8;
    hms__tconn_t **nv = realloc(sub->conns, ncap * sizeof *nv);
    if (!nv) {
      st = hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
      goto out;
    }
    sub->conns = nv;
    sub->conns_cap = ncap;
  }
  sub->conns[sub->nconns++] = c;
  atomic_store_explicit(&sub->nconns_pub, (uint32_t)sub->nconns, memory_order_relaxed);
  sub->had_publishers = true;
  close(fds[0]); /* the mapping keeps the ring alive */
  close(fds[1]);
  return HMS_OK;
out:
  for (int i = 0; i < 3; i++)
    if (fds[i] >= 0) close(fds[i]);
  hms__tconn_free(sub, c);
  return st;
}

/* Looks for matching publishers we are not connected to yet; removes dead processes' entries. */
static void hms__sub_rescan(hms_subscription_t *sub) {
  sub->rescan = false;
  sub->next_rescan = hms__now_ns() + HMS__TOPIC_RESCAN_NS;
  DIR *d = opendir(sub->dir);
  if (!d) return;
  struct dirent *e;
  char path[HMS__PATH_MAX];
  while ((e = readdir(d)) != NULL) {
    const char *name = e->d_name;
    if (name[0] == '.') continue;
    if (hms__ends_with(name, ".topic")) {
      char meta[HMS__PATH_MAX];
      snprintf(meta, sizeof meta, "%s/%.*s.tmeta", sub->dir, (int)(strlen(name) - 6), name);
      if (access(meta, F_OK) != 0) hms__tsock_cleanup(sub->dir, name);
      continue;
    }
    if (!hms__ends_with(name, ".tmeta") || strlen(name) >= 256) continue;
    snprintf(path, sizeof path, "%s/%s", sub->dir, name);
    hms__tmeta_t m;
    if (!hms__tmeta_read(path, &m)) continue;
    if (!hms__registry_alive(m.pid, m.starttime)) {
      hms__tmeta_cleanup(sub->dir, name, &m);
      continue;
    }
    if (!hms__topic_matches(sub->pattern, sub->exact, m.topic) || hms__sub_known(sub, name, m.starttime)) continue;
    hms_error_t cerr;
    hms_status_t st = hms__sub_connect(sub, name, &m, &cerr);
    if (st == HMS_OK) continue;
    hms__sub_ignore(sub, name, m.starttime);
    /* A publisher that is closing or dying is not news; one that refused us or broke the protocol is. */
    if (st != HMS_UNAVAILABLE) hms__sub_error(sub, st, cerr.message);
  }
  closedir(d);
}

HMS_API hms_status_t hms_subscribe(hms_node_t *node, const char *pattern, const hms_subscribe_options_t *opts,
                                   hms_subscription_t **out, hms_error_t *err) {
  if (!out) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "out is NULL");
  *out = NULL;
  if (!node || !pattern) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "node and pattern must not be NULL");
  hms_subscribe_options_t defaults;
  if (!opts) {
    hms_subscribe_options_init(&defaults);
    opts = &defaults;
  }
  if (opts->version < 1 || opts->version > HMS_SUBSCRIBE_OPTIONS_VERSION)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "hms_subscribe_options_t.version is %u; this library knows 1..%u (call "
                     "hms_subscribe_options_init)",
                     opts->version, HMS_SUBSCRIBE_OPTIONS_VERSION);
  bool exact = false;
  if (!hms__topic_pattern_valid(pattern, &exact))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "topic pattern '%.64s' is invalid: use a topic name of [A-Za-z0-9_.-] (1-%d characters, not "
                     "starting with '.' or '-') or a glob with * ? [...] such as \"order.*\"",
                     pattern, HMS_NAME_MAX);
  if (opts->flags & ~(uint32_t)HMS_SUBSCRIBE_KEEP_WAITING)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "unknown subscribe flags 0x%x", opts->flags);
  hms_status_t st = hms__runtime_dir_ensure(node->runtime_dir, err);
  if (st) return st;
  hms_subscription_t *sub = calloc(1, sizeof *sub);
  if (!sub) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
  pthread_mutex_init(&sub->mu, NULL);
  hms__strlcpy(sub->node_name, node->name, sizeof sub->node_name);
  hms__strlcpy(sub->pattern, pattern, sizeof sub->pattern);
  sub->exact = exact;
  sub->flags = opts->flags;
  hms__strlcpy(sub->dir, node->runtime_dir, sizeof sub->dir);
  sub->handshake_ns = opts->handshake_timeout_ns < 0 ? HMS__TOPIC_HANDSHAKE_NS : opts->handshake_timeout_ns;
  hms__spin_init(&sub->spin, opts->spin_ns < 0 ? node->spin_ns : opts->spin_ns);
  sub->epfd = epoll_create1(EPOLL_CLOEXEC);
  sub->intr_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (sub->epfd < 0 || sub->intr_fd < 0) {
    int e = errno;
    if (sub->epfd >= 0) close(sub->epfd);
    if (sub->intr_fd >= 0) close(sub->intr_fd);
    pthread_mutex_destroy(&sub->mu);
    free(sub);
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, e, "epoll/eventfd creation failed: %s", strerror(e));
  }
  sub->intr_tag.kind = HMS__SEV_INTR;
  sub->intr_tag.ptr = sub;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &sub->intr_tag};
  epoll_ctl(sub->epfd, EPOLL_CTL_ADD, sub->intr_fd, &ev);
  /* Watch before the first scan, so a publisher appearing in between is not missed. Without inotify
   * (limits reached), recv rescans every 100 ms instead. */
  sub->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (sub->ifd >= 0 && inotify_add_watch(sub->ifd, sub->dir, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR) < 0) {
    close(sub->ifd);
    sub->ifd = -1;
  }
  if (sub->ifd >= 0) {
    sub->inotify_tag.kind = HMS__SEV_INOTIFY;
    sub->inotify_tag.ptr = sub;
    ev.data.ptr = &sub->inotify_tag;
    epoll_ctl(sub->epfd, EPOLL_CTL_ADD, sub->ifd, &ev);
  }
  sub->start_ns = hms__now_ns();
  hms__sub_rescan(sub);
  *out = sub;
  hms__ok(err);
  return HMS_OK;
}

HMS_API void hms_subscription_close(hms_subscription_t *sub) {
  if (!sub) return;
  for (size_t i = 0; i < sub->nconns; i++) hms__tconn_free(sub, sub->conns[i]);
  free(sub->conns);
  free(sub->ignored);
  if (sub->ifd >= 0) close(sub->ifd);
  close(sub->intr_fd);
  close(sub->epfd);
  pthread_mutex_destroy(&sub->mu);
  free(sub);
}

static void hms__payload_free(hms_payload_t *p) { free(p->private_data); }

enum { HMS__TR_EMPTY = 0, HMS__TR_GOT = 1, HMS__TR_CORRUPT = 2, HMS__TR_NOMEM = 3, HMS__TR_NOSPACE = 4 };

/* Where received messages go: one hms_message_t with a malloc'd payload, or (batch) infos[] plus
 * topic names and payloads copied back to back into the caller's buffer. */
typedef struct {
  hms_message_t *msg;
  hms_message_info_t *infos;
  size_t max, count;
  char *buf;
  size_t cap, used, need;
} hms__sink_t;

static inline size_t hms__align8(size_t v) { return (v + 7) & ~(size_t)7; }

static void hms__tconn_skip(hms_subscription_t *sub, hms__tconn_t *c, uint64_t to) {
  uint64_t n = to - c->cursor;
  c->pending_missed += n;
  atomic_fetch_add_explicit(&sub->missed_total, n, memory_order_relaxed);
  c->cursor = to;
  hms__tconn_advance(sub, c);
}

/* Reads the next message of one publisher. Everything read from the ring is hostile input. */
static int hms__tconn_read(hms_subscription_t *sub, hms__tconn_t *c, hms__sink_t *sink, char *why, size_t cap) {
  const uint64_t smask = c->slots - 1, dmask = c->data_bytes - 1;
  for (int tries = 0; tries < HMS__TOPIC_READ_RETRIES; tries++) {
    uint64_t h = atomic_load_explicit(&c->ctl->head_seq, memory_order_acquire);
    if (HMS__UNLIKELY(h < c->last_head || h >= HMS__TOPIC_SEQ_LIMIT)) {
      snprintf(why, cap, "its ring head moved from %llu to %llu", (unsigned long long)c->last_head,
               (unsigned long long)h);
      return HMS__TR_CORRUPT;
    }
    c->last_head = h;
    uint64_t s = c->cursor;
    if (s > h) return HMS__TR_EMPTY;
    uint64_t t = atomic_load_explicit(&c->ctl->tail_seq, memory_order_acquire);
    if (HMS__UNLIKELY(t == 0 || t > h + 1)) {
      /* The publisher may have published (and raised the tail) since we read the head: judge by a
       * head read after the tail. The tail is raised before the head moves, so honestly t <= h + 1. */
      uint64_t h2 = atomic_load_explicit(&c->ctl->head_seq, memory_order_acquire);
      if (t == 0 || t > h2 + 1 || h2 >= HMS__TOPIC_SEQ_LIMIT) {
        snprintf(why, cap, "its ring tail %llu is beyond its head %llu", (unsigned long long)t,
                 (unsigned long long)h2);
        return HMS__TR_CORRUPT;
      }
      c->last_head = h = h2;
    }
    if (s < t) { /* lapped: the messages in between were overwritten before we got to them */
      hms__tconn_skip(sub, c, t);
      continue;
    }
    hms__topic_entry_t *e = &c->index[s & smask];
    uint64_t es = atomic_load_explicit(&e->seq, memory_order_acquire);
    hms__topic_entry_t ec; /* the rest of the entry, copied out */
    memcpy((uint8_t *)&ec + sizeof ec.seq, (const uint8_t *)e + sizeof ec.seq, sizeof ec - sizeof ec.seq);
    uint64_t off = ec.data_pos & dmask;
    if (HMS__UNLIKELY(es != s || ec.len > c->max_payload || off + ec.len > c->data_bytes)) {
      atomic_thread_fence(memory_order_acquire);
      uint64_t t2 = atomic_load_explicit(&c->ctl->tail_seq, memory_order_relaxed);
      if (t2 > s) {
        uint64_t h2 = atomic_load_explicit(&c->ctl->head_seq, memory_order_acquire);
        if (t2 > h2 + 1 || h2 >= HMS__TOPIC_SEQ_LIMIT) {
          snprintf(why, cap, "its ring tail %llu is beyond its head %llu", (unsigned long long)t2,
                   (unsigned long long)h2);
          return HMS__TR_CORRUPT;
        }
        hms__tconn_skip(sub, c, t2); /* overwritten while we looked */
        continue;
      }
      if (es != s)
        snprintf(why, cap, "index entry of message %llu holds message %llu", (unsigned long long)s,
                 (unsigned long long)es);
      else
        snprintf(why, cap, "message %llu claims %u bytes at offset %llu (max message %llu, ring %llu)",
                 (unsigned long long)s, ec.len, (unsigned long long)off, (unsigned long long)c->max_payload,
                 (unsigned long long)c->data_bytes);
      return HMS__TR_CORRUPT;
    }
    uint8_t *buf = NULL;
    size_t tlen = c->topic_len, poff = 0;
    if (sink->msg) {
      if (ec.len) {
        buf = malloc(ec.len);
        if (!buf) return HMS__TR_NOMEM;
      }
    } else {
      poff = hms__align8(sink->used + tlen);
      if (poff + ec.len > sink->cap) { /* consume nothing: the caller comes back with more room */
        sink->need = hms__align8(tlen) + ec.len;
        return HMS__TR_NOSPACE;
      }
      buf = (uint8_t *)sink->buf + poff;
    }
    if (ec.len) memcpy(buf, c->data + off, ec.len);
    atomic_thread_fence(memory_order_acquire); /* the copy happened before we look at the tail again */
    uint64_t t2 = atomic_load_explicit(&c->ctl->tail_seq, memory_order_relaxed);
    if (HMS__UNLIKELY(t2 > s)) { /* overwritten while we copied: counted as missed, never delivered torn */
      if (sink->msg) free(buf);
      uint64_t h2 = atomic_load_explicit(&c->ctl->head_seq, memory_order_acquire);
      if (t2 > h2 + 1 || h2 >= HMS__TOPIC_SEQ_LIMIT) {
        snprintf(why, cap, "its ring tail %llu is beyond its head %llu", (unsigned long long)t2,
                 (unsigned long long)h2);
        return HMS__TR_CORRUPT;
      }
      hms__tconn_skip(sub, c, t2);
      continue;
    }
    if (sink->msg) {
      hms_message_t *msg = sink->msg;
      memcpy(msg->topic, c->topic, tlen + 1);
      msg->publisher_pid = c->pid;
      msg->flags = ec.flags;
      msg->publisher_id = c->publisher_id;
      msg->seq = s;
      msg->missed = c->pending_missed;
      msg->publish_time_ns = ec.publish_ns;
      msg->payload.data = buf;
      msg->payload.len = ec.len;
      msg->payload.content_type = ec.content_type;
      msg->payload.flags = 0;
      msg->payload.release = buf ? hms__payload_free : NULL;
      msg->payload.private_data = buf;
    } else {
      hms_message_info_t *in = &sink->infos[sink->count++];
      memcpy(sink->buf + sink->used, c->topic, tlen);
      in->seq = s;
      in->missed = c->pending_missed;
      in->publisher_id = c->publisher_id;
      in->publish_time_ns = ec.publish_ns;
      in->payload_offset = poff;
      in->payload_len = ec.len;
      in->topic_offset = sink->used;
      in->topic_len = (uint32_t)tlen;
      in->content_type = ec.content_type;
      in->flags = ec.flags;
      in->publisher_pid = c->pid;
      in->reserved = 0;
      sink->used = hms__align8(poff + ec.len);
    }
    c->pending_missed = 0;
    c->cursor = s + 1;
    hms__tconn_advance(sub, c);
    return HMS__TR_GOT;
  }
  return HMS__TR_EMPTY; /* lapped again and again: try later */
}

/* One pass over every publisher, starting after the one that delivered last (fairness). */
static int hms__sub_read_any(hms_subscription_t *sub, hms__sink_t *sink) {
  size_t n = sub->nconns;
  for (size_t k = 0; k < n; k++) {
    size_t i = (sub->rr + k) % n;
    hms__tconn_t *c = sub->conns[i];
    bool was_gone = c->gone; /* read before the ring: whatever it published before hanging up is visible */
    char why[200];
    int r = hms__tconn_read(sub, c, sink, why, sizeof why);
    if (r == HMS__TR_GOT) {
      sub->rr = i + 1;
      return r;
    }
    if (r == HMS__TR_NOMEM || r == HMS__TR_NOSPACE) {
      sub->rr = i; /* start with this publisher next time */
      return r;
    }
    if (r == HMS__TR_CORRUPT) {
      hms__sub_corrupt(sub, i, why);
      return r;
    }
    if (was_gone) c->drained = true;
  }
  return HMS__TR_EMPTY;
}

static bool hms__sub_has_work(hms_subscription_t *sub) {
  for (size_t i = 0; i < sub->nconns; i++) {
    hms__tconn_t *c = sub->conns[i];
    if (c->gone || atomic_load_explicit(&c->ctl->head_seq, memory_order_acquire) >= c->cursor) return true;
  }
  return false;
}

static void hms__sub_arm(hms_subscription_t *sub, uint32_t v) {
  for (size_t i = 0; i < sub->nconns; i++)
    atomic_store_explicit(&sub->conns[i]->page->sub_sleeping, v, memory_order_relaxed);
  /* Pairs with the publisher's fence between storing head_seq and reading our flag (Dekker): either
   * it sees the flag and rings, or our re-check sees its message. */
  atomic_thread_fence(memory_order_seq_cst);
}

static void hms__sub_events(hms_subscription_t *sub, const struct epoll_event *evs, int n) {
  for (int i = 0; i < n; i++) {
    hms__ep_tag_t *tag = evs[i].data.ptr;
    uint64_t v;
    if (tag->kind == HMS__SEV_INTR) {
      ssize_t r = read(sub->intr_fd, &v, sizeof v);
      (void)r;
    } else if (tag->kind == HMS__SEV_INOTIFY) {
      _Alignas(struct inotify_event) char buf[4096];
      for (;;) {
        ssize_t r = read(sub->ifd, buf, sizeof buf);
        if (r <= 0) break;
        for (ssize_t off = 0; off + (ssize_t)sizeof(struct inotify_event) <= r;) {
          struct inotify_event *ie = (struct inotify_event *)(buf + off);
          if ((ie->mask & IN_Q_OVERFLOW) || (ie->len && hms__ends_with(ie->name, ".tmeta"))) sub->rescan = true;
          off += (ssize_t)sizeof(struct inotify_event) + ie->len;
        }
      }
    } else if (tag->kind == HMS__SEV_SOCK) {
      hms__tconn_t *c = tag->ptr;
      if (!c->gone) {
        /* The publisher never speaks after the welcome: data, EOF or an error all mean it is gone. */
        c->gone = true;
        epoll_ctl(sub->epfd, EPOLL_CTL_DEL, c->sock, NULL);
      }
    } else if (tag->kind == HMS__SEV_BELL) {
      hms__tconn_t *c = tag->ptr;
      ssize_t r = read(c->bell, &v, sizeof v);
      (void)r;
    }
  }
}

static void hms__sub_pump(hms_subscription_t *sub) {
  struct epoll_event evs[64];
  int n = epoll_wait(sub->epfd, evs, 64, 0);
  if (n > 0) hms__sub_events(sub, evs, n);
}

static void hms__sub_drop_drained(hms_subscription_t *sub) {
  for (size_t i = 0; i < sub->nconns;) {
    if (sub->conns[i]->drained)
      hms__sub_remove(sub, i);
    else
      i++;
  }
}

static hms_status_t hms__sub_recv(hms_subscription_t *sub, hms__sink_t *sink, int64_t timeout_ns,
                                  hms_error_t *err) {
  int64_t deadline = hms__deadline_from_timeout(timeout_ns);
  int64_t spin_start = -1;
  bool checked_empty = false;
  int final_looks = 0;
  hms__sub_release(sub); /* the caller came back: whatever the last batch took is taken */
  for (;;) {
    if (atomic_exchange_explicit(&sub->interrupted, 0, memory_order_acq_rel)) {
      hms__sub_pump(sub);
      return hms__fail(err, HMS_CANCELLED, 0, "receive on '%s' was interrupted", sub->pattern);
    }
    if (sub->nerrs) {
      hms__terr_t e = sub->errs[0];
      memmove(&sub->errs[0], &sub->errs[1], (sub->nerrs - 1) * sizeof sub->errs[0]);
      sub->nerrs--;
      return hms__fail(err, e.code, 0, "%s", e.message);
    }
    if (sub->rescan || (sub->ifd < 0 && hms__now_ns() >= sub->next_rescan)) {
      hms__sub_rescan(sub);
      if (sub->nerrs) continue;
    }
    int r = hms__sub_read_any(sub, sink);
    if (r != HMS__TR_GOT) hms__sub_release(sub); /* skips held in this pass: never wait or leave with them */
    if (r == HMS__TR_GOT) {
      if (spin_start >= 0) hms__spin_feedback(&sub->spin, true);
      /* A batch takes whatever else is already there, without waiting. */
      while (!sink->msg && sink->count < sink->max && hms__sub_read_any(sub, sink) == HMS__TR_GOT) {
      }
      hms__ok(err);
      return HMS_OK;
    }
    if (r == HMS__TR_NOSPACE)
      return hms__fail(err, HMS_OUT_OF_RANGE, 0,
                       "the next message of '%s' needs %zu bytes of buffer, more than the %zu given", sub->pattern,
                       sink->need, sink->cap);
    if (r == HMS__TR_NOMEM)
      return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory copying a message of '%s'", sub->pattern);
    if (r == HMS__TR_CORRUPT) continue; /* reported at the top of the loop */
    hms__sub_drop_drained(sub);
    if (sub->nconns == 0 && sub->exact && sub->had_publishers && !(sub->flags & HMS_SUBSCRIBE_KEEP_WAITING)) {
      if (!checked_empty) { /* a replacement may have appeared: look once before giving up */
        checked_empty = true;
        hms__sub_pump(sub);
        if (sub->rescan || sub->ifd < 0) hms__sub_rescan(sub);
        continue;
      }
      return hms__fail(err, HMS_UNAVAILABLE, 0,
                       "the publisher of '%s' (pid %d) went away; everything it published was delivered",
                       sub->pattern, (int)sub->last_gone_pid);
    }
    int64_t now = hms__now_ns();
    if (now >= deadline) {
      /* Armed: a publisher rings our bells (and so hms_subscription_fd()) at its next message. */
      hms__sub_pump(sub);
      hms__sub_arm(sub, 1);
      if (final_looks < 4 && (hms__sub_has_work(sub) || sub->rescan)) {
        hms__sub_arm(sub, 0); /* do the work found meanwhile (a message published before we armed
                               * would not ring the bell an event loop waits on) */
        final_looks++;
        continue;
      }
      return hms__fail(err, HMS_DEADLINE_EXCEEDED, 0, "no message on '%s' within the timeout", sub->pattern);
    }
    if (sub->spin.limit_ns > 0) {
      if (spin_start < 0) spin_start = now;
      if (now - spin_start < sub->spin.limit_ns) {
        for (int k = 0; k < 8; k++) hms__cpu_relax();
        continue;
      }
    }
    /* Sleep: say so on every ring's page, look once more (a publish may have raced the flag), then wait
     * for a bell, a hang-up, a new publisher, an interrupt or the deadline. */
    hms__sub_arm(sub, 1);
    if (hms__sub_has_work(sub) || atomic_load_explicit(&sub->interrupted, memory_order_acquire)) {
      hms__sub_arm(sub, 0);
      continue;
    }
    int64_t left = deadline - now;
    if (sub->ifd < 0 && sub->next_rescan - now < left) left = sub->next_rescan - now;
    int ms = left >= (int64_t)INT32_MAX * 1000000LL ? -1 : (int)((left + 999999) / 1000000);
    struct epoll_event evs[64];
    int n = epoll_wait(sub->epfd, evs, 64, ms);
    int e = errno;
    if (n > 0) hms__sub_events(sub, evs, n);
    hms__sub_arm(sub, 0);
    if (spin_start >= 0) {
      hms__spin_feedback(&sub->spin, false);
      spin_start = -1;
    }
    if (n < 0 && e == EINTR)
      return hms__fail(err, HMS_CANCELLED, EINTR, "receive on '%s' was interrupted by a signal", sub->pattern);
  }
}

HMS_API hms_status_t hms_subscription_recv(hms_subscription_t *sub, hms_message_t *msg, int64_t timeout_ns,
                                           hms_error_t *err) {
  if (!msg) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "msg is NULL");
  memset(msg, 0, sizeof *msg);
  if (!sub) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "subscription is NULL");
  hms__sink_t sink = {.msg = msg};
  pthread_mutex_lock(&sub->mu);
  hms_status_t st = hms__sub_recv(sub, &sink, timeout_ns, err);
  pthread_mutex_unlock(&sub->mu);
  return st;
}

HMS_API hms_status_t hms_subscription_recv_batch(hms_subscription_t *sub, hms_message_info_t *infos, size_t max,
                                                 char *buf, size_t cap, size_t *count, size_t *used,
                                                 int64_t timeout_ns, hms_error_t *err) {
  if (count) *count = 0;
  if (used) *used = 0;
  if (!sub || !infos || !count || !used || (!buf && cap) || max == 0)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "sub, infos, count and used must not be NULL, max must be > 0, buf may be NULL only when "
                     "cap is 0");
  hms__sink_t sink = {.infos = infos, .max = max, .buf = buf, .cap = cap};
  pthread_mutex_lock(&sub->mu);
  sub->holding = true; /* blocking rings: this batch's messages count as taken at the next call */
  hms_status_t st = hms__sub_recv(sub, &sink, timeout_ns, err);
  sub->holding = false;
  pthread_mutex_unlock(&sub->mu);
  *count = sink.count;
  *used = st == HMS_OUT_OF_RANGE ? sink.need : sink.used;
  return st;
}

HMS_API void hms_message_release(hms_message_t *msg) {
  if (msg) hms_payload_release(&msg->payload);
}

HMS_API void hms_subscription_interrupt(hms_subscription_t *sub) {
  if (!sub) return;
  atomic_store_explicit(&sub->interrupted, 1, memory_order_release);
  uint64_t one = 1;
  ssize_t w = write(sub->intr_fd, &one, sizeof one);
  (void)w;
}

HMS_API int hms_subscription_fd(const hms_subscription_t *sub) { return sub ? sub->epfd : -1; }
HMS_API const char *hms_subscription_pattern(const hms_subscription_t *sub) { return sub ? sub->pattern : ""; }
HMS_API uint32_t hms_subscription_publisher_count(const hms_subscription_t *sub) {
  return sub ? atomic_load_explicit(&((hms_subscription_t *)sub)->nconns_pub, memory_order_relaxed) : 0;
}
HMS_API uint64_t hms_subscription_missed(const hms_subscription_t *sub) {
  return sub ? atomic_load_explicit(&((hms_subscription_t *)sub)->missed_total, memory_order_relaxed) : 0;
}
