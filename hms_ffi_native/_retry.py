"""Opt-in resilience for clients: reconnect with a retry policy, and a circuit breaker.

    import hms_ffi_native as hms

    oms = hms.connect("hms.oms.order", "^1",
                      retry=hms.RetryPolicy(max_attempts=5, backoff_base=0.02, backoff_max=1.0),
                      breaker=hms.CircuitBreaker(failure_threshold=5, open_seconds=2.0))
    oms.call("GetOrder", {"id": 7})      # survives a restart of the service: reconnects by name

``hms.connect(..., retry=..., breaker=...)`` (either one) returns a :class:`ResilientClient`, which has
the call API of :class:`~hms_ffi_native.Client` (``call``, ``acall``, ``call_async``, ``batch``,
``stream``, ``send``, plus ``client_stream``/``bidi_stream``, which are never retried) and holds at most
one connection, opened on first use and opened again, by name, after the old one died.

What is retried, and when:

* A failure to *reach* the service (no live entry in the runtime directory, a refused or dropped
  handshake) is raised as ``Unavailable`` (the original error is its ``__cause__``) and is always
  retried: nothing was sent.
* A call that failed with a code in ``RetryPolicy.retryable`` (default: ``UNAVAILABLE``) is retried only
  when it is safe: the function is idempotent (registered with ``idempotent=True``: the server's function
  table says so), the call says ``idempotent=True``, or the policy says ``idempotent_only=False``. A
  server that dies mid-call may have done the work already, so a non-idempotent call fails with the
  original ``Unavailable`` and the *next* call reconnects.
* Before each call the client checks that the server process it is connected to still exists
  (``kill(pid, 0)``); a connection to a dead process is replaced before anything is sent, so even
  non-idempotent calls go to the restarted service without an error.
* Backoff before attempt ``n + 1``: ``min(backoff_max, backoff_base * 2**(n-1))``, of which a random
  fraction up to ``jitter`` is taken off (``jitter=1``: "full jitter", ``0``: none).

The breaker counts consecutive failed attempts whose code is in ``CircuitBreaker.failure_codes``
(default ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED``; application errors such as ``InvalidArgument`` mean
the service is up and count as successes). After ``failure_threshold`` of them it *opens*: every call
fails at once with ``Unavailable`` saying the breaker is open and until when (``details`` has
``breaker``, ``until`` (wall clock, ISO 8601) and ``retry_after_s``), without touching the service.
After ``open_seconds`` it is *half-open*: ``half_open_probes`` calls go through as probes (others still
fail fast); a probe that succeeds closes it, one that fails opens it again for another interval.

Thread-safety: a ResilientClient, RetryPolicy and CircuitBreaker may be shared between threads. One
breaker may be shared by several clients of the same service.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import os
import random
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Iterable, Iterator, List, Optional

from ._errors import FailedPrecondition, FFIError, InvalidArgument, Unavailable

__all__ = ["RetryPolicy", "CircuitBreaker", "ResilientClient"]

UNAVAILABLE = 14
DEADLINE_EXCEEDED = 4


class RetryPolicy:
    """How often and how fast a :class:`ResilientClient` retries. Immutable after construction."""

    def __init__(self, *, max_attempts: int = 3, retryable: Iterable[int] = (UNAVAILABLE,),
                 backoff_base: float = 0.01, backoff_max: float = 1.0, jitter: float = 0.5,
                 idempotent_only: bool = True, rng: Optional[random.Random] = None) -> None:
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise InvalidArgument(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        if backoff_base < 0 or backoff_max < 0:
            raise InvalidArgument("backoff_base and backoff_max must be >= 0")
        if not 0 <= jitter <= 1:
            raise InvalidArgument(f"jitter must be between 0 and 1, got {jitter!r}")
        self.max_attempts = max_attempts
        self.retryable = frozenset(int(getattr(c, "code", c)) for c in retryable)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.jitter = float(jitter)
        self.idempotent_only = bool(idempotent_only)
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        cap = min(self.backoff_max, self.backoff_base * (2 ** min(attempt - 1, 62)))
        with self._rng_lock:
            r = self._rng.random()
        return cap * (1 - self.jitter * r)

    def should_retry(self, exc: BaseException, attempt: int, idempotent: bool) -> bool:
        return (attempt < self.max_attempts and isinstance(exc, FFIError) and exc.code in self.retryable
                and (idempotent or not self.idempotent_only))

    def __repr__(self) -> str:
        return (f"RetryPolicy(max_attempts={self.max_attempts}, retryable={sorted(self.retryable)}, "
                f"backoff_base={self.backoff_base}, backoff_max={self.backoff_max}, jitter={self.jitter}, "
                f"idempotent_only={self.idempotent_only})")


class CircuitBreaker:
    """Closed → (``failure_threshold`` consecutive failures) → open → (``open_seconds``) → half-open →
    (probe succeeds) closed, or (probe fails) open again."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

    def __init__(self, *, failure_threshold: int = 5, open_seconds: float = 1.0, half_open_probes: int = 1,
                 failure_codes: Iterable[int] = (UNAVAILABLE, DEADLINE_EXCEEDED), name: Optional[str] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(failure_threshold, int) or failure_threshold < 1:
            raise InvalidArgument(f"failure_threshold must be an int >= 1, got {failure_threshold!r}")
        if open_seconds < 0:
            raise InvalidArgument("open_seconds must be >= 0")
        if not isinstance(half_open_probes, int) or half_open_probes < 1:
            raise InvalidArgument("half_open_probes must be an int >= 1")
        self.failure_threshold = failure_threshold
        self.open_seconds = float(open_seconds)
        self.half_open_probes = half_open_probes
        self.failure_codes = frozenset(int(getattr(c, "code", c)) for c in failure_codes)
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state = self.CLOSED
        self._failures = 0
        self._opened_until = 0.0
        self._probes = 0
        self._last: Optional[str] = None

    @property
    def state(self) -> str:
        with self._lock:
            self._advance()
            return self._state

    @property
    def failures(self) -> int:
        return self._failures

    def _advance(self) -> None:
        if self._state == self.OPEN and self._clock() >= self._opened_until:
            self._state = self.HALF_OPEN
            self._probes = 0

    def before_call(self, what: str = "") -> None:
        """Raises ``Unavailable`` when the breaker does not let a call through."""
        with self._lock:
            self._advance()
            if self._state == self.CLOSED:
                return
            if self._state == self.HALF_OPEN and self._probes < self.half_open_probes:
                self._probes += 1
                return
            now = self._clock()
            left = max(0.0, self._opened_until - now)
            until = (_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=left)).isoformat(timespec="milliseconds")
            who = self.name or what or "the service"
            if self._state == self.OPEN:
                msg = (f"circuit breaker for {who} is open after {self._failures} consecutive failures "
                       f"(last: {self._last}); failing fast until {until} ({left:.3f} s from now), then "
                       f"{self.half_open_probes} probe call(s) go through")
            else:
                msg = (f"circuit breaker for {who} is half-open: {self.half_open_probes} probe call(s) are "
                       f"already testing the service; failing fast until one of them succeeds")
            raise Unavailable(msg, details={"breaker": self._state, "until": until, "retry_after_s": left,
                                            "failures": self._failures})

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._state = self.CLOSED
            self._probes = 0

    def record_failure(self, exc: BaseException) -> None:
        code = getattr(exc, "code", None)
        if code not in self.failure_codes:
            self.record_success()  # an answer, even an error, means the service is there
            return
        with self._lock:
            self._failures += 1
            self._last = str(exc)[:200]
            if self._state == self.HALF_OPEN or self._failures >= self.failure_threshold:
                self._state = self.OPEN
                self._opened_until = self._clock() + self.open_seconds

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state!r}, failures={self._failures}, threshold={self.failure_threshold})"


