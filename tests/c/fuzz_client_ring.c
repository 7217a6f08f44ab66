/* libFuzzer target: a hostile SERVER's response ring against a real client.
 *
 * This process registers "fuzz.fake"@1.0.0 with the real registry but never serves it: a thread accepts
 * each connection by hand on the service's socket, answers the handshake properly (sealed memfd with a
 * valid layout and function table, doorbell eventfd), may announce an arena segment, then reads the
 * client's requests and writes the fuzz input into the response ring as frames: replies to the real call
 * ids and to ids nobody asked for, stream items where none belong, finals twice, error payloads with wild
 * message lengths, arena references valid and bogus, PAD frames, wild lengths, wild heads, a wild request
 * tail; it also scribbles on control words and sends messages on the socket. Then it hangs up. On the main
 * thread a real client (hms_connect) makes calls of every kind meanwhile: sync, submit + poll, batch,
 * server/client/bidirectional streams, one-way, arena (loaned block) requests.
 *
 * Findings: a crash or sanitizer report; a call that does not return within 3 s of the server hanging up
 * (the client must fail with an error, never hang); a descriptor left open after hms_client_close().
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DHMS_FFI_BUILDING=1 -D_GNU_SOURCE -Iinclude -Icsrc \
 *         csrc/[a-z]*.c tests/c/fuzz_client_ring.c -o fuzz_client_ring -pthread
 *   ./fuzz_client_ring -max_total_time=60 -timeout=10 corpus_copy/   (seeds: tests/c/corpus/client_ring/)
 *
 * Input: byte 0 configures the fake server (bit 0 announce an arena segment, bit 1 ring size 8 KiB
 * instead of 4, bit 2 wake the client after every publish), byte 1 picks the client's calls (bits 0-2
 * the kind, bit 3 a second round, bits 4-5 the second kind's offset), then the server's operations (low
 * 3 bits of each opcode, see run_op). */
#include "fuzz_util.h"

#include <pthread.h>

#define SVC "fuzz.fake"
#define VER "1.0.0"
#define SEG_BYTES 65536u
#define MAX_OPS 256
#define MAX_IDS 64

static hms_node_t *g_node;
static hms_service_t *g_svc;
static int g_base_fds = -1;

/* ---------------------------------------------------------------- the fake server (its own thread) */
typedef struct {
  int sock, bell, cbell, segfd;
  uint8_t *map;
  size_t map_len;
  uint64_t cap;
  hms__ring_ctl_t *reqc, *respc;
  uint8_t *reqd, *respd;
  uint64_t req_pos;   /* request bytes consumed */
  uint64_t pos;       /* response bytes written */
  uint64_t published; /* what head says */
  uint64_t ids[MAX_IDS];
  uint32_t fns[MAX_IDS];
  int nids;
  uint8_t cfg;
  bool req_broken; /* the client's request ring looked corrupt (it must not: it is the real client) */
} fake_t;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static const uint8_t *g_data;
static size_t g_size;
static bool g_have_job, g_server_done, g_client_done, g_quit;

static void fake_wake(fake_t *f) {
  atomic_fetch_add_explicit(&f->respc->data_seq, 1, memory_order_release);
  hms__futex_wake(&f->respc->data_seq, INT_MAX, 1);
  if (f->cbell >= 0) {
    uint64_t one = 1;
    ssize_t k = write(f->cbell, &one, sizeof one);
    (void)k;
  }
}
static void fake_publish(fake_t *f, uint64_t head) {
  f->published = head;
  atomic_store_explicit(&f->respc->head, head, memory_order_release);
  if (f->cfg & 4) fake_wake(f);
}

