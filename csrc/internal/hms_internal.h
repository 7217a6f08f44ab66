/* Private declarations shared by the core's layers. Nothing here is ABI. */
#ifndef HMS_INTERNAL_H
#define HMS_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#ifndef HMS_FFI_BUILDING
#define HMS_FFI_BUILDING 1
#endif

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "hms_ffi/hms_ffi.h"

#define HMS__CACHELINE 64
#define HMS__PATH_MAX 4096
#define HMS__LIKELY(x) __builtin_expect(!!(x), 1)
#define HMS__UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---------------------------------------------------------------- errors (status.c) */
/* Sets err (if non-NULL) and returns code. printf-style message. */
hms_status_t hms__fail(hms_error_t *err, hms_status_t code, int os_errno, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
hms_status_t hms__fail_remote(hms_error_t *err, hms_status_t code, const char *msg, size_t msg_len);
void hms__ok(hms_error_t *err);

/* ---------------------------------------------------------------- time and waiting (wait.c) */
int64_t hms__now_ns(void); /* CLOCK_MONOTONIC: shared by every process on the host */
/* Absolute deadline from a relative timeout; INT64_MAX when timeout < 0. */
int64_t hms__deadline_from_timeout(int64_t timeout_ns);
static inline void hms__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#else
  __asm__ __volatile__("" ::: "memory");
#endif
}
/* futex on a word in shared memory (shared=1) or process-private memory (shared=0).
 * Returns 0 when woken or the value differed, ETIMEDOUT, or EINTR. */
int hms__futex_wait(_Atomic uint32_t *addr, uint32_t expected, int64_t timeout_ns, int shared);
void hms__futex_wake(_Atomic uint32_t *addr, int count, int shared);
int64_t hms__default_spin_ns(void);

/* Adaptive spin: the budget shrinks while spinning keeps failing and grows back when it succeeds. */
typedef struct {
  int64_t budget_ns; /* configured maximum; 0 = never spin */
  int64_t limit_ns;  /* current limit */
} hms__spin_t;
void hms__spin_init(hms__spin_t *s, int64_t budget_ns);
void hms__spin_feedback(hms__spin_t *s, bool spin_succeeded);

/* ---------------------------------------------------------------- frames and rings (ring.c) */
enum {
  HMS__FRAME_REQUEST = 1,
  HMS__FRAME_RESPONSE = 2,
  HMS__FRAME_PAD = 3,
  HMS__FRAME_CANCEL = 4, /* client -> server: call_id was cancelled */
  HMS__FRAME_DATA = 5,   /* client -> server: an item of the client stream call_id */
  HMS__FRAME_END = 6,    /* client -> server: the client stream call_id has no more items */
};
enum {
  HMS__FRAME_F_TRACE_SAMPLED = 1u << 0,
  HMS__FRAME_F_ONEWAY = 1u << 1, /* request: send no reply */
  HMS__FRAME_F_STREAM = 1u << 2, /* request: the caller reads a server stream */
  HMS__FRAME_F_ITEM = 1u << 3,   /* response: a stream item; more frames follow for this call */
  HMS__FRAME_F_CSTREAM = 1u << 4, /* request: the caller sends DATA frames and an END frame */
  HMS__FRAME_F_ARENA = 1u << 5,   /* the payload is a hms__aref_wire_t naming a block in the sender's arena */
};
/* consumer_sleeping bits: how the consumer wants to be woken */
enum { HMS__SLEEP_FUTEX = 1u << 0, HMS__SLEEP_EVENTFD = 1u << 1 };

/* The fixed 64-byte frame header. Lives in shared memory: always copy it out before use. */
typedef struct {
  uint32_t len;          /* whole frame incl. header, multiple of 64 */
  uint16_t kind;         /* HMS__FRAME_* */
  uint16_t flags;
  uint32_t fn_id;
  uint32_t content_type;
  uint64_t call_id;
  int64_t deadline_ns;   /* absolute CLOCK_MONOTONIC, 0 = none */
  int32_t status;
  uint32_t payload_len;
  uint8_t trace_id[16];
  uint8_t span_id[8];
} hms__frame_hdr_t;
_Static_assert(sizeof(hms__frame_hdr_t) == HMS_FRAME_HEADER_BYTES, "frame header is 64 bytes");

/* Control block of one SPSC ring, in shared memory. Each word sits on the cache line of the side
 * that writes it; the sleep/wait flags get lines of their own because they are written rarely and
 * read on every publish/consume, so they stay shared in both caches instead of bouncing. */
