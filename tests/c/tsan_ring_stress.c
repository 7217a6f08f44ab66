/* ThreadSanitizer stress test of the SPSC ring (csrc/ring.c) and the futex waits (csrc/wait.c).
 *
 * One producer thread and one consumer thread share one ring, using the real reserve/publish/peek/
 * consume/free functions and the same sleep/wake protocol as node.c and client.c: a consumer that finds
 * the ring empty sets consumer_sleeping, re-checks (seq_cst fence) and futex-waits on data_seq; a
 * producer that publishes fences and wakes it when the flag is set; a producer that finds no room sets
 * producer_waiting, re-checks and futex-waits on space_seq; the consumer wakes it after consuming.
 * Frames have random sizes from empty to the ring's max frame, so the ring wraps (PAD frames) all the
 * time; both sides switch between spinning and sleeping in phases of different lengths so that every
 * combination (both spin, both sleep, one of each) is met many times. Every frame carries its sequence
 * number and a payload derived from it: the consumer checks order, length and every byte.
 *
 *   cc -std=gnu11 -O1 -g -fsanitize=thread -DHMS_FFI_BUILDING=1 -D_GNU_SOURCE -Iinclude -Icsrc \
 *      csrc/ring.c csrc/wait.c tests/c/tsan_ring_stress.c -o tsan_ring_stress -pthread
 *   ./tsan_ring_stress [frames]      (default 1000000, or HMS_TSAN_FRAMES)
 * Prints "ring stress passed: N frames, ..." and exits 0; any TSan report fails the run (halt_on_error). */
#include "internal/hms_internal.h"

#include <pthread.h>
#include <stdlib.h>

#define CAP 8192u /* max frame 2 KiB: a wrap every few frames */

static hms__ring_ctl_t *ctl;
static uint8_t *data;
static uint64_t frames;
static uint8_t pattern[256 + CAP / 4]; /* pattern[k] = k mod 256; frame i carries pattern + (i mod 256) */
static _Atomic uint64_t producer_sleeps, consumer_sleeps, wraps, bytes_total; /* wraps: PAD frames written */

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}
/* Spinning phases: each side changes mode every 2^k frames with its own k. */
static bool spins(uint64_t i, int k) { return (i >> k) & 1; }

static uint32_t plen_of(uint64_t i, uint64_t max_payload) {
  uint64_t r = mix(i);
  switch (r & 3) {
    case 0:
      return 0;
    case 1:
      return (uint32_t)((r >> 8) % 64);
    default:
      return (uint32_t)((r >> 8) % (max_payload + 1));
  }
}

static void *producer(void *arg) {
  (void)arg;
  hms__ring_t r;
  hms__ring_attach(&r, ctl, data, CAP);
  uint64_t max_payload = r.max_frame - HMS_FRAME_HEADER_BYTES;
  char why[200];
  for (uint64_t i = 1; i <= frames; i++) {
    uint32_t plen = plen_of(i, max_payload);
    uint8_t *f;
    for (;;) {
      uint64_t before = r.pos;
      int rc = hms__ring_reserve(&r, plen, &f, why, sizeof why);
      if (rc == HMS__RING_OK) {
        if (r.pos != before) atomic_fetch_add_explicit(&wraps, 1, memory_order_relaxed); /* a PAD went first */
        break;
      }
      if (rc == HMS__RING_CORRUPT) {
        fprintf(stderr, "producer: %s\n", why);
        abort();
      }
      if (spins(i, 13)) {
        hms__cpu_relax();
        continue;
      }
      uint32_t seq = atomic_load_explicit(&ctl->space_seq, memory_order_acquire);
      atomic_store(&ctl->producer_waiting, 1);
      atomic_thread_fence(memory_order_seq_cst);
      uint64_t fb;
      if (hms__ring_free(&r, &fb, why, sizeof why) != HMS__RING_OK) abort();
      if (fb >= hms__frame_bytes(plen) + CAP / 4) continue; /* room appeared: no sleep */
      atomic_fetch_add(&producer_sleeps, 1);
      hms__futex_wait(&ctl->space_seq, seq, 100000000LL, 0);
    }
    hms__frame_hdr_t h;
    memset(&h, 0, sizeof h);
    h.len = (uint32_t)hms__frame_bytes(plen);
    h.kind = HMS__FRAME_REQUEST;
    h.call_id = i;
    h.payload_len = plen;
    memcpy(f, &h, sizeof h);
    memcpy(f + HMS_FRAME_HEADER_BYTES, pattern + (i & 255), plen); /* byte j = (i + j) mod 256 */
    hms__ring_publish(&r, h.len);
    atomic_fetch_add_explicit(&bytes_total, plen, memory_order_relaxed);
    /* like hms__wake_client: a fence, then wake only a consumer that said it sleeps */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&ctl->consumer_sleeping, memory_order_relaxed) & HMS__SLEEP_FUTEX) {
      atomic_fetch_add_explicit(&ctl->data_seq, 1, memory_order_release);
      hms__futex_wake(&ctl->data_seq, INT_MAX, 0);
    }
  }
  return NULL;
}

