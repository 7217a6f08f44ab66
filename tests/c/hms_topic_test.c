/* Topics under attack, built from the sources with the internal headers (and run under ASan+UBSan by
 * tests/test_pubsub.py):
 *
 *   - fake publishers (forked processes speaking the handshake by hand) hand a subscriber unsealed or
 *     writable memfds, corrupt ring headers, the wrong descriptors, and rings whose counters, index
 *     entries and lengths are corrupted (or fuzzed) while it reads: the subscriber must report
 *     DATA_LOSS (or skip the publisher) and go on, never crash, hang or read out of bounds;
 *   - a hand-written lapped ring: the subscriber is told exactly how many messages it missed;
 *   - a fake subscriber against a real publisher: it cannot write, grow, shrink or remap the ring, and
 *     garbage in its page (cursor, sleep flag) neither crashes nor wedges a blocking publisher;
 *   - the seqlock: a real publisher overwrites a tiny ring as fast as it can while a subscriber reads;
 *     every delivered payload must be whole (never torn) and missed + received == published;
 *   - the blocking contract: a blocking publisher is never more than `capacity` messages ahead of what
 *     the subscriber has taken (hms_subscription_recv returned it; a batch's messages once the caller
 *     comes back for more), and a publisher waiting on a held batch is woken when it is released.
 *
 * Usage: hms_topic_test   (uses $HMS_FFI_RUNTIME_DIR). Prints "all topic tests passed". */
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal/hms_internal.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

static int failures;
#define CHECK(cond, ...)                                                 \
  do {                                                                   \
    if (!(cond)) {                                                       \
      failures++;                                                        \
      printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);             \
      printf(__VA_ARGS__);                                               \
      printf("\n");                                                      \
      fflush(stdout);                                                    \
    }                                                                    \
  } while (0)

static const char *g_dir;

/* ------------------------------------------------------------------ a hand-made ring */
enum {
  EV_OK = 0,         /* a valid ring (runtime scenarios corrupt it later) */
  EV_UNSEALED,       /* memfd without any seal */
  EV_WRITABLE,       /* sealed against shrink/grow but writable by subscribers */
  EV_BAD_MAGIC,
  EV_SIZE_LIE,       /* header says more bytes than the memfd has */
  EV_SLOTS_NOT_POW2,
  EV_TWO_FDS,
  EV_PIPE_BELL,
  EV_GARBAGE_WELCOME,
  EV_NOT_MEMFD,      /* a pipe instead of the ring memfd */
  EV_WRONG_TOPIC,
  EV_N_HANDSHAKE,
  /* runtime corruption after a valid handshake */
  EV_HEAD_BACKWARDS = 100,
  EV_LEN_TOO_BIG,
  EV_OFFSET_OUT,
  EV_SEQ_MISMATCH,
  EV_TAIL_BEYOND_HEAD,
  EV_HUGE_HEAD,
  EV_LAPPED, /* valid: 20 messages in an 8-slot ring before the subscriber reads */
  EV_FUZZ,
};

#define FAKE_SLOTS 8
#define FAKE_DATA 4096

typedef struct {
  uint8_t *map;
  size_t len;
  hms__topic_ctl_t *ctl;
  hms__topic_entry_t *index;
  uint8_t *data;
  uint64_t head, data_head;
} fake_ring_t;

static int make_ring(fake_ring_t *r, int scenario, const char *topic) {
  uint32_t slots = scenario == EV_SLOTS_NOT_POW2 ? 6 : FAKE_SLOTS;
  r->len = HMS__TOPIC_HEADER_BYTES + (size_t)slots * HMS__TOPIC_ENTRY_BYTES + FAKE_DATA;
  int fd = memfd_create("evil", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ftruncate(fd, (off_t)r->len) != 0) return -1;
  if (scenario != EV_UNSEALED) fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
  r->map = mmap(NULL, r->len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (r->map == MAP_FAILED) return -1;
  if (scenario != EV_UNSEALED && scenario != EV_WRITABLE) fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE);
  hms__topic_hdr_t *h = (hms__topic_hdr_t *)r->map;
  h->magic = scenario == EV_BAD_MAGIC ? 0x1234 : HMS__TOPIC_MAGIC;
  h->layout = HMS__TOPIC_LAYOUT;
  h->header_bytes = HMS__TOPIC_HEADER_BYTES;
  h->slots = slots;
  h->data_bytes = FAKE_DATA;
  h->index_offset = HMS__TOPIC_HEADER_BYTES;
  h->data_offset = HMS__TOPIC_HEADER_BYTES + (uint64_t)slots * HMS__TOPIC_ENTRY_BYTES;
  h->total_bytes = h->data_offset + FAKE_DATA + (scenario == EV_SIZE_LIE ? 1 << 20 : 0);
  h->max_payload = FAKE_DATA / 4;
  h->created_ns = hms__now_ns();
  h->pid = getpid();
  hms__strlcpy(h->topic, scenario == EV_WRONG_TOPIC ? "other.topic" : topic, sizeof h->topic);
  r->ctl = (hms__topic_ctl_t *)(r->map + HMS__TOPIC_CTL_OFFSET);
  r->index = (hms__topic_entry_t *)(r->map + HMS__TOPIC_HEADER_BYTES);
  r->data = r->map + h->data_offset;
  atomic_store(&r->ctl->head_seq, 0);
  atomic_store(&r->ctl->tail_seq, 1);
  r->head = 0;
  r->data_head = 0;
  return fd;
}