typedef struct {
  _Alignas(HMS__CACHELINE) _Atomic uint64_t head; /* producer: bytes ever published */
  _Atomic uint32_t data_seq;                      /* producer bumps; consumer futex-waits on it */
  _Atomic uint32_t cancels;                       /* request rings: CANCEL frames ever published */
  _Alignas(HMS__CACHELINE) _Atomic uint64_t tail; /* consumer: bytes ever consumed */
  _Atomic uint32_t space_seq;                     /* consumer bumps; producer futex-waits on it */
  _Alignas(HMS__CACHELINE) _Atomic uint32_t consumer_sleeping; /* consumer sets before it sleeps */
  _Alignas(HMS__CACHELINE) _Atomic uint32_t producer_waiting;  /* producer sets when it waits for space */
} hms__ring_ctl_t;
_Static_assert(sizeof(hms__ring_ctl_t) == 4 * HMS__CACHELINE, "ring control block layout");

/* A process-private view of a ring. Our own index is kept privately (the peer may scribble on the
 * shared copy); the peer's index is re-read and validated on every use. */
typedef struct {
  hms__ring_ctl_t *ctl;
  uint8_t *data;
  uint64_t cap;       /* power of two */
  uint64_t max_frame; /* cap / 4 */
  uint64_t pos;       /* producer: our head; consumer: our tail */
  uint64_t peer_cache;/* producer: last validated tail; consumer: last validated head */
} hms__ring_t;

enum { HMS__RING_OK = 0, HMS__RING_EMPTY = 1, HMS__RING_FULL = 2, HMS__RING_CORRUPT = 3 };

void hms__ring_attach(hms__ring_t *r, hms__ring_ctl_t *ctl, uint8_t *data, uint64_t cap);
uint64_t hms__frame_bytes(uint64_t payload_len);
/* Producer: reserve a frame with room for payload_len bytes. On HMS__RING_OK *out points at the
 * frame start (header then payload). Writes a PAD frame on wrap. */
int hms__ring_reserve(hms__ring_t *r, uint64_t payload_len, uint8_t **out, char *why, size_t why_cap);
/* Producer: publish the reserved frame (release store). */
void hms__ring_publish(hms__ring_t *r, uint64_t frame_bytes);
/* Producer: publish everything written so far (after frames were added with r->pos += len only). */
void hms__ring_flush(hms__ring_t *r);
/* Producer: bytes free as far as the validated tail tells. Returns HMS__RING_CORRUPT on a bad tail. */
int hms__ring_free(hms__ring_t *r, uint64_t *free_bytes, char *why, size_t why_cap);
/* Consumer: copy out and validate the next frame header (skipping PAD frames). On HMS__RING_OK, *hdr
 * is the validated copy and *payload points at payload_len bytes inside the ring. */
int hms__ring_peek(hms__ring_t *r, hms__frame_hdr_t *hdr, const uint8_t **payload, char *why, size_t why_cap);
/* Consumer: looks at frames after the one returned by the last peek without consuming anything;
 * calls fn for each valid frame header until fn returns true (found) or the data ends. Stops at the
 * first invalid header. Returns true when fn found what it looked for. */
bool hms__ring_scan_ahead(const hms__ring_t *r, const hms__frame_hdr_t *current,
                          bool (*fn)(const hms__frame_hdr_t *h, void *arg), void *arg, int max_frames);
/* Consumer: release the frame returned by the last peek; wakes a producer waiting for space. */
void hms__ring_consume(hms__ring_t *r, const hms__frame_hdr_t *hdr);
/* True when the consumer would find something (cheap check, no validation). */
static inline bool hms__ring_has_data(const hms__ring_t *r) {
  return atomic_load_explicit(&r->ctl->head, memory_order_acquire) != r->pos;
}

/* ---------------------------------------------------------------- connection memory layout (channel.c) */
#define HMS__CONN_MAGIC 0x314e4e4f43534d48ull /* "HMSCONN1" */
#define HMS__HELLO_MAGIC 0x314f4c4c4548534dull
#define HMS__WELCOME_MAGIC 0x31454d4f434c4557ull
#define HMS__PROTO_VERSION 1
#define HMS__CONN_HEADER_BYTES 4096
#define HMS__REQ_CTL_OFFSET 1024
#define HMS__RESP_CTL_OFFSET 2048

typedef struct {
  uint64_t magic;
  uint32_t proto;
  uint32_t header_bytes;
  uint64_t req_cap;
  uint64_t resp_cap;
  uint64_t table_bytes;
  uint64_t total_bytes;
} hms__conn_hdr_t;

/* Client -> server, first message on the socket. */
typedef struct {
  uint64_t magic;
  uint32_t abi;
  uint32_t proto;
  uint64_t ring_bytes;
  char service[HMS_NAME_MAX + 1];
  char version[HMS_VERSION_MAX + 1];
  char client_node[HMS_NAME_MAX + 1];
} hms__hello_t;

