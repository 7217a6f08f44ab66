/* Connection memory (a sealed memfd per connection) and descriptor passing over the UDS. */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal/hms_internal.h"

bool hms__is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

uint64_t hms__conn_total_bytes(uint64_t req_cap, uint64_t resp_cap, uint64_t table_bytes) {
  uint64_t t = HMS__CONN_HEADER_BYTES + req_cap + resp_cap + table_bytes;
  return (t + 4095) & ~(uint64_t)4095;
}

int hms__memfd_create_sealed(uint64_t size, void **map, char *why, size_t why_cap) {
  int fd = memfd_create("hms-ffi-conn", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    snprintf(why, why_cap, "memfd_create failed: %s", strerror(errno));
    return -1;
  }
  if (ftruncate(fd, (off_t)size) != 0) {
    snprintf(why, why_cap, "ftruncate(memfd, %llu) failed: %s", (unsigned long long)size, strerror(errno));
    close(fd);
    return -1;
  }
  /* Sealed before anyone else sees it: the peer can neither shrink it (SIGBUS for us) nor grow it. */
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    snprintf(why, why_cap, "sealing the memfd failed: %s", strerror(errno));
    close(fd);
    return -1;
  }
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    snprintf(why, why_cap, "mmap of %llu bytes failed: %s", (unsigned long long)size, strerror(errno));
    close(fd);
    return -1;
  }
  *map = p;
  return fd;
}

int hms__send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  union {
    char buf[CMSG_SPACE(sizeof(int) * 4)];
    struct cmsghdr align;
  } u;
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    memset(&u, 0, sizeof u);
    msg.msg_control = u.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
  }
  ssize_t n;
  do {
    n = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n == (ssize_t)len ? 0 : -1;
}

ssize_t hms__recv_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds) {
  struct iovec iov = {.iov_base = buf, .iov_len = len};
  union {
    char buf[CMSG_SPACE(sizeof(int) * 8)];
    struct cmsghdr align;
  } u;
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = u.buf;
  msg.msg_controllen = sizeof u.buf;
  *nfds = 0;
  ssize_t n;
  do {
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return n;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int tmp[8];
    if (k > 8) k = 8;
    memcpy(tmp, CMSG_DATA(c), k * sizeof(int));
    for (size_t i = 0; i < k; i++) {
      if (*nfds < max_fds)
        fds[(*nfds)++] = tmp[i];
      else
        close(tmp[i]); /* a peer sending more than agreed must not leak descriptors into us */
    }
  }
  /* An empty message means nothing in our protocols (callers read 0 as a hang-up), yet it can carry
   * descriptors: they would leak (found by tests/c/fuzz_server_ring.c). */
  if (n == 0 || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
    for (int i = 0; i < *nfds; i++) close(fds[i]);
    *nfds = 0;
    if (n == 0) return 0;
    errno = EMSGSIZE;
    return -1;
  }
  return n;
}
