/* The per-connection shared-memory arena: payloads that do not fit a ring frame.
 *
 * Each side of a connection owns an arena of segments (sealed memfds it maps read-write) and maps the
 * peer's segments read-only. A frame with HMS__FRAME_F_ARENA carries a 32-byte reference (segment,
 * generation, offset, length) instead of the payload: offsets, never pointers.
 *
 * Owner side: allocation is private (first-fit over 64-byte-aligned extents per segment, a table of
 * live blocks keyed by generation), bounded by a quota of outstanding bytes. A new segment's fd is
 * sent over the connection's SOCK_SEQPACKET socket (SCM_RIGHTS) before the first frame that uses it.
 * The receiver sends RELEASE records back over the same socket and bumps a hint counter in the
 * connection memory, so the owner only reads its socket when there is something to read. A release
 * is checked against the owner's table (segment, offset, generation, state): a double or forged
 * release is ignored and counted, never trusted.
 *
 * Receiver side: segments are mapped lazily: a reference to an unknown segment makes the receiver
 * read the announcements already queued on its socket (never blocking), check the seals and size and
 * map the segment PROT_READ. Segments and mapped bytes per connection are capped. Each mapping is
 * reference-counted by the payloads handed out, so a view stays valid after the connection or the
 * peer process is gone; the mapping goes when the last view is released.
 *
 * Lifetime: the arena object is reference-counted (connection + outstanding loans + received
 * payloads). hms__arena_detach() is called by the connection when it closes: the socket is forgotten
 * (releases are dropped from then on), the hint pointers into connection memory are cleared. */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal/hms_internal.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

#define HMS__ARENA_ALIGN 64
#define HMS__ARENA_SEG_MIN (16ull << 20)
#define HMS__ARENA_SEG_ROUND (1ull << 20)
#define HMS__ARENA_MAX_PENDING 65536 /* release records kept while the peer's socket is full */

typedef struct {
  uint64_t off, len;
} hms__extent_t;

typedef struct {
  uint8_t *map;
  uint64_t size;
  hms__extent_t *free; /* sorted by offset, coalesced */
  size_t nfree, capfree;
} hms__oseg_t;

enum { HMS__BLK_EMPTY = 0, HMS__BLK_LOANED = 1, HMS__BLK_SENT = 2 };
typedef struct {
  uint32_t gen; /* 0 = empty slot */
  uint32_t seg;
  uint64_t off, len; /* len: allocated (aligned) length */
  int state;
} hms__blk_t;

/* A read-only mapping of one peer segment, shared by every payload that points into it. */
typedef struct {
  _Atomic int refs;
  uint8_t *map;
  uint64_t size;
} hms__pmap_t;

struct hms__arena_s {
  _Atomic int refs;
  pthread_mutex_t lock;
  int sock; /* the connection's socket (not ours to close); -1 once detached */
  _Atomic uint32_t *tx_hint; /* connection memory: bumped after we send releases to the peer */
  _Atomic uint32_t *rx_hint; /* connection memory: the peer bumps it after sending us releases */
  uint32_t rx_seen;
  uint64_t quota;
  /* owner side */
  hms__oseg_t segs[HMS__ARENA_MAX_SEGMENTS];
  uint32_t nsegs;
  uint64_t mapped;
  uint64_t used; /* bytes of outstanding blocks (aligned) */
  hms__blk_t *blk;
  size_t blk_cap, blk_n; /* open addressing keyed by generation, power-of-two capacity */
  uint32_t next_gen;
  uint64_t allocs_total, bad_releases;
  /* receiver side */
  hms__pmap_t *peer[HMS__ARENA_MAX_SEGMENTS];
  uint64_t peer_mapped;
  uint64_t peer_held; /* payloads handed out and not released yet */
  hms__amsg_release_t *pending;
  size_t npending, cappending;
};

/* A received payload's private_data. */
typedef struct {
  hms__arena_t *arena;
  hms__pmap_t *pmap;
  hms__amsg_release_t rel;
} hms__held_t;

hms__arena_t *hms__arena_new(int sock, _Atomic uint32_t *tx_hint, _Atomic uint32_t *rx_hint, uint64_t quota) {
  hms__arena_t *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  atomic_init(&a->refs, 1);
  pthread_mutex_init(&a->lock, NULL);
  a->sock = sock;
  a->tx_hint = tx_hint;
  a->rx_hint = rx_hint;
  a->rx_seen = rx_hint ? atomic_load(rx_hint) : 0;
  a->quota = quota ? quota : HMS_ARENA_DEFAULT_QUOTA;
  return a;
}

