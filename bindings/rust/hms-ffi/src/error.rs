//! Errors: every failure is an [`Error`] carrying a gRPC status [`Code`], a message and an [`Origin`].
use std::fmt;
use std::time::Duration;

use hms_ffi_sys as sys;

/// The gRPC canonical status codes, with their gRPC values (the C core's `HMS_*` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum Code {
    Ok = sys::HMS_OK,
    Cancelled = sys::HMS_CANCELLED,
    Unknown = sys::HMS_UNKNOWN,
    InvalidArgument = sys::HMS_INVALID_ARGUMENT,
    DeadlineExceeded = sys::HMS_DEADLINE_EXCEEDED,
    NotFound = sys::HMS_NOT_FOUND,
    AlreadyExists = sys::HMS_ALREADY_EXISTS,
    PermissionDenied = sys::HMS_PERMISSION_DENIED,
    ResourceExhausted = sys::HMS_RESOURCE_EXHAUSTED,
    FailedPrecondition = sys::HMS_FAILED_PRECONDITION,
    Aborted = sys::HMS_ABORTED,
    OutOfRange = sys::HMS_OUT_OF_RANGE,
    Unimplemented = sys::HMS_UNIMPLEMENTED,
    Internal = sys::HMS_INTERNAL,
    Unavailable = sys::HMS_UNAVAILABLE,
    DataLoss = sys::HMS_DATA_LOSS,
    Unauthenticated = sys::HMS_UNAUTHENTICATED,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code for a status value; `None` outside 0..=16.
    pub fn from_i32(v: i32) -> Option<Code> {
        usize::try_from(v).ok().and_then(|i| Code::ALL.get(i).copied())
    }

    /// The numeric value (as on the wire and in gRPC).
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The canonical name: "OK", "NOT_FOUND", ...
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an error was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// In this process: a bad argument, a lost connection, a deadline that passed here.
    Local,
    /// By the peer: its handler's error or its dispatcher's.
    Remote,
}

/// An error of the binding or of a peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    code: Code,
    message: String,
    origin: Origin,
    os_errno: i32,
    details: Vec<u8>,
    details_content_type: u32,
}

/// The result type of every fallible function of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A local error with a code and message; what a handler returns to fail a call.
    pub fn new(code: Code, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            origin: Origin::Local,
            os_errno: 0,
            details: Vec::new(),
            details_content_type: sys::HMS_CT_NONE,
        }
    }

    /// Adds details bytes (sent to the caller with the error) of a content type (`HMS_CT_*`).
    pub fn with_details(mut self, details: impl Into<Vec<u8>>, content_type: u32) -> Error {
        self.details = details.into();
        self.details_content_type = content_type;
        self
    }

    pub(crate) fn from_parts(code: i32, message: String, origin: i32, os_errno: i32) -> Error {
        let (code, message) = match Code::from_i32(code) {
            Some(c) => (c, message),
            None => (Code::Unknown, format!("unrecognized status {code}: {message}")),
        };
        Error {
            code,
            message,
            origin: if origin == sys::HMS_ORIGIN_REMOTE { Origin::Remote } else { Origin::Local },
            os_errno,
            details: Vec::new(),
            details_content_type: sys::HMS_CT_NONE,
        }
    }

    pub(crate) fn set_details(&mut self, details: Vec<u8>, content_type: u32) {
        self.details = details;
        self.details_content_type = content_type;
    }

    pub fn code(&self) -> Code {
        self.code
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    pub fn origin(&self) -> Origin {
        self.origin
    }
    /// errno of the failing system call, 0 when none.
    pub fn os_errno(&self) -> i32 {
        self.os_errno
    }
    /// Details sent by the peer with a remote error (possibly empty) and their content type.
    pub fn details(&self) -> (&[u8], u32) {
        (&self.details, self.details_content_type)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = match self.origin {
            Origin::Local => "",
            Origin::Remote => " (from the peer)",
        };
        write!(f, "{}: {}{}", self.code.name(), self.message, from)
    }
}

impl std::error::Error for Error {}

/// A timeout for the C API: `None` = no limit (-1), else nanoseconds, saturating at i64::MAX.
pub(crate) fn timeout_ns(t: Option<Duration>) -> i64 {
    match t {
        None => -1,
        Some(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_grpc_values_and_names() {
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(c.as_i32(), i as i32);
            assert_eq!(Code::from_i32(i as i32), Some(*c));
        }
        assert_eq!(Code::from_i32(17), None);
        assert_eq!(Code::from_i32(-1), None);
        assert_eq!(Code::NotFound.as_i32(), 5);
        assert_eq!(Code::Unauthenticated.name(), "UNAUTHENTICATED");
    }

    #[test]
    fn unknown_status_values_keep_their_number_in_the_message() {
        let e = Error::from_parts(99, "odd".into(), 1, 0);
        assert_eq!(e.code(), Code::Unknown);
        assert_eq!(e.origin(), Origin::Remote);
        assert!(e.message().contains("99"), "{e}");
    }

    #[test]
    fn timeouts() {
        assert_eq!(timeout_ns(None), -1);
        assert_eq!(timeout_ns(Some(Duration::from_millis(2))), 2_000_000);
        assert_eq!(timeout_ns(Some(Duration::MAX)), i64::MAX);
    }
}
