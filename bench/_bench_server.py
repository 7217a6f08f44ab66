"""Echo servers for the benchmarks, one per process.

    python bench/_bench_server.py hms SPIN_US SERVICE   # SPIN_US: "default" or microseconds (0 = never spin)
    python bench/_bench_server.py pipe FD               # FD: inherited end of a multiprocessing.Pipe()
    python bench/_bench_server.py zmq ENDPOINT          # REP socket bound to ENDPOINT (ipc://...)

Each prints "ready" on stdout once it can take calls, then serves until killed (SIGTERM/SIGKILL) or,
for pipe/zmq, until the peer goes away. hms servers register in $HMS_FFI_RUNTIME_DIR.
"""
from __future__ import annotations

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
    else:
        sys.exit(f"unknown server kind {kind!r}")


if __name__ == "__main__":
    main()