/* Reads the requests the client published (up to wait_ms for the first), remembering their ids. */
static void fake_read_requests(fake_t *f, int wait_ms) {
  int64_t end = fz_now() + (int64_t)wait_ms * FZ_MS;
  for (;;) {
    uint64_t head = atomic_load_explicit(&f->reqc->head, memory_order_acquire);
    if (head < f->req_pos || head - f->req_pos > f->cap || (head & 63)) {
      f->req_broken = true;
      return;
    }
    bool got = false;
    while (f->req_pos < head) {
      uint64_t off = f->req_pos & (f->cap - 1);
      hms__frame_hdr_t h;
      memcpy(&h, f->reqd + off, sizeof h);
      if (h.len < 64 || (h.len & 63) || h.len > head - f->req_pos || h.len > f->cap - off) {
        f->req_broken = true;
        return;
      }
      f->req_pos += h.len;
      if (h.kind == HMS__FRAME_REQUEST && f->nids < MAX_IDS) {
        f->ids[f->nids] = h.call_id;
        f->fns[f->nids++] = h.fn_id;
      }
      got = true;
    }
    atomic_store_explicit(&f->reqc->tail, f->req_pos, memory_order_release);
    if (atomic_exchange(&f->reqc->producer_waiting, 0)) {
      atomic_fetch_add(&f->reqc->space_seq, 1);
      hms__futex_wake(&f->reqc->space_seq, INT_MAX, 1);
    }
    if (got || fz_now() >= end) return;
    struct pollfd p = {.fd = f->bell, .events = POLLIN};
    poll(&p, 1, 1);
    uint64_t v;
    ssize_t k = read(f->bell, &v, sizeof v);
    (void)k;
  }
}

/* Room for `total` response bytes: the real client consumes what we publish (wakes included). */
static bool fake_room(fake_t *f, uint64_t total) {
  int64_t end = fz_now() + 50 * FZ_MS;
  for (;;) {
    uint64_t tail = atomic_load_explicit(&f->respc->tail, memory_order_acquire);
    if (tail <= f->pos && f->pos - tail + total <= f->cap) return true;
    if (tail > f->pos || fz_now() > end) return false;
    if (f->published != f->pos && f->published <= f->pos) fake_publish(f, f->pos);
    fake_wake(f);
    usleep(100);
  }
}

static uint64_t pick_id(fake_t *f, fz_in_t *in) {
  uint8_t sel = fz_u8(in);
  if (sel >= 0xF0) return fz_u64(in);
  if (sel >= 0xE0) return 0; /* the server's goodbye */
  if (f->nids == 0) fake_read_requests(f, 20);
  if (f->nids == 0) return sel % 8;
  uint64_t id = f->ids[sel % f->nids];
  return (sel & 0x40) ? id + 1 : id; /* next to a real one: not yet asked */
}