static void hms__pmap_unref(hms__pmap_t *p) {
  if (atomic_fetch_sub(&p->refs, 1) != 1) return;
  munmap(p->map, p->size);
  free(p);
}

static void hms__arena_unref(hms__arena_t *a) {
  if (atomic_fetch_sub(&a->refs, 1) != 1) return;
  for (uint32_t i = 0; i < a->nsegs; i++) {
    munmap(a->segs[i].map, a->segs[i].size);
    free(a->segs[i].free);
  }
  for (uint32_t i = 0; i < HMS__ARENA_MAX_SEGMENTS; i++)
    if (a->peer[i]) hms__pmap_unref(a->peer[i]);
  free(a->blk);
  free(a->pending);
  pthread_mutex_destroy(&a->lock);
  free(a);
}

void hms__arena_set_quota(hms__arena_t *a, uint64_t quota) {
  if (!a) return;
  pthread_mutex_lock(&a->lock);
  a->quota = quota ? quota : HMS_ARENA_DEFAULT_QUOTA;
  pthread_mutex_unlock(&a->lock);
}

uint64_t hms__arena_quota(hms__arena_t *a) {
  if (!a) return 0;
  pthread_mutex_lock(&a->lock);
  uint64_t q = a->quota;
  pthread_mutex_unlock(&a->lock);
  return q;
}

/* ------------------------------------------------------------------ owner: block table */
static hms__blk_t *hms__blk_find(hms__arena_t *a, uint32_t gen) {
  if (!a->blk_cap || !gen) return NULL;
  size_t mask = a->blk_cap - 1;
  for (size_t i = gen & mask;; i = (i + 1) & mask) {
    if (a->blk[i].gen == gen) return &a->blk[i];
    if (a->blk[i].gen == 0) return NULL;
  }
}

static bool hms__blk_insert(hms__arena_t *a, const hms__blk_t *b);

static bool hms__blk_grow(hms__arena_t *a) {
  size_t ncap = a->blk_cap ? a->blk_cap * 2 : 64;
  hms__blk_t *old = a->blk;
  size_t ocap = a->blk_cap;
  a->blk = calloc(ncap, sizeof *a->blk);
  if (!a->blk) {
    a->blk = old;
    return false;
  }
  a->blk_cap = ncap;
  a->blk_n = 0;
  for (size_t i = 0; i < ocap; i++)
    if (old[i].gen) hms__blk_insert(a, &old[i]);
  free(old);
  return true;
}

