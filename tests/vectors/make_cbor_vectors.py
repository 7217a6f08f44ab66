"""Regenerates tests/vectors/cbor.json: the CBOR test vectors every binding must round-trip identically.

    python tests/vectors/make_cbor_vectors.py     # rewrites cbor.json next to this file

Each vector is {"name", "type", "hex"}: `hex` is the encoding hms-ffi peers must produce for the value
(preferred serialization: shortest integer heads, float64 for floats, definite lengths, map keys in
the order given, datetimes as tag 0 RFC 3339 strings, sets as tag 258 arrays). A binding's test decodes
`hex` into its language's native value, encodes that value again and compares the bytes; the
cross-language matrix sends `hex` through services in other languages and compares the reply.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import cbor2

UTC = dt.timezone.utc

VECTORS = [
    ("uint8_0", "uint", 0), ("uint8_23", "uint", 23), ("uint8_24", "uint", 24), ("uint8_max", "uint", 255),
    ("uint16_min", "uint", 256), ("uint16_max", "uint", 65535),
    ("uint32_min", "uint", 65536), ("uint32_max", "uint", 2**32 - 1),
    ("uint64_min", "uint", 2**32), ("uint64_big", "uint", 2**63 - 1), ("uint64_max", "uint", 2**64 - 1),
    ("int8_m1", "int", -1), ("int8_min", "int", -128), ("int16_min", "int", -32768),
    ("int32_min", "int", -(2**31)), ("int64_min", "int", -(2**63)), ("int_m24", "int", -24), ("int_m25", "int", -25),
    ("float_0", "float", 0.0), ("float_half", "float", 0.5), ("float_pi", "float", 3.141592653589793),
    ("float_neg", "float", -1.5e300), ("float_tiny", "float", 5e-324),
    ("bool_true", "bool", True), ("bool_false", "bool", False), ("null", "null", None),
    ("str_empty", "str", ""), ("str_ascii", "str", "hello"), ("str_utf8", "str", "Grüße, 世界 🚀"),
    ("bytes_empty", "bytes", b""), ("bytes_bin", "bytes", bytes(range(256))),
    ("timestamp_utc", "timestamp", dt.datetime(2026, 12, 1, 6, 50, 28, tzinfo=UTC)),
    ("timestamp_micro", "timestamp", dt.datetime(1999, 12, 31, 23, 59, 59, 123456, tzinfo=UTC)),
    ("list_empty", "list", []), ("list_mixed", "list", [1, -2, "three", 4.5, None, True, b"\x00"]),
    ("list_nested", "list", [[1, [2, [3, []]]], []]),
    ("map_empty", "map", {}), ("map_str_keys", "map", {"id": 7, "name": "ana", "tags": ["a", "b"]}),
    ("map_optional", "map", {"customer_id": 7, "coupon": None, "note": "x"}),
    ("map_nested", "map", {"order": {"items": [{"sku": "A-1", "qty": 2, "price": 9.99}], "paid": False}}),
    ("set_ints", "set", {1, 2, 3}),
    ("order", "map", {"order_id": "ord-0001", "customer_id": 2**40, "amount": 125.5, "currency": "EUR",
                      "items": [{"sku": "X", "qty": 1}], "created_at": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                      "flags": {"rush"}, "status": "NEW", "signature": b"\xde\xad\xbe\xef"}),
]


def main() -> None:
    out = []
    for name, typ, value in VECTORS:
        data = cbor2.dumps(value, timezone=UTC)
        assert cbor2.dumps(cbor2.loads(data), timezone=UTC) == data, name
        out.append({"name": name, "type": typ, "hex": data.hex()})
    path = Path(__file__).with_name("cbor.json")
    path.write_text(json.dumps({"version": 1, "vectors": out}, indent=1) + "\n")
    print(f"wrote {len(out)} vectors to {path}")


if __name__ == "__main__":
    main()
