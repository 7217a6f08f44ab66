"""The Go binding (bindings/go): go vet, go test, and the hms-go-peer program in Go->Python,
Python->Go and Go->Go pairs.

Needs the Go toolchain (cgo) and pkg-config. Without `go` the tests skip, unless HMS_REQUIRE_BINDINGS=1
(CI), where they fail. The library is found through `python -m hms_ffi_native --pkgconfig-dir` (the
same as `hms-ffi --pkgconfig-dir`), never through a path in the source tree.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hms_ffi_native as hms
from hms_ffi_native._native import ffi, lib

from _in_place import bogus_checks, in_place_checks
from conftest import PKG_PARENT, ServerProcess, child_env

ROOT = Path(__file__).resolve().parent.parent
GO_DIR = ROOT / "bindings" / "go"
VECTORS = ROOT / "tests" / "vectors" / "cbor.json"
REQUIRED = os.environ.get("HMS_REQUIRE_BINDINGS") == "1"
GO = shutil.which("go")

MISSING = None
if GO is None:
    MISSING = "the Go toolchain (`go`) is not on PATH: install Go >= 1.24 to test bindings/go"
elif shutil.which("pkg-config") is None:
    MISSING = "pkg-config is missing: the Go binding finds libhms_ffi through it"
if MISSING and not REQUIRED:
    pytest.skip(MISSING, allow_module_level=True)


@pytest.fixture(autouse=True)
def _toolchain():
    # Under HMS_REQUIRE_BINDINGS=1 (CI) a missing toolchain fails every test here, without stopping
    # the rest of the session the way an error at collection would.
    if MISSING:
        pytest.fail(f"HMS_REQUIRE_BINDINGS=1 but {MISSING}")


def go_env() -> dict:
    pc = subprocess.run([sys.executable, "-m", "hms_ffi_native", "--pkgconfig-dir"], capture_output=True,
                        text=True, check=True, env=child_env()).stdout.strip()
    env = child_env()
    env.update(
        PKG_CONFIG_PATH=pc + (os.pathsep + env["PKG_CONFIG_PATH"] if env.get("PKG_CONFIG_PATH") else ""),
        GOFLAGS="-mod=mod -buildvcs=false",  # no VCS stamping: CI checkouts may not satisfy git's ownership check
        CGO_ENABLED="1",
        # the Go tests start `python tests/_servers.py` with this interpreter and package
        HMS_GO_TEST_PYTHON=sys.executable,
        HMS_GO_TEST_PYTHONPATH=PKG_PARENT,
    )
    return env


def run_go(*args: str, timeout: float) -> subprocess.CompletedProcess:
    if MISSING:
        pytest.fail(f"HMS_REQUIRE_BINDINGS=1 but {MISSING}")
    r = subprocess.run([GO, *args], cwd=GO_DIR, env=go_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"go {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}"
    return r


@pytest.fixture(scope="module")
def peer(tmp_path_factory) -> Path:
    exe = tmp_path_factory.mktemp("go") / "hms-go-peer"
    run_go("build", "-o", str(exe), "./cmd/hms-go-peer", timeout=600)
    return exe


class GoPeer:
    """hms-go-peer serve SERVICE, stopped with SIGTERM (it must exit 0)."""

    def __init__(self, exe: Path, service: str) -> None:
        self.proc = subprocess.Popen([str(exe), "serve", service], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=child_env())
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"hms-go-peer serve {service} did not start: {line!r} {self.proc.stderr.read()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture
def go_server(peer, runtime_dir):
    started = []

    def start(service: str = "go.peer") -> GoPeer:
        p = GoPeer(peer, service)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)


def test_go_vet():
    run_go("vet", "./...", timeout=600)


def test_go_test(runtime_dir):
    # CBOR vectors, errors.Is for every code, panics, contexts, streams, pub/sub, Go<->Go and Go->Python.
    r = run_go("test", "-count=1", "-timeout", "300s", "./...", timeout=600)
    assert "ok" in r.stdout


def vectors() -> list:
    return json.loads(VECTORS.read_text())["vectors"]


def test_go_calls_python(peer, server_process):
    # py.echo decodes every vector with cbor2 and answers a CBOR caller in CBOR: identical bytes back.
    server_process("echo")
    r = subprocess.run([str(peer), "call", "py.echo", str(VECTORS)], capture_output=True, text=True,
                       env=child_env(), timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"ok {len(vectors())}", (r.returncode, r.stdout, r.stderr)


def raw_call(client, fn: str, data: bytes, ct: int):
    """Sends exact bytes with a content type and returns (status, content type, exact reply bytes)."""
    fid = client.functions[fn]
    resp = ffi.new("hms_payload_t *")
    err = ffi.new("hms_error_t *")
    st = lib.hms_call_bytes(client._ptr, fid, data, len(data), ct, resp, 5_000_000_000, err)
    out = ffi.buffer(resp.data, resp.len)[:] if resp.len else b""
    rct = resp.content_type
    lib.hms_payload_release(resp)
    return st, rct, out


def test_python_calls_go(go_server):
    p = go_server("go.peer")
    with hms.connect("go.peer", "^1") as c:
        for v in vectors():
            raw = bytes.fromhex(v["hex"])
            st, ct, out = raw_call(c, "echo", raw, lib.HMS_CT_CBOR)
            assert (st, ct, out.hex()) == (0, lib.HMS_CT_CBOR, v["hex"]), v["name"]
        # raw payloads come back unchanged, through the ordinary API too
        assert c.call("echo", b"\x00raw\xff") == b"\x00raw\xff"
        assert c.call("echo", {"a": [1, 2.5, None]}) == {"a": [1, 2.5, None]}
        with pytest.raises(hms.NotFound) as ei:
            c.call("fail", [5, "nope"])
        assert "nope" in str(ei.value)
        with pytest.raises(hms.PermissionDenied):
            c.call("fail", [7, "keep out"])
        assert list(c.stream("count_to", 5)) == [0, 1, 2, 3, 4]
    assert p.stop() == 0  # SIGTERM: a clean exit


def test_go_calls_go(peer, go_server):
    go_server("go.peer")
    r = subprocess.run([str(peer), "call", "go.peer", str(VECTORS)], capture_output=True, text=True,
                       env=child_env(), timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"ok {len(vectors())}", (r.stdout, r.stderr)


def test_go_bench_smoke(peer, go_server):
    go_server("go.bench")
    r = subprocess.run([str(peer), "bench", "go.bench", "2000"], capture_output=True, text=True,
                       env=child_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    p50, p99, rate = (int(x) for x in r.stdout.split())
    assert 0 < p50 <= p99 and rate > 0


# ------------------------------------------------------------------------------------------------
# Large Arrow / numpy payloads from Python read IN PLACE by the Go service (FnInPlace-style
# handlers + the binding's Arrow C Data Interface / ndarray decoders): values checked against
# pyarrow/numpy, and zero copy checked where it can be: the payload is larger than max_inline (so it
# travelled as an arena block), the column buffers the Go side read lie inside the request's
# address range, and that range is a read-only shared memfd mapping in the Go process.
def test_python_arrow_and_numpy_read_in_place_by_go(go_server):
    pytest.importorskip("pyarrow")
    p = go_server("go.arrays")
    with hms.connect("go.arrays", "^1") as c:
        in_place_checks(c)
        bogus_checks(c, raw_call)
    assert p.stop() == 0
