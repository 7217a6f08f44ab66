"""numpy arrays and arena blocks: loans (zero-copy send) and read-only views of received payloads.

Wire format of ``HMS_CT_NDARRAY`` (documented in include/hms_ffi/hms_ffi.h, readable from any language):
a 64-byte-aligned little-endian header (magic ``HMND``, header bytes, ndim, numpy type string, data
offset, data bytes, shape, strides) followed by the data. Python always writes C-contiguous data:
a non-contiguous array is copied contiguous into the block (the one copy of a send from private
memory); received arrays honour the strides in the header (validated against the data size).

Lifetimes:
* A received payload (``ReceivedPayload``) owns the C payload; its read-only memoryview and every numpy
  array made from it keep it alive, and the arena block goes back to the sender when the last of them
  is garbage-collected (or at once with ``release()``).
* A ``Loan`` is a writable block of this side's arena. Sending it (``client.call(fn, loaned)``,
  returning it from a handler) hands the block to the peer without a copy; a loan never sent is given
  back by ``release()``/the ``with`` block. Do not write to a loaned buffer after sending it.
"""
from __future__ import annotations

import struct
import sys
import threading
from typing import Any, Callable, Dict, Optional, Tuple

from ._errors import FailedPrecondition, InvalidArgument
from ._native import ffi, lib

CT_NDARRAY = 6
MAGIC = b"HMND"
MAX_NDIM = 32
_FIXED = struct.Struct("<4sHH16sQQ")  # magic, header bytes, ndim, dtype, data offset, data bytes (40 bytes)

# numpy is optional (without it ndarray payloads arrive as bytes) and imported on first use: importing
# it costs ~100 ms, which every `import hms_ffi_native` (and every `hms-ffi ls`) would otherwise pay.
_np_mod: Any = None


def _numpy():
    global _np_mod
    if _np_mod is None:
        import numpy

        _np_mod = numpy
    return _np_mod


def have_numpy() -> bool:
    try:
        _numpy()
    except ImportError:  # pragma: no cover - exercised only without numpy
        return False
    return True


def is_ndarray(value: Any) -> bool:
    # An ndarray exists only if numpy was imported by someone: no import needed to tell.
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray)


def header_bytes(ndim: int) -> int:
    return (_FIXED.size + 16 * ndim + 63) & ~63


def _check_dtype(dt) -> str:
    if dt.hasobject:
        raise InvalidArgument(
            f"cannot send an array of dtype {dt} (it holds Python object pointers, meaningless in another "
            "process); convert it to a numeric, bytes (S) or unicode (U) dtype first"
        )
    if dt.fields is not None or dt.subdtype is not None:
        raise InvalidArgument(f"structured/sub-array dtype {dt} is not supported; send plain fields as separate arrays")
    s = dt.str
    if len(s) > 16:
        raise InvalidArgument(f"dtype {dt} has a type string longer than 16 bytes")
    return s


def encode_header(shape, dtype) -> bytes:
    """Header for a C-contiguous array of ``shape``/``dtype``."""
    dt = _numpy().dtype(dtype)
    ts = _check_dtype(dt)
    shape = tuple(int(d) for d in shape)
    ndim = len(shape)
    if ndim > MAX_NDIM:
        raise InvalidArgument(f"arrays of more than {MAX_NDIM} dimensions are not supported (got {ndim})")
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"negative dimension in shape {shape}")
    strides = []
    acc = dt.itemsize
    for d in reversed(shape):
        strides.append(acc)
        acc *= max(d, 1)
    strides.reverse()
    nbytes = dt.itemsize
    for d in shape:
        nbytes *= d
    h = header_bytes(ndim)
    out = bytearray(h)
    _FIXED.pack_into(out, 0, MAGIC, h, ndim, ts.encode("ascii"), h, nbytes)
    struct.pack_into(f"<{ndim}q{ndim}q", out, _FIXED.size, *shape, *strides)
    return bytes(out)


def encoded_size(arr) -> int:
    return header_bytes(arr.ndim) + arr.nbytes


def write_into(buf: memoryview, arr) -> None:
    """Writes header + C-contiguous data of ``arr`` into ``buf`` (an arena block): the one copy."""
    hdr = encode_header(arr.shape, arr.dtype)
    h = len(hdr)
    buf[:h] = hdr
    if arr.nbytes:
        dst = _numpy().ndarray(arr.shape, dtype=arr.dtype, buffer=buf, offset=h)
        _numpy().copyto(dst, arr, casting="no")


def encode_bytes(arr) -> bytes:
    """Header + data as one bytes object (small arrays sent inline, async handlers, streams)."""
    _check_dtype(arr.dtype)
    return encode_header(arr.shape, arr.dtype) + _numpy().ascontiguousarray(arr).tobytes()


