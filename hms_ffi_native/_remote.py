"""Reaching services on other hosts through an hms gRPC gateway (``hms-ffi gateway``).

    import hms_ffi_native as hms

    with hms.connect("grpc://10.0.0.7:7443/hms.oms.order", version="^1",
                     root_ca="ca.pem", client_cert="me.pem", client_key="me.key") as oms:
        oms.call("CreateOrder", {...}, timeout=0.5)       # same API, errors and deadlines as Client

    for msg in hms.subscribe_remote("grpc://10.0.0.7:7443", "order.*"):   # pub/sub through the gateway
        ...

The wire (docs/gateway.md has the full table): gRPC service ``hms.gateway.v1.Gateway`` with generic
raw-bytes methods, so no generated code is needed on either side. Routing and typing travel in
metadata (``hms-service``, ``hms-version``, ``hms-function``, ``hms-content-type``); a unary reply's
content type comes back in trailing metadata; hms status codes ARE gRPC status codes (same numbers),
with the message as gRPC details and the error details in ``hms-details-bin`` (+ their content type
in ``hms-details-content-type``). Stream messages (both directions) start with the item's content
type as an unsigned LEB128 varint, because items of one stream may differ in type. Arrow data crosses
the network as Arrow IPC stream bytes (never pickle).

Threads: a ``RemoteClient`` may be shared between threads (gRPC channels are thread-safe). A
``RemoteSubscription`` is read by one thread at a time; ``close()`` from another thread ends it.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import struct
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union
from urllib.parse import urlsplit

import cbor2

from ._codec import CT_ARROW, CT_CBOR, CT_JSON, CT_NONE, CT_RAW, decode as _decode_ct, encode as _encode_ct
from ._errors import FailedPrecondition, FFIError, InvalidArgument, error_for

grpc = None  # imported on first use (it costs ~50 ms): `import hms_ffi_native` stays quick

__all__ = ["RemoteClient", "RemoteStream", "RemoteSubscription", "RemotePublisher", "connect_remote",
           "subscribe_remote", "publisher_remote", "list_remote_services"]

CT_NDARRAY = 6  # HMS_CT_NDARRAY (hms_ffi.h); self-describing header + data, sent as it is

SERVICE = "hms.gateway.v1.Gateway"
M_CALL = f"/{SERVICE}/Call"
M_SERVER_STREAM = f"/{SERVICE}/ServerStream"
M_CLIENT_STREAM = f"/{SERVICE}/ClientStream"
M_BIDI_STREAM = f"/{SERVICE}/BidiStream"
M_BATCH = f"/{SERVICE}/Batch"
M_SEND = f"/{SERVICE}/Send"
M_RESOLVE = f"/{SERVICE}/Resolve"
M_LIST = f"/{SERVICE}/ListServices"
M_PUBLISH = f"/{SERVICE}/Publish"
M_SUBSCRIBE = f"/{SERVICE}/Subscribe"

MD_SERVICE = "hms-service"
MD_VERSION = "hms-version"
MD_FUNCTION = "hms-function"
MD_CT = "hms-content-type"
MD_TOPIC = "hms-topic"
MD_PATTERN = "hms-pattern"
MD_FLAGS = "hms-flags"
MD_SEQ = "hms-seq"
MD_DETAILS = "hms-details-bin"
MD_DETAILS_CT = "hms-details-content-type"
MD_ORIGIN = "hms-origin"
MD_CONNECT_TIMEOUT = "hms-connect-timeout-ms"

DEFAULT_MAX_MESSAGE = 64 << 20
MSG_EVENT = 1  # HMS_MSG_EVENT

# Subscribe stream message: header, then the topic (ASCII), then the payload.
#   content type u32, flags u32, seq u64, missed u64, publish_time_ns i64, publisher_id u64,
#   publisher_pid i32, topic length u16, reserved u16
SUB_HEADER = struct.Struct("<IIQQqQiHH")

ARROW_IPC_KIND_KEY = b"hms.kind"
ARROW_FLAT_MAGIC = b"HMSARRW1"


def _need_grpc():
    global grpc
    if grpc is None:
        try:
            import grpc as _grpc
        except ImportError:
            raise FailedPrecondition("the gRPC gateway needs grpcio: pip install 'hms-ffi-native[gateway]'") from None
        grpc = _grpc
    return grpc


# ----------------------------------------------------------------------------------------------------
# framing shared with the gateway
# ----------------------------------------------------------------------------------------------------
def frame(ct: int, data: bytes) -> bytes:
    """A stream message: the content type as an unsigned LEB128 varint, then the payload."""
    if ct < 0x80:
        return bytes((ct,)) + data
    out = bytearray()
    while True:
        b = ct & 0x7F
        ct >>= 7
        if ct:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out) + data


def unframe(msg: bytes) -> Tuple[int, bytes]:
    """(content type, payload) of a stream message; InvalidArgument for a malformed one."""
    b0 = msg[0] if msg else 0x80
    if b0 < 0x80 and msg:
        return b0, msg[1:]
    ct = shift = 0
    for i in range(min(len(msg), 5)):
        b = msg[i]
        ct |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            if ct > 0xFFFFFFFF:
                break
            return ct, msg[i + 1:]
    raise InvalidArgument("stream message does not start with a valid content type (LEB128, at most 32 bits)")


def check_name(kind: str, value: Any) -> str:
    """Names travel as gRPC metadata values: printable ASCII only."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{kind} must be a non-empty str, got {value!r}")
    if not (value.isascii() and value.isprintable()):
        raise InvalidArgument(f"{kind} {value!r} is invalid: use characters of [A-Za-z0-9_.-]")
    return value


