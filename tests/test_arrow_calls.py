"""Arrow data as call arguments and replies: pyarrow objects (and PyCapsule producers such as polars)
cross as Arrow data (csrc/arrow.c layout), in an arena block when large, and arrive as pyarrow objects
backed by that shared memory."""
from __future__ import annotations

import pytest

pa = pytest.importorskip("pyarrow")
pc = pytest.importorskip("pyarrow.compute")
np = pytest.importorskip("numpy")

import hms_ffi_native as hms  # noqa: E402
from hms_ffi_native._codec import CT_ARROW, encode  # noqa: E402
from hms_ffi_native._native import ffi, lib  # noqa: E402


@pytest.fixture
def echo(server_process):
    sp = server_process("echo")
    c = hms.connect("py.echo")
    c.server = sp
    yield c
    c.close()


def table(rows: int) -> "pa.Table":
    rng = np.random.default_rng(7)
    return pa.table({
        "x": rng.random(rows),
        "id": pa.array(np.arange(rows, dtype=np.int64)),
        "name": pa.array([f"n{i % 97}" if i % 13 else None for i in range(rows)]),
        "tags": pa.array([[i % 3, i % 5] for i in range(rows)], type=pa.list_(pa.int32())),
        "cat": pa.array([["a", "b", "c"][i % 3] for i in range(rows)]).dictionary_encode(),
    })


@pytest.mark.parametrize("rows", [10, 200_000])  # inline in the ring / an arena block
def test_table_round_trip_and_the_server_sees_a_table(echo, rows):
    t = table(rows)
    info = echo.call("arrow_info", t, timeout=30)
    assert info["type"] == "Table" and info["rows"] == rows
    assert abs(info["sums"]["x"] - float(pc.sum(t.column("x")).as_py())) < 1e-6 * rows
    back = echo.call("echo", t, timeout=30)
    assert isinstance(back, pa.Table) and back.equals(t)


def test_every_kind_comes_back_as_itself(echo):
    t = table(1000)
    batch = t.combine_chunks().to_batches()[0]
    chunked = pa.chunked_array([pa.array([1, 2, None]), pa.array([4])])
    arr = pa.array([1.5, None, 3.25])
    for obj, cls in ((batch, pa.RecordBatch), (chunked, pa.ChunkedArray), (arr, pa.Array), (t, pa.Table)):
        back = echo.call("echo", obj, timeout=10)
        assert isinstance(back, cls) and back.equals(obj), cls


def test_large_reply_is_a_view_of_shared_memory_that_outlives_the_server(echo):
    t = table(300_000)
    before = echo.arena_stats()["blocks_outstanding"]
    back = echo.call("echo", t, timeout=30)
    assert back.equals(t)
    echo.server.kill(9)
    # the server is gone; its block stays mapped while we hold the table
    assert back.column("x").to_numpy()[-1] == t.column("x").to_numpy()[-1]
    assert back.column("name")[13].as_py() is None and back.column("name")[14].as_py() == "n14"
    del back
    assert echo.arena_stats()["blocks_outstanding"] <= before + 1


def test_polars_dataframe_goes_as_arrow(echo):
    pl = pytest.importorskip("polars")
    df = pl.DataFrame({"x": [1.0, 2.0, 3.5], "s": ["a", None, "c"]})
    info = echo.call("arrow_info", df, timeout=10)
    assert info["type"] == "Table" and info["rows"] == 3 and info["sums"]["x"] == 6.5
    back = echo.call("echo", df, timeout=10)
    assert pl.from_arrow(back).equals(df)


def test_a_bogus_arrow_payload_is_refused_and_the_connection_lives(echo):
    data, ct = encode(table(10))
    assert ct == CT_ARROW
    bad = bytearray(data)
    bad[70:90] = b"\xff" * 20  # inside the metadata section
    fid = echo.functions["arrow_info"]
    resp = ffi.new("hms_payload_t *")
    err = ffi.new("hms_error_t *")
    for payload in (bytes(bad), data[:50], b"\x00" * 64):
        st = lib.hms_call_bytes(echo._ptr, fid, payload, len(payload), CT_ARROW, resp, 5_000_000_000, err)
        lib.hms_payload_release(resp)
        assert st == lib.HMS_INVALID_ARGUMENT, (st, ffi.string(err.message))
    assert echo.call("echo", 1, timeout=5) == 1
