/* libFuzzer target: hostile handshake messages, both ways.
 *
 * Byte 0, bit 0 picks the side:
 *  - 0, the server's side: a real node serves "fuzz.hs"@1.0.0 on a background thread; the input is sent
 *    as the hello on a fresh connection (byte 1: descriptors to pass — none, an eventfd, a sealed or
 *    unsealed memfd, a pipe, two of them; bits of byte 2 repair the magic / ABI and protocol numbers /
 *    names / ring size so the fuzzer also gets past the first checks; the rest is the hello, any length).
 *    Whatever the server answers must be well formed: a welcome (status OK with exactly a sealed memfd of
 *    the announced size and an eventfd, or an error without descriptors and with a terminated message),
 *    or a hang-up. Then a well-behaved client must still be served.
 *  - 1, the client's side: this process also registers "fuzz.hsc"@1.0.0 without serving it; a thread
 *    answers the real client's hello with the input: byte 1 picks the descriptors (memfd sealed to the
 *    announced size, unsealed, of a wrong size, an eventfd instead, none, surplus ones), byte 2 repairs
 *    fields (magic, status OK, consistent sizes, connection header), then the welcome bytes (any length),
 *    then the connection header and function table written into the memfd. hms_connect() must succeed or
 *    fail with an error; a client it returns must look up its functions and close cleanly.
 * Findings: crashes, sanitizer reports, malformed server answers, the server no longer serving, and
 * descriptors left open on the client side (counted exactly after every input).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DHMS_FFI_BUILDING=1 -D_GNU_SOURCE -Iinclude -Icsrc \
 *         csrc/[a-z]*.c tests/c/fuzz_handshake.c -o fuzz_handshake -pthread
 *   ./fuzz_handshake -max_total_time=60 corpus_copy/   (seeds: tests/c/corpus/handshake/) */
#include "fuzz_util.h"

#include <pthread.h>
#include <sys/stat.h>

#define SVC "fuzz.hs"
#define CSVC "fuzz.hsc"
#define VER "1.0.0"

static hms_node_t *g_server, *g_node;
static hms_service_t *g_csvc;
static hms_client_t *g_good;
static int g_base_fds = -1;

static hms_status_t h_echo(hms_call_t *call, const hms_payload_t *req, void *ud) {
  (void)ud;
  return hms_call_reply(call, req->data, req->len, req->content_type, NULL);
}

static void good_echo(void) {
  hms_payload_t resp;
  hms_error_t e;
  hms_status_t st = hms_call_bytes(g_good, 1, "ping", 4, HMS_CT_RAW, &resp, 2000 * FZ_MS, &e);
  bool ok = st == HMS_OK && resp.len == 4 && memcmp(resp.data, "ping", 4) == 0;
  hms_payload_release(&resp);
  if (!ok) FZ_FINDING("the server stopped serving a well-behaved client: %s", st ? e.message : "wrong bytes");
}

/* ---------------------------------------------------------------- server side */
static void server_side(fz_in_t *in) {
  uint8_t fdsel = fz_u8(in), fix = fz_u8(in);
  uint8_t msg[sizeof(hms__hello_t) + 64];
  size_t len = in->n < sizeof msg ? in->n : sizeof msg;
  memset(msg, 0, sizeof msg);
  fz_take(in, msg, len);
  if (fix & 0x80) len = sizeof(hms__hello_t); /* the right size, whatever the input's */
  hms__hello_t *h = (hms__hello_t *)msg;
  if (fix & 1) h->magic = HMS__HELLO_MAGIC;
  if (fix & 2) {
    h->abi = HMS_FFI_ABI_VERSION;
    h->proto = HMS__PROTO_VERSION;
  }
  if (fix & 4) {
    snprintf(h->service, sizeof h->service, "%s", SVC);
    snprintf(h->version, sizeof h->version, "%s", VER);
  }
  if (fix & 8) h->ring_bytes = (fix & 16) ? 4096 : 0;
  int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s@%s.sock", fz_rundir, SVC, VER);
  if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) FZ_FINDING("connect: %s", strerror(errno));
  int fds[2] = {-1, -1}, nfds = fdsel % 3 == 2 ? 2 : fdsel % 3;
  for (int i = 0; i < nfds; i++) fds[i] = fz_make_fd((fdsel >> (2 + 3 * i)) % FZ_FD_KINDS, 4096);
  int sent_fds[2], ns = 0;
  for (int i = 0; i < nfds; i++)
    if (fds[i] >= 0) sent_fds[ns++] = fds[i];
  fz_send(s, msg, len, sent_fds, ns);
  fz_close_all(fds, 2);
  hms__welcome_t w;
  int got[8], ngot;
  memset(&w, 0, sizeof w);
  ssize_t n = fz_recv(s, &w, sizeof w, got, 8, &ngot, 1000);
  if (n > 0) {
    if (n != (ssize_t)sizeof w || w.magic != HMS__WELCOME_MAGIC) FZ_FINDING("the server answered with a malformed welcome");
    if (!memchr(w.message, 0, sizeof w.message)) FZ_FINDING("the welcome's message is not terminated");
    if (w.status == HMS_OK) {
      struct stat st;
      int seals = ngot == 2 ? fcntl(got[0], F_GET_SEALS) : -1;
      if (ngot != 2 || fstat(got[0], &st) != 0 || (uint64_t)st.st_size != w.total_bytes ||
          (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW) ||
          w.total_bytes != hms__conn_total_bytes(w.req_cap, w.resp_cap, w.table_bytes))
        FZ_FINDING("the server accepted with an inconsistent welcome or descriptors (%d fds)", ngot);
    } else if (ngot != 0) {
      FZ_FINDING("the server refused (status %d) but sent %d descriptors", w.status, ngot);
    }
  } else if (n < 0) {
    /* no answer within 1 s: only a hello that never arrived whole may be left waiting */
  }
  fz_close_all(got, ngot);
  close(s);
  good_echo();
}