static void op_frame(fake_t *f, fz_in_t *in, uint8_t op) {
  uint8_t ksel = fz_u8(in), flags = fz_u8(in), ssel = fz_u8(in), pmode = fz_u8(in);
  uint16_t plen = fz_u16(in);
  uint64_t id = pick_id(f, in);
  uint16_t kind = ksel % 8 < 5 ? HMS__FRAME_RESPONSE : ksel % 8 == 5 ? HMS__FRAME_PAD : ksel % 8 == 6 ? fz_u16(in) : 0;
  int32_t status = ssel % 20 < 17 ? (int32_t)(ssel % 20) : ssel % 20 == 17 ? (int32_t)fz_u32(in) : 0;
  uint8_t payload[2048];
  uint32_t max_payload = (uint32_t)(f->cap / 4 - 64);
  if ((flags & HMS__FRAME_F_ARENA) && !(pmode & 1)) {
    hms__aref_wire_t w;
    w.segment = (pmode & 2) ? fz_u8(in) : 0;
    w.generation = fz_u32(in);
    w.offset = (pmode & 4) ? fz_u64(in) : fz_u16(in) % (SEG_BYTES + 64);
    w.length = (pmode & 8) ? fz_u64(in) : fz_u16(in) % (SEG_BYTES + 64);
    w.reserved = 0;
    memcpy(payload, &w, sizeof w);
    plen = sizeof w;
  } else if (status != 0 && !(pmode & 1)) {
    /* an error: {u32 message length, message}, the length sometimes wild */
    uint32_t mlen = fz_u8(in) % 200;
    uint32_t claimed = (pmode & 16) ? fz_u32(in) : mlen;
    memcpy(payload, &claimed, 4);
    fz_take(in, payload + 4, mlen);
    plen = (uint16_t)(4 + mlen);
  } else {
    plen = (uint16_t)(plen % (max_payload + 1));
    fz_take(in, payload, plen);
  }
  hms__frame_hdr_t h = fz_hdr((uint32_t)hms__frame_bytes(plen), kind, flags, 0, id, plen);
  h.status = status;
  h.content_type = (pmode >> 5) & 7;
  if ((pmode & 0x60) == 0x60) h.len = fz_u32(in);
  if ((pmode & 0x90) == 0x90) h.payload_len = fz_u32(in);
  uint64_t need = hms__frame_bytes(plen);
  uint64_t off = f->pos & (f->cap - 1), contig = f->cap - off;
  bool wrap = need > contig;
  if (!fake_room(f, wrap ? contig + need : need)) return;
  if (wrap) {
    hms__frame_hdr_t pad = fz_hdr((uint32_t)contig, HMS__FRAME_PAD, 0, 0, 0, 0);
    if (kind == HMS__FRAME_PAD) pad.len = (uint32_t)(contig / 2) & ~63u; /* a short PAD */
    memcpy(f->respd + off, &pad, sizeof pad);
    f->pos += contig;
    off = 0;
  }
  memcpy(f->respd + off, &h, sizeof h);
  memcpy(f->respd + off + 64, payload, plen);
  f->pos += need;
  if (op & 0x80) fake_publish(f, f->pos);
}

static void op_head(fake_t *f, fz_in_t *in) {
  uint8_t sel = fz_u8(in);
  switch (sel % 5) {
    case 0:
      fake_publish(f, f->pos);
      break;
    case 1:
      fake_publish(f, f->pos + 64ull * (sel >> 3));
      break;
    case 2:
      fake_publish(f, fz_u64(in));
      break;
    case 3:
      fake_publish(f, f->pos - 64);
      break;
    default:
      fake_publish(f, f->pos + (sel >> 3));
      break;
  }
  fake_wake(f);
}

static void op_words(fake_t *f, fz_in_t *in) {
  uint8_t sel = fz_u8(in);
  uint64_t v = fz_u64(in);
  switch (sel % 6) {
    case 0: /* the request ring's tail: the client's producer side must validate it */
      atomic_store(&f->reqc->tail, (sel & 8) ? v : f->req_pos + 64 * (v & 15));
      break;
    case 1:
      atomic_store(&f->reqc->space_seq, (uint32_t)v);
      hms__futex_wake(&f->reqc->space_seq, INT_MAX, 1);
      break;
    case 2:
      atomic_store(&f->respc->consumer_sleeping, (uint32_t)v);
      break;
    case 3:
      atomic_store(&f->respc->data_seq, (uint32_t)v);
      break;
    case 4:
      atomic_store(&f->reqc->consumer_sleeping, (uint32_t)v);
      break;
    default:
      atomic_store((_Atomic uint32_t *)(f->map + ((sel & 8) ? HMS__ARENA_C2S_HINT_OFFSET : HMS__ARENA_S2C_HINT_OFFSET)),
                   (uint32_t)v);
      break;
  }
  fake_wake(f);
}