static bool hms__blk_insert(hms__arena_t *a, const hms__blk_t *b) {
  if ((a->blk_n + 1) * 2 > a->blk_cap && !hms__blk_grow(a)) return false;
  size_t mask = a->blk_cap - 1;
  size_t i = b->gen & mask;
  while (a->blk[i].gen) i = (i + 1) & mask;
  a->blk[i] = *b;
  a->blk_n++;
  return true;
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void hms__blk_remove(hms__arena_t *a, hms__blk_t *e) {
  size_t mask = a->blk_cap - 1;
  size_t i = (size_t)(e - a->blk);
  a->blk[i].gen = 0;
  a->blk_n--;
  for (size_t j = (i + 1) & mask; a->blk[j].gen; j = (j + 1) & mask) {
    size_t home = a->blk[j].gen & mask;
    /* Move j into the hole at i when its home is not in (i, j] (cyclically). */
    bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (!between) {
      a->blk[i] = a->blk[j];
      a->blk[j].gen = 0;
      i = j;
    }
  }
}

/* ------------------------------------------------------------------ owner: extents */
static bool hms__seg_take(hms__oseg_t *s, uint64_t len, uint64_t *off) {
  for (size_t i = 0; i < s->nfree; i++) {
    if (s->free[i].len < len) continue;
    *off = s->free[i].off;
    s->free[i].off += len;
    s->free[i].len -= len;
    if (s->free[i].len == 0) {
      memmove(&s->free[i], &s->free[i + 1], (s->nfree - i - 1) * sizeof *s->free);
      s->nfree--;
    }
    return true;
  }
  return false;
}

static bool hms__seg_give(hms__oseg_t *s, uint64_t off, uint64_t len) {
  size_t lo = 0, hi = s->nfree;
  while (lo < hi) { /* first extent starting after off */
    size_t mid = (lo + hi) / 2;
    if (s->free[mid].off < off)
      lo = mid + 1;
    else
      hi = mid;
  }
  bool left = lo > 0 && s->free[lo - 1].off + s->free[lo - 1].len == off;
  bool right = lo < s->nfree && off + len == s->free[lo].off;
  if (left && right) {
    s->free[lo - 1].len += len + s->free[lo].len;
    memmove(&s->free[lo], &s->free[lo + 1], (s->nfree - lo - 1) * sizeof *s->free);
    s->nfree--;
  } else if (left) {
    s->free[lo - 1].len += len;
  } else if (right) {
    s->free[lo].off = off;
    s->free[lo].len += len;
  } else {
    if (s->nfree == s->capfree) {
      size_t nc = s->capfree ? s->capfree * 2 : 16;
      hms__extent_t *n = realloc(s->free, nc * sizeof *n);
      if (!n) return false; /* the extent is lost until the arena goes; never corrupts */
      s->free = n;
      s->capfree = nc;
    }
    memmove(&s->free[lo + 1], &s->free[lo], (s->nfree - lo) * sizeof *s->free);
    s->free[lo].off = off;
    s->free[lo].len = len;
    s->nfree++;
  }
  return true;
}

static void hms__blk_free_locked(hms__arena_t *a, hms__blk_t *b) {
  hms__seg_give(&a->segs[b->seg], b->off, b->len);
  a->used -= b->len;
  hms__blk_remove(a, b);
}

/* ------------------------------------------------------------------ socket messages */
static void hms__arena_flush_locked(hms__arena_t *a) {
  if (a->sock < 0) {
    a->npending = 0;
    return;
  }
  bool sent = false;
  while (a->npending) {
    size_t n = a->npending < HMS__AMSG_MAX_RELEASES ? a->npending : HMS__AMSG_MAX_RELEASES;
    uint8_t buf[sizeof(hms__amsg_hdr_t) + HMS__AMSG_MAX_RELEASES * sizeof(hms__amsg_release_t)];
    hms__amsg_hdr_t h = {.magic = HMS__AMSG_MAGIC, .kind = HMS__AMSG_RELEASE, .count = (uint32_t)n};
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, a->pending, n * sizeof *a->pending);
    if (hms__send_fds(a->sock, buf, sizeof h + n * sizeof *a->pending, NULL, 0) != 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) a->npending = 0; /* peer gone */
      break; /* full: kept for the next release or drain */
    }
    memmove(a->pending, a->pending + n, (a->npending - n) * sizeof *a->pending);
    a->npending -= n;
    sent = true;
  }
  if (sent && a->tx_hint) atomic_fetch_add_explicit(a->tx_hint, 1, memory_order_release);
}

static void hms__arena_queue_release_locked(hms__arena_t *a, const hms__amsg_release_t *r) {
  if (a->sock < 0) return;
  if (a->npending == a->cappending) {
    size_t nc = a->cappending ? a->cappending * 2 : 64;
    if (nc > HMS__ARENA_MAX_PENDING) nc = HMS__ARENA_MAX_PENDING;
    if (a->npending < nc) {
      hms__amsg_release_t *n = realloc(a->pending, nc * sizeof *n);
      if (n) {
        a->pending = n;
        a->cappending = nc;
      }
    }
  }
  if (a->npending < a->cappending) a->pending[a->npending++] = *r;
  /* else: the peer stopped reading its socket for a very long time; its blocks stay held until the
   * connection closes, which frees them all */
}

static void hms__arena_on_release_locked(hms__arena_t *a, const hms__amsg_release_t *r) {
  hms__blk_t *b = hms__blk_find(a, r->generation);
  if (!b || b->seg != r->segment || b->off != r->offset || b->state != HMS__BLK_SENT) {
    a->bad_releases++; /* double, forged or early: ignored */
    return;
  }
  hms__blk_free_locked(a, b);
}

