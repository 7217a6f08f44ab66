"""Soak test (issue 6, item 7): 16 client processes against 3 server processes for HMS_SOAK_SECONDS
(default 30 s, sized for CI on 2 cores; 120+ on demand: HMS_SOAK_SECONDS=300 pytest tests/test_soak.py -s).

Each server process serves soak.svc<i> (tests/_servers.py's echo service) and publishes on soak.tick.<i>
every 5 ms. Each client process connects to every service and loops over mixed patterns: sync calls
(timed), call_async, batches, one-way sends, server streams, a deliberately failing call, and receives
from a soak.* subscription. Measured after a warm-up (a fifth of the run, at least 3 s) and at the end:
private RSS (RssAnon: the rings and arena are shared memfd pages that become resident as they are first
used) and descriptor counts of every server and client (from /proc) must stay flat — descriptors within
2, RSS within max(8 MiB, 15 %). The p50/p99 latency of the sync calls and the throughput are
printed (pytest -s). Any error other than the deliberately provoked one fails the test.

`python tests/test_soak.py client INDEX SECONDS WARMUP OUT.json` is the client process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

SERVERS = 3
CLIENTS = 16
HERE = Path(__file__).resolve().parent


def _rss_kib(pid) -> int:
    """Private (anonymous) resident memory. Shared memory is left out on purpose: the rings (1 MiB per
    direction per connection) and the arena are memfd pages that become resident as the heads first go
    round, which looks like growth for the first minutes of a run without being one."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return -1


