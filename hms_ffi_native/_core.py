"""Node, Service, Client: the Python face of the C core.

Layering: ``_native`` (cffi ffi/lib) -> ``_raise`` (the one place a status becomes an exception) ->
the classes below. Handles have ``close()`` and ``with``; nothing relies on garbage collection.

Threads:
* A ``Client`` may be used from any number of threads at once (the core matches replies by call id);
  the GIL is released while a call waits.
* A ``Node`` is served by one thread at a time: ``serve()`` on the calling thread or ``start()`` for a
  background thread. Handlers run on that serving thread, one call at a time.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import inspect
import itertools
import os
import weakref
import threading
import traceback
import time
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from ._codec import (CODECS, CT_ARROW, CT_CBOR, CT_NAMES, CT_NONE, CT_PROTOBUF, CT_RAW, decode, encode, is_arrow,
                     parse_protobuf)
from ._errors import (FailedPrecondition, FFIError, InvalidArgument, NotFound, ResourceExhausted, error_for)
from ._native import ffi, lib
from . import _ndarray
from . import _policy
from . import _tracing
from ._ndarray import CT_NDARRAY, ZERO_COPY_DECODERS, ReceivedPayload
from ._tracing import report as _report  # stderr, or log records with trace ids (docs/operations.md)

__all__ = ["Node", "Service", "Client", "CallContext", "ServiceInfo", "connect", "list_services",
           "default_runtime_dir"]

_NS = 1_000_000_000
_SERVE_SLICE_NS = 200_000_000  # Node.serve() returns to Python this often (signals, stop())


def _check_abi() -> None:
    built, header = lib.hms_abi_version(), lib.HMS_FFI_ABI_VERSION
    if built != header:
        raise ImportError(
            f"hms_ffi_native: the C library has ABI version {built} but the bindings were generated from a "
            f"header with ABI version {header}; reinstall the package so both come from one build"
        )


_check_abi()


def _raise(status: int, err, details: Any = None) -> None:
    """Raises the exception for a failed C call (err is an hms_error_t*)."""
    message = ffi.string(err.message).decode("utf-8", "replace")
    source = "remote" if err.origin == lib.HMS_ORIGIN_REMOTE else "local"
    raise error_for(status, message, details=details, source=source)


def _timeout_ns(timeout: Optional[float]) -> int:
    if timeout is None:
        return -1
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise InvalidArgument(f"timeout must be seconds as a number or None, got {type(timeout).__name__}")
    if timeout < 0:
        raise InvalidArgument(f"timeout must be >= 0 seconds or None, got {timeout}")
    return int(timeout * _NS)


def _spin_ns(spin_us: Optional[float]) -> int:
    if spin_us is None:
        return -1
    if spin_us < 0:
        raise InvalidArgument("spin_us must be >= 0 (0 = never spin) or None for the default")
    return int(spin_us * 1000)


def _runtime_dir_arg(runtime_dir) -> Any:
    return os.fsencode(runtime_dir) if runtime_dir is not None else ffi.NULL


def default_runtime_dir() -> str:
    """The directory services register in: $HMS_FFI_RUNTIME_DIR, else $XDG_RUNTIME_DIR/hms-ffi, else
    /tmp/hms-ffi-<uid>."""
    buf = ffi.new("char[]", 4096)
    err = ffi.new("hms_error_t *")
    st = lib.hms_default_runtime_dir(buf, 4096, err)
    if st:
        _raise(st, err)
    return ffi.string(buf).decode()


# ----------------------------------------------------------------------------------------------------
# Serving
# ----------------------------------------------------------------------------------------------------
class CallContext:
    """What a handler knows about the call it serves. Valid only while the handler runs."""

    __slots__ = ("_call", "_ct")

    def __init__(self, call, content_type: int = 0) -> None:
        self._call = call
        self._ct = content_type

    @property
    def content_type(self) -> str:
        """The request's content type: 'none', 'raw', 'cbor', 'json', 'protobuf', 'arrow', 'ndarray' (or
        'user:N' for application-defined ones), as the caller sent it."""
        return CT_NAMES.get(self._ct, f"user:{self._ct}")

    def loan(self, nbytes: int):
        """A writable buffer of ``nbytes`` in this connection's arena (a uint8 ndarray; a memoryview
        without numpy): fill it and return it from the handler to reply without a copy (raw content
        type). Not returned, it goes back to the arena when dropped."""
        return _ndarray.make_loan(lambda n, b, e: lib.hms_call_loan(self._call, n, b, e), nbytes,
                                  _raise).target()

    def loan_array(self, shape, dtype="float64"):
        """A writable ndarray in this connection's arena; return it from the handler to reply without
        a copy. Returns the array (its loan goes back if it is dropped unsent)."""
        return _ndarray.make_array_loan(lambda n, b, e: lib.hms_call_loan(self._call, n, b, e), shape, dtype,
                                        _raise).array

    @property
    def peer_pid(self) -> int:
        """Caller's pid as verified by the kernel (SO_PEERCRED), never as claimed."""
        p = ffi.new("int32_t *")
        lib.hms_call_peer(self._call, p, ffi.NULL, ffi.NULL)
        return p[0]

    @property
    def peer_uid(self) -> int:
        p = ffi.new("uint32_t *")
        lib.hms_call_peer(self._call, ffi.NULL, p, ffi.NULL)
        return p[0]

    @property
    def peer_gid(self) -> int:
        p = ffi.new("uint32_t *")
        lib.hms_call_peer(self._call, ffi.NULL, ffi.NULL, p)
        return p[0]

    @property
    def time_left(self) -> Optional[float]:
        """Seconds until the caller gives up (may be <= 0), or None when it set no deadline."""
        ns = lib.hms_call_time_left_ns(self._call)
        return None if ns == 2**63 - 1 else ns / _NS

    @property
    def cancelled(self) -> bool:
        """True once the caller cancelled this call or gave up on it (for long-running handlers)."""
        return bool(lib.hms_call_is_cancelled(self._call))

    @property
    def oneway(self) -> bool:
        """True for a one-way call: whatever the handler returns is discarded."""
        return bool(lib.hms_call_is_oneway(self._call))

    @property
    def call_id(self) -> int:
        return lib.hms_call_id(self._call)

    @property
    def function(self) -> str:
        return ffi.string(lib.hms_call_function_name(self._call)).decode()

    @property
    def service(self) -> str:
        return ffi.string(lib.hms_call_service_name(self._call)).decode()

    @property
    def traceparent(self) -> Optional[str]:
        """The caller's W3C traceparent header value, or None when the call carries no trace."""
        tid = ffi.new("uint8_t[16]")
        sid = ffi.new("uint8_t[8]")
        fl = ffi.new("uint8_t *")
        lib.hms_call_trace(self._call, tid, sid, fl)
        t, s = bytes(tid), bytes(sid)
        if not any(t):
            return None
        return f"00-{t.hex()}-{s.hex()}-{fl[0]:02x}"


class _Function:
    __slots__ = ("name", "fn", "codec", "wants_ctx", "handle", "service", "stream", "client_stream", "is_async",
                 "is_async_gen", "request_type", "checker")

    def __init__(self, service: "Service", name: str, fn: Callable, codec: Optional[str],
                 client_stream: bool = False, request_type=None, checker=None) -> None:
        self.request_type = request_type  # a protobuf message class: requests are parsed (and checked)
        self.checker = checker  # a compiled schema (_schema.compile_schema): run on every decoded request
        self.client_stream = client_stream
        self.service = service
        self.name = name
        self.fn = fn
        self.codec = codec
        self.wants_ctx = _wants_context(fn)
        # A generator (or async generator) handler serves a stream; coroutines and async generators
        # run on the node's event loop.
        self.is_async_gen = inspect.isasyncgenfunction(fn)
        self.stream = inspect.isgeneratorfunction(fn) or self.is_async_gen
        self.is_async = inspect.iscoroutinefunction(fn) or self.is_async_gen
        self.handle = ffi.new_handle(self)


def _wants_context(fn: Callable) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    # The context is passed as the second argument when the handler asks for it: a second required
    # positional parameter, or a parameter named ctx/context.
    if any(p.name in ("ctx", "context") and p.kind != p.KEYWORD_ONLY for p in params):
        return True
    required = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.default is p.empty]
    return len(required) >= 2


def _set_error(call, exc: FFIError) -> int:
    details = b""
    ct = CT_NONE
    if exc.details is not None:
        try:
            details, ct = encode(exc.details)
        except FFIError:
            details, ct = encode(repr(exc.details))
    lib.hms_call_set_error(call, exc.code, exc.message.encode("utf-8", "replace")[:255], details,
                           len(details), ct)
    return exc.code


def _request_value(entry: "_Function", ct: int, data: bytes) -> Any:
    """A request payload as the handler gets it: decoded by content type, or parsed as the function's
    protobuf request type (anything else is refused before the handler runs)."""
    rt = entry.request_type
    if rt is None:
        value = data if ct == CT_RAW else decode(ct, data)
        if entry.checker is not None:
            entry.checker(value)
        return value
    if ct not in (CT_PROTOBUF, CT_RAW, CT_NONE):
        raise InvalidArgument(f"{entry.service.name}.{entry.name} takes a protobuf "
                              f"{rt.DESCRIPTOR.full_name}; got a {CT_NAMES.get(ct, ct)} payload")
    return parse_protobuf(rt, data)