_NO_RETRY = RetryPolicy(max_attempts=1)


class ResilientClient:
    """A client that reconnects by name and retries per :class:`RetryPolicy`, guarded by an optional
    :class:`CircuitBreaker`. See the module documentation for what is retried."""

    def __init__(self, service: str, version: str = "*", *, retry: Optional[RetryPolicy] = None,
                 breaker: Optional[CircuitBreaker] = None, node=None, runtime_dir: Optional[str] = None,
                 timeout: Optional[float] = 5.0, spin_us: Optional[float] = None, ring_bytes: int = 0,
                 connect_now: bool = True) -> None:
        from . import _core

        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidArgument(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise InvalidArgument(f"breaker must be a CircuitBreaker, got {type(breaker).__name__}")
        self.service = service
        self.version_req = version
        self.retry = retry or _NO_RETRY
        self.breaker = breaker
        self._node = node
        self._runtime_dir = runtime_dir
        self._connect_kw = {"timeout": timeout, "spin_us": spin_us, "ring_bytes": ring_bytes}
        self._core = _core
        self._lock = threading.Lock()
        self._client = None
        self._idempotent: frozenset = frozenset()
        self._closed = False
        self.reconnects = 0  # connections opened after the first
        self._connected_once = False
        if connect_now:
            try:
                self._current()
            except Unavailable:
                if retry is None:
                    raise  # no policy: behave like connect(), which fails at once

    # -- the connection
    def _open(self):
        node = self._node or self._core._default_node(self._runtime_dir)
        return node.connect(self.service, self.version_req, **self._connect_kw)

    def _current(self):
        """The live connection, (re)opened when there is none or its server process is gone."""
        with self._lock:
            if self._closed:
                raise FailedPrecondition(f"ResilientClient for {self.service} is closed")
            c = self._client
            if c is not None and c.server_pid > 0 and not _pid_exists(c.server_pid):
                self._client = None  # nothing was sent on it: safe to replace for any call
                c.close()
                c = None
            if c is None:
                try:
                    c = self._open()
                except FFIError as e:
                    if e.code == UNAVAILABLE:
                        raise
                    raise Unavailable(f"cannot reach {self.service} ({self.version_req}): {e.message}",
                                      details={"connect_error": e.status}) from e
                if self._connected_once:
                    self.reconnects += 1
                self._connected_once = True
                self._client = c
                self._idempotent = _idempotent_functions(c)
            return c

    def _drop(self, c) -> None:
        with self._lock:
            if self._client is c:
                self._client = None
        c.close()

    def _is_idempotent(self, function: str, idempotent: Optional[bool]) -> bool:
        if idempotent is not None:
            return bool(idempotent)
        return function in self._idempotent

    # -- the attempt loop
    def _before(self) -> None:
        if self.breaker is not None:
            self.breaker.before_call(self.service)

    def _after_error(self, e: BaseException, c) -> None:
        if c is not None and isinstance(e, Unavailable) and e.source == "local":
            self._drop(c)  # the connection is dead (a remote UNAVAILABLE comes from a live handler)
        if self.breaker is not None:
            self.breaker.record_failure(e)

    def _after_ok(self) -> None:
        if self.breaker is not None:
            self.breaker.record_success()

    def _run(self, function: str, idempotent: Optional[bool], op: Callable[[Any], Any]) -> Any:
        attempt = 0
        while True:
            attempt += 1
            self._before()
            c = None
            try:
                c = self._current()
                result = op(c)
            except FFIError as e:
                self._after_error(e, c)
                # A failure to connect sent nothing: retryable whatever the function.
                safe = c is None or self._is_idempotent(function, idempotent)
                if self.retry.should_retry(e, attempt, safe):
                    time.sleep(self.retry.backoff(attempt))
                    continue
                raise
            self._after_ok()
            return result

    # -- the call API
    def call(self, function: str, payload: Any = None, *, timeout: Optional[float] = None,
             codec: Optional[str] = None, idempotent: Optional[bool] = None) -> Any:
        return self._run(function, idempotent, lambda c: c.call(function, payload, timeout=timeout, codec=codec))

    def send(self, function: str, payload: Any = None, *, codec: Optional[str] = None,
             idempotent: Optional[bool] = None) -> None:
        return self._run(function, idempotent, lambda c: c.send(function, payload, codec=codec))

    async def acall(self, function: str, payload: Any = None, *, timeout: Optional[float] = None,
                    codec: Optional[str] = None, idempotent: Optional[bool] = None) -> Any:
        attempt = 0
        while True:
            attempt += 1
            self._before()
            c = None
            try:
                c = self._current()
                result = await c.acall(function, payload, timeout=timeout, codec=codec)
            except FFIError as e:
                self._after_error(e, c)
                safe = c is None or self._is_idempotent(function, idempotent)
                if self.retry.should_retry(e, attempt, safe):
                    await asyncio.sleep(self.retry.backoff(attempt))
                    continue
                raise
            self._after_ok()
            return result

    def call_async(self, function: str, payload: Any = None, *, timeout: Optional[float] = None,
                   codec: Optional[str] = None, idempotent: Optional[bool] = None) -> Future:
        """A ``concurrent.futures.Future``; retries happen behind it (backoff on a timer thread)."""
        outer: Future = Future()

        def attempt(n: int) -> None:
            c = None
            try:
                self._before()
            except FFIError as e:  # the breaker is open: fail fast, count nothing
                if not outer.done():
                    outer.set_exception(e)
                return
            try:
                c = self._current()
                inner = c.call_async(function, payload, timeout=timeout, codec=codec)
            except FFIError as e:
                fail(e, n, c)
                return

            def done(f, c=c) -> None:
                try:
                    value = f.result()
                except FFIError as e:
                    fail(e, n, c)
                    return
                except BaseException as e:  # cancelled
                    outer.set_exception(e) if not outer.done() else None
                    return
                self._after_ok()
                if not outer.done():
                    outer.set_result(value)

            inner.add_done_callback(done)

        def fail(e: FFIError, n: int, c) -> None:
            self._after_error(e, c)
            safe = c is None or self._is_idempotent(function, idempotent)
            if self.retry.should_retry(e, n, safe) and not outer.cancelled():
                t = threading.Timer(self.retry.backoff(n), attempt, (n + 1,))
                t.daemon = True
                t.start()
            elif not outer.done():
                outer.set_exception(e)

        attempt(1)
        return outer

    def batch(self, calls, *, timeout: Optional[float] = None, codec: Optional[str] = None,
              idempotent: Optional[bool] = None) -> List[Any]:
        """Like ``Client.batch``; items that failed with a retryable code are sent again (in one smaller
        batch) when it is safe for their function. Errors come back in place, as exceptions."""
        calls = list(calls)
        results: List[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        attempt = 0
        while True:
            attempt += 1
            self._before()
            c = None
            try:
                c = self._current()
                out = c.batch([calls[i] for i in todo], timeout=timeout, codec=codec)
            except FFIError as e:
                self._after_error(e, c)
                if self.retry.should_retry(e, attempt, c is None or all(
                        self._is_idempotent(calls[i][0], idempotent) for i in todo)):
                    time.sleep(self.retry.backoff(attempt))
                    continue
                raise
            again = []
            dead = None
            for i, r in zip(todo, out):
                results[i] = r
                if isinstance(r, FFIError):
                    if isinstance(r, Unavailable) and r.source == "local":
                        dead = r
                    if self.retry.should_retry(r, attempt, self._is_idempotent(calls[i][0], idempotent)):
                        again.append(i)
            if dead is not None:
                self._after_error(dead, c)
            else:
                self._after_ok()
            if not again:
                return results
            time.sleep(self.retry.backoff(attempt))
            todo = again

    def stream(self, function: str, payload: Any = None, *, timeout: Optional[float] = None,
               codec: Optional[str] = None, idempotent: Optional[bool] = None) -> Iterator[Any]:
        """A server stream. It is opened again (from the start) only when it failed before delivering
        its first item and it is safe to retry; a stream that failed midway raises."""
        attempt = 0
        while True:
            attempt += 1
            self._before()
            c = None
            delivered = False
            try:
                c = self._current()
                with c.stream(function, payload, timeout=timeout, codec=codec) as s:
                    for item in s:
                        if not delivered:
                            delivered = True
                            self._after_ok()
                        yield item
                if not delivered:
                    self._after_ok()
                return
            except FFIError as e:
                self._after_error(e, c)
                safe = not delivered and (c is None or self._is_idempotent(function, idempotent))
                if self.retry.should_retry(e, attempt, safe):
                    time.sleep(self.retry.backoff(attempt))
                    continue
                raise

    def client_stream(self, function: str, requests, **kw) -> Any:
        """Not retried (the requests cannot be replayed); reconnects first if the server is gone."""
        return self._run(function, False, lambda c: c.client_stream(function, requests, **kw))

    def bidi_stream(self, function: str, requests, **kw):
        """Not retried; reconnects first if the server is gone."""
        self._before()
        return self._current().bidi_stream(function, requests, **kw)

    # -- the rest of Client's surface
    @property
    def client(self):
        """The current connection (opened if needed)."""
        return self._current()

    @property
    def functions(self):
        return self._current().functions

    @property
    def server_pid(self) -> int:
        return self._current().server_pid

    def close(self) -> None:
        with self._lock:
            self._closed = True
            c, self._client = self._client, None
        if c is not None:
            c.close()

    def __enter__(self) -> "ResilientClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ResilientClient({self.service!r}, {self.version_req!r}, retry={self.retry!r}, "
                f"breaker={self.breaker!r}, reconnects={self.reconnects})")


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _idempotent_functions(client) -> frozenset:
    """Names the server registered as idempotent (its function table carries the flag)."""
    from ._native import ffi, lib

    name = ffi.new("const char **")
    fid = ffi.new("uint32_t *")
    flags = ffi.new("uint32_t *")
    out = set()
    for i in range(lib.hms_client_function_count(client._ptr)):
        if lib.hms_client_function_at(client._ptr, i, name, fid, flags) == 0 and flags[0] & lib.HMS_FN_IDEMPOTENT:
            out.add(ffi.string(name[0]).decode())
    return frozenset(out)
