//! Safe Rust binding of hms-ffi-native: call functions of other processes on this host (in any
//! language) over shared-memory rings, serve functions with Rust closures, consume server streams,
//! publish and subscribe.
//!
//! ```no_run
//! use hms_ffi::{Node, Code, Error, CT_RAW};
//! use std::time::Duration;
//!
//! let node = Node::open("demo")?;
//! let svc = node.service("demo.echo", "1.0.0")?;
//! svc.function("echo", |call| { let req = call.request(); call.reply(req, call.content_type()) })?;
//! svc.function("fail", |_call| Err(Error::new(Code::NotFound, "nope")))?;
//! node.start()?;                                   // serve on a background thread
//! let client = node.connect("demo.echo", "^1")?;
//! let reply = client.call("echo", b"hi", CT_RAW, Some(Duration::from_secs(1)))?;
//! assert_eq!(reply.data(), b"hi");
//! # Ok::<(), hms_ffi::Error>(())
//! ```
//!
//! All `unsafe` code lives in the private module `ffi` (enforced: `#![deny(unsafe_code)]` here,
//! `#![allow(unsafe_code)]` only there); the raw declarations are in the `hms-ffi-sys` crate.
#![deny(unsafe_code)]

pub mod cbor;
mod error;
mod ffi;
mod ndarray;

pub use error::{Code, Error, Origin, Result};
pub use ffi::{
    abi_version, check_abi, Batch, default_runtime_dir, status_name, termination_requested, version, version_matches, Call,
    Client, ConnectOptions, Message, Node, NodeOptions, Payload, Publisher, PublisherOptions, Service, Stream,
    SubscribeOptions, Subscription,
};
pub use ffi::{encode_record_batch, words_as_bytes, ArrowData, ArrowField, ArrowKind, ColumnRef, Primitive, Validity};
pub use ndarray::{ndarray_f64, NdArray};
pub use hms_ffi_sys as sys;

/// The ABI version this binding was built against (hms-ffi-sys's declarations).
pub const ABI_VERSION: u32 = sys::HMS_FFI_ABI_VERSION;

/// Content types (`HMS_CT_*`).
pub const CT_NONE: u32 = sys::HMS_CT_NONE;
pub const CT_RAW: u32 = sys::HMS_CT_RAW;
pub const CT_CBOR: u32 = sys::HMS_CT_CBOR;
pub const CT_JSON: u32 = sys::HMS_CT_JSON;
pub const CT_PROTOBUF: u32 = sys::HMS_CT_PROTOBUF;
pub const CT_ARROW: u32 = sys::HMS_CT_ARROW;
pub const CT_NDARRAY: u32 = sys::HMS_CT_NDARRAY;

impl<'n> Client<'n> {
    /// Calls `name` with a CBOR value and decodes the CBOR reply.
    pub fn call_cbor(&self, name: &str, value: &cbor::Value, timeout: Option<std::time::Duration>) -> Result<cbor::Value> {
        let reply = self.call(name, &cbor::encode(value), CT_CBOR, timeout)?;
        cbor::decode(reply.data())
    }
}
