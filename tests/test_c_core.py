"""C-level tests (tests/c/*.c) built from the sources, plain and with ASan+UBSan, and C<->Python calls.

Built from the source tree when it is there (a source checkout or CI); the C<->Python tests also work
against an installed wheel by linking the shipped libhms_ffi.so.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hms_ffi_native as hms
from hms_ffi_native import _paths

from conftest import ServerProcess, c_sources_present, child_env

ROOT = Path(__file__).resolve().parent.parent
CC = os.environ.get("CC", "cc")
BASE_FLAGS = ["-std=gnu11", "-g", "-Wall", "-Wextra", "-Wno-format-truncation", "-D_GNU_SOURCE", "-pthread"]
SAN_FLAGS = ["-O1", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]

needs_cc = pytest.mark.skipif(shutil.which(CC) is None, reason=f"no C compiler ({CC})")
needs_src = pytest.mark.skipif(not c_sources_present(), reason="C sources not present (testing an installed wheel)")


def build_from_source(out: Path, test_src: str, extra) -> Path:
    srcs = sorted(str(p) for p in (ROOT / "csrc").glob("*.c"))
    cmd = [CC, *BASE_FLAGS, *extra, "-DHMS_FFI_BUILDING=1", f"-I{ROOT / 'include'}", f"-I{ROOT / 'csrc'}", *srcs,
           str(ROOT / "tests" / "c" / test_src), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def build_against_shipped_library(out: Path, test_src: str) -> Path:
    libdir = _paths.libdir()
    cmd = [CC, *BASE_FLAGS, "-O2", f"-I{_paths.includedir()}", str(ROOT / "tests" / "c" / test_src), "-o", str(out),
           f"-L{libdir}", f"-Wl,-rpath,{libdir}", "-lhms_ffi"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cbuild")


@pytest.fixture(scope="session")
def ctest(build_dir):
    if shutil.which(CC) is None:
        pytest.skip(f"no C compiler ({CC})")
    # The shipped library is what C users link: test that one.
    return build_against_shipped_library(build_dir / "hms_ctest", "hms_ctest.c")


def run(exe, *args, timeout=120, env=None):
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, env=env or child_env())


def test_c_selftest_against_shipped_library(ctest, runtime_dir):
    r = run(ctest, "selftest")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all C tests passed" in r.stdout


@needs_cc
@needs_src
def test_c_selftest_under_asan_ubsan(build_dir, runtime_dir):
    exe = build_from_source(build_dir / "hms_ctest_san", "hms_ctest.c", SAN_FLAGS)
    env = child_env(ASAN_OPTIONS="detect_leaks=1:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    r = run(exe, "selftest", env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]


@needs_cc
@needs_src
def test_hostile_peers_under_asan_ubsan(build_dir, runtime_dir):
    src = ROOT / "tests" / "c" / "hms_evil.c"
    if not src.exists():
        pytest.fail("tests/c/hms_evil.c is missing")
    exe = build_from_source(build_dir / "hms_evil_san", "hms_evil.c", SAN_FLAGS)
    env = child_env(ASAN_OPTIONS="detect_leaks=1:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    r = run(exe, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "all hostile-peer tests passed" in r.stdout


@needs_cc
@needs_src
def test_arena_hostile_peers_under_asan_ubsan(build_dir, runtime_dir):
    # tests/c/hms_arena_evil.c: out-of-range/overflowing/unknown arena references, unsealed or lying
    # segments, too many segments, garbage and forged releases on the socket; loans and take_request.
    exe = build_from_source(build_dir / "hms_arena_evil_san", "hms_arena_evil.c", SAN_FLAGS)
    env = child_env(ASAN_OPTIONS="detect_leaks=1:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    r = run(exe, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "all arena hostile-peer tests passed" in r.stdout


@needs_cc
@needs_src
def test_ring_and_wait_under_threadsanitizer(build_dir, runtime_dir):
    exe = build_from_source(build_dir / "hms_ctest_tsan", "hms_ctest.c", ["-O1", "-fsanitize=thread", "-Wno-tsan"])
    env = child_env(TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1")
    r = run(exe, "selftest", env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-6000:]


def test_c_client_calls_python_service(ctest, server_process):
    server_process("echo")
    r = run(ctest, "call", "py.echo", "echo", b"hello from C".hex())
    assert r.stdout.strip() == f"OK 1 {b'hello from C'.hex()}", r.stderr
    import cbor2

    payload = cbor2.dumps([3, "bad quantity", None]).hex()
    # the C side sends the bytes as raw: the handler gets bytes, not a list, and fails in Python code
    r = run(ctest, "call", "py.echo", "fail", payload)
    assert r.stdout.startswith("ERROR UNKNOWN"), r.stdout
    r = run(ctest, "call", "py.echo", "nope", "00")
    assert r.returncode == 4 and "has no function 'nope'" in r.stderr


def test_python_client_calls_c_service(ctest, runtime_dir):
    p = subprocess.Popen([str(ctest), "serve", "0"], stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert p.stdout.readline().strip() == "ready"
        with hms.connect("ctest.echo", "^1") as c:
            assert set(c.functions) >= {"echo", "fail", "peer", "sleep"}
            assert c.call("echo", b"\x00binary\xff", timeout=5) == b"\x00binary\xff"
            assert c.call("echo", {"k": [1, 2]}, timeout=5) == {"k": [1, 2]}  # CBOR passes through C untouched
            with pytest.raises(hms.InvalidArgument) as ei:
                c.call("fail", None, timeout=5)
            assert ei.value.message == "quantity must be positive"
            assert ei.value.details == {"field": "qty"}  # JSON details decoded by content type
            peer = c.call("peer", None, timeout=5).decode().split()
            assert peer[:3] == [str(os.getpid()), str(os.getuid()), str(os.getgid())]
            with pytest.raises(hms.DeadlineExceeded):
                c.call("sleep", (300).to_bytes(4, "little"), timeout=0.05)
            assert c.call("echo", b"after", timeout=5) == b"after"
    finally:
        p.kill()
        p.wait()


@needs_cc
@needs_src
def test_access_limits_audit_c_api_under_asan_ubsan(build_dir, runtime_dir):
    # tests/c/hms_access_test.c: hms_function_set_access (owner, uids, gids, the deny message),
    # hms_service_set_limits (max message, ring quota, in flight, connections), hms_node_set_audit records.
    exe = build_from_source(build_dir / "hms_access_san", "hms_access_test.c", SAN_FLAGS)
    env = child_env(ASAN_OPTIONS="detect_leaks=1:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    r = run(exe, "selftest", os.path.join(runtime_dir, "audit.jsonl"), env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "all access tests passed" in r.stdout