def decode(buf) -> Any:
    """An ndarray over ``buf`` (bytes or a read-only memoryview that keeps its block alive): no copy.
    Every field is validated, so a hostile peer gets InvalidArgument, never a crash."""
    mv = memoryview(buf)
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    n = len(mv)
    if n < _FIXED.size:
        raise InvalidArgument(f"ndarray payload of {n} bytes is shorter than its header")
    magic, h, ndim, ts, off, nbytes = _FIXED.unpack_from(mv, 0)
    if magic != MAGIC:
        raise InvalidArgument("ndarray payload does not start with the HMND magic")
    if ndim > MAX_NDIM or h % 64 or h < header_bytes(ndim) or off != h or off > n or nbytes != n - off:
        raise InvalidArgument(
            f"ndarray header is inconsistent (header {h}, ndim {ndim}, data offset {off}, data bytes {nbytes}, "
            f"payload {n})"
        )
    if not have_numpy():
        return bytes(mv)
    try:
        dt = _numpy().dtype(ts.rstrip(b"\0").decode("ascii"))
    except (TypeError, ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"ndarray payload has an unknown dtype {ts!r}: {e}") from None
    _check_dtype(dt)
    dims = struct.unpack_from(f"<{ndim}q{ndim}q", mv, _FIXED.size)
    shape, strides = dims[:ndim], dims[ndim:]
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"ndarray payload has a negative dimension in {shape}")
    count = 1
    for d in shape:
        count *= d
    if count:
        lo = hi = 0
        for d, s in zip(shape, strides):
            if s >= 0:
                hi += (d - 1) * s
            else:
                lo += (d - 1) * s
        if lo < 0 or hi + dt.itemsize > nbytes:
            raise InvalidArgument(f"ndarray strides {strides} for shape {shape} reach outside its {nbytes} data bytes")
    # Through a locked read-only uint8 base: numpy then refuses `flags.writeable = True` as well (an
    # array made straight from the memoryview could be flipped writable and fault on the read-only map).
    base = _numpy().frombuffer(mv, dtype=_numpy().uint8)
    if base.flags.writeable:
        base.flags.writeable = False
    return _numpy().ndarray(shape, dtype=dt, buffer=base, offset=off, strides=strides)


# ---------------------------------------------------------------------------------------------------
# Received payloads: read-only views whose lifetime holds the payload (and its arena block)


class ReceivedPayload:
    """A received payload kept without a copy. ``view`` is a read-only memoryview; it (and anything
    made from it) keeps the payload alive. ``release()`` gives the block back now (views made earlier
    must not be used afterwards: they would show reused memory)."""

    __slots__ = ("content_type", "nbytes", "_cdata", "_view", "_released")

    def __init__(self, payload_ptr) -> None:
        """Takes ownership of ``*payload_ptr`` (an ``hms_payload_t *`` the library filled)."""
        own = ffi.new("hms_payload_t *")
        own[0] = payload_ptr[0]
        payload_ptr.release = ffi.NULL  # moved: the caller's struct no longer owns it
        payload_ptr.data = ffi.NULL
        payload_ptr.len = 0
        self.content_type = own.content_type
        self.nbytes = own.len
        self._cdata = own
        self._released = False
        if own.len:
            ptr = ffi.gc(ffi.cast("char *", own.data), lambda _p, own=own: lib.hms_payload_release(own))
            self._view = memoryview(ffi.buffer(ptr, own.len)).toreadonly()
        else:
            lib.hms_payload_release(own)
            self._view = memoryview(b"")

    @property
    def view(self) -> memoryview:
        if self._released:
            raise FailedPrecondition("this received payload was released; keep a view instead")
        return self._view

    def release(self) -> None:
        """Drops this object's hold on the block: it goes back to the sender as soon as no array or
        memoryview made from ``view`` is alive (at once when there are none). Raises FailedPrecondition
        when called twice. Views made earlier stay valid (they hold the block themselves)."""
        if self._released:
            raise FailedPrecondition("this received payload was already released")
        self._released = True
        try:
            self._view.release()  # fails while numpy arrays use it: they keep the block, nothing dangles
        except BufferError:
            pass
        self._view = None


# Decoders for content types received without a copy: content type -> fn(read-only memoryview).
# The Arrow codec plugs in here (CT_ARROW) the same way ndarray does.
ZERO_COPY_DECODERS: Dict[int, Callable[[memoryview], Any]] = {CT_NDARRAY: decode}


def register_zero_copy_decoder(content_type: int, fn: Callable[[memoryview], Any]) -> None:
    ZERO_COPY_DECODERS[content_type] = fn


def decode_received(payload_ptr) -> Any:
    """Decodes a library-filled payload of a ZERO_COPY_DECODERS content type, taking ownership."""
    rp = ReceivedPayload(payload_ptr)
    return ZERO_COPY_DECODERS[rp.content_type](rp.view)


# ---------------------------------------------------------------------------------------------------
# Loans


