"""The Rust binding (bindings/rust): `cargo test`, clippy, and the uniform peer program hms-rust-peer
paired with Python and with itself over the shared CBOR vectors.

cargo finds libhms_ffi through HMS_FFI_LIB_DIR / HMS_FFI_INCLUDE_DIR, which this driver takes from
`python -m hms_ffi_native --libdir/--includedir` (the `hms-ffi` CLI of the package under test, installed
or built in place). Without cargo the tests skip, unless HMS_REQUIRE_BINDINGS=1 (CI), then they fail.
Everything is built once per session in release mode (tests and the peer share the dependencies);
the target dir is bindings/rust/target unless CARGO_TARGET_DIR says otherwise.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import hms_ffi_native as hms

from _in_place import bogus_checks, in_place_checks
from conftest import ServerProcess, child_env

ROOT = Path(__file__).resolve().parent.parent
RUST = ROOT / "bindings" / "rust"
VECTORS = ROOT / "tests" / "vectors" / "cbor.json"
N_VECTORS = len(json.loads(VECTORS.read_text())["vectors"])


def _cargo() -> str | None:
    found = shutil.which("cargo")
    if found:
        return found
    home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "bin" / "cargo"
    return str(home) if home.is_file() else None


def _need_cargo() -> str:
    cargo = _cargo()
    if cargo is None:
        msg = "cargo is not installed (install Rust: rustup or the distribution's cargo package)"
        if os.environ.get("HMS_REQUIRE_BINDINGS") == "1":
            pytest.fail(msg + " and HMS_REQUIRE_BINDINGS=1 requires the Rust binding to be tested")
        pytest.skip(msg)
    if not (RUST / "Cargo.toml").is_file():
        pytest.fail(f"{RUST}/Cargo.toml is missing")
    return cargo


def _package_dir(flag: str) -> str:
    r = subprocess.run([sys.executable, "-m", "hms_ffi_native", flag], capture_output=True, text=True,
                       env=child_env(), cwd="/")
    assert r.returncode == 0 and r.stdout.strip(), f"`python -m hms_ffi_native {flag}` failed: {r.stderr}"
    return r.stdout.strip()


@pytest.fixture(scope="session")
def cargo_env():
    cargo = _need_cargo()
    # HMS_FFI_LIB_DIR / HMS_FFI_INCLUDE_DIR already set in the environment win (a developer's override)
    env = child_env(HMS_FFI_LIB_DIR=os.environ.get("HMS_FFI_LIB_DIR") or _package_dir("--libdir"),
                    HMS_FFI_INCLUDE_DIR=os.environ.get("HMS_FFI_INCLUDE_DIR") or _package_dir("--includedir"),
                    HMS_PYTHON=sys.executable, RUST_BACKTRACE="0")
    env.pop("HMS_FFI_RUNTIME_DIR", None)  # the Rust tests make their own directories
    env.setdefault("CARGO_TERM_COLOR", "never")
    env["PATH"] = str(Path(cargo).parent) + os.pathsep + env.get("PATH", "")
    return cargo, env


def _target_dir(env) -> Path:
    return Path(env.get("CARGO_TARGET_DIR") or RUST / "target")


def _run_cargo(cargo_env, *args, timeout=900):
    cargo, env = cargo_env
    return subprocess.run([cargo, *args], cwd=RUST, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def rust_peer(cargo_env) -> Path:
    r = _run_cargo(cargo_env, "build", "--release", "--locked", "-p", "hms-ffi", "--features", "peer",
                   "--bin", "hms-rust-peer")
    assert r.returncode == 0, f"building hms-rust-peer failed:\n{r.stderr[-6000:]}"
    exe = _target_dir(cargo_env[1]) / "release" / "hms-rust-peer"
    assert exe.is_file(), exe
    return exe


def test_cargo_test(cargo_env):
    # release: shares compiled dependencies with the peer build above (CI time)
    r = _run_cargo(cargo_env, "test", "--release", "--locked", "--workspace", "--features", "hms-ffi/peer")
    out = r.stdout + r.stderr
    lines = r.stdout.splitlines()
    failed = "\n".join(ln + ("\n    " + lines[i + 1] if "panicked" in ln and i + 1 < len(lines) else "")
                       for i, ln in enumerate(lines) if "FAILED" in ln or "panicked" in ln)
    assert r.returncode == 0, (f"cargo test failed:\n{failed}\n--- stdout (tail)\n{r.stdout[-6000:]}"
                               f"\n--- stderr (tail)\n{r.stderr[-3000:]}")
    results = re.findall(r"test result: ok\. (\d+) passed; (\d+) failed", out)
    passed = sum(int(p) for p, _ in results)
    # header check (5), unit tests, CBOR vectors, Rust<->Rust, Rust<->Python
    assert passed >= 25, f"only {passed} Rust tests ran:\n{out[-4000:]}"
    for name in ("declarations_match_the_header_in_the_c_compiler", "every_vector_round_trips_to_identical_bytes",
                 "rust_client_python_service", "python_client_is_answered_by_rust_closures",
                 "calls_errors_panics_and_deadlines", "publish_and_subscribe"):
        assert re.search(rf"test {name} \.\.\. ok", out), f"{name} did not run or pass:\n{out[-4000:]}"


def test_clippy_clean(cargo_env):
    probe = _run_cargo(cargo_env, "clippy", "--version", timeout=60)
    if probe.returncode != 0:
        pytest.skip("cargo clippy is not installed (rustup component add clippy)")
    r = _run_cargo(cargo_env, "clippy", "--release", "--locked", "--workspace", "--all-targets", "--features",
                   "hms-ffi/peer", "--", "-D", "warnings")
    assert r.returncode == 0, f"clippy found problems:\n{r.stderr[-6000:]}"


def test_unsafe_code_is_confined():
    # The compiler enforces it (#![deny(unsafe_code)] at the crate root, allowed only in src/ffi.rs);
    # this makes sure nobody lifts the rule.
    src = RUST / "hms-ffi" / "src"
    assert "#![deny(unsafe_code)]" in (src / "lib.rs").read_text()
    assert "#![allow(unsafe_code)]" in (src / "ffi.rs").read_text()
    offenders = []
    for f in src.rglob("*.rs"):
        if f.name == "ffi.rs":
            continue
        for i, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("//")[0]  # doc comments may mention the rule
            if re.search(r"\bunsafe\b", code) or "allow(unsafe_code)" in code:
                offenders.append(f"{f.relative_to(RUST)}:{i}: {line.strip()}")
    assert not offenders, "unsafe outside hms-ffi/src/ffi.rs:\n" + "\n".join(offenders)


class RustPeer:
    """`hms-rust-peer serve SERVICE` in the test's runtime directory."""

    def __init__(self, exe: Path, service: str) -> None:
        self.proc = subprocess.Popen([str(exe), "serve", service], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=child_env())
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"hms-rust-peer serve {service} did not start: {line!r} {self.proc.stderr.read()}")

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(10)


