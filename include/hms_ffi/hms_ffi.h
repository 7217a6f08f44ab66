/// hms_ffi.h — the public C ABI of hms-ffi-native.
///
/// This header is the API. Every binding (Python/cffi, Go/cgo, Rust, PHP FFI) is generated from it or
/// checked against it. Keep it plain C: no inline functions, no function-like macros that a binding
/// would need, every constant an integer literal.
///
/// Conventions
///   * Fallible functions return hms_status_t and take `hms_error_t *err` last; `err` may be NULL.
///   * Handles are opened and closed in pairs; every `*_close(NULL)` is a no-op.
///   * Options structs begin with `uint32_t version` and are filled by `*_options_init()`.
///   * Anything the library hands out that must be given back carries `release` + `private_data`.
///   * Times are nanoseconds. Deadlines are relative timeouts at the API (`timeout_ns`, < 0 = none);
///     on the wire they are absolute CLOCK_MONOTONIC instants, which Linux shares across processes.
#ifndef HMS_FFI_H
#define HMS_FFI_H

#ifndef HMS_FFI_CDEF /* the cffi/PHP generators preprocess with HMS_FFI_CDEF defined */
#include <stddef.h>
#include <stdint.h>
#endif

#ifndef HMS_API
#if defined(HMS_FFI_CDEF)
#define HMS_API
#elif defined(HMS_FFI_BUILDING)
#define HMS_API __attribute__((visibility("default")))
#else
#define HMS_API
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ----------------------------------------------------------------------------------------------
 * Versions. The package version lives here and nowhere else (setup.py and every binding read it).
 * The ABI version changes only when a released signature or struct layout changes.
 * -------------------------------------------------------------------------------------------- */
#define HMS_FFI_VERSION_MAJOR 0
#define HMS_FFI_VERSION_MINOR 1
#define HMS_FFI_VERSION_PATCH 0
#define HMS_FFI_ABI_VERSION 1

/// Returns: the HMS_FFI_ABI_VERSION the library was built with. Bindings compare it with the header
/// they were generated from and refuse to run on a mismatch.
HMS_API uint32_t hms_abi_version(void);
/// Returns: "MAJOR.MINOR.PATCH", a static string.
HMS_API const char *hms_version_string(void);

/* ----------------------------------------------------------------------------------------------
 * Status codes: the gRPC canonical codes with their gRPC values. Never renumbered.
 * -------------------------------------------------------------------------------------------- */
typedef int32_t hms_status_t;
enum {
  HMS_OK = 0,
  HMS_CANCELLED = 1,
  HMS_UNKNOWN = 2,
  HMS_INVALID_ARGUMENT = 3,
  HMS_DEADLINE_EXCEEDED = 4,
  HMS_NOT_FOUND = 5,
  HMS_ALREADY_EXISTS = 6,
  HMS_PERMISSION_DENIED = 7,
  HMS_RESOURCE_EXHAUSTED = 8,
  HMS_FAILED_PRECONDITION = 9,
  HMS_ABORTED = 10,
  HMS_OUT_OF_RANGE = 11,
  HMS_UNIMPLEMENTED = 12,
  HMS_INTERNAL = 13,
  HMS_UNAVAILABLE = 14,
  HMS_DATA_LOSS = 15,
  HMS_UNAUTHENTICATED = 16
};

/// Returns: the canonical name of a status ("OK", "NOT_FOUND", ...), a static string, never NULL
/// ("UNRECOGNIZED_STATUS" for values outside the table).
HMS_API const char *hms_status_str(hms_status_t status);

/// Where an error was raised.
enum {
  HMS_ORIGIN_LOCAL = 0,  ///< in this process (bad argument, connection lost, deadline here, ...)
  HMS_ORIGIN_REMOTE = 1  ///< by the peer: a handler's error or the peer's dispatcher
};

/// Error details filled by fallible functions. Ownership: the caller's (stack is fine).
/// Thread-safety: one per thread/call.
typedef struct hms_error_s {
  hms_status_t code;  ///< same value the function returned
  int32_t os_errno;   ///< errno of the failing system call, 0 when none
  int32_t origin;     ///< HMS_ORIGIN_*
  int32_t reserved;
  char message[256];  ///< NUL-terminated: what happened and what to do next
} hms_error_t;

/* ----------------------------------------------------------------------------------------------
 * Payloads and content types
 * -------------------------------------------------------------------------------------------- */
/// Content types travel in every frame so a peer in any language knows how to decode a payload.
enum {
  HMS_CT_NONE = 0,     ///< empty payload
  HMS_CT_RAW = 1,      ///< opaque bytes
  HMS_CT_CBOR = 2,     ///< RFC 8949 CBOR (the default for structured values)
  HMS_CT_JSON = 3,     ///< UTF-8 JSON
  HMS_CT_PROTOBUF = 4, ///< a protobuf message; the function's schema says which
  HMS_CT_ARROW = 5,    ///< Arrow IPC stream / arena-backed Arrow data
  HMS_CT_NDARRAY = 6,  ///< an n-dimensional array: header + data, layout in the arena section below
  HMS_CT_USER = 1024   ///< first value free for applications
};

/// A payload: a byte range plus its content type.
/// Ownership: when the library fills one (a reply), `release` is set and the caller must call
/// hms_payload_release() exactly once; the data stays valid until then. When the caller builds one
/// (a request), `release` is ignored and the data only needs to live for the duration of the call.
/// Thread-safety: a filled payload may be handed to and released by any thread.
typedef struct hms_payload_s {
  const void *data;
  size_t len;
  uint32_t content_type;  ///< HMS_CT_*
  uint32_t flags;         ///< reserved, 0
  void (*release)(struct hms_payload_s *payload);  ///< NULL once released / when not owned
  void *private_data;
} hms_payload_t;

/// Releases a payload the library filled; sets data=NULL, len=0, release=NULL. NULL and already
/// released payloads are no-ops.
HMS_API void hms_payload_release(hms_payload_t *payload);

/* ----------------------------------------------------------------------------------------------
 * Limits
 * -------------------------------------------------------------------------------------------- */
#define HMS_NAME_MAX 127          ///< longest service/function/node name, in bytes
#define HMS_VERSION_MAX 63        ///< longest version string
#define HMS_MAX_FUNCTIONS 4096    ///< functions per service
#define HMS_RING_MIN_BYTES 4096
#define HMS_RING_MAX_BYTES 1073741824
#define HMS_RING_DEFAULT_BYTES 1048576
#define HMS_FRAME_HEADER_BYTES 64 ///< every ring frame starts with a 64-byte header

/* ----------------------------------------------------------------------------------------------
 * Node: a process's presence in the runtime directory. Owns services and client connections.
 * -------------------------------------------------------------------------------------------- */
typedef struct hms_node_s hms_node_t;
typedef struct hms_service_s hms_service_t;
typedef struct hms_client_s hms_client_t;
typedef struct hms_call_s hms_call_t;

#define HMS_NODE_OPTIONS_VERSION 1
/// Options for hms_node_open(). Fill with hms_node_options_init() first, then change fields.
typedef struct hms_node_options_s {
  uint32_t version;          ///< HMS_NODE_OPTIONS_VERSION
  uint32_t reserved0;
  const char *name;          ///< node name for listings; NULL = "node-<pid>"
  const char *runtime_dir;   ///< NULL = $HMS_FFI_RUNTIME_DIR, else $XDG_RUNTIME_DIR/hms-ffi, else /tmp/hms-ffi-<uid>
  int64_t spin_ns;           ///< busy-wait budget before sleeping; 0 = never spin; < 0 = default (50 us)
  uint64_t ring_bytes;       ///< per-direction ring size for connections this node serves; 0 = default
  uint64_t reserved[8];
} hms_node_options_t;

/// Fills `opts` with defaults. Thread-safety: any thread.
HMS_API void hms_node_options_init(hms_node_options_t *opts);

/// Opens a node. `opts` may be NULL (defaults). Creates the runtime directory (mode 0700) if missing.
/// Ownership: the caller owns *out and must hms_node_close() it.
/// Returns: HMS_OK; HMS_INVALID_ARGUMENT for bad options; HMS_FAILED_PRECONDITION when the runtime
/// directory cannot be created or is unsafe (not ours, group/world writable).
HMS_API hms_status_t hms_node_open(const hms_node_options_t *opts, hms_node_t **out, hms_error_t *err);

/// Closes a node: unregisters its services, drops every connection (peers see UNAVAILABLE), frees
/// everything. NULL is a no-op. Must not race with hms_node_serve() on another thread: stop and join
/// the serving thread first (hms_node_stop + wait, or hms_node_start's thread is joined here).
HMS_API void hms_node_close(hms_node_t *node);

/// Returns: the runtime directory this node uses (valid until close).
HMS_API const char *hms_node_runtime_dir(const hms_node_t *node);

/// Runs the dispatch loop on the calling thread: accepts connections, runs handlers, detects dead
/// peers. Returns after `timeout_ns` (< 0 = until hms_node_stop()).
/// Thread-safety: one serving thread per node at a time; handlers run on that thread.
/// Returns: HMS_OK on timeout or stop; HMS_CANCELLED when a signal interrupted the sleep (so that the
/// caller can run its signal handlers, e.g. Python's KeyboardInterrupt, and call again);
/// HMS_FAILED_PRECONDITION if another thread is serving.
HMS_API hms_status_t hms_node_serve(hms_node_t *node, int64_t timeout_ns, hms_error_t *err);

/// Serving from an event loop: handles what is ready without blocking — accepts, hang-ups, up to a
/// few rounds of requests — then arms the node so hms_node_event_fd() turns readable when something
/// new arrives. *served counts the requests handled; *again is 1 when more are already waiting (call
/// again soon, after letting the loop run). Handlers run on the calling thread.
/// Thread-safety: like hms_node_serve (one serving thread at a time).
HMS_API hms_status_t hms_node_poll(hms_node_t *node, uint32_t *served, int *again, hms_error_t *err);
/// Returns: a descriptor (epoll) that is readable when hms_node_poll() has something to do.
HMS_API int hms_node_event_fd(const hms_node_t *node);