@ffi.def_extern()
def _hms_py_handler(call, req, user_data):
    entry: _Function = ffi.from_handle(user_data)
    try:
        req_ct = req.content_type
        if entry.client_stream:
            arg = _Incoming(call, entry.checker)
        elif entry.is_async:
            return entry.service.node._start_async(call, entry, req)
        else:
            n = req.len
            ct = req.content_type
            if ct in ZERO_COPY_DECODERS:
                arg = _take_request(call, req, ct)
                if entry.checker is not None:
                    entry.checker(arg)
            else:
                data = ffi.buffer(req.data, n)[:] if n else b""  # copied: the peer may rewrite shared memory
                arg = _request_value(entry, ct, data)
        result = entry.fn(arg, CallContext(call, req_ct)) if entry.wants_ctx else entry.fn(arg)
        if entry.stream:
            return _serve_stream(call, entry, result)
        err = entry.service.node._handler_err  # one serving thread per node: safe to reuse
        codec = entry.codec
        if codec is None and req_ct == CT_CBOR:
            codec = "cbor"  # answer a CBOR caller (any language) in CBOR, bytes and None included
        if type(result) is bytes and codec is None:
            out, out_ct = result, CT_RAW
        else:
            loan = _ndarray.loan_for(result) if entry.codec is None else None
            if loan is None and entry.codec is None and _ndarray.is_ndarray(result):
                # A private array: one copy into a reply block (small ones go inline).
                loan = _array_copy_loan(lambda n, b, e: lib.hms_call_loan(call, n, b, e), result)
                if loan is None:
                    out, out_ct = _ndarray.encode_bytes(result), CT_NDARRAY
            elif loan is None and entry.codec is None and is_arrow(result):
                # Arrow data: its buffers copied once into a reply block (small ones go inline).
                loan = _arrow_copy_loan(lambda n, b, e: lib.hms_call_loan(call, n, b, e), result)
                if loan is None:
                    out, out_ct = encode(result, "arrow")
            elif loan is None:
                out, out_ct = encode(result, codec)
            if loan is not None:
                st = lib.hms_call_reply_block(call, loan.take(), loan.nbytes, loan.content_type, err)
                if st:
                    lib.hms_call_set_error(call, st, ffi.string(err.message), ffi.NULL, 0, 0)
                    return st
                return 0
        st = lib.hms_call_reply(call, out, len(out), out_ct, err)
        if st:
            lib.hms_call_set_error(call, st, ffi.string(err.message), ffi.NULL, 0, 0)
            return st
        return 0
    except FFIError as e:
        return _set_error(call, e)
    except (KeyboardInterrupt, SystemExit) as e:
        entry.service.node._interrupt(e)
        return _set_error(call, error_for(1, "the server is shutting down"))
    except BaseException as e:  # a handler bug must become an error reply, never a dead dispatcher
        node = entry.service.node
        if node.log_handler_errors:
            _report(node.log_handler_errors, f"hms_ffi_native: handler {entry.service.name}.{entry.name} raised:", True)
        return _set_error(call, error_for(2, f"{type(e).__name__}: {e}"))


def _take_request(call, req, ct):
    """A request of a zero-copy content type: the arena block itself when it came through the arena
    (kept past the handler, released when the last view goes), else a private copy."""
    own = ffi.new("hms_payload_t *")
    err = ffi.new("hms_error_t *")
    if lib.hms_call_take_request(call, own, err) == 0:
        return ZERO_COPY_DECODERS[ct](ReceivedPayload(own).view)
    n = req.len
    return ZERO_COPY_DECODERS[ct](ffi.buffer(req.data, n)[:] if n else b"")


_INLINE_ARRAY_BYTES = 65536  # smaller arrays are sent inline (one encode, copied into the ring)


def _arrow_copy_loan(loan_fn, obj):
    """Arrow data from private memory into a new arena block (the one copy of its buffers, laid out
    by csrc/arrow.c), or None when it is small enough to go inline."""
    from . import _arrow

    size = _arrow.encoded_size(obj)
    if size <= _INLINE_ARRAY_BYTES:
        return None
    loan = _ndarray.make_loan(loan_fn, size, _raise, register=False)
    loan.content_type = CT_ARROW
    _arrow.encode_into(obj, memoryview(loan.buf))
    return loan


def _decode_arrow_block(view):
    """A received Arrow payload (arena block or private copy): pyarrow objects over it, no copy; the
    block goes back to its owner when the last of them is gone."""
    from . import _arrow

    return _arrow.decode(view, view)


_ndarray.register_zero_copy_decoder(CT_ARROW, _decode_arrow_block)


def _array_copy_loan(loan_fn, arr):
    """A large array from private memory into a new arena block (the one copy), or None for small
    arrays (sent inline)."""
    _ndarray._check_dtype(arr.dtype)
    size = _ndarray.encoded_size(arr)
    if size <= _INLINE_ARRAY_BYTES:
        return None
    loan = _ndarray.make_loan(loan_fn, size, _raise, register=False)
    loan.content_type = CT_NDARRAY
    _ndarray.write_into(memoryview(loan.buf), arr)
    return loan


def _arena_stats(fn) -> Dict[str, int]:
    st = ffi.new("hms_arena_stats_t *")
    lib.hms_arena_stats_init(st)
    err = ffi.new("hms_error_t *")
    rc = fn(st, err)
    if rc:
        _raise(rc, err)
    return {k: int(getattr(st, k)) for k in ("quota", "segments", "mapped_bytes", "blocks_outstanding",
                                             "bytes_outstanding", "blocks_allocated", "bad_releases",
                                             "peer_segments_mapped", "peer_mapped_bytes", "peer_blocks_held")}


class _BatchHandler:
    __slots__ = ("service", "name", "fn", "handle")

    def __init__(self, service: "Service", name: str, fn: Callable) -> None:
        self.service, self.name, self.fn = service, name, fn
        self.handle = ffi.new_handle(self)


_MIXED_CT = 0xFFFFFFFF


@ffi.def_extern()
def _hms_py_batch_handler(batch, user_data):
    entry: _BatchHandler = ffi.from_handle(user_data)
    node = entry.service.node
    try:
        n = batch.count
        offs = ffi.unpack(batch.offsets, n + 1)
        raw = ffi.buffer(batch.data, offs[n])[:]  # one copy of the whole run, then slices
        ct = batch.content_type
        if ct == CT_RAW:
            items = [raw[a:b] for a, b in zip(offs, offs[1:])]
        else:
            items = []
            for i in range(n):
                ict = ct if ct != _MIXED_CT else batch.items[i].content_type
                data = raw[offs[i]:offs[i + 1]]
                try:
                    items.append(data if ict == CT_RAW else decode(ict, data))
                except FFIError as e:  # one bad item must not cost the others (one-way: nobody to tell)
                    if node.log_handler_errors:
                        _report(node.log_handler_errors, f"hms_ffi_native: {entry.service.name}.{entry.name}: "
                                f"dropped a one-way item that does not decode: {e}", None)
        entry.fn(items)
    except (KeyboardInterrupt, SystemExit) as e:
        node._interrupt(e)
    except BaseException:  # one-way calls have no caller to tell: log, keep serving
        if node.log_handler_errors:
            _report(node.log_handler_errors, f"hms_ffi_native: batch handler {entry.service.name}.{entry.name} raised:",
                    True)


class _Incoming:
    """The items a client streams to a handler, as an iterator. Valid only while the handler runs."""

    __slots__ = ("_call", "_item", "_end", "_err", "_checker", "_index")

    def __init__(self, call, checker=None) -> None:
        self._call = call
        self._checker = checker  # a function's schema applies to each item of a client stream
        self._index = 0
        self._item = ffi.new("hms_payload_t *")
        self._end = ffi.new("int *")
        self._err = ffi.new("hms_error_t *")

    def __iter__(self) -> "_Incoming":
        return self

    def __next__(self) -> Any:
        item, end, err = self._item, self._end, self._err
        st = lib.hms_call_recv(self._call, item, end, -1, err)
        if st:
            _raise(st, err)
        if end[0]:
            raise StopIteration
        n = item.len
        data = ffi.buffer(item.data, n)[:] if n else b""
        ct = item.content_type
        lib.hms_payload_release(item)
        value = data if ct == CT_RAW else decode(ct, data)
        if self._checker is not None:
            try:
                self._checker(value)
            except InvalidArgument as e:
                field = (e.details or {}).get("field", "")
                at = f"[{self._index}]" + (field if field.startswith("[") or not field else "." + field)
                raise InvalidArgument(f"stream item {at}: {e.message.split(': ', 1)[-1]}",
                                      details={"field": at}) from None
        self._index += 1
        return value


def _serve_stream(call, entry: _Function, gen) -> int:
    """Sends a generator handler's items; stops it when the caller cancels or goes away."""
    err = entry.service.node._handler_err
    codec = entry.codec
    send = lib.hms_call_send
    try:
        for item in gen:
            if type(item) is bytes and codec is None:
                data, ct = item, CT_RAW
            else:
                data, ct = encode(item, codec)
            st = send(call, data, len(data), ct, err)
            if st:
                if st == lib.HMS_CANCELLED:
                    return st  # nobody listens any more; the finally closes the generator
                raise error_for(st, ffi.string(err.message).decode("utf-8", "replace"))
        return 0
    finally:
        gen.close()