/* Server -> client, carries the memfd and the doorbell eventfd with SCM_RIGHTS when status == OK. */
typedef struct {
  uint64_t magic;
  uint32_t abi;
  uint32_t proto;
  int32_t status;
  int32_t reserved;
  char message[256];
  uint64_t req_cap;
  uint64_t resp_cap;
  uint64_t table_bytes;
  uint64_t total_bytes;
  uint32_t function_count;
  uint32_t reserved2;
} hms__welcome_t;

/* Function table entries in the memfd after the rings: {u32 id, u32 flags, u32 name_len, name...}
 * each padded to 4 bytes. */

uint64_t hms__conn_total_bytes(uint64_t req_cap, uint64_t resp_cap, uint64_t table_bytes);
int hms__memfd_create_sealed(uint64_t size, void **map, char *why, size_t why_cap);
bool hms__is_pow2(uint64_t v);
int hms__send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);
/* Receives one message and up to max_fds descriptors; closes surplus/unexpected descriptors. */
ssize_t hms__recv_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds);

/* ---------------------------------------------------------------- arena (arena.c) */
/* The inline payload of an HMS__FRAME_F_ARENA frame: a block of the sender's arena. Copied out of the
 * ring and validated (known segment, offset + length within its sealed size) before use. */
typedef struct {
  uint32_t segment;
  uint32_t generation;
  uint64_t offset;
  uint64_t length;
  uint64_t reserved;
} hms__aref_wire_t;
_Static_assert(sizeof(hms__aref_wire_t) == 32, "arena reference is 32 bytes");
#define HMS__ARENA_MAX_SEGMENTS 64             /* per side of a connection, owned and mapped */
#define HMS__ARENA_MAX_MAPPED (64ull << 30)    /* peer bytes one connection may make us map */
/* Release hints in the connection header page: each is bumped by the side that sent releases. */
#define HMS__ARENA_C2S_HINT_OFFSET 3072
#define HMS__ARENA_S2C_HINT_OFFSET 3136
/* Socket messages (one SOCK_SEQPACKET datagram each): a header, then one hms__amsg_segment_t plus the
 * segment's memfd (SCM_RIGHTS), or `count` hms__amsg_release_t records. */
#define HMS__AMSG_MAGIC 0x41534d48u /* "HMSA" */
enum { HMS__AMSG_SEGMENT = 1, HMS__AMSG_RELEASE = 2 };
#define HMS__AMSG_MAX_RELEASES 256
typedef struct {
  uint32_t magic;
  uint32_t kind;
  uint32_t count; /* RELEASE: records that follow */
  uint32_t reserved;
} hms__amsg_hdr_t;
typedef struct {
  uint32_t segment;
  uint32_t reserved;
  uint64_t size;
} hms__amsg_segment_t;
typedef struct {
  uint32_t segment;
  uint32_t generation;
  uint64_t offset;
} hms__amsg_release_t;
typedef struct hms__arena_s hms__arena_t;
typedef struct {
  void *data;
  size_t len;
  uint32_t segment, generation;
  uint64_t offset;
  hms__arena_t *arena; /* a reference while loaned */
} hms__block_t;
hms__arena_t *hms__arena_new(int sock, _Atomic uint32_t *tx_hint, _Atomic uint32_t *rx_hint, uint64_t quota);
void hms__arena_detach(hms__arena_t *a); /* the connection closes (its reference is dropped with put) */
void hms__arena_put(hms__arena_t *a);    /* drops a reference (the connection's, hms__block_take's) */
void hms__arena_set_quota(hms__arena_t *a, uint64_t quota);
uint64_t hms__arena_quota(hms__arena_t *a);
hms_status_t hms__arena_alloc(hms__arena_t *a, size_t len, hms__block_t *out, hms_error_t *err);
void hms__arena_mark_sent(hms__block_t *b, size_t len, hms__aref_wire_t *wire);
void hms__arena_unloan(hms__block_t *b);
void hms__arena_unsend(hms__arena_t *a, const hms__aref_wire_t *wire);
hms_status_t hms__arena_copy_in(hms__arena_t *a, const void *x, size_t xlen, const void *y, size_t ylen,
                                hms__aref_wire_t *wire, hms_error_t *err);
/* Receiver: a frame's reference into a payload whose release sends the block back. -1 (why filled)
 * when the reference is invalid: the peer broke the protocol. */
int hms__arena_resolve(hms__arena_t *a, const uint8_t *frame_payload, uint32_t payload_len, uint32_t ct,
                       hms_payload_t *out, char *why, size_t why_cap);
