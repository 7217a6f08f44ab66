//! The one module of this crate that uses `unsafe`: every type that owns a handle of the C core,
//! and the calls into it. Everything else (errors, CBOR, the peer program) is safe code.
//!
//! Lifetimes encode the header's ownership rules: a [`Client`], [`Publisher`] or [`Subscription`]
//! borrows its [`Node`] (the header says close them before the node), a [`Stream`] borrows its
//! [`Client`], and a [`Call`] lives only while its handler runs. `Send`/`Sync` are implemented only
//! where the header's Thread-safety lines allow it; each `unsafe impl` says which line.
#![allow(unsafe_code)]

use std::any::Any;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hms_ffi_sys as sys;

use crate::error::{timeout_ns, Code, Error, Result};

// ------------------------------------------------------------------ helpers

/// A zeroed `hms_error_t` (the C core fills it on failure).
fn err_buf() -> sys::hms_error_t {
    // SAFETY: hms_error_t is plain old data (integers and a char array); all-zero is valid.
    unsafe { MaybeUninit::zeroed().assume_init() }
}

fn empty_payload() -> sys::hms_payload_t {
    sys::hms_payload_t {
        data: ptr::null(),
        len: 0,
        content_type: 0,
        flags: 0,
        release: None,
        private_data: ptr::null_mut(),
    }
}

fn c_chars_to_string(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn to_error(status: sys::hms_status_t, e: &sys::hms_error_t) -> Error {
    let msg = c_chars_to_string(&e.message);
    let msg = if msg.is_empty() { format!("{} (no message from the C core)", status_name(status)) } else { msg };
    Error::from_parts(status, msg, e.origin, e.os_errno)
}

fn check(status: sys::hms_status_t, e: &sys::hms_error_t) -> Result<()> {
    if status == sys::HMS_OK {
        Ok(())
    } else {
        Err(to_error(status, e))
    }
}

fn cstring(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::new(Code::InvalidArgument, format!("{what} {s:?} contains a NUL byte")))
}

/// Copies a C string the library owns (static or valid until a close we have not done yet).
fn owned_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the C core returns NUL-terminated strings valid at least until the owning handle
    // closes; we copy before returning.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The canonical name the C core gives a status value ("NOT_FOUND", "UNRECOGNIZED_STATUS", ...).
pub fn status_name(status: i32) -> String {
    // SAFETY: hms_status_str returns a static string, never NULL.
    owned_str(unsafe { sys::hms_status_str(status) })
}

/// The ABI version of the loaded libhms_ffi.
pub fn abi_version() -> u32 {
    // SAFETY: no arguments, no state.
    unsafe { sys::hms_abi_version() }
}

/// The version of the loaded libhms_ffi, "MAJOR.MINOR.PATCH".
pub fn version() -> String {
    // SAFETY: returns a static string.
    owned_str(unsafe { sys::hms_version_string() })
}

/// Refuses a library whose ABI differs from the one hms-ffi-sys declares.
pub fn check_abi(library: u32, built_against: u32) -> Result<()> {
    if library == built_against {
        return Ok(());
    }
    Err(Error::new(
        Code::FailedPrecondition,
        format!(
            "libhms_ffi has ABI version {library} but this Rust binding was built against ABI version \
             {built_against} (hms-ffi-sys {}): rebuild the binding against the installed library \
             (cargo clean -p hms-ffi-sys; cargo build) or install the matching hms-ffi-native",
            env!("CARGO_PKG_VERSION")
        ),
    ))
}

// ------------------------------------------------------------------ payloads

/// A payload the library handed out (a reply, a stream item, a taken request), released on drop.
/// A large one (past the ring's inline limit) is the sender's arena block, mapped read-only.
pub struct Payload {
    raw: sys::hms_payload_t,
    /// Our own 8-byte aligned copy (a taken request that came inline), with its length in bytes.
    copy: Option<(Vec<u64>, usize)>,
}

// SAFETY (Send, Sync): hms_payload_t's Thread-safety line: "a filled payload may be handed to and
// released by any thread". Its bytes are a private heap copy (not the shared ring), never written
// after it is filled, so shared reads from several threads are fine too.
unsafe impl Send for Payload {}
unsafe impl Sync for Payload {}

impl Payload {
    /// The bytes.
    pub fn data(&self) -> &[u8] {
        if let Some((words, len)) = &self.copy {
            return &bytemuck_bytes(words)[..*len];
        }
        if self.raw.data.is_null() || self.raw.len == 0 {
            return &[];
        }
        // SAFETY: data/len describe a live allocation until hms_payload_release (in Drop).
        unsafe { std::slice::from_raw_parts(self.raw.data as *const u8, self.raw.len) }
    }
    /// The content type (`HMS_CT_*`).
    pub fn content_type(&self) -> u32 {
        self.raw.content_type
    }
    /// True when the bytes are a copy this process made (a taken request that came inline), false
    /// for memory the library handed out (for a large payload: the sender's arena block, no copy).
    pub fn is_copy(&self) -> bool {
        self.copy.is_some()
    }
    /// Copies the bytes out.
    pub fn to_vec(&self) -> Vec<u8> {
        self.data().to_vec()
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        // SAFETY: released exactly once; release(NULL-ed) payloads are no-ops.
        unsafe { sys::hms_payload_release(&mut self.raw) }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes, content type {})", self.raw.len, self.raw.content_type)
    }
}

/// Turns a failed call's status + error + details payload into an Error.
fn call_error(status: sys::hms_status_t, e: &sys::hms_error_t, details: Payload) -> Error {
    let mut err = to_error(status, e);
    if !details.data().is_empty() {
        err.set_details(details.to_vec(), details.content_type());
    }
    err
}

// ------------------------------------------------------------------ node

/// Options for [`Node::open_with`].
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Node name for listings; `None` = "node-<pid>".
    pub name: Option<String>,
    /// `None` = $HMS_FFI_RUNTIME_DIR, else $XDG_RUNTIME_DIR/hms-ffi, else /tmp/hms-ffi-<uid>.
    pub runtime_dir: Option<PathBuf>,
    /// Busy-wait budget before sleeping; `None` = the default (50 µs); `Some(ZERO)` = never spin.
    pub spin: Option<Duration>,
    /// Per-direction ring size for connections this node serves; 0 = default.
    pub ring_bytes: u64,
}

