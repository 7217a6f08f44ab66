"""Opt-in reconnect, retries and the circuit breaker (hms_ffi_native/_retry.py) against real server
processes that are killed and restarted (tests/chaos/_peer.py server NAME)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import hms_ffi_native as hms

from conftest import child_env

PEER = Path(__file__).resolve().parent / "_peer.py"
NAME = "chaos.rs"


class Server:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(PEER), "server", NAME], stdout=subprocess.PIPE,
                                     text=True, env=child_env())
        line = self.proc.stdout.readline()
        assert '"ready"' in line, line
        self.pid = self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def servers(runtime_dir):
    started = []

    def start() -> Server:
        s = Server()
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


class CountingPolicy(hms.RetryPolicy):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.asked = 0

    def should_retry(self, exc, attempt, idempotent):
        self.asked += 1
        return super().should_retry(exc, attempt, idempotent)


def restart_later(servers, delay: float, out: list) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(delay), out.append(servers())))
    t.start()
    return t


def test_reconnects_to_a_restarted_service_transparently(servers):
    a = servers()
    policy = hms.RetryPolicy(max_attempts=300, backoff_base=0.01, backoff_max=0.05)
    with hms.connect(NAME, retry=policy) as rc:
        assert isinstance(rc, hms.ResilientClient)
        assert rc.call("pid", timeout=5) == a.pid
        a.kill()
        started: list = []
        t = restart_later(servers, 0.3, started)
        # idempotent (the server says so): retried through the restart, with backoff
        assert rc.call("echo", "through", timeout=5) == "through"
        t.join()
        assert rc.call("pid", timeout=5) == started[0].pid
        assert rc.reconnects >= 1
        # killed while idle: the dead server is noticed before sending, so even a non-idempotent call
        # goes to the new process without an error
        started[0].kill()
        c = servers()
        assert rc.call("sleep", 0, timeout=5) == "slept"
        assert rc.server_pid == c.pid


def test_async_calls_and_batches_retry_across_a_restart(servers):
    a = servers()
    rc = hms.connect(NAME, retry=hms.RetryPolicy(max_attempts=300, backoff_base=0.01, backoff_max=0.05))
    assert rc.call("pid", timeout=5) == a.pid
    a.kill()
    started: list = []
    t = restart_later(servers, 0.2, started)
    fut = rc.call_async("echo", "async", timeout=5)
    assert fut.result(10) == "async"
    t.join()
    started[0].kill()
    t = restart_later(servers, 0.2, started)
    assert asyncio.run(rc.acall("echo", "acall", timeout=5)) == "acall"
    t.join()
    # batch: the idempotent item is retried, the non-idempotent one comes back as Unavailable
    started[-1].kill()
    time.sleep(0.05)
    t = restart_later(servers, 0.2, started)
    out = rc.batch([("echo", 1), ("echo", 2)], timeout=5)
    t.join()
    assert out == [1, 2]
    rc.close()


def test_non_idempotent_calls_are_not_retried_unless_asked(servers):
    a = servers()
    policy = CountingPolicy(max_attempts=300, backoff_base=0.01, backoff_max=0.05)
    rc = hms.connect(NAME, retry=policy)
    assert rc.call("pid", timeout=5) == a.pid
    result: dict = {}

    def call(idempotent=None):
        try:
            result["value"] = rc.call("sleep", 0.5, timeout=10, idempotent=idempotent)
        except hms.FFIError as e:
            result["error"] = e

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.2)  # "sleep" is running in the server: it may have had effects
    a.kill()
    t.join(10)
    assert isinstance(result.get("error"), hms.Unavailable), result
    assert policy.asked == 1  # asked once, refused: sleep is not idempotent
    # the caller says it is safe: retried on the restarted server
    b = servers()
    result.clear()
    t = threading.Thread(target=call, kwargs={"idempotent": True})
    t.start()
    time.sleep(0.2)
    b.kill()
    started: list = []
    restart_later(servers, 0.1, started).join()
    t.join(10)
    assert result.get("value") == "slept", result
    # the policy says so for every call
    rc.close()
    rc = hms.connect(NAME, retry=hms.RetryPolicy(max_attempts=300, backoff_base=0.01, idempotent_only=False))
    result.clear()
    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.2)
    started[0].kill()
    servers()
    t.join(10)
    assert result.get("value") == "slept", result
    rc.close()


def test_breaker_opens_fails_fast_then_half_opens(servers):
    a = servers()
    breaker = hms.CircuitBreaker(failure_threshold=3, open_seconds=0.4)
    rc = hms.connect(NAME, breaker=breaker)
    assert rc.call("echo", 1, timeout=5) == 1
    a.kill()
    for _ in range(3):  # the dead connection, then nothing to connect to: each one counts
        with pytest.raises(hms.Unavailable) as ei:
            rc.call("echo", 1, timeout=5)
        assert "circuit breaker" not in ei.value.message
    assert breaker.state == "open"
    t0 = time.monotonic()
    with pytest.raises(hms.Unavailable) as ei:
        rc.call("echo", 1, timeout=5)
    assert time.monotonic() - t0 < 0.01  # fails fast, without touching the service
    msg = ei.value.message
    assert "circuit breaker for chaos.rs is open after 3 consecutive failures" in msg and "until" in msg, msg
    assert ei.value.details["breaker"] == "open" and 0 < ei.value.details["retry_after_s"] <= 0.4
    b = servers()
    time.sleep(0.45)
    assert breaker.state == "half-open"
    assert rc.call("pid", timeout=5) == b.pid  # the probe goes through and closes the breaker
    assert breaker.state == "closed"
    rc.close()


def test_breaker_transitions_with_a_fake_clock():
    now = [100.0]
    br = hms.CircuitBreaker(failure_threshold=2, open_seconds=5, half_open_probes=1, clock=lambda: now[0], name="svc")
    dead = hms.Unavailable("gone")
    br.before_call()
    br.record_failure(dead)
    br.record_failure(hms.InvalidArgument("bad"))  # an answer: resets the count
    br.record_failure(dead)
    assert br.state == "closed"
    br.record_failure(dead)
    assert br.state == "open"
    with pytest.raises(hms.Unavailable, match="open after 2 consecutive failures"):
        br.before_call()
    now[0] += 5
    assert br.state == "half-open"
    br.before_call()  # the probe
    with pytest.raises(hms.Unavailable, match="half-open"):
        br.before_call()  # only one probe at a time
    br.record_failure(dead)  # the probe failed: open again for another interval
    assert br.state == "open"
    now[0] += 4.9
    with pytest.raises(hms.Unavailable) as ei:
        br.before_call()
    assert ei.value.details["retry_after_s"] == pytest.approx(0.1)
    now[0] += 0.1
    br.before_call()
    br.record_success()
    assert br.state == "closed" and br.failures == 0


def test_retry_policy_backoff_and_validation():
    import random

    p = hms.RetryPolicy(max_attempts=4, backoff_base=0.1, backoff_max=0.3, jitter=0.5, rng=random.Random(1))
    for attempt, cap in [(1, 0.1), (2, 0.2), (3, 0.3), (10, 0.3), (100, 0.3)]:
        for _ in range(50):
            assert cap / 2 <= p.backoff(attempt) <= cap
    assert hms.RetryPolicy(jitter=0, backoff_base=0.1).backoff(2) == 0.2
    u = hms.Unavailable("x")
    assert p.should_retry(u, 1, True) and not p.should_retry(u, 4, True) and not p.should_retry(u, 1, False)
    assert not p.should_retry(hms.InvalidArgument("x"), 1, True)
    assert hms.RetryPolicy(retryable=[hms.Unavailable, hms.DeadlineExceeded]).retryable == {14, 4}
    with pytest.raises(hms.InvalidArgument):
        hms.RetryPolicy(max_attempts=0)
    with pytest.raises(hms.InvalidArgument):
        hms.CircuitBreaker(failure_threshold=0)
    with pytest.raises(hms.InvalidArgument):
        hms.ResilientClient("x", retry="often")


def test_without_a_policy_connect_fails_at_once(runtime_dir):
    with pytest.raises(hms.Unavailable, match="cannot reach chaos.none"):
        hms.connect("chaos.none", breaker=hms.CircuitBreaker())
    # with a policy, construction does not fail: the first call retries, then raises
    rc = hms.connect("chaos.none", retry=hms.RetryPolicy(max_attempts=3, backoff_base=0.001))
    with pytest.raises(hms.Unavailable) as ei:
        rc.call("echo", 1)
    assert isinstance(ei.value.__cause__, hms.NotFound)
    rc.close()


def test_restart_while_the_killed_server_is_an_unreaped_zombie(servers):
    """Regression (found by this suite): a killed server whose parent had not called wait() yet is a
    zombie; the registry counted it alive, so clients got "connection refused" and the restarted service
    was refused its own name (ALREADY_EXISTS) until the parent reaped it. Fixed in csrc/registry.c."""
    import signal

    a = servers()
    os.kill(a.pid, signal.SIGKILL)  # and no wait(): a stays a zombie
    assert _wait(lambda: open(f"/proc/{a.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z")
    # the zombie's entry is removed on sight once its other threads are gone too (they are torn down a
    # few ms after the leader shows 'Z'; until then it looks like a live pthread_exit()ed main thread)
    assert _wait(lambda: [s.name for s in hms.list_services()] == [])
    b = servers()  # takes the name over
    with hms.connect(NAME) as c:
        assert c.call("pid", timeout=5) == b.pid
    # a process whose main thread alone exited also shows 'Z' but is alive: still counted alive
    code = ("import threading, os, sys, time, hms_ffi_native as hms\n"
            "n = hms.Node('zl'); n.service('chaos.zl', '1.0.0').add_function('pid', lambda _x: os.getpid())\n"
            "n.start(); print('ready', flush=True)\n"
            "import ctypes; ctypes.CDLL(None).pthread_exit(None)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert p.stdout.readline().strip() == "ready"
        assert _wait(lambda: open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z")
        assert [s.name for s in hms.list_services()] == ["chaos.rs", "chaos.zl"]
    finally:
        p.kill()
        p.wait()
    a.kill()


def _wait(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()
