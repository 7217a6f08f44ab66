"""Synchronous calls Python<->Python: codecs, errors, deadlines, bad input."""
from __future__ import annotations

import datetime as dt
import decimal
import time
import uuid

import pytest

import hms_ffi_native as hms
from hms_ffi_native._native import lib

VALUES = [
    None, True, False, 0, 1, -1, 255, -256, 2**31 - 1, -2**31, 2**32, 2**63 - 1, -2**63, 2**64 - 1,
    2**64, -2**64 - 1, 2**200, -2**200, 0.0, -0.0, 1.5, 1e300, float("inf"), float("-inf"), "", "héllo ✓",
    "x" * 10000, b"", b"\x00\xff" * 100, [], [1, [2, [3]]], {}, {"a": 1, "b": [None, {"c": b"d"}]},
    {1: "int key", "s": "str key"}, {1, 2, 3}, set(), dt.datetime(2026, 11, 22, 18, 30, 5, 123456, tzinfo=dt.timezone.utc),
    decimal.Decimal("12345.6789"), decimal.Decimal("-0.000001"), uuid.UUID("12345678-1234-5678-1234-567812345678"),
]


@pytest.fixture
def echo(server_process):
    server_process("echo")
    with hms.connect("py.echo", "^1") as c:
        yield c


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__ + ":" + repr(v)[:30])
def test_cbor_round_trip_across_processes(echo, value):
    got = echo.call("echo", value, timeout=5)
    assert got == value and type(got) is type(value)


def test_nan_round_trip(echo):
    got = echo.call("echo", float("nan"), timeout=5)
    assert got != got


def test_tuple_and_frozenset_arrive_as_list_and_set(echo):
    assert echo.call("echo", (1, 2), timeout=5) == [1, 2]
    assert echo.call("echo", frozenset({1}), timeout=5) == {1}


def test_naive_datetime_is_taken_as_utc(echo):
    got = echo.call("echo", dt.datetime(2026, 1, 2, 3, 4, 5), timeout=5)
    assert got == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def test_raw_bytes_like_round_trip(echo):
    assert echo.call("echo", b"raw", timeout=5) == b"raw"
    assert echo.call("echo", bytearray(b"ba"), timeout=5) == b"ba"
    assert echo.call("echo", memoryview(b"mv"), timeout=5) == b"mv"
    assert echo.call("echo", b"", timeout=5) == b""


def test_json_codec_both_ways(echo):
    v = {"a": [1, 2.5, "s", None, True], "n": {"x": -3}}
    assert echo.call("echo", v, codec="json", timeout=5) == v
    assert echo.call("echo_json", {"k": 1}, timeout=5) == {"k": 1}  # reply forced to JSON by the server


def test_json_rejects_bytes_with_advice(echo):
    with pytest.raises(hms.InvalidArgument, match="codec='cbor'"):
        echo.call("echo", {"b": b"x"}, codec="json")


def test_unencodable_value_is_invalid_argument(echo):
    with pytest.raises(hms.InvalidArgument, match="CBOR"):
        echo.call("echo", object())


def test_unknown_codec(echo):
    with pytest.raises(hms.InvalidArgument, match="unknown codec"):
        echo.call("echo", 1, codec="pickle")


@pytest.mark.parametrize("code", range(1, 17))
def test_every_status_code_carried_back_with_message_and_details(echo, code):
    with pytest.raises(hms.FFIError) as ei:
        echo.call("fail", [code, f"message {code}", {"field": "qty", "n": code}], timeout=5)
    e = ei.value
    assert e.code == code
    assert type(e) is type(hms.error_for(code, ""))
    assert e.message == f"message {code}"
    assert e.details == {"field": "qty", "n": code}
    assert e.source == "remote"
    assert hms.STATUS_NAMES[code] in str(e)


def test_handler_exception_becomes_unknown(echo):
    with pytest.raises(hms.Unknown, match="ZeroDivisionError: boom"):
        echo.call("crash", None, timeout=5)
    assert echo.call("echo", 1, timeout=5) == 1  # the dispatcher survived


def test_exception_classes_are_also_builtin_kinds():
    assert issubclass(hms.DeadlineExceeded, TimeoutError)
    assert issubclass(hms.Unavailable, ConnectionError)
    assert issubclass(hms.InvalidArgument, ValueError)
    assert issubclass(hms.NotFound, LookupError)
    for cls in (hms.NotFound, hms.Unavailable, hms.DataLoss):
        assert issubclass(cls, hms.FFIError)


def test_unknown_function_is_not_found_and_lists_functions(echo):
    with pytest.raises(hms.NotFound, match="no function 'nope'.*echo"):
        echo.call("nope", 1)


def test_function_name_wrong_type(echo):
    with pytest.raises(hms.InvalidArgument, match="must be a str"):
        echo.call(42, 1)


def test_deadline_exceeded_then_connection_still_works(echo):
    t0 = time.monotonic()
    with pytest.raises(hms.DeadlineExceeded):
        echo.call("sleep", 0.5, timeout=0.05)
    took = time.monotonic() - t0
    assert 0.05 <= took < 0.4
    assert echo.call("echo", "after", timeout=5) == "after"  # the late reply is dropped, not misdelivered


def test_handler_sees_deadline_and_peer(echo):
    import os

    who = echo.call("whoami", None, timeout=5)
    assert who["peer_pid"] == os.getpid()
    assert who["peer_uid"] == os.getuid()
    assert who["pid"] == echo.server_pid