void hms__arena_release_wire(hms__arena_t *a, const hms__aref_wire_t *wire); /* a frame dropped unread */
/* Reads queued socket messages (segment announcements, releases). 0 ok, 1 the peer closed, -1 protocol
 * error (why filled). */
int hms__arena_drain(hms__arena_t *a, char *why, size_t why_cap);
void hms__arena_stats_add(hms__arena_t *a, hms_arena_stats_t *st);
hms_status_t hms__block_loan(hms__arena_t *a, size_t size, hms_block_t *block, hms_error_t *err);
hms_status_t hms__block_take(hms_block_t *block, size_t len, hms__arena_t *expect, hms__aref_wire_t *wire,
                             hms__arena_t **arena, hms_error_t *err);

/* ---------------------------------------------------------------- registry (registry.c) */
typedef struct {
  uint32_t major, minor, patch;
} hms__semver_t;
bool hms__semver_parse(const char *s, hms__semver_t *out);
int hms__semver_cmp(const hms__semver_t *a, const hms__semver_t *b);
bool hms__name_valid(const char *s);
hms_status_t hms__runtime_dir_resolve(const char *given, char *out, size_t cap, hms_error_t *err);
hms_status_t hms__runtime_dir_ensure(const char *dir, hms_error_t *err);
uint64_t hms__proc_starttime(pid_t pid); /* 0 when the process does not exist */
/* Registration of one service: binds its socket under a directory lock. */
hms_status_t hms__registry_bind(const char *dir, const char *name, const char *version, int *listen_fd,
                                char *sock_path, size_t sock_cap, uint64_t *dev, uint64_t *ino,
                                hms_error_t *err);
hms_status_t hms__registry_write_meta(hms_service_t *svc, hms_error_t *err);
void hms__registry_unregister(hms_service_t *svc);
/* Finds live candidates for name/req, newest first. Returns count; fills paths (caller frees). */
hms_status_t hms__registry_resolve(const char *dir, const char *name, const char *req, char ***paths,
                                   char ***versions, size_t *count, hms_error_t *err);

/* ---------------------------------------------------------------- node, services, server side (node.c) */
typedef struct {
  char name[HMS_NAME_MAX + 1];
  uint32_t id;
  uint32_t flags;
  hms_handler_fn fn;
  void *user_data;
  _Atomic(hms_batch_handler_fn) batch_fn; /* set with hms_function_set_batch_handler */
  void *batch_user_data;                  /* written before batch_fn is published */
  _Atomic(struct hms__access_rule_s *) access; /* access.c; NULL = everybody, node's audit level */
  struct hms__stats_fn_s *stats;          /* this function's counters in the service's stats block, or NULL */
} hms__fn_t;

struct hms_service_s {
  hms_node_t *node;
  char name[HMS_NAME_MAX + 1];
  char version[HMS_VERSION_MAX + 1];
  hms__semver_t semver;
  int listen_fd;
  char sock_path[HMS__PATH_MAX];
  char meta_path[HMS__PATH_MAX];
  uint64_t sock_dev, sock_ino; /* identity of the socket file we bound, to unlink only our own */
  hms__fn_t *fns[HMS_MAX_FUNCTIONS];
  _Atomic uint32_t nfns;
  struct hms__ep_tag_s *tag;
  struct hms_service_s *next;
  /* access control and limits (access.c) */
  _Atomic uint32_t acl_gen;                /* 0 = no rule anywhere; bumped whenever a rule changes */
  struct hms__access_rule_s *acl_all;      /* every rule ever set (freed at close: the dispatcher may read) */
  _Atomic uint32_t max_connections, max_inflight;
  _Atomic uint64_t max_ring_bytes, arena_quota, max_message;
  uint32_t active_conns;                   /* serving thread only */
  int64_t group_gid;                       /* hms_service_open_to_group(), -1 = owner only */
  struct hms__stats_s *stats; /* the counters block (stats.c), NULL when none could be created */
};

typedef struct hms__ep_tag_s {
  int kind; /* HMS__EP_* */
  void *ptr;
} hms__ep_tag_t;
enum { HMS__EP_LISTEN = 1, HMS__EP_CONN_SOCK = 2, HMS__EP_CONN_BELL = 3, HMS__EP_STOP = 4 };