/// Starts a background thread running hms_node_serve() until hms_node_stop() or close.
HMS_API hms_status_t hms_node_start(hms_node_t *node, hms_error_t *err);

/// Asks the serving loop to return. Safe from any thread and from handlers; never blocks.
/// Joins the background thread if hms_node_start() created one and the caller is not that thread.
HMS_API void hms_node_stop(hms_node_t *node);

/* ----------------------------------------------------------------------------------------------
 * Services and functions
 * -------------------------------------------------------------------------------------------- */
/// Function flags.
enum {
  HMS_FN_DEFAULT = 0,
  HMS_FN_IDEMPOTENT = 1u << 0, ///< safe to retry (informational; used by retry policies)
  HMS_FN_STREAM = 1u << 1,       ///< server-streaming: the handler sends items with hms_call_send();
                                 ///< callers must open it with HMS_STREAM_SERVER
  HMS_FN_CLIENT_STREAM = 1u << 2 ///< client-streaming: the handler reads items with hms_call_recv();
                                 ///< callers must open it with HMS_STREAM_CLIENT
};

/// A handler. Runs on the serving thread. `req` (payload and data) is valid only during the call and
/// lives in shared memory that a hostile peer could rewrite concurrently: copy what you validate.
/// Reply with hms_call_reply(); fail with hms_call_set_error() and/or a non-OK return.
/// Returns: HMS_OK (an empty reply is sent if none was given) or an error code.
typedef hms_status_t (*hms_handler_fn)(hms_call_t *call, const hms_payload_t *req, void *user_data);

/// Adds a service (name of [A-Za-z0-9_.-], semantic version "MAJOR.MINOR.PATCH") to the node and
/// makes it discoverable. Ownership: the node owns *out (valid until hms_node_close()).
/// Returns: HMS_ALREADY_EXISTS when a live process (this one included) already serves name@version;
/// HMS_INVALID_ARGUMENT for a bad name or version.
HMS_API hms_status_t hms_service_add(hms_node_t *node, const char *name, const char *version,
                                     hms_service_t **out, hms_error_t *err);

/// Adds a function. Function ids are assigned in order from 1. Functions may be added while the node
/// serves; clients see the table as of their connect.
/// Thread-safety: not concurrently with another hms_function_add() on the same node.
/// Returns: HMS_ALREADY_EXISTS for a duplicate name; HMS_RESOURCE_EXHAUSTED past HMS_MAX_FUNCTIONS.
HMS_API hms_status_t hms_function_add(hms_service_t *service, const char *name, uint32_t flags,
                                      hms_handler_fn fn, void *user_data, hms_error_t *err);

/// A run of one-way calls to one function, handed to a batch handler in arrival order.
/// The payloads are private copies laid back to back in `data` (item i is data[offsets[i],
/// offsets[i+1])); `items[i]` describes the same bytes. Valid only during the handler.
typedef struct hms_batch_s {
  size_t count;                 ///< number of calls (>= 1)
  const hms_payload_t *items;   ///< count payloads (data points into `data`; release is NULL)
  const uint8_t *data;          ///< all payload bytes, back to back
  const uint32_t *offsets;      ///< count + 1 offsets into `data`; offsets[count] is the total
  uint32_t content_type;        ///< the items' content type when all share one, else UINT32_MAX
  int32_t peer_pid;             ///< the caller (kernel-verified at connect)
  uint32_t peer_uid;
  uint32_t peer_gid;
} hms_batch_t;

/// A batch handler: consumes one-way calls many at a time (no replies exist for one-way calls).
/// Runs on the serving thread. Errors it meets go nowhere, as for any one-way call.
typedef void (*hms_batch_handler_fn)(const hms_batch_t *batch, void *user_data);

/// Makes the dispatcher hand runs of consecutive one-way calls to `name` (up to HMS_BATCH_MAX_ITEMS
/// calls or HMS_BATCH_MAX_BYTES payload bytes per run, never across connections) to `fn` instead of
/// calling the function's handler once per call: one call into the handler's language per run instead
/// of per message. Normal calls and streams of the function still go to its handler, in order with the
/// one-way runs. Expired one-way calls are dropped, as their handler would not run either.
/// Thread-safety: like hms_function_add(); may be set while serving (runs after the next drain).
/// Returns: HMS_NOT_FOUND when the service has no such function; HMS_INVALID_ARGUMENT for NULLs.
HMS_API hms_status_t hms_function_set_batch_handler(hms_service_t *service, const char *name,
                                                    hms_batch_handler_fn fn, void *user_data,
                                                    hms_error_t *err);
#define HMS_BATCH_MAX_ITEMS 4096
#define HMS_BATCH_MAX_BYTES (4u << 20)

/* ----------------------------------------------------------------------------------------------
 * Inside a handler
 * -------------------------------------------------------------------------------------------- */
/// Sends the reply (copied into the response ring). At most once per call.
/// Returns: HMS_RESOURCE_EXHAUSTED when the payload exceeds the connection's max message size;
/// HMS_FAILED_PRECONDITION when already replied.
HMS_API hms_status_t hms_call_reply(hms_call_t *call, const char *data, size_t len,
                                    uint32_t content_type, hms_error_t *err);

/// Sends one item of a server stream (HMS_FN_STREAM functions, or any function called through
/// hms_stream_open()). Blocks while the caller's ring is full: a slow consumer slows the producer,
/// nothing is dropped and nothing grows. The stream ends when the handler returns (its status, or
/// hms_call_set_error(), is what the consumer sees after the last item).
/// Returns: HMS_CANCELLED when the caller cancelled, went away or its deadline passed (stop
/// producing); HMS_FAILED_PRECONDITION when the call is not a stream; HMS_RESOURCE_EXHAUSTED for an
/// item larger than the connection's max message.
HMS_API hms_status_t hms_call_send(hms_call_t *call, const char *data, size_t len, uint32_t content_type,
                                   hms_error_t *err);
/// Returns: 1 when the caller opened this call as a stream.
HMS_API int hms_call_is_stream(const hms_call_t *call);

/// Receives the next item of a client stream (the caller opened it with HMS_STREAM_CLIENT) or waits
/// up to `timeout_ns` (< 0: until the call's deadline) for it. `item` holds a private copy: release it.
/// Returns: HMS_OK with *end == 0 and an item, or with *end == 1 once the caller finished sending;
/// HMS_CANCELLED when the caller cancelled or went away; HMS_DEADLINE_EXCEEDED;
/// HMS_FAILED_PRECONDITION when the call is not a client stream.
HMS_API hms_status_t hms_call_recv(hms_call_t *call, hms_payload_t *item, int *end, int64_t timeout_ns,
                                   hms_error_t *err);

/// A call whose reply is sent later, from any thread: what an event-loop (async) handler needs.
typedef struct hms_deferred_s hms_deferred_t;

/// Takes over the reply of the running call: the handler returns at once and the reply is sent later
/// with hms_deferred_reply() or hms_deferred_fail() — exactly one of them, once, from any thread. A
/// server-stream call is deferred too: send its items with hms_deferred_send(), then end it with
/// hms_deferred_reply() (OK) or hms_deferred_fail(). The request payload is NOT kept: copy what you
/// need before returning.
/// Ownership: *out belongs to the caller until that reply/fail, which frees it.
/// Returns: HMS_FAILED_PRECONDITION for client streams and for a call already answered or deferred.
HMS_API hms_status_t hms_call_defer(hms_call_t *call, hms_deferred_t **out, hms_error_t *err);
/// Returns: a call view for the accessors (hms_call_peer, hms_call_time_left_ns, hms_call_id,
/// hms_call_function_name, hms_call_service_name, hms_call_trace, hms_call_is_cancelled), valid
/// until the deferred call is answered.
HMS_API hms_call_t *hms_deferred_call(hms_deferred_t *deferred);
/// Sends the reply and frees `deferred`. Waits (bounded by the call's deadline) while the caller's
/// ring is full. A reply to a caller that went away or gave up is dropped (HMS_CANCELLED).
/// For a server stream it ends the stream with OK (`data`, if not empty, is sent as its last item).
HMS_API hms_status_t hms_deferred_reply(hms_deferred_t *deferred, const char *data, size_t len,
                                        uint32_t content_type, hms_error_t *err);
/// Sends one item of a deferred server stream, from any thread. With `wait` == 0 it never blocks:
/// when the caller's ring has no room, *sent is 0 and nothing was sent (try again later, or call again
/// with wait != 0 from a thread that may block: it waits for room, bounded by the call's deadline —
/// that is the stream's flow control). On HMS_OK with *sent == 1 the item is on its way.
/// Returns: HMS_CANCELLED when the caller cancelled, went away or passed its deadline (stop producing
/// and end the call with hms_deferred_fail); HMS_RESOURCE_EXHAUSTED for an item over the max message;
/// HMS_FAILED_PRECONDITION when the call is not a server stream.
HMS_API hms_status_t hms_deferred_send(hms_deferred_t *deferred, const char *data, size_t len,
                                       uint32_t content_type, int wait, int *sent, hms_error_t *err);
/// Sends an error (code, message, optional details) and frees `deferred`.
HMS_API void hms_deferred_fail(hms_deferred_t *deferred, hms_status_t code, const char *message,
                               const char *details, size_t details_len, uint32_t details_content_type);

/// Records the error the caller will receive: code, message (copied, truncated to 255 bytes) and
/// optional details bytes of the given content type (copied). Takes effect when the handler returns.
HMS_API void hms_call_set_error(hms_call_t *call, hms_status_t code, const char *message,
                                const char *details, size_t details_len, uint32_t details_content_type);