/* A correct publish into the fake ring (same rules as topic.c, simplified: 64-byte messages). */
static void ring_put(fake_ring_t *r, uint8_t fill) {
  uint64_t s = r->head + 1;
  uint64_t pos = r->data_head, off = pos & (FAKE_DATA - 1);
  uint64_t new_head = pos + 64, reclaim = new_head > FAKE_DATA ? new_head - FAKE_DATA : 0;
  uint64_t t = atomic_load(&r->ctl->tail_seq);
  uint64_t min_t = s > FAKE_SLOTS ? s - FAKE_SLOTS + 1 : 1;
  while (t < s && (t < min_t || r->index[t & (FAKE_SLOTS - 1)].data_pos < reclaim)) t++;
  atomic_store(&r->ctl->tail_seq, t);
  memset(r->data + off, fill, 64);
  hms__topic_entry_t *e = &r->index[s & (FAKE_SLOTS - 1)];
  e->data_pos = pos;
  e->len = 64;
  e->content_type = HMS_CT_RAW;
  e->flags = 0;
  e->publish_ns = hms__now_ns();
  atomic_store(&e->seq, s);
  atomic_store(&r->ctl->head_seq, s);
  r->head = s;
  r->data_head = new_head;
}

/* ------------------------------------------------------------------ the fake publisher process */
static int register_fake(const char *topic, char *sock_path, size_t cap) {
  snprintf(sock_path, cap, "%s/%s@%d-1.topic", g_dir, topic, (int)getpid());
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  hms__strlcpy(sa.sun_path, sock_path, sizeof sa.sun_path);
  unlink(sock_path);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 8) != 0) return -1;
  char meta[HMS__PATH_MAX], tmp[HMS__PATH_MAX + 8];
  snprintf(meta, sizeof meta, "%s/%s@%d-1.tmeta", g_dir, topic, (int)getpid());
  snprintf(tmp, sizeof tmp, "%s.tmp", meta);
  FILE *f = fopen(tmp, "w");
  if (!f) return -1;
  fprintf(f, "hms-ffi-topic 1\ntopic=%s\nnode=evil\npid=%d\nuid=%u\nstarttime=%llu\nsock=%s@%d-1.topic\n", topic,
          (int)getpid(), (unsigned)getuid(), (unsigned long long)hms__proc_starttime(getpid()), topic, (int)getpid());
  fclose(f);
  rename(tmp, meta);
  return fd;
}

