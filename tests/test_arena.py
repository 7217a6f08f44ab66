"""The shared-memory arena: large payloads, loans (zero copy), numpy arrays, lifetimes across processes,
bad input, and no leaks over many transfers.

The server runs in another process: this file doubles as its script (`python test_arena.py serve`).
Connections use small rings (64 KiB: max inline payload 16 KiB - 64) so arena payloads stay small.
"""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import time

import pytest

import hms_ffi_native as hms

np = pytest.importorskip("numpy") if __name__ != "__main__" else __import__("numpy")

SERVICE = "py.arena"
RING = 64 * 1024


# ------------------------------------------------------------------------------------------ server
def serve() -> None:
    import signal

    quota = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    node = hms.Node("arena-server", arena_quota=quota)
    svc = node.service(SERVICE, "1.0.0")
    kept = []

    @svc.function()
    def echo(x):
        return x

    @svc.function()
    def keep(x):
        kept.append(x)  # a view of the caller's block, kept past the call
        return len(kept)

    @svc.function()
    def check_kept(_):
        return [[float(np.asarray(a, dtype=np.float64).sum()), bool(a.flags.writeable), list(a.shape)] for a in kept]

    @svc.function()
    def clear_kept(_):
        n = len(kept)
        kept.clear()
        gc.collect()
        return n

    @svc.function()
    def make(n, ctx):
        a = ctx.loan_array((n,), "float64")  # the reply is written in place: no copy
        a[:] = np.arange(n, dtype=np.float64)
        return a

    @svc.function()
    def make_private(n):
        return np.arange(n, dtype=np.float64)  # copied once into a reply block

    @svc.function()
    def make_raw(n, ctx):
        buf = ctx.loan(n)
        buf[:] = 7
        return buf

    @svc.function()
    def summary(x):
        return {"sum": float(x.sum()), "first": float(x.flat[0]), "last": float(x.flat[-1]),
                "writeable": bool(x.flags.writeable), "shape": list(x.shape), "dtype": x.dtype.str}

    @svc.function()
    def length(x):
        return len(x)

    @svc.function()
    def stats(_):
        return node.arena_stats()

    @svc.function()
    async def aecho(x):  # async handlers answer with hms_deferred_reply: large replies use the arena
        return x

    @svc.function()
    def chunks(n):  # a server stream of large arrays
        for i in range(3):
            yield np.full(n, float(i))

    signal.signal(signal.SIGTERM, lambda *a: node.stop())
    node.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        node.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve()
    sys.exit(0)


# ------------------------------------------------------------------------------------------ helpers
from conftest import child_env, wait_until  # noqa: E402


@pytest.fixture
def arena_server(runtime_dir):
    procs = []

    def start(quota: int = 0):
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", str(quota)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        line = p.stdout.readline().strip()
        if line != "ready":
            p.kill()
            raise RuntimeError(f"arena server did not start: {line!r} {p.stderr.read()}")
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


@pytest.fixture
def client(arena_server):
    arena_server()
    with hms.connect(SERVICE, ring_bytes=RING) as c:
        yield c


def run_child(code: str, timeout: float = 30) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ------------------------------------------------------------------------------------------ payloads
def test_large_bytes_use_the_arena_both_ways(client):
    assert client.max_inline == RING // 4 - 64
    assert client.max_message == hms._lib.HMS_ARENA_DEFAULT_QUOTA
    for n in (client.max_inline, client.max_inline + 1, 1 << 20, 3_000_001):
        data = os.urandom(n)
        assert client.call("echo", data, timeout=10) == data
        assert client.call("length", data, timeout=10) == n
    st = client.arena_stats()
    assert st["blocks_allocated"] == 6  # every payload above max_inline took exactly one block
    assert st["segments"] >= 1 and st["peer_segments_mapped"] >= 1  # the server's replies came by arena too
    assert wait_until(lambda: client.arena_stats()["blocks_outstanding"] == 0)


@pytest.mark.parametrize("dtype", ["float64", "float32", "int8", "uint16", "int64", "complex128", "bool",
                                   "<M8[ns]", ">i4", "S5", "U3"])
def test_ndarray_round_trip_dtypes(client, dtype):
    base = np.arange(5000) % 120
    a = base.astype(dtype) if dtype not in ("S5", "U3") else base.astype(str).astype(dtype)
    r = client.call("echo", a, timeout=10)
    assert r.dtype == a.dtype and r.shape == a.shape and (r == a).all()
    assert not r.flags.writeable


