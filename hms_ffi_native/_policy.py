"""Access policy, resource limits and audit log of a node's services (docs/security.md).

A policy file (TOML; YAML when PyYAML is installed and the file ends in .yaml/.yml)::

    [roles]
    admin = { uids = [0], gids = ["wheel"] }   # numbers or user/group names (resolved at load)

    [audit]
    path = "/var/log/oms-audit.jsonl"
    level = "deny"                               # "none" | "deny" | "all"
    max_bytes = 67108864                         # rotate at; keep = 5 files
    keep = 5

    [defaults]                                   # every service of the node
    others = false                               # only the owner (the serving uid) may call

    [service."hms.oms.order"]
    group = "hmsusers"                           # opens this service's socket to that group
    roles = ["admin"]                            # rule for its functions without their own
    max_connections = 16
    max_inflight = 64
    max_message = 1048576

    [service."hms.oms.order".functions.Ping]
    others = true                                # anybody who reaches the socket
    audit = "all"

The identity checked is the kernel's (SO_PEERCRED/SO_PEERGROUPS at connect), never a value the caller
sends; the check runs in the C core (hms_function_set_access), so callers in every language see it.
"""
from __future__ import annotations

import grp
import os
import pwd
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ._errors import InvalidArgument, error_for
from ._native import ffi, lib

AUDIT_LEVELS = {"none": 1, "deny": 2, "all": 3}
_RULE_KEYS = {"uids", "gids", "roles", "others", "audit"}
_LIMIT_KEYS = {"max_connections", "max_inflight", "max_ring_bytes", "arena_quota", "max_message"}
_SERVICE_KEYS = _RULE_KEYS | _LIMIT_KEYS | {"group", "functions"}
_AUDIT_KEYS = {"path", "level", "max_bytes", "keep", "queue"}
_TOP_KEYS = {"roles", "audit", "defaults", "service"}


def _raise(st: int, err) -> None:
    raise error_for(st, ffi.string(err.message).decode("utf-8", "replace"))