type HandlerFn = dyn FnMut(&mut Call<'_>) -> Result<()> + Send + 'static;

/// What a C handler's `user_data` points to: the Rust closure and a scratch buffer for the request.
struct HandlerSlot {
    f: Box<HandlerFn>,
    scratch: Vec<u8>,
    name: String,
    /// Hand the handler the request where it lies (no copy): see Service::function_in_place.
    in_place: bool,
}

/// A process's presence in the runtime directory: serves services, opens clients and topics.
///
/// Closing (drop) unregisters its services and drops its connections.
pub struct Node {
    raw: NonNull<sys::hms_node_t>,
    // Closures given to the C core as user_data; freed after hms_node_close (see Drop). Boxed
    // so that their addresses stay put when the Vec grows.
    #[allow(clippy::vec_box)]
    handlers: Mutex<Vec<Box<HandlerSlot>>>,
    #[allow(clippy::vec_box)]
    batch_handlers: Mutex<Vec<Box<BatchSlot>>>,
}

// SAFETY (Send): nothing in a node is tied to the thread that opened it; hms_node_close joins the
// thread hms_node_start created from whichever thread calls it. Handlers are `Send`.
unsafe impl Send for Node {}
// SAFETY (Sync): the methods taking &self are the ones the header allows from several threads:
// hms_node_stop ("Safe from any thread"), hms_node_serve/poll (the core refuses a second serving
// thread with FAILED_PRECONDITION), hms_service_add/hms_function_add (serialized by the node's
// lock in the core, plus our `handlers` mutex), hms_connect/hms_publisher_open/hms_subscribe (they
// only read the node's immutable settings). hms_node_close, which must not race with serve, needs
// `&mut`/ownership (Drop), and every borrowed handle (Client, Service, ...) must be gone by then.
unsafe impl Sync for Node {}

impl Node {
    /// Opens a node named `name` in the default runtime directory.
    pub fn open(name: &str) -> Result<Node> {
        Node::open_with(&NodeOptions { name: Some(name.to_string()), ..Default::default() })
    }

    /// Opens a node. Refuses to run when the library's ABI differs from the declarations'.
    pub fn open_with(opts: &NodeOptions) -> Result<Node> {
        check_abi(abi_version(), sys::HMS_FFI_ABI_VERSION)?;
        let name = opts.name.as_deref().map(|n| cstring("node name", n)).transpose()?;
        let dir = match &opts.runtime_dir {
            Some(d) => Some(cstring("runtime directory", d.to_str().ok_or_else(|| {
                Error::new(Code::InvalidArgument, format!("runtime directory {} is not UTF-8", d.display()))
            })?)?),
            None => None,
        };
        // SAFETY: hms_node_options_t is plain data; init fills every field.
        let mut o: sys::hms_node_options_t = unsafe { MaybeUninit::zeroed().assume_init() };
        unsafe { sys::hms_node_options_init(&mut o) };
        o.name = name.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        o.runtime_dir = dir.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        o.spin_ns = opts.spin.map_or(-1, |d| timeout_ns(Some(d)));
        o.ring_bytes = opts.ring_bytes;
        let mut out = ptr::null_mut();
        let mut e = err_buf();
        // SAFETY: valid options (strings outlive the call), out and err point to locals.
        let st = unsafe { sys::hms_node_open(&o, &mut out, &mut e) };
        check(st, &e)?;
        let raw = NonNull::new(out).ok_or_else(|| Error::new(Code::Internal, "hms_node_open returned OK but no node"))?;
        Ok(Node { raw, handlers: Mutex::new(Vec::new()), batch_handlers: Mutex::new(Vec::new()) })
    }

    fn ptr(&self) -> *mut sys::hms_node_t {
        self.raw.as_ptr()
    }

    /// The runtime directory this node uses.
    pub fn runtime_dir(&self) -> PathBuf {
        // SAFETY: valid until close, copied at once.
        PathBuf::from(owned_str(unsafe { sys::hms_node_runtime_dir(self.ptr()) }))
    }

    /// Adds a service `name` version `version` ("MAJOR.MINOR.PATCH") and makes it discoverable.
    pub fn service(&self, name: &str, version: &str) -> Result<Service<'_>> {
        let n = cstring("service name", name)?;
        let v = cstring("service version", version)?;
        let mut out = ptr::null_mut();
        let mut e = err_buf();
        // SAFETY: live node, NUL-terminated strings, out/err are locals.
        let st = unsafe { sys::hms_service_add(self.ptr(), n.as_ptr(), v.as_ptr(), &mut out, &mut e) };
        check(st, &e)?;
        let raw = NonNull::new(out).ok_or_else(|| Error::new(Code::Internal, "hms_service_add returned no service"))?;
        Ok(Service { raw, node: self })
    }

    /// Runs the dispatch loop on this thread (handlers run here) for `timeout` (`None` = until
    /// [`Node::stop`]). `Err(Cancelled)` when a signal interrupted the sleep: call again.
    pub fn serve(&self, timeout: Option<Duration>) -> Result<()> {
        let mut e = err_buf();
        // SAFETY: live node; the core refuses concurrent serving threads.
        let st = unsafe { sys::hms_node_serve(self.ptr(), timeout_ns(timeout), &mut e) };
        check(st, &e)
    }

    /// Serves on this thread until SIGINT or SIGTERM arrives, then returns `Ok` (within 100 ms).
    /// Installs handlers for both signals that only set a flag (process-wide).
    pub fn serve_until_signal(&self) -> Result<()> {
        install_termination_handlers();
        while !TERMINATE.load(Ordering::SeqCst) {
            match self.serve(Some(Duration::from_millis(100))) {
                Ok(()) => {}
                Err(e) if e.code() == Code::Cancelled => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Starts a background thread that serves until [`Node::stop`] or drop.
    pub fn start(&self) -> Result<()> {
        let mut e = err_buf();
        // SAFETY: live node.
        let st = unsafe { sys::hms_node_start(self.ptr(), &mut e) };
        check(st, &e)
    }

    /// Asks the serving loop to return (joins the background thread of [`Node::start`]).
    pub fn stop(&self) {
        // SAFETY: "Safe from any thread and from handlers; never blocks."
        unsafe { sys::hms_node_stop(self.ptr()) }
    }

    /// Connects to the newest live `service` whose version satisfies `version_req` ("^1", "*", ...).
    pub fn connect(&self, service: &str, version_req: &str) -> Result<Client<'_>> {
        self.connect_with(service, version_req, &ConnectOptions::default())
    }

    /// [`Node::connect`] with options.
    pub fn connect_with(&self, service: &str, version_req: &str, opts: &ConnectOptions) -> Result<Client<'_>> {
        let s = cstring("service name", service)?;
        let v = cstring("version requirement", version_req)?;
        // SAFETY: plain data filled by init.
        let mut o: sys::hms_connect_options_t = unsafe { MaybeUninit::zeroed().assume_init() };
        unsafe { sys::hms_connect_options_init(&mut o) };
        o.timeout_ns = opts.handshake_timeout.map_or(-1, |d| timeout_ns(Some(d)));
        o.spin_ns = opts.spin.map_or(-1, |d| timeout_ns(Some(d)));
        o.ring_bytes = opts.ring_bytes;
        let mut out = ptr::null_mut();
        let mut e = err_buf();
        // SAFETY: live node, valid strings and options, locals for out/err.
        let st = unsafe { sys::hms_connect(self.ptr(), s.as_ptr(), v.as_ptr(), &o, &mut out, &mut e) };
        check(st, &e)?;
        let raw = NonNull::new(out).ok_or_else(|| Error::new(Code::Internal, "hms_connect returned no client"))?;
        Ok(Client { raw, _node: PhantomData })
    }

    /// Opens a publisher on `topic` with default options.
    pub fn publisher(&self, topic: &str) -> Result<Publisher<'_>> {
        self.publisher_with(topic, &PublisherOptions::default())
    }

    /// Opens a publisher on `topic`.
    pub fn publisher_with(&self, topic: &str, opts: &PublisherOptions) -> Result<Publisher<'_>> {
        let t = cstring("topic", topic)?;
        // SAFETY: plain data filled by init.
        let mut o: sys::hms_publisher_options_t = unsafe { MaybeUninit::zeroed().assume_init() };
        unsafe { sys::hms_publisher_options_init(&mut o) };
        if opts.block {
            o.flags |= sys::HMS_PUBLISHER_BLOCK;
        }
        o.capacity = opts.capacity;
        o.max_subscribers = opts.max_subscribers;
        o.ring_bytes = opts.ring_bytes;
        let mut out = ptr::null_mut();
        let mut e = err_buf();
        // SAFETY: live node, valid strings and options.
        let st = unsafe { sys::hms_publisher_open(self.ptr(), t.as_ptr(), &o, &mut out, &mut e) };
        check(st, &e)?;
        let raw = NonNull::new(out).ok_or_else(|| Error::new(Code::Internal, "hms_publisher_open returned nothing"))?;
        Ok(Publisher { raw, _node: PhantomData })
    }

    /// Subscribes to an exact topic or a glob pattern ("order.*").
    pub fn subscribe(&self, pattern: &str) -> Result<Subscription<'_>> {
        self.subscribe_with(pattern, &SubscribeOptions::default())
    }

    /// Subscribes with options.
    pub fn subscribe_with(&self, pattern: &str, opts: &SubscribeOptions) -> Result<Subscription<'_>> {
        let p = cstring("topic pattern", pattern)?;
        // SAFETY: plain data filled by init.
        let mut o: sys::hms_subscribe_options_t = unsafe { MaybeUninit::zeroed().assume_init() };
        unsafe { sys::hms_subscribe_options_init(&mut o) };
        if opts.keep_waiting {
            o.flags |= sys::HMS_SUBSCRIBE_KEEP_WAITING;
        }
        if let Some(t) = opts.handshake_timeout {
            o.handshake_timeout_ns = timeout_ns(Some(t));
        }
        let mut out = ptr::null_mut();
        let mut e = err_buf();
        // SAFETY: live node, valid strings and options.
        let st = unsafe { sys::hms_subscribe(self.ptr(), p.as_ptr(), &o, &mut out, &mut e) };
        check(st, &e)?;
        let raw = NonNull::new(out).ok_or_else(|| Error::new(Code::Internal, "hms_subscribe returned nothing"))?;
        Ok(Subscription { raw, _node: PhantomData })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SAFETY: we own the node; borrowed handles are gone (lifetimes), no thread serves it
        // except hms_node_start's, which close joins. Handlers are freed only afterwards.
        unsafe { sys::hms_node_close(self.ptr()) };
        self.handlers.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.batch_handlers.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_termination(_sig: c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

extern "C" {
    // libc's signal(2); glibc gives it BSD semantics (the handler stays installed).
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
}

fn install_termination_handlers() {
    const SIGINT: c_int = 2;
    const SIGTERM: c_int = 15;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        signal(SIGINT, on_termination);
        signal(SIGTERM, on_termination);
    }
}

/// True once SIGINT or SIGTERM arrived while [`Node::serve_until_signal`] was installed.
pub fn termination_requested() -> bool {
    TERMINATE.load(Ordering::SeqCst)
}

// ------------------------------------------------------------------ services and handlers

/// A service of a node (owned by the node, valid while it is open).
pub struct Service<'n> {
    raw: NonNull<sys::hms_service_t>,
    node: &'n Node,
}

