"""A signal must stop Node.serve() even when it lands while the loop is busy serving (draining or
spinning, not sleeping in epoll_wait, so there is no EINTR to notice it)."""
from __future__ import annotations

import signal
import threading
import time

import hms_ffi_native as hms


def test_sigterm_stops_a_busy_server(server_process):
    for _ in range(3):
        sp = server_process("echo")  # turns SIGTERM into KeyboardInterrupt, exits 0
        c = hms.connect("py.echo")
        stop = threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    c.call("echo", b"x" * 64, timeout=5)
                except hms.FFIError:
                    return

        threads = [threading.Thread(target=hammer) for _ in range(2)]
        [t.start() for t in threads]
        time.sleep(0.3)  # the server is now busy all the time
        t0 = time.monotonic()
        sp.proc.send_signal(signal.SIGTERM)
        code = sp.proc.wait(5)  # with the signal lost, it would serve as long as the load lasts
        took = time.monotonic() - t0
        stop.set()
        [t.join(10) for t in threads]
        c.close()
        assert code == 0 and took < 2.0, (code, took)


def test_stop_requested_before_serve_returns_at_once_and_is_consumed(node):
    svc = node.service("t.stop", "1.0.0")
    svc.add_function("f", lambda x: x)
    node.stop()
    t0 = time.monotonic()
    node.serve(timeout=5)
    assert time.monotonic() - t0 < 1.0
    # consumed: the next serve runs until its timeout
    t0 = time.monotonic()
    node.serve(timeout=0.5)
    assert 0.4 < time.monotonic() - t0 < 3.0


def test_stop_from_a_handler_ends_serve(node):
    svc = node.service("t.stop2", "1.0.0")

    @svc.function()
    def quit(_):
        node.stop()
        return "bye"

    result = {}

    def call():
        time.sleep(0.2)
        with hms.connect("t.stop2") as c:
            result["r"] = c.call("quit", None, timeout=5)

    t = threading.Thread(target=call)
    t.start()
    t0 = time.monotonic()
    node.serve(timeout=10)
    assert time.monotonic() - t0 < 5
    t.join(5)
    assert result["r"] == "bye"
