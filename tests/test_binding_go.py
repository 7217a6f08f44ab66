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
def _assert_in_place(rep: dict, client, addrs) -> None:
    lo, n = rep["req_addr"], rep["req_len"]
    assert n > client.max_inline, f"{n} bytes did not need the arena (max_inline {client.max_inline})"
    assert rep.get("held_addr", lo) == lo, "the decoder did not read the request where it lay"
    for a in addrs:
        assert lo <= a < lo + n, f"buffer at {a:#x} is outside the request [{lo:#x}, {lo + n:#x}): copied"
    perms, _, path = rep["mapping"].partition(" ")
    assert perms.startswith("r-") and perms.endswith("s") and "memfd:hms-ffi-arena" in path, rep["mapping"]


def _in_place_checks(client) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = 1_500_000  # 3 columns x 12 MiB
    rng = np.random.default_rng(5)
    t = pa.table({"x": rng.random(n), "y": pa.array(rng.random(n), mask=np.arange(n) % 7 == 0),
                  "z": np.arange(n, dtype=np.int64) - 10})
    rep = client.call("arrow_sum", t, timeout=30)
    assert (rep["kind"], rep["rows"], rep["batches"]) == ("Table", n, 1)
    cols = rep["columns"]
    assert cols["x"]["sum"] == pytest.approx(pc.sum(t["x"]).as_py(), rel=1e-9) and cols["x"]["nulls"] == 0
    assert cols["y"]["sum"] == pytest.approx(pc.sum(t["y"]).as_py(), rel=1e-9)
    assert cols["y"]["nulls"] == t["y"].null_count == len(range(0, n, 7))
    assert cols["z"] == {"sum": pc.sum(t["z"]).as_py(), "nulls": 0}
    assert len(rep["buffers"]) == 2
    _assert_in_place(rep, client, rep["buffers"])

    # Several record batches, sliced (offsets inside the children), still in place.
    t2 = pa.concat_tables([t.slice(5, 400_000), t.slice(700_000, 300_000)])
    rep = client.call("arrow_sum", t2, timeout=30)
    assert (rep["rows"], rep["batches"]) == (700_000, 2)
    assert rep["columns"]["x"]["sum"] == pytest.approx(pc.sum(t2["x"]).as_py(), rel=1e-9)
    assert rep["columns"]["y"]["nulls"] == t2["y"].null_count
    assert rep["columns"]["z"]["sum"] == pc.sum(t2["z"]).as_py()
    _assert_in_place(rep, client, rep["buffers"])

    # A numpy array (HMS_CT_NDARRAY), 16 MiB.
    a = rng.random(2_000_000)
    rep = client.call("ndarray_sum", a, timeout=30)
    assert rep["sum"] == pytest.approx(float(a.sum()), rel=1e-9)
    assert (rep["shape"], rep["dtype"]) == ([2_000_000], "<f8")
    _assert_in_place(rep, client, [rep["data_addr"], rep["data_addr"] + a.nbytes - 8])
    m = rng.random((1000, 700))
    rep = client.call("ndarray_sum", m, timeout=30)
    assert rep["shape"] == [1000, 700] and rep["sum"] == pytest.approx(float(m.sum()), rel=1e-9)

    # Kept past the handler (the binding holds the block), read by a later call.
    part = t.slice(3, 1_000_000)
    assert client.call("arrow_keep", part, timeout=30) == 1_000_000
    rep = client.call("arrow_kept", None, timeout=30)
    assert rep["columns"]["x"]["sum"] == pytest.approx(pc.sum(part["x"]).as_py(), rel=1e-9)
    assert rep["columns"]["y"]["nulls"] == part["y"].null_count
    assert rep["zero_copy"] is True and rep["mapping"].startswith("r--s")
    with pytest.raises(hms.FailedPrecondition):
        client.call("arrow_kept", None, timeout=10)

    # Small payloads travel inline in the ring: same results (the binding copies them once).
    small = pa.table({"x": [1.5, None, 2.5], "z": pa.array([1, 2, None], pa.int64())})
    rep = client.call("arrow_sum", small, timeout=10)
    assert rep["columns"] == {"x": {"sum": 4.0, "nulls": 1}, "z": {"sum": 3, "nulls": 1}}
    assert client.call("ndarray_sum", np.arange(10.0), timeout=10)["sum"] == 45.0

    # Arrow built by the binding, received by pyarrow.
    rb = client.call("arrow_make", 1000, timeout=10)
    assert isinstance(rb, pa.RecordBatch) and rb.schema.names == ["x", "y"]
    assert rb["x"].to_pylist() == [float(i) for i in range(1000)]
    assert rb["y"].to_pylist() == [None if i % 3 == 0 else 2 * i for i in range(1000)]


