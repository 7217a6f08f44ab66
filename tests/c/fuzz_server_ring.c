/* libFuzzer target: a hostile CLIENT's request ring against a real server.
 *
 * A real node serves "fuzz.target"@1.0.0 on a background thread of this process (hms_node_start): echo,
 * a client stream, a bidirectional stream, a deferred reply answered from another thread, a server
 * stream, a one-way sink with a batch handler, an error with details, and a handler that keeps the
 * request (hms_call_take_request) beyond the connection. Per input, one raw connection does the
 * handshake properly (hello, welcome + memfd/eventfd by SCM_RIGHTS, mmap), may announce an arena
 * segment of its own, then the input is read as a small program that writes request-ring frames (every
 * kind, flag, function id, deadline; arena references valid and bogus; PAD frames; wild lengths and
 * payload lengths; wrap-around), publishes heads (also wild ones), rings the doorbell, reads or ignores
 * the replies, scribbles on control words and sends messages on the socket. Then the connection is
 * closed and a well-behaved client connected since start-up must still get its echo.
 *
 * Findings (abort, so libFuzzer keeps the input): a crash or a sanitizer report anywhere in the process
 * (the server runs here), a response frame the server wrote that is malformed (the server must never
 * corrupt its own ring, whatever the client does), the well-behaved client not served within 2 s, the
 * serving thread gone, and descriptors that do not come back within 1 s after the raw connections closed
 * (checked every 128 inputs, or every input with HMS_FUZZ_FD_EVERY=1). Hangs: libFuzzer's -timeout.
 * Every input starts with a signal (SIGWINCH, a handler without SA_RESTART) sent to the serving thread.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DHMS_FFI_BUILDING=1 -D_GNU_SOURCE -Iinclude -Icsrc \
 *         csrc/[a-z]*.c tests/c/fuzz_server_ring.c -o fuzz_server_ring -pthread
 *   ./fuzz_server_ring -max_total_time=60 -timeout=10 corpus_copy/   (seeds: tests/c/corpus/server_ring/)
 *
 * Input: byte 0 configures the connection (bit 0 announce an arena segment, bit 1 pass a client
 * doorbell, bit 2 ring the doorbell at every publish, bit 3 leave the replies unread, bits 4-5 ring
 * size 4/4/8/16 KiB, bit 6 release arena replies, bit 7 set the request ring's consumer_sleeping word).
 * Then operations, each one opcode byte (low 3 bits pick the operation, see run_op) and its operands;
 * reading past the end gives zeros. tests/c/corpus/gen_seeds.py writes seeds in this format. */
#include "fuzz_util.h"

#include <pthread.h>
#include <signal.h>

#define SVC "fuzz.target"
#define VER "1.0.0"
#define SEG_BYTES 65536u
#define MAX_OPS 256

enum { FN_ECHO = 1, FN_CSUM, FN_BIDI, FN_SLOW, FN_GEN, FN_SINK, FN_FAIL, FN_TAKE, FN_COUNT = FN_TAKE };

