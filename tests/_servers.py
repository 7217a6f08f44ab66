"""Service processes used by the tests. `python tests/_servers.py KIND [ARGS]` prints "ready" once
serving. The runtime directory comes from HMS_FFI_RUNTIME_DIR."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import hms_ffi_native as hms


def echo_service(node, name="py.echo", version="1.0.0"):
    svc = node.service(name, version)

    @svc.function()
    def echo(x):
        return x

    @svc.function(codec="json")
    def echo_json(x):
        return x

    @svc.function()
    def sleep(seconds):
        time.sleep(seconds)
        return "slept"

    @svc.function()
    def whoami(_, ctx):
        return {"pid": os.getpid(), "peer_pid": ctx.peer_pid, "peer_uid": ctx.peer_uid}

    @svc.function()
    def fail(args):
        code, message, *rest = args  # [code, message] or [code, message, details]
        raise hms.error_for(code, message, details=rest[0] if rest else None)

    @svc.function()
    def crash(_):
        raise ZeroDivisionError("boom")

    @svc.function()
    def arrow_info(t):  # what an Arrow payload arrived as (pyarrow objects over shared memory)
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(t, (pa.Table, pa.RecordBatch)):
            cols = {name: (float(pc.sum(t.column(name)).as_py() or 0)
                           if pa.types.is_floating(t.schema.field(name).type) else None) for name in t.schema.names}
            return {"type": type(t).__name__, "rows": t.num_rows, "sums": cols}
        return {"type": type(t).__name__, "rows": len(t)}

    @svc.function()
    def big(n):
        return b"z" * n

    state = {"count": 0, "cancels": 0}

    @svc.function()
    def count(_, ctx):
        if ctx.oneway:
            state["count"] += 1
            return None
        return state["count"]

    @svc.function()
    def wait_cancel(seconds, ctx):
        end = time.monotonic() + (seconds or 3)
        while time.monotonic() < end:
            if ctx.cancelled:
                state["cancels"] += 1
                raise hms.Cancelled("saw the cancellation")
            time.sleep(0.005)
        return "not cancelled"

    @svc.function()
    def cancels(_):
        return state["cancels"]

    @svc.function()
    def count_to(n):
        for i in range(n):
            yield i

    @svc.function()
    def raw_items(n):
        item = b"i" * 16
        for _ in range(n):
            yield item

    @svc.function()
    def fail_after(k):
        for i in range(k):
            yield i
        raise hms.InvalidArgument(f"failed after {k}", details={"k": k})

    @svc.function()
    def endless(_, ctx):
        i = 0
        try:
            while True:
                yield i
                i += 1
        finally:
            state["stream_stops"] = state.get("stream_stops", 0) + 1

    @svc.function()
    def stream_stops(_):
        return state.get("stream_stops", 0)

    @svc.function(client_stream=True)
    def total(items):
        return sum(items)

    @svc.function(client_stream=True)
    def collect(items):
        return list(items)

    @svc.function(client_stream=True)
    def count_items(items):
        n = 0
        for _ in items:
            n += 1
        return n

    @svc.function(client_stream=True)
    def slow_count(items):
        n = 0
        for _ in items:
            n += 1
            if n % 20 == 0:
                time.sleep(0.01)
        return n

    @svc.function(client_stream=True)
    def fail_on_third(items):
        for i, _ in enumerate(items):
            if i == 2:
                raise hms.OutOfRange("third item refused")
        return "never"

    @svc.function(client_stream=True)
    def chat(items, ctx):
        try:
            for x in items:
                yield x * 2 if isinstance(x, int) else x
        finally:
            if ctx.cancelled:
                state["chat_cancels"] = state.get("chat_cancels", 0) + 1

    @svc.function()
    def chat_cancels(_):
        return state.get("chat_cancels", 0)

    @svc.function()
    async def aecho(x):
        await asyncio.sleep(0)
        return x

    @svc.function()
    async def asleep(seconds, ctx):
        try:
            await asyncio.sleep(seconds)
            return {"slept": seconds, "peer": ctx.peer_pid}
        except asyncio.CancelledError:
            state["acancels"] = state.get("acancels", 0) + 1
            raise

    @svc.function()
    def acancels(_):
        return state.get("acancels", 0)

    @svc.function()
    async def afail(_):
        await asyncio.sleep(0)
        raise hms.NotFound("async missing", details={"where": "afail"})

    @svc.function()
    async def abug(_):
        return 1 / 0

    @svc.function()
    def big_items(args):
        n, size = args
        for i in range(n):
            yield bytes([i % 256]) * size

    return svc


def async_stream_service(node):
    """`py.astream`: async generator handlers (served from the node's event loop)."""
    svc = node.service("py.astream", "1.0.0")
    state = {"closed": 0, "started": 0}

    @svc.function()
    async def count(n):
        state["started"] += 1
        try:
            for i in range(n):
                yield i
                if i % 1000 == 0:
                    await asyncio.sleep(0)
        finally:
            state["closed"] += 1  # runs on normal end, error and cancellation alike

    @svc.function()
    async def blobs(args):
        n, size = args
        for i in range(n):
            yield bytes([i % 256]) * size

    @svc.function()
    async def fail_after(k):
        for i in range(k):
            yield i
        raise hms.NotFound("no more items", details={"after": k})

    @svc.function()
    async def ticking(n):
        for i in range(n):
            await asyncio.sleep(0.01)
            yield i

    @svc.function()
    async def echo(x):
        return x

    @svc.function()
    def stats(_):
        return dict(state)

    return svc


def main() -> None:
    kind = sys.argv[1]
    spin = float(os.environ["HMS_TEST_SPIN_US"]) if "HMS_TEST_SPIN_US" in os.environ else None
    node = hms.Node(f"srv-{kind}", spin_us=spin, log_handler_errors=False)
    if kind == "echo":
        echo_service(node)
    elif kind == "versions":
        for v in sys.argv[2:]:
            svc = node.service("py.versioned", v)
            svc.add_function("version", lambda _x, v=v: v)
    elif kind == "astream":
        async_stream_service(node)
    elif kind == "named":
        echo_service(node, sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "1.0.0")
    else:
        raise SystemExit(f"unknown server kind {kind}")
    def on_term(signum, frame):  # SIGTERM ends the serving loop like Ctrl-C: a clean exit 0
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    try:
        node.serve()
    except KeyboardInterrupt:
        pass
    node.close()


if __name__ == "__main__":
    main()
