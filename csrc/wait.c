/* Time, futexes and the adaptive spin used by every waiter. */
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal/hms_internal.h"

int64_t hms__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t hms__deadline_from_timeout(int64_t timeout_ns) {
  if (timeout_ns < 0) return INT64_MAX;
  int64_t now = hms__now_ns();
  if (timeout_ns > INT64_MAX - now) return INT64_MAX;
  return now + timeout_ns;
}

int hms__futex_wait(_Atomic uint32_t *addr, uint32_t expected, int64_t timeout_ns, int shared) {
  struct timespec ts, *tsp = NULL;
  if (timeout_ns >= 0) {
    ts.tv_sec = timeout_ns / 1000000000LL;
    ts.tv_nsec = timeout_ns % 1000000000LL;
    tsp = &ts;
  }
  int op = shared ? FUTEX_WAIT : (FUTEX_WAIT | FUTEX_PRIVATE_FLAG);
  long rc = syscall(SYS_futex, (uint32_t *)addr, op, expected, tsp, NULL, 0);
  if (rc == 0) return 0;
  if (errno == EAGAIN) return 0;
  return errno; /* ETIMEDOUT, EINTR; EFAULT cannot happen on our own mappings */
}

void hms__futex_wake(_Atomic uint32_t *addr, int count, int shared) {
  int op = shared ? FUTEX_WAKE : (FUTEX_WAKE | FUTEX_PRIVATE_FLAG);
  syscall(SYS_futex, (uint32_t *)addr, op, count, NULL, NULL, 0);
}

int64_t hms__default_spin_ns(void) {
  /* Long enough to cover a Python handler's round trip on a busy peer, short enough that an idle
   * waiter gives its core back within tens of microseconds. */
  return 50000;
}

void hms__spin_init(hms__spin_t *s, int64_t budget_ns) {
  s->budget_ns = budget_ns < 0 ? hms__default_spin_ns() : budget_ns;
  s->limit_ns = s->budget_ns;
}

void hms__spin_feedback(hms__spin_t *s, bool spin_succeeded) {
  if (s->budget_ns <= 0) return;
  int64_t floor = s->budget_ns / 16;
  if (spin_succeeded) {
    s->limit_ns = s->limit_ns * 2 > s->budget_ns ? s->budget_ns : s->limit_ns * 2;
  } else {
    s->limit_ns = s->limit_ns / 2 < floor ? floor : s->limit_ns / 2;
  }
}