def parse_ct(value: Optional[str]) -> int:
    """A content type from metadata (decimal u32); absent = raw."""
    if value is None:
        return CT_RAW
    if not (isinstance(value, str) and value.isdigit() and len(value) <= 10) or int(value) > 0xFFFFFFFF:
        raise InvalidArgument(f"metadata {MD_CT} must be a decimal content type (0..4294967295), got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------------
# Arrow over the network: Arrow IPC stream format (pyarrow.ipc), never pickle
# ----------------------------------------------------------------------------------------------------
def is_arrow(value: Any) -> bool:
    """A pyarrow Table, RecordBatch, Array or ChunkedArray (pyarrow is imported only when one is seen)."""
    if not type(value).__module__.startswith("pyarrow"):
        return False
    import pyarrow as pa

    return isinstance(value, (pa.Table, pa.RecordBatch, pa.Array, pa.ChunkedArray))


def arrow_to_ipc(obj: Any) -> bytes:
    """An Arrow IPC stream holding ``obj`` (Table, RecordBatch, Array or ChunkedArray); its kind is
    kept in the schema metadata (``hms.kind``) so the receiver gets back the same kind."""
    import pyarrow as pa

    if isinstance(obj, pa.Table):
        kind, table = b"Table", obj
    elif isinstance(obj, pa.RecordBatch):
        kind, table = b"RecordBatch", pa.Table.from_batches([obj])
    elif isinstance(obj, (pa.Array, pa.ChunkedArray)):
        kind = b"Array" if isinstance(obj, pa.Array) else b"ChunkedArray"
        table = pa.Table.from_arrays([obj], names=["values"])
    else:
        raise InvalidArgument(f"cannot send a {type(obj).__name__} as Arrow data")
    meta = dict(table.schema.metadata or {})
    meta[ARROW_IPC_KIND_KEY] = kind
    table = table.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def arrow_from_ipc(data: Any) -> Any:
    import pyarrow as pa

    try:
        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    except (pa.ArrowException, ValueError, OSError) as e:
        raise InvalidArgument(f"payload is not a valid Arrow IPC stream: {e}") from None
    meta = dict(table.schema.metadata or {})
    kind = meta.pop(ARROW_IPC_KIND_KEY, b"Table")
    table = table.replace_schema_metadata(meta or None)
    if kind == b"RecordBatch":
        return table.combine_chunks().to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], schema=table.schema)
    if kind in (b"Array", b"ChunkedArray") and table.num_columns == 1:
        col = table.column(0)
        return col.combine_chunks() if kind == b"Array" else col
    return table