def _fds(pid) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---------------------------------------------------------------- the client process
def client_main(index: int, seconds: float, warmup: float, out: str) -> None:
    import hms_ffi_native as hms

    node = hms.Node(f"soak-client-{index}")
    clients = [hms.connect(f"soak.svc{i}", "^1", timeout=5) for i in range(SERVERS)]
    sub = node.subscribe("soak.*")
    lat = []
    counts = {"sync": 0, "async": 0, "batch": 0, "oneway": 0, "stream_items": 0, "provoked": 0, "events": 0}
    errors = []
    sample = {}
    t0 = time.monotonic()
    end = t0 + seconds
    i = 0
    payload = {"client": index, "blob": b"x" * 200}
    while True:
        now = time.monotonic()
        if not sample and now - t0 >= warmup:
            sample["start"] = {"rss": _rss_kib("self"), "fds": _fds("self"), "t": now}
            lat.clear()  # latency of the steady state only
            Path(out + ".warm").write_text(repr(end))  # the parent samples the servers once all are warm
        if now >= end:
            break
        cl = clients[i % SERVERS]
        try:
            k = i % 8
            if k in (0, 1, 2):
                t = time.perf_counter_ns()
                r = cl.call("echo", payload, timeout=5)
                lat.append(time.perf_counter_ns() - t)
                assert r == payload, r
                counts["sync"] += 1
            elif k == 3:
                futs = [cl.call_async("echo", j, timeout=5) for j in range(4)]
                assert [f.result(5) for f in futs] == list(range(4))
                counts["async"] += 4
            elif k == 4:
                assert cl.batch([("echo", j) for j in range(8)], timeout=5) == list(range(8))
                counts["batch"] += 8
            elif k == 5:
                cl.send("count", None)
                counts["oneway"] += 1
            elif k == 6:
                items = list(cl.stream("count_to", 16, timeout=5))
                assert items == list(range(16)), items
                counts["stream_items"] += 16
            else:
                try:
                    cl.call("fail", [9, "deliberate"], timeout=5)
                    errors.append("the deliberately failing call succeeded")
                except hms.FailedPrecondition:
                    counts["provoked"] += 1
            for m in sub.recv_many(256, timeout=0):
                counts["events"] += 1
        except Exception as e:  # noqa: BLE001 - every unexpected error is reported, not raised
            errors.append(f"{type(e).__name__}: {e}")
            if len(errors) > 20:
                break
        i += 1
    sample["end"] = {"rss": _rss_kib("self"), "fds": _fds("self"), "t": time.monotonic()}
    lat.sort()
    res = {"counts": counts, "errors": errors, "sample": sample, "lat_ns": lat[:: max(1, len(lat) // 5000)],
           "n_lat": len(lat)}
    sub.close()
    for cl in clients:
        cl.close()
    node.close()
    Path(out).write_text(json.dumps(res))


PUBLISHER = r"""
import sys, threading, time
import hms_ffi_native as hms
node = hms.Node("soak-pub-%s" % sys.argv[1])
pub = node.publisher("soak.tick.%s" % sys.argv[1])
stop = threading.Event()
def run():
    n = 0
    while not stop.wait(0.005):
        pub.publish({"n": n}); n += 1
t = threading.Thread(target=run, daemon=True); t.start()
print("ready", flush=True)
sys.stdin.read()
stop.set(); t.join(); pub.close(); node.close()
"""


# ---------------------------------------------------------------- the test
def test_soak(runtime_dir, tmp_path):
    from conftest import ServerProcess, child_env

    seconds = float(os.environ.get("HMS_SOAK_SECONDS", "30"))
    warmup = max(3.0, seconds / 5)
    servers = [ServerProcess("named", f"soak.svc{i}", "1.0.0") for i in range(SERVERS)]
    pubs = []
    clients = []
    try:
        for i in range(SERVERS):
            p = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(i)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=child_env())
            assert p.stdout.readline().strip() == "ready"
            pubs.append(p)
        outs = [tmp_path / f"client{i}.json" for i in range(CLIENTS)]
        t_start = time.monotonic()
        for i in range(CLIENTS):
            clients.append(subprocess.Popen([sys.executable, str(Path(__file__)), "client", str(i), str(seconds),
                                             str(warmup), str(outs[i])], stderr=subprocess.PIPE, text=True,
                                            env=child_env()))
        warm = [Path(str(o) + ".warm") for o in outs]
        limit = time.monotonic() + warmup + 120
        while not all(w.exists() for w in warm):
            assert time.monotonic() < limit, "the clients did not all start within 2 minutes"
            assert all(c.poll() is None for c in clients), "a client ended before its warm-up was over"
            time.sleep(0.1)
        time.sleep(0.2)
        srv_start = {sp.pid: (_rss_kib(sp.pid), _fds(sp.pid)) for sp in servers}
        # the end sample while every client is still connected (each loop ends at the time it wrote)
        first_end = min(float(w.read_text()) for w in warm)
        assert first_end - time.monotonic() > 2, "too little steady state: raise HMS_SOAK_SECONDS"
        time.sleep(max(0.0, first_end - 0.5 - time.monotonic()))
        srv_end = {sp.pid: (_rss_kib(sp.pid), _fds(sp.pid)) for sp in servers}
        assert all(c.poll() is None for c in clients), "a client ended early"
        for c in clients:
            try:
                c.wait(seconds + 120)
            except subprocess.TimeoutExpired:
                c.kill()
        elapsed = time.monotonic() - t_start
        for i, c in enumerate(clients):
            assert c.returncode == 0, f"client {i} exited with {c.returncode}: {c.stderr.read()[-3000:]}"
        results = [json.loads(o.read_text()) for o in outs]
        assert all(sp.alive() for sp in servers), "a server died during the soak"
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
        for p in pubs:
            if p.poll() is None:
                p.stdin.close()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        for sp in servers:
            sp.kill()

    errors = [e for r in results for e in r["errors"]]
    assert not errors, f"{len(errors)} unexpected errors, e.g. {errors[:5]}"
    totals = {k: sum(r["counts"][k] for r in results) for k in results[0]["counts"]}
    assert totals["provoked"] > 0 and totals["stream_items"] > 0 and totals["events"] > 0, totals

    def flat(kind, start, end):
        rss0, fd0 = start
        rss1, fd1 = end
        assert abs(fd1 - fd0) <= 2, f"{kind}: descriptors went from {fd0} to {fd1}"
        assert rss1 - rss0 <= max(8 * 1024, rss0 * 0.15), f"{kind}: RSS grew from {rss0} KiB to {rss1} KiB"

    for pid in srv_start:
        flat(f"server {pid}", srv_start[pid], srv_end[pid])
    for i, r in enumerate(results):
        s = r["sample"]
        flat(f"client {i}", (s["start"]["rss"], s["start"]["fds"]), (s["end"]["rss"], s["end"]["fds"]))

    lat = sorted(x for r in results for x in r["lat_ns"])
    p50 = lat[len(lat) // 2] / 1e3
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e3
    steady = min(r["sample"]["end"]["t"] - r["sample"]["start"]["t"] for r in results)
    ops = totals["sync"] + totals["async"] + totals["batch"] + totals["oneway"] + totals["provoked"]
    rss_growth = max(r["sample"]["end"]["rss"] - r["sample"]["start"]["rss"] for r in results)
    srv_growth = max(srv_end[p][0] - srv_start[p][0] for p in srv_start)
    print(f"\nsoak: {CLIENTS} clients x {SERVERS} servers, {seconds:.0f} s ({elapsed:.1f} s wall, {os.cpu_count()} cpus): "
          f"{ops} calls ({ops / seconds:.0f}/s), {totals['stream_items']} stream items, {totals['events']} events; "
          f"sync echo p50 {p50:.0f} us, p99 {p99:.0f} us (n={sum(r['n_lat'] for r in results)} after warm-up); "
          f"max RSS growth client {rss_growth} KiB, server {srv_growth} KiB; provoked errors {totals['provoked']}")


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "client":
    client_main(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
