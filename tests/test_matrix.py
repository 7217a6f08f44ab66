"""The cross-language matrix: every client language calls every serving language, and every CBOR test
vector (tests/vectors/cbor.json: integers of every width and sign, floats, booleans, UTF-8 and byte
strings, timestamps, lists, maps, sets, null/optional) comes back byte-identical after the server
decoded it into its own native values and encoded it again. Errors cross too: `fail` with
[5, "nope"] must arrive as NOT_FOUND with that message.

Clients: C (tests/c/hms_ctest.c), Python (in-process), Go, Rust, PHP. Servers: Python, Go, Rust, PHP.
"""
from __future__ import annotations

import json
import subprocess

import pytest

import hms_ffi_native as hms
from hms_ffi_native._native import ffi, lib

import _peers
from _peers import PeerUnavailable, Server

CT_CBOR = 2
VECTORS = json.loads(_peers.VECTORS.read_text())["vectors"]


def _need(lang: str):
    try:
        return _peers.peer_command(lang)
    except PeerUnavailable as e:
        if _peers.REQUIRED:
            pytest.fail(f"HMS_REQUIRE_BINDINGS=1 but {e}")
        pytest.skip(str(e))


def _python_calls(service: str) -> list:
    bad = []
    with hms.connect(service, "^1") as c:
        fid = ffi.new("uint32_t *")
        err = ffi.new("hms_error_t *")
        assert lib.hms_client_function_id(c._ptr, b"echo", fid, err) == 0
        resp = ffi.new("hms_payload_t *")
        for v in VECTORS:
            data = bytes.fromhex(v["hex"])
            st = lib.hms_call_bytes(c._ptr, fid[0], data, len(data), CT_CBOR, resp, 10_000_000_000, err)
            got = ffi.buffer(resp.data, resp.len)[:] if st == 0 and resp.len else b""
            ct = resp.content_type
            lib.hms_payload_release(resp)
            if st != 0 or ct != CT_CBOR or got != data:
                bad.append(f"{v['name']}: status {st} ct {ct} got {got.hex()} want {v['hex']}")
        with pytest.raises(hms.NotFound) as ei:
            c.call("fail", [5, "nope"], timeout=10)
        assert ei.value.message == "nope" and ei.value.source == "remote"
    return bad


def _c_calls(service: str) -> list:
    exe = _peers.peer_command("c")
    bad = []
    env = _peers._env()
    for v in VECTORS:
        r = subprocess.run([*exe, "call", service, "echo", v["hex"], str(CT_CBOR)], capture_output=True, text=True,
                           timeout=60, env=env)
        want = f"OK {CT_CBOR} {v['hex']}"
        if r.stdout.strip() != want:
            bad.append(f"{v['name']}: {r.stdout.strip()[:200]!r} {r.stderr.strip()[-300:]!r} want {want[:80]!r}")
    r = subprocess.run([*exe, "call", service, "fail", "8205646e6f7065", str(CT_CBOR)], capture_output=True,
                       text=True, timeout=60, env=env)  # CBOR [5, "nope"]
    if not r.stdout.startswith("ERROR NOT_FOUND nope"):
        bad.append(f"fail: {r.stdout.strip()!r} {r.stderr.strip()[-300:]!r}")
    return bad


def _peer_calls(lang: str, service: str) -> list:
    r = subprocess.run([*_peers.peer_command(lang), "call", service, str(_peers.VECTORS)], capture_output=True,
                       text=True, timeout=180, env=_peers._env())
    if r.returncode == 0 and r.stdout.strip() == f"ok {len(VECTORS)}":
        return []
    return [f"exit {r.returncode}: {r.stdout.strip()[-3000:]} {r.stderr.strip()[-2000:]}"]


@pytest.mark.parametrize("server", _peers.SERVING_LANGS)
def test_every_client_language_against(server, runtime_dir):
    _need(server)
    clients = []
    for lang in _peers.LANGS:
        try:
            _peers.peer_command(lang)
            clients.append(lang)
        except PeerUnavailable as e:
            if _peers.REQUIRED:
                pytest.fail(f"HMS_REQUIRE_BINDINGS=1 but {e}")
    assert "python" in clients and "c" in clients
    failures = {}
    with Server(server, f"matrix.{server}") as srv:
        for client in clients:
            if client == "python":
                bad = _python_calls(srv.service)
            elif client == "c":
                bad = _c_calls(srv.service)
            else:
                bad = _peer_calls(client, srv.service)
            if bad:
                failures[f"{client} -> {server}"] = bad
        assert srv.proc.poll() is None, f"the {server} server died during the matrix"
        code = srv.stop()
    assert not failures, json.dumps(failures, indent=1)[:8000]
    assert code == 0, f"the {server} server did not exit cleanly on SIGTERM (exit {code})"


def test_every_language_benchmarks_against_python(runtime_dir):
    """A bounded smoke run of each language's bench client against the Python echo (format and sanity,
    not speed: speed is measured by bench/compare.py)."""
    with Server("python", "py.echo") as srv:
        for lang in ("c", "go", "rust", "php"):
            try:
                _peers.peer_command(lang)
            except PeerUnavailable as e:
                if _peers.REQUIRED:
                    pytest.fail(f"HMS_REQUIRE_BINDINGS=1 but {e}")
                continue
            r = _peers.bench(lang, srv.service, 300)
            assert 0 < r["p50_ns"] <= r["p99_ns"] and r["calls_per_s"] > 0, (lang, r)
