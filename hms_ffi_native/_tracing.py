"""Tracing (W3C trace context through every call frame, OpenTelemetry spans) and log records that
carry the call's trace id.

Without OpenTelemetry nothing here imports it and nothing runs per call: the frames still carry
whatever context the thread has (``hms_set_thread_trace``; while a handler runs, its caller's), so
a trace crosses services written in any language.

With OpenTelemetry configured (a real TracerProvider set before the first Node or connect, or
``enable()`` called), the package traces itself:

* a call (``call``, ``call_async``, ``acall``, ``send``, ``send_many``, ``batch``, ``stream``,
  ``client_stream``, ``bidi_stream``) runs in a CLIENT span named ``SERVICE/FUNCTION`` whose context
  travels in the request frame;
* a handler (plain, generator, or ``async def``) runs in a SERVER span whose parent is that context,
  in whichever process and language the caller lives; calls the handler makes are its children.

Enabling swaps the call methods and the handler callback for traced versions; ``disable()`` puts
the plain ones back. The plain ones never look at tracing.

Logging: records of the ``hms_ffi_native`` logger carry ``trace_id`` and ``span_id`` attributes
(hex, "" when there is no trace), and ``TraceContextFilter`` adds them to any handler's records::

    handler.addFilter(hms.TraceContextFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(trace_id)s %(span_id)s %(message)s"))
"""
from __future__ import annotations

import contextvars
import logging
import os
import sys
from typing import Optional, Tuple

from ._native import ffi, lib

__all__ = ["enable", "disable", "enabled", "refresh", "TraceContextFilter", "current_trace", "logger"]

_state = {"on": False, "forced": None, "saved": None}
_ZERO16 = bytes(16)


def enabled() -> bool:
    """True while the call methods and handlers create OpenTelemetry spans."""
    return _state["on"]


def _thread_trace() -> Tuple[bytes, bytes, int]:
    tid = ffi.new("uint8_t[16]")
    sid = ffi.new("uint8_t[8]")
    fl = ffi.new("uint8_t *")
    lib.hms_thread_trace(tid, sid, fl)
    return bytes(tid), bytes(sid), fl[0]


def _set_thread_trace(tid: bytes, sid: bytes, flags: int) -> None:
    if tid == _ZERO16:
        lib.hms_set_thread_trace(ffi.NULL, ffi.NULL, 0)
    else:
        lib.hms_set_thread_trace(tid, sid, flags)


def current_trace() -> Tuple[str, str]:
    """(trace_id, span_id) as hex of what is current on this thread: the OpenTelemetry span when
    tracing is on, else the W3C context calls from this thread carry (inside a handler: its
    caller's). Empty strings when there is none."""
    if _state["on"]:
        from opentelemetry import trace

        sc = trace.get_current_span().get_span_context()
        if sc.is_valid:
            return f"{sc.trace_id:032x}", f"{sc.span_id:016x}"
    tid, sid, _ = _thread_trace()
    if tid == _ZERO16:
        return "", ""
    return tid.hex(), sid.hex()


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (hex, "" without a trace) to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "trace_id"):
            record.trace_id, record.span_id = current_trace()
        return True


logger = logging.getLogger("hms_ffi_native")
logger.addFilter(TraceContextFilter())


def report(mode, message: str, exc_info) -> None:
    """How the package reports handler errors (Node(log_handler_errors=...)): True writes them to
    stderr as always; "logging" makes them records of the ``hms_ffi_native`` logger, with the call's
    trace_id/span_id. exc_info: True (the exception being handled), an exception, or None."""
    if mode == "logging":
        if exc_info is None:
            logger.warning(message)
        else:
            logger.error(message, exc_info=exc_info)
        return
    import traceback

    sys.stderr.write(message + "\n")
    if exc_info is True:
        traceback.print_exc()
    elif exc_info is not None:
        traceback.print_exception(type(exc_info), exc_info, exc_info.__traceback__)


# ------------------------------------------------------------------------------------------- spans
def _otel():
    from opentelemetry import context, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    return trace, context, SpanKind, Status, StatusCode


def _tracer():
    from opentelemetry import trace

    from . import __version__

    return trace.get_tracer("hms_ffi_native", __version__)


def _span_ids(span) -> Tuple[bytes, bytes, int]:
    sc = span.get_span_context()
    if not sc.is_valid:
        return _ZERO16, bytes(8), 0
    return sc.trace_id.to_bytes(16, "big"), sc.span_id.to_bytes(8, "big"), int(sc.trace_flags) & 1


def _attrs(service: str, function: str, version: str, kind: str) -> dict:
    return {"rpc.system": "hms-ffi", "rpc.service": service, "rpc.method": function, "service.version": version,
            "hms.kind": kind}


