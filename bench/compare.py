#!/usr/bin/env python3
"""One run comparing transports and call patterns: 64-byte echo round trips, the idle CPU of a serving
node, one-way throughput, asyncio calls, server streams and batches.

    python bench/compare.py                 # 20000 calls per echo row, 1 M messages/items per throughput rep
    python bench/compare.py --quick         # 3000 calls, 200 k messages/items, 3 reps (CI; well under 60 s)
    python bench/compare.py --rows py-spin,pipe --n 50000 --json /tmp/r.json
    python bench/compare.py --sections oneway,stream

Sections (--sections, comma separated; default all) and their rows (--rows, comma separated;
default all; a section none of whose rows is selected is skipped):

  echo     64-byte echo round trip (p50/p99/calls/s)
    py-spin    hms-ffi, Python client <-> Python server process, both with the default spin (50 us)
    py-nospin  hms-ffi, Python <-> Python, spin_us=0 on the server node and on the client
    c-spin     hms-ffi, C <-> C (tests/c/hms_ctest.c "bench"), default spin
    c-nospin   hms-ffi, C <-> C, no spin
    pipe       multiprocessing.Pipe(); the child loops recv_bytes/send_bytes
    zmq        pyzmq REQ/REP over ipc://; the child runs the REP socket
  idle     CPU of an idle serving node (also skipped by --no-idle)
  oneway   one-way 64-byte messages/s, end to end (until the receiver has handled every message)
    ow-send        hms-ffi client.send(), one message per call, to a counting Python handler
    ow-many-1000   hms-ffi client.send_many() in batches of 1000, counting Python handler
    ow-many-10000  the same in batches of 10000
    ow-noop-10000  send_many() x 10000 to a no-op Python handler (a per-message handler's ceiling)
    ow-batch-10000 send_many() x 10000 to a function with a batch handler (one Python call per run)
    ow-c           hms-ffi C <-> C, batches of 1000 (hms_ctest bench-oneway): the ceiling without Python
    ow-zmq         pyzmq PUSH/PULL over ipc://, the child counts
    ow-pipe        multiprocessing.Pipe, send_bytes one way, the child counts
  async    asyncio and futures, 64-byte echo
    async-seq      await client.acall() one at a time vs client.call(), interleaved in one run: p50/p99
    async-gather   asyncio.gather() of 1000 acall()s: calls/s
    async-futures  1000 client.call_async() futures, concurrent.futures.wait(): calls/s
  stream   server streams, items/s
    stream-raw     16-byte raw items
    stream-cbor    small ints, CBOR-encoded
  batch    client.batch() of 1000 64-byte echos vs client.call() one at a time: calls/s
    batch-1000
  pubsub   pub/sub fan-out to 1, 4 and 16 subscriber processes (bench/pubsub_bench.py), lossless
           ps-hms-K   hms-ffi topic, blocking publisher       ps-zmq-K   pyzmq PUB/SUB, unbounded HWM
  zerocopy 1 and 64 MiB arrays and Arrow tables: loans, copy-in, beside Pipe, pyzmq, shared_memory, IPC
  gateway  64-byte echo through the gRPC gateway vs a bare grpcio server (bench/gateway_bench.py)
  langs    64-byte echo from each binding's peer program (tests/_peers.py): lang-CLIENT-SERVER for
           C/Go/Rust/PHP to themselves and to Python; the binding's own overhead against C → C

Every server runs in its own, freshly started process; the client is this process. Python rows time
each call with time.perf_counter_ns after a warm-up (n/10 + 100 calls) with the garbage collector
paused; p50/p99 come from the sorted per-call times and calls/s from the wall time of the timed loop.
Throughput rows run one untimed warm-up (a tenth of the size), then --reps timed repetitions, and report
the median with the min-max range.
"""
from __future__ import annotations

import argparse
import asyncio
import atexit
import concurrent.futures
import contextlib
import datetime as _dt
import gc
import json
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SERVER = BENCH / "_bench_server.py"

try:
    import hms_ffi_native as hms
except ImportError:  # built in place (python setup.py build_ext --inplace), not installed
    sys.path.insert(0, str(ROOT))
    import hms_ffi_native as hms

PKG_PARENT = str(Path(hms.__file__).resolve().parent.parent)
PAYLOAD = b"x" * 64

ROWS = {
    "py-spin": "hms-ffi Py↔Py spin",
    "py-nospin": "hms-ffi Py↔Py no-spin",
    "c-spin": "hms-ffi C↔C spin",
    "c-nospin": "hms-ffi C↔C no-spin",
    "pipe": "multiprocessing.Pipe",
    "zmq": "pyzmq REQ/REP ipc://",
}
BASELINE = "py-spin"

ONEWAY_ROWS = {
    "ow-send": "hms-ffi send(), 1 per call → Python counter",
    "ow-many-1000": "hms-ffi send_many() ×1000 → Python counter",
    "ow-many-10000": "hms-ffi send_many() ×10000 → Python counter",
    "ow-noop-10000": "hms-ffi send_many() ×10000 → Python no-op",
    "ow-batch-10000": "hms-ffi send_many() ×10000 → Python batch handler (counter)",
    "ow-c": "hms-ffi C → C counter, batches of 1000",
    "ow-zmq": "pyzmq PUSH/PULL ipc:// → Python counter",
    "ow-pipe": "multiprocessing.Pipe → Python counter",
}
ASYNC_ROWS = {
    "async-seq": "await acall() vs call(), one at a time",
    "async-gather": "asyncio.gather() of 1000 acall()s",
    "async-futures": "1000 call_async() futures",
}
STREAM_ROWS = {
    "stream-raw": "server stream, 16-byte raw items",
    "stream-cbor": "server stream, small ints (CBOR)",
}
BATCH_ROWS = {
    "batch-1000": "batch() of 1000 echos vs call() one at a time",
}
# 64-byte echo across languages: each binding's peer program (tests/_peers.py), client -> server.
LANG_PAIRS = [("c", "c"), ("go", "go"), ("rust", "rust"), ("php", "php"),
              ("c", "python"), ("go", "python"), ("rust", "python"), ("php", "python")]
LANG_NAMES = {"c": "C", "go": "Go", "rust": "Rust", "php": "PHP", "python": "Python"}
LANG_ROWS: Dict[str, str] = {f"lang-{a}-{b}": f"{LANG_NAMES[a]} → {LANG_NAMES[b]}" for a, b in LANG_PAIRS}

# Zero copy (bench/zerocopy_bench.py): 1 MiB and 64 MiB float64 arrays and Arrow tables between processes.
ZEROCOPY_ROWS: Dict[str, str] = {"zerocopy": "1 and 64 MiB: hms loan / copy-in / Arrow vs Pipe, pyzmq, shared_memory, IPC"}

# The gRPC gateway (bench/gateway_bench.py): remote echo through a gateway vs bare grpcio, loopback.
GATEWAY_ROWS: Dict[str, str] = {"gateway": "64-byte echo: bare grpcio unary vs through the hms gateway"}

# Pub/sub fan-out (bench/pubsub_bench.py does the work): one Python publisher, k subscriber processes.
PUBSUB_SUBS = (1, 4, 16)
PUBSUB_ROWS: Dict[str, str] = {
    f"ps-{t}-{k}": f"{name}, {k} subscriber{'s' if k > 1 else ''}"
    for k in PUBSUB_SUBS for t, name in (("hms", "hms-ffi topic"), ("zmq", "pyzmq PUB/SUB ipc://"))
}

SECTIONS = {  # section -> its rows, in run order
    "echo": ROWS,
    "idle": {},
    "oneway": ONEWAY_ROWS,
    "async": ASYNC_ROWS,
    "stream": STREAM_ROWS,
    "batch": BATCH_ROWS,
    "pubsub": PUBSUB_ROWS,
    "langs": LANG_ROWS,
    "gateway": GATEWAY_ROWS,
    "zerocopy": ZEROCOPY_ROWS,
}
DEFAULT_SECTIONS = ["echo", "idle", "oneway", "async", "stream", "batch", "pubsub", "langs", "gateway", "zerocopy"]
ALL_ROWS = {k: v for rows in SECTIONS.values() for k, v in rows.items()}


