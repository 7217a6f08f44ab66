"""Processes the crash matrix kills: servers, clients, publishers and subscribers.

Starting a Python interpreter that imports hms_ffi_native costs ~0.35 s on the CI machine, too much
for hundreds of rounds. So the harness starts one *zygote* (``python _peer.py zygote``) that imports
the package once and forks a child per request; a fork costs a few milliseconds. The zygote opens no
node and starts no thread before forking, so every child starts from a clean core.

Protocol (JSON lines): the harness writes ``{"req": N, "role": ROLE, ...}`` to the zygote's stdin;
the zygote answers ``{"req": N, "pid": PID}`` on stdout, and each child reports progress as
``{"pid": PID, "ev": EVENT, ...}`` on the same stdout (one short line = one atomic pipe write).
The zygote auto-reaps its children (SIGCHLD ignored); the harness watches them through pidfds. When
the harness goes away (stdin EOF) the zygote kills every child it forked and exits; children also
die with the zygote (PR_SET_PDEATHSIG).

Roles (the harness picks names and modes):
  server NAME          a node serving NAME@1.0.0: echo (idempotent), sleep, asleep (async), endless
                       (server stream), total (client stream), chat (bidirectional), bigreply (a
                       reply from a loaned arena block); "ready"
  client NAME MODE     connects to NAME and gets killed while: call (an async call waits in the
                       handler), stream (reads nothing of an endless server stream), cstream (sends a
                       client stream without end), bidi, handshake (connects and closes in a loop),
                       loan (holds replies that are the server's loaned arena blocks, a loan of its
                       own, and a pending call);
                       "inflight" once that is under way
  publisher TOPIC      publishes as fast as it can to a subscriber that does not read; "ready" once
                       a subscriber is there, "inflight" once it overwrote what the ring holds
  subscriber TOPIC     subscribes and never reads; "ready"

``python _peer.py server NAME`` runs one server directly (no zygote) and prints its "ready" line.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time

import hms_ffi_native as hms

_OUT = 1  # stdout's descriptor: children write to it with os.write (atomic lines)


def emit(**kw) -> None:
    os.write(_OUT, (json.dumps(kw, separators=(",", ":")) + "\n").encode())


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------------------------------------- roles
def bigreply(n, ctx):
    """Replies from a loaned arena block (no copy): the caller holds a view of our arena."""
    buf = ctx.loan(n)
    memoryview(buf)[:] = b"\x07" * n
    return buf


def role_server(name: str, **_) -> None:
    import asyncio

    node = hms.Node("chaos-srv", log_handler_errors=False)
    svc = node.service(name, "1.0.0")
    svc.add_function("echo", lambda x: x, idempotent=True)
    svc.add_function("pid", lambda _x: os.getpid(), idempotent=True)

    def sleep(seconds):
        time.sleep(seconds)
        return "slept"

    svc.add_function("sleep", sleep)

    async def asleep(seconds):
        await asyncio.sleep(seconds)
        return "slept"

    svc.add_function("asleep", asleep)

    def endless(_):
        i = 0
        while True:
            yield i
            i += 1

    svc.add_function("endless", endless)
    svc.add_function("total", lambda items: sum(items), client_stream=True)

    def chat(items):
        for x in items:
            yield x

    svc.add_function("chat", chat, client_stream=True)
    svc.add_function("bigreply", bigreply)
    emit(pid=os.getpid(), ev="ready")
    node.serve()


def role_client(name: str, mode: str, **_) -> None:
    node = hms.Node("chaos-cli")
    c = node.connect(name, timeout=5)
    if mode == "call":
        futs = [c.call_async("block", 30) for _ in range(3)]
        c.call("echo", 1, timeout=5)  # the async calls were written before this one was answered
        emit(pid=os.getpid(), ev="inflight")
        time.sleep(60)
        del futs
    elif mode == "stream":
        s = c.stream("endless", None)
        next(iter(s))
        emit(pid=os.getpid(), ev="inflight")
        time.sleep(60)  # reads nothing more: the server's ring fills and its producer waits for space
    elif mode in ("cstream", "bidi"):
        def items():
            i = 0
            while True:
                if i == 64:
                    emit(pid=os.getpid(), ev="inflight")
                yield i
                i += 1

        if mode == "cstream":
            c.client_stream("total", items())
        else:
            for _ in c.bidi_stream("chat", items()):
                pass
    elif mode == "loan":  # holds views of the server's arena blocks and a loan of its own
        held = [c.call("bigreply", 1 << 20, timeout=5) for _ in range(3)]
        mine = c.loan(1 << 20)
        fut = c.call_async("block", 30)
        c.call("echo", 1, timeout=5)
        emit(pid=os.getpid(), ev="inflight")
        time.sleep(60)
        del held, mine, fut
    elif mode == "handshake":
        emit(pid=os.getpid(), ev="inflight")
        while True:  # connects and disconnects until killed: some kill lands mid-handshake
            node.connect(name, timeout=5).close()
    else:
        raise SystemExit(f"unknown client mode {mode}")
    time.sleep(60)


def role_publisher(topic: str, **_) -> None:
    node = hms.Node("chaos-pub")
    pub = node.publisher(topic, capacity=64, ring_bytes=1 << 16)
    if not pub.wait_for_subscribers(1, 10):
        raise SystemExit("no subscriber came")
    emit(pid=os.getpid(), ev="ready")
    i = 0
    payload = b"p" * 200
    while True:
        pub.publish(payload)
        i += 1
        if i == 256:  # four times the capacity: the subscriber that does not read lags and loses some
            emit(pid=os.getpid(), ev="inflight")


def role_subscriber(topic: str, **_) -> None:
    node = hms.Node("chaos-sub")
    sub = node.subscribe(topic)
    deadline = time.monotonic() + 10
    while sub.publisher_count < 1 and time.monotonic() < deadline:  # connected to the publisher
        time.sleep(0.001)
    emit(pid=os.getpid(), ev="ready")
    time.sleep(60)  # never reads: a blocking publisher waits for us
    del sub


ROLES = {"server": role_server, "client": role_client, "publisher": role_publisher,
         "subscriber": role_subscriber}


# --------------------------------------------------------------------------------------------- zygote
def zygote() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps; the harness holds pidfds
    children = []
    for line in sys.stdin:
        cmd = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _die_with_parent()
                fd = os.open(os.devnull, os.O_RDONLY)
                os.dup2(fd, 0)
                os.close(fd)
                ROLES[cmd["role"]](**cmd)
            except BaseException as e:  # reported, so a child that fails to start does not look hung
                emit(pid=os.getpid(), ev="error", error=f"{type(e).__name__}: {e}")
                code = 1
            os._exit(code)
        children.append(pid)
        emit(req=cmd["req"], pid=pid)
        if len(children) > 64:
            children = [p for p in children if _alive(p)]
    for p in children:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


if __name__ == "__main__":
    # No PR_SET_PDEATHSIG here: it fires when the *thread* that started us ends (tests start servers
    # from short-lived threads). The zygote ends on stdin EOF, i.e. when the harness is gone; its
    # children (forked by its only thread) die with it.
    if sys.argv[1:] == ["zygote"]:
        zygote()
    elif len(sys.argv) >= 3 and sys.argv[1] == "server":  # one server, no zygote (tests/chaos/test_resilient.py)
        role_server(sys.argv[2])
    else:
        raise SystemExit("usage: _peer.py zygote | _peer.py server NAME")