static void fake_publisher(const char *topic, int scenario, int ready_fd, unsigned seed) {
  char sock_path[HMS__PATH_MAX];
  int lfd = register_fake(topic, sock_path, sizeof sock_path);
  char c = lfd >= 0 ? 'r' : 'x';
  if (write(ready_fd, &c, 1) != 1 || lfd < 0) _exit(2);
  struct pollfd pf = {.fd = lfd, .events = POLLIN};
  if (poll(&pf, 1, 5000) != 1) _exit(3);
  int s = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  hms__topic_hello_t hello;
  if (recv(s, &hello, sizeof hello, 0) != (ssize_t)sizeof hello) _exit(4);
  fake_ring_t r;
  int rfd = make_ring(&r, scenario, topic);
  void *pmap = NULL;
  char why[128];
  int pfd = hms__memfd_create_sealed(HMS__SUBPAGE_BYTES, &pmap, why, sizeof why);
  ((hms__subpage_t *)pmap)->magic = HMS__SUBPAGE_MAGIC;
  int bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int pipefd[2];
  if (pipe(pipefd) != 0) _exit(5);
  hms__topic_welcome_t w;
  memset(&w, 0, sizeof w);
  w.magic = HMS__TOPIC_WELCOME_MAGIC;
  w.abi = HMS_FFI_ABI_VERSION;
  w.proto = HMS__TOPIC_PROTO;
  w.status = HMS_OK;
  w.ring_bytes = r.len;
  w.subpage_bytes = HMS__SUBPAGE_BYTES;
  int fds[3] = {rfd, pfd, bell};
  if (scenario == EV_PIPE_BELL) fds[2] = pipefd[0];
  if (scenario == EV_NOT_MEMFD) fds[0] = pipefd[0];
  /* Static corruption is in place before the subscriber sees the ring (no race with its reads). */
  switch (scenario) {
    case EV_LEN_TOO_BIG:
      ring_put(&r, 1);
      r.index[1].len = 1u << 30;
      break;
    case EV_OFFSET_OUT:
      ring_put(&r, 1);
      r.index[1].data_pos = FAKE_DATA - 8; /* 64 bytes from 8 before the end */
      break;
    case EV_SEQ_MISMATCH:
      ring_put(&r, 1);
      atomic_store(&r.index[1].seq, 77);
      break;
    case EV_TAIL_BEYOND_HEAD:
      ring_put(&r, 1);
      atomic_store(&r.ctl->tail_seq, 5);
      break;
    case EV_HUGE_HEAD:
      atomic_store(&r.ctl->head_seq, UINT64_MAX - 1);
      break;
    case EV_LAPPED:
      for (int i = 0; i < 20; i++) ring_put(&r, (uint8_t)(i + 1));
      break;
    default:
      break;
  }
  if (scenario == EV_GARBAGE_WELCOME)
    hms__send_fds(s, "garbage", 7, fds, 3);
  else
    hms__send_fds(s, &w, sizeof w, fds, scenario == EV_TWO_FDS ? 2 : 3);
  srand(seed);
  switch (scenario) {
    case EV_HEAD_BACKWARDS:
      for (int i = 0; i < 3; i++) ring_put(&r, (uint8_t)(i + 1));
      usleep(200000);
      atomic_store(&r.ctl->head_seq, 1);
      break;
    case EV_FUZZ: {
      int64_t end = hms__now_ns() + 300000000LL;
      for (int i = 0; i < 5; i++) ring_put(&r, (uint8_t)i);
      while (hms__now_ns() < end) {
        int what = rand() % 6;
        uint64_t h = atomic_load(&r.ctl->head_seq);
        if (what == 0) atomic_store(&r.ctl->head_seq, h + (uint64_t)(rand() % 3));
        if (what == 1) atomic_store(&r.ctl->tail_seq, (uint64_t)(rand() % (int)(h + 2)));
        if (what == 2) r.index[rand() % FAKE_SLOTS].len = (uint32_t)rand() % (FAKE_DATA * 2);
        if (what == 3) r.index[rand() % FAKE_SLOTS].data_pos = (uint64_t)rand() * (uint64_t)rand();
        if (what == 4) atomic_store(&r.index[rand() % FAKE_SLOTS].seq, (uint64_t)(rand() % 40));
        if (what == 5) ring_put(&r, (uint8_t)rand());
        if (rand() % 8 == 0) usleep(100);
      }
      break;
    }
    default:
      break;
  }
  /* Stay until the subscriber hangs up (or 5 s), so "it went away" is not what the test sees. */
  struct pollfd sp = {.fd = s, .events = POLLIN};
  poll(&sp, 1, 5000);
  unlink(sock_path);
  _exit(0);
}

/* Runs one fake publisher scenario against a real subscription; returns the statuses seen. */
typedef struct {
  int ok, data_loss, deadline, unavailable, other;
  uint64_t missed_total;
  uint64_t first_seq;
  uint64_t first_missed;
  bool payload_bad;
} seen_t;