static hms_node_t *g_node;
static hms_client_t *g_good;
static int g_base_fds = -1;
static uint64_t g_inputs;
static _Atomic int g_slow_live;
static hms_payload_t g_taken; /* a request kept beyond its call (and its connection) */
static pthread_mutex_t g_taken_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---------------------------------------------------------------- the service */
static uint32_t req_u32(const hms_payload_t *p, uint32_t dflt) {
  uint32_t v;
  if (p->len < 4 || !p->data) return dflt;
  memcpy(&v, p->data, 4);
  return v;
}
static hms_status_t h_echo(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  return hms_call_reply(call, req->data, req->len, req->content_type, NULL);
}
static hms_status_t h_csum(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  (void)req;
  uint32_t n = 0;
  for (;;) {
    hms_payload_t it;
    int end;
    hms_error_t e;
    hms_status_t st = hms_call_recv(call, &it, &end, 20 * FZ_MS, &e);
    if (st != HMS_OK) {
      hms_call_set_error(call, st, e.message, NULL, 0, 0);
      return st;
    }
    if (end) break;
    n += (uint32_t)it.len;
    hms_payload_release(&it);
  }
  return hms_call_reply(call, (const char *)&n, sizeof n, HMS_CT_RAW, NULL);
}
static hms_status_t h_bidi(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  (void)req;
  for (;;) {
    hms_payload_t it;
    int end;
    hms_error_t e;
    hms_status_t st = hms_call_recv(call, &it, &end, 20 * FZ_MS, &e);
    if (st != HMS_OK) {
      hms_call_set_error(call, st, e.message, NULL, 0, 0);
      return st;
    }
    if (end) return HMS_OK;
    st = hms_call_send(call, it.data, it.len, it.content_type, &e);
    hms_payload_release(&it);
    if (st != HMS_OK) return st;
  }
}
typedef struct {
  hms_deferred_t *d;
  uint32_t delay_us;
  size_t len;
  char data[];
} slow_job_t;
static void *slow_thread(void *arg) {
  slow_job_t *j = arg;
  usleep(j->delay_us);
  hms_deferred_reply(j->d, j->data, j->len, HMS_CT_RAW, NULL); /* CANCELLED when the caller went away */
  free(j);
  atomic_fetch_sub(&g_slow_live, 1);
  return NULL;
}
static hms_status_t h_slow(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  if (atomic_load(&g_slow_live) > 32) return hms_call_reply(call, "busy", 4, HMS_CT_RAW, NULL);
  size_t len = req->len > 256 ? 256 : req->len;
  slow_job_t *j = malloc(sizeof *j + len + 1);
  if (!j) return HMS_RESOURCE_EXHAUSTED;
  if (len) memcpy(j->data, req->data, len);
  j->len = len;
  j->delay_us = req_u32(req, 0) % 3000;
  hms_error_t e;
  if (hms_call_defer(call, &j->d, &e) != HMS_OK) { /* streams cannot be deferred */
    free(j);
    hms_call_set_error(call, e.code, e.message, NULL, 0, 0);
    return e.code;
  }
  atomic_fetch_add(&g_slow_live, 1);
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  pthread_t t;
  if (pthread_create(&t, &a, slow_thread, j) != 0) {
    atomic_fetch_sub(&g_slow_live, 1);
    hms_deferred_fail(j->d, HMS_RESOURCE_EXHAUSTED, "no thread", NULL, 0, 0);
    free(j);
  }
  pthread_attr_destroy(&a);
  return HMS_OK;
}
static hms_status_t h_gen(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  uint32_t n = req_u32(req, 3) % 48;
  for (uint32_t i = 0; i < n; i++) {
    char item[32];
    int len = snprintf(item, sizeof item, "item %u", i);
    hms_status_t st = hms_call_send(call, item, (size_t)len, HMS_CT_RAW, NULL);
    if (st != HMS_OK) return st;
  }
  return HMS_OK;
}
static _Atomic uint64_t g_sunk;
static hms_status_t h_sink(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  (void)call;
  atomic_fetch_add(&g_sunk, req->len);
  return HMS_OK;
}
static void h_sink_batch(const hms_batch_t *b, void *ud) {
  (void)ud;
  for (size_t i = 0; i < b->count; i++) {
    if (b->items[i].len != b->offsets[i + 1] - b->offsets[i]) FZ_FINDING("batch item %zu: length disagrees", i);
    atomic_fetch_add(&g_sunk, b->items[i].len);
  }
}
static hms_status_t h_fail(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  hms_call_set_error(call, HMS_FAILED_PRECONDITION, "fuzz failure", req->data, req->len > 64 ? 64 : req->len,
                     req->content_type);
  return HMS_FAILED_PRECONDITION;
}
static hms_status_t h_take(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  hms_payload_t p;
  if (hms_call_take_request(call, &p, NULL) != HMS_OK) return h_echo(call, req, NULL); /* inline request */
  volatile uint8_t sum = 0;
  for (size_t i = 0; i < p.len; i += 4096) sum += ((const uint8_t *)p.data)[i]; /* must stay readable */
  (void)sum;
  pthread_mutex_lock(&g_taken_lock);
  hms_payload_release(&g_taken); /* the previous one, possibly of a connection long gone */
  g_taken = p;
  pthread_mutex_unlock(&g_taken_lock);
  return HMS_OK;
}

static void fz_shutdown(void) {
  hms_client_close(g_good);
  g_good = NULL;
  if (g_node) {
    hms_node_stop(g_node);
    for (int i = 0; i < 300 && atomic_load(&g_slow_live) > 0; i++) usleep(10000);
    hms_node_close(g_node);
    g_node = NULL;
  }
  pthread_mutex_lock(&g_taken_lock);
  hms_payload_release(&g_taken);
  pthread_mutex_unlock(&g_taken_lock);
  fz_rundir_cleanup();
}