def test_ndarray_shapes_and_non_contiguous(client):
    big = np.arange(200 * 300, dtype=np.float64).reshape(200, 300)
    cases = [np.array(3.5), np.zeros((0, 7)), np.arange(10), big, big.T, big[::3, 1::7],
             np.asfortranarray(big), big[:, ::-1], np.arange(24).reshape(2, 3, 4)[:, ::2, ::-1]]
    for a in cases:
        r = client.call("echo", a, timeout=10)
        assert r.shape == a.shape and r.dtype == a.dtype and np.array_equal(r, a)
        assert r.flags.c_contiguous  # non-contiguous arrays are copied contiguous into the block
        if a.size:
            s = client.call("summary", a, timeout=10)
            assert s["sum"] == float(a.sum()) and s["first"] == float(a.flat[0]) and s["last"] == float(a.flat[-1])
            assert s["writeable"] is False and s["shape"] == list(a.shape)


def test_loans_send_without_a_copy(client):
    before = client.arena_stats()["blocks_allocated"]
    a = client.loan_array((1 << 17,), "float64")
    assert a.flags.writeable
    a[:] = 2.0
    s = client.call("summary", a, timeout=10)
    assert s == {"sum": 2.0 * (1 << 17), "first": 2.0, "last": 2.0, "writeable": False, "shape": [1 << 17],
                 "dtype": "<f8"}
    assert client.arena_stats()["blocks_allocated"] == before + 1  # the loan itself: no copy-in block
    with client.loan(100_000) as buf:
        buf[:] = 9
        assert client.call("echo", buf, timeout=10) == b"\t" * 100_000
    # the server replies from its own loans
    r = client.call("make", 300_000, timeout=10)
    assert r.shape == (300_000,) and r[0] == 0 and r[-1] == 299_999 and not r.flags.writeable
    assert client.call("make_raw", 50_000, timeout=10) == b"\x07" * 50_000
    assert np.array_equal(client.call("make_private", 100_000, timeout=10), np.arange(100_000.0))


def test_arrays_through_async_handlers_streams_and_batches(client):
    a = np.arange(100_000, dtype=np.float32)
    r = client.call("aecho", a, timeout=10)
    assert r.dtype == np.float32 and np.array_equal(r, a) and not r.flags.writeable
    items = list(client.stream("chunks", 50_000, timeout=10))
    assert [float(x[0]) for x in items] == [0.0, 1.0, 2.0] and all(x.shape == (50_000,) for x in items)
    out = client.batch([("echo", a), ("echo", b"x" * 100_000), ("length", a)], timeout=10)
    assert np.array_equal(out[0], a) and out[1] == b"x" * 100_000 and out[2] == 100_000
    assert wait_until(lambda: client.arena_stats()["blocks_outstanding"] == 0)


def test_received_view_stays_valid_until_released(client):
    r = client.call("make", 100_000, timeout=10)
    assert client.arena_stats()["peer_blocks_held"] == 1
    for _ in range(20):  # the server reuses its arena meanwhile; our view must not change
        client.call("make", 100_000, timeout=10)
    assert r[12345] == 12345.0 and r.sum() == np.arange(100_000.0).sum()
    view = r[10:20]
    del r
    gc.collect()
    assert client.arena_stats()["peer_blocks_held"] == 1  # the slice keeps the block
    assert view[0] == 10.0
    del view
    gc.collect()
    assert client.arena_stats()["peer_blocks_held"] == 0
    assert wait_until(lambda: client.call("stats", None, timeout=5)["blocks_outstanding"] == 0)


# ------------------------------------------------------------------------------------------ lifetimes
def test_receiver_keeps_data_after_the_call_returned(client):
    a = np.arange(200_000, dtype=np.float64)
    client.call("keep", a, timeout=10)
    held = client.arena_stats()
    assert held["blocks_outstanding"] == 1  # the server holds our block
    for _ in range(10):  # our arena is reused for other payloads meanwhile
        client.call("echo", np.full(200_000, -1.0), timeout=10)
    assert client.call("check_kept", None, timeout=5) == [[float(a.sum()), False, [200_000]]]
    assert client.call("clear_kept", None, timeout=5) == 1
    assert wait_until(lambda: client.arena_stats()["blocks_outstanding"] == 0)


def test_sender_dies_while_the_receiver_holds_a_view(arena_server):
    server = arena_server()
    child = run_child(f"""
        import numpy as np, hms_ffi_native as hms, os, sys
        c = hms.connect({SERVICE!r}, ring_bytes={RING})
        c.call("keep", np.arange(300_000, dtype=np.float64), timeout=10)
        print("sent", flush=True)
        os.kill(os.getpid(), 9)  # no cleanup: the process just vanishes
    """)
    assert child.stdout.readline().strip() == "sent"
    child.wait(10)
    assert child.returncode == -9
    with hms.connect(SERVICE, ring_bytes=RING) as c:
        expected = float(np.arange(300_000, dtype=np.float64).sum())
        assert c.call("check_kept", None, timeout=5) == [[expected, False, [300_000]]]
        assert c.call("clear_kept", None, timeout=5) == 1
        assert c.call("check_kept", None, timeout=5) == []
    assert server.poll() is None


