"""Asynchronous calls (futures and asyncio), cancellation, batches and one-way calls."""
from __future__ import annotations

import asyncio
import concurrent.futures
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


def test_1000_concurrent_futures_from_one_client(echo):
    futs = [echo.call_async("echo", {"i": i}, timeout=10) for i in range(1000)]
    assert [f.result(10) for f in futs] == [{"i": i} for i in range(1000)]


def test_more_calls_than_slots_apply_back_pressure(echo):
    futs = [echo.call_async("echo", i, timeout=30) for i in range(5000)]
    assert [f.result(30) for f in futs] == list(range(5000))


def test_future_errors_and_deadline(echo):
    f = echo.call_async("fail", [5, "missing", {"id": 1}])
    with pytest.raises(hms.NotFound) as ei:
        f.result(5)
    assert ei.value.details == {"id": 1} and ei.value.source == "remote"
    t0 = time.monotonic()
    f = echo.call_async("sleep", 0.5, timeout=0.05)
    with pytest.raises(hms.DeadlineExceeded):
        f.result(5)
    assert time.monotonic() - t0 < 0.4
    assert echo.call("echo", "fine", timeout=5) == "fine"


def test_cancelling_a_future_cancels_the_running_handler(echo):
    f = echo.call_async("wait_cancel", 3)
    time.sleep(0.2)  # the handler is running
    assert f.cancel()
    assert wait_until(lambda: echo.call("cancels", None, timeout=5) == 1, 3)


def test_cancelled_before_the_server_starts_it_is_skipped(echo):
    blocker = echo.call_async("sleep", 0.3)
    f = echo.call_async("wait_cancel", 3)  # queued behind the sleeping call
    assert f.cancel()
    assert blocker.result(5) == "slept"
    time.sleep(0.1)
    assert echo.call("cancels", None, timeout=5) == 0  # never started: nothing to observe
    assert echo.call("echo", 1, timeout=5) == 1


def test_asyncio_1000_concurrent(echo):
    async def main():
        return await asyncio.gather(*[echo.acall("echo", i, timeout=10) for i in range(1000)])

    assert asyncio.run(main()) == list(range(1000))


def test_asyncio_errors_deadline_and_cancel(echo):
    async def main():
        with pytest.raises(hms.InvalidArgument, match="bad"):
            await echo.acall("fail", [3, "bad", None])
        t0 = time.monotonic()
        with pytest.raises(hms.DeadlineExceeded):
            await echo.acall("sleep", 0.5, timeout=0.05)
        assert time.monotonic() - t0 < 0.4
        await asyncio.sleep(0.5)  # let the abandoned sleep finish so the next handlers run at once
        task = asyncio.ensure_future(echo.acall("wait_cancel", 3))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # wait_for's timeout cancels the call too
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(echo.acall("wait_cancel", 3), 0.2)
        return await echo.acall("echo", "after")

    assert asyncio.run(main()) == "after"
    assert wait_until(lambda: echo.call("cancels", None, timeout=5) == 2, 3)


def test_asyncio_and_threads_share_a_client(echo):
    async def main():
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            sync = [loop.run_in_executor(pool, echo.call, "echo", i) for i in range(200)]
            futs = [asyncio.wrap_future(echo.call_async("echo", -i)) for i in range(200)]
            aws = [echo.acall("echo", i * 10) for i in range(200)]
            return await asyncio.gather(*sync), await asyncio.gather(*futs), await asyncio.gather(*aws)

    a, b, c = asyncio.run(main())
    assert a == list(range(200)) and b == [-i for i in range(200)] and c == [i * 10 for i in range(200)]


def test_server_death_fails_pending_async_calls(echo):
    futs = [echo.call_async("sleep", 30) for _ in range(5)]

    async def pending():
        return await asyncio.gather(*[echo.acall("sleep", 30) for _ in range(3)], return_exceptions=True)

    time.sleep(0.1)
    t0 = time.monotonic()
    echo.server.kill(9)
    for f in futs:
        with pytest.raises(hms.Unavailable):
            f.result(5)
    assert time.monotonic() - t0 < 0.5
    assert all(isinstance(e, hms.Unavailable) for e in asyncio.run(pending()))


def test_closing_the_client_fails_pending_futures(echo):
    f = echo.call_async("sleep", 5)
    time.sleep(0.05)
    echo.close()
    with pytest.raises(hms.FailedPrecondition, match="closed"):
        f.result(5)