class BenchError(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------------
# Child processes and temporary directories: all of them are cleaned up however the script ends.
# ----------------------------------------------------------------------------------------------------
_children: List[subprocess.Popen] = []
_tmpdirs: List[str] = []
_children_lock = threading.Lock()


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # every child is a session (and group) leader: takes its forks too
    except (ProcessLookupError, PermissionError):
        pass


def stop_child(proc: subprocess.Popen, grace: float = 2.0) -> None:
    if proc.poll() is None:
        _kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    _kill_group(proc, signal.SIGKILL)  # also reaps forks that outlived their leader
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    for f in (proc.stdout, getattr(proc, "bench_stderr", None)):
        if f is not None:
            try:
                f.close()
            except OSError:
                pass
    with _children_lock:
        if proc in _children:
            _children.remove(proc)


def cleanup() -> None:
    with _children_lock:
        procs = list(_children)
    for p in procs:
        stop_child(p, grace=0.5)
    while _tmpdirs:
        shutil.rmtree(_tmpdirs.pop(), ignore_errors=True)


def _on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def fresh_dir() -> str:
    d = tempfile.mkdtemp(prefix="hmsb-", dir="/tmp")  # short: Unix socket paths max 107 bytes
    _tmpdirs.append(d)
    return d


def child_env(runtime_dir: Optional[str] = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if runtime_dir is not None:
        env["HMS_FFI_RUNTIME_DIR"] = runtime_dir
    return env


def spawn(argv: List[str], env: dict, pass_fds=(), capture_stdout: bool = True) -> subprocess.Popen:
    errf = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
                            stderr=errf, env=env, pass_fds=pass_fds, start_new_session=True)
    proc.bench_stderr = errf  # read back for error messages
    with _children_lock:
        _children.append(proc)
    return proc


def child_stderr(proc: subprocess.Popen, limit: int = 2000) -> str:
    f = getattr(proc, "bench_stderr", None)
    try:
        f.flush()
        f.seek(0)
        text = f.read().decode("utf-8", "replace").strip()
    except (OSError, ValueError, AttributeError):
        return ""
    return text[-limit:]


def wait_ready(proc: subprocess.Popen, what: str, timeout: float = 20.0) -> None:
    """Waits for the child's "ready" line, with a deadline."""
    fd = proc.stdout.fileno()
    buf = b""
    end = time.monotonic() + timeout
    while b"\n" not in buf:
        left = end - time.monotonic()
        if left <= 0:
            raise BenchError(f"{what}: no 'ready' from the server within {timeout:.0f} s. "
                             f"stderr: {child_stderr(proc) or '(empty)'}")
        r, _, _ = select.select([fd], [], [], min(left, 0.2))
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                proc.poll()
                raise BenchError(f"{what}: server exited (code {proc.returncode}) before it was ready. "
                                 f"stderr: {child_stderr(proc) or '(empty)'}")
            buf += chunk
    if buf.split(b"\n", 1)[0].strip() != b"ready":
        raise BenchError(f"{what}: unexpected server output {buf!r}")


def start_hms_server(runtime_dir: str, spin: str, service: str) -> subprocess.Popen:
    """Starts a Python hms-ffi echo server and waits until its service is listed."""
    proc = spawn([sys.executable, str(SERVER), "hms", spin, service], child_env(runtime_dir))
    wait_ready(proc, f"hms server ({service})")
    end = time.monotonic() + 10.0
    while True:
        if any(s.name == service and s.pid == proc.pid for s in hms.list_services(runtime_dir)):
            return proc
        if proc.poll() is not None:
            raise BenchError(f"hms server exited (code {proc.returncode}) before registering "
                             f"{service}. stderr: {child_stderr(proc) or '(empty)'}")
        if time.monotonic() > end:
            raise BenchError(f"hms server did not register {service} in {runtime_dir} within 10 s")
        time.sleep(0.01)


class Watchdog:
    """Kills the server if a row runs past its deadline, so a blocked call on our side fails."""

    def __init__(self, proc: subprocess.Popen, seconds: float) -> None:
        self.fired = False
        self.seconds = seconds
        self._timer = threading.Timer(seconds, self._fire, args=(proc,))
        self._timer.daemon = True

    def _fire(self, proc) -> None:
        self.fired = True
        _kill_group(proc, signal.SIGKILL)

    def __enter__(self) -> "Watchdog":
        self._timer.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._timer.cancel()
        if self.fired and exc_type is not None:
            raise BenchError(f"row timed out after {self.seconds:g} s (server killed)") from exc


# ----------------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------------
def timed_loop(roundtrip: Callable[[], bytes], n: int, warmup: int) -> dict:
    """Runs ``roundtrip`` warmup + n times; returns summary stats and the per-call times (ns).

    Every transport goes through one Python closure per call, so each row pays the same overhead."""
    reply = roundtrip()
    if reply != PAYLOAD:
        raise BenchError(f"echo returned {len(reply)} bytes that differ from the {len(PAYLOAD)} sent")
    for _ in range(warmup):
        roundtrip()
    lat = [0] * n
    pc = time.perf_counter_ns
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = pc()
        for i in range(n):
            t0 = pc()
            roundtrip()
            lat[i] = pc() - t0
        total = pc() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    return summarize(lat, total)


def summarize(lat: List[int], total_ns: int) -> dict:
    s = sorted(lat)
    n = len(s)
    return {
        "n": n,
        "p50_ns": s[n // 2],
        "p90_ns": s[int(n * 0.90)],
        "p99_ns": s[int(n * 0.99)],
        "p999_ns": s[min(n - 1, int(n * 0.999))],
        "min_ns": s[0],
        "max_ns": s[-1],
        "mean_ns": sum(s) / n,
        "calls_per_s": n / (total_ns / 1e9),
        "samples_ns": lat,
    }


def row_timeout(args) -> float:
    return args.row_timeout if args.row_timeout else 60.0 + args.n * 0.002


def bench_py(args, spin: bool) -> dict:
    d = fresh_dir()
    service = "bench.echo"
    proc = start_hms_server(d, "default" if spin else "0", service)
    node = hms.Node(f"bench-client-{os.getpid()}", runtime_dir=d, spin_us=None if spin else 0)
    try:
        client = node.connect(service, "^1", timeout=10.0, spin_us=None if spin else 0)
        call = client.call

        def roundtrip():
            return call("echo", PAYLOAD)

        with Watchdog(proc, row_timeout(args)):
            res = timed_loop(roundtrip, args.n, args.warmup)
        client.close()
    finally:
        node.close()
        stop_child(proc)
    res["server"] = "python subprocess, spin " + ("default (50 us)" if spin else "0")
    return res


def bench_pipe(args) -> dict:
    import multiprocessing

    parent, child = multiprocessing.Pipe()  # duplex: a socketpair
    try:
        proc = spawn([sys.executable, str(SERVER), "pipe", str(child.fileno())], child_env(),
                     pass_fds=(child.fileno(),))
    finally:
        child.close()  # only the child holds its end now: EOF here if it dies
    try:
        wait_ready(proc, "pipe server")
        send, recv = parent.send_bytes, parent.recv_bytes

        def roundtrip():
            send(PAYLOAD)
            return recv()

        with Watchdog(proc, row_timeout(args)):
            res = timed_loop(roundtrip, args.n, args.warmup)
    finally:
        parent.close()
        stop_child(proc)
    res["server"] = "python subprocess, recv_bytes/send_bytes loop"
    return res


def bench_zmq(args) -> dict:
    import zmq

    d = fresh_dir()
    endpoint = f"ipc://{d}/zmq.sock"
    proc = spawn([sys.executable, str(SERVER), "zmq", endpoint], child_env())
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    try:
        wait_ready(proc, "zmq server")
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 10_000)
        sock.setsockopt(zmq.SNDTIMEO, 10_000)
        sock.connect(endpoint)
        send, recv = sock.send, sock.recv

        def roundtrip():
            send(PAYLOAD)
            return recv()

        with Watchdog(proc, row_timeout(args)):
            try:
                res = timed_loop(roundtrip, args.n, args.warmup)
            except zmq.Again as e:
                raise BenchError("zmq server did not answer within 10 s") from e
    finally:
        sock.close(0)
        ctx.term()
        stop_child(proc)
    res["server"] = "python subprocess, REP socket"
    return res


# -- C <-> C via tests/c/hms_ctest.c
_ctest_binary: Optional[str] = None
_ctest_error: Optional[str] = None


def build_ctest() -> str:
    """Builds hms_ctest once per run; raises BenchError (the row is skipped) when that is impossible."""
    global _ctest_binary, _ctest_error
    if _ctest_binary:
        return _ctest_binary
    if _ctest_error:
        raise BenchError(_ctest_error)
    csrc, inc, test_c = ROOT / "csrc", ROOT / "include", ROOT / "tests" / "c" / "hms_ctest.c"
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not (csrc.is_dir() and (inc / "hms_ffi" / "hms_ffi.h").is_file() and test_c.is_file()):
        _ctest_error = "C rows skipped: the source tree (csrc/, include/, tests/c/hms_ctest.c) is not present"
        raise BenchError(_ctest_error)
    if not cc:
        _ctest_error = "C rows skipped: no C compiler (cc) found"
        raise BenchError(_ctest_error)
    out = os.path.join(fresh_dir(), "hms_ctest")
    cmd = [cc, "-std=gnu11", "-O2", "-DHMS_FFI_BUILDING=1", "-D_GNU_SOURCE", f"-I{inc}", f"-I{csrc}",
           *sorted(str(p) for p in csrc.glob("*.c")), str(test_c), "-o", out, "-pthread"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        _ctest_error = "C rows skipped: building hms_ctest took over 300 s"
        raise BenchError(_ctest_error)
    if r.returncode != 0:
        _ctest_error = f"C rows skipped: building hms_ctest failed: {r.stderr.strip()[-1500:]}"
        raise BenchError(_ctest_error)
    _ctest_binary = out
    return out


def bench_c(args, spin: bool) -> dict:
    exe = build_ctest()
    d = fresh_dir()
    proc = spawn([exe, "bench", "-1" if spin else "0", str(args.n)], child_env(d))
    try:
        try:
            out, _ = proc.communicate(timeout=row_timeout(args))
        except subprocess.TimeoutExpired:
            raise BenchError(f"hms_ctest bench did not finish within {row_timeout(args):.0f} s")
        text = out.decode().strip()
        parts = text.split()
        if proc.returncode != 0 or len(parts) != 3:
            raise BenchError(f"hms_ctest bench failed (code {proc.returncode}): {text!r} "
                             f"{child_stderr(proc)}")
    finally:
        stop_child(proc)  # also takes the forked C server if it outlived the client
    p50, p99, cps = int(parts[0]), int(parts[1]), float(parts[2])
    return {"n": args.n, "p50_ns": p50, "p99_ns": p99, "calls_per_s": cps,
            "server": "forked C process, spin " + ("default (50 us)" if spin else "0"),
            "timing": "clock_gettime(CLOCK_MONOTONIC) per call in C"}


# ----------------------------------------------------------------------------------------------------
# Throughput sections: one-way, asyncio, streams, batches
# ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def paused_gc():
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextlib.contextmanager
def hms_session(tag: str):
    """A fresh Python hms-ffi server process (default spin) and a client of it: (server proc, client)."""
    d = fresh_dir()
    service = f"bench.{tag}"
    proc = start_hms_server(d, "default", service)
    node = hms.Node(f"bench-client-{os.getpid()}", runtime_dir=d)
    try:
        client = node.connect(service, "^1", timeout=10.0)
        try:
            yield proc, client
        finally:
            client.close()
    finally:
        node.close()
        stop_child(proc)


def tput_timeout(args, items: int) -> float:
    """Deadline of a throughput row: warm-up + reps of ``items`` each at >= 50 k/s, plus a minute."""
    if args.row_timeout:
        return args.row_timeout
    return 60.0 + (args.reps + 1) * items * 20e-6


def repeat(args, once: Callable[[int], dict], n: int) -> dict:
    """An untimed warm-up of n/10, then args.reps timed runs of ``once(n)`` (GC paused); each returns
    at least {"seconds": wall time, "items": count}."""
    once(max(1, n // 10))
    runs = []
    for _ in range(args.reps):
        with paused_gc():
            runs.append(once(n))
    return _median_runs(runs, n)


def _median(xs: List[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def _median_runs(runs: List[dict], n: int, **extra) -> dict:
    """rate = items/seconds: median, min and max over the runs; every other numeric field: its median."""
    for r in runs:
        r["rate"] = r["items"] / r["seconds"]
        if "sender_seconds" in r:
            r["sender_rate"] = r["items"] / r["sender_seconds"]
    rates = [r["rate"] for r in runs]
    res = {"n": n, "reps": len(runs), "rate": _median(rates), "rate_min": min(rates), "rate_max": max(rates)}
    for key, v in runs[0].items():
        if key not in res and key not in ("seconds", "items") and isinstance(v, (int, float)):
            vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
            if len(vals) == len(runs):
                res[key] = _median(vals)
    res["runs"] = runs
    res.update(extra)
    return res


def _cpu_s(pid: int) -> Optional[float]:
    v = _cpu_ns(pid)
    return None if v is None else v / 1e9


def _oneway_run(send_all: Callable[[], None], total: Callable[[], int], n: int, expect_delta: Optional[int],
                rx_pid: Optional[int]) -> dict:
    """Times send_all() (n messages) and then total() (returns once the receiver has handled them)."""
    before = total()
    rx0 = _cpu_s(rx_pid) if rx_pid else None
    tx0 = time.process_time()
    t0 = time.perf_counter()
    send_all()
    t1 = time.perf_counter()
    after = total()
    t2 = time.perf_counter()
    tx1 = time.process_time()
    rx1 = _cpu_s(rx_pid) if rx_pid else None
    if expect_delta is not None and after - before != expect_delta:
        raise BenchError(f"the receiver counted {after - before} messages, expected {expect_delta}")
    wall = t2 - t0
    out = {"seconds": wall, "items": n, "sender_seconds": t1 - t0, "sender_cpu": (tx1 - tx0) / wall}
    if rx0 is not None and rx1 is not None:
        out["receiver_cpu"] = (rx1 - rx0) / wall
    return out


def bench_oneway_hms(args, fn: str, batch: int) -> dict:
    n = -(-args.msgs // batch) * batch  # whole batches
    with hms_session("oneway") as (proc, client):
        call, send, send_many = client.call, client.send, client.send_many
        batch_list = [PAYLOAD] * batch  # built once: the rows time sending, not building lists

        def total() -> int:
            return call("ingest" if fn == "ingest" else "count", timeout=60.0)

        def once(k: int) -> dict:
            k = -(-k // batch) * batch
            if batch == 1:
                def send_all():
                    for _ in range(k):
                        send(fn, PAYLOAD)
            else:
                def send_all():
                    for _ in range(k // batch):
                        send_many(fn, batch_list)
            return _oneway_run(send_all, total, k, k if fn in ("count", "ingest") else 0, proc.pid)

        with Watchdog(proc, tput_timeout(args, n)):
            res = repeat(args, once, n)
    res["server"] = f"python subprocess, handler {fn!r}, spin default"
    return res


def bench_oneway_c(args) -> dict:
    exe = build_ctest()
    n = -(-args.msgs * 10 // 1000) * 1000  # C is ~50x faster: 10x the messages for a measurable time
    timeout = args.row_timeout or 120.0

    def once(k: int) -> dict:
        k = max(1000, -(-k // 1000) * 1000)
        proc = spawn([exe, "bench-oneway", "-1", str(k), "1000"], child_env(fresh_dir()))
        try:
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise BenchError(f"hms_ctest bench-oneway did not finish within {timeout:.0f} s")
            parts = out.decode().split()
            if proc.returncode != 0 or len(parts) != 2 or int(parts[1]) != k:
                raise BenchError(f"hms_ctest bench-oneway failed (code {proc.returncode}): {out!r} "
                                 f"{child_stderr(proc)}")
        finally:
            stop_child(proc)
        rate = float(parts[0])
        return {"seconds": k / rate, "items": k}

    res = repeat(args, once, n)
    res["server"] = "forked C process, counting handler, spin default; timed in C"
    return res


def bench_oneway_zmq(args) -> dict:
    import zmq

    d = fresh_dir()
    pull_ep, push_ep = f"ipc://{d}/in.sock", f"ipc://{d}/out.sock"
    proc = spawn([sys.executable, str(SERVER), "zmq-sink", pull_ep, push_ep], child_env())
    ctx = zmq.Context()
    out = ctx.socket(zmq.PUSH)
    back = ctx.socket(zmq.PULL)
    try:
        wait_ready(proc, "zmq sink")
        for sock in (out, back):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, 10_000)  # a live sink drains its queue in milliseconds;
            sock.setsockopt(zmq.SNDTIMEO, 5_000)  # a dead one must not block the run for long
        out.connect(pull_ep)
        back.connect(push_ep)
        send = out.send

        def total() -> int:
            send(b"")
            return int(back.recv())

        def once(k: int) -> dict:
            def send_all():
                for _ in range(k):
                    send(PAYLOAD)
            return _oneway_run(send_all, total, k, k, proc.pid)

        with Watchdog(proc, tput_timeout(args, args.msgs)):
            try:
                res = repeat(args, once, args.msgs)
            except zmq.Again as e:
                raise BenchError("the zmq sink did not take a message within 5 s or answer within 10 s") from e
    finally:
        out.close(0)
        back.close(0)
        ctx.term()
        stop_child(proc)
    res["server"] = "python subprocess, PULL socket (count) + PUSH socket (report); sender: plain send()"
    return res


def bench_oneway_pipe(args) -> dict:
    import multiprocessing

    parent, child = multiprocessing.Pipe()
    try:
        proc = spawn([sys.executable, str(SERVER), "pipe-sink", str(child.fileno())], child_env(),
                     pass_fds=(child.fileno(),))
    finally:
        child.close()
    try:
        wait_ready(proc, "pipe sink")
        send, recv, poll = parent.send_bytes, parent.recv_bytes, parent.poll

        def total() -> int:
            send(b"")
            if not poll(60.0):
                raise BenchError("the pipe sink did not report its count within 60 s")
            return int(recv())

        def once(k: int) -> dict:
            def send_all():
                for _ in range(k):
                    send(PAYLOAD)
            return _oneway_run(send_all, total, k, k, proc.pid)

        with Watchdog(proc, tput_timeout(args, args.msgs)):
            res = repeat(args, once, args.msgs)
    finally:
        parent.close()
        stop_child(proc)
    res["server"] = "python subprocess, recv_bytes loop (count)"
    return res


def _run_async(coro, timeout: float):
    """Runs a coroutine on a fresh event loop with an overall deadline: a reply that never comes (a dead
    server does not wake the loop) fails the row instead of hanging it."""
    async def bounded():
        try:
            return await asyncio.wait_for(coro, timeout)
        except asyncio.TimeoutError:
            raise BenchError(f"the asyncio measurement did not finish within {timeout:g} s") from None
    return asyncio.run(bounded())


def bench_async_seq(args) -> dict:
    """await acall() and call(), one at a time, in alternating chunks of 500 on one connection, so that
    drift on the machine hits both alike."""
    n, warmup, chunk = args.n, args.warmup, 500
    with hms_session("async") as (proc, client):
        call, acall = client.call, client.acall
        pc = time.perf_counter_ns

        def sync_rt():
            return call("echo", PAYLOAD)

        async def async_rt():
            return await acall("echo", PAYLOAD)

        async def measure():
            if sync_rt() != PAYLOAD or await async_rt() != PAYLOAD:
                raise BenchError("echo reply differs from the payload")
            for _ in range(warmup):
                sync_rt()
                await async_rt()
            lat_s: List[int] = []
            lat_a: List[int] = []
            wall_s = wall_a = 0
            with paused_gc():
                done = 0
                while done < n:
                    k = min(chunk, n - done)
                    t = pc()
                    for _ in range(k):
                        t0 = pc()
                        sync_rt()
                        lat_s.append(pc() - t0)
                    t1 = pc()
                    for _ in range(k):
                        t0 = pc()
                        await async_rt()
                        lat_a.append(pc() - t0)
                    wall_s += t1 - t
                    wall_a += pc() - t1
                    done += k
            return summarize(lat_s, wall_s), summarize(lat_a, wall_a)

        timeout = args.row_timeout or 60.0 + n * 0.004
        with Watchdog(proc, timeout + 5):
            sync, asy = _run_async(measure(), timeout)
    return {"call": sync, "acall": asy, "n": n, "chunk": chunk,
            "server": "python subprocess, spin default; client spin default; asyncio default loop"}


def bench_async_gather(args) -> dict:
    conc = 1000
    rounds = args.rounds
    with hms_session("gather") as (proc, client):
        acall = client.acall

        async def measure():
            async def rounds_of(r: int) -> dict:
                t0 = time.perf_counter()
                for _ in range(r):
                    res = await asyncio.gather(*[acall("echo", PAYLOAD) for _ in range(conc)])
                    if res.count(PAYLOAD) != conc:
                        raise BenchError("a gathered reply differs from the payload")
                return {"seconds": time.perf_counter() - t0, "items": r * conc}

            await rounds_of(max(1, rounds // 10))
            runs = []
            for _ in range(args.reps):
                with paused_gc():
                    runs.append(await rounds_of(rounds))
            return runs

        timeout = args.row_timeout or 60.0 + (args.reps + 1) * rounds * conc * 100e-6
        with Watchdog(proc, timeout + 5):
            runs = _run_async(measure(), timeout)
    return _median_runs(runs, rounds * conc, concurrency=conc)


def bench_async_futures(args) -> dict:
    conc = 1000
    rounds = args.rounds
    with hms_session("futures") as (proc, client):
        call_async = client.call_async

        def once(k: int) -> dict:
            r = max(1, k // conc)
            t0 = time.perf_counter()
            for _ in range(r):
                futs = [call_async("echo", PAYLOAD) for _ in range(conc)]
                _, pending = concurrent.futures.wait(futs, timeout=60.0)
                if pending:
                    for f in pending:
                        f.cancel()
                    raise BenchError(f"{len(pending)} of {conc} futures not done within 60 s")
                if [f.result() for f in futs].count(PAYLOAD) != conc:
                    raise BenchError("a reply differs from the payload")
            return {"seconds": time.perf_counter() - t0, "items": r * conc}

        with Watchdog(proc, tput_timeout(args, rounds * conc)):
            res = repeat(args, once, rounds * conc)
    res["concurrency"] = conc
    return res


def bench_stream(args, fn: str) -> dict:
    n = args.stream_items
    with hms_session("stream") as (proc, client):
        stream = client.stream
        last_expected = b"i" * 16 if fn == "items" else None

        def once(k: int) -> dict:
            rx0 = _cpu_s(proc.pid)
            tx0 = time.process_time()
            t0 = time.perf_counter()
            count = 0
            item = None
            for item in stream(fn, k, timeout=tput_timeout(args, n)):
                count += 1
            wall = time.perf_counter() - t0
            tx1 = time.process_time()
            rx1 = _cpu_s(proc.pid)
            if count != k or item != (last_expected if last_expected is not None else k - 1):
                raise BenchError(f"the stream delivered {count} items (last {item!r}), expected {k}")
            out = {"seconds": wall, "items": k, "client_cpu": (tx1 - tx0) / wall}
            if rx0 is not None and rx1 is not None:
                out["server_cpu"] = (rx1 - rx0) / wall
            return out

        with Watchdog(proc, tput_timeout(args, n)):
            res = repeat(args, once, n)
    res["server"] = ("python subprocess, generator `yield from itertools.repeat(b'i' * 16, n)`" if fn == "items"
                     else "python subprocess, generator `yield from range(n)`")
    return res


def bench_batch(args) -> dict:
    size, rounds = 1000, args.rounds
    with hms_session("batch") as (proc, client):
        batch, call = client.batch, client.call
        calls = [("echo", PAYLOAD)] * size
        per_batch_timeout = 60.0  # batch() without a timeout does not notice a dead server

        def timed(body: Callable[[], int]) -> dict:
            rx0, tx0, t0 = _cpu_s(proc.pid), time.process_time(), time.perf_counter()
            items = body()
            wall = time.perf_counter() - t0
            tx1, rx1 = time.process_time(), _cpu_s(proc.pid)
            out = {"seconds": wall, "items": items, "client_cpu": (tx1 - tx0) / wall}
            if rx0 is not None and rx1 is not None:
                out["server_cpu"] = (rx1 - rx0) / wall
            return out

        def batch_once(k: int) -> dict:
            def body() -> int:
                r = max(1, k // size)
                for _ in range(r):
                    res = batch(calls, timeout=per_batch_timeout)
                    if res.count(PAYLOAD) != size:
                        bad = next(x for x in res if x != PAYLOAD)
                        raise BenchError(f"a batched call failed or differs: {bad!r}"[:300])
                return r * size
            return timed(body)

        def seq_once(k: int) -> dict:
            def body() -> int:
                for _ in range(k):
                    call("echo", PAYLOAD)
                return k
            return timed(body)

        n = rounds * size
        with Watchdog(proc, 2 * tput_timeout(args, n)):
            # Alternate batch and sequential repetitions: drift on the machine hits both alike.
            batch_once(n // 10)
            seq_once(n // 10)
            b_runs, s_runs = [], []
            for _ in range(args.reps):
                with paused_gc():
                    b_runs.append(batch_once(n))
                with paused_gc():
                    s_runs.append(seq_once(n))
    return {"batch": _median_runs(b_runs, n, batch_size=size), "call": _median_runs(s_runs, n),
            "server": "python subprocess, spin default"}


# ----------------------------------------------------------------------------------------------------
# Idle CPU of a serving node
# ----------------------------------------------------------------------------------------------------
def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the whole line)


def _cpu_ns(pid: int) -> Optional[int]:
    """Sum over threads of time on CPU (ns) from schedstat, finer than clock ticks; None if unavailable."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def idle_cpu(with_client: bool, spin: str = "default", settle: float = 1.0, window: float = 3.0) -> dict:
    d = fresh_dir()
    service = "bench.idle"
    proc = start_hms_server(d, spin, service)
    node = client = None
    try:
        if with_client:
            node = hms.Node(f"bench-idle-{os.getpid()}", runtime_dir=d)
            client = node.connect(service, "^1", timeout=10.0)
            if client.call("echo", PAYLOAD, timeout=5.0) != PAYLOAD:
                raise BenchError("idle server echo mismatch")
        time.sleep(settle)
        hz = os.sysconf("SC_CLK_TCK")
        t0, c0, n0 = time.monotonic(), _cpu_ticks(proc.pid), _cpu_ns(proc.pid)
        time.sleep(window)
        t1, c1, n1 = time.monotonic(), _cpu_ticks(proc.pid), _cpu_ns(proc.pid)
        if proc.poll() is not None:
            raise BenchError("idle server exited during the measurement")
    finally:
        if client is not None:
            client.close()
        if node is not None:
            node.close()
        stop_child(proc)
    elapsed = t1 - t0
    res = {"window_s": elapsed, "ticks": c1 - c0, "clk_tck": hz,
           "pct_one_core": 100.0 * (c1 - c0) / hz / elapsed, "server_spin": spin,
           "connected_idle_client": with_client}
    if n0 is not None and n1 is not None:
        res["pct_one_core_schedstat"] = 100.0 * (n1 - n0) / 1e9 / elapsed
    return res


def native_lib_stamp() -> Dict[str, float]:
    """mtimes of the package's shared libraries: a rebuild during a run mixes builds between the client
    (loaded at start) and servers (loaded when spawned)."""
    pkg = Path(hms.__file__).resolve().parent
    return {str(p): p.stat().st_mtime for p in sorted(pkg.glob("**/*.so"))}


# ----------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------
def machine_info() -> Dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return {"cpu": cpu, "nproc": str(usable), "kernel": platform.release(),
            "python": platform.python_version(), "hms_ffi": hms.__version__, "loadavg_at_start": load,
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}


def us(ns: float) -> str:
    return f"{ns / 1000:.1f}"


def per_s(x: float) -> str:
    return f"{x:,.0f}"


def pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def latency_rows(results: Dict[str, dict], rows: Dict[str, str], base: Optional[dict]) -> List[str]:
    """Markdown rows `| label | p50 µs | p99 µs | calls/s | p50 vs base |` for the measured keys of rows."""
    lines = []
    for key, label in rows.items():
        r = results.get(key)
        if r is None:
            continue
        rel = f"{r['p50_ns'] / base['p50_ns']:.2f}×" if base else "n/a"
        lines.append(f"| {label} | {us(r['p50_ns'])} | {us(r['p99_ns'])} | {r['calls_per_s']:,.0f} | {rel} |")
    return lines


def render_echo(results: Dict[str, dict], n: int) -> List[str]:
    base = results.get(BASELINE)
    lines = [f"64-byte echo round trip, {n} calls per row (after warm-up)", "",
             "| transport | p50 µs | p99 µs | calls/s | p50 vs hms-ffi Py↔Py spin |",
             "|---|---:|---:|---:|---:|"]
    lines += latency_rows(results, ROWS, base)
    lines.append("")

    def ratio(key: str) -> str:
        if base and key in results:
            return f"{results[key]['p50_ns'] / base['p50_ns']:.2f}"
        return "n/a (row not measured)"

    lines.append(f"- Pipe p50 / hms Py spin p50 = {ratio('pipe')}")
    lines.append(f"- zmq p50 / hms Py spin p50 = {ratio('zmq')}")
    return lines


def render_idle(idle: List[dict]) -> List[str]:
    lines = []
    for r in idle:
        what = "1 connected idle client" if r["connected_idle_client"] else "no clients"
        extra = (f", schedstat {r['pct_one_core_schedstat']:.2f}%" if "pct_one_core_schedstat" in r else "")
        verdict_ = "OK" if r["pct_one_core"] < 1.0 else "ABOVE TARGET"
        lines.append(f"- Idle CPU of a serving Python node (default spin, {what}): "
                     f"{r['pct_one_core']:.2f}% of one core over {r['window_s']:.1f} s "
                     f"({r['ticks']} ticks at {r['clk_tck']} Hz{extra}); target < 1%: {verdict_}")
    return lines


def render_oneway(results: Dict[str, dict], args) -> List[str]:
    zmq_rate = results.get("ow-zmq", {}).get("rate")
    lines = [f"One-way 64-byte messages, end to end: from the first send until a final synchronous call (or "
             f"reply) shows that the receiver has handled every message. {args.msgs:,} messages per repetition "
             f"(C row: {args.msgs * 10:,}), median of {args.reps} after a warm-up", "",
             "| sender → receiver | msgs/s | min–max | sender-side msgs/s | sender CPU | receiver CPU "
             "| vs pyzmq PUSH/PULL |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for key, label in ONEWAY_ROWS.items():
        r = results.get(key)
        if r is None:
            continue
        rel = f"{r['rate'] / zmq_rate:.2f}×" if zmq_rate else "n/a"
        sender = per_s(r["sender_rate"]) if "sender_rate" in r else "–"
        lines.append(f"| {label} | {per_s(r['rate'])} | {per_s(r['rate_min'])}–{per_s(r['rate_max'])} | "
                     f"{sender} | {pct(r.get('sender_cpu'))} | {pct(r.get('receiver_cpu'))} | {rel} |")
    lines.append("")
    batched = [k for k in ("ow-many-1000", "ow-many-10000", "ow-batch-10000") if k in results]
    if batched and zmq_rate:
        ratios = ", ".join(f"{ONEWAY_ROWS[k].split(' → ')[0].replace('hms-ffi ', '')}: "
                           f"{results[k]['rate'] / zmq_rate:.2f}×" for k in batched)
        best = max(results[k]["rate"] for k in batched) / zmq_rate
        lines.append(f"- hms send_many / pyzmq PUSH/PULL msgs/s = {ratios}; target ≥ 4×: {verdict(best >= 4)}")
    elif batched:
        lines.append("- hms send_many / pyzmq PUSH/PULL: n/a (the pyzmq row was not measured)")
    if batched:
        best_key = max(batched, key=lambda k: results[k]["rate"])
        best = results[best_key]["rate"]
        lines.append(f"- Batched one-way from Python (best send_many row: {ONEWAY_ROWS[best_key]}): "
                     f"{per_s(best)} msgs/s; target ≥ 3,000,000 msgs/s: {verdict(best >= 3e6)}")
        rx = [results[k].get("receiver_cpu") for k in batched]
        if all(x is not None and x >= 0.9 for x in rx):
            span = pct(min(rx)) if pct(min(rx)) == pct(max(rx)) else f"{pct(min(rx))}–{pct(max(rx))}"
            lines.append(f"- In the send_many rows the receiving process was on a CPU {span} of "
                         f"the time and the sender was mostly waiting for ring space: the per-message Python "
                         f"handler on the receiving side sets the pace, not the sender.")
    ceil = []
    if "ow-noop-10000" in results:
        ceil.append(f"no-op Python handler {per_s(results['ow-noop-10000']['rate'])} msgs/s")
    if "ow-c" in results:
        ceil.append(f"C sender and C handler {per_s(results['ow-c']['rate'])} msgs/s")
    if ceil:
        lines.append(f"- Ceilings of the receiving side: {'; '.join(ceil)}.")
    return lines


def render_async(results: Dict[str, dict], args) -> List[str]:
    lines = [f"asyncio and futures, 64-byte echo. One at a time: {args.n} calls each, call() and acall() "
             f"alternating in chunks of 500 on one connection. Concurrent: {args.rounds} rounds of 1000 "
             f"calls per repetition, median of {args.reps}", "",
             "| pattern | p50 µs | p99 µs | calls/s | min–max calls/s |",
             "|---|---:|---:|---:|---:|"]
    seq = results.get("async-seq")
    if seq:
        for what, label in (("call", "client.call(), one at a time"), ("acall", "await client.acall(), one at a time")):
            r = seq[what]
            lines.append(f"| {label} | {us(r['p50_ns'])} | {us(r['p99_ns'])} | {per_s(r['calls_per_s'])} | – |")
    for key, label in (("async-gather", "asyncio.gather() of 1000 acall()s"),
                       ("async-futures", "1000 call_async() futures + concurrent.futures.wait()")):
        r = results.get(key)
        if r:
            lines.append(f"| {label} | – | – | {per_s(r['rate'])} | {per_s(r['rate_min'])}–{per_s(r['rate_max'])} |")
    lines.append("")
    if seq:
        p50 = seq["acall"]["p50_ns"] / seq["call"]["p50_ns"]
        p99 = seq["acall"]["p99_ns"] / seq["call"]["p99_ns"]
        lines.append(f"- acall p50 / call p50 = {p50:.2f}× (p99: {p99:.2f}×); target ≤ 3×: {verdict(p50 <= 3)}")
    return lines


def render_stream(results: Dict[str, dict], args) -> List[str]:
    lines = [f"Server streams: {args.stream_items:,} items per stream, from opening the stream until the "
             f"client's `for` loop ends; median of {args.reps} after a warm-up", "",
             "| stream | items/s | min–max | client CPU | server CPU |",
             "|---|---:|---:|---:|---:|"]
    for key, label in STREAM_ROWS.items():
        r = results.get(key)
        if r:
            lines.append(f"| {label} | {per_s(r['rate'])} | {per_s(r['rate_min'])}–{per_s(r['rate_max'])} | "
                         f"{pct(r.get('client_cpu'))} | {pct(r.get('server_cpu'))} |")
    lines.append("")
    for key, label in STREAM_ROWS.items():
        r = results.get(key)
        if r:
            lines.append(f"- {label}: {per_s(r['rate'])} items/s; target ≥ 1,000,000 items/s: "
                         f"{verdict(r['rate'] >= 1e6)}")
    return lines


def render_batch(results: Dict[str, dict], args) -> List[str]:
    r = results.get("batch-1000")
    lines = [f"batch() vs call(), 64-byte echo: {args.rounds} batches of 1000 calls per repetition vs the same "
             f"number of calls one at a time, alternating; median of {args.reps}", "",
             "| pattern | calls/s | min–max | client CPU | server CPU |",
             "|---|---:|---:|---:|---:|"]
    if r:
        for what, label in (("batch", "client.batch() of 1000 calls"), ("call", "client.call(), one at a time")):
            x = r[what]
            lines.append(f"| {label} | {per_s(x['rate'])} | {per_s(x['rate_min'])}–{per_s(x['rate_max'])} | "
                         f"{pct(x.get('client_cpu'))} | {pct(x.get('server_cpu'))} |")
        lines.append("")
        lines.append(f"- batch / one at a time = {r['batch']['rate'] / r['call']['rate']:.2f}×")
    return lines


def bench_pubsub(args, transport: str, k: int) -> dict:
    """Lossless fan-out throughput (a blocking hms publisher; zmq with unbounded HWM), median of reps."""
    try:
        import pubsub_bench
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import pubsub_bench
    runs = []
    for _ in range(args.reps):
        r = pubsub_bench.run(transport, "throughput", k, args.ps_msgs, 0, 0.0)
        if r["received_min"] != r["sent"]:
            raise BenchError(f"a subscriber got {r['received_min']} of {r['sent']} messages")
        runs.append(r["msgs_per_s"])
    return {"rate": _median(runs), "rate_min": min(runs), "rate_max": max(runs), "subscribers": k,
            "msgs": args.ps_msgs}


def _peers_module():
    try:
        import _peers
    except ImportError:
        sys.path.insert(0, str(ROOT / "tests"))
        import _peers
    return _peers


def bench_lang(args, client: str, server: str) -> dict:
    """client's peer program calls server's echo (64 raw bytes), each in its own process."""
    _peers = _peers_module()
    d = fresh_dir()
    old = os.environ.get("HMS_FFI_RUNTIME_DIR")
    os.environ["HMS_FFI_RUNTIME_DIR"] = d
    srv = None
    try:
        try:
            _peers.peer_command(client)
            if server != "c":
                _peers.peer_command(server)
        except _peers.PeerUnavailable as e:
            raise BenchError(str(e))
        if server == "c":  # hms_ctest serves ctest.echo (its echo function included), default spin
            proc = spawn([*_peers.peer_command("c"), "serve", "-1"], child_env(d))
            wait_ready(proc, "hms_ctest serve")
            service = "ctest.echo"
        else:
            srv = _peers.Server(server, f"bench.{server}")
            proc, service = srv.proc, srv.service
        with Watchdog(proc, row_timeout(args)):
            r = _peers.bench(client, service, args.n, timeout=row_timeout(args))
        r["n"] = args.n
        return r
    finally:
        if srv is not None:
            srv.stop()
        elif server == "c":
            stop_child(proc)
        if old is None:
            os.environ.pop("HMS_FFI_RUNTIME_DIR", None)
        else:
            os.environ["HMS_FFI_RUNTIME_DIR"] = old


def render_langs(results: Dict[str, dict], args) -> List[str]:
    cc = results.get("lang-c-c")
    lines = [f"64-byte echo across languages: each binding's peer program (tests/_peers.py) as client, "
             f"{args.n} calls per row after a warm-up, default spin, timed inside the client", "",
             "| client → server | p50 µs | p99 µs | calls/s | p50 vs C → C |",
             "|---|---:|---:|---:|---:|"]
    lines += latency_rows(results, LANG_ROWS, cc)
    lines.append("")
    if cc:
        for lang, limit in (("go", 2.0), ("rust", 2.0)):
            r = results.get(f"lang-{lang}-{lang}")
            if r:
                x = r["p50_ns"] / cc["p50_ns"]
                lines.append(f"- {LANG_NAMES[lang]} → {LANG_NAMES[lang]} p50 / C → C p50 = {x:.2f}× (both sides in "
                             f"{LANG_NAMES[lang]}); target ≤ {limit:.0f}×: {verdict(x <= limit)}")
        r = results.get("lang-php-php")
        if r:
            extra = (r["p50_ns"] - cc["p50_ns"]) / 1000
            lines.append(f"- PHP → PHP p50 − C → C p50 = {extra:.1f} µs (both sides in PHP); target ≤ 10 µs: "
                         f"{verdict(extra <= 10)}")
    return lines


def bench_zerocopy(args) -> dict:
    try:
        import zerocopy_bench
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import zerocopy_bench
    rows = zerocopy_bench.run(argparse.Namespace(quick=args.quick, sizes="1,64", modes="ends,sum",
                                                 methods=",".join(zerocopy_bench.METHODS)))
    return {"rows": rows}


def render_zerocopy(results: Dict[str, dict], args) -> List[str]:
    r = results.get("zerocopy")
    lines = ["Large payloads (bench/zerocopy_bench.py): float64 array / one-column Arrow table, sender -> receiver "
             "process, which touches both ends (ends) or sums (sum) and answers; median ms per transfer", "",
             "| method | MiB | mode | ms | GB/s | × memcpy BW | × faster than Pipe | × faster than IPC /dev/shm |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    if not r:
        return lines
    for row in r["rows"]:
        if "error" in row:
            lines.append(f"| {row['method']} | {row['size_mib']} | {row['mode']} | {row['error']} | | | | |")
            continue
        f = lambda k, fmt: (fmt.format(row[k]) if k in row else "")
        lines.append(f"| {row['method']} | {row['size_mib']} | {row['mode']} | {row['ms']:.3f} | {row['gb_s']:.2f} | "
                     f"{f('x_memcpy_bw', '{:.2f}')} | {f('x_faster_than_pipe', '{:.0f}')} | "
                     f"{f('x_faster_than_ipc_shm', '{:.0f}')} |")
    by = {(x["method"], x["size_mib"], x["mode"]): x for x in r["rows"] if "ms" in x}
    loan, loan_pa = by.get(("hms-loan", 64, "ends")), by.get(("hms-loan-pa", 64, "ends"))
    copy, arrow = by.get(("hms-copy", 64, "ends")), by.get(("hms-arrow", 64, "ends"))
    lines.append("")
    if loan:
        lines.append(f"- 64 MiB loaned, received as numpy: {loan['ms']:.3f} ms; target ≤ 0.2 ms: {verdict(loan['ms'] <= 0.2)}"
                     + (f"; received as pyarrow: {loan_pa['ms']:.3f} ms ({verdict(loan_pa['ms'] <= 0.2)})" if loan_pa else ""))
        if "x_faster_than_pipe" in loan:
            lines.append(f"- loan vs Pipe at 64 MiB: {loan['x_faster_than_pipe']:.0f}×; target ≥ 100×: "
                         f"{verdict(loan['x_faster_than_pipe'] >= 100)}")
        if "x_faster_than_ipc_shm" in loan:
            lines.append(f"- loan vs pyarrow IPC through /dev/shm at 64 MiB: {loan['x_faster_than_ipc_shm']:.0f}×; target "
                         f"≥ 50×: {verdict(loan['x_faster_than_ipc_shm'] >= 50)}")
    for name, row in (("copy-in (numpy)", copy), ("copy-in (Arrow table)", arrow)):
        if row and "x_memcpy_bw" in row:
            lines.append(f"- {name} at 64 MiB (the one copy into the arena plus the round trip): "
                         f"{row['x_memcpy_bw']:.2f}× this machine's memcpy bandwidth in the same run; target ≥ 0.8×: "
                         f"{verdict(row['x_memcpy_bw'] >= 0.8)}")
    return lines


def bench_gateway(args) -> dict:
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise BenchError("gateway rows skipped: grpcio is not installed (pip install 'hms-ffi-native[gateway]')")
    try:
        import gateway_bench
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import gateway_bench
    rows = gateway_bench.run(argparse.Namespace(n=max(1000, args.n // 2), rounds=10, warmup=200 if args.quick else 500,
                                                workers=64, quick=args.quick, json=None))
    return {"rows": rows}


def render_gateway(results: Dict[str, dict], args) -> List[str]:
    r = results.get("gateway")
    lines = ["gRPC gateway on loopback (bench/gateway_bench.py): 64-byte unary echo, rows interleaved in "
             "10 slices", "", "| path | p50 µs | p99 µs | calls/s | p50 vs bare grpcio |", "|---|---:|---:|---:|---:|"]
    if not r:
        return lines
    for row in r["rows"]:
        ratio = f"{row['ratio_p50']:.2f}×" if "ratio_p50" in row else "1.00×"
        lines.append(f"| {row['what']} | {us(row['p50_ns'])} | {us(row['p99_ns'])} | {row['calls_per_s']:,.0f} | "
                     f"{ratio} |")
    remote = next((row for row in r["rows"] if row.get("row") == "gw-remote"), None)
    if remote and "ratio_p50" in remote:
        lines.append("")
        lines.append(f"- hms.connect('grpc://…') through the gateway / bare grpcio p50 = {remote['ratio_p50']:.2f}×; "
                     f"target ≤ 1.5×: {verdict(remote['ratio_p50'] <= 1.5)}")
    return lines


def render_pubsub(results: Dict[str, dict], args) -> List[str]:
    lines = [f"Pub/sub fan-out, 64-byte messages, one Python publisher -> k Python subscriber processes, "
             f"{args.ps_msgs} messages, lossless; median of {args.reps}", "",
             "| subscribers | hms-ffi msgs/s | min–max | pyzmq msgs/s | min–max | hms / zmq |",
             "|---:|---:|---:|---:|---:|---:|"]
    for k in PUBSUB_SUBS:
        h, z = results.get(f"ps-hms-{k}"), results.get(f"ps-zmq-{k}")
        if not h and not z:
            continue
        cell = lambda x: (f"{per_s(x['rate'])} | {per_s(x['rate_min'])}–{per_s(x['rate_max'])}" if x else "– | –")
        ratio = f"{h['rate'] / z['rate']:.2f}×" if h and z else "–"
        lines.append(f"| {k} | {cell(h)} | {cell(z)} | {ratio} |")
    return lines


SECTION_RENDERERS = {
    "oneway": render_oneway,
    "async": render_async,
    "stream": render_stream,
    "batch": render_batch,
    "pubsub": lambda results, args: render_pubsub(results, args),
    "langs": lambda results, args: render_langs(results, args),
    "gateway": lambda results, args: render_gateway(results, args),
    "zerocopy": lambda results, args: render_zerocopy(results, args),
}


def render(results: Dict[str, dict], notes: List[str], idle: List[dict], info: Dict[str, str], args) -> str:
    lines: List[str] = []
    if any(k in results for k in ROWS) or (args.sections_run.get("echo")):
        lines += render_echo(results, args.n)
    if idle:
        lines += render_idle(idle)
    for section, renderer in SECTION_RENDERERS.items():
        if args.sections_run.get(section):
            if lines:
                lines.append("")
            part = renderer(results, args)
            while part and part[-1] == "":
                part.pop()
            if not any(k in results for k in SECTIONS[section]):
                part.append("| (no row of this section was measured: see the notes) |")
            lines += part
    lines.append("")
    lines.append(f"Machine: {info['cpu']}, nproc {info['nproc']}, kernel {info['kernel']}, "
                 f"Python {info['python']}, hms-ffi {info['hms_ffi']}, "
                 f"load average at start {info['loadavg_at_start']}, at the end {info.get('loadavg_at_end', '?')}")
    lines.append(f"Date: {info['date']}")
    if notes:
        lines.append("")
        lines.append("Notes:")
        lines.extend(f"- {s}" for s in notes)
    return "\n".join(lines)


def _csv(text: str) -> List[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000, help="timed calls per echo row and per async-seq kind "
                                                         "(default 20000; --quick: 3000)")
    p.add_argument("--quick", action="store_true",
                   help="for CI: n=3000, msgs=stream-items=200000, rounds=10, reps=3 (unless given)")
    p.add_argument("--json", metavar="PATH", help="write raw results (incl. per-call times) as JSON")
    p.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                   help=f"comma-separated subset of: {', '.join(SECTIONS)} (default: all)")
    p.add_argument("--rows", default="", help=f"comma-separated subset of: {', '.join(ALL_ROWS)} (default all)")
    p.add_argument("--no-idle", action="store_true", help="skip the idle-CPU measurement")
    p.add_argument("--msgs", type=int, help="one-way messages per repetition (default 1000000; --quick 200000)")
    p.add_argument("--ps-msgs", type=int, help="pub/sub messages per repetition (default 50000; --quick 5000)")
    p.add_argument("--stream-items", type=int, help="items per stream (default 1000000; --quick 200000)")
    p.add_argument("--rounds", type=int,
                   help="rounds of 1000 calls for async-gather/async-futures/batch (default 50; --quick 10)")
    p.add_argument("--reps", type=int, help="timed repetitions of each throughput row (default 5; --quick 3)")
    p.add_argument("--row-timeout", type=float, default=0.0,
                   help="seconds before a row is aborted (default 60 + 2 ms per call; throughput rows: "
                        "60 s + 20 us per message)")
    a = p.parse_args(argv)
    if a.quick:
        a.n = 3000
    for name, full, quick in (("msgs", 1_000_000, 200_000), ("stream_items", 1_000_000, 200_000), ("ps_msgs", 50_000, 5_000),
                              ("rounds", 50, 10), ("reps", 5, 3)):
        if getattr(a, name) is None:
            setattr(a, name, quick if a.quick else full)
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.n < 100:
        p.error("--n must be at least 100")
    if a.msgs < 10000 or a.stream_items < 10:
        p.error("--msgs must be at least 10000 and --stream-items at least 10")
    a.warmup = a.n // 10 + 100
    sections = _csv(a.sections)
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    rows = _csv(a.rows) if a.rows else list(ALL_ROWS)
    bad = [r for r in rows if r not in ALL_ROWS]
    if bad:
        p.error(f"unknown row(s) {', '.join(bad)}; choose from {', '.join(ALL_ROWS)}")
    a.sections = sections
    a.rows = rows
    # section -> the rows of it that run
    a.sections_run = {s: [r for r in SECTIONS[s] if r in rows] for s in sections}
    return a


def run_row(key: str, runner: Callable[[], dict], results: Dict[str, dict], notes: List[str]) -> None:
    """Runs one row; any failure becomes a note and the run goes on."""
    label = ALL_ROWS[key]
    print(f"[{key}] {label} ...", file=sys.stderr, flush=True)
    t = time.monotonic()
    try:
        results[key] = runner()
    except BenchError as e:
        msg = str(e) if str(e).startswith("C rows skipped") else f"{label} row failed: {e}"
        if msg not in notes:
            notes.append(msg)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # zmq errors, OSError, FFIError, ...: report, go on with the next row
        notes.append(f"{label} row failed: {type(e).__name__}: {e}")
    else:
        print(f"[{key}] done in {time.monotonic() - t:.1f} s", file=sys.stderr, flush=True)
        return
    print(f"[{key}] FAILED after {time.monotonic() - t:.1f} s: {notes[-1]}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    atexit.register(cleanup)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    runners: Dict[str, Callable[[], dict]] = {
        "py-spin": lambda: bench_py(args, True),
        "py-nospin": lambda: bench_py(args, False),
        "c-spin": lambda: bench_c(args, True),
        "c-nospin": lambda: bench_c(args, False),
        "pipe": lambda: bench_pipe(args),
        "zmq": lambda: bench_zmq(args),
        "ow-send": lambda: bench_oneway_hms(args, "count", 1),
        "ow-many-1000": lambda: bench_oneway_hms(args, "count", 1000),
        "ow-many-10000": lambda: bench_oneway_hms(args, "count", 10000),
        "ow-noop-10000": lambda: bench_oneway_hms(args, "noop", 10000),
        "ow-batch-10000": lambda: bench_oneway_hms(args, "ingest", 10000),
        "ow-c": lambda: bench_oneway_c(args),
        "ow-zmq": lambda: bench_oneway_zmq(args),
        "ow-pipe": lambda: bench_oneway_pipe(args),
        "async-seq": lambda: bench_async_seq(args),
        "async-gather": lambda: bench_async_gather(args),
        "async-futures": lambda: bench_async_futures(args),
        "stream-raw": lambda: bench_stream(args, "items"),
        "stream-cbor": lambda: bench_stream(args, "ints"),
        "batch-1000": lambda: bench_batch(args),
        **{f"ps-{t}-{k}": (lambda t=t, k=k: bench_pubsub(args, t, k)) for k in PUBSUB_SUBS for t in ("hms", "zmq")},
        **{f"lang-{a}-{b}": (lambda a=a, b=b: bench_lang(args, a, b)) for a, b in LANG_PAIRS},
        "gateway": lambda: bench_gateway(args),
        "zerocopy": lambda: bench_zerocopy(args),
    }
    needs_zmq = {"zmq", "ow-zmq"} | {f"ps-zmq-{k}" for k in PUBSUB_SUBS}
    results: Dict[str, dict] = {}
    notes: List[str] = []
    idle: List[dict] = []
    info = machine_info()
    stamp = native_lib_stamp()
    try:
        for section in SECTIONS:
            if section not in args.sections:
                continue
            if section == "idle":
                if args.no_idle:
                    continue
                print("[idle] idle CPU of a serving node ...", file=sys.stderr, flush=True)
                for with_client in (False, True):
                    try:
                        idle.append(idle_cpu(with_client))
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except BaseException as e:
                        notes.append(f"idle CPU measurement failed: {type(e).__name__}: {e}")
                continue
            for key in args.sections_run[section]:
                if key in needs_zmq:
                    try:
                        import zmq  # noqa: F401
                    except ImportError:
                        notes.append(f"{ALL_ROWS[key]} row skipped: pyzmq is not installed (pip install pyzmq)")
                        continue
                run_row(key, runners[key], results, notes)
        if args.sections_run.get("echo"):
            notes.append("Echo rows: client = this process, per-call time.perf_counter_ns around one Python "
                         "closure call, GC paused; C rows: per-call clock_gettime inside hms_ctest.")
            if BASELINE not in results:
                notes.append("the hms-ffi Py↔Py spin row was not measured, so there are no ratios")
        if args.sections_run.get("oneway"):
            notes.append("One-way rows: every server is a fresh process with the default spin; hms rows send to "
                         "`count` (adds 1) or `noop` and end with client.call('count'), which the server handles "
                         "after every earlier message of the connection; send_many() gets one prebuilt list of "
                         "64-byte payloads per row; pyzmq: PUSH with the default HWM (1000), plain send() (for 64 B "
                         "faster than copy=False), an empty message asks the receiver for its count, which comes "
                         "back on a second PUSH/PULL pair; Pipe: likewise over the one duplex pipe. CPU columns: "
                         "CPU time over wall time, % of one core (sender: this whole process).")
        if args.sections_run.get("async"):
            notes.append("asyncio rows use asyncio.run() (default event loop) with an overall asyncio.wait_for "
                         "deadline as a safety net.")
        if native_lib_stamp() != stamp:
            notes.append("WARNING: hms_ffi_native's shared library was rebuilt during this run; this process "
                         "kept the old build while later servers loaded the new one. Re-run for clean numbers.")
        try:
            info["loadavg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        except OSError:
            pass
        report = render(results, notes, idle, info, args)
        print(report)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": info, "n": args.n, "warmup": args.warmup, "payload_bytes": len(PAYLOAD),
                           "msgs": args.msgs, "stream_items": args.stream_items, "rounds": args.rounds,
                           "reps": args.reps,
                           "rows": {k: {"label": ROWS[k], **v} for k, v in results.items() if k in ROWS},
                           "sections": {s: {k: {"label": ALL_ROWS[k], **results[k]} for k in SECTIONS[s]
                                            if k in results} for s in SECTIONS if s not in ("echo", "idle")},
                           "idle_cpu": idle, "notes": notes}, f, indent=1)
            print(f"\nraw results written to {args.json}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the benchmark's child processes", file=sys.stderr)
        return 130
    finally:
        cleanup()
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