impl Service<'_> {
    /// Adds a function served by a Rust closure (run on the serving thread).
    ///
    /// The closure reads the request with [`Call::request`], answers with [`Call::reply`] (nothing =
    /// an empty reply) or returns `Err(error)`, which the caller receives with its code and
    /// message. A panic is caught and becomes an `INTERNAL` error reply; the node keeps serving.
    pub fn function<F>(&self, name: &str, f: F) -> Result<()>
    where
        F: FnMut(&mut Call<'_>) -> Result<()> + Send + 'static,
    {
        self.function_with_flags(name, sys::HMS_FN_DEFAULT, f)
    }

    /// Adds a server-streaming function: the closure sends items with [`Call::send`].
    pub fn stream_function<F>(&self, name: &str, f: F) -> Result<()>
    where
        F: FnMut(&mut Call<'_>) -> Result<()> + Send + 'static,
    {
        self.function_with_flags(name, sys::HMS_FN_STREAM, f)
    }

    /// Adds a function with `HMS_FN_*` flags.
    pub fn function_with_flags<F>(&self, name: &str, flags: u32, f: F) -> Result<()>
    where
        F: FnMut(&mut Call<'_>) -> Result<()> + Send + 'static,
    {
        self.add_function(name, flags, false, Box::new(f))
    }

    /// Adds a function whose handler reads its request IN PLACE: [`Call::request`] is the
    /// library's memory itself — for a request larger than the ring's inline limit, the sender's
    /// arena block, mapped read-only — with no copy. Decode it with [`ArrowData::decode`] or
    /// [`NdArray::decode`] inside the handler (the borrow checker keeps the results inside the call),
    /// or keep it past the handler with [`Call::take_request`]. Caveat: the sender keeps a writable
    /// mapping, so a hostile sender can change the bytes while the handler reads them (validated
    /// structure stays validated: the decoders copy what they check).
    pub fn function_in_place<F>(&self, name: &str, f: F) -> Result<()>
    where
        F: FnMut(&mut Call<'_>) -> Result<()> + Send + 'static,
    {
        self.add_function(name, sys::HMS_FN_DEFAULT, true, Box::new(f))
    }

    fn add_function(&self, name: &str, flags: u32, in_place: bool, f: Box<HandlerFn>) -> Result<()> {
        let n = cstring("function name", name)?;
        let mut slot = Box::new(HandlerSlot { f, scratch: Vec::new(), name: name.to_string(), in_place });
        let ud = &mut *slot as *mut HandlerSlot as *mut c_void;
        let mut handlers = self.node.handlers.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = err_buf();
        // SAFETY: the slot is boxed (stable address) and kept in the node until after
        // hms_node_close; the trampoline is the only user of `ud`, on the serving thread.
        let st = unsafe { sys::hms_function_add(self.raw.as_ptr(), n.as_ptr(), flags, Some(trampoline), ud, &mut e) };
        check(st, &e)?;
        handlers.push(slot);
        Ok(())
    }
}

type BatchFn = dyn FnMut(&Batch<'_>) + Send + 'static;

struct BatchSlot {
    f: Box<BatchFn>,
    name: String,
}

impl Service<'_> {
    /// Hands runs of consecutive one-way calls to function `name` to `f`, many at a time (the
    /// function must exist; its normal calls still go to its handler, in order with the runs).
    /// One-way calls have no reply, so errors and panics of `f` are only logged to stderr.
    pub fn batch_handler<F>(&self, name: &str, f: F) -> Result<()>
    where
        F: FnMut(&Batch<'_>) + Send + 'static,
    {
        let n = cstring("function name", name)?;
        let mut slot = Box::new(BatchSlot { f: Box::new(f), name: name.to_string() });
        let ud = &mut *slot as *mut BatchSlot as *mut c_void;
        let mut handlers = self.node.batch_handlers.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = err_buf();
        // SAFETY: as in function_with_flags: the boxed slot outlives hms_node_close.
        let st = unsafe {
            sys::hms_function_set_batch_handler(self.raw.as_ptr(), n.as_ptr(), Some(batch_trampoline), ud, &mut e)
        };
        check(st, &e)?;
        handlers.push(slot);
        Ok(())
    }
}

/// A run of one-way calls (private copies, valid while the batch handler runs).
pub struct Batch<'a> {
    raw: &'a sys::hms_batch_t,
    data: &'a [u8],
    offsets: &'a [u32],
    _not_send: PhantomData<*mut ()>,
}

impl<'a> Batch<'a> {
    /// Number of calls.
    pub fn len(&self) -> usize {
        self.raw.count
    }
    /// Never true (a run has at least one call).
    pub fn is_empty(&self) -> bool {
        self.raw.count == 0
    }
    /// Payload of call `i`.
    pub fn item(&self, i: usize) -> &'a [u8] {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
    /// The payloads in arrival order.
    pub fn items(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.len()).map(move |i| self.item(i))
    }
    /// Content type of call `i`.
    pub fn content_type(&self, i: usize) -> u32 {
        assert!(i < self.len(), "batch item {i} out of range ({} items)", self.len());
        // SAFETY: items has `count` entries for the duration of the handler.
        unsafe { (*self.raw.items.add(i)).content_type }
    }
    /// The caller's (pid, uid, gid), verified by the kernel.
    pub fn peer(&self) -> (i32, u32, u32) {
        (self.raw.peer_pid, self.raw.peer_uid, self.raw.peer_gid)
    }
}

unsafe extern "C" fn batch_trampoline(batch: *const sys::hms_batch_t, user_data: *mut c_void) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: user_data is our BatchSlot (serving thread only); batch, its offsets (count + 1)
        // and data (offsets[count] bytes) are private copies valid during this call.
        let slot = unsafe { &mut *(user_data as *mut BatchSlot) };
        let raw = unsafe { &*batch };
        let offsets = unsafe { std::slice::from_raw_parts(raw.offsets, raw.count + 1) };
        let total = offsets[raw.count] as usize;
        let data = if total == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(raw.data, total) } };
        let b = Batch { raw, data, offsets, _not_send: PhantomData };
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| (slot.f)(&b))) {
            eprintln!("hms-ffi: batch handler of '{}' panicked: {} (one-way calls: nobody to tell)", slot.name, panic_message(&*p));
        }
    }));
    if outcome.is_err() {
        eprintln!("hms-ffi: the Rust batch trampoline panicked");
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

fn set_error(call: *mut sys::hms_call_t, err: &Error) -> sys::hms_status_t {
    let code = match err.code() {
        Code::Ok => Code::Unknown, // a handler error must not read as success
        c => c,
    };
    let msg = CString::new(err.message().replace('\0', "\\0")).unwrap_or_default();
    let (details, ct) = err.details();
    // SAFETY: call is the running call; message and details are copied by the core.
    unsafe {
        sys::hms_call_set_error(call, code.as_i32(), msg.as_ptr(), details.as_ptr() as *const c_char, details.len(), ct)
    };
    code.as_i32()
}

unsafe extern "C" fn trampoline(
    call: *mut sys::hms_call_t,
    req: *const sys::hms_payload_t,
    user_data: *mut c_void,
) -> sys::hms_status_t {
    // Nothing may unwind into C: everything that can panic is inside catch_unwind.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: user_data is the HandlerSlot registered with this function; only the serving
        // thread (one at a time) runs handlers, so this &mut is unique.
        let slot = unsafe { &mut *(user_data as *mut HandlerSlot) };
        let HandlerSlot { f, scratch, name, in_place } = slot;
        scratch.clear();
        let mut content_type = sys::HMS_CT_NONE;
        let mut request: &[u8] = &[];
        if !req.is_null() && *in_place {
            // SAFETY: req and the bytes it describes (bounds-checked by the core; an arena block
            // mapped read-only, or the ring frame) stay valid until this trampoline returns, which
            // outlives the Call built below (its lifetime ends inside this closure).
            unsafe {
                let r = ptr::read_volatile(req);
                content_type = r.content_type;
                if !r.data.is_null() && r.len > 0 {
                    request = std::slice::from_raw_parts(r.data as *const u8, r.len);
                }
            }
        } else if !req.is_null() {
            // The request lives in shared memory a hostile peer may rewrite while we read it:
            // copy it once into our buffer so the handler sees stable bytes (one memcpy).
            // SAFETY: req is valid for the duration of the call; data/len describe mapped memory
            // that the core bounds-checked.
            unsafe {
                let r = ptr::read_volatile(req);
                content_type = r.content_type;
                if !r.data.is_null() && r.len > 0 {
                    scratch.extend_from_slice(std::slice::from_raw_parts(r.data as *const u8, r.len));
                }
            }
        }
        if !*in_place {
            request = scratch;
        }
        let mut c = Call { raw: call, request, content_type, _not_send: PhantomData };
        match catch_unwind(AssertUnwindSafe(|| f(&mut c))) {
            Ok(Ok(())) => sys::HMS_OK,
            Ok(Err(e)) => set_error(call, &e),
            Err(p) => set_error(
                call,
                &Error::new(Code::Internal, format!("handler of '{name}' panicked: {}", panic_message(&*p))),
            ),
        }
    }));
    outcome.unwrap_or_else(|_| {
        set_error(call, &Error::new(Code::Internal, "the Rust handler trampoline panicked"))
    })
}

/// The running call, inside a handler. Valid only while the handler runs (not `Send`).
pub struct Call<'a> {
    raw: *mut sys::hms_call_t,
    request: &'a [u8],
    content_type: u32,
    _not_send: PhantomData<*mut ()>,
}