_loans: Dict[int, Any] = {}  # id(buffer or array) -> weakref to its Loan (strong without numpy)
_loans_lock = threading.Lock()


class Loan:
    """A writable block of an arena (``Client.loan``/``loan_array``, ``CallContext.loan``/``loan_array``).
    ``buf`` is the writable block (a uint8 ndarray, a memoryview without numpy); ``array`` the ndarray of
    a ``loan_array``. The buffer/array keeps the loan alive; when it is dropped unsent, the block goes
    back to the arena. Leaving a ``with`` block gives back a block that was not sent."""

    __slots__ = ("_block", "_addr", "nbytes", "content_type", "buf", "array", "sent", "released", "_target",
                 "__weakref__")

    def __init__(self, block, nbytes: int, content_type: int) -> None:
        self._block = block
        self._addr = int(ffi.cast("uintptr_t", block.data))
        self.nbytes = nbytes
        self.content_type = content_type
        self.sent = False
        self.released = False
        self.array = None
        self._target = None
        if have_numpy():
            self.buf = _numpy().asarray(self)  # its .base is this loan: the buffer keeps the block mapped
        elif nbytes:
            self.buf = memoryview(ffi.buffer(ffi.cast("char *", block.data), nbytes))
        else:
            self.buf = memoryview(bytearray(0))

    @property
    def __array_interface__(self):
        return {"shape": (self.nbytes,), "typestr": "|u1", "data": (self._addr or 1, False), "version": 3}

    def target(self):
        return self._target

    def _register(self, target) -> None:
        import weakref

        # target -> (base chain) -> loan -> target: a cycle, so an unsent loan whose buffer was dropped
        # goes back at the next garbage collection; the registry only refers to the loan weakly.
        self._target = target
        with _loans_lock:
            _loans[id(target)] = weakref.ref(self)

    def take(self):
        """The block for sending (marks the loan sent)."""
        if self.sent:
            raise FailedPrecondition("this loan was already sent; loan a new block for the next payload")
        if self.released:
            raise FailedPrecondition("this loan was released; loan a new block")
        with _loans_lock:
            t = self.target()
            if t is not None:
                _loans.pop(id(t), None)
        self.sent = True
        self._target = None
        return self._block

    def _give_back(self) -> None:
        t = self.target()
        with _loans_lock:
            if t is not None and id(t) in _loans:
                del _loans[id(t)]
        if not self.sent and not self.released:
            lib.hms_block_release(self._block)
        self.released = True
        self._target = None

    def release(self) -> None:
        """Gives the block back. Raises FailedPrecondition when it was already sent or released."""
        if self.sent:
            raise FailedPrecondition("this loan was sent: the block belongs to the receiver now")
        if self.released:
            raise FailedPrecondition("this loan was already released")
        self._give_back()

    def __enter__(self):
        return self.target()

    def __exit__(self, *exc) -> None:
        self._give_back()

    def __del__(self) -> None:  # the buffer/array is gone: an unsent block goes back to the arena
        try:
            if not self.sent and not self.released:
                lib.hms_block_release(self._block)
        except Exception:
            pass


def loan_for(obj) -> Optional[Loan]:
    """The unsent loan whose buffer/array is exactly ``obj`` (not a slice or a copy of it)."""
    ref = _loans.get(id(obj))
    if ref is None:
        return None
    loan = ref()
    if loan is not None and loan.target() is obj and not loan.sent and not loan.released:
        return loan
    return None


def make_loan(loan_fn, nbytes: int, raise_fn, register: bool = True) -> Loan:
    """``loan_fn(size, block, err)`` is hms_loan bound to a client or hms_call_loan bound to a call."""
    if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
        raise InvalidArgument(f"loan size must be a non-negative int, got {nbytes!r}")
    block = ffi.new("hms_block_t *")
    err = ffi.new("hms_error_t *")
    st = loan_fn(nbytes, block, err)
    if st:
        raise_fn(st, err)
    loan = Loan(block, nbytes, 1)
    if register:
        loan._register(loan.buf)
    return loan


def make_array_loan(loan_fn, shape, dtype, raise_fn) -> Loan:
    if not have_numpy():
        raise FailedPrecondition("loan_array needs numpy; install it (pip install numpy)")
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(int(d) for d in shape)
    hdr = encode_header(shape, dtype)
    dt = _numpy().dtype(dtype)
    nbytes = dt.itemsize
    for d in shape:
        nbytes *= d
    loan = make_loan(loan_fn, len(hdr) + nbytes, raise_fn, register=False)
    loan.content_type = CT_NDARRAY
    whole = loan.buf
    whole[: len(hdr)] = _numpy().frombuffer(hdr, dtype=_numpy().uint8)
    arr = _numpy().ndarray(shape, dtype=dt, buffer=whole, offset=len(hdr))
    loan.array = arr
    loan._register(arr)
    return loan