/// Identity of the caller as verified by the kernel (SO_PEERCRED), never as claimed by the caller.
HMS_API void hms_call_peer(const hms_call_t *call, int32_t *pid, uint32_t *uid, uint32_t *gid);
/// Returns: nanoseconds left until the caller's deadline, INT64_MAX when there is none (may be <= 0).
HMS_API int64_t hms_call_time_left_ns(const hms_call_t *call);
HMS_API uint64_t hms_call_id(const hms_call_t *call);
HMS_API uint32_t hms_call_function_id(const hms_call_t *call);
/// Returns: the function's name, valid during the call.
HMS_API const char *hms_call_function_name(const hms_call_t *call);
/// Returns: the service's name, valid during the call.
HMS_API const char *hms_call_service_name(const hms_call_t *call);
/// Returns: 1 when the caller cancelled this call (or gave up on it), 0 otherwise. Cheap enough to
/// poll from a long-running handler.
HMS_API int hms_call_is_cancelled(hms_call_t *call);
/// Returns: 1 for a one-way call (its reply, if any, is discarded).
HMS_API int hms_call_is_oneway(const hms_call_t *call);
/// Copies the caller's W3C trace context (16-byte trace id, 8-byte span id, flags). All zero = none.
HMS_API void hms_call_trace(const hms_call_t *call, uint8_t trace_id[16], uint8_t span_id[8], uint8_t *flags);

/* ----------------------------------------------------------------------------------------------
 * Clients
 * -------------------------------------------------------------------------------------------- */
#define HMS_CONNECT_OPTIONS_VERSION 1
typedef struct hms_connect_options_s {
  uint32_t version;       ///< HMS_CONNECT_OPTIONS_VERSION
  uint32_t reserved0;
  int64_t timeout_ns;     ///< handshake timeout; < 0 = default (5 s)
  int64_t spin_ns;        ///< busy-wait budget while waiting for replies; 0 = never; < 0 = the node's
  uint64_t ring_bytes;    ///< requested per-direction ring size (power of two); 0 = the server's choice
  uint64_t reserved[8];
} hms_connect_options_t;

HMS_API void hms_connect_options_init(hms_connect_options_t *opts);

/// Connects to the newest live service named `service` whose version satisfies `version_req`
/// ("*", "1.2.3", "=1.2.3", "^1", "^1.2", "~1.2", "~1.2.3", ">=1.2"; NULL = "*").
/// Ownership: the caller owns *out and must hms_client_close() it before closing the node.
/// Returns: HMS_NOT_FOUND when no live service matches (the message lists the versions seen);
/// HMS_UNAVAILABLE when it matched but refused or died; HMS_DEADLINE_EXCEEDED on handshake timeout;
/// HMS_FAILED_PRECONDITION on an ABI mismatch.
HMS_API hms_status_t hms_connect(hms_node_t *node, const char *service, const char *version_req,
                                 const hms_connect_options_t *opts, hms_client_t **out, hms_error_t *err);

/// Closes a client. Pending calls on other threads must have returned. NULL is a no-op.
HMS_API void hms_client_close(hms_client_t *client);

/// Looks up a function id by name (from the table received at connect).
/// Returns: HMS_NOT_FOUND with the list of known functions in the message.
HMS_API hms_status_t hms_client_function_id(const hms_client_t *client, const char *name, uint32_t *fn_id,
                                            hms_error_t *err);
/// Returns: the number of functions in the table; fills name/id/flags of entry `index` with
/// hms_client_function_at() (name valid until close). Returns HMS_OUT_OF_RANGE past the end.
HMS_API uint32_t hms_client_function_count(const hms_client_t *client);
HMS_API hms_status_t hms_client_function_at(const hms_client_t *client, uint32_t index, const char **name,
                                            uint32_t *fn_id, uint32_t *flags);
/// Returns: the service's name / version / pid as connected (valid until close).
HMS_API const char *hms_client_service_name(const hms_client_t *client);
HMS_API const char *hms_client_service_version(const hms_client_t *client);
HMS_API int32_t hms_client_server_pid(const hms_client_t *client);
/// Returns: the largest payload a single call can carry on this connection.
HMS_API size_t hms_client_max_message(const hms_client_t *client);

/// A synchronous call: sends `req` to function `fn_id` and waits up to `timeout_ns` (< 0 = forever)
/// for the reply. On HMS_OK `resp` holds the reply; on a remote error `resp` holds the error details
/// (possibly empty) and `err` the code and message. Release `resp` with hms_payload_release() in
/// every case (it is always left valid, possibly empty).
/// Thread-safety: any number of threads may call concurrently on one client; replies are matched
/// by call id. Not concurrently with hms_client_close().
/// Returns: the handler's status; HMS_DEADLINE_EXCEEDED; HMS_UNAVAILABLE when the server died or
/// closed; HMS_RESOURCE_EXHAUSTED when `req` exceeds hms_client_max_message(); HMS_UNIMPLEMENTED for
/// an id the server does not have; HMS_DATA_LOSS when the server wrote a corrupt frame.
HMS_API hms_status_t hms_call(hms_client_t *client, uint32_t fn_id, const hms_payload_t *req,
                              hms_payload_t *resp, int64_t timeout_ns, hms_error_t *err);

/// The same call with the request given as flat arguments (for FFIs where building a struct is
/// costly: Python, PHP). `data` may be NULL when `len` is 0.
HMS_API hms_status_t hms_call_bytes(hms_client_t *client, uint32_t fn_id, const char *data, size_t len,
                                    uint32_t content_type, hms_payload_t *resp, int64_t timeout_ns,
                                    hms_error_t *err);

/// Flags for hms_call_submit() and hms_call_batch().
enum {
  HMS_CALL_DEFAULT = 0,
  HMS_CALL_ONEWAY = 1u << 0 ///< fire and forget: the handler runs, nothing is sent back
};

/// A finished asynchronous call.
/// Ownership: whoever receives it (hms_client_poll's caller, or the callback) must release `payload`.
typedef struct hms_completion_s {
  uint64_t call_id;
  hms_status_t status;
  int32_t origin;        ///< HMS_ORIGIN_* when status != HMS_OK
  hms_payload_t payload; ///< the reply, or the error details (possibly empty)
  void *user_data;       ///< as given to hms_call_submit()
  char message[256];     ///< error message when status != HMS_OK
} hms_completion_t;

/// Completion callback. Runs on whichever thread harvests the reply (one inside hms_call,
/// hms_call_batch or hms_client_poll on this client); must not block and must not call back into
/// this client's waiting functions. The completion is only valid during the callback; the payload
/// belongs to the callback (release it, or keep it and release later).
typedef void (*hms_completion_fn)(hms_completion_t *completion);

/// Submits a call without waiting for it. `callback` NULL queues the completion for
/// hms_client_poll(); otherwise the callback receives it. With HMS_CALL_ONEWAY nothing completes and
/// *call_id is 0. `timeout_ns` < 0: no deadline; expired calls complete with HMS_DEADLINE_EXCEEDED
/// the next time anybody polls or waits on this client.
/// Thread-safety: any thread. Up to 1024 calls may be in flight per client (HMS_RESOURCE_EXHAUSTED
/// beyond that).
HMS_API hms_status_t hms_call_submit(hms_client_t *client, uint32_t fn_id, const char *data, size_t len,
                                     uint32_t content_type, uint32_t flags, int64_t timeout_ns,
                                     hms_completion_fn callback, void *user_data, uint64_t *call_id,
                                     hms_error_t *err);

/// Harvests up to `max` completions of queued (callback-less) asynchronous calls; waits up to
/// `timeout_ns` for the first one (0 = do not wait, < 0 = no limit), spinning for the client's spin
/// budget before sleeping. Also drives callbacks and deadlines. Sets *count (possibly 0). Returning 0
/// completions arms hms_client_event_fd(): it becomes readable when a reply arrives.
/// Returns: HMS_OK; HMS_UNAVAILABLE/HMS_DATA_LOSS once the connection is dead and nothing is left to
/// harvest (pending calls complete with that status first).
HMS_API hms_status_t hms_client_poll(hms_client_t *client, hms_completion_t *out, size_t max, size_t *count,
                                     int64_t timeout_ns, hms_error_t *err);

/// Returns: a file descriptor (an epoll fd over the client's eventfd and its socket) that becomes
/// readable when hms_client_poll() has work — a reply arrived or the server died — for event loops
/// (asyncio, epoll). Owned by the client; do not close or read it yourself. The descriptor is armed by
/// hms_client_poll() returning 0 completions. After the connection died and every pending call was
/// harvested it stays readable (hms_client_poll then returns the error): stop watching it.
HMS_API int hms_client_event_fd(const hms_client_t *client);

/// Cancels an in-flight asynchronous call: it completes at once with HMS_CANCELLED, and the server is
/// told — a queued request is skipped, a running handler sees hms_call_is_cancelled() turn true.
/// Returns: HMS_NOT_FOUND when the call already completed (or never existed).
HMS_API hms_status_t hms_call_cancel(hms_client_t *client, uint64_t call_id, hms_error_t *err);

/// One call of a batch.
typedef struct hms_batch_item_s {
  uint32_t fn_id;
  uint32_t content_type;
  const char *data;
  size_t len;
} hms_batch_item_t;

/// Sends `count` calls with one wake-up of the server and waits for all of them; out[i] receives
/// the completion of items[i], each a success or an error of its own (release every payload).
/// With HMS_CALL_ONEWAY, `out` may be NULL and the function returns once everything is sent.
/// Returns: HMS_OK when every call was sent and answered (individual statuses are in out[]);
/// otherwise the error that stopped the batch (completions not reached carry the same status).
HMS_API hms_status_t hms_call_batch(hms_client_t *client, const hms_batch_item_t *items, size_t count,
                                    uint32_t flags, hms_completion_t *out, int64_t timeout_ns,
                                    hms_error_t *err);

/// hms_call_batch() for `count` calls of one function whose payloads are packed back to back in
/// `data` (lens[i] bytes each): one allocation-free crossing for FFIs that cannot cheaply build an
/// array of structs (Python, PHP).
HMS_API hms_status_t hms_call_batch_packed(hms_client_t *client, uint32_t fn_id, uint32_t content_type,
                                           const char *data, const size_t *lens, size_t count, uint32_t flags,
                                           hms_completion_t *out, int64_t timeout_ns, hms_error_t *err);

/// A server stream being consumed. Ownership: the caller's, closed with hms_stream_close().
/// Thread-safety: one thread at a time per stream; other threads may use the client meanwhile.
typedef struct hms_stream_s hms_stream_t;

