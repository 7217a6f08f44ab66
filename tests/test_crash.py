"""kill -9 of servers and clients: nothing hangs, survivors keep working, names are reusable."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import hms_ffi_native as hms

from conftest import ServerProcess, child_env, wait_until


def test_server_killed_mid_call_fails_within_100ms(server_process):
    sp = server_process("echo")
    c = hms.connect("py.echo")
    result = {}

    def call():
        t0 = time.monotonic()
        try:
            c.call("sleep", 30, timeout=60)
        except hms.FFIError as e:
            result["err"] = e
        result["at"] = time.monotonic()

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.2)  # the handler is now sleeping
    killed_at = time.monotonic()
    os.kill(sp.pid, signal.SIGKILL)
    t.join(5)
    assert not t.is_alive()
    assert isinstance(result["err"], hms.Unavailable)
    assert result["at"] - killed_at < 0.1
    assert "went away" in result["err"].message
    # and every later call fails at once
    t0 = time.monotonic()
    with pytest.raises(hms.Unavailable):
        c.call("echo", 1, timeout=10)
    assert time.monotonic() - t0 < 0.1
    c.close()


def test_server_killed_while_idle_next_call_fails_within_100ms(server_process):
    sp = server_process("echo")
    c = hms.connect("py.echo")
    assert c.call("echo", 1, timeout=5) == 1
    sp.kill(9)
    t0 = time.monotonic()
    with pytest.raises(hms.Unavailable):
        c.call("echo", 2, timeout=10)
    assert time.monotonic() - t0 < 0.1
    c.close()


def test_many_waiting_threads_all_released_on_server_death(server_process):
    sp = server_process("echo")
    c = hms.connect("py.echo")
    errs = []

    def call():
        try:
            c.call("sleep", 30, timeout=60)
        except hms.FFIError as e:
            errs.append(type(e))

    ts = [threading.Thread(target=call) for _ in range(8)]
    [t.start() for t in ts]
    time.sleep(0.2)
    sp.kill(9)
    [t.join(5) for t in ts]
    assert errs == [hms.Unavailable] * 8


def test_server_killed_fails_pending_asyncio_futures_and_batches_without_timeouts(server_process):
    """No timeout anywhere: only the kernel's hang-up can end these calls. The asyncio loop watches the
    client's event fd, which also reports the hang-up, so awaiting tasks must not hang."""
    import asyncio

    sp = server_process("echo")
    c = hms.connect("py.echo")
    out = {}

    def batch():
        out["batch"] = c.batch([("sleep", 30), ("echo", 1)])
        out["batch_at"] = time.monotonic()

    fut = c.call_async("sleep", 30)
    bt = threading.Thread(target=batch)
    bt.start()

    async def main():
        tasks = [asyncio.ensure_future(c.acall("sleep", 30)) for _ in range(20)]
        await asyncio.sleep(0.3)
        killed_at = time.monotonic()
        sp.kill(9)
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        return killed_at, time.monotonic(), results

    killed_at, done_at, results = asyncio.run(main())
    assert all(isinstance(r, hms.Unavailable) for r in results), results
    assert done_at - killed_at < 0.1
    assert isinstance(fut.exception(timeout=5), hms.Unavailable)
    bt.join(5)
    assert not bt.is_alive()
    assert all(isinstance(r, hms.Unavailable) for r in out["batch"]), out["batch"]
    assert out["batch_at"] - killed_at < 0.1

    async def after():  # a dead client fails new asyncio calls at once and the loop does not spin
        with pytest.raises(hms.Unavailable):
            await asyncio.wait_for(c.acall("echo", 1), 5)

    asyncio.run(after())
    c.close()


def test_reconnect_to_restarted_service(server_process):
    sp = server_process("echo")
    c = hms.connect("py.echo")
    sp.kill(9)
    with pytest.raises(hms.Unavailable):
        c.call("echo", 1, timeout=5)
    c.close()
    sp2 = server_process("echo")
    with hms.connect("py.echo") as c2:
        assert c2.call("echo", "back", timeout=5) == "back"
        assert c2.server_pid == sp2.pid


CLIENT_THAT_DIES = r"""
import os, sys, hms_ffi_native as hms
c = hms.connect("py.echo")
c.call("echo", 1, timeout=5)
print("connected", flush=True)
c.call("sleep", 0.3, timeout=60)   # killed while this call is in flight
"""


def test_client_killed_mid_call_server_keeps_serving_others(server_process):
    sp = server_process("echo")
    survivor = hms.connect("py.echo")
    for _ in range(5):
        p = subprocess.Popen([sys.executable, "-c", CLIENT_THAT_DIES], stdout=subprocess.PIPE, text=True,
                             env=child_env())
        assert p.stdout.readline().strip() == "connected"
        time.sleep(0.05)
        p.kill()
        p.wait(5)
        assert survivor.call("echo", "ok", timeout=5) == "ok"
    # the server dropped the dead clients' channels: its fd count returns to the baseline
    fds = lambda: len(os.listdir(f"/proc/{sp.pid}/fd"))
    base = fds()
    p = subprocess.Popen([sys.executable, "-c", CLIENT_THAT_DIES], stdout=subprocess.PIPE, text=True, env=child_env())
    assert p.stdout.readline().strip() == "connected"
    assert wait_until(lambda: fds() > base, 2)
    p.kill()
    p.wait(5)
    assert wait_until(lambda: fds() <= base, 2), (fds(), base)
    assert sp.alive()
    survivor.close()


def test_client_killed_mid_handshake_does_not_block_server(server_process, runtime_dir):
    import socket

    server_process("echo")
    # A peer that connects and never says hello, and one that says garbage: others are not disturbed.
    s1 = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s1.connect(os.path.join(runtime_dir, "py.echo@1.0.0.sock"))
    s2 = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s2.connect(os.path.join(runtime_dir, "py.echo@1.0.0.sock"))
    s2.send(b"garbage hello")
    with hms.connect("py.echo") as c:
        assert c.call("echo", 1, timeout=5) == 1
    s2.settimeout(2)
    assert s2.recv(16) == b""  # dropped
    s1.close()
    s2.close()


def test_keyboard_interrupt_stops_serve(runtime_dir):
    code = ("import hms_ffi_native as hms\n"
            "n = hms.Node('ki'); n.service('ki.svc', '1.0.0').add_function('f', lambda x: x)\n"
            "print('ready', flush=True)\n"
            "try:\n    n.serve()\nexcept KeyboardInterrupt:\n    print('interrupted', flush=True)\n"
            "n.close()\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=child_env())
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=5)
    assert "interrupted" in out
    assert p.returncode == 0
    assert hms.list_services() == []  # close() unregistered it