struct hms_call_s {
  struct hms__conn_s *conn;
  const hms__fn_t *fn;
  hms__frame_hdr_t hdr; /* validated copy */
  bool replied;
  hms_status_t err_code;
  char err_msg[256];
  uint8_t *err_details;
  size_t err_details_len;
  uint32_t err_details_ct;
  bool consumed; /* client stream: the opening frame left the ring before the handler ran */
  bool in_ended; /* client stream: the caller's END frame was seen */
  bool deferred; /* this is the call view of an hms_deferred_t (answered from another thread) */
  hms_payload_t *arena_req; /* the request when it arrived in the arena (released after the handler
                               unless hms_call_take_request() took it); NULL otherwise */
  int64_t audit_t0;         /* != 0: record the call (audit level ALL) when answered; its start time */
  /* metrics (stats.c) */
  struct hms__stats_fn_s *stats; /* the function's counters, NULL when none */
  int64_t t0;                    /* CLOCK_MONOTONIC when the dispatcher took the request */
  uint64_t out_bytes;            /* reply / stream item payload bytes sent so far */
  bool handed_off;               /* hms_call_defer() took this call: its deferred copy finishes the stats */
};

struct hms_node_s {
  char name[HMS_NAME_MAX + 1];
  char runtime_dir[HMS__PATH_MAX];
  int64_t spin_ns;
  uint64_t ring_bytes;
  uint64_t arena_quota; /* for connections accepted from now on */
  int epfd;
  int stop_fd;
  hms__ep_tag_t stop_tag;
  _Atomic int stop_requested;
  _Atomic int serving;
  pthread_mutex_t lock; /* services list, function adds, metadata writes */
  hms_service_t *services;
  struct hms__conn_s **conns; /* active and handshaking server-side connections */
  size_t nconns, conns_cap;
  pthread_t thread;
  bool thread_running;
  /* one-way batch runs (serving thread only) */
  uint8_t *batch_data;
  size_t batch_cap;
  hms_payload_t *batch_items;   /* HMS_BATCH_MAX_ITEMS */
  uint32_t *batch_offsets;      /* HMS_BATCH_MAX_ITEMS + 1 */
  _Atomic(struct hms__audit_s *) audit; /* audit.c; NULL = off */
};

/* ---------------------------------------------------------------- access control and audit (access.c, audit.c) */
typedef struct hms__access_rule_s {
  struct hms__access_rule_s *next_all;
  uint32_t flags, audit;
  uint32_t *uids, *gids;
  size_t n_uids, n_gids;
  char *roles;
} hms__access_rule_t;
#define HMS__PEER_GROUPS_MAX 64
#define HMS__ACL_WORDS (HMS_MAX_FUNCTIONS / 64)
/* Fills bits (HMS__ACL_WORDS words, bit i-1 = function id i) for a caller; returns the generation used. */
uint32_t hms__access_bitmap(hms_service_t *svc, uid_t uid, gid_t gid, const gid_t *groups, uint32_t ngroups,
                            uint64_t *bits);
void hms__access_deny_message(const hms_service_t *svc, const hms__fn_t *fn, uid_t uid, gid_t gid, char *buf,
                              size_t cap);
void hms__service_access_free(hms_service_t *svc);
void hms__service_limits_default(hms_service_t *svc);
/* Registry side of hms_service_open_to_group (registry.c): socket, metadata and directory modes. */
hms_status_t hms__registry_open_to_group(hms_service_t *svc, gid_t gid, hms_error_t *err);

typedef struct hms__audit_s hms__audit_t;
/* The audit level of a function under the node's default. */
static inline uint32_t hms__audit_level(const hms__audit_t *a, uint32_t node_level, const hms__fn_t *fn) {
  if (!a) return HMS_AUDIT_NONE;
  const hms__access_rule_t *r = fn ? atomic_load_explicit(&((hms__fn_t *)fn)->access, memory_order_acquire) : NULL;
  return r && r->audit != HMS_AUDIT_DEFAULT ? r->audit : node_level;
}
uint32_t hms__audit_node_level(const hms__audit_t *a);
/* Never blocks: a full queue counts the record as dropped. function NULL = a connection refusal. */
void hms__audit_record(hms__audit_t *a, const char *service, const char *function, int32_t pid, uint32_t uid,
                       uint32_t gid, int32_t status, bool allow, int64_t duration_ns, uint64_t call_id,
                       const uint8_t *trace_id);
void hms__audit_close(hms__audit_t *a); /* writes what is queued, stops the writer, frees */
/* ---------------------------------------------------------------- metrics (stats.c)
 * One sealed memfd per service: [header page][HMS_MAX_FUNCTIONS entries]. Pages of entries no
 * function uses are never touched, so they cost no memory. The serving process maps it read-write;
 * the fd it hands to readers (stats handshake) is sealed F_SEAL_FUTURE_WRITE, so they can only map it
 * read-only. Readers copy every value out with relaxed loads and validate it. */
#define HMS__STATS_MAGIC 0x3154415453534d48ull         /* "HMSSTAT1" */
#define HMS__STATS_HELLO_MAGIC 0x314c4854534d5453ull   /* reader -> server: an hms__hello_t with this magic */
#define HMS__STATS_WELCOME_MAGIC 0x31575453534d5453ull /* server -> reader, with the memfd */
#define HMS__STATS_LAYOUT 1
#define HMS__STATS_HEADER_BYTES 4096

