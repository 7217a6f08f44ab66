"""CBOR request schemas (`Service.function(schema=...)`, hms_ffi_native/_schema.py): the schema language,
the field paths of its errors, the checks running before the handler (plain, async, client-stream
handlers) and what a check costs per call (printed; run with -s to see it)."""
from __future__ import annotations

import datetime as dt
import statistics
import time
import timeit
import typing
from decimal import Decimal

import pytest

import hms_ffi_native as hms
from hms_ffi_native._schema import compile_schema

ORDER = {"customer_id": str, "items": [{"sku": str, "qty": int}], "note?": str}


def error_of(check, value) -> hms.InvalidArgument:
    with pytest.raises(hms.InvalidArgument) as ei:
        check(value)
    prefix = ei.value.message.split(": ", 1)[0]
    assert ei.value.details == {"field": "" if prefix == "payload" else prefix}  # the path, in details too
    return ei.value


@pytest.mark.parametrize("schema, good, bad, message", [
    (str, "x", b"x", "payload: expected str, got bytes"),
    (int, -(1 << 80), 1.0, "payload: expected int, got float"),
    (int, 3, True, "payload: expected int, got bool"),          # bool is not an int here
    (float, 1.5, "1.5", "payload: expected float, got str"),
    (float, 2, False, "payload: expected float, got bool"),     # an int is a float, a bool is not
    (bool, False, 0, "payload: expected bool, got int"),
    (bytes, b"\x00", "x", "payload: expected bytes, got str"),
    (None, None, 0, "payload: expected None, got int"),
    (type(None), None, "", "payload: expected None, got str"),
    (list, [1, "a"], {}, "payload: expected list, got map"),
    (dict, {"a": 1}, [], "payload: expected map, got list"),
    ([], [None], "x", "payload: expected list, got str"),
    ({}, {"z": 1}, [], "payload: expected a map, got list"),
    (dt.datetime, dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), "2024-01-01", "payload: expected datetime, got str"),
    (Decimal, Decimal("1.10"), 1.1, "payload: expected Decimal, got float"),
    ([int], [1, 2, 3], [1, "2"], "[1]: expected int, got str"),
    ([[int]], [[1], []], [[1], [2, None]], "[1][1]: expected int, got None"),
    (hms.Optional(int), None, "1", "payload: expected None or int, got str"),
    (hms.Optional([str]), ["a"], [1], "[0]: expected str, got int"),
    (hms.OneOf(int, str), "a", 1.5, "payload: expected one of int, str, got float"),
    (hms.OneOf(int, [int]), [1], {"a": 1}, "payload: expected one of int, a list, got map"),
    ({"a": hms.OneOf(None, {"b": int})}, {"a": {"b": 1}}, {"a": {"b": "1"}}, "a: expected one of None, a map, got map"),
])
def test_the_schema_language(schema, good, bad, message):
    check = compile_schema(schema)
    assert check(good) is None
    assert error_of(check, bad).message == message


def test_anything_goes_where_the_schema_says_so():
    for spec in (object, typing.Any, hms.Optional(object), hms.OneOf(int, object), [object], {"a?": object}):
        check = compile_schema(spec)
        for v in (None, 1, "x", [1], {"a": b"x"}):
            if isinstance(spec, list) and not isinstance(v, list):
                continue
            if isinstance(spec, dict) and not isinstance(v, dict):
                continue
            check(v)
    check = compile_schema({"a": object})
    assert error_of(check, {}).message == "a: required field missing"


