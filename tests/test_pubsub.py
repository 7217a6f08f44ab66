"""Publish/subscribe: fan-out across processes, several publishers, patterns, late joiners, slow and
dead subscribers, killed publishers, payload sizes, codecs, the event envelope, bad input, and the
C-level hostile-peer test under ASan+UBSan."""
from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

import hms_ffi_native as hms
from hms_ffi_native._native import ffi, lib
from hms_ffi_native._topic import Event, Message, Publisher, Subscription

from conftest import c_sources_present, child_env, wait_until

ROOT = Path(__file__).resolve().parent.parent
CC = os.environ.get("CC", "cc")


# ----------------------------------------------------------------------------------------------------
# child processes: `python -c` programs that print "ready" and then one JSON line of results
# ----------------------------------------------------------------------------------------------------
_PRELUDE = """
import json, os, sys, time
import hms_ffi_native as hms
from hms_ffi_native._topic import Publisher, Subscription, Event
node = hms.Node("child-%d" % os.getpid())
def out(x):
    print(json.dumps(x), flush=True)
"""

SUBSCRIBER = _PRELUDE + """
pattern, count = sys.argv[1], int(sys.argv[2])
delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
wait_go = len(sys.argv) > 4 and sys.argv[4] == "go"
sub = Subscription(node, pattern)
print("ready", flush=True)
if wait_go:
    sys.stdin.readline()
got, end = [], None
try:
    while len(got) < count:
        m = sub.recv(timeout=10 if not wait_go else 1.0)
        if m is None:
            break
        got.append([m.topic, m.seq, m.missed, m.publisher_pid, m.data if not isinstance(m.data, bytes) else m.data.hex()])
        if delay:
            time.sleep(delay)
except hms.Unavailable as e:
    end = "unavailable"
out({"got": got, "end": end, "missed": sub.missed})
sub.close()
node.close()
"""

SLOW_SUBSCRIBER = _PRELUDE + """
pattern, count, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sub = Subscription(node, pattern)
print("ready", flush=True)
got = []
while len(got) < count:
    asked = time.monotonic_ns()  # the application asks for the next message (it is done with the last)
    m = sub.recv(timeout=10)
    if m is None:
        break
    got.append({"seq": m.seq, "missed": m.missed, "data": m.data, "publish_ns": m.publish_time_ns, "asked": asked})
    time.sleep(delay)
out({"got": got, "missed": sub.missed})
sub.close()
node.close()
"""

PUBLISHER = _PRELUDE + """
topics, count = sys.argv[1].split(","), int(sys.argv[2])
wait_subs = int(sys.argv[3]) if len(sys.argv) > 3 else 0
pubs = [Publisher(node, t) for t in topics]
print("ready", flush=True)
for p in pubs:
    if wait_subs and not p.wait_for_subscribers(wait_subs, timeout=10):
        out({"error": "no subscriber"})
        sys.exit(1)
for i in range(count):
    for p in pubs:
        p.publish({"i": i, "t": p.topic, "pid": os.getpid()})
out({"published": count})
sys.stdin.readline()  # stay until told to go (or stdin closes)
for p in pubs:
    p.close()
node.close()
"""

STREAMER = _PRELUDE + """
pub = Publisher(node, sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    pub.publish(i)
    i += 1
    if i % 50 == 0:
        time.sleep(0.001)
"""


