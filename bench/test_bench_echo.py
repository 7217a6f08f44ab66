"""pytest-benchmark: hms-ffi echo round trips, Python client <-> Python server in another process.

    pytest bench/ -q                        # all
    pytest bench/ --benchmark-only -k 64    # a subset
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.bench

P64 = b"x" * 64
P4K = bytes(range(256)) * 16
RECORD = {"id": 123456, "customer": "ACME Corp", "qty": 3, "price": 19.99, "express": True,
          "tags": ["priority", "fragile"], "address": {"city": "Berlin", "zip": "10115"}}


@pytest.fixture(scope="module")
def client_spin(hms_client):
    return hms_client(None)


@pytest.fixture(scope="module")
def client_nospin(hms_client):
    return hms_client(0)


def test_echo_64b_spin(benchmark, client_spin):
    benchmark.group = "echo 64 B"
    benchmark.extra_info.update(payload_bytes=64, spin="default (50 us) on server and client")
    assert benchmark(client_spin.call, "echo", P64) == P64


def test_echo_64b_nospin(benchmark, client_nospin):
    benchmark.group = "echo 64 B"
    benchmark.extra_info.update(payload_bytes=64, spin="0 on server and client")
    # Each call sleeps/wakes across processes (tens of us): fixed rounds keep the run short.
    out = benchmark.pedantic(client_nospin.call, args=("echo", P64), rounds=3000, iterations=1,
                             warmup_rounds=200)
    assert out == P64


def test_echo_4k_spin(benchmark, client_spin):
    benchmark.group = "echo 4 KiB"
    benchmark.extra_info.update(payload_bytes=len(P4K), spin="default")
    assert benchmark(client_spin.call, "echo", P4K) == P4K


def test_echo_cbor_dict_spin(benchmark, client_spin):
    benchmark.group = "echo CBOR dict"
    benchmark.extra_info.update(payload="7-key dict, CBOR both ways", spin="default")
    out = benchmark.pedantic(client_spin.call, args=("echo", RECORD), rounds=5000, iterations=1,
                             warmup_rounds=200)
    assert out == RECORD