static void op_socket(fake_t *f, fz_in_t *in) {
  uint8_t sel = fz_u8(in);
  uint8_t buf[sizeof(hms__amsg_hdr_t) + 8 * sizeof(hms__amsg_release_t)];
  size_t len;
  int fd = -1;
  switch (sel % 4) {
    case 0: {
      uint32_t count = fz_u8(in) % 9;
      hms__amsg_hdr_t h = {HMS__AMSG_MAGIC, HMS__AMSG_RELEASE, count, 0};
      if (sel & 0x10) h.count = fz_u32(in);
      memcpy(buf, &h, sizeof h);
      fz_take(in, buf + sizeof h, count * sizeof(hms__amsg_release_t));
      len = sizeof h + count * sizeof(hms__amsg_release_t);
      break;
    }
    case 1: {
      hms__amsg_hdr_t h = {HMS__AMSG_MAGIC, HMS__AMSG_SEGMENT, 0, 0};
      hms__amsg_segment_t s = {fz_u8(in) % 70, 0, fz_u16(in) * 64ull};
      if (sel & 0x10) s.size = fz_u64(in);
      memcpy(buf, &h, sizeof h);
      memcpy(buf + sizeof h, &s, sizeof s);
      len = sizeof h + sizeof s;
      fd = fz_make_fd((sel >> 5) % FZ_FD_KINDS, s.size <= (1u << 20) ? s.size : 4096);
      break;
    }
    default:
      len = fz_u8(in) % sizeof buf;
      fz_take(in, buf, len);
      if (sel & 0x20) fd = fz_make_fd(FZ_FD_EVENTFD, 0);
      break;
  }
  fz_send(f->sock, buf, len, &fd, fd >= 0);
  if (fd >= 0) close(fd);
  fake_wake(f);
}

static void op_scribble(fake_t *f, fz_in_t *in) {
  uint16_t at = fz_u16(in);
  uint8_t n = fz_u8(in) % 65;
  uint8_t b[64];
  fz_take(in, b, n);
  uint64_t off = (f->pos + at) & (f->cap - 1);
  if (off + n > f->cap) n = (uint8_t)(f->cap - off);
  memcpy(f->respd + off, b, n);
  fake_wake(f);
}

static void run_op(fake_t *f, fz_in_t *in) {
  uint8_t op = fz_u8(in);
  switch (op & 7) {
    case 0:
    case 1:
    case 2:
      op_frame(f, in, op);
      break;
    case 3:
      op_head(f, in);
      break;
    case 4:
      fake_read_requests(f, fz_u8(in) % 8);
      break;
    case 5:
      op_words(f, in);
      break;
    case 6:
      op_socket(f, in);
      break;
    default:
      op_scribble(f, in);
      break;
  }
}

static bool client_done(void) {
  pthread_mutex_lock(&g_lock);
  bool d = g_client_done;
  pthread_mutex_unlock(&g_lock);
  return d;
}