def test_batch_results_in_order_each_with_its_own_status(echo):
    res = echo.batch([("echo", 1), ("fail", [3, "nope", None]), ("echo", b"raw"), ("fail", [14, "down", {"x": 1}]),
                      ("echo", {"k": [1]})], timeout=5)
    assert res[0] == 1 and res[2] == b"raw" and res[4] == {"k": [1]}
    assert isinstance(res[1], hms.InvalidArgument) and res[1].message == "nope"
    assert isinstance(res[3], hms.Unavailable) and res[3].details == {"x": 1}
    assert echo.batch([]) == []


def test_big_batch(echo):
    n = 5000
    assert echo.batch([("echo", i) for i in range(n)], timeout=30) == list(range(n))


def test_batch_rejects_unknown_functions_before_sending(echo):
    with pytest.raises(hms.NotFound):
        echo.batch([("echo", 1), ("nope", 2)])


def test_one_way_calls_reach_the_server_and_return_nothing(echo):
    assert echo.send("count") is None
    for _ in range(99):
        echo.send("count", b"x")
    echo.send_many("count", [b"x"] * 10000)
    echo.send_many("count", [{"n": i} for i in range(900)])
    assert echo.call("count", None, timeout=10) == 100 + 10000 + 900
    echo.send("fail", [3, "ignored", None])  # errors of one-way calls go nowhere
    assert echo.call("echo", "ok", timeout=5) == "ok"


def test_one_way_oversize_and_bad_input(echo):
    with pytest.raises(hms.ResourceExhausted):
        echo.send("echo", b"x" * (echo.max_message + 1))
    with pytest.raises(hms.NotFound):
        echo.send("nope")
    with pytest.raises(hms.InvalidArgument, match="one codec"):
        echo.send_many("echo", [b"raw", {"cbor": 1}])
    echo.close()
    with pytest.raises(hms.FailedPrecondition):
        echo.send("echo")
    with pytest.raises(hms.FailedPrecondition):
        echo.call_async("echo")


# ------------------------------------------------------------------ async handlers on the node's loop
def test_async_handler_replies(echo):
    assert echo.call("aecho", {"x": [1, 2]}, timeout=5) == {"x": [1, 2]}
    assert echo.call("aecho", b"raw", timeout=5) == b"raw"
    r = echo.call("asleep", 0.01, timeout=5)
    assert r["slept"] == 0.01 and r["peer"] > 0


def test_async_handlers_run_concurrently(echo):
    # 50 calls that each await 0.2 s: one event loop runs them side by side, and the dispatcher
    # keeps serving plain calls meanwhile.
    t0 = time.monotonic()
    futs = [echo.call_async("asleep", 0.2, timeout=10) for _ in range(50)]
    assert echo.call("echo", "not blocked", timeout=5) == "not blocked"
    assert time.monotonic() - t0 < 0.15
    assert all(f.result(10)["slept"] == 0.2 for f in futs)
    assert time.monotonic() - t0 < 2.0


def test_async_handler_errors(echo):
    with pytest.raises(hms.NotFound) as ei:
        echo.call("afail", None, timeout=5)
    assert ei.value.details == {"where": "afail"} and ei.value.source == "remote"
    with pytest.raises(hms.Unknown, match="ZeroDivisionError"):
        echo.call("abug", None, timeout=5)


def test_cancelling_reaches_the_async_handler(echo):
    f = echo.call_async("asleep", 5)
    time.sleep(0.1)
    f.cancel()
    assert wait_until(lambda: echo.call("acancels", None, timeout=5) == 1, 3)
    # a caller whose deadline passes cancels it too
    with pytest.raises(hms.DeadlineExceeded):
        echo.call("asleep", 5, timeout=0.1)
    assert wait_until(lambda: echo.call("acancels", None, timeout=5) == 2, 3)


def test_async_many_in_flight_from_asyncio(echo):
    async def main():
        return await asyncio.gather(*[echo.acall("aecho", i, timeout=10) for i in range(1000)])

    assert asyncio.run(main()) == list(range(1000))


def test_async_handler_in_process_and_close_while_pending(node):
    import asyncio as aio

    svc = node.service("async.inproc", "1.0.0")

    @svc.function()
    async def wait(x):
        await aio.sleep(x)
        return "late"

    node.start()
    c = node.connect("async.inproc")
    f = c.call_async("wait", 5)
    time.sleep(0.1)
    t0 = time.monotonic()
    node.close()  # cancels the pending handler; the caller hears about it
    with pytest.raises((hms.Cancelled, hms.Unavailable, hms.FailedPrecondition)):
        f.result(5)
    assert time.monotonic() - t0 < 3
