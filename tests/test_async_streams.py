"""Async generator handlers serve server streams from the node's event loop (hms_call_defer +
hms_deferred_send): items in order, back-pressure from a slow consumer without blocking the loop,
errors mid-stream, cancellation reaching the generator."""
from __future__ import annotations

import threading
import time

import pytest

import hms_ffi_native as hms

from conftest import wait_until


@pytest.fixture
def astream(server_process):
    sp = server_process("astream")
    c = hms.connect("py.astream")
    c.server = sp
    yield c
    c.close()


def test_async_generator_stream_in_order(astream):
    assert list(astream.stream("count", 20000, timeout=30)) == list(range(20000))
    assert wait_until(lambda: astream.call("stats", None, timeout=5)["closed"] == 1)


def test_slow_consumer_back_pressures_without_blocking_the_loop(astream):
    # 64 KiB items fill the ring after a few; while this consumer dawdles, the server's event loop must
    # keep answering other calls (the blocked send waits in a worker thread, not on the loop).
    s = astream.stream("blobs", [200, 64 * 1024], timeout=60)
    it = iter(s)
    first = next(it)
    assert first == b"\x00" * 65536
    time.sleep(0.3)  # the ring is full now: the generator waits for room
    other = hms.connect("py.astream")
    try:
        t0 = time.monotonic()
        assert other.call("echo", "still serving", timeout=5) == "still serving"
        assert time.monotonic() - t0 < 1.0
    finally:
        other.close()
    rest = list(it)
    assert len(rest) == 199 and all(b == bytes([(i + 1) % 256]) * 65536 for i, b in enumerate(rest))


def test_error_mid_stream_arrives_after_the_items(astream):
    got = []
    with pytest.raises(hms.NotFound) as ei:
        for x in astream.stream("fail_after", 3, timeout=10):
            got.append(x)
    assert got == [0, 1, 2]
    assert ei.value.message == "no more items" and ei.value.details == {"after": 3}


def test_cancelling_the_stream_closes_the_async_generator(astream):
    s = astream.stream("ticking", 1000, timeout=30)
    it = iter(s)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    s.close()  # cancels the call; the server goes on serving
    assert astream.call("echo", 1, timeout=5) == 1
    # `count` counts its finally blocks: cancel one mid-way
    s2 = astream.stream("count", 10_000_000, timeout=30)
    it2 = iter(s2)
    next(it2)
    s2.close()
    assert wait_until(lambda: astream.call("stats", None, timeout=5)["closed"] == 1, timeout=10)


def test_deadline_ends_an_async_stream(astream):
    got = []
    with pytest.raises(hms.DeadlineExceeded):
        for x in astream.stream("ticking", 1000, timeout=0.2):
            got.append(x)
    assert 0 < len(got) < 1000


def test_in_process_node_started_in_the_background(node):
    svc = node.service("t.agen", "1.0.0")

    @svc.function()
    async def squares(n, ctx):
        for i in range(n):
            yield i * i

    node.start()
    with hms.connect("t.agen") as c:
        assert list(c.stream("squares", 1000, timeout=10)) == [i * i for i in range(1000)]
        results = {}

        def consume(k):
            results[k] = list(c.stream("squares", 500, timeout=10))

        ts = [threading.Thread(target=consume, args=(k,)) for k in range(4)]
        [t.start() for t in ts]
        [t.join(20) for t in ts]
        assert all(results[k] == [i * i for i in range(500)] for k in range(4))


def test_async_client_stream_handler_is_refused_with_a_reason(node):
    svc = node.service("t.bad", "1.0.0")

    async def reader(items):
        yield 1

    with pytest.raises(hms.InvalidArgument, match="not async def"):
        svc.add_function("reader", reader, client_stream=True)


def test_astream_consumes_a_stream_with_async_for(astream):
    import asyncio

    async def main():
        got = [x async for x in astream.astream("count", 5000, timeout=30)]
        ticks = 0

        async def ticker():  # the loop keeps running other tasks while the stream waits
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.ensure_future(ticker())
        slow = [x async for x in astream.astream("ticking", 20, timeout=30)]
        t.cancel()
        return got, slow, ticks

    got, slow, ticks = asyncio.run(main())
    assert got == list(range(5000)) and slow == list(range(20))
    assert ticks >= 5


def test_astream_errors_and_early_exit(astream):
    import asyncio

    async def main():
        got = []
        with pytest.raises(hms.NotFound):
            async for x in astream.astream("fail_after", 3, timeout=10):
                got.append(x)
        async with astream.astream("count", 10_000_000, timeout=30) as s:
            async for x in s:
                if x == 10:
                    break
        return got

    assert asyncio.run(main()) == [0, 1, 2]
    assert wait_until(lambda: astream.call("stats", None, timeout=5)["closed"] >= 1, timeout=10)