def _aligned_copy(data: Any):
    """A 64-byte-aligned copy of ``data`` (the hms flat Arrow layout wants its buffers aligned)."""
    import numpy as np

    n = len(data)
    raw = np.empty(n + 64, dtype=np.uint8)
    off = (-raw.ctypes.data) % 64
    out = raw[off:off + n]
    out[:] = np.frombuffer(data, dtype=np.uint8)
    return out


def arrow_flat_to_ipc(data: bytes) -> bytes:
    """hms's flat Arrow layout (what local peers exchange in shared memory) -> Arrow IPC stream."""
    from . import _arrow

    return arrow_to_ipc(_arrow.decode(_aligned_copy(data)))


def arrow_ipc_to_flat(data: bytes) -> bytes:
    """Arrow IPC stream -> hms's flat Arrow layout (the form local peers decode without a copy)."""
    from . import _arrow

    obj = arrow_from_ipc(data)
    buf = _aligned_copy(b"\0" * _arrow.encoded_size(obj))
    n = _arrow.encode_into(obj, buf)
    return buf[:n].tobytes()


def encode_value(value: Any, codec: Optional[str]) -> Tuple[bytes, int]:
    """(bytes, content type) of a value, as Client would send it; Arrow objects as Arrow IPC."""
    if codec is None:
        t = type(value)
        if t is bytes:
            return value, CT_RAW
        if t.__module__ == "numpy" and t.__name__ == "ndarray":
            from . import _ndarray

            return _ndarray.encode_bytes(value), CT_NDARRAY
        if is_arrow(value):
            return arrow_to_ipc(value), CT_ARROW
    return _encode_ct(value, codec)


def decode_value(ct: int, data: bytes) -> Any:
    if ct == CT_RAW:
        return data
    if ct == CT_NDARRAY:
        try:
            from . import _ndarray
        except ImportError:  # a build without the arena/ndarray codec: the bytes as they came
            return data
        return _ndarray.decode(data)
    if ct == CT_ARROW:
        if data[:8] == ARROW_FLAT_MAGIC:
            from . import _arrow

            return _arrow.decode(_aligned_copy(data))
        return arrow_from_ipc(data)
    return _decode_ct(ct, data)


# ----------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------
def error_from_rpc(e: "grpc.RpcError") -> FFIError:
    """The hms exception for a failed RPC: same code, message, details; source "remote" when the
    gateway (or the service behind it) produced it, "local" when gRPC did (no connection, our own
    deadline, ...)."""
    try:
        code = e.code()
        num = code.value[0] if code is not None else 2
        message = e.details() or ""
        trailing = e.trailing_metadata() or ()
    except Exception:  # not a call error (e.g. a bare grpc.RpcError): an unknown failure
        return error_for(2, str(e))
    details = details_raw = None
    dct = CT_CBOR
    remote = False
    for k, v in trailing:
        if k == MD_DETAILS:
            details_raw = v
        elif k == MD_DETAILS_CT:
            try:
                dct = parse_ct(v)
            except InvalidArgument:
                pass
        elif k == MD_ORIGIN:
            remote = True
    if details_raw:
        try:
            details = decode_value(dct, details_raw)
        except FFIError:
            details = details_raw
    return error_for(num, message, details=details, source="remote" if remote else "local")


def _trailing_ct(call) -> int:
    for k, v in call.trailing_metadata() or ():
        if k == MD_CT:
            return parse_ct(v)
    return CT_RAW


# ----------------------------------------------------------------------------------------------------
# channels
# ----------------------------------------------------------------------------------------------------
def _read(x: Union[None, str, bytes]) -> Optional[bytes]:
    if x is None or isinstance(x, bytes):
        return x
    with open(x, "rb") as f:
        return f.read()


