"""The gRPC gateway: exposes this host's services (and topics) to callers on other hosts.

    hms-ffi gateway --listen 0.0.0.0:7443 --tls-cert gw.pem --tls-key gw.key --tls-client-ca ca.pem

    from hms_ffi_native.gateway import Gateway
    with Gateway("127.0.0.1:0") as gw:         # .port is the bound port
        ...

What it does, per RPC (service ``hms.gateway.v1.Gateway``; docs/gateway.md has the wire table):
routing comes from metadata (``hms-service``, ``hms-version``, ``hms-function``, ``hms-content-type``),
the gRPC message bytes are the payload as they are, and the local call is made with the caller's
gRPC deadline as its timeout. Its status goes back as the gRPC status with the same number, with the
message and the details (``hms-details-bin``); a cancelled RPC cancels the local call (the handler
sees ``ctx.cancelled``). One hms client per (service, version requirement) is kept and shared by all
callers; a connection that died is dropped and the next call connects again. A dead local service
answers UNAVAILABLE within the core's crash detection (~100 ms): no gateway thread waits on it.

Arrow: on the network Arrow data is an Arrow IPC stream; on this host it is hms's flat layout (what
local peers decode in place). The gateway converts between the two when pyarrow is installed.

Threads: gRPC's thread pool (``max_workers``) runs the RPCs; a stream or a subscription holds one
worker for its duration. Unary calls share their connection's completions: whichever waiting thread
polls first harvests for all (no extra thread hop on the common path).
"""
from __future__ import annotations

import ipaddress
import itertools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Optional, Tuple

import cbor2

from . import _remote as W
from ._codec import CT_ARROW, CT_CBOR, CT_NONE, CT_RAW
from ._core import Node, list_services
from ._errors import FFIError, InvalidArgument, error_for
from ._native import ffi, lib

grpc = W._need_grpc()

__all__ = ["Gateway", "GatewayConfigError", "serve"]

_NS = 1_000_000_000
_POLL_SLICE_NS = 20_000_000  # longest a polling thread sleeps before it re-checks deadlines of others
_NAME_MAX = 127
_VERSION_MAX = 63


class GatewayConfigError(InvalidArgument):
    """A gateway that would be unsafe or cannot start (e.g. plaintext on a non-loopback address)."""


def _grpc_codes():
    return {c.value[0]: c for c in grpc.StatusCode}


# ----------------------------------------------------------------------------------------------------
# Arrow: IPC on the wire, the flat layout on this host
# ----------------------------------------------------------------------------------------------------
_arrow_ok: Optional[bool] = None


def _have_arrow() -> bool:
    global _arrow_ok
    if _arrow_ok is None:
        try:
            import numpy  # noqa: F401
            import pyarrow  # noqa: F401

            from . import _arrow  # noqa: F401

            _arrow_ok = hasattr(lib, "hms_arrow_encode")
        except Exception:
            _arrow_ok = False
    return _arrow_ok


def to_local(ct: int, data: bytes) -> bytes:
    """A payload from the network as local peers expect it (Arrow IPC -> flat layout)."""
    if ct == CT_ARROW and data[:8] != W.ARROW_FLAT_MAGIC and data and _have_arrow():
        return W.arrow_ipc_to_flat(data)
    return data


def to_wire(ct: int, data: bytes) -> bytes:
    """A local payload as it crosses the network (flat Arrow layout -> Arrow IPC)."""
    if ct == CT_ARROW and data[:8] == W.ARROW_FLAT_MAGIC and _have_arrow():
        try:
            return W.arrow_flat_to_ipc(data)
        except FFIError:
            return data
    return data


# ----------------------------------------------------------------------------------------------------
# one hms client per (service, version requirement)
# ----------------------------------------------------------------------------------------------------
class _Result:
    __slots__ = ("status", "ct", "data", "message", "origin")

    def __init__(self, status, ct, data, message, origin) -> None:
        self.status, self.ct, self.data, self.message, self.origin = status, ct, data, message, origin