/* Maps an announced peer segment after checking what the kernel says about it. */
static int hms__arena_on_segment_locked(hms__arena_t *a, const hms__amsg_segment_t *s, int fd, char *why,
                                        size_t why_cap) {
  if (fd < 0) {
    snprintf(why, why_cap, "peer announced arena segment %u without a descriptor", s->segment);
    return -1;
  }
  int rc = -1;
  struct stat st;
  int seals = fcntl(fd, F_GET_SEALS);
  if (s->segment >= HMS__ARENA_MAX_SEGMENTS || a->peer[s->segment]) {
    snprintf(why, why_cap, "peer announced arena segment %u twice or beyond the limit of %d", s->segment,
             HMS__ARENA_MAX_SEGMENTS);
  } else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != s->size || s->size == 0) {
    snprintf(why, why_cap, "peer's arena segment %u does not have its announced size %llu", s->segment,
             (unsigned long long)s->size);
  } else if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW)) {
    snprintf(why, why_cap, "peer's arena segment %u is not sealed against resizing", s->segment);
  } else if (s->size > HMS__ARENA_MAX_MAPPED - a->peer_mapped) {
    snprintf(why, why_cap, "peer's arena segments would exceed %llu mapped bytes",
             (unsigned long long)HMS__ARENA_MAX_MAPPED);
  } else {
    hms__pmap_t *p = calloc(1, sizeof *p);
    void *m = p ? mmap(NULL, s->size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    if (m == MAP_FAILED) {
      snprintf(why, why_cap, "mapping the peer's arena segment %u (%llu bytes) failed: %s", s->segment,
               (unsigned long long)s->size, strerror(errno));
      free(p);
    } else {
      atomic_init(&p->refs, 1);
      p->map = m;
      p->size = s->size;
      a->peer[s->segment] = p;
      a->peer_mapped += s->size;
      rc = 0;
    }
  }
  close(fd);
  return rc;
}

int hms__arena_drain_locked(hms__arena_t *a, char *why, size_t why_cap) {
  if (a->rx_hint) a->rx_seen = atomic_load_explicit(a->rx_hint, memory_order_acquire);
  if (a->sock < 0) return 0;
  if (a->npending) hms__arena_flush_locked(a); /* releases that found the peer's socket full earlier */
  for (;;) {
    uint8_t buf[sizeof(hms__amsg_hdr_t) + HMS__AMSG_MAX_RELEASES * sizeof(hms__amsg_release_t)];
    int fds[1] = {-1}, nfds = 0;
    ssize_t n = hms__recv_fds(a->sock, buf, sizeof buf, fds, 1, &nfds);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    if (n == 0) return 1; /* the peer closed: its hang-up is handled by the connection */
    if (n < 0) {
      snprintf(why, why_cap, "reading the connection socket failed: %s", strerror(errno));
      return -1;
    }
    hms__amsg_hdr_t h;
    if ((size_t)n < sizeof h) {
      if (nfds) close(fds[0]);
      snprintf(why, why_cap, "peer sent a %zd-byte message on the connection socket", n);
      return -1;
    }
    memcpy(&h, buf, sizeof h);
    if (h.magic == HMS__AMSG_MAGIC && h.kind == HMS__AMSG_SEGMENT &&
        (size_t)n == sizeof h + sizeof(hms__amsg_segment_t)) {
      hms__amsg_segment_t s;
      memcpy(&s, buf + sizeof h, sizeof s);
      if (hms__arena_on_segment_locked(a, &s, nfds ? fds[0] : -1, why, why_cap) != 0) return -1;
      continue;
    }
    if (nfds) close(fds[0]);
    if (h.magic == HMS__AMSG_MAGIC && h.kind == HMS__AMSG_RELEASE && h.count <= HMS__AMSG_MAX_RELEASES &&
        (size_t)n == sizeof h + h.count * sizeof(hms__amsg_release_t)) {
      for (uint32_t i = 0; i < h.count; i++) {
        hms__amsg_release_t r;
        memcpy(&r, buf + sizeof h + i * sizeof r, sizeof r);
        hms__arena_on_release_locked(a, &r);
      }
      continue;
    }
    snprintf(why, why_cap, "peer sent an unknown message (kind %u, %zd bytes) on the connection socket", h.kind, n);
    return -1;
  }
}

int hms__arena_drain(hms__arena_t *a, char *why, size_t why_cap) {
  pthread_mutex_lock(&a->lock);
  int rc = hms__arena_drain_locked(a, why, why_cap);
  pthread_mutex_unlock(&a->lock);
  return rc;
}

