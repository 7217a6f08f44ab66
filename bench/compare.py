#!/usr/bin/env python3
"""One run comparing 64-byte echo round trips across transports, plus the idle CPU of a serving node.

    python bench/compare.py                 # 20000 calls per row
    python bench/compare.py --quick         # 3000 calls per row (CI)
    python bench/compare.py --rows py-spin,pipe --n 50000 --json /tmp/r.json

Rows (--rows, comma separated; default all):
    py-spin    hms-ffi, Python client <-> Python server process, both with the default spin (50 us)
    py-nospin  hms-ffi, Python <-> Python, spin_us=0 on the server node and on the client
    c-spin     hms-ffi, C <-> C (tests/c/hms_ctest.c "bench"), default spin
    c-nospin   hms-ffi, C <-> C, no spin
    pipe       multiprocessing.Pipe(); the child loops recv_bytes/send_bytes
    zmq        pyzmq REQ/REP over ipc://; the child runs the REP socket

Every server runs in its own, freshly started process; the client is this process. Python rows time
each call with time.perf_counter_ns after a warm-up (n/10 + 100 calls) with the garbage collector
paused; p50/p99 come from the sorted per-call times and calls/s from the wall time of the timed loop.
"""
from __future__ import annotations

import argparse
import atexit
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
            raise BenchError(f"row timed out after {self.seconds:.0f} s (server killed)") from exc


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


def render(results: Dict[str, dict], notes: List[str], idle: List[dict], info: Dict[str, str], n: int) -> str:
    base = results.get(BASELINE)
    lines = [f"64-byte echo round trip, {n} calls per row (after warm-up)", "",
             "| transport | p50 µs | p99 µs | calls/s | p50 vs hms-ffi Py↔Py spin |",
             "|---|---:|---:|---:|---:|"]
    for key, label in ROWS.items():
        r = results.get(key)
        if r is None:
            continue
        rel = f"{r['p50_ns'] / base['p50_ns']:.2f}×" if base else "n/a"
        lines.append(f"| {label} | {us(r['p50_ns'])} | {us(r['p99_ns'])} | {r['calls_per_s']:,.0f} | {rel} |")
    lines.append("")

    def ratio(key: str) -> str:
        if base and key in results:
            return f"{results[key]['p50_ns'] / base['p50_ns']:.2f}"
        return "n/a (row not measured)"

    lines.append(f"- Pipe p50 / hms Py spin p50 = {ratio('pipe')}")
    lines.append(f"- zmq p50 / hms Py spin p50 = {ratio('zmq')}")
    for r in idle:
        what = "1 connected idle client" if r["connected_idle_client"] else "no clients"
        extra = (f", schedstat {r['pct_one_core_schedstat']:.2f}%" if "pct_one_core_schedstat" in r else "")
        verdict = "OK" if r["pct_one_core"] < 1.0 else "ABOVE TARGET"
        lines.append(f"- Idle CPU of a serving Python node (default spin, {what}): "
                     f"{r['pct_one_core']:.2f}% of one core over {r['window_s']:.1f} s "
                     f"({r['ticks']} ticks at {r['clk_tck']} Hz{extra}); target < 1%: {verdict}")
    lines.append("")
    lines.append(f"Machine: {info['cpu']}, nproc {info['nproc']}, kernel {info['kernel']}, "
                 f"Python {info['python']}, hms-ffi {info['hms_ffi']}, "
                 f"load average at start {info['loadavg_at_start']}")
    lines.append(f"Date: {info['date']}")
    if notes:
        lines.append("")
        lines.append("Notes:")
        lines.extend(f"- {s}" for s in notes)
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000, help="timed calls per row (default 20000)")
    p.add_argument("--quick", action="store_true", help="n=3000 (for CI)")
    p.add_argument("--json", metavar="PATH", help="write raw results (incl. per-call times) as JSON")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of: {', '.join(ROWS)}")
    p.add_argument("--no-idle", action="store_true", help="skip the idle-CPU measurement")
    p.add_argument("--row-timeout", type=float, default=0.0,
                   help="seconds before a row is aborted (default 60 + 2 ms per call)")
    a = p.parse_args(argv)
    if a.quick:
        a.n = 3000
    if a.n < 100:
        p.error("--n must be at least 100")
    a.warmup = a.n // 10 + 100
    rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad:
        p.error(f"unknown row(s) {', '.join(bad)}; choose from {', '.join(ROWS)}")
    a.rows = rows
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    atexit.register(cleanup)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    runners = {
        "py-spin": lambda: bench_py(args, True),
        "py-nospin": lambda: bench_py(args, False),
        "c-spin": lambda: bench_c(args, True),
        "c-nospin": lambda: bench_c(args, False),
        "pipe": lambda: bench_pipe(args),
        "zmq": lambda: bench_zmq(args),
    }
    results: Dict[str, dict] = {}
    notes: List[str] = []
    idle: List[dict] = []
    info = machine_info()
    stamp = native_lib_stamp()
    try:
        for key in ROWS:
            if key not in args.rows:
                continue
            if key == "zmq":
                try:
                    import zmq  # noqa: F401
                except ImportError:
                    notes.append("pyzmq row skipped: pyzmq is not installed (pip install pyzmq)")
                    continue
            print(f"[{key}] {ROWS[key]} ...", file=sys.stderr, flush=True)
            t = time.monotonic()
            try:
                results[key] = runners[key]()
            except BenchError as e:
                msg = str(e) if str(e).startswith("C rows skipped") else f"{ROWS[key]} row failed: {e}"
                if msg not in notes:
                    notes.append(msg)
                continue
            except hms.FFIError as e:
                notes.append(f"{ROWS[key]} row failed: {type(e).__name__}: {e}")
                continue
            print(f"[{key}] done in {time.monotonic() - t:.1f} s", file=sys.stderr, flush=True)
        if not args.no_idle:
            print("[idle] idle CPU of a serving node ...", file=sys.stderr, flush=True)
            for with_client in (False, True):
                try:
                    idle.append(idle_cpu(with_client))
                except (BenchError, hms.FFIError) as e:
                    notes.append(f"idle CPU measurement failed: {e}")
        notes.append("Python rows: client = this process, per-call time.perf_counter_ns around one Python "
                     "closure call, GC paused; C rows: per-call clock_gettime inside hms_ctest.")
        if native_lib_stamp() != stamp:
            notes.append("WARNING: hms_ffi_native's shared library was rebuilt during this run; this process "
                         "kept the old build while later servers loaded the new one. Re-run for clean numbers.")
        if BASELINE not in results:
            notes.append("the hms-ffi Py↔Py spin row was not measured, so there are no ratios")
        report = render(results, notes, idle, info, args.n)
        print(report)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": info, "n": args.n, "warmup": args.warmup, "payload_bytes": len(PAYLOAD),
                           "rows": {k: {"label": ROWS[k], **v} for k, v in results.items()},
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
