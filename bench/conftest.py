"""Fixtures for the pytest-benchmark suite (run with `pytest bench/`; the default test run skips it).

A fresh HMS_FFI_RUNTIME_DIR is set for the whole session, so benchmarks never see other services.
Servers are Python echo processes (bench/_bench_server.py) started once per module and killed at the end.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import compare  # noqa: E402  (also makes hms_ffi_native importable when built in place)
from compare import hms  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def bench_runtime_dir():
    d = tempfile.mkdtemp(prefix="hmsb-", dir="/tmp")  # short: Unix socket paths max 107 bytes
    old = os.environ.get("HMS_FFI_RUNTIME_DIR")
    os.environ["HMS_FFI_RUNTIME_DIR"] = d
    try:
        yield d
    finally:
        if old is None:
            os.environ.pop("HMS_FFI_RUNTIME_DIR", None)
        else:
            os.environ["HMS_FFI_RUNTIME_DIR"] = old
        compare.cleanup()  # any server a failed fixture left behind
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def hms_server(bench_runtime_dir):
    """Factory: ``hms_server(spin_us=None)`` starts a Python echo server process (function ``echo``)
    and returns its service name; every server started is killed when the module finishes."""
    started = []

    def start(spin_us=None) -> str:
        service = f"bench.echo{len(started)}.{os.getpid()}"
        spin = "default" if spin_us is None else str(spin_us)
        started.append(compare.start_hms_server(bench_runtime_dir, spin, service))
        return service

    yield start
    for proc in started:
        compare.stop_child(proc)


@pytest.fixture(scope="module")
def hms_client(hms_server, bench_runtime_dir):
    """Factory: ``hms_client(spin_us=None)`` starts a server with that spin and returns a client that
    uses the same spin (None = default 50 us, 0 = never spin)."""
    nodes = []

    def make(spin_us=None) -> "hms.Client":
        service = hms_server(spin_us)
        node = hms.Node(f"bench-client-{len(nodes)}", runtime_dir=bench_runtime_dir, spin_us=spin_us)
        nodes.append(node)
        return node.connect(service, "^1", timeout=10.0, spin_us=spin_us)

    yield make
    for node in nodes:
        node.close()
