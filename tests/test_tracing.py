"""Trace context in every call frame (C: hms_set_thread_trace / hms_call_trace / hms_thread_trace), its
propagation through handlers, OpenTelemetry CLIENT/SERVER spans linked across processes (SDK with the
in-memory exporter, in child processes so this process's global tracer provider stays unset), and log
records that carry the call's trace id."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest

import hms_ffi_native as hms
from hms_ffi_native._native import ffi, lib

from conftest import child_env

TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN = bytes.fromhex("00f067aa0ba902b7")


@pytest.fixture
def traced_thread():
    lib.hms_set_thread_trace(TRACE, SPAN, 1)
    yield
    lib.hms_set_thread_trace(ffi.NULL, ffi.NULL, 0)


def test_every_call_path_carries_the_thread_context(node, traced_thread):
    svc = node.service("t.trace", "1.0.0")
    seen = []

    @svc.function()
    def tp(_, ctx):
        seen.append(ctx.traceparent)
        return ctx.traceparent

    @svc.function()
    def items(n, ctx):
        seen.append(ctx.traceparent)
        yield from range(n)

    @svc.function(client_stream=True)
    def total(xs, ctx):
        seen.append(ctx.traceparent)
        return sum(xs)

    node.start()
    want = f"00-{TRACE.hex()}-{SPAN.hex()}-01"
    with node.connect("t.trace") as c:
        assert c.call("tp") == want
        assert c.call_async("tp").result(5) == want
        assert c.batch([("tp", None)]) == [want]
        c.send("tp")
        assert list(c.stream("items", 2)) == [0, 1]
        assert c.client_stream("total", [1, 2]) == 3
        lib.hms_set_thread_trace(ffi.NULL, ffi.NULL, 0)
        assert c.call("tp") is None  # cleared: no context travels
    assert seen.count(want) == 6


def test_handlers_pass_the_callers_context_on(node, traced_thread):
    """Without any tracer: a call made inside a handler carries the caller's trace, and the serving
    thread's own context is back after the handler."""
    other = hms.Node("t-other")  # the inner service needs a serving thread of its own
    inner = other.service("t.inner", "1.0.0")
    outer = node.service("t.outer", "1.0.0")

    @inner.function()
    def tp(_, ctx):
        return ctx.traceparent

    client = {}

    @outer.function()
    def relay(_):
        mine = hms.current_trace()
        return {"nested": client["c"].call("tp"), "current": list(mine)}

    other.start()
    node.start()
    try:
        with node.connect("t.outer") as c, node.connect("t.inner") as ci:
            client["c"] = ci
            out = c.call("relay")
    finally:
        other.close()
    assert out["nested"] == f"00-{TRACE.hex()}-{SPAN.hex()}-01"
    assert out["current"] == [TRACE.hex(), SPAN.hex()]


def test_thread_trace_roundtrip():
    lib.hms_set_thread_trace(TRACE, SPAN, 1)
    try:
        assert hms.current_trace() == (TRACE.hex(), SPAN.hex())
    finally:
        lib.hms_set_thread_trace(ffi.NULL, ffi.NULL, 0)
    assert hms.current_trace() == ("", "")


def test_log_records_carry_the_calls_trace_id(node, traced_thread, caplog):
    svc = node.service("t.logs", "1.0.0")
    app_log = logging.getLogger("t.app")
    app_log.addFilter(hms.TraceContextFilter())

    @svc.function()
    def work(_):
        app_log.warning("working")
        raise RuntimeError("a bug")  # logged by the package (log_handler_errors)

    node.log_handler_errors = "logging"  # handler errors as records of the hms_ffi_native logger
    node.start()
    with caplog.at_level(logging.WARNING), node.connect("t.logs") as c:
        with pytest.raises(hms.Unknown):
            c.call("work")
    mine = [r for r in caplog.records if r.name == "t.app"]
    pkg = [r for r in caplog.records if r.name == "hms_ffi_native"]
    assert mine and pkg
    for r in mine + pkg:
        assert r.trace_id == TRACE.hex() and r.span_id == SPAN.hex()
    assert "t.logs.work raised" in pkg[0].getMessage() and pkg[0].exc_info