class Service:
    """A named, versioned set of functions served by a :class:`Node`."""

    def __init__(self, node: "Node", name: str, version: str, ptr) -> None:
        self.node = node
        self.name = name
        self.version = version
        self._ptr = ptr
        self._functions: Dict[str, _Function] = {}
        self._batch_handlers: Dict[str, "_BatchHandler"] = {}

    def add_function(self, name: str, fn: Callable, *, codec: Optional[str] = None,
                     idempotent: bool = False, client_stream: bool = False, request_type=None,
                     schema: Any = None) -> None:
        """Registers ``fn(payload[, ctx])`` under ``name``. ``codec`` fixes the reply encoding
        ('raw', 'cbor', 'json', 'protobuf'); by default a reply to a CBOR request is CBOR, a protobuf
        message goes as protobuf, otherwise bytes go raw and other values as CBOR.
        ``request_type`` (a generated protobuf message class) makes the function take that message:
        payloads that do not parse, or lack proto2 required fields, are refused with
        ``InvalidArgument`` naming the type before the handler runs.
        ``schema`` (CBOR/JSON payloads; the language is in hms_ffi_native._schema and docs/idl.md,
        e.g. ``{"customer_id": str, "items": [{"sku": str, "qty": int}], "note?": str}``) is compiled
        once here and checked on every request (each item of a client stream) before the handler runs:
        a mismatch is refused with ``InvalidArgument("items[2].qty: expected int, got str",
        details={"field": "items[2].qty"})``."""
        self.node._check_open()
        if not callable(fn):
            raise InvalidArgument(f"handler for {name!r} must be callable, got {type(fn).__name__}")
        if not isinstance(name, str):
            raise InvalidArgument(f"function name must be a str, got {type(name).__name__}")
        if codec is not None and codec not in CODECS:
            raise InvalidArgument(f"unknown codec {codec!r}; use one of {sorted(CODECS)}")
        if request_type is not None and not hasattr(request_type, "FromString"):
            raise InvalidArgument(f"request_type for {name!r} must be a generated protobuf message class, got "
                                  f"{request_type!r}")
        checker = None
        if schema is not None:
            if request_type is not None:
                raise InvalidArgument(f"{name!r}: give request_type (protobuf) or schema (CBOR/JSON), not both")
            from ._schema import compile_schema

            checker = compile_schema(schema)
        entry = _Function(self, name, fn, codec, client_stream, request_type, checker)
        if client_stream and entry.is_async:
            raise InvalidArgument(f"handler for {name!r}: client-stream and bidirectional handlers read the caller's "
                                  "items on the serving thread, so they must be plain functions or generators, not "
                                  "async def")
        err = ffi.new("hms_error_t *")
        flags = ((lib.HMS_FN_IDEMPOTENT if idempotent else 0) | (lib.HMS_FN_STREAM if entry.stream else 0)
                 | (lib.HMS_FN_CLIENT_STREAM if client_stream else 0))
        st = lib.hms_function_add(self._ptr, name.encode(), flags, lib._hms_py_handler, entry.handle, err)
        if st:
            _raise(st, err)
        self._functions[name] = entry  # keeps the handle alive as long as the C side may use it
        _policy.apply_function(self.node._policy, self, name)  # the node's access policy, if any

    def set_access(self, name: str, *, uids=(), gids=(), owner: bool = False, anyone: bool = False,
                   roles=(), audit: Optional[str] = None) -> None:
        """Who may call ``name``: the uids, the gids (primary or supplementary), the owner (the serving
        uid) -- or ``anyone`` who reaches the socket; ``audit`` ('none', 'deny', 'all') overrides the
        node's level for it. Others get ``PermissionDenied``. ``roles`` only names them in messages."""
        self.node._check_open()
        flags = (lib.HMS_ACCESS_ANY if anyone else 0) | (lib.HMS_ACCESS_OWNER if owner else 0)
        _policy.set_access(self._ptr, name, flags, list(uids), list(gids), list(roles), audit)

    def set_limits(self, **limits: int) -> None:
        """Resource limits (0 = none): max_connections, max_inflight (per connection), max_ring_bytes,
        arena_quota, max_message. Each refuses only what exceeds it, with ResourceExhausted."""
        self.node._check_open()
        _policy.set_limits(self._ptr, **limits)

    def open_to_group(self, group) -> None:
        """Lets members of ``group`` (name or gid) reach this service's socket (docs/security.md)."""
        self.node._check_open()
        _policy.open_to_group(self._ptr, group)

    def function(self, name: Optional[str] = None, *, codec: Optional[str] = None,
                 idempotent: bool = False, client_stream: bool = False,
                 request_type=None, schema: Any = None) -> Callable[[Callable], Callable]:
        """Decorator form of :meth:`add_function`; the name defaults to the function's ``__name__``.

        A generator function serves a server stream (each ``yield`` is an item). With
        ``client_stream=True`` the handler receives an iterator of the caller's items instead of a
        payload; both together make a bidirectional stream."""
        if callable(name):  # used bare: @service.function
            fn = name
            self.add_function(fn.__name__, fn)
            return fn

        def deco(fn: Callable) -> Callable:
            self.add_function(name or fn.__name__, fn, codec=codec, idempotent=idempotent,
                              client_stream=client_stream, request_type=request_type, schema=schema)
            return fn

        return deco

    def add_batch_handler(self, name: str, fn: Callable[[list], Any]) -> None:
        """Routes one-way calls (``client.send``/``send_many``) of function ``name`` to ``fn(items)``
        many at a time: ``items`` is a list of the decoded payloads of consecutive one-way calls, in
        arrival order (up to 4096 per call). One call into Python per run instead of per message is what
        makes high one-way rates possible. Normal calls of ``name`` still go to its own handler; its
        return value is ignored and exceptions are logged (one-way calls have nobody to tell)."""
        self.node._check_open()
        if not callable(fn):
            raise InvalidArgument(f"batch handler for {name!r} must be callable, got {type(fn).__name__}")
        if name not in self._functions:
            raise NotFound(f"{self.name}@{self.version} has no function {name!r}; add it first "
                           f"(the batch handler serves its one-way calls, the function its normal calls)")
        entry = _BatchHandler(self, name, fn)
        err = ffi.new("hms_error_t *")
        st = lib.hms_function_set_batch_handler(self._ptr, name.encode(), lib._hms_py_batch_handler, entry.handle,
                                                err)
        if st:
            _raise(st, err)
        self._batch_handlers[name] = entry  # keeps the handle alive as long as the C side may use it

    def batch_handler(self, name: str) -> Callable[[Callable], Callable]:
        """Decorator form of :meth:`add_batch_handler`::

            @svc.function()
            def ingest(item): ...          # normal calls, and one-way calls if no batch handler

            @svc.batch_handler("ingest")
            def ingest_many(items): ...    # runs of one-way calls
        """
        def deco(fn: Callable) -> Callable:
            self.add_batch_handler(name, fn)
            return fn

        return deco

    @property
    def functions(self) -> List[str]:
        return list(self._functions)

    def stats(self) -> Dict[str, Any]:
        """This service's counters: calls, errors by status, latency histogram per function (see
        hms_ffi_native._stats for the dict)."""
        from ._stats import service_stats

        return service_stats(self)

    def __repr__(self) -> str:
        return f"<Service {self.name}@{self.version} functions={self.functions}>"