/// Stream directions for hms_stream_open().
enum {
  HMS_STREAM_SERVER = 1u << 0, ///< the handler sends items (hms_call_send), read with hms_stream_next
  HMS_STREAM_CLIENT = 1u << 1  ///< we send items (hms_stream_send, then hms_stream_finish)
};

/// Opens a stream on `fn_id`: HMS_STREAM_SERVER (one request, many replies), HMS_STREAM_CLIENT (many
/// requests, one reply: hms_stream_next returns the reply as an item, then the end) or both
/// (bidirectional). `data` is the opening request (may be empty). `timeout_ns` bounds the whole
/// stream (< 0: none).
HMS_API hms_status_t hms_stream_open(hms_client_t *client, uint32_t fn_id, const char *data, size_t len,
                                     uint32_t content_type, uint32_t flags, int64_t timeout_ns,
                                     hms_stream_t **out, hms_error_t *err);

/// Sends one item of a client stream. Blocks while the server's ring is full (flow control).
/// Thread-safety: hms_stream_send/finish may run on one thread while hms_stream_next runs on another.
/// Returns: HMS_FAILED_PRECONDITION after hms_stream_finish or on a stream opened without
/// HMS_STREAM_CLIENT; HMS_CANCELLED once the stream ended; connection errors as hms_call.
HMS_API hms_status_t hms_stream_send(hms_stream_t *stream, const char *data, size_t len, uint32_t content_type,
                                     hms_error_t *err);

/// Tells the handler that no more items follow (its hms_call_recv reports the end).
HMS_API hms_status_t hms_stream_finish(hms_stream_t *stream, hms_error_t *err);

/// Waits up to `timeout_ns` (< 0: until the stream's deadline) for the next item.
/// Returns: HMS_OK with *end == 0 and `item` filled (release it), or HMS_OK with *end == 1 once the
/// stream ended normally; otherwise the error that ended it (the handler's status, with message and
/// details in `item`; HMS_CANCELLED after hms_stream_cancel(); HMS_DEADLINE_EXCEEDED;
/// HMS_UNAVAILABLE when the server died). A per-call timeout that expires returns
/// HMS_DEADLINE_EXCEEDED with *end == 0 and the stream still usable.
HMS_API hms_status_t hms_stream_next(hms_stream_t *stream, hms_payload_t *item, int *end, int64_t timeout_ns,
                                     hms_error_t *err);

/// Many items per call, copied back to back into `buf` (`cap` bytes): waits up to `timeout_ns` for the
/// first item like hms_stream_next(), then takes what has already arrived, up to `max` items. Item i
/// is buf[offsets[i], offsets[i+1]) with content type content_types[i]; `offsets` holds max + 1
/// entries. For high item rates: one call (and one crossing into a binding's language) per burst.
/// An item that does not fit the rest of `buf`, one that arrived as an arena block (larger payloads:
/// a zero-copy view beats a copy), or the error that ended the stream (its message and details travel
/// as an item) ends the burst and is returned by the next hms_stream_next() call: HMS_OK with n == 0
/// and *end == 0 means "call hms_stream_next() now".
/// Returns: HMS_OK with *n items, or with n == 0 and *end == 1 once the stream ended normally.
HMS_API hms_status_t hms_stream_next_many(hms_stream_t *stream, uint8_t *buf, size_t cap, uint32_t *offsets,
                                          uint32_t *content_types, size_t max, size_t *n, int *end,
                                          int64_t timeout_ns, hms_error_t *err);

/// Asks the server to stop producing (its handler sees HMS_CANCELLED from hms_call_send()).
HMS_API void hms_stream_cancel(hms_stream_t *stream);

/// Closes a stream, cancelling it first if it has not ended. NULL is a no-op.
HMS_API void hms_stream_close(hms_stream_t *stream);

/// Sets the W3C trace context sent with calls made by the calling thread on any client
/// (NULL trace_id clears it).
HMS_API void hms_set_thread_trace(const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t flags);

/* ----------------------------------------------------------------------------------------------
 * Discovery
 * -------------------------------------------------------------------------------------------- */
/// One registered service as read from the runtime directory.
typedef struct hms_service_info_s {
  char name[HMS_NAME_MAX + 1];
  char version[HMS_VERSION_MAX + 1];
  char node[HMS_NAME_MAX + 1];
  int32_t pid;
  uint32_t uid;
  uint32_t function_count;
  uint32_t reserved0;
  char **function_names;  ///< function_count names, owned by the list
  uint32_t *function_ids;
  uint64_t reserved[4];
} hms_service_info_t;

/// A list of services. Ownership: release with `release(list)` exactly once (sets release = NULL).
typedef struct hms_service_list_s {
  size_t count;
  hms_service_info_t *items;
  void (*release)(struct hms_service_list_s *list);
  void *private_data;
} hms_service_list_t;

/// Lists live services in `runtime_dir` (NULL = the default directory), sorted by name then newest
/// version first. Entries of dead processes are removed on the way.
/// Returns: HMS_OK (an empty list when the directory does not exist).
HMS_API hms_status_t hms_list_services(const char *runtime_dir, hms_service_list_t *out, hms_error_t *err);

/// Resolves the default runtime directory into `buf`.
/// Returns: HMS_OUT_OF_RANGE when `cap` is too small.
HMS_API hms_status_t hms_default_runtime_dir(char *buf, size_t cap, hms_error_t *err);

/// Returns: 1 when `version` satisfies `requirement`, 0 when not, -1 when either does not parse.
HMS_API int hms_version_matches(const char *version, const char *requirement);

/* ----------------------------------------------------------------------------------------------
 * Topics (publish/subscribe)
 * -------------------------------------------------------------------------------------------- */
/// A publisher owns one broadcast ring (a sealed memfd) per topic it publishes on; every subscriber
/// maps that ring read-only (the kernel refuses it write access) and keeps its own cursor, so a slow
/// or dead subscriber never slows the others down. A topic may have several publishers (one ring
/// each); a subscription reads all of them. Topic names are 1-127 characters of [A-Za-z0-9_.-],
/// not starting with '.' or '-'. Sequence numbers count the messages of one publisher from 1.
///
/// Delivery: per publisher, in order. A subscriber that falls more than the ring holds behind loses
/// the oldest messages and is told how many (hms_message_t.missed) — unless the publisher was opened
/// with HMS_PUBLISHER_BLOCK, which makes hms_publish() wait for lagging subscribers instead.
/// Discovery: `<topic>@<pid>-<n>.topic` (socket) + `.tmeta` entries in the node's runtime directory.
typedef struct hms_publisher_s hms_publisher_t;
typedef struct hms_subscription_s hms_subscription_t;

#define HMS_TOPIC_DEFAULT_CAPACITY 1024       ///< messages a ring keeps (index slots)
#define HMS_TOPIC_MAX_CAPACITY 1048576
#define HMS_TOPIC_DEFAULT_RING_BYTES 1048576  ///< payload bytes a ring keeps; max message = ring_bytes / 4
#define HMS_TOPIC_DEFAULT_MAX_SUBSCRIBERS 64
#define HMS_TOPIC_MAX_SUBSCRIBERS 1024

/// Publisher flags (hms_publisher_options_t.flags).
enum {
  HMS_PUBLISHER_DEFAULT = 0,
  HMS_PUBLISHER_BLOCK = 1u << 0 ///< hms_publish() waits (bounded by its timeout) instead of overwriting
                                ///< messages a live subscriber has not read yet
};

/// Message flags: given to hms_publish() and delivered in hms_message_t.flags.
enum {
  HMS_MSG_DEFAULT = 0,
  HMS_MSG_EVENT = 1u << 0 ///< the payload is an event envelope {id, type, timestamp, data, metadata}
};

#define HMS_PUBLISHER_OPTIONS_VERSION 1
/// Options for hms_publisher_open(). Fill with hms_publisher_options_init() first, then change fields.
typedef struct hms_publisher_options_s {
  uint32_t version;         ///< HMS_PUBLISHER_OPTIONS_VERSION
  uint32_t flags;           ///< HMS_PUBLISHER_*
  uint32_t capacity;        ///< messages kept; rounded up to a power of two; 0 = HMS_TOPIC_DEFAULT_CAPACITY
  uint32_t max_subscribers; ///< 0 = HMS_TOPIC_DEFAULT_MAX_SUBSCRIBERS; at most HMS_TOPIC_MAX_SUBSCRIBERS
  uint64_t ring_bytes;      ///< payload bytes kept, power of two in [HMS_RING_MIN_BYTES, HMS_RING_MAX_BYTES];
                            ///< 0 = HMS_TOPIC_DEFAULT_RING_BYTES
  int64_t spin_ns;          ///< HMS_PUBLISHER_BLOCK: busy-wait before sleeping; < 0 = the node's
  uint64_t reserved[8];
} hms_publisher_options_t;

HMS_API void hms_publisher_options_init(hms_publisher_options_t *opts);

/// Opens a publisher on `topic` and makes it discoverable. A small background thread per publisher
/// accepts subscribers and notices when they go away (it sleeps in poll() and uses no CPU when idle).
/// `opts` may be NULL. Several publishers (in one or many processes) may share a topic.
/// Ownership: the caller owns *out and must hms_publisher_close() it before closing the node.
/// Returns: HMS_INVALID_ARGUMENT for a bad topic name or options; HMS_FAILED_PRECONDITION when the
/// runtime directory is unusable or the kernel lacks memfd sealing (F_SEAL_FUTURE_WRITE, Linux >= 5.1).
HMS_API hms_status_t hms_publisher_open(hms_node_t *node, const char *topic, const hms_publisher_options_t *opts,
                                        hms_publisher_t **out, hms_error_t *err);

/// Unregisters the topic entry and closes the publisher; subscribers drain what is left and then see
/// the publisher go away. NULL is a no-op. Not concurrently with hms_publish() on the same publisher.
HMS_API void hms_publisher_close(hms_publisher_t *pub);