def test_receiver_dies_while_holding_blocks(arena_server):
    server = arena_server()
    child = run_child(f"""
        import hms_ffi_native as hms, os, time
        c = hms.connect({SERVICE!r}, ring_bytes={RING})
        held = [c.call("make", 100_000, timeout=10) for _ in range(5)]
        print("holding", flush=True)
        time.sleep(60)
    """)
    assert child.stdout.readline().strip() == "holding"
    with hms.connect(SERVICE, ring_bytes=RING) as c:
        st = c.call("stats", None, timeout=5)
        assert st["blocks_outstanding"] == 5  # the child's views pin 5 of the server's blocks
        child.kill()
        child.wait(10)
        # the server notices the hang-up, drops the connection and reclaims everything it held
        assert wait_until(lambda: c.call("stats", None, timeout=5)["blocks_outstanding"] == 0, 5)
        assert c.call("stats", None, timeout=5)["peer_blocks_held"] == 0
        r = c.call("make", 100_000, timeout=10)
        assert r[-1] == 99_999


def test_view_outlives_a_closed_client_and_a_dead_server(arena_server):
    server = arena_server()
    c = hms.connect(SERVICE, ring_bytes=RING)
    r = c.call("make", 200_000, timeout=10)
    raw = c.call("echo", os.urandom(10), timeout=10)
    c.close()
    assert r[-1] == 199_999  # our mapping outlives the connection
    server.kill()
    server.wait(10)
    assert r.sum() == np.arange(200_000.0).sum()  # and the server process
    del r
    gc.collect()
    assert len(raw) == 10


def test_handler_keeps_request_in_server_node_threads(node):
    # in-process: a handler that keeps its (zero-copy) request past the call, then the client closes
    svc = node.service("py.keep", "1.0.0")
    kept = []

    @svc.function()
    def keep(x):
        kept.append(x)
        return True

    node.start()
    c = node.connect("py.keep", ring_bytes=RING)
    a = np.arange(50_000, dtype=np.int64)
    assert c.call("keep", a, timeout=5) is True
    c.close()
    assert kept[0].sum() == a.sum() and not kept[0].flags.writeable
    kept.clear()
    gc.collect()


# ------------------------------------------------------------------------------------------ bad input
def test_loan_larger_than_the_quota(client):
    client.arena_quota = 1 << 20
    assert client.max_message == 1 << 20
    with pytest.raises(hms.ResourceExhausted, match="arena quota"):
        client.loan(2 << 20)
    with pytest.raises(hms.ResourceExhausted, match="max message"):
        client.call("echo", b"x" * (2 << 20), timeout=5)
    with pytest.raises(hms.ResourceExhausted):
        client.loan_array((300_000,), "float64")
    assert client.call("echo", b"ok", timeout=5) == b"ok"  # the connection stays usable
    assert client.call("length", b"y" * 500_000, timeout=5) == 500_000


def test_quota_counts_blocks_the_peer_holds(client):
    client.arena_quota = 1 << 20
    client.call("keep", np.zeros(100_000), timeout=5)  # 800 KB held by the server
    with pytest.raises(hms.ResourceExhausted, match="held by unreleased blocks"):
        client.call("echo", np.zeros(50_000), timeout=5)
    client.call("clear_kept", None, timeout=5)
    assert wait_until(lambda: client.arena_stats()["blocks_outstanding"] == 0)
    assert client.call("echo", np.zeros(50_000), timeout=5).shape == (50_000,)


def test_release_twice_and_send_twice(client):
    loan = client.loan(1000)
    loan.release()
    with pytest.raises(hms.FailedPrecondition, match="already released"):
        loan.release()
    a = client.loan_array(10_000)
    a[:] = 1
    client.call("echo", a, timeout=5)
    # the same array again is no longer a loan: it is copied (one copy), never sent twice
    assert client.call("summary", a, timeout=5)["sum"] == 10_000.0
    assert wait_until(lambda: client.arena_stats()["blocks_outstanding"] == 0)
    assert client.call("echo", b"ok", timeout=5) == b"ok"