def _fail(span, exc: BaseException) -> None:
    trace, _, _, Status, StatusCode = _otel()
    code = getattr(exc, "code", None)
    if code is not None:
        span.set_attribute("rpc.grpc.status_code", int(code))
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


class _ClientSpan:
    """A CLIENT span whose context the calling thread's next request frames carry."""

    __slots__ = ("span", "saved")

    def __init__(self, client, function: str, kind: str) -> None:
        _, _, SpanKind, _, _ = _otel()
        self.span = _tracer().start_span(f"{client.service}/{function}", kind=SpanKind.CLIENT,
                                         attributes=_attrs(client.service, function, client.version, kind))
        self.saved = _thread_trace()
        _set_thread_trace(*_span_ids(self.span))

    def sent(self) -> None:
        _set_thread_trace(*self.saved)

    def end(self, exc: Optional[BaseException] = None) -> None:
        if exc is not None:
            _fail(self.span, exc)
        else:
            self.span.set_attribute("rpc.grpc.status_code", 0)
        self.span.end()


def _wrap_sync(orig, kind: str):
    def traced(self, function, *args, **kwargs):
        cs = _ClientSpan(self, function, kind)
        try:
            out = orig(self, function, *args, **kwargs)
        except BaseException as e:
            cs.sent()
            cs.end(e)
            raise
        cs.sent()
        cs.end()
        return out

    traced.__wrapped__ = orig
    traced.__doc__ = orig.__doc__
    traced.__name__ = orig.__name__
    return traced


def _wrap_future(orig):
    def call_async(self, function, *args, **kwargs):
        cs = _ClientSpan(self, function, "async")
        try:
            fut = orig(self, function, *args, **kwargs)
        except BaseException as e:
            cs.sent()
            cs.end(e)
            raise
        cs.sent()

        def done(f):
            exc = None if f.cancelled() else f.exception()
            if f.cancelled():
                from ._errors import Cancelled

                exc = Cancelled("the future was cancelled")
            cs.end(exc)

        fut.add_done_callback(done)
        return fut

    call_async.__wrapped__ = orig
    call_async.__doc__ = orig.__doc__
    return call_async


def _wrap_acall(orig):
    async def acall(self, function, *args, **kwargs):
        cs = _ClientSpan(self, function, "asyncio")
        coro = orig(self, function, *args, **kwargs)
        try:
            # The request is written before the coroutine first waits: run it to that point with our
            # context on the thread, then put the thread's own back.
            fut = coro.send(None)
        except StopIteration as stop:
            cs.sent()
            cs.end()
            return stop.value
        except BaseException as e:
            cs.sent()
            cs.end(e)
            raise
        cs.sent()
        try:
            while True:
                try:
                    sent = await _Yield(fut)
                except BaseException as e:  # cancellation or an error thrown into us: pass it on
                    fut = coro.throw(e)
                else:
                    fut = coro.send(sent)
        except StopIteration as stop:
            cs.end()
            return stop.value
        except BaseException as e:
            cs.end(e)
            raise

    acall.__wrapped__ = orig
    acall.__doc__ = orig.__doc__
    return acall


class _Yield:
    """Awaiting it yields one value (what the inner coroutine yielded) to the event loop."""

    __slots__ = ("v",)

    def __init__(self, v) -> None:
        self.v = v

    def __await__(self):
        return (yield self.v)


def _wrap_stream(orig, kind: str):
    def opener(self, function, *args, **kwargs):
        cs = _ClientSpan(self, function, kind)
        try:
            s = orig(self, function, *args, **kwargs)
        except BaseException as e:
            cs.sent()
            cs.end(e)
            raise
        cs.sent()
        s._trace_span = cs  # ended by Stream.close (wrapped while tracing is on)
        return s

    opener.__wrapped__ = orig
    opener.__doc__ = orig.__doc__
    return opener


def _wrap_stream_close(orig):
    def close(self):
        cs = self.__dict__.pop("_trace_span", None)
        try:
            orig(self)
        finally:
            if cs is not None:
                cs.end()

    close.__wrapped__ = orig
    return close


_server_span = contextvars.ContextVar("hms_server_span", default=None)