impl<'a> Call<'a> {
    /// The request bytes: a private copy, stable while the handler runs — or, for a function added
    /// with [`Service::function_in_place`], the library's memory itself (no copy).
    pub fn request(&self) -> &'a [u8] {
        self.request
    }
    /// Keeps the request past the handler: the sender's arena block itself (no copy) when it came
    /// through the arena, else an aligned copy of the inline bytes. At most once per call
    /// (`FailedPrecondition` after that). The payload is `Send`: hand it to another thread and
    /// decode it there ([`ArrowData::decode`]`(payload.data())`).
    pub fn take_request(&mut self) -> Result<Payload> {
        let mut p = Payload { raw: empty_payload(), copy: None };
        let mut e = err_buf();
        // SAFETY: running call; p.raw is ours to fill and is released by Payload's Drop.
        let st = unsafe { sys::hms_call_take_request(self.raw, &mut p.raw, &mut e) };
        if st == sys::HMS_OK {
            return Ok(p);
        }
        // FAILED_PRECONDITION "arrived inline in the ring" is the one failure we answer with a copy.
        if st != sys::HMS_FAILED_PRECONDITION || !c_chars_to_string(&e.message).contains("inline") {
            return Err(to_error(st, &e));
        }
        // Came inline in the ring: copy it (it is valid only during the call).
        let mut words = vec![0u64; self.request.len().div_ceil(8)];
        bytemuck_bytes_mut(&mut words)[..self.request.len()].copy_from_slice(self.request);
        p.raw.content_type = self.content_type;
        p.copy = Some((words, self.request.len()));
        Ok(p)
    }
    /// The request's content type (`HMS_CT_*`).
    pub fn content_type(&self) -> u32 {
        self.content_type
    }
    /// Sends the reply (copied into the response ring). At most once per call.
    pub fn reply(&mut self, data: &[u8], content_type: u32) -> Result<()> {
        let mut e = err_buf();
        // SAFETY: running call, data valid for the call.
        let st = unsafe { sys::hms_call_reply(self.raw, data.as_ptr() as *const c_char, data.len(), content_type, &mut e) };
        check(st, &e)
    }
    /// Sends one item of a server stream; blocks while the caller's ring is full.
    /// `Err(Cancelled)` when the caller cancelled, went away or its deadline passed: stop producing.
    pub fn send(&mut self, data: &[u8], content_type: u32) -> Result<()> {
        let mut e = err_buf();
        // SAFETY: running call, data valid for the call.
        let st = unsafe { sys::hms_call_send(self.raw, data.as_ptr() as *const c_char, data.len(), content_type, &mut e) };
        check(st, &e)
    }
    /// Receives the next item of a client stream: `Ok(None)` once the caller finished sending.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Payload>> {
        let mut item = Payload { raw: empty_payload(), copy: None };
        let mut end: c_int = 0;
        let mut e = err_buf();
        // SAFETY: running call; item/end/err are locals; the item is a private copy.
        let st = unsafe { sys::hms_call_recv(self.raw, &mut item.raw, &mut end, timeout_ns(timeout), &mut e) };
        check(st, &e)?;
        Ok(if end != 0 { None } else { Some(item) })
    }
    /// True when the caller opened this call as a stream.
    pub fn is_stream(&self) -> bool {
        // SAFETY: running call.
        unsafe { sys::hms_call_is_stream(self.raw) != 0 }
    }
    /// True once the caller cancelled the call (cheap: poll it in long handlers).
    pub fn is_cancelled(&self) -> bool {
        // SAFETY: running call.
        unsafe { sys::hms_call_is_cancelled(self.raw) != 0 }
    }
    /// True for a one-way call (its reply is discarded).
    pub fn is_oneway(&self) -> bool {
        // SAFETY: running call.
        unsafe { sys::hms_call_is_oneway(self.raw) != 0 }
    }
    /// Time left until the caller's deadline: `None` without a deadline, `Some(ZERO)` once passed.
    pub fn time_left(&self) -> Option<Duration> {
        // SAFETY: running call.
        let ns = unsafe { sys::hms_call_time_left_ns(self.raw) };
        if ns == i64::MAX {
            None
        } else {
            Some(Duration::from_nanos(ns.max(0) as u64))
        }
    }
    /// The caller's (pid, uid, gid) as verified by the kernel.
    pub fn peer(&self) -> (i32, u32, u32) {
        let (mut pid, mut uid, mut gid) = (0, 0, 0);
        // SAFETY: running call, locals.
        unsafe { sys::hms_call_peer(self.raw, &mut pid, &mut uid, &mut gid) };
        (pid, uid, gid)
    }
    /// The call id.
    pub fn id(&self) -> u64 {
        // SAFETY: running call.
        unsafe { sys::hms_call_id(self.raw) }
    }
    /// The function's name.
    pub fn function_name(&self) -> String {
        // SAFETY: valid during the call, copied.
        owned_str(unsafe { sys::hms_call_function_name(self.raw) })
    }
    /// The service's name.
    pub fn service_name(&self) -> String {
        // SAFETY: valid during the call, copied.
        owned_str(unsafe { sys::hms_call_service_name(self.raw) })
    }
}

// ------------------------------------------------------------------ clients

/// Options for [`Node::connect_with`].
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Handshake timeout; `None` = default (5 s).
    pub handshake_timeout: Option<Duration>,
    /// Busy-wait budget while waiting for replies; `None` = the node's.
    pub spin: Option<Duration>,
    /// Requested per-direction ring size (power of two); 0 = the server's choice.
    pub ring_bytes: u64,
}

/// A connection to a service. Close it (drop) before its node (the borrow makes sure).
pub struct Client<'n> {
    raw: NonNull<sys::hms_client_t>,
    _node: PhantomData<&'n Node>,
}

// SAFETY (Send): a client is not tied to a thread. (Sync): hms_call's Thread-safety line: "any
// number of threads may call concurrently on one client; replies are matched by call id"; the
// other &self methods read the immutable function table. hms_client_close ("pending calls on
// other threads must have returned") only runs in Drop, which needs ownership.
unsafe impl Send for Client<'_> {}
unsafe impl Sync for Client<'_> {}

impl<'n> Client<'n> {
    fn ptr(&self) -> *mut sys::hms_client_t {
        self.raw.as_ptr()
    }

    /// The id of function `name` (from the table received at connect).
    pub fn function_id(&self, name: &str) -> Result<u32> {
        let n = cstring("function name", name)?;
        let mut id = 0;
        let mut e = err_buf();
        // SAFETY: live client, locals.
        let st = unsafe { sys::hms_client_function_id(self.ptr(), n.as_ptr(), &mut id, &mut e) };
        check(st, &e)?;
        Ok(id)
    }

    /// The function table: (name, id, flags).
    pub fn functions(&self) -> Vec<(String, u32, u32)> {
        // SAFETY: live client; names valid until close, copied at once.
        let n = unsafe { sys::hms_client_function_count(self.ptr()) };
        (0..n)
            .filter_map(|i| {
                let (mut name, mut id, mut flags) = (ptr::null(), 0, 0);
                let st = unsafe { sys::hms_client_function_at(self.ptr(), i, &mut name, &mut id, &mut flags) };
                (st == sys::HMS_OK).then(|| (owned_str(name), id, flags))
            })
            .collect()
    }

    /// The service name as connected.
    pub fn service_name(&self) -> String {
        // SAFETY: valid until close, copied.
        owned_str(unsafe { sys::hms_client_service_name(self.ptr()) })
    }
    /// The service version as connected.
    pub fn service_version(&self) -> String {
        // SAFETY: valid until close, copied.
        owned_str(unsafe { sys::hms_client_service_version(self.ptr()) })
    }
    /// The server's pid.
    pub fn server_pid(&self) -> i32 {
        // SAFETY: live client.
        unsafe { sys::hms_client_server_pid(self.ptr()) }
    }
    /// The largest payload one call can carry on this connection.
    pub fn max_message(&self) -> usize {
        // SAFETY: live client.
        unsafe { sys::hms_client_max_message(self.ptr()) }
    }

    /// Calls function `fn_id` with `data` and waits up to `timeout` (`None` = forever).
    /// A remote error carries the peer's code, message and details.
    pub fn call_id(&self, fn_id: u32, data: &[u8], content_type: u32, timeout: Option<Duration>) -> Result<Payload> {
        let mut resp = Payload { raw: empty_payload(), copy: None };
        let mut e = err_buf();
        // SAFETY: live client; data valid for the call; resp is always left valid (released in
        // Payload's Drop in every case).
        let st = unsafe {
            sys::hms_call_bytes(
                self.ptr(),
                fn_id,
                data.as_ptr() as *const c_char,
                data.len(),
                content_type,
                &mut resp.raw,
                timeout_ns(timeout),
                &mut e,
            )
        };
        if st == sys::HMS_OK {
            Ok(resp)
        } else {
            Err(call_error(st, &e, resp))
        }
    }