/* Completion counters. done[0] of an entry is written by the serving thread only (load + store);
 * done[1] by threads finishing deferred calls (relaxed fetch_add; max via CAS). */
typedef struct {
  _Alignas(HMS__CACHELINE) _Atomic uint64_t status[HMS_STATS_STATUS_CODES];
  _Atomic uint64_t bytes_out;
  _Atomic uint64_t latency_sum_ns;
  _Atomic uint64_t latency_max_ns;
  _Atomic uint64_t buckets[HMS_STATS_LATENCY_BUCKETS];
} hms__stats_done_t;

typedef struct hms__stats_fn_s {
  char name[HMS_NAME_MAX + 1]; /* written once, before the header's nfns covers this entry */
  uint32_t id;
  uint32_t flags;
  /* serving thread only */
  _Atomic uint64_t calls, oneway, streams, cancels, deferred, bytes_in;
  hms__stats_done_t done[2];
} hms__stats_fn_t;

typedef struct {
  uint64_t magic;          /* HMS__STATS_MAGIC */
  uint32_t layout;         /* HMS__STATS_LAYOUT */
  uint32_t header_bytes;   /* HMS__STATS_HEADER_BYTES */
  uint32_t fn_capacity;    /* HMS_MAX_FUNCTIONS */
  uint32_t fn_entry_bytes; /* sizeof(hms__stats_fn_t) */
  uint64_t total_bytes;    /* header_bytes + fn_capacity * fn_entry_bytes == memfd size */
  int32_t pid;
  uint32_t reserved;
  uint64_t proc_starttime; /* of pid (tells a reused pid apart) */
  int64_t created_ns;      /* CLOCK_MONOTONIC */
  char service[HMS_NAME_MAX + 1];
  char version[HMS_VERSION_MAX + 1];
  char node[HMS_NAME_MAX + 1];
  /* serving thread only, except nfns (hms_function_add, under the node lock) */
  _Alignas(HMS__CACHELINE) _Atomic uint32_t nfns; /* entries in use (release store after the entry) */
  _Atomic uint64_t connections, connections_total, handshakes_refused, unknown_function, stats_reads;
} hms__stats_hdr_t;
_Static_assert(sizeof(hms__stats_hdr_t) <= HMS__STATS_HEADER_BYTES, "stats header fits its page");

typedef struct {
  uint64_t magic; /* HMS__STATS_WELCOME_MAGIC */
  uint32_t abi;
  uint32_t proto;
  int32_t status;
  uint32_t reserved;
  uint64_t total_bytes;
  char message[256];
} hms__stats_welcome_t;

typedef struct hms__stats_s hms__stats_t;
void hms__stats_create(hms_service_t *svc);            /* sets svc->stats (NULL when it cannot) */
void hms__stats_put(hms__stats_t *st);                 /* drops a reference (the service's, a deferred call's) */
void hms__stats_get(hms__stats_t *st);
void hms__stats_fn_added(hms_service_t *svc, hms__fn_t *f); /* under the node lock, before nfns is published */
void hms__stats_welcome(hms_service_t *svc, int sock);  /* answers a stats hello */
/* A request that never reached a handler: an unknown function id, or refused before it ran. */
void hms__stats_refused(hms_service_t *svc, uint32_t fn_id, uint32_t frame_flags, uint64_t bytes_in,
                        hms_status_t status);
void hms__stats_cancel_skipped(hms_service_t *svc, uint32_t fn_id);
void hms__stats_oneway_run(hms__stats_fn_t *s, uint64_t count, uint64_t dropped, uint64_t bytes_in, int64_t ns);
void hms__stats_deferred_done(hms__stats_fn_t *s, hms_status_t status, uint64_t bytes_out, int64_t ns);
void hms__stats_conn(hms_service_t *svc, int delta); /* +1 handshake done, -1 active connection dropped */
void hms__stats_handshake_refused(hms_service_t *svc);