def test_bad_timeouts(echo):
    with pytest.raises(hms.InvalidArgument):
        echo.call("echo", 1, timeout=-1)
    with pytest.raises(hms.InvalidArgument):
        echo.call("echo", 1, timeout="soon")


def test_oversize_request_and_reply(echo):
    m = echo.max_message
    assert echo.call("echo", b"a" * m, timeout=5) == b"a" * m
    with pytest.raises(hms.ResourceExhausted, match="max message"):
        echo.call("echo", b"a" * (m + 1), timeout=5)
    with pytest.raises(hms.ResourceExhausted, match="exceeds"):
        echo.call("big", m + 1, timeout=5)
    assert echo.call("echo", b"ok", timeout=5) == b"ok"


def test_bigger_ring_carries_bigger_frames_and_the_arena_the_rest(server_process):
    # max_message is the arena's quota (big payloads travel as arena blocks), whatever the ring size;
    # a bigger ring only lets bigger payloads travel inline. Both paths must round-trip.
    server_process("echo")
    with hms.connect("py.echo", ring_bytes=8 << 20) as c:
        assert c.max_message == lib.HMS_ARENA_DEFAULT_QUOTA
        for n in ((8 << 20) // 4 - 64, (8 << 20) // 4 + 1, 16 << 20):
            payload = bytes(range(256)) * (n // 256) + b"x" * (n % 256)
            assert bytes(c.call("echo", payload, timeout=10)) == payload


def test_closed_client(echo):
    echo.close()
    with pytest.raises(hms.FailedPrecondition, match="closed"):
        echo.call("echo", 1)
    echo.close()  # idempotent


def test_closed_node(runtime_dir):
    n = hms.Node("x")
    n.close()
    n.close()
    with pytest.raises(hms.FailedPrecondition, match="closed"):
        n.service("a.b", "1.0.0")
    with pytest.raises(hms.FailedPrecondition, match="closed"):
        n.connect("a.b")


def test_in_process_service_and_client(node):
    svc = node.service("inproc.svc", "2.1.0")
    svc.add_function("add", lambda xy: xy[0] + xy[1])
    node.start()
    with node.connect("inproc.svc", "~2.1") as c:
        assert c.call("add", [2, 3], timeout=5) == 5
        assert c.version == "2.1.0"


def test_handler_registration_errors(node):
    svc = node.service("reg.svc", "1.0.0")
    svc.add_function("f", lambda x: x)
    with pytest.raises(hms.AlreadyExists):
        svc.add_function("f", lambda x: x)
    with pytest.raises(hms.InvalidArgument, match="invalid"):
        svc.add_function("bad name", lambda x: x)
    with pytest.raises(hms.InvalidArgument, match="callable"):
        svc.add_function("g", 42)
    with pytest.raises(hms.InvalidArgument, match="codec"):
        svc.add_function("h", lambda x: x, codec="xml")


def test_functions_added_after_start_are_seen_by_new_clients(node):
    svc = node.service("late.svc", "1.0.0")
    svc.add_function("a", lambda x: "a")
    node.start()
    with node.connect("late.svc") as c1:
        assert set(c1.functions) == {"a"}
        svc.add_function("b", lambda x: "b")
        with node.connect("late.svc") as c2:
            assert c2.call("b", None, timeout=5) == "b"
        assert c1.call("a", None, timeout=5) == "a"


def test_decorator_forms(node):
    svc = node.service("deco.svc", "1.0.0")

    @svc.function
    def bare(x):
        return "bare"

    @svc.function("renamed", codec="json")
    def whatever(x, ctx):
        return {"fn": ctx.function, "svc": ctx.service, "left": ctx.time_left is not None}

    node.start()
    with node.connect("deco.svc") as c:
        assert c.call("bare", None, timeout=5) == "bare"
        assert c.call("renamed", None, timeout=5) == {"fn": "renamed", "svc": "deco.svc", "left": True}
        assert set(svc.functions) == {"bare", "renamed"}


def test_serve_with_timeout_returns(node):
    node.service("t.svc", "1.0.0").add_function("f", lambda x: x)
    t0 = time.monotonic()
    node.serve(timeout=0.2)
    assert 0.15 < time.monotonic() - t0 < 2


def test_node_stop_and_restart(node):
    node.service("sr.svc", "1.0.0").add_function("f", lambda x: x)
    node.start()
    c = node.connect("sr.svc")
    assert c.call("f", 1, timeout=5) == 1
    node.stop()
    with pytest.raises(hms.DeadlineExceeded):
        c.call("f", 2, timeout=0.1)
    node.start()
    assert c.call("f", 3, timeout=5) == 3
    with pytest.raises(hms.FailedPrecondition, match="already serving"):
        node.start()


def test_property_any_cbor_value_round_trips(server_process):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    server_process("echo")
    c = hms.connect("py.echo")
    scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
               | st.binary() | st.decimals(allow_nan=False, allow_infinity=False) | st.uuids()
               | st.datetimes(timezones=st.just(dt.timezone.utc)))
    values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=5)
                          | st.dictionaries(st.text(max_size=8) | st.integers(), kids, max_size=5), max_leaves=20)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(values)
    def check(v):
        assert c.call("echo", v, timeout=5) == v

    check()
    c.close()