static seen_t run_fake(hms_node_t *node, int scenario, unsigned seed, int64_t budget_ns) {
  seen_t seen;
  memset(&seen, 0, sizeof seen);
  char topic[64];
  snprintf(topic, sizeof topic, "evil.s%d.r%u", scenario, seed);
  int pp[2];
  if (pipe(pp) != 0) abort();
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    close(pp[0]);
    fake_publisher(topic, scenario, pp[1], seed);
  }
  close(pp[1]);
  char c = 0;
  if (read(pp[0], &c, 1) != 1 || c != 'r') {
    CHECK(0, "fake publisher did not start (scenario %d)", scenario);
    close(pp[0]);
    return seen;
  }
  close(pp[0]);
  hms_error_t err;
  hms_subscription_t *sub = NULL;
  hms_subscribe_options_t so;
  hms_subscribe_options_init(&so);
  so.spin_ns = 0;
  hms_status_t st = hms_subscribe(node, topic, &so, &sub, &err);
  CHECK(st == HMS_OK, "subscribe: %s", err.message);
  int64_t end = hms__now_ns() + budget_ns;
  for (int iter = 0; sub && hms__now_ns() < end; iter++) {
    hms_message_t m;
    if (iter % 2) {
      /* the batch path, with a buffer that holds about one fake message (so "no room" happens too) */
      hms_message_info_t infos[4];
      char buf[96];
      size_t count = 0, used = 0;
      st = hms_subscription_recv_batch(sub, infos, 4, buf, sizeof buf, &count, &used, 20000000, &err);
      if (st == HMS_OUT_OF_RANGE) {
        CHECK(count == 0 && used > sizeof buf, "out of range: count %zu used %zu", count, used);
        continue;
      }
      for (size_t k = 0; st == HMS_OK && k < count; k++) {
        if (!seen.ok) {
          seen.first_seq = infos[k].seq;
          seen.first_missed = infos[k].missed;
        }
        seen.ok++;
        seen.missed_total += infos[k].missed;
        if (infos[k].payload_len > FAKE_DATA / 4 || infos[k].payload_offset + infos[k].payload_len > used ||
            infos[k].topic_offset + infos[k].topic_len > used || used > sizeof buf)
          seen.payload_bad = true;
        const uint8_t *d = (const uint8_t *)buf + infos[k].payload_offset;
        for (size_t i = 1; i < infos[k].payload_len && scenario != EV_FUZZ; i++)
          if (d[i] != d[0]) seen.payload_bad = true;
        if (infos[k].topic_len != strlen(topic) || memcmp(buf + infos[k].topic_offset, topic, strlen(topic)) != 0)
          seen.payload_bad = true;
      }
      if (st == HMS_OK) continue;
    } else {
      st = hms_subscription_recv(sub, &m, 20000000, &err);
    }
    if (st == HMS_OK) {
      if (!seen.ok) {
        seen.first_seq = m.seq;
        seen.first_missed = m.missed;
      }
      seen.ok++;
      seen.missed_total += m.missed;
      if (m.payload.len > FAKE_DATA / 4) seen.payload_bad = true;
      /* a whole message of the fake ring is 64 equal bytes */
      const uint8_t *d = m.payload.data;
      for (size_t i = 1; i < m.payload.len && scenario != EV_FUZZ; i++)
        if (d[i] != d[0]) seen.payload_bad = true;
      hms_message_release(&m);
    } else if (st == HMS_DATA_LOSS) {
      seen.data_loss++;
      if (getenv("HMS_TOPIC_TEST_VERBOSE")) printf("  scenario %d: DATA_LOSS: %s\n", scenario, err.message);
    } else if (st == HMS_DEADLINE_EXCEEDED) {
      seen.deadline++;
      if (seen.data_loss && scenario != EV_FUZZ) break;
    } else if (st == HMS_UNAVAILABLE) {
      seen.unavailable++;
      break;
    } else {
      seen.other++;
      printf("  scenario %d: unexpected %s: %s\n", scenario, hms_status_str(st), err.message);
    }
  }
  hms_subscription_close(sub);
  int status = 0;
  waitpid(pid, &status, 0);
  return seen;
}

static void test_fake_publishers(hms_node_t *node) {
  for (int sc = EV_UNSEALED; sc < EV_N_HANDSHAKE; sc++) {
    seen_t s = run_fake(node, sc, 1, 300000000LL);
    CHECK(s.data_loss == 1 && s.ok == 0 && s.other == 0,
          "handshake scenario %d: ok %d data_loss %d other %d", sc, s.ok, s.data_loss, s.other);
  }
  int runtime[] = {EV_HEAD_BACKWARDS, EV_LEN_TOO_BIG, EV_OFFSET_OUT, EV_SEQ_MISMATCH, EV_TAIL_BEYOND_HEAD,
                   EV_HUGE_HEAD};
  for (size_t i = 0; i < sizeof runtime / sizeof runtime[0]; i++) {
    seen_t s = run_fake(node, runtime[i], 1, 800000000LL);
    CHECK(s.data_loss == 1 && s.other == 0 && !s.payload_bad, "runtime scenario %d: ok %d data_loss %d other %d",
          runtime[i], s.ok, s.data_loss, s.other);
  }
  seen_t s = run_fake(node, EV_HEAD_BACKWARDS, 2, 800000000LL);
  CHECK(s.ok == 3, "head-backwards delivered %d valid messages before the corruption (want 3)", s.ok);
  /* Lapped before we read: 20 messages into 8 slots. Exactly 12 missed, then 13..20 whole. */
  s = run_fake(node, EV_LAPPED, 1, 200000000LL);
  CHECK(s.ok == 8 && s.first_seq == 13 && s.first_missed == 12 && s.missed_total == 12 && !s.payload_bad &&
            s.data_loss == 0,
        "lapped: ok %d first seq %llu first missed %llu total missed %llu", s.ok, (unsigned long long)s.first_seq,
        (unsigned long long)s.first_missed, (unsigned long long)s.missed_total);
  for (unsigned seed = 1; seed <= 12; seed++) {
    s = run_fake(node, EV_FUZZ, seed, 400000000LL);
    CHECK(s.other == 0 && !s.payload_bad && s.data_loss <= 1, "fuzz seed %u: ok %d data_loss %d other %d", seed,
          s.ok, s.data_loss, s.other);
  }
}