/* Serving thread only: its own counters, so a load and a store (no lock, no read-modify-write). */
static inline void hms__stat_inc(_Atomic uint64_t *p, uint64_t v) {
  atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + v, memory_order_relaxed);
}
static inline unsigned hms__stats_bucket(uint64_t ns) {
  unsigned b = ns < 2 ? 0 : 63u - (unsigned)__builtin_clzll(ns);
  return b < HMS_STATS_LATENCY_BUCKETS ? b : HMS_STATS_LATENCY_BUCKETS - 1;
}
static inline unsigned hms__stats_status_index(hms_status_t st) {
  return st >= 0 && st < HMS_STATS_STATUS_CODES ? (unsigned)st : (unsigned)HMS_UNKNOWN;
}
/* The dispatcher starts a call (serving thread). */
static inline void hms__stats_begin(hms__stats_fn_t *s, uint32_t frame_flags, uint64_t bytes_in) {
  hms__stat_inc(&s->calls, 1);
  hms__stat_inc(&s->bytes_in, bytes_in);
  if (frame_flags & HMS__FRAME_F_ONEWAY) hms__stat_inc(&s->oneway, 1);
  if (frame_flags & (HMS__FRAME_F_STREAM | HMS__FRAME_F_CSTREAM)) hms__stat_inc(&s->streams, 1);
}
/* The dispatcher finishes a call (serving thread). */
static inline void hms__stats_end(hms__stats_fn_t *s, hms_status_t status, uint64_t bytes_out, int64_t ns) {
  hms__stats_done_t *d = &s->done[0];
  uint64_t u = ns > 0 ? (uint64_t)ns : 0;
  hms__stat_inc(&d->status[hms__stats_status_index(status)], 1);
  if (bytes_out) hms__stat_inc(&d->bytes_out, bytes_out);
  hms__stat_inc(&d->latency_sum_ns, u);
  if (u > atomic_load_explicit(&d->latency_max_ns, memory_order_relaxed))
    atomic_store_explicit(&d->latency_max_ns, u, memory_order_relaxed);
  hms__stat_inc(&d->buckets[hms__stats_bucket(u)], 1);
}

/* ---------------------------------------------------------------- misc */
size_t hms__strlcpy(char *dst, const char *src, size_t cap);
extern __thread uint8_t hms__tls_trace_id[16];
extern __thread uint8_t hms__tls_span_id[8];
extern __thread uint8_t hms__tls_trace_flags;

/* While a handler runs on the serving thread, calls it makes carry its caller's trace context; the
 * thread's own context comes back afterwards. Untraced calls (all-zero trace id) cost two loads. */
typedef struct {
  uint8_t id[16], span[8], flags;
  bool set;
} hms__trace_save_t;
static inline void hms__trace_enter(const hms__frame_hdr_t *h, hms__trace_save_t *s) {
  uint64_t a, b;
  memcpy(&a, h->trace_id, 8);
  memcpy(&b, h->trace_id + 8, 8);
  s->set = (a | b) != 0;
  if (HMS__LIKELY(!s->set)) return;
  memcpy(s->id, hms__tls_trace_id, 16);
  memcpy(s->span, hms__tls_span_id, 8);
  s->flags = hms__tls_trace_flags;
  memcpy(hms__tls_trace_id, h->trace_id, 16);
  memcpy(hms__tls_span_id, h->span_id, 8);
  hms__tls_trace_flags = (h->flags & HMS__FRAME_F_TRACE_SAMPLED) ? 1 : 0;
}
static inline void hms__trace_leave(const hms__trace_save_t *s) {
  if (HMS__LIKELY(!s->set)) return;
  memcpy(hms__tls_trace_id, s->id, 16);
  memcpy(hms__tls_span_id, s->span, 8);
  hms__tls_trace_flags = s->flags;
}

/* ================================================================ topics (topic.c) — publish/subscribe
 * Shared-memory layouts of a topic's broadcast ring and of the per-subscriber page, the handshake
 * messages, and the registry helpers topic.c uses. A publisher writes its ring; subscribers map it
 * read-only (F_SEAL_FUTURE_WRITE) and treat every word of it as hostile input. */
#define HMS__TOPIC_MAGIC 0x3143504f54534d48ull         /* "HMSTOPC1" */
#define HMS__TOPIC_HELLO_MAGIC 0x314c4854534d4854ull   /* subscriber -> publisher */
#define HMS__TOPIC_WELCOME_MAGIC 0x31575454534d4854ull /* publisher -> subscriber */
#define HMS__SUBPAGE_MAGIC 0x3147505553534d48ull       /* per-subscriber page */
#define HMS__TOPIC_LAYOUT 1
#define HMS__TOPIC_PROTO 1
#define HMS__TOPIC_HEADER_BYTES 4096
#define HMS__TOPIC_CTL_OFFSET 1024
#define HMS__TOPIC_ENTRY_BYTES 64
#define HMS__SUBPAGE_BYTES 4096

/* Ring memfd: [header page][index: slots x 64-byte entries][data: data_bytes]. The header at offset 0
 * is written once before the memfd is handed out. */
