#!/usr/bin/env python3
"""Pub/sub fan-out: one publisher (this process) to 1, 4 and 16 subscriber processes, 64-byte messages.

    python bench/pubsub_bench.py                      # hms-ffi and pyzmq PUB/SUB, 1/4/16 subscribers
    python bench/pubsub_bench.py --quick              # fewer messages (CI smoke run)
    python bench/pubsub_bench.py --subs 1,4 --n 50000 --transports hms --json /tmp/ps.json

Two measurements per (transport, subscriber count), each with fresh subscriber processes:

* throughput: the publisher sends n messages as fast as it can, lossless (hms-ffi: a blocking publisher,
  so a slow subscriber holds it back instead of missing messages; pyzmq: SNDHWM = RCVHWM = 0, i.e.
  unbounded queues). Reported: messages published per second until every subscriber has all of them,
  and deliveries per second (messages x subscribers).
* latency: the publisher sends --rate messages/s for --seconds; every subscriber records, per message,
  CLOCK_MONOTONIC at receive minus CLOCK_MONOTONIC at publish (the same clock in every process).
  Reported: p50 and p99 over all subscribers' samples. Subscribers use the default spin (50 us), so
  at low rates every message wakes a sleeping process.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import select
import shutil
import statistics
import struct
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
from hms_ffi_native._topic import Publisher  # noqa: E402

PKG_PARENT = str(Path(hms.__file__).resolve().parent.parent)
TOPIC = "bench.fanout"
SIZE = 64

# The subscriber process. argv: transport mode endpoint. Messages: 1-byte kind ('W'/'G' warm-up, 'M'
# measured, 'E' end) + 8-byte publish time (monotonic ns) + padding to SIZE bytes.
CHILD = r"""
import json, struct, sys, time
transport, mode, endpoint, spin = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
now = time.monotonic_ns
if transport == "hms":
    import hms_ffi_native as hms
    from hms_ffi_native._topic import Subscription
    node = hms.Node("bench-sub")
    sub = Subscription(node, endpoint, spin_us=None if spin == "default" else float(spin))
    def recv():
        return sub.recv().data
else:
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB); s.setsockopt(zmq.RCVHWM, 0); s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(endpoint)
    recv = s.recv
print("ready", flush=True)
while recv()[:1] != b"G":
    pass
print("go", flush=True)  # connected and receiving
n, lat, t0 = 0, [], now()
while True:
    d = recv()
    kind = d[:1]
    if kind == b"E":
        break
    if kind != b"M":
        continue  # warm-up traffic still in flight
    n += 1
    if mode == "latency":
        lat.append(now() - struct.unpack_from("<q", d, 1)[0])