def _load_toml(path: str) -> Dict[str, Any]:
    try:
        import tomllib  # Python >= 3.11
    except ImportError:
        try:
            import tomli as tomllib  # the same parser, for 3.9/3.10
        except ImportError:
            raise InvalidArgument(f"reading the policy {path!r} needs a TOML parser: Python 3.11+ has tomllib; on "
                                  "older versions `pip install tomli` (or write the policy as YAML with PyYAML "
                                  "installed, or pass a dict)") from None
    with open(path, "rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise InvalidArgument(f"policy {path!r} is not valid TOML: {e}") from None


def _load_yaml(path: str) -> Dict[str, Any]:
    try:
        import yaml
    except ImportError:
        raise InvalidArgument(f"policy {path!r} is YAML, which needs PyYAML (`pip install pyyaml`); or write it as "
                              "TOML") from None
    with open(path, "rb") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise InvalidArgument(f"policy {path!r} must be a mapping at the top level")
    return data


def _check_keys(where: str, d: Any, allowed: Iterable[str]) -> None:
    if not isinstance(d, dict):
        raise InvalidArgument(f"policy: {where} must be a table, got {type(d).__name__}")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise InvalidArgument(f"policy: {where} has unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _ids(where: str, values: Any, kind: str) -> List[int]:
    if not isinstance(values, list):
        raise InvalidArgument(f"policy: {where}.{kind} must be a list, got {type(values).__name__}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise InvalidArgument(f"policy: {where}.{kind} holds {v!r}; use numbers or names")
        if isinstance(v, int):
            if not 0 <= v < 2 ** 32:
                raise InvalidArgument(f"policy: {where}.{kind} holds {v}, not a valid id")
            out.append(v)
            continue
        try:
            out.append(pwd.getpwnam(v).pw_uid if kind == "uids" else grp.getgrnam(v).gr_gid)
        except KeyError:
            raise InvalidArgument(f"policy: {where}.{kind} names {'user' if kind == 'uids' else 'group'} {v!r}, "
                                  "which does not exist on this host") from None
    return out


class Rule:
    """Who may call a function and what the audit log records of it."""

    __slots__ = ("uids", "gids", "roles", "others", "audit", "where")

    def __init__(self, where: str, d: Dict[str, Any]) -> None:
        self.where = where
        self.uids = _ids(where, d["uids"], "uids") if "uids" in d else None
        self.gids = _ids(where, d["gids"], "gids") if "gids" in d else None
        self.roles = d.get("roles")
        if self.roles is not None and (not isinstance(self.roles, list) or
                                       not all(isinstance(r, str) for r in self.roles)):
            raise InvalidArgument(f"policy: {where}.roles must be a list of role names")
        self.others = d.get("others")
        if self.others is not None and not isinstance(self.others, bool):
            raise InvalidArgument(f"policy: {where}.others must be true or false")
        self.audit = d.get("audit")
        if self.audit is not None and self.audit not in AUDIT_LEVELS:
            raise InvalidArgument(f"policy: {where}.audit is {self.audit!r}; use one of {sorted(AUDIT_LEVELS)}")
        if self.others is False and (self.uids or self.gids or self.roles):
            raise InvalidArgument(f"policy: {where} says others = false (owner only) and also lists callers; "
                                  "drop one of them")

    def has_access(self) -> bool:
        return any(x is not None for x in (self.uids, self.gids, self.roles, self.others))


class Policy:
    """A parsed policy. ``Node(policy=...)`` applies it to the services and functions the node adds."""

    def __init__(self, data: Dict[str, Any], source: str = "<dict>") -> None:
        self.source = source
        _check_keys("the top level", data, _TOP_KEYS)
        self.roles: Dict[str, Tuple[List[int], List[int]]] = {}
        for name, r in (data.get("roles") or {}).items():
            _check_keys(f"roles.{name}", r, {"uids", "gids"})
            if name == "owner":
                raise InvalidArgument("policy: 'owner' is a built-in role (the serving uid); pick another name")
            self.roles[name] = (_ids(f"roles.{name}", r.get("uids", []), "uids"),
                                _ids(f"roles.{name}", r.get("gids", []), "gids"))
        self.audit = dict(data.get("audit") or {})
        _check_keys("audit", self.audit, _AUDIT_KEYS)
        if "level" in self.audit and self.audit["level"] not in AUDIT_LEVELS:
            raise InvalidArgument(f"policy: audit.level is {self.audit['level']!r}; use one of {sorted(AUDIT_LEVELS)}")
        self.defaults = self._service("defaults", data.get("defaults") or {})
        self.services = {name: self._service(f"service.{name!r}", s) for name, s in (data.get("service") or {}).items()}

    def _service(self, where: str, s: Dict[str, Any]) -> Dict[str, Any]:
        _check_keys(where, s, _SERVICE_KEYS)
        out = {"rule": Rule(where, s), "functions": {}, "limits": {}, "group": None}
        for k in _LIMIT_KEYS & set(s):
            v = s[k]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidArgument(f"policy: {where}.{k} must be a non-negative integer (0 = no limit)")
            out["limits"][k] = v
        if "group" in s:
            g = s["group"]
            try:
                out["group"] = g if isinstance(g, int) and not isinstance(g, bool) else grp.getgrnam(g).gr_gid
            except (KeyError, TypeError):
                raise InvalidArgument(f"policy: {where}.group names group {g!r}, which does not exist on this host") from None
        for fname, f in (s.get("functions") or {}).items():
            _check_keys(f"{where}.functions.{fname}", f, _RULE_KEYS)
            out["functions"][fname] = Rule(f"{where}.functions.{fname}", f)
        for rule in [out["rule"], *out["functions"].values()]:
            for r in rule.roles or []:
                if r != "owner" and r not in self.roles:
                    raise InvalidArgument(f"policy: {rule.where} names role {r!r}, which [roles] does not define "
                                          f"(defined: {sorted(self.roles) + ['owner']})")
        return out

    # -- resolution
    def _chain(self, service: str, function: str) -> List[Rule]:
        s = self.services.get(service)
        chain = []
        if s and function in s["functions"]:
            chain.append(s["functions"][function])
        if s:
            chain.append(s["rule"])
        if function in self.defaults["functions"]:
            chain.append(self.defaults["functions"][function])
        chain.append(self.defaults["rule"])
        return chain

    def access_for(self, service: str, function: str) -> Optional[dict]:
        """The effective rule of service.function: {flags, uids, gids, roles, audit} or None (no rule)."""
        chain = self._chain(service, function)
        rule = next((r for r in chain if r.has_access()), None)
        audit = next((r.audit for r in chain if r.audit is not None), None)
        if rule is None and audit is None:
            return None
        out = {"flags": lib.HMS_ACCESS_ANY, "uids": [], "gids": [], "roles": [], "audit": audit}
        if rule is None:
            return out
        uids, gids, roles = list(rule.uids or []), list(rule.gids or []), list(rule.roles or [])
        flags = 0
        for r in roles:
            if r == "owner":
                flags |= lib.HMS_ACCESS_OWNER
            else:
                uids += self.roles[r][0]
                gids += self.roles[r][1]
        if rule.others is False:
            flags = lib.HMS_ACCESS_OWNER
        elif not (uids or gids or roles):
            flags = lib.HMS_ACCESS_ANY  # others = true: anybody who reaches the socket
        out.update(flags=flags, uids=sorted(set(uids)), gids=sorted(set(gids)), roles=roles)
        return out

    def service_settings(self, service: str) -> Tuple[Dict[str, int], Optional[int]]:
        limits = dict(self.defaults["limits"])
        group = self.defaults["group"]
        s = self.services.get(service)
        if s:
            limits.update(s["limits"])
            group = s["group"] if s["group"] is not None else group
        return limits, group

    def functions_named(self, service: str) -> List[str]:
        s = self.services.get(service)
        return sorted(s["functions"]) if s else []

    def __repr__(self) -> str:
        return f"<Policy {self.source}: {len(self.services)} services, roles {sorted(self.roles)}>"


def load_policy(source: Any) -> Policy:
    """Reads a policy: a path (TOML, or YAML for .yaml/.yml), a dict, or a Policy (returned as is)."""
    if isinstance(source, Policy):
        return source
    if isinstance(source, dict):
        return Policy(source)
    path = os.fspath(source)
    if not os.path.exists(path):
        raise InvalidArgument(f"policy file {path!r} does not exist")
    data = _load_yaml(path) if path.endswith((".yaml", ".yml")) else _load_toml(path)
    return Policy(data, path)


# -- the C calls (used by Service/Node)
def set_access(service_ptr, name: str, flags: int, uids=(), gids=(), roles=(), audit: Optional[str] = None) -> None:
    acc = ffi.new("hms_access_t *")
    lib.hms_access_init(acc)
    acc.flags = flags
    keep = []
    if uids:
        keep.append(ffi.new("uint32_t[]", list(uids)))
        acc.uids, acc.n_uids = keep[-1], len(uids)
    if gids:
        keep.append(ffi.new("uint32_t[]", list(gids)))
        acc.gids, acc.n_gids = keep[-1], len(gids)
    if roles:
        keep.append(ffi.new("char[]", ", ".join(roles).encode()))
        acc.roles = keep[-1]
    if audit is not None:
        if audit not in AUDIT_LEVELS:
            raise InvalidArgument(f"audit level {audit!r}: use one of {sorted(AUDIT_LEVELS)}")
        acc.audit = AUDIT_LEVELS[audit]
    err = ffi.new("hms_error_t *")
    st = lib.hms_function_set_access(service_ptr, name.encode(), acc, err)
    if st:
        _raise(st, err)


def set_limits(service_ptr, **limits: int) -> None:
    unknown = set(limits) - _LIMIT_KEYS
    if unknown:
        raise InvalidArgument(f"unknown limit(s) {sorted(unknown)}; use {sorted(_LIMIT_KEYS)}")
    lim = ffi.new("hms_limits_t *")
    lib.hms_limits_init(lim)
    for k, v in limits.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InvalidArgument(f"{k} must be a non-negative int (0 = no limit), got {v!r}")
        setattr(lim, k, v)
    err = ffi.new("hms_error_t *")
    st = lib.hms_service_set_limits(service_ptr, lim, err)
    if st:
        _raise(st, err)


def open_to_group(service_ptr, group: Any) -> None:
    try:
        gid = group if isinstance(group, int) and not isinstance(group, bool) else grp.getgrnam(group).gr_gid
    except (KeyError, TypeError):
        raise InvalidArgument(f"group {group!r} does not exist on this host (give a group name or gid)") from None
    err = ffi.new("hms_error_t *")
    st = lib.hms_service_open_to_group(service_ptr, gid, err)
    if st:
        _raise(st, err)


def set_audit(node_ptr, path: str, level: str = "deny", max_bytes: int = 0, keep: int = 0, queue: int = 0) -> None:
    if level not in AUDIT_LEVELS:
        raise InvalidArgument(f"audit_level {level!r}: use one of {sorted(AUDIT_LEVELS)}")
    opts = ffi.new("hms_audit_options_t *")
    lib.hms_audit_options_init(opts)
    p = ffi.new("char[]", os.fsencode(path))
    opts.path = p
    opts.level = AUDIT_LEVELS[level]
    opts.max_bytes, opts.keep, opts.queue = max_bytes, keep, queue
    err = ffi.new("hms_error_t *")
    st = lib.hms_node_set_audit(node_ptr, opts, err)
    if st:
        _raise(st, err)


def audit_stats(node_ptr) -> Dict[str, int]:
    st_ = ffi.new("hms_audit_stats_t *")
    lib.hms_audit_stats_init(st_)
    err = ffi.new("hms_error_t *")
    st = lib.hms_node_audit_stats(node_ptr, st_, err)
    if st:
        _raise(st, err)
    return {k: getattr(st_, k) for k in ("queued", "written", "dropped", "rotations", "write_errors")}


def audit_flush(node_ptr, timeout_ns: int) -> None:
    err = ffi.new("hms_error_t *")
    st = lib.hms_node_audit_flush(node_ptr, timeout_ns, err)
    if st:
        _raise(st, err)


def apply_function(policy: Optional[Policy], service, name: str) -> None:
    if policy is None:
        return
    a = policy.access_for(service.name, name)
    if a is not None:
        set_access(service._ptr, name, a["flags"], a["uids"], a["gids"], a["roles"], a["audit"])


def apply_service(policy: Optional[Policy], service) -> None:
    if policy is None:
        return
    limits, group = policy.service_settings(service.name)
    if limits:
        set_limits(service._ptr, **limits)
    if group is not None:
        open_to_group(service._ptr, group)