def parse_target(url: str) -> Tuple[str, bool, str]:
    """'grpc://host:port/SERVICE' -> (host:port, tls, SERVICE); 'grpcs://' means TLS."""
    if not isinstance(url, str):
        raise InvalidArgument(f"gateway address must be a str like 'grpc://host:port', got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("grpc", "grpcs") or not parts.netloc:
        raise InvalidArgument(f"gateway address {url!r} must look like grpc://HOST:PORT[/SERVICE] (grpcs:// for TLS)")
    if parts.port is None:
        raise InvalidArgument(f"gateway address {url!r} needs a port: grpc://HOST:PORT")
    return parts.netloc, parts.scheme == "grpcs", parts.path.lstrip("/")


def make_channel(target: str, *, tls: bool = False, root_ca=None, client_cert=None, client_key=None,
                 max_message: int = DEFAULT_MAX_MESSAGE, server_name: Optional[str] = None):
    """A gRPC channel to a gateway. TLS when ``tls`` or any certificate is given; ``root_ca`` (path or
    PEM bytes) verifies the gateway (None: the system roots); ``client_cert``/``client_key`` present
    this client for mutual TLS."""
    _need_grpc()
    options = [("grpc.max_send_message_length", max_message), ("grpc.max_receive_message_length", max_message)]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    if (client_cert is None) != (client_key is None):
        raise InvalidArgument("mutual TLS needs both client_cert and client_key")
    if tls or root_ca is not None or client_cert is not None:
        creds = grpc.ssl_channel_credentials(root_certificates=_read(root_ca), private_key=_read(client_key),
                                             certificate_chain=_read(client_cert))
        return grpc.secure_channel(target, creds, options=options)
    return grpc.insecure_channel(target, options=options)


class _Channel:
    """A channel and its method callables (raw bytes in and out: no serializers)."""

    def __init__(self, target: str, **kw) -> None:
        self.target = target
        self.channel = make_channel(target, **kw)
        ch = self.channel
        self.call = ch.unary_unary(M_CALL)
        self.server_stream = ch.unary_stream(M_SERVER_STREAM)
        self.client_stream = ch.stream_unary(M_CLIENT_STREAM)
        self.bidi_stream = ch.stream_stream(M_BIDI_STREAM)
        self.batch = ch.unary_unary(M_BATCH)
        self.send = ch.unary_unary(M_SEND)
        self.resolve = ch.unary_unary(M_RESOLVE)
        self.list = ch.unary_unary(M_LIST)
        self.publish = ch.unary_unary(M_PUBLISH)
        self.subscribe = ch.unary_stream(M_SUBSCRIBE)

    def close(self) -> None:
        self.channel.close()


def _channel_for(url_or_target: str, tls_kw: dict) -> Tuple[_Channel, str]:
    target, tls, rest = parse_target(url_or_target)
    kw = dict(tls_kw)
    kw["tls"] = tls or kw.get("tls", False)
    return _Channel(target, **kw), rest


# ----------------------------------------------------------------------------------------------------
# RemoteClient: Client's API over the gateway
# ----------------------------------------------------------------------------------------------------
class RemoteClient:
    """A connection to one service behind an hms gateway; the same methods, exceptions and deadlines
    as :class:`hms_ffi_native.Client`. Thread-safe.

    Attributes as Client: ``service``, ``version`` (of the instance the gateway reached),
    ``functions`` (name -> id), ``server_pid`` (on the remote host), ``max_message``, plus ``target``.
    """

    def __init__(self, target: str, service: str, version: str = "*", *, timeout: Optional[float] = 5.0,
                 tls: bool = False, root_ca=None, client_cert=None, client_key=None,
                 max_message: int = DEFAULT_MAX_MESSAGE, server_name: Optional[str] = None,
                 wait_for_ready: bool = False) -> None:
        check_name("service name", service)
        check_name("version requirement", version)
        self.target = target
        self._ch = _Channel(target, tls=tls, root_ca=root_ca, client_cert=client_cert, client_key=client_key,
                            max_message=max_message, server_name=server_name)
        self._base_md = ((MD_SERVICE, service), (MD_VERSION, version))
        self._md_cache: Dict[tuple, tuple] = {}
        self._closed = False
        try:
            info = self._resolve(timeout, wait_for_ready)
        except BaseException:
            self._ch.close()
            raise
        self.service = info.get("service", service)
        self.version = info.get("version", "")
        self.server_pid = info.get("pid", 0)
        self.functions: Dict[str, int] = dict(info.get("functions", {}))
        self.max_message = min(int(info.get("max_message", max_message)), max_message)

    def _resolve(self, timeout, wait_for_ready) -> dict:
        md = self._base_md
        if timeout is not None:
            md = md + ((MD_CONNECT_TIMEOUT, str(max(1, int(timeout * 1000)))),)
        try:
            raw = self._ch.resolve(b"", metadata=md, timeout=timeout, wait_for_ready=wait_for_ready)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None
        return cbor2.loads(raw)

    # -- helpers
    def _md(self, function: str, ct: int) -> tuple:
        key = (function, ct)
        md = self._md_cache.get(key)
        if md is None:
            if self._closed:
                raise FailedPrecondition(f"remote client of {self.service} is closed; connect again")
            check_name("function name", function)
            md = self._base_md + ((MD_FUNCTION, function), (MD_CT, str(ct)))
            if len(self._md_cache) < 4096:
                self._md_cache[key] = md
        return md

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition(f"remote client of {self.service} is closed; connect again")

    # -- call patterns
    def call(self, function: str, payload: Any = None, *, timeout: Optional[float] = None,
             codec: Optional[str] = None) -> Any:
        """Calls ``function`` on the remote service and returns the decoded reply; raises the
        status's exception (with the handler's message and details) on failure."""
        if codec is None and type(payload) is bytes:
            data, ct = payload, CT_RAW
        else:
            data, ct = encode_value(payload, codec)
        md = self._md_cache.get((function, ct)) or self._md(function, ct)
        if self._closed:
            self._check_open()
        try:
            resp, call = self._ch.call.with_call(data, timeout=timeout, metadata=md)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None
        rct = CT_RAW
        for k, v in call.trailing_metadata():
            if k == MD_CT:
                rct = parse_ct(v)
                break
        if rct == CT_RAW:
            return resp
        return decode_value(rct, resp)

    def _start(self, function, payload, timeout, codec):
        data, ct = encode_value(payload, codec)
        self._check_open()
        return self._ch.call.future(data, timeout=timeout, metadata=self._md(function, ct))

    @staticmethod
    def _outcome(gf) -> Tuple[Any, Optional[BaseException]]:
        try:
            resp = gf.result()
        except grpc.FutureCancelledError:
            return None, error_for(1, "the call was cancelled")
        except grpc.RpcError as e:
            return None, error_from_rpc(e)
        try:
            return decode_value(_trailing_ct(gf), resp), None
        except FFIError as e:
            return None, e

    def call_async(self, function: str, payload: Any = None, *, timeout: Optional[float] = None,
                   codec: Optional[str] = None) -> "concurrent.futures.Future":
        """Starts a call; returns a ``concurrent.futures.Future``. Cancelling it cancels the RPC,
        and the gateway cancels the local call (the handler sees ``ctx.cancelled``)."""
        gf = self._start(function, payload, timeout, codec)
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def done(g):
            if fut.done():
                return
            value, exc = self._outcome(g)
            try:
                if exc is None:
                    fut.set_result(value)
                else:
                    fut.set_exception(exc)
            except concurrent.futures.InvalidStateError:  # cancelled meanwhile
                pass

        def on_cancel(f):
            if f.cancelled():
                gf.cancel()

        fut.add_done_callback(on_cancel)
        gf.add_done_callback(done)
        return fut

    async def acall(self, function: str, payload: Any = None, *, timeout: Optional[float] = None,
                    codec: Optional[str] = None) -> Any:
        """``await remote.acall(...)``; cancelling the task cancels the RPC and the local call."""
        loop = asyncio.get_running_loop()
        gf = self._start(function, payload, timeout, codec)
        fut = loop.create_future()

        def done(g):
            value, exc = self._outcome(g)

            def resolve():
                if fut.done():
                    return
                if exc is None:
                    fut.set_result(value)
                else:
                    fut.set_exception(exc)

            try:
                loop.call_soon_threadsafe(resolve)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        gf.add_done_callback(done)
        try:
            return await fut
        except asyncio.CancelledError:
            gf.cancel()
            raise

    def stream(self, function: str, payload: Any = None, *, timeout: Optional[float] = None,
               codec: Optional[str] = None) -> "RemoteStream":
        """Server stream: an iterator of the items; leaving the loop early (or ``close()``) cancels."""
        data, ct = encode_value(payload, codec)
        self._check_open()
        it = self._ch.server_stream(data, timeout=timeout, metadata=self._md(function, ct))
        return RemoteStream(it, function)

    def client_stream(self, function: str, requests, *, timeout: Optional[float] = None,
                      codec: Optional[str] = None) -> Any:
        """Sends every item of ``requests`` and returns the handler's single reply."""
        self._check_open()
        md = self._md(function, CT_NONE)
        try:
            resp, call = self._ch.client_stream.with_call(_framed(requests, codec), timeout=timeout, metadata=md)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None
        return decode_value(_trailing_ct(call), resp)

    def bidi_stream(self, function: str, requests, *, timeout: Optional[float] = None,
                    codec: Optional[str] = None) -> "RemoteStream":
        """Bidirectional stream: ``requests`` is consumed by gRPC's sending thread while you iterate
        the replies."""
        self._check_open()
        it = self._ch.bidi_stream(_framed(requests, codec), timeout=timeout, metadata=self._md(function, CT_NONE))
        return RemoteStream(it, function)

    def batch(self, calls, *, timeout: Optional[float] = None, codec: Optional[str] = None) -> List[Any]:
        """Many calls in one RPC (and one wake-up of the service on the far side); returns the replies
        in order, with a failed call's exception instance in its place."""
        items = []
        for fn, payload in calls:
            check_name("function name", fn)
            data, ct = encode_value(payload, codec)
            items.append([fn, ct, data])
        if not items:
            return []
        self._check_open()
        try:
            raw = self._ch.batch(cbor2.dumps(items), timeout=timeout, metadata=self._base_md)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None
        out = []
        for st, ct, data, message in cbor2.loads(raw):
            if st == 0:
                try:
                    out.append(decode_value(ct, data))
                except FFIError as e:
                    out.append(e)
            else:
                details = None
                if data:
                    try:
                        details = decode_value(ct, data)
                    except FFIError:
                        details = data
                out.append(error_for(st, message, details=details, source="remote"))
        return out

    def send(self, function: str, payload: Any = None, *, codec: Optional[str] = None) -> None:
        """One-way call: returns once the gateway handed it to the service; nothing comes back."""
        data, ct = encode_value(payload, codec)
        self._send(function, [data], ct)

    def send_many(self, function: str, payloads, *, codec: Optional[str] = None) -> None:
        """One-way calls of one function, in one RPC (one crossing on the far side)."""
        payloads = list(payloads)
        if not payloads:
            return
        if codec is None and all(type(p) is bytes for p in payloads):
            blobs, ct = payloads, CT_RAW
        else:
            enc = [encode_value(p, codec) for p in payloads]
            cts = {c for _, c in enc}
            if len(cts) > 1:
                raise InvalidArgument("send_many needs payloads of one codec; pass codec= explicitly")
            blobs, ct = [d for d, _ in enc], cts.pop()
        self._send(function, blobs, ct)

    def _send(self, function: str, blobs: list, ct: int) -> None:
        self._check_open()
        try:
            self._ch.send(cbor2.dumps(blobs), metadata=self._md(function, ct))
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None

    def close(self) -> None:
        """Closes the channel (RPCs in flight are cancelled). Idempotent."""
        if not self._closed:
            self._closed = True
            self._ch.close()

    def __enter__(self) -> "RemoteClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"pid={self.server_pid}"
        return f"<RemoteClient {self.service}@{self.version} via {self.target} {state}>"


def _framed(requests, codec):
    for item in requests:
        if codec is None and type(item) is bytes:
            yield frame(CT_RAW, item)
        else:
            data, ct = encode_value(item, codec)
            yield frame(ct, data)


class RemoteStream:
    """Items of a remote server or bidirectional stream, in order; an error mid-stream raises its
    exception; ``cancel()``/``close()`` stop the producer. Use it as a context manager or exhaust it."""

    def __init__(self, rpc, function: str) -> None:
        self._rpc = rpc
        self.function = function
        self._done = False

    def __iter__(self) -> "RemoteStream":
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        try:
            msg = next(self._rpc)
        except StopIteration:
            self._done = True
            raise
        except grpc.RpcError as e:
            self._done = True
            raise error_from_rpc(e) from None
        ct, data = unframe(msg)
        return decode_value(ct, data)

    def cancel(self) -> None:
        """Tells the producer to stop; the iteration ends with ``Cancelled``."""
        self._rpc.cancel()

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._rpc.cancel()

    def __enter__(self) -> "RemoteStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------------
# pub/sub through the gateway
# ----------------------------------------------------------------------------------------------------
class RemoteSubscription:
    """Messages of every publisher on the gateway's host whose topic matches ``pattern``, as
    :class:`Message`/:class:`Event` (the same classes a local subscription yields). Only messages
    published after the subscription reached the gateway are delivered; ``missed`` counts losses on
    the far side. ``recv(timeout)`` returns None on a timeout; iteration ends when the subscription
    is closed or (exact topic) every publisher went away."""

    def __init__(self, url: str, pattern: str, *, keep_waiting: bool = False, ready_timeout: Optional[float] = 5.0,
                 **tls_kw) -> None:
        check_name("topic pattern", pattern)
        self._ch, _ = _channel_for(url, tls_kw)
        self.pattern = pattern
        md = ((MD_PATTERN, pattern), (MD_FLAGS, "1" if keep_waiting else "0"))
        self._rpc = self._ch.subscribe(b"", metadata=md)
        self._q: "list" = []
        self._cv = threading.Condition()
        self._end: Optional[BaseException] = None
        self._closed = False
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, name="hms-remote-sub", daemon=True)
        self._reader.start()
        # The gateway answers with initial metadata once its local subscription exists: from then on
        # nothing published is missed.
        if ready_timeout is not None and not self._ready.wait(ready_timeout):
            self.close()
            raise error_for(4, f"the gateway did not confirm the subscription to {pattern!r} within {ready_timeout} s")
        if self._end is not None and not isinstance(self._end, StopIteration):
            err = self._end
            self.close()
            raise err

    def _read(self) -> None:
        from ._topic import Message, _event_from

        try:
            self._rpc.initial_metadata()
            self._ready.set()
            for msg in self._rpc:
                ct, flags, seq, missed, pns, pub_id, pid, tlen, _ = SUB_HEADER.unpack_from(msg, 0)
                o = SUB_HEADER.size
                topic = msg[o:o + tlen].decode("ascii", "replace")
                data = msg[o + tlen:]
                try:
                    if flags & MSG_EVENT:
                        kw = dict(topic=topic, seq=seq, missed=missed, publisher_pid=pid, publisher_id=pub_id,
                                  publish_time_ns=pns)
                        item = _event_from(decode_value(ct, data), kw)
                    else:
                        item = Message(topic, decode_value(ct, data), seq, missed, pid, pub_id, ct, pns)
                except FFIError as e:
                    item = e
                with self._cv:
                    self._q.append(item)
                    self._cv.notify()
            end: BaseException = StopIteration()
        except grpc.RpcError as e:
            end = error_from_rpc(e)
        except BaseException as e:  # pragma: no cover - a bug in this reader must not hang recv
            end = e
        with self._cv:
            self._end = end
            self._cv.notify_all()
        self._ready.set()

    def recv(self, timeout: Optional[float] = None):
        """The next message, or None when nothing arrived within ``timeout`` seconds. Raises
        ``Unavailable`` when an exact topic's publishers all went away, ``Cancelled`` once closed."""
        with self._cv:
            if not self._q and self._end is None:
                self._cv.wait_for(lambda: self._q or self._end is not None, timeout)
            if self._q:
                item = self._q.pop(0)
                if isinstance(item, FFIError):
                    raise item
                return item
            if self._end is None:
                return None
            if self._closed:
                raise error_for(1, f"subscription to {self.pattern!r} was closed")
            if isinstance(self._end, StopIteration):
                raise error_for(14, f"the gateway ended the subscription to {self.pattern!r}")
            raise self._end

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self.recv(None)
        except FFIError as e:
            if e.code in (1, 14):
                raise StopIteration from None
            raise

    def close(self) -> None:
        """Ends the subscription (the gateway closes its local one). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._rpc.cancel()
        self._reader.join(5)
        self._ch.close()

    def __enter__(self) -> "RemoteSubscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RemotePublisher:
    """Publishes on ``topic`` on the gateway's host: local subscribers there (and remote ones
    subscribed through the gateway) receive the messages. The gateway keeps one local publisher per
    topic for as long as it runs. ``publish`` returns the sequence number."""

    def __init__(self, url: str, topic: str, *, codec: Optional[str] = None, **tls_kw) -> None:
        check_name("topic", topic)
        self._ch, _ = _channel_for(url, tls_kw)
        self.topic = topic
        self.codec = codec
        self._closed = False

    def _publish(self, data: bytes, ct: int, flags: int, timeout: Optional[float]) -> int:
        if self._closed:
            raise FailedPrecondition(f"publisher of {self.topic!r} is closed; open a new one")
        md = ((MD_TOPIC, self.topic), (MD_CT, str(ct)), (MD_FLAGS, str(flags)))
        try:
            _, call = self._ch.publish.with_call(data, timeout=timeout, metadata=md)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None
        for k, v in call.trailing_metadata():
            if k == MD_SEQ:
                return int(v)
        return 0

    def publish(self, value: Any, *, codec: Optional[str] = None, timeout: Optional[float] = None) -> int:
        data, ct = encode_value(value, codec or self.codec)
        return self._publish(data, ct, 0, timeout)

    def publish_event(self, type: str, data: Any = None, *, source: Optional[str] = None,
                      correlation_id: Optional[str] = None, user_id: Optional[str] = None,
                      id: Optional[str] = None, timestamp=None, timeout: Optional[float] = None) -> str:
        """The event envelope of :meth:`Publisher.publish_event`, published on the gateway's host."""
        import datetime as _dt
        import uuid

        if not isinstance(type, str) or not type:
            raise InvalidArgument(f"event type must be a non-empty str, got {type!r}")
        id = id or str(uuid.uuid4())
        envelope = {"id": id, "type": type, "timestamp": timestamp or _dt.datetime.now(_dt.timezone.utc),
                    "data": data, "metadata": {"source": source, "correlationId": correlation_id,
                                               "userId": user_id}}
        payload, ct = _encode_ct(envelope, self.codec if self.codec in ("cbor", "json") else "cbor")
        self._publish(payload, ct, MSG_EVENT, timeout)
        return id

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._ch.close()

    def __enter__(self) -> "RemotePublisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------------