static void good_echo(void) {
  char buf[32];
  int n = snprintf(buf, sizeof buf, "good-%llu", (unsigned long long)g_inputs);
  hms_payload_t resp;
  hms_error_t e;
  hms_status_t st = hms_call_bytes(g_good, FN_ECHO, buf, (size_t)n, HMS_CT_RAW, &resp, 2000 * FZ_MS, &e);
  bool ok = st == HMS_OK && resp.len == (size_t)n && memcmp(resp.data, buf, (size_t)n) == 0;
  hms_payload_release(&resp);
  if (!ok) FZ_FINDING("the server stopped serving a well-behaved client: %s: %s", hms_status_str(st), st ? e.message : "wrong bytes");
}

static void on_signal(int sig) { (void)sig; }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fz_rundir_init();
  hms_node_options_t o;
  hms_node_options_init(&o);
  o.name = "fuzz-server";
  o.ring_bytes = 4096; /* max frame 1 KiB: wrap-around and full rings come quickly */
  hms_error_t e;
  hms_service_t *svc;
  if (hms_node_open(&o, &g_node, &e) || hms_service_add(g_node, SVC, VER, &svc, &e) ||
      hms_function_add(svc, "echo", 0, h_echo, NULL, &e) ||
      hms_function_add(svc, "csum", HMS_FN_CLIENT_STREAM, h_csum, NULL, &e) ||
      hms_function_add(svc, "bidi", HMS_FN_STREAM | HMS_FN_CLIENT_STREAM, h_bidi, NULL, &e) ||
      hms_function_add(svc, "slow", 0, h_slow, NULL, &e) || hms_function_add(svc, "gen", HMS_FN_STREAM, h_gen, NULL, &e) ||
      hms_function_add(svc, "sink", 0, h_sink, NULL, &e) ||
      hms_function_set_batch_handler(svc, "sink", h_sink_batch, NULL, &e) ||
      hms_function_add(svc, "fail", 0, h_fail, NULL, &e) || hms_function_add(svc, "take", 0, h_take, NULL, &e) ||
      hms_node_start(g_node, &e) || hms_connect(g_node, SVC, VER, NULL, &g_good, &e))
    FZ_FINDING("setup failed: %s", e.message);
  /* A handler without SA_RESTART: a signal landing on the serving thread interrupts its epoll_wait. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGWINCH, &sa, NULL);
  atexit(fz_shutdown);
  good_echo();
  g_base_fds = fz_count_fds();
  return 0;
}

/* ---------------------------------------------------------------- the raw client */
typedef struct {
  int sock, bell, cbell, segfd;
  uint8_t *map;
  size_t map_len;
  hms__ring_ctl_t *reqc, *respc;
  uint8_t *reqd, *respd;
  uint64_t cap, rcap;
  uint64_t pos;       /* request bytes written */
  uint64_t published; /* what we last stored in head (wild values included) */
  uint64_t rread;     /* response bytes looked at */
  bool broken;        /* the server hung up, or we broke the response ring's bookkeeping */
  uint8_t cfg;
} raw_t;

static void raw_close(raw_t *r) {
  if (r->map) munmap(r->map, r->map_len);
  if (r->sock >= 0) close(r->sock);
  if (r->bell >= 0) close(r->bell);
  if (r->cbell >= 0) close(r->cbell);
  if (r->segfd >= 0) close(r->segfd);
}