@pytest.fixture
def rust_service(rust_peer, runtime_dir):
    started = []

    def start(service: str) -> RustPeer:
        p = RustPeer(rust_peer, service)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop(signal.SIGKILL)


def _peer(exe, *args, timeout=120):
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, env=child_env())


def test_rust_calls_python(rust_peer, server_process):
    server_process("echo")
    r = _peer(rust_peer, "call", "py.echo", str(VECTORS))
    assert r.returncode == 0 and r.stdout.strip() == f"ok {N_VECTORS}", r.stdout + r.stderr


def test_python_calls_rust(rust_service):
    import cbor2

    peer = rust_service("rs.peer")
    vectors = json.loads(VECTORS.read_text())["vectors"]
    with hms.connect("rs.peer", "^1") as c:
        for v in vectors:
            data = bytes.fromhex(v["hex"])
            value = cbor2.loads(data)
            back = c.call("echo", value, codec="cbor", timeout=10)
            assert cbor2.dumps(back, timezone=dt.timezone.utc) == data, v["name"]
        assert c.call("echo", b"\x00raw\xff", timeout=10) == b"\x00raw\xff"
        with pytest.raises(hms.NotFound) as ei:
            c.call("fail", [5, "nope"], timeout=10)
        assert ei.value.message == "nope"
        with pytest.raises(hms.InvalidArgument) as ei:
            c.call("fail", "not a list", timeout=10)
        assert "fail wants [code, message]" in ei.value.message
        with pytest.raises(hms.PermissionDenied):
            c.call("fail", [7, "no"], timeout=10)
    assert peer.stop(signal.SIGTERM) == 0, "hms-rust-peer serve must exit 0 on SIGTERM"


