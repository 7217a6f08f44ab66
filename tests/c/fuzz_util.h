/* Shared helpers of the libFuzzer targets for the core's receiving side (fuzz_server_ring.c,
 * fuzz_client_ring.c, fuzz_handshake.c, fuzz_topic.c): a cursor over the fuzz input, descriptor
 * passing, a private runtime directory, descriptor counting. Header-only: each target is one
 * translation unit built with the core's sources (see tests/test_fuzz_c.py for the command). */
#ifndef HMS_FUZZ_UTIL_H
#define HMS_FUZZ_UTIL_H

#include "internal/hms_internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define FZ_MS 1000000LL

/* A finding: say what broke, then abort so libFuzzer saves the input as a crash. With HMS_FUZZ_GDB=1
 * every thread's stack is printed first (what a server thread was doing when it stopped serving). */
static inline void fz_dump_threads(void) {
  const char *g = getenv("HMS_FUZZ_GDB");
  if (!g || g[0] != '1') return;
  char cmd[160];
  snprintf(cmd, sizeof cmd, "gdb -p %d -batch -ex 'thread apply all bt' 1>&2 2>/dev/null", (int)getpid());
  int rc = system(cmd);
  (void)rc;
}
#define FZ_FINDING(...)                            \
  do {                                             \
    fprintf(stderr, "\n==FINDING== " __VA_ARGS__); \
    fprintf(stderr, "\n");                         \
    fz_dump_threads();                             \
    abort();                                       \
  } while (0)

static inline int64_t fz_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---------------------------------------------------------------- input cursor
 * Reading past the end yields zeros, so every input is a complete (if dull) program. */
typedef struct {
  const uint8_t *p;
  size_t n;
} fz_in_t;

static inline bool fz_more(const fz_in_t *in) { return in->n > 0; }
static inline void fz_take(fz_in_t *in, void *dst, size_t len) {
  size_t k = len < in->n ? len : in->n;
  if (k) memcpy(dst, in->p, k);
  if (k < len) memset((uint8_t *)dst + k, 0, len - k);
  in->p += k;
  in->n -= k;
}
static inline uint8_t fz_u8(fz_in_t *in) {
  uint8_t v;
  fz_take(in, &v, 1);
  return v;
}
static inline uint16_t fz_u16(fz_in_t *in) {
  uint16_t v;
  fz_take(in, &v, 2);
  return v;
}
static inline uint32_t fz_u32(fz_in_t *in) {
  uint32_t v;
  fz_take(in, &v, 4);
  return v;
}
static inline uint64_t fz_u64(fz_in_t *in) {
  uint64_t v;
  fz_take(in, &v, 8);
  return v;
}

/* ---------------------------------------------------------------- descriptors */
/* Descriptors that the core could leak: sockets, eventfds, epoll, memfds. Pipes and /dev/null are not
 * counted: the sanitizers' symbolizer (started the first time libFuzzer prints a new function) holds
 * some, and the core never keeps a pipe (the fuzzers send pipes only where eventfds/memfds belong). */
static inline int fz_count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char p[300], link[256];
    snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
    ssize_t k = readlink(p, link, sizeof link - 1);
    link[k > 0 ? k : 0] = 0;
    if (strncmp(link, "pipe:", 5) == 0 || strcmp(link, "/dev/null") == 0) continue;
    n++;
  }
  closedir(d);
  return n;
}

/* Prints every open descriptor and what it is (for a leak finding). */
static inline void fz_list_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char p[300], link[256];
    snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
    ssize_t k = readlink(p, link, sizeof link - 1);
    link[k > 0 ? k : 0] = 0;
    char info[300] = "";
    snprintf(p, sizeof p, "/proc/self/fdinfo/%s", e->d_name);
    FILE *f = fopen(p, "r");
    if (f) {
      char line[128];
      while (fgets(line, sizeof line, f))
        if (strncmp(line, "eventfd-count", 13) == 0) snprintf(info, sizeof info, " %s", line);
      fclose(f);
    }
    fprintf(stderr, "  fd %s -> %s%s\n", e->d_name, link, info[0] ? info : "\n");
  }
  closedir(d);
}