/// Publishes one message (copied into the ring). `flags` are HMS_MSG_*. Never blocks unless the
/// publisher has HMS_PUBLISHER_BLOCK; then it waits up to `timeout_ns` (< 0 = as long as the lagging
/// subscriber lives; a subscriber that dies or closes stops counting at once) for every connected
/// subscriber to have taken the message it would overwrite (messages published before a subscriber
/// connected are not held for it), so it is never more than its capacity ahead of what the slowest
/// subscriber has taken: returned by hms_subscription_recv(), or by hms_subscription_recv_batch()
/// and followed by the subscription's next receive call. `seq` (may be NULL) receives the message's
/// sequence number.
/// `data` may be NULL when `len` is 0.
/// Thread-safety: any thread; concurrent publishes on one publisher are serialized.
/// Returns: HMS_OK; HMS_RESOURCE_EXHAUSTED when `len` exceeds hms_publisher_max_message();
/// HMS_DEADLINE_EXCEEDED (blocking mode, nothing published) when a subscriber stayed behind.
HMS_API hms_status_t hms_publish(hms_publisher_t *pub, const char *data, size_t len, uint32_t content_type,
                                 uint32_t flags, int64_t timeout_ns, uint64_t *seq, hms_error_t *err);

/// Returns: the topic (valid until close).
HMS_API const char *hms_publisher_topic(const hms_publisher_t *pub);
/// Returns: the number of messages the ring keeps (the capacity after rounding).
HMS_API uint32_t hms_publisher_capacity(const hms_publisher_t *pub);
/// Returns: the largest payload hms_publish() accepts.
HMS_API size_t hms_publisher_max_message(const hms_publisher_t *pub);
/// Returns: the number of subscribers currently connected (handshake complete, not gone).
HMS_API uint32_t hms_publisher_subscriber_count(const hms_publisher_t *pub);
/// Returns: the sequence number of the last message published (0 = none yet).
HMS_API uint64_t hms_publisher_last_seq(const hms_publisher_t *pub);

/// Subscription flags (hms_subscribe_options_t.flags).
enum {
  HMS_SUBSCRIBE_DEFAULT = 0,
  HMS_SUBSCRIBE_KEEP_WAITING = 1u << 0 ///< an exact topic whose publishers all went away keeps waiting
                                       ///< for new ones (as patterns always do) instead of UNAVAILABLE
};

#define HMS_SUBSCRIBE_OPTIONS_VERSION 1
typedef struct hms_subscribe_options_s {
  uint32_t version;             ///< HMS_SUBSCRIBE_OPTIONS_VERSION
  uint32_t flags;               ///< HMS_SUBSCRIBE_*
  int64_t spin_ns;              ///< busy-wait before sleeping in recv; 0 = never; < 0 = the node's
  int64_t handshake_timeout_ns; ///< per publisher; < 0 = default (1 s)
  uint64_t reserved[8];
} hms_subscribe_options_t;

HMS_API void hms_subscribe_options_init(hms_subscribe_options_t *opts);

/// One received message.
/// Ownership: filled by hms_subscription_recv(); the caller must hms_message_release() it (or
/// hms_payload_release(&msg->payload)) exactly once. The payload is a private copy: it stays valid
/// after the subscription closes and may be released by any thread.
typedef struct hms_message_s {
  char topic[HMS_NAME_MAX + 1];
  int32_t publisher_pid;    ///< as verified by the kernel (SO_PEERCRED) at connect
  uint32_t flags;           ///< HMS_MSG_*
  uint64_t publisher_id;    ///< distinguishes publishers (random per publisher ring)
  uint64_t seq;             ///< this publisher's sequence number, from 1
  uint64_t missed;          ///< messages of this publisher lost just before this one (0 = none)
  int64_t publish_time_ns;  ///< CLOCK_MONOTONIC at publish (comparable across processes on the host)
  hms_payload_t payload;    ///< data, len, content_type; release with the message
  uint64_t reserved[4];
} hms_message_t;

/// Subscribes to `pattern`: an exact topic, or a glob ("order.*", "*.created", "order.?", "[ab]*";
/// fnmatch rules, where '*' also matches '.'). Connects to every live matching publisher now and to
/// matching publishers that appear later (the runtime directory is watched with inotify). Only
/// messages published after this call are delivered: a publisher that already existed is joined at
/// its newest message; one that appears later is read from its first message.
/// Ownership: the caller owns *out and must hms_subscription_close() it before closing the node.
/// Returns: HMS_OK even when no publisher exists yet; HMS_INVALID_ARGUMENT for a bad pattern.
HMS_API hms_status_t hms_subscribe(hms_node_t *node, const char *pattern, const hms_subscribe_options_t *opts,
                                   hms_subscription_t **out, hms_error_t *err);

/// Closes a subscription (publishers notice at once). NULL is a no-op. Not concurrently with
/// hms_subscription_recv() on another thread: hms_subscription_interrupt() it and let it return first.
HMS_API void hms_subscription_close(hms_subscription_t *sub);

/// Waits up to `timeout_ns` (0 = do not wait, < 0 = no limit) for the next message from any publisher
/// (bounded spin, then sleep until a publisher rings, dies or appears). Every read from a ring is
/// validated and re-checked after the copy, so an overwritten message is counted as missed, never
/// delivered torn.
/// Thread-safety: one thread at a time per subscription (calls are serialized).
/// Returns: HMS_OK with *msg filled; HMS_DEADLINE_EXCEEDED when nothing arrived in time (*msg
/// empty); HMS_UNAVAILABLE when the topic is exact, every publisher went away and everything they
/// published was delivered (repeats until a new publisher appears); once per publisher that could
/// not be used: HMS_DATA_LOSS when it broke the protocol (corrupt ring or counters, unsealed or
/// writable memory, bad handshake: it is dropped and never reconnected), or its refusal
/// (HMS_RESOURCE_EXHAUSTED when it has max_subscribers already, HMS_FAILED_PRECONDITION on an ABI
/// mismatch) — later calls go on with the other publishers; HMS_CANCELLED when
/// hms_subscription_interrupt() was called or a signal interrupted the sleep (err->os_errno == EINTR),
/// so the caller can run its signal handlers and call again.
HMS_API hms_status_t hms_subscription_recv(hms_subscription_t *sub, hms_message_t *msg, int64_t timeout_ns,
                                           hms_error_t *err);

/// Releases a received message's payload. NULL and released messages are no-ops.
HMS_API void hms_message_release(hms_message_t *msg);

/// One message of a batch (hms_subscription_recv_batch()): its topic name and payload are in the
/// caller's buffer. Ownership: the caller's (as is the buffer).
typedef struct hms_message_info_s {
  uint64_t seq;
  uint64_t missed;
  uint64_t publisher_id;
  int64_t publish_time_ns;
  uint64_t payload_offset; ///< payload_len bytes at buf + payload_offset (8-byte aligned)
  uint64_t payload_len;
  uint32_t topic_offset;   ///< topic_len bytes at buf + topic_offset (not NUL-terminated)
  uint32_t topic_len;
  uint32_t content_type;
  uint32_t flags;          ///< HMS_MSG_*
  int32_t publisher_pid;
  uint32_t reserved;
} hms_message_info_t;

/// The batch form of hms_subscription_recv(), for FFIs where a call per message is costly (Python,
/// PHP): waits like it for the first message, then also takes every message already there, up to
/// `max` messages and `cap` bytes, copying topic names and payloads back to back into `buf` and
/// describing them in infos[0..*count). *used is the number of bytes of `buf` filled.
/// Thread-safety: as hms_subscription_recv() (calls of both kinds are serialized).
/// Blocking publishers (HMS_PUBLISHER_BLOCK): a batch's messages count as taken only when the next
/// hms_subscription_recv() or hms_subscription_recv_batch() call on this subscription begins (one with
/// timeout 0 will do), so a caller that works through a batch before it asks for more never has a
/// blocking publisher more than its capacity ahead of what it has processed; a batch holds at most
/// capacity messages of such a publisher, which waits (up to its timeout) until the caller is back.
/// Returns: HMS_OK with *count >= 1; HMS_OUT_OF_RANGE when the next message alone does not fit in
/// `cap` bytes (nothing consumed; *used is the size it needs); otherwise as hms_subscription_recv(),
/// with *count == 0.
HMS_API hms_status_t hms_subscription_recv_batch(hms_subscription_t *sub, hms_message_info_t *infos, size_t max,
                                                 char *buf, size_t cap, size_t *count, size_t *used,
                                                 int64_t timeout_ns, hms_error_t *err);

/// Makes a hms_subscription_recv() blocked on another thread (or the next one) return HMS_CANCELLED.
/// Safe from any thread and from signal handlers.
HMS_API void hms_subscription_interrupt(hms_subscription_t *sub);

/// Returns: a descriptor that becomes readable when hms_subscription_recv() may have work (a message,
/// a publisher appearing or going away), for event loops. Armed by a hms_subscription_recv() that
/// returned HMS_DEADLINE_EXCEEDED. Owned by the subscription; do not close or read it.
HMS_API int hms_subscription_fd(const hms_subscription_t *sub);

/// Returns: the pattern (valid until close).
HMS_API const char *hms_subscription_pattern(const hms_subscription_t *sub);
/// Returns: the number of publishers currently connected.
HMS_API uint32_t hms_subscription_publisher_count(const hms_subscription_t *sub);
/// Returns: the total number of messages this subscription has missed so far.
HMS_API uint64_t hms_subscription_missed(const hms_subscription_t *sub);

/* ----------------------------------------------------------------------------------------------
 * Shared-memory arena, loans and zero copy
 * -------------------------------------------------------------------------------------------- */
