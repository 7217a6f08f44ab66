"""pytest-benchmark: call patterns beyond the plain echo, Python client <-> Python server in another process.

    pytest bench/ -q
    pytest bench/ -k patterns --benchmark-json=/tmp/pb.json

The server is the same process kind as in test_bench_echo.py (bench/_bench_server.py, default spin), started
once for this module.
"""
from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.bench

P64 = b"x" * 64
ACALLS_PER_ROUND = 100
STREAM_ITEMS = 10_000


@pytest.fixture(scope="module")
def client(hms_client):
    return hms_client(None)


@pytest.fixture(scope="module")
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def test_acall_64b_x100(benchmark, client, loop):
    """100 sequential ``await client.acall("echo", 64 B)`` per round (one run_until_complete per round, so
    the event loop's own start-up is spread over 100 calls): divide the times by 100 for one call."""
    benchmark.group = "asyncio acall 64 B"
    benchmark.extra_info.update(payload_bytes=64, calls_per_round=ACALLS_PER_ROUND, spin="default")
    acall = client.acall

    async def hundred():
        out = None
        for _ in range(ACALLS_PER_ROUND):
            out = await acall("echo", P64)
        return out

    def run():
        return loop.run_until_complete(asyncio.wait_for(hundred(), 30.0))  # a dead server must not hang

    assert benchmark.pedantic(run, rounds=200, iterations=1, warmup_rounds=10) == P64


def test_stream_10000_raw_items(benchmark, client):
    """One server stream of 10,000 raw 16-byte items per round, from opening it to the end of the loop."""
    benchmark.group = "server stream"
    benchmark.extra_info.update(items=STREAM_ITEMS, item_bytes=16, spin="default")
    stream = client.stream

    def run():
        n = 0
        for _ in stream("items", STREAM_ITEMS, timeout=30.0):
            n += 1
        return n

    assert benchmark.pedantic(run, rounds=30, iterations=1, warmup_rounds=2) == STREAM_ITEMS