    /// Sends a one-way call to `fn_id`: the handler (or batch handler) runs, nothing comes back.
    pub fn send_oneway(&self, fn_id: u32, data: &[u8], content_type: u32) -> Result<()> {
        let mut call_id = 0;
        let mut e = err_buf();
        // SAFETY: live client, data valid for the call (copied into the ring), no callback.
        let st = unsafe {
            sys::hms_call_submit(
                self.ptr(),
                fn_id,
                data.as_ptr() as *const c_char,
                data.len(),
                content_type,
                sys::HMS_CALL_ONEWAY,
                -1,
                None,
                ptr::null_mut(),
                &mut call_id,
                &mut e,
            )
        };
        check(st, &e)
    }

    /// Calls function `name` (looked up in the table each time; keep [`Client::function_id`] for
    /// hot loops).
    pub fn call(&self, name: &str, data: &[u8], content_type: u32, timeout: Option<Duration>) -> Result<Payload> {
        let id = self.function_id(name)?;
        self.call_id(id, data, content_type, timeout)
    }

    /// Opens a server stream on function `name`: the handler's items arrive through
    /// [`Stream::next_item`] / the iterator. `timeout` bounds the whole stream.
    pub fn stream(&self, name: &str, data: &[u8], content_type: u32, timeout: Option<Duration>) -> Result<Stream<'_>> {
        let id = self.function_id(name)?;
        let mut out = ptr::null_mut();
        let mut e = err_buf();
        // SAFETY: live client, data valid for the call, locals.
        let st = unsafe {
            sys::hms_stream_open(
                self.ptr(),
                id,
                data.as_ptr() as *const c_char,
                data.len(),
                content_type,
                sys::HMS_STREAM_SERVER,
                timeout_ns(timeout),
                &mut out,
                &mut e,
            )
        };
        check(st, &e)?;
        let raw = NonNull::new(out).ok_or_else(|| Error::new(Code::Internal, "hms_stream_open returned no stream"))?;
        Ok(Stream { raw, done: false, _client: PhantomData })
    }
}

impl Drop for Client<'_> {
    fn drop(&mut self) {
        // SAFETY: we own it; no call is pending (they borrow &self); streams borrow it too.
        unsafe { sys::hms_client_close(self.ptr()) }
    }
}

/// A server stream being consumed; an iterator of `Result<Payload>` that ends after the last
/// item (or after the error that ended the stream). Dropping it cancels an unfinished stream.
pub struct Stream<'c> {
    raw: NonNull<sys::hms_stream_t>,
    done: bool,
    _client: PhantomData<&'c ()>,
}

// SAFETY (Send): hms_stream_t's Thread-safety line: "one thread at a time per stream; other threads
// may use the client meanwhile". Not Sync: next/cancel take &mut self.
unsafe impl Send for Stream<'_> {}

impl Stream<'_> {
    /// Waits up to `timeout` (`None` = until the stream's deadline) for the next item.
    /// `Ok(None)` once the stream ended normally. A per-call timeout that expires is
    /// `Err(DeadlineExceeded)` with the stream still usable.
    pub fn next_item(&mut self, timeout: Option<Duration>) -> Result<Option<Payload>> {
        if self.done {
            return Ok(None);
        }
        let mut item = Payload { raw: empty_payload(), copy: None };
        let mut end: c_int = 0;
        let mut e = err_buf();
        // SAFETY: live stream used by one thread (&mut self); locals.
        let st = unsafe { sys::hms_stream_next(self.raw.as_ptr(), &mut item.raw, &mut end, timeout_ns(timeout), &mut e) };
        if st != sys::HMS_OK {
            if !(st == sys::HMS_DEADLINE_EXCEEDED && timeout.is_some()) {
                self.done = true;
            }
            return Err(call_error(st, &e, item));
        }
        if end != 0 {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(item))
    }

    /// Asks the server to stop producing.
    pub fn cancel(&mut self) {
        // SAFETY: live stream.
        unsafe { sys::hms_stream_cancel(self.raw.as_ptr()) }
    }
}

impl Iterator for Stream<'_> {
    type Item = Result<Payload>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_item(None).transpose()
    }
}

impl Drop for Stream<'_> {
    fn drop(&mut self) {
        // SAFETY: we own it; close cancels an unfinished stream.
        unsafe { sys::hms_stream_close(self.raw.as_ptr()) }
    }
}

// ------------------------------------------------------------------ topics

/// Options for [`Node::publisher_with`]; zeros mean the library's defaults.
#[derive(Debug, Clone, Default)]
pub struct PublisherOptions {
    /// Wait for lagging subscribers instead of overwriting what they have not read.
    pub block: bool,
    /// Messages kept (rounded up to a power of two); 0 = default (1024).
    pub capacity: u32,
    /// 0 = default (64).
    pub max_subscribers: u32,
    /// Payload bytes kept (power of two); 0 = default (1 MiB); max message = ring_bytes / 4.
    pub ring_bytes: u64,
}

/// A publisher on one topic. Close it (drop) before its node.
pub struct Publisher<'n> {
    raw: NonNull<sys::hms_publisher_t>,
    _node: PhantomData<&'n Node>,
}

// SAFETY (Send, Sync): hms_publish's Thread-safety line: "any thread; concurrent publishes on one
// publisher are serialized"; the getters read counters. hms_publisher_close ("not concurrently with
// hms_publish()") only runs in Drop, which needs ownership.
unsafe impl Send for Publisher<'_> {}
unsafe impl Sync for Publisher<'_> {}

impl Publisher<'_> {
    /// Publishes one message; returns its sequence number.
    pub fn publish(&self, data: &[u8], content_type: u32) -> Result<u64> {
        self.publish_with(data, content_type, sys::HMS_MSG_DEFAULT, None)
    }

    /// Publishes with `HMS_MSG_*` flags; a blocking publisher waits up to `timeout` for laggards.
    pub fn publish_with(&self, data: &[u8], content_type: u32, flags: u32, timeout: Option<Duration>) -> Result<u64> {
        let mut seq = 0;
        let mut e = err_buf();
        // SAFETY: live publisher; data valid for the call (copied into the ring).
        let st = unsafe {
            sys::hms_publish(
                self.raw.as_ptr(),
                data.as_ptr() as *const c_char,
                data.len(),
                content_type,
                flags,
                timeout_ns(timeout),
                &mut seq,
                &mut e,
            )
        };
        check(st, &e)?;
        Ok(seq)
    }
    /// The topic.
    pub fn topic(&self) -> String {
        // SAFETY: valid until close, copied.
        owned_str(unsafe { sys::hms_publisher_topic(self.raw.as_ptr()) })
    }
    /// Subscribers connected now.
    pub fn subscriber_count(&self) -> u32 {
        // SAFETY: live publisher.
        unsafe { sys::hms_publisher_subscriber_count(self.raw.as_ptr()) }
    }
    /// Messages the ring keeps.
    pub fn capacity(&self) -> u32 {
        // SAFETY: live publisher.
        unsafe { sys::hms_publisher_capacity(self.raw.as_ptr()) }
    }
    /// The largest payload accepted.
    pub fn max_message(&self) -> usize {
        // SAFETY: live publisher.
        unsafe { sys::hms_publisher_max_message(self.raw.as_ptr()) }
    }
    /// The last sequence number published (0 = none).
    pub fn last_seq(&self) -> u64 {
        // SAFETY: live publisher.
        unsafe { sys::hms_publisher_last_seq(self.raw.as_ptr()) }
    }
}

impl Drop for Publisher<'_> {
    fn drop(&mut self) {
        // SAFETY: we own it; no publish is running (they borrow &self).
        unsafe { sys::hms_publisher_close(self.raw.as_ptr()) }
    }
}

/// Options for [`Node::subscribe_with`].
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// An exact topic whose publishers all went away keeps waiting instead of UNAVAILABLE.
    pub keep_waiting: bool,
    /// Per publisher; `None` = default (1 s).
    pub handshake_timeout: Option<Duration>,
}

/// A subscription to a topic or pattern. Close it (drop) before its node.
pub struct Subscription<'n> {
    raw: NonNull<sys::hms_subscription_t>,
    _node: PhantomData<&'n Node>,
}

// SAFETY (Send, Sync): hms_subscription_recv's Thread-safety line: "one thread at a time per
// subscription (calls are serialized)" — the core takes the subscription's mutex, so concurrent
// &self calls wait for each other; hms_subscription_interrupt is "safe from any thread".
// hms_subscription_close ("not concurrently with hms_subscription_recv()") only runs in Drop.
unsafe impl Send for Subscription<'_> {}
unsafe impl Sync for Subscription<'_> {}

