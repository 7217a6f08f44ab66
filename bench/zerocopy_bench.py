#!/usr/bin/env python3
"""Zero-copy transfer of float64 numpy arrays between two processes, in one run:

    python bench/zerocopy_bench.py                 # 1 MiB and 64 MiB, full counts
    python bench/zerocopy_bench.py --quick         # small counts (CI smoke run, ~20 s)
    python bench/zerocopy_bench.py --sizes 1,64 --methods hms-loan,pipe --json /tmp/zc.json

For each size and method the sender hands an array to a receiver process, which either touches both
ends (``ends``: x[0] + x[-1], what a zero-copy view costs) or sums it (``sum``: every byte read), and
answers; one transfer is that round trip. Producing the data is not timed (the loan and shared-memory
rows write into the block before the clock starts, the other rows send an array that already exists).

Methods (--methods, comma separated):
  hms-loan    client.loan_array() filled in place, client.call(): the receiver gets a read-only view of the
              sender's arena block (zero copy)
  hms-copy    client.call() of a private array: one copy into the arena (copy-in), then zero copy
  pipe        multiprocessing.Pipe: conn.send(array) (pickle), the child recv()s it
  zmq         pyzmq PAIR over ipc://, send(array, copy=False) (buffer protocol), the child builds an
              ndarray over the received frame
  shm         multiprocessing.shared_memory, one segment allocated up front and filled in place; a
              one-byte Pipe message tells the child which size to look at (the best case for hand-rolled
              shared memory)
  hms-loan-pa the hms-loan transfer, received as pyarrow: the receiver wraps its read-only view with
              pyarrow.array() (no copy) and works on the pyarrow Array
  hms-arrow   client.call() of a pyarrow Table (one float64 column of the same size) from private memory:
              its buffers are copied once into the arena (csrc/arrow.c layout); the receiver gets a
              pyarrow Table over the block (zero copy)
  ipc-shm     pyarrow IPC through a file in /dev/shm: the sender writes the table (pyarrow.ipc file
              format), a one-byte Pipe message tells the child, which memory-maps and reads it (zero copy)
  memcpy      numpy copy of the same size in this process: the machine's memory bandwidth, for scale

Output: one row per (method, size, mode) with ms per transfer, GB/s (array bytes / time) and the
ratios the zero-copy work is judged by. ``run(args)`` returns the rows as dicts (bench/compare.py calls
it); ``main()`` prints them as a table (and writes JSON with --json).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

MIB = 1 << 20
SERVICE = "bench.zerocopy"
QUOTA = 1 << 30
METHODS = ["hms-loan", "hms-copy", "hms-loan-pa", "hms-arrow", "pipe", "zmq", "shm", "ipc-shm", "memcpy"]


# ------------------------------------------------------------------------------------------- receivers
def _hms_server() -> None:
    import hms_ffi_native as hms

    node = hms.Node("zc-receiver", arena_quota=QUOTA)
    svc = node.service(SERVICE, "1.0.0")

    @svc.function()
    def ends(x):
        return float(x[0] + x[-1])

    @svc.function()
    def total(x):
        return float(x.sum())

    import pyarrow as pa
    import pyarrow.compute as pc

    @svc.function()
    def ends_pa(x):  # an ndarray view of the block, as a pyarrow Array (no copy)
        a = pa.array(x)
        return float(a[0].as_py() + a[-1].as_py())

    @svc.function()
    def total_pa(x):
        return float(pc.sum(pa.array(x)).as_py())

    @svc.function()
    def ends_table(t):  # a pyarrow Table over the block
        col = t.column(0)
        return float(col[0].as_py() + col[-1].as_py())

    @svc.function()
    def total_table(t):
        return float(pc.sum(t.column(0)).as_py())

    node.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    node.close()


def _same(a, b) -> bool:
    """Equal up to summation order (numpy and pyarrow add in different orders)."""
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def _touch(x, mode):
    return float(x[0] + x[-1]) if mode == "ends" else float(x.sum())


def _pipe_child(conn, mode) -> None:
    while True:
        a = conn.recv()
        if a is None:
            return
        conn.send(_touch(a, mode))


def _zmq_child(addr, mode) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PAIR)
    s.connect(addr)
    while True:
        f = s.recv(copy=False)
        if len(f.buffer) == 0:
            break
        a = np.frombuffer(f.buffer, dtype=np.float64)
        s.send(np.float64(_touch(a, mode)).tobytes())
    s.close()
    ctx.term()


def _ipc_child(path, conn, mode) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    while True:
        msg = conn.recv_bytes()
        if not msg:
            return
        with pa.memory_map(path) as src:
            col = pa.ipc.open_file(src).read_all().column(0)
            r = float(col[0].as_py() + col[-1].as_py()) if mode == "ends" else float(pc.sum(col).as_py())
        del col
        conn.send_bytes(np.float64(r).tobytes())


def _shm_child(name, nbytes, conn, mode) -> None:
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=name)
    try:
        while True:
            n = conn.recv_bytes()
            if not n:
                return
            a = np.ndarray((int(n) // 8,), dtype=np.float64, buffer=shm.buf)
            conn.send_bytes(np.float64(_touch(a, mode)).tobytes())
            del a
    finally:
        shm.close()


# ------------------------------------------------------------------------------------------- senders
def _timeit(fn, n: int, warm: int) -> list:
    for _ in range(warm):
        fn()
    out = []
    for _ in range(n):
        out.append(fn())
    return out


def bench_hms(sizes, modes, counts, methods):
    import hms_ffi_native as hms

    rt = tempfile.mkdtemp(prefix="hmszc-", dir="/tmp")
    env = dict(os.environ, HMS_FFI_RUNTIME_DIR=rt, PYTHONSAFEPATH="1")
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(hms.__file__)))
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env, cwd=rt)
    rows = []
    try:
        assert p.stdout.readline().strip() == "ready"
        node = hms.Node("zc-sender", runtime_dir=rt, arena_quota=QUOTA)
        c = node.connect(SERVICE, arena_quota=QUOTA)
        for size in sizes:
            n_el = size // 8
            private = np.arange(n_el, dtype=np.float64)
            for mode in modes:
                fn = "ends" if mode == "ends" else "total"
                expect = _touch(private, mode)
                count, warm = counts[size]
                if "hms-loan" in methods:
                    def one_loan():
                        a = c.loan_array((n_el,), "float64")
                        a[0], a[-1] = private[0], private[-1]  # produced in place; untimed
                        if mode == "sum" and not getattr(one_loan, "filled", False):
                            a[:] = private  # first time only: later loans reuse the same block
                        t = time.perf_counter()
                        r = c.call(fn, a, timeout=60)
                        dt = time.perf_counter() - t
                        if mode == "ends":
                            assert _same(r, expect)
                        return dt
                    # The block is reused after its release, so its content survives from loan to loan.
                    a0 = c.loan_array((n_el,), "float64")
                    a0[:] = private
                    c.call(fn, a0, timeout=60)
                    del a0
                    one_loan.filled = True
                    ts = _timeit(one_loan, count, warm)
                    rows.append(_row("hms-loan", size, mode, ts))
                if "hms-copy" in methods:
                    def one_copy():
                        t = time.perf_counter()
                        r = c.call(fn, private, timeout=60)
                        dt = time.perf_counter() - t
                        assert _same(r, expect)
                        return dt
                    rows.append(_row("hms-copy", size, mode, _timeit(one_copy, count, warm)))
                if "hms-loan-pa" in methods:
                    pfn = "ends_pa" if mode == "ends" else "total_pa"
                    a0 = c.loan_array((n_el,), "float64")
                    a0[:] = private
                    c.call(pfn, a0, timeout=60)
                    del a0

                    def one_loan_pa():
                        a = c.loan_array((n_el,), "float64")  # the same block again: content kept
                        a[0], a[-1] = private[0], private[-1]
                        t = time.perf_counter()
                        r = c.call(pfn, a, timeout=60)
                        dt = time.perf_counter() - t
                        assert _same(r, expect)
                        return dt
                    rows.append(_row("hms-loan-pa", size, mode, _timeit(one_loan_pa, count, warm)))
                if "hms-arrow" in methods:
                    import pyarrow as pa

                    table = pa.table({"x": private})  # wraps the private array (no copy)
                    tfn = "ends_table" if mode == "ends" else "total_table"

                    def one_table():
                        t = time.perf_counter()
                        r = c.call(tfn, table, timeout=60)
                        dt = time.perf_counter() - t
                        assert _same(r, expect)
                        return dt
                    rows.append(_row("hms-arrow", size, mode, _timeit(one_table, count, warm)))
        c.close()
        node.close()
    finally:
        p.stdin.close()
        p.wait(10)
        shutil.rmtree(rt, ignore_errors=True)
    return rows


def bench_pipe(sizes, modes, counts):
    rows = []
    ctx = mp.get_context("spawn")
    for mode in modes:
        a_end, b_end = ctx.Pipe()
        proc = ctx.Process(target=_pipe_child, args=(b_end, mode), daemon=True)
        proc.start()
        for size in sizes:
            arr = np.arange(size // 8, dtype=np.float64)
            expect = _touch(arr, mode)
            count, warm = counts[size]

            def one():
                t = time.perf_counter()
                a_end.send(arr)
                r = a_end.recv()
                dt = time.perf_counter() - t
                assert _same(r, expect)
                return dt
            rows.append(_row("pipe", size, mode, _timeit(one, max(2, count // 4), 1)))
        a_end.send(None)
        proc.join(10)
    return rows


def bench_zmq(sizes, modes, counts):
    try:
        import zmq
    except ImportError:
        return [{"method": "zmq", "size_mib": s // MIB, "mode": m, "error": "pyzmq not installed"}
                for s in sizes for m in modes]
    rows = []
    ctx = mp.get_context("spawn")
    d = tempfile.mkdtemp(prefix="zczmq-", dir="/tmp")
    zctx = zmq.Context()
    try:
        for mode in modes:
            addr = f"ipc://{d}/{mode}"
            s = zctx.socket(zmq.PAIR)
            s.bind(addr)
            proc = ctx.Process(target=_zmq_child, args=(addr, mode), daemon=True)
            proc.start()
            for size in sizes:
                arr = np.arange(size // 8, dtype=np.float64)
                expect = _touch(arr, mode)
                count, warm = counts[size]

                def one():
                    t = time.perf_counter()
                    s.send(arr, copy=False)
                    r = np.frombuffer(s.recv(), dtype=np.float64)[0]
                    dt = time.perf_counter() - t
                    assert _same(r, expect)
                    return dt
                rows.append(_row("zmq", size, mode, _timeit(one, count, warm)))
            s.send(b"")
            proc.join(10)
            s.close(linger=0)
    finally:
        zctx.term()
        shutil.rmtree(d, ignore_errors=True)
    return rows


def bench_ipc_shm(sizes, modes, counts):
    import pyarrow as pa

    rows = []
    ctx = mp.get_context("spawn")
    d = tempfile.mkdtemp(prefix="zcipc-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    path = os.path.join(d, "table.arrow")
    try:
        for mode in modes:
            a_end, b_end = ctx.Pipe()
            proc = ctx.Process(target=_ipc_child, args=(path, b_end, mode), daemon=True)
            proc.start()
            for size in sizes:
                arr = np.arange(size // 8, dtype=np.float64)
                table = pa.table({"x": arr})
                expect = _touch(arr, mode)
                count, warm = counts[size]

                def one():
                    t = time.perf_counter()
                    with pa.OSFile(path, "wb") as sink:
                        with pa.ipc.new_file(sink, table.schema) as w:
                            w.write_table(table)
                    a_end.send_bytes(b"g")
                    r = np.frombuffer(a_end.recv_bytes(), dtype=np.float64)[0]
                    dt = time.perf_counter() - t
                    assert _same(r, expect)
                    return dt
                rows.append(_row("ipc-shm", size, mode, _timeit(one, max(2, count // 2), 1)))
            a_end.send_bytes(b"")
            proc.join(10)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return rows


def bench_shm(sizes, modes, counts):
    from multiprocessing import shared_memory

    rows = []
    ctx = mp.get_context("spawn")
    biggest = max(sizes)
    shm = shared_memory.SharedMemory(create=True, size=biggest)
    try:
        for mode in modes:
            a_end, b_end = ctx.Pipe()
            proc = ctx.Process(target=_shm_child, args=(shm.name, biggest, b_end, mode), daemon=True)
            proc.start()
            for size in sizes:
                view = np.ndarray((size // 8,), dtype=np.float64, buffer=shm.buf)
                view[:] = np.arange(size // 8, dtype=np.float64)  # produced in place, before timing
                expect = _touch(view, mode)
                count, warm = counts[size]
                msg = str(size).encode()

                def one():
                    t = time.perf_counter()
                    a_end.send_bytes(msg)
                    r = np.frombuffer(a_end.recv_bytes(), dtype=np.float64)[0]
                    dt = time.perf_counter() - t
                    assert _same(r, expect)
                    return dt
                rows.append(_row("shm", size, mode, _timeit(one, count, warm)))
                del view
            a_end.send_bytes(b"")
            proc.join(10)
    finally:
        shm.close()
        shm.unlink()
    return rows


def bench_memcpy(sizes, counts):
    rows = []
    for size in sizes:
        src = np.arange(size // 8, dtype=np.float64)
        dst = np.empty_like(src)
        count, warm = counts[size]

        def one():
            t = time.perf_counter()
            np.copyto(dst, src)
            return time.perf_counter() - t
        rows.append(_row("memcpy", size, "copy", _timeit(one, count, warm)))
    return rows


def _row(method, size, mode, ts) -> dict:
    med = statistics.median(ts)
    return {"method": method, "size_mib": size // MIB, "mode": mode, "n": len(ts), "ms": med * 1e3,
            "ms_min": min(ts) * 1e3, "gb_s": size / med / 1e9}


# ------------------------------------------------------------------------------------------- entry points
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts (CI smoke run)")
    ap.add_argument("--sizes", default="1,64", help="array sizes in MiB, comma separated (default 1,64)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"default: {','.join(METHODS)}")
    ap.add_argument("--modes", default="ends,sum", help="ends (touch both ends) and/or sum")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def run(args) -> list:
    """Runs the selected rows; ``args`` is parse_args()'s namespace (or anything with its attributes)."""
    sizes = [int(float(s) * MIB) for s in str(getattr(args, "sizes", "1,64")).split(",") if s]
    methods = [m for m in str(getattr(args, "methods", ",".join(METHODS))).split(",") if m]
    modes = [m for m in str(getattr(args, "modes", "ends,sum")).split(",") if m]
    quick = getattr(args, "quick", False)
    counts = {}
    for s in sizes:
        if s <= 4 * MIB:
            counts[s] = (30, 5) if quick else (300, 30)
        else:
            counts[s] = (5, 2) if quick else (30, 5)
    rows = []
    if any(m.startswith("hms-") for m in methods):
        rows += bench_hms(sizes, modes, counts, methods)
    if "pipe" in methods:
        rows += bench_pipe(sizes, modes, counts)
    if "zmq" in methods:
        rows += bench_zmq(sizes, modes, counts)
    if "shm" in methods:
        rows += bench_shm(sizes, modes, counts)
    if "ipc-shm" in methods:
        rows += bench_ipc_shm(sizes, modes, counts)
    if "memcpy" in methods:
        rows += bench_memcpy(sizes, counts)
    _judge(rows)
    return rows


