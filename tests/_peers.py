"""The peer programs of every language, built once, for the cross-language matrix (tests/test_matrix.py)
and the per-language rows of bench/compare.py.

Every peer speaks one command-line interface (see bindings/*/README.md):

    PEER serve SERVICE              serve SERVICE@1.0.0: `echo` (CBOR decoded to native values and
                                    re-encoded; raw bytes unchanged) and `fail` ([code, message] -> that
                                    error); prints "ready"; SIGTERM ends it with exit code 0
    PEER call SERVICE VECTORS_JSON  every vector through `echo` as CBOR, bytes compared; then `fail`;
                                    prints "ok N" or the mismatches (exit 1)
    PEER bench SERVICE N            N 64-byte raw echo round trips: prints "p50_ns p99_ns calls_per_s"

Python serves with `python tests/_servers.py echo` (service py.echo) and calls in-process; C calls with
tests/c/hms_ctest.c (`call SERVICE echo HEX 2`, `bench-to SERVICE N`) and has no CBOR codec, so it is
a client only. A language whose toolchain is missing raises PeerUnavailable (callers skip, or fail when
HMS_REQUIRE_BINDINGS=1).
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors" / "cbor.json"
LANGS = ("c", "python", "go", "rust", "php")
SERVING_LANGS = ("python", "go", "rust", "php")
REQUIRED = os.environ.get("HMS_REQUIRE_BINDINGS") == "1"


class PeerUnavailable(Exception):
    """This language's peer cannot be built here (toolchain missing); the message says what to install."""


def _env() -> Dict[str, str]:
    import hms_ffi_native as hms

    env = dict(os.environ)
    parent = str(Path(hms.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONSAFEPATH"] = "1"
    return env


@functools.lru_cache(maxsize=None)
def _build_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="hms-peers-"))


def _run(cmd: List[str], what: str, timeout: float, **kw) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"building {what} failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-4000:]}\n"
                           f"{r.stderr[-4000:]}")


@functools.lru_cache(maxsize=None)
def peer_command(lang: str) -> List[str]:
    """The argv prefix that runs `lang`'s peer (built on first use, cached for the process)."""
    from hms_ffi_native import _paths

    if lang == "go":
        go = shutil.which("go")
        if go is None or shutil.which("pkg-config") is None:
            raise PeerUnavailable("the Go peer needs `go` and `pkg-config` (install Go >= 1.24 and pkg-config)")
        exe = _build_dir() / "hms-go-peer"
        env = _env()
        env.update(PKG_CONFIG_PATH=str(_paths.pkgconfig_dir()), GOFLAGS="-mod=mod -buildvcs=false", CGO_ENABLED="1")
        _run([go, "build", "-o", str(exe), "./cmd/hms-go-peer"], "hms-go-peer", 900, cwd=ROOT / "bindings" / "go",
             env=env)
        return [str(exe)]
    if lang == "rust":
        cargo = shutil.which("cargo")
        if cargo is None:
            raise PeerUnavailable("the Rust peer needs `cargo` (install Rust with rustup)")
        env = _env()
        env.setdefault("HMS_FFI_LIB_DIR", str(_paths.libdir()))
        env.setdefault("HMS_FFI_INCLUDE_DIR", str(_paths.includedir()))
        rust = ROOT / "bindings" / "rust"
        _run([cargo, "build", "--release", "--locked", "-p", "hms-ffi", "--features", "peer", "--bin", "hms-rust-peer"],
             "hms-rust-peer", 1200, cwd=rust, env=env)
        exe = Path(env.get("CARGO_TARGET_DIR") or rust / "target") / "release" / "hms-rust-peer"
        return [str(exe)]
    if lang == "php":
        php = shutil.which("php")
        if php is None:
            raise PeerUnavailable("the PHP peer needs `php` with its FFI extension (apt-get install php-cli)")
        r = subprocess.run([php, "-r", "echo extension_loaded('ffi') ? 'yes' : 'no';"], capture_output=True, text=True)
        if r.stdout.strip() != "yes":
            raise PeerUnavailable("php has no FFI extension (Debian: it ships in php8.x-common)")
        return [php, str(ROOT / "bindings" / "php" / "bin" / "hms-php-peer")]
    if lang == "c":
        cc = os.environ.get("CC", "cc")
        if shutil.which(cc) is None:
            raise PeerUnavailable(f"the C peer needs a C compiler ({cc})")
        exe = _build_dir() / "hms_ctest"
        libdir = _paths.libdir()
        _run([cc, "-std=gnu11", "-O2", "-D_GNU_SOURCE", "-pthread", f"-I{_paths.includedir()}",
              str(ROOT / "tests" / "c" / "hms_ctest.c"), "-o", str(exe), f"-L{libdir}", f"-Wl,-rpath,{libdir}",
              "-lhms_ffi"], "hms_ctest", 300)
        return [str(exe)]
    if lang == "python":
        return [sys.executable, str(ROOT / "tests" / "_servers.py")]
    raise ValueError(f"unknown language {lang!r}; one of {LANGS}")


class Server:
    """A peer serving SERVICE (Python: py.echo) in the current HMS_FFI_RUNTIME_DIR."""

    def __init__(self, lang: str, service: str) -> None:
        self.lang = lang
        cmd = peer_command(lang)
        if lang == "python":
            self.service, argv = "py.echo", [*cmd, "echo"]
        else:
            self.service, argv = service, [*cmd, "serve", service]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.stop()
            raise RuntimeError(f"{lang} server {service} did not start: {line!r} {self.proc.stderr.read()[-2000:]}")

    def stop(self) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()
        return self.proc.returncode

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def bench(lang: str, service: str, n: int, timeout: float = 300) -> Dict[str, float]:
    """`lang` calls SERVICE's echo n times with 64 raw bytes: {"p50_ns", "p99_ns", "calls_per_s"}."""
    cmd = peer_command(lang)
    argv = [*cmd, "bench-to", service, str(n)] if lang == "c" else [*cmd, "bench", service, str(n)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env())
    parts = r.stdout.strip().split()
    if r.returncode != 0 or len(parts) != 3:
        raise RuntimeError(f"{lang} bench of {service} failed ({r.returncode}): {r.stdout[-500:]} {r.stderr[-1500:]}")
    p50, p99, rate = (float(x) for x in parts)
    return {"p50_ns": p50, "p99_ns": p99, "calls_per_s": rate}
