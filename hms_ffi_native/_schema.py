"""Request checks that run before a handler: CBOR schemas and protobuf field rules.

CBOR schemas (``@svc.function(schema=...)``, docs/idl.md) are plain Python values:

* a type: ``str``, ``int`` (not bool), ``float`` (an int is accepted too), ``bool``, ``bytes``,
  ``None`` (the value must be None), ``list`` / ``dict`` (any list / map), ``object`` or
  ``typing.Any`` (anything), or any other class (checked with isinstance: datetime, Decimal, UUID, set).
* ``[S]``: a list whose every item matches S (``[]`` = any list).
* ``{"name": S, "note?": S}``: a map with these keys; a key ending in ``?`` may be absent (present, its
  value must match). Keys the schema does not name are allowed (newer callers may send more), unless
  the map is wrapped in ``Strict({...})``.
* ``Optional(S)``: None or S. ``OneOf(S1, S2, ...)``: the first that matches.

A schema is compiled once (``compile_schema``) into a checker that raises ``InvalidArgument`` with the
field path in the message and in ``details={"field": "items[2].qty"}``.

Protobuf rules (``message_checker``) are what a generated server checks after a request parses:
fields marked required (``// hms: required`` in the .proto, see hms_ffi_native.codegen) must be set,
and every enum value must be one the enum defines.
"""
from __future__ import annotations

import json as _json
import typing
from typing import Any, Callable, Dict, FrozenSet, List, Tuple

from ._errors import InvalidArgument

__all__ = ["Optional", "OneOf", "Strict", "compile_schema", "message_checker"]


class Optional:
    """Schema: None, or a value matching ``schema``."""

    __slots__ = ("schema",)

    def __init__(self, schema: Any) -> None:
        self.schema = schema

    def __repr__(self) -> str:
        return f"Optional({self.schema!r})"


class OneOf:
    """Schema: a value matching any one of ``schemas`` (tried in order)."""

    __slots__ = ("schemas",)

    def __init__(self, *schemas: Any) -> None:
        if not schemas:
            raise InvalidArgument("OneOf() needs at least one schema")
        self.schemas = schemas

    def __repr__(self) -> str:
        return f"OneOf({', '.join(map(repr, self.schemas))})"


