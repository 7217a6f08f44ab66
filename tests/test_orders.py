"""examples/orders: the order flow across languages.

The OMS (Python, SQLite) with the Python API front end always, and with the Go one
(examples/orders/go) when `go` is there (required under HMS_REQUIRE_BINDINGS=1): database state,
status codes across the boundary, signed status events (a tampered one rejected), the committed
generated code against the .proto files, and `hms-ffi demo` (exit 0, the expected lines, nothing
left behind, also after Ctrl-C).
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hms_ffi_native as hms
from hms_ffi_native import _demo
from hms_ffi_native._orders import SERVICE_OMS, SERVICE_ORDERS, install_protobuf_codec
from hms_ffi_native._orders import oms_integration_pb2 as omspb
from hms_ffi_native._orders import order_pb2 as pb
from hms_ffi_native._orders import signing

from conftest import child_env

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "orders"
REQUIRED = os.environ.get("HMS_REQUIRE_BINDINGS") == "1"
GO = shutil.which("go")
KEY = bytes(range(32))
# HMAC-SHA256 of the canonical bytes in test_canonical_bytes_known_answer under KEY (pinned: the scheme
# must not change silently; peers in other languages compute the same bytes).
KNOWN_SIGNATURE = "42980ad3f8bd17d982c9883732f6789bdb25c61814bdc5605f87fa5db1d43535"
S = pb.OrderStatus


SOURCES = (EXAMPLE / "proto" / "order.proto").is_file()  # not when tests run from a copy (wheel tests)
needs_sources = pytest.mark.skipif(not SOURCES, reason="needs the source checkout (examples/orders)")


def _go_missing():
    if not SOURCES:
        return None
    if GO is None:
        return "the Go toolchain (`go`) is not on PATH"
    if shutil.which("pkg-config") is None:
        return "pkg-config is missing"
    if not (EXAMPLE / "go" / "go.mod").is_file():
        return "examples/orders/go is not in this tree"
    return None


def need_go():
    if not SOURCES:
        pytest.skip("the Go front end is built from the source checkout (examples/orders/go), not here")
    why = _go_missing()
    if why:
        if REQUIRED:
            pytest.fail(f"HMS_REQUIRE_BINDINGS=1 but {why}")
        pytest.skip(why)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("demo-cache"))


@pytest.fixture(scope="session")
def go_frontend(demo_cache, tmp_path_factory):
    """The Go front end, built once (through the demo's own build, into the session's demo cache)."""
    need_go()
    old = os.environ.get("HMS_FFI_DEMO_CACHE")
    os.environ["HMS_FFI_DEMO_CACHE"] = demo_cache
    try:
        exe, note = _demo.build_go_frontend(ROOT, GO, str(tmp_path_factory.mktemp("go") / "build.log"))
    finally:
        if old is None:
            os.environ.pop("HMS_FFI_DEMO_CACHE")
        else:
            os.environ["HMS_FFI_DEMO_CACHE"] = old
    assert exe is not None, note
    return exe


def env_with_key(**extra) -> dict:
    env = child_env(HMS_ORDERS_HMAC_KEY=KEY.hex(), **extra)
    env.pop("HMS_ORDERS_HMAC_KEY_FILE", None)
    return env


class OMSProcess:
    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "hms_ffi_native._orders.oms", "--db", str(db)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with_key())
        line = self.proc.stdout.readline().strip()
        if not line.startswith("ready"):
            self.proc.kill()
            raise RuntimeError(f"the OMS did not start: {line!r} {self.proc.stderr.read()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(10)
        finally:
            self.proc.stdout.close()
            self.proc.stderr.close()


@pytest.fixture
def oms(runtime_dir):
    db = Path(runtime_dir) / "orders.db"
    p = OMSProcess(db)
    p.db = db
    yield p
    if p.proc.poll() is None:
        p.proc.kill()
        p.proc.wait(10)


# ----------------------------------------------------------------------------------------------------
# Generated code
# ----------------------------------------------------------------------------------------------------
def _compiled_descriptors(tmp_path) -> dict:
    grpc_tools = pytest.importorskip("grpc_tools", reason="grpcio-tools (the test extra) compiles the .proto files")
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    out = tmp_path / "set.pb"
    wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{EXAMPLE / 'proto'}", f"-I{wkt}", f"--descriptor_set_out={out}",
                      str(EXAMPLE / "proto" / "order.proto"), str(EXAMPLE / "proto" / "oms_integration.proto")])
    assert rc == 0
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return {f.name: _normalized(f) for f in fds.file}


def _normalized(fd):
    """The descriptor without what generators may drop or add (json_name, source info)."""
    fd.ClearField("source_code_info")

    def strip(msgs):
        for m in msgs:
            for f in list(m.field) + list(m.extension):
                f.ClearField("json_name")
            strip(m.nested_type)

    strip(fd.message_type)
    return fd


@needs_sources
def test_generated_python_code_is_current(tmp_path):
    from google.protobuf import descriptor_pb2

    want = _compiled_descriptors(tmp_path)
    for mod in (pb, omspb):
        have = _normalized(descriptor_pb2.FileDescriptorProto.FromString(mod.DESCRIPTOR.serialized_pb))
        assert have == want[have.name], (f"{mod.__name__} is stale: run examples/orders/gen.sh and commit the result")


def test_generated_go_code_is_current(tmp_path, go_frontend):
    from google.protobuf import descriptor_pb2

    want = _compiled_descriptors(tmp_path)
    out = subprocess.run([str(go_frontend), "descriptors"], capture_output=True, text=True, check=True).stdout
    names = set()
    for line in out.splitlines():
        name, b64 = line.split()
        have = _normalized(descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(b64)))
        assert have == want[name], f"examples/orders/go/orderpb/{name} is stale: run examples/orders/gen.sh"
        names.add(name)
    assert names == set(want)


# ----------------------------------------------------------------------------------------------------
# Signing
# ----------------------------------------------------------------------------------------------------
def test_canonical_bytes_known_answer():
    # The scheme is fixed (README "Signing"; Go: examples/orders/go/signing.go): pin its bytes.
    ts = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)
    b = signing.canonical_bytes(id="e1", type="T", timestamp=ts, source="oms", correlation_id=None, user_id="u",
                                message_type="M", message=b"\x08\x01")
    assert b == (b"hms.order.v1.event-signature.v1\n" + b"\0\0\0\x02e1" + b"\0\0\0\x01T" + b"\0\0\0\x03oms"
                 + b"\0\0\0\0" + b"\0\0\0\x01u" + b"\0\0\0\x01M" + b"\0\0\0\x02\x08\x01"
                 + (1767323045678901).to_bytes(8, "big", signed=True))
    sig = signing.sign(KEY, id="e1", type="T", timestamp=ts, source="oms", correlation_id=None, user_id="u",
                       message_type="M", message=b"\x08\x01")
    assert sig == signing.sign(KEY, id="e1", type="T", timestamp=ts, source="oms", correlation_id="", user_id="u",
                               message_type="M", message=b"\x08\x01")  # absent and empty sign alike
    assert sig == KNOWN_SIGNATURE


def test_key_loading(tmp_path):
    with pytest.raises(signing.KeyError_, match="no signing key"):
        signing.load_key({})
    with pytest.raises(signing.KeyError_, match="at least 16 bytes"):
        signing.load_key({signing.KEY_ENV: "00ff"})
    path = tmp_path / "k"
    key = signing.create_key_file(str(path))
    assert path.stat().st_mode & 0o777 == 0o600
    assert signing.load_key({signing.KEY_FILE_ENV: str(path)}) == key
    path.chmod(0o644)
    with pytest.raises(signing.KeyError_, match="others may read it"):
        signing.load_key({signing.KEY_FILE_ENV: str(path)})
    with pytest.raises(FileExistsError):
        signing.create_key_file(str(path))


# ----------------------------------------------------------------------------------------------------
# The OMS from Python: status codes, database, events
# ----------------------------------------------------------------------------------------------------
def _call(client, fn, req, reply_cls):
    return reply_cls.FromString(client.call(fn, req, timeout=5))


def test_oms_status_codes_and_events(oms):
    install_protobuf_codec()
    node = hms.Node("test-orders")
    try:
        sub = node.subscribe(signing.TOPIC)
        orders = node.connect(SERVICE_ORDERS, "^1")
        integ = node.connect(SERVICE_OMS, "^1")
        ctx = pb.RequestContext(correlation_id="corr-1", user_id="bob")
        o = _call(orders, "CreateOrder", pb.CreateOrderRequest(
            customer_id="c1", items=[pb.OrderItemData(sku="X", quantity=3, unit_price_cents=250)], context=ctx),
            pb.OrderResponse).order
        assert (o.status, o.total_cents, o.currency, o.version) == (S.ORDER_STATUS_PENDING, 750, "USD", 1)

        ev = sub.recv(timeout=5)
        msg = signing.verify_event(KEY, ev)
        change = omspb.OrderStatusChanged.FromString(msg)
        assert (change.order_id, change.old_status, change.new_status, change.version) == (o.id, 0, S.ORDER_STATUS_PENDING, 1)
        assert (ev.type, ev.source, ev.correlation_id, ev.user_id, ev.topic) == (
            signing.EVENT_TYPE, "hms-oms", "corr-1", "bob", "order.status")
        assert ev.data["alg"] == "HMAC-SHA256" and ev.data["key_id"] == signing.key_id(KEY)

        # A different key, a changed field, a missing signature: all rejected.
        with pytest.raises(signing.SignatureError, match="not ours"):
            signing.verify_event(bytes(32), ev)
        forged = dict(ev.data, message=omspb.OrderStatusChanged(order_id=o.id, new_status=S.ORDER_STATUS_DELIVERED,
                                                                 version=9).SerializeToString())
        pub = node.publisher(signing.TOPIC)
        for data, why in ((forged, "does not match"), ({k: v for k, v in ev.data.items() if k != "signature"},
                                                         "no signature"), (b"raw", "not a map")):
            pub.publish_event(ev.type, data, id=ev.id, timestamp=ev.timestamp, source=ev.source,
                              correlation_id=ev.correlation_id, user_id=ev.user_id)
            got = sub.recv(timeout=5)
            with pytest.raises(signing.SignatureError, match=why):
                signing.verify_event(KEY, got)
        # Changing the envelope (not the data) breaks the signature too.
        pub.publish_event(ev.type, ev.data, id=ev.id, timestamp=ev.timestamp, source=ev.source,
                          correlation_id=ev.correlation_id, user_id="mallory")
        with pytest.raises(signing.SignatureError, match="does not match"):
            signing.verify_event(KEY, sub.recv(timeout=5))
        pub.close()

        def code(fn, client, req):
            with pytest.raises(hms.FFIError) as ei:
                client.call(fn, req, timeout=5)
            assert ei.value.source == "remote"
            return ei.value.status, ei.value.message

        item = [pb.OrderItemData(sku="X", quantity=1, unit_price_cents=1)]
        assert code("CreateOrder", orders, pb.CreateOrderRequest(items=item)) == (
            "INVALID_ARGUMENT", "customer_id is required")
        assert code("CreateOrder", orders, pb.CreateOrderRequest(customer_id="c"))[0] == "INVALID_ARGUMENT"
        st, m = code("CreateOrder", orders, pb.CreateOrderRequest(customer_id="c", items=[
            pb.OrderItemData(sku="X", quantity=-2, unit_price_cents=1)]))
        assert st == "INVALID_ARGUMENT" and "items[0].quantity" in m and "-2" in m
        assert code("CreateOrder", orders, pb.CreateOrderRequest(customer_id="c", items=[
            pb.OrderItemData(sku="X", quantity=1, unit_price_cents=-1)]))[0] == "INVALID_ARGUMENT"
        assert code("CreateOrder", orders, pb.CreateOrderRequest(customer_id="c", items=item, currency="usd"))[0] == \
            "INVALID_ARGUMENT"
        assert code("CreateOrder", orders, {"customer_id": "c"})[0] == "INVALID_ARGUMENT"  # CBOR, not protobuf
        assert code("CreateOrder", orders, b"\xff\xff\xff")[0] == "INVALID_ARGUMENT"  # not a message
        assert code("GetOrder", orders, pb.GetOrderRequest(order_id=12345)) == ("NOT_FOUND", "order 12345 does not exist")
        assert code("GetOrder", orders, pb.GetOrderRequest(order_id=0))[0] == "INVALID_ARGUMENT"
        assert code("UpdateOrder", orders, pb.UpdateOrderRequest(order_id=777, status=S.ORDER_STATUS_SHIPPED))[0] == "NOT_FOUND"
        assert code("SendOrderToOMS", integ, omspb.SendOrderToOMSRequest(order_id=777))[0] == "NOT_FOUND"
        assert code("SyncOrderStatus", integ, omspb.SyncOrderStatusRequest(order_id=777))[0] == "NOT_FOUND"
        assert code("UpdateOrder", orders, pb.UpdateOrderRequest(order_id=o.id))[0] == "INVALID_ARGUMENT"
        assert code("UpdateOrder", orders, pb.UpdateOrderRequest(order_id=o.id, status=77))[0] == "INVALID_ARGUMENT"
        # SUBMITTED only through SendOrderToOMS; PENDING cannot skip to SHIPPED
        assert code("UpdateOrder", orders, pb.UpdateOrderRequest(order_id=o.id, status=S.ORDER_STATUS_SUBMITTED))[0] == \
            "FAILED_PRECONDITION"
        st, m = code("UpdateOrder", orders, pb.UpdateOrderRequest(order_id=o.id, status=S.ORDER_STATUS_SHIPPED))
        assert st == "FAILED_PRECONDITION" and "cannot go from PENDING to SHIPPED" in m

        r = _call(integ, "SendOrderToOMS", omspb.SendOrderToOMSRequest(order_id=o.id), omspb.SendOrderToOMSResponse)
        assert (r.oms_reference, r.status) == (f"OMS-{o.id:06d}", S.ORDER_STATUS_SUBMITTED)
        st, m = code("SendOrderToOMS", integ, omspb.SendOrderToOMSRequest(order_id=o.id))
        assert st == "FAILED_PRECONDITION" and f"accepted as OMS-{o.id:06d}" in m
        y = _call(integ, "SyncOrderStatus", omspb.SyncOrderStatusRequest(
            order_id=o.id, known_status=S.ORDER_STATUS_PENDING, known_version=1), omspb.SyncOrderStatusResponse)
        assert (y.status, y.version, y.in_sync) == (S.ORDER_STATUS_SUBMITTED, 2, False)
        for new in (S.ORDER_STATUS_CANCELLED,):
            _call(orders, "UpdateOrder", pb.UpdateOrderRequest(order_id=o.id, status=new, reason="r"), pb.OrderResponse)
        assert code("UpdateOrder", orders, pb.UpdateOrderRequest(order_id=o.id, status=S.ORDER_STATUS_PROCESSING))[1].endswith(
            "(allowed: none: it is final)")
        # Notes alone change no status and publish nothing.
        r = _call(orders, "UpdateOrder", pb.UpdateOrderRequest(order_id=o.id, notes="hello"), pb.OrderResponse)
        assert (r.order.notes, r.order.status) == ("hello", S.ORDER_STATUS_CANCELLED)
        # Exactly the genuine changes after creation were published, in order.
        seen = []
        while (ev := sub.recv(timeout=0.3)) is not None:
            seen.append(omspb.OrderStatusChanged.FromString(signing.verify_event(KEY, ev)).new_status)
        assert seen == [S.ORDER_STATUS_SUBMITTED, S.ORDER_STATUS_CANCELLED]
        for c in (orders, integ, sub):
            c.close()
    finally:
        node.close()
    assert oms.stop() == 0
    con = sqlite3.connect(oms.db)
    rows = con.execute("SELECT new_status, version, user_id, caller_pid FROM status_history ORDER BY id").fetchall()
    assert rows == [("PENDING", 1, "bob", os.getpid()), ("SUBMITTED", 2, "", os.getpid()),
                    ("CANCELLED", 3, "", os.getpid())]
    assert con.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 1  # failed creations left nothing behind


# ----------------------------------------------------------------------------------------------------
# The whole flow through each front end
# ----------------------------------------------------------------------------------------------------
def _check_flow(report: dict, db: Path, frontend: str) -> None:
    assert report["frontend"] == frontend
    assert report["orders"] == {"1": {"status": "SHIPPED", "version": 4}, "2": {"status": "CANCELLED", "version": 2}}
    codes = {k: v["code"] for k, v in report["errors"].items()}
    assert codes == {
        "CreateOrder(no customer)": "INVALID_ARGUMENT",
        "CreateOrder(no items)": "INVALID_ARGUMENT",
        "CreateOrder(quantity -3)": "INVALID_ARGUMENT",
        "GetOrder(999)": "NOT_FOUND",
        "UpdateOrder(1, SHIPPED -> PENDING)": "FAILED_PRECONDITION",
        "SendOrderToOMS(2) (cancelled)": "FAILED_PRECONDITION",
    }
    assert report["errors"]["CreateOrder(quantity -3)"]["details"]["field"] == "items[0].quantity"
    assert report["errors"]["GetOrder(999)"]["message"] == "order 999 does not exist"
    ev = report["events"]
    assert (ev["applied"], ev["verified"], ev["rejected"]) == (6, 6, 1)
    assert "signature does not match" in ev["rejections"][0]["reason"]
    assert ev["rejections"][0]["publisher_pid"] == report["pid"]
    assert report["tamper"] == {"order_id": 1, "view_status": "SHIPPED", "oms_status": "SHIPPED"}
    assert report["latency_us"]["GetOrder"]["p50"] > 0
    con = sqlite3.connect(db)
    try:
        orders = con.execute("SELECT id, customer_id, status, total_cents, oms_reference, version FROM orders").fetchall()
        assert orders == [(1, "cust-1001", "SHIPPED", 5990, "OMS-000001", 4), (2, "cust-1002", "CANCELLED", 2495, None, 2)]
        assert con.execute("SELECT order_id, COUNT(*) FROM order_items GROUP BY order_id").fetchall() == [(1, 2), (2, 1)]
        hist = con.execute("SELECT order_id, old_status, new_status, user_id, caller_pid FROM status_history ORDER BY id").fetchall()
        assert [(o, a, b) for o, a, b, _, _ in hist] == [
            (1, None, "PENDING"), (1, "PENDING", "SUBMITTED"), (1, "SUBMITTED", "PROCESSING"),
            (1, "PROCESSING", "SHIPPED"), (2, None, "PENDING"), (2, "PENDING", "CANCELLED")]
        assert {(u, p) for _, _, _, u, p in hist} == {("alice", report["pid"])}  # the kernel-verified caller
    finally:
        con.close()


def _run_frontend(cmd, oms, tmp_path, frontend):
    rep = tmp_path / "report.json"
    r = subprocess.run([*cmd, "--report", str(rep), "-n", "50"],
                       capture_output=True, text=True, env=env_with_key(), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "REJECTED event" in r.stderr and "not applied" in r.stderr  # logged
    assert oms.stop() == 0
    _check_flow(json.loads(rep.read_text()), oms.db, frontend)
    return json.loads(rep.read_text())


def test_flow_python_frontend(oms, tmp_path):
    _run_frontend([sys.executable, "-m", "hms_ffi_native._orders.frontend"], oms, tmp_path, "python")


def test_flow_go_frontend(go_frontend, oms, tmp_path):
    report = _run_frontend([str(go_frontend)], oms, tmp_path, "go")
    assert report["content_types"] == [4]  # every reply Go received was protobuf


# ----------------------------------------------------------------------------------------------------
# hms-ffi demo
# ----------------------------------------------------------------------------------------------------
EXPECTED = [
    r"OMS \(Python, pid \d+\): serving hms\.order\.v1\.OrderService@1\.0\.0",
    r"CreateOrder\(cust-1001, 2 items\) +-> order 1 PENDING, total 59\.90 USD",
    r"SendOrderToOMS\(1\) +-> accepted as OMS-000001, SUBMITTED",
    r"event \w+: order 1 PROCESSING -> SHIPPED v4, signature ok",
    r"UpdateOrder\(2, CANCELLED\) +-> CANCELLED v2",
    r"CreateOrder\(no customer\) +-> INVALID_ARGUMENT: customer_id is required",
    r"CreateOrder\(quantity -3\) +-> INVALID_ARGUMENT: items\[0\]\.quantity must be",
    r"GetOrder\(999\) +-> NOT_FOUND: order 999 does not exist",
    r"UpdateOrder\(1, SHIPPED -> PENDING\) +-> FAILED_PRECONDITION: order 1 cannot go from SHIPPED to PENDING",
    r"REJECTED event [0-9a-f-]+ from pid \d+: HMAC-SHA256 signature does not match",
    r"order 1 stays SHIPPED in the front end's view \(OMS says SHIPPED\)",
    r"GetOrder +round trip p50 [\d.]+ us, p99 [\d.]+ us",
    r"front end done: 2 orders, 6 status events verified and applied, 1 tampered event rejected",
    r"OMS database \(SQLite\): order 1 SHIPPED \(OMS-000001\), order 2 CANCELLED; 6 status changes recorded",
    r"cleaned up: stopped OMS \(pid \d+\) and front end \(pid \d+\), removed /tmp/hms-demo-",
]


def _demo_env(demo_cache, **extra):
    env = child_env(HMS_FFI_DEMO_CACHE=demo_cache, HMS_FFI_SOURCE_DIR=str(ROOT), **extra)
    env.pop("HMS_ORDERS_HMAC_KEY", None)
    return env


def _assert_gone(out: str) -> None:
    tmp = re.search(r"temporary directory (/tmp/hms-demo-\w+)", out).group(1)
    assert not os.path.exists(tmp), f"{tmp} was left behind"
    for pid in re.findall(r"\(Python, pid (\d+)\)|\(Go, pid (\d+)\)", out):
        pid = int(next(p for p in pid if p))
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("frontend", ["python", "auto"])
def test_demo_command(frontend, runtime_dir, demo_cache, request):
    if frontend == "auto":
        need_go()
        request.getfixturevalue("go_frontend")  # built once for the session: the demo finds it cached
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "hms_ffi_native", "demo", "--frontend", frontend, "-n", "100"],
                       capture_output=True, text=True, env=_demo_env(demo_cache), timeout=120)
    took = time.monotonic() - t0
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    for pat in EXPECTED:
        assert re.search(pat, out), f"missing {pat!r} in:\n{out}"
    kind = "Go" if frontend == "auto" else "Python"
    assert re.search(rf"API front end \({kind}, pid \d+\)", out), out
    assert took < 20, f"the demo took {took:.1f} s"
    _assert_gone(out)
    assert os.listdir(runtime_dir) == []  # the demo used its own runtime directory


def test_demo_without_go_falls_back(runtime_dir, demo_cache, tmp_path):
    # PATH without go: the demo says so in one line and runs the Python front end.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    env = _demo_env(demo_cache, PATH=str(bindir))
    r = subprocess.run([sys.executable, "-m", "hms_ffi_native", "demo", "-n", "20"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Go is not installed: running the Python API front end instead (same steps)" in r.stdout
    assert "API front end (Python, pid" in r.stdout
    _assert_gone(r.stdout)


def test_demo_ctrl_c_cleans_up(runtime_dir, demo_cache):
    # Interrupted in the middle (a long latency loop), the demo stops both children and removes its
    # directory, and exits 130.
    p = subprocess.Popen([sys.executable, "-m", "hms_ffi_native", "demo", "--frontend", "python", "-n", "1000000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_demo_env(demo_cache))
    out = []
    try:
        for line in p.stdout:
            out.append(line)
            if line.startswith("latency ("):
                break
        p.send_signal(signal.SIGINT)
        rest, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = "".join(out) + rest
    assert p.returncode == 130, text + err
    assert "interrupted: cleaning up" in err
    assert re.search(r"cleaned up: stopped OMS \(pid \d+\) and front end \(pid \d+\)", err), err
    _assert_gone(text)
