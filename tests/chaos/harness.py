"""Crash matrix: kill servers, clients, publishers and subscribers with SIGKILL at random points and
check what the survivor (this process) sees.

Every round picks a scenario and a kill delay from a seeded RNG (the seed is printed; HMS_CHAOS_SEED
replays the same sequence of scenarios and delays — the kill lands at the same delay, though not at
the same instruction), kills one peer and checks:

* no hang: every wait of the round is bounded, and a wait that runs out fails the round;
* every call pending on a killed server ended with UNAVAILABLE; the time from kill() to each
  completion is recorded (the distribution is reported; the test asserts a bound on it);
* a killed client or subscriber leaves the serving side (hosted in this process) healthy: another
  client is answered, a blocked publish returns, a client-stream handler waiting for items returns;
* this process's descriptors (/proc/self/fd), memfd mappings (/proc/self/maps) and threads are back to
  what they were before the round;
* the runtime directory holds no entry of a dead process once the registry looked at it;
* a restarted service is reached again by name (and it is the new process that answers).

Run it directly for long runs: ``python tests/chaos/harness.py --rounds 5000 [--seed N]`` (see
``--help``), or through pytest (tests/chaos/test_chaos.py, HMS_CHAOS_ROUNDS / HMS_CHAOS_SEED).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import hms_ffi_native as hms

HERE = Path(__file__).resolve().parent
PEER = HERE / "_peer.py"
PKG_PARENT = str(Path(hms.__file__).resolve().parent.parent)

SERVICE = "chaos.svc"   # served by a child process, killed and restarted every server round
HOST = "chaos.host"     # served by this process: the survivor when clients are killed


class RoundFailure(AssertionError):
    pass


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def memfd_maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "memfd:" in line)


def resources() -> Dict[str, int]:
    return {"fds": fd_count(), "memfd_maps": memfd_maps(), "threads": threading.active_count()}


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.002) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def percentile(xs: List[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# ----------------------------------------------------------------------------------------- processes
class Child:
    """A process forked by the zygote. Killed and watched through a pidfd (not our child)."""

    def __init__(self, zygote: "Zygote", pid: int) -> None:
        self.zygote = zygote
        self.pid = pid
        self.events: "collections.deque[dict]" = collections.deque()
        self.cond = threading.Condition()
        try:
            self.pidfd: Optional[int] = os.pidfd_open(pid)
        except ProcessLookupError:
            self.pidfd = None  # already gone: expect() reports its error event

    def expect(self, ev: str, timeout: float = 10.0) -> dict:
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                while self.events:
                    e = self.events.popleft()
                    if e["ev"] == "error":
                        raise RoundFailure(f"peer {self.pid} failed: {e.get('error')}")
                    if e["ev"] == ev:
                        return e
                left = end - time.monotonic()
                if left <= 0 or timeout == 0:
                    raise RoundFailure(f"peer {self.pid} did not report {ev!r} within {timeout} s")
                self.cond.wait(left)

    def kill(self) -> float:
        t = time.monotonic()
        if self.pidfd is not None:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        return t

    def wait_dead(self, timeout: float = 5.0) -> float:
        if self.pidfd is None:
            return time.monotonic()
        r, _, _ = select.select([self.pidfd], [], [], timeout)
        if not r:
            raise RoundFailure(f"peer {self.pid} did not die within {timeout} s of SIGKILL")
        return time.monotonic()

    def close(self) -> None:
        if self.pidfd is not None:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.close(self.pidfd)
            self.pidfd = None
        self.zygote.forget(self.pid)


class Zygote:
    def __init__(self, runtime_dir: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = PKG_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONSAFEPATH"] = "1"
        env["HMS_FFI_RUNTIME_DIR"] = runtime_dir
        self.proc = subprocess.Popen([sys.executable, str(PEER), "zygote"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, cwd=runtime_dir)
        self.lock = threading.Lock()
        self.children: Dict[int, Child] = {}
        self.early: Dict[int, List[dict]] = collections.defaultdict(list)  # events before spawn() returned
        self.replies: Dict[int, int] = {}
        self.reply_cond = threading.Condition(self.lock)
        self.req = 0
        self.reader = threading.Thread(target=self._read, name="chaos-zygote-reader", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            with self.lock:
                if "req" in msg:
                    self.replies[msg["req"]] = msg["pid"]
                    self.reply_cond.notify_all()
                    continue
                child = self.children.get(msg["pid"])
                if child is None:
                    self.early[msg["pid"]].append(msg)
                    continue
            with child.cond:
                child.events.append(msg)
                child.cond.notify_all()

    def spawn(self, role: str, **kw) -> Child:
        with self.lock:
            self.req += 1
            req = self.req
            self.proc.stdin.write((json.dumps({"req": req, "role": role, **kw}) + "\n").encode())
            self.proc.stdin.flush()
            if not self.reply_cond.wait_for(lambda: req in self.replies, 10):
                raise RoundFailure("the zygote did not fork within 10 s")
            pid = self.replies.pop(req)
        child = Child(self, pid)
        with self.lock:
            self.children[pid] = child
            child.events.extend(self.early.pop(pid, []))
        return child

    def forget(self, pid: int) -> None:
        with self.lock:
            self.children.pop(pid, None)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


# ------------------------------------------------------------------------------------------- pending
class Pending:
    """Operations that must end when the peer dies: each records when and how it ended."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: List[tuple] = []  # (label, monotonic time, exception or result)
        self.expected = 0
        self.threads: List[threading.Thread] = []

    def record(self, label: str, outcome) -> None:
        t = time.monotonic()
        with self.lock:
            self.done.append((label, t, outcome))

    def thread(self, label: str, fn: Callable[[], object]) -> None:
        self.expected += 1

        def run():
            try:
                out = fn()
            except BaseException as e:
                out = e
            self.record(label, out)

        t = threading.Thread(target=run, name=f"chaos-{label}", daemon=True)
        self.threads.append(t)
        t.start()

    def future(self, label: str, fut) -> None:
        self.expected += 1

        def cb(f):
            try:
                out = f.exception() or f.result()
            except BaseException as e:  # cancelled
                out = e
            self.record(label, out)

        fut.add_done_callback(cb)

    def wait(self, timeout: float) -> None:
        if not wait_until(lambda: len(self.done) >= self.expected, timeout, 0.001):
            with self.lock:
                finished = sorted({d[0] for d in self.done})
            raise RoundFailure(f"hang: {self.expected - len(self.done)} of {self.expected} pending operations "
                               f"did not end within {timeout} s of the kill (finished: {finished})")
        for t in self.threads:
            t.join(timeout)
            if t.is_alive():
                raise RoundFailure(f"hang: thread {t.name} did not return")