def test_without_opentelemetry_nothing_is_imported(runtime_dir):
    code = textwrap.dedent("""
        import sys
        import hms_ffi_native as hms
        n = hms.Node("plain")
        s = n.service("t.plain", "1.0.0")
        s.add_function("echo", lambda x: x)
        n.start()
        with n.connect("t.plain") as c:
            assert c.call("echo", 1) == 1
        n.close()
        assert not hms._tracing.enabled()
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


SETUP_OTEL = """
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
import hms_ffi_native as hms

def dump():
    return [{"name": s.name, "kind": s.kind.name, "trace": f"{s.context.trace_id:032x}",
             "span": f"{s.context.span_id:016x}", "parent": f"{s.parent.span_id:016x}" if s.parent else None,
             "status": s.status.status_code.name, "attrs": dict(s.attributes)} for s in exporter.get_finished_spans()]
"""

SERVER = SETUP_OTEL + """
import asyncio
node = hms.Node("otel-srv")
svc = node.service("t.otel", "1.0.0")

@svc.function()
def echo(x):
    return x

@svc.function()
def fail(_):
    raise hms.NotFound("nothing here")

@svc.function()
async def aecho(x):
    await asyncio.sleep(0.01)
    return x

@svc.function()
def spans(_):
    return dump()

print("ready", flush=True)
node.serve()
"""

CLIENT = SETUP_OTEL + """
import asyncio
tracer = trace.get_tracer("test")
with hms.connect("t.otel") as c:
    assert hms._tracing.enabled()
    with tracer.start_as_current_span("root"):
        c.call("echo", 1)
        try:
            c.call("fail", None)
        except hms.NotFound:
            pass
        c.call_async("echo", 2).result(5)
        async def main():
            return await c.acall("aecho", 3)
        assert asyncio.run(main()) == 3
    server = c.call("spans")
print(json.dumps({"client": dump(), "server": server}))
"""


def test_opentelemetry_spans_link_across_processes(runtime_dir):
    pytest.importorskip("opentelemetry.sdk.trace")
    srv = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=child_env())
    try:
        assert srv.stdout.readline().strip() == "ready", srv.stderr.read()
        r = subprocess.run([sys.executable, "-c", CLIENT], capture_output=True, text=True, env=child_env(), timeout=60)
        assert r.returncode == 0, r.stderr
    finally:
        srv.kill()
        srv.wait(10)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    client = {(s["name"], s["attrs"].get("hms.kind")): s for s in out["client"] if s["kind"] == "CLIENT"}
    root = next(s for s in out["client"] if s["name"] == "root")
    server = [s for s in out["server"] if s["kind"] == "SERVER"]
    by_parent = {s["parent"]: s for s in server}
    for key in [("t.otel/echo", "call"), ("t.otel/fail", "call"), ("t.otel/echo", "async"),
                ("t.otel/aecho", "asyncio")]:
        cs = client[key]
        assert cs["trace"] == root["trace"] and cs["parent"] == root["span"]  # child of the app's span
        ss = by_parent[cs["span"]]  # the server span's parent is the client span, across processes
        assert ss["trace"] == root["trace"] and ss["name"] == key[0]
        assert ss["attrs"]["rpc.system"] == "hms-ffi"
    assert client[("t.otel/fail", "call")]["status"] == "ERROR"
    assert client[("t.otel/fail", "call")]["attrs"]["rpc.grpc.status_code"] == 5
    assert by_parent[client[("t.otel/fail", "call")]["span"]]["status"] == "ERROR"
    assert by_parent[client[("t.otel/aecho", "asyncio")]["span"]]["kind"] == "SERVER"


def test_enable_and_disable_swap_the_call_path(node):
    pytest.importorskip("opentelemetry.trace")
    from hms_ffi_native import _core, _tracing

    plain = _core.Client.call
    hms.enable_tracing()
    try:
        assert _core.Client.call is not plain and _core.Client.call.__wrapped__ is plain
        svc = node.service("t.swap", "1.0.0")
        svc.add_function("tp", lambda _, ctx: ctx.traceparent)
        node.start()
        with node.connect("t.swap") as c:
            c.call("tp")  # no SDK provider in this process: non-recording spans, nothing breaks
    finally:
        hms.disable_tracing()
        _tracing._state["forced"] = None
    assert _core.Client.call is plain and not _tracing.enabled()