def test_received_payload_release_twice_is_a_clear_error(client):
    from hms_ffi_native._ndarray import ReceivedPayload, decode

    resp = hms._ffi.new("hms_payload_t *")
    err = hms._ffi.new("hms_error_t *")
    st = hms._lib.hms_call_bytes(client._ptr, client.functions["make"], b"\x19\x27\x10", 3, 2, resp,
                                 5_000_000_000, err)  # make(10000), CBOR
    assert st == 0 and resp.content_type == 6
    rp = ReceivedPayload(resp)
    arr = decode(rp.view)
    rp.release()  # the array still holds the block: nothing dangles
    with pytest.raises(hms.FailedPrecondition, match="already released"):
        rp.release()
    assert client.arena_stats()["peer_blocks_held"] == 1
    assert arr[-1] == 9999
    del arr, rp
    gc.collect()
    assert client.arena_stats()["peer_blocks_held"] == 0
    assert wait_until(lambda: client.call("stats", None, timeout=5)["blocks_outstanding"] == 0)


def test_writing_to_a_received_view_fails(client):
    r = client.call("make", 1000, timeout=5)
    with pytest.raises(ValueError, match="read-only"):
        r[0] = 1.0
    with pytest.raises(ValueError):
        r.flags.writeable = True
    big = client.call("echo", os.urandom(100_000), timeout=5)
    assert isinstance(big, bytes)  # raw payloads arrive as bytes (copied out of the block)
    assert client.call("echo", b"ok", timeout=5) == b"ok"


def test_object_dtype_is_refused(client):
    with pytest.raises(hms.InvalidArgument, match="object"):
        client.call("echo", np.array([1, "a", None], dtype=object), timeout=5)
    with pytest.raises(hms.InvalidArgument, match="object"):
        client.loan_array((3,), object)
    with pytest.raises(hms.InvalidArgument):
        client.call("echo", np.zeros(3, dtype=[("a", "i4"), ("b", "O")]), timeout=5)
    assert client.call("echo", b"ok", timeout=5) == b"ok"


def test_hostile_ndarray_headers_are_refused():
    from hms_ffi_native import _ndarray

    good = _ndarray.encode_bytes(np.arange(10, dtype=np.int32))
    assert (_ndarray.decode(good) == np.arange(10)).all()
    bad = [good[:20], b"XXXX" + good[4:], good[:6] + b"\x40\x00" + good[8:],  # magic, ndim 64
           good[:8] + b"|O8".ljust(16, b"\0") + good[24:],  # object dtype
           good[:8] + b"<zz".ljust(16, b"\0") + good[24:],  # unknown dtype
           good[:-4],  # data shorter than the header says
           good[:40] + (10 ** 9).to_bytes(8, "little", signed=True) + good[48:],  # shape beyond the data
           good[:48] + (1 << 40).to_bytes(8, "little", signed=True) + good[56:],  # strides beyond the data
           good[:40] + (-1).to_bytes(8, "little", signed=True) + good[48:]]  # negative dimension
    for b in bad:
        with pytest.raises(hms.InvalidArgument):
            _ndarray.decode(b)


# ------------------------------------------------------------------------------------------ leaks
def test_no_leak_over_100k_transfers(client):
    """Counts outstanding blocks on both sides and this process's RSS over 100,000 arena transfers."""
    a = np.arange(4096, dtype=np.float64)  # 32 KiB: above max_inline, so every call uses the arena twice
    assert a.nbytes > client.max_inline
    for _ in range(2000):  # warm up allocators and caches before measuring
        client.call("echo", a, timeout=10)
    gc.collect()
    rss0 = rss_kib()
    # Each echo is two arena transfers (request block, reply block): 50,000 calls = 100,000 transfers.
    n = int(os.environ.get("HMS_ARENA_LEAK_CALLS", "50000"))
    t0 = time.perf_counter()
    s = 0.0
    for i in range(n):
        r = client.call("echo", a, timeout=10)
        s += r[-1]
    dt = time.perf_counter() - t0
    del r
    gc.collect()
    assert s == n * 4095.0
    st = client.arena_stats()
    assert st["peer_blocks_held"] == 0
    assert wait_until(lambda: client.arena_stats()["blocks_outstanding"] == 0)
    server = client.call("stats", None, timeout=5)
    assert server["blocks_outstanding"] == 0 and server["peer_blocks_held"] == 0
    assert st["segments"] == 1 and server["segments"] == 1  # blocks were reused, never a new segment
    assert st["blocks_allocated"] >= n and server["blocks_allocated"] >= n
    grew = rss_kib() - rss0
    assert grew < 8 * 1024, f"RSS grew by {grew} KiB over {2 * n} transfers"
    print(f"{2 * n} arena transfers in {dt:.2f} s ({dt / n * 1e6:.1f} us per round trip), RSS +{grew} KiB")