# entry points
# ----------------------------------------------------------------------------------------------------
def connect_remote(url: str, version: str = "*", *, timeout: Optional[float] = 5.0, **kw) -> RemoteClient:
    """``hms.connect("grpc://host:port/SERVICE", version, ...)`` lands here. TLS keywords:
    ``root_ca``, ``client_cert``, ``client_key`` (paths or PEM bytes), ``server_name``;
    ``grpcs://`` asks for TLS with the system roots."""
    target, tls, service = parse_target(url)
    if not service:
        raise InvalidArgument(f"{url!r} names no service: use grpc://HOST:PORT/SERVICE")
    kw["tls"] = tls or kw.get("tls", False)
    return RemoteClient(target, service, version, timeout=timeout, **kw)


def subscribe_remote(url: str, pattern: str, **kw) -> RemoteSubscription:
    """Subscribes through the gateway at ``url`` ('grpc://host:port') to ``pattern`` ('order.*')."""
    return RemoteSubscription(url, pattern, **kw)


def publisher_remote(url: str, topic: str, **kw) -> RemotePublisher:
    """A publisher on ``topic`` on the gateway's host."""
    return RemotePublisher(url, topic, **kw)


def list_remote_services(url: str, *, timeout: Optional[float] = 5.0, **tls_kw) -> List[dict]:
    """The services live on the gateway's host (name, version, node, pid, functions)."""
    ch, _ = _channel_for(url, tls_kw)
    try:
        return cbor2.loads(ch.list(b"", timeout=timeout))
    except grpc.RpcError as e:
        raise error_from_rpc(e) from None
    finally:
        ch.close()