class Node:
    """A process's presence in the runtime directory: serves services and opens clients.

    ``spin_us`` is how long waiting threads busy-poll before sleeping (None = default 50 µs, 0 = never
    spin: lowest CPU, higher latency). ``ring_bytes`` is the per-direction ring size of connections
    this node serves (max message = ring_bytes/4 - 64).
    """

    def __init__(self, name: Optional[str] = None, *, runtime_dir: Optional[str] = None,
                 spin_us: Optional[float] = None, ring_bytes: int = 0,
                 log_handler_errors: bool = True, arena_quota: int = 0, policy: Any = None,
                 audit_log: Optional[str] = None, audit_level: Optional[str] = None, audit_max_bytes: int = 0,
                 audit_keep: int = 0, audit_queue: int = 0) -> None:
        # policy: a file (TOML/YAML), dict or hms.Policy applied to the services and functions added here;
        # audit_log/audit_level ('none'|'deny'|'all') override its [audit] table (docs/security.md).
        self._policy = _policy.load_policy(policy) if policy is not None else None
        opts = ffi.new("hms_node_options_t *")
        lib.hms_node_options_init(opts)
        keep = []
        if name is not None:
            if not isinstance(name, str):
                raise InvalidArgument(f"node name must be a str, got {type(name).__name__}")
            keep.append(ffi.new("char[]", name.encode()))
            opts.name = keep[-1]
        if runtime_dir is not None:
            keep.append(ffi.new("char[]", os.fsencode(runtime_dir)))
            opts.runtime_dir = keep[-1]
        opts.spin_ns = _spin_ns(spin_us)
        if not isinstance(ring_bytes, int) or ring_bytes < 0:
            raise InvalidArgument("ring_bytes must be a non-negative int (0 = default)")
        opts.ring_bytes = ring_bytes
        out = ffi.new("hms_node_t **")
        err = ffi.new("hms_error_t *")
        st = lib.hms_node_open(opts, out, err)
        if st:
            _raise(st, err)
        self._ptr = out[0]
        if arena_quota:
            if not isinstance(arena_quota, int) or isinstance(arena_quota, bool) or arena_quota < 0:
                raise InvalidArgument(f"arena_quota must be a non-negative int (0 = default), got {arena_quota!r}")
            lib.hms_node_set_arena_quota(self._ptr, arena_quota, ffi.NULL)
        self.arena_quota = arena_quota or lib.HMS_ARENA_DEFAULT_QUOTA
        audit = dict(self._policy.audit) if self._policy is not None else {}
        if audit_log is not None or audit.get("path"):
            try:
                _policy.set_audit(self._ptr, audit_log or audit["path"], audit_level or audit.get("level", "deny"),
                                  audit_max_bytes or audit.get("max_bytes", 0), audit_keep or audit.get("keep", 0),
                                  audit_queue or audit.get("queue", 0))
            except BaseException:
                lib.hms_node_close(self._ptr)
                self._ptr = None
                raise
        elif audit_level is not None:
            raise InvalidArgument("audit_level needs an audit_log path (or a policy with [audit] path)")
        self._spin_ns = opts.spin_ns
        self._handler_err = ffi.new("hms_error_t *")
        self.name = name or f"node-{os.getpid()}"
        self.log_handler_errors = log_handler_errors
        self._services: Dict[tuple, Service] = {}
        self._clients: "set[Client]" = set()
        self._thread: Optional[threading.Thread] = None
        self._interrupted: Optional[BaseException] = None
        self._stop_serving = False  # set by stop(): ends serve() (the C flag alone cannot tell a slice end)
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        self._deferred: Dict[int, tuple] = {}
        self._watcher = None
        self._loop_serving = False
        self._serve_event = threading.Event()
        self._poll_served = ffi.new("uint32_t *")
        self._poll_again = ffi.new("int *")
        self._poll_err = ffi.new("hms_error_t *")
        _tracing.refresh()  # spans when OpenTelemetry is set up (imports nothing otherwise)

    # -- lifecycle
    def _check_open(self) -> None:
        if self._ptr is None:
            raise FailedPrecondition("this node is closed; open a new Node")

    @property
    def runtime_dir(self) -> str:
        self._check_open()
        return ffi.string(lib.hms_node_runtime_dir(self._ptr)).decode()

    def service(self, name: str, version: str = "0.1.0") -> Service:
        """Adds (and publishes) a service. Raises AlreadyExists if any live process serves name@version."""
        self._check_open()
        if not isinstance(name, str) or not isinstance(version, str):
            raise InvalidArgument("service name and version must be str")
        out = ffi.new("hms_service_t **")
        err = ffi.new("hms_error_t *")
        st = lib.hms_service_add(self._ptr, name.encode(), version.encode(), out, err)
        if st:
            _raise(st, err)
        svc = Service(self, name, version, out[0])
        self._services[(name, version)] = svc
        _policy.apply_service(self._policy, svc)  # limits and group from the node's policy, if any
        return svc

    def serve(self, timeout: Optional[float] = None) -> None:
        """Serves on this thread until ``stop()``, Ctrl-C, or ``timeout`` seconds. (With ``async def``
        handlers the node's event loop serves, and this thread waits.)"""
        self._check_open()
        import time

        if self._has_async():
            self._serve_event.clear()
            self.start()
            end = None if timeout is None else time.monotonic() + timeout
            try:
                while not self._serve_event.is_set():
                    left = 0.2 if end is None else min(0.2, end - time.monotonic())
                    if left <= 0:
                        break
                    self._serve_event.wait(left)  # short waits: Ctrl-C stays responsive
            finally:
                self._stop_loop_serving()
            return

        end = None if timeout is None else time.monotonic() + timeout
        err = ffi.new("hms_error_t *")
        while True:
            # Slices of at most 0.2 s: a signal that lands while the loop is busy (not in epoll_wait,
            # so no EINTR) is seen by Python's handlers within one slice instead of never.
            left = _SERVE_SLICE_NS if end is None else max(0, min(_SERVE_SLICE_NS, int((end - time.monotonic()) * _NS)))
            st = lib.hms_node_serve(self._ptr, left, err)
            if self._interrupted is not None:
                e, self._interrupted = self._interrupted, None
                raise e
            if st == lib.HMS_CANCELLED:  # a signal: let Python run its handlers, then go on
                continue
            if st:
                _raise(st, err)
            if self._stop_serving:
                self._stop_serving = False
                return
            if end is not None and time.monotonic() >= end:
                return

    def _has_async(self) -> bool:
        return any(f.is_async for s in self._services.values() for f in s._functions.values())

    def start(self) -> "Node":
        """Serves on a background thread (daemon) until ``stop()`` or ``close()``.

        A node with ``async def`` handlers is served from its event loop (``async_loop``): requests
        are dispatched by the loop's thread, which also runs the coroutines, so plain and async
        handlers share one thread and never contend for the GIL."""
        self._check_open()
        with self._lock:
            if (self._thread is not None and self._thread.is_alive()) or self._loop_serving:
                raise FailedPrecondition(f"node {self.name!r} is already serving in the background")
            if not self._has_async():
                self._thread = threading.Thread(target=self._serve_forever, name=f"hms-serve-{self.name}",
                                                daemon=True)
                self._thread.start()
                return self
            self._loop_serving = True
        loop = self.async_loop
        done = threading.Event()

        def arm():
            loop.add_reader(lib.hms_node_event_fd(self._ptr), self._poll_step)
            self._poll_step()
            done.set()

        loop.call_soon_threadsafe(arm)
        done.wait(5)
        return self

    def _poll_step(self) -> None:
        ptr = self._ptr
        if ptr is None or not self._loop_serving:
            return
        st = lib.hms_node_poll(ptr, self._poll_served, self._poll_again, self._poll_err)
        if st == 0 and self._poll_again[0]:
            self._loop.call_soon(self._poll_step)  # more is waiting: come back after other tasks ran

    def _stop_loop_serving(self) -> None:
        if not self._loop_serving:
            return
        self._loop_serving = False
        loop = self._loop
        if loop is not None and self._ptr is not None:
            fd = lib.hms_node_event_fd(self._ptr)
            done = threading.Event()

            def unarm():
                loop.remove_reader(fd)
                done.set()

            if _running_loop() is loop:
                unarm()
            else:
                loop.call_soon_threadsafe(unarm)
                done.wait(5)

    def _serve_forever(self) -> None:
        _serving_nodes.add(self)
        err = ffi.new("hms_error_t *")
        while self._ptr is not None:
            st = lib.hms_node_serve(self._ptr, -1, err)
            if st == lib.HMS_CANCELLED:
                continue
            return

    # -- publish/subscribe
    def publisher(self, topic: str, **options) -> "Publisher":
        """A publisher of ``topic`` (see hms_ffi_native.Publisher for the options)."""
        from ._topic import Publisher

        return Publisher(self, topic, **options)

    def subscribe(self, pattern: str, **options) -> "Subscription":
        """A subscription to a topic or a glob such as ``"order.*"`` (see hms_ffi_native.Subscription)."""
        from ._topic import Subscription

        return Subscription(self, pattern, **options)

    # -- async handlers: an event loop of the node's own, on a thread of its own
    @property
    def async_loop(self) -> "asyncio.AbstractEventLoop":
        """The event loop that runs this node's ``async def`` handlers (started on first use)."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                t = threading.Thread(target=loop.run_forever, name=f"hms-async-{self.name}", daemon=True)
                t.start()
                self._loop, self._loop_thread = loop, t
            return self._loop

    def _start_async(self, call, entry: "_Function", req) -> int:
        """In the dispatcher: defer the call, hand it to the event loop, return at once."""
        n = req.len
        data = ffi.buffer(req.data, n)[:] if n else b""  # copy now: the ring slot is reused after return
        ct = req.content_type
        arg = _request_value(entry, ct, data)
        out = ffi.new("hms_deferred_t **")
        st = lib.hms_call_defer(call, out, self._handler_err)
        if st:
            raise error_for(st, ffi.string(self._handler_err.message).decode("utf-8", "replace"))
        d = out[0]
        ctx = CallContext(lib.hms_deferred_call(d), ct) if entry.wants_ctx else None
        coro = self._run_async(entry, arg, ctx, d)
        if _running_loop() is self._loop:
            self._loop.create_task(coro)  # served from the loop itself: no thread hop, no GIL convoy
        else:
            asyncio.run_coroutine_threadsafe(coro, self.async_loop)
        return 0

    async def _run_async(self, entry: "_Function", arg, ctx, d) -> None:
        key = int(ffi.cast("uintptr_t", d))
        self._deferred[key] = (asyncio.current_task(), d)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.ensure_future(self._watch_cancellations())
        err = ffi.new("hms_error_t *")
        try:
            try:
                if entry.is_async_gen:
                    await self._run_async_stream(entry, arg, ctx, d, err)
                    return
                result = await (entry.fn(arg, ctx) if entry.wants_ctx else entry.fn(arg))
                if type(result) is bytes and entry.codec is None:
                    out, out_ct = result, CT_RAW
                else:
                    out, out_ct = encode(result, entry.codec)
            except FFIError as e:
                details, dct = (encode(e.details) if e.details is not None else (b"", CT_NONE))
                lib.hms_deferred_fail(d, e.code, e.message.encode("utf-8", "replace")[:255], details, len(details), dct)
                return
            except asyncio.CancelledError:
                if lib.hms_call_time_left_ns(lib.hms_deferred_call(d)) <= 0:  # cancelled because time ran out
                    lib.hms_deferred_fail(d, 4, b"the call's deadline passed while its handler ran", ffi.NULL, 0, 0)
                else:
                    lib.hms_deferred_fail(d, 1, b"the call was cancelled", ffi.NULL, 0, 0)
                return
            except BaseException as e:  # a handler bug becomes an error reply
                if self.log_handler_errors:
                    _report(self.log_handler_errors,
                            f"hms_ffi_native: async handler {entry.service.name}.{entry.name} raised:", e)
                lib.hms_deferred_fail(d, 2, f"{type(e).__name__}: {e}".encode("utf-8", "replace")[:255], ffi.NULL, 0, 0)
                return
            lib.hms_deferred_reply(d, out, len(out), out_ct, err)
        finally:
            self._deferred.pop(key, None)

    async def _run_async_stream(self, entry: "_Function", arg, ctx, d, err) -> None:
        """An async generator handler: its items go out as they come; a full ring (slow consumer) is
        waited out in a worker thread, so the event loop keeps serving everything else."""
        agen = entry.fn(arg, ctx) if entry.wants_ctx else entry.fn(arg)
        codec, sent = entry.codec, ffi.new("int *")
        loop = asyncio.get_running_loop()
        try:
            async for item in agen:
                if type(item) is bytes and codec is None:
                    data, ct = item, CT_RAW
                else:
                    data, ct = encode(item, codec)
                st = lib.hms_deferred_send(d, data, len(data), ct, 0, sent, err)
                if st == 0 and not sent[0]:  # no room: the consumer is slow; wait without blocking the loop
                    werr = ffi.new("hms_error_t *")
                    wsent = ffi.new("int *")
                    st = await loop.run_in_executor(
                        None, lambda: lib.hms_deferred_send(d, data, len(data), ct, 1, wsent, werr))
                    if st:
                        err = werr
                if st == lib.HMS_CANCELLED:
                    raise asyncio.CancelledError()  # nobody listens any more
                if st:
                    raise error_for(st, ffi.string(err.message).decode("utf-8", "replace"))
        finally:
            await agen.aclose()
        lib.hms_deferred_reply(d, ffi.NULL, 0, CT_NONE, err)  # ends the stream (dropped if the caller left)

    async def _watch_cancellations(self) -> None:
        # While async calls run, look every 5 ms whether their callers cancelled (or went away, or
        # passed their deadline) and cancel the task: the handler sees asyncio.CancelledError.
        while self._deferred:
            await asyncio.sleep(0.005)
            for task, d in list(self._deferred.values()):
                if not task.done() and lib.hms_call_is_cancelled(lib.hms_deferred_call(d)):
                    task.cancel()

    def _stop_async(self) -> None:
        loop, t = self._loop, self._loop_thread
        if loop is None:
            return

        async def shutdown():
            for task, _ in list(self._deferred.values()):
                task.cancel()
            for _ in range(200):
                if not self._deferred:
                    break
                await asyncio.sleep(0.005)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        if not t.is_alive():
            loop.close()
        self._loop = self._loop_thread = None

    def _interrupt(self, exc: BaseException) -> None:
        self._interrupted = exc
        lib.hms_node_stop(self._ptr)

    def stop(self) -> None:
        """Stops serving (returns once the background thread, if any, has finished)."""
        if self._ptr is None:
            return
        self._stop_loop_serving()
        self._serve_event.set()
        self._stop_serving = True
        lib.hms_node_stop(self._ptr)
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join()
            self._thread = None

    def close(self) -> None:
        """Stops serving, closes this node's clients, unregisters its services. Idempotent."""
        if self._ptr is None:
            return
        self.stop()
        self._stop_async()  # pending async handlers answer (cancelled) before the node goes
        for c in list(self._clients):
            c.close()
        lib.hms_node_close(self._ptr)
        self._ptr = None

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # backstop only; close() is the contract
        try:
            if getattr(self, "_ptr", None) is not None and (self._thread is None or not self._thread.is_alive()):
                self.close()
        except Exception:
            pass

    def audit_stats(self) -> Dict[str, int]:
        """The audit log's counters: queued, written, dropped (queue full), rotations, write_errors."""
        self._check_open()
        return _policy.audit_stats(self._ptr)

    def audit_flush(self, timeout: Optional[float] = 5.0) -> None:
        """Waits until every audit record queued so far is in the file (DeadlineExceeded if not in time)."""
        self._check_open()
        _policy.audit_flush(self._ptr, _timeout_ns(timeout))

    # -- clients
    def arena_stats(self) -> Dict[str, int]:
        """Arena counters summed over the connections this node serves. Call it from a handler (the
        serving thread) or while the node is not serving."""
        self._check_open()
        return _arena_stats(lambda st, e: lib.hms_node_arena_stats(self._ptr, st, e))

    def connect(self, service: str, version: str = "*", *, timeout: Optional[float] = 5.0,
                spin_us: Optional[float] = None, ring_bytes: int = 0, arena_quota: int = 0) -> "Client":
        """Connects to the newest live ``service`` matching ``version`` ('*', '^1', '~1.2', '1.2.3', '>=1.2')."""
        self._check_open()
        if not isinstance(service, str):
            raise InvalidArgument(f"service name must be a str, got {type(service).__name__}")
        if not isinstance(version, str):
            raise InvalidArgument(f"version requirement must be a str, got {type(version).__name__}")
        opts = ffi.new("hms_connect_options_t *")
        lib.hms_connect_options_init(opts)
        opts.timeout_ns = _timeout_ns(timeout)
        opts.spin_ns = _spin_ns(spin_us)
        opts.ring_bytes = ring_bytes
        out = ffi.new("hms_client_t **")
        err = ffi.new("hms_error_t *")
        st = lib.hms_connect(self._ptr, service.encode(), version.encode(), opts, out, err)
        if st:
            _raise(st, err)
        client = Client(self, out[0], opts.spin_ns if opts.spin_ns >= 0 else self._spin_ns)
        self._clients.add(client)
        if arena_quota:
            client.arena_quota = arena_quota
        return client

    def __repr__(self) -> str:
        state = "closed" if self._ptr is None else f"services={[f'{n}@{v}' for n, v in self._services]}"
        return f"<Node {self.name} {state}>"


