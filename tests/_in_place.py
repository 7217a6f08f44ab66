"""Checks shared by the Go and Rust binding tests: large Arrow/numpy payloads from Python read in place
by the binding's service (its hms-*-peer `arrow_sum`, `ndarray_sum`, `arrow_keep`/`arrow_kept`,
`arrow_make`), and bogus layouts refused with INVALID_ARGUMENT while the service keeps serving.
`raw_call(client, fn, data, content_type)` is the calling test file's (status, content type, bytes)."""
from __future__ import annotations

import pytest

import hms_ffi_native as hms
from hms_ffi_native._native import lib


def _assert_in_place(rep: dict, client, addrs) -> None:
    lo, n = rep["req_addr"], rep["req_len"]
    assert n > client.max_inline, f"{n} bytes did not need the arena (max_inline {client.max_inline})"
    assert rep.get("held_addr", lo) == lo, "the decoder did not read the request where it lay"
    for a in addrs:
        assert lo <= a < lo + n, f"buffer at {a:#x} is outside the request [{lo:#x}, {lo + n:#x}): copied"
    perms, _, path = rep["mapping"].partition(" ")
    assert perms.startswith("r-") and perms.endswith("s") and "memfd:hms-ffi-arena" in path, rep["mapping"]


def in_place_checks(client) -> None:
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


def bogus_checks(client, raw_call) -> None:
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
