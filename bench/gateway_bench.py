#!/usr/bin/env python3
"""The gRPC gateway's remote echo round trip vs a bare grpcio unary echo, on loopback, in one run.

    python bench/gateway_bench.py                 # 20000 calls per row
    python bench/gateway_bench.py --quick         # 2000 calls per row (CI smoke run)
    python bench/gateway_bench.py --n 50000 --json /tmp/gw.json

Processes (each freshly started; the client is this process):

* bare:    a grpcio server (generic handler, raw bytes, the same thread pool size as the gateway)
           that returns the request; the client calls it with a raw-bytes unary callable.
* gateway: ``hms-ffi gateway`` in front of a Python hms service whose ``echo`` returns its argument;
           the client is ``hms.connect("grpc://127.0.0.1:PORT/bench.echo")`` (a RemoteClient) and
           calls ``echo`` -- so a row pays gRPC both ways plus the local hms hop on the far side.
* gateway-wire: the same gateway called with a bare grpcio callable and hand-written metadata: the
           difference to ``gateway`` is what RemoteClient adds in the client.

The payload is 64 bytes. The rows are interleaved in --rounds slices (bare, gateway, wire, bare, ...)
so that drift (CPU frequency, the other core's load) hits every row alike. Reported: p50/p99 per call
and the gateway's p50 over the bare p50 (the issue's target: <= 1.5).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
try:
    import hms_ffi_native as hms
except ImportError:  # built in place, not installed
    sys.path.insert(0, str(ROOT))
    import hms_ffi_native as hms

PKG_PARENT = str(Path(hms.__file__).resolve().parent.parent)
PAYLOAD = bytes(range(64))
SERVICE = "bench.echo"
TARGET_RATIO = 1.5

SERVICE_CHILD = r"""
import hms_ffi_native as hms
node = hms.Node("bench-echo")
svc = node.service("bench.echo", "1.0.0")
@svc.function()
def echo(x):
    return x
print("ready", flush=True)
node.serve()
"""

BARE_CHILD = r"""
import sys
from concurrent.futures import ThreadPoolExecutor
import grpc
workers = int(sys.argv[1])
server = grpc.server(ThreadPoolExecutor(max_workers=workers), options=[("grpc.so_reuseport", 0)])
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {
    "Echo": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)}),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print("ready", port, flush=True)
