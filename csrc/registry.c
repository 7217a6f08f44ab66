/* The runtime directory: one socket and one metadata file per served service.
 *
 *   <dir>/<name>@<version>.sock   the service's listening socket (SOCK_SEQPACKET)
 *   <dir>/<name>@<version>.meta   text: who serves it (pid + process start time) and its functions
 *   <dir>/.lock                   flock()ed while registering or removing entries; the kernel drops
 *                                 the lock if the holder dies, so a crash never wedges the directory
 *
 * A process may die at any instruction, so entries are judged live by the process they name (pid
 * plus start time, which defeats pid reuse), never by their existence. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal/hms_internal.h"

bool hms__name_valid(const char *s) {
  size_t n = 0;
  for (const char *p = s; *p; p++, n++) {
    char c = *p;
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == '-';
    if (!ok) return false;
  }
  return n > 0 && n <= HMS_NAME_MAX && s[0] != '.' && s[0] != '-';
}

static const char *hms__parse_u32(const char *p, uint32_t *out) {
  if (*p < '0' || *p > '9') return NULL;
  uint64_t v = 0;
  while (*p >= '0' && *p <= '9') {
    v = v * 10 + (uint64_t)(*p - '0');
    if (v > UINT32_MAX) return NULL;
    p++;
  }
  *out = (uint32_t)v;
  return p;
}

/* Parses up to three dotted numbers; returns how many were present (0 on a syntax error). */
static int hms__parse_partial(const char *s, hms__semver_t *v) {
  memset(v, 0, sizeof *v);
  uint32_t *parts[3] = {&v->major, &v->minor, &v->patch};
  const char *p = s;
  for (int i = 0; i < 3; i++) {
    p = hms__parse_u32(p, parts[i]);
    if (!p) return 0;
    if (*p == 0) return i + 1;
    if (*p != '.') return 0;
    p++;
  }
  return 0;
}

bool hms__semver_parse(const char *s, hms__semver_t *out) {
  if (!s || strlen(s) > HMS_VERSION_MAX) return false;
  return hms__parse_partial(s, out) == 3;
}

int hms__semver_cmp(const hms__semver_t *a, const hms__semver_t *b) {
  if (a->major != b->major) return a->major < b->major ? -1 : 1;
  if (a->minor != b->minor) return a->minor < b->minor ? -1 : 1;
  if (a->patch != b->patch) return a->patch < b->patch ? -1 : 1;
  return 0;
}

/* Turns a requirement into the half-open range [lo, hi). hi.major == UINT32_MAX means unbounded. */
static bool hms__req_range(const char *req, hms__semver_t *lo, hms__semver_t *hi) {
  while (*req == ' ') req++;
  memset(lo, 0, sizeof *lo);
  hi->major = UINT32_MAX;
  hi->minor = hi->patch = 0;
  if (*req == 0 || strcmp(req, "*") == 0 || strcmp(req, "x") == 0) return true;
  char op = 0;
  if (req[0] == '^' || req[0] == '~' || req[0] == '=') {
    op = req[0];
    req++;
  } else if (req[0] == '>' && req[1] == '=') {
    op = '>';
    req += 2;
  }
  while (*req == ' ') req++;
  hms__semver_t v;
  int n = hms__parse_partial(req, &v);
  if (n == 0) return false;
  *lo = v;
  switch (op) {
    case '>':
      return true;
    case '=':
    case 0:
      if (n == 3) { /* exact */
        *hi = v;
        hi->patch++;
      } else if (n == 2) {
        *hi = (hms__semver_t){v.major, v.minor + 1, 0};
      } else {
        *hi = (hms__semver_t){v.major + 1, 0, 0};
      }
      return true;
    case '~':
      if (n == 1)
        *hi = (hms__semver_t){v.major + 1, 0, 0};
      else
        *hi = (hms__semver_t){v.major, v.minor + 1, 0};
      return true;
    case '^':
      if (v.major > 0 || n == 1)
        *hi = (hms__semver_t){v.major + 1, 0, 0};
      else if (v.minor > 0 || n == 2)
        *hi = (hms__semver_t){0, v.minor + 1, 0};
      else
        *hi = (hms__semver_t){0, 0, v.patch + 1};
      return true;
  }
  return false;
}