impl Subscription<'_> {
    /// Waits up to `timeout` (`None` = no limit) for the next message; `Ok(None)` when nothing
    /// arrived in time. `Err(Unavailable)` when an exact topic's publishers all went away;
    /// `Err(Cancelled)` after [`Subscription::interrupt`].
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Option<Message>> {
        // SAFETY: hms_message_t is plain data; all-zero is "empty" (release = NULL).
        let mut m = Message { raw: unsafe { MaybeUninit::zeroed().assume_init() } };
        let mut e = err_buf();
        // SAFETY: live subscription; the core serializes concurrent recv calls.
        let st = unsafe { sys::hms_subscription_recv(self.raw.as_ptr(), &mut m.raw, timeout_ns(timeout), &mut e) };
        if st == sys::HMS_DEADLINE_EXCEEDED {
            return Ok(None);
        }
        check(st, &e)?;
        Ok(Some(m))
    }
    /// Makes a blocked (or the next) [`Subscription::recv`] return `Err(Cancelled)`.
    pub fn interrupt(&self) {
        // SAFETY: "Safe from any thread and from signal handlers."
        unsafe { sys::hms_subscription_interrupt(self.raw.as_ptr()) }
    }
    /// The pattern.
    pub fn pattern(&self) -> String {
        // SAFETY: valid until close, copied.
        owned_str(unsafe { sys::hms_subscription_pattern(self.raw.as_ptr()) })
    }
    /// Publishers connected now.
    pub fn publisher_count(&self) -> u32 {
        // SAFETY: live subscription.
        unsafe { sys::hms_subscription_publisher_count(self.raw.as_ptr()) }
    }
    /// Messages missed so far.
    pub fn missed(&self) -> u64 {
        // SAFETY: live subscription.
        unsafe { sys::hms_subscription_missed(self.raw.as_ptr()) }
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        // SAFETY: we own it; no recv is running (they borrow &self).
        unsafe { sys::hms_subscription_close(self.raw.as_ptr()) }
    }
}

/// A received message (a private copy; released on drop).
pub struct Message {
    raw: sys::hms_message_t,
}

// SAFETY (Send, Sync): hms_message_t's Ownership line: "the payload is a private copy: it stays
// valid after the subscription closes and may be released by any thread"; it is not written after
// it is filled.
unsafe impl Send for Message {}
unsafe impl Sync for Message {}

impl Message {
    /// The topic it was published on.
    pub fn topic(&self) -> String {
        c_chars_to_string(&self.raw.topic)
    }
    /// The payload bytes.
    pub fn data(&self) -> &[u8] {
        let p = &self.raw.payload;
        if p.data.is_null() || p.len == 0 {
            return &[];
        }
        // SAFETY: a private allocation until hms_message_release (Drop).
        unsafe { std::slice::from_raw_parts(p.data as *const u8, p.len) }
    }
    /// The content type.
    pub fn content_type(&self) -> u32 {
        self.raw.payload.content_type
    }
    /// This publisher's sequence number (from 1).
    pub fn seq(&self) -> u64 {
        self.raw.seq
    }
    /// Messages of this publisher lost just before this one.
    pub fn missed(&self) -> u64 {
        self.raw.missed
    }
    /// The publisher's pid (verified by the kernel).
    pub fn publisher_pid(&self) -> i32 {
        self.raw.publisher_pid
    }
    /// Distinguishes publishers.
    pub fn publisher_id(&self) -> u64 {
        self.raw.publisher_id
    }
    /// `HMS_MSG_*` flags.
    pub fn flags(&self) -> u32 {
        self.raw.flags
    }
    /// CLOCK_MONOTONIC at publish, in nanoseconds.
    pub fn publish_time_ns(&self) -> i64 {
        self.raw.publish_time_ns
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        // SAFETY: released once; released messages are no-ops.
        unsafe { sys::hms_message_release(&mut self.raw) }
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Message({} seq {} {} bytes)", self.topic(), self.seq(), self.data().len())
    }
}

/// True when `version` satisfies `requirement` ("^1.2", ">=1.0", ...); `None` if either does not
/// parse.
pub fn version_matches(version: &str, requirement: &str) -> Option<bool> {
    let v = CString::new(version).ok()?;
    let r = CString::new(requirement).ok()?;
    // SAFETY: two valid C strings.
    match unsafe { sys::hms_version_matches(v.as_ptr(), r.as_ptr()) } {
        1 => Some(true),
        0 => Some(false),
        _ => None,
    }
}

/// The default runtime directory of this process.
pub fn default_runtime_dir() -> Result<PathBuf> {
    let mut buf = vec![0 as c_char; 4096];
    let mut e = err_buf();
    // SAFETY: buf has the capacity we pass.
    let st = unsafe { sys::hms_default_runtime_dir(buf.as_mut_ptr(), buf.len(), &mut e) };
    check(st, &e)?;
    Ok(PathBuf::from(c_chars_to_string(&buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_agree_with_the_core() {
        for c in Code::ALL {
            assert_eq!(status_name(c.as_i32()), c.name());
        }
        assert_eq!(status_name(99), "UNRECOGNIZED_STATUS");
    }

    #[test]
    fn abi_mismatch_names_both_versions() {
        assert!(check_abi(1, 1).is_ok());
        let e = check_abi(7, 1).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("ABI version 7") && e.message().contains("ABI version 1"), "{e}");
        assert_eq!(abi_version(), sys::HMS_FFI_ABI_VERSION);
    }

    #[test]
    fn version_requirements() {
        assert_eq!(version_matches("1.2.3", "^1"), Some(true));
        assert_eq!(version_matches("2.0.0", "^1"), Some(false));
        assert_eq!(version_matches("x", "^1"), None);
    }
}

// ------------------------------------------------------------------ Arrow and ndarray, in place

/// The bytes of a `u64` buffer (an aligned home for copies).
fn bytemuck_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: u8 has no alignment or validity requirements; the length is in bounds.
    unsafe { std::slice::from_raw_parts(words.as_ptr() as *const u8, words.len() * 8) }
}

fn bytemuck_bytes_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: as above, and the borrow is unique.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, words.len() * 8) }
}

mod sealed {
    pub trait Sealed {}
}

/// Plain fixed-width numbers that any bit pattern is a valid value of (so shared memory, which a
/// writer may change, can be viewed as a slice of them).
pub trait Primitive: sealed::Sealed + Copy + 'static {
    /// The Arrow C Data Interface format of the type ("g" for f64, "l" for i64, ...).
    const ARROW_FORMAT: &'static str;
    /// The numpy type without byte order ("f8", "i8", ...).
    const NUMPY: &'static str;
}

macro_rules! primitive {
    ($($t:ty => $arrow:literal, $np:literal;)*) => {$(
        impl sealed::Sealed for $t {}
        impl Primitive for $t {
            const ARROW_FORMAT: &'static str = $arrow;
            const NUMPY: &'static str = $np;
        }
    )*};
}
primitive! {
    i8 => "c", "i1"; u8 => "C", "u1"; i16 => "s", "i2"; u16 => "S", "u2"; i32 => "i", "i4"; u32 => "I", "u4";
    i64 => "l", "i8"; u64 => "L", "u8"; f32 => "f", "f4"; f64 => "g", "f8";
}

/// `bytes` as a slice of T: None when it is not aligned for T or its length is not a multiple.
pub(crate) fn cast_slice<T: Primitive>(bytes: &[u8]) -> Option<&[T]> {
    let size = std::mem::size_of::<T>();
    if bytes.as_ptr() as usize % std::mem::align_of::<T>() != 0 || bytes.len() % size != 0 {
        return None;
    }
    // SAFETY: aligned, in bounds, and every bit pattern is a valid T (Primitive is sealed to
    // plain integers and floats).
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / size) })
}

/// What an Arrow payload was made from (`HMS_ARROW_KIND_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrowKind {
    Unspecified,
    /// pyarrow.Array
    Array,
    /// pyarrow.ChunkedArray
    ChunkedArray,
    /// one struct array of columns
    RecordBatch,
    /// record batches of one schema (pyarrow.Table)
    Table,
}

/// One node of a decoded Arrow schema (owned copies of the strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrowField {
    pub name: String,
    /// The C Data Interface format string ("g" float64, "l" int64, "u" utf8, "+s" struct, ...).
    pub format: String,
    pub nullable: bool,
    pub children: Vec<ArrowField>,
    /// The value type of a dictionary-encoded field (`format` is then the index type).
    pub dictionary: Option<Box<ArrowField>>,
}

/// An Arrow validity bitmap (bit i set = row i valid), possibly starting mid-byte.
#[derive(Debug, Clone, Copy)]
pub struct Validity<'a> {
    bits: Option<&'a [u8]>,
    offset: usize,
    len: usize,
}

impl<'a> Validity<'a> {
    /// True when the column has no validity buffer (no nulls).
    pub fn all_valid(&self) -> bool {
        self.bits.is_none()
    }
    /// Whether row i holds a value.
    pub fn is_valid(&self, i: usize) -> bool {
        assert!(i < self.len, "row {i} out of range ({} rows)", self.len);
        match self.bits {
            None => true,
            Some(b) => {
                let j = self.offset + i;
                b[j >> 3] >> (j & 7) & 1 != 0
            }
        }
    }
    /// Number of null rows.
    pub fn null_count(&self) -> usize {
        match self.bits {
            None => 0,
            Some(_) => (0..self.len).filter(|&i| !self.is_valid(i)).count(),
        }
    }
    /// The raw bitmap (in place) and the bit offset of row 0.
    pub fn raw(&self) -> Option<(&'a [u8], usize)> {
        self.bits.map(|b| (b, self.offset))
    }
}