_serving_nodes: "weakref.WeakSet[Node]" = weakref.WeakSet()


@atexit.register
def _close_serving_nodes() -> None:
    # Background dispatchers must not call into a finalizing interpreter.
    for node in list(_serving_nodes):
        try:
            node.close()
        except Exception:
            pass


# ----------------------------------------------------------------------------------------------------
# Calling
# ----------------------------------------------------------------------------------------------------
def _reply_value(st: int, data: bytes, ct: int, message: bytes, origin: int):
    """Turns one completed call into its value or the exception instance to raise."""
    if st == 0:
        return (data if ct == CT_RAW else decode(ct, data)), None
    details = None
    if data:
        try:
            details = decode(ct, data)
        except FFIError:
            details = data
    return None, error_for(st, message.decode("utf-8", "replace"), details=details,
                           source="remote" if origin == lib.HMS_ORIGIN_REMOTE else "local")


def _completion_value(comp):
    if comp.status == 0 and comp.payload.content_type in ZERO_COPY_DECODERS:
        return _ndarray.decode_received(ffi.addressof(comp, "payload")), None
    n = comp.payload.len
    data = ffi.buffer(comp.payload.data, n)[:] if n else b""
    ct = comp.payload.content_type
    lib.hms_payload_release(ffi.addressof(comp, "payload"))
    return _reply_value(comp.status, data, ct, ffi.string(comp.message), comp.origin)


def _resolve(fut, value, exc) -> None:
    if fut.done():  # cancelled meanwhile
        return
    if exc is None:
        fut.set_result(value)
    else:
        fut.set_exception(exc)


class _CompBuffer:
    """A completion array and its counter, owned by one harvesting thread."""

    __slots__ = ("arr", "count")

    def __init__(self, n: int = 64) -> None:
        self.arr = ffi.new("hms_completion_t[]", n)
        self.count = ffi.new("size_t *")