static bool raw_connect(raw_t *r, uint8_t cfg) {
  memset(r, 0, sizeof *r);
  r->sock = r->bell = r->cbell = r->segfd = -1;
  r->cfg = cfg;
  r->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (r->sock < 0) return false;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s@%s.sock", fz_rundir, SVC, VER);
  if (connect(r->sock, (struct sockaddr *)&sa, sizeof sa) != 0) FZ_FINDING("connect: %s", strerror(errno));
  static const uint64_t rings[4] = {0, 4096, 8192, 16384};
  hms__hello_t h;
  memset(&h, 0, sizeof h);
  h.magic = HMS__HELLO_MAGIC;
  h.abi = HMS_FFI_ABI_VERSION;
  h.proto = HMS__PROTO_VERSION;
  h.ring_bytes = rings[(cfg >> 4) & 3];
  hms__strlcpy(h.service, SVC, sizeof h.service);
  hms__strlcpy(h.version, VER, sizeof h.version);
  hms__strlcpy(h.client_node, "fuzz-raw", sizeof h.client_node);
  if (cfg & 2) r->cbell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fz_send(r->sock, &h, sizeof h, &r->cbell, r->cbell >= 0) != (ssize_t)sizeof h) FZ_FINDING("hello not sent");
  hms__welcome_t w;
  int fds[4], nfds;
  ssize_t n = fz_recv(r->sock, &w, sizeof w, fds, 4, &nfds, 2000);
  if (n != (ssize_t)sizeof w || w.magic != HMS__WELCOME_MAGIC || w.status != HMS_OK || nfds != 2)
    FZ_FINDING("the server refused a valid handshake: %zd bytes, status %d, %d fds: %.200s", n, w.status, nfds,
               n > 0 ? w.message : "");
  r->bell = fds[1];
  r->cap = w.req_cap;
  r->rcap = w.resp_cap;
  if (!hms__is_pow2(r->cap) || r->cap != r->rcap || w.total_bytes != hms__conn_total_bytes(r->cap, r->rcap, w.table_bytes))
    FZ_FINDING("the server's welcome is inconsistent");
  void *m = mmap(NULL, w.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
  close(fds[0]);
  if (m == MAP_FAILED) FZ_FINDING("mmap: %s", strerror(errno));
  r->map = m;
  r->map_len = w.total_bytes;
  r->reqc = (hms__ring_ctl_t *)(r->map + HMS__REQ_CTL_OFFSET);
  r->respc = (hms__ring_ctl_t *)(r->map + HMS__RESP_CTL_OFFSET);
  r->reqd = r->map + HMS__CONN_HEADER_BYTES;
  r->respd = r->map + HMS__CONN_HEADER_BYTES + r->cap;
  if (cfg & 1) { /* an arena segment of ours, announced like the real client does */
    void *seg = NULL;
    char why[160];
    r->segfd = hms__memfd_create_sealed(SEG_BYTES, &seg, why, sizeof why);
    if (r->segfd < 0) FZ_FINDING("memfd: %s", why);
    for (uint32_t i = 0; i < SEG_BYTES; i++) ((uint8_t *)seg)[i] = (uint8_t)(i * 31u);
    munmap(seg, SEG_BYTES);
    struct {
      hms__amsg_hdr_t h;
      hms__amsg_segment_t s;
    } msg = {{HMS__AMSG_MAGIC, HMS__AMSG_SEGMENT, 0, 0}, {0, 0, SEG_BYTES}};
    fz_send(r->sock, &msg, sizeof msg, &r->segfd, 1);
  }
  return true;
}

static void raw_ring(raw_t *r) {
  uint64_t one = 1;
  ssize_t k = write(r->bell, &one, sizeof one);
  (void)k;
}
static void raw_publish(raw_t *r, uint64_t head) {
  r->published = head;
  atomic_store_explicit(&r->reqc->head, head, memory_order_release);
  if (r->cfg & 4) raw_ring(r);
}

static bool raw_hup(raw_t *r) {
  if (r->broken) return true;
  struct pollfd p = {.fd = r->sock, .events = POLLRDHUP};
  if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR))) r->broken = true;
  return r->broken;
}

/* Reads the replies the server published, checking that every frame it wrote is well formed: the
 * server must never corrupt its own ring, whatever the client did. */
