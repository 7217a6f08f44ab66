"""Protocol Buffers payloads (content type protobuf): messages travel as their serialized bytes, and a
function declared with a request type only ever sees messages that parse (hms.order.v1 from the order
flow, generated into hms_ffi_native._orders)."""
from __future__ import annotations

import pytest

import hms_ffi_native as hms
from hms_ffi_native._codec import CT_PROTOBUF, encode

pb = pytest.importorskip("hms_ffi_native._orders.order_pb2")


@pytest.fixture
def orders(node):
    svc = node.service("t.proto", "1.0.0")
    seen = []

    @svc.function(request_type=pb.CreateOrderRequest)
    def CreateOrder(req, ctx):
        seen.append((type(req).__name__, ctx.content_type))
        if not req.items:
            raise hms.InvalidArgument("an order needs items", details={"field": "items"})
        return pb.OrderData(id=7, customer_id=req.customer_id, items=req.items,
                            total_cents=sum(i.quantity * i.unit_price_cents for i in req.items))

    @svc.function()
    def Plain(x, ctx):
        return {"type": ctx.content_type}

    node.start()
    with hms.connect("t.proto") as c:
        yield c, seen


def test_a_message_goes_as_protobuf_and_comes_back_as_one(orders):
    c, seen = orders
    req = pb.CreateOrderRequest(customer_id="c-1", items=[pb.OrderItemData(sku="A", quantity=2, unit_price_cents=150)])
    assert encode(req)[1] == CT_PROTOBUF
    raw = c.call("CreateOrder", req, timeout=5)
    assert isinstance(raw, bytes)  # the caller knows its reply type
    order = pb.OrderData.FromString(raw)
    assert (order.id, order.customer_id, order.total_cents) == (7, "c-1", 300)
    assert seen == [("CreateOrderRequest", "protobuf")]
    assert c.call("Plain", req, timeout=5) == {"type": "protobuf"}
    assert c.call("Plain", {"a": 1}, timeout=5) == {"type": "cbor"}
    assert c.call("Plain", b"x", timeout=5) == {"type": "raw"}


def test_bytes_that_do_not_parse_are_refused_before_the_handler(orders):
    c, seen = orders
    with pytest.raises(hms.InvalidArgument) as ei:
        c.call("CreateOrder", b"\xff\xff\xff\xff", codec="protobuf", timeout=5)
    assert "hms.order.v1.CreateOrderRequest" in ei.value.message
    assert ei.value.details == {"type": "hms.order.v1.CreateOrderRequest"}
    with pytest.raises(hms.InvalidArgument, match="takes a protobuf hms.order.v1.CreateOrderRequest; got a cbor"):
        c.call("CreateOrder", {"customer_id": "c-1"}, timeout=5)
    assert seen == []
    # a handler-level rule still reports its own field
    with pytest.raises(hms.InvalidArgument) as ei:
        c.call("CreateOrder", pb.CreateOrderRequest(customer_id="c-1"), timeout=5)
    assert ei.value.details == {"field": "items"}


def test_codec_protobuf_accepts_messages_and_serialized_bytes_only(orders):
    c, _ = orders
    req = pb.CreateOrderRequest(customer_id="c-2", items=[pb.OrderItemData(sku="B", quantity=1, unit_price_cents=5)])
    raw = c.call("CreateOrder", req.SerializeToString(), codec="protobuf", timeout=5)
    assert pb.OrderData.FromString(raw).total_cents == 5
    with pytest.raises(hms.InvalidArgument, match="needs a protobuf message"):
        c.call("CreateOrder", {"not": "a message"}, codec="protobuf", timeout=5)


def test_request_type_must_be_a_message_class(node):
    svc = node.service("t.proto2", "1.0.0")
    with pytest.raises(hms.InvalidArgument, match="generated protobuf message class"):
        svc.add_function("f", lambda x: x, request_type=dict)
