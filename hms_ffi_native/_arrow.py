"""Arrow data in and out of hms's flat layout (csrc/arrow.c), without a copy on the receiving side.

    n = encoded_size(table)              # bytes the layout needs
    encode_into(table, block)            # one copy of every buffer into a writable buffer (an arena block)
    table2 = decode(block_view, keepalive=block)   # pyarrow objects whose buffers ARE the block

The sender exports through the Arrow C Data Interface (pyarrow's ``_export_to_c``) and the C core
writes one position-independent layout; the receiver's C core validates it completely and hands out
C Data Interface structs pointing into the block, which pyarrow imports (``_import_from_c``) without
copying. The layout records what it was made from, so an Array comes back as an Array, a
ChunkedArray as a ChunkedArray, a RecordBatch as a RecordBatch and a Table as a Table. The objects
returned are ordinary pyarrow objects: they implement ``__arrow_c_array__``/``__arrow_c_stream__``,
so polars, duckdb or pandas consume them through the Arrow PyCapsule interface.

Lifetime: ``decode`` keeps ``keepalive`` (and the buffer it was given) alive until the last pyarrow
object that uses the block's memory is gone -- the C release callbacks count the references, and the
last one drops ours. Zero-copy caveat: values are read from the block whenever a consumer reads them;
map received blocks read-only and let senders never touch a block they have sent.
"""
from __future__ import annotations

import threading
from typing import Any, Tuple

import pyarrow as pa

from ._errors import InvalidArgument, error_for
from ._native import ffi, lib

__all__ = ["encode_into", "encoded_size", "decode", "peek", "KINDS"]

KINDS = {
    lib.HMS_ARROW_KIND_ARRAY: "Array",
    lib.HMS_ARROW_KIND_CHUNKED_ARRAY: "ChunkedArray",
    lib.HMS_ARROW_KIND_RECORD_BATCH: "RecordBatch",
    lib.HMS_ARROW_KIND_TABLE: "Table",
}


def _raise(status: int, err) -> None:
    raise error_for(status, ffi.string(err.message).decode("utf-8", "replace"))


def _addr(ptr) -> int:
    return int(ffi.cast("uintptr_t", ptr))


# ---------------------------------------------------------------------------------------- encode
def _normalize(obj: Any):
    """(kind, object) with object one of pa.Array, pa.ChunkedArray, pa.RecordBatch, pa.Table."""
    if isinstance(obj, pa.Array):
        return lib.HMS_ARROW_KIND_ARRAY, obj
    if isinstance(obj, pa.ChunkedArray):
        return lib.HMS_ARROW_KIND_CHUNKED_ARRAY, obj
    if isinstance(obj, pa.RecordBatch):
        return lib.HMS_ARROW_KIND_RECORD_BATCH, obj
    if isinstance(obj, pa.Table):
        return lib.HMS_ARROW_KIND_TABLE, obj
    # Anything speaking the Arrow PyCapsule interface (polars, pandas >= 2.2, duckdb results, ...).
    # A stream of structs is a table; a stream of anything else a chunked array (e.g. a polars Series).
    if hasattr(obj, "__arrow_c_stream__"):
        try:
            return lib.HMS_ARROW_KIND_TABLE, pa.table(obj)
        except pa.ArrowInvalid:  # a stream of a non-struct type
            return lib.HMS_ARROW_KIND_CHUNKED_ARRAY, pa.chunked_array(obj)
    if hasattr(obj, "__arrow_c_array__"):
        return lib.HMS_ARROW_KIND_ARRAY, pa.array(obj)
    if type(obj).__module__.split(".")[0] == "pandas":
        return lib.HMS_ARROW_KIND_TABLE, pa.Table.from_pandas(obj)
    raise InvalidArgument(
        f"cannot send a {type(obj).__name__} as Arrow data: pass a pyarrow Array, ChunkedArray, RecordBatch or "
        "Table, or an object with __arrow_c_array__ / __arrow_c_stream__"
    )


class _Exported:
    """C Data Interface structs exported from pyarrow objects; released on exit."""

    def __init__(self, obj: Any) -> None:
        self.kind, obj = _normalize(obj)
        self.schema = ffi.new("struct ArrowSchema *")
        if self.kind == lib.HMS_ARROW_KIND_TABLE:
            parts = obj.to_batches()  # zero-copy slices of the columns
        elif self.kind == lib.HMS_ARROW_KIND_CHUNKED_ARRAY:
            parts = obj.chunks
        else:
            parts = [obj]
        self.n = len(parts)
        self.arrays = ffi.new("struct ArrowArray[]", max(self.n, 1))
        self.table = ffi.new("struct ArrowArray *[]", max(self.n, 1))
        try:
            if self.kind in (lib.HMS_ARROW_KIND_TABLE, lib.HMS_ARROW_KIND_CHUNKED_ARRAY):
                (obj.schema if self.kind == lib.HMS_ARROW_KIND_TABLE else obj.type)._export_to_c(_addr(self.schema))
                for i, part in enumerate(parts):
                    part._export_to_c(_addr(self.arrays + i))
                    self.table[i] = self.arrays + i
            else:
                obj._export_to_c(_addr(self.arrays), _addr(self.schema))
                self.table[0] = self.arrays
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self.schema.release:
            self.schema.release(self.schema)
        for i in range(self.n):
            a = self.arrays + i
            if a.release:
                a.release(a)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def encoded_size(obj: Any) -> int:
    """Bytes ``encode_into(obj, ...)`` writes: the buffers (64-byte aligned) plus a small header."""
    err = ffi.new("hms_error_t *")
    out = ffi.new("size_t *")
    with _Exported(obj) as ex:
        st = lib.hms_arrow_encoded_size(ex.schema, ex.table, ex.n, out, err)
    if st:
        _raise(st, err)
    return out[0]