/* ------------------------------------------------------------------ owner: allocation */
static hms_status_t hms__arena_new_segment_locked(hms__arena_t *a, uint64_t need, hms_error_t *err) {
  if (a->nsegs >= HMS__ARENA_MAX_SEGMENTS)
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, 0,
                     "the arena has its %d segments and none has %llu free bytes in one piece; release blocks "
                     "(received views) or use fewer, larger payloads",
                     HMS__ARENA_MAX_SEGMENTS, (unsigned long long)need);
  uint64_t size = (need + HMS__ARENA_SEG_ROUND - 1) & ~(HMS__ARENA_SEG_ROUND - 1);
  uint64_t min = a->quota < HMS__ARENA_SEG_MIN ? a->quota : HMS__ARENA_SEG_MIN;
  if (size < min) size = (min + HMS__ARENA_SEG_ROUND - 1) & ~(HMS__ARENA_SEG_ROUND - 1);
  int fd = memfd_create("hms-ffi-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, errno, "memfd_create failed: %s", strerror(errno));
  void *m = MAP_FAILED;
  hms_status_t st = HMS_OK;
  if (ftruncate(fd, (off_t)size) != 0) {
    st = hms__fail(err, HMS_RESOURCE_EXHAUSTED, errno, "ftruncate(arena, %llu) failed: %s",
                   (unsigned long long)size, strerror(errno));
  } else if ((m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
    st = hms__fail(err, HMS_RESOURCE_EXHAUSTED, errno, "mmap of an arena segment of %llu bytes failed: %s",
                   (unsigned long long)size, strerror(errno));
  } else if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) != 0) {
    /* After our writable mapping exists: the peer can only map it read-only. */
    st = hms__fail(err, HMS_FAILED_PRECONDITION, errno,
                   "sealing an arena segment failed (%s); zero-copy needs Linux >= 5.1 (F_SEAL_FUTURE_WRITE)",
                   strerror(errno));
  } else {
    uint8_t msg[sizeof(hms__amsg_hdr_t) + sizeof(hms__amsg_segment_t)];
    hms__amsg_hdr_t h = {.magic = HMS__AMSG_MAGIC, .kind = HMS__AMSG_SEGMENT};
    hms__amsg_segment_t s = {.segment = a->nsegs, .size = size};
    memcpy(msg, &h, sizeof h);
    memcpy(msg + sizeof h, &s, sizeof s);
    if (a->sock < 0 || hms__send_fds(a->sock, msg, sizeof msg, &fd, 1) != 0)
      st = hms__fail(err, HMS_UNAVAILABLE, errno,
                     "handing a new arena segment to the peer failed (%s): the connection is closed or the peer "
                     "stopped reading it",
                     a->sock < 0 ? "closed" : strerror(errno));
  }
  close(fd);
  if (st != HMS_OK) {
    if (m != MAP_FAILED) munmap(m, size);
    return st;
  }
  hms__oseg_t *seg = &a->segs[a->nsegs];
  memset(seg, 0, sizeof *seg);
  seg->map = m;
  seg->size = size;
  if (!hms__seg_give(seg, 0, size)) {
    munmap(m, size);
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
  }
  a->nsegs++;
  a->mapped += size;
  return HMS_OK;
}

