"""The OMS of examples/orders: serves hms.order.v1.OrderService and OMSIntegrationService over
hms-ffi-native, keeps orders in SQLite, and publishes every status change as a signed event on topic
"order.status".

    HMS_ORDERS_HMAC_KEY_FILE=key.hex python -m hms_ffi_native._orders.oms --db orders.db

Prints "ready <pid>" once it serves; stops on SIGTERM or SIGINT (exit 0). Requests and replies are
protobuf (content type 4); a request that is not protobuf, or not the function's message, is
INVALID_ARGUMENT.
"""
from __future__ import annotations

import argparse
import os
import datetime as dt
import json
import logging
import signal
import sqlite3
import sys
import uuid
from typing import Optional

import hms_ffi_native as hms

from . import SERVICE_OMS, SERVICE_ORDERS, SERVICE_VERSION, install_protobuf_codec
from . import oms_integration_pb2 as omspb
from . import order_pb2 as pb
from . import signing

log = logging.getLogger("hms.orders.oms")

S = pb.OrderStatus
# The life cycle (order.proto): status -> the statuses it may change to. SUBMITTED is reached only
# through SendOrderToOMS.
TRANSITIONS = {
    S.ORDER_STATUS_PENDING: (S.ORDER_STATUS_SUBMITTED, S.ORDER_STATUS_CANCELLED),
    S.ORDER_STATUS_SUBMITTED: (S.ORDER_STATUS_PROCESSING, S.ORDER_STATUS_CANCELLED),
    S.ORDER_STATUS_PROCESSING: (S.ORDER_STATUS_SHIPPED, S.ORDER_STATUS_CANCELLED),
    S.ORDER_STATUS_SHIPPED: (S.ORDER_STATUS_DELIVERED,),
    S.ORDER_STATUS_DELIVERED: (),
    S.ORDER_STATUS_CANCELLED: (),
}
MAX_ITEMS = 1000
MAX_QUANTITY = 1_000_000
MAX_PRICE_CENTS = 10 ** 11


def status_name(v: int) -> str:
    """ORDER_STATUS_SHIPPED -> "SHIPPED" (unknown numbers as "STATUS_<n>")."""
    try:
        return S.Name(v).removeprefix("ORDER_STATUS_")
    except ValueError:
        return f"STATUS_{v}"


SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id   TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    currency      TEXT    NOT NULL,
    total_cents   INTEGER NOT NULL,
    oms_reference TEXT    UNIQUE,
    notes         TEXT    NOT NULL DEFAULT '',
    metadata      TEXT    NOT NULL DEFAULT '{}',
    version       INTEGER NOT NULL,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS order_items (
    order_id         INTEGER NOT NULL REFERENCES orders(id),
    line             INTEGER NOT NULL,
    sku              TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents INTEGER NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line)
);
CREATE TABLE IF NOT EXISTS status_history (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id       INTEGER NOT NULL REFERENCES orders(id),
    old_status     TEXT,
    new_status     TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    reason         TEXT    NOT NULL DEFAULT '',
    changed_at     TEXT    NOT NULL,
    event_id       TEXT    NOT NULL,
    correlation_id TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    caller_pid     INTEGER NOT NULL
);
"""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _ts(iso: str):
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.FromDatetime(dt.datetime.fromisoformat(iso))
    return t


def parse(cls, data, fn: str):
    """The request message, or INVALID_ARGUMENT saying what arrived instead."""
    if not isinstance(data, (bytes, bytearray)):
        raise hms.InvalidArgument(f"{fn} takes a protobuf {cls.DESCRIPTOR.full_name} (content type 4), "
                                  f"not a {type(data).__name__}")
    msg = cls()
    try:
        msg.ParseFromString(bytes(data))
    except Exception as e:  # DecodeError; hostile bytes must become a status, not a crash
        raise hms.InvalidArgument(f"{fn}: not a valid {cls.DESCRIPTOR.full_name}: {e}") from None
    return msg


class OMS:
    """The services' state: one SQLite connection and the status publisher. Handlers run on the node's
    dispatcher thread, one at a time, so the connection is never shared between threads at once."""

    def __init__(self, node: hms.Node, db_path: str, key: bytes, source: str = "hms-oms") -> None:
        self.db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; a demo needs no fsync per order
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        self.key = key
        self.source = source
        self.publisher = node.publisher(signing.TOPIC)
        orders = node.service(SERVICE_ORDERS, version=SERVICE_VERSION)
        integration = node.service(SERVICE_OMS, version=SERVICE_VERSION)
        orders.add_function("CreateOrder", self.CreateOrder)
        orders.add_function("GetOrder", self.GetOrder, idempotent=True)
        orders.add_function("UpdateOrder", self.UpdateOrder)
        integration.add_function("SendOrderToOMS", self.SendOrderToOMS)
        integration.add_function("SyncOrderStatus", self.SyncOrderStatus, idempotent=True)

    # -- storage
    def _row(self, order_id: int) -> sqlite3.Row:
        if order_id <= 0:
            raise hms.InvalidArgument(f"order_id must be positive, got {order_id}", details={"field": "order_id"})
        row = self.db.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
        if row is None:
            raise hms.NotFound(f"order {order_id} does not exist", details={"order_id": order_id})
        return row

    def _order(self, row: sqlite3.Row) -> pb.OrderData:
        o = pb.OrderData(id=row["id"], customer_id=row["customer_id"], status=S.Value("ORDER_STATUS_" + row["status"]),
                         total_cents=row["total_cents"], currency=row["currency"],
                         oms_reference=row["oms_reference"] or "", notes=row["notes"], version=row["version"],
                         created_at=_ts(row["created_at"]), updated_at=_ts(row["updated_at"]),
                         metadata=json.loads(row["metadata"]))
        for it in self.db.execute("SELECT * FROM order_items WHERE order_id = ? ORDER BY line", (row["id"],)):
            o.items.add(sku=it["sku"], name=it["name"], quantity=it["quantity"],
                        unit_price_cents=it["unit_price_cents"])
        return o

    def _change_status(self, row, new: int, reason: str, rctx, ctx, *, oms_reference: Optional[str] = None,
                       notes: Optional[str] = None, before_history=None) -> int:
        """Writes the change and its history row in one transaction, then publishes the signed event
        (only after the commit: an event never announces a change that could still roll back).
        ``before_history``: more writes for the same transaction (CreateOrder's insert)."""
        old = S.Value("ORDER_STATUS_" + row["status"])
        order_id = row["id"]
        version = row["version"] + 1
        now = _now()
        event_id = str(uuid.uuid4())
        correlation_id = rctx.correlation_id or event_id
        user_id = rctx.user_id
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if before_history is not None:
                order_id = before_history()
            self.db.execute(
                "UPDATE orders SET status = ?, version = ?, updated_at = ?, "
                "oms_reference = COALESCE(?, oms_reference), notes = COALESCE(?, notes) WHERE id = ?",
                (status_name(new), version, now.isoformat(), oms_reference, notes, order_id))
            self.db.execute(
                "INSERT INTO status_history (order_id, old_status, new_status, version, reason, changed_at, "
                "event_id, correlation_id, user_id, caller_pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (order_id, status_name(old) if old else None, status_name(new), version, reason, now.isoformat(),
                 event_id, correlation_id, user_id, ctx.peer_pid))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self._publish(event_id, now, correlation_id, user_id, omspb.OrderStatusChanged(
            order_id=order_id, oms_reference=oms_reference or row["oms_reference"] or "", old_status=old,
            new_status=new, version=version, reason=reason, changed_at=_ts(now.isoformat())))
        return order_id

    def _publish(self, event_id: str, now: dt.datetime, correlation_id: str, user_id: str,
                 change: omspb.OrderStatusChanged) -> None:
        message = change.SerializeToString()
        data = signing.signed_data(self.key, id=event_id, type=signing.EVENT_TYPE, timestamp=now,
                                   source=self.source, correlation_id=correlation_id, user_id=user_id,
                                   message=message)
        self.publisher.publish_event(signing.EVENT_TYPE, data, id=event_id, timestamp=now, source=self.source,
                                     correlation_id=correlation_id, user_id=user_id)

    # -- OrderService
    def CreateOrder(self, data, ctx: hms.CallContext):
        req = parse(pb.CreateOrderRequest, data, "CreateOrder")
        if not req.customer_id.strip():
            raise hms.InvalidArgument("customer_id is required", details={"field": "customer_id"})
        if not req.items:
            raise hms.InvalidArgument("an order needs at least one item", details={"field": "items"})
        if len(req.items) > MAX_ITEMS:
            raise hms.InvalidArgument(f"an order has at most {MAX_ITEMS} items, got {len(req.items)}",
                                      details={"field": "items"})
        for i, it in enumerate(req.items):
            field = f"items[{i}]"
            if not it.sku.strip():
                raise hms.InvalidArgument(f"{field}.sku is required", details={"field": f"{field}.sku"})
            if it.quantity <= 0 or it.quantity > MAX_QUANTITY:
                raise hms.InvalidArgument(f"{field}.quantity must be between 1 and {MAX_QUANTITY}, got {it.quantity}",
                                          details={"field": f"{field}.quantity"})
            if it.unit_price_cents < 0 or it.unit_price_cents > MAX_PRICE_CENTS:
                raise hms.InvalidArgument(f"{field}.unit_price_cents must be between 0 and {MAX_PRICE_CENTS}, "
                                          f"got {it.unit_price_cents}", details={"field": f"{field}.unit_price_cents"})
        currency = req.currency or "USD"
        if len(currency) != 3 or not currency.isascii() or not currency.isupper():
            raise hms.InvalidArgument(f"currency must be an ISO 4217 code like USD, got {currency!r}",
                                      details={"field": "currency"})
        total = sum(it.quantity * it.unit_price_cents for it in req.items)
        now = _now().isoformat()

        def insert() -> int:
            cur = self.db.execute(
                "INSERT INTO orders (customer_id, status, currency, total_cents, notes, metadata, version, "
                "created_at, updated_at) VALUES (?, 'UNSPECIFIED', ?, ?, ?, ?, 0, ?, ?)",
                (req.customer_id.strip(), currency, total, req.notes, json.dumps(dict(req.metadata), sort_keys=True),
                 now, now))
            self.db.executemany(
                "INSERT INTO order_items (order_id, line, sku, name, quantity, unit_price_cents) VALUES (?, ?, ?, ?, ?, ?)",
                [(cur.lastrowid, i, it.sku, it.name, it.quantity, it.unit_price_cents) for i, it in enumerate(req.items)])
            return cur.lastrowid

        # Creation is the first status change (UNSPECIFIED -> PENDING), in the same transaction as the
        # insert, and published like the others.
        new_row = {"id": 0, "status": "UNSPECIFIED", "version": 0, "oms_reference": None}
        order_id = self._change_status(new_row, S.ORDER_STATUS_PENDING, "created", req.context, ctx,
                                       before_history=insert)
        return pb.OrderResponse(order=self._order(self._row(order_id)))

    def GetOrder(self, data):
        req = parse(pb.GetOrderRequest, data, "GetOrder")
        return pb.OrderResponse(order=self._order(self._row(req.order_id)))

    def UpdateOrder(self, data, ctx: hms.CallContext):
        req = parse(pb.UpdateOrderRequest, data, "UpdateOrder")
        row = self._row(req.order_id)
        notes = req.notes if req.HasField("notes") else None
        if req.status == S.ORDER_STATUS_UNSPECIFIED:
            if notes is None:
                raise hms.InvalidArgument("nothing to update: give a status, notes or both", details={"field": "status"})
            self.db.execute("UPDATE orders SET notes = ?, version = version + 1, updated_at = ? WHERE id = ?",
                            (notes, _now().isoformat(), req.order_id))
            return pb.OrderResponse(order=self._order(self._row(req.order_id)))
        if req.status not in S.values():
            raise hms.InvalidArgument(f"status {req.status} is not an OrderStatus", details={"field": "status"})
        old = S.Value("ORDER_STATUS_" + row["status"])
        if req.status != old:
            allowed = TRANSITIONS[old]
            if req.status == S.ORDER_STATUS_SUBMITTED and req.status in allowed:
                raise hms.FailedPrecondition(f"order {req.order_id} is submitted through SendOrderToOMS, "
                                             "not UpdateOrder", details={"from": status_name(old), "to": "SUBMITTED"})
            if req.status not in allowed:
                nexts = ", ".join(status_name(s) for s in allowed) or "none: it is final"
                raise hms.FailedPrecondition(
                    f"order {req.order_id} cannot go from {status_name(old)} to {status_name(req.status)} "
                    f"(allowed: {nexts})",
                    details={"from": status_name(old), "to": status_name(req.status),
                             "allowed": [status_name(s) for s in allowed]})
            self._change_status(row, req.status, req.reason, req.context, ctx, notes=notes)
        elif notes is not None:  # same status (an idempotent retry) with new notes
            self.db.execute("UPDATE orders SET notes = ?, version = version + 1, updated_at = ? WHERE id = ?",
                            (notes, _now().isoformat(), req.order_id))
        return pb.OrderResponse(order=self._order(self._row(req.order_id)))

    # -- OMSIntegrationService
    def SendOrderToOMS(self, data, ctx: hms.CallContext):
        req = parse(omspb.SendOrderToOMSRequest, data, "SendOrderToOMS")
        row = self._row(req.order_id)
        if row["status"] != "PENDING":
            already = f" (accepted as {row['oms_reference']})" if row["oms_reference"] else ""
            raise hms.FailedPrecondition(
                f"order {req.order_id} is {row['status']}{already}: only PENDING orders can be sent to the OMS",
                details={"from": row["status"], "to": "SUBMITTED"})
        reference = f"OMS-{req.order_id:06d}"
        self._change_status(row, S.ORDER_STATUS_SUBMITTED, "accepted by the OMS", req.context, ctx,
                            oms_reference=reference)
        row = self._row(req.order_id)
        return omspb.SendOrderToOMSResponse(order_id=req.order_id, oms_reference=reference,
                                            status=S.ORDER_STATUS_SUBMITTED, accepted_at=_ts(row["updated_at"]))

    def SyncOrderStatus(self, data):
        req = parse(omspb.SyncOrderStatusRequest, data, "SyncOrderStatus")
        row = self._row(req.order_id)
        status = S.Value("ORDER_STATUS_" + row["status"])
        return omspb.SyncOrderStatusResponse(
            order_id=row["id"], oms_reference=row["oms_reference"] or "", status=status, version=row["version"],
            in_sync=(req.known_status == status and req.known_version == row["version"]),
            updated_at=_ts(row["updated_at"]))

    def close(self) -> None:
        self.publisher.close()
        self.db.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hms_ffi_native._orders.oms", description=__doc__.split("\n\n")[0])
    p.add_argument("--db", required=True, help="SQLite database file (created if missing)")
    p.add_argument("--source", default="hms-oms", help="the events' metadata.source")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="oms: %(message)s")
    try:
        key = signing.load_key()
    except signing.KeyError_ as e:
        print(f"oms: {e}", file=sys.stderr)
        return 2
    install_protobuf_codec()

    # SIGTERM/SIGINT are taken by sigwait() on this thread, blocked everywhere else (the dispatcher
    # thread inherits the mask): a signal cannot slip in between a check and a blocking wait.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    node = hms.Node("hms-oms")
    oms = None
    try:
        oms = OMS(node, args.db, key, source=args.source)
        node.start()  # handlers run on the node's dispatcher thread, one at a time
        print(f"ready {os.getpid()}", flush=True)
        signal.sigwait(stop_signals)
    finally:
        node.close()
        if oms is not None:
            oms.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