/// Each side of a connection owns an arena: sealed memfd segments it writes and the peer maps
/// read-only. A payload larger than a ring frame (hms_client_max_inline()) travels as a reference to
/// an arena block instead of inline: a request or reply from private memory is copied once into the
/// arena; a loaned block (hms_loan / hms_call_loan) is filled in place and sent without a copy. The
/// receiver gets an hms_payload_t whose data points into the read-only mapping; releasing the payload
/// gives the block back to its owner. A received payload stays valid after the connection closed or
/// the sender died (the mapping outlives them) until it is released.
/// Limits: the bytes of blocks not yet released by the peer are bounded by a per-connection quota
/// (HMS_RESOURCE_EXHAUSTED beyond it), which is therefore the largest payload of one call
/// (hms_client_max_message()).
///
/// HMS_CT_NDARRAY payload layout (little-endian, so any language can read it):
///   offset 0  char[4]  magic "HMND"
///   offset 4  u16      header bytes H (multiple of 64, so the data is 64-byte aligned in the block)
///   offset 6  u16      ndim (<= 32)
///   offset 8  char[16] dtype: numpy array-interface type string, NUL-padded ("<f8", "|u1", "<c16", ...)
///   offset 24 u64      data offset from the payload start (== H)
///   offset 32 u64      data bytes
///   offset 40 i64[ndim] shape, then i64[ndim] strides in bytes (C-contiguous when written by Python)
///   offset H  data
#define HMS_ARENA_DEFAULT_QUOTA 67108864 ///< 64 MiB of outstanding blocks per connection side
#define HMS_ARENA_STATS_VERSION 1

/// A writable arena block on loan from a connection. Ownership: the caller's until it is sent
/// (hms_call_block, hms_call_reply_block: both consume it, whatever they return) or given back with
/// hms_block_release(). Thread-safety: any thread; one owner at a time.
typedef struct hms_block_s {
  void *data;         ///< writable, 64-byte aligned, `len` bytes
  size_t len;
  void *private_data; ///< NULL once sent or released
  uint64_t reserved[2];
} hms_block_t;

/// Arena counters of a connection (hms_client_arena_stats) or of every connection a node serves
/// (hms_node_arena_stats, summed). Fill `version` with hms_arena_stats_init() first.
typedef struct hms_arena_stats_s {
  uint32_t version;              ///< HMS_ARENA_STATS_VERSION
  uint32_t reserved0;
  uint64_t quota;                ///< bytes of outstanding blocks allowed
  uint64_t segments;             ///< segments we own
  uint64_t mapped_bytes;         ///< bytes of those segments
  uint64_t blocks_outstanding;   ///< our blocks loaned or held by the peer
  uint64_t bytes_outstanding;
  uint64_t blocks_allocated;     ///< ever
  uint64_t bad_releases;         ///< double or forged releases the peer sent (ignored)
  uint64_t peer_segments_mapped; ///< peer segments we map
  uint64_t peer_mapped_bytes;
  uint64_t peer_blocks_held;     ///< received payloads not released yet
  uint64_t reserved[6];
} hms_arena_stats_t;

HMS_API void hms_arena_stats_init(hms_arena_stats_t *stats);

/// Loans a writable block of `size` bytes from the client's arena, to fill and send with
/// hms_call_block(). Returns: HMS_RESOURCE_EXHAUSTED past the quota; HMS_UNAVAILABLE once the
/// connection is closed.
HMS_API hms_status_t hms_loan(hms_client_t *client, size_t size, hms_block_t *block, hms_error_t *err);
/// Gives an unsent block back. NULL, sent and released blocks are no-ops.
HMS_API void hms_block_release(hms_block_t *block);
/// hms_call() with the request in a loaned block (its first `len` bytes): no copy. Consumes the block.
HMS_API hms_status_t hms_call_block(hms_client_t *client, uint32_t fn_id, hms_block_t *block, size_t len,
                                    uint32_t content_type, hms_payload_t *resp, int64_t timeout_ns,
                                    hms_error_t *err);
/// Inside a handler (or on hms_deferred_call()'s view): loans a block from the arena of the caller's
/// connection, for hms_call_reply_block().
HMS_API hms_status_t hms_call_loan(hms_call_t *call, size_t size, hms_block_t *block, hms_error_t *err);
/// hms_call_reply() with the reply in a loaned block: no copy. Consumes the block. Non-stream calls
/// answered from the handler only (not deferred ones).
HMS_API hms_status_t hms_call_reply_block(hms_call_t *call, hms_block_t *block, size_t len, uint32_t content_type,
                                          hms_error_t *err);
/// Takes the running call's request payload so it outlives the handler, when it arrived in the arena
/// (larger than hms_client_max_inline()): *out is the arena view itself (no copy). Release it with
/// hms_payload_release() from any thread. At most once per call.
/// Returns: HMS_FAILED_PRECONDITION when already taken, for a deferred call's view, or when the request
/// came inline in the ring (copy it instead: it is valid only during the call).
HMS_API hms_status_t hms_call_take_request(hms_call_t *call, hms_payload_t *out, hms_error_t *err);
/// Sets the quota of the client's arena (0 = HMS_ARENA_DEFAULT_QUOTA).
HMS_API hms_status_t hms_client_set_arena_quota(hms_client_t *client, uint64_t bytes, hms_error_t *err);
/// Sets the quota of the arenas of connections the node accepts from now on (0 = the default).
HMS_API hms_status_t hms_node_set_arena_quota(hms_node_t *node, uint64_t bytes, hms_error_t *err);
/// Returns: the largest payload sent inline in a ring frame; larger ones go through the arena.
HMS_API size_t hms_client_max_inline(const hms_client_t *client);
/// Fills *stats with the client's arena counters (reading releases the server already sent).
HMS_API hms_status_t hms_client_arena_stats(hms_client_t *client, hms_arena_stats_t *stats, hms_error_t *err);
/// Sums the arena counters of the node's connections. Thread-safety: on the serving thread (from a
/// handler) or while the node does not serve.
HMS_API hms_status_t hms_node_arena_stats(hms_node_t *node, hms_arena_stats_t *stats, hms_error_t *err);

/* ----------------------------------------------------------------------------------------------
 * Access control, limits and audit
 * -------------------------------------------------------------------------------------------- */
/// Identity: the caller's uid, gid and supplementary groups as the kernel saw them when it connected
/// (SO_PEERCRED, SO_PEERGROUPS), never anything the caller claims. Without any access rule a function
/// may be called by anyone who can open the service's socket (the default: the runtime directory is
/// private to its owner, mode 0700). Once a function has a rule, only the callers it allows run it;
/// the others get HMS_PERMISSION_DENIED ("uid 1001 (gid 1001) may not call svc.fn; the policy allows
/// uids [...], gids [...], roles [...]") before the handler runs. The decision is made per connection
/// (a bitmap computed at the handshake and again when a rule changes), so a call costs one bit test.
/// docs/security.md describes the policy file of the Python layer that builds on this.

/// hms_access_t.flags
enum {
  HMS_ACCESS_ANY = 1u << 0,  ///< every caller that reaches the socket (uids/gids are ignored)
  HMS_ACCESS_OWNER = 1u << 1 ///< the service's owner (the serving process's effective uid)
};

/// Audit levels: which calls are recorded (hms_audit_options_t.level, hms_access_t.audit).
enum {
  HMS_AUDIT_DEFAULT = 0, ///< a function: the node's level
  HMS_AUDIT_NONE = 1,    ///< nothing
  HMS_AUDIT_DENY = 2,    ///< refused calls (policy or limits) and refused connections
  HMS_AUDIT_ALL = 3      ///< every call, allowed or refused
};

#define HMS_ACCESS_VERSION 1
/// Who may call a function. Fill with hms_access_init() (which allows everybody), then change fields.
/// A caller is allowed when flags has HMS_ACCESS_ANY, or HMS_ACCESS_OWNER and its uid is the
/// server's, or its uid is in uids, or its gid or one of its supplementary groups is in gids.
/// Ownership: the caller's; hms_function_set_access() copies everything it needs.
typedef struct hms_access_s {
  uint32_t version;     ///< HMS_ACCESS_VERSION
  uint32_t flags;       ///< HMS_ACCESS_*
  const uint32_t *uids; ///< allowed uids (may be NULL when n_uids is 0)
  size_t n_uids;
  const uint32_t *gids; ///< allowed gids, primary or supplementary
  size_t n_gids;
  const char *roles;    ///< optional, for messages only: the role names the lists came from ("admin, ops")
  uint32_t audit;       ///< HMS_AUDIT_*; HMS_AUDIT_DEFAULT = the node's level
  uint32_t reserved0;
  uint64_t reserved[6];
} hms_access_t;

HMS_API void hms_access_init(hms_access_t *access);

/// Sets (replaces) the rule of function `name`. May be called while the node serves: connections
/// re-evaluate before their next call. `access` NULL removes the rule (everybody may call again).
/// Thread-safety: like hms_function_add().
/// Returns: HMS_NOT_FOUND when the service has no such function; HMS_INVALID_ARGUMENT for a bad
/// version, more than 1024 uids or gids, or a list pointer that is NULL with a non-zero count.
HMS_API hms_status_t hms_function_set_access(hms_service_t *service, const char *name, const hms_access_t *access,
                                             hms_error_t *err);

#define HMS_LIMITS_VERSION 1
/// Resource limits of one service; 0 in a field means "no limit of this kind" (the built-in bounds:
/// ring sizes up to HMS_RING_MAX_BYTES, the node's arena quota, the client's 1024 calls in flight).
/// Each limit refuses only what exceeds it, with HMS_RESOURCE_EXHAUSTED and a message naming it.
typedef struct hms_limits_s {
  uint32_t version;         ///< HMS_LIMITS_VERSION
  uint32_t max_connections; ///< connections at once; the next handshake is refused
  uint32_t max_inflight;    ///< calls of one connection started and not answered yet (deferred/async
                            ///< replies, streams); calls beyond it are refused before their handler
  uint32_t reserved0;
  uint64_t max_ring_bytes;  ///< largest per-direction ring a client may ask for (handshake refused beyond)
  uint64_t arena_quota;     ///< our arena per connection (replies in flight), for connections from now on
  uint64_t max_message;     ///< largest request payload (refused before the handler) and reply
  uint64_t reserved[8];
} hms_limits_t;

HMS_API void hms_limits_init(hms_limits_t *limits);

/// Sets the limits of a service. Connections already open keep their ring and arena quota; the other
/// limits apply to them from their next call. Thread-safety: like hms_function_add().
HMS_API hms_status_t hms_service_set_limits(hms_service_t *service, const hms_limits_t *limits, hms_error_t *err);