def test_rust_calls_rust(rust_peer, rust_service):
    p = rust_service("rs.peer")
    r = _peer(rust_peer, "call", "rs.peer", str(VECTORS))
    assert r.returncode == 0 and r.stdout.strip() == f"ok {N_VECTORS}", r.stdout + r.stderr
    assert p.stop(signal.SIGINT) == 0, "hms-rust-peer serve must exit 0 on SIGINT"


def test_peer_call_reports_a_wrong_reply(rust_peer, rust_service, tmp_path):
    # the checker can fail: a vector whose bytes are not what echo returns (non-preferred encoding)
    bad = {"version": 1, "vectors": [{"name": "long_head", "type": "uint", "hex": "1800"}]}
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(bad))
    rust_service("rs.peer")
    r = _peer(rust_peer, "call", "rs.peer", str(f))
    assert r.returncode == 1 and r.stdout.startswith("long_head:"), r.stdout + r.stderr


def test_bench_smoke(rust_peer, rust_service, server_process):
    # Bounded: a format and sanity check. Real numbers: hms-rust-peer bench SERVICE 200000 (README).
    rust_service("rs.peer")
    server_process("echo")
    for service in ("rs.peer", "py.echo"):
        r = _peer(rust_peer, "bench", service, "2000")
        assert r.returncode == 0, r.stderr
        p50, p99, rate = (int(x) for x in r.stdout.split())
        assert 0 < p50 <= p99 and rate > 0, r.stdout
        print(f"bench Rust -> {service}: p50 {p50} ns, p99 {p99} ns, {rate} calls/s")


# ------------------------------------------------------------------------------------------------
from hms_ffi_native._native import ffi, lib  # noqa: E402  (raw content types below)

# Large Arrow / numpy payloads from Python read IN PLACE by the Rust service (FnInPlace-style
# handlers + the binding's Arrow C Data Interface / ndarray decoders): values checked against
# pyarrow/numpy, and zero copy checked where it can be: the payload is larger than max_inline (so it
# travelled as an arena block), the column buffers the Rust side read lie inside the request's
# address range, and that range is a read-only shared memfd mapping in the Rust process.
def raw_call(client, fn: str, data: bytes, ct: int):
    """Sends exact bytes with a content type: (status, content type, reply bytes)."""
    fid = client.functions[fn]
    resp = ffi.new("hms_payload_t *")
    err = ffi.new("hms_error_t *")
    st = lib.hms_call_bytes(client._ptr, fid, data, len(data), ct, resp, 10_000_000_000, err)
    out = ffi.buffer(resp.data, resp.len)[:] if resp.len else b""
    rct = resp.content_type
    lib.hms_payload_release(resp)
    return st, rct, out


def test_python_arrow_and_numpy_read_in_place_by_rust(rust_service):
    pytest.importorskip("pyarrow")
    p = rust_service("rs.arrays")
    with hms.connect("rs.arrays", "^1") as c:
        in_place_checks(c)
        bogus_checks(c, raw_call)
    assert p.stop(signal.SIGTERM) == 0
