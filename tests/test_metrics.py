"""Per-function metrics (csrc/stats.c, hms_ffi_native/_stats.py): exact counters under load, errors by
status, latency histograms, stats read from another process while it serves, hostile stats blocks,
Prometheus text and OpenTelemetry metrics."""
from __future__ import annotations

import concurrent.futures
import fcntl
import mmap
import os
import socket
import struct
import threading
import time

import pytest

import hms_ffi_native as hms
from hms_ffi_native._native import ffi, lib
from hms_ffi_native._stats import percentile_ns, prometheus_text, rates

from conftest import wait_until


def _fn(snap, name):
    return snap["functions"][name]


def _check_invariants(f):
    lat = f["latency"]
    assert f["completed"] == sum(f["status"].values())
    assert sum(lat["buckets"]) == lat["count"] == f["completed"]
    assert f["errors"] == f["completed"] - f["status"].get("OK", 0)
    assert f["in_flight"] == max(0, f["calls"] - f["completed"])
    if lat["count"]:
        assert lat["max_ns"] <= lat["sum_ns"]
        assert lat["p50_ns"] <= lat["p99_ns"] <= lat["max_ns"]


@pytest.fixture
def served(node):
    svc = node.service("t.metrics", "1.0.0")

    @svc.function()
    def echo(x):
        return x

    @svc.function()
    def fail(code):
        raise hms.error_for(code, f"failing with {code}")

    @svc.function()
    def crash(_):
        raise ZeroDivisionError("boom")

    @svc.function()
    def count_to(n):
        yield from range(n)

    @svc.function()
    def sink(_):
        return None

    node.log_handler_errors = False
    node.start()
    return node, svc


def test_counters_exact_under_load(served):
    node, svc = served
    payload = b"p" * 100
    threads, per_thread = 4, 500
    with node.connect("t.metrics") as c:
        def work():
            for _ in range(per_thread):
                assert c.call("echo", payload) == payload

        with concurrent.futures.ThreadPoolExecutor(threads) as ex:
            for f in [ex.submit(work) for _ in range(threads)]:
                f.result()
        n = threads * per_thread
        futs = [c.call_async("echo", payload) for _ in range(300)]
        concurrent.futures.wait(futs)
        n += 300
        assert wait_until(lambda: _fn(svc.stats(), "echo")["completed"] == n, 5)
        f = _fn(svc.stats(), "echo")
    assert f["calls"] == n and f["status"] == {"OK": n} and f["errors"] == 0 and f["in_flight"] == 0
    assert f["bytes_in"] == n * 100 and f["bytes_out"] == n * 100
    assert f["oneway"] == 0 and f["streams"] == 0
    _check_invariants(f)
    assert f["latency"]["sum_ns"] > 0


def test_errors_by_status_and_handler_bugs(served):
    node, svc = served
    codes = [3, 3, 5, 9, 13, 16]
    with node.connect("t.metrics") as c:
        for code in codes:
            with pytest.raises(hms.FFIError) as ei:
                c.call("fail", code)
            assert ei.value.code == code
        with pytest.raises(hms.Unknown):
            c.call("crash", None)
    s = svc.stats()
    f = _fn(s, "fail")
    assert f["status"] == {"INVALID_ARGUMENT": 2, "NOT_FOUND": 1, "FAILED_PRECONDITION": 1, "INTERNAL": 1,
                           "UNAUTHENTICATED": 1}
    assert f["errors"] == f["calls"] == len(codes)
    assert _fn(s, "crash")["status"] == {"UNKNOWN": 1}
    for fn in s["functions"].values():
        _check_invariants(fn)


