"""Codecs: how Python values become payload bytes and back.

The content type travels in every frame, so the receiver (in any language) knows how to decode.

* raw  — bytes, bytearray, memoryview: sent as they are, received as ``bytes``.
* cbor — the default for every other value: None, bool, int of any width, float, str, bytes, list,
  tuple (arrives as list), dict, set/frozenset (tag 258, arrives as set), datetime (naive values are
  taken as UTC and arrive timezone-aware), Decimal, UUID.
* json — the same minus bytes and sets, for humans and debugging.
"""
from __future__ import annotations

import datetime as _dt
import json as _json
from typing import Any, Optional, Tuple

import cbor2

from ._errors import InvalidArgument

CT_NONE = 0
CT_RAW = 1
CT_CBOR = 2
CT_JSON = 3
CT_PROTOBUF = 4
CT_ARROW = 5
CT_NDARRAY = 6  # numpy arrays: header + data (hms_ffi_native/_ndarray.py, layout in the C header)

CODECS = {"raw": CT_RAW, "cbor": CT_CBOR, "json": CT_JSON, "protobuf": CT_PROTOBUF, "arrow": CT_ARROW}
CT_NAMES = {CT_NONE: "none", CT_RAW: "raw", CT_CBOR: "cbor", CT_JSON: "json", CT_PROTOBUF: "protobuf",
            CT_ARROW: "arrow", CT_NDARRAY: "ndarray"}

_UTC = _dt.timezone.utc
_BYTES_TYPES = (bytes, bytearray, memoryview)


def _cbor_default(encoder, value):
    if isinstance(value, frozenset):
        encoder.encode(set(value))
        return
    import enum

    if isinstance(value, enum.Enum):
        encoder.encode(value.value)
        return
    raise InvalidArgument(
        f"cannot encode a {type(value).__name__} as CBOR; convert it to a dict, list, str, number or bytes first"
    )


def encode(value: Any, codec: Optional[str] = None) -> Tuple[bytes, int]:
    """Returns ``(bytes, content_type)``. ``codec`` None picks raw for bytes-like values, none for
    None, and CBOR for the rest."""
    if codec is None:
        if value is None:
            return b"", CT_NONE
        if isinstance(value, _BYTES_TYPES):
            return bytes(value), CT_RAW
        if type(value).__module__ == "numpy" and type(value).__name__ == "ndarray":
            from . import _ndarray

            return _ndarray.encode_bytes(value), CT_NDARRAY
        if _is_protobuf(value):
            return value.SerializeToString(), CT_PROTOBUF
        if is_arrow(value):
            codec = "arrow"
        else:
            codec = "cbor"
    if codec == "cbor":
        try:
            return cbor2.dumps(value, timezone=_UTC, default=_cbor_default), CT_CBOR
        except InvalidArgument:
            raise
        except (TypeError, ValueError, cbor2.CBOREncodeError) as e:
            raise InvalidArgument(f"cannot encode value as CBOR: {e}") from e
    if codec == "json":
        try:
            return _json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default).encode(), CT_JSON
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f"cannot encode value as JSON: {e}; use codec='cbor' for bytes and sets") from e
    if codec == "arrow":
        if not is_arrow(value):
            raise InvalidArgument(f"codec 'arrow' needs Arrow data (a pyarrow Array, ChunkedArray, RecordBatch or "
                                  f"Table, or an object with __arrow_c_stream__/__arrow_c_array__), got "
                                  f"{type(value).__name__}")
        from . import _arrow

        buf = bytearray(_arrow.encoded_size(value))
        n = _arrow.encode_into(value, buf)
        return bytes(memoryview(buf)[:n]), CT_ARROW
    if codec == "protobuf":
        if _is_protobuf(value):
            return value.SerializeToString(), CT_PROTOBUF
        if isinstance(value, _BYTES_TYPES):  # already serialized
            return bytes(value), CT_PROTOBUF
        raise InvalidArgument(f"codec 'protobuf' needs a protobuf message (or its serialized bytes), got "
                              f"{type(value).__name__}")
    if codec == "raw":
        if value is None:
            return b"", CT_RAW
        if not isinstance(value, _BYTES_TYPES):
            raise InvalidArgument(
                f"codec 'raw' needs bytes, bytearray or memoryview, got {type(value).__name__}; "
                "use codec='cbor' for other values"
            )
        return bytes(value), CT_RAW
    raise InvalidArgument(f"unknown codec {codec!r}; use one of {sorted(CODECS)}")


def is_arrow(value) -> bool:
    """Arrow data: pyarrow objects and anything speaking the Arrow PyCapsule protocol (polars, pandas
    >= 2.2, duckdb results...). Recognized without importing pyarrow."""
    t = type(value)
    return hasattr(t, "__arrow_c_stream__") or hasattr(t, "__arrow_c_array__")


def _is_protobuf(value) -> bool:
    """A generated protobuf message (google.protobuf), recognized without importing protobuf."""
    return hasattr(value, "SerializeToString") and hasattr(value, "DESCRIPTOR") and hasattr(type(value), "FromString")


def parse_protobuf(message_type, data: bytes):
    """``message_type.FromString(data)``, with errors as InvalidArgument naming the type (and, for
    proto2 messages, the missing required fields)."""
    name = getattr(getattr(message_type, "DESCRIPTOR", None), "full_name", getattr(message_type, "__name__", "?"))
    try:
        msg = message_type.FromString(data)
    except Exception as e:  # google.protobuf.message.DecodeError and friends: hostile bytes
        raise InvalidArgument(f"payload does not parse as {name}: {e}", details={"type": name}) from e
    if hasattr(msg, "IsInitialized") and not msg.IsInitialized():
        missing = msg.FindInitializationErrors() if hasattr(msg, "FindInitializationErrors") else []
        raise InvalidArgument(f"{name} is missing required field(s) {', '.join(missing) or '?'}",
                              details={"type": name, "missing": list(missing)})
    return msg


def _json_default(value):
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_UTC)
        return value.isoformat()
    import decimal
    import uuid

    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def decode(content_type: int, data: bytes) -> Any:
    """Decodes payload bytes by content type. Unknown content types arrive as bytes."""
    if content_type == CT_RAW:
        return data
    if content_type == CT_CBOR:
        try:
            return cbor2.loads(data)
        except Exception as e:  # hostile or corrupt input must become an error, not a crash
            raise InvalidArgument(f"payload is not valid CBOR: {e}") from e
    if content_type == CT_NONE:
        return None
    if content_type == CT_JSON:
        try:
            return _json.loads(data)
        except ValueError as e:
            raise InvalidArgument(f"payload is not valid JSON: {e}") from e
    if content_type == CT_NDARRAY:
        from . import _ndarray

        return _ndarray.decode(data)  # a read-only array over `data` (validated)
    if content_type == CT_ARROW:
        from . import _arrow

        return _arrow.decode(data, data)  # pyarrow objects over `data` (validated), no copy
    return data