def _traced_handler(call, req, user_data):
    """The handler callback while tracing is on: a SERVER span around the plain one (_core)."""
    from . import _core

    trace, context, SpanKind, Status, StatusCode = _otel()
    entry = ffi.from_handle(user_data)
    tid = ffi.new("uint8_t[16]")
    sid = ffi.new("uint8_t[8]")
    fl = ffi.new("uint8_t *")
    lib.hms_call_trace(call, tid, sid, fl)
    parent_ctx = None
    if bytes(tid) != _ZERO16:
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

        parent = SpanContext(int.from_bytes(bytes(tid), "big"), int.from_bytes(bytes(sid), "big"), is_remote=True,
                             trace_flags=TraceFlags(fl[0] & 1))
        parent_ctx = trace.set_span_in_context(NonRecordingSpan(parent))
    svc = entry.service
    span = _tracer().start_span(f"{svc.name}/{entry.name}", context=parent_ctx, kind=SpanKind.SERVER,
                                attributes=_attrs(svc.name, entry.name, svc.version, "server"))
    saved = _thread_trace()
    _set_thread_trace(*_span_ids(span))
    token = context.attach(trace.set_span_in_context(span))
    vtoken = _server_span.set(span) if entry.is_async else None
    ended_later = False
    try:
        st = _core._hms_py_handler(call, req, user_data)
        # An async handler's call goes on in a task (which copied our context): _traced_run_async ends it.
        ended_later = entry.is_async and st == 0
        if st:
            span.set_attribute("rpc.grpc.status_code", int(st))
            span.set_status(Status(StatusCode.ERROR, f"status {st}"))
        elif not ended_later:
            span.set_attribute("rpc.grpc.status_code", 0)
        return st
    finally:
        if vtoken is not None:
            _server_span.reset(vtoken)
        context.detach(token)
        _set_thread_trace(*saved)
        if not ended_later:
            span.end()


def _wrap_run_async(orig):
    async def _run_async(self, entry, arg, ctx, d):
        span = _server_span.get()
        try:
            await orig(self, entry, arg, ctx, d)
        finally:
            if span is not None:
                span.end()

    _run_async.__wrapped__ = orig
    return _run_async


_CLIENT_METHODS = {"call": ("sync", "call"), "send": ("sync", "oneway"), "send_many": ("sync", "oneway-many"),
                   "batch": ("batch", "batch"), "client_stream": ("sync", "client-stream"),
                   "call_async": ("future", "async"), "acall": ("acall", "asyncio"),
                   "stream": ("stream", "server-stream"), "bidi_stream": ("stream", "bidi-stream")}


def _wrap_batch(orig):
    def batch(self, calls, *args, **kwargs):
        calls = list(calls)
        names = sorted({fn for fn, _ in calls})
        cs = _ClientSpan(self, names[0] if len(names) == 1 else "batch", "batch")
        cs.span.set_attribute("hms.batch.size", len(calls))
        try:
            out = orig(self, calls, *args, **kwargs)
        except BaseException as e:
            cs.sent()
            cs.end(e)
            raise
        cs.sent()
        cs.end()
        return out

    batch.__wrapped__ = orig
    batch.__doc__ = orig.__doc__
    return batch


def enable() -> None:
    """Creates OpenTelemetry spans for calls and handlers from now on (needs opentelemetry-api)."""
    _state["forced"] = True
    _install()


def disable() -> None:
    """Stops creating spans (the plain call methods and handler come back)."""
    _state["forced"] = False
    _uninstall()


def _install() -> None:
    if _state["on"]:
        return
    import opentelemetry.trace  # noqa: F401  (fails here, clearly, when it is not installed)

    from . import _core

    saved = {}
    for name, (how, kind) in _CLIENT_METHODS.items():
        orig = getattr(_core.Client, name)
        saved[("Client", name)] = orig
        wrap = {"sync": lambda o, k=kind: _wrap_sync(o, k), "future": _wrap_future, "acall": _wrap_acall,
                "stream": lambda o, k=kind: _wrap_stream(o, k), "batch": _wrap_batch}[how]
        setattr(_core.Client, name, wrap(orig))
    saved[("Stream", "close")] = _core.Stream.close
    _core.Stream.close = _wrap_stream_close(_core.Stream.close)
    saved[("Node", "_run_async")] = _core.Node._run_async
    _core.Node._run_async = _wrap_run_async(_core.Node._run_async)
    ffi.def_extern(name="_hms_py_handler")(_traced_handler)
    _state["saved"] = saved
    _state["on"] = True


def _uninstall() -> None:
    if not _state["on"]:
        return
    from . import _core

    for (cls, name), orig in _state["saved"].items():
        setattr(getattr(_core, cls), name, orig)
    ffi.def_extern(name="_hms_py_handler")(_core._hms_py_handler)
    _state["saved"] = None
    _state["on"] = False


def refresh() -> None:
    """Turns tracing on when OpenTelemetry is already imported with a real TracerProvider set (and
    neither enable() nor disable() nor HMS_FFI_TRACING=0 decided otherwise). Imports nothing. Called
    when a Node or Client is created."""
    if _state["on"] or _state["forced"] is not None:
        return
    if os.environ.get("HMS_FFI_TRACING", "").lower() in ("0", "off", "false", "no"):
        return
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return
    try:
        provider = trace.get_tracer_provider()
    except Exception:
        return
    if type(provider).__name__ in ("ProxyTracerProvider", "NoOpTracerProvider"):
        return
    _install()