/* ---------------------------------------------------------------- client side */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static const uint8_t *g_data;
static size_t g_size;
static bool g_have_job, g_server_done, g_client_done, g_quit;

static void fake_answer(fz_in_t *in) {
  uint8_t fdsel = fz_u8(in), fix = fz_u8(in);
  struct pollfd lp = {.fd = g_csvc->listen_fd, .events = POLLIN};
  if (poll(&lp, 1, 2000) <= 0) FZ_FINDING("the client never connected");
  int s = accept4(g_csvc->listen_fd, NULL, NULL, SOCK_CLOEXEC);
  hms__hello_t hello;
  int hf[4], nh;
  fz_recv(s, &hello, sizeof hello, hf, 4, &nh, 2000);
  fz_close_all(hf, nh);
  uint8_t wb[sizeof(hms__welcome_t) + 32];
  memset(wb, 0, sizeof wb);
  size_t wlen = sizeof(hms__welcome_t);
  uint8_t lsel = fz_u8(in);
  if (lsel >= 0xF0) wlen = lsel & 1 ? sizeof(hms__welcome_t) + 16 : lsel % 64; /* wrong lengths */
  fz_take(in, wb, sizeof(hms__welcome_t));
  hms__welcome_t *w = (hms__welcome_t *)wb;
  if (fix & 1) w->magic = HMS__WELCOME_MAGIC;
  if (fix & 2) {
    w->abi = HMS_FFI_ABI_VERSION;
    w->proto = HMS__PROTO_VERSION;
    w->status = HMS_OK;
  }
  if (fix & 4) {
    w->req_cap = 4096u << (fix >> 5);
    w->resp_cap = (fix & 8) ? w->req_cap : 4096;
    w->table_bytes %= 4096;
    w->function_count %= 64;
  }
  if (fix & 16) w->total_bytes = hms__conn_total_bytes(w->req_cap, w->resp_cap, w->table_bytes);
  uint64_t size = w->total_bytes <= (64u << 20) ? w->total_bytes : 8192;
  int kind = fdsel & 7;
  int fds[4] = {-1, -1, -1, -1}, nfds = 0;
  if (kind <= 3) { /* 0: sealed, 1: sealed of another size, 2: unsealed, 3: sealed + surplus fds */
    fds[nfds] = fz_make_fd(kind == 2 ? FZ_FD_MEMFD_UNSEALED : FZ_FD_MEMFD_SEALED, kind == 1 ? size + 4096 : size);
    if (fds[nfds] >= 0 && size >= HMS__CONN_HEADER_BYTES) {
      /* the connection header (made consistent when asked) and the rest of the input as the table */
      void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[nfds], 0);
      if (m != MAP_FAILED) {
        hms__conn_hdr_t ch;
        fz_take(in, &ch, sizeof ch);
        if (fix & 16) {
          ch.magic = HMS__CONN_MAGIC;
          ch.req_cap = w->req_cap;
          ch.resp_cap = w->resp_cap;
          ch.table_bytes = w->table_bytes;
          ch.total_bytes = w->total_bytes;
        }
        memcpy(m, &ch, sizeof ch);
        uint64_t toff = HMS__CONN_HEADER_BYTES + w->req_cap + w->resp_cap;
        if (toff < size) {
          size_t n = in->n < size - toff ? in->n : (size_t)(size - toff);
          fz_take(in, (uint8_t *)m + toff, n);
        }
        munmap(m, size);
      }
    }
    nfds++;
  } else if (kind == 4) {
    fds[nfds++] = fz_make_fd(FZ_FD_EVENTFD, 0); /* an eventfd where the memory belongs */
  }
  if (kind != 5 && kind != 6) fds[nfds++] = fz_make_fd((fdsel >> 3) & 1 ? FZ_FD_PIPE : FZ_FD_EVENTFD, 0);
  if (kind == 3) fds[nfds++] = fz_make_fd(FZ_FD_MEMFD_SEALED, 4096);
  int sfds[4], ns = 0;
  for (int i = 0; i < nfds; i++)
    if (fds[i] >= 0) sfds[ns++] = fds[i];
  fz_send(s, wb, wlen, sfds, ns);
  fz_close_all(fds, 4);
  /* stay connected until the client is done with us */
  for (int i = 0; i < 3000; i++) {
    pthread_mutex_lock(&g_lock);
    bool d = g_client_done;
    pthread_mutex_unlock(&g_lock);
    if (d) break;
    usleep(1000);
  }
  close(s);
}

