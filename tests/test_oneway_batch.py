"""Batch handlers: runs of one-way calls delivered to one Python call (Service.batch_handler)."""
from __future__ import annotations

import threading

import pytest

import hms_ffi_native as hms
from hms_ffi_native._native import ffi, lib

from conftest import wait_until


@pytest.fixture
def sink(node):
    """An in-process service: `ingest` records normal calls and batches in arrival order."""
    svc = node.service("t.sink", "1.0.0")
    log = []  # ("call", value) | ("batch", [items])
    state = {"raise_next": False}

    @svc.function()
    def ingest(x):
        log.append(("call", x))
        return sum(len(v) for k, v in log if k == "batch")

    @svc.batch_handler("ingest")
    def ingest_many(items):
        if state["raise_next"]:
            state["raise_next"] = False
            raise RuntimeError("batch handler bug")
        log.append(("batch", list(items)))

    @svc.function()
    def plain(x):
        log.append(("plain", x))

    node.start()
    c = hms.connect("t.sink")
    yield c, log, state
    c.close()


def items_of(log):
    return [x for k, v in log if k == "batch" for x in v]


def test_runs_of_one_way_calls_arrive_in_order_and_whole(sink):
    c, log, _ = sink
    payloads = [i.to_bytes(4, "little") * 16 for i in range(20000)]
    c.send_many("ingest", payloads)
    assert c.call("ingest", None, timeout=10) == 20000  # handled after every earlier one-way call
    assert items_of(log) == payloads
    runs = [len(v) for k, v in log if k == "batch"]
    assert max(runs) <= 4096  # HMS_BATCH_MAX_ITEMS
    assert len(runs) < 20000 // 16  # actually batched: far fewer Python calls than messages


def test_single_sends_and_decoded_values_reach_the_batch_handler(sink):
    c, log, _ = sink
    c.send("ingest", {"a": 1})
    c.send_many("ingest", [[1, 2], "three", None, 4.5], codec="cbor")
    c.call("ingest", None, timeout=5)
    assert items_of(log) == [{"a": 1}, [1, 2], "three", None, 4.5]


def test_normal_calls_keep_their_place_between_one_way_runs(sink):
    c, log, _ = sink
    c.send_many("ingest", [b"a", b"b"])
    c.call("ingest", "mid", timeout=5)
    c.send_many("ingest", [b"c"])
    c.call("ingest", "end", timeout=5)
    assert log == [("batch", [b"a", b"b"]), ("call", "mid"), ("batch", [b"c"]), ("call", "end")]


def test_one_way_calls_of_another_function_split_the_run(sink):
    c, log, _ = sink
    c.send("ingest", b"1")
    c.send("plain", b"p")
    c.send("ingest", b"2")
    c.call("ingest", None, timeout=5)
    assert [k for k, _ in log] == ["batch", "plain", "batch", "call"]


def test_undecodable_item_is_dropped_alone_and_a_raising_handler_does_not_stop_serving(sink, capfd):
    c, log, state = sink
    fid = ffi.new("uint32_t *")
    err = ffi.new("hms_error_t *")
    assert lib.hms_client_function_id(c._ptr, b"ingest", fid, err) == 0
    for data, ct in ((b"\x01", lib.HMS_CT_CBOR), (b"\xff\xff", lib.HMS_CT_CBOR), (b"\x02", lib.HMS_CT_CBOR)):
        assert lib.hms_call_submit(c._ptr, fid[0], data, len(data), ct, lib.HMS_CALL_ONEWAY, -1, ffi.NULL,
                                   ffi.NULL, ffi.NULL, err) == 0
    c.call("ingest", None, timeout=5)
    assert items_of(log) == [1, 2]
    state["raise_next"] = True
    c.send_many("ingest", [b"lost"])
    assert wait_until(lambda: not state["raise_next"], timeout=5)  # that run raised (alone)
    c.send_many("ingest", [b"kept"])
    wait_until(lambda: b"kept" in items_of(log), timeout=5)
    assert b"lost" not in items_of(log)
    assert c.call("ingest", None, timeout=5) == 3
    captured = capfd.readouterr()
    assert "batch handler bug" in captured.err and "does not decode" in captured.err


def test_batch_handler_for_unknown_function_is_refused(node):
    svc = node.service("t.x", "1.0.0")
    with pytest.raises(hms.NotFound, match="add it first"):
        svc.add_batch_handler("nope", lambda items: None)
    with pytest.raises(hms.InvalidArgument):
        svc.add_function("f", lambda x: x)
        svc.add_batch_handler("f", 42)


def test_batch_handler_under_concurrent_senders(sink):
    c, log, _ = sink
    c2 = hms.connect("t.sink")
    try:
        def send(cl, tag):
            cl.send_many("ingest", [bytes([tag]) * 8] * 5000)

        ts = [threading.Thread(target=send, args=(c, 1)), threading.Thread(target=send, args=(c2, 2))]
        [t.start() for t in ts]
        [t.join(30) for t in ts]
        c.call("ingest", None, timeout=10)
        c2.call("ingest", None, timeout=10)
        got = items_of(log)
        assert got.count(b"\x01" * 8) == 5000 and got.count(b"\x02" * 8) == 5000
    finally:
        c2.close()