def test_maps_optional_keys_and_strict():
    check = compile_schema(ORDER)
    check({"customer_id": "c", "items": []})
    check({"customer_id": "c", "items": [{"sku": "A", "qty": 1}], "note": "x", "extra": [1]})  # extra keys pass
    e = error_of(check, {"customer_id": "c", "items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 1},
                                                      {"sku": "C", "qty": "2"}]})
    assert (e.message, e.details) == ("items[2].qty: expected int, got str", {"field": "items[2].qty"})
    assert error_of(check, {"items": []}).message == "customer_id: required field missing"
    assert error_of(check, {"customer_id": "c", "items": [{"qty": 1}]}).message == \
        "items[0].sku: required field missing"
    assert error_of(check, {"customer_id": "c", "items": [], "note": None}).message == "note: expected str, got None"
    assert error_of(check, {"customer_id": "c", "items": {}}).message == "items: expected a list, got map"
    assert error_of(check, "order").message == "payload: expected a map, got str"

    strict = compile_schema(hms.Strict({"a": int, "b?": {"c": hms.Strict({"d": bool})}}))
    strict({"a": 1, "b": {"c": {"d": True}, "free": 1}})  # only the Strict maps are closed
    assert error_of(strict, {"a": 1, "z": 2}).message == "z: unexpected field (allowed: a, b)"
    e = error_of(strict, {"a": 1, "b": {"c": {"d": True, "e": 0}}})
    assert (e.message, e.details) == ("b.c.e: unexpected field (allowed: d)", {"field": "b.c.e"})
    nested = compile_schema({"orders": [{"items": [{"qty": int}]}]})
    assert error_of(nested, {"orders": [{"items": []}, {"items": [{"qty": 1}, {"qty": 1.0}]}]}).details == \
        {"field": "orders[1].items[1].qty"}


@pytest.mark.parametrize("schema, message", [
    (5, "5 is not a schema"),
    ("str", "'str' is not a schema"),
    ([int, str], "a list schema holds one item schema"),
    ({1: int}, "map keys must be str"),
    ({"a": {"b": [{"c": 3}]}}, "schema at a.b[].c: 3 is not a schema"),
])
def test_a_bad_schema_is_refused_when_compiled(schema, message):
    with pytest.raises(hms.InvalidArgument, match=message.replace("[", r"\[").replace("]", r"\]")):
        compile_schema(schema)


def test_keys_that_are_not_identifiers_and_tuples():
    check = compile_schema({"a-b c": int, "'q'": [str], "x?": (1, 2).__class__})
    check({"a-b c": 1, "'q'": ("x",), "x": (1,)})
    assert error_of(check, {"a-b c": "1", "'q'": []}).message == "a-b c: expected int, got str"


# ------------------------------------------------------------------------------------------------
# In a service
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def svc(node):
    s = node.service("t.schema", "1.0.0")
    seen = []

    @s.function(schema=ORDER)
    def CreateOrder(order):
        seen.append(order)
        return {"n": len(order["items"])}

    @s.function(schema={"ids": [int]})
    async def Lookup(req):
        seen.append(req)
        return sorted(req["ids"])

    @s.function(client_stream=True, schema={"sku": str, "qty": int})
    def Sum(items):
        return sum(i["qty"] for i in items)

    @s.function(schema=bytes)
    def Raw(data):
        return data[::-1]

    @s.function()
    def Free(x):
        return x

    node.start()
    with hms.connect("t.schema") as c:
        yield c, seen


def test_requests_are_checked_before_the_handler(svc):
    c, seen = svc
    assert c.call("CreateOrder", {"customer_id": "c", "items": [{"sku": "A", "qty": 1}]}, timeout=5) == {"n": 1}
    with pytest.raises(hms.InvalidArgument) as ei:
        c.call("CreateOrder", {"customer_id": "c", "items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": "x"}]},
               timeout=5)
    assert (ei.value.message, ei.value.details, ei.value.source) == \
        ("items[1].qty: expected int, got str", {"field": "items[1].qty"}, "remote")
    with pytest.raises(hms.InvalidArgument, match="customer_id: required field missing"):
        c.call("CreateOrder", {"items": []}, codec="json", timeout=5)  # JSON payloads are checked too
    assert len(seen) == 1  # the handler never saw the bad ones
    assert c.call("Lookup", {"ids": [3, 1, 2]}, timeout=5) == [1, 2, 3]
    with pytest.raises(hms.InvalidArgument, match=r"ids\[0\]: expected int, got str"):
        c.call("Lookup", {"ids": ["1"]}, timeout=5)
    assert c.call("Raw", b"abc", timeout=5) == b"cba"
    with pytest.raises(hms.InvalidArgument, match="payload: expected bytes, got map"):
        c.call("Raw", {"a": 1}, timeout=5)
    assert c.call("Free", [1], timeout=5) == [1]