def encode_into(obj: Any, buffer: Any) -> int:
    """Writes ``obj`` into the writable ``buffer`` (bytearray, memoryview, numpy array, an arena
    block...) and returns the number of bytes written. Exactly one copy of the data is made (the
    GIL is released while it is copied). Place the buffer on a 64-byte boundary to get 64-byte
    aligned Arrow buffers. Raises OutOfRange when the buffer is smaller than ``encoded_size(obj)``.
    """
    try:
        dst = ffi.from_buffer("uint8_t[]", buffer, require_writable=True)
    except TypeError as exc:
        raise InvalidArgument(f"encode_into needs a writable buffer, got {type(buffer).__name__}: {exc}") from None
    err = ffi.new("hms_error_t *")
    written = ffi.new("size_t *")
    with _Exported(obj) as ex:
        st = lib.hms_arrow_encode(ex.schema, ex.table, ex.n, ex.kind, dst, len(dst), written, err)
    if st:
        _raise(st, err)
    return written[0]


# ---------------------------------------------------------------------------------------- decode
class _Hold:
    """What a decoded layout keeps alive: the caller's keepalive and our view of its buffer."""

    __slots__ = ("src", "keepalive")


# id(_Hold) -> (_Hold, its cffi handle), until the C side calls _on_release. Nothing here is a
# cycle, so the hold (and with it the buffer export and the keepalive) goes at once.
_live: dict = {}
_live_lock = threading.Lock()


def _release_hold(ctx) -> None:
    key = id(ffi.from_handle(ctx))
    with _live_lock:
        entry = _live.pop(key, None)
    del entry  # outside the lock: dropping the keepalive may run arbitrary finalizers


# Runs on whichever thread releases the last struct (cffi takes the GIL).
_on_release = ffi.callback("void(void *)", _release_hold)


def peek(buffer: Any) -> Tuple[str, int]:
    """(kind name, number of arrays) of an encoded layout, from its header alone."""
    src = ffi.from_buffer("uint8_t[]", buffer)
    err = ffi.new("hms_error_t *")
    kind = ffi.new("uint32_t *")
    n = ffi.new("size_t *")
    st = lib.hms_arrow_peek(src, len(src), kind, n, err)
    if st:
        _raise(st, err)
    return KINDS.get(kind[0], "unspecified"), n[0]


def decode(buffer: Any, keepalive: Any = None):
    """The pyarrow object encoded in ``buffer`` (any object with the buffer protocol; read-only is
    fine), backed by ``buffer``'s memory: nothing is copied. ``keepalive`` (and ``buffer``) stay
    referenced until the last pyarrow object using that memory is gone.

    Raises InvalidArgument when the layout is malformed (it is validated completely first).
    """
    src = ffi.from_buffer("uint8_t[]", buffer)
    err = ffi.new("hms_error_t *")
    kind = ffi.new("uint32_t *")
    count = ffi.new("size_t *")
    st = lib.hms_arrow_peek(src, len(src), kind, count, err)
    if st:
        _raise(st, err)
    n = count[0]
    schema = ffi.new("struct ArrowSchema *")
    arrays = ffi.new("struct ArrowArray[]", max(n, 1))
    hold = _Hold()
    hold.keepalive = keepalive if keepalive is not None else buffer
    hold.src = src
    handle = ffi.new_handle(hold)
    with _live_lock:
        _live[id(hold)] = (hold, handle)
    del hold
    st = lib.hms_arrow_decode(src, len(src), _on_release, handle, schema, arrays, n, count, err)
    if st:
        with _live_lock:
            _live.pop(id(ffi.from_handle(handle)), None)
        _raise(st, err)
    try:
        return _import(kind[0], schema, arrays, n)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise InvalidArgument(f"pyarrow refused the decoded Arrow data: {exc}") from None
    finally:
        # Whatever pyarrow did not take (it moves what it imports) is released here, so a failed
        # import cannot leak the hold.
        if schema.release:
            schema.release(schema)
        for i in range(n):
            if arrays[i].release:
                arrays[i].release(arrays + i)


def _import(kind: int, schema, arrays, n: int):
    if kind == lib.HMS_ARROW_KIND_RECORD_BATCH:
        return pa.RecordBatch._import_from_c(_addr(arrays), _addr(schema))
    if kind == lib.HMS_ARROW_KIND_TABLE:
        sch = pa.Schema._import_from_c(_addr(schema))
        batches = [pa.RecordBatch._import_from_c(_addr(arrays + i), sch) for i in range(n)]
        return pa.Table.from_batches(batches, schema=sch)
    if kind == lib.HMS_ARROW_KIND_ARRAY or (kind != lib.HMS_ARROW_KIND_CHUNKED_ARRAY and n == 1):
        return pa.Array._import_from_c(_addr(arrays), _addr(schema))
    typ = pa.DataType._import_from_c(_addr(schema))
    return pa.chunked_array([pa.Array._import_from_c(_addr(arrays + i), typ) for i in range(n)], type=typ)