HMS_API int hms_version_matches(const char *version, const char *requirement) {
  hms__semver_t v, lo, hi;
  if (!version || !hms__semver_parse(version, &v)) return -1;
  if (!hms__req_range(requirement ? requirement : "*", &lo, &hi)) return -1;
  if (hms__semver_cmp(&v, &lo) < 0) return 0;
  if (hi.major != UINT32_MAX && hms__semver_cmp(&v, &hi) >= 0) return 0;
  return 1;
}

/* ------------------------------------------------------------------ runtime directory */
hms_status_t hms__runtime_dir_resolve(const char *given, char *out, size_t cap, hms_error_t *err) {
  char buf[HMS__PATH_MAX];
  const char *env = getenv("HMS_FFI_RUNTIME_DIR");
  const char *xdg = getenv("XDG_RUNTIME_DIR");
  struct stat st;
  if (given && *given)
    hms__strlcpy(buf, given, sizeof buf);
  else if (env && *env)
    hms__strlcpy(buf, env, sizeof buf);
  else if (xdg && *xdg && xdg[0] == '/' && stat(xdg, &st) == 0 && S_ISDIR(st.st_mode))
    snprintf(buf, sizeof buf, "%s/hms-ffi", xdg);
  else
    snprintf(buf, sizeof buf, "/tmp/hms-ffi-%u", (unsigned)getuid());
  size_t n = strlen(buf);
  while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
  /* Socket paths must fit sockaddr_un: leave room for "/<name>@<version>.sock". */
  if (n + 1 + 40 >= sizeof(((struct sockaddr_un *)0)->sun_path))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "runtime directory '%s' is too long for Unix socket paths (%zu bytes); "
                     "set HMS_FFI_RUNTIME_DIR to a shorter path",
                     buf, n);
  if (n + 1 > cap) return hms__fail(err, HMS_OUT_OF_RANGE, 0, "buffer of %zu bytes too small", cap);
  memcpy(out, buf, n + 1);
  return HMS_OK;
}

HMS_API hms_status_t hms_default_runtime_dir(char *buf, size_t cap, hms_error_t *err) {
  if (!buf) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "buf is NULL");
  hms_status_t st = hms__runtime_dir_resolve(NULL, buf, cap, err);
  if (st == HMS_OK) hms__ok(err);
  return st;
}

hms_status_t hms__runtime_dir_ensure(const char *dir, hms_error_t *err) {
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    int e = errno;
    return hms__fail(err, HMS_FAILED_PRECONDITION, e,
                     "cannot create runtime directory '%s': %s; create it (mode 0700) or set "
                     "HMS_FFI_RUNTIME_DIR to a writable directory",
                     dir, strerror(e));
  }
  struct stat st;
  if (lstat(dir, &st) != 0) {
    int e = errno;
    return hms__fail(err, HMS_FAILED_PRECONDITION, e, "cannot stat runtime directory '%s': %s", dir,
                     strerror(e));
  }
  if (!S_ISDIR(st.st_mode))
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0,
                     "runtime directory '%s' exists but is not a directory (a symlink or file?); remove it "
                     "or set HMS_FFI_RUNTIME_DIR elsewhere",
                     dir);
  if (st.st_uid != geteuid())
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0,
                     "runtime directory '%s' belongs to uid %u, not to us (uid %u): another user could "
                     "impersonate services; use a directory you own",
                     dir, (unsigned)st.st_uid, (unsigned)geteuid());
  if (st.st_mode & 0002)
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0,
                     "runtime directory '%s' is world-writable (mode %03o); run chmod 700 on it", dir,
                     (unsigned)(st.st_mode & 0777));
  return HMS_OK;
}

/* Reads the state letter (field 3) and the start time (field 22) of /proc/<pid>/stat. */
static bool hms__proc_stat(pid_t pid, char *state, uint64_t *starttime) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return false;
  buf[n] = 0;
  /* comm may contain spaces and parens: fields restart after the last ')'. */
  char *p = strrchr(buf, ')');
  if (!p || p[1] != ' ' || !p[2]) return false;
  *state = p[2];
  p++;
  /* after ')' come fields 3..; starttime is field 22 */
  int field = 2;
  while (*p && field < 22) {
    if (*p == ' ') field++;
    p++;
  }
  if (field != 22) return false;
  *starttime = strtoull(p, NULL, 10);
  return true;
}