/// An Arrow payload (`HMS_CT_ARROW`: a pyarrow Array, ChunkedArray, RecordBatch or Table from any
/// binding) decoded IN PLACE over `&'a [u8]`: `hms_arrow_decode` validates the whole layout first,
/// and column slices point into those bytes — for an in-place request ([`Service::function_in_place`])
/// or a taken one ([`Call::take_request`]) the sender's arena block, with no copy. The lifetime `'a`
/// ties everything to the bytes: the compiler refuses to keep a column past its payload.
pub struct ArrowData<'a> {
    schema: Box<MaybeUninit<sys::ArrowSchema>>,
    arrays: Vec<MaybeUninit<sys::ArrowArray>>,
    n: usize,
    kind: ArrowKind,
    root: ArrowField,
    _src: PhantomData<&'a [u8]>,
}

// SAFETY (Send, Sync): hms_arrow_decode's Thread-safety line: "any thread; the filled structs may be
// released from any threads". The structs are only read after decoding (no interior mutability),
// and the bytes they point to are borrowed immutably for 'a.
unsafe impl Send for ArrowData<'_> {}
unsafe impl Sync for ArrowData<'_> {}

fn arrow_field(s: &sys::ArrowSchema, depth: u32) -> ArrowField {
    // SAFETY: format/name are NUL-terminated private copies the decoder made (valid until release);
    // children/dictionary are valid struct pointers, n_children of them.
    unsafe {
        let mut f = ArrowField {
            name: owned_str(s.name),
            format: owned_str(s.format),
            nullable: s.flags & sys::ARROW_FLAG_NULLABLE != 0,
            children: Vec::new(),
            dictionary: None,
        };
        if depth > sys::HMS_ARROW_MAX_DEPTH {
            return f;
        }
        if s.n_children > 0 && !s.children.is_null() {
            let kids = std::slice::from_raw_parts(s.children, s.n_children as usize);
            f.children = kids.iter().map(|&k| arrow_field(&*k, depth + 1)).collect();
        }
        if !s.dictionary.is_null() {
            f.dictionary = Some(Box::new(arrow_field(&*s.dictionary, depth + 1)));
        }
        f
    }
}

fn invalid(msg: String) -> Error {
    Error::new(Code::InvalidArgument, msg)
}

impl<'a> ArrowData<'a> {
    /// Validates and decodes an Arrow layout without copying its data. `src` must be 8-byte aligned
    /// (arena blocks and [`Call::take_request`] copies are). Errors: `InvalidArgument` for anything
    /// that is not a valid layout (nothing is read before it is validated), `ResourceExhausted`
    /// when the structs cannot be allocated.
    pub fn decode(src: &'a [u8]) -> Result<ArrowData<'a>> {
        if src.len() < sys::HMS_ARROW_HEADER_BYTES as usize {
            return Err(invalid(format!(
                "{} bytes cannot hold an Arrow layout (the header alone is {})",
                src.len(),
                sys::HMS_ARROW_HEADER_BYTES
            )));
        }
        if src.as_ptr() as usize % 8 != 0 {
            return Err(invalid("the Arrow layout is not 8-byte aligned: copy it into an aligned buffer".into()));
        }
        let (mut kind, mut count) = (0u32, 0usize);
        let mut e = err_buf();
        // SAFETY: src is a live slice; the outputs are locals.
        check(unsafe { sys::hms_arrow_peek(src.as_ptr(), src.len(), &mut kind, &mut count, &mut e) }, &e)?;
        if count > sys::HMS_ARROW_MAX_NODES as usize {
            return Err(invalid(format!("the layout claims {count} arrays (at most {} nodes)", sys::HMS_ARROW_MAX_NODES)));
        }
        let mut schema: Box<MaybeUninit<sys::ArrowSchema>> = Box::new(MaybeUninit::zeroed());
        let mut arrays: Vec<MaybeUninit<sys::ArrowArray>> = Vec::new();
        arrays.try_reserve_exact(count.max(1)).map_err(|_| {
            Error::new(Code::ResourceExhausted, format!("cannot allocate {count} Arrow array structs"))
        })?;
        arrays.resize_with(count.max(1), MaybeUninit::zeroed);
        let mut got = 0usize;
        // SAFETY: src outlives the structs (PhantomData<'a>); the outputs have room for `count`
        // arrays; on failure nothing is filled.
        let st = unsafe {
            sys::hms_arrow_decode(
                src.as_ptr(),
                src.len(),
                None,
                ptr::null_mut(),
                schema.as_mut_ptr(),
                arrays.as_mut_ptr() as *mut sys::ArrowArray,
                count,
                &mut got,
                &mut e,
            )
        };
        check(st, &e)?;
        // SAFETY: filled by the successful decode.
        let root = arrow_field(unsafe { schema.assume_init_ref() }, 0);
        let kind = match kind {
            sys::HMS_ARROW_KIND_ARRAY => ArrowKind::Array,
            sys::HMS_ARROW_KIND_CHUNKED_ARRAY => ArrowKind::ChunkedArray,
            sys::HMS_ARROW_KIND_RECORD_BATCH => ArrowKind::RecordBatch,
            sys::HMS_ARROW_KIND_TABLE => ArrowKind::Table,
            _ => ArrowKind::Unspecified,
        };
        let data = ArrowData { schema, arrays, n: got, kind, root, _src: PhantomData };
        if matches!(kind, ArrowKind::RecordBatch | ArrowKind::Table) && data.root.format != "+s" {
            return Err(invalid(format!("a {kind:?} needs a struct schema, the layout has format {:?}", data.root.format)));
        }
        Ok(data)
    }

    /// What the sender encoded.
    pub fn kind(&self) -> ArrowKind {
        self.kind
    }
    /// The schema's root (a struct whose children are the columns for a Table or RecordBatch).
    pub fn schema(&self) -> &ArrowField {
        &self.root
    }
    /// The columns: the root's children for a Table or RecordBatch, else the root itself.
    pub fn fields(&self) -> &[ArrowField] {
        match self.kind {
            ArrowKind::Table | ArrowKind::RecordBatch => &self.root.children,
            _ => std::slice::from_ref(&self.root),
        }
    }
    /// The index of the column called `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.fields().iter().position(|f| f.name == name)
    }
    /// Record batches of a Table, chunks of a ChunkedArray, 1 for a RecordBatch or an Array.
    pub fn num_batches(&self) -> usize {
        self.n
    }
    fn array(&self, i: usize) -> &sys::ArrowArray {
        // SAFETY: i < n, filled by the decode.
        unsafe { self.arrays[i].assume_init_ref() }
    }
    /// Rows over all batches.
    pub fn num_rows(&self) -> i64 {
        (0..self.n).map(|i| self.array(i).length).sum()
    }

    /// Column `col` of batch `batch`: the array, the first element it uses, the row count.
    fn column(&self, batch: usize, col: usize) -> Result<(&sys::ArrowArray, usize, usize, &ArrowField)> {
        if batch >= self.n {
            return Err(Error::new(Code::OutOfRange, format!("batch {batch} does not exist (the payload has {})", self.n)));
        }
        let fields = self.fields();
        let f = fields.get(col).ok_or_else(|| {
            Error::new(Code::OutOfRange, format!("column {col} does not exist (the payload has {})", fields.len()))
        })?;
        let root = self.array(batch);
        if !matches!(self.kind, ArrowKind::Table | ArrowKind::RecordBatch) {
            return Ok((root, root.offset as usize, root.length as usize, f));
        }
        if root.n_children as usize != fields.len() || root.children.is_null() {
            return Err(invalid(format!("batch {batch} has {} columns, the schema {}", root.n_children, fields.len())));
        }
        if root.null_count != 0 {
            return Err(invalid(format!("batch {batch}: a record batch with null rows is not supported")));
        }
        // SAFETY: n_children valid child pointers (validated by the decoder).
        let child = unsafe { &**root.children.add(col) };
        // A struct's offset and length select its children's rows (C Data Interface rules).
        if root.offset + root.length > child.length {
            return Err(invalid(format!(
                "batch {batch}: rows {}..{} are past column {:?}'s {} values",
                root.offset,
                root.offset + root.length,
                f.name,
                child.length
            )));
        }
        Ok((child, (child.offset + root.offset) as usize, root.length as usize, f))
    }

    /// Column `col` of batch `batch` as `&[T]` over the payload (no copy; offset and length
    /// applied) with its validity. T must match the column's format exactly (f64 for "g", ...); a
    /// null slot's value is unspecified.
    pub fn values<T: Primitive>(&self, batch: usize, col: usize) -> Result<(&'a [T], Validity<'a>)> {
        let (arr, start, len, f) = self.column(batch, col)?;
        if f.format != T::ARROW_FORMAT || f.dictionary.is_some() {
            return Err(invalid(format!(
                "column {col} ({:?}) has Arrow format {:?}; {} needs {:?}",
                f.name,
                f.format,
                std::any::type_name::<T>(),
                T::ARROW_FORMAT
            )));
        }
        if arr.n_buffers != 2 || arr.buffers.is_null() {
            return Err(invalid(format!("column {:?} has {} buffers, a primitive array 2", f.name, arr.n_buffers)));
        }
        // SAFETY: two buffer pointers (validated count); each buffer was checked by the decoder to
        // hold offset + length elements (bits for validity) inside src, which lives for 'a.
        unsafe {
            let validity = *arr.buffers;
            let values = *arr.buffers.add(1);
            let bits = if validity.is_null() || len == 0 {
                None
            } else {
                Some(std::slice::from_raw_parts(validity as *const u8, (start + len).div_ceil(8)))
            };
            let v = Validity { bits, offset: start, len };
            if len == 0 {
                return Ok((&[], v));
            }
            if values.is_null() {
                return Err(invalid(format!("column {:?} has {len} rows but no values buffer", f.name)));
            }
            let size = std::mem::size_of::<T>();
            let bytes = std::slice::from_raw_parts((values as *const u8).add(start * size), len * size);
            let vals = cast_slice::<T>(bytes)
                .ok_or_else(|| invalid(format!("column {:?}'s values are not {size}-byte aligned", f.name)))?;
            Ok((vals, v))
        }
    }