typedef struct {
  uint64_t magic;         /* HMS__TOPIC_MAGIC */
  uint32_t layout;        /* HMS__TOPIC_LAYOUT */
  uint32_t header_bytes;  /* HMS__TOPIC_HEADER_BYTES */
  uint32_t slots;         /* index entries, power of two */
  uint32_t flags;         /* HMS_PUBLISHER_* */
  uint64_t data_bytes;    /* power of two */
  uint64_t index_offset;  /* == header_bytes */
  uint64_t data_offset;   /* == index_offset + slots * 64 */
  uint64_t total_bytes;   /* == data_offset + data_bytes == memfd size */
  uint64_t max_payload;   /* <= data_bytes / 4 */
  int64_t created_ns;     /* CLOCK_MONOTONIC */
  uint64_t publisher_id;  /* random */
  int32_t pid;
  uint32_t reserved;
  char topic[HMS_NAME_MAX + 1];
} hms__topic_hdr_t;

/* Publisher-written counters at HMS__TOPIC_CTL_OFFSET. Message s (from 1) is intact while
 * tail_seq <= s <= head_seq. The publisher raises tail_seq *before* it overwrites anything, so a
 * reader that copied message s and then still sees tail_seq <= s got it whole (a seqlock). */
typedef struct {
  _Alignas(HMS__CACHELINE) _Atomic uint64_t head_seq; /* last published, 0 = none */
  _Atomic uint64_t tail_seq;                          /* oldest intact, head_seq + 1 when none */
  _Atomic uint64_t data_tail;                         /* informational: oldest intact data byte */
  _Atomic uint32_t closed;                            /* the publisher closed the ring */
} hms__topic_ctl_t;

/* One index entry (its own cache line). `seq` is stored last (release). */
typedef struct {
  _Atomic uint64_t seq;
  uint64_t data_pos;   /* byte counter of the payload start; offset = data_pos & (data_bytes - 1) */
  uint32_t len;
  uint32_t content_type;
  uint32_t flags;      /* HMS_MSG_* */
  uint32_t reserved;
  int64_t publish_ns;  /* CLOCK_MONOTONIC */
  uint8_t pad[HMS__TOPIC_ENTRY_BYTES - 40];
} hms__topic_entry_t;
_Static_assert(sizeof(hms__topic_entry_t) == HMS__TOPIC_ENTRY_BYTES, "topic index entry is 64 bytes");

/* Per-subscriber page (a sealed memfd the publisher creates; both map it read-write). Each side only
 * trusts what it writes itself: the publisher reads `cursor` as a hint it clamps; the subscriber reads
 * nothing back from the page (it only writes its cursor and sleep flag and wakes the publisher). */
typedef struct {
  uint64_t magic;        /* HMS__SUBPAGE_MAGIC */
  uint32_t layout;       /* HMS__TOPIC_LAYOUT */
  uint32_t slot;
  _Alignas(HMS__CACHELINE) _Atomic uint64_t cursor;       /* subscriber: next seq it will read */
  _Alignas(HMS__CACHELINE) _Atomic uint32_t sub_sleeping; /* subscriber sets before sleeping; a
                                                           * publisher that clears it rings the bell */
  _Alignas(HMS__CACHELINE) _Atomic uint32_t pub_waiting;  /* publisher (blocking mode) waits on us */
  _Atomic uint32_t pub_wake;                              /* futex word the publisher sleeps on */
  _Atomic uint64_t pub_wake_at; /* ... until our cursor reaches this (so it wakes once per batch) */
} hms__subpage_t;
_Static_assert(sizeof(hms__subpage_t) <= HMS__SUBPAGE_BYTES, "subscriber page fits a page");

typedef struct {
  uint64_t magic; /* HMS__TOPIC_HELLO_MAGIC */
  uint32_t abi;
  uint32_t proto;
  char topic[HMS_NAME_MAX + 1];
  char node[HMS_NAME_MAX + 1];
} hms__topic_hello_t;

/* Carries [ring memfd (read-only), subscriber page memfd, bell eventfd] when status == OK. */
typedef struct {
  uint64_t magic; /* HMS__TOPIC_WELCOME_MAGIC */
  uint32_t abi;
  uint32_t proto;
  int32_t status;
  uint32_t slot;
  char message[256];
  uint64_t ring_bytes;
  uint64_t subpage_bytes;
} hms__topic_welcome_t;

/* Topic-name and pattern checks (topic.c). */
bool hms__topic_pattern_valid(const char *s, bool *exact);

/* Registry helpers for topic.c (registry.c, "topics" block at its end). */
int hms__registry_lock(const char *dir);  /* flock()ed directory lock, -1 on error */
void hms__registry_unlock(int fd);
bool hms__registry_alive(pid_t pid, uint64_t starttime);
bool hms__registry_listening(const char *sock_path);
/* ================================================================ end of topics */

#endif
