"""`hms-ffi codegen`: typed clients and server base classes generated from examples/orders/proto/*.proto
(and a small proto with every rpc kind), served in a child process and called through the typed
clients; requests checked before the handler (parse, `// hms: required`, enum values); replies
checked on both sides; the Go stub compiled (go vet) and run against the Python server and as a
server the Python client calls; the Rust stub compiled (cargo check).
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import empty_pb2

import hms_ffi_native as hms
from hms_ffi_native import codegen

from conftest import child_env

pytest.importorskip("grpc_tools", reason="hms-ffi codegen runs protoc from grpcio-tools (the test extra has it)")

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "examples" / "orders" / "proto"
REQUIRED_BINDINGS = os.environ.get("HMS_REQUIRE_BINDINGS") == "1"
if not PROTO_DIR.is_dir():  # the wheel tests run from a copy of tests/ without the source tree
    pytest.skip(f"needs the source tree's examples/orders/proto ({PROTO_DIR} is missing)", allow_module_level=True)

# The example protos carry informal comments ("// required", "// at least one", "// > 0"); the
# copies generated here carry the annotation instead, each replacement checked to have happened.
ANNOTATE = [
    ("string customer_id = 1;       // required", "string customer_id = 1;       // hms: required"),
    ("repeated OrderItemData items = 2;  // at least one",
     "repeated OrderItemData items = 2;  // hms: required (at least one)"),
    ("  string sku = 1;\n", "  // hms: required\n  string sku = 1;\n"),
    ("int32 quantity = 3;           // > 0", "int32 quantity = 3;           // hms: required (> 0)"),
]

NUMBERS_PROTO = """\
// Every rpc kind, for the generated stubs' stream paths.
syntax = "proto3";

package hms.test.v1;

import "google/protobuf/empty.proto";

option go_package = "example.com/gen/streampb;streampb";

enum Color {
  COLOR_UNSPECIFIED = 0;
  COLOR_RED = 1;
  COLOR_GREEN = 2;
}

message Num {
  int64 n = 1;
  Color color = 2;  // hms: required
  map<string, Color> tags = 3;
}

message Sum {
  int64 total = 1;
  int32 count = 2;
}

