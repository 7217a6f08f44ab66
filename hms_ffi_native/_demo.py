"""The demo behind `hms-ffi demo`: an order service and a client in two processes.

    python -m hms_ffi_native demo          # starts the service process, calls it, prints what happened
"""
from __future__ import annotations

import datetime as dt
import decimal
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import hms_ffi_native as hms

SERVICE = "hms.demo.order"


def serve() -> None:
    """The service process: a tiny in-memory order service."""
    node = hms.Node("demo-oms")
    orders = node.service(SERVICE, version="1.0.0")
    db = {}

    @orders.function()
    def CreateOrder(order, ctx):
        if not order.get("items"):
            raise hms.InvalidArgument("an order needs at least one item", details={"field": "items"})
        oid = len(db) + 1
        total = sum(decimal.Decimal(str(i["price"])) * i["qty"] for i in order["items"])
        db[oid] = {"id": oid, "status": "NEW", "total": total, "customer_id": order["customer_id"],
                   "created": dt.datetime.now(dt.timezone.utc), "created_by_pid": ctx.peer_pid}
        return db[oid]

    @orders.function()
    def GetOrder(oid):
        if oid not in db:
            raise hms.NotFound(f"order {oid} does not exist")
        return db[oid]

    @orders.function()
    def Echo(data):
        return data

    print("ready", flush=True)
    try:
        node.serve()
    except KeyboardInterrupt:
        pass
    finally:
        node.close()


def run() -> int:
    runtime = tempfile.mkdtemp(prefix="hms-demo-", dir="/tmp")
    env = dict(os.environ, HMS_FFI_RUNTIME_DIR=runtime)
    os.environ["HMS_FFI_RUNTIME_DIR"] = runtime
    print(f"hms-ffi-native {hms.__version__} demo (runtime directory {runtime})")
    proc = subprocess.Popen([sys.executable, "-m", "hms_ffi_native._demo", "serve"], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        if line != "ready":
            print(f"the service process did not start (said {line!r})", file=sys.stderr)
            return 1
        for s in hms.list_services():
            print(f"discovered {s.name}@{s.version} in pid {s.pid} with functions {sorted(s.functions)}")
        with hms.connect(SERVICE, version="^1") as oms:
            order = oms.call("CreateOrder", {"customer_id": 7, "items": [
                {"sku": "A-1", "qty": 2, "price": "9.95"}, {"sku": "B-2", "qty": 1, "price": "20.00"}]},
                timeout=2)
            print(f"CreateOrder -> order {order['id']} status={order['status']} total={order['total']} "
                  f"(created by pid {order['created_by_pid']}, this process is pid {os.getpid()})")
            print(f"GetOrder({order['id']}) -> {oms.call('GetOrder', order['id'], timeout=2)['status']}")
            try:
                oms.call("GetOrder", 999, timeout=2)
            except hms.NotFound as e:
                print(f"GetOrder(999) -> {e}")
            try:
                oms.call("CreateOrder", {"customer_id": 7, "items": []}, timeout=2)
            except hms.InvalidArgument as e:
                print(f"CreateOrder(no items) -> {e} details={e.details}")
            payload = b"x" * 64
            for _ in range(2000):
                oms.call("Echo", payload)
            lat = []
            for _ in range(20000):
                t0 = time.perf_counter_ns()
                oms.call("Echo", payload)
                lat.append(time.perf_counter_ns() - t0)
            lat.sort()
            print(f"64-byte echo across processes: p50 {lat[len(lat) // 2] / 1000:.1f} us, "
                  f"p99 {lat[int(len(lat) * 0.99)] / 1000:.1f} us, "
                  f"{len(lat) / (sum(lat) / 1e9):,.0f} calls/s")
        return 0
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(runtime, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve()
    else:
        sys.exit(run())