/* ------------------------------------------------------------------ a fake subscriber */
static int fake_subscribe(const char *sock_path, int fds[3], hms__topic_welcome_t *w) {
  int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  hms__strlcpy(sa.sun_path, sock_path, sizeof sa.sun_path);
  if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) return -1;
  hms__topic_hello_t h;
  memset(&h, 0, sizeof h);
  h.magic = HMS__TOPIC_HELLO_MAGIC;
  h.abi = HMS_FFI_ABI_VERSION;
  h.proto = HMS__TOPIC_PROTO;
  hms__strlcpy(h.topic, "victim.topic", sizeof h.topic);
  if (send(s, &h, sizeof h, 0) != (ssize_t)sizeof h) return -1;
  struct pollfd pf = {.fd = s, .events = POLLIN};
  if (poll(&pf, 1, 2000) != 1) return -1;
  int n = 0;
  if (hms__recv_fds(s, w, sizeof *w, fds, 3, &n) != (ssize_t)sizeof *w || n != 3) return -1;
  return s;
}

static void find_sock(char *out, size_t cap) {
  char cmd[HMS__PATH_MAX + 64];
  snprintf(cmd, sizeof cmd, "ls %s | grep '^victim.topic@.*\\.topic$' | head -1", g_dir);
  FILE *p = popen(cmd, "r");
  char name[256] = "";
  if (p) {
    if (!fgets(name, sizeof name, p)) name[0] = 0;
    pclose(p);
  }
  name[strcspn(name, "\n")] = 0;
  snprintf(out, cap, "%s/%s", g_dir, name);
}

