"""Status codes and the exceptions named after them.

One place turns a C status into a Python exception (``raise_for``); everything else raises the
classes defined here. Codes are the gRPC canonical values, pinned in ``hms_ffi.h``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Type

STATUS_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)


class FFIError(Exception):
    """Base of every hms-ffi error.

    Attributes:
        code: the numeric status (gRPC canonical value).
        status: its name, e.g. ``"NOT_FOUND"``.
        message: what happened and what to do next.
        source: ``"local"`` (raised in this process) or ``"remote"`` (raised by the peer).
        details: structured details sent by the peer (any codec value), or None.
    """

    code: int = 2

    def __init__(self, message: str = "", *, details: Any = None, source: str = "local",
                 code: Optional[int] = None) -> None:
        if code is not None:
            self.code = code
        self.message = message
        self.details = details
        self.source = source
        super().__init__(message)

    @property
    def status(self) -> str:
        return STATUS_NAMES[self.code] if 0 <= self.code < len(STATUS_NAMES) else "UNRECOGNIZED_STATUS"

    def __str__(self) -> str:
        where = " (remote)" if self.source == "remote" else ""
        return f"{self.status}{where}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, source={self.source!r}, details={self.details!r})"

    def __reduce__(self):  # picklable, so errors can cross process pools too
        return (_rebuild, (self.code, self.message, self.details, self.source))


def _rebuild(code, message, details, source):
    return error_for(code, message, details=details, source=source)


class Cancelled(FFIError):
    code = 1


class Unknown(FFIError):
    code = 2


class InvalidArgument(FFIError, ValueError):
    code = 3


class DeadlineExceeded(FFIError, TimeoutError):
    code = 4


class NotFound(FFIError, LookupError):
    code = 5


class AlreadyExists(FFIError):
    code = 6


class PermissionDenied(FFIError, PermissionError):
    code = 7


class ResourceExhausted(FFIError):
    code = 8


class FailedPrecondition(FFIError):
    code = 9


class Aborted(FFIError):
    code = 10


class OutOfRange(FFIError):
    code = 11


class Unimplemented(FFIError, NotImplementedError):
    code = 12


class Internal(FFIError):
    code = 13


class Unavailable(FFIError, ConnectionError):
    code = 14


class DataLoss(FFIError):
    code = 15


class Unauthenticated(FFIError):
    code = 16


_BY_CODE: Dict[int, Type[FFIError]] = {
    cls.code: cls
    for cls in (Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists,
                PermissionDenied, ResourceExhausted, FailedPrecondition, Aborted, OutOfRange,
                Unimplemented, Internal, Unavailable, DataLoss, Unauthenticated)
}


def error_for(code: int, message: str, *, details: Any = None, source: str = "local") -> FFIError:
    """The exception instance for a status code (``Unknown`` for unrecognized codes)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return Unknown(f"status {code}: {message}", details=details, source=source, code=2)
    return cls(message, details=details, source=source)