static inline ssize_t fz_send(int sock, const void *buf, size_t len, const int *fds, int nfds) {
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  union {
    char b[CMSG_SPACE(sizeof(int) * 8)];
    struct cmsghdr align;
  } u;
  struct msghdr m;
  memset(&m, 0, sizeof m);
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  if (nfds > 0) {
    memset(&u, 0, sizeof u);
    m.msg_control = u.b;
    m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
  }
  ssize_t n;
  do {
    n = sendmsg(sock, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n;
}

/* One message within timeout_ms; keeps up to max_fds descriptors (closes the rest). Returns the byte
 * count, 0 when the peer hung up, -1 on timeout or error. */
static inline ssize_t fz_recv(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds, int timeout_ms) {
  *nfds = 0;
  struct pollfd p = {.fd = sock, .events = POLLIN};
  int pr;
  do {
    pr = poll(&p, 1, timeout_ms);
  } while (pr < 0 && errno == EINTR);
  if (pr <= 0) return -1;
  struct iovec iov = {.iov_base = buf, .iov_len = len};
  union {
    char b[CMSG_SPACE(sizeof(int) * 16)];
    struct cmsghdr align;
  } u;
  struct msghdr m;
  memset(&m, 0, sizeof m);
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = u.b;
  m.msg_controllen = sizeof u.b;
  ssize_t n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0) return -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (*nfds < max_fds)
        fds[(*nfds)++] = fd;
      else
        close(fd);
    }
  }
  return n;
}

static inline void fz_close_all(int *fds, int n) {
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0) close(fds[i]);
}

/* True when the peer hung up within timeout_ms; whatever arrives meanwhile is read and dropped. */
static inline bool fz_wait_closed(int sock, int timeout_ms) {
  int64_t end = fz_now() + (int64_t)timeout_ms * FZ_MS;
  for (;;) {
    int64_t left = end - fz_now();
    if (left < 0) left = 0;
    struct pollfd p = {.fd = sock, .events = POLLIN | POLLRDHUP};
    int pr = poll(&p, 1, (int)((left + FZ_MS - 1) / FZ_MS));
    if (pr < 0 && errno == EINTR) continue;
    if (pr > 0) {
      if (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) return true;
      char b[4096];
      int fds[8], nfds;
      ssize_t r = fz_recv(sock, b, sizeof b, fds, 8, &nfds, 0);
      fz_close_all(fds, nfds);
      if (r == 0) return true;
      continue;
    }
    if (left == 0) return false;
  }
}

/* A descriptor of the kind an input byte picks, for places that expect one particular kind. */
enum { FZ_FD_NONE = 0, FZ_FD_EVENTFD, FZ_FD_MEMFD_SEALED, FZ_FD_MEMFD_UNSEALED, FZ_FD_PIPE, FZ_FD_KINDS };
static inline int fz_make_fd(int kind, uint64_t size) {
  switch (kind) {
    case FZ_FD_EVENTFD:
      return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    case FZ_FD_MEMFD_SEALED:
    case FZ_FD_MEMFD_UNSEALED: {
      int fd = memfd_create("hms-fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
      if (fd < 0) return -1;
      if (ftruncate(fd, (off_t)size) != 0) {
        close(fd);
        return -1;
      }
      if (kind == FZ_FD_MEMFD_SEALED) fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
      return fd;
    }
    case FZ_FD_PIPE: {
      int p[2];
      if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return -1;
      close(p[0]);
      return p[1];
    }
    default:
      return -1;
  }
}

/* ---------------------------------------------------------------- runtime directory
 * Every target runs in a private runtime directory (HMS_FFI_RUNTIME_DIR), removed at exit. */
static char fz_rundir[64];
static void fz_rundir_cleanup(void) {
  if (!fz_rundir[0]) return;
  DIR *d = opendir(fz_rundir);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      if (e->d_name[0] == '.') continue;
      char p[HMS__PATH_MAX];
      snprintf(p, sizeof p, "%s/%s", fz_rundir, e->d_name);
      unlink(p);
    }
    closedir(d);
  }
  rmdir(fz_rundir);
}
static inline void fz_rundir_init(void) {
  snprintf(fz_rundir, sizeof fz_rundir, "/tmp/hms-fuzz-XXXXXX");
  if (!mkdtemp(fz_rundir)) FZ_FINDING("mkdtemp failed: %s", strerror(errno));
  setenv("HMS_FFI_RUNTIME_DIR", fz_rundir, 1);
}

/* ---------------------------------------------------------------- frames */
static inline hms__frame_hdr_t fz_hdr(uint32_t len, uint16_t kind, uint16_t flags, uint32_t fn_id, uint64_t call_id,
                                      uint32_t payload_len) {
  hms__frame_hdr_t h;
  memset(&h, 0, sizeof h);
  h.len = len;
  h.kind = kind;
  h.flags = flags;
  h.fn_id = fn_id;
  h.content_type = HMS_CT_RAW;
  h.call_id = call_id;
  h.payload_len = payload_len;
  return h;
}

#endif