// Numbers: one rpc of each kind.
service Numbers {
  // Count yields 1..n in the request's color.
  rpc Count(Num) returns (stream Num);
  rpc Add(stream Num) returns (Sum);
  rpc Double(stream Num) returns (stream Num);
  rpc Ping(google.protobuf.Empty) returns (google.protobuf.Empty);
  rpc Later(Num) returns (Sum);  // left unimplemented by the servers
}
"""

SERVER = r'''
import asyncio
import sys

import hms_ffi_native as hms
from google.protobuf import empty_pb2

import numbers_hms
import numbers_pb2 as npb
import oms_integration_hms
import oms_integration_pb2 as omspb
import order_hms
import order_pb2 as pb

orders = {}


def find(order_id):
    o = orders.get(order_id)
    if o is None:
        raise hms.NotFound(f"no order {order_id}", details={"order_id": order_id})
    return o


class Orders(order_hms.OrderServiceBase):
    def CreateOrder(self, req, ctx):
        if req.customer_id == "wrong-reply":
            return {"id": 1}  # not an OrderResponse: the caller must get INTERNAL
        oid = len(orders) + 1
        o = pb.OrderData(id=oid, customer_id=req.customer_id, items=req.items, status=pb.ORDER_STATUS_PENDING,
                         total_cents=sum(i.quantity * i.unit_price_cents for i in req.items),
                         currency=req.currency or "USD", notes=req.notes, version=1)
        o.metadata.update(req.metadata)
        orders[oid] = o
        return pb.OrderResponse(order=o)

    async def GetOrder(self, req, ctx):  # served on the node's event loop
        await asyncio.sleep(0)
        return pb.OrderResponse(order=find(req.order_id))

    def UpdateOrder(self, req, ctx):
        o = find(req.order_id)
        if req.status:
            o.status = req.status
        if req.HasField("notes"):
            o.notes = req.notes
        o.version += 1
        return pb.OrderResponse(order=o)


class OMS(oms_integration_hms.OMSIntegrationServiceBase):
    def SendOrderToOMS(self, req, ctx):
        o = find(req.order_id)
        if o.status != pb.ORDER_STATUS_PENDING:
            raise hms.FailedPrecondition(f"order {o.id} is not PENDING")
        o.status, o.oms_reference = pb.ORDER_STATUS_SUBMITTED, f"OMS-{o.id}"
        o.version += 1
        return omspb.SendOrderToOMSResponse(order_id=o.id, oms_reference=o.oms_reference, status=o.status)

    def SyncOrderStatus(self, req, ctx):
        o = find(req.order_id)
        return omspb.SyncOrderStatusResponse(order_id=o.id, oms_reference=o.oms_reference, status=o.status,
                                             version=o.version,
                                             in_sync=(req.known_status, req.known_version) == (o.status, o.version))


class Numbers(numbers_hms.NumbersBase):
    def Count(self, req, ctx):
        for i in range(1, req.n + 1):
            yield npb.Num(n=i, color=req.color)

    def Add(self, nums, ctx):
        total = count = 0
        for x in nums:
            total, count = total + x.n, count + 1
        return npb.Sum(total=total, count=count)

    def Double(self, nums, ctx):
        for x in nums:
            yield npb.Num(n=2 * x.n, color=x.color)
            if x.n == 99:
                yield "not a Num"  # the stream must end with INTERNAL

    def Ping(self, req, ctx):
        return empty_pb2.Empty()


node = hms.Node("codegen-test")
Orders().register(node, "1.0.0")
OMS().register(node, "1.0.0")
Numbers().register(node, "1.0.0", idempotent=["Ping"])
print("ready", flush=True)
node.serve()
'''


def _annotated_protos(dst: Path) -> Path:
    dst.mkdir(parents=True)
    text = (PROTO_DIR / "order.proto").read_text()
    for old, new in ANNOTATE:
        assert text.count(old) == 1, f"order.proto changed: {old!r} not found once; update ANNOTATE"
        text = text.replace(old, new)
    (dst / "order.proto").write_text(text)
    shutil.copy(PROTO_DIR / "oms_integration.proto", dst / "oms_integration.proto")
    (dst / "numbers.proto").write_text(NUMBERS_PROTO)
    return dst


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hms_ffi_native", "codegen", *args], capture_output=True,
                          text=True, env=child_env(), cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    """Python code for the three protos, generated through the CLI, importable from this process."""
    base = tmp_path_factory.mktemp("codegen")
    protos = _annotated_protos(base / "proto")
    out = base / "py"
    r = _cli(str(protos / "order.proto"), str(protos / "oms_integration.proto"), str(protos / "numbers.proto"),
             "-I", str(protos), "--out", str(out))
    assert r.returncode == 0, r.stderr
    listed = {Path(p).name for p in r.stdout.split()}
    assert {"order_pb2.py", "order_pb2.pyi", "order_hms.py", "oms_integration_hms.py", "numbers_hms.py",
            "numbers_pb2.py"} <= listed
    sys.path.insert(0, str(out))
    try:
        mods = {n: importlib.import_module(n) for n in ("order_pb2", "oms_integration_pb2", "numbers_pb2",
                                                        "order_hms", "oms_integration_hms", "numbers_hms")}
        yield base, out, protos, mods
    finally:
        sys.path.remove(str(out))
        for n in ("order_pb2", "oms_integration_pb2", "numbers_pb2", "order_hms", "oms_integration_hms",
                  "numbers_hms"):
            sys.modules.pop(n, None)


class Child:
    def __init__(self, args, env, what: str) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.stop()
            raise RuntimeError(f"{what} did not start: {line!r} {self.proc.stderr.read()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def served(gen, runtime_dir):
    base, out, _, mods = gen
    script = base / "server.py"
    script.write_text(SERVER)
    env = child_env()
    env["PYTHONPATH"] = str(out) + os.pathsep + env["PYTHONPATH"]
    child = Child([sys.executable, str(script)], env, "the generated Python server")
    try:
        yield mods
    finally:
        child.stop()


def test_generated_modules_carry_the_services_docs_and_annotations(gen):
    _, out, _, m = gen
    oh = m["order_hms"]
    assert oh.OrderServiceClient.SERVICE == "hms.order.v1.OrderService"
    assert set(oh.OrderServiceClient.RPCS) == {"CreateOrder", "GetOrder", "UpdateOrder"}
    assert "Create a new order (status PENDING)" in oh.OrderServiceClient.CreateOrder.__doc__
    # the annotations of the file and of the files it imports (oms_integration imports order.proto)
    order_required = {"hms.order.v1.CreateOrderRequest.customer_id", "hms.order.v1.CreateOrderRequest.items",
                      "hms.order.v1.OrderItemData.sku", "hms.order.v1.OrderItemData.quantity"}
    assert oh._REQUIRED == order_required
    assert m["oms_integration_hms"]._REQUIRED == order_required
    assert m["numbers_hms"]._REQUIRED == {"hms.test.v1.Num.color"}
    rpcs = m["numbers_hms"].NumbersClient.RPCS
    assert [(r.client_streaming, r.server_streaming) for r in rpcs.values()] == \
        [(False, True), (True, False), (True, True), (False, False), (False, False)]
    # oms_integration.proto has its services only; its messages import order_pb2 (generated too)
    assert m["oms_integration_hms"].OMSIntegrationServiceClient.RPCS["SendOrderToOMS"].response is \
        m["oms_integration_pb2"].SendOrderToOMSResponse


def test_every_rpc_through_the_typed_clients(served):
    m = served
    pb, npb = m["order_pb2"], m["numbers_pb2"]
    with m["order_hms"].OrderServiceClient.connect("^1") as orders, \
            m["oms_integration_hms"].OMSIntegrationServiceClient.connect("^1") as oms, \
            m["numbers_hms"].NumbersClient.connect("^1") as nums:
        created = orders.CreateOrder(pb.CreateOrderRequest(
            customer_id="c-1", items=[pb.OrderItemData(sku="A", quantity=2, unit_price_cents=150)],
            metadata={"channel": "web"}), timeout=5)
        assert isinstance(created, pb.OrderResponse)
        o = created.order
        assert (o.customer_id, o.total_cents, o.status, o.currency, dict(o.metadata)) == \
            ("c-1", 300, pb.ORDER_STATUS_PENDING, "USD", {"channel": "web"})
        # the request's fields as keywords
        got = orders.GetOrder(order_id=o.id, timeout=5)
        assert got.order == o
        sent = oms.SendOrderToOMS(order_id=o.id, timeout=5)
        assert (sent.status, sent.oms_reference) == (pb.ORDER_STATUS_SUBMITTED, f"OMS-{o.id}")
        upd = orders.UpdateOrder(pb.UpdateOrderRequest(order_id=o.id, status=pb.ORDER_STATUS_PROCESSING,
                                                       notes="rush"), timeout=5)
        assert (upd.order.status, upd.order.notes, upd.order.version) == (pb.ORDER_STATUS_PROCESSING, "rush", 3)
        sync = oms.SyncOrderStatus(order_id=o.id, known_status=pb.ORDER_STATUS_PROCESSING, known_version=3, timeout=5)
        assert sync.in_sync and sync.version == 3
        assert not oms.SyncOrderStatus(order_id=o.id, known_version=1, timeout=5).in_sync
        # handler errors keep their status and details
        with pytest.raises(hms.FailedPrecondition, match="not PENDING"):
            oms.SendOrderToOMS(order_id=o.id, timeout=5)
        with pytest.raises(hms.NotFound) as ei:
            orders.GetOrder(order_id=999, timeout=5)
        assert ei.value.details == {"order_id": 999} and ei.value.source == "remote"

        # every rpc kind
        with nums.Count(npb.Num(n=4, color=npb.COLOR_RED), timeout=5) as stream:
            assert [(x.n, x.color) for x in stream] == [(i, npb.COLOR_RED) for i in range(1, 5)]
        total = nums.Add((npb.Num(n=i, color=npb.COLOR_GREEN) for i in range(10)), timeout=5)
        assert (total.total, total.count) == (45, 10)
        with nums.Double(iter([npb.Num(n=i, color=npb.COLOR_RED) for i in range(5)]), timeout=5) as s:
            assert [x.n for x in s] == [0, 2, 4, 6, 8]
        assert nums.Ping(timeout=5) == empty_pb2.Empty()
        with pytest.raises(hms.Unimplemented, match="hms.test.v1.Numbers.Later is not implemented"):
            nums.Later(npb.Num(n=1, color=npb.COLOR_RED), timeout=5)


def test_payloads_that_do_not_parse_or_are_not_protobuf_are_refused(served):
    m = served
    with hms.connect("hms.order.v1.OrderService", "^1") as raw:
        with pytest.raises(hms.InvalidArgument) as ei:
            raw.call("CreateOrder", b"\xff\xff\xff\xff", codec="protobuf", timeout=5)
        assert "does not parse as hms.order.v1.CreateOrderRequest" in ei.value.message
        assert ei.value.details == {"type": "hms.order.v1.CreateOrderRequest"}
        with pytest.raises(hms.InvalidArgument, match="takes a protobuf hms.order.v1.GetOrderRequest; got a cbor"):
            raw.call("GetOrder", {"order_id": 1}, timeout=5)
    with hms.connect("hms.test.v1.Numbers", "^1") as raw:  # client-stream items are parsed one by one
        good = m["numbers_pb2"].Num(n=1, color=1).SerializeToString()
        with pytest.raises(hms.InvalidArgument) as ei:
            raw.client_stream("Add", [good, good, b"\xff\xff\xff"], codec="protobuf", timeout=5)
        assert "does not parse as hms.test.v1.Num" in ei.value.message
    # the typed client refuses a request of the wrong type before sending
    with m["order_hms"].OrderServiceClient.connect("^1") as orders:
        wrong = "takes a hms.order.v1.GetOrderRequest, got .*CreateOrderRequest"
        with pytest.raises(hms.InvalidArgument, match=wrong) as ei:
            orders.GetOrder(m["order_pb2"].CreateOrderRequest(customer_id="x"), timeout=5)
        assert ei.value.source == "local"
        with pytest.raises(hms.InvalidArgument, match="cannot build a hms.order.v1.GetOrderRequest"):
            orders.GetOrder(no_such_field=1, timeout=5)


def test_field_level_errors_name_the_field(served):
    m = served
    pb, npb = m["order_pb2"], m["numbers_pb2"]

    def refused(call) -> hms.InvalidArgument:
        with pytest.raises(hms.InvalidArgument) as ei:
            call()
        assert ei.value.source == "remote"
        return ei.value

    with m["order_hms"].OrderServiceClient.connect("^1") as orders, \
            m["numbers_hms"].NumbersClient.connect("^1") as nums:
        item = pb.OrderItemData(sku="A", quantity=1, unit_price_cents=1)
        e = refused(lambda: orders.CreateOrder(items=[item], timeout=5))
        assert (e.message, e.details) == ("customer_id: required field is not set", {"field": "customer_id"})
        e = refused(lambda: orders.CreateOrder(customer_id="c", timeout=5))
        assert e.details == {"field": "items"} and "needs at least one" in e.message
        e = refused(lambda: orders.CreateOrder(customer_id="c", items=[item, pb.OrderItemData(sku="B")], timeout=5))
        assert (e.message, e.details) == ("items[1].quantity: required field is not set",
                                          {"field": "items[1].quantity"})
        e = refused(lambda: orders.CreateOrder(customer_id="c", items=[pb.OrderItemData(quantity=1)], timeout=5))
        assert e.details == {"field": "items[0].sku"}
        # enum values must be defined (proto3 parsing keeps unknown numbers)
        e = refused(lambda: orders.UpdateOrder(order_id=1, status=99, timeout=5))
        assert (e.message, e.details) == ("status: 99 is not a defined hms.order.v1.OrderStatus value",
                                          {"field": "status"})
        tagged = npb.Num(n=1, color=npb.COLOR_RED, tags={"a": 1, "b": 7})
        e = refused(lambda: list(nums.Count(tagged, timeout=5)))
        assert (e.message, e.details) == ('tags["b"]: 7 is not a defined hms.test.v1.Color value',
                                          {"field": 'tags["b"]'})
        e = refused(lambda: list(nums.Count(npb.Num(n=2), timeout=5)))
        assert e.details == {"field": "color"}
        # client-stream items: the index leads the path
        e = refused(lambda: nums.Add([npb.Num(n=1, color=1), npb.Num(n=2, color=1), npb.Num(n=3)], timeout=5))
        assert (e.message, e.details) == ("[2].color: required field is not set", {"field": "[2].color"})
        with nums.Double(iter([npb.Num(n=1, color=1), npb.Num(n=2, color=5)]), timeout=5) as s:
            assert next(s).n == 2
            with pytest.raises(hms.InvalidArgument) as ei:
                next(s)
        assert ei.value.details == {"field": "[1].color"}
        # nothing was stored by the refused calls
        ok = orders.CreateOrder(customer_id="c", items=[item], timeout=5)
        assert ok.order.id == 1


def test_replies_are_checked_on_both_sides(served, node):
    m = served
    # server side: a method returning the wrong type answers INTERNAL, naming the expected type
    with m["order_hms"].OrderServiceClient.connect("^1") as orders:
        with pytest.raises(hms.Internal, match="returned builtins.dict; it must return a hms.order.v1.OrderResponse"):
            orders.CreateOrder(customer_id="wrong-reply", items=[m["order_pb2"].OrderItemData(sku="A", quantity=1)],
                               timeout=5)
    with m["numbers_hms"].NumbersClient.connect("^1") as nums:
        with nums.Double(iter([m["numbers_pb2"].Num(n=99, color=1)]), timeout=5) as s:
            assert next(s).n == 198
            with pytest.raises(hms.Internal, match="returned builtins.str"):
                next(s)
    # client side: a reply that does not parse, or is not protobuf at all, is INTERNAL (local)
    svc = node.service("hms.test.v1.Numbers", "9.0.0")
    svc.add_function("Later", lambda req: b"\xff\xff\xff", codec="raw")
    svc.add_function("Ping", lambda req: {"not": "protobuf"})
    node.start()
    with m["numbers_hms"].NumbersClient.connect("9.0.0") as bad:
        with pytest.raises(hms.Internal, match="Later replied bytes that do not parse as hms.test.v1.Sum") as ei:
            bad.Later(m["numbers_pb2"].Num(n=1), timeout=5)
        assert ei.value.source == "local"
        with pytest.raises(hms.Internal, match="Ping replied with a dict value"):
            bad.Ping(timeout=5)
    with hms.connect("hms.test.v1.Numbers", "9.0.0") as other:
        with pytest.raises(hms.InvalidArgument, match="needs a client of hms.order.v1.OrderService, got one of "
                                                      "hms.test.v1.Numbers"):
            m["order_hms"].OrderServiceClient(other)


def test_client_streaming_methods_cannot_be_async(gen, node):
    mods = gen[3]

    class Bad(mods["numbers_hms"].NumbersBase):
        async def Add(self, nums, ctx):
            return None

    with pytest.raises(hms.InvalidArgument, match="client-streaming rpc: its method must be a plain function"):
        Bad().register(node, "1.0.0")
    with pytest.raises(hms.InvalidArgument, match="has no rpc"):
        mods["numbers_hms"].NumbersBase().register(node, "1.0.1", idempotent=["Nope"])


def test_errors_say_what_to_do(tmp_path, monkeypatch):
    bad = tmp_path / "bad.proto"
    bad.write_text('syntax = "proto3";\nmessage M {\n  int32 x = 1;  // hms: requird\n}\n'
                   'service S { rpc F(M) returns (M); }\n')
    r = _cli(str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode == 1
    assert "bad.proto:3: unknown annotation 'hms: requird' on M.x; known: required" in r.stderr
    broken = tmp_path / "broken.proto"
    broken.write_text('syntax = "proto3";\nmessage M { int32 x = 1 }\n')
    r = _cli(str(broken), "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "protoc failed" in r.stderr and "broken.proto:2" in r.stderr
    r = _cli(str(tmp_path / "missing.proto"))
    assert r.returncode == 1 and "missing.proto: no such file" in r.stderr
    r = _cli(str(bad), "--lang", "java")
    assert r.returncode == 1 and "unknown language(s) java" in r.stderr
    real = codegen.importlib.util.find_spec
    monkeypatch.setattr(codegen.importlib.util, "find_spec", lambda n, *a: None if n == "grpc_tools" else real(n, *a))
    with pytest.raises(codegen.CodegenError, match="pip install grpcio-tools"):
        codegen.generate([str(PROTO_DIR / "order.proto")], out=str(tmp_path / "o2"))


# ------------------------------------------------------------------------------------------------
# Go
# ------------------------------------------------------------------------------------------------
GO = shutil.which("go")

GO_MAIN = r'''package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"example.com/gen/orderpb"
	"example.com/gen/streampb"
	hms "github.com/hms-ffi/hms-ffi-native/bindings/go"
)

type orders struct{ orderpb.UnimplementedOrderServiceServer }

func (orders) CreateOrder(call *hms.Call, req *orderpb.CreateOrderRequest) (*orderpb.OrderResponse, error) {
	var total int64
	for _, it := range req.Items {
		total += int64(it.Quantity) * it.UnitPriceCents
	}
	return &orderpb.OrderResponse{Order: &orderpb.OrderData{Id: 42, CustomerId: req.CustomerId, Items: req.Items,
		TotalCents: total, Status: orderpb.OrderStatus_ORDER_STATUS_PENDING}}, nil
}

type numbers struct{ streampb.UnimplementedNumbersServer }

func (numbers) Count(call *hms.Call, req *streampb.Num, send func(*streampb.Num) error) error {
	for i := int64(1); i <= req.N; i++ {
		if err := send(&streampb.Num{N: i, Color: req.Color}); err != nil {
			return err
		}
	}
	return nil
}

func (numbers) Add(call *hms.Call, recv func() (*streampb.Num, error)) (*streampb.Sum, error) {
	s := &streampb.Sum{}
	for {
		x, err := recv()
		if err == io.EOF {
			return s, nil
		}
		if err != nil {
			return nil, err
		}
		s.Total += x.N
		s.Count++
	}
}

func fail(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func errInfo(err error) map[string]any {
	var e *hms.Error
	if !errors.As(err, &e) {
		return map[string]any{"error": fmt.Sprint(err)}
	}
	out := map[string]any{"code": e.Code.String(), "message": e.Message}
	if d, derr := hms.DecodeCBOR(e.Details); derr == nil {
		if m, ok := d.(hms.Map); ok {
			out["field"], _ = m.Get("field")
		}
	}
	return out
}

func main() {
	ctx := context.Background()
	node, err := hms.OpenNode(nil)
	fail(err)
	defer node.Close()
	switch os.Args[1] {
	case "serve":
		_, err = orderpb.RegisterOrderService(node, "2.0.0", orders{})
		fail(err)
		_, err = streampb.RegisterNumbers(node, "2.0.0", numbers{})
		fail(err)
		fail(node.Start())
		fmt.Println("ready")
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
	case "call":
		c, err := node.Connect(ctx, orderpb.OrderServiceName, "^1", nil)
		fail(err)
		oc := orderpb.NewOrderServiceClient(c)
		res := map[string]any{}
		r, err := oc.CreateOrder(ctx, &orderpb.CreateOrderRequest{CustomerId: "go-1",
			Items: []*orderpb.OrderItemData{{Sku: "A", Quantity: 2, UnitPriceCents: 5}}})
		fail(err)
		res["created"] = map[string]any{"customer_id": r.Order.CustomerId, "total_cents": r.Order.TotalCents}
		_, err = oc.CreateOrder(ctx, &orderpb.CreateOrderRequest{CustomerId: "go-2",
			Items: []*orderpb.OrderItemData{{Sku: "A", Quantity: 1}, {Sku: "B"}}})
		res["missing_quantity"] = errInfo(err)
		nc, err := node.Connect(ctx, streampb.NumbersName, "^1", nil)
		fail(err)
		nums := streampb.NewNumbersClient(nc)
		st, err := nums.Count(ctx, &streampb.Num{N: 3, Color: streampb.Color_COLOR_GREEN})
		fail(err)
		var got []int64
		for {
			x, err := st.Recv(ctx)
			if err == io.EOF {
				break
			}
			fail(err)
			got = append(got, x.N)
		}
		st.Close()
		res["count"] = got
		add, err := nums.Add(ctx)
		fail(err)
		for i := int64(1); i <= 4; i++ {
			fail(add.Send(&streampb.Num{N: i, Color: streampb.Color_COLOR_RED}))
		}
		fail(add.CloseSend())
		sum, err := add.Recv(ctx)
		fail(err)
		add.Close()
		res["add"] = []int64{sum.Total, int64(sum.Count)}
		_, err = nums.Later(ctx, &streampb.Num{N: 1, Color: streampb.Color_COLOR_RED})
		res["later"] = errInfo(err)
		out, _ := json.Marshal(res)
		fmt.Println(string(out))
	}
}
'''


@pytest.fixture(scope="module")
def go_module(gen, tmp_path_factory):
    if GO is None or shutil.which("pkg-config") is None:
        if REQUIRED_BINDINGS:
            pytest.fail("HMS_REQUIRE_BINDINGS=1 but go or pkg-config is missing")
        pytest.skip("the Go toolchain (go, pkg-config) is missing")
    _, _, protos, _ = gen
    mod = tmp_path_factory.mktemp("gomod")
    for sub, files in (("orderpb", ["order.proto", "oms_integration.proto"]), ("streampb", ["numbers.proto"])):
        r = _cli(*[str(protos / f) for f in files], "-I", str(protos), "--out", str(mod / sub), "--lang", "go")
        if r.returncode != 0 and "needs protoc-gen-go" in r.stderr and not REQUIRED_BINDINGS:
            pytest.skip(r.stderr.strip())
        assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (mod / "orderpb").iterdir()) == \
        ["oms_integration.pb.go", "oms_integration_hms.go", "order.pb.go", "order_hms.go"]
    (mod / "go.mod").write_text(
        "module example.com/gen\n\ngo 1.24\n\nrequire (\n"
        "\tgithub.com/hms-ffi/hms-ffi-native/bindings/go v0.0.0\n\tgoogle.golang.org/protobuf v1.36.12\n)\n\n"
        f"replace github.com/hms-ffi/hms-ffi-native/bindings/go => {ROOT / 'bindings' / 'go'}\n")
    shutil.copy(ROOT / "examples" / "orders" / "go" / "go.sum", mod / "go.sum")
    (mod / "cmd").mkdir()
    (mod / "cmd" / "main.go").write_text(GO_MAIN)
    return mod


def _go_env() -> dict:
    pc = subprocess.run([sys.executable, "-m", "hms_ffi_native", "--pkgconfig-dir"], capture_output=True, text=True,
                        check=True, env=child_env()).stdout.strip()
    env = child_env()
    env.update(PKG_CONFIG_PATH=pc + (os.pathsep + env["PKG_CONFIG_PATH"] if env.get("PKG_CONFIG_PATH") else ""),
               GOFLAGS="-mod=mod -buildvcs=false", CGO_ENABLED="1")
    return env


def _go(mod: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run([GO, *args], cwd=mod, env=_go_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"go {' '.join(args)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.fixture(scope="module")
def go_exe(go_module):
    _go(go_module, "vet", "./...")
    exe = go_module / "e2e"
    _go(go_module, "build", "-o", str(exe), "./cmd")
    return exe


def test_go_stub_compiles_and_calls_the_python_server(go_exe, served):
    r = subprocess.run([str(go_exe), "call"], capture_output=True, text=True, timeout=60, env=child_env())
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["created"] == {"customer_id": "go-1", "total_cents": 10}
    # the Python server's field check, decoded by the Go client (CBOR details)
    assert res["missing_quantity"] == {"code": "INVALID_ARGUMENT", "field": "items[1].quantity",
                                       "message": "items[1].quantity: required field is not set"}
    assert res["count"] == [1, 2, 3]
    assert res["add"] == [10, 4]
    assert res["later"]["code"] == "UNIMPLEMENTED"


def test_go_server_checks_requests_like_the_python_one(go_exe, gen, runtime_dir):
    m = gen[3]
    pb, npb = m["order_pb2"], m["numbers_pb2"]
    child = Child([str(go_exe), "serve"], child_env(), "the generated Go server")
    try:
        with m["order_hms"].OrderServiceClient.connect("2.0.0") as orders, \
                m["numbers_hms"].NumbersClient.connect("2.0.0") as nums:
            r = orders.CreateOrder(customer_id="py", items=[pb.OrderItemData(sku="A", quantity=3, unit_price_cents=2)],
                                   timeout=5)
            assert (r.order.id, r.order.total_cents) == (42, 6)
            with pytest.raises(hms.InvalidArgument) as ei:
                orders.CreateOrder(customer_id="py", items=[pb.OrderItemData(quantity=1)], timeout=5)
            assert (ei.value.message, ei.value.details) == ("items[0].sku: required field is not set",
                                                            {"field": "items[0].sku"})
            with pytest.raises(hms.InvalidArgument) as ei:
                orders.UpdateOrder(order_id=1, status=42, timeout=5)
            assert ei.value.details == {"field": "status"}
            assert "not a defined hms.order.v1.OrderStatus" in ei.value.message
            with pytest.raises(hms.Unimplemented):
                orders.GetOrder(order_id=1, timeout=5)
            with hms.connect("hms.order.v1.OrderService", "2.0.0") as raw:
                with pytest.raises(hms.InvalidArgument, match="does not parse as hms.order.v1.CreateOrderRequest"):
                    raw.call("CreateOrder", b"\xff\xff\xff", codec="protobuf", timeout=5)
                with pytest.raises(hms.InvalidArgument, match="takes a protobuf"):
                    raw.call("CreateOrder", {"customer_id": "x"}, timeout=5)
            assert [x.n for x in nums.Count(npb.Num(n=3, color=1), timeout=5)] == [1, 2, 3]
            assert nums.Add([npb.Num(n=5, color=2)] * 3, timeout=5).total == 15
            with pytest.raises(hms.InvalidArgument) as ei:
                nums.Add([npb.Num(n=5, color=2), npb.Num(n=1, tags={"k": 9}, color=1)], timeout=5)
            assert ei.value.details == {"field": '[1].tags["k"]'}
    finally:
        child.stop()
    assert child.proc.returncode == 0, child.proc.stderr.read()


# ------------------------------------------------------------------------------------------------
# Rust
# ------------------------------------------------------------------------------------------------
def test_rust_stub_compiles(gen, tmp_path):
    cargo = shutil.which("cargo")
    if cargo is None:
        if REQUIRED_BINDINGS:
            pytest.fail("HMS_REQUIRE_BINDINGS=1 but cargo is missing")
        pytest.skip("cargo is missing")
    _, _, protos, _ = gen
    crate = tmp_path / "crate"
    r = _cli(*[str(protos / f) for f in ("order.proto", "oms_integration.proto", "numbers.proto")], "-I", str(protos),
             "--out", str(crate / "src"), "--lang", "rust")
    assert r.returncode == 0, r.stderr
    rs = (crate / "src" / "numbers_hms.rs").read_text()
    assert "pub fn count(&self, request: &[u8]" in rs and "// Add: a client stream, which the Rust binding" in rs
    (crate / "Cargo.toml").write_text(
        '[package]\nname = "gen-check"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n'
        f'hms-ffi = {{ path = "{ROOT / "bindings" / "rust" / "hms-ffi"}" }}\n\n[workspace]\n')
    (crate / "src" / "lib.rs").write_text("pub mod numbers_hms;\npub mod oms_integration_hms;\npub mod order_hms;\n")
    env = child_env(HMS_FFI_CLI=f"{sys.executable} -m hms_ffi_native",
                    CARGO_TARGET_DIR=str(Path(os.environ.get("HMS_CODEGEN_CARGO_TARGET", tmp_path / "target"))))
    r = subprocess.run([cargo, "check", "--offline", "--quiet"], cwd=crate, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-6000:]
    assert "warning" not in r.stderr, r.stderr[-6000:]