/// Opens the service's socket to the members of group `gid`: the socket becomes group `gid`, mode 0660;
/// its metadata file group-readable; the runtime directory group `gid` with mode 0750 (members can
/// list the directory's entries, and reach this service's socket; other services' sockets and metadata
/// stay owner-only). Parent directories must let the group through (docs/security.md).
/// Returns: HMS_PERMISSION_DENIED when we may not give files to that group (not a member, not root);
/// HMS_FAILED_PRECONDITION when the runtime directory is already opened to another group.
HMS_API hms_status_t hms_service_open_to_group(hms_service_t *service, uint32_t gid, hms_error_t *err);

#define HMS_AUDIT_OPTIONS_VERSION 1
/// Options for hms_node_set_audit(). Fill with hms_audit_options_init() first.
typedef struct hms_audit_options_s {
  uint32_t version;   ///< HMS_AUDIT_OPTIONS_VERSION
  uint32_t level;     ///< HMS_AUDIT_NONE, _DENY (the default) or _ALL for functions without their own
  const char *path;   ///< the JSON-lines file, appended to (created mode 0600)
  uint64_t max_bytes; ///< rotate when the file reaches this size; 0 = 64 MiB
  uint32_t keep;      ///< rotated files kept (path.1 = newest ... path.N); 0 = 5
  uint32_t queue;     ///< records the in-memory queue holds (rounded up to a power of two); 0 = 65536
  uint64_t reserved[8];
} hms_audit_options_t;

HMS_API void hms_audit_options_init(hms_audit_options_t *opts);

/// Starts recording calls to an append-only JSON-lines file, one object per line:
///   {"ts":"2024-05-01T12:00:00.123456Z","service":"s","function":"f","pid":1,"uid":1000,"gid":1000,
///    "status":"PERMISSION_DENIED","code":7,"duration_us":0,"trace_id":"<32 hex>"|null,"call_id":5,
///    "decision":"deny"}
/// (refused connections: "function":null; decision "allow" or "deny"). The dispatcher never waits for
/// the disk: it puts a fixed-size record in a bounded queue that a writer thread empties. When the
/// queue is full the record is counted as dropped, never silently: the writer adds
///   {"ts":...,"event":"audit_dropped","count":N,"total":T}
/// as soon as there is room again, and hms_node_audit_stats() reports the total.
/// Call once per node (a second call: HMS_ALREADY_EXISTS), before serving or while not serving.
/// Returns: HMS_FAILED_PRECONDITION when the file cannot be opened (the message says why).
HMS_API hms_status_t hms_node_set_audit(hms_node_t *node, const hms_audit_options_t *opts, hms_error_t *err);

#define HMS_AUDIT_STATS_VERSION 1
typedef struct hms_audit_stats_s {
  uint32_t version;   ///< HMS_AUDIT_STATS_VERSION
  uint32_t reserved0;
  uint64_t queued;    ///< records accepted into the queue, ever
  uint64_t written;   ///< records written to the file, ever
  uint64_t dropped;   ///< records lost because the queue was full, ever
  uint64_t rotations; ///< files rotated
  uint64_t write_errors; ///< failed writes (records lost to the disk; the last errno is in err on flush)
  uint64_t reserved[6];
} hms_audit_stats_t;

HMS_API void hms_audit_stats_init(hms_audit_stats_t *stats);
/// Fills *stats. Thread-safety: any thread. Returns: HMS_FAILED_PRECONDITION when auditing is off.
HMS_API hms_status_t hms_node_audit_stats(hms_node_t *node, hms_audit_stats_t *stats, hms_error_t *err);
/// Waits up to `timeout_ns` (< 0 = no limit) until every record queued before the call is written to
/// the file. Returns: HMS_DEADLINE_EXCEEDED on timeout; HMS_FAILED_PRECONDITION when auditing is off.
HMS_API hms_status_t hms_node_audit_flush(hms_node_t *node, int64_t timeout_ns, hms_error_t *err);

/* ----------------------------------------------------------------------------------------------
 * Size queries for FFI users that allocate these structs themselves.
 * -------------------------------------------------------------------------------------------- */
HMS_API size_t hms_sizeof_error(void);
HMS_API size_t hms_sizeof_payload(void);
HMS_API size_t hms_sizeof_node_options(void);
HMS_API size_t hms_sizeof_connect_options(void);

/* ----------------------------------------------------------------------------------------------
 * Arrow: the Arrow C Data Interface in and out of one flat, position-independent layout
 * -------------------------------------------------------------------------------------------- */
/// The standard definitions from the Arrow C Data Interface and C Stream Interface specifications,
/// guarded so they coexist with arrow/c/abi.h, nanoarrow.h or any other copy of them.
#ifndef ARROW_C_DATA_INTERFACE
#define ARROW_C_DATA_INTERFACE

#define ARROW_FLAG_DICTIONARY_ORDERED 1
#define ARROW_FLAG_NULLABLE 2
#define ARROW_FLAG_MAP_KEYS_SORTED 4

struct ArrowSchema {
  // Array type description
  const char *format;
  const char *name;
  const char *metadata;
  int64_t flags;
  int64_t n_children;
  struct ArrowSchema **children;
  struct ArrowSchema *dictionary;

  // Release callback
  void (*release)(struct ArrowSchema *);
  // Opaque producer-specific data
  void *private_data;
};

struct ArrowArray {
  // Array data description
  int64_t length;
  int64_t null_count;
  int64_t offset;
  int64_t n_buffers;
  int64_t n_children;
  const void **buffers;
  struct ArrowArray **children;
  struct ArrowArray *dictionary;

  // Release callback
  void (*release)(struct ArrowArray *);
  // Opaque producer-specific data
  void *private_data;
};

#endif  // ARROW_C_DATA_INTERFACE

#ifndef ARROW_C_STREAM_INTERFACE
#define ARROW_C_STREAM_INTERFACE

struct ArrowArrayStream {
  // Callbacks providing stream functionality
  int (*get_schema)(struct ArrowArrayStream *, struct ArrowSchema *out);
  int (*get_next)(struct ArrowArrayStream *, struct ArrowArray *out);
  const char *(*get_last_error)(struct ArrowArrayStream *);

  // Release callback
  void (*release)(struct ArrowArrayStream *);
  // Opaque producer-specific data
  void *private_data;
};

#endif  // ARROW_C_STREAM_INTERFACE

/// The layout (csrc/arrow.c describes it byte by byte): a 64-byte header (magic "HMSARRW1", format
/// version, kind, counts), then the metadata section (the schema tree, the table of arrays, each
/// array tree: nodes, NUL-terminated strings, metadata blobs, child and buffer tables — all 8-byte
/// aligned and referring to each other by offsets from the start of the layout, never by pointers),
/// then every buffer, each at a multiple of HMS_ARROW_ALIGNMENT from the start. Integers are in the
/// host's byte order (the layout never leaves the host). Buffers are copied whole from their start
/// to the end of the last element the array uses (offset + length) and the array keeps its `offset`,
/// so a slice carries the bytes before its offset too. NULL buffers stay absent (except the offsets
/// of an empty variable-size array, written as the single zero offset the format requires). Decoders require
/// nodes, strings and tables to appear in the order the encoder writes them (each after the
/// previous one), so a layout can hold no cycles and no shared subtrees.
#define HMS_ARROW_FORMAT_VERSION 1
#define HMS_ARROW_HEADER_BYTES 64
#define HMS_ARROW_ALIGNMENT 64      ///< buffer offsets are multiples of this (place dst on such a boundary)
#define HMS_ARROW_MAX_DEPTH 64      ///< deepest nesting of children and dictionaries
#define HMS_ARROW_MAX_NODES 1048576 ///< schema plus array nodes in one layout
#define HMS_ARROW_MAX_FORMAT 4096   ///< longest format string, in bytes

/// What the layout was made from, so a receiver can rebuild the same kind of object. RECORD_BATCH
/// and TABLE need a struct ("+s") schema; ARRAY and RECORD_BATCH exactly one array.
enum {
  HMS_ARROW_KIND_UNSPECIFIED = 0,
  HMS_ARROW_KIND_ARRAY = 1,         ///< one array (pyarrow.Array)
  HMS_ARROW_KIND_CHUNKED_ARRAY = 2, ///< 0..n arrays of one type (pyarrow.ChunkedArray)
  HMS_ARROW_KIND_RECORD_BATCH = 3,  ///< one struct array whose children are the columns
  HMS_ARROW_KIND_TABLE = 4          ///< 0..n record batches of one schema (pyarrow.Table)
};

/// Computes the bytes hms_arrow_encode() needs for `schema` and `arrays[0..n_arrays)` (every array
/// of type `schema`). Reads only the structs, and one offset per variable-size array.
/// Ownership: borrows everything; releases nothing. Thread-safety: any thread.
/// Returns: HMS_INVALID_ARGUMENT for a format hms does not support or arrays that do not match the
/// schema (the message names the node).
HMS_API hms_status_t hms_arrow_encoded_size(const struct ArrowSchema *schema, const struct ArrowArray *const *arrays,
                                            size_t n_arrays, size_t *out_size, hms_error_t *err);

/// Writes the layout of `schema` and `arrays[0..n_arrays)` into dst[0..cap): one copy of every
/// buffer and nothing else that grows with the data. `kind` (HMS_ARROW_KIND_*) is recorded for the
/// receiver. *written receives the layout's size (as hms_arrow_encoded_size() reports).
/// Ownership: borrows everything (the caller still releases its structs); dst is the caller's.
/// Returns: HMS_OUT_OF_RANGE when cap is too small (*written = the size needed, dst untouched);
/// HMS_INVALID_ARGUMENT as hms_arrow_encoded_size(), or for a kind the arrays do not fit.
HMS_API hms_status_t hms_arrow_encode(const struct ArrowSchema *schema, const struct ArrowArray *const *arrays,
                                      size_t n_arrays, uint32_t kind, uint8_t *dst, size_t cap, size_t *written,
                                      hms_error_t *err);

/// Reads a layout's header only: its kind and number of arrays (to size hms_arrow_decode()'s output).
/// `kind` and `n_arrays` may be NULL. Returns: HMS_INVALID_ARGUMENT when src is no valid header.
HMS_API hms_status_t hms_arrow_peek(const uint8_t *src, size_t len, uint32_t *kind, size_t *n_arrays,
                                    hms_error_t *err);