static void *consumer(void *arg) {
  (void)arg;
  hms__ring_t r;
  hms__ring_attach(&r, ctl, data, CAP);
  uint64_t max_payload = r.max_frame - HMS_FRAME_HEADER_BYTES;
  char why[200];
  for (uint64_t i = 1; i <= frames;) {
    hms__frame_hdr_t h;
    const uint8_t *p;
    int rc = hms__ring_peek(&r, &h, &p, why, sizeof why);
    if (rc == HMS__RING_CORRUPT) {
      fprintf(stderr, "consumer at frame %llu: %s\n", (unsigned long long)i, why);
      abort();
    }
    if (rc == HMS__RING_EMPTY) {
      if (spins(i, 11)) {
        hms__cpu_relax();
        continue;
      }
      uint32_t seq = atomic_load_explicit(&ctl->data_seq, memory_order_acquire);
      atomic_store(&ctl->consumer_sleeping, HMS__SLEEP_FUTEX);
      atomic_thread_fence(memory_order_seq_cst);
      if (!hms__ring_has_data(&r)) {
        atomic_fetch_add(&consumer_sleeps, 1);
        hms__futex_wait(&ctl->data_seq, seq, 100000000LL, 0);
      }
      atomic_store(&ctl->consumer_sleeping, 0);
      continue;
    }
    uint32_t want = plen_of(i, max_payload);
    if (h.kind != HMS__FRAME_REQUEST || h.call_id != i || h.payload_len != want) {
      fprintf(stderr, "frame %llu: kind %u id %llu payload %u (expected %u)\n", (unsigned long long)i, h.kind,
              (unsigned long long)h.call_id, h.payload_len, want);
      abort();
    }
    if (memcmp(p, pattern + (i & 255), h.payload_len) != 0) {
      fprintf(stderr, "frame %llu: payload bytes differ from what was sent\n", (unsigned long long)i);
      abort();
    }
    hms__ring_consume(&r, &h);
    /* like the consumers in node.c/client.c: wake a producer that waits for room */
    if (atomic_load_explicit(&ctl->producer_waiting, memory_order_acquire) &&
        atomic_exchange(&ctl->producer_waiting, 0)) {
      atomic_fetch_add_explicit(&ctl->space_seq, 1, memory_order_release);
      hms__futex_wake(&ctl->space_seq, INT_MAX, 0);
    }
    i++;
  }
  return NULL;
}

int main(int argc, char **argv) {
  const char *env = getenv("HMS_TSAN_FRAMES");
  frames = argc > 1 ? strtoull(argv[1], NULL, 10) : env ? strtoull(env, NULL, 10) : 1000000;
  if (!frames) frames = 1;
  ctl = aligned_alloc(HMS__CACHELINE, sizeof *ctl);
  data = aligned_alloc(HMS__CACHELINE, CAP);
  memset(ctl, 0, sizeof *ctl);
  memset(data, 0, CAP);
  for (size_t k = 0; k < sizeof pattern; k++) pattern[k] = (uint8_t)k;
  int64_t t0 = hms__now_ns();
  pthread_t p, c;
  pthread_create(&c, NULL, consumer, NULL);
  pthread_create(&p, NULL, producer, NULL);
  pthread_join(p, NULL);
  pthread_join(c, NULL);
  double s = (double)(hms__now_ns() - t0) / 1e9;
  printf("ring stress passed: %llu frames, %llu payload bytes, %llu producer sleeps, %llu consumer sleeps, "
         "%llu wraps, %.2f s\n",
         (unsigned long long)frames, (unsigned long long)atomic_load(&bytes_total),
         (unsigned long long)atomic_load(&producer_sleeps), (unsigned long long)atomic_load(&consumer_sleeps), (unsigned long long)atomic_load(&wraps), s);
  if (frames >= 100000 && (atomic_load(&producer_sleeps) == 0 || atomic_load(&consumer_sleeps) == 0 || atomic_load(&wraps) == 0)) {
    fprintf(stderr, "a side never slept or the ring never wrapped: the paths were not exercised\n");
    return 1;
  }
  free(ctl);
  free(data);
  return 0;
}