class _AsyncState:
    """Futures of one client's asynchronous calls, and who harvests their completions.

    Completions are harvested by whoever gets there first: the asyncio loop (the client's eventfd is
    registered with loop.add_reader: no thread, no busy loop) or, for concurrent.futures callers, one
    harvester thread per client that sleeps in hms_client_poll with the GIL released.
    """

    def __init__(self, client: "Client") -> None:
        self.client = client
        self.lock = threading.Lock()
        self.pending: Dict[int, tuple] = {}  # token -> (future, loop or None)
        self.tokens = itertools.count(1)
        self.thread: Optional[threading.Thread] = None
        self.loops: "weakref.WeakSet[asyncio.AbstractEventLoop]" = weakref.WeakSet()
        self.fd = lib.hms_client_event_fd(client._ptr)
        self.closed = False
        self.loop_comp = _CompBuffer()  # used on event-loop threads only
        self._tls = threading.local()

    def thread_comp(self):
        comp = getattr(self._tls, "comp", None)
        if comp is None:
            comp = self._tls.comp = _CompBuffer()
        return comp

    def register(self, fut, loop) -> int:
        token = next(self.tokens)
        self.pending[token] = (fut, loop)  # dict operations are atomic under the GIL
        return token

    def forget(self, token: int) -> None:
        self.pending.pop(token, None)

    def drain(self, timeout_ns: int, comp, ncomp: int) -> int:
        """Harvests completions; returns how many (-1 once the connection is dead and all failed).
        ``comp`` is a per-thread ``hms_completion_t[ncomp]``; its last slot is never used so that a
        ``size_t`` counter can live beside it (see _comp_buffer)."""
        ptr = self.client._ptr
        if ptr is None:
            return 0
        count, err = comp.count, self.client._scratch.err
        st = lib.hms_client_poll(ptr, comp.arr, ncomp, count, timeout_ns, err)
        n = count[0]
        if n:
            pending = self.pending
            here = _running_loop()
            arr = comp.arr
            for i in range(n):
                c = arr[i]
                entry = pending.pop(int(ffi.cast("uintptr_t", c.user_data)), None)  # atomic under the GIL
                plen = c.payload.len
                data = ffi.buffer(c.payload.data, plen)[:] if plen else b""
                ct, status = c.payload.content_type, c.status
                lib.hms_payload_release(ffi.addressof(c, "payload"))
                if entry is None:
                    continue
                if status == 0:
                    value, exc = (data if ct == CT_RAW else decode(ct, data)), None
                else:
                    value, exc = _reply_value(status, data, ct, ffi.string(c.message), c.origin)
                fut, loop = entry
                if loop is None or loop is here:
                    _resolve(fut, value, exc)
                else:
                    try:
                        loop.call_soon_threadsafe(_resolve, fut, value, exc)
                    except RuntimeError:  # the loop is closed: nobody waits any more
                        pass
        elif st:
            # Dead connection and nothing left: fail whatever is still registered.
            msg = ffi.string(err.message).decode("utf-8", "replace")
            with self.lock:
                entries, self.pending = list(self.pending.values()), {}
            for fut, loop in entries:
                exc = error_for(st, msg)
                if loop is None:
                    _resolve(fut, None, exc)
                else:
                    try:
                        loop.call_soon_threadsafe(_resolve, fut, None, exc)
                    except RuntimeError:
                        pass
            self._unwatch()  # the fd stays readable (hung up): stop loops from spinning on it
            return -1
        return n

    def ensure_thread(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            return
        self.thread = threading.Thread(target=self._harvest_forever, name="hms-completions", daemon=True)
        self.thread.start()

    def _harvest_forever(self) -> None:
        comp = _CompBuffer()
        while not self.closed:
            with self.lock:
                threaded = any(loop is None for _, loop in self.pending.values())
            if not threaded:
                # Nothing for this thread: sleep until a concurrent future is submitted.
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            if self.drain(100_000_000, comp, 64) < 0:
                return

    _wake = None  # set in Client.__init__ (threading.Event)

    def ensure_reader(self, loop) -> None:
        if loop in self.loops:
            return
        self.loops.add(loop)
        loop.add_reader(self.fd, self.drain, 0, _CompBuffer(), 64)

    def _unwatch(self) -> None:
        here = _running_loop()
        for loop in list(self.loops):
            self.loops.discard(loop)
            try:
                if here is loop:
                    loop.remove_reader(self.fd)
                else:
                    loop.call_soon_threadsafe(loop.remove_reader, self.fd)
            except RuntimeError:
                pass

    def close(self) -> None:
        self.closed = True
        if self._wake is not None:
            self._wake.set()
        self._unwatch()
        with self.lock:
            entries, self.pending = list(self.pending.values()), {}
        for fut, loop in entries:
            exc = FailedPrecondition("the client was closed while the call was in flight")
            if loop is None:
                _resolve(fut, None, exc)
            else:
                try:
                    loop.call_soon_threadsafe(_resolve, fut, None, exc)
                except RuntimeError:
                    pass
        t = self.thread
        if t is not None and t is not threading.current_thread():
            t.join(5)


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _Scratch(threading.local):
    def __init__(self) -> None:
        self.resp = ffi.new("hms_payload_t *")
        self.err = ffi.new("hms_error_t *")
        self.call_id = ffi.new("uint64_t *")


class Client:
    """A connection to one service. Thread-safe: share one client between threads."""

    def __init__(self, node: Node, ptr, spin_ns: int = -1) -> None:
        self._node = node
        self._ptr = ptr
        self._scratch = _Scratch()
        n = lib.hms_client_function_count(ptr)
        name = ffi.new("const char **")
        fid = ffi.new("uint32_t *")
        flags = ffi.new("uint32_t *")
        self.functions: Dict[str, int] = {}
        for i in range(n):
            lib.hms_client_function_at(ptr, i, name, fid, flags)
            self.functions[ffi.string(name[0]).decode()] = fid[0]
        self.service = ffi.string(lib.hms_client_service_name(ptr)).decode()
        self.version = ffi.string(lib.hms_client_service_version(ptr)).decode()
        self.server_pid = lib.hms_client_server_pid(ptr)
        self.max_message = lib.hms_client_max_message(ptr)
        self._async: Optional[_AsyncState] = None
        self._async_lock = threading.Lock()
        self._spin_ns = 50_000 if spin_ns < 0 else spin_ns
        _tracing.refresh()

    # -- helpers shared by the call patterns
    def _prepare(self, function: str, payload: Any, codec: Optional[str]):
        if self._ptr is None:
            raise FailedPrecondition(f"client of {self.service}@{self.version} is closed; connect again")
        fid = self.functions.get(function)
        if fid is None:
            if not isinstance(function, str):
                raise InvalidArgument(f"function name must be a str, got {type(function).__name__}")
            known = ", ".join(sorted(self.functions)) or "none"
            raise NotFound(f"{self.service}@{self.version} has no function {function!r} (it has: {known})")
        if codec is None and type(payload) is bytes:
            return fid, payload, CT_RAW
        if codec is None and _ndarray.is_ndarray(payload):
            return fid, _ndarray.encode_bytes(payload), CT_NDARRAY
        data, ct = encode(payload, codec)
        return fid, data, ct

    def _loan_payload(self, payload):
        """The loan to send for ``payload``: its own (a loaned buffer/array: no copy), a new one filled
        from a large private array (one copy), or None (encode and send inline/copied by the core)."""
        loan = _ndarray.loan_for(payload)
        if loan is not None:
            return loan
        if _ndarray.is_ndarray(payload) and self._ptr is not None:
            return _array_copy_loan(lambda n, b, e: lib.hms_loan(self._ptr, n, b, e), payload)
        if is_arrow(payload) and self._ptr is not None:
            return _arrow_copy_loan(lambda n, b, e: lib.hms_loan(self._ptr, n, b, e), payload)
        return None

    # -- arena (zero copy)
    def loan(self, nbytes: int) -> "_ndarray.Loan":
        """A writable block of ``nbytes`` in this connection's shared-memory arena:
        ``with client.loan(n) as buf: buf[:] = ...; client.call("f", buf)`` sends it without a copy
        (raw content type). Leaving the ``with`` block gives back a block that was not sent."""
        self._check_usable()
        return _ndarray.make_loan(lambda n, b, e: lib.hms_loan(self._ptr, n, b, e), nbytes, _raise)

    def loan_array(self, shape, dtype="float64"):
        """A writable ndarray in the arena: fill it and pass it to :meth:`call` to send it without a
        copy. Returns the array."""
        self._check_usable()
        return _ndarray.make_array_loan(lambda n, b, e: lib.hms_loan(self._ptr, n, b, e), shape, dtype,
                                        _raise).array

    def _check_usable(self) -> None:
        if self._ptr is None:
            raise FailedPrecondition(f"client of {self.service}@{self.version} is closed; connect again")

    @property
    def max_inline(self) -> int:
        """The largest payload carried inline in a ring frame; larger ones go through the arena."""
        return lib.hms_client_max_inline(self._ptr) if self._ptr is not None else 0

    @property
    def arena_quota(self) -> int:
        return self.max_message

    @arena_quota.setter
    def arena_quota(self, nbytes: int) -> None:
        self._check_usable()
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise InvalidArgument(f"arena_quota must be a non-negative int (0 = default), got {nbytes!r}")
        err = ffi.new("hms_error_t *")
        st = lib.hms_client_set_arena_quota(self._ptr, nbytes, err)
        if st:
            _raise(st, err)
        self.max_message = lib.hms_client_max_message(self._ptr)

    def arena_stats(self) -> Dict[str, int]:
        """Counters of this connection's arena (blocks outstanding, segments, bad releases, views held)."""
        self._check_usable()
        return _arena_stats(lambda st, e: lib.hms_client_arena_stats(self._ptr, st, e))

    def _async_state(self) -> _AsyncState:
        a = self._async
        if a is None:
            with self._async_lock:
                if self._async is None:
                    st = _AsyncState(self)
                    st._wake = threading.Event()
                    self._async = st
                a = self._async
        return a

    def _try_submit(self, fid: int, data: bytes, ct: int, tns: int, token: int):
        """Returns the call id, or None when all 1024 slots are in flight (the caller harvests and retries)."""
        if len(data) > self.max_message:
            raise ResourceExhausted(f"request of {len(data)} bytes exceeds this connection's max message of "
                                    f"{self.max_message} bytes; connect with a larger ring_bytes or split it")
        s = self._scratch
        st = lib.hms_call_submit(self._ptr, fid, data, len(data), ct, 0, tns, ffi.NULL, ffi.cast("void *", token),
                                 s.call_id, s.err)
        if st == lib.HMS_RESOURCE_EXHAUSTED:
            return None
        if st:
            _raise(st, s.err)
        return s.call_id[0]

    def call_async(self, function: str, payload: Any = None, *, timeout: Optional[float] = None,
                   codec: Optional[str] = None) -> "concurrent.futures.Future":
        """Starts a call and returns a ``concurrent.futures.Future`` of its reply. Cancelling the
        future cancels the call (the server skips it, or its handler sees ``ctx.cancelled``)."""
        fid, data, ct = self._prepare(function, payload, codec)
        a = self._async_state()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        token = a.register(fut, None)
        tns = _timeout_ns(timeout)
        try:
            while True:
                call_id = self._try_submit(fid, data, ct, tns, token)
                if call_id is not None:
                    break
                a.drain(1_000_000, a.thread_comp(), 64)  # back-pressure: help harvest, then retry
        except BaseException:
            a.forget(token)
            raise
        a.ensure_thread()
        a._wake.set()

        def on_done(f, call_id=call_id, token=token):
            if f.cancelled() and self._ptr is not None:
                a.forget(token)
                lib.hms_call_cancel(self._ptr, call_id, ffi.NULL)

        fut.add_done_callback(on_done)
        return fut

    async def acall(self, function: str, payload: Any = None, *, timeout: Optional[float] = None,
                    codec: Optional[str] = None) -> Any:
        """``await client.acall(...)``: the reply, with the event loop watching the client's eventfd
        (no thread per call, no polling). Cancelling the task cancels the call on the server."""
        fid, data, ct = self._prepare(function, payload, codec)
        loop = asyncio.get_running_loop()
        a = self._async_state()
        a.ensure_reader(loop)
        fut = loop.create_future()
        token = a.register(fut, loop)
        tns = _timeout_ns(timeout)
        try:
            while True:
                call_id = self._try_submit(fid, data, ct, tns, token)
                if call_id is not None:
                    break
                a.drain(0, a.loop_comp, 64)  # back-pressure: harvest, let other tasks run, retry
                await asyncio.sleep(0)
        except BaseException:
            a.forget(token)
            raise
        # Harvest and arm the eventfd (the server rings it only for a client that said it waits).
        # When the loop has nothing else to run, spin for the reply first: a reply microseconds away
        # then costs no wake-up. With other tasks ready, only look, so they are not held up.
        ready = getattr(loop, "_ready", None)
        a.drain(self._spin_ns if ready is not None and len(ready) == 0 else 0, a.loop_comp, 64)
        timer = None
        if timeout is not None:  # the deadline fires in C when someone polls: make sure someone does
            timer = loop.call_later(timeout + 0.001, a.drain, 0, _CompBuffer(8), 8)
        try:
            return await fut
        except asyncio.CancelledError:
            a.forget(token)
            if self._ptr is not None:
                lib.hms_call_cancel(self._ptr, call_id, ffi.NULL)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def astream(self, function: str, payload: Any = None, *, timeout: Optional[float] = None,
                codec: Optional[str] = None) -> "AsyncStream":
        """A server stream for asyncio: ``async for item in client.astream("Export", q): ...``. Items
        that already arrived are handed out without leaving the loop; waiting for the next burst
        happens in the loop's default executor, so other tasks run meanwhile. Leaving the loop early
        (or ``await s.aclose()``) cancels the stream."""
        return AsyncStream(self.stream(function, payload, timeout=timeout, codec=codec))

    def stream(self, function: str, payload: Any = None, *, timeout: Optional[float] = None,
               codec: Optional[str] = None) -> "Stream":
        """Calls a server-streaming function (a generator handler) and returns an iterator of its items.
        ``timeout`` bounds the whole stream. Leaving the loop early (or ``close()``) cancels it."""
        fid, data, ct = self._prepare(function, payload, codec)
        out = ffi.new("hms_stream_t **")
        err = self._scratch.err
        st = lib.hms_stream_open(self._ptr, fid, data, len(data), ct, lib.HMS_STREAM_SERVER, _timeout_ns(timeout),
                                 out, err)
        if st:
            _raise(st, err)
        return Stream(self, out[0], function, timeout)

    def _open_client_stream(self, function: str, flags: int, timeout: Optional[float]) -> "Stream":
        fid, _, _ = self._prepare(function, None, None)
        out = ffi.new("hms_stream_t **")
        err = self._scratch.err
        st = lib.hms_stream_open(self._ptr, fid, ffi.NULL, 0, CT_NONE, flags, _timeout_ns(timeout), out, err)
        if st:
            _raise(st, err)
        return Stream(self, out[0], function, timeout)

    def client_stream(self, function: str, requests, *, timeout: Optional[float] = None,
                      codec: Optional[str] = None) -> Any:
        """Sends every item of ``requests`` to a client-streaming function (its handler iterates them)
        and returns its single reply. A full ring makes this wait: the handler sets the pace."""
        s = self._open_client_stream(function, lib.HMS_STREAM_CLIENT, timeout)
        with s:
            try:
                for item in requests:
                    s.send(item, codec=codec)
                s.finish()
            except FFIError:
                pass  # the handler may have failed early: its error (below) explains more than ours
            for reply in s:
                return reply
            return None

    def bidi_stream(self, function: str, requests, *, timeout: Optional[float] = None,
                    codec: Optional[str] = None) -> "Stream":
        """Bidirectional stream: ``requests`` is sent from a background thread while you iterate the
        replies. The handler is a generator that iterates its input and yields replies."""
        s = self._open_client_stream(function, lib.HMS_STREAM_CLIENT | lib.HMS_STREAM_SERVER, timeout)

        def pump():
            try:
                for item in requests:
                    if s._ptr is None:
                        return
                    s.send(item, codec=codec)
                s.finish()
            except FFIError:
                pass  # the stream ended (error, cancel, dead server): the reader sees why
            except BaseException as e:  # the request iterator itself failed: cancel, report to the reader
                s._sender_error = e
                s.cancel()

        s._sender = threading.Thread(target=pump, name="hms-bidi-send", daemon=True)
        s._sender.start()
        return s

    def batch(self, calls, *, timeout: Optional[float] = None, codec: Optional[str] = None) -> List[Any]:
        """Sends many calls with one wake-up of the server and returns their results in order. Each
        entry is the reply or, for a call that failed, the exception instance (nothing is raised for
        individual failures). ``calls`` holds ``(function, payload)`` pairs."""
        prepared = [self._prepare(fn, payload, codec) for fn, payload in calls]
        n = len(prepared)
        if n == 0:
            return []
        items = ffi.new("hms_batch_item_t[]", n)
        keep = []
        for i, (fid, data, ct) in enumerate(prepared):
            buf = ffi.from_buffer(data)
            keep.append(buf)
            it = items[i]
            it.fn_id = fid
            it.content_type = ct
            it.data = buf
            it.len = len(data)
        out = ffi.new("hms_completion_t[]", n)
        err = ffi.new("hms_error_t *")
        st = lib.hms_call_batch(self._ptr, items, n, 0, out, _timeout_ns(timeout), err)
        results = []
        for i in range(n):
            value, exc = _completion_value(out[i])
            results.append(exc if exc is not None else value)
        if st and all(isinstance(r, FFIError) for r in results):
            _raise(st, err)
        return results

    def send(self, function: str, payload: Any = None, *, codec: Optional[str] = None) -> None:
        """One-way call: the handler runs, nothing comes back (its errors are discarded)."""
        fid, data, ct = self._prepare(function, payload, codec)
        err = self._scratch.err
        st = lib.hms_call_submit(self._ptr, fid, data, len(data), ct, lib.HMS_CALL_ONEWAY, -1, ffi.NULL, ffi.NULL,
                                 ffi.NULL, err)
        if st:
            _raise(st, err)

    def send_many(self, function: str, payloads, *, codec: Optional[str] = None) -> None:
        """One-way calls of one function, all written with one wake-up of the server. Payloads that are
        all ``bytes`` are packed without per-item Python work beyond a join."""
        if self._ptr is None:
            raise FailedPrecondition(f"client of {self.service}@{self.version} is closed; connect again")
        fid, _, _ = self._prepare(function, b"", None)
        if codec is None and all(type(p) is bytes for p in payloads):
            blobs, ct = payloads, CT_RAW
        else:
            enc = [encode(p, codec) for p in payloads]
            cts = {c for _, c in enc}
            if len(cts) > 1:
                raise InvalidArgument("send_many needs payloads of one codec; pass codec= explicitly")
            blobs, ct = [d for d, _ in enc], (cts.pop() if cts else CT_RAW)
        n = len(blobs)
        if n == 0:
            return
        data = b"".join(blobs)
        lens = ffi.new("size_t[]", [len(b) for b in blobs])
        err = ffi.new("hms_error_t *")
        st = lib.hms_call_batch_packed(self._ptr, fid, ct, data, lens, n, lib.HMS_CALL_ONEWAY, ffi.NULL, -1, err)
        if st:
            _raise(st, err)

    def call(self, function: str, payload: Any = None, *, timeout: Optional[float] = None,
             codec: Optional[str] = None) -> Any:
        """Calls ``function`` with ``payload`` and returns the decoded reply.

        Raises the status's exception (``hms.NotFound``, ``hms.DeadlineExceeded``,
        ``hms.Unavailable``, ...) on failure; remote errors carry the handler's message and details.
        """
        ptr = self._ptr
        fid = self.functions.get(function) if ptr is not None else None
        tns = -1 if timeout is None else _timeout_ns(timeout)
        s = self._scratch
        resp, err = s.resp, s.err
        if fid is not None and codec is None and type(payload) is bytes:
            data, ct = payload, CT_RAW  # the hot path: no extra Python call
            st = lib.hms_call_bytes(ptr, fid, data, len(data), ct, resp, tns, err)
        else:
            loan = self._loan_payload(payload) if codec is None else None
            if loan is not None:
                if fid is None:
                    fid, _, _ = self._prepare(function, b"", None)
                st = lib.hms_call_block(ptr, fid, loan.take(), loan.nbytes, loan.content_type, resp, tns, err)
            else:
                fid, data, ct = self._prepare(function, payload, codec)
                st = lib.hms_call_bytes(ptr, fid, data, len(data), ct, resp, tns, err)
        n = resp.len
        rct = resp.content_type
        if st == 0 and rct in ZERO_COPY_DECODERS:
            return _ndarray.decode_received(resp)  # a read-only view of the reply's block: no copy
        out = ffi.buffer(resp.data, n)[:] if n else b""
        lib.hms_payload_release(resp)
        if st:
            details = None
            if n:
                try:
                    details = decode(rct, out)
                except FFIError:
                    details = out
            _raise(st, err, details)
        if rct == CT_RAW:
            return out
        return decode(rct, out)

    def close(self) -> None:
        """Closes the connection. Idempotent. Calls in flight on other threads must have returned."""
        if self._ptr is None:
            return
        if self._async is not None:
            self._async.close()
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            lib.hms_client_close(ptr)
            self._node._clients.discard(self)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._ptr is None else f"pid={self.server_pid}"
        return f"<Client {self.service}@{self.version} {state}>"


_BURST_BYTES = 256 << 10  # Stream: items up to this size are copied out many per call
_BURST_ITEMS = 1024


class AsyncStream:
    """A :class:`Stream` as an async iterator (``Client.astream``)."""

    def __init__(self, stream: "Stream") -> None:
        self._stream = stream

    def __aiter__(self) -> "AsyncStream":
        return self

    async def __anext__(self) -> Any:
        s = self._stream
        if s._burst_at < len(s._burst) and (s._deadline is None or time.monotonic() < s._deadline):
            return s.next_item()  # already here: no thread hop
        try:
            return await asyncio.get_running_loop().run_in_executor(None, self._next_or_stop)
        except asyncio.CancelledError:
            s.cancel()
            raise

    def _next_or_stop(self) -> Any:
        try:
            return self._stream.next_item()
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._stream.close()

    async def __aenter__(self) -> "AsyncStream":
        return self

    async def __aexit__(self, *exc) -> None:
        self._stream.close()

    def cancel(self) -> None:
        self._stream.cancel()


class Stream:
    """Items of a server stream, in order. Iterate it; ``next_item(timeout)`` waits with a per-item
    limit. End of stream ends the iteration; an error mid-stream raises its exception; ``cancel()``
    stops the producer. Use it as a context manager (or exhaust it) so it is closed."""

    def __init__(self, client: Client, ptr, function: str, timeout: Optional[float] = None) -> None:
        self._client = client
        # The whole stream's deadline, also checked for items already taken from the ring in a burst.
        self._deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        self._ptr = ptr
        self.function = function
        self._item = ffi.new("hms_payload_t *")
        self._end = ffi.new("int *")
        self._err = ffi.new("hms_error_t *")
        self._send_err = ffi.new("hms_error_t *")
        self._sender: Optional[threading.Thread] = None
        self._sender_error: Optional[BaseException] = None
        self._burst: List[Any] = []  # items taken in one hms_stream_next_many call, handed out in order
        self._burst_at = 0
        self._many = None  # (buf, offsets, content types, n) scratch, made on first use

    def send(self, item: Any, *, codec: Optional[str] = None) -> None:
        """Sends one item of a client (or bidirectional) stream."""
        ptr = self._ptr
        if ptr is None:
            raise FailedPrecondition("the stream is closed")
        if codec is None and type(item) is bytes:
            data, ct = item, CT_RAW
        else:
            data, ct = encode(item, codec)
        st = lib.hms_stream_send(ptr, data, len(data), ct, self._send_err)
        if st:
            _raise(st, self._send_err)

    def finish(self) -> None:
        """No more items: the handler's iteration of its input ends."""
        ptr = self._ptr
        if ptr is None:
            raise FailedPrecondition("the stream is closed")
        st = lib.hms_stream_finish(ptr, self._send_err)
        if st:
            _raise(st, self._send_err)

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> Any:
        return self.next_item(None)

    def next_item(self, timeout: Optional[float] = None) -> Any:
        """The next item; StopIteration at the end; DeadlineExceeded when ``timeout`` passes first."""
        ptr = self._ptr
        if ptr is None:
            raise StopIteration
        if self._client._ptr is None:
            self.close()
            raise FailedPrecondition("the client of this stream was closed")
        burst = self._burst
        if self._burst_at < len(burst):
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._burst = []
                self.close()
                raise error_for(lib.HMS_DEADLINE_EXCEEDED, f"stream of {self.function} passed its deadline")
            value = burst[self._burst_at]
            self._burst_at += 1
            return value
        item, end, err = self._item, self._end, self._err
        tns = -1 if timeout is None else _timeout_ns(timeout)
        many = self._many
        if many is None:
            many = self._many = (ffi.new("uint8_t[]", _BURST_BYTES), ffi.new("uint32_t[]", _BURST_ITEMS + 1),
                                 ffi.new("uint32_t[]", _BURST_ITEMS), ffi.new("size_t *"))
        buf, offs, cts, count = many
        st = lib.hms_stream_next_many(ptr, buf, _BURST_BYTES, offs, cts, _BURST_ITEMS, count, end, tns, err)
        k = count[0]
        if st == 0 and k:
            o = ffi.unpack(offs, k + 1)
            raw = ffi.buffer(buf, o[k])[:]
            ctl = ffi.unpack(cts, k)
            if ctl.count(CT_RAW) == k:
                values = [raw[a:b] for a, b in zip(o, o[1:])]
            else:
                values = [raw[o[i]:o[i + 1]] if ctl[i] == CT_RAW else decode(ctl[i], raw[o[i]:o[i + 1]])
                          for i in range(k)]
            self._burst, self._burst_at = values, 1
            return values[0]
        if st == 0 and not end[0]:  # an item for the one-at-a-time path (big, or an arena block)
            st = lib.hms_stream_next(ptr, item, end, tns, err)
        n = item.len
        data = ffi.buffer(item.data, n)[:] if n else b""
        ct = item.content_type
        lib.hms_payload_release(item)
        if st:
            value, exc = _reply_value(st, data, ct, ffi.string(err.message), err.origin)
            if not (st == lib.HMS_DEADLINE_EXCEEDED and timeout is not None and "goes on" in exc.message):
                self.close()
            if self._sender_error is not None:
                raise self._sender_error
            raise exc
        if end[0]:
            self.close()
            raise StopIteration
        return data if ct == CT_RAW else decode(ct, data)

    def cancel(self) -> None:
        """Tells the server to stop; the iteration ends with ``Cancelled``."""
        if self._ptr is not None:
            lib.hms_stream_cancel(self._ptr)

    def close(self) -> None:
        ptr = self._ptr
        if ptr is None:
            return
        if self._sender is not None and self._sender is not threading.current_thread():
            lib.hms_stream_cancel(ptr)  # unblocks a sender waiting for ring space
            self._sender.join(5)
        self._ptr = None
        if self._client._ptr is not None:
            lib.hms_stream_close(ptr)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


_default_nodes: Dict[str, Node] = {}
_default_lock = threading.Lock()


def _default_node(runtime_dir: Optional[str]) -> Node:
    # Keyed by the resolved directory: HMS_FFI_RUNTIME_DIR may change between calls.
    key = os.fspath(runtime_dir) if runtime_dir is not None else default_runtime_dir()
    with _default_lock:
        node = _default_nodes.get(key)
        if node is None or node._ptr is None:
            node = Node(f"client-{os.getpid()}", runtime_dir=key)
            _default_nodes[key] = node
        return node


def connect(service: str, version: str = "*", *, timeout: Optional[float] = 5.0,
            runtime_dir: Optional[str] = None, spin_us: Optional[float] = None, ring_bytes: int = 0,
            arena_quota: int = 0, **remote) -> Client:
    """Connects to a service from a process-wide client node. See :meth:`Node.connect`.
    ``"grpc://host:port/SERVICE"`` reaches a service on another host through its gateway
    (a RemoteClient, same API; ``remote`` takes its TLS options: see hms_ffi_native._remote)."""
    if isinstance(service, str) and service.startswith(("grpc://", "grpcs://")):
        from ._remote import connect_remote

        return connect_remote(service, version, timeout=timeout, **remote)
    retry, breaker = remote.pop("retry", None), remote.pop("breaker", None)
    if retry is not None or breaker is not None:  # opt-in reconnect, retries, circuit breaker: _retry.py
        from ._retry import ResilientClient

        return ResilientClient(service, version, retry=retry, breaker=breaker, runtime_dir=runtime_dir,
                               timeout=timeout, spin_us=spin_us, ring_bytes=ring_bytes)
    if remote:
        raise InvalidArgument(f"unexpected keyword arguments for a local service: {sorted(remote)}")
    return _default_node(runtime_dir).connect(service, version, timeout=timeout, spin_us=spin_us,
                                               ring_bytes=ring_bytes, arena_quota=arena_quota)


@dataclass
class ServiceInfo:
    name: str
    version: str
    node: str
    pid: int
    uid: int
    functions: Dict[str, int] = field(default_factory=dict)


def list_services(runtime_dir: Optional[str] = None) -> List[ServiceInfo]:
    """Live services in the runtime directory, by name then newest version. Removes dead entries."""
    out = ffi.new("hms_service_list_t *")
    err = ffi.new("hms_error_t *")
    st = lib.hms_list_services(_runtime_dir_arg(runtime_dir), out, err)
    if st:
        _raise(st, err)
    try:
        result = []
        for i in range(out.count):
            it = out.items[i]
            fns = {ffi.string(it.function_names[j]).decode(): it.function_ids[j] for j in range(it.function_count)}
            result.append(ServiceInfo(ffi.string(it.name).decode(), ffi.string(it.version).decode(),
                                      ffi.string(it.node).decode(), it.pid, it.uid, fns))
        return result
    finally:
        out.release(out)