server.wait_for_termination()
"""


def _env(runtime_dir: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONSAFEPATH"] = "1"
    env["HMS_FFI_RUNTIME_DIR"] = runtime_dir
    return env


def _spawn(argv, env, cwd) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                            start_new_session=True)


def _ready_line(proc: subprocess.Popen, what: str, timeout: float = 20.0) -> str:
    import select

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            line = proc.stdout.readline()
            if line:
                return line.strip()
        if proc.poll() is not None:
            break
    err = proc.stderr.read() if proc.poll() is not None else ""
    raise RuntimeError(f"{what} did not start: {err[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _timed(fn, n: int, lat: list) -> None:
    pc = time.perf_counter_ns
    for _ in range(n):
        t0 = pc()
        fn()
        lat.append(pc() - t0)


def _summary(name: str, what: str, lat: list) -> dict:
    s = sorted(lat)
    n = len(s)
    return {"row": name, "what": what, "n": n, "p50_ns": s[n // 2], "p99_ns": s[min(n - 1, int(n * 0.99))],
            "mean_ns": sum(s) / n, "calls_per_s": 1e9 / (sum(s) / n)}


def run(args) -> list:
    """Runs the three rows; returns their dicts (row, what, n, p50_ns, p99_ns, mean_ns, calls_per_s,
    and on the gateway rows ``ratio_p50``: their p50 over the bare p50)."""
    import grpc

    n, rounds, warmup, workers = args.n, args.rounds, args.warmup, args.workers
    d = tempfile.mkdtemp(prefix="hmsgwb-", dir="/tmp")
    env = _env(d)
    procs = []
    try:
        svc = _spawn([sys.executable, "-c", SERVICE_CHILD], env, d)
        procs.append(svc)
        if _ready_line(svc, "hms echo service") != "ready":
            raise RuntimeError("hms echo service did not say ready")
        gw = _spawn([sys.executable, "-m", "hms_ffi_native", "--runtime-dir", d, "gateway", "--listen",
                     "127.0.0.1:0", "--max-workers", str(workers)], env, d)
        procs.append(gw)
        line = _ready_line(gw, "gateway")  # "hms-ffi gateway listening on 127.0.0.1:PORT (...)"
        gw_addr = line.split(" listening on ")[1].split()[0]
        bare = _spawn([sys.executable, "-c", BARE_CHILD, str(workers)], env, d)
        procs.append(bare)
        bare_port = int(_ready_line(bare, "bare grpc server").split()[1])

        bare_ch = grpc.insecure_channel(f"127.0.0.1:{bare_port}")
        bare_echo = bare_ch.unary_unary("/bench.Echo/Echo")
        remote = hms.connect(f"grpc://{gw_addr}/{SERVICE}", "^1", timeout=10)
        wire_ch = grpc.insecure_channel(gw_addr)
        wire_call = wire_ch.unary_unary("/hms.gateway.v1.Gateway/Call")
        md = (("hms-service", SERVICE), ("hms-version", "^1"), ("hms-function", "echo"), ("hms-content-type", "1"))

        rows = {
            "gw-bare": ("bare grpcio unary echo (generic handler, raw bytes)", lambda: bare_echo(PAYLOAD)),
            "gw-remote": ("hms.connect('grpc://...').call('echo') through the gateway to a Python service",
                          lambda: remote.call("echo", PAYLOAD)),
            "gw-wire": ("grpcio callable + hms metadata through the gateway (no RemoteClient)",
                        lambda: wire_call(PAYLOAD, metadata=md)),
        }
        for _, fn in rows.values():
            if fn() != PAYLOAD:
                raise RuntimeError("an echo returned something else than the 64 bytes sent")
            for _ in range(warmup):
                fn()
        lat = {k: [] for k in rows}
        per = max(1, n // rounds)
        gc.collect()
        gc.disable()
        try:
            for _ in range(rounds):
                for k, (_, fn) in rows.items():
                    _timed(fn, per, lat[k])
        finally:
            gc.enable()
        out = [_summary(k, rows[k][0], lat[k]) for k in rows]
        base = out[0]["p50_ns"]
        for r in out[1:]:
            r["ratio_p50"] = r["p50_ns"] / base
            r["ratio_p99"] = r["p99_ns"] / out[0]["p99_ns"]
        remote.close()
        bare_ch.close()
        wire_ch.close()
        return out
    finally:
        for p in procs:
            _stop(p)
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="timed calls per row")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved slices per row")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--workers", type=int, default=64, help="server thread pool size (both servers)")
    ap.add_argument("--quick", action="store_true", help="n=2000, 200 warm-up calls")
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args()
    if a.quick:
        a.n, a.warmup = 2000, 200
    rows = run(a)
    print(f"gateway echo, 64 B, loopback; {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"python {platform.python_version()}, grpcio {__import__('grpc').__version__}")
    print(f"{'row':10} {'p50 us':>8} {'p99 us':>8} {'calls/s':>9} {'p50/bare':>9}  what")
    for r in rows:
        ratio = f"{r['ratio_p50']:.2f}x" if "ratio_p50" in r else ""
        print(f"{r['row']:10} {r['p50_ns'] / 1e3:8.1f} {r['p99_ns'] / 1e3:8.1f} {r['calls_per_s']:9.0f} {ratio:>9}  "
              f"{r['what']}")
    g = next(r for r in rows if r["row"] == "gw-remote")
    verdict = "meets" if g["ratio_p50"] <= TARGET_RATIO else "misses"
    print(f"target: gateway p50 <= {TARGET_RATIO}x bare grpcio p50 -> {g['ratio_p50']:.2f}x ({verdict})")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