static void test_fake_subscriber(hms_node_t *node) {
  hms_error_t err;
  hms_publisher_t *pub = NULL;
  hms_publisher_options_t po;
  hms_publisher_options_init(&po);
  po.flags = HMS_PUBLISHER_BLOCK;
  po.capacity = 4;
  po.spin_ns = 0;
  CHECK(hms_publisher_open(node, "victim.topic", &po, &pub, &err) == HMS_OK, "open: %s", err.message);
  char sock_path[HMS__PATH_MAX];
  find_sock(sock_path, sizeof sock_path);
  int fds[3] = {-1, -1, -1};
  hms__topic_welcome_t w;
  int s = fake_subscribe(sock_path, fds, &w);
  CHECK(s >= 0, "fake subscriber handshake with %s", sock_path);
  if (s < 0) {
    hms_publisher_close(pub);
    return;
  }
  /* The ring: read-only for us, whatever we try. */
  void *rw = mmap(NULL, w.ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
  CHECK(rw == MAP_FAILED, "a subscriber mapped the ring writable");
  void *ro = mmap(NULL, w.ring_bytes, PROT_READ, MAP_SHARED, fds[0], 0);
  CHECK(ro != MAP_FAILED, "read-only mapping failed: %s", strerror(errno));
  CHECK(mprotect(ro, 4096, PROT_READ | PROT_WRITE) != 0, "mprotect made the ring writable");
  CHECK(pwrite(fds[0], "x", 1, 0) < 0, "write() into the ring succeeded");
  CHECK(ftruncate(fds[0], 4096) != 0, "shrinking the ring succeeded");
  CHECK(ftruncate(fds[0], (off_t)w.ring_bytes * 2) != 0, "growing the ring succeeded");
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fds[0]);
  int re = open(path, O_RDWR);
  void *rw2 = re >= 0 ? mmap(NULL, w.ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, re, 0) : MAP_FAILED;
  CHECK(rw2 == MAP_FAILED, "reopening the ring via /proc gave a writable mapping");
  if (re >= 0) close(re);
  munmap(ro, w.ring_bytes);
  hms__subpage_t *pg = mmap(NULL, HMS__SUBPAGE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
  CHECK(pg != MAP_FAILED, "page mapping failed");
  /* Garbage cursor far ahead: counted as caught up; the sleep flag set all the time: just extra bells. */
  atomic_store(&pg->cursor, UINT64_MAX);
  for (int i = 0; i < 20; i++) {
    atomic_store(&pg->sub_sleeping, 1);
    hms_status_t st = hms_publish(pub, "abc", 3, HMS_CT_RAW, 0, 50000000, NULL, &err);
    CHECK(st == HMS_OK, "publish %d with a subscriber claiming cursor UINT64_MAX: %s", i, err.message);
  }
  /* Cursor stuck at 0: the blocking publisher gives up after its timeout (nothing published). */
  atomic_store(&pg->cursor, 0);
  int64_t t0 = hms__now_ns();
  hms_status_t st = hms_publish(pub, "abc", 3, HMS_CT_RAW, 0, 50000000, NULL, &err);
  int64_t dt = hms__now_ns() - t0;
  CHECK(st == HMS_DEADLINE_EXCEEDED && dt >= 40000000 && dt < 1000000000LL, "stuck subscriber: %s after %lld ms",
        hms_status_str(st), (long long)(dt / 1000000));
  /* Bogus wake-ups while the publisher waits: it re-checks and keeps waiting, then the subscriber
   * hangs up and the publisher goes on at once. */
  atomic_store(&pg->pub_wake, 12345);
  hms__futex_wake(&pg->pub_wake, INT_MAX, 1);
  close(s);
  t0 = hms__now_ns();
  st = hms_publish(pub, "abc", 3, HMS_CT_RAW, 0, 5000000000LL, NULL, &err);
  dt = hms__now_ns() - t0;
  CHECK(st == HMS_OK && dt < 500000000LL, "after the subscriber left: %s after %lld ms", hms_status_str(st),
        (long long)(dt / 1000000));
  munmap(pg, HMS__SUBPAGE_BYTES);
  for (int i = 0; i < 3; i++) close(fds[i]);
  /* Garbage hellos and connections that never speak do not disturb a real subscriber. */
  int junk = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  hms__strlcpy(sa.sun_path, sock_path, sizeof sa.sun_path);
  if (connect(junk, (struct sockaddr *)&sa, sizeof sa) == 0) {
    ssize_t k = send(junk, "nonsense", 8, 0);
    (void)k;
  }
  int silent = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  CHECK(connect(silent, (struct sockaddr *)&sa, sizeof sa) == 0, "connect");
  hms_subscription_t *sub = NULL;
  CHECK(hms_subscribe(node, "victim.*", NULL, &sub, &err) == HMS_OK, "subscribe: %s", err.message);
  st = hms_publish(pub, "hello", 5, HMS_CT_RAW, 0, 1000000000LL, NULL, &err);
  CHECK(st == HMS_OK, "publish with junk connections around: %s", err.message);
  hms_message_t m;
  st = hms_subscription_recv(sub, &m, 1000000000LL, &err);
  CHECK(st == HMS_OK && m.payload.len == 5 && memcmp(m.payload.data, "hello", 5) == 0, "recv: %s",
        hms_status_str(st));
  hms_message_release(&m);
  close(junk);
  close(silent);
  hms_subscription_close(sub);
  hms_publisher_close(pub);
}

/* ------------------------------------------------------------------ blocking: what "taken" means */
typedef struct {
  hms_publisher_t *pub;
  hms_status_t st;
  _Atomic int done;
} blocked_pub_t;

static void *blocked_publish(void *arg) {
  blocked_pub_t *b = arg;
  hms_error_t err;
  b->st = hms_publish(b->pub, "late", 4, HMS_CT_RAW, 0, 5000000000LL, NULL, &err);
  atomic_store(&b->done, 1);
  return NULL;
}

static void test_blocking_taken(hms_node_t *node) {
  hms_error_t err;
  hms_publisher_t *pub = NULL;
  hms_publisher_options_t po;
  hms_publisher_options_init(&po);
  po.flags = HMS_PUBLISHER_BLOCK;
  po.capacity = 4;
  po.spin_ns = 0;
  CHECK(hms_publisher_open(node, "taken.topic", &po, &pub, &err) == HMS_OK, "open: %s", err.message);
  hms_subscription_t *sub = NULL;
  hms_subscribe_options_t so;
  hms_subscribe_options_init(&so);
  so.spin_ns = 0;
  CHECK(hms_subscribe(node, "taken.topic", &so, &sub, &err) == HMS_OK, "subscribe: %s", err.message);
  if (!pub || !sub) {
    hms_subscription_close(sub);
    hms_publisher_close(pub);
    return;
  }
  CHECK(hms_publisher_subscriber_count(pub) == 1, "subscribers: %u", hms_publisher_subscriber_count(pub));
  const int64_t brief = 20000000; /* 20 ms: long enough to see a publisher give up */
  uint64_t seq = 0;
  /* publish(k) may run only once message k - 4 was taken */
#define PUB_OK(k)                                                                                             \
  do {                                                                                                        \
    hms_status_t st_ = hms_publish(pub, "m", 1, HMS_CT_RAW, 0, brief, &seq, &err);                            \
    CHECK(st_ == HMS_OK && seq == (uint64_t)(k), "publish %d: %s (seq %llu): %s", (k), hms_status_str(st_),   \
          (unsigned long long)seq, err.message);                                                              \
  } while (0)
#define PUB_HELD(k)                                                                                           \
  do {                                                                                                        \
    hms_status_t st_ = hms_publish(pub, "m", 1, HMS_CT_RAW, 0, brief, NULL, &err);                            \
    CHECK(st_ == HMS_DEADLINE_EXCEEDED && hms_publisher_last_seq(pub) == (uint64_t)(k) - 1,                   \
          "publish %d must wait (more than 4 ahead of what was taken): %s, last seq %llu", (k),               \
          hms_status_str(st_), (unsigned long long)hms_publisher_last_seq(pub));                              \
  } while (0)
  for (int k = 1; k <= 4; k++) PUB_OK(k);
  PUB_HELD(5);
  hms_message_info_t infos[32];
  static char buf[4096];
  size_t count = 0, used = 0;
  /* A batch takes 1..4, but they count as taken only when the caller comes back for more. */
  hms_status_t st = hms_subscription_recv_batch(sub, infos, 32, buf, sizeof buf, &count, &used, 1000000000LL, &err);
  CHECK(st == HMS_OK && count == 4 && infos[0].seq == 1 && infos[3].seq == 4, "batch 1..4: %s count %zu",
        hms_status_str(st), count);
  PUB_HELD(5);
  st = hms_subscription_recv_batch(sub, infos, 32, buf, sizeof buf, &count, &used, 0, &err);
  CHECK(st == HMS_DEADLINE_EXCEEDED && count == 0, "empty batch: %s count %zu", hms_status_str(st), count);
  for (int k = 5; k <= 8; k++) PUB_OK(k); /* released by that call */
  PUB_HELD(9);
  /* A single message is taken when hms_subscription_recv returns it. */
  hms_message_t m;
  st = hms_subscription_recv(sub, &m, 1000000000LL, &err);
  CHECK(st == HMS_OK && m.seq == 5, "recv 5: %s seq %llu", hms_status_str(st), (unsigned long long)m.seq);
  if (st == HMS_OK) hms_message_release(&m);
  PUB_OK(9);
  PUB_HELD(10);
  st = hms_subscription_recv_batch(sub, infos, 2, buf, sizeof buf, &count, &used, 1000000000LL, &err);
  CHECK(st == HMS_OK && count == 2 && infos[0].seq == 6 && infos[1].seq == 7, "batch 6..7: %s count %zu",
        hms_status_str(st), count);
  PUB_HELD(10);
  st = hms_subscription_recv(sub, &m, 1000000000LL, &err); /* releases 6, 7 and takes 8 */
  CHECK(st == HMS_OK && m.seq == 8, "recv 8: %s seq %llu", hms_status_str(st), (unsigned long long)m.seq);
  if (st == HMS_OK) hms_message_release(&m);
  for (int k = 10; k <= 12; k++) PUB_OK(k);
  PUB_HELD(13);
  /* A publisher waiting on a held batch sleeps until the caller comes back, then goes on at once. */
  st = hms_subscription_recv_batch(sub, infos, 32, buf, sizeof buf, &count, &used, 1000000000LL, &err);
  CHECK(st == HMS_OK && count == 4 && infos[0].seq == 9 && infos[3].seq == 12, "batch 9..12: %s count %zu",
        hms_status_str(st), count);
  blocked_pub_t b = {.pub = pub};
  pthread_t t;
  pthread_create(&t, NULL, blocked_publish, &b);
  usleep(100000);
  CHECK(!atomic_load(&b.done), "publish 13 went ahead of a held batch");
  int64_t t0 = hms__now_ns();
  st = hms_subscription_recv_batch(sub, infos, 32, buf, sizeof buf, &count, &used, 2000000000LL, &err);
  int64_t dt = hms__now_ns() - t0;
  pthread_join(t, NULL);
  CHECK(b.st == HMS_OK, "publish 13 after the release: %s", hms_status_str(b.st));
  CHECK(st == HMS_OK && count == 1 && infos[0].seq == 13 && dt < 1000000000LL, "recv 13: %s count %zu after %lld ms",
        hms_status_str(st), count, (long long)(dt / 1000000));
#undef PUB_OK
#undef PUB_HELD
  hms_subscription_close(sub);
  hms_publisher_close(pub);
}

/* ------------------------------------------------------------------ seqlock: never torn */
typedef struct {
  hms_publisher_t *pub;
  uint64_t n;
  _Atomic int done;
} hammer_t;

static void *hammer(void *arg) {
  hammer_t *h = arg;
  static uint8_t buf[1024];
  hms_error_t err;
  for (uint64_t i = 1; i <= h->n; i++) {
    size_t len = 1 + (size_t)((i * 2654435761u) % 1000);
    memset(buf, (int)(i & 0xff), len);
    if (i % 16 == 0) sched_yield(); /* let the reader in now and then (it is slower under sanitizers) */
    if (hms_publish(h->pub, (const char *)buf, len, HMS_CT_RAW, 0, -1, NULL, &err) != HMS_OK) {
      printf("FAIL hammer publish: %s\n", err.message);
      break;
    }
  }
  atomic_store(&h->done, 1);
  return NULL;
}

static void test_never_torn(hms_node_t *node) {
  hms_error_t err;
  hms_publisher_t *pub = NULL;
  hms_publisher_options_t po;
  hms_publisher_options_init(&po);
  po.capacity = 4;
  po.ring_bytes = 4096; /* max message 1024: a handful of messages fit, so the reader is lapped all the time */
  CHECK(hms_publisher_open(node, "hammer.topic", &po, &pub, &err) == HMS_OK, "open: %s", err.message);
  hms_subscription_t *sub = NULL;
  hms_subscribe_options_t so;
  hms_subscribe_options_init(&so);
  so.spin_ns = 1000000000LL; /* busy-poll: read while the publisher overwrites */
  CHECK(hms_subscribe(node, "hammer.topic", &so, &sub, &err) == HMS_OK, "subscribe: %s", err.message);
  hammer_t h = {.pub = pub, .n = 200000};
  pthread_t t;
  pthread_create(&t, NULL, hammer, &h);
  uint64_t got = 0, missed = 0, last = 0, torn = 0, order = 0;
  static char bbuf[16384];
  hms_message_info_t infos[32];
  for (int iter = 0;; iter++) {
    hms_message_t m;
    size_t count = 0, used = 0;
    hms_status_t st;
    if (iter % 2)
      st = hms_subscription_recv_batch(sub, infos, 32, bbuf, sizeof bbuf, &count, &used, 100000000, &err);
    else
      st = hms_subscription_recv(sub, &m, 100000000, &err);
    if (st == HMS_DEADLINE_EXCEEDED && atomic_load(&h.done)) break;
    if (st == HMS_DEADLINE_EXCEEDED) continue;
    if (st != HMS_OK) { /* an honest publisher must never be judged corrupt or gone */
      CHECK(0, "receive failed while the publisher hammered: %s: %s", hms_status_str(st), err.message);
      break;
    }
    size_t n = iter % 2 ? count : 1;
    for (size_t k = 0; k < n; k++) {
      uint64_t seq = iter % 2 ? infos[k].seq : m.seq, mi = iter % 2 ? infos[k].missed : m.missed;
      size_t len = iter % 2 ? infos[k].payload_len : m.payload.len;
      const uint8_t *d = iter % 2 ? (const uint8_t *)bbuf + infos[k].payload_offset : m.payload.data;
      got++;
      missed += mi;
      if (seq != last + mi + 1) order++;
      last = seq;
      size_t want = 1 + (size_t)((seq * 2654435761u) % 1000);
      if (len != want) torn++;
      for (size_t i = 0; i < len; i++)
        if (d[i] != (uint8_t)(seq & 0xff)) {
          torn++;
          break;
        }
    }
    if (!(iter % 2)) hms_message_release(&m);
  }
  pthread_join(t, NULL);
  CHECK(torn == 0, "%llu torn messages delivered", (unsigned long long)torn);
  CHECK(order == 0, "%llu sequence gaps not explained by missed", (unsigned long long)order);
  CHECK(got + missed == h.n && last == h.n, "received %llu + missed %llu != published %llu (last seq %llu)",
        (unsigned long long)got, (unsigned long long)missed, (unsigned long long)h.n, (unsigned long long)last);
  CHECK(hms_subscription_missed(sub) == missed, "missed counter %llu != %llu",
        (unsigned long long)hms_subscription_missed(sub), (unsigned long long)missed);
  printf("  never torn: %llu received, %llu missed of %llu\n", (unsigned long long)got, (unsigned long long)missed,
         (unsigned long long)h.n);
  hms_subscription_close(sub);
  hms_publisher_close(pub);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  hms_node_t *node = NULL;
  hms_error_t err;
  if (hms_node_open(NULL, &node, &err) != HMS_OK) {
    printf("node: %s\n", err.message);
    return 1;
  }
  g_dir = hms_node_runtime_dir(node);
  printf("fake publishers\n");
  fflush(stdout);
  test_fake_publishers(node);
  printf("fake subscriber\n");
  fflush(stdout);
  test_fake_subscriber(node);
  printf("blocking: taken\n");
  fflush(stdout);
  test_blocking_taken(node);
  printf("never torn\n");
  fflush(stdout);
  test_never_torn(node);
  hms_node_close(node);
  if (failures) {
    printf("%d checks failed\n", failures);
    return 1;
  }
  printf("all topic tests passed\n");
  return 0;
}