def _judge(rows) -> None:
    """Adds the ratios the targets are stated in: vs memcpy bandwidth and vs Pipe."""
    by = {(r["method"], r["size_mib"], r["mode"]): r for r in rows if "ms" in r}
    for r in rows:
        if "ms" not in r:
            continue
        mc = by.get(("memcpy", r["size_mib"], "copy"))
        if mc and r["method"] in ("hms-copy", "hms-arrow"):
            r["x_memcpy_bw"] = r["gb_s"] / mc["gb_s"]
        ipc = by.get(("ipc-shm", r["size_mib"], r["mode"]))
        if ipc and r["method"] != "ipc-shm":
            r["x_faster_than_ipc_shm"] = ipc["ms"] / r["ms"]
        pipe = by.get(("pipe", r["size_mib"], r["mode"]))
        if pipe and r["method"] != "pipe":
            r["x_faster_than_pipe"] = pipe["ms"] / r["ms"]


def main() -> None:
    args = parse_args()
    if args.serve:
        _hms_server()
        return
    rows = run(args)
    print(f"{'method':<10} {'MiB':>4} {'mode':<5} {'n':>4} {'ms/transfer':>12} {'min ms':>9} {'GB/s':>9} "
          f"{'x memcpy':>9} {'x pipe':>9} {'x ipc-shm':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['method']:<10} {r['size_mib']:>4} {r['mode']:<5}  {r['error']}")
            continue
        xm = f"{r['x_memcpy_bw']:.2f}" if "x_memcpy_bw" in r else ""
        xp = f"{r['x_faster_than_pipe']:.0f}" if "x_faster_than_pipe" in r else ""
        xi = f"{r['x_faster_than_ipc_shm']:.0f}" if "x_faster_than_ipc_shm" in r else ""
        print(f"{r['method']:<10} {r['size_mib']:>4} {r['mode']:<5} {r['n']:>4} {r['ms']:>12.4f} {r['ms_min']:>9.4f} "
              f"{r['gb_s']:>9.2f} {xm:>9} {xp:>9} {xi:>9}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