static void raw_read_replies(raw_t *r, bool consume) {
  if (r->broken) return;
  uint64_t head = atomic_load_explicit(&r->respc->head, memory_order_acquire);
  if (head < r->rread || head - r->rread > r->rcap || (head & 63))
    FZ_FINDING("server published response head %llu (read %llu, capacity %llu)", (unsigned long long)head,
               (unsigned long long)r->rread, (unsigned long long)r->rcap);
  while (r->rread < head) {
    uint64_t off = r->rread & (r->rcap - 1);
    hms__frame_hdr_t h;
    memcpy(&h, r->respd + off, sizeof h);
    uint64_t contig = r->rcap - off;
    if (h.len < 64 || (h.len & 63) || h.len > head - r->rread || h.len > contig)
      FZ_FINDING("server wrote a response frame of length %u at offset %llu (published %llu)", h.len,
                 (unsigned long long)off, (unsigned long long)(head - r->rread));
    if (h.kind == HMS__FRAME_PAD) {
      if (h.len != contig) FZ_FINDING("server wrote a short PAD frame");
    } else if (h.kind != HMS__FRAME_RESPONSE) {
      FZ_FINDING("server wrote frame kind %u into the response ring", h.kind);
    } else if (h.payload_len > h.len - 64 || h.len > r->rcap / 4) {
      FZ_FINDING("server wrote payload length %u in a %u-byte frame", h.payload_len, h.len);
    } else if ((h.flags & HMS__FRAME_F_ARENA) && h.payload_len != sizeof(hms__aref_wire_t)) {
      FZ_FINDING("server wrote an arena reply of %u bytes", h.payload_len);
    } else if ((h.flags & HMS__FRAME_F_ARENA) && (r->cfg & 0x40)) {
      hms__aref_wire_t w; /* give the block back, as a real client would */
      memcpy(&w, r->respd + off + 64, sizeof w);
      struct {
        hms__amsg_hdr_t h;
        hms__amsg_release_t rel;
      } msg = {{HMS__AMSG_MAGIC, HMS__AMSG_RELEASE, 1, 0}, {w.segment, w.generation, w.offset}};
      fz_send(r->sock, &msg, sizeof msg, NULL, 0);
    }
    r->rread += h.len;
  }
  if (consume) {
    atomic_store_explicit(&r->respc->tail, r->rread, memory_order_release);
    if (atomic_exchange(&r->respc->producer_waiting, 0)) raw_ring(r);
  }
}

/* Room for `total` more request bytes, reading replies meanwhile so the server can go on. */
static bool raw_room(raw_t *r, uint64_t total) {
  int64_t end = fz_now() + 200 * FZ_MS;
  for (;;) {
    uint64_t tail = atomic_load_explicit(&r->reqc->tail, memory_order_acquire);
    if (tail <= r->pos && r->pos - tail + total <= r->cap) return true;
    if (tail > r->pos) return false; /* our head was wild: the server is gone or going */
    if (raw_hup(r) || fz_now() > end) return false;
    if (r->published != r->pos) raw_publish(r, r->pos);
    raw_ring(r);
    raw_read_replies(r, !(r->cfg & 8));
    usleep(50);
  }
}

/* ---------------------------------------------------------------- the program */
static uint64_t pick_deadline(uint8_t sel) {
  switch (sel & 3) {
    case 0:
      return 0;
    case 1:
      return 1; /* long past */
    case 2:
      return (uint64_t)(fz_now() + 1000 * FZ_MS);
    default:
      return (uint64_t)(fz_now() + 2 * FZ_MS);
  }
}

static void op_frame(raw_t *r, fz_in_t *in, uint8_t op) {
  uint8_t ksel = fz_u8(in), flags = fz_u8(in), fsel = fz_u8(in), isel = fz_u8(in), misc = fz_u8(in),
          lmode = fz_u8(in);
  uint16_t plen = fz_u16(in);
  uint16_t kind = (uint16_t)(ksel % 8); /* 1..6 are real kinds, 0 and 7 are not */
  if (ksel >= 0xF8) kind = fz_u16(in);
  uint32_t fn = fsel % 10; /* 0 and 9 name no function */
  if (fsel >= 0xF0) fn = fz_u32(in);
  uint64_t id = isel % 24; /* small ids, so CANCEL/DATA/END meet the requests they name */
  if (isel >= 0xF0) id = fz_u64(in);
  uint8_t payload[4096]; /* the largest ring (16 KiB) carries 4 KiB frames */
  uint32_t max_payload = (uint32_t)(r->cap / 4 - 64);
  if (flags & HMS__FRAME_F_ARENA && !(lmode & 0x10)) {
    /* an arena reference: mostly near our segment, sometimes anywhere */
    hms__aref_wire_t w;
    w.segment = fz_u8(in) % 3 == 0 ? 0 : fz_u8(in);
    w.generation = fz_u32(in);
    uint32_t o = fz_u32(in), l = fz_u32(in);
    w.offset = (lmode & 0x20) ? fz_u64(in) : o % (SEG_BYTES + 64);
    w.length = (lmode & 0x40) ? fz_u64(in) : l % (SEG_BYTES + 64);
    w.reserved = 0;
    memcpy(payload, &w, sizeof w);
    plen = sizeof w;
  } else {
    plen = (uint16_t)(plen % (max_payload + 1));
    fz_take(in, payload, plen);
  }
  hms__frame_hdr_t h = fz_hdr((uint32_t)hms__frame_bytes(plen), kind, flags, fn, id, plen);
  h.deadline_ns = (int64_t)pick_deadline(misc);
  h.content_type = (misc >> 2) & 7;
  h.status = (misc & 0x20) ? (int32_t)fz_u32(in) : 0;
  if (misc & 0x40) fz_take(in, h.trace_id, 24);
  if ((lmode & 3) == 3) h.len = fz_u32(in);            /* wild length */
  if (lmode & 4) h.payload_len = fz_u32(in);           /* wild payload length */
  uint64_t need = hms__frame_bytes(plen);
  uint64_t off = r->pos & (r->cap - 1), contig = r->cap - off;
  bool wrap = need > contig;
  if (!raw_room(r, wrap ? contig + need : need)) return;
  if (wrap) {
    if (lmode & 8) { /* no PAD: the frame claims to run past the end (the server must refuse it) */
      memcpy(r->reqd + off, &h, sizeof h);
      r->pos += need;
      goto out;
    }
    hms__frame_hdr_t pad = fz_hdr((uint32_t)contig, HMS__FRAME_PAD, 0, 0, 0, 0);
    memcpy(r->reqd + off, &pad, sizeof pad);
    r->pos += contig;
    off = 0;
  }
  memcpy(r->reqd + off, &h, sizeof h);
  memcpy(r->reqd + off + 64, payload, plen);
  r->pos += need;
out:
  if (op & 0x80) raw_publish(r, r->pos);
}