hms_status_t hms__arena_alloc(hms__arena_t *a, size_t len, hms__block_t *out, hms_error_t *err) {
  memset(out, 0, sizeof *out);
  if (!a) return hms__fail(err, HMS_FAILED_PRECONDITION, 0, "this connection has no arena");
  uint64_t alen = ((uint64_t)(len ? len : 1) + HMS__ARENA_ALIGN - 1) & ~(uint64_t)(HMS__ARENA_ALIGN - 1);
  pthread_mutex_lock(&a->lock);
  char why[200];
  if (a->sock < 0) {
    pthread_mutex_unlock(&a->lock);
    return hms__fail(err, HMS_UNAVAILABLE, 0, "the connection is closed; reconnect to send payloads");
  }
  /* Releases the peer sent since we last looked (no syscall unless there are some). */
  if (a->rx_hint && atomic_load_explicit(a->rx_hint, memory_order_acquire) != a->rx_seen &&
      hms__arena_drain_locked(a, why, sizeof why) < 0) {
    pthread_mutex_unlock(&a->lock);
    return hms__fail(err, HMS_DATA_LOSS, 0, "%s", why);
  }
  if (alen > a->quota || a->used > a->quota - alen) {
    hms__arena_drain_locked(a, why, sizeof why);
    if (alen > a->quota || a->used > a->quota - alen) {
      uint64_t used = a->used, quota = a->quota;
      pthread_mutex_unlock(&a->lock);
      return hms__fail(err, HMS_RESOURCE_EXHAUSTED, 0,
                       "payload of %zu bytes exceeds this connection's max message (arena quota) of %llu bytes "
                       "(%llu held by unreleased blocks); raise the quota (arena_quota) or release received "
                       "views sooner",
                       len, (unsigned long long)quota, (unsigned long long)used);
    }
  }
  uint64_t off = 0;
  uint32_t si = 0;
  bool found = false;
  for (si = 0; si < a->nsegs && !found; si++)
    if (hms__seg_take(&a->segs[si], alen, &off)) found = true;
  if (found) si--;
  if (!found) {
    hms__arena_drain_locked(a, why, sizeof why);
    for (si = 0; si < a->nsegs && !found; si++)
      if (hms__seg_take(&a->segs[si], alen, &off)) found = true;
    if (found) si--;
  }
  if (!found) {
    hms_status_t st = hms__arena_new_segment_locked(a, alen, err);
    if (st != HMS_OK) {
      pthread_mutex_unlock(&a->lock);
      return st;
    }
    si = a->nsegs - 1;
    hms__seg_take(&a->segs[si], alen, &off);
  }
  if (++a->next_gen == 0) a->next_gen = 1;
  while (hms__blk_find(a, a->next_gen)) a->next_gen++; /* a block 4 billion allocations old */
  hms__blk_t b = {.gen = a->next_gen, .seg = si, .off = off, .len = alen, .state = HMS__BLK_LOANED};
  if (!hms__blk_insert(a, &b)) {
    hms__seg_give(&a->segs[si], off, alen);
    pthread_mutex_unlock(&a->lock);
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
  }
  a->used += alen;
  a->allocs_total++;
  out->data = a->segs[si].map + off;
  out->len = len;
  out->segment = si;
  out->generation = b.gen;
  out->offset = off;
  atomic_fetch_add(&a->refs, 1); /* the loan keeps the arena (and its mappings) alive */
  out->arena = a;
  pthread_mutex_unlock(&a->lock);
  hms__ok(err);
  return HMS_OK;
}

/* Marks a loaned block as sent and fills the wire reference; the loan's arena reference ends. */
void hms__arena_mark_sent(hms__block_t *b, size_t len, hms__aref_wire_t *wire) {
  hms__arena_t *a = b->arena;
  pthread_mutex_lock(&a->lock);
  hms__blk_t *e = hms__blk_find(a, b->generation);
  if (e) e->state = HMS__BLK_SENT;
  pthread_mutex_unlock(&a->lock);
  memset(wire, 0, sizeof *wire);
  wire->segment = b->segment;
  wire->generation = b->generation;
  wire->offset = b->offset;
  wire->length = len;
  b->arena = NULL;
  b->data = NULL;
  hms__arena_unref(a);
}

/* Gives a loaned (never sent) block back. */
void hms__arena_unloan(hms__block_t *b) {
  hms__arena_t *a = b->arena;
  if (!a) return;
  pthread_mutex_lock(&a->lock);
  hms__blk_t *e = hms__blk_find(a, b->generation);
  if (e && e->state == HMS__BLK_LOANED) hms__blk_free_locked(a, e);
  pthread_mutex_unlock(&a->lock);
  b->arena = NULL;
  b->data = NULL;
  hms__arena_unref(a);
}

/* A sent block whose frame never reached the peer (ring full until the deadline, connection died). */
void hms__arena_unsend(hms__arena_t *a, const hms__aref_wire_t *wire) {
  pthread_mutex_lock(&a->lock);
  hms__blk_t *e = hms__blk_find(a, wire->generation);
  if (e && e->seg == wire->segment && e->off == wire->offset) hms__blk_free_locked(a, e);
  pthread_mutex_unlock(&a->lock);
}