def test_client_stream_items_are_checked_one_by_one(svc):
    c, _ = svc
    assert c.client_stream("Sum", [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 3}], timeout=5) == 5
    with pytest.raises(hms.InvalidArgument) as ei:
        c.client_stream("Sum", [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 3}, {"sku": "C"}], timeout=5)
    assert (ei.value.message, ei.value.details) == ("stream item [2].qty: required field missing",
                                                    {"field": "[2].qty"})


def test_schema_and_request_type_exclude_each_other(node):
    pb = pytest.importorskip("hms_ffi_native._orders.order_pb2")
    s = node.service("t.schema2", "1.0.0")
    with pytest.raises(hms.InvalidArgument, match="not both"):
        s.add_function("f", lambda x: x, schema={"a": int}, request_type=pb.CreateOrderRequest)
    with pytest.raises(hms.InvalidArgument, match="is not a schema"):
        s.add_function("g", lambda x: x, schema="int")
    assert "g" not in s.functions


def test_overhead_on_a_ten_field_map(node, capsys):
    schema = {"id": int, "customer_id": str, "amount": float, "paid": bool, "blob": bytes, "currency": str,
              "quantity": int, "note?": hms.Optional(str), "tags": [str], "address": {"city": str, "zip": str}}
    value = {"id": 1, "customer_id": "c-1", "amount": 12.5, "paid": True, "blob": b"\x00" * 8, "currency": "EUR",
             "quantity": 3, "note": None, "tags": ["a", "b"], "address": {"city": "X", "zip": "1"}}
    flat = {f"f{i}": t for i, t in enumerate([int, str, float, bool, bytes, str, int, str, int, float])}
    flat_value = {"f0": 1, "f1": "x", "f2": 1.5, "f3": True, "f4": b"x", "f5": "y", "f6": 2, "f7": "z", "f8": 3,
                  "f9": 2.0}
    check, check_flat = compile_schema(schema), compile_schema(flat)
    n = 20000
    per_call = min(timeit.repeat(lambda: check(value), number=n, repeat=5)) / n * 1e6
    per_call_flat = min(timeit.repeat(lambda: check_flat(flat_value), number=n, repeat=5)) / n * 1e6

    # The same handler with and without the schema, through the ring (interleaved rounds, medians).
    s = node.service("t.schema.bench", "1.0.0")
    s.add_function("checked", lambda x: None, schema=schema)
    s.add_function("plain", lambda x: None)
    node.start()
    rounds = {"checked": [], "plain": []}
    with hms.connect("t.schema.bench") as c:
        for _ in range(5):
            for name in ("plain", "checked"):
                t0 = time.perf_counter()
                for _ in range(1000):
                    c.call(name, value)
                rounds[name].append((time.perf_counter() - t0) / 1000 * 1e6)
    plain, checked = statistics.median(rounds["plain"]), statistics.median(rounds["checked"])
    with capsys.disabled():
        print(f"\nschema check, 10-field map: {per_call:.2f} µs (with a nested map, a list, an Optional), "
              f"{per_call_flat:.2f} µs (flat); round trip without/with the schema: {plain:.1f} / {checked:.1f} µs")
    # Loose bounds (a shared 2-core machine): the check is a small part of a call.
    assert per_call < 20 and per_call_flat < 20
