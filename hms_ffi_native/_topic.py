"""Topics: publish/subscribe across processes over broadcast rings in shared memory.

    pub = Publisher(node, "order.created")            # or node.publisher("order.created")
    pub.publish({"id": 7})                              # raw for bytes, CBOR for other values
    pub.publish_event("order.created", {"id": 7}, source="oms", correlation_id="c-1", user_id="u-9")

    with Subscription(node, "order.*") as sub:        # or node.subscribe("order.*")
        for msg in sub:                                 # blocks; Message or Event
            print(msg.topic, msg.seq, msg.missed, msg.data)

Semantics (see hms_ffi.h, "Topics"): per publisher, messages arrive in order; a subscriber that falls
more than the ring holds behind loses the oldest ones and is told how many (``missed``), unless the
publisher was opened with ``block=True``, which makes ``publish`` wait for lagging subscribers: it
never gets more than ``capacity`` messages ahead of what the slowest subscriber's application has
taken, i.e. been handed by ``recv``/``recv_many`` (a batch a Subscription fetched but has not handed
out yet does not count; see :class:`Subscription`).
A subscription only sees messages published after it was created; it picks up publishers that
appear later. For an exact topic, ``recv`` raises ``Unavailable`` once every publisher went away and
everything they published was delivered (iteration simply ends); patterns keep waiting.

Threads: a ``Publisher`` may be shared between threads (publishes are serialized). A
``Subscription`` is read by one thread at a time (``recv`` calls are serialized); ``close()`` from
another thread interrupts a blocked ``recv`` (which raises ``Cancelled``). The GIL is released while
publishing and while waiting.
"""
from __future__ import annotations

import collections
import datetime as _dt
import errno as _errno
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Union

from ._codec import CODECS, CT_RAW, decode, encode
from ._core import Node, _raise, _spin_ns, _timeout_ns
from ._errors import Cancelled, FailedPrecondition, InvalidArgument, Unavailable
from ._native import ffi, lib

__all__ = ["Publisher", "Subscription", "Message", "Event", "EventMetadata"]

_UTC = _dt.timezone.utc
_MSG_EVENT = lib.HMS_MSG_EVENT
_DEADLINE_EXCEEDED = lib.HMS_DEADLINE_EXCEEDED
_CANCELLED = lib.HMS_CANCELLED
_OUT_OF_RANGE = lib.HMS_OUT_OF_RANGE
_BATCH = 256  # messages taken from the core per call


def _info_struct() -> struct.Struct:
    """struct layout of hms_message_info_t, checked field by field against the compiler's (cffi's)
    offsets, so a header change fails loudly here instead of decoding garbage."""
    fields = [("seq", "Q"), ("missed", "Q"), ("publisher_id", "Q"), ("publish_time_ns", "q"),
              ("payload_offset", "Q"), ("payload_len", "Q"), ("topic_offset", "I"), ("topic_len", "I"),
              ("content_type", "I"), ("flags", "I"), ("publisher_pid", "i"), ("reserved", "I")]
    st = struct.Struct("=" + "".join(f for _, f in fields))
    off = 0
    for name, f in fields:
        if ffi.offsetof("hms_message_info_t", name) != off:
            raise ImportError(f"hms_message_info_t.{name} is not at offset {off}: rebuild hms_ffi_native")
        off += struct.calcsize("=" + f)
    if st.size != ffi.sizeof("hms_message_info_t"):
        raise ImportError("hms_message_info_t changed size: rebuild hms_ffi_native")
    return st


_INFO = _info_struct()


# ----------------------------------------------------------------------------------------------------
# What subscribers receive
# ----------------------------------------------------------------------------------------------------
@dataclass
class Message:
    """One message as received.

    ``missed`` counts this publisher's messages that were lost just before this one (the subscriber
    fell behind by more than the ring holds); ``seq`` numbers a publisher's messages from 1, so
    ``seq`` - previous ``seq`` - 1 == ``missed``. ``publish_time_ns`` is CLOCK_MONOTONIC at publish
    (``time.monotonic_ns()`` in any process on the host).
    """

    __slots__ = ("topic", "data", "seq", "missed", "publisher_pid", "publisher_id", "content_type",
                 "publish_time_ns")
    topic: str
    data: Any
    seq: int
    missed: int
    publisher_pid: int
    publisher_id: int
    content_type: int
    publish_time_ns: int