def test_oneway_streams_and_refusals(served):
    node, svc = served
    with node.connect("t.metrics") as c:
        for _ in range(50):
            c.send("sink", b"x" * 10)
        c.send_many("sink", [b"y" * 5] * 100)
        assert list(c.stream("count_to", 7)) == list(range(7))
        with pytest.raises(hms.FailedPrecondition):  # a stream function called as a plain call: refused
            c.call("count_to", 3)
        assert wait_until(lambda: _fn(svc.stats(), "sink")["completed"] == 150, 5)
        # An id the service does not have (the Python client checks names; the C API does not).
        resp = ffi.new("hms_payload_t *")
        err = ffi.new("hms_error_t *")
        assert lib.hms_call_bytes(c._ptr, 999, b"", 0, 0, resp, -1, err) == lib.HMS_UNIMPLEMENTED
        lib.hms_payload_release(resp)
        s = svc.stats()
    sink = _fn(s, "sink")
    assert sink["calls"] == sink["oneway"] == 150 and sink["status"] == {"OK": 150}
    assert sink["bytes_in"] == 50 * 10 + 100 * 5
    ct = _fn(s, "count_to")
    assert ct["calls"] == 2 and ct["streams"] == 1
    assert ct["status"] == {"OK": 1, "FAILED_PRECONDITION": 1}
    assert ct["bytes_out"] > 0
    assert s["unknown_function_calls"] == 1
    for fn in s["functions"].values():
        _check_invariants(fn)


def test_connections_counted(served):
    node, svc = served
    clients = [node.connect("t.metrics") for _ in range(3)]
    try:
        assert wait_until(lambda: svc.stats()["connections"] == 3)
    finally:
        for c in clients[:2]:
            c.close()
    assert wait_until(lambda: svc.stats()["connections"] == 1)
    clients[2].close()
    assert wait_until(lambda: svc.stats()["connections"] == 0)
    assert svc.stats()["connections_total"] == 3


def test_stats_from_another_process_while_it_serves(server_process, runtime_dir):
    srv = server_process("echo")
    with hms.connect("py.echo") as c:
        for _ in range(200):
            c.call("echo", b"abc")
        with pytest.raises(hms.InvalidArgument):
            c.call("fail", [3, "no"])
        for _ in range(20):
            assert c.call("aecho", {"k": 1}) == {"k": 1}  # async: deferred replies from the loop
        slow = c.call_async("sleep", 0.5)  # a plain handler holding the serving thread
        with hms.StatsView("py.echo") as view:  # the handshake waits for the handler to return
            s = view.snapshot()
            assert slow.result(5) == "slept"
            assert s["pid"] == srv.pid and s["alive"] and s["connections"] >= 1
            echo = _fn(s, "echo")
            assert echo["calls"] == echo["completed"] == 200 and echo["bytes_in"] == 600
            assert _fn(s, "fail")["status"] == {"INVALID_ARGUMENT": 1}
            a = _fn(s, "aecho")
            assert a["deferred"] == 20 and a["status"] == {"OK": 20}
            assert _fn(s, "sleep")["latency"]["max_ns"] >= 0.45e9
            for fn in s["functions"].values():
                _check_invariants(fn)
            # in flight: a handler running now shows up in the next snapshot, read while it runs
            running = c.call_async("asleep", 0.5)
            assert wait_until(lambda: _fn(view.snapshot(), "asleep")["in_flight"] == 1, 3)
            assert running.result(5)["slept"] == 0.5
            assert wait_until(lambda: _fn(view.snapshot(), "asleep")["in_flight"] == 0, 3)
            before = view.snapshot()
            for _ in range(100):
                c.call("echo", b"z")
            after = view.snapshot()
            r = rates(before, after)["echo"]
            assert r["calls_per_s"] > 0 and r["p50_ns"] is not None
            srv.kill()
            assert wait_until(lambda: not view.snapshot()["alive"], 5)
            assert _fn(view.snapshot(), "echo")["calls"] == 300  # the last counters stay readable


def test_cancelled_before_start_is_counted(server_process, runtime_dir):
    server_process("echo")
    with hms.connect("py.echo") as c:
        blocker = c.call_async("sleep", 0.4)
        time.sleep(0.05)
        victim = c.call_async("echo", b"never")
        victim.cancel()
        assert blocker.result(5) == "slept"
        s = hms.stats("py.echo")
    assert _fn(s, "echo")["cancels"] == 1
    assert _fn(s, "echo")["calls"] == 0