class Strict:
    """Schema: a map with exactly the keys of ``fields`` (a dict schema); other keys are refused."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict) -> None:
        if not isinstance(fields, dict):
            raise InvalidArgument(f"Strict() takes a dict schema, got {type(fields).__name__}")
        self.fields = fields

    def __repr__(self) -> str:
        return f"Strict({self.fields!r})"


class _Fail(Exception):
    """A mismatch; ``path`` collects the segments (innermost first) as it travels up."""

    __slots__ = ("path", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self.path: List[Any] = []


def _type_name(v: Any) -> str:
    if v is None:
        return "None"
    t = type(v)
    return {dict: "map", list: "list", tuple: "list"}.get(t, t.__name__)


def _render(path: List[Any]) -> str:
    out = []
    for seg in reversed(path):
        if isinstance(seg, int):
            out.append(f"[{seg}]")
        else:
            out.append(f".{seg}" if out else str(seg))
    return "".join(out)


# Checkers are functions of one value that return None or raise _Fail. Leaf types are kept as
# ("types", exact, isinstance_ok) so a map checker tests them inline, without a call per field.
_ANY = object()
_EXACT: Dict[Any, Tuple[frozenset, tuple]] = {
    str: (frozenset({str}), (str,)),
    int: (frozenset({int}), (int,)),
    float: (frozenset({float, int}), (float, int)),
    bool: (frozenset({bool}), (bool,)),
    bytes: (frozenset({bytes}), (bytes, bytearray, memoryview)),
    list: (frozenset({list, tuple}), (list, tuple)),
    dict: (frozenset({dict}), (dict,)),
}


class _Leaf:
    """A type test: exact types first (fast), then isinstance, never bool for int/float."""

    __slots__ = ("exact", "inst", "name")

    def __init__(self, exact: frozenset, inst: tuple, name: str) -> None:
        self.exact, self.inst, self.name = exact, inst, name

    def ok(self, v: Any) -> bool:
        t = type(v)
        if t in self.exact:
            return True
        if t is bool:
            return bool in self.exact
        return isinstance(v, self.inst)

    def __call__(self, v: Any) -> None:
        if not self.ok(v):
            raise _Fail(f"expected {self.name}, got {_type_name(v)}")


def _leaf_for(spec: Any):
    if spec is None or spec is type(None):
        return _Leaf(frozenset({type(None)}), (type(None),), "None")
    if spec is object or spec is typing.Any:
        return _ANY
    if spec in _EXACT:
        exact, inst = _EXACT[spec]
        return _Leaf(exact, inst, {dict: "map"}.get(spec, spec.__name__))
    if isinstance(spec, type):
        return _Leaf(frozenset({spec}), (spec,), spec.__name__)
    return None


def _compile(spec: Any, where: str):
    leaf = _leaf_for(spec) if not isinstance(spec, (list, dict, Optional, OneOf, Strict)) else None
    if leaf is not None:
        return leaf
    if isinstance(spec, list):
        if len(spec) == 0:
            return _leaf_for(list)
        if len(spec) != 1:
            raise InvalidArgument(f"schema at {where or 'the top'}: a list schema holds one item schema ([S]), "
                                  f"got {len(spec)}; use OneOf(...) for alternatives")
        return _list_checker(_compile(spec[0], f"{where}[]"))
    if isinstance(spec, dict):
        return _map_checker(spec, where, strict=False)
    if isinstance(spec, Strict):
        return _map_checker(spec.fields, where, strict=True)
    if isinstance(spec, Optional):
        return _optional_checker(_compile(spec.schema, where))
    if isinstance(spec, OneOf):
        return _one_of_checker([_compile(s, where) for s in spec.schemas], spec)
    raise InvalidArgument(f"schema at {where or 'the top'}: {spec!r} is not a schema; use a type (str, int, float, "
                          "bool, bytes, None), [S], {'key': S, 'key?': S}, Optional(S) or OneOf(S, ...)")


def _list_checker(item):
    if item is _ANY:
        return _leaf_for(list)
    if isinstance(item, _Leaf):
        ok = item.ok

        def check_list(v):
            t = type(v)
            if t is not list and t is not tuple:
                raise _Fail(f"expected a list, got {_type_name(v)}")
            for i, x in enumerate(v):
                if not ok(x):
                    f = _Fail(f"expected {item.name}, got {_type_name(x)}")
                    f.path.append(i)
                    raise f
        return check_list

    def check_list_of(v):
        t = type(v)
        if t is not list and t is not tuple:
            raise _Fail(f"expected a list, got {_type_name(v)}")
        i = 0
        try:
            for i, x in enumerate(v):
                item(x)
        except _Fail as f:
            f.path.append(i)
            raise
    return check_list_of


def _map_checker(spec: dict, where: str, strict: bool):
    fields = []  # (key, required, leaf or None, checker or None)
    for k, s in spec.items():
        if not isinstance(k, str):
            raise InvalidArgument(f"schema at {where or 'the top'}: map keys must be str, got {k!r}")
        required = not k.endswith("?")
        key = k if required else k[:-1]
        c = _compile(s, f"{where}.{key}" if where else key)
        if c is _ANY:
            fields.append((key, required, None, None))
        elif isinstance(c, _Leaf):
            fields.append((key, required, c, None))
        else:
            fields.append((key, required, None, c))
    names = frozenset(f[0] for f in fields)
    allowed = ", ".join(sorted(names)) or "none"
    # The checker is generated Python source, one straight run of tests per field: a loop over a
    # field table costs about twice as much (10 fields: ~1.0 µs looped, ~0.5 µs generated).
    ns: Dict[str, Any] = {"_Fail": _Fail, "_type_name": _type_name, "_M": object(), "_missing": _missing,
                          "_bad": _bad, "_names": names, "_allowed": allowed, "_unexpected": _unexpected}
    lines = ["def check_map(v):",
             "    if type(v) is not dict and not isinstance(v, dict):",
             "        raise _Fail('expected a map, got ' + _type_name(v))",
             "    get = v.get"]
    for i, (key, required, leaf, sub) in enumerate(fields):
        ns[f"K{i}"] = key
        if leaf is None and sub is None:  # anything goes: only presence matters
            if required:
                lines.append(f"    if K{i} not in v: _missing(K{i})")
            continue
        lines.append(f"    x = get(K{i}, _M)")
        lines.append("    if x is _M:")
        lines.append(f"        {'_missing(K%d)' % i if required else 'pass'}")
        if leaf is not None:
            ns[f"L{i}"] = leaf
            if len(leaf.exact) == 1:
                ns[f"T{i}"] = next(iter(leaf.exact))
                lines.append(f"    elif type(x) is not T{i} and not L{i}.ok(x): _bad(K{i}, L{i}, x)")
            else:
                ns[f"E{i}"] = leaf.exact
                lines.append(f"    elif type(x) not in E{i} and not L{i}.ok(x): _bad(K{i}, L{i}, x)")
        else:
            ns[f"S{i}"] = sub
            lines += ["    else:",
                      "        try:",
                      f"            S{i}(x)",
                      "        except _Fail as f:",
                      f"            f.path.append(K{i})",
                      "            raise"]
    if strict:
        lines += ["    for k in v:",
                  "        if k not in _names: _unexpected(k, _allowed)"]
    exec(compile("\n".join(lines) + "\n", f"<schema {where or 'payload'}>", "exec"), ns)
    return ns["check_map"]


def _missing(key: str) -> None:
    f = _Fail("required field missing")
    f.path.append(key)
    raise f


def _bad(key: str, leaf: "_Leaf", x: Any) -> None:
    f = _Fail(f"expected {leaf.name}, got {_type_name(x)}")
    f.path.append(key)
    raise f


def _unexpected(k: Any, allowed: str) -> None:
    f = _Fail(f"unexpected field (allowed: {allowed})")
    f.path.append(k if isinstance(k, str) else repr(k))
    raise f


def _optional_checker(inner):
    if inner is _ANY:
        return _ANY
    if isinstance(inner, _Leaf):  # stays a leaf: tested inline by its map
        return _Leaf(inner.exact | {type(None)}, inner.inst + (type(None),), f"None or {inner.name}")

    def check_optional(v):
        if v is not None:
            try:
                inner(v)
            except _Fail as f:
                if not f.path:
                    f.what = f.what.replace("expected ", "expected None or ", 1)
                raise
    return check_optional


def _one_of_checker(options, spec):
    if any(o is _ANY for o in options):
        return _ANY
    names = ", ".join(o.name if isinstance(o, _Leaf) else "a " + _shape(s) for o, s in zip(options, spec.schemas))

    def check_one_of(v):
        for o in options:
            try:
                o(v)
                return
            except _Fail:
                pass
        raise _Fail(f"expected one of {names}, got {_type_name(v)}")
    return check_one_of


def _shape(s) -> str:
    if isinstance(s, (dict, Strict)):
        return "map"
    if isinstance(s, list):
        return "list"
    return repr(s)


def compile_schema(schema: Any) -> Callable[[Any], None]:
    """Compiles ``schema`` (see the module doc) into ``check(value)``, which returns None or raises
    ``InvalidArgument("items[2].qty: expected int, got str", details={"field": "items[2].qty"})``.
    Raises ``InvalidArgument`` at once for a schema it does not understand."""
    inner = _compile(schema, "")
    if inner is _ANY:
        return lambda value: None

    def check(value: Any) -> None:
        try:
            inner(value)
        except _Fail as f:
            path = _render(f.path)
            raise InvalidArgument(f"{path}: {f.what}" if path else f"payload: {f.what}",
                                  details={"field": path}) from None
    check.schema = schema  # type: ignore[attr-defined]
    return check


# ------------------------------------------------------------------------------------------------
# Protobuf field rules
# ------------------------------------------------------------------------------------------------
_plans: Dict[Tuple[str, FrozenSet[str]], list] = {}
_filling: set = set()  # plans being built (recursive message types refer to themselves)


def _is_repeated(fd) -> bool:
    r = getattr(fd, "is_repeated", None)
    if r is not None:
        return bool(r)
    return fd.label == fd.LABEL_REPEATED


def _has_presence(fd) -> bool:
    hp = getattr(fd, "has_presence", None)
    if hp is not None:
        return bool(hp)
    return fd.message_type is not None or fd.containing_oneof is not None


def _is_map(fd) -> bool:
    mt = fd.message_type
    return mt is not None and mt.GetOptions().map_entry


def _plan(desc, required: FrozenSet[str]) -> list:
    """The checks of one message type: [(field name, repeated/map/singular, required, enum numbers or
    None, sub-plan or None, has presence)], only for the fields that have something to check."""
    key = (desc.full_name, required)
    plan = _plans.get(key)
    if plan is not None:
        return plan
    plan = []
    _plans[key] = plan  # recursive messages: the (still filling) list is the plan
    _filling.add(key)
    try:
        _fill(plan, desc, required)
    finally:
        _filling.discard(key)
    return plan


def _fill(plan: list, desc, required: FrozenSet[str]) -> None:
    for fd in desc.fields:
        req = fd.full_name in required
        target = fd.message_type.fields_by_name["value"] if _is_map(fd) else fd
        enum = frozenset(v.number for v in target.enum_type.values) if target.enum_type is not None else None
        enum_name = target.enum_type.full_name if target.enum_type is not None else None
        sub = None
        if target.message_type is not None:
            sub = _plan(target.message_type, required)
            if not sub and (target.message_type.full_name, required) not in _filling:
                sub = None  # nothing to check below (well-known types, plain messages): skip the walk
        kind = "map" if _is_map(fd) else ("list" if _is_repeated(fd) else "one")
        if req or enum is not None or sub is not None:
            plan.append((fd.name, kind, req, enum, enum_name, sub, _has_presence(fd)))


def _walk(msg, plan: list, path: str) -> None:
    for name, kind, req, enum, enum_name, sub, presence in plan:
        if kind == "one":
            if req and not (msg.HasField(name) if presence else getattr(msg, name)):
                _field_error(path + name, "required field is not set")
            if sub is not None:
                if sub and msg.HasField(name):
                    _walk(getattr(msg, name), sub, f"{path}{name}.")
            elif enum is not None:
                v = getattr(msg, name)
                if v not in enum:
                    _field_error(path + name, f"{v} is not a defined {enum_name} value")
            continue
        values = getattr(msg, name)
        if req and not len(values):
            _field_error(path + name, "required field is empty (needs at least one entry)")
        if kind == "list":
            if sub is not None:
                if sub:
                    for i, item in enumerate(values):
                        _walk(item, sub, f"{path}{name}[{i}].")
            elif enum is not None:
                for i, v in enumerate(values):
                    if v not in enum:
                        _field_error(f"{path}{name}[{i}]", f"{v} is not a defined {enum_name} value")
        else:  # map
            if sub is not None:
                if sub:
                    for k in sorted(values):
                        _walk(values[k], sub, f"{path}{name}[{_key(k)}].")
            elif enum is not None:
                for k in sorted(values):
                    if values[k] not in enum:
                        _field_error(f"{path}{name}[{_key(k)}]", f"{values[k]} is not a defined {enum_name} value")


def _key(k) -> str:
    # Map keys as the Go stubs write them (%q of the key's text): the same path from either server.
    return _json.dumps(str(k).lower() if isinstance(k, bool) else str(k), ensure_ascii=False)


def _field_error(field: str, what: str) -> None:
    raise InvalidArgument(f"{field}: {what}", details={"field": field})


def message_checker(message_class, required=()) -> Callable[[Any], None]:
    """``check(msg)`` for a generated message class: every field whose full name is in ``required``
    ("hms.order.v1.CreateOrderRequest.customer_id") must be set (a message or proto3 ``optional`` field
    present, a scalar non-zero/non-empty, a repeated or map field non-empty), at any depth, and every
    enum field must hold a value its enum defines (proto3 enums are open: parsing keeps unknown
    numbers). Raises ``InvalidArgument("items[0].quantity: required field is not set",
    details={"field": "items[0].quantity"})``."""
    plan = _plan(message_class.DESCRIPTOR, frozenset(required))
    if not plan:
        return lambda msg: None

    def check(msg) -> None:
        _walk(msg, plan, "")
    return check
