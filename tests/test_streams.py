"""Server streams: order, flow control, end vs error vs cancel, deadlines, crashes."""
from __future__ import annotations

import threading
import time

import pytest

import hms_ffi_native as hms

from conftest import wait_until


@pytest.fixture
def echo(server_process):
    sp = server_process("echo")
    c = hms.connect("py.echo", "^1")
    c.server = sp
    yield c
    c.close()


def test_items_arrive_in_order_then_the_stream_ends(echo):
    with echo.stream("count_to", 1000) as s:
        assert list(s) == list(range(1000))
    assert list(echo.stream("count_to", 0)) == []


def test_a_million_items(echo):
    n = 0
    t0 = time.monotonic()
    for item in echo.stream("raw_items", 1_000_000, timeout=120):
        n += 1
    assert n == 1_000_000 and item == b"i" * 16
    assert time.monotonic() - t0 < 120


def test_error_mid_stream_is_distinct_from_end(echo):
    got = []
    with pytest.raises(hms.InvalidArgument) as ei:
        for x in echo.stream("fail_after", 5):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]
    assert ei.value.message == "failed after 5" and ei.value.details == {"k": 5} and ei.value.source == "remote"


def test_leaving_early_cancels_the_producer(echo):
    s = echo.stream("endless")
    for i, x in enumerate(s):
        if i == 100:
            break
    s.close()
    assert wait_until(lambda: echo.call("stream_stops", None, timeout=5) == 1, 3)
    assert echo.call("echo", 1, timeout=5) == 1  # the dispatcher is free again


def test_cancel_ends_iteration_with_cancelled(echo):
    s = echo.stream("endless")
    assert next(s) == 0
    s.cancel()
    with pytest.raises(hms.Cancelled):
        for _ in s:
            pass
    assert wait_until(lambda: echo.call("stream_stops", None, timeout=5) == 1, 3)


def test_slow_consumer_back_pressures_without_loss(server_process):
    server_process("echo")
    with hms.connect("py.echo", ring_bytes=64 * 1024) as c:
        size = c.max_inline // 2
        s = c.stream("big_items", [300, size], timeout=60)
        got = 0
        for i, item in enumerate(s):
            assert item == bytes([i % 256]) * size
            if i % 50 == 0:
                time.sleep(0.05)  # the server must wait for us, not drop or buffer without bound
            got += 1
        assert got == 300


def test_per_item_timeout_keeps_the_stream(echo):
    s = echo.stream("count_to", 3)
    assert s.next_item(timeout=5) == 0
    assert list(s) == [1, 2]


def test_stream_deadline(echo):
    t0 = time.monotonic()
    with pytest.raises(hms.DeadlineExceeded):
        for _ in echo.stream("endless", timeout=0.2):
            time.sleep(0.01)
    assert time.monotonic() - t0 < 2
    assert wait_until(lambda: echo.call("stream_stops", None, timeout=5) == 1, 3)


def test_calling_a_streaming_function_plainly_is_refused(echo):
    with pytest.raises(hms.FailedPrecondition, match="streaming function"):
        echo.call("count_to", 3, timeout=5)


def test_plain_function_as_a_stream_yields_its_reply(echo):
    assert list(echo.stream("echo", {"a": 1})) == [{"a": 1}]


def test_streams_and_calls_interleave_across_threads(echo):
    errors = []

    def consume(k):
        try:
            if list(echo.stream("count_to", 500 + k)) != list(range(500 + k)):
                errors.append(k)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    def calls():
        for i in range(300):
            if echo.call("echo", i, timeout=10) != i:
                errors.append(("call", i))

    ts = [threading.Thread(target=consume, args=(k,)) for k in range(4)] + [threading.Thread(target=calls)]
    [t.start() for t in ts]
    [t.join(60) for t in ts]
    assert errors == []


def test_server_killed_mid_stream(echo):
    s = echo.stream("endless")
    assert next(s) == 0
    echo.server.kill(9)
    t0 = time.monotonic()
    with pytest.raises(hms.Unavailable):
        for _ in s:
            pass
    assert time.monotonic() - t0 < 0.5


# ------------------------------------------------------------------ client and bidirectional streams
def test_client_stream_sums_items(echo):
    assert echo.client_stream("total", range(10000), timeout=30) == sum(range(10000))
    assert echo.client_stream("collect", [], timeout=5) == []
    assert echo.client_stream("collect", [b"a", {"b": 1}, None, "s"], timeout=5) == [b"a", {"b": 1}, None, "s"]


def test_client_stream_of_100k_raw_items(echo):
    assert echo.client_stream("count_items", (b"x" * 16 for _ in range(100_000)), timeout=60) == 100_000


def test_client_stream_slow_handler_back_pressures_the_sender(server_process):
    server_process("echo")
    with hms.connect("py.echo", ring_bytes=16 * 1024) as c:
        item = b"y" * (c.max_inline // 2)
        assert c.client_stream("slow_count", (item for _ in range(400)), timeout=60) == 400


def test_client_stream_error_mid_stream(echo):
    with pytest.raises(hms.OutOfRange, match="third item refused"):
        echo.client_stream("fail_on_third", range(100), timeout=10)
    assert echo.call("echo", "ok", timeout=5) == "ok"


def test_client_stream_function_called_plainly_is_refused(echo):
    with pytest.raises(hms.FailedPrecondition, match="client stream"):
        echo.call("total", [1, 2], timeout=5)


def test_bidi_stream_in_order(echo):
    with echo.bidi_stream("chat", iter(range(2000)), timeout=30) as s:
        assert list(s) == [2 * i for i in range(2000)]


def test_bidi_stream_request_iterator_failure_reaches_the_reader(echo):
    def requests():
        yield 1
        yield 2
        raise KeyError("producer broke")

    with pytest.raises(KeyError, match="producer broke"):
        list(echo.bidi_stream("chat", requests(), timeout=10))
    assert echo.call("echo", 1, timeout=5) == 1


def test_bidi_stream_closed_early_cancels_the_handler(echo):
    def forever():
        i = 0
        while True:
            yield i
            i += 1

    s = echo.bidi_stream("chat", forever(), timeout=30)
    for i, x in enumerate(s):
        assert x == 2 * i
        if i == 50:
            break
    s.close()
    assert wait_until(lambda: echo.call("chat_cancels", None, timeout=5) == 1, 5)


def test_client_streams_while_other_threads_call(echo):
    # Frames of other calls arrive in the ring while the handler reads its items: they wait their
    # turn, in order, and nothing is lost.
    errors = []

    def calls():
        for i in range(300):
            if echo.call("echo", i, timeout=10) != i:
                errors.append(i)

    def streams():
        for k in range(20):
            if echo.client_stream("total", range(200 + k), timeout=10) != sum(range(200 + k)):
                errors.append(("stream", k))

    ts = [threading.Thread(target=calls), threading.Thread(target=calls), threading.Thread(target=streams)]
    [t.start() for t in ts]
    [t.join(60) for t in ts]
    assert errors == []


def test_stream_send_after_finish_and_on_server_stream(echo):
    s = echo.stream("count_to", 2)
    with pytest.raises(hms.FailedPrecondition, match="without HMS_STREAM_CLIENT"):
        s.send(1)
    s.close()
    b = echo.bidi_stream("chat", iter([]), timeout=5)
    assert list(b) == []