def test_stats_not_found_and_bad_arguments(runtime_dir):
    with pytest.raises(hms.NotFound):
        hms.stats("no.such.service")
    snap = ffi.new("hms_service_stats_t *")  # version 0: never initialized
    err = ffi.new("hms_error_t *")
    assert lib.hms_stats_snapshot(ffi.NULL, snap, err) == lib.HMS_INVALID_ARGUMENT
    assert lib.hms_service_stats(ffi.NULL, snap, err) == lib.HMS_INVALID_ARGUMENT


def test_percentiles_from_log2_buckets():
    b = [0] * 48
    assert percentile_ns(b, 0.5) is None
    b[10] = 100  # all in [1024, 2048)
    assert 1024 <= percentile_ns(b, 0.5) < 2048
    b[20] = 1  # one slow call
    assert percentile_ns(b, 0.99) < 2048
    assert percentile_ns(b, 1.0, max_ns=1_500_000) == 1_500_000
    assert percentile_ns(b, 1.0) >= 2 ** 20


def test_prometheus_text(served):
    node, svc = served
    with node.connect("t.metrics") as c:
        for _ in range(10):
            c.call("echo", b"1")
        with pytest.raises(hms.NotFound):
            c.call("fail", 5)
    text = prometheus_text([svc.stats()])
    lines = text.splitlines()
    lbl = 'service="t.metrics",version="1.0.0",function="echo"'
    assert f"hms_calls_total{{{lbl}}} 10" in lines
    assert any(line.startswith('hms_calls_completed_total{service="t.metrics",version="1.0.0",function="fail",'
                               'status="NOT_FOUND"} 1') for line in lines)
    buckets = [line for line in lines if line.startswith(f"hms_call_duration_seconds_bucket{{{lbl}")]
    counts = [int(line.rsplit(" ", 1)[1]) for line in buckets]
    assert counts == sorted(counts) and counts[-1] == 10 and 'le="+Inf"' in buckets[-1]
    assert f"hms_call_duration_seconds_count{{{lbl}}} 10" in lines
    for line in lines:  # every sample line: name{labels} number
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            float(value)
            assert name.count("{") == 1 and name.endswith("}")


