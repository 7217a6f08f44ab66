"""Servers for the benchmarks, one per process.

    python bench/_bench_server.py hms SPIN_US SERVICE   # SPIN_US: "default" or microseconds (0 = never spin)
    python bench/_bench_server.py pipe FD               # FD: inherited end of a multiprocessing.Pipe()
    python bench/_bench_server.py zmq ENDPOINT          # REP socket bound to ENDPOINT (ipc://...)
    python bench/_bench_server.py pipe-sink FD          # one-way: counts messages (see serve_pipe_sink)
    python bench/_bench_server.py zmq-sink PULL_EP PUSH_EP  # one-way: PULL counts, PUSH reports

Each prints "ready" on stdout once it can take calls, then serves until killed (SIGTERM/SIGKILL) or,
for pipe/zmq, until the peer goes away. hms servers register in $HMS_FFI_RUNTIME_DIR.

The hms service has these functions:

    echo(x)     returns x (bytes stay raw; other values come back CBOR-encoded)
    count(x)    one-way sends (any payload) add 1 to a counter; a normal call without payload
                (x is None) returns the counter: the total number of messages handled so far
    ingest(x)   like count, but one-way sends arrive at a batch handler (svc.batch_handler): one
                Python call per run of messages instead of one per message
    noop(x)     does nothing (the receiving side's floor for one-way messages)
    items(n)    server stream: n raw 16-byte items
    ints(n)     server stream: the ints 0..n-1, CBOR-encoded (small ints: 1-5 bytes each)
"""
from __future__ import annotations

import itertools
import os
import signal
import sys
from pathlib import Path


def _ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def serve_hms(spin: str, service: str) -> None:
    try:
        import hms_ffi_native as hms
    except ImportError:  # built in place, not installed: the package lives next to bench/
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        import hms_ffi_native as hms

    spin_us = None if spin == "default" else float(spin)
    node = hms.Node(f"bench-{os.getpid()}", spin_us=spin_us, log_handler_errors=True)
    svc = node.service(service, version="1.0.0")

    @svc.function()
    def echo(x):  # bytes in -> bytes out (raw); any other value comes back CBOR-encoded
        return x

    total = 0

    @svc.function()
    def count(x):
        nonlocal total
        if x is None:  # c.call("count"): report; handled in ring order, so after every earlier send
            return total
        total += 1
        return None

    @svc.function()
    def noop(x):
        return None

    ingested = 0

    @svc.function()
    def ingest(x):  # normal call: the count; one-way calls arrive in runs at ingest_many
        return ingested

    @svc.batch_handler("ingest")
    def ingest_many(items):
        nonlocal ingested
        ingested += len(items)

    item16 = b"i" * 16

    @svc.function()
    def items(n):  # a generator handler serves a stream
        yield from itertools.repeat(item16, n)

    @svc.function()
    def ints(n):
        yield from range(n)

    _ready()
    try:
        node.serve()
    finally:
        node.close()


def serve_pipe(fd: int) -> None:
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    _ready()
    recv, send = conn.recv_bytes, conn.send_bytes
    try:
        while True:
            send(recv())
    except (EOFError, OSError):
        pass


def serve_pipe_sink(fd: int) -> None:
    """One-way: counts non-empty messages; an empty message asks for the total, sent back as ASCII."""
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    _ready()
    recv, send = conn.recv_bytes, conn.send_bytes
    n = 0
    try:
        while True:
            if recv():
                n += 1
            else:
                send(b"%d" % n)
    except (EOFError, OSError):
        pass


def serve_zmq_sink(pull_endpoint: str, push_endpoint: str) -> None:
    """One-way: a PULL socket counts non-empty messages; an empty message makes the PUSH socket send
    the total (ASCII) back. Messages of one PUSH peer arrive in order, so the total covers all earlier
    messages."""
    import zmq

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    for sock in (pull, push):
        sock.setsockopt(zmq.LINGER, 0)
    pull.bind(pull_endpoint)
    push.bind(push_endpoint)
    _ready()
    recv = pull.recv
    n = 0
    try:
        while True:
            if recv():
                n += 1
            else:
                push.send(b"%d" % n)
    finally:
        pull.close(0)
        push.close(0)
        ctx.term()


def serve_zmq(endpoint: str) -> None:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    _ready()
    recv, send = sock.recv, sock.send
    try:
        while True:
            send(recv(copy=True))
    finally:
        sock.close(0)
        ctx.term()


def main() -> None:
    # SIGTERM ends the process at once (default action); make Ctrl-C in the parent's terminal not
    # print tracebacks here, the parent cleans up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    kind = sys.argv[1]
    if kind == "hms":
        serve_hms(sys.argv[2], sys.argv[3])
    elif kind == "pipe":
        serve_pipe(int(sys.argv[2]))
    elif kind == "zmq":
        serve_zmq(sys.argv[2])
    elif kind == "pipe-sink":
        serve_pipe_sink(int(sys.argv[2]))
    elif kind == "zmq-sink":
        serve_zmq_sink(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown server kind {kind!r}")


if __name__ == "__main__":
    main()