static void fake_serve_one(const uint8_t *data, size_t size) {
  fake_t f;
  memset(&f, 0, sizeof f);
  f.sock = f.bell = f.cbell = f.segfd = -1;
  fz_in_t in = {data, size};
  f.cfg = fz_u8(&in);
  fz_u8(&in); /* the client's byte */
  struct pollfd lp = {.fd = g_svc->listen_fd, .events = POLLIN};
  if (poll(&lp, 1, 2000) <= 0) FZ_FINDING("the client never connected");
  f.sock = accept4(g_svc->listen_fd, NULL, NULL, SOCK_CLOEXEC);
  if (f.sock < 0) FZ_FINDING("accept: %s", strerror(errno));
  hms__hello_t hello;
  int fds[4], nfds;
  if (fz_recv(f.sock, &hello, sizeof hello, fds, 4, &nfds, 2000) != (ssize_t)sizeof hello ||
      hello.magic != HMS__HELLO_MAGIC)
    FZ_FINDING("the client sent a bad hello");
  if (nfds >= 1) f.cbell = fds[0];
  for (int i = 1; i < nfds; i++) close(fds[i]);
  /* the connection: header, rings, table {f: plain, s: server stream, c: client stream, b: bidi} */
  f.cap = (f.cfg & 2) ? 8192 : 4096;
  static const char *const names[] = {"f", "s", "c", "b"};
  static const uint32_t flags[] = {0, HMS_FN_STREAM, HMS_FN_CLIENT_STREAM, HMS_FN_STREAM | HMS_FN_CLIENT_STREAM};
  uint8_t table[64];
  size_t tb = 0;
  for (uint32_t i = 0; i < 4; i++) {
    uint32_t rec[3] = {i + 1, flags[i], 1};
    memcpy(table + tb, rec, 12);
    memset(table + tb + 12, 0, 4);
    table[tb + 12] = (uint8_t)names[i][0];
    tb += 16;
  }
  uint64_t total = hms__conn_total_bytes(f.cap, f.cap, tb);
  void *map = NULL;
  char why[160];
  int memfd = hms__memfd_create_sealed(total, &map, why, sizeof why);
  if (memfd < 0) FZ_FINDING("memfd: %s", why);
  f.map = map;
  f.map_len = total;
  hms__conn_hdr_t *ch = map;
  ch->magic = HMS__CONN_MAGIC;
  ch->proto = HMS__PROTO_VERSION;
  ch->header_bytes = HMS__CONN_HEADER_BYTES;
  ch->req_cap = ch->resp_cap = f.cap;
  ch->table_bytes = tb;
  ch->total_bytes = total;
  f.reqc = (hms__ring_ctl_t *)(f.map + HMS__REQ_CTL_OFFSET);
  f.respc = (hms__ring_ctl_t *)(f.map + HMS__RESP_CTL_OFFSET);
  f.reqd = f.map + HMS__CONN_HEADER_BYTES;
  f.respd = f.reqd + f.cap;
  memcpy(f.respd + f.cap, table, tb);
  atomic_store(&f.reqc->consumer_sleeping, HMS__SLEEP_FUTEX); /* the client rings our bell per request */
  hms__welcome_t w;
  memset(&w, 0, sizeof w);
  w.magic = HMS__WELCOME_MAGIC;
  w.abi = HMS_FFI_ABI_VERSION;
  w.proto = HMS__PROTO_VERSION;
  w.req_cap = w.resp_cap = f.cap;
  w.table_bytes = tb;
  w.total_bytes = total;
  w.function_count = 4;
  f.bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int sfds[2] = {memfd, f.bell};
  fz_send(f.sock, &w, sizeof w, sfds, 2);
  close(memfd);
  if (f.cfg & 1) {
    void *seg = NULL;
    f.segfd = hms__memfd_create_sealed(SEG_BYTES, &seg, why, sizeof why);
    if (f.segfd < 0) FZ_FINDING("memfd: %s", why);
    memset(seg, 0x5a, SEG_BYTES);
    munmap(seg, SEG_BYTES);
    struct {
      hms__amsg_hdr_t h;
      hms__amsg_segment_t s;
    } msg = {{HMS__AMSG_MAGIC, HMS__AMSG_SEGMENT, 0, 0}, {0, 0, SEG_BYTES}};
    fz_send(f.sock, &msg, sizeof msg, &f.segfd, 1);
  }
  fake_read_requests(&f, 200);
  for (int i = 0; i < MAX_OPS && fz_more(&in) && !client_done(); i++) run_op(&f, &in);
  if (f.published <= f.pos && f.pos - f.published <= f.cap) fake_publish(&f, f.pos);
  fake_wake(&f);
  for (int i = 0; i < 20 && !client_done(); i++) usleep(1000);
  /* Hang up: every call still waiting must now fail (UNAVAILABLE), and soon. */
  close(f.sock);
  f.sock = -1;
  int64_t hangup = fz_now();
  while (!client_done()) {
    if (fz_now() - hangup > 3000 * FZ_MS) FZ_FINDING("a client call still waits 3 s after the server hung up");
    usleep(200);
  }
  munmap(f.map, f.map_len);
  close(f.bell);
  if (f.cbell >= 0) close(f.cbell);
  if (f.segfd >= 0) close(f.segfd);
  if (f.req_broken) FZ_FINDING("the real client wrote a corrupt request ring");
}