/// Validates a layout completely and then fills `out_schema` and `out_arrays[0..*n_arrays)` with
/// Arrow C Data Interface structs whose buffers point into src (no data is copied; formats, names,
/// metadata, lengths, offsets and the small sizes buffer of binary/utf8 view arrays are validated
/// private copies, so rewriting src later cannot change them).
///
/// Validation covers the header; every offset and length (inside src, no overflow, in encoder
/// order); depth and node counts; NUL-terminated strings and well-formed metadata; the buffer and
/// child counts each format needs; every buffer's size against offset + length; and the values a
/// reader uses to find other values: variable-size offsets (monotonic, inside the data buffer or the
/// child), list-view offsets and sizes, binary-view references into their data buffers, union type
/// ids and dense offsets, dictionary indices of valid slots, run ends (strictly increasing, covering
/// the array). Those value checks read each value once into a local, so a hostile writer changing
/// src concurrently cannot make this function read outside src. Cost: O(nodes + buffers) plus
/// O(length) for the value checks of variable-size, view, union, dictionary and run-end arrays;
/// fixed-width data is never read. src must be 8-byte aligned.
///
/// Zero-copy caveat: consumers that read values later see whatever is in src at that time. Map src
/// read-only in the receiver; a sender that rewrites its block after sending can make a consumer
/// read wrong values (and, through offsets, type ids, dictionary indices or run ends it rewrites,
/// outside the arrays) — as with any shared memory. Senders must not touch a block once sent.
///
/// Ownership: on HMS_OK every filled struct has a release callback; children and dictionaries may be
/// moved out and released independently (C Data Interface rules). All of them share one reference
/// to src: `on_release(ctx)` (may be NULL) is called exactly once, on the thread that releases the
/// last struct, after which nothing points into src. On failure nothing is filled (every struct has
/// release == NULL) and on_release is never called.
/// Thread-safety: any thread; the filled structs may be released from any threads.
/// Returns: HMS_INVALID_ARGUMENT for any malformed layout (the message says what and where);
/// HMS_OUT_OF_RANGE when the layout holds more than max_arrays arrays (*n_arrays = how many);
/// HMS_RESOURCE_EXHAUSTED when memory for the structs cannot be allocated.
HMS_API hms_status_t hms_arrow_decode(const uint8_t *src, size_t len, void (*on_release)(void *ctx), void *ctx,
                                      struct ArrowSchema *out_schema, struct ArrowArray *out_arrays,
                                      size_t max_arrays, size_t *n_arrays, hms_error_t *err);

/* ----------------------------------------------------------------------------------------------
 * Metrics and tracing
 * -------------------------------------------------------------------------------------------- */
/// Every service keeps per-function counters and a latency histogram in a shared-memory block of
/// its own (a sealed memfd). The serving thread updates them as it dispatches — plain stores, no
/// lock, no atomic read-modify-write (it is their only writer); replies finished on other threads
/// (hms_deferred_*) use relaxed atomic adds on a second set that readers add in. Two CLOCK_MONOTONIC
/// reads (vDSO) per call are the whole cost.
///
/// Another process reads them without disturbing the server: hms_stats_open() connects to the
/// service's socket with a "stats" handshake and receives the block sealed read-only
/// (F_SEAL_FUTURE_WRITE): the reader can map it only for reading, and nothing is ever written to the
/// file system. Every snapshot copies the counters out and validates them (a reader treats the
/// mapping as hostile input). `hms-ffi stats` / `hms-ffi top` / `hms-ffi ls` use this.
///
/// What is counted, per function:
///   calls      requests the dispatcher started (one-way and streams included; requests cancelled
///              before they started are counted in `cancels` instead)
///   status[c]  calls that finished with status c (HMS_OK .. HMS_UNAUTHENTICATED; a handler's status
///              outside that range counts as HMS_UNKNOWN). A call refused before its handler ran
///              (deadline already passed, wrong stream kind) finishes with the refusal's status.
///   latency    from the dispatcher taking the request to the reply (or a stream's end) being
///              written, in ns: sum, max and log2 buckets. A run of one-way calls handed to a batch
///              handler counts each call with the run's time divided by its length.
/// One-way calls finish with their handler's status (nobody receives it).
#define HMS_STATS_VERSION 1
#define HMS_STATS_LATENCY_BUCKETS 48 ///< bucket i: latencies in [2^i, 2^(i+1)) ns (bucket 0 also 0 ns; the last also above)
#define HMS_STATS_STATUS_CODES 17    ///< status[] has one counter per code HMS_OK .. HMS_UNAUTHENTICATED

/// Counters of one function, copied out of the shared block (a snapshot: never updated afterwards).
typedef struct hms_function_stats_s {
  char name[HMS_NAME_MAX + 1];
  uint32_t id;                    ///< function id (from 1)
  uint32_t flags;                 ///< HMS_FN_*
  uint64_t calls;                 ///< requests started (see above)
  uint64_t completed;             ///< sum of status[]
  uint64_t errors;                ///< completed with a status other than HMS_OK
  uint64_t in_flight;             ///< calls - completed: running handlers and deferred replies not sent yet
  uint64_t oneway;                ///< one-way calls among `calls`
  uint64_t streams;               ///< stream calls (server, client or bidirectional) among `calls`
  uint64_t cancels;               ///< requests skipped because the caller cancelled them before they started
  uint64_t deferred;              ///< calls whose reply was deferred (hms_call_defer)
  uint64_t bytes_in;              ///< request payload bytes of `calls`
  uint64_t bytes_out;             ///< reply and stream item payload bytes sent
  uint64_t status[HMS_STATS_STATUS_CODES];
  uint64_t latency_sum_ns;
  uint64_t latency_max_ns;
  uint64_t latency_buckets[HMS_STATS_LATENCY_BUCKETS];
  uint64_t reserved[4];
} hms_function_stats_t;

/// A snapshot of one service's counters. Fill `version` with hms_service_stats_init() first.
/// Ownership: a filled snapshot owns `functions`; release it with `release(stats)` exactly once
/// (sets release = NULL). Thread-safety: a snapshot is plain data; any thread may read and release it.
typedef struct hms_service_stats_s {
  uint32_t version;               ///< HMS_STATS_VERSION
  uint32_t function_count;        ///< entries in `functions`
  char service[HMS_NAME_MAX + 1];
  char service_version[HMS_VERSION_MAX + 1];
  char node[HMS_NAME_MAX + 1];    ///< the serving node's name
  int32_t pid;                    ///< the serving process
  int32_t alive;                  ///< 1 while that process lives (checked at the snapshot), else 0
  int64_t uptime_ns;              ///< since the service was added
  uint64_t connections;           ///< clients connected now
  uint64_t connections_total;     ///< clients that ever completed the handshake
  uint64_t handshakes_refused;    ///< connections refused at the handshake (ABI, name, ring size, resources)
  uint64_t unknown_function_calls;///< requests naming a function id the service does not have
  uint64_t stats_reads;           ///< stats handshakes served (hms_stats_open from any process)
  hms_function_stats_t *functions;
  void (*release)(struct hms_service_stats_s *stats);
  void *private_data;
  uint64_t reserved[8];
} hms_service_stats_t;

/// Zeroes `stats` and sets its version. Thread-safety: any thread.
HMS_API void hms_service_stats_init(hms_service_stats_t *stats);

/// Snapshot of a service this process serves. Thread-safety: any thread, also while the node serves.
/// Returns: HMS_INVALID_ARGUMENT for NULLs or a version hms_service_stats_init() did not set;
/// HMS_UNAVAILABLE when the service has no stats block (the kernel refused a memfd when it was added).
HMS_API hms_status_t hms_service_stats(hms_service_t *service, hms_service_stats_t *stats, hms_error_t *err);

/// A read-only view of another process's service counters.
/// Ownership: the caller's, closed with hms_stats_close(). Thread-safety: snapshots may be taken
/// from any number of threads at once. It stays valid when the service goes away (the last
/// counters remain readable; snapshots report alive == 0).
typedef struct hms_stats_s hms_stats_t;

/// Opens the counters of the newest live service named `service` whose version satisfies
/// `version_req` (NULL = "*"), in `node`'s runtime directory (`node` NULL = the default directory).
/// The serving thread answers the stats handshake between calls (while it runs a long plain handler,
/// the handshake waits for it, up to `timeout_ns`; < 0 = 5 s).
/// Returns: HMS_NOT_FOUND when no live service matches; HMS_UNAVAILABLE when it closed the
/// connection (a server that predates stats, or one without a stats block); HMS_DEADLINE_EXCEEDED;
/// HMS_DATA_LOSS when what it sent is not a sealed, read-only, well-formed stats block.
HMS_API hms_status_t hms_stats_open(hms_node_t *node, const char *service, const char *version_req,
                                    int64_t timeout_ns, hms_stats_t **out, hms_error_t *err);

/// Copies the current counters into `stats` (initialized with hms_service_stats_init()).
/// Returns: HMS_DATA_LOSS when the block no longer validates (nothing is filled).
HMS_API hms_status_t hms_stats_snapshot(hms_stats_t *stats_view, hms_service_stats_t *stats, hms_error_t *err);

/// Closes the view. NULL is a no-op.
HMS_API void hms_stats_close(hms_stats_t *stats_view);

/// Tracing. Every request frame carries the W3C trace context (16-byte trace id, 8-byte parent span
/// id, sampled flag) of the thread that sends it, set with hms_set_thread_trace(). While a handler
/// runs, the serving thread's context is the caller's (so calls a handler makes carry the caller's
/// trace on, even from languages without a tracer); it is restored when the handler returns. A
/// tracer (the Python package with OpenTelemetry) replaces it with its server span's context.
/// Copies the calling thread's trace context (all zero = none). Any argument may be NULL.
HMS_API void hms_thread_trace(uint8_t trace_id[16], uint8_t span_id[8], uint8_t *flags);

HMS_API size_t hms_sizeof_service_stats(void);
HMS_API size_t hms_sizeof_function_stats(void);

#ifdef __cplusplus
}
#endif
#endif /* HMS_FFI_H */