/* Private memory into a new block: the one copy of a large payload sent from private memory. */
hms_status_t hms__arena_copy_in(hms__arena_t *a, const void *x, size_t xlen, const void *y, size_t ylen,
                                hms__aref_wire_t *wire, hms_error_t *err) {
  hms__block_t b;
  hms_status_t st = hms__arena_alloc(a, xlen + ylen, &b, err);
  if (st) return st;
  if (xlen) memcpy(b.data, x, xlen);
  if (ylen) memcpy((uint8_t *)b.data + xlen, y, ylen);
  hms__arena_mark_sent(&b, xlen + ylen, wire);
  return HMS_OK;
}

/* ------------------------------------------------------------------ receiver */
static void hms__held_release(hms_payload_t *p) {
  hms__held_t *h = p->private_data;
  if (!h) return;
  hms__arena_t *a = h->arena;
  pthread_mutex_lock(&a->lock);
  a->peer_held--;
  hms__arena_queue_release_locked(a, &h->rel);
  hms__arena_flush_locked(a);
  pthread_mutex_unlock(&a->lock);
  hms__pmap_unref(h->pmap);
  hms__arena_unref(a);
  free(h);
  p->private_data = NULL;
}

void hms__arena_release_wire(hms__arena_t *a, const hms__aref_wire_t *wire) {
  if (!a) return;
  hms__amsg_release_t r = {.segment = wire->segment, .generation = wire->generation, .offset = wire->offset};
  pthread_mutex_lock(&a->lock);
  hms__arena_queue_release_locked(a, &r);
  hms__arena_flush_locked(a);
  pthread_mutex_unlock(&a->lock);
}

int hms__arena_resolve(hms__arena_t *a, const uint8_t *frame_payload, uint32_t payload_len, uint32_t ct,
                       hms_payload_t *out, char *why, size_t why_cap) {
  memset(out, 0, sizeof *out);
  if (payload_len != sizeof(hms__aref_wire_t)) {
    snprintf(why, why_cap, "arena frame carries %u bytes instead of a %zu-byte reference", payload_len,
             sizeof(hms__aref_wire_t));
    return -1;
  }
  hms__aref_wire_t w;
  memcpy(&w, frame_payload, sizeof w); /* copied out of the ring, then validated */
  if (!a) {
    snprintf(why, why_cap, "arena reference on a connection without an arena");
    return -1;
  }
  pthread_mutex_lock(&a->lock);
  if (w.segment >= HMS__ARENA_MAX_SEGMENTS) {
    pthread_mutex_unlock(&a->lock);
    snprintf(why, why_cap, "arena reference to segment %u (at most %d)", w.segment, HMS__ARENA_MAX_SEGMENTS);
    return -1;
  }
  if (!a->peer[w.segment]) {
    /* The announcement was sent before the frame: it is already queued on the socket. */
    if (hms__arena_drain_locked(a, why, why_cap) < 0) {
      pthread_mutex_unlock(&a->lock);
      return -1;
    }
  }
  hms__pmap_t *p = a->peer[w.segment];
  if (!p) {
    pthread_mutex_unlock(&a->lock);
    snprintf(why, why_cap, "arena reference to segment %u that the peer never announced", w.segment);
    return -1;
  }
  if (w.offset > p->size || w.length > p->size - w.offset || w.length > SIZE_MAX) {
    pthread_mutex_unlock(&a->lock);
    snprintf(why, why_cap, "arena reference [%llu, +%llu) outside segment %u of %llu bytes",
             (unsigned long long)w.offset, (unsigned long long)w.length, w.segment, (unsigned long long)p->size);
    return -1;
  }
  hms__held_t *h = malloc(sizeof *h);
  if (!h) {
    pthread_mutex_unlock(&a->lock);
    snprintf(why, why_cap, "out of memory");
    return -1;
  }
  atomic_fetch_add(&p->refs, 1);
  atomic_fetch_add(&a->refs, 1);
  a->peer_held++;
  pthread_mutex_unlock(&a->lock);
  h->arena = a;
  h->pmap = p;
  h->rel.segment = w.segment;
  h->rel.generation = w.generation;
  h->rel.offset = w.offset;
  out->data = p->map + w.offset;
  out->len = (size_t)w.length;
  out->content_type = ct;
  out->release = hms__held_release;
  out->private_data = h;
  return 0;
}