@dataclass(frozen=True)
class EventMetadata:
    source: Optional[str] = None
    correlation_id: Optional[str] = None
    user_id: Optional[str] = None


@dataclass(frozen=True)
class Event:
    """An event envelope (integration guide, "Event Structure") plus where it came from.

    On the wire (CBOR, or JSON with ``codec="json"``) it is the guide's structure, so peers in any
    language read it as such: ``{"id", "type", "timestamp", "data", "metadata": {"source",
    "correlationId", "userId"}}``. The message carries the HMS_MSG_EVENT flag.
    """

    id: str
    type: str
    timestamp: _dt.datetime
    data: Any
    metadata: EventMetadata
    topic: str
    seq: int
    missed: int
    publisher_pid: int
    publisher_id: int = 0
    publish_time_ns: int = 0

    @property
    def source(self) -> Optional[str]:
        return self.metadata.source

    @property
    def correlation_id(self) -> Optional[str]:
        return self.metadata.correlation_id

    @property
    def user_id(self) -> Optional[str]:
        return self.metadata.user_id


def _opt_str(name: str, value: Any) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    raise InvalidArgument(f"{name} must be a str or None, got {type(value).__name__}")


def _check_name(kind: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise InvalidArgument(f"{kind} must be a str, got {type(value).__name__}")
    try:
        return value.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{kind} {value!r} is invalid: use characters of [A-Za-z0-9_.-]") from None


def _int_opt(name: str, value: Any, *, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidArgument(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


# ----------------------------------------------------------------------------------------------------
# Publishing
# ----------------------------------------------------------------------------------------------------
class Publisher:
    """Publishes on one topic. Opening it makes the topic discoverable; several publishers (in any
    processes) may share a topic, and a subscriber reads them all.

    ``capacity``: messages the ring keeps for slow subscribers (rounded up to a power of two).
    ``ring_bytes``: payload bytes it keeps (power of two; 0 = 1 MiB); the largest message is
    ``ring_bytes // 4`` (``max_message``). ``codec``: how ``publish`` encodes values (None: raw for
    bytes, CBOR for the rest; ``"json"``; ``"cbor"``; ``"raw"``). ``block=True``: ``publish`` waits
    (up to its ``timeout``) instead of overwriting messages a live subscriber has not taken, so it is
    never more than ``capacity`` messages ahead of what any live subscriber's ``recv`` has returned.
    """

    def __init__(self, node: Node, topic: str, *, capacity: int = 1024, ring_bytes: int = 0,
                 codec: Optional[str] = None, block: bool = False, max_subscribers: int = 0,
                 spin_us: Optional[float] = None) -> None:
        if not isinstance(node, Node):
            raise InvalidArgument(f"node must be a hms_ffi_native.Node, got {type(node).__name__}")
        node._check_open()
        btopic = _check_name("topic", topic)
        if codec is not None and codec not in CODECS:
            raise InvalidArgument(f"unknown codec {codec!r}; use one of {sorted(CODECS)}")
        if _int_opt("capacity", capacity, minimum=1) > lib.HMS_TOPIC_MAX_CAPACITY:
            raise InvalidArgument(f"capacity {capacity} exceeds the maximum of {lib.HMS_TOPIC_MAX_CAPACITY}")
        if _int_opt("ring_bytes", ring_bytes) > lib.HMS_RING_MAX_BYTES:
            raise InvalidArgument(f"ring_bytes {ring_bytes} exceeds the maximum of {lib.HMS_RING_MAX_BYTES}")
        if _int_opt("max_subscribers", max_subscribers) > lib.HMS_TOPIC_MAX_SUBSCRIBERS:
            raise InvalidArgument(f"max_subscribers {max_subscribers} exceeds the maximum of "
                                  f"{lib.HMS_TOPIC_MAX_SUBSCRIBERS}")
        opts = ffi.new("hms_publisher_options_t *")
        lib.hms_publisher_options_init(opts)
        opts.capacity = capacity
        opts.ring_bytes = ring_bytes
        opts.max_subscribers = max_subscribers
        opts.flags = lib.HMS_PUBLISHER_BLOCK if block else 0
        opts.spin_ns = _spin_ns(spin_us)
        out = ffi.new("hms_publisher_t **")
        err = ffi.new("hms_error_t *")
        st = lib.hms_publisher_open(node._ptr, btopic, opts, out, err)
        if st:
            _raise(st, err)
        self._ptr = out[0]
        self._node = node
        self._lock = threading.Lock()  # close() must not free the publisher under a publish
        self._state = threading.Lock()  # guards _ptr for the quick getters (never held while waiting)
        self._err = ffi.new("hms_error_t *")  # used under the lock only
        self._seq = ffi.new("uint64_t *")
        self.topic = topic
        self.codec = codec
        self.block = bool(block)
        self.capacity = lib.hms_publisher_capacity(self._ptr)
        self.max_message = lib.hms_publisher_max_message(self._ptr)

    def _send(self, data: bytes, ct: int, flags: int, timeout: Optional[float]) -> int:
        tns = -1 if timeout is None else _timeout_ns(timeout)
        with self._lock:
            ptr = self._ptr
            if ptr is None:
                raise FailedPrecondition(f"publisher of {self.topic!r} is closed; open a new one")
            st = lib.hms_publish(ptr, data, len(data), ct, flags, tns, self._seq, self._err)
            if st:
                _raise(st, self._err)
            return self._seq[0]

    def publish(self, value: Any, *, codec: Optional[str] = None, timeout: Optional[float] = None) -> int:
        """Publishes ``value`` and returns its sequence number. ``timeout`` only matters with
        ``block=True`` (None = as long as the lagging subscriber lives): raises ``DeadlineExceeded``
        (nothing published) when a subscriber stayed behind. Raises ``ResourceExhausted`` beyond
        ``max_message``."""
        codec = codec or self.codec
        if codec is None and type(value) is bytes:
            data, ct = value, CT_RAW
        else:
            data, ct = encode(value, codec)
        tns = -1 if timeout is None else _timeout_ns(timeout)
        with self._lock:  # (inlined _send: this is the hot path)
            ptr = self._ptr
            if ptr is None:
                raise FailedPrecondition(f"publisher of {self.topic!r} is closed; open a new one")
            st = lib.hms_publish(ptr, data, len(data), ct, 0, tns, self._seq, self._err)
            if st:
                _raise(st, self._err)
            return self._seq[0]

    def publish_event(self, type: str, data: Any = None, *, source: Optional[str] = None,
                      correlation_id: Optional[str] = None, user_id: Optional[str] = None,
                      id: Optional[str] = None, timestamp: Optional[_dt.datetime] = None,
                      timeout: Optional[float] = None) -> str:
        """Publishes an event envelope {id, type, timestamp, data, metadata: {source, correlationId,
        userId}} and returns its id (a fresh uuid4 unless given). ``timestamp`` defaults to now (UTC).
        Subscribers receive an :class:`Event`."""
        if not isinstance(type, str) or not type:
            raise InvalidArgument(f"event type must be a non-empty str, got {type!r}")
        if id is None:
            id = str(uuid.uuid4())
        elif not isinstance(id, str):
            raise InvalidArgument(f"event id must be a str, got {builtins_type(id).__name__}")
        if timestamp is None:
            timestamp = _dt.datetime.now(_UTC)
        elif not isinstance(timestamp, _dt.datetime):
            raise InvalidArgument(f"timestamp must be a datetime, got {builtins_type(timestamp).__name__}")
        envelope = {
            "id": id,
            "type": type,
            "timestamp": timestamp,
            "data": data,
            "metadata": {
                "source": _opt_str("source", source),
                "correlationId": _opt_str("correlation_id", correlation_id),
                "userId": _opt_str("user_id", user_id),
            },
        }
        codec = self.codec if self.codec in ("cbor", "json") else "cbor"
        payload, ct = encode(envelope, codec)
        self._send(payload, ct, lib.HMS_MSG_EVENT, timeout)
        return id

    @property
    def subscriber_count(self) -> int:
        """Subscribers connected right now."""
        with self._state:
            ptr = self._ptr
            return lib.hms_publisher_subscriber_count(ptr) if ptr is not None else 0

    @property
    def last_seq(self) -> int:
        """Sequence number of the last message published (0 = none)."""
        with self._state:
            ptr = self._ptr
            return lib.hms_publisher_last_seq(ptr) if ptr is not None else 0

    def wait_for_subscribers(self, n: int = 1, timeout: Optional[float] = 5.0) -> bool:
        """Waits until at least ``n`` subscribers are connected; returns whether they are."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.subscriber_count < n:
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(0.001)
        return True

    def close(self) -> None:
        """Unregisters the topic entry; subscribers drain what is left, then see it go. Idempotent.
        Waits for a publish in progress on another thread (with ``block=True``, up to its timeout)."""
        with self._lock, self._state:
            ptr, self._ptr = self._ptr, None
            if ptr is not None:
                lib.hms_publisher_close(ptr)

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # backstop only; close() is the contract
        try:
            if getattr(self, "_ptr", None) is not None:
                self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._ptr is None else f"subscribers={self.subscriber_count} last_seq={self.last_seq}"
        return f"<Publisher {self.topic!r} {state}>"


builtins_type = type  # publish_event's parameter `type` shadows the builtin inside it


# ----------------------------------------------------------------------------------------------------
# Subscribing
# ----------------------------------------------------------------------------------------------------
def _event_from(payload: Any, msg_kw: dict) -> Event:
    if not isinstance(payload, dict):
        raise InvalidArgument(f"event envelope on {msg_kw['topic']!r} is a {builtins_type(payload).__name__}, not a map")
    ev_id, ev_type, ts = payload.get("id"), payload.get("type"), payload.get("timestamp")
    if not isinstance(ev_id, str) or not isinstance(ev_type, str):
        raise InvalidArgument(f"event envelope on {msg_kw['topic']!r} lacks a str id/type")
    if isinstance(ts, str):
        try:
            ts = _dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgument(f"event timestamp {ts!r} is not ISO 8601") from None
    elif isinstance(ts, (int, float)) and not isinstance(ts, bool):
        ts = _dt.datetime.fromtimestamp(ts, _UTC)
    elif not isinstance(ts, _dt.datetime):
        raise InvalidArgument(f"event timestamp on {msg_kw['topic']!r} is missing or not a time")
    meta = payload.get("metadata") or {}
    if not isinstance(meta, dict):
        meta = {}
    md = EventMetadata(
        source=meta.get("source"),
        correlation_id=meta.get("correlationId", meta.get("correlation_id")),
        user_id=meta.get("userId", meta.get("user_id")),
    )
    return Event(id=ev_id, type=ev_type, timestamp=ts, data=payload.get("data"), metadata=md, **msg_kw)


class Subscription:
    """Receives the messages of every publisher whose topic matches ``pattern`` (an exact topic or a
    glob like ``"order.*"``), including publishers that appear later. Only messages published after
    the subscription was created are delivered.

    ``keep_waiting=True``: an exact topic whose publishers all went away keeps waiting for new ones
    instead of raising ``Unavailable``. ``spin_us``: busy-wait before sleeping (None = the node's).

    Messages are fetched from the core in batches (one C call for up to 256 that are already there)
    and handed out one at a time; ``close()`` discards those fetched but not yet returned. The next
    batch is fetched only once every message of the last one was returned, and that call is what
    tells a blocking publisher (``block=True``) the last batch was taken: until then it holds the
    publisher, so the publisher is never more than ``capacity`` messages ahead of what ``recv`` /
    ``recv_many`` returned here (a batch from a blocking publisher is at most ``capacity`` long).
    Before waiting on :meth:`fileno`, call ``recv(timeout=0)`` until it returns None (which also
    releases the last batch to blocking publishers).
    """

    def __init__(self, node: Node, pattern: str, *, keep_waiting: bool = False,
                 spin_us: Optional[float] = None, handshake_timeout: Optional[float] = None) -> None:
        if not isinstance(node, Node):
            raise InvalidArgument(f"node must be a hms_ffi_native.Node, got {type(node).__name__}")
        node._check_open()
        bpattern = _check_name("topic pattern", pattern)
        opts = ffi.new("hms_subscribe_options_t *")
        lib.hms_subscribe_options_init(opts)
        opts.flags = lib.HMS_SUBSCRIBE_KEEP_WAITING if keep_waiting else 0
        opts.spin_ns = _spin_ns(spin_us)
        opts.handshake_timeout_ns = -1 if handshake_timeout is None else _timeout_ns(handshake_timeout)
        out = ffi.new("hms_subscription_t **")
        err = ffi.new("hms_error_t *")
        st = lib.hms_subscribe(node._ptr, bpattern, opts, out, err)
        if st:
            _raise(st, err)
        self._ptr = out[0]
        self._node = node
        self.pattern = pattern
        self._lock = threading.Lock()  # one receiver at a time; close() waits for it
        self._state = threading.Lock()  # guards _ptr for interrupt/getters (never held while waiting)
        self._closing = False
        self._exact = pattern if not any(c in pattern for c in "*?[]!^") else None
        self._err = ffi.new("hms_error_t *")
        # Messages are fetched from the core in batches (one call for many: a call per message is what
        # costs in Python) and handed out one by one from _ready. _fill runs only when _ready is empty:
        # the core counts a batch of a blocking publisher as taken at our next call, so fetching ahead
        # would let a blocking publisher run ahead of the application.
        self._ready: collections.deque = collections.deque()
        self._infos = ffi.new("hms_message_info_t[]", _BATCH)
        self._cap = 64 << 10
        self._buf = ffi.new("char[]", self._cap)
        self._count = ffi.new("size_t *")
        self._used = ffi.new("size_t *")

    def recv(self, timeout: Optional[float] = None) -> Union[Message, Event, None]:
        """The next message (a :class:`Message`, or an :class:`Event` for ``publish_event``), or None
        when nothing arrived within ``timeout`` seconds (None = wait as long as it takes).

        Raises ``Unavailable`` when the topic is exact and its publishers all went away (after
        everything they published was delivered); ``DataLoss`` once per publisher dropped for
        corrupting its ring (the subscription goes on with the others); ``Cancelled`` when the
        subscription was closed from another thread; ``InvalidArgument`` for a payload its content
        type cannot decode (that message only).
        """
        tns = -1 if timeout is None else _timeout_ns(timeout)
        with self._lock:
            if not self._ready and not self._fill(tns):
                return None
            return self._convert(self._ready.popleft())

    def recv_many(self, max_messages: int = 1024, timeout: Optional[float] = None) -> list:
        """Waits like :meth:`recv` for the first message, then returns it with every message already
        there (up to ``max_messages``); an empty list when nothing arrived within ``timeout``."""
        _int_opt("max_messages", max_messages, minimum=1)
        tns = -1 if timeout is None else _timeout_ns(timeout)
        with self._lock:
            if not self._ready:
                self._fill(tns)
            ready, out = self._ready, []
            while ready and len(out) < max_messages:
                out.append(self._convert(ready.popleft()))
            return out

    def _fill(self, tns: int) -> bool:
        """Takes a batch from the core into self._ready (under self._lock). False on timeout."""
        ptr = self._ptr
        if ptr is None:
            raise FailedPrecondition(f"subscription to {self.pattern!r} is closed; subscribe again")
        err, count, used = self._err, self._count, self._used
        start = time.monotonic() if tns > 0 else 0.0
        while True:
            st = lib.hms_subscription_recv_batch(ptr, self._infos, _BATCH, self._buf, self._cap, count, used,
                                                 tns, err)
            if st == 0:
                break
            if st == _DEADLINE_EXCEEDED:
                return False
            if st == _OUT_OF_RANGE:  # a message bigger than our buffer: grow it and take it
                self._cap = max(self._cap * 2, 1 << (used[0] - 1).bit_length())
                self._buf = ffi.new("char[]", self._cap)
                tns = 0
                continue
            if st == _CANCELLED:
                if self._closing:
                    raise Cancelled(f"subscription to {self.pattern!r} was closed")
                if err.os_errno == _errno.EINTR:
                    # A signal: returning to Python runs its handlers (Ctrl-C raises here); then wait
                    # for what is left of the timeout.
                    if tns > 0:
                        tns = max(0, tns - int((time.monotonic() - start) * 1e9))
                        start = time.monotonic()
                    continue
            _raise(st, err)
        n = count[0]
        data = ffi.buffer(self._buf, used[0])[:]  # one copy for the whole batch
        exact = self._exact
        append = self._ready.append
        for info in _INFO.iter_unpack(ffi.buffer(self._infos, n * _INFO.size)):
            seq, missed, pub_id, pns, poff, plen, toff, tlen, ct, flags, pid, _ = info
            topic = exact or data[toff:toff + tlen].decode("ascii", "replace")
            append((topic, data[poff:poff + plen], seq, missed, pid, pub_id, ct, pns, flags))
        return True

    @staticmethod
    def _convert(item) -> Union[Message, Event]:
        topic, raw, seq, missed, pid, pub_id, ct, pns, flags = item
        if flags & _MSG_EVENT:
            kw = dict(topic=topic, seq=seq, missed=missed, publisher_pid=pid, publisher_id=pub_id,
                      publish_time_ns=pns)
            return _event_from(decode(ct, raw), kw)
        return Message(topic, raw if ct == CT_RAW else decode(ct, raw), seq, missed, pid, pub_id, ct, pns)

    def __iter__(self) -> Iterator[Union[Message, Event]]:
        return self

    def __next__(self) -> Union[Message, Event]:
        """Blocks for the next message. Ends when an exact topic's publishers are all gone (recv would
        raise Unavailable) or the subscription is closed."""
        try:
            return self.recv(None)
        except (Unavailable, Cancelled):
            raise StopIteration from None
        except FailedPrecondition:
            if self._ptr is None:  # closed by another thread
                raise StopIteration from None
            raise

    @property
    def publisher_count(self) -> int:
        """Publishers connected right now (publishers that appear are connected during ``recv``)."""
        with self._state:
            ptr = self._ptr
            return lib.hms_subscription_publisher_count(ptr) if ptr is not None else 0

    @property
    def missed(self) -> int:
        """Total messages missed so far (the sum of every delivered message's ``missed``, plus losses
        not yet followed by a delivered message)."""
        with self._state:
            ptr = self._ptr
            return lib.hms_subscription_missed(ptr) if ptr is not None else 0

    def fileno(self) -> int:
        """A descriptor that becomes readable when ``recv`` may have work (for select/asyncio); it is
        armed by a ``recv`` that returned None. Valid until close."""
        with self._state:
            if self._ptr is None:
                raise FailedPrecondition(f"subscription to {self.pattern!r} is closed")
            return lib.hms_subscription_fd(self._ptr)

    def interrupt(self) -> None:
        """Makes a ``recv`` blocked on another thread (or the next one) raise ``Cancelled``."""
        with self._state:
            if self._ptr is not None:
                lib.hms_subscription_interrupt(self._ptr)

    def close(self) -> None:
        """Disconnects from every publisher. A ``recv`` blocked on another thread raises ``Cancelled``.
        Idempotent."""
        with self._state:
            if self._ptr is None:
                return
            self._closing = True
            lib.hms_subscription_interrupt(self._ptr)
        with self._lock:  # the interrupted recv returns and lets go of it
            with self._state:
                ptr, self._ptr = self._ptr, None
                if ptr is not None:
                    lib.hms_subscription_close(ptr)
            self._ready.clear()
            self._closing = False

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # backstop only; close() is the contract
        try:
            if getattr(self, "_ptr", None) is not None:
                self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._ptr is None else f"publishers={self.publisher_count} missed={self.missed}"
        return f"<Subscription {self.pattern!r} {state}>"