def test_opentelemetry_metrics(served):
    pytest.importorskip("opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from hms_ffi_native._stats import otel_register

    node, svc = served
    with node.connect("t.metrics") as c:
        for _ in range(25):
            c.call("echo", b"1")
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    keep = otel_register([svc], meter_provider=provider)
    data = reader.get_metrics_data()
    points = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    points.setdefault(m.name, []).append((dict(p.attributes), p.value))
    calls = [v for a, v in points["hms.calls"] if a["rpc.method"] == "echo"]
    assert calls == [25]
    assert any(a.get("rpc.grpc.status") == "OK" and v == 25 for a, v in points["hms.calls.completed"])
    assert keep and "hms.call.duration.p99" in points
    provider.shutdown()


# ------------------------------------------------------------------------------- hostile stats blocks
F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE, F_SEAL_FUTURE_WRITE = 0x2, 0x4, 0x8, 0x10
STATS_MAGIC, HELLO_MAGIC, WELCOME_MAGIC = 0x3154415453534d48, 0x314c4854534d5453, 0x31575453534d5453
ENTRY_BYTES = 1344  # sizeof(hms__stats_fn_t) in csrc/internal/hms_internal.h (layout 1)
TOTAL = 4096 + 4096 * ENTRY_BYTES


def _starttime(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


class FakeStatsServer:
    """Registers 'fake.stats@1.0.0' in the runtime directory and answers every stats hello with
    whatever memfd (or none) the test prepared: a hostile server, as the reader must expect."""

    def __init__(self, runtime_dir: str, make_fd) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.bind(os.path.join(runtime_dir, "fake.stats@1.0.0.sock"))
        self.sock.listen(8)
        with open(os.path.join(runtime_dir, "fake.stats@1.0.0.meta"), "w") as f:
            f.write(f"hms-ffi-service 1\nname=fake.stats\nversion=1.0.0\nnode=fake\npid={os.getpid()}\n"
                    f"uid={os.getuid()}\nstarttime={_starttime(os.getpid())}\nfn=1 f\n")
        self.make_fd = make_fd
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            hello = conn.recv(4096)
            assert struct.unpack_from("<Q", hello)[0] == HELLO_MAGIC
            fd, total = self.make_fd()
            msg = struct.pack("<QIIiIQ256s", WELCOME_MAGIC, lib.HMS_FFI_ABI_VERSION, 1, 0, 0, total, b"")
            socket.send_fds(conn, [msg], [fd])
            os.close(fd)

    def close(self) -> None:
        self.sock.close()


def _memfd(size: int, seals: int, fill=None):
    fd = os.memfd_create("hostile", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if fill:
        with mmap.mmap(fd, size) as m:
            fill(m)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def _header(m, nfns=0, magic=STATS_MAGIC, capacity=4096):
    struct.pack_into("<QIIIIQiIQq", m, 0, magic, 1, 4096, capacity, ENTRY_BYTES, 4096 + capacity * ENTRY_BYTES,
                     os.getpid(), 0, 0, 0)
    m[56:56 + 5] = b"fake\0"
    m[184:184 + 6] = b"1.0.0\0"
    m[248:248 + 5] = b"fake\0"
    struct.pack_into("<I", m, 384, nfns)


GOOD_SEALS = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE


@pytest.mark.parametrize("case,expect", [
    ("unsealed", "not sealed"),
    ("writable", "writable by readers"),
    ("wrong_size", "size"),
    ("garbage", "corrupt"),
    ("too_many_functions", "more than its"),
    ("bad_entry", "entry 1 is corrupt"),
])
def test_hostile_stats_block_is_refused(runtime_dir, case, expect):
    def make():
        if case == "unsealed":
            return _memfd(TOTAL, 0, _header), TOTAL
        if case == "writable":
            return _memfd(TOTAL, F_SEAL_SHRINK | F_SEAL_GROW, _header), TOTAL
        if case == "wrong_size":
            return _memfd(TOTAL, GOOD_SEALS, _header), TOTAL + 4096
        if case == "garbage":
            return _memfd(TOTAL, GOOD_SEALS, lambda m: m.write(os.urandom(4096))), TOTAL
        if case == "too_many_functions":
            return _memfd(TOTAL, GOOD_SEALS, lambda m: _header(m, nfns=5000)), TOTAL

        def bad_entry(m):  # one function whose name is not NUL-terminated garbage
            _header(m, nfns=1)
            m[4096:4096 + 128] = b"\xff" * 128
        return _memfd(TOTAL, GOOD_SEALS, bad_entry), TOTAL

    fake = FakeStatsServer(runtime_dir, make)
    try:
        with pytest.raises(hms.DataLoss) as ei:
            hms.stats("fake.stats", timeout=3)
        assert expect in ei.value.message
    finally:
        fake.close()


def test_a_well_formed_fake_block_reads(runtime_dir):
    def good(m):
        _header(m, nfns=1)
        m[4096:4096 + 2] = b"f\0"
        struct.pack_into("<II", m, 4096 + 128, 1, 0)
        struct.pack_into("<Q", m, 4096 + 136, 7)  # calls

    fake = FakeStatsServer(runtime_dir, lambda: (_memfd(TOTAL, GOOD_SEALS, good), TOTAL))
    try:
        s = hms.stats("fake.stats", timeout=3)
    finally:
        fake.close()
    assert s["service"] == "fake" and s["functions"]["f"]["calls"] == 7
    assert s["functions"]["f"]["in_flight"] == 7  # started, never finished