static void *fake_thread(void *arg) {
  (void)arg;
  pthread_mutex_lock(&g_lock);
  for (;;) {
    while (!g_have_job && !g_quit) pthread_cond_wait(&g_cond, &g_lock);
    if (g_quit) break;
    g_have_job = false;
    fz_in_t in = {g_data, g_size};
    pthread_mutex_unlock(&g_lock);
    fz_u8(&in);
    fake_answer(&in);
    pthread_mutex_lock(&g_lock);
    g_server_done = true;
    pthread_cond_broadcast(&g_cond);
  }
  pthread_mutex_unlock(&g_lock);
  return NULL;
}

static void client_side(const uint8_t *data, size_t size) {
  pthread_mutex_lock(&g_lock);
  g_data = data;
  g_size = size;
  g_have_job = true;
  g_server_done = g_client_done = false;
  pthread_cond_broadcast(&g_cond);
  pthread_mutex_unlock(&g_lock);
  hms_connect_options_t co;
  hms_connect_options_init(&co);
  co.timeout_ns = 1000 * FZ_MS;
  hms_client_t *cl = NULL;
  hms_error_t e;
  if (hms_connect(g_node, CSVC, VER, &co, &cl, &e) == HMS_OK) {
    uint32_t n = hms_client_function_count(cl);
    for (uint32_t i = 0; i < n; i++) {
      const char *name;
      uint32_t id, fl;
      if (hms_client_function_at(cl, i, &name, &id, &fl) == HMS_OK && strlen(name) > HMS_NAME_MAX)
        FZ_FINDING("function name longer than HMS_NAME_MAX");
    }
    hms_payload_t resp;
    hms_call_bytes(cl, 1, "x", 1, HMS_CT_RAW, &resp, 20 * FZ_MS, &e); /* nobody answers: a timeout */
    hms_payload_release(&resp);
    hms_client_close(cl);
  } else if (!memchr(e.message, 0, sizeof e.message)) { /* empty is possible: a refusal says what the peer said */
    FZ_FINDING("hms_connect's error message is not terminated");
  }
  pthread_mutex_lock(&g_lock);
  g_client_done = true;
  while (!g_server_done) pthread_cond_wait(&g_cond, &g_lock);
  pthread_mutex_unlock(&g_lock);
}

/* ---------------------------------------------------------------- driver */
static void fz_shutdown(void) {
  pthread_mutex_lock(&g_lock);
  g_quit = true;
  pthread_cond_broadcast(&g_cond);
  pthread_mutex_unlock(&g_lock);
  hms_client_close(g_good);
  hms_node_stop(g_server);
  hms_node_close(g_server);
  hms_node_close(g_node);
  fz_rundir_cleanup();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fz_rundir_init();
  hms_node_options_t o;
  hms_node_options_init(&o);
  o.name = "fuzz-hs";
  o.ring_bytes = 4096;
  hms_error_t e;
  hms_service_t *svc;
  if (hms_node_open(&o, &g_server, &e) || hms_service_add(g_server, SVC, VER, &svc, &e) ||
      hms_function_add(svc, "echo", 0, h_echo, NULL, &e) || hms_node_start(g_server, &e) ||
      hms_node_open(NULL, &g_node, &e) || hms_service_add(g_node, CSVC, VER, &g_csvc, &e) ||
      hms_function_add(g_csvc, "f", 0, h_echo, NULL, &e) || hms_connect(g_node, SVC, VER, NULL, &g_good, &e))
    FZ_FINDING("setup failed: %s", e.message);
  pthread_t t;
  if (pthread_create(&t, NULL, fake_thread, NULL) != 0) FZ_FINDING("pthread_create failed");
  pthread_detach(t);
  atexit(fz_shutdown);
  good_echo();
  g_base_fds = fz_count_fds();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in_t in = {data, size};
  uint8_t side = fz_u8(&in);
  if (side & 1) {
    client_side(data, size);
  } else {
    server_side(&in);
  }
  /* The client side is exact; the server drops refused connections on its own thread: allow it 1 s. */
  int now = -1;
  for (int i = 0; i < 200; i++) {
    now = fz_count_fds();
    if (now == g_base_fds) break;
    usleep(5000);
  }
  if (now != g_base_fds) {
    fz_list_fds();
    FZ_FINDING("descriptors leak: %d open after the handshake, %d at start", now, g_base_fds);
  }
  return 0;
}