def _bogus_checks(client) -> None:
    """Malformed Arrow layouts and ndarray headers: INVALID_ARGUMENT, and the service keeps serving."""
    import struct

    import numpy as np
    import pyarrow as pa

    from hms_ffi_native import _arrow

    t = pa.table({"x": np.arange(50_000, dtype=np.float64)})
    good = bytearray(_arrow.encoded_size(t))
    _arrow.encode_into(t, good)
    meta_end = struct.unpack_from("<Q", good, 24)[0]
    cases = [bytes(64), b"\x00" * 100, bytes(good[:200]), b"HMSARRW1" + bytes(good[8:])[: len(good) // 2],
             np.random.default_rng(1).bytes(2 << 20)]
    for off in (0, 12, 24, 40, 56, 64, 72, 80, meta_end - 16):
        b = bytearray(good)
        b[off] ^= 0xFF
        cases.append(bytes(b))
    big = bytearray(good) + bytearray(1 << 20)  # past max_inline: through the arena
    struct.pack_into("<Q", big, 16, 1 << 40)      # total_len beyond the payload
    cases.append(bytes(big))
    for i, data in enumerate(cases):
        st, _, out = raw_call(client, "arrow_sum", data, lib.HMS_CT_ARROW)
        if st == 0:  # a flip the decoder does not depend on: the data must still read correctly
            import cbor2
            assert cbor2.loads(out)["columns"]["x"]["sum"] == float(np.arange(50_000).sum()), i
        else:
            assert st == lib.HMS_INVALID_ARGUMENT, (i, st, out)

    def nd(dtype: bytes, shape, strides, data: bytes, hdr=None, ndim=None, data_len=None) -> bytes:
        h = hdr or 64 * ((40 + 16 * len(shape) + 63) // 64)
        head = struct.pack("<4sHH16sQQ", b"HMND", h, len(shape) if ndim is None else ndim, dtype, h,
                           len(data) if data_len is None else data_len)
        head += struct.pack(f"<{len(shape)}q{len(strides)}q", *shape, *strides)
        return head.ljust(h, b"\0") + data

    d = np.arange(6.0).tobytes()
    assert nd(b"<f8", [2, 3], [24, 8], d)  # the shape of a valid one (sanity below)
    st, _, _ = raw_call(client, "ndarray_sum", nd(b"<f8", [2, 3], [24, 8], d), lib.HMS_CT_NDARRAY)
    assert st == 0
    for data in (nd(b"<f8", [2, 3], [32, 8], d), nd(b"<f8", [7], [-8], d), nd(b"<f8", [-1], [8], d),
                 nd(b"|O8", [1], [8], d[:8]), nd(b"<f8", [1 << 40, 1 << 40], [8, 8], d),
                 nd(b"<f8", [2], [1 << 62], d), nd(b"<f8", [6], [8], d, ndim=40), nd(b"<f8", [6], [8], d, hdr=40),
                 nd(b"<f8", [6], [8], d, data_len=1 << 40), b"XMND" + bytes(60), bytes(10),
                 nd(b"<f8", [300_000], [8], bytes(300_000 * 8 - 8))):
        st, _, out = raw_call(client, "ndarray_sum", data, lib.HMS_CT_NDARRAY)
        assert st == lib.HMS_INVALID_ARGUMENT, (st, out, data[:64])
    assert client.call("ndarray_sum", np.ones(10), timeout=10)["sum"] == 10.0  # still serving


def test_python_arrow_and_numpy_read_in_place_by_go(go_server):
    pytest.importorskip("pyarrow")
    p = go_server("go.arrays")
    with hms.connect("go.arrays", "^1") as c:
        _in_place_checks(c)
        _bogus_checks(c)
    assert p.stop() == 0