class Child:
    def __init__(self, code: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=child_env())
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.kill()
            raise RuntimeError(f"child did not start: {line!r} {self.proc.stderr.read()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def say(self, line: str = "go") -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 30):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"child said nothing; stderr: {self.proc.stderr.read()[-3000:]}")
        return json.loads(line)

    def finish(self, timeout: float = 30) -> int:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        return self.proc.wait(timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)


@pytest.fixture
def children(runtime_dir):
    started = []

    def start(code, *args):
        c = Child(code, *args)
        started.append(c)
        return c

    yield start
    for c in started:
        c.kill()


# ----------------------------------------------------------------------------------------------------
# delivery across processes
# ----------------------------------------------------------------------------------------------------
def test_one_publisher_many_subscribers_across_processes(node, children):
    n = 300
    with Publisher(node, "order.created") as pub:
        subs = [children(SUBSCRIBER, "order.created", n) for _ in range(4)]
        assert pub.wait_for_subscribers(4)
        for i in range(n):
            assert pub.publish({"i": i}) == i + 1
        results = [s.result() for s in subs]
    for r in results:
        assert [g[1] for g in r["got"]] == list(range(1, n + 1))  # every message, in order
        assert [g[4]["i"] for g in r["got"]] == list(range(n))
        assert all(g[2] == 0 for g in r["got"]) and r["missed"] == 0
        assert {g[3] for g in r["got"]} == {os.getpid()}  # publisher pid as the kernel reports it
        assert {g[0] for g in r["got"]} == {"order.created"}


def test_exact_subscriber_sees_publisher_close_after_draining(node, children):
    pub = Publisher(node, "order.closing")
    sub = children(SUBSCRIBER, "order.closing", 10_000)
    assert pub.wait_for_subscribers(1)
    for i in range(50):
        pub.publish(i)
    pub.close()  # everything published before close is still delivered, then "went away"
    r = sub.result()
    assert [g[4] for g in r["got"]] == list(range(50))
    assert r["end"] == "unavailable"


def test_two_publishers_on_one_topic(node, children):
    with Subscription(node, "order.created") as sub:
        pubs = [children(PUBLISHER, "order.created", 40, 1) for _ in range(2)]
        got = []
        while len(got) < 80:
            m = sub.recv(timeout=10)
            assert m is not None, f"only {len(got)} messages arrived"
            got.append(m)
        assert sub.publisher_count == 2
        by_pid = {}
        for m in got:
            by_pid.setdefault(m.publisher_pid, []).append(m)
        assert set(by_pid) == {p.pid for p in pubs}
        for pid, ms in by_pid.items():
            assert [m.seq for m in ms] == list(range(1, 41))  # each publisher in order
            assert [m.data["i"] for m in ms] == list(range(40))
            assert all(m.data["pid"] == pid and m.missed == 0 for m in ms)
        assert len({m.publisher_id for m in got}) == 2
        for p in pubs:
            assert p.result() == {"published": 40}
            p.finish()
        # an exact topic whose publishers all left: Unavailable, promptly, not a hang
        t0 = time.monotonic()
        with pytest.raises(hms.Unavailable, match="went away"):
            while True:
                assert sub.recv(timeout=5) is not None
        assert time.monotonic() - t0 < 2


def test_pattern_subscription(node, children):
    with Subscription(node, "order.*") as sub:
        # the publishers appear after the subscription: picked up, and read from their first message
        pub = children(PUBLISHER, "order.created,order.updated,payment.done", 5)
        assert pub.result() == {"published": 5}
        got = []
        while len(got) < 10:
            m = sub.recv(timeout=5)
            assert m is not None, f"only {len(got)} arrived: {got}"
            got.append(m)
        assert sorted({m.topic for m in got}) == ["order.created", "order.updated"]
        for t in ("order.created", "order.updated"):
            assert [m.data["i"] for m in got if m.topic == t] == list(range(5))
            assert [m.seq for m in got if m.topic == t] == list(range(1, 6))
        assert sub.recv(timeout=0.3) is None  # payment.done never arrives
        assert sub.publisher_count == 2
        pub.finish()
        # a pattern keeps waiting when its publishers leave
        assert sub.recv(timeout=0.3) is None


def test_glob_forms(node):
    pubs = [Publisher(node, t) for t in ("a.created", "b.created", "a.x.created", "order.1")]
    try:
        cases = {"*.created": {"a.created", "b.created", "a.x.created"}, "a.*": {"a.created", "a.x.created"},
                 "order.?": {"order.1"}, "[ab].created": {"a.created", "b.created"}, "*": {p.topic for p in pubs}}
        for pattern, want in cases.items():
            with Subscription(node, pattern, spin_us=0) as sub:
                for p in pubs:
                    p.publish(p.topic)
                seen = set()
                while (m := sub.recv(timeout=0.2)) is not None:
                    seen.add(m.data)
                assert seen == want, pattern
    finally:
        for p in pubs:
            p.close()


def test_publisher_appearing_later_is_picked_up(node, children):
    with Subscription(node, "late.topic") as sub:
        assert sub.recv(timeout=0.1) is None  # nobody publishes yet: just a timeout
        assert sub.publisher_count == 0
        t0 = time.monotonic()
        pub = children(PUBLISHER, "late.topic", 3)
        m = sub.recv(timeout=5)
        assert m is not None and m.data["i"] == 0 and m.seq == 1 and m.missed == 0
        assert time.monotonic() - t0 < 3
        assert [sub.recv(timeout=5).data["i"] for _ in range(2)] == [1, 2]
        assert pub.pid == m.publisher_pid
        pub.finish()
        with pytest.raises(hms.Unavailable):
            sub.recv(timeout=5)
        # ... and a restarted publisher is picked up again
        pub2 = children(PUBLISHER, "late.topic", 1)
        m = sub.recv(timeout=5)
        assert m is not None and m.publisher_pid == pub2.pid and m.seq == 1
        pub2.finish()


def test_keep_waiting_exact_topic(node):
    with Subscription(node, "kw.topic", keep_waiting=True) as sub:
        p = Publisher(node, "kw.topic")
        p.publish(1)
        assert sub.recv(timeout=2).data == 1
        p.close()
        assert sub.recv(timeout=0.2) is None  # no Unavailable: waits for the next publisher
        with Publisher(node, "kw.topic") as p2:
            p2.publish(2)
            assert sub.recv(timeout=2).data == 2


def test_late_joiner_starts_at_newest(node, children):
    pub = Publisher(node, "late.join")
    for i in range(5):
        pub.publish(i)
    sub = children(SUBSCRIBER, "late.join", 3)
    assert pub.wait_for_subscribers(1)
    for i in range(5, 8):
        pub.publish(i)
    r = sub.result()
    assert [g[4] for g in r["got"]] == [5, 6, 7]  # nothing from before it subscribed
    assert [g[1] for g in r["got"]] == [6, 7, 8]
    assert [g[2] for g in r["got"]] == [0, 0, 0]  # and it did not "miss" the older ones
    pub.close()


def test_slow_subscriber_is_told_exactly_how_many_it_missed(node, children):
    n, cap = 100, 8
    with Publisher(node, "slow.topic", capacity=cap) as pub:
        assert pub.capacity == cap
        sub = children(SUBSCRIBER, "slow.topic", n, 0, "go")  # sleeps until "go"
        assert pub.wait_for_subscribers(1)
        for i in range(n):
            pub.publish(i)
        sub.say("go")
        r = sub.result()
    got = r["got"]
    seqs = [g[1] for g in got]
    missed = [g[2] for g in got]
    assert len(got) == cap  # only what the ring holds is left
    assert sum(missed) + len(got) == n and r["missed"] == sum(missed) == n - cap
    assert seqs == list(range(n - cap + 1, n + 1))
    prev = 0
    for s, m, g in zip(seqs, missed, got):
        assert s == prev + m + 1  # every gap is accounted for
        assert g[4] == s - 1
        prev = s


def test_slow_subscriber_with_small_ring_bytes(node):
    # here the data bytes, not the slots, limit what the ring keeps
    with Publisher(node, "bytes.topic", capacity=1024, ring_bytes=4096) as pub, \
            Subscription(node, "bytes.topic", spin_us=0) as sub:
        for i in range(50):
            pub.publish(bytes([i]) * 200)
        got = []
        while (m := sub.recv(timeout=0.1)) is not None:
            got.append(m)
        assert 0 < len(got) < 50
        assert sum(m.missed for m in got) + len(got) == 50
        assert all(m.data == bytes([m.seq - 1]) * 200 for m in got)


def test_blocking_publisher_waits_for_slow_subscriber(node, children):
    # The blocking contract: a publisher never gets more than `capacity` messages ahead of what the
    # slowest subscriber's application has taken (been handed by recv). So message k may only be
    # published after the application asked for message k - capacity: the recv call that hands it
    # over begins at `asked`, and publish_time_ns is stamped by the core after the publisher's wait
    # (both CLOCK_MONOTONIC). Checked for every message, this is exact and needs no timing margin;
    # the old core failed it every time (Subscription reads batches ahead of the application and the
    # core showed the publisher the batch's cursor at once).
    n, cap, delay = 40, 4, 0.005
    with Publisher(node, "block.topic", capacity=cap, block=True) as pub:
        assert pub.capacity == cap
        sub = children(SLOW_SUBSCRIBER, "block.topic", n, delay)
        assert pub.wait_for_subscribers(1)
        t0 = time.monotonic_ns()
        for i in range(n):
            pub.publish(i, timeout=10)
        elapsed = time.monotonic_ns() - t0
        r = sub.result()
    got = r["got"]
    assert [g["data"] for g in got] == list(range(n))
    assert [g["seq"] for g in got] == list(range(1, n + 1))
    assert r["missed"] == 0 and all(g["missed"] == 0 for g in got)
    asked = {g["seq"]: g["asked"] for g in got}
    early = [(g["seq"], (asked[g["seq"] - cap] - g["publish_ns"]) / 1e6) for g in got
             if g["seq"] > cap and g["publish_ns"] < asked[g["seq"] - cap]]
    assert not early, f"(seq, ms too early) published more than {cap} ahead of the application: {early}"
    # Hence (the application sleeps `delay` after each message, from message 2 on after t0):
    assert elapsed >= (n - cap - 2) * delay * 1e9, elapsed / 1e9


def test_blocking_publisher_is_not_held_by_a_dead_subscriber(node, children):
    with Publisher(node, "block.dead", capacity=4, block=True) as pub:
        sub = children(SUBSCRIBER, "block.dead", 1000, 0, "go")  # connected but never reads
        assert pub.wait_for_subscribers(1)
        for i in range(4):
            pub.publish(i, timeout=1)  # the ring holds 4
        t0 = time.monotonic()
        with pytest.raises(hms.DeadlineExceeded, match="behind"):
            pub.publish(4, timeout=0.1)  # stuck subscriber: bounded wait, nothing published
        assert 0.09 < time.monotonic() - t0 < 2
        assert pub.last_seq == 4
        result = {}

        def blocked():
            t = time.monotonic()
            try:
                result["seq"] = pub.publish(5, timeout=30)
            except hms.FFIError as e:
                result["err"] = e
            result["at"] = time.monotonic()

        th = threading.Thread(target=blocked)
        th.start()
        time.sleep(0.2)
        assert th.is_alive()  # waiting for the slow subscriber
        killed = time.monotonic()
        sub.kill()
        th.join(5)
        assert result.get("seq") == 5, result
        assert result["at"] - killed < 0.5
        assert pub.subscriber_count == 0
        pub.publish(6, timeout=0.1)  # and nothing holds it any more


def test_publisher_killed_mid_stream_gives_unavailable_within_100ms(node, children):
    pub = children(STREAMER, "stream.topic")
    with Subscription(node, "stream.topic") as sub:
        got = []
        while len(got) < 200:
            m = sub.recv(timeout=5)
            assert m is not None
            got.append(m.data)
        assert got == list(range(got[0], got[0] + 200))
        killed = time.monotonic()
        pub.kill(signal.SIGKILL)
        with pytest.raises(hms.Unavailable) as ei:
            while True:
                m = sub.recv(timeout=5)
                assert m is not None, "timed out instead of Unavailable"
        elapsed = time.monotonic() - killed
        assert elapsed < 0.1, elapsed
        assert str(pub.pid) in ei.value.message
        # it stays unavailable, at once
        t0 = time.monotonic()
        with pytest.raises(hms.Unavailable):
            sub.recv(timeout=5)
        assert time.monotonic() - t0 < 0.1


def test_dead_publisher_entries_are_removed(node, children, runtime_dir):
    pub = children(STREAMER, "gone.topic")
    names = os.listdir(runtime_dir)
    assert any(n.endswith(".tmeta") and n.startswith("gone.topic@") for n in names)
    assert any(n.endswith(".topic") for n in names)
    pub.kill()
    with Subscription(node, "gone.*") as sub:  # a scan removes the dead process's entries
        assert sub.publisher_count == 0
    assert not [n for n in os.listdir(runtime_dir) if n.startswith("gone.topic@")]


def test_publisher_close_removes_its_entries(node, runtime_dir):
    pub = Publisher(node, "tidy.topic")
    assert [n for n in os.listdir(runtime_dir) if n.startswith("tidy.topic@")]
    pub.close()
    assert not [n for n in os.listdir(runtime_dir) if n.startswith("tidy.topic@")]


# ----------------------------------------------------------------------------------------------------
# payloads, codecs, the event envelope
# ----------------------------------------------------------------------------------------------------
def test_large_and_oversize_payloads(node, children):
    with Publisher(node, "big.topic", ring_bytes=8 << 20) as pub:
        assert pub.max_message == 2 << 20
        sub = children(SUBSCRIBER, "big.topic", 2)
        assert pub.wait_for_subscribers(1)
        big = os.urandom(pub.max_message)
        pub.publish(big)
        pub.publish(b"")
        r = sub.result()
        assert bytes.fromhex(r["got"][0][4]) == big
        assert r["got"][1][4] == ""
        with pytest.raises(hms.ResourceExhausted, match="ring_bytes") as ei:
            pub.publish(b"x" * (pub.max_message + 1))
        assert "arena" in ei.value.message
        assert pub.last_seq == 2  # nothing was published
    with Publisher(node, "default.topic") as pub:
        assert pub.max_message == 256 << 10
        with pytest.raises(hms.ResourceExhausted):
            pub.publish(b"x" * (300 << 10))


class Color(enum.Enum):
    RED = "red"


@pytest.mark.parametrize("value, expected", [
    (None, None), (True, True), (False, False), (0, 0), (-1, -1), (2**100, 2**100), (-(2**70), -(2**70)),
    (1.5, 1.5), ("text", "text"), ("ü€𝄞", "ü€𝄞"), (b"\x00\xffraw", b"\x00\xffraw"),
    (bytearray(b"ba"), b"ba"), (memoryview(b"mv"), b"mv"), ([1, [2, "3"]], [1, [2, "3"]]), ((1, 2), [1, 2]),
    ({"a": {"b": [1, None]}}, {"a": {"b": [1, None]}}), ({1, 2}, {1, 2}), (frozenset({"x"}), {"x"}),
    (dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc),
     dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)),
    (decimal.Decimal("12.34"), decimal.Decimal("12.34")),
    (uuid.UUID("12345678-1234-5678-1234-567812345678"), uuid.UUID("12345678-1234-5678-1234-567812345678")),
    (Color.RED, "red"), ({"nested": [b"bytes", {1, 2}]}, {"nested": [b"bytes", {1, 2}]}),
])
def test_every_codec_type_round_trips(node, value, expected):
    with Publisher(node, "codec.topic") as pub, Subscription(node, "codec.topic") as sub:
        pub.publish(value)
        m = sub.recv(timeout=2)
        assert isinstance(m, Message)
        assert m.data == expected and type(m.data) is type(expected)