static void op_head(raw_t *r, fz_in_t *in) {
  uint8_t sel = fz_u8(in);
  switch (sel % 5) {
    case 0:
      raw_publish(r, r->pos);
      break;
    case 1:
      raw_publish(r, r->pos + 64ull * (sel >> 3)); /* bytes never written */
      break;
    case 2:
      raw_publish(r, fz_u64(in));
      break;
    case 3:
      raw_publish(r, r->pos - 64); /* backwards, or half a frame */
      break;
    default:
      raw_publish(r, r->pos + (sel >> 3)); /* unaligned */
      break;
  }
  raw_ring(r);
}

static void op_replies(raw_t *r, fz_in_t *in) {
  uint8_t sel = fz_u8(in);
  switch (sel % 4) {
    case 0:
    case 1:
      raw_read_replies(r, true);
      break;
    case 2: { /* a wild response tail: from now on the reply ring is the server's problem, not ours */
      uint64_t t = (sel & 0x80) ? fz_u64(in) : r->rread + 64ull * ((sel >> 2) & 15);
      atomic_store(&r->respc->tail, t);
      r->broken = true; /* stop reading replies: their frames are no longer ours to trust */
      raw_ring(r);
      break;
    }
    default: /* wait a little for the server, reading nothing */
      usleep((sel >> 2) * 20u);
      break;
  }
}

static void op_words(raw_t *r, fz_in_t *in) {
  uint8_t sel = fz_u8(in);
  uint32_t v = fz_u32(in);
  switch (sel % 6) {
    case 0:
      atomic_store(&r->reqc->cancels, v);
      break;
    case 1:
      atomic_store(&r->reqc->consumer_sleeping, v);
      break;
    case 2:
      atomic_store(&r->reqc->data_seq, v);
      break;
    case 3:
      atomic_store(&r->respc->producer_waiting, v);
      break;
    case 4:
      atomic_store(&r->respc->consumer_sleeping, v & 3);
      break;
    default: /* the arena release hints in the header page */
      atomic_store((_Atomic uint32_t *)(r->map + ((sel & 8) ? HMS__ARENA_C2S_HINT_OFFSET : HMS__ARENA_S2C_HINT_OFFSET)), v);
      break;
  }
  raw_ring(r);
}