class _LocalConn:
    """An hms client of one local service, shared by every gateway thread that calls it.

    Unary calls are submitted asynchronously (so a cancelled RPC can cancel them) and harvested by
    whichever waiting thread gets to poll first (leader/followers): with one caller there is no
    thread hop at all, with many one poll serves them all."""

    def __init__(self, client) -> None:
        self.client = client
        self.ptr = client._ptr
        self.functions: Dict[str, int] = client.functions
        self.service, self.version, self.pid = client.service, client.version, client.server_pid
        self.max_message = client.max_message
        self.cond = threading.Condition(threading.Lock())
        self.polling = False
        self.done: Dict[int, _Result] = {}
        self.deadlines: Dict[int, float] = {}
        self.tokens = itertools.count(1)
        self.comp = ffi.new("hms_completion_t[]", 64)
        self.count = ffi.new("size_t *")
        self.poll_err = ffi.new("hms_error_t *")
        self.dead: Optional[Tuple[int, str]] = None
        self.users = 0
        self.evicted = False
        self._tls = threading.local()

    def _err(self):
        e = getattr(self._tls, "err", None)
        if e is None:
            e = self._tls.err = ffi.new("hms_error_t *")
            self._tls.cid = ffi.new("uint64_t *")
        return e

    def submit(self, fid: int, data: bytes, ct: int, tns: int, deadline: Optional[float]) -> Tuple[int, int]:
        """(token, call id); raises the status's exception when the call could not be sent."""
        if len(data) > self.max_message:
            raise error_for(8, f"request of {len(data)} bytes exceeds the local connection's max message of "
                               f"{self.max_message} bytes")
        err = self._err()
        cid = self._tls.cid
        token = next(self.tokens)
        while True:
            st = lib.hms_call_submit(self.ptr, fid, data, len(data), ct, 0, tns, ffi.NULL,
                                     ffi.cast("void *", token), cid, err)
            if st != lib.HMS_RESOURCE_EXHAUSTED:
                break
            # 1024 calls in flight on this connection: help harvest, then retry (bounded by the deadline).
            if deadline is not None and time.monotonic() >= deadline:
                raise error_for(4, "deadline exceeded while the local connection had 1024 calls in flight")
            self._poll_once(1_000_000)
        if st:
            raise error_for(st, ffi.string(err.message).decode("utf-8", "replace"))
        if deadline is not None:
            self.deadlines[token] = deadline
        return token, cid[0]

    def _poll_once(self, timeout_ns: int) -> None:
        with self.cond:
            if self.polling:
                self.cond.wait(timeout_ns / _NS)
                return
            self.polling = True
        self._poll(timeout_ns)

    def _poll(self, timeout_ns: int) -> None:
        """One poll as the leader (self.polling is set); stores results, wakes the followers."""
        results = []
        dead = None
        try:
            count, arr = self.count, self.comp
            st = lib.hms_client_poll(self.ptr, arr, 64, count, timeout_ns, self.poll_err)
            n = count[0]
            for i in range(n):
                c = arr[i]
                plen = c.payload.len
                data = ffi.buffer(c.payload.data, plen)[:] if plen else b""
                results.append((int(ffi.cast("uintptr_t", c.user_data)),
                                _Result(c.status, c.payload.content_type, data,
                                        ffi.string(c.message).decode("utf-8", "replace") if c.status else "",
                                        c.origin)))
                lib.hms_payload_release(ffi.addressof(c, "payload"))
            if st and not n:
                dead = (st, ffi.string(self.poll_err.message).decode("utf-8", "replace"))
        finally:
            with self.cond:
                self.polling = False
                for token, r in results:
                    self.done[token] = r
                    self.deadlines.pop(token, None)
                if dead is not None:
                    self.dead = dead
                self.cond.notify_all()

    def wait(self, token: int) -> _Result:
        cond = self.cond
        with cond:
            while True:
                r = self.done.pop(token, None)
                if r is not None:
                    return r
                if self.dead is not None:
                    self.deadlines.pop(token, None)
                    return _Result(self.dead[0], CT_NONE, b"", self.dead[1], lib.HMS_ORIGIN_LOCAL)
                if self.polling:
                    cond.wait(_POLL_SLICE_NS / _NS)
                    continue
                self.polling = True
                tns = _POLL_SLICE_NS
                if self.deadlines:
                    soonest = min(self.deadlines.values()) - time.monotonic()
                    tns = max(0, min(tns, int(soonest * _NS) + 1_000_000))
                cond.release()
                try:
                    self._poll(tns)
                finally:
                    cond.acquire()

    def cancel(self, call_id: int) -> None:
        if self.ptr is not None:
            lib.hms_call_cancel(self.ptr, call_id, ffi.NULL)

    def close(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr is not None:
            self.client.close()


# ----------------------------------------------------------------------------------------------------
# the gateway
# ----------------------------------------------------------------------------------------------------
def split_listen(listen: str) -> Tuple[str, int]:
    """'HOST:PORT' / '[v6]:PORT' -> (host, port)."""
    if not isinstance(listen, str) or ":" not in listen:
        raise GatewayConfigError(f"--listen must be HOST:PORT (e.g. 127.0.0.1:7443), got {listen!r}")
    host, _, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise GatewayConfigError(f"--listen port must be 0..65535, got {port!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Gateway:
    """A gRPC server in front of this host's hms services.

    ``listen``: 'HOST:PORT' (port 0 picks a free one, see ``.port``). Without TLS only a loopback
    address is accepted unless ``insecure=True``. ``tls_cert``/``tls_key``: the server's certificate
    chain and key (paths or PEM bytes); ``tls_client_ca``: require client certificates signed by this
    CA (mutual TLS). ``runtime_dir``: whose services to expose (default: the usual one).
    ``max_message``: largest gRPC message either way (bigger ones: RESOURCE_EXHAUSTED).
    ``connect_timeout``: bound on the local handshake. ``max_workers``: RPCs served at once
    (streams and subscriptions hold one each). ``spin_us``: how long a thread waiting for a local
    reply busy-polls before it sleeps (None = the core's default, 0 = never: kinder to a loaded host).
    """

    def __init__(self, listen: str = "127.0.0.1:0", *, runtime_dir: Optional[str] = None, tls_cert=None,
                 tls_key=None, tls_client_ca=None, insecure: bool = False, max_workers: int = 64,
                 max_message: int = W.DEFAULT_MAX_MESSAGE, connect_timeout: float = 2.0,
                 node_name: Optional[str] = None, spin_us: Optional[float] = None) -> None:
        host, port = split_listen(listen)
        if (tls_cert is None) != (tls_key is None):
            raise GatewayConfigError("TLS needs both --tls-cert and --tls-key")
        if tls_client_ca is not None and tls_cert is None:
            raise GatewayConfigError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key too")
        self.tls = tls_cert is not None
        self.mtls = tls_client_ca is not None
        if not self.tls and not is_loopback(host) and not insecure:
            raise GatewayConfigError(
                f"refusing to serve plaintext gRPC on non-loopback address {host!r}: anyone who can reach it "
                "could call every local service. Give --tls-cert/--tls-key (and --tls-client-ca for mutual "
                "TLS), or pass --insecure if the network is trusted"
            )
        self.listen = listen
        self.runtime_dir = runtime_dir
        self.max_message = max_message
        self.connect_timeout = connect_timeout
        self._codes = _grpc_codes()
        self.node = Node(node_name or f"gateway-{os.getpid()}", runtime_dir=runtime_dir, spin_us=spin_us)
        self._conns: Dict[Tuple[str, str], _LocalConn] = {}
        self._conn_locks: Dict[Tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()
        self._graveyard = []
        self._publishers: Dict[str, object] = {}
        self._subs = set()
        self._stopped = False
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="hms-gw"),
            options=[("grpc.max_receive_message_length", max_message),
                     ("grpc.max_send_message_length", max_message),
                     ("grpc.so_reuseport", 0)],
        )
        h = grpc
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(W.SERVICE, {
            "Call": h.unary_unary_rpc_method_handler(self._call),
            "ServerStream": h.unary_stream_rpc_method_handler(self._server_stream),
            "ClientStream": h.stream_unary_rpc_method_handler(self._client_stream),
            "BidiStream": h.stream_stream_rpc_method_handler(self._bidi_stream),
            "Batch": h.unary_unary_rpc_method_handler(self._batch),
            "Send": h.unary_unary_rpc_method_handler(self._send),
            "Resolve": h.unary_unary_rpc_method_handler(self._resolve),
            "ListServices": h.unary_unary_rpc_method_handler(self._list),
            "Publish": h.unary_unary_rpc_method_handler(self._publish),
            "Subscribe": h.unary_stream_rpc_method_handler(self._subscribe),
        }),))
        addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if self.tls:
                creds = grpc.ssl_server_credentials(
                    [(W._read(tls_key), W._read(tls_cert))],
                    root_certificates=W._read(tls_client_ca),
                    require_client_auth=self.mtls,
                )
                bound = self._server.add_secure_port(addr, creds)
            else:
                bound = self._server.add_insecure_port(addr)
        except RuntimeError as e:
            bound = 0
            why = str(e)
        else:
            why = "the address is in use or not local"
        if not bound:
            self.node.close()
            raise error_for(14, f"cannot listen on {addr}: {why}")
        self.host = host
        self.port = bound
        self.address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"

    # -- lifecycle
    def start(self) -> "Gateway":
        self._server.start()
        return self

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._server.wait_for_termination(timeout)

    def stop(self, grace: Optional[float] = 1.0) -> None:
        """Stops serving (RPCs in flight get ``grace`` seconds), then closes every local client,
        publisher and subscription. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for sub in list(self._subs):
            sub.interrupt()
        self._server.stop(grace).wait()
        with self._lock:
            conns = list(self._conns.values()) + self._graveyard
            self._conns.clear()
            self._graveyard = []
            pubs = list(self._publishers.values())
            self._publishers.clear()
        for c in conns:
            c.close()
        for p in pubs:
            p.close()
        self.node.close()

    def __enter__(self) -> "Gateway":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        mode = "mtls" if self.mtls else "tls" if self.tls else "plaintext"
        return f"<Gateway {self.address} {mode}>"

    # -- helpers
    def _fail(self, context, code: int, message: str, details: bytes = b"", dct: int = CT_NONE,
              origin: str = "gateway") -> None:
        md = [(W.MD_ORIGIN, origin)]
        if details:
            md.append((W.MD_DETAILS, to_wire(dct, details)))
            md.append((W.MD_DETAILS_CT, str(dct)))
        context.set_trailing_metadata(md)
        context.set_code(self._codes.get(code, grpc.StatusCode.UNKNOWN))
        context.set_details(message if code in self._codes else f"status {code}: {message}")

    def _fail_exc(self, context, e: FFIError) -> None:
        details, dct = b"", CT_NONE
        if e.details is not None:
            if isinstance(e.details, bytes):
                details, dct = e.details, CT_RAW
            else:
                try:
                    details, dct = cbor2.dumps(e.details), CT_CBOR
                except Exception:
                    pass
        self._fail(context, e.code, e.message, details, dct, "service" if e.source == "remote" else "gateway")

    @staticmethod
    def _route(context):
        service = version = function = ct = None
        for k, v in context.invocation_metadata():
            if k == W.MD_SERVICE:
                service = v
            elif k == W.MD_VERSION:
                version = v
            elif k == W.MD_FUNCTION:
                function = v
            elif k == W.MD_CT:
                ct = v
            elif k == W.MD_CONNECT_TIMEOUT:
                pass
        return service, version, function, ct

    @staticmethod
    def _metadata_value(context, key: str) -> Optional[str]:
        for k, v in context.invocation_metadata():
            if k == key:
                return v
        return None

    def _deadline(self, context) -> Tuple[int, Optional[float]]:
        rem = context.time_remaining()
        if rem is None or rem > 1e8:  # no deadline: grpc reports the time left to "infinity"
            return -1, None
        if rem <= 0:
            raise error_for(4, "the caller's deadline passed before the gateway could call the service")
        return int(rem * _NS), time.monotonic() + rem

    def _conn(self, service, version, context) -> _LocalConn:
        if not isinstance(service, str) or not service:
            raise InvalidArgument(f"metadata {W.MD_SERVICE} is missing: which local service should be called?")
        if version is None:
            version = "*"
        if len(service) > _NAME_MAX or not service.isascii() or not service.isprintable():
            raise InvalidArgument(f"metadata {W.MD_SERVICE} is not a valid service name (ASCII, at most {_NAME_MAX} bytes)")
        if len(version) > _VERSION_MAX or not version.isascii() or not version.isprintable():
            raise InvalidArgument(f"metadata {W.MD_VERSION} is not a valid version requirement")
        key = (service, version)
        conn = self._conns.get(key)
        if conn is not None and conn.dead is None:
            return conn
        with self._lock:
            if self._stopped:
                raise error_for(14, "the gateway is shutting down")
            klock = self._conn_locks.setdefault(key, threading.Lock())
        with klock:  # one handshake per key at a time; other keys are not held up
            conn = self._conns.get(key)
            if conn is not None and conn.dead is None:
                return conn
            if conn is not None:
                self._evict(key, conn)
            timeout = self.connect_timeout
            rem = context.time_remaining()
            if rem is not None and rem < 1e8:
                timeout = max(0.001, min(timeout, rem))
            client = self.node.connect(service, version, timeout=timeout)
            conn = _LocalConn(client)
            with self._lock:
                if self._stopped:
                    conn.close()
                    raise error_for(14, "the gateway is shutting down")
                self._conns[key] = conn
            return conn

    def _evict(self, key, conn: _LocalConn) -> None:
        with self._lock:
            if self._conns.get(key) is conn:
                del self._conns[key]
                self._graveyard.append(conn)  # closed at stop: other threads may still be inside it

    def _fid(self, conn: _LocalConn, function) -> int:
        if not isinstance(function, str) or not function:
            raise InvalidArgument(f"metadata {W.MD_FUNCTION} is missing: which function should be called?")
        fid = conn.functions.get(function)
        if fid is None:
            known = ", ".join(sorted(conn.functions)) or "none"
            raise error_for(5, f"{conn.service}@{conn.version} has no function {function!r} (it has: {known})")
        return fid

    # -- unary
    def _call(self, request: bytes, context):
        try:
            service, version, function, ct = self._route(context)
            ct = W.parse_ct(ct)
            tns, deadline = self._deadline(context)
            data = to_local(ct, request)
            for attempt in (0, 1):
                conn = self._conn(service, version, context)
                fid = self._fid(conn, function)
                try:
                    token, call_id = conn.submit(fid, data, ct, tns, deadline)
                    break
                except FFIError as e:
                    if e.code == 14 and attempt == 0:  # the connection died before: nothing was sent
                        self._evict((service, version or "*"), conn)
                        conn.dead = conn.dead or (14, e.message)
                        continue
                    raise
            state = [False]

            def on_done(conn=conn, call_id=call_id, state=state):
                if not state[0]:
                    conn.cancel(call_id)

            context.add_callback(on_done)
            r = conn.wait(token)
            state[0] = True
        except FFIError as e:
            self._fail_exc(context, e)
            return None
        if r.status:
            if r.status == 14 and r.origin == lib.HMS_ORIGIN_LOCAL:
                self._evict((service, version or "*"), conn)
            self._fail(context, r.status, r.message, r.data, r.ct,
                       "service" if r.origin == lib.HMS_ORIGIN_REMOTE else "gateway")
            return None
        context.set_trailing_metadata(((W.MD_CT, str(r.ct)),))
        return to_wire(r.ct, r.data) if r.ct == CT_ARROW else r.data

    def _resolve(self, request: bytes, context):
        try:
            service, version, _, _ = self._route(context)
            conn = self._conn(service, version, context)
        except FFIError as e:
            self._fail_exc(context, e)
            return None
        return cbor2.dumps({"service": conn.service, "version": conn.version, "pid": conn.pid,
                            "functions": conn.functions, "max_message": min(conn.max_message, self.max_message)})

    def _list(self, request: bytes, context):
        try:
            return cbor2.dumps([s.__dict__ for s in list_services(self.runtime_dir)])
        except FFIError as e:
            self._fail_exc(context, e)
            return None

    # -- streams
    def _open_stream(self, context, flags: int, data: bytes, ct: int):
        service, version, function, _ = self._route(context)
        tns, _ = self._deadline(context)
        conn = self._conn(service, version, context)
        fid = self._fid(conn, function)
        out = ffi.new("hms_stream_t **")
        err = ffi.new("hms_error_t *")
        st = lib.hms_stream_open(conn.ptr, fid, data, len(data), ct, flags, tns, out, err)
        if st:
            if st == 14:
                self._evict((service, version or "*"), conn)
            raise error_for(st, ffi.string(err.message).decode("utf-8", "replace"))
        return _StreamHandle(out[0], conn)

    def _drain_stream(self, context, s: "_StreamHandle", framed: bool):
        """Yields the local stream's items (framed) until its end; sets the status on error.
        For a client stream (framed=False) returns the single reply instead."""
        item = ffi.new("hms_payload_t *")
        end = ffi.new("int *")
        err = ffi.new("hms_error_t *")
        reply = None
        while True:
            st = lib.hms_stream_next(s.ptr, item, end, -1, err)
            n = item.len
            data = ffi.buffer(item.data, n)[:] if n else b""
            ct = item.content_type
            lib.hms_payload_release(item)
            if st:
                if s.pump_error is not None:  # the caller sent a malformed item: that is the story
                    self._fail_exc(context, s.pump_error)
                    return
                origin = "service" if err.origin == lib.HMS_ORIGIN_REMOTE else "gateway"
                self._fail(context, st, ffi.string(err.message).decode("utf-8", "replace"), data, ct, origin)
                return
            if end[0]:
                if not framed:
                    rct, rdata = reply if reply is not None else (CT_NONE, b"")
                    context.set_trailing_metadata(((W.MD_CT, str(rct)),))
                    yield to_wire(rct, rdata)
                return
            if framed:
                yield W.frame(ct, to_wire(ct, data))
            else:
                reply = (ct, data)

    def _server_stream(self, request: bytes, context):
        try:
            ct = W.parse_ct(self._metadata_value(context, W.MD_CT))
            s = self._open_stream(context, lib.HMS_STREAM_SERVER, to_local(ct, request), ct)
        except FFIError as e:
            self._fail_exc(context, e)
            return
        context.add_callback(s.cancel)
        try:
            yield from self._drain_stream(context, s, True)
        finally:
            s.release()

    def _pump(self, context, s: "_StreamHandle", requests) -> None:
        """Sends the caller's stream items to the local stream, then finishes it. Holds a reference
        on the stream, so it stays open until this returns (the reader may finish first)."""
        err = ffi.new("hms_error_t *")
        ptr = s.ptr
        try:
            for msg in requests:
                ct, data = W.unframe(msg)
                data = to_local(ct, data)
                st = lib.hms_stream_send(ptr, data, len(data), ct, err)
                if st:
                    return  # the stream ended (error, cancel, dead service): the reader reports why
            lib.hms_stream_finish(ptr, err)
        except FFIError as e:
            s.pump_error = e
            s.cancel()
        except Exception:  # the caller went away mid-stream (grpc raises from the iterator)
            s.cancel()
        finally:
            s.release()

    def _client_stream(self, requests, context):
        try:
            s = self._open_stream(context, lib.HMS_STREAM_CLIENT, b"", CT_NONE)
        except FFIError as e:
            self._fail_exc(context, e)
            return None
        context.add_callback(s.cancel)
        s.users = 2
        threading.Thread(target=self._pump, args=(context, s, requests), name="hms-gw-pump", daemon=True).start()
        try:
            out = list(self._drain_stream(context, s, False))
            return out[0] if out else None
        finally:
            s.release()

    def _bidi_stream(self, requests, context):
        try:
            s = self._open_stream(context, lib.HMS_STREAM_CLIENT | lib.HMS_STREAM_SERVER, b"", CT_NONE)
        except FFIError as e:
            self._fail_exc(context, e)
            return
        context.add_callback(s.cancel)
        s.users = 2
        threading.Thread(target=self._pump, args=(context, s, requests), name="hms-gw-pump", daemon=True).start()
        try:
            yield from self._drain_stream(context, s, True)
        finally:
            s.cancel()  # a pump still sending stops at once
            s.release()

    # -- batch and one-way
    def _batch(self, request: bytes, context):
        try:
            service, version, _, _ = self._route(context)
            tns, _ = self._deadline(context)
            try:
                calls = cbor2.loads(request)
                if not isinstance(calls, list) or not all(
                        isinstance(c, list) and len(c) == 3 and isinstance(c[0], str) and isinstance(c[1], int)
                        and 0 <= c[1] <= 0xFFFFFFFF and isinstance(c[2], bytes) for c in calls):
                    raise ValueError("not a list of [function, content type, payload]")
            except Exception as e:
                raise InvalidArgument(f"a Batch request is a CBOR list of [function, content type, bytes]: {e}") from None
            if not calls:
                return cbor2.dumps([])
            conn = self._conn(service, version, context)
            n = len(calls)
            items = ffi.new("hms_batch_item_t[]", n)
            keep = []
            for i, (fn, ct, data) in enumerate(calls):
                data = to_local(ct, data)
                keep.append(data)
                it = items[i]
                it.fn_id = self._fid(conn, fn)
                it.content_type = ct
                it.data = ffi.from_buffer(data)
                keep.append(it.data)
                it.len = len(data)
            out = ffi.new("hms_completion_t[]", n)
            err = ffi.new("hms_error_t *")
            st = lib.hms_call_batch(conn.ptr, items, n, 0, out, tns, err)
            results = []
            for i in range(n):
                c = out[i]
                plen = c.payload.len
                data = ffi.buffer(c.payload.data, plen)[:] if plen else b""
                rct = c.payload.content_type
                lib.hms_payload_release(ffi.addressof(c, "payload"))
                results.append([c.status, rct, to_wire(rct, data),
                                ffi.string(c.message).decode("utf-8", "replace") if c.status else ""])
            if st and all(r[0] for r in results):
                raise error_for(st, ffi.string(err.message).decode("utf-8", "replace"))
            return cbor2.dumps(results)
        except FFIError as e:
            self._fail_exc(context, e)
            return None

    def _send(self, request: bytes, context):
        try:
            service, version, function, ct = self._route(context)
            ct = W.parse_ct(ct)
            try:
                blobs = cbor2.loads(request)
                if not isinstance(blobs, list) or not all(isinstance(b, bytes) for b in blobs):
                    raise ValueError("not a list of byte strings")
            except Exception as e:
                raise InvalidArgument(f"a Send request is a CBOR list of byte strings: {e}") from None
            if not blobs:
                return b""
            blobs = [to_local(ct, b) for b in blobs]
            conn = self._conn(service, version, context)
            fid = self._fid(conn, function)
            lens = ffi.new("size_t[]", [len(b) for b in blobs])
            err = ffi.new("hms_error_t *")
            st = lib.hms_call_batch_packed(conn.ptr, fid, ct, b"".join(blobs), lens, len(blobs),
                                           lib.HMS_CALL_ONEWAY, ffi.NULL, -1, err)
            if st:
                if st == 14:
                    self._evict((service, version or "*"), conn)
                raise error_for(st, ffi.string(err.message).decode("utf-8", "replace"))
            return b""
        except FFIError as e:
            self._fail_exc(context, e)
            return None

    # -- pub/sub
    def _publisher(self, topic: str):
        from ._topic import Publisher

        pub = self._publishers.get(topic)
        if pub is None:
            with self._lock:
                pub = self._publishers.get(topic)
                if pub is None:
                    if self._stopped:
                        raise error_for(14, "the gateway is shutting down")
                    pub = self._publishers[topic] = Publisher(self.node, topic)
        return pub

    def _publish(self, request: bytes, context):
        try:
            topic = self._metadata_value(context, W.MD_TOPIC)
            if not topic:
                raise InvalidArgument(f"metadata {W.MD_TOPIC} is missing: which topic?")
            ct = W.parse_ct(self._metadata_value(context, W.MD_CT))
            flags = self._metadata_value(context, W.MD_FLAGS) or "0"
            if flags not in ("0", "1"):
                raise InvalidArgument(f"metadata {W.MD_FLAGS} must be 0 or 1 (event), got {flags!r}")
            pub = self._publisher(topic)
            rem = context.time_remaining()
            seq = pub._send(to_local(ct, request), ct, int(flags), rem if rem is not None and rem < 1e8 else None)
        except FFIError as e:
            self._fail_exc(context, e)
            return None
        context.set_trailing_metadata(((W.MD_SEQ, str(seq)),))
        return b""

    def _subscribe(self, request: bytes, context):
        from ._topic import Subscription

        try:
            pattern = self._metadata_value(context, W.MD_PATTERN)
            if not pattern:
                raise InvalidArgument(f"metadata {W.MD_PATTERN} is missing: which topics?")
            keep = self._metadata_value(context, W.MD_FLAGS) == "1"
            sub = Subscription(self.node, pattern, keep_waiting=keep)
        except FFIError as e:
            self._fail_exc(context, e)
            return
        self._subs.add(sub)
        context.add_callback(sub.interrupt)
        try:
            context.send_initial_metadata(((W.MD_PATTERN, pattern),))  # "subscribed": nothing is missed now
            pack, hsize = W.SUB_HEADER.pack, W.SUB_HEADER.size
            while context.is_active() and not self._stopped:
                with sub._lock:
                    if not sub._ready and not sub._fill(500_000_000):
                        continue
                    batch = list(sub._ready)
                    sub._ready.clear()
                for topic, raw, seq, missed, pid, pub_id, ct, pns, flags in batch:
                    t = topic.encode("ascii", "replace")
                    yield pack(ct, flags, seq, missed, pns, pub_id, pid, len(t), 0) + t + to_wire(ct, raw)
        except FFIError as e:
            if e.code == 1:  # interrupted: the caller went away or the gateway stops
                if self._stopped:
                    self._fail(context, 14, "the gateway is shutting down")
                return
            self._fail_exc(context, e)
        finally:
            self._subs.discard(sub)
            sub.close()


class _StreamHandle:
    """A local stream shared by the reader and (client/bidi streams) the pump thread: closed when the
    last of them releases it, and a late cancel (gRPC's callback thread) never touches a closed one."""

    __slots__ = ("ptr", "conn", "lock", "pump_error", "users")

    def __init__(self, ptr, conn) -> None:
        self.ptr, self.conn = ptr, conn
        self.lock = threading.Lock()
        self.pump_error = None
        self.users = 1

    def cancel(self) -> None:
        with self.lock:
            if self.ptr is not None:
                lib.hms_stream_cancel(self.ptr)

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users:
                return
            ptr, self.ptr = self.ptr, None
        if ptr is not None:
            lib.hms_stream_close(ptr)


def serve(listen: str = "127.0.0.1:50051", **kw) -> None:
    """Runs a gateway until SIGINT/SIGTERM (what ``hms-ffi gateway`` does)."""
    import signal

    gw = Gateway(listen, **kw).start()
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    mode = "mutual TLS" if gw.mtls else "TLS" if gw.tls else "plaintext"
    print(f"hms-ffi gateway listening on {gw.address} ({mode}), runtime dir "
          f"{gw.node.runtime_dir}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        gw.stop()