def test_json_and_raw_codecs(node):
    with Publisher(node, "json.topic", codec="json") as pub, Subscription(node, "json.topic") as sub:
        pub.publish({"k": [1, "two"], "when": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)})
        m = sub.recv(timeout=2)
        assert m.content_type == lib.HMS_CT_JSON
        assert m.data == {"k": [1, "two"], "when": "2026-01-01T00:00:00+00:00"}
        pub.publish(b"raw bytes", codec="raw")
        assert sub.recv(timeout=2).data == b"raw bytes"
        with pytest.raises(hms.InvalidArgument, match="JSON"):
            pub.publish({b"bytes-key"})


def test_event_envelope(node, children):
    with Publisher(node, "order.events") as pub, Subscription(node, "order.*") as sub:
        ts = dt.datetime(2026, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
        eid = pub.publish_event("order.created", {"order_id": 42, "items": [{"sku": "A", "qty": 2}]},
                                source="oms", correlation_id="corr-1", user_id="user-9", timestamp=ts)
        uuid.UUID(eid)  # a uuid4 string
        ev = sub.recv(timeout=2)
        assert isinstance(ev, Event)
        assert ev.id == eid and ev.type == "order.created" and ev.timestamp == ts
        assert ev.data == {"order_id": 42, "items": [{"sku": "A", "qty": 2}]}
        assert (ev.source, ev.correlation_id, ev.user_id) == ("oms", "corr-1", "user-9")
        assert (ev.topic, ev.seq, ev.missed, ev.publisher_pid) == ("order.events", 1, 0, os.getpid())
        # defaults: fresh id, now (UTC), empty metadata
        before = dt.datetime.now(dt.timezone.utc)
        eid2 = pub.publish_event("order.updated")
        ev2 = sub.recv(timeout=2)
        assert ev2.id == eid2 != eid and ev2.data is None
        assert before - dt.timedelta(seconds=1) <= ev2.timestamp <= dt.datetime.now(dt.timezone.utc)
        assert (ev2.source, ev2.correlation_id, ev2.user_id) == (None, None, None)
        # a plain publish on the same topic is still a Message
        pub.publish({"plain": True})
        assert isinstance(sub.recv(timeout=2), Message)


def test_event_envelope_wire_format_is_the_integration_guides(node):
    """What a Go/PHP/TypeScript peer decodes: {id, type, timestamp, data, metadata: {source,
    correlationId, userId}} with the HMS_MSG_EVENT flag, read here through the raw C API."""
    import cbor2

    with Publisher(node, "wire.events") as pub:
        err = ffi.new("hms_error_t *")
        out = ffi.new("hms_subscription_t **")
        assert lib.hms_subscribe(node._ptr, b"wire.events", ffi.NULL, out, err) == 0
        try:
            pub.publish_event("stock.low", {"sku": "A"}, source="inv", correlation_id="c", user_id="u")
            msg = ffi.new("hms_message_t *")
            assert lib.hms_subscription_recv(out[0], msg, 2_000_000_000, err) == 0
            assert msg.flags & lib.HMS_MSG_EVENT
            assert msg.payload.content_type == lib.HMS_CT_CBOR
            wire = cbor2.loads(ffi.buffer(msg.payload.data, msg.payload.len)[:])
            lib.hms_message_release(msg)
            assert set(wire) == {"id", "type", "timestamp", "data", "metadata"}
            assert wire["metadata"] == {"source": "inv", "correlationId": "c", "userId": "u"}
            assert isinstance(wire["timestamp"], dt.datetime) and wire["data"] == {"sku": "A"}
        finally:
            lib.hms_subscription_close(out[0])
    with Publisher(node, "wire.json", codec="json") as pub, Subscription(node, "wire.json") as sub:
        pub.publish_event("x.y", [1], user_id="u")
        ev = sub.recv(timeout=2)
        assert isinstance(ev, Event) and ev.data == [1] and ev.user_id == "u"
        assert ev.timestamp.tzinfo is not None


# ----------------------------------------------------------------------------------------------------
# handles, threads, event loops, bad input
# ----------------------------------------------------------------------------------------------------
def test_iteration_blocks_and_ends_when_publishers_leave(node):
    pub = Publisher(node, "iter.topic")
    sub = Subscription(node, "iter.topic")

    def produce():
        for i in range(20):
            pub.publish(i)
            time.sleep(0.001)
        pub.close()

    th = threading.Thread(target=produce)
    th.start()
    assert [m.data for m in sub] == list(range(20))
    th.join()
    sub.close()


def test_close_interrupts_a_blocked_recv(node):
    sub = Subscription(node, "quiet.topic")
    result = {}

    def wait():
        try:
            result["m"] = sub.recv(timeout=None)
        except hms.FFIError as e:
            result["e"] = e

    th = threading.Thread(target=wait)
    th.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    sub.close()
    th.join(2)
    assert not th.is_alive() and time.monotonic() - t0 < 1
    assert isinstance(result.get("e"), hms.Cancelled)
    with pytest.raises(hms.FailedPrecondition, match="closed"):
        sub.recv(timeout=0)
    sub.close()  # idempotent


def test_interrupt_and_signals(node):
    with Subscription(node, "intr.topic") as sub:
        threading.Timer(0.1, sub.interrupt).start()
        with pytest.raises(hms.Cancelled):
            sub.recv(timeout=5)
        # a signal wakes the wait, Python runs the handler (which raises here), nothing hangs
        old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            t0 = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                sub.recv(timeout=5)
            assert time.monotonic() - t0 < 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert sub.recv(timeout=0.01) is None  # still usable


def test_fileno_for_event_loops(node):
    with Publisher(node, "fd.topic") as pub, Subscription(node, "fd.topic") as sub:
        assert sub.recv(timeout=0) is None  # arms the descriptor
        r, _, _ = select.select([sub], [], [], 0.05)
        assert r == []
        threading.Timer(0.05, pub.publish, args=("hello",)).start()
        r, _, _ = select.select([sub], [], [], 2)
        assert r == [sub]
        assert sub.recv(timeout=0).data == "hello"


def test_recv_many_and_batches_across_publishers(node):
    with Publisher(node, "many.a") as a, Publisher(node, "many.b") as b, \
            Subscription(node, "many.*") as sub:
        assert sub.recv_many(timeout=0.05) == []
        for i in range(600):
            a.publish(i)
            b.publish(b"%d" % i)
        got = sub.recv_many(1000, timeout=1)
        assert 0 < len(got) <= 512  # whatever is there, one core batch at a time
        while len(got) < 1200:
            more = sub.recv_many(1000, timeout=1)
            assert more, len(got)
            got += more
        assert [m.data for m in got if m.topic == "many.a"] == list(range(600))
        assert [m.data for m in got if m.topic == "many.b"] == [b"%d" % i for i in range(600)]
        # fairness: both publishers are served from the start, not one after the other
        assert {m.topic for m in got[:100]} == {"many.a", "many.b"}
        with pytest.raises(hms.InvalidArgument):
            sub.recv_many(0)


def test_many_threads_publish_on_one_publisher(node):
    with Publisher(node, "mt.topic", capacity=4096) as pub, Subscription(node, "mt.topic") as sub:
        def worker(k):
            for i in range(200):
                pub.publish([k, i])

        ths = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        got = [sub.recv(timeout=2) for _ in range(800)]
        assert [m.seq for m in got] == list(range(1, 801))
        for k in range(4):
            assert [m.data[1] for m in got if m.data[0] == k] == list(range(200))


def test_max_subscribers_refusal_is_reported_once(node):
    with Publisher(node, "full.topic", max_subscribers=1) as pub:
        s1 = Subscription(node, "full.topic")
        s2 = Subscription(node, "full.topic")
        with pytest.raises(hms.ResourceExhausted, match="max_subscribers"):
            s2.recv(timeout=0.1)
        assert s2.recv(timeout=0.05) is None  # reported once; the subscription goes on
        pub.publish(1)
        assert s1.recv(timeout=2).data == 1
        s1.close()
        s2.close()


@pytest.mark.parametrize("bad", ["", "a b", ".hidden", "-dash", "x" * 128, "ü", "a/b", "a@b", "order.*"])
def test_bad_topic_names(node, bad):
    with pytest.raises(hms.InvalidArgument, match="topic"):
        Publisher(node, bad)


@pytest.mark.parametrize("bad", ["", "a b", ".hidden", "x" * 128, "ü", "a/b", "a@b"])
def test_bad_patterns(node, bad):
    with pytest.raises(hms.InvalidArgument, match="topic pattern"):
        Subscription(node, bad)


def test_bad_arguments(node):
    for kw in ({"capacity": 0}, {"capacity": "8"}, {"capacity": True}, {"capacity": 1 << 21},
               {"ring_bytes": 1000}, {"ring_bytes": -1}, {"ring_bytes": 1 << 40}, {"max_subscribers": 5000},
               {"codec": "xml"}, {"spin_us": -1}):
        with pytest.raises(hms.InvalidArgument):
            Publisher(node, "bad.args", **kw)
    with pytest.raises(hms.InvalidArgument, match="Node"):
        Publisher("not a node", "x")
    with pytest.raises(hms.InvalidArgument, match="Node"):
        Subscription(None, "x")
    with pytest.raises(hms.InvalidArgument, match="str"):
        Publisher(node, 42)
    with pytest.raises(hms.InvalidArgument, match="str"):
        Subscription(node, b"bytes")
    with Publisher(node, "ok.topic") as pub:
        with pytest.raises(hms.InvalidArgument, match="CBOR"):
            pub.publish(object())
        with pytest.raises(hms.InvalidArgument, match="raw"):
            pub.publish({"a": 1}, codec="raw")
        with pytest.raises(hms.InvalidArgument, match="timeout"):
            pub.publish(1, timeout=-1)
        with pytest.raises(hms.InvalidArgument, match="event type"):
            pub.publish_event(5)
        with pytest.raises(hms.InvalidArgument, match="source"):
            pub.publish_event("t", source=5)
        with pytest.raises(hms.InvalidArgument, match="timestamp"):
            pub.publish_event("t", timestamp="yesterday")
        with Subscription(node, "ok.topic") as sub:
            with pytest.raises(hms.InvalidArgument, match="timeout"):
                sub.recv(timeout="soon")
    pub.close()
    with pytest.raises(hms.FailedPrecondition, match="closed"):
        pub.publish(1)
    assert pub.subscriber_count == 0 and "closed" in repr(pub)
    closed = hms.Node("closed")
    closed.close()
    with pytest.raises(hms.FailedPrecondition, match="closed"):
        Publisher(closed, "x")
    with pytest.raises(hms.FailedPrecondition, match="closed"):
        Subscription(closed, "x")


def test_c_api_null_and_options_checks(node):
    err = ffi.new("hms_error_t *")
    out = ffi.new("hms_publisher_t **")
    assert lib.hms_publisher_open(ffi.NULL, b"x", ffi.NULL, out, err) == lib.HMS_INVALID_ARGUMENT
    opts = ffi.new("hms_publisher_options_t *")
    lib.hms_publisher_options_init(opts)
    opts.version = 99
    assert lib.hms_publisher_open(node._ptr, b"x", opts, out, err) == lib.HMS_INVALID_ARGUMENT
    assert b"version" in ffi.string(err.message)
    lib.hms_publisher_options_init(opts)
    opts.flags = 0x80
    assert lib.hms_publisher_open(node._ptr, b"x", opts, out, err) == lib.HMS_INVALID_ARGUMENT
    assert lib.hms_publish(ffi.NULL, b"", 0, 0, 0, 0, ffi.NULL, err) == lib.HMS_INVALID_ARGUMENT
    sout = ffi.new("hms_subscription_t **")
    sopts = ffi.new("hms_subscribe_options_t *")
    lib.hms_subscribe_options_init(sopts)
    sopts.flags = 0x80
    assert lib.hms_subscribe(node._ptr, b"x", sopts, sout, err) == lib.HMS_INVALID_ARGUMENT
    msg = ffi.new("hms_message_t *")
    assert lib.hms_subscription_recv(ffi.NULL, msg, 0, err) == lib.HMS_INVALID_ARGUMENT
    lib.hms_publisher_close(ffi.NULL)
    lib.hms_subscription_close(ffi.NULL)
    lib.hms_message_release(ffi.NULL)
    lib.hms_message_release(msg)  # an empty message: no-op
    assert lib.hms_subscription_fd(ffi.NULL) == -1
    with Publisher(node, "flags.topic") as pub:
        assert lib.hms_publish(pub._ptr, b"x", 1, 1, 0x80, 0, ffi.NULL, err) == lib.HMS_INVALID_ARGUMENT


def test_subscription_survives_its_node(runtime_dir):
    n = hms.Node("short-lived")
    pub = Publisher(n, "outlive.topic")
    sub = Subscription(n, "outlive.*")
    n.close()  # handles copy what they need at open
    pub.publish(1)
    assert sub.recv(timeout=2).data == 1
    with Publisher(hms.Node("other"), "outlive.two") as p2:
        p2.publish(2)
        assert sub.recv(timeout=2).data == 2
    sub.close()
    pub.close()


def test_no_descriptor_or_thread_leaks(node):
    def fds():
        return len(os.listdir("/proc/self/fd"))

    with Publisher(node, "warm.topic") as p, Subscription(node, "warm.topic") as s:  # warm up lazy state
        p.publish(0)
        s.recv(timeout=1)
    def tasks():
        return len(os.listdir(f"/proc/{os.getpid()}/task"))

    before, threads, os_threads = fds(), threading.active_count(), tasks()
    for i in range(20):
        pub = Publisher(node, "leak.topic", block=(i % 2 == 0))
        subs = [Subscription(node, "leak.*") for _ in range(3)]
        pub.publish(i)
        for s in subs:
            assert s.recv(timeout=2).data == i
        if i % 3 == 0:
            pub.close()  # publisher first: subscribers drain and see it leave
            for s in subs:
                s.close()
        else:
            for s in subs:
                s.close()
            pub.close()
    assert wait_until(lambda: fds() == before, timeout=2), (before, fds())
    assert threading.active_count() == threads
    assert tasks() == os_threads  # every publisher's accept thread was joined


def test_subscriber_and_publisher_idle_use_no_cpu(node):
    with Publisher(node, "idle.topic") as pub, Subscription(node, "idle.*") as sub:
        t0 = time.process_time()
        assert sub.recv(timeout=0.5) is None
        used = time.process_time() - t0
        assert used < 0.05, used  # asleep in epoll, not polling
        assert pub.subscriber_count == 1


# ----------------------------------------------------------------------------------------------------
# hostile peers in C, under ASan + UBSan
# ----------------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which(CC) is None, reason=f"no C compiler ({CC})")
@pytest.mark.skipif(not c_sources_present() or not (ROOT / "tests" / "c" / "hms_topic_test.c").exists(),
                    reason="C sources not present (testing an installed wheel)")
def test_hostile_topic_peers_under_asan_ubsan(tmp_path, runtime_dir):
    srcs = sorted(str(p) for p in (ROOT / "csrc").glob("*.c"))
    exe = tmp_path / "hms_topic_test"
    cmd = [CC, "-std=gnu11", "-g", "-O1", "-Wall", "-Wextra", "-Wno-format-truncation", "-D_GNU_SOURCE", "-pthread",
           "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all",
           "-DHMS_FFI_BUILDING=1", f"-I{ROOT / 'include'}", f"-I{ROOT / 'csrc'}", *srcs,
           str(ROOT / "tests" / "c" / "hms_topic_test.c"), "-o", str(exe)]
    b = subprocess.run(cmd, capture_output=True, text=True)
    assert b.returncode == 0, b.stderr[-4000:]
    env = child_env(ASAN_OPTIONS="detect_leaks=1:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "all topic tests passed" in r.stdout