print(json.dumps({"n": n, "secs": (now() - t0) / 1e9, "lat": lat}), flush=True)
"""


def _msg(kind: bytes) -> bytes:
    return kind + struct.pack("<q", time.monotonic_ns()) + b"x" * (SIZE - 9)


def _spawn(k: int, transport: str, mode: str, endpoint: str, env: dict, spin: str = "default"):
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, transport, mode, endpoint, spin], stdout=subprocess.PIPE,
                              text=True, env=env) for _ in range(k)]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("a subscriber did not start")
    return procs


def _wait_go(procs, send_warmup):
    """Sends warm-up messages until every subscriber saw a measured one (covers zmq's slow joiner)."""
    pending = {p.stdout: p for p in procs}
    while pending:
        send_warmup()
        r, _, _ = select.select(list(pending), [], [], 0.005)
        for f in r:
            assert f.readline().strip() == "go"
            del pending[f]


def run(transport: str, mode: str, k: int, n: int, rate: int, seconds: float, spin: str = "default") -> dict:
    rdir = tempfile.mkdtemp(prefix="hmsps-", dir="/tmp")
    env = dict(os.environ, HMS_FFI_RUNTIME_DIR=rdir, PYTHONSAFEPATH="1",
               PYTHONPATH=PKG_PARENT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    os.environ["HMS_FFI_RUNTIME_DIR"] = rdir
    node = pub = ctx = None
    try:
        if transport == "hms":
            node = hms.Node("bench-pub")
            pub = Publisher(node, TOPIC, capacity=4096, block=(mode == "throughput"),
                            spin_us=None if spin == "default" else float(spin))
            send = pub.publish
            procs = _spawn(k, transport, mode, TOPIC, env, spin)
            if not pub.wait_for_subscribers(k, timeout=10):
                raise RuntimeError("subscribers did not connect")
        else:
            import zmq

            ctx = zmq.Context()
            pub = ctx.socket(zmq.PUB)
            pub.setsockopt(zmq.SNDHWM, 0)
            endpoint = f"ipc://{rdir}/zmq.sock"
            pub.bind(endpoint)
            send = pub.send
            procs = _spawn(k, transport, mode, endpoint, env)
        _wait_go(procs, lambda: (send(_msg(b"W")), send(_msg(b"G"))))
        t0 = time.perf_counter()
        if mode == "throughput":
            m = _msg(b"M")
            for _ in range(n):
                send(m)
            sent = n
        else:
            period, sent = 1.0 / rate, 0
            end = time.perf_counter() + seconds
            nxt = time.perf_counter()
            while nxt < end:
                while time.perf_counter() < nxt:
                    pass
                send(_msg(b"M"))
                sent += 1
                nxt += period
        send(_msg(b"E"))
        results = [json.loads(p.stdout.readline()) for p in procs]
        elapsed = time.perf_counter() - t0
        for p in procs:
            p.wait(10)
        out = {"transport": transport, "mode": mode, "subscribers": k, "sent": sent,
               "received_min": min(r["n"] for r in results)}
        if mode == "throughput":
            out["msgs_per_s"] = sent / elapsed
            out["deliveries_per_s"] = sent * k / elapsed
        else:
            lat = sorted(x for r in results for x in r["lat"])
            out["p50_us"] = lat[len(lat) // 2] / 1000 if lat else None
            out["p99_us"] = lat[int(len(lat) * 0.99)] / 1000 if lat else None
            out["mean_us"] = statistics.fmean(lat) / 1000 if lat else None
        return out
    finally:
        if transport == "hms":
            if pub is not None:
                pub.close()
            if node is not None:
                node.close()
        elif ctx is not None:
            ctx.destroy(linger=0)
        shutil.rmtree(rdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subs", default="1,4,16")
    ap.add_argument("--n", type=int, default=50000, help="messages per throughput row")
    ap.add_argument("--rate", type=int, default=2000, help="messages/s in latency rows")
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of latency rows")
    ap.add_argument("--transports", default="hms,zmq")
    ap.add_argument("--spin-us", default="default",
                    help="hms-ffi subscribers' (and the blocking publisher's) spin budget; default 50 us")
    ap.add_argument("--quick", action="store_true", help="n=5000, 0.5 s latency rows")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    if a.quick:
        a.n, a.seconds = 5000, 0.5
    transports = a.transports.split(",")
    if "zmq" in transports:
        try:
            import zmq  # noqa: F401
        except ImportError:
            print("pyzmq not installed: skipping the zmq rows")
            transports.remove("zmq")
    rows = []
    for mode in ("throughput", "latency"):
        for k in (int(x) for x in a.subs.split(",")):
            for t in transports:
                r = run(t, mode, k, a.n, a.rate, a.seconds, a.spin_us)
                rows.append(r)
                print(json.dumps(r), file=sys.stderr)
    name = {"hms": "hms-ffi topic", "zmq": "pyzmq PUB/SUB ipc://"}
    print(f"\n### Fan-out, {SIZE}-byte messages, Python publisher -> Python subscriber processes\n")
    print("| transport | subscribers | msgs/s published | deliveries/s |")
    print("|---|---:|---:|---:|")
    for r in rows:
        if r["mode"] == "throughput":
            print(f"| {name[r['transport']]} | {r['subscribers']} | {r['msgs_per_s']:,.0f} | {r['deliveries_per_s']:,.0f} |")
    print(f"\n| transport | subscribers | latency p50 µs | p99 µs | at {a.rate} msgs/s |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        if r["mode"] == "latency":
            print(f"| {name[r['transport']]} | {r['subscribers']} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | "
                  f"{r['received_min']}/{r['sent']} received |")
    print(f"\n{platform.node()} · {os.cpu_count()} CPUs · {platform.platform()} · Python "
          f"{platform.python_version()} · {_dt.date.today()} · n={a.n}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