uint64_t hms__proc_starttime(pid_t pid) {
  char state;
  uint64_t st;
  return hms__proc_stat(pid, &state, &st) ? st : 0;
}

/* Threads of a process (entries of /proc/<pid>/task), counted up to 2. */
static int hms__proc_threads(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while (n < 2 && (e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static bool hms__process_alive(pid_t pid, uint64_t starttime) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  char state;
  uint64_t st;
  if (!hms__proc_stat(pid, &state, &st)) return kill(pid, 0) == 0 || errno == EPERM; /* no /proc: trust kill */
  if (starttime != 0 && st != starttime) return false; /* the pid was reused */
  /* A killed process its parent has not reaped yet is a zombie: its sockets are closed and it will never
   * serve again. Counting it alive kept its entry, so clients got "connection refused" and a restarted
   * service was refused its own name (ALREADY_EXISTS) until the parent called wait(). A process whose
   * main thread alone exited (pthread_exit) also shows 'Z', but it still has other threads: alive. */
  if (state == 'Z' || state == 'X' || state == 'x') return hms__proc_threads(pid) > 1;
  return true;
}

static int hms__dir_lock(const char *dir) {
  char path[HMS__PATH_MAX];
  snprintf(path, sizeof path, "%s/.lock", dir);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return -1;
  while (flock(fd, LOCK_EX) != 0 && errno == EINTR) {
  }
  return fd;
}

static void hms__dir_unlock(int fd) {
  if (fd >= 0) close(fd); /* closing drops the flock */
}

/* ------------------------------------------------------------------ metadata files */
typedef struct {
  char name[HMS_NAME_MAX + 1];
  char version[HMS_VERSION_MAX + 1];
  char node[HMS_NAME_MAX + 1];
  int32_t pid;
  uint32_t uid;
  uint64_t starttime;
  uint32_t nfns;
  char **fn_names;
  uint32_t *fn_ids;
} hms__meta_t;

static void hms__meta_free(hms__meta_t *m) {
  for (uint32_t i = 0; i < m->nfns; i++) free(m->fn_names[i]);
  free(m->fn_names);
  free(m->fn_ids);
  m->fn_names = NULL;
  m->fn_ids = NULL;
  m->nfns = 0;
}

/* Metadata files are written by processes of the same user but are still parsed defensively. */
static bool hms__meta_read(const char *path, hms__meta_t *m) {
  memset(m, 0, sizeof *m);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  size_t cap = 1 << 20, len = 0;
  char *buf = malloc(cap + 1);
  if (!buf) {
    close(fd);
    return false;
  }
  for (;;) {
    ssize_t n = read(fd, buf + len, cap - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += (size_t)n;
    if (len == cap) break;
  }
  close(fd);
  buf[len] = 0;
  bool ok = strncmp(buf, "hms-ffi-service 1\n", 18) == 0;
  uint32_t fcap = 0;
  for (char *line = buf, *next; ok && line && *line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = 0;
    char *eq = strchr(line, '=');
    if (!eq) continue;
    *eq = 0;
    const char *k = line, *v = eq + 1;
    if (!strcmp(k, "name")) {
      hms__strlcpy(m->name, v, sizeof m->name);
    } else if (!strcmp(k, "version")) {
      hms__strlcpy(m->version, v, sizeof m->version);
    } else if (!strcmp(k, "node")) {
      hms__strlcpy(m->node, v, sizeof m->node);
    } else if (!strcmp(k, "pid")) {
      m->pid = (int32_t)strtol(v, NULL, 10);
    } else if (!strcmp(k, "uid")) {
      m->uid = (uint32_t)strtoul(v, NULL, 10);
    } else if (!strcmp(k, "starttime")) {
      m->starttime = strtoull(v, NULL, 10);
    } else if (!strcmp(k, "fn")) {
      char *sp = strchr(v, ' ');
      if (!sp || m->nfns >= HMS_MAX_FUNCTIONS) continue;
      uint32_t id = (uint32_t)strtoul(v, NULL, 10);
      const char *fname = sp + 1;
      if (!hms__name_valid(fname)) continue;
      if (m->nfns == fcap) {
        fcap = fcap ? fcap * 2 : 16;
        char **nn = realloc(m->fn_names, fcap * sizeof(char *));
        uint32_t *ni = nn ? realloc(m->fn_ids, fcap * sizeof(uint32_t)) : NULL;
        if (nn) m->fn_names = nn;
        if (!nn || !ni) {
          ok = false;
          break;
        }
        m->fn_ids = ni;
      }
      m->fn_names[m->nfns] = strdup(fname);
      m->fn_ids[m->nfns] = id;
      if (m->fn_names[m->nfns]) m->nfns++;
    }
  }
  free(buf);
  hms__semver_t sv;
  if (ok && (!hms__name_valid(m->name) || !hms__semver_parse(m->version, &sv) || m->pid <= 0)) ok = false;
  if (!ok) hms__meta_free(m);
  return ok;
}

static void hms__entry_paths(const char *dir, const char *name, const char *version, char *sock, size_t scap,
                             char *meta, size_t mcap) {
  if (sock) snprintf(sock, scap, "%s/%s@%s.sock", dir, name, version);
  if (meta) snprintf(meta, mcap, "%s/%s@%s.meta", dir, name, version);
}

/* Is somebody listening on this socket path? */
static bool hms__socket_listening(const char *path) {
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  hms__strlcpy(sa.sun_path, path, sizeof sa.sun_path);
  int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  bool live = rc == 0 || errno == EAGAIN || errno == EINPROGRESS;
  close(fd);
  return live;
}

hms_status_t hms__registry_bind(const char *dir, const char *name, const char *version, int *listen_fd,
                                char *sock_path, size_t sock_cap, uint64_t *dev, uint64_t *ino,
                                hms_error_t *err) {
  char meta_path[HMS__PATH_MAX];
  hms__entry_paths(dir, name, version, sock_path, sock_cap, meta_path, sizeof meta_path);
  struct sockaddr_un sa;
  if (strlen(sock_path) >= sizeof sa.sun_path)
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "socket path '%s' exceeds %zu bytes; use a shorter service name or runtime directory",
                     sock_path, sizeof sa.sun_path - 1);
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return hms__fail(err, HMS_INTERNAL, errno, "socket(AF_UNIX) failed: %s", strerror(errno));
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  hms__strlcpy(sa.sun_path, sock_path, sizeof sa.sun_path);
  int lk = hms__dir_lock(dir);
  if (lk < 0) {
    int e = errno;
    close(fd);
    return hms__fail(err, HMS_FAILED_PRECONDITION, e, "cannot lock runtime directory '%s': %s", dir,
                     strerror(e));
  }
  hms_status_t st = HMS_OK;
  mode_t old = umask(0077);
  int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
  if (rc != 0 && errno == EADDRINUSE) {
    hms__meta_t m;
    bool have_meta = hms__meta_read(meta_path, &m);
    bool alive = have_meta && hms__process_alive(m.pid, m.starttime);
    if (alive || hms__socket_listening(sock_path)) {
      st = hms__fail(err, HMS_ALREADY_EXISTS, 0,
                     "service %s@%s is already served by pid %d (node '%s'); stop that process or add "
                     "the service with another version",
                     name, version, have_meta ? m.pid : -1, have_meta ? m.node : "?");
    } else {
      /* A dead process's entry: take it over. */
      unlink(sock_path);
      unlink(meta_path);
      rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    }
    if (have_meta) hms__meta_free(&m);
  }
  umask(old);
  if (st == HMS_OK && rc != 0)
    st = hms__fail(err, HMS_UNAVAILABLE, errno, "bind('%s') failed: %s", sock_path, strerror(errno));
  if (st == HMS_OK && listen(fd, 128) != 0) {
    st = hms__fail(err, HMS_UNAVAILABLE, errno, "listen('%s') failed: %s", sock_path, strerror(errno));
    unlink(sock_path);
  }
  struct stat sst;
  if (st == HMS_OK && stat(sock_path, &sst) == 0) {
    *dev = (uint64_t)sst.st_dev;
    *ino = (uint64_t)sst.st_ino;
  }
  hms__dir_unlock(lk);
  if (st != HMS_OK) {
    close(fd);
    return st;
  }
  *listen_fd = fd;
  return HMS_OK;
}

hms_status_t hms__registry_write_meta(hms_service_t *svc, hms_error_t *err) {
  hms_node_t *node = svc->node;
  char tmp[HMS__PATH_MAX + 32];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", svc->meta_path, (int)getpid());
  FILE *f = fopen(tmp, "we");
  if (!f)
    return hms__fail(err, HMS_FAILED_PRECONDITION, errno, "cannot write '%s': %s", tmp, strerror(errno));
  /* Owner-only, unless the service is opened to a group (hms_service_open_to_group): its members must
   * read it to find the socket. */
  if (svc->group_gid >= 0 && fchown(fileno(f), (uid_t)-1, (gid_t)svc->group_gid) == 0)
    fchmod(fileno(f), 0640);
  else
    fchmod(fileno(f), 0600);
  fprintf(f, "hms-ffi-service 1\nname=%s\nversion=%s\nnode=%s\npid=%d\nuid=%u\nstarttime=%llu\n", svc->name,
          svc->version, node->name, (int)getpid(), (unsigned)getuid(),
          (unsigned long long)hms__proc_starttime(getpid()));
  uint32_t n = atomic_load(&svc->nfns);
  for (uint32_t i = 0; i < n; i++) fprintf(f, "fn=%u %s\n", svc->fns[i]->id, svc->fns[i]->name);
  bool ok = fflush(f) == 0;
  ok = (fclose(f) == 0) && ok;
  if (!ok || rename(tmp, svc->meta_path) != 0) {
    int e = errno;
    unlink(tmp);
    return hms__fail(err, HMS_FAILED_PRECONDITION, e, "cannot write '%s': %s", svc->meta_path, strerror(e));
  }
  return HMS_OK;
}

/* hms_service_open_to_group(): the runtime directory (group gid, 0750: members may list it and pass
 * through), this service's socket (group gid, 0660: members may connect) and metadata (0640). Called
 * with the node's lock held. */
hms_status_t hms__registry_open_to_group(hms_service_t *svc, gid_t gid, hms_error_t *err) {
  const char *dir = svc->node->runtime_dir;
  struct stat st;
  if (lstat(dir, &st) != 0)
    return hms__fail(err, HMS_FAILED_PRECONDITION, errno, "cannot stat runtime directory '%s': %s", dir,
                     strerror(errno));
  if ((st.st_mode & 0070) && st.st_gid != gid)
    return hms__fail(err, HMS_FAILED_PRECONDITION, 0,
                     "runtime directory '%s' is already open to group %u; a directory has one group: give this "
                     "service a runtime directory of its own (HMS_FFI_RUNTIME_DIR)",
                     dir, (unsigned)st.st_gid);
  if (chown(dir, (uid_t)-1, gid) != 0 || chown(svc->sock_path, (uid_t)-1, gid) != 0) {
    int e = errno;
    return hms__fail(err, e == EPERM ? HMS_PERMISSION_DENIED : HMS_FAILED_PRECONDITION, e,
                     "cannot give %s@%s's socket to group %u: %s; the serving user must be a member of that group "
                     "(or root)",
                     svc->name, svc->version, (unsigned)gid, strerror(e));
  }
  if (chmod(svc->sock_path, 0660) != 0) {
    int e = errno;
    return hms__fail(err, HMS_FAILED_PRECONDITION, e, "chmod('%s') failed: %s", svc->sock_path, strerror(e));
  }
  svc->group_gid = gid;
  hms_status_t rc = hms__registry_write_meta(svc, err);
  if (rc) return rc;
  if (chmod(dir, 0750) != 0) {
    int e = errno;
    return hms__fail(err, HMS_FAILED_PRECONDITION, e, "chmod('%s', 0750) failed: %s", dir, strerror(e));
  }
  return HMS_OK;
}

void hms__registry_unregister(hms_service_t *svc) {
  char dir[HMS__PATH_MAX];
  hms__strlcpy(dir, svc->node->runtime_dir, sizeof dir);
  int lk = hms__dir_lock(dir);
  /* Only remove what is still ours: a restarted process may have taken the name over. */
  hms__meta_t m;
  if (hms__meta_read(svc->meta_path, &m)) {
    if (m.pid == (int32_t)getpid()) unlink(svc->meta_path);
    hms__meta_free(&m);
  }
  /* fstat() on a socket describes sockfs, not the path: compare with what we saw right after bind. */
  struct stat b;
  if (svc->listen_fd >= 0 && stat(svc->sock_path, &b) == 0 && (uint64_t)b.st_ino == svc->sock_ino &&
      (uint64_t)b.st_dev == svc->sock_dev)
    unlink(svc->sock_path);
  hms__dir_unlock(lk);
}

/* ------------------------------------------------------------------ listing and resolving */
typedef struct {
  hms__meta_t meta;
  hms__semver_t ver;
} hms__entry_t;

static int hms__entry_cmp(const void *pa, const void *pb) {
  const hms__entry_t *a = pa, *b = pb;
  int c = strcmp(a->meta.name, b->meta.name);
  if (c) return c;
  return -hms__semver_cmp(&a->ver, &b->ver); /* newest first */
}

static bool hms__has_suffix(const char *s, const char *suf) {
  size_t n = strlen(s), k = strlen(suf);
  return n >= k && strcmp(s + n - k, suf) == 0;
}

/* Reads every live entry; removes those of dead processes (and sockets nobody listens on). */
static hms_status_t hms__scan(const char *dir, const char *only_name, hms__entry_t **out, size_t *count,
                              hms_error_t *err) {
  *out = NULL;
  *count = 0;
  DIR *d = opendir(dir);
  if (!d) {
    if (errno == ENOENT) return HMS_OK;
    return hms__fail(err, HMS_FAILED_PRECONDITION, errno, "cannot read runtime directory '%s': %s", dir,
                     strerror(errno));
  }
  size_t cap = 0, n = 0;
  hms__entry_t *v = NULL;
  struct dirent *e;
  char path[HMS__PATH_MAX];
  int lk = -1;
  while ((e = readdir(d)) != NULL) {
    const char *fn = e->d_name;
    if (fn[0] == '.') continue;
    bool is_meta = hms__has_suffix(fn, ".meta"), is_sock = hms__has_suffix(fn, ".sock");
    if (!is_meta && !is_sock) continue;
    if (only_name) {
      size_t k = strlen(only_name);
      if (strncmp(fn, only_name, k) != 0 || fn[k] != '@') continue;
    }
    snprintf(path, sizeof path, "%s/%s", dir, fn);
    if (is_sock) {
      /* A socket without metadata: a registration in flight (it holds the lock) or a crash leftover. */
      char meta[HMS__PATH_MAX];
      snprintf(meta, sizeof meta, "%.*s.meta", (int)(strlen(path) - 5), path);
      if (access(meta, F_OK) == 0) continue;
      if (lk < 0) lk = hms__dir_lock(dir);
      if (access(meta, F_OK) != 0 && !hms__socket_listening(path)) unlink(path);
      continue;
    }
    hms__entry_t ent;
    if (!hms__meta_read(path, &ent.meta)) continue;
    hms__semver_parse(ent.meta.version, &ent.ver);
    if (!hms__process_alive(ent.meta.pid, ent.meta.starttime)) {
      if (lk < 0) lk = hms__dir_lock(dir);
      /* Re-read under the lock: a new process may have registered the same name meanwhile. */
      hms__meta_t again;
      if (hms__meta_read(path, &again)) {
        if (again.pid == ent.meta.pid && again.starttime == ent.meta.starttime) {
          char sock[HMS__PATH_MAX];
          snprintf(sock, sizeof sock, "%.*s.sock", (int)(strlen(path) - 5), path);
          unlink(sock);
          unlink(path);
        }
        hms__meta_free(&again);
      }
      hms__meta_free(&ent.meta);
      continue;
    }
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      hms__entry_t *nv = realloc(v, cap * sizeof *v);
      if (!nv) {
        hms__meta_free(&ent.meta);
        break;
      }
      v = nv;
    }
    v[n++] = ent;
  }
  closedir(d);
  hms__dir_unlock(lk);
  if (n) qsort(v, n, sizeof *v, hms__entry_cmp);
  *out = v;
  *count = n;
  return HMS_OK;
}

static void hms__list_release(hms_service_list_t *list) {
  if (!list || !list->release) return;
  for (size_t i = 0; i < list->count; i++) {
    hms_service_info_t *it = &list->items[i];
    for (uint32_t j = 0; j < it->function_count; j++) free(it->function_names[j]);
    free(it->function_names);
    free(it->function_ids);
  }
  free(list->items);
  list->items = NULL;
  list->count = 0;
  list->release = NULL;
}

HMS_API hms_status_t hms_list_services(const char *runtime_dir, hms_service_list_t *out, hms_error_t *err) {
  if (!out) return hms__fail(err, HMS_INVALID_ARGUMENT, 0, "out is NULL");
  memset(out, 0, sizeof *out);
  char dir[HMS__PATH_MAX];
  hms_status_t st = hms__runtime_dir_resolve(runtime_dir, dir, sizeof dir, err);
  if (st) return st;
  hms__entry_t *v;
  size_t n;
  st = hms__scan(dir, NULL, &v, &n, err);
  if (st) return st;
  out->items = calloc(n ? n : 1, sizeof *out->items);
  if (!out->items) {
    for (size_t i = 0; i < n; i++) hms__meta_free(&v[i].meta);
    free(v);
    return hms__fail(err, HMS_RESOURCE_EXHAUSTED, ENOMEM, "out of memory listing services");
  }
  for (size_t i = 0; i < n; i++) {
    hms_service_info_t *it = &out->items[i];
    hms__meta_t *m = &v[i].meta;
    hms__strlcpy(it->name, m->name, sizeof it->name);
    hms__strlcpy(it->version, m->version, sizeof it->version);
    hms__strlcpy(it->node, m->node, sizeof it->node);
    it->pid = m->pid;
    it->uid = m->uid;
    it->function_count = m->nfns;
    it->function_names = m->fn_names; /* ownership moves to the list */
    it->function_ids = m->fn_ids;
  }
  free(v);
  out->count = n;
  out->release = hms__list_release;
  hms__ok(err);
  return HMS_OK;
}

hms_status_t hms__registry_resolve(const char *dir, const char *name, const char *req, char ***paths,
                                   char ***versions, size_t *count, hms_error_t *err) {
  *paths = NULL;
  *versions = NULL;
  *count = 0;
  hms__semver_t lo, hi;
  if (!hms__req_range(req, &lo, &hi))
    return hms__fail(err, HMS_INVALID_ARGUMENT, 0,
                     "version requirement '%s' does not parse; use '*', '1.2.3', '^1', '^1.2', '~1.2' or "
                     "'>=1.2'",
                     req);
  hms__entry_t *v;
  size_t n;
  hms_status_t st = hms__scan(dir, name, &v, &n, err);
  if (st) return st;
  char seen[200] = "";
  size_t k = 0;
  *paths = calloc(n ? n : 1, sizeof(char *));
  *versions = calloc(n ? n : 1, sizeof(char *));
  for (size_t i = 0; i < n; i++) {
    hms__meta_t *m = &v[i].meta;
    if (strcmp(m->name, name) == 0) {
      if (hms_version_matches(m->version, req) == 1 && *paths && *versions) {
        char p[HMS__PATH_MAX];
        hms__entry_paths(dir, m->name, m->version, p, sizeof p, NULL, 0);
        (*paths)[k] = strdup(p);
        (*versions)[k] = strdup(m->version);
        if ((*paths)[k] && (*versions)[k]) k++;
      } else {
        size_t l = strlen(seen);
        snprintf(seen + l, sizeof seen - l, "%s%s", l ? ", " : "", m->version);
      }
    }
    hms__meta_free(m);
  }
  free(v);
  *count = k;
  if (k == 0) {
    struct stat sb;
    if (stat(dir, &sb) != 0)
      return hms__fail(err, HMS_NOT_FOUND, 0,
                       "no service '%s': runtime directory '%s' does not exist (is the service running, "
                       "with the same HMS_FFI_RUNTIME_DIR?)",
                       name, dir);
    if (seen[0])
      return hms__fail(err, HMS_NOT_FOUND, 0,
                       "service '%s' is running but no version matches '%s' (available: %s)", name, req, seen);
    return hms__fail(err, HMS_NOT_FOUND, 0,
                     "no live service '%s' in '%s'; start it, or check the name with `hms-ffi ls`", name, dir);
  }
  return HMS_OK;
}

/* ================================================================== topics (topic.c) helpers
 * Thin wrappers so topic.c applies the same locking and liveness rules to its .topic/.tmeta entries
 * as the service registry does to .sock/.meta. */
int hms__registry_lock(const char *dir) { return hms__dir_lock(dir); }
void hms__registry_unlock(int fd) { hms__dir_unlock(fd); }
bool hms__registry_alive(pid_t pid, uint64_t starttime) { return hms__process_alive(pid, starttime); }
bool hms__registry_listening(const char *sock_path) { return hms__socket_listening(sock_path); }
/* ================================================================== end of topics helpers */
