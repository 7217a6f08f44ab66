//! Raw `extern "C"` declarations of `include/hms_ffi/hms_ffi.h`, the public C ABI of hms-ffi-native.
//!
//! The header is the one source of truth. These declarations are written by hand (no bindgen, no
//! dependencies) and checked against the header by `tests/header.rs`, which translates every
//! constant, struct layout, field type, typedef and function prototype declared here into C
//! `_Static_assert`s and compiles them with the header: a drift fails the test, and a function of
//! the header with no declaration here fails it too. Read the header for the ownership and
//! thread-safety rules of each function; the safe crate `hms-ffi` encodes them.
#![allow(non_camel_case_types)]
#![no_std]

use core::ffi::{c_char, c_int, c_void};
use core::marker::{PhantomData, PhantomPinned};
use core::mem::{align_of, offset_of, size_of};

/// A struct's layout as Rust sees it, for the header check.
#[doc(hidden)]
pub struct StructLayout {
    pub name: &'static str,
    pub size: usize,
    pub align: usize,
    /// (field name, offset, size, Rust type as written)
    pub fields: &'static [(&'static str, usize, usize, &'static str)],
}

macro_rules! c_structs {
    ($( $(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $field:ident : $ty:ty ),* $(,)? } )*) => {
        $(
            $(#[$m])*
            #[repr(C)]
            pub struct $name { $( $(#[$fm])* pub $field: $ty ),* }
        )*
        /// Layouts of every struct declared here, for the header check (tests/header.rs).
        #[doc(hidden)]
        pub const STRUCT_LAYOUTS: &[StructLayout] = &[
            $( StructLayout {
                name: stringify!($name),
                size: size_of::<$name>(),
                align: align_of::<$name>(),
                fields: &[ $( (stringify!($field), offset_of!($name, $field), size_of::<$ty>(), stringify!($ty)) ),* ],
            } ),*
        ];
    };
}

macro_rules! c_consts {
    ($( $(#[$m:meta])* $name:ident : $ty:ty = $value:expr; )*) => {
        $( $(#[$m])* pub const $name: $ty = $value; )*
        /// Every constant declared here with its value, for the header check (tests/header.rs).
        #[doc(hidden)]
        pub const CONSTANTS: &[(&str, i128)] = &[ $( (stringify!($name), $name as i128) ),* ];
    };
}

macro_rules! opaque {
    ($($name:ident),*) => {
        $(
            /// An opaque handle of the C core (only ever used behind a pointer).
            #[repr(C)]
            pub struct $name {
                _private: [u8; 0],
                _marker: PhantomData<(*mut u8, PhantomPinned)>,
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// BEGIN TYPEDEFS (checked by tests/header.rs: one `pub type NAME = TYPE;` per line)
pub type hms_status_t = i32;
pub type hms_handler_fn = Option<unsafe extern "C" fn(call: *mut hms_call_t, req: *const hms_payload_t, user_data: *mut c_void) -> hms_status_t>;
pub type hms_completion_fn = Option<unsafe extern "C" fn(completion: *mut hms_completion_t)>;
pub type hms_batch_handler_fn = Option<unsafe extern "C" fn(batch: *const hms_batch_t, user_data: *mut c_void)>;
// END TYPEDEFS

opaque!(
    hms_node_t,
    hms_service_t,
    hms_client_t,
    hms_call_t,
    hms_deferred_t,
    hms_stream_t,
    hms_publisher_t,
    hms_subscription_t,
    hms_stats_t
);

c_consts! {
    HMS_FFI_VERSION_MAJOR: u32 = 0;
    HMS_FFI_VERSION_MINOR: u32 = 1;
    HMS_FFI_VERSION_PATCH: u32 = 0;
    /// The ABI these declarations describe; compare with `hms_abi_version()` before use.
    HMS_FFI_ABI_VERSION: u32 = 1;

    HMS_OK: hms_status_t = 0;
    HMS_CANCELLED: hms_status_t = 1;
    HMS_UNKNOWN: hms_status_t = 2;
    HMS_INVALID_ARGUMENT: hms_status_t = 3;
    HMS_DEADLINE_EXCEEDED: hms_status_t = 4;
    HMS_NOT_FOUND: hms_status_t = 5;
    HMS_ALREADY_EXISTS: hms_status_t = 6;
    HMS_PERMISSION_DENIED: hms_status_t = 7;
    HMS_RESOURCE_EXHAUSTED: hms_status_t = 8;
    HMS_FAILED_PRECONDITION: hms_status_t = 9;
    HMS_ABORTED: hms_status_t = 10;
    HMS_OUT_OF_RANGE: hms_status_t = 11;
    HMS_UNIMPLEMENTED: hms_status_t = 12;
    HMS_INTERNAL: hms_status_t = 13;
    HMS_UNAVAILABLE: hms_status_t = 14;
    HMS_DATA_LOSS: hms_status_t = 15;
    HMS_UNAUTHENTICATED: hms_status_t = 16;

    HMS_ORIGIN_LOCAL: i32 = 0;
    HMS_ORIGIN_REMOTE: i32 = 1;

    HMS_CT_NONE: u32 = 0;
    HMS_CT_RAW: u32 = 1;
    HMS_CT_CBOR: u32 = 2;
    HMS_CT_JSON: u32 = 3;
    HMS_CT_PROTOBUF: u32 = 4;
    HMS_CT_ARROW: u32 = 5;
    HMS_CT_NDARRAY: u32 = 6;
    HMS_CT_USER: u32 = 1024;

    HMS_NAME_MAX: usize = 127;
    HMS_VERSION_MAX: usize = 63;
    HMS_MAX_FUNCTIONS: u32 = 4096;
    HMS_RING_MIN_BYTES: u64 = 4096;
    HMS_RING_MAX_BYTES: u64 = 1073741824;
    HMS_RING_DEFAULT_BYTES: u64 = 1048576;
    HMS_FRAME_HEADER_BYTES: u32 = 64;

    HMS_NODE_OPTIONS_VERSION: u32 = 1;

    HMS_FN_DEFAULT: u32 = 0;
    HMS_FN_IDEMPOTENT: u32 = 1 << 0;
    HMS_FN_STREAM: u32 = 1 << 1;
    HMS_FN_CLIENT_STREAM: u32 = 1 << 2;

    HMS_BATCH_MAX_ITEMS: u32 = 4096;
    HMS_BATCH_MAX_BYTES: u32 = 4 << 20;

    HMS_CONNECT_OPTIONS_VERSION: u32 = 1;

    HMS_CALL_DEFAULT: u32 = 0;
    HMS_CALL_ONEWAY: u32 = 1 << 0;

    HMS_STREAM_SERVER: u32 = 1 << 0;
    HMS_STREAM_CLIENT: u32 = 1 << 1;

    HMS_TOPIC_DEFAULT_CAPACITY: u32 = 1024;
    HMS_TOPIC_MAX_CAPACITY: u32 = 1048576;
    HMS_TOPIC_DEFAULT_RING_BYTES: u64 = 1048576;
    HMS_TOPIC_DEFAULT_MAX_SUBSCRIBERS: u32 = 64;
    HMS_TOPIC_MAX_SUBSCRIBERS: u32 = 1024;

    HMS_PUBLISHER_DEFAULT: u32 = 0;
    HMS_PUBLISHER_BLOCK: u32 = 1 << 0;

    HMS_MSG_DEFAULT: u32 = 0;
    HMS_MSG_EVENT: u32 = 1 << 0;

    HMS_PUBLISHER_OPTIONS_VERSION: u32 = 1;

    HMS_SUBSCRIBE_DEFAULT: u32 = 0;
    HMS_SUBSCRIBE_KEEP_WAITING: u32 = 1 << 0;

    HMS_SUBSCRIBE_OPTIONS_VERSION: u32 = 1;

    HMS_ARENA_DEFAULT_QUOTA: u64 = 67108864;
    HMS_ARENA_STATS_VERSION: u32 = 1;

    HMS_ACCESS_ANY: u32 = 1 << 0;
    HMS_ACCESS_OWNER: u32 = 1 << 1;
    HMS_AUDIT_DEFAULT: u32 = 0;
    HMS_AUDIT_NONE: u32 = 1;
    HMS_AUDIT_DENY: u32 = 2;
    HMS_AUDIT_ALL: u32 = 3;
    HMS_ACCESS_VERSION: u32 = 1;
    HMS_LIMITS_VERSION: u32 = 1;
    HMS_AUDIT_OPTIONS_VERSION: u32 = 1;
    HMS_AUDIT_STATS_VERSION: u32 = 1;

    ARROW_FLAG_DICTIONARY_ORDERED: i64 = 1;
    ARROW_FLAG_NULLABLE: i64 = 2;
    ARROW_FLAG_MAP_KEYS_SORTED: i64 = 4;
    HMS_ARROW_FORMAT_VERSION: u32 = 1;
    HMS_ARROW_HEADER_BYTES: u32 = 64;
    HMS_ARROW_ALIGNMENT: u32 = 64;
    HMS_ARROW_MAX_DEPTH: u32 = 64;
    HMS_ARROW_MAX_NODES: u32 = 1048576;
    HMS_ARROW_MAX_FORMAT: u32 = 4096;
    HMS_ARROW_KIND_UNSPECIFIED: u32 = 0;
    HMS_ARROW_KIND_ARRAY: u32 = 1;
    HMS_ARROW_KIND_CHUNKED_ARRAY: u32 = 2;
    HMS_ARROW_KIND_RECORD_BATCH: u32 = 3;
    HMS_ARROW_KIND_TABLE: u32 = 4;
    HMS_STATS_VERSION: u32 = 1;
    HMS_STATS_LATENCY_BUCKETS: u32 = 48;
    HMS_STATS_STATUS_CODES: u32 = 17;
}

c_structs! {
    /// Error details filled by fallible functions (caller-owned; one per thread/call).
    pub struct hms_error_t {
        pub code: hms_status_t,
        pub os_errno: i32,
        pub origin: i32,
        pub reserved: i32,
        pub message: [c_char; 256],
    }

    /// A payload: a byte range plus its content type; `release` set when the library owns it.
    pub struct hms_payload_t {
        pub data: *const c_void,
        pub len: usize,
        pub content_type: u32,
        pub flags: u32,
        pub release: Option<unsafe extern "C" fn(payload: *mut hms_payload_t)>,
        pub private_data: *mut c_void,
    }

    /// Options for hms_node_open(); fill with hms_node_options_init() first.
    pub struct hms_node_options_t {
        pub version: u32,
        pub reserved0: u32,
        pub name: *const c_char,
        pub runtime_dir: *const c_char,
        pub spin_ns: i64,
        pub ring_bytes: u64,
        pub reserved: [u64; 8],
    }

    /// A run of one-way calls handed to a batch handler (valid only during the handler).
    pub struct hms_batch_t {
        pub count: usize,
        pub items: *const hms_payload_t,
        pub data: *const u8,
        pub offsets: *const u32,
        pub content_type: u32,
        pub peer_pid: i32,
        pub peer_uid: u32,
        pub peer_gid: u32,
    }

    /// Options for hms_connect(); fill with hms_connect_options_init() first.
    pub struct hms_connect_options_t {
        pub version: u32,
        pub reserved0: u32,
        pub timeout_ns: i64,
        pub spin_ns: i64,
        pub ring_bytes: u64,
        pub reserved: [u64; 8],
    }

    /// A finished asynchronous call.
    pub struct hms_completion_t {
        pub call_id: u64,
        pub status: hms_status_t,
        pub origin: i32,
        pub payload: hms_payload_t,
        pub user_data: *mut c_void,
        pub message: [c_char; 256],
    }

    /// One call of a batch.
    pub struct hms_batch_item_t {
        pub fn_id: u32,
        pub content_type: u32,
        pub data: *const c_char,
        pub len: usize,
    }

    /// One registered service as read from the runtime directory.
    pub struct hms_service_info_t {
        pub name: [c_char; 128],
        pub version: [c_char; 64],
        pub node: [c_char; 128],
        pub pid: i32,
        pub uid: u32,
        pub function_count: u32,
        pub reserved0: u32,
        pub function_names: *mut *mut c_char,
        pub function_ids: *mut u32,
        pub reserved: [u64; 4],
    }

    /// A list of services; release with `release(list)` exactly once.
    pub struct hms_service_list_t {
        pub count: usize,
        pub items: *mut hms_service_info_t,
        pub release: Option<unsafe extern "C" fn(list: *mut hms_service_list_t)>,
        pub private_data: *mut c_void,
    }

    /// Options for hms_publisher_open(); fill with hms_publisher_options_init() first.
    pub struct hms_publisher_options_t {
        pub version: u32,
        pub flags: u32,
        pub capacity: u32,
        pub max_subscribers: u32,
        pub ring_bytes: u64,
        pub spin_ns: i64,
        pub reserved: [u64; 8],
    }

    /// Options for hms_subscribe(); fill with hms_subscribe_options_init() first.
    pub struct hms_subscribe_options_t {
        pub version: u32,
        pub flags: u32,
        pub spin_ns: i64,
        pub handshake_timeout_ns: i64,
        pub reserved: [u64; 8],
    }

    /// One received message; release with hms_message_release().
    pub struct hms_message_t {
        pub topic: [c_char; 128],
        pub publisher_pid: i32,
        pub flags: u32,
        pub publisher_id: u64,
        pub seq: u64,
        pub missed: u64,
        pub publish_time_ns: i64,
        pub payload: hms_payload_t,
        pub reserved: [u64; 4],
    }

    /// A writable arena block on loan from a connection.
    pub struct hms_block_t {
        pub data: *mut c_void,
        pub len: usize,
        pub private_data: *mut c_void,
        pub reserved: [u64; 2],
    }

    /// Arena counters; fill with hms_arena_stats_init() first.
    pub struct hms_arena_stats_t {
        pub version: u32,
        pub reserved0: u32,
        pub quota: u64,
        pub segments: u64,
        pub mapped_bytes: u64,
        pub blocks_outstanding: u64,
        pub bytes_outstanding: u64,
        pub blocks_allocated: u64,
        pub bad_releases: u64,
        pub peer_segments_mapped: u64,
        pub peer_mapped_bytes: u64,
        pub peer_blocks_held: u64,
        pub reserved: [u64; 6],
    }

    /// Who may call a function; fill with hms_access_init() first.
    pub struct hms_access_t {
        pub version: u32,
        pub flags: u32,
        pub uids: *const u32,
        pub n_uids: usize,
        pub gids: *const u32,
        pub n_gids: usize,
        pub roles: *const c_char,
        pub audit: u32,
        pub reserved0: u32,
        pub reserved: [u64; 6],
    }

    /// Resource limits of a service; fill with hms_limits_init() first.
    pub struct hms_limits_t {
        pub version: u32,
        pub max_connections: u32,
        pub max_inflight: u32,
        pub reserved0: u32,
        pub max_ring_bytes: u64,
        pub arena_quota: u64,
        pub max_message: u64,
        pub reserved: [u64; 8],
    }

    /// Options of the audit log; fill with hms_audit_options_init() first.
    pub struct hms_audit_options_t {
        pub version: u32,
        pub level: u32,
        pub path: *const c_char,
        pub max_bytes: u64,
        pub keep: u32,
        pub queue: u32,
        pub reserved: [u64; 8],
    }

    /// Audit log counters; fill with hms_audit_stats_init() first.
    pub struct hms_audit_stats_t {
        pub version: u32,
        pub reserved0: u32,
        pub queued: u64,
        pub written: u64,
        pub dropped: u64,
        pub rotations: u64,
        pub write_errors: u64,
        pub reserved: [u64; 6],
    }

    /// Arrow C Data Interface: a schema.
    pub struct ArrowSchema {
        pub format: *const c_char,
        pub name: *const c_char,
        pub metadata: *const c_char,
        pub flags: i64,
        pub n_children: i64,
        pub children: *mut *mut ArrowSchema,
        pub dictionary: *mut ArrowSchema,
        pub release: Option<unsafe extern "C" fn(schema: *mut ArrowSchema)>,
        pub private_data: *mut c_void,
    }

    /// Arrow C Data Interface: an array.
    pub struct ArrowArray {
        pub length: i64,
        pub null_count: i64,
        pub offset: i64,
        pub n_buffers: i64,
        pub n_children: i64,
        pub buffers: *mut *const c_void,
        pub children: *mut *mut ArrowArray,
        pub dictionary: *mut ArrowArray,
        pub release: Option<unsafe extern "C" fn(array: *mut ArrowArray)>,
        pub private_data: *mut c_void,
    }

    /// Arrow C Stream Interface.
    pub struct ArrowArrayStream {
        pub get_schema: Option<unsafe extern "C" fn(stream: *mut ArrowArrayStream, out: *mut ArrowSchema) -> c_int>,
        pub get_next: Option<unsafe extern "C" fn(stream: *mut ArrowArrayStream, out: *mut ArrowArray) -> c_int>,
        pub get_last_error: Option<unsafe extern "C" fn(stream: *mut ArrowArrayStream) -> *const c_char>,
        pub release: Option<unsafe extern "C" fn(stream: *mut ArrowArrayStream)>,
        pub private_data: *mut c_void,
    }

    /// One message of a batch (hms_subscription_recv_batch()).
    pub struct hms_message_info_t {
        pub seq: u64,
        pub missed: u64,
        pub publisher_id: u64,
        pub publish_time_ns: i64,
        pub payload_offset: u64,
        pub payload_len: u64,
        pub topic_offset: u32,
        pub topic_len: u32,
        pub content_type: u32,
        pub flags: u32,
        pub publisher_pid: i32,
        pub reserved: u32,
    }

    /// Counters of one function (a snapshot; see "Metrics and tracing" in the header).
    pub struct hms_function_stats_t {
        pub name: [c_char; 128],
        pub id: u32,
        pub flags: u32,
        pub calls: u64,
        pub completed: u64,
        pub errors: u64,
        pub in_flight: u64,
        pub oneway: u64,
        pub streams: u64,
        pub cancels: u64,
        pub deferred: u64,
        pub bytes_in: u64,
        pub bytes_out: u64,
        pub status: [u64; 17],
        pub latency_sum_ns: u64,
        pub latency_max_ns: u64,
        pub latency_buckets: [u64; 48],
        pub reserved: [u64; 4],
    }

    /// A service's counters; fill with hms_service_stats_init() first, release with `release(stats)`.
    pub struct hms_service_stats_t {
        pub version: u32,
        pub function_count: u32,
        pub service: [c_char; 128],
        pub service_version: [c_char; 64],
        pub node: [c_char; 128],
        pub pid: i32,
        pub alive: i32,
        pub uptime_ns: i64,
        pub connections: u64,
        pub connections_total: u64,
        pub handshakes_refused: u64,
        pub unknown_function_calls: u64,
        pub stats_reads: u64,
        pub functions: *mut hms_function_stats_t,
        pub release: Option<unsafe extern "C" fn(stats: *mut hms_service_stats_t)>,
        pub private_data: *mut c_void,
        pub reserved: [u64; 8],
    }
}

// BEGIN FUNCTIONS (checked by tests/header.rs: `pub fn NAME(ARG: TYPE, ...) -> TYPE;`)
#[link(name = "hms_ffi")]
extern "C" {
    pub fn hms_abi_version() -> u32;
    pub fn hms_version_string() -> *const c_char;
    pub fn hms_status_str(status: hms_status_t) -> *const c_char;
    pub fn hms_payload_release(payload: *mut hms_payload_t);

    pub fn hms_node_options_init(opts: *mut hms_node_options_t);
    pub fn hms_node_open(opts: *const hms_node_options_t, out: *mut *mut hms_node_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_node_close(node: *mut hms_node_t);
    pub fn hms_node_runtime_dir(node: *const hms_node_t) -> *const c_char;
    pub fn hms_node_serve(node: *mut hms_node_t, timeout_ns: i64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_node_poll(node: *mut hms_node_t, served: *mut u32, again: *mut c_int, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_node_event_fd(node: *const hms_node_t) -> c_int;
    pub fn hms_node_start(node: *mut hms_node_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_node_stop(node: *mut hms_node_t);

    pub fn hms_service_add(node: *mut hms_node_t, name: *const c_char, version: *const c_char, out: *mut *mut hms_service_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_function_add(service: *mut hms_service_t, name: *const c_char, flags: u32, fn_: hms_handler_fn, user_data: *mut c_void, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_function_set_batch_handler(service: *mut hms_service_t, name: *const c_char, fn_: hms_batch_handler_fn, user_data: *mut c_void, err: *mut hms_error_t) -> hms_status_t;

    pub fn hms_call_reply(call: *mut hms_call_t, data: *const c_char, len: usize, content_type: u32, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_call_send(call: *mut hms_call_t, data: *const c_char, len: usize, content_type: u32, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_call_is_stream(call: *const hms_call_t) -> c_int;
    pub fn hms_call_recv(call: *mut hms_call_t, item: *mut hms_payload_t, end: *mut c_int, timeout_ns: i64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_call_defer(call: *mut hms_call_t, out: *mut *mut hms_deferred_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_deferred_call(deferred: *mut hms_deferred_t) -> *mut hms_call_t;
    pub fn hms_deferred_reply(deferred: *mut hms_deferred_t, data: *const c_char, len: usize, content_type: u32, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_deferred_send(deferred: *mut hms_deferred_t, data: *const c_char, len: usize, content_type: u32, wait: c_int, sent: *mut c_int, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_deferred_fail(deferred: *mut hms_deferred_t, code: hms_status_t, message: *const c_char, details: *const c_char, details_len: usize, details_content_type: u32);
    pub fn hms_call_set_error(call: *mut hms_call_t, code: hms_status_t, message: *const c_char, details: *const c_char, details_len: usize, details_content_type: u32);
    pub fn hms_call_peer(call: *const hms_call_t, pid: *mut i32, uid: *mut u32, gid: *mut u32);
    pub fn hms_call_time_left_ns(call: *const hms_call_t) -> i64;
    pub fn hms_call_id(call: *const hms_call_t) -> u64;
    pub fn hms_call_function_id(call: *const hms_call_t) -> u32;
    pub fn hms_call_function_name(call: *const hms_call_t) -> *const c_char;
    pub fn hms_call_service_name(call: *const hms_call_t) -> *const c_char;
    pub fn hms_call_is_cancelled(call: *mut hms_call_t) -> c_int;
    pub fn hms_call_is_oneway(call: *const hms_call_t) -> c_int;
    pub fn hms_call_trace(call: *const hms_call_t, trace_id: *mut u8, span_id: *mut u8, flags: *mut u8);

    pub fn hms_connect_options_init(opts: *mut hms_connect_options_t);
    pub fn hms_connect(node: *mut hms_node_t, service: *const c_char, version_req: *const c_char, opts: *const hms_connect_options_t, out: *mut *mut hms_client_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_client_close(client: *mut hms_client_t);
    pub fn hms_client_function_id(client: *const hms_client_t, name: *const c_char, fn_id: *mut u32, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_client_function_count(client: *const hms_client_t) -> u32;
    pub fn hms_client_function_at(client: *const hms_client_t, index: u32, name: *mut *const c_char, fn_id: *mut u32, flags: *mut u32) -> hms_status_t;
    pub fn hms_client_service_name(client: *const hms_client_t) -> *const c_char;
    pub fn hms_client_service_version(client: *const hms_client_t) -> *const c_char;
    pub fn hms_client_server_pid(client: *const hms_client_t) -> i32;
    pub fn hms_client_max_message(client: *const hms_client_t) -> usize;
    pub fn hms_call(client: *mut hms_client_t, fn_id: u32, req: *const hms_payload_t, resp: *mut hms_payload_t, timeout_ns: i64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_call_bytes(client: *mut hms_client_t, fn_id: u32, data: *const c_char, len: usize, content_type: u32, resp: *mut hms_payload_t, timeout_ns: i64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_call_submit(client: *mut hms_client_t, fn_id: u32, data: *const c_char, len: usize, content_type: u32, flags: u32, timeout_ns: i64, callback: hms_completion_fn, user_data: *mut c_void, call_id: *mut u64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_client_poll(client: *mut hms_client_t, out: *mut hms_completion_t, max: usize, count: *mut usize, timeout_ns: i64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_client_event_fd(client: *const hms_client_t) -> c_int;
    pub fn hms_call_cancel(client: *mut hms_client_t, call_id: u64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_call_batch(client: *mut hms_client_t, items: *const hms_batch_item_t, count: usize, flags: u32, out: *mut hms_completion_t, timeout_ns: i64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_call_batch_packed(client: *mut hms_client_t, fn_id: u32, content_type: u32, data: *const c_char, lens: *const usize, count: usize, flags: u32, out: *mut hms_completion_t, timeout_ns: i64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_stream_open(client: *mut hms_client_t, fn_id: u32, data: *const c_char, len: usize, content_type: u32, flags: u32, timeout_ns: i64, out: *mut *mut hms_stream_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_stream_send(stream: *mut hms_stream_t, data: *const c_char, len: usize, content_type: u32, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_stream_finish(stream: *mut hms_stream_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_stream_next(stream: *mut hms_stream_t, item: *mut hms_payload_t, end: *mut c_int, timeout_ns: i64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_stream_next_many(stream: *mut hms_stream_t, buf: *mut u8, cap: usize, offsets: *mut u32, content_types: *mut u32, max: usize, n: *mut usize, end: *mut c_int, timeout_ns: i64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_stream_cancel(stream: *mut hms_stream_t);
    pub fn hms_stream_close(stream: *mut hms_stream_t);
    pub fn hms_set_thread_trace(trace_id: *const u8, span_id: *const u8, flags: u8);

    pub fn hms_list_services(runtime_dir: *const c_char, out: *mut hms_service_list_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_default_runtime_dir(buf: *mut c_char, cap: usize, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_version_matches(version: *const c_char, requirement: *const c_char) -> c_int;

    pub fn hms_publisher_options_init(opts: *mut hms_publisher_options_t);
    pub fn hms_publisher_open(node: *mut hms_node_t, topic: *const c_char, opts: *const hms_publisher_options_t, out: *mut *mut hms_publisher_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_publisher_close(pub_: *mut hms_publisher_t);
    pub fn hms_publish(pub_: *mut hms_publisher_t, data: *const c_char, len: usize, content_type: u32, flags: u32, timeout_ns: i64, seq: *mut u64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_publisher_topic(pub_: *const hms_publisher_t) -> *const c_char;
    pub fn hms_publisher_capacity(pub_: *const hms_publisher_t) -> u32;
    pub fn hms_publisher_max_message(pub_: *const hms_publisher_t) -> usize;
    pub fn hms_publisher_subscriber_count(pub_: *const hms_publisher_t) -> u32;
    pub fn hms_publisher_last_seq(pub_: *const hms_publisher_t) -> u64;
    pub fn hms_subscribe_options_init(opts: *mut hms_subscribe_options_t);
    pub fn hms_subscribe(node: *mut hms_node_t, pattern: *const c_char, opts: *const hms_subscribe_options_t, out: *mut *mut hms_subscription_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_subscription_close(sub: *mut hms_subscription_t);
    pub fn hms_subscription_recv(sub: *mut hms_subscription_t, msg: *mut hms_message_t, timeout_ns: i64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_message_release(msg: *mut hms_message_t);
    pub fn hms_subscription_recv_batch(sub: *mut hms_subscription_t, infos: *mut hms_message_info_t, max: usize, buf: *mut c_char, cap: usize, count: *mut usize, used: *mut usize, timeout_ns: i64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_subscription_interrupt(sub: *mut hms_subscription_t);
    pub fn hms_subscription_fd(sub: *const hms_subscription_t) -> c_int;
    pub fn hms_subscription_pattern(sub: *const hms_subscription_t) -> *const c_char;
    pub fn hms_subscription_publisher_count(sub: *const hms_subscription_t) -> u32;
    pub fn hms_subscription_missed(sub: *const hms_subscription_t) -> u64;

    pub fn hms_arena_stats_init(stats: *mut hms_arena_stats_t);
    pub fn hms_loan(client: *mut hms_client_t, size: usize, block: *mut hms_block_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_block_release(block: *mut hms_block_t);
    pub fn hms_call_block(client: *mut hms_client_t, fn_id: u32, block: *mut hms_block_t, len: usize, content_type: u32, resp: *mut hms_payload_t, timeout_ns: i64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_call_loan(call: *mut hms_call_t, size: usize, block: *mut hms_block_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_call_reply_block(call: *mut hms_call_t, block: *mut hms_block_t, len: usize, content_type: u32, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_call_take_request(call: *mut hms_call_t, out: *mut hms_payload_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_client_set_arena_quota(client: *mut hms_client_t, bytes: u64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_node_set_arena_quota(node: *mut hms_node_t, bytes: u64, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_client_max_inline(client: *const hms_client_t) -> usize;
    pub fn hms_client_arena_stats(client: *mut hms_client_t, stats: *mut hms_arena_stats_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_node_arena_stats(node: *mut hms_node_t, stats: *mut hms_arena_stats_t, err: *mut hms_error_t) -> hms_status_t;

    pub fn hms_access_init(access: *mut hms_access_t);
    pub fn hms_function_set_access(service: *mut hms_service_t, name: *const c_char, access: *const hms_access_t,
                                   err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_limits_init(limits: *mut hms_limits_t);
    pub fn hms_service_set_limits(service: *mut hms_service_t, limits: *const hms_limits_t,
                                  err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_service_open_to_group(service: *mut hms_service_t, gid: u32, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_audit_options_init(opts: *mut hms_audit_options_t);
    pub fn hms_node_set_audit(node: *mut hms_node_t, opts: *const hms_audit_options_t,
                              err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_audit_stats_init(stats: *mut hms_audit_stats_t);
    pub fn hms_node_audit_stats(node: *mut hms_node_t, stats: *mut hms_audit_stats_t,
                                err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_node_audit_flush(node: *mut hms_node_t, timeout_ns: i64, err: *mut hms_error_t) -> hms_status_t;

    pub fn hms_sizeof_error() -> usize;
    pub fn hms_sizeof_payload() -> usize;
    pub fn hms_sizeof_node_options() -> usize;
    pub fn hms_sizeof_connect_options() -> usize;

    pub fn hms_arrow_encoded_size(schema: *const ArrowSchema, arrays: *const *const ArrowArray, n_arrays: usize, out_size: *mut usize, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_arrow_encode(schema: *const ArrowSchema, arrays: *const *const ArrowArray, n_arrays: usize, kind: u32, dst: *mut u8, cap: usize, written: *mut usize, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_arrow_peek(src: *const u8, len: usize, kind: *mut u32, n_arrays: *mut usize, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_service_stats_init(stats: *mut hms_service_stats_t);
    pub fn hms_service_stats(service: *mut hms_service_t, stats: *mut hms_service_stats_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_stats_open(node: *mut hms_node_t, service: *const c_char, version_req: *const c_char, timeout_ns: i64, out: *mut *mut hms_stats_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_stats_snapshot(stats_view: *mut hms_stats_t, stats: *mut hms_service_stats_t, err: *mut hms_error_t) -> hms_status_t;
    pub fn hms_stats_close(stats_view: *mut hms_stats_t);
    pub fn hms_thread_trace(trace_id: *mut u8, span_id: *mut u8, flags: *mut u8);
    pub fn hms_sizeof_service_stats() -> usize;
    pub fn hms_sizeof_function_stats() -> usize;
    pub fn hms_arrow_decode(src: *const u8, len: usize, on_release: Option<unsafe extern "C" fn(ctx: *mut c_void)>, ctx: *mut c_void, out_schema: *mut ArrowSchema, out_arrays: *mut ArrowArray, max_arrays: usize, n_arrays: *mut usize, err: *mut hms_error_t) -> hms_status_t;
}
// END FUNCTIONS