/* ------------------------------------------------------------------ lifetime and stats */
void hms__arena_detach(hms__arena_t *a) {
  if (!a) return;
  pthread_mutex_lock(&a->lock);
  a->sock = -1;
  a->tx_hint = a->rx_hint = NULL;
  a->npending = 0;
  /* Every block the peer held comes back: it can no longer release them. */
  for (size_t i = 0; i < a->blk_cap; i++)
    if (a->blk[i].gen && a->blk[i].state == HMS__BLK_SENT) {
      hms__seg_give(&a->segs[a->blk[i].seg], a->blk[i].off, a->blk[i].len);
      a->used -= a->blk[i].len;
      a->blk[i].gen = 0;
      a->blk_n--;
    }
  /* Rebuild the table: removed entries above were not shifted. */
  hms__blk_t *old = a->blk;
  size_t ocap = a->blk_cap;
  a->blk = NULL;
  a->blk_cap = a->blk_n = 0;
  for (size_t i = 0; i < ocap; i++)
    if (old[i].gen) hms__blk_insert(a, &old[i]);
  free(old);
  /* Our table's references to the peer's mappings: views handed out keep theirs. */
  for (uint32_t i = 0; i < HMS__ARENA_MAX_SEGMENTS; i++)
    if (a->peer[i]) {
      a->peer_mapped -= a->peer[i]->size;
      hms__pmap_unref(a->peer[i]);
      a->peer[i] = NULL;
    }
  pthread_mutex_unlock(&a->lock);
}

void hms__arena_stats_add(hms__arena_t *a, hms_arena_stats_t *st) {
  if (!a) return;
  pthread_mutex_lock(&a->lock);
  st->segments += a->nsegs;
  st->mapped_bytes += a->mapped;
  st->blocks_outstanding += a->blk_n;
  st->bytes_outstanding += a->used;
  st->blocks_allocated += a->allocs_total;
  st->bad_releases += a->bad_releases;
  for (uint32_t i = 0; i < HMS__ARENA_MAX_SEGMENTS; i++)
    if (a->peer[i]) st->peer_segments_mapped++;
  st->peer_mapped_bytes += a->peer_mapped;
  st->peer_blocks_held += a->peer_held;
  if (a->quota > st->quota) st->quota = a->quota;
  pthread_mutex_unlock(&a->lock);
}

/* ------------------------------------------------------------------ public block API */
HMS_API void hms_block_release(hms_block_t *block) {
  if (!block || !block->private_data) return;
  hms__block_t *b = block->private_data;
  hms__arena_unloan(b);
  free(b);
  memset(block, 0, sizeof *block);
}

HMS_API void hms_arena_stats_init(hms_arena_stats_t *stats) {
  if (!stats) return;
  memset(stats, 0, sizeof *stats);
  stats->version = HMS_ARENA_STATS_VERSION;
}

/* Shared by client.c/node.c: wraps an internal loan into the public block. */
hms_status_t hms__block_loan(hms__arena_t *a, size_t size, hms_block_t *block, hms_error_t *err) {
  memset(block, 0, sizeof *block);
  hms__block_t *b = malloc(sizeof *b);
  if (!b) return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory");
  hms_status_t st = hms__arena_alloc(a, size, b, err);
  if (st) {
    free(b);
    return st;
  }
  block->data = b->data;
  block->len = size;
  block->private_data = b;
  return HMS_OK;
}

/* Takes the block out of the public struct for sending `len` of its bytes. */
hms_status_t hms__block_take(hms_block_t *block, size_t len, hms__arena_t *expect, hms__aref_wire_t *wire,
                             hms__arena_t **arena, hms_error_t *err) {
  if (!block || !block->private_data)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "the block is empty (already sent or released)");
  hms__block_t *b = block->private_data;
  if (len > block->len)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "cannot send %zu bytes of a %zu-byte block", len, block->len);
  if (b->arena != expect)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "the block was loaned on another connection; loan it from the client (or call) that sends it");
  *arena = b->arena;
  atomic_fetch_add(&b->arena->refs, 1); /* the caller's, until it is done with the wire reference */
  hms__arena_mark_sent(b, len, wire);
  free(b);
  memset(block, 0, sizeof *block);
  return HMS_OK;
}

void hms__arena_put(hms__arena_t *a) {
  if (a) hms__arena_unref(a);
}