static void *fake_thread(void *arg) {
  (void)arg;
  pthread_mutex_lock(&g_lock);
  for (;;) {
    while (!g_have_job && !g_quit) pthread_cond_wait(&g_cond, &g_lock);
    if (g_quit) break;
    g_have_job = false;
    const uint8_t *d = g_data;
    size_t n = g_size;
    pthread_mutex_unlock(&g_lock);
    fake_serve_one(d, n);
    pthread_mutex_lock(&g_lock);
    g_server_done = true;
    pthread_cond_broadcast(&g_cond);
  }
  pthread_mutex_unlock(&g_lock);
  return NULL;
}

/* ---------------------------------------------------------------- the real client */
static void touch(const hms_payload_t *p) {
  volatile uint8_t s = 0;
  for (size_t i = 0; i < p->len; i++) s += ((const uint8_t *)p->data)[i];
  (void)s;
}

#define TMO (200 * FZ_MS)
static void client_round(hms_client_t *cl, int kind) {
  hms_error_t e;
  hms_payload_t resp;
  switch (kind & 7) {
    case 0:
      if (hms_call_bytes(cl, 1, "hello", 5, HMS_CT_RAW, &resp, TMO, &e) == HMS_OK) touch(&resp);
      hms_payload_release(&resp);
      break;
    case 1: {
      uint64_t id;
      hms_call_submit(cl, 1, "a", 1, HMS_CT_RAW, 0, TMO, NULL, NULL, &id, &e);
      hms_call_submit(cl, 1, "bb", 2, HMS_CT_RAW, 0, TMO, NULL, NULL, &id, &e);
      if (kind & 8) hms_call_cancel(cl, id, &e);
      int64_t end = fz_now() + TMO + 50 * FZ_MS;
      size_t got = 0;
      while (got < 2 && fz_now() < end) {
        hms_completion_t c[4];
        size_t n = 0;
        if (hms_client_poll(cl, c, 4, &n, 20 * FZ_MS, &e) != HMS_OK && n == 0) break;
        for (size_t i = 0; i < n; i++) {
          if (c[i].status == HMS_OK) touch(&c[i].payload);
          hms_payload_release(&c[i].payload);
        }
        got += n;
      }
      break;
    }
    case 2: {
      hms_batch_item_t items[3] = {{1, HMS_CT_RAW, "x", 1}, {2, HMS_CT_RAW, "y", 1}, {1, HMS_CT_RAW, NULL, 0}};
      hms_completion_t out[3];
      memset(out, 0, sizeof out);
      hms_call_batch(cl, items, 3, 0, out, TMO, &e);
      for (int i = 0; i < 3; i++) {
        if (out[i].status == HMS_OK) touch(&out[i].payload);
        hms_payload_release(&out[i].payload);
      }
      break;
    }
    case 3:
    case 4:
    case 6: {
      uint32_t fn = (kind & 7) == 3 ? 2 : (kind & 7) == 4 ? 3 : 4;
      uint32_t fl = (kind & 7) == 3 ? HMS_STREAM_SERVER : (kind & 7) == 4 ? HMS_STREAM_CLIENT
                                                                          : HMS_STREAM_SERVER | HMS_STREAM_CLIENT;
      hms_stream_t *st = NULL;
      if (hms_stream_open(cl, fn, "s", 1, HMS_CT_RAW, fl, TMO, &st, &e) != HMS_OK) break;
      if (fl & HMS_STREAM_CLIENT) {
        hms_stream_send(st, "i1", 2, HMS_CT_RAW, &e);
        hms_stream_send(st, "i2", 2, HMS_CT_RAW, &e);
        hms_stream_finish(st, &e);
      }
      for (int i = 0; i < 64; i++) {
        hms_payload_t it;
        int end = 0;
        hms_status_t s = hms_stream_next(st, &it, &end, 50 * FZ_MS, &e);
        if (s == HMS_OK && !end) touch(&it);
        hms_payload_release(&it);
        if (s != HMS_OK || end) break;
      }
      if (kind & 8) hms_stream_cancel(st);
      hms_stream_close(st);
      break;
    }
    case 5: {
      uint64_t id;
      hms_call_submit(cl, 1, "one-way", 7, HMS_CT_RAW, HMS_CALL_ONEWAY, TMO, NULL, NULL, &id, &e);
      if (hms_call_bytes(cl, 1, "after", 5, HMS_CT_RAW, &resp, TMO, &e) == HMS_OK) touch(&resp);
      hms_payload_release(&resp);
      break;
    }
    default: {
      hms_block_t b;
      if (hms_loan(cl, 4096, &b, &e) != HMS_OK) break;
      memset(b.data, 7, 4096);
      if (hms_call_block(cl, 1, &b, 4096, HMS_CT_RAW, &resp, TMO, &e) == HMS_OK) touch(&resp);
      hms_payload_release(&resp);
      break;
    }
  }
}

