"""The API front end of examples/orders, in Python (the demo's fallback when Go is missing; the same
steps as examples/orders/go/main.go, line for line).

    HMS_ORDERS_HMAC_KEY_FILE=key.hex python -m hms_ffi_native._orders.frontend [--report r.json] [-n 500]

Creates orders, sends them to the OMS, updates their status, and keeps its own view of every order's
status, changed only by status events whose HMAC-SHA256 signature verifies (signing.py). Shows the
errors the OMS returns across the process boundary, publishes one tampered event to show it
rejected, measures round trips, and writes a JSON report (--report) that tests read.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from typing import Dict, List, Optional

import hms_ffi_native as hms

from . import SERVICE_OMS, SERVICE_ORDERS, install_protobuf_codec
from . import oms_integration_pb2 as omspb
from . import order_pb2 as pb
from . import signing
from .oms import S, status_name

log = logging.getLogger("hms.orders.frontend")
CALL_TIMEOUT = 2.0
EVENT_TIMEOUT = 2.0


def _us(ns: int) -> str:
    return f"{ns / 1000:.0f} us"


def _pct(sorted_ns: List[int], p: float) -> int:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * p))]


class FrontEnd:
    def __init__(self, key: bytes, user: str, n_latency: int) -> None:
        self.key = key
        self.user = user
        self.n_latency = n_latency
        self.node = hms.Node("hms-api")
        self.orders = self.node.connect(SERVICE_ORDERS, "^1")
        self.oms = self.node.connect(SERVICE_OMS, "^1")
        self.sub = self.node.subscribe(signing.TOPIC)
        self.view: Dict[int, dict] = {}  # order id -> {"status", "version"}: changed by verified events only
        self.seen_ids: set = set()
        self.report = {"frontend": "python", "pid": os.getpid(), "orders": {}, "errors": {}, "events": {
            "verified": 0, "applied": 0, "rejected": 0, "stale": 0, "rejections": []}, "latency_us": {}}
        self.last_event: Dict[int, hms.Event] = {}  # order id -> the last genuine event applied
        self.timings: Dict[str, List[int]] = {}
        self.event_lat: List[int] = []

    def close(self) -> None:
        for c in (self.sub, self.orders, self.oms):
            try:
                c.close()
            except Exception:
                pass
        self.node.close()

    # -- calls
    def call(self, client, fn: str, req, reply_cls):
        t0 = time.perf_counter_ns()
        raw = client.call(fn, req, timeout=CALL_TIMEOUT)
        dt_ns = time.perf_counter_ns() - t0
        self.timings.setdefault(fn, []).append(dt_ns)
        if not isinstance(raw, bytes):
            raise RuntimeError(f"{fn} answered a {type(raw).__name__}, not protobuf bytes")
        return reply_cls.FromString(raw), dt_ns

    def ctx(self, correlation: str) -> pb.RequestContext:
        return pb.RequestContext(correlation_id=correlation, user_id=self.user)

    # -- events
    def handle_event(self, ev) -> Optional[omspb.OrderStatusChanged]:
        """Verifies and applies one received event; returns the change when applied."""
        if not isinstance(ev, hms.Event):
            log.warning("ignored a non-event message on %s (seq %s)", getattr(ev, "topic", "?"), getattr(ev, "seq", "?"))
            return None
        if ev.missed:
            log.warning("missed %d status events: syncing with the OMS", ev.missed)
            self.resync()
        try:
            message = signing.verify_event(self.key, ev)
        except signing.SignatureError as e:
            self.report["events"]["rejected"] += 1
            self.report["events"]["rejections"].append({"id": ev.id, "reason": str(e), "publisher_pid": ev.publisher_pid})
            log.warning("REJECTED event %s from pid %d: %s; not applied", ev.id, ev.publisher_pid, e)
            return None
        self.report["events"]["verified"] += 1
        change = omspb.OrderStatusChanged.FromString(message)
        known = self.view.get(change.order_id)
        if ev.id in self.seen_ids or (known is not None and change.version <= known["version"]):
            self.report["events"]["stale"] += 1
            log.info("ignored stale event %s (order %d version %d)", ev.id, change.order_id, change.version)
            return None
        self.seen_ids.add(ev.id)
        self.last_event[change.order_id] = ev
        self.view[change.order_id] = {"status": status_name(change.new_status), "version": change.version}
        self.report["events"]["applied"] += 1
        return change

    def await_change(self, order_id: int, version: int, t0: int) -> omspb.OrderStatusChanged:
        """Receives events until the one for (order_id, version) was verified and applied."""
        end = time.monotonic() + EVENT_TIMEOUT
        while time.monotonic() < end:
            ev = self.sub.recv(timeout=max(0.0, end - time.monotonic()))
            if ev is None:
                break
            change = self.handle_event(ev)
            if change is not None and change.order_id == order_id and change.version >= version:
                lat = time.perf_counter_ns() - t0
                self.event_lat.append(lat)
                print(f"    event {ev.id[:8]}: order {change.order_id} {status_name(change.old_status)} -> "
                      f"{status_name(change.new_status)} v{change.version}, signature ok (key {signing.key_id(self.key)}, "
                      f"user {ev.user_id}, correlation {ev.correlation_id}), applied {_us(lat)} after the call started")
                return change
        raise RuntimeError(f"no verified status event for order {order_id} version {version} within {EVENT_TIMEOUT} s")

    def resync(self) -> None:
        for oid, v in self.view.items():
            r, _ = self.call(self.oms, "SyncOrderStatus", omspb.SyncOrderStatusRequest(
                order_id=oid, known_status=S.Value("ORDER_STATUS_" + v["status"]), known_version=v["version"]),
                omspb.SyncOrderStatusResponse)
            self.view[oid] = {"status": status_name(r.status), "version": r.version}

    # -- the flow
    def expect_error(self, label: str, client, fn: str, req, code_name: str) -> None:
        try:
            client.call(fn, req, timeout=CALL_TIMEOUT)
        except hms.FFIError as e:
            details = e.details if isinstance(e.details, dict) else {}
            shown = [f"{k}={details[k]}" for k in ("field", "order_id") if k in details]
            extra = f" ({', '.join(shown)})" if shown else ""
            print(f"  {label:<40} -> {e.status}: {e.message}{extra}")
            self.report["errors"][label] = {"code": e.status, "message": e.message, "details": details}
            if e.status != code_name:
                raise RuntimeError(f"{label}: expected {code_name}, got {e.status}")
            return
        raise RuntimeError(f"{label}: expected {code_name}, the call succeeded")

    def run(self) -> None:
        print(f"API front end (Python, pid {os.getpid()}): connected to {SERVICE_ORDERS} and {SERVICE_OMS} "
              f"(OMS pid {self.orders.server_pid}), "
              f"subscribed to {signing.TOPIC}")
        corr = f"c-{uuid.uuid4().hex[:8]}"
        print("order flow (protobuf requests and replies, content type 4):")
        # Order A: the whole life cycle
        items = [pb.OrderItemData(sku="A-100", name="widget", quantity=2, unit_price_cents=1995),
                 pb.OrderItemData(sku="B-200", name="gadget", quantity=1, unit_price_cents=2000)]
        t0 = time.perf_counter_ns()
        r, ns = self.call(self.orders, "CreateOrder", pb.CreateOrderRequest(
            customer_id="cust-1001", items=items, context=self.ctx(corr)), pb.OrderResponse)
        a = r.order
        print(f"  {'CreateOrder(cust-1001, 2 items)':<40} -> order {a.id} {status_name(a.status)}, total "
              f"{a.total_cents / 100:.2f} {a.currency}  [{_us(ns)}]")
        self.await_change(a.id, a.version, t0)
        t0 = time.perf_counter_ns()
        s, ns = self.call(self.oms, "SendOrderToOMS", omspb.SendOrderToOMSRequest(order_id=a.id, context=self.ctx(corr)),
                          omspb.SendOrderToOMSResponse)
        print(f"  {f'SendOrderToOMS({a.id})':<40} -> accepted as {s.oms_reference}, {status_name(s.status)}  [{_us(ns)}]")
        self.await_change(a.id, a.version + 1, t0)
        for new, reason in ((S.ORDER_STATUS_PROCESSING, "picking"), (S.ORDER_STATUS_SHIPPED, "carrier picked it up")):
            t0 = time.perf_counter_ns()
            r, ns = self.call(self.orders, "UpdateOrder", pb.UpdateOrderRequest(
                order_id=a.id, status=new, reason=reason, context=self.ctx(corr)), pb.OrderResponse)
            print(f"  {f'UpdateOrder({a.id}, {status_name(new)})':<40} -> {status_name(r.order.status)} "
                  f"v{r.order.version}  [{_us(ns)}]")
            self.await_change(a.id, r.order.version, t0)
        # Order B: cancelled before it reaches the OMS
        corr_b = f"c-{uuid.uuid4().hex[:8]}"
        t0 = time.perf_counter_ns()
        r, ns = self.call(self.orders, "CreateOrder", pb.CreateOrderRequest(
            customer_id="cust-1002", items=[pb.OrderItemData(sku="C-300", name="gizmo", quantity=5, unit_price_cents=499)],
            context=self.ctx(corr_b)), pb.OrderResponse)
        b = r.order
        print(f"  {'CreateOrder(cust-1002, 1 item)':<40} -> order {b.id} {status_name(b.status)}, total "
              f"{b.total_cents / 100:.2f} {b.currency}  [{_us(ns)}]")
        self.await_change(b.id, b.version, t0)
        t0 = time.perf_counter_ns()
        r, ns = self.call(self.orders, "UpdateOrder", pb.UpdateOrderRequest(
            order_id=b.id, status=S.ORDER_STATUS_CANCELLED, reason="customer changed their mind",
            context=self.ctx(corr_b)), pb.OrderResponse)
        print(f"  {f'UpdateOrder({b.id}, CANCELLED)':<40} -> {status_name(r.order.status)} v{r.order.version}  [{_us(ns)}]")
        self.await_change(b.id, r.order.version, t0)
        g, ns = self.call(self.orders, "GetOrder", pb.GetOrderRequest(order_id=a.id), pb.OrderResponse)
        print(f"  {f'GetOrder({a.id})':<40} -> {status_name(g.order.status)} v{g.order.version}, "
              f"{g.order.oms_reference}, {len(g.order.items)} items, customer {g.order.customer_id}  [{_us(ns)}]")
        v = self.view[a.id]
        y, ns = self.call(self.oms, "SyncOrderStatus", omspb.SyncOrderStatusRequest(
            order_id=a.id, known_status=S.Value("ORDER_STATUS_" + v["status"]), known_version=v["version"]),
            omspb.SyncOrderStatusResponse)
        label = f"SyncOrderStatus({a.id}, known {v['status']} v{v['version']})"
        print(f"  {label:<40} -> {status_name(y.status)} "
              f"v{y.version}, {'in sync' if y.in_sync else 'OUT OF SYNC'}  [{_us(ns)}]")

        print("errors across the process boundary:")
        ok_items = [pb.OrderItemData(sku="A-100", quantity=1, unit_price_cents=100)]
        self.expect_error("CreateOrder(no customer)", self.orders, "CreateOrder",
                          pb.CreateOrderRequest(items=ok_items), "INVALID_ARGUMENT")
        self.expect_error("CreateOrder(no items)", self.orders, "CreateOrder",
                          pb.CreateOrderRequest(customer_id="cust-1001"), "INVALID_ARGUMENT")
        self.expect_error("CreateOrder(quantity -3)", self.orders, "CreateOrder", pb.CreateOrderRequest(
            customer_id="cust-1001", items=[pb.OrderItemData(sku="A-100", quantity=-3, unit_price_cents=100)]),
            "INVALID_ARGUMENT")
        self.expect_error("GetOrder(999)", self.orders, "GetOrder", pb.GetOrderRequest(order_id=999), "NOT_FOUND")
        self.expect_error(f"UpdateOrder({a.id}, SHIPPED -> PENDING)", self.orders, "UpdateOrder",
                          pb.UpdateOrderRequest(order_id=a.id, status=S.ORDER_STATUS_PENDING), "FAILED_PRECONDITION")
        self.expect_error(f"SendOrderToOMS({b.id}) (cancelled)", self.oms, "SendOrderToOMS",
                          omspb.SendOrderToOMSRequest(order_id=b.id), "FAILED_PRECONDITION")

        self.tamper(a.id)

        print(f"latency (Python -> Python OMS, protobuf over shared memory, {self.n_latency} calls each):")
        for fn, client, req in (("GetOrder", self.orders, pb.GetOrderRequest(order_id=a.id)),
                                ("SyncOrderStatus", self.oms, omspb.SyncOrderStatusRequest(order_id=a.id))):
            lat = []
            for _ in range(self.n_latency):
                t0 = time.perf_counter_ns()
                client.call(fn, req, timeout=CALL_TIMEOUT)
                lat.append(time.perf_counter_ns() - t0)
            lat.sort()
            self.report["latency_us"][fn] = {"p50": _pct(lat, .5) / 1000, "p99": _pct(lat, .99) / 1000, "n": len(lat)}
            print(f"  {fn:<16} round trip p50 {_pct(lat, .5) / 1000:.1f} us, p99 {_pct(lat, .99) / 1000:.1f} us")
        ev = sorted(self.event_lat)
        self.report["latency_us"]["event"] = {"p50": _pct(ev, .5) / 1000, "max": ev[-1] / 1000, "n": len(ev)}
        print(f"  call -> signed status event verified and applied: p50 {_pct(ev, .5) / 1000:.0f} us, "
              f"max {ev[-1] / 1000:.0f} us ({len(ev)} events)")
        for oid in (a.id, b.id):
            self.report["orders"][str(oid)] = self.view[oid]
        e = self.report["events"]
        print(f"front end done: {len(self.view)} orders, {e['applied']} status events verified and applied, "
              f"{e['rejected']} tampered event rejected")

    def tamper(self, order_id: int) -> None:
        """An attacker on the host re-publishes the last genuine event of order_id on order.status
        with new_status DELIVERED (and a higher version), keeping the original signature."""
        print("tampering: a second publisher on order.status re-sends the last event of order "
              f"{order_id} with new_status DELIVERED and the original signature:")
        genuine = self.last_event[order_id]
        data = dict(genuine.data)
        change = omspb.OrderStatusChanged.FromString(data["message"])
        change.old_status, change.new_status, change.version = change.new_status, S.ORDER_STATUS_DELIVERED, change.version + 1
        data["message"] = change.SerializeToString()
        with self.node.publisher(signing.TOPIC) as pub:
            pub.publish_event(genuine.type, data, id=genuine.id, timestamp=genuine.timestamp, source=genuine.source,
                              correlation_id=genuine.correlation_id, user_id=genuine.user_id)
            before = self.report["events"]["rejected"]
            end = time.monotonic() + EVENT_TIMEOUT
            while self.report["events"]["rejected"] == before and time.monotonic() < end:
                ev = self.sub.recv(timeout=max(0.0, end - time.monotonic()))
                if ev is not None:
                    self.handle_event(ev)
        if self.report["events"]["rejected"] == before:
            raise RuntimeError("the tampered event was not received")
        y, _ = self.call(self.oms, "SyncOrderStatus", omspb.SyncOrderStatusRequest(order_id=order_id),
                         omspb.SyncOrderStatusResponse)
        print(f"  order {order_id} stays {self.view[order_id]['status']} in the front end's view "
              f"(OMS says {status_name(y.status)})")
        self.report["tamper"] = {"order_id": order_id, "view_status": self.view[order_id]["status"],
                                 "oms_status": status_name(y.status)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hms_ffi_native._orders.frontend", description=__doc__.split("\n\n")[0])
    p.add_argument("--report", help="write a JSON report of what happened to this file")
    p.add_argument("-n", type=int, default=500, help="round trips per latency measurement")
    p.add_argument("--user", default="alice", help="the API user the calls are made for")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="  front end log: %(levelname)s %(message)s")
    try:
        key = signing.load_key()
    except signing.KeyError_ as e:
        print(f"front end: {e}", file=sys.stderr)
        return 2
    install_protobuf_codec()
    fe = FrontEnd(key, args.user, max(10, args.n))
    try:
        fe.run()
    except KeyboardInterrupt:
        return 130
    finally:
        fe.close()
        if args.report:
            with open(args.report, "w") as f:
                json.dump(fe.report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