# ------------------------------------------------------------------------------------------- harness
class Harness:
    """One runtime directory, one zygote, a node that connects (client side) and a node that serves
    HOST (server side), both in this process."""

    SERVER_SCENARIOS = ["srv_sync", "srv_async", "srv_acall", "srv_batch", "srv_mixed", "srv_idle",
                        "srv_stream", "srv_cstream", "srv_bidi", "srv_handshake", "srv_loan"]
    CLIENT_SCENARIOS = ["cli_call", "cli_stream", "cli_cstream", "cli_bidi", "cli_handshake", "cli_loan"]
    TOPIC_SCENARIOS = ["pub_lagging_sub", "sub_blocking_pub"]
    # srv_loan / cli_loan: killed while arena blocks are loaned (views of the peer's blocks held, loans of
    # our own outstanding): the views stay readable, and every block and mapping goes once released.

    def __init__(self, runtime_dir: Optional[str] = None, seed: Optional[int] = None,
                 log: Callable[[str], None] = lambda s: None) -> None:
        self.own_dir = runtime_dir is None
        self.runtime_dir = runtime_dir or tempfile.mkdtemp(prefix="hmsc-", dir="/tmp")
        os.environ["HMS_FFI_RUNTIME_DIR"] = self.runtime_dir
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
        self.rng = random.Random(self.seed)
        self.log = log
        self.stats: Dict[str, List[float]] = collections.defaultdict(list)
        self.counts: Dict[str, int] = collections.Counter()
        self.zygote = Zygote(self.runtime_dir)
        self.node = hms.Node("chaos-harness", runtime_dir=self.runtime_dir)
        self.host = hms.Node("chaos-host", runtime_dir=self.runtime_dir, log_handler_errors=False)
        self._host_service()
        self.host.start()
        self.loop = asyncio.new_event_loop()
        self.loop_thread = threading.Thread(target=self.loop.run_forever, name="chaos-asyncio", daemon=True)
        self.loop_thread.start()
        self.host_client = self.node.connect(HOST, timeout=5)
        self.server: Optional[Child] = None
        self.round = 0
        self.initial: Optional[Dict[str, int]] = None

    def _host_service(self) -> None:
        svc = self.host.service(HOST, "1.0.0")
        svc.add_function("echo", lambda x: x, idempotent=True)
        state = self.host_state = {"cstream_ends": 0, "bidi_ends": 0, "stream_ends": 0,
                                   "cstream_starts": 0, "bidi_starts": 0, "stream_starts": 0}

        async def block(seconds):
            await asyncio.sleep(seconds)
            return "unblocked"

        svc.add_function("block", block)

        def endless(_):
            state["stream_starts"] += 1
            i = 0
            try:
                while True:
                    yield i
                    i += 1
            finally:
                state["stream_ends"] += 1

        svc.add_function("endless", endless)

        def total(items):
            state["cstream_starts"] += 1
            try:
                return sum(items)
            finally:
                state["cstream_ends"] += 1

        svc.add_function("total", total, client_stream=True)

        def chat(items):
            state["bidi_starts"] += 1
            try:
                for x in items:
                    yield x
            finally:
                state["bidi_ends"] += 1

        svc.add_function("chat", chat, client_stream=True)
        sys.path.insert(0, str(HERE))
        from _peer import bigreply

        svc.add_function("bigreply", bigreply)

    # -- helpers
    def _start_server(self) -> Child:
        child = self.zygote.spawn("server", name=SERVICE)
        child.expect("ready")
        return child

    def _fresh_server(self) -> Child:
        if self.server is None:
            self.server = self._start_server()
        return self.server

    def _check_registry(self, dead_pid: int) -> None:
        """Once the registry looked, no entry may name a dead process. Entries are removed on sight:
        services by any resolve or list_services(), topics by a subscription's scan."""
        hms.list_services(self.runtime_dir)
        with self.node.subscribe("chaos.*") as s:
            s.recv(timeout=0)
        stale = []
        for fn in os.listdir(self.runtime_dir):
            path = os.path.join(self.runtime_dir, fn)
            if fn.endswith(".meta") or fn.endswith(".tmeta"):
                try:
                    with open(path) as f:
                        pid = int(next(line for line in f if line.startswith("pid="))[4:])
                except (OSError, StopIteration, ValueError):
                    continue  # replaced while we read it
                if pid == dead_pid or not os.path.exists(f"/proc/{pid}"):
                    stale.append(fn)
            elif fn.endswith(".sock") and not os.path.exists(path[:-5] + ".meta"):
                stale.append(fn)
            elif ".tmp." in fn:
                stale.append(fn)
        if stale:
            raise RoundFailure(f"stale runtime-directory entries after pid {dead_pid} died: {stale}")

    def _check_resources(self, base: Dict[str, int], what: str) -> None:
        ok = wait_until(lambda: resources() == base, 2.0)
        if not ok:
            raise RoundFailure(f"{what}: resources not back to the baseline: {resources()} != {base}")

    def _kill_delay(self, hi_ms: float = 15.0) -> float:
        return self.rng.uniform(0, hi_ms) / 1000

    def _restart_and_reach(self, dead: Child) -> None:
        self._check_registry(dead.pid)
        t0 = time.monotonic()
        self.server = self._start_server()
        with self.node.connect(SERVICE, "^1", timeout=2) as c:
            if c.server_pid != self.server.pid or c.call("pid", None, timeout=2) != self.server.pid:
                raise RoundFailure(f"restarted {SERVICE} answered from pid {c.server_pid}, not {self.server.pid}")
            if c.call("echo", "back", timeout=2) != "back":
                raise RoundFailure("restarted service did not echo")
        self.stats["restart_to_reached_s"].append(time.monotonic() - t0)

    # -- server killed: the survivor is our client
    def _server_round(self, kind: str) -> None:
        srv = self._fresh_server()
        base = resources()
        c = self.node.connect(SERVICE, timeout=2)
        p = Pending()
        stream_holder: list = []
        if kind in ("srv_sync", "srv_mixed"):
            for i in range(self.rng.randint(1, 3)):
                p.thread(f"sync{i}", lambda: c.call("sleep", 30, timeout=20))
        if kind in ("srv_async", "srv_mixed"):
            for i in range(self.rng.randint(1, 8)):
                p.future(f"async{i}", c.call_async("sleep", 30, timeout=20))
        if kind in ("srv_acall", "srv_mixed"):
            for i in range(self.rng.randint(1, 8)):
                p.future(f"acall{i}", asyncio.run_coroutine_threadsafe(c.acall("asleep", 30, timeout=20), self.loop))
        if kind in ("srv_batch", "srv_mixed"):
            p.thread("batch", lambda: c.batch([("sleep", 30), ("echo", 1), ("asleep", 30)], timeout=20))
        if kind == "srv_stream":
            def read_stream():
                with c.stream("endless", None, timeout=20) as s:
                    for _ in s:
                        pass
            p.thread("stream", read_stream)
        if kind in ("srv_cstream", "srv_bidi"):
            def items():
                i = 0
                while True:
                    yield i
                    i += 1
            if kind == "srv_cstream":
                p.thread("cstream", lambda: c.client_stream("total", items(), timeout=20))
            else:
                def bidi():
                    s = c.bidi_stream("chat", items(), timeout=20)
                    stream_holder.append(s)
                    with s:
                        for _ in s:
                            pass
                p.thread("bidi", bidi)
        if kind == "srv_handshake":
            def connect_loop():
                while True:
                    cc = self.node.connect(SERVICE, timeout=2)
                    try:
                        cc.call("echo", 1, timeout=2)
                    finally:
                        cc.close()
            p.thread("handshake", connect_loop)
        views: list = []
        if kind == "srv_loan":
            views = [c.call("bigreply", 1 << 20, timeout=5) for _ in range(2)]  # the server's blocks
            views.append(c.loan(1 << 20))  # and a loan of ours, unsent
            p.future("loan-async", c.call_async("sleep", 30, timeout=20))
        if kind == "srv_idle":
            if c.call("echo", 1, timeout=2) != 1:
                raise RoundFailure("echo failed before the kill")
        time.sleep(self._kill_delay())
        t_kill = srv.kill()
        t_exit = srv.wait_dead()
        self.stats["kill_to_exit_s"].append(t_exit - t_kill)
        self.server = None
        if kind == "srv_idle":  # the next call after the death fails at once
            p.thread("idle-next", lambda: c.call("echo", 2, timeout=20))
        p.wait(10)
        for label, t, out in p.done:
            if kind == "srv_handshake":
                # The loop ends with the first failure: connecting to a dead or cleaned-up service.
                if not isinstance(out, (hms.Unavailable, hms.NotFound)):
                    raise RoundFailure(f"{kind}/{label}: connect loop ended with {out!r}")
                continue
            outs = out if (label == "batch" and isinstance(out, list)) else [out]
            for o in outs:
                if not isinstance(o, hms.Unavailable):
                    raise RoundFailure(f"{kind}/{label}: pending operation ended with {o!r}, not Unavailable")
            if label == "batch" and isinstance(out, list) and len(out) != 3:
                raise RoundFailure(f"batch returned {len(out)} results")
            self.stats["server_kill_to_unavailable_s"].append(t - t_kill)
            self.stats["server_exit_to_unavailable_s"].append(max(0.0, t - t_exit))
        self.counts["pending_calls_failed"] += len(p.done)
        t0 = time.monotonic()  # and every later call fails at once
        try:
            c.call("echo", 3, timeout=20)
            raise RoundFailure("a call on a dead connection succeeded")
        except hms.Unavailable:
            pass
        self.stats["dead_conn_next_call_s"].append(time.monotonic() - t0)
        for s in stream_holder:
            s.close()
        if views:  # the dead server's blocks are still readable: the mapping outlives the process
            for v in views[:2]:
                if bytes(memoryview(v)[:64]) != b"\x07" * 64:
                    raise RoundFailure(f"{kind}: a view of the dead server's block changed")
            views[2].release()
            for v in views[:2]:
                if hasattr(v, "release"):
                    v.release()
            del v
            views.clear()
        c.close()
        srv.close()
        base = dict(base, fds=base["fds"] - 1)  # the baseline included the dead server's pidfd
        self._check_resources(base, kind)
        self._restart_and_reach(srv)

    # -- client killed: the survivor is our serving node
    def _client_round(self, kind: str) -> None:
        mode = kind[4:]
        base = resources()
        arena = {k: v for k, v in self.host.arena_stats().items() if k in ("blocks_outstanding", "peer_blocks_held")}
        ends = dict(self.host_state)
        child = self.zygote.spawn("client", name=HOST, mode=mode)
        child.expect("inflight")
        key = {"stream": "stream", "cstream": "cstream", "bidi": "bidi"}.get(mode)
        # Kill once the handler runs: killed earlier, the server drops the connection with the opening
        # frame unread and no handler ever starts (also fine, but nothing to check).
        if key and not wait_until(lambda: self.host_state[key + "_starts"] > ends[key + "_starts"], 5):
            raise RoundFailure(f"{kind}: the host's handler did not start within 5 s")
        time.sleep(self._kill_delay())
        t_kill = child.kill()
        child.wait_dead()
        # Serving others: our own client is answered (the serving thread may first have to notice).
        t0 = time.monotonic()
        if self.host_client.call("echo", "alive", timeout=5) != "alive":
            raise RoundFailure(f"{kind}: the host did not echo after the client died")
        self.stats["client_kill_to_host_answers_s"].append(time.monotonic() - t_kill)
        key = key and key + "_ends"
        if key and not wait_until(lambda: self.host_state[key] > ends[key], 2.0):
            raise RoundFailure(f"{kind}: the handler serving the dead client did not end within 2 s")
        if key:
            self.stats["client_kill_to_handler_end_s"].append(time.monotonic() - t_kill)
        child.close()
        self._check_resources(base, kind)
        now = {k: v for k, v in self.host.arena_stats().items() if k in arena}
        if not wait_until(lambda: {k: v for k, v in self.host.arena_stats().items() if k in arena} == arena, 2.0):
            raise RoundFailure(f"{kind}: the host's arena blocks were not reclaimed: {now} != {arena}")
        self.stats["client_kill_to_resources_freed_s"].append(time.monotonic() - t_kill)
        del t0

    # -- topics
    def _topic_round(self, kind: str) -> None:
        topic = f"chaos.t{self.round}"
        base = resources()
        if kind == "pub_lagging_sub":
            sub = self.node.subscribe(topic)
            pub = self.zygote.spawn("publisher", topic=topic)
            end = time.monotonic() + 10
            while True:  # a subscription connects to new publishers while it is being read
                sub.recv(timeout=0.002)  # (it may already publish before its "ready" reached us)
                try:
                    pub.expect("ready", timeout=0)
                    break
                except RoundFailure:
                    if time.monotonic() > end:
                        raise
            pub.expect("inflight")
            time.sleep(self._kill_delay())
            t_kill = pub.kill()
            pub.wait_dead()
            got = missed = 0
            end = time.monotonic() + 5
            try:
                while time.monotonic() < end:
                    m = sub.recv(timeout=max(0.0, end - time.monotonic()))
                    if m is None:
                        break
                    got += 1
                    missed += m.missed
                raise RoundFailure(f"{kind}: the subscription did not end within 5 s of the publisher's death")
            except hms.Unavailable:
                self.stats["publisher_kill_to_subscriber_unavailable_s"].append(time.monotonic() - t_kill)
            if missed == 0:
                raise RoundFailure(f"{kind}: the subscriber never lagged (got {got}, missed 0)")
            self.counts["lagging_messages_missed"] += missed
            sub.close()
            pub.close()
            self._check_resources(base, kind)
            self._check_registry(pub.pid)
        else:
            pub = self.node.publisher(topic, capacity=16, ring_bytes=1 << 14, block=True)
            sub = self.zygote.spawn("subscriber", topic=topic)
            sub.expect("ready")
            if not pub.wait_for_subscribers(1, 5):
                raise RoundFailure(f"{kind}: subscriber did not connect")
            p = Pending()
            since: list = [None]  # when the publish in progress started
            spans: list = []  # (start, end) of every publish

            def publish_until_blocked():
                n = 0
                while True:
                    t = since[0] = time.monotonic()
                    pub.publish(b"x" * 64, timeout=20)
                    since[0] = None
                    spans.append((t, time.monotonic()))
                    n += 1
                    if time.monotonic() - t > 5:
                        return n
            p.thread("publish", publish_until_blocked)
            if not wait_until(lambda: since[0] is not None and time.monotonic() - since[0] > 0.02, 5):
                raise RoundFailure(f"{kind}: the publisher never blocked on the subscriber that does not read")
            time.sleep(self._kill_delay())
            t_kill = sub.kill()
            sub.wait_dead()
            # The blocked publish returns once the lagging subscriber is gone; then publishing goes on
            # without waiting for anybody. Stop it by closing the publisher.
            if not wait_until(lambda: pub.subscriber_count == 0, 2.0, 0.0005):
                raise RoundFailure(f"{kind}: the dead subscriber was not dropped within 2 s")
            self.stats["subscriber_kill_to_dropped_s"].append(time.monotonic() - t_kill)
            if not wait_until(lambda: any(a < t_kill < b for a, b in list(spans)), 2.0, 0.0005):
                raise RoundFailure(f"{kind}: the publish blocked on the dead subscriber did not return within 2 s")
            self.stats["subscriber_kill_to_blocked_publish_returns_s"].append(
                next(b for a, b in list(spans) if a < t_kill < b) - t_kill)
            pub.close()
            p.wait(5)
            out = p.done[0][2]
            if not isinstance(out, hms.FailedPrecondition):  # "publisher ... is closed"
                raise RoundFailure(f"{kind}: publishing ended with {out!r}")
            sub.close()
            self._check_resources(base, kind)
            self._check_registry(sub.pid)

    # -- driver
    def run_round(self) -> str:
        self.round += 1
        kind = self.rng.choice(self.SERVER_SCENARIOS + self.CLIENT_SCENARIOS + self.TOPIC_SCENARIOS)
        if self.initial is None:
            self._fresh_server()
            self.initial = resources()
        try:
            if kind.startswith("srv_"):
                self._server_round(kind)
            elif kind.startswith("cli_"):
                self._client_round(kind)
            else:
                self._topic_round(kind)
        except RoundFailure as e:
            raise RoundFailure(f"round {self.round} ({kind}, seed {self.seed}): {e}") from None
        self.counts[kind] += 1
        return kind

    def run(self, rounds: int, max_seconds: Optional[float] = None) -> None:
        t0 = time.monotonic()
        for _ in range(rounds):
            self.run_round()
            if max_seconds is not None and time.monotonic() - t0 > max_seconds:
                self.log(f"stopping after {self.round} rounds: time budget of {max_seconds} s spent")
                break
        self.counts["rounds"] = self.round
        self.counts["seconds"] = round(time.monotonic() - t0, 1)
        # Across the whole run as well: nothing crept up.
        self._fresh_server()
        self._check_resources(self.initial, "whole run")

    def summary(self) -> dict:
        out = {"seed": self.seed, "counts": dict(self.counts), "latency_ms": {}}
        for k, xs in sorted(self.stats.items()):
            ms = [x * 1000 for x in xs]
            out["latency_ms"][k[:-2] if k.endswith("_s") else k] = {
                "n": len(ms), "p50": round(percentile(ms, 50), 2), "p90": round(percentile(ms, 90), 2),
                "p99": round(percentile(ms, 99), 2), "max": round(max(ms), 2) if ms else None}
        return out

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        self.host_client.close()
        self.zygote.close()
        self.host.close()
        self.node.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.loop_thread.join(5)
        self.loop.close()
        if self.own_dir:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)


def format_summary(s: dict) -> str:
    lines = [f"chaos: seed {s['seed']} (HMS_CHAOS_SEED={s['seed']} replays it); counts {s['counts']}"]
    for k, v in s["latency_ms"].items():
        lines.append(f"  {k:45s} n={v['n']:5d}  p50={v['p50']:8.2f}  p90={v['p90']:8.2f}  "
                     f"p99={v['p99']:8.2f}  max={v['max']:8.2f} ms")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("HMS_CHAOS_ROUNDS", "1000")))
    ap.add_argument("--seed", type=int, default=int(os.environ["HMS_CHAOS_SEED"]) if os.environ.get("HMS_CHAOS_SEED") else None)
    ap.add_argument("--max-seconds", type=float, default=None, help="stop early after this long")
    ap.add_argument("--json", help="write the summary as JSON to this file")
    a = ap.parse_args(argv)
    h = Harness(seed=a.seed, log=lambda s: print(s, flush=True))
    print(f"chaos: seed {h.seed}, {a.rounds} rounds, runtime dir {h.runtime_dir}", flush=True)
    try:
        h.run(a.rounds, a.max_seconds)
    finally:
        s = h.summary()
        print(format_summary(s), flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(s, indent=2))
        h.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