static void op_socket(raw_t *r, fz_in_t *in) {
  uint8_t sel = fz_u8(in);
  uint8_t buf[sizeof(hms__amsg_hdr_t) + 8 * sizeof(hms__amsg_release_t)];
  size_t len;
  int fd = -1;
  switch (sel % 4) {
    case 0: { /* a release of blocks the server may or may not have sent */
      uint32_t count = fz_u8(in) % 9;
      hms__amsg_hdr_t h = {HMS__AMSG_MAGIC, HMS__AMSG_RELEASE, count, 0};
      if (sel & 0x10) h.count = fz_u32(in);
      memcpy(buf, &h, sizeof h);
      fz_take(in, buf + sizeof h, count * sizeof(hms__amsg_release_t));
      len = sizeof h + count * sizeof(hms__amsg_release_t);
      break;
    }
    case 1: { /* a segment announcement with a descriptor of any kind and any claimed size */
      hms__amsg_hdr_t h = {HMS__AMSG_MAGIC, HMS__AMSG_SEGMENT, 0, 0};
      hms__amsg_segment_t s = {fz_u8(in) % 70, 0, fz_u16(in) * 64ull};
      if (sel & 0x10) s.size = fz_u64(in);
      memcpy(buf, &h, sizeof h);
      memcpy(buf + sizeof h, &s, sizeof s);
      len = sizeof h + sizeof s;
      fd = fz_make_fd((sel >> 5) % FZ_FD_KINDS, s.size <= (1u << 20) ? s.size : 4096);
      break;
    }
    default: /* bytes */
      len = fz_u8(in) % sizeof buf;
      fz_take(in, buf, len);
      if (sel & 0x20) fd = fz_make_fd(FZ_FD_EVENTFD, 0);
      break;
  }
  fz_send(r->sock, buf, len, &fd, fd >= 0);
  if (fd >= 0) close(fd);
  raw_ring(r);
}

static void op_scribble(raw_t *r, fz_in_t *in) {
  uint16_t at = fz_u16(in);
  uint8_t n = fz_u8(in) % 65;
  uint8_t b[64];
  fz_take(in, b, n);
  uint64_t off = (r->pos + at) & (r->cap - 1); /* ahead of us, or already published when at wraps */
  if (off + n > r->cap) n = (uint8_t)(r->cap - off);
  memcpy(r->reqd + off, b, n);
}

static void run_op(raw_t *r, fz_in_t *in) {
  uint8_t op = fz_u8(in);
  switch (op & 7) {
    case 0:
    case 1:
    case 2:
      op_frame(r, in, op);
      break;
    case 3:
      op_head(r, in);
      break;
    case 4:
      op_replies(r, in);
      break;
    case 5:
      op_words(r, in);
      break;
    case 6:
      op_socket(r, in);
      break;
    default:
      op_scribble(r, in);
      break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  g_inputs++;
  fz_in_t in = {data, size};
  /* Regression: a signal on the serving thread used to end hms_node_start()'s thread (the node was
   * left unserved); every input now begins with one. */
  pthread_kill(g_node->thread, SIGWINCH);
  raw_t r;
  raw_connect(&r, fz_u8(&in));
  if (r.cfg & 0x80) atomic_store(&r.reqc->consumer_sleeping, 1);
  for (int i = 0; i < MAX_OPS && fz_more(&in) && !raw_hup(&r); i++) run_op(&r, &in);
  /* Publish what is left and let the server work through it (or drop us). */
  if (!r.broken && r.published != r.pos && r.published <= r.pos && r.pos - r.published <= r.cap)
    raw_publish(&r, r.pos);
  raw_ring(&r);
  int64_t end = fz_now() + 300 * FZ_MS;
  while (!raw_hup(&r) && fz_now() < end) {
    raw_read_replies(&r, !(r.cfg & 8));
    if (atomic_load_explicit(&r.reqc->tail, memory_order_acquire) == r.published) break;
    usleep(100);
  }
  raw_read_replies(&r, !(r.cfg & 8));
  raw_close(&r);
  for (int i = 0; !atomic_load(&g_node->serving); i++) /* between two serve calls it is 0 for a moment */
    if (i == 100) FZ_FINDING("the node's serving thread returned: nobody serves the node any more");
    else usleep(1000);
  good_echo();
  /* Every descriptor of a closed connection must come back (a dropped one at once; one with a
   * deferred reply out when its thread answered). Checked now and then: it costs a directory scan. */
  static int every = -1;
  if (every < 0) every = getenv("HMS_FUZZ_FD_EVERY") ? 1 : 128;
  if (g_inputs % (uint64_t)every == 0) {
    int now = -1;
    for (int i = 0; i < 200; i++) {
      now = fz_count_fds();
      if (now <= g_base_fds) break;
      usleep(5000);
    }
    if (now > g_base_fds) {
      fz_list_fds();
      fprintf(stderr, "deferred replies in flight: %d\n", atomic_load(&g_slow_live));
      FZ_FINDING("descriptors leak: %d open after the raw connections closed, %d at start", now, g_base_fds);
    }
  }
  return 0;
}
