"""Many clients, threads and processes at once against one service."""
from __future__ import annotations

import subprocess
import sys
import threading

import hms_ffi_native as hms

from conftest import child_env

CLIENT = r"""
import sys, threading, hms_ffi_native as hms
threads, calls = int(sys.argv[1]), int(sys.argv[2])
c = hms.connect("py.echo", "^1")          # one client shared by all threads
errors = []
def work(t):
    for i in range(calls):
        v = {"t": t, "i": i, "p": "x" * (i % 300)}
        try:
            if c.call("echo", v, timeout=10) != v:
                errors.append(f"mismatch {t} {i}")
        except Exception as e:
            errors.append(repr(e))
ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
print(len(errors), errors[:3])
"""


def test_8_threads_x_2_processes_share_one_client_each(server_process):
    server_process("echo")
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT, "8", "1500"], stdout=subprocess.PIPE, text=True,
                              env=child_env()) for _ in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        assert out.startswith("0 "), out


def test_threads_with_own_clients_and_mixed_deadlines(server_process):
    server_process("echo")
    errors = []
    shared = hms.connect("py.echo")

    def fast(k):
        c = hms.connect("py.echo") if k % 2 else shared
        for i in range(500):
            if c.call("echo", [k, i], timeout=10) != [k, i]:
                errors.append((k, i))

    def slow():
        for _ in range(5):
            try:
                shared.call("sleep", 0.05, timeout=0.01)
                errors.append("slow call did not time out")
            except hms.DeadlineExceeded:
                pass

    ts = [threading.Thread(target=fast, args=(k,)) for k in range(6)] + [threading.Thread(target=slow)]
    [t.start() for t in ts]
    [t.join(60) for t in ts]
    assert errors == []
    assert shared.call("echo", "still fine", timeout=5) == "still fine"


def test_several_services_per_node_and_many_clients(node):
    a = node.service("multi.a", "1.0.0")
    b = node.service("multi.b", "3.1.4")
    a.add_function("who", lambda _x: "a")
    b.add_function("who", lambda _x: "b")
    node.start()
    clients = [node.connect("multi.a") for _ in range(20)] + [node.connect("multi.b") for _ in range(20)]
    try:
        for _ in range(3):
            for i, c in enumerate(clients):
                assert c.call("who", None, timeout=5) == ("a" if i < 20 else "b")
    finally:
        for c in clients:
            c.close()


def test_pipelined_callers_fill_the_ring(server_process):
    # More concurrent requests than fit in a small ring at once: senders wait for space, none is lost.
    server_process("echo")
    c = hms.connect("py.echo", ring_bytes=16384)
    errors = []
    payload = b"p" * (c.max_inline - 10)

    def work():
        for _ in range(200):
            if c.call("echo", payload, timeout=10) != payload:
                errors.append(1)

    ts = [threading.Thread(target=work) for _ in range(8)]
    [t.start() for t in ts]
    [t.join(60) for t in ts]
    assert not errors
    c.close()