static hms_status_t h_never(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)call, (void)req, (void)ud;
  return HMS_INTERNAL; /* the service is registered, never served: the fake thread answers by hand */
}

static void fz_shutdown(void) {
  pthread_mutex_lock(&g_lock);
  g_quit = true;
  pthread_cond_broadcast(&g_cond);
  pthread_mutex_unlock(&g_lock);
  hms_node_close(g_node);
  fz_rundir_cleanup();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fz_rundir_init();
  hms_node_options_t o;
  hms_node_options_init(&o);
  o.name = "fuzz-client";
  o.spin_ns = 0; /* the client sleeps at once: the futex and eventfd wake-ups get exercised */
  hms_error_t e;
  if (hms_node_open(&o, &g_node, &e) || hms_service_add(g_node, SVC, VER, &g_svc, &e) ||
      hms_function_add(g_svc, "f", 0, h_never, NULL, &e))
    FZ_FINDING("setup failed: %s", e.message);
  pthread_t t;
  if (pthread_create(&t, NULL, fake_thread, NULL) != 0) FZ_FINDING("pthread_create failed");
  pthread_detach(t);
  atexit(fz_shutdown);
  g_base_fds = fz_count_fds();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in_t in = {data, size};
  fz_u8(&in);
  uint8_t calls = fz_u8(&in);
  pthread_mutex_lock(&g_lock);
  g_data = data;
  g_size = size;
  g_have_job = true;
  g_server_done = g_client_done = false;
  pthread_cond_broadcast(&g_cond);
  pthread_mutex_unlock(&g_lock);
  hms_connect_options_t co;
  hms_connect_options_init(&co);
  co.timeout_ns = 2000 * FZ_MS;
  hms_client_t *cl = NULL;
  hms_error_t e;
  hms_status_t st = hms_connect(g_node, SVC, VER, &co, &cl, &e);
  if (st != HMS_OK) FZ_FINDING("a valid handshake failed: %s", e.message);
  client_round(cl, calls & 0xf);
  if (calls & 8) client_round(cl, (calls & 7) + ((calls >> 4) & 3) + 1);
  hms_client_close(cl);
  pthread_mutex_lock(&g_lock);
  g_client_done = true;
  while (!g_server_done) pthread_cond_wait(&g_cond, &g_lock);
  pthread_mutex_unlock(&g_lock);
  int now = fz_count_fds();
  if (now != g_base_fds) {
    fz_list_fds();
    FZ_FINDING("descriptors leak: %d open after the client closed, %d at start", now, g_base_fds);
  }
  return 0;
}