    fn single(&self) -> Result<()> {
        if self.n != 1 {
            return Err(Error::new(
                Code::FailedPrecondition,
                format!("the {:?} has {} batches, not 1: read each with values::<T>(batch, col)", self.kind, self.n),
            ));
        }
        Ok(())
    }
    /// Column i of a single-batch payload as `&[f64]` in place (see [`ArrowData::values`]).
    pub fn float64_column(&self, i: usize) -> Result<&'a [f64]> {
        self.single()?;
        Ok(self.values::<f64>(0, i)?.0)
    }
    /// Column i of a single-batch payload as `&[i64]` in place.
    pub fn int64_column(&self, i: usize) -> Result<&'a [i64]> {
        self.single()?;
        Ok(self.values::<i64>(0, i)?.0)
    }
    /// The validity of column i of a single-batch payload.
    pub fn validity(&self, i: usize) -> Result<Validity<'a>> {
        self.single()?;
        let (arr, start, len, f) = self.column(0, i)?;
        if arr.n_buffers < 1 || arr.buffers.is_null() || f.format.starts_with('+') {
            return Ok(Validity { bits: None, offset: start, len });
        }
        // SAFETY: buffer 0 is the validity bitmap of every array that has buffers (checked by the
        // decoder to hold offset + length bits).
        let validity = unsafe { *arr.buffers };
        let bits = if validity.is_null() || len == 0 {
            None
        } else {
            // SAFETY: see above.
            Some(unsafe { std::slice::from_raw_parts(validity as *const u8, (start + len).div_ceil(8)) })
        };
        Ok(Validity { bits, offset: start, len })
    }
}

impl Drop for ArrowData<'_> {
    fn drop(&mut self) {
        // SAFETY: every struct the decode filled has a release callback (or none once moved/released).
        unsafe {
            let s = self.schema.as_mut_ptr();
            if let Some(r) = (*s).release {
                r(s);
            }
            for a in self.arrays.iter_mut().take(self.n) {
                let a = a.as_mut_ptr();
                if let Some(r) = (*a).release {
                    r(a);
                }
            }
        }
    }
}

impl std::fmt::Debug for ArrowData<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArrowData({:?}, {} batches, {} rows, fields {:?})", self.kind, self.n, self.num_rows(), self.fields())
    }
}

/// One primitive column for [`encode_record_batch`].
#[derive(Debug, Clone, Copy)]
pub enum ColumnRef<'v> {
    F64(&'v [f64]),
    F32(&'v [f32]),
    I64(&'v [i64]),
    I32(&'v [i32]),
    U8(&'v [u8]),
}

impl ColumnRef<'_> {
    fn parts(&self) -> (&'static CStr, *const c_void, usize) {
        match self {
            ColumnRef::F64(v) => (c"g", v.as_ptr() as *const c_void, v.len()),
            ColumnRef::F32(v) => (c"f", v.as_ptr() as *const c_void, v.len()),
            ColumnRef::I64(v) => (c"l", v.as_ptr() as *const c_void, v.len()),
            ColumnRef::I32(v) => (c"i", v.as_ptr() as *const c_void, v.len()),
            ColumnRef::U8(v) => (c"C", v.as_ptr() as *const c_void, v.len()),
        }
    }
}

unsafe extern "C" fn noop_schema_release(s: *mut sys::ArrowSchema) {
    // SAFETY: called by hms_arrow_encode's callers only on our own structs (never, in fact: it borrows).
    unsafe { (*s).release = None };
}
unsafe extern "C" fn noop_array_release(a: *mut sys::ArrowArray) {
    // SAFETY: as above.
    unsafe { (*a).release = None };
}

/// Lays out primitive columns of equal length (name, values, optional validity bitmap: bit i set =
/// row i valid, LSB first) as one record batch (`hms_arrow_encode`: one copy of the data), to send
/// with content type [`crate::CT_ARROW`]: a Python peer receives a pyarrow.RecordBatch. The result
/// is 8-byte aligned (a `Vec<u64>`), so [`ArrowData::decode`] reads it directly.
pub fn encode_record_batch(columns: &[(&str, ColumnRef<'_>, Option<&[u8]>)]) -> Result<(Vec<u64>, usize)> {
    let n = columns.len();
    let rows = columns.first().map(|c| c.1.parts().2).unwrap_or(0);
    let names: Vec<CString> = columns.iter().map(|c| cstring("column name", c.0)).collect::<Result<_>>()?;
    let mut buffers: Vec<[*const c_void; 2]> = Vec::with_capacity(n);
    let mut nulls = Vec::with_capacity(n);
    for (i, (name, col, validity)) in columns.iter().enumerate() {
        let (_, p, len) = col.parts();
        if len != rows {
            return Err(invalid(format!("column {i} ({name:?}) has {len} rows, column 0 has {rows}")));
        }
        let mut nc = 0i64;
        let vp = match validity {
            Some(v) => {
                if v.len() < len.div_ceil(8) {
                    return Err(invalid(format!("column {name:?}: {} validity bytes, {len} rows need {}", v.len(), len.div_ceil(8))));
                }
                nc = Validity { bits: Some(v), offset: 0, len }.null_count() as i64;
                v.as_ptr() as *const c_void
            }
            None => ptr::null(),
        };
        nulls.push(nc);
        buffers.push([vp, if len == 0 { ptr::null() } else { p }]);
    }
    let mut root_buffers: [*const c_void; 1] = [ptr::null()];
    // SAFETY: all-zero is a valid value of these plain C structs (NULL pointers, None callbacks).
    let zs = || -> sys::ArrowSchema { unsafe { MaybeUninit::zeroed().assume_init() } };
    // SAFETY: as above.
    let za = || -> sys::ArrowArray { unsafe { MaybeUninit::zeroed().assume_init() } };
    let mut kid_schemas: Vec<sys::ArrowSchema> = (0..n).map(|_| zs()).collect();
    let mut kid_arrays: Vec<sys::ArrowArray> = (0..n).map(|_| za()).collect();
    for i in 0..n {
        let s = &mut kid_schemas[i];
        s.format = columns[i].1.parts().0.as_ptr();
        s.name = names[i].as_ptr();
        s.flags = sys::ARROW_FLAG_NULLABLE;
        s.release = Some(noop_schema_release);
        let a = &mut kid_arrays[i];
        a.length = rows as i64;
        a.null_count = nulls[i];
        a.n_buffers = 2;
        a.buffers = buffers[i].as_mut_ptr();
        a.release = Some(noop_array_release);
    }
    let mut schema_ptrs: Vec<*mut sys::ArrowSchema> = kid_schemas.iter_mut().map(|s| s as *mut _).collect();
    let mut array_ptrs: Vec<*mut sys::ArrowArray> = kid_arrays.iter_mut().map(|a| a as *mut _).collect();
    let mut root_schema = zs();
    root_schema.format = c"+s".as_ptr();
    root_schema.n_children = n as i64;
    root_schema.children = schema_ptrs.as_mut_ptr();
    root_schema.release = Some(noop_schema_release);
    let mut root = za();
    root.length = rows as i64;
    root.n_buffers = 1;
    root.buffers = root_buffers.as_mut_ptr();
    root.n_children = n as i64;
    root.children = array_ptrs.as_mut_ptr();
    root.release = Some(noop_array_release);
    let table: [*const sys::ArrowArray; 1] = [&root];
    let mut size = 0usize;
    let mut e = err_buf();
    // SAFETY: the structs and every buffer they point to are alive for both calls (borrowed only).
    check(unsafe { sys::hms_arrow_encoded_size(&root_schema, table.as_ptr(), 1, &mut size, &mut e) }, &e)?;
    let mut out = vec![0u64; size.div_ceil(8).max(1)];
    let mut written = 0usize;
    let st = unsafe {
        // SAFETY: as above; out has room for `size` bytes.
        sys::hms_arrow_encode(
            &root_schema,
            table.as_ptr(),
            1,
            sys::HMS_ARROW_KIND_RECORD_BATCH,
            out.as_mut_ptr() as *mut u8,
            out.len() * 8,
            &mut written,
            &mut e,
        )
    };
    check(st, &e)?;
    Ok((out, written))
}

/// The first `len` bytes of an aligned buffer from [`encode_record_batch`].
pub fn words_as_bytes(words: &[u64], len: usize) -> &[u8] {
    &bytemuck_bytes(words)[..len]
}
